//! Boot selection for partition slots: the boot loader's environment, and
//! boot counting for a slot on trial.
//!
//! Variables Tender keeps, the same names for every backend:
//!
//! - `tender_slot`: the slot the boot loader starts (`a` or `b`);
//! - `tender_prev`: the committed slot to fall back to while another is on trial;
//! - `tender_bad`: slots that failed, which the boot loader must not start;
//! - `upgrade_available`, `bootcount`, `bootlimit`: U-Boot's own boot
//!   counting. While `upgrade_available` is 1, U-Boot counts boots in
//!   `bootcount` and runs `altbootcmd` once it passes `bootlimit`; the board's
//!   `altbootcmd` boots `tender_prev`. GRUB's `grub.cfg` does the same with
//!   these variables (see `recipes/boot/`).
//!
//! A switch writes the trial variables; a health check that passes clears
//! them (the slot is good); one that fails sets `tender_slot` back and adds
//! the slot to `tender_bad`. Ordinary reboots leave a committed slot alone,
//! because without `upgrade_available` nothing is counted.

mod command;
mod config;
mod grub;
mod uboot;

use std::collections::BTreeMap;
use std::path::PathBuf;

pub use command::CommandEnv;
pub use config::{partition_setup, BootFile, PartitionSetup, SlotDevices};
pub use grub::GrubEnv;
pub use uboot::{UbootCopy, UbootEnv};

use crate::state::Slot;

/// Failures of a boot environment.
#[derive(Debug, thiserror::Error)]
pub enum BootEnvError {
    #[error("cannot access the boot environment at {}: {source}; check the device path in [boot]", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("the boot environment at {} cannot be written: {source}; tenderd changes it to switch slots, so make it writable (remount it read-write or fix the path in [boot])", path.display())]
    NotWritable { path: PathBuf, source: std::io::Error },
    #[error("{what} has no valid copy; tenderd never writes a default environment, so restore it with the board's tools (fw_setenv -f, grub-editenv create) first")]
    NoValidCopy { what: String },
    #[error("boot environment variable {name:?} cannot be stored; names have no `=` and values no line breaks or NUL bytes")]
    Value { name: String },
    #[error("the boot environment at {} is full ({size} bytes); remove unused variables", path.display())]
    Full { path: PathBuf, size: u64 },
    #[error("the boot environment at {} reads back other values than were written; the device may be failing", path.display())]
    ReadBack { path: PathBuf },
    #[error("boot environment command failed: {0}")]
    Command(String),
    #[error("invalid boot configuration: {0}")]
    Config(String),
}

/// A boot loader environment.
#[derive(Debug, Clone)]
pub enum BootEnv {
    Uboot(UbootEnv),
    Grub(GrubEnv),
    Command(CommandEnv),
}

impl BootEnv {
    pub fn read(&self) -> Result<BTreeMap<String, String>, BootEnvError> {
        match self {
            Self::Uboot(env) => env.read(),
            Self::Grub(env) => env.read(),
            Self::Command(env) => env.read(),
        }
    }

    pub fn write(&self, vars: &BTreeMap<String, String>) -> Result<(), BootEnvError> {
        match self {
            Self::Uboot(env) => env.write(vars),
            Self::Grub(env) => env.write(vars),
            Self::Command(env) => env.write(vars),
        }
    }

    /// Checks, without writing, that a switch could write the environment.
    pub fn check_writable(&self) -> Result<(), BootEnvError> {
        match self {
            Self::Uboot(env) => env.check_writable(),
            Self::Grub(env) => env.check_writable(),
            // TODO: a command backend cannot be probed without changing the
            // environment; its first write is the check.
            Self::Command(_) => Ok(()),
        }
    }

    /// Changes some variables and keeps the others; `None` removes one.
    pub fn update(&self, changes: &[(&str, Option<String>)]) -> Result<BTreeMap<String, String>, BootEnvError> {
        let mut vars = self.read()?;
        for (name, value) in changes {
            match value {
                Some(value) => vars.insert((*name).to_owned(), value.clone()),
                None => vars.remove(*name),
            };
        }
        self.write(&vars)?;
        Ok(vars)
    }
}

/// The slot selection read from the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootSelection {
    /// The slot the boot loader starts.
    pub slot: Option<Slot>,
    /// The slot on trial, when boot counting is armed.
    pub trial: Option<Slot>,
    /// The slot to fall back to.
    pub previous: Option<Slot>,
    pub bad: Vec<Slot>,
    pub boot_count: u32,
    pub boot_limit: u32,
}

fn slot_of(text: &str) -> Option<Slot> {
    match text {
        "a" => Some(Slot::A),
        "b" => Some(Slot::B),
        _ => None,
    }
}

fn slot_name(slot: Slot) -> String {
    match slot {
        Slot::A => "a".to_owned(),
        Slot::B => "b".to_owned(),
    }
}

/// Boot counting on top of an environment.
#[derive(Debug, Clone)]
pub struct BootControl {
    pub env: BootEnv,
    /// Boots a slot on trial may take before the boot loader falls back.
    pub boot_limit: u32,
}

impl BootControl {
    /// Reads the selection.
    pub fn selection(&self) -> Result<BootSelection, BootEnvError> {
        let vars = self.env.read()?;
        let number = |name: &str| vars.get(name).and_then(|v| v.parse().ok()).unwrap_or(0);
        let slot = vars.get("tender_slot").and_then(|s| slot_of(s));
        let armed = vars.get("upgrade_available").map(String::as_str) == Some("1");
        Ok(BootSelection {
            slot,
            trial: if armed { slot } else { None },
            previous: vars.get("tender_prev").and_then(|s| slot_of(s)),
            bad: vars.get("tender_bad").map(|s| s.split(',').filter_map(slot_of).collect()).unwrap_or_default(),
            boot_count: number("bootcount"),
            boot_limit: number("bootlimit"),
        })
    }

    /// Makes `slot` the next boot, on trial: boot counting starts and the
    /// boot loader falls back to `previous` after the boot limit. The slot
    /// leaves the bad list, since it holds a new release.
    pub fn start_trial(&self, slot: Slot, previous: Slot) -> Result<(), BootEnvError> {
        let bad = self.selection()?.bad.into_iter().filter(|s| *s != slot).collect::<Vec<_>>();
        self.env.update(&[
            ("tender_slot", Some(slot_name(slot))),
            ("tender_prev", Some(slot_name(previous))),
            ("tender_bad", join(&bad)),
            ("upgrade_available", Some("1".to_owned())),
            ("bootcount", Some("0".to_owned())),
            ("bootlimit", Some(self.boot_limit.to_string())),
        ])?;
        Ok(())
    }

    /// Marks the booted trial slot good: counting stops.
    pub fn mark_good(&self, slot: Slot) -> Result<(), BootEnvError> {
        self.env.update(&[
            ("tender_slot", Some(slot_name(slot))),
            ("tender_prev", None),
            ("upgrade_available", Some("0".to_owned())),
            ("bootcount", Some("0".to_owned())),
        ])?;
        Ok(())
    }

    /// Marks `slot` bad and selects `fallback` for the next boot.
    pub fn mark_bad(&self, slot: Slot, fallback: Slot) -> Result<(), BootEnvError> {
        let mut bad = self.selection()?.bad;
        if !bad.contains(&slot) {
            bad.push(slot);
        }
        self.env.update(&[
            ("tender_slot", Some(slot_name(fallback))),
            ("tender_prev", None),
            ("tender_bad", join(&bad)),
            ("upgrade_available", Some("0".to_owned())),
            ("bootcount", Some("0".to_owned())),
        ])?;
        Ok(())
    }
}

fn join(slots: &[Slot]) -> Option<String> {
    (!slots.is_empty()).then(|| slots.iter().map(|s| slot_name(*s)).collect::<Vec<_>>().join(","))
}
