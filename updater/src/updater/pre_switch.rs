//! The pre-switch checks of a staged release: its required files exist and
//! its self-test passes, before anything points at the staged slot. A
//! directory slot is checked where it is. A partition slot is mounted
//! read-only below `STATE_DIR/mnt` for the checks and always unmounted
//! afterwards; a release without checks is not mounted at all.

use std::path::Path;
use std::time::Duration;

use super::Updater;
use crate::command;
use crate::format::{Manifest, PreSwitch};
use crate::state::Slot;

/// Directory below the state directory that contains the mount points.
const MOUNT_DIR: &str = "mnt";

/// Path resolution of the required files below the checked directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lookup {
    /// As ordinary paths: a directory slot's absolute symlinks point into
    /// the running system, as they will after the switch.
    Plain,
    /// With the directory as the root, so an absolute symlink inside a
    /// mounted image resolves inside the image and not on the running system.
    InRoot,
}

impl Updater {
    /// Runs the release's pre-switch checks against the staged slot. The
    /// error is the detail of [`super::UpdateError::PreSwitch`].
    pub(super) fn pre_switch_checks(&self, manifest: &Manifest, slot: Slot) -> Result<(), String> {
        let checks = &manifest.pre_switch;
        if checks.required_files.is_empty() && checks.self_test.is_empty() {
            return Ok(());
        }
        let Some(partition) = &self.config.partition else {
            return run_checks(checks, &self.slots.slot_dir(slot), Lookup::Plain, "the staged slot");
        };
        let device = partition.slots.device(slot);
        let mount = partition
            .mount
            .mount_read_only(slot, device, &self.config.state_dir.join(MOUNT_DIR))
            .map_err(|error| error.to_string())?;
        let place = format!("the image in slot {slot} ({})", device.display());
        let checked = run_checks(checks, mount.path(), Lookup::InRoot, &place);
        let unmounted = mount.unmount().map_err(|error| error.to_string());
        match (checked, unmounted) {
            (Ok(()), Ok(())) => Ok(()),
            (Err(detail), Ok(())) | (Ok(()), Err(detail)) => Err(detail),
            (Err(check), Err(unmount)) => Err(format!("{check}; {unmount}")),
        }
    }

    /// Unmounts what an interrupted pre-switch check left mounted of
    /// `slot`. A failure is only logged, because the next check tries again.
    pub(super) fn unmount_leftover(&self, slot: Slot) {
        let Some(partition) = &self.config.partition else { return };
        if let Err(error) = partition.mount.unmount_leftover(slot, &self.config.state_dir.join(MOUNT_DIR)) {
            tracing::error!(%error, slot = %slot, "cannot unmount the slot that an interrupted pre-switch check mounted");
        }
    }
}

/// Checks the required files below `dir`, then runs the self-test with
/// `{slot}` set to `dir` and `dir` as its working directory. `place` names
/// `dir` in messages.
fn run_checks(checks: &PreSwitch, dir: &Path, lookup: Lookup, place: &str) -> Result<(), String> {
    for required in &checks.required_files {
        if !entry_exists(dir, required, lookup) {
            return Err(format!("required file {required:?} is missing from {place}"));
        }
    }
    if checks.self_test.is_empty() {
        return Ok(());
    }
    let dir_text = dir.display().to_string();
    let argv = command::expand(&checks.self_test, &[("slot", &dir_text)]);
    let timeout = Duration::from_millis(checks.self_test_timeout_ms);
    let outcome = command::run(&argv, Some(dir), timeout);
    tracing::info!(command = ?argv, outcome = %outcome.describe(), "pre-switch self-test");
    if outcome.is_success() {
        Ok(())
    } else {
        Err(format!("self-test {:?} {}", argv.join(" "), outcome.describe()))
    }
}

/// Tells whether the entry `relative` exists below `dir`, without following
/// a symlink in its last component.
fn entry_exists(dir: &Path, relative: &str, lookup: Lookup) -> bool {
    if lookup == Lookup::Plain {
        return std::fs::symlink_metadata(dir.join(relative)).is_ok();
    }
    use rustix::fs::{openat2, Mode, OFlags, ResolveFlags};
    let Ok(root) = rustix::fs::open(dir, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty()) else {
        return false;
    };
    match openat2(&root, relative, OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty(), ResolveFlags::IN_ROOT) {
        Ok(_) => true,
        // Kernels before 5.6 have no openat2, so the path resolves as an ordinary one there.
        Err(rustix::io::Errno::NOSYS) => std::fs::symlink_metadata(dir.join(relative)).is_ok(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checks(required: &[&str], self_test: &[&str]) -> PreSwitch {
        PreSwitch {
            required_files: required.iter().map(|s| s.to_string()).collect(),
            self_test: self_test.iter().map(|s| s.to_string()).collect(),
            self_test_timeout_ms: 5_000,
        }
    }

    #[test]
    fn in_root_lookup_keeps_absolute_links_inside() {
        let dir = tempfile::tempdir().expect("tempdir");
        let image = dir.path().join("image");
        std::fs::create_dir_all(image.join("opt/ecar/bin")).expect("dirs");
        std::fs::write(image.join("opt/ecar/bin/motor_controller"), b"").expect("file");
        // An absolute link that names a directory of the image, and one that
        // exists only on the running system.
        std::os::unix::fs::symlink("/opt/ecar", image.join("ecar")).expect("link");
        std::os::unix::fs::symlink(dir.path(), image.join("outside")).expect("link");
        std::fs::write(dir.path().join("host-only"), b"").expect("host file");

        assert!(entry_exists(&image, "ecar/bin/motor_controller", Lookup::InRoot));
        assert!(!entry_exists(&image, "outside/host-only", Lookup::InRoot));
        assert!(entry_exists(&image, "outside/host-only", Lookup::Plain));
        assert!(!entry_exists(&image, "opt/ecar/bin/missing", Lookup::InRoot));
    }

    #[test]
    fn checks_run_in_the_slot_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("VERSION"), b"1.0.0").expect("file");
        run_checks(&checks(&["VERSION"], &["sh", "-c", "test -f VERSION && test -f {slot}/VERSION"]), dir.path(), Lookup::InRoot, "the image")
            .expect("checks pass");

        let error = run_checks(&checks(&["bin/missing"], &[]), dir.path(), Lookup::InRoot, "the image in slot b").expect_err("missing");
        assert_eq!(error, "required file \"bin/missing\" is missing from the image in slot b");

        let error = run_checks(&checks(&[], &["sh", "-c", "echo motor fault; exit 3"]), dir.path(), Lookup::Plain, "the staged slot")
            .expect_err("self-test fails");
        assert!(error.contains("motor fault"), "{error}");
    }
}
