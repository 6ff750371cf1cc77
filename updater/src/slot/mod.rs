//! A/B directory slots: `slot-a` and `slot-b` below the slots base, and a
//! `current` symlink that names the active one. The active slot is never
//! written; releases are staged into the other one and the link is switched
//! atomically.

mod check;
pub mod fstype;
mod metadata;
mod mount;
mod partition;
pub mod space;
mod stage;

use std::path::{Path, PathBuf};

use crate::fsutil::{replace_symlink, FsError};
use crate::state::Slot;

pub use check::{check_slot, CheckError};
pub use fstype::FsType;
pub use mount::{MountCommands, MountError, SlotMount};
pub use partition::{ImageStats, PartitionError, PartitionSlots};
pub use stage::{check_cache_room, prepare, PreparedStage, StageError, StageStats};

/// Name of the symlink that points at the active slot.
pub const CURRENT_LINK: &str = "current";

/// The slot directories of one robot.
#[derive(Debug, Clone)]
pub struct DirectorySlots {
    base: PathBuf,
}

impl DirectorySlots {
    pub fn new(base: &Path) -> Self {
        Self { base: base.to_owned() }
    }

    pub fn base(&self) -> &Path {
        &self.base
    }

    pub fn slot_dir(&self, slot: Slot) -> PathBuf {
        self.base.join(slot.dir_name())
    }

    pub fn current_link(&self) -> PathBuf {
        self.base.join(CURRENT_LINK)
    }

    /// Reads which slot `current` points to; `None` when the link is missing
    /// or names something else.
    pub fn linked_slot(&self) -> Option<Slot> {
        let target = std::fs::read_link(self.current_link()).ok()?;
        [Slot::A, Slot::B].into_iter().find(|slot| target == Path::new(slot.dir_name()))
    }

    /// Points `current` at `slot` with a relative link, atomically.
    pub fn switch_to(&self, slot: Slot) -> Result<(), FsError> {
        replace_symlink(Path::new(slot.dir_name()), &self.current_link())
    }
}
