//! The deployment status and history, as `tenderd status` and
//! `tenderd history` print them.

use serde::{Deserialize, Serialize};

use crate::slot::DirectorySlots;
use crate::state::{Event, Phase, Slot, SlotRelease, State};

/// The fields of `tenderd status --json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    pub state: Phase,
    /// Version of the release in the active slot.
    pub version: Option<String>,
    pub name: Option<String>,
    pub active_slot: Option<Slot>,
    /// Slot the `current` link points to on disk.
    pub linked_slot: Option<Slot>,
    pub committed_version: Option<String>,
    pub health_failures: u32,
    /// Set by `tenderd hold`.
    pub held: bool,
    pub slot_a: Option<SlotRelease>,
    pub slot_b: Option<SlotRelease>,
    pub last_error: Option<String>,
    /// Partition slots: the selection read from the boot loader's environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot: Option<BootStatus>,
}

/// The boot selection of partition slots.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct BootStatus {
    /// The slot the boot loader starts.
    pub slot: Option<Slot>,
    /// The slot on trial, while boot counting is armed.
    pub trial: Option<Slot>,
    /// Slots marked bad, which the boot loader does not start.
    pub bad: Vec<Slot>,
    pub boot_count: u32,
    pub boot_limit: u32,
}

impl From<crate::boot::BootSelection> for BootStatus {
    fn from(selection: crate::boot::BootSelection) -> Self {
        Self {
            slot: selection.slot,
            trial: selection.trial,
            bad: selection.bad,
            boot_count: selection.boot_count,
            boot_limit: selection.boot_limit,
        }
    }
}

impl Status {
    pub fn new(state: &State, slots: &DirectorySlots) -> Self {
        let active = state.active.and_then(|slot| state.slot_release(slot));
        Self {
            state: state.phase,
            version: active.map(|r| r.version.to_string()),
            name: active.map(|r| r.name.clone()),
            active_slot: state.active,
            linked_slot: slots.linked_slot(),
            committed_version: state.committed_release().map(|r| r.version.to_string()),
            health_failures: state.health_failures,
            held: state.held,
            slot_a: state.slot_a.clone(),
            slot_b: state.slot_b.clone(),
            last_error: state.last_error.clone(),
            boot: None,
        }
    }

    /// Returns the status of a robot, with the boot selection of partition
    /// slots; an unreadable boot environment is logged and left out.
    pub fn of_robot(state: &State, config: &crate::config::Config) -> Self {
        let boot = config.partition.as_ref().and_then(|partition| match partition.boot.selection() {
            Ok(selection) => Some(selection.into()),
            Err(error) => {
                tracing::warn!(%error, "cannot read the boot environment");
                None
            }
        });
        Self::new(state, &DirectorySlots::new(&config.slots_base)).with_boot(boot)
    }

    /// Adds the boot selection of partition slots.
    pub fn with_boot(mut self, boot: Option<BootStatus>) -> Self {
        self.boot = boot;
        self
    }

    /// Renders the status for a terminal.
    pub fn to_text(&self) -> String {
        let dash = || "-".to_owned();
        let release = |r: &Option<SlotRelease>| r.as_ref().map_or("empty".to_owned(), |r| format!("{r} ({})", &r.digest.to_hex()[..12]));
        let mut lines = vec![
            format!("release:          {} {}", self.name.clone().unwrap_or_else(dash), self.version.clone().unwrap_or_default()),
            format!("state:            {}", self.state),
            format!("active slot:      {}", self.active_slot.map_or_else(dash, |s| s.to_string())),
            format!("committed:        {}", self.committed_version.clone().unwrap_or_else(dash)),
            format!("health failures:  {}", self.health_failures),
            format!("held:             {}", if self.held { "yes" } else { "no" }),
            format!("slot a:           {}", release(&self.slot_a)),
            format!("slot b:           {}", release(&self.slot_b)),
        ];
        if let Some(boot) = &self.boot {
            // A slot with a release that is neither on trial nor bad is one
            // the boot loader may fall back to.
            let mark = |slot: Slot| {
                let release = match slot {
                    Slot::A => &self.slot_a,
                    Slot::B => &self.slot_b,
                };
                if boot.bad.contains(&slot) {
                    "bad"
                } else if boot.trial == Some(slot) {
                    "trial"
                } else if release.is_some() || boot.slot == Some(slot) {
                    "good"
                } else {
                    "empty"
                }
            };
            lines.push(format!(
                "boot:             slot {} (a: {}, b: {}), boot {} of {}",
                boot.slot.map_or_else(dash, |s| s.to_string()),
                mark(Slot::A),
                mark(Slot::B),
                boot.boot_count,
                boot.boot_limit
            ));
        }
        if let Some(error) = &self.last_error {
            lines.push(format!("last error:       {error}"));
        }
        lines.join("\n")
    }
}

/// Renders one history event as a line.
pub fn event_line(event: &Event) -> String {
    let slot = event.slot.map(|s| format!(" slot {s}")).unwrap_or_default();
    let release = event.release.as_ref().map(|r| format!(" {r}")).unwrap_or_default();
    let detail = if event.detail.is_empty() { String::new() } else { format!(": {}", event.detail) };
    format!("{} {}{slot}{release}{detail}", event.time, event.event)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::Sha256Digest;

    #[test]
    fn boot_line_marks_each_partition_slot() {
        let release = |version: &str| SlotRelease { name: "ecar".to_owned(), version: version.parse().expect("version"), digest: Sha256Digest::of(version.as_bytes()) };
        let mut state = State { slot_a: Some(release("1.0.0")), slot_b: Some(release("1.0.1")), ..State::default() };
        let boot = BootStatus { slot: Some(Slot::B), trial: Some(Slot::B), bad: Vec::new(), boot_count: 1, boot_limit: 3 };
        let text = Status::new(&state, &DirectorySlots::new(std::path::Path::new("/nonexistent"))).with_boot(Some(boot)).to_text();
        assert!(text.contains("slot b (a: good, b: trial), boot 1 of 3"), "{text}");

        state.slot_b = None;
        let boot = BootStatus { slot: Some(Slot::A), trial: None, bad: vec![Slot::B], boot_count: 0, boot_limit: 3 };
        let text = Status::new(&state, &DirectorySlots::new(std::path::Path::new("/nonexistent"))).with_boot(Some(boot)).to_text();
        assert!(text.contains("slot a (a: good, b: bad)"), "{text}");
    }
}
