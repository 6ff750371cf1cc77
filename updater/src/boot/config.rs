//! The `[boot]` section of `updater.toml` and the partition fields of
//! `[slots]`, turned into a [`BootControl`] and [`PartitionSlots`].

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{BootControl, BootEnv, CommandEnv, GrubEnv, UbootCopy, UbootEnv};
use crate::config::under_root;
use crate::slot::{MountCommands, PartitionSlots};

/// `[boot]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootFile {
    /// `uboot`, `grub` or `command`.
    pub backend: String,
    #[serde(default)]
    pub uboot: Vec<UbootCopy>,
    #[serde(default)]
    pub grub_env: Option<PathBuf>,
    #[serde(default)]
    pub get_command: Vec<String>,
    #[serde(default)]
    pub set_command: Vec<String>,
    #[serde(default = "default_boot_limit")]
    pub boot_limit: u32,
    /// Command that reboots the robot after a switch or a revert.
    pub reboot_command: Vec<String>,
}

fn default_boot_limit() -> u32 {
    3
}

/// Partition slots and their boot loader, ready to use.
#[derive(Debug, Clone)]
pub struct PartitionSetup {
    pub slots: PartitionSlots,
    pub boot: BootControl,
    pub reboot_command: Vec<String>,
    /// Mounts a staged slot read-only for the pre-switch checks.
    pub mount: MountCommands,
}

/// The `[slots]` fields of partition slots, as written.
#[derive(Debug, Clone, Copy)]
pub struct SlotDevices<'a> {
    pub a: Option<&'a Path>,
    pub b: Option<&'a Path>,
    /// The release file written to the devices.
    pub image: &'a str,
}

/// Builds the partition setup; the error is a message for the config error.
pub fn partition_setup(
    root: &Path,
    devices: &SlotDevices,
    mount: MountCommands,
    boot: Option<&BootFile>,
) -> Result<PartitionSetup, String> {
    let (Some(a), Some(b)) = (devices.a, devices.b) else {
        return Err("slots.kind = \"partition\" needs slots.a and slots.b (the two devices)".to_owned());
    };
    let Some(boot) = boot else {
        return Err("slots.kind = \"partition\" needs a [boot] section that names the boot loader".to_owned());
    };
    let env = match boot.backend.as_str() {
        "uboot" => {
            let copies = boot
                .uboot
                .iter()
                .map(|copy| UbootCopy { device: under_root(root, &copy.device), ..copy.clone() })
                .collect();
            BootEnv::Uboot(UbootEnv::new(copies).map_err(|e| e.to_string())?)
        }
        "grub" => {
            let path = boot.grub_env.as_ref().ok_or("boot.backend = \"grub\" needs boot.grub_env")?;
            BootEnv::Grub(GrubEnv::new(under_root(root, path)))
        }
        "command" => {
            if boot.get_command.is_empty() || boot.set_command.is_empty() {
                return Err("boot.backend = \"command\" needs boot.get_command and boot.set_command".to_owned());
            }
            BootEnv::Command(CommandEnv { get: boot.get_command.clone(), set: boot.set_command.clone() })
        }
        other => return Err(format!("boot.backend {other:?} is unknown; use \"uboot\", \"grub\" or \"command\"")),
    };
    if !(1..=100).contains(&boot.boot_limit) {
        return Err(format!("boot.boot_limit {} is outside 1 to 100", boot.boot_limit));
    }
    mount.validate()?;
    if boot.reboot_command.is_empty() {
        return Err("boot.reboot_command must name a command, such as [\"systemctl\", \"reboot\"]".to_owned());
    }
    Ok(PartitionSetup {
        slots: PartitionSlots { a: under_root(root, a), b: under_root(root, b), image: devices.image.to_owned() },
        boot: BootControl { env, boot_limit: boot.boot_limit },
        reboot_command: boot.reboot_command.clone(),
        mount,
    })
}
