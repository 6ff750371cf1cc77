//! The persistent install state: the release in each slot, the phase of the
//! install, and the history. It lives in one JSON file that is only ever
//! replaced through [`crate::fsutil::write_atomic`], and it is written before
//! each side effect it describes.

use std::collections::VecDeque;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::format::Sha256Digest;
use crate::fsutil::{write_atomic, FsError};

const STATE_FILE: &str = "state.json";
/// Events kept in the history; older ones are dropped first.
const MAX_HISTORY: usize = 200;

/// One of the two directory slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Slot {
    A,
    B,
}

impl Slot {
    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }

    /// Directory name of the slot below the slots base.
    pub fn dir_name(self) -> &'static str {
        match self {
            Slot::A => "slot-a",
            Slot::B => "slot-b",
        }
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Slot::A => "a",
            Slot::B => "b",
        })
    }
}

/// The release a slot holds, as verified when it was staged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotRelease {
    pub name: String,
    pub version: semver::Version,
    /// SHA-256 of the manifest bytes.
    pub digest: Sha256Digest,
}

impl fmt::Display for SlotRelease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.name, self.version)
    }
}

/// Phase of the install state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Nothing installed yet.
    Idle,
    /// Writing a release into the inactive slot; that slot is incomplete.
    Staging,
    /// The inactive slot contains a verified release that passed its
    /// pre-switch checks and waits for the switch.
    Staged,
    /// About to move the `current` link to the staged slot.
    Switching,
    /// The new slot is active and its health check has not passed yet.
    Trial,
    /// The active slot's release passed its health check or was committed by hand.
    Committed,
    /// The last trial failed and the robot went back to the committed slot.
    Reverted,
    /// The last install failed before the switch; the active slot is unchanged.
    Failed,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = serde_json::to_value(self).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
        f.write_str(&text)
    }
}

/// A release that failed its health check and must not be installed again
/// automatically.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectedRelease {
    pub release: SlotRelease,
    pub reason: String,
    pub time: String,
}

/// One line of the history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// RFC 3339 time of the robot's clock.
    pub time: String,
    pub event: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<Slot>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<SlotRelease>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// The whole persisted state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub phase: Phase,
    /// Slot that `current` points to when no switch is under way.
    pub active: Option<Slot>,
    /// Slot holding the last committed release.
    pub committed: Option<Slot>,
    /// Releases the slots hold; `None` for an empty or incomplete slot.
    pub slot_a: Option<SlotRelease>,
    pub slot_b: Option<SlotRelease>,
    /// Slot being staged, switched to, or on trial.
    pub target: Option<Slot>,
    /// Consecutive health check failures of the current trial.
    pub health_failures: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default)]
    pub rejected: Vec<RejectedRelease>,
    /// Set by `tenderd hold`: the daemon stages and switches nothing new.
    #[serde(default)]
    pub held: bool,
    /// Boot during which the staged release was staged, for the
    /// `next-boot` switch policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staged_boot_id: Option<String>,
    #[serde(default)]
    pub history: VecDeque<Event>,
}

impl Default for State {
    fn default() -> Self {
        Self {
            phase: Phase::Idle,
            active: None,
            committed: None,
            slot_a: None,
            slot_b: None,
            target: None,
            health_failures: 0,
            last_error: None,
            rejected: Vec::new(),
            held: false,
            staged_boot_id: None,
            history: VecDeque::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot read state file {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("state file {} is corrupt ({source}); restore it from a backup or remove it to start over", path.display())]
    Corrupt { path: PathBuf, source: serde_json::Error },
    #[error(transparent)]
    Write(#[from] FsError),
}

/// Formats the robot clock's current time for the history.
pub fn now_text() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

impl State {
    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join(STATE_FILE)
    }

    /// Loads the state, or the initial state when no file exists yet.
    pub fn load(state_dir: &Path) -> Result<Self, StateError> {
        let path = Self::path(state_dir);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| StateError::Corrupt { path, source }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(source) => Err(StateError::Read { path, source }),
        }
    }

    /// Persists the state atomically.
    pub fn save(&self, state_dir: &Path) -> Result<(), StateError> {
        let mut bytes = serde_json::to_vec_pretty(self).map_err(|source| StateError::Corrupt {
            path: Self::path(state_dir),
            source,
        })?;
        bytes.push(b'\n');
        write_atomic(&Self::path(state_dir), &bytes)?;
        Ok(())
    }

    pub fn slot_release(&self, slot: Slot) -> Option<&SlotRelease> {
        match slot {
            Slot::A => self.slot_a.as_ref(),
            Slot::B => self.slot_b.as_ref(),
        }
    }

    pub fn set_slot_release(&mut self, slot: Slot, release: Option<SlotRelease>) {
        match slot {
            Slot::A => self.slot_a = release,
            Slot::B => self.slot_b = release,
        }
    }

    /// Returns the committed release, which decides which versions are newer.
    pub fn committed_release(&self) -> Option<&SlotRelease> {
        self.committed.and_then(|slot| self.slot_release(slot))
    }

    pub fn is_rejected(&self, digest: &Sha256Digest) -> Option<&RejectedRelease> {
        self.rejected.iter().find(|r| r.release.digest == *digest)
    }

    /// Appends an event to the history, dropping the oldest beyond the limit.
    pub fn record(&mut self, event: &str, slot: Option<Slot>, release: Option<SlotRelease>, detail: impl Into<String>) {
        let detail = detail.into();
        tracing::info!(event, slot = ?slot, release = ?release.as_ref().map(|r| r.to_string()), %detail, "state event");
        self.history.push_back(Event { time: now_text(), event: event.to_owned(), slot, release, detail });
        while self.history.len() > MAX_HISTORY {
            self.history.pop_front();
        }
    }
}
