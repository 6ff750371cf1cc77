//! Release-time checks of the recipe's pre-switch paths, so that a typo in
//! a required file or a self-test program fails when the release is
//! written and not on the robot.
//!
//! The paths are entries of the release tree, or, with `pre_switch.image`,
//! paths inside that filesystem image of the tree, where a robot with
//! partition slots looks for them. An image is read with Debian's tools
//! for its type (`debugfs`, `dump.erofs`, `unsquashfs`), and a tool that is
//! not installed skips the check with a warning.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::process::Command;

use tender_updater::slot::FsType;

use crate::recipe::Recipe;
use crate::release::ReleaseError;
use crate::scan::{FileContent, ScannedTree, TreeKind};

/// Checks that the files the robot will look for before the switch are in
/// the tree or in the recipe's `pre_switch.image`.
pub(crate) fn check_pre_switch(recipe: &Recipe, tree: &ScannedTree) -> Result<(), ReleaseError> {
    let robot_paths = pre_switch_paths(recipe);
    if robot_paths.is_empty() {
        return Ok(());
    }
    match &recipe.pre_switch.image {
        Some(image) => check_in_image(recipe, tree, image, &robot_paths),
        None => check_in_tree(recipe, tree, &robot_paths),
    }
}

/// Lists the paths the robot checks, each with the recipe field that names
/// it: the required files, and the `{slot}/` arguments of the self-test.
fn pre_switch_paths(recipe: &Recipe) -> Vec<(String, &str)> {
    let required = recipe
        .pre_switch
        .required_files
        .iter()
        .enumerate()
        .map(|(index, file)| (format!("pre_switch.required_files[{index}]"), file.as_str()));
    let self_test = recipe
        .pre_switch
        .self_test
        .iter()
        .enumerate()
        .filter_map(|(index, argument)| argument.strip_prefix("{slot}/").map(|entry| (format!("pre_switch.self_test[{index}]"), entry)));
    required.chain(self_test).collect()
}

fn check_in_tree(recipe: &Recipe, tree: &ScannedTree, robot_paths: &[(String, &str)]) -> Result<(), ReleaseError> {
    let paths: BTreeSet<&str> = tree.entries.iter().map(|e| e.path.as_str()).collect();
    let image = top_level_image(tree);
    for (field, entry) in robot_paths {
        if paths.contains(entry) {
            continue;
        }
        let (recipe_path, field, entry) = (recipe.path.clone(), field.clone(), (*entry).to_owned());
        return Err(match image {
            Some((image, fs_type)) => ReleaseError::MissingInTreeWithImage { recipe: recipe_path, field, entry, image, fs_type },
            None => ReleaseError::MissingInTree { recipe: recipe_path, field, entry },
        });
    }
    if let Some((image, fs_type)) = image {
        tracing::warn!(
            "the pre-switch paths were found in the release tree, but {image} is an {fs_type} image and a robot with \
             partition slots looks for them inside it; set pre_switch.image = {image:?} in the recipe to check them there"
        );
    }
    Ok(())
}

/// Returns the first top-level file of the tree that is a filesystem image.
fn top_level_image(tree: &ScannedTree) -> Option<(String, FsType)> {
    tree.entries.iter().filter(|entry| !entry.path.contains('/')).find_map(|entry| {
        let TreeKind::File { content, .. } = &entry.kind else { return None };
        let fs_type = match content {
            FileContent::Memory(bytes) => FsType::detect(bytes),
            FileContent::Disk(path) => std::fs::File::open(path).ok().and_then(|mut file| FsType::read(&mut file).ok().flatten()),
        }?;
        Some((entry.path.clone(), fs_type))
    })
}

fn check_in_image(recipe: &Recipe, tree: &ScannedTree, image: &str, robot_paths: &[(String, &str)]) -> Result<(), ReleaseError> {
    let not_a_file = || ReleaseError::MissingInTree { recipe: recipe.path.clone(), field: "pre_switch.image".to_owned(), entry: image.to_owned() };
    let content = image_content(tree, image).ok_or_else(not_a_file)?;
    let (path, _copy) = match content {
        FileContent::Disk(path) => (path.clone(), None),
        FileContent::Memory(bytes) => {
            let copy = copy_to_temporary(bytes).map_err(|source| ReleaseError::Write { path: std::env::temp_dir(), source })?;
            (copy.path().to_owned(), Some(copy))
        }
    };
    let image_error = |detail: String| ReleaseError::ImageCheck { recipe: recipe.path.clone(), image: image.to_owned(), detail };
    let mut file = std::fs::File::open(&path).map_err(|source| ReleaseError::Read { path: path.clone(), source })?;
    let fs_type = match FsType::read(&mut file).map_err(|source| ReleaseError::Read { path: path.clone(), source })? {
        Some(fs_type) => fs_type,
        None => {
            tracing::warn!(
                "pre_switch.image {image:?} is not an ext4, erofs or squashfs image, so tender cannot look inside it; \
                 the pre-switch paths are checked on the robot only"
            );
            return Ok(());
        }
    };
    let entries: Vec<&str> = robot_paths.iter().map(|(_, entry)| *entry).collect();
    let found = match find_in_image(fs_type, &path, &entries) {
        Ok(found) => found,
        Err(ToolError::NotInstalled { tool, package }) => {
            tracing::warn!(
                "{tool} is not installed, so the pre-switch paths inside the {fs_type} image {image} are checked on the robot \
                 only; install Debian's {package} to check them here"
            );
            return Ok(());
        }
        Err(ToolError::Failed { tool, detail }) => return Err(image_error(format!("{tool} cannot read it as {fs_type}: {detail}"))),
    };
    for ((field, entry), present) in robot_paths.iter().zip(found) {
        if !present {
            return Err(ReleaseError::MissingInImage {
                recipe: recipe.path.clone(),
                field: field.clone(),
                entry: (*entry).to_owned(),
                image: image.to_owned(),
                fs_type,
            });
        }
    }
    tracing::info!(image, %fs_type, paths = robot_paths.len(), "pre-switch paths found inside the image");
    Ok(())
}

/// Returns the content of the file entry `image`, following a hardlink entry.
fn image_content<'t>(tree: &'t ScannedTree, image: &str) -> Option<&'t FileContent> {
    let entry = tree.entries.iter().find(|entry| entry.path == image)?;
    let target = match &entry.kind {
        TreeKind::Hardlink { target } => tree.entries.iter().find(|entry| entry.path == *target)?,
        _ => entry,
    };
    match &target.kind {
        TreeKind::File { content, .. } => Some(content),
        _ => None,
    }
}

fn copy_to_temporary(bytes: &[u8]) -> std::io::Result<tempfile::NamedTempFile> {
    let mut copy = tempfile::NamedTempFile::new()?;
    copy.write_all(bytes)?;
    copy.flush()?;
    Ok(copy)
}

/// Failures of the tool that reads an image.
#[derive(Debug)]
enum ToolError {
    NotInstalled { tool: &'static str, package: &'static str },
    Failed { tool: &'static str, detail: String },
}

/// Returns, for each of `entries` (paths relative to the image's root),
/// whether the image has it.
fn find_in_image(fs_type: FsType, image: &Path, entries: &[&str]) -> Result<Vec<bool>, ToolError> {
    match fs_type {
        FsType::Squashfs => {
            // `-d ""` lists `/opt/ecar/...` instead of `squashfs-root/opt/ecar/...`.
            let listing = run_tool("unsquashfs", "squashfs-tools", Command::new("unsquashfs").args(["-l", "-d", ""]).arg(image))?.stdout;
            let listed: BTreeSet<&str> = listing.lines().map(|line| line.trim_start_matches('/')).collect();
            Ok(entries.iter().map(|entry| listed.contains(entry)).collect())
        }
        FsType::Erofs => entries
            .iter()
            .map(|entry| {
                // NOTE: dump.erofs 1.5 exits 0 for a missing path and prints
                // nothing on stdout. A present path prints its inode. Later
                // versions are untested here.
                let output = run_tool("dump.erofs", "erofs-utils", Command::new("dump.erofs").arg(format!("--path=/{entry}")).arg(image))?;
                Ok(!output.stdout.trim().is_empty())
            })
            .collect(),
        FsType::Ext4 => entries
            .iter()
            .map(|entry| {
                let request = format!("stat \"/{entry}\"");
                let mut command = Command::new("debugfs");
                command.arg("-R").arg(&request).arg(image).env("DEBUGFS_PAGER", "__none__");
                let output = run_tool("debugfs", "e2fsprogs", &mut command)?;
                if output.stdout.contains("Inode:") {
                    Ok(true)
                } else if output.stderr.contains("File not found") {
                    Ok(false)
                } else {
                    // debugfs exits 0 when it cannot open the image, too.
                    Err(ToolError::Failed { tool: "debugfs", detail: last_line(&output.stderr) })
                }
            })
            .collect(),
    }
}

struct ToolOutput {
    stdout: String,
    stderr: String,
}

fn run_tool(tool: &'static str, package: &'static str, command: &mut Command) -> Result<ToolOutput, ToolError> {
    let output = match command.output() {
        Ok(output) => output,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Err(ToolError::NotInstalled { tool, package }),
        Err(error) => return Err(ToolError::Failed { tool, detail: error.to_string() }),
    };
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    if !output.status.success() {
        return Err(ToolError::Failed { tool, detail: format!("{} ({})", last_line(&stderr), output.status) });
    }
    Ok(ToolOutput { stdout, stderr })
}

fn last_line(text: &str) -> String {
    text.lines().rev().map(str::trim).find(|line| !line.is_empty()).unwrap_or("no output").to_owned()
}


#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    use crate::scan::TreeEntry;

    const RECIPE: &str = "name = \"ecar-4wd4ws\"\ncompatible = \"ecar-4wd4ws\"\nprefix = \"/opt/ecar\"\n\
                          runtime_path = \"/opt/ecar/current\"\n[colcon]\nworkspace = \"unused\"\n\
                          [health]\ncommand = [\"true\"]\ntimeout = \"10s\"\ninterval = \"1s\"\n";

    fn recipe(dir: &Path, pre_switch: &str) -> Recipe {
        let path = dir.join("recipe.toml");
        std::fs::write(&path, format!("{RECIPE}[pre_switch]\n{pre_switch}")).expect("recipe");
        Recipe::load(&path).expect("valid recipe")
    }

    fn file(path: &str, content: FileContent) -> TreeEntry {
        TreeEntry { path: path.to_owned(), kind: TreeKind::File { size: 0, content }, mode: 0o644, uid: 0, gid: 0, xattrs: Default::default() }
    }

    /// Builds the release tree of an image release: the image and a `VERSION` file.
    fn image_tree(image: &Path) -> ScannedTree {
        ScannedTree {
            entries: vec![file("VERSION", FileContent::Memory(b"1.0.0".to_vec())), file("rootfs.img", FileContent::Disk(image.to_owned()))],
            rewrites: Vec::new(),
        }
    }

    /// Writes an image of `fs_type` with `opt/ecar/current/bin/motor_controller`.
    fn make_image(fs_type: FsType, dir: &Path) -> PathBuf {
        let root = dir.join(format!("root-{fs_type}"));
        std::fs::create_dir_all(root.join("opt/ecar/current/bin")).expect("dirs");
        std::fs::write(root.join("opt/ecar/current/bin/motor_controller"), b"#!/bin/sh\n").expect("file");
        let image = dir.join(format!("rootfs.{fs_type}"));
        let mut command = match fs_type {
            FsType::Ext4 => {
                let mut command = Command::new("mke2fs");
                command.args(["-q", "-F", "-t", "ext4", "-d"]).arg(&root).arg(&image).arg("4M");
                command
            }
            FsType::Erofs => {
                let mut command = Command::new("mkfs.erofs");
                command.arg("--quiet").arg(&image).arg(&root);
                command
            }
            FsType::Squashfs => {
                let mut command = Command::new("mksquashfs");
                command.arg(&root).arg(&image).args(["-quiet", "-no-progress"]);
                command
            }
        };
        let output = command.output().expect("run mkfs; install e2fsprogs, erofs-utils and squashfs-tools");
        assert!(output.status.success(), "{command:?}: {}", String::from_utf8_lossy(&output.stderr));
        image
    }

    #[test]
    fn paths_are_found_inside_each_image_type() {
        let dir = tempfile::tempdir().expect("tempdir");
        for fs_type in [FsType::Ext4, FsType::Erofs, FsType::Squashfs] {
            let image = make_image(fs_type, dir.path());
            let mut file = std::fs::File::open(&image).expect("image");
            assert_eq!(FsType::read(&mut file).expect("read"), Some(fs_type));
            let entries = ["opt/ecar/current/bin/motor_controller", "opt/ecar/current", "opt/ecar/current/bin/motor_control"];
            let found = find_in_image(fs_type, &image, &entries).expect("tool runs");
            assert_eq!(found, [true, true, false], "{fs_type}");
        }
    }

    #[test]
    fn typo_inside_image_fails_release() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tree = image_tree(&make_image(FsType::Erofs, dir.path()));
        let settings = "image = \"rootfs.img\"\nself_test = [\"{slot}/opt/ecar/current/bin/motor_controller\", \"--self-test\"]\n";
        check_pre_switch(&recipe(dir.path(), settings), &tree).expect("paths are inside the image");

        let typo = format!("{settings}required_files = [\"opt/ecar/current/bin/motor_controler\"]\n");
        let error = check_pre_switch(&recipe(dir.path(), &typo), &tree).expect_err("typo").to_string();
        assert!(error.contains("`pre_switch.required_files[0]`"), "{error}");
        assert!(error.contains("not in the erofs image rootfs.img"), "{error}");

        // VERSION is in the tree but not inside the image.
        let outside = "image = \"rootfs.img\"\nrequired_files = [\"VERSION\"]\n";
        let error = check_pre_switch(&recipe(dir.path(), outside), &tree).expect_err("outside the image").to_string();
        assert!(error.contains("\"VERSION\", which is not in the erofs image"), "{error}");
    }

    #[test]
    fn missing_image_entry_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tree = image_tree(&make_image(FsType::Squashfs, dir.path()));
        let settings = "image = \"rootfs.squashfs\"\nrequired_files = [\"opt\"]\n";
        let error = check_pre_switch(&recipe(dir.path(), settings), &tree).expect_err("no such image").to_string();
        assert!(error.contains("`pre_switch.image` names \"rootfs.squashfs\""), "{error}");
    }

    #[test]
    fn tree_check_suggests_the_image() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tree = image_tree(&make_image(FsType::Ext4, dir.path()));
        let settings = "required_files = [\"opt/ecar/current/bin/motor_controller\"]\n";
        let error = check_pre_switch(&recipe(dir.path(), settings), &tree).expect_err("not in the tree").to_string();
        assert!(error.contains("rootfs.img is an ext4 image"), "{error}");
        assert!(error.contains("set pre_switch.image = \"rootfs.img\""), "{error}");
        check_pre_switch(&recipe(dir.path(), "required_files = [\"VERSION\"]\n"), &tree).expect("VERSION is in the tree");
    }

    #[test]
    fn unreadable_image_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let image = dir.path().join("broken.img");
        // An ext4 magic number on an otherwise empty image.
        let mut bytes = vec![0u8; 8192];
        bytes[1024 + 0x38..1024 + 0x3a].copy_from_slice(&0xEF53u16.to_le_bytes());
        std::fs::write(&image, bytes).expect("image");
        let error = find_in_image(FsType::Ext4, &image, &["opt"]).expect_err("unreadable");
        assert!(matches!(error, ToolError::Failed { tool: "debugfs", .. }), "{error:?}");
    }
}
