//! A tmpfs mounted over a directory of a simulated robot, to give it a
//! small, full or read-only filesystem. Mounting needs root, which the
//! tests have here and in CI.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::stderr;

/// A tmpfs mounted over a directory, unmounted when dropped.
pub struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs with `options` (such as `size=64k`) over `dir`.
    pub fn mount(dir: &Path, options: &str) -> Self {
        fs::create_dir_all(dir).expect("mount point");
        let output = Command::new("mount").args(["-t", "tmpfs", "-o", options, "tender-test"]).arg(dir).output().expect("run mount");
        assert!(output.status.success(), "mount -t tmpfs -o {options} {}: {}", dir.display(), stderr(&output));
        Self { dir: dir.to_owned() }
    }

    /// Makes the mount read-only.
    pub fn read_only(&self) {
        let output = Command::new("mount").args(["-o", "remount,ro"]).arg(&self.dir).output().expect("run mount");
        assert!(output.status.success(), "remount {} read-only: {}", self.dir.display(), stderr(&output));
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).output();
    }
}
