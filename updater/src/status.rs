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
        }
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
