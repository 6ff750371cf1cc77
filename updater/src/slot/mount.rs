//! Read-only mounts of a staged partition slot, so the pre-switch checks
//! can look at the files inside its image before the boot loader points
//! at it. The mount and unmount commands come from `[slots]` in
//! `updater.toml`.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::fstype::FsType;
use crate::command;
use crate::state::Slot;

/// Default `slots.mount_command`: util-linux `mount` with the detected type.
pub const DEFAULT_MOUNT_COMMAND: [&str; 7] = ["mount", "-t", "{type}", "-o", "{options}", "{device}", "{mount_point}"];
/// Default `slots.unmount_command`.
pub const DEFAULT_UNMOUNT_COMMAND: [&str; 2] = ["umount", "{mount_point}"];

/// Options of every mount. `loop` is added for a slot that is a regular file.
const MOUNT_OPTIONS: &str = "ro,nodev,nosuid";
/// Time after which a mount or unmount command is killed.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// Unmount attempts, for a mount that a self-test's last process still
/// uses for a moment after it was killed.
const UNMOUNT_ATTEMPTS: u32 = 5;
const UNMOUNT_RETRY_DELAY: Duration = Duration::from_millis(500);

/// Failures to mount or unmount a staged slot.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("cannot create the mount point {}: {source}; check that tenderd can write its state directory", path.display())]
    MountPoint { path: PathBuf, source: std::io::Error },
    #[error("cannot read slot {slot} device {}: {source}; check slots.{slot} in updater.toml", device.display())]
    Probe { slot: Slot, device: PathBuf, source: std::io::Error },
    #[error("cannot mount slot {slot} device {} read-only at {} (file system {fs_type}): `{command}` {outcome}; \
             check slots.mount_command in updater.toml and that the kernel supports {fs_type}", device.display(), mount_point.display())]
    Mount { slot: Slot, device: PathBuf, mount_point: PathBuf, fs_type: String, command: String, outcome: String },
    #[error("cannot unmount {}: `{command}` {outcome}; unmount it by hand with `umount {}` before the next install",
            mount_point.display(), mount_point.display())]
    Unmount { mount_point: PathBuf, command: String, outcome: String },
}

/// The commands that mount a slot read-only and unmount it. Their
/// placeholders are `{device}`, `{mount_point}`, `{type}` (`ext4`, `erofs`,
/// `squashfs`, or `auto` for any other image) and `{options}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountCommands {
    pub mount: Vec<String>,
    pub unmount: Vec<String>,
}

impl Default for MountCommands {
    fn default() -> Self {
        Self {
            mount: DEFAULT_MOUNT_COMMAND.map(String::from).to_vec(),
            unmount: DEFAULT_UNMOUNT_COMMAND.map(String::from).to_vec(),
        }
    }
}

impl MountCommands {
    /// Checks that each command names what it needs. The error is a message
    /// for the configuration error.
    pub fn validate(&self) -> Result<(), String> {
        let names = |argv: &[String], placeholder: &str| argv.iter().any(|arg| arg.contains(placeholder));
        for (field, argv, needed) in [
            ("slots.mount_command", &self.mount, &["{device}", "{mount_point}"][..]),
            ("slots.unmount_command", &self.unmount, &["{mount_point}"][..]),
        ] {
            if argv.first().is_none_or(String::is_empty) {
                return Err(format!("{field} must name a command, such as {:?}", default_for(field)));
            }
            if let Some(missing) = needed.iter().find(|placeholder| !names(argv, placeholder)) {
                return Err(format!("{field} {argv:?} has no {missing} placeholder; write it like {:?}", default_for(field)));
            }
        }
        Ok(())
    }

    /// Mounts the device of `slot` read-only at `parent/slot-X`, with
    /// `nodev`, `nosuid`, and `loop` when the device is a regular file.
    /// A mount left there by a `tenderd` that was killed is unmounted first.
    pub fn mount_read_only(&self, slot: Slot, device: &Path, parent: &Path) -> Result<SlotMount<'_>, MountError> {
        let fs_type = probe(slot, device)?;
        let mount_point = parent.join(slot.dir_name());
        self.unmount_leftover(slot, parent)?;
        prepare_mount_point(parent, &mount_point)?;

        let is_file = std::fs::metadata(device).is_ok_and(|metadata| metadata.is_file());
        let options = if is_file { format!("{MOUNT_OPTIONS},loop") } else { MOUNT_OPTIONS.to_owned() };
        let type_name = fs_type.map_or("auto", FsType::name);
        let device_text = device.display().to_string();
        let mount_point_text = mount_point.display().to_string();
        let argv = command::expand(
            &self.mount,
            &[("device", &device_text), ("mount_point", &mount_point_text), ("type", type_name), ("options", &options)],
        );
        let outcome = command::run(&argv, None, COMMAND_TIMEOUT);
        tracing::info!(command = ?argv, outcome = %outcome.describe(), "mount the staged slot for the pre-switch checks");
        if !outcome.is_success() {
            remove_mount_point(&mount_point);
            return Err(MountError::Mount {
                slot,
                device: device.to_owned(),
                mount_point,
                fs_type: type_name.to_owned(),
                command: argv.join(" "),
                outcome: outcome.describe(),
            });
        }
        Ok(SlotMount { unmount: &self.unmount, mount_point, mounted: true })
    }

    /// Unmounts what a `tenderd` that was killed during the pre-switch
    /// checks left mounted at `parent/slot-X`, and removes the mount point.
    pub fn unmount_leftover(&self, slot: Slot, parent: &Path) -> Result<(), MountError> {
        let mount_point = parent.join(slot.dir_name());
        if is_mount_point(&mount_point) {
            tracing::warn!(mount_point = %mount_point.display(), "unmounting a mount left by an earlier pre-switch check");
            unmount(&self.unmount, &mount_point)?;
        }
        if mount_point.exists() {
            remove_mount_point(&mount_point);
        }
        Ok(())
    }
}

fn default_for(field: &str) -> &'static [&'static str] {
    if field == "slots.mount_command" {
        &DEFAULT_MOUNT_COMMAND
    } else {
        &DEFAULT_UNMOUNT_COMMAND
    }
}

/// A mounted slot. [`SlotMount::unmount`] reports a failed unmount. A
/// mount dropped without it is unmounted too, and a failure is only logged.
#[derive(Debug)]
pub struct SlotMount<'c> {
    unmount: &'c [String],
    mount_point: PathBuf,
    mounted: bool,
}

impl SlotMount<'_> {
    pub fn path(&self) -> &Path {
        &self.mount_point
    }

    /// Unmounts the slot and removes its mount point.
    pub fn unmount(mut self) -> Result<(), MountError> {
        self.mounted = false;
        unmount(self.unmount, &self.mount_point)?;
        remove_mount_point(&self.mount_point);
        Ok(())
    }
}

impl Drop for SlotMount<'_> {
    fn drop(&mut self) {
        if !self.mounted {
            return;
        }
        match unmount(self.unmount, &self.mount_point) {
            Ok(()) => remove_mount_point(&self.mount_point),
            Err(error) => tracing::error!(%error, "the staged slot stays mounted"),
        }
    }
}

/// Detects the file system of the device from its first bytes.
fn probe(slot: Slot, device: &Path) -> Result<Option<FsType>, MountError> {
    let probe_error = |source| MountError::Probe { slot, device: device.to_owned(), source };
    let mut file = std::fs::File::open(device).map_err(probe_error)?;
    FsType::read(&mut file).map_err(probe_error)
}

/// Creates the parent with mode 0700, so only root reaches the mounted
/// image, and the mount point below it.
fn prepare_mount_point(parent: &Path, mount_point: &Path) -> Result<(), MountError> {
    let error = |path: &Path| {
        let path = path.to_owned();
        move |source| MountError::MountPoint { path, source }
    };
    std::fs::create_dir_all(parent).map_err(error(parent))?;
    std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o700)).map_err(error(parent))?;
    match std::fs::create_dir(mount_point) {
        Err(source) if source.kind() != std::io::ErrorKind::AlreadyExists => Err(error(mount_point)(source)),
        _ => Ok(()),
    }
}

/// Tells whether a file system is mounted at `path`: its device differs
/// from its parent's.
fn is_mount_point(path: &Path) -> bool {
    match (std::fs::metadata(path), path.parent().map(std::fs::metadata)) {
        (Ok(own), Some(Ok(parent))) => own.dev() != parent.dev(),
        _ => false,
    }
}

/// Runs the unmount command, retrying while the mount is still busy.
fn unmount(command_template: &[String], mount_point: &Path) -> Result<(), MountError> {
    let mount_point_text = mount_point.display().to_string();
    let argv = command::expand(command_template, &[("mount_point", &mount_point_text)]);
    let mut attempt = 1;
    loop {
        let outcome = command::run(&argv, None, COMMAND_TIMEOUT);
        if outcome.is_success() {
            tracing::info!(mount_point = %mount_point.display(), "unmounted the staged slot");
            return Ok(());
        }
        if attempt >= UNMOUNT_ATTEMPTS {
            return Err(MountError::Unmount { mount_point: mount_point.to_owned(), command: argv.join(" "), outcome: outcome.describe() });
        }
        tracing::warn!(command = ?argv, outcome = %outcome.describe(), attempt, "unmount failed; retrying");
        attempt += 1;
        std::thread::sleep(UNMOUNT_RETRY_DELAY);
    }
}

/// Removes an empty mount point. A failure is only logged, because the
/// checks themselves are done.
fn remove_mount_point(mount_point: &Path) {
    if let Err(error) = std::fs::remove_dir(mount_point) {
        tracing::warn!(mount_point = %mount_point.display(), %error, "cannot remove the mount point");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::tests::argv;

    #[test]
    fn commands_need_their_placeholders() {
        assert_eq!(MountCommands::default().validate(), Ok(()));
        let cases = [
            (argv(&[]), argv(&["umount", "{mount_point}"]), "must name a command"),
            (argv(&["mount", "{device}"]), argv(&["umount", "{mount_point}"]), "no {mount_point}"),
            (argv(&["mount", "{mount_point}"]), argv(&["umount", "{mount_point}"]), "no {device}"),
            (argv(&["mount", "{device}", "{mount_point}"]), argv(&["umount"]), "slots.unmount_command"),
        ];
        for (mount, unmount, expected) in cases {
            let error = MountCommands { mount: mount.clone(), unmount }.validate().expect_err("invalid");
            assert!(error.contains(expected), "{mount:?}: {error}");
        }
    }

    #[test]
    fn failed_mount_removes_its_mount_point() {
        let dir = tempfile::tempdir().expect("tempdir");
        let device = dir.path().join("slot-b.img");
        std::fs::write(&device, vec![0u8; 4096]).expect("device");
        let commands = MountCommands { mount: argv(&["sh", "-c", "echo no such file system; exit 32", "{device}", "{mount_point}"]), ..MountCommands::default() };
        let parent = dir.path().join("mnt");
        let error = commands.mount_read_only(Slot::B, &device, &parent).expect_err("mount fails").to_string();
        assert!(error.contains("cannot mount slot b device"), "{error}");
        assert!(error.contains("(file system auto)"), "{error}");
        assert!(error.contains("no such file system"), "{error}");
        assert!(!parent.join("slot-b").exists());
    }

    #[test]
    fn mount_passes_type_options_and_paths() {
        let dir = tempfile::tempdir().expect("tempdir");
        let device = dir.path().join("slot-a.img");
        let mut image = vec![0u8; 4096];
        image[..4].copy_from_slice(b"hsqs");
        std::fs::write(&device, image).expect("device");
        let log = dir.path().join("log");
        let script = format!("echo \"$@\" >> {}", log.display());
        let commands = MountCommands {
            mount: argv(&["sh", "-c", &script, "mount", "{type}", "{options}", "{device}", "{mount_point}"]),
            unmount: argv(&["sh", "-c", &script, "umount", "{mount_point}"]),
        };
        let parent = dir.path().join("mnt");
        let mount = commands.mount_read_only(Slot::A, &device, &parent).expect("mounted");
        assert_eq!(mount.path(), parent.join("slot-a"));
        mount.unmount().expect("unmounted");
        let lines = std::fs::read_to_string(&log).expect("log");
        let mount_point = parent.join("slot-a");
        let expected = format!(
            "squashfs ro,nodev,nosuid,loop {} {}\n{}\n",
            device.display(),
            mount_point.display(),
            mount_point.display()
        );
        assert_eq!(lines, expected);
        assert!(!mount_point.exists());
        let mode = std::fs::metadata(&parent).expect("parent").permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }
}
