//! Scanning of an install tree into release entries.
//!
//! The walk never follows symlinks and never writes to the tree. Entries come
//! out sorted by path bytes, so every parent directory comes before its
//! children, which is the order a manifest requires. Names that share an
//! inode become one file entry (the first path in that order) and hardlink
//! entries for the others. Files that contain build-machine paths are
//! relocated in memory (see [`crate::relocate`]).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs::{File, Metadata};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use globset::GlobSet;
use indicatif::ProgressBar;
use tender_updater::format::limits::MAX_XATTR_BYTES;
use tender_updater::format::path::{check_entry_path, check_symlink_target, PathError};

use crate::recipe::Owner;
use crate::relocate::{BuildPath, Relocated, Relocator, Rewrite};

/// Failures to scan a tree.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("cannot read {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },

    #[error("{} has a name that is not UTF-8; rename it or add it to the recipe's `exclude`", path.display())]
    NonUtf8Name { path: PathBuf },

    #[error("symlink {} points to a target that is not UTF-8; change the link or add it to the recipe's `exclude`", path.display())]
    NonUtf8Target { path: PathBuf },

    #[error("{} is a {kind}, which a release cannot contain; remove it from the tree or add it to the recipe's `exclude`", path.display())]
    Unsupported { path: PathBuf, kind: &'static str },

    #[error("{}: {source}; rename it or add it to the recipe's `exclude`", path.display())]
    InvalidPath { path: PathBuf, source: PathError },

    #[error("{} has an extended attribute whose name is not UTF-8; remove it", path.display())]
    NonUtf8XattrName { path: PathBuf },

    #[error("{} has extended attribute {name} of {len} bytes, more than the limit of {MAX_XATTR_BYTES}; remove or shorten it", path.display())]
    XattrTooLarge { path: PathBuf, name: String, len: usize },

    #[error("{} changed while the release was written ({detail}); make sure nothing writes to the tree during `tender release`", path.display())]
    Changed { path: PathBuf, detail: String },

    #[error("{destination} is the destination of an extra file from {}, but the tree already contains it; change the recipe's `files` destination", from.display())]
    ExtraConflict { destination: String, from: PathBuf },

    #[error("extra file source {} is a {kind}; list regular files or directories in the recipe's `files`", path.display())]
    ExtraUnsupported { path: PathBuf, kind: &'static str },

    #[error("{}", BuildPathList(offences))]
    BuildPaths { offences: Vec<Offence> },
}

/// A file or symlink that still names a build-machine directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offence {
    pub path: String,
    pub found: Vec<BuildPath>,
}

struct BuildPathList<'a>(&'a [Offence]);

impl fmt::Display for BuildPathList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} file(s) of the release contain build-machine paths, which do not exist on the robot:",
            self.0.len()
        )?;
        for offence in self.0 {
            let found: Vec<String> = offence.found.iter().map(ToString::to_string).collect();
            writeln!(f, "  {}: {}", offence.path, found.join(", "))?;
        }
        write!(
            f,
            "tender rewrites the install directory only in setup scripts, .dsv, .cmake and .pc files, and \
             build-machine Pythons only in shebangs and setup scripts; add the other files to the recipe's \
             `exclude`, make symlinks relative, or change the package so it does not embed these paths"
        )
    }
}

/// One object of the release tree, before its content is chunked.
#[derive(Debug, Clone)]
pub struct TreeEntry {
    /// Path relative to the tree root, `/`-separated.
    pub path: String,
    pub kind: TreeKind,
    /// Permission bits including setuid, setgid and sticky.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Extended attributes with hex values.
    pub xattrs: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
pub enum TreeKind {
    File { size: u64, content: FileContent },
    Dir,
    Symlink { target: String },
    /// Another name of the file entry at `target`.
    Hardlink { target: String },
}

/// Source of a file's bytes when it is chunked.
#[derive(Debug, Clone)]
pub enum FileContent {
    /// Unchanged file on disk, read again when it is chunked.
    Disk(PathBuf),
    /// Relocated content.
    Memory(Vec<u8>),
}

/// The rewrites made in one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRewrites {
    pub path: String,
    pub rewrites: Vec<Rewrite>,
}

/// A scanned tree: its entries in manifest order and the rewrites made.
#[derive(Debug, Clone, Default)]
pub struct ScannedTree {
    pub entries: Vec<TreeEntry>,
    pub rewrites: Vec<FileRewrites>,
}

/// How to turn what is on disk into entries.
pub struct ScanOptions<'a> {
    pub exclude: &'a GlobSet,
    /// Owner given to every entry; `None` keeps the owner on disk.
    pub owner: Option<Owner>,
    /// Permission bits cleared on every entry, such as `0o022` for a tree
    /// that should look as if it was installed with umask 022.
    pub clear_mode_bits: u32,
    pub relocator: &'a Relocator,
}

/// An entry found by the walk, before hardlinks are resolved.
struct Found {
    path: String,
    disk_path: PathBuf,
    metadata: Metadata,
}

/// Scans the tree at `root`. `progress` counts entries.
pub fn scan_tree(root: &Path, options: &ScanOptions, progress: &ProgressBar) -> Result<ScannedTree, ScanError> {
    let mut found = walk(root, options.exclude)?;
    found.sort_by(|a, b| a.path.cmp(&b.path));
    progress.set_length(found.len() as u64);

    let mut first_name: HashMap<(u64, u64), String> = HashMap::new();
    let mut tree = ScannedTree::default();
    let mut offences = Vec::new();
    for item in found {
        let kind = entry_kind(&item, options, &mut first_name, &mut tree.rewrites, &mut offences)?;
        let (uid, gid) = match options.owner {
            Some(owner) => (owner.uid, owner.gid),
            None => (item.metadata.uid(), item.metadata.gid()),
        };
        tree.entries.push(TreeEntry {
            mode: item.metadata.mode() & 0o7777 & !options.clear_mode_bits,
            uid,
            gid,
            xattrs: read_xattrs(&item.disk_path)?,
            path: item.path,
            kind,
        });
        progress.inc(1);
    }
    if !offences.is_empty() {
        return Err(ScanError::BuildPaths { offences });
    }
    Ok(tree)
}

/// Walks `root` without following symlinks and returns every entry that no
/// exclude pattern matches. An excluded directory is skipped with its
/// contents.
fn walk(root: &Path, exclude: &GlobSet) -> Result<Vec<Found>, ScanError> {
    let mut found = Vec::new();
    let mut walker = walkdir::WalkDir::new(root).min_depth(1).follow_links(false).into_iter();
    while let Some(item) = walker.next() {
        let item = item.map_err(|e| {
            let path = e.path().unwrap_or(root).to_owned();
            ScanError::Io { path, source: e.into() }
        })?;
        let disk_path = item.path().to_owned();
        let path = entry_path(root, &disk_path)?;
        if exclude.is_match(&path) {
            tracing::debug!(path, "excluded");
            if item.file_type().is_dir() {
                walker.skip_current_dir();
            }
            continue;
        }
        check_entry_path(&path).map_err(|source| ScanError::InvalidPath { path: disk_path.clone(), source })?;
        let metadata = item.metadata().map_err(|e| ScanError::Io { path: disk_path.clone(), source: e.into() })?;
        found.push(Found { path, disk_path, metadata });
    }
    Ok(found)
}

/// Returns the `/`-separated path of `disk_path` below `root`.
pub fn entry_path(root: &Path, disk_path: &Path) -> Result<String, ScanError> {
    let relative = disk_path.strip_prefix(root).unwrap_or(disk_path);
    let mut parts = Vec::new();
    for component in relative.components() {
        let part = component
            .as_os_str()
            .to_str()
            .ok_or_else(|| ScanError::NonUtf8Name { path: disk_path.to_owned() })?;
        parts.push(part);
    }
    Ok(parts.join("/"))
}

/// Decides the kind of one walked entry and, for a file, where its bytes
/// come from.
fn entry_kind(
    item: &Found,
    options: &ScanOptions,
    first_name: &mut HashMap<(u64, u64), String>,
    rewrites: &mut Vec<FileRewrites>,
    offences: &mut Vec<Offence>,
) -> Result<TreeKind, ScanError> {
    let file_type = item.metadata.file_type();
    if file_type.is_dir() {
        return Ok(TreeKind::Dir);
    }
    if file_type.is_symlink() {
        let target = std::fs::read_link(&item.disk_path)
            .map_err(|source| ScanError::Io { path: item.disk_path.clone(), source })?;
        let target = target
            .into_os_string()
            .into_string()
            .map_err(|_| ScanError::NonUtf8Target { path: item.disk_path.clone() })?;
        check_symlink_target(&item.path, &target)
            .map_err(|source| ScanError::InvalidPath { path: item.disk_path.clone(), source })?;
        let found = options.relocator.check_symlink(&target);
        if !found.is_empty() {
            offences.push(Offence { path: item.path.clone(), found });
        }
        return Ok(TreeKind::Symlink { target });
    }
    if file_type.is_file() {
        if item.metadata.nlink() > 1 {
            let inode = (item.metadata.dev(), item.metadata.ino());
            if let Some(target) = first_name.get(&inode) {
                return Ok(TreeKind::Hardlink { target: target.clone() });
            }
            first_name.insert(inode, item.path.clone());
        }
        let size = item.metadata.len();
        let content = match read_content(&item.disk_path, &item.path, size, options.relocator)? {
            Ok((content, file_rewrites)) => {
                if !file_rewrites.is_empty() {
                    rewrites.push(FileRewrites { path: item.path.clone(), rewrites: file_rewrites });
                }
                content
            }
            Err(offence) => {
                offences.push(offence);
                FileContent::Disk(item.disk_path.clone())
            }
        };
        let size = match &content {
            FileContent::Memory(bytes) => bytes.len() as u64,
            FileContent::Disk(_) => size,
        };
        return Ok(TreeKind::File { size, content });
    }
    let kind = if file_type.is_fifo() {
        "named pipe (FIFO)"
    } else if file_type.is_socket() {
        "socket"
    } else if file_type.is_block_device() {
        "block device"
    } else if file_type.is_char_device() {
        "character device"
    } else {
        "file of unknown type"
    };
    Err(ScanError::Unsupported { path: item.disk_path.clone(), kind })
}

/// Searches a file for build paths and relocates it when it contains any.
/// The outer result is an I/O error; the inner one a file that keeps build
/// paths after relocation.
pub fn read_content(
    disk_path: &Path,
    entry_path: &str,
    size: u64,
    relocator: &Relocator,
) -> Result<Result<(FileContent, Vec<Rewrite>), Offence>, ScanError> {
    let io = |source| ScanError::Io { path: disk_path.to_owned(), source };
    let found = relocator.find_in_reader(File::open(disk_path).map_err(io)?).map_err(io)?;
    if found.is_empty() {
        return Ok(Ok((FileContent::Disk(disk_path.to_owned()), Vec::new())));
    }
    let mut head = [0u8; 2];
    let head_len = File::open(disk_path).map_err(io)?.read(&mut head).map_err(io)?;
    if !Relocator::may_rewrite(entry_path, size, &head[..head_len]) {
        return Ok(Err(Offence { path: entry_path.to_owned(), found }));
    }
    let bytes = std::fs::read(disk_path).map_err(io)?;
    if bytes.len() as u64 != size {
        return Err(ScanError::Changed {
            path: disk_path.to_owned(),
            detail: format!("{size} bytes when listed, {} when read", bytes.len()),
        });
    }
    Ok(match relocator.relocate(entry_path, &bytes) {
        Ok(Relocated::Unchanged) => Ok((FileContent::Disk(disk_path.to_owned()), Vec::new())),
        Ok(Relocated::Rewritten { content, rewrites }) => Ok((FileContent::Memory(content), rewrites)),
        Err(found) => Err(Offence { path: entry_path.to_owned(), found }),
    })
}

/// Reads every extended attribute of `path` without following a symlink.
/// A file system without extended attributes gives none.
pub fn read_xattrs(path: &Path) -> Result<BTreeMap<String, String>, ScanError> {
    let io = |source| ScanError::Io { path: path.to_owned(), source };
    let names = match xattr::list(path) {
        Ok(names) => names,
        Err(e) if e.kind() == std::io::ErrorKind::Unsupported => return Ok(BTreeMap::new()),
        Err(e) => return Err(io(e)),
    };
    let mut xattrs = BTreeMap::new();
    for name in names {
        let name = name.into_string().map_err(|_| ScanError::NonUtf8XattrName { path: path.to_owned() })?;
        // TODO: on SELinux hosts every file carries the build machine's
        // `security.selinux` label; a recipe option should drop or map it.
        let Some(value) = xattr::get(path, &name).map_err(io)? else {
            // Removed between list and get.
            continue;
        };
        if value.len() > MAX_XATTR_BYTES {
            return Err(ScanError::XattrTooLarge { path: path.to_owned(), name, len: value.len() });
        }
        xattrs.insert(name, hex::encode(value));
    }
    Ok(xattrs)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::relocate::{BuildPathKind, RuntimeTargets};

    fn relocator(install: &Path) -> Relocator {
        Relocator::new(
            vec![BuildPath { kind: BuildPathKind::Install, path: install.to_string_lossy().into_owned() }],
            RuntimeTargets {
                runtime_path: "/opt/ecar/current".to_owned(),
                python_shebang: "/usr/bin/env python3".to_owned(),
                python_executable: "/usr/bin/python3".to_owned(),
            },
        )
    }

    fn scan(root: &Path, exclude: &[&str], owner: Option<Owner>) -> Result<ScannedTree, ScanError> {
        let mut set = globset::GlobSetBuilder::new();
        for pattern in exclude {
            set.add(globset::GlobBuilder::new(pattern).literal_separator(true).build().expect("glob"));
        }
        let exclude = set.build().expect("globset");
        let relocator = relocator(root);
        let options = ScanOptions { exclude: &exclude, owner, clear_mode_bits: 0, relocator: &relocator };
        scan_tree(root, &options, &ProgressBar::hidden())
    }

    fn paths(tree: &ScannedTree) -> Vec<&str> {
        tree.entries.iter().map(|e| e.path.as_str()).collect()
    }

    #[test]
    fn entries_sort_by_path_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("a/b")).expect("mkdir");
        std::fs::write(dir.path().join("a-c"), "x").expect("write");
        std::fs::write(dir.path().join("a/b/f"), "x").expect("write");
        let tree = scan(dir.path(), &[], None).expect("scan");
        assert_eq!(paths(&tree), ["a", "a-c", "a/b", "a/b/f"]);
    }

    #[test]
    fn second_name_of_inode_is_hardlink() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("b"), "data").expect("write");
        std::fs::hard_link(dir.path().join("b"), dir.path().join("a")).expect("link");
        let tree = scan(dir.path(), &[], None).expect("scan");
        assert!(matches!(tree.entries[0].kind, TreeKind::File { size: 4, .. }));
        assert!(matches!(&tree.entries[1].kind, TreeKind::Hardlink { target } if target == "a"));
    }

    #[test]
    fn excluded_directory_is_skipped_with_contents() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("lib/__pycache__")).expect("mkdir");
        std::fs::write(dir.path().join("lib/__pycache__/x.pyc"), "x").expect("write");
        std::fs::write(dir.path().join("lib/x.py"), "x").expect("write");
        let tree = scan(dir.path(), &["**/__pycache__"], None).expect("scan");
        assert_eq!(paths(&tree), ["lib", "lib/x.py"]);
    }

    #[test]
    fn setuid_bit_and_forced_owner_are_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tool = dir.path().join("tool");
        std::fs::write(&tool, "#!/bin/sh\n").expect("write");
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o4755)).expect("chmod");
        let tree = scan(dir.path(), &[], Some(Owner { uid: 7, gid: 8 })).expect("scan");
        assert_eq!(tree.entries[0].mode, 0o4755);
        assert_eq!((tree.entries[0].uid, tree.entries[0].gid), (7, 8));
    }

    #[test]
    fn user_xattr_is_read_as_hex() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("f");
        std::fs::write(&file, "x").expect("write");
        if xattr::set(&file, "user.tender", b"ok").is_err() {
            eprintln!("skipped: the temporary directory's file system has no user xattrs");
            return;
        }
        let tree = scan(dir.path(), &[], None).expect("scan");
        assert_eq!(tree.entries[0].xattrs.get("user.tender").map(String::as_str), Some("6f6b"));
    }

    #[test]
    fn fifo_is_rejected_with_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let status = std::process::Command::new("mkfifo").arg(dir.path().join("pipe")).status().expect("mkfifo");
        assert!(status.success());
        let err = scan(dir.path(), &[], None).expect_err("fifo");
        assert!(matches!(err, ScanError::Unsupported { .. }), "{err}");
        assert!(err.to_string().contains("pipe"), "{err}");
    }

    #[test]
    fn non_utf8_name_is_rejected() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(std::ffi::OsStr::from_bytes(b"bad\xff")), "x").expect("write");
        let err = scan(dir.path(), &[], None).expect_err("non-UTF-8");
        assert!(matches!(err, ScanError::NonUtf8Name { .. }), "{err}");
    }

    #[test]
    fn escaping_symlink_is_rejected() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::os::unix::fs::symlink("../../etc/shadow", dir.path().join("link")).expect("symlink");
        let err = scan(dir.path(), &[], None).expect_err("escapes");
        assert!(matches!(err, ScanError::InvalidPath { .. }), "{err}");
    }

    #[test]
    fn absolute_symlink_is_kept_verbatim() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::os::unix::fs::symlink("/usr/bin/python3", dir.path().join("python")).expect("symlink");
        let tree = scan(dir.path(), &[], None).expect("scan");
        assert!(matches!(&tree.entries[0].kind, TreeKind::Symlink { target } if target == "/usr/bin/python3"));
    }

    #[test]
    fn build_paths_are_listed_per_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let install = dir.path().to_string_lossy().into_owned();
        std::fs::write(dir.path().join("setup.sh"), format!("PREFIX={install}\n")).expect("write");
        std::fs::write(dir.path().join("notes.txt"), format!("built in {install}\n")).expect("write");
        std::fs::write(dir.path().join("data.bin"), format!("\0{install}/lib\0")).expect("write");
        let err = scan(dir.path(), &[], None).expect_err("build paths");
        let ScanError::BuildPaths { offences } = &err else { panic!("unexpected error {err}") };
        let offenders: Vec<&str> = offences.iter().map(|o| o.path.as_str()).collect();
        assert_eq!(offenders, ["data.bin", "notes.txt"]);
        assert!(err.to_string().contains("notes.txt: install directory"), "{err}");
    }

    #[test]
    fn setup_script_is_relocated_in_memory_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let install = dir.path().to_string_lossy().into_owned();
        let original = format!("PREFIX={install}\n");
        std::fs::write(dir.path().join("setup.sh"), &original).expect("write");
        let tree = scan(dir.path(), &[], None).expect("scan");
        let TreeKind::File { content: FileContent::Memory(bytes), size } = &tree.entries[0].kind else {
            panic!("setup.sh was not relocated: {:?}", tree.entries[0]);
        };
        assert_eq!(bytes.as_slice(), b"PREFIX=/opt/ecar/current\n");
        assert_eq!(*size, bytes.len() as u64);
        assert_eq!(std::fs::read_to_string(dir.path().join("setup.sh")).expect("read"), original);
        assert_eq!(tree.rewrites[0].path, "setup.sh");
    }
}
