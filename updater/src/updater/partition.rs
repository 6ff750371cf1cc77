//! The install steps that differ for partition slots: the image is written
//! to the inactive device, a switch arms boot counting in the boot loader's
//! environment and reboots, and the trial runs after the reboot.
//!
//! Boot counting decides what a restart of `tenderd` means. With the trial
//! armed and `bootcount` at 0 the robot has not booted the new slot yet, so
//! the reboot is started again. With `bootcount` at 1 or more the boot
//! loader started the new slot and the health check runs. When the boot
//! loader fell back on its own, the environment selects the previous slot
//! and the release is recorded as reverted.

use std::path::Path;
use std::time::Duration;

use super::{TrialResult, UpdateError, Updater};
use crate::boot::PartitionSetup;
use crate::command;
use crate::delta::DeltaPack;
use crate::format::Manifest;
use crate::slot::{PartitionError, StageError, StageStats};
use crate::source::ReleaseSource;
use crate::state::{Phase, Slot, SlotRelease, State};

impl Updater {
    /// Returns the active slot: the state's, else the slot the boot loader
    /// selects on a robot that Tender has not installed yet.
    pub(super) fn active_slot(&self, state: &State) -> Result<Option<Slot>, UpdateError> {
        match (&self.config.partition, state.active) {
            (Some(partition), None) => Ok(partition.boot.selection()?.slot),
            (_, active) => Ok(active),
        }
    }

    #[allow(clippy::too_many_arguments, reason = "the inputs of a staging, as for directory slots")]
    pub(super) fn stage_image(
        &self,
        partition: &PartitionSetup,
        manifest: &Manifest,
        target: Slot,
        active: Option<(Slot, &Manifest)>,
        source: &mut dyn ReleaseSource,
        cache_dir: &Path,
        delta: Option<&DeltaPack>,
    ) -> Result<StageStats, UpdateError> {
        let image = match partition.slots.stage(manifest, target, active, source, cache_dir, delta) {
            Ok(image) => image,
            // Chunks are downloaded while the image is written, so the
            // cache can fill up here; its partial downloads are removed.
            Err(PartitionError::Source(error)) if crate::slot::space::is_storage_full(&error) => {
                crate::slot::space::empty_dir(cache_dir);
                let source = Box::new(StageError::Source(error));
                return Err(StageError::OutOfSpace { place: "the download cache".to_owned(), path: cache_dir.to_owned(), source }.into());
            }
            Err(error) => return Err(error.into()),
        };
        let from_delta = image.delta_bytes > 0;
        Ok(StageStats {
            files_rebuilt: u64::from(!from_delta),
            files_from_delta: u64::from(from_delta),
            delta_bytes: image.delta_bytes,
            chunk_bytes_reused: image.chunk_bytes_reused,
            chunks_fetched: image.chunks_fetched,
            bytes_fetched: image.bytes_fetched,
            bytes_planned: image.bytes_fetched,
            bytes_written: image.bytes_written,
            ..StageStats::default()
        })
    }

    /// Points the boot loader at `target`: a trial for a new release, or,
    /// when `target` is the committed slot, a revert that marks the other
    /// slot bad and reboots into `target`.
    pub(super) fn point_boot_at(&self, partition: &PartitionSetup, state: &State, target: Slot) -> Result<(), UpdateError> {
        if state.committed == Some(target) {
            partition.boot.mark_bad(target.other(), target)?;
            self.reboot(partition);
            return Ok(());
        }
        let previous = state.committed.or(state.active).unwrap_or(target.other());
        partition.boot.start_trial(target, previous)?;
        Ok(())
    }

    /// Runs the reboot command after a switch and reports the trial as started.
    pub(super) fn reboot_into_trial(&self, state: &State, target: Slot, record: &SlotRelease) -> Result<super::InstallReport, UpdateError> {
        if let Some(partition) = &self.config.partition {
            self.reboot(partition);
        }
        Ok(super::InstallReport {
            release: record.to_string(),
            slot: target,
            phase: state.phase,
            stats: StageStats::default(),
            detail: format!("rebooting into slot {target} for its trial"),
        })
    }

    fn reboot(&self, partition: &PartitionSetup) {
        let outcome = command::run(&partition.reboot_command, None, Duration::from_secs(60));
        tracing::info!(command = ?partition.reboot_command, outcome = %outcome.describe(), "reboot");
    }

    /// Decides what a restart during a trial means; `None` runs the health check.
    pub(super) fn resume_partition_trial(
        &self,
        partition: &PartitionSetup,
        state: &mut State,
        active: Slot,
    ) -> Result<Option<TrialResult>, UpdateError> {
        let selection = partition.boot.selection()?;
        if selection.slot != Some(active) {
            // The boot loader gave up on the trial and started the old slot.
            let fallback = selection.slot.unwrap_or(active.other());
            let reason = format!(
                "the boot loader fell back to slot {fallback} after {} boots of slot {active}",
                selection.boot_count
            );
            partition.boot.mark_bad(active, fallback)?;
            let failed = state.slot_release(active).cloned();
            if let Some(release) = &failed {
                state.rejected.retain(|r| r.release.digest != release.digest);
                state.rejected.push(crate::state::RejectedRelease {
                    release: release.clone(),
                    reason: reason.clone(),
                    time: crate::state::now_text(),
                });
            }
            state.active = Some(fallback);
            state.phase = Phase::Reverted;
            state.target = None;
            state.health_failures = 0;
            state.last_error = Some(reason.clone());
            state.record("reverted", Some(active), failed, reason.clone());
            self.save(state)?;
            return Ok(Some(TrialResult::Reverted(reason)));
        }
        if selection.trial == Some(active) && selection.boot_count == 0 {
            tracing::warn!(slot = %active, "the trial slot has not booted yet; rebooting into it");
            self.reboot(partition);
            return Ok(Some(TrialResult::Pending));
        }
        Ok(None)
    }

    /// Goes back to the committed release in the other slot: its image is
    /// read back and checked first, then the boot loader selects it, without
    /// a trial since it was committed before, and the robot reboots.
    pub(super) fn rollback_partition(
        &self,
        partition: &PartitionSetup,
        state: &mut State,
        other: Slot,
        release: &SlotRelease,
        manifest: &Manifest,
    ) -> Result<(), UpdateError> {
        let (size, digest, _) = partition.slots.image_of(manifest)?;
        partition.slots.verify(other, size, &digest)?;
        state.phase = Phase::Switching;
        state.target = Some(other);
        state.record("rollback", Some(other), Some(release.clone()), "");
        self.save(state)?;
        let bad: Vec<String> = partition.boot.selection()?.bad.iter().filter(|s| **s != other).map(|s| s.to_string()).collect();
        partition.boot.env.update(&[
            ("tender_slot", Some(other.to_string())),
            ("tender_prev", None),
            ("tender_bad", (!bad.is_empty()).then(|| bad.join(","))),
            ("upgrade_available", Some("0".to_owned())),
            ("bootcount", Some("0".to_owned())),
        ])?;
        state.active = Some(other);
        state.committed = Some(other);
        state.phase = Phase::Committed;
        state.target = None;
        state.health_failures = 0;
        state.held = true;
        state.record("rolled back", Some(other), Some(release.clone()), "held until `tenderd resume`; rebooting");
        self.save(state)?;
        self.reboot(partition);
        Ok(())
    }
}
