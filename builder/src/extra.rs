//! Extra files from the source tree (the recipe's `[[files]]`), added to a
//! scanned tree.
//!
//! Git records only the executable bit of a file, so the modes on disk depend
//! on the umask of the checkout. Extra files therefore get mode 0755 when any
//! executable bit is set and 0644 otherwise, and directories get 0755, so the
//! release does not depend on where it was checked out.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::recipe::{ExtraFile, Owner};
use crate::relocate::Relocator;
use crate::scan::{entry_path, read_content, FileRewrites, Offence, ScanError, ScannedTree, TreeEntry, TreeKind};

/// Adds the recipe's extra files to `tree` and sorts it again. Missing parent
/// directories of a destination are added with mode 0755.
pub fn add_extra_files(
    tree: &mut ScannedTree,
    files: &[ExtraFile],
    owner: Owner,
    relocator: &Relocator,
) -> Result<(), ScanError> {
    let mut existing: BTreeMap<String, bool> =
        tree.entries.iter().map(|e| (e.path.clone(), matches!(e.kind, TreeKind::Dir))).collect();
    let mut offences = Vec::new();
    for file in files {
        let metadata = std::fs::symlink_metadata(&file.source)
            .map_err(|source| ScanError::Io { path: file.source.clone(), source })?;
        if metadata.is_dir() {
            add_parents(tree, &mut existing, &file.destination, owner, &file.source)?;
            add_directory(tree, &mut existing, file, owner, relocator, &mut offences)?;
        } else if metadata.is_file() {
            add_parents(tree, &mut existing, &file.destination, owner, &file.source)?;
            add_file(tree, &mut existing, &file.source, &file.destination, owner, relocator, &mut offences)?;
        } else {
            let kind = if metadata.file_type().is_symlink() { "symlink" } else { "special file" };
            return Err(ScanError::ExtraUnsupported { path: file.source.clone(), kind });
        }
    }
    if !offences.is_empty() {
        return Err(ScanError::BuildPaths { offences });
    }
    tree.entries.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(())
}

/// Adds the directories above `destination` that the tree lacks.
fn add_parents(
    tree: &mut ScannedTree,
    existing: &mut BTreeMap<String, bool>,
    destination: &str,
    owner: Owner,
    source: &Path,
) -> Result<(), ScanError> {
    let mut parent = String::new();
    let parts: Vec<&str> = destination.split('/').collect();
    for part in &parts[..parts.len() - 1] {
        if !parent.is_empty() {
            parent.push('/');
        }
        parent.push_str(part);
        match existing.get(&parent) {
            Some(true) => {}
            Some(false) => {
                return Err(ScanError::ExtraConflict { destination: parent.clone(), from: source.to_owned() })
            }
            None => {
                existing.insert(parent.clone(), true);
                tree.entries.push(directory_entry(parent.clone(), owner));
            }
        }
    }
    Ok(())
}

fn directory_entry(path: String, owner: Owner) -> TreeEntry {
    TreeEntry { path, kind: TreeKind::Dir, mode: 0o755, uid: owner.uid, gid: owner.gid, xattrs: BTreeMap::new() }
}

fn add_directory(
    tree: &mut ScannedTree,
    existing: &mut BTreeMap<String, bool>,
    file: &ExtraFile,
    owner: Owner,
    relocator: &Relocator,
    offences: &mut Vec<Offence>,
) -> Result<(), ScanError> {
    let walker = walkdir::WalkDir::new(&file.source).follow_links(false).sort_by_file_name();
    for item in walker {
        let item = item.map_err(|e| {
            let path = e.path().unwrap_or(&file.source).to_owned();
            ScanError::Io { path, source: e.into() }
        })?;
        let relative = entry_path(&file.source, item.path())?;
        let destination =
            if relative.is_empty() { file.destination.clone() } else { format!("{}/{relative}", file.destination) };
        let file_type = item.file_type();
        if file_type.is_dir() {
            // A directory that the tree already has is merged into.
            match existing.insert(destination.clone(), true) {
                None => tree.entries.push(directory_entry(destination, owner)),
                Some(true) => {}
                Some(false) => {
                    return Err(ScanError::ExtraConflict { destination, from: item.path().to_owned() })
                }
            }
        } else if file_type.is_file() {
            add_file(tree, existing, item.path(), &destination, owner, relocator, offences)?;
        } else {
            let kind = if file_type.is_symlink() { "symlink" } else { "special file" };
            return Err(ScanError::ExtraUnsupported { path: item.path().to_owned(), kind });
        }
    }
    Ok(())
}

fn add_file(
    tree: &mut ScannedTree,
    existing: &mut BTreeMap<String, bool>,
    source: &Path,
    destination: &str,
    owner: Owner,
    relocator: &Relocator,
    offences: &mut Vec<Offence>,
) -> Result<(), ScanError> {
    if existing.insert(destination.to_owned(), false).is_some() {
        return Err(ScanError::ExtraConflict { destination: destination.to_owned(), from: source.to_owned() });
    }
    let metadata = std::fs::metadata(source).map_err(|e| ScanError::Io { path: source.to_owned(), source: e })?;
    let mode = if metadata.mode() & 0o111 != 0 { 0o755 } else { 0o644 };
    let (content, rewrites) = match read_content(source, destination, metadata.len(), relocator)? {
        Ok(result) => result,
        Err(offence) => {
            offences.push(offence);
            return Ok(());
        }
    };
    if !rewrites.is_empty() {
        tree.rewrites.push(FileRewrites { path: destination.to_owned(), rewrites });
    }
    let size = match &content {
        crate::scan::FileContent::Memory(bytes) => bytes.len() as u64,
        crate::scan::FileContent::Disk(_) => metadata.len(),
    };
    tree.entries.push(TreeEntry {
        path: destination.to_owned(),
        kind: TreeKind::File { size, content },
        mode,
        uid: owner.uid,
        gid: owner.gid,
        xattrs: BTreeMap::new(),
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::path::PathBuf;

    use super::*;
    use crate::relocate::RuntimeTargets;

    fn relocator() -> Relocator {
        Relocator::new(
            Vec::new(),
            RuntimeTargets {
                runtime_path: "/opt/ecar/current".to_owned(),
                python_shebang: "/usr/bin/env python3".to_owned(),
                python_executable: "/usr/bin/python3".to_owned(),
            },
        )
    }

    fn extra(source: PathBuf, destination: &str) -> ExtraFile {
        ExtraFile { source, destination: destination.to_owned() }
    }

    #[test]
    fn extra_file_modes_are_normalised() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("default.yaml");
        let script = dir.path().join("run.sh");
        std::fs::write(&config, "speed: 1\n").expect("write");
        std::fs::write(&script, "#!/bin/sh\n").expect("write");
        std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o664)).expect("chmod");
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o775)).expect("chmod");
        let mut tree = ScannedTree::default();
        let files = [extra(config, "config/default.yaml"), extra(script, "bin/run.sh")];
        add_extra_files(&mut tree, &files, Owner { uid: 0, gid: 0 }, &relocator()).expect("add");
        let modes: Vec<(&str, u32)> = tree.entries.iter().map(|e| (e.path.as_str(), e.mode)).collect();
        assert_eq!(modes, [("bin", 0o755), ("bin/run.sh", 0o755), ("config", 0o755), ("config/default.yaml", 0o644)]);
    }

    #[test]
    fn extra_directory_is_added_recursively() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("cfg/maps")).expect("mkdir");
        std::fs::write(dir.path().join("cfg/maps/track.yaml"), "x").expect("write");
        let mut tree = ScannedTree::default();
        let files = [extra(dir.path().join("cfg"), "share/ecar/config")];
        add_extra_files(&mut tree, &files, Owner { uid: 0, gid: 0 }, &relocator()).expect("add");
        let paths: Vec<&str> = tree.entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            ["share", "share/ecar", "share/ecar/config", "share/ecar/config/maps", "share/ecar/config/maps/track.yaml"]
        );
    }

    #[test]
    fn extra_file_over_tree_file_is_rejected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("default.yaml");
        std::fs::write(&config, "x").expect("write");
        let mut tree = ScannedTree::default();
        tree.entries.push(directory_entry("config".to_owned(), Owner { uid: 0, gid: 0 }));
        let files = [extra(config.clone(), "config/default.yaml"), extra(config, "config/default.yaml")];
        let err = add_extra_files(&mut tree, &files, Owner { uid: 0, gid: 0 }, &relocator()).expect_err("twice");
        assert!(matches!(err, ScanError::ExtraConflict { .. }), "{err}");
    }
}
