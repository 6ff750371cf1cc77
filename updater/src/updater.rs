//! The install state machine of a robot with A/B directory slots.
//!
//! Order of an install, each step persisted before its side effect:
//!
//! 1. verify the release against the trusted root and fetch every chunk the
//!    robot lacks (nothing written to the slots or the state yet);
//! 2. `staging`: rewrite the inactive slot, then check it file by file;
//! 3. pre-switch checks against the staged slot, backup of the configuration;
//! 4. `switching`: move the `current` link; `trial` once it points there;
//! 5. restart the services, run the health check, then `committed`, or switch
//!    back (`reverted`) after the configured number of consecutive failures.
//!
//! [`Updater::recover`] brings a robot whose `tenderd` died at any of these
//! points back to a consistent state.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;


use crate::backup::backup_config;
use crate::command;
use crate::config::Config;
use crate::format::limits::MAX_MANIFEST_BYTES;
use crate::format::{ChunkRef, HealthCheck, Manifest};
use crate::fsutil::{write_atomic, FsError};
use crate::slot::{check_cache_room, check_slot, prepare, DirectorySlots, StageStats};
use crate::source::{open_source_with_cache, read_bounded, ReleaseSource};
use crate::state::{now_text, Phase, RejectedRelease, Slot, SlotRelease, State, StateError};
use crate::verify::VerifiedRelease;

mod partition;
mod pre_switch;

/// Errors of install, commit and rollback. Each message is one line that
/// names the value and what to do.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error("cannot load the trusted root {}: {detail}", path.display())]
    TrustedRoot { path: PathBuf, detail: String },
    #[error(transparent)]
    Source(#[from] crate::source::SourceError),
    #[error(transparent)]
    Verify(#[from] crate::verify::VerifyError),
    #[error(transparent)]
    Online(#[from] crate::online::OnlineError),
    #[error(transparent)]
    Stage(#[from] crate::slot::StageError),
    #[error(transparent)]
    Partition(#[from] crate::slot::PartitionError),
    #[error(transparent)]
    Boot(#[from] crate::boot::BootEnvError),
    #[error(transparent)]
    Check(#[from] crate::slot::CheckError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error("release {release} is for compatible {found:?} but this robot is {expected:?}; use a release built for {expected:?}")]
    Incompatible { release: String, found: String, expected: String },
    #[error("release {release} is built for architecture {found} but this robot is {expected}; install a release built with `tender release --target {expected}`")]
    WrongArchitecture { release: String, found: String, expected: String },
    #[error("release {release} installs to {found} but this robot's slots are at {expected}; fix slots.base or the recipe prefix")]
    WrongPrefix { release: String, found: String, expected: String },
    #[error("release {release} is already installed; publish a higher version")]
    AlreadyInstalled { release: String },
    #[error("release {release} is older than the installed {installed}; authorise the downgrade with `tender repo allow-downgrade --version {version}`, then install it again")]
    NotNewer { release: String, installed: String, version: semver::Version },
    #[error("release {release} (sha256 {digest}) failed its health check on {time} and was reverted ({reason}); pass --allow-reverted to install it anyway")]
    Rejected { release: String, digest: String, time: String, reason: String },
    #[error("a trial of {release} is under way; run `tenderd commit` or `tenderd rollback` first")]
    TrialUnderWay { release: String },
    #[error("pre-switch check of {release} failed: {detail}; the active slot is unchanged")]
    PreSwitch { release: String, detail: String },
    #[error("nothing is staged: the state is {phase}; stage a release first")]
    NothingStaged { phase: Phase },
    #[error("nothing to commit: the state is {phase}, not trial")]
    NothingToCommit { phase: Phase },
    #[error("cannot roll back: {reason}")]
    Rollback { reason: String },
    #[error("the current link points to slot {slot} but the state says the active slot is {state_active:?}; \
             run `tenderd recover` or fix the link before installing")]
    LinkMismatch { slot: Slot, state_active: Option<Slot> },
    #[error("the download cache at {} ran out of space ({detail}); its partial data was removed; free space on that filesystem, then install again", path.display())]
    CacheFull { path: PathBuf, detail: String },
    #[error("another tenderd holds the lock {}; wait for it to finish", path.display())]
    Locked { path: PathBuf },
}

/// Options of an install.
#[derive(Debug, Clone, Default)]
pub struct InstallOptions {
    /// Install a release even though it was reverted before.
    pub allow_reverted: bool,
    /// Install this version from a repository instead of the newest.
    pub version: Option<semver::Version>,
}

/// Result of staging a release.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StageReport {
    pub release: SlotRelease,
    pub slot: Slot,
    pub stats: StageStats,
}

/// Result of an install.
#[derive(Debug, Clone, serde::Serialize)]
pub struct InstallReport {
    pub release: String,
    pub slot: Slot,
    pub phase: Phase,
    pub stats: StageStats,
    pub detail: String,
}

/// End of a trial.
#[derive(Debug, Clone, PartialEq, Eq)]
enum TrialResult {
    Committed,
    Reverted(String),
    FailedWithoutFallback(String),
    /// A partition slot's trial waits for the reboot into it.
    Pending,
}

/// The robot side of Tender, for one configuration.
pub struct Updater {
    config: Config,
    slots: DirectorySlots,
    _lock: File,
}

fn manifest_copy_path(state_dir: &Path, slot: Slot) -> PathBuf {
    state_dir.join("manifests").join(format!("{}.json", slot.dir_name()))
}

fn slot_release(verified: &VerifiedRelease) -> SlotRelease {
    let manifest = verified.manifest();
    SlotRelease { name: manifest.name.clone(), version: manifest.version.clone(), digest: verified.digest() }
}

impl Updater {
    /// Opens the updater and takes the state lock, so that only one
    /// `tenderd` changes slots at a time.
    pub fn open(config: Config) -> Result<Self, UpdateError> {
        std::fs::create_dir_all(&config.state_dir)
            .map_err(|e| FsError::new("create state directory", &config.state_dir, e))?;
        let lock_path = config.state_dir.join("lock");
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| FsError::new("open lock", &lock_path, e))?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive)
            .map_err(|_| UpdateError::Locked { path: lock_path.clone() })?;
        let slots = DirectorySlots::new(&config.slots_base);
        Ok(Self { config, slots, _lock: lock })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn slots(&self) -> &DirectorySlots {
        &self.slots
    }

    pub fn load_state(&self) -> Result<State, UpdateError> {
        Ok(State::load(&self.config.state_dir)?)
    }

    fn save(&self, state: &State) -> Result<(), UpdateError> {
        Ok(state.save(&self.config.state_dir)?)
    }

    /// Persists a state changed outside this module, such as by the daemon.
    pub fn save_state(&self, state: &State) -> Result<(), UpdateError> {
        self.save(state)
    }

    /// Sets or clears the operator's hold: while held, the daemon stages and
    /// switches nothing new.
    pub fn set_hold(&self, held: bool) -> Result<(), UpdateError> {
        let mut state = self.load_state()?;
        state.held = held;
        state.record(if held { "held" } else { "resumed" }, None, None, "");
        self.save(&state)
    }

    /// Loads the verified manifest copy kept for a slot.
    fn slot_manifest(&self, slot: Slot) -> Option<Manifest> {
        let path = manifest_copy_path(&self.config.state_dir, slot);
        let bytes = read_bounded(&path, MAX_MANIFEST_BYTES, "slot manifest").ok()?;
        match Manifest::parse(&bytes) {
            Ok(manifest) => Some(manifest),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "ignoring unreadable slot manifest");
                None
            }
        }
    }

    /// Runtime path of the active release on this robot, below the root
    /// prefix: the `current` link.
    fn runtime_path(&self) -> String {
        self.slots.current_link().display().to_string()
    }

    /// Checks that a verified release may be installed on this robot.
    fn check_eligible(&self, state: &State, release: &VerifiedRelease, options: &InstallOptions) -> Result<(), UpdateError> {
        let manifest = release.manifest();
        let name = format!("{} {}", manifest.name, manifest.version);
        if manifest.compatible != self.config.compatible {
            return Err(UpdateError::Incompatible {
                release: name,
                found: manifest.compatible.clone(),
                expected: self.config.compatible.clone(),
            });
        }
        if manifest.architecture != self.config.architecture {
            return Err(UpdateError::WrongArchitecture {
                release: name,
                found: manifest.architecture.clone(),
                expected: self.config.architecture.clone(),
            });
        }
        if Path::new(&manifest.prefix) != self.config.slots_base_on_robot {
            return Err(UpdateError::WrongPrefix {
                release: name,
                found: manifest.prefix.clone(),
                expected: self.config.slots_base_on_robot.display().to_string(),
            });
        }
        if let Some(installed) = state.committed_release() {
            let authorized = manifest.version < installed.version
                && (release.info().allow_downgrade || crate::online::downgrade_authorized(&self.config, &release.digest()));
            if manifest.version == installed.version {
                return Err(UpdateError::AlreadyInstalled { release: name });
            }
            if manifest.version < installed.version && !authorized {
                return Err(UpdateError::NotNewer { release: name, installed: installed.to_string(), version: manifest.version.clone() });
            }
            if authorized {
                tracing::warn!(release = %name, installed = %installed, "installing an older release under a signed downgrade authorisation");
            }
        }
        if let Some(rejected) = state.is_rejected(&release.digest()) {
            if !options.allow_reverted {
                return Err(UpdateError::Rejected {
                    release: name,
                    digest: release.digest().to_hex(),
                    time: rejected.time.clone(),
                    reason: rejected.reason.clone(),
                });
            }
        }
        if state.phase == Phase::Trial {
            let release = state.active.and_then(|s| state.slot_release(s)).map(|r| r.to_string()).unwrap_or_default();
            return Err(UpdateError::TrialUnderWay { release });
        }
        Ok(())
    }

    /// Refreshes the trusted TUF metadata from a repository without
    /// installing anything, so that, say, a downgrade authorisation reaches
    /// the robot. Returns the versions now trusted.
    pub fn refresh(&self, repository: &str) -> Result<crate::online::RefreshReport, UpdateError> {
        let state = self.load_state()?;
        let build_time = state
            .committed
            .and_then(|slot| self.slot_manifest(slot))
            .map_or(std::time::SystemTime::UNIX_EPOCH, |m| crate::online::epoch_time(m.provenance.source_date_epoch));
        Ok(crate::online::refresh_repository(&self.config, repository, build_time)?)
    }

    /// Opens a source and verifies the release it offers against the
    /// trusted root, without writing anything.
    ///
    /// A `.tender` bundle is checked against the configured root. A
    /// repository (directory or URL) goes through the TUF client, which
    /// keeps the highest trusted metadata versions in `STATE_DIR/tuf`.
    pub fn verified_release(
        &self,
        source_text: &str,
        version: Option<&semver::Version>,
    ) -> Result<(Box<dyn ReleaseSource>, VerifiedRelease), UpdateError> {
        let verified = self.verify_source(source_text, version);
        if let Err(error) = &verified {
            if crate::metrics::is_verification_failure(error) {
                crate::metrics::update(&self.config.state_dir, |c| c.verification_failures += 1);
            }
        }
        match verified {
            Err(error) if crate::slot::space::is_storage_full(&error) => {
                // The manifest or delta pack did not fit, and its partial file
                // only takes space that the next attempt needs.
                let cache_dir = self.cache_dir();
                crate::slot::space::empty_dir(&cache_dir);
                Err(UpdateError::CacheFull { path: cache_dir, detail: crate::error_line(&error) })
            }
            other => other,
        }
    }

    fn verify_source(
        &self,
        source_text: &str,
        version: Option<&semver::Version>,
    ) -> Result<(Box<dyn ReleaseSource>, VerifiedRelease), UpdateError> {
        if Path::new(source_text).is_file() {
            let mut source = open_source_with_cache(source_text, Some(&self.cache_dir()), self.config.download.clone())?;
            let release = crate::online::verify_bundle_release(&self.config, source.as_mut())?;
            return Ok((source, release));
        }
        let state = self.load_state()?;
        let build_time = state
            .committed
            .and_then(|slot| self.slot_manifest(slot))
            .map_or(std::time::SystemTime::UNIX_EPOCH, |m| crate::online::epoch_time(m.provenance.source_date_epoch));
        // The exact bytes of the active manifest copy pick a delta pack.
        let active_manifest = state
            .active
            .and_then(|slot| read_bounded(&manifest_copy_path(&self.config.state_dir, slot), MAX_MANIFEST_BYTES, "slot manifest").ok());
        Ok(crate::online::fetch_repository_release(
            &self.config,
            source_text,
            &self.cache_dir(),
            build_time,
            version,
            active_manifest.as_deref(),
        )?)
    }

    fn cache_dir(&self) -> PathBuf {
        self.config.state_dir.join("cache")
    }

    /// Installs a release from `source_text` (a bundle, a repository
    /// directory or an HTTP URL) and runs its trial to the end.
    pub fn install(&self, source_text: &str, options: &InstallOptions) -> Result<InstallReport, UpdateError> {
        self.recover()?;
        let (mut source, release) = self.verified_release(source_text, options.version.as_ref())?;
        let staged = self.stage(source.as_mut(), &release, options)?;
        let mut report = self.apply()?;
        report.stats = staged.stats;
        Ok(report)
    }

    /// Stages a verified release into the inactive slot and runs its
    /// pre-switch checks, leaving the robot in `staged`; the active slot is
    /// not touched. [`Updater::apply`] switches to it.
    pub fn stage(
        &self,
        source: &mut dyn ReleaseSource,
        release: &VerifiedRelease,
        options: &InstallOptions,
    ) -> Result<StageReport, UpdateError> {
        let staged = self.stage_verified(source, release, options);
        if let Err(error) = &staged {
            // A chunk or file that fails its digest while staging counts like
            // a release that fails verification.
            if crate::metrics::is_verification_failure(error) {
                crate::metrics::update(&self.config.state_dir, |c| c.verification_failures += 1);
            }
        }
        staged
    }

    fn stage_verified(
        &self,
        source: &mut dyn ReleaseSource,
        release: &VerifiedRelease,
        options: &InstallOptions,
    ) -> Result<StageReport, UpdateError> {
        self.recover()?;
        let mut state = self.load_state()?;
        self.check_eligible(&state, release, options)?;
        let manifest = release.manifest();
        let record = slot_release(release);
        tracing::info!(release = %record, digest = %release.digest(), source = %source.describe(), "release verified");

        let active = self.active_slot(&state)?;
        let target = active.map_or(Slot::A, Slot::other);
        if self.config.partition.is_none() && self.slots.linked_slot() == Some(target) {
            // The state and the link disagree; never stage into what runs.
            return Err(UpdateError::LinkMismatch { slot: target, state_active: active });
        }
        let active_manifest = active.and_then(|slot| self.slot_manifest(slot));
        let cache_dir = self.cache_dir();
        let prepared = match &self.config.partition {
            None => Some(prepare(manifest, &self.slots, target, active.zip(active_manifest.as_ref()), source, &cache_dir, release.delta())?),
            Some(partition) => {
                // Checked before anything changes: the image, the device and
                // its size, the boot environment, the room in the cache.
                let (size, _, _) = partition.slots.image_of(manifest)?;
                partition.slots.open_target(target, size)?;
                partition.boot.env.check_writable()?;
                if source.is_remote() {
                    std::fs::create_dir_all(&cache_dir)
                        .map_err(|source| crate::slot::StageError::Io { action: "create cache directory", path: cache_dir.clone(), source })?;
                    let missing: Vec<ChunkRef> = partition.slots.missing_chunks(manifest, active_manifest.as_ref())?.into_iter().copied().collect();
                    check_cache_room(&cache_dir, &missing)?;
                }
                None
            }
        };

        // Every chunk verified, so a newer root the bundle brought is trusted now.
        if let Some(root) = release.pending_root() {
            crate::online::store_pending_root(&self.config, root)?;
        }

        // From here on the inactive slot changes, so the state records it first.
        state.phase = Phase::Staging;
        state.target = Some(target);
        state.set_slot_release(target, None);
        state.last_error = None;
        state.record("staging", Some(target), Some(record.clone()), source.describe());
        self.save(&state)?;
        crate::metrics::staging_started(&self.config.state_dir);

        let staged = match (prepared, &self.config.partition) {
            (Some(prepared), _) => prepared
                .write(source)
                .map_err(UpdateError::from)
                .and_then(|stats| check_slot(&self.slots.slot_dir(target), manifest).map(|()| stats).map_err(UpdateError::from)),
            (None, Some(partition)) => {
                self.stage_image(partition, manifest, target, active.zip(active_manifest.as_ref()), source, &cache_dir, release.delta())
            }
            (None, None) => Err(UpdateError::NothingStaged { phase: state.phase }),
        };
        let stats = match staged {
            Ok(stats) => stats,
            Err(error) => return Err(self.fail_install(&mut state, target, &record, error)),
        };
        crate::metrics::staged(&self.config.state_dir, &stats, manifest, active_manifest.as_ref());
        let manifest_copy = manifest_copy_path(&self.config.state_dir, target);
        let manifest_bytes = tender_keys::to_canonical_json(manifest).map_err(|e| StateError::Corrupt {
            path: manifest_copy.clone(),
            source: serde_json::Error::io(std::io::Error::other(e.to_string())),
        })?;
        write_atomic(&manifest_copy, &manifest_bytes)?;
        // The staged slot now has every chunk, so the download cache goes.
        if let Err(error) = std::fs::remove_dir_all(&cache_dir) {
            if error.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(cache = %cache_dir.display(), %error, "cannot empty the download cache");
            }
        }
        state.set_slot_release(target, Some(record.clone()));
        state.record("staged", Some(target), Some(record.clone()), format!("{} bytes written", stats.bytes_written));
        self.save(&state)?;

        if let Err(detail) = self.pre_switch_checks(manifest, target) {
            let error = UpdateError::PreSwitch { release: record.to_string(), detail };
            state.phase = Phase::Failed;
            state.target = None;
            state.last_error = Some(error.to_string());
            state.record("pre-switch failed", Some(target), Some(record), error.to_string());
            self.save(&state)?;
            return Err(error);
        }
        state.phase = Phase::Staged;
        self.save(&state)?;
        Ok(StageReport { release: record, slot: target, stats })
    }

    /// Switches to the staged release and runs its trial: the configuration
    /// backup, the switch, the service restarts and the health check.
    pub fn apply(&self) -> Result<InstallReport, UpdateError> {
        let mut state = self.load_state()?;
        let staged = (state.phase == Phase::Staged).then_some(state.target).flatten();
        let Some(target) = staged else {
            return Err(UpdateError::NothingStaged { phase: state.phase });
        };
        let record = state.slot_release(target).cloned().ok_or(UpdateError::NothingStaged { phase: state.phase })?;
        let manifest = self.slot_manifest(target).ok_or(UpdateError::NothingStaged { phase: state.phase })?;

        self.backup_config(&record)?;

        self.switch(&mut state, target, Some(record.clone()), "switching")?;
        state.phase = Phase::Trial;
        state.health_failures = 0;
        self.save(&state)?;
        if self.config.partition.is_some() {
            return self.reboot_into_trial(&state, target, &record);
        }
        let result = self.run_trial(&mut state, &manifest.services, &manifest.health)?;
        let (phase, detail) = match result {
            TrialResult::Committed => (Phase::Committed, "health check passed".to_owned()),
            TrialResult::Reverted(reason) => (Phase::Reverted, reason),
            TrialResult::FailedWithoutFallback(reason) => (Phase::Failed, reason),
            TrialResult::Pending => (Phase::Trial, "waiting for the reboot into the new slot".to_owned()),
        };
        Ok(InstallReport { release: record.to_string(), slot: target, phase, stats: StageStats::default(), detail })
    }

    /// Records a failed staging. The target slot contains nothing usable and
    /// the active slot was not touched.
    fn fail_install(&self, state: &mut State, target: Slot, record: &SlotRelease, error: UpdateError) -> UpdateError {
        state.phase = Phase::Failed;
        state.target = None;
        state.set_slot_release(target, None);
        state.last_error = Some(error.to_string());
        state.record("staging failed", Some(target), Some(record.clone()), error.to_string());
        if let Err(save_error) = self.save(state) {
            tracing::error!(error = %save_error, "cannot record the failed install");
        }
        error
    }

    /// Backs up the configuration directory before a switch to `release`.
    fn backup_config(&self, release: &SlotRelease) -> Result<(), UpdateError> {
        let config = &self.config;
        backup_config(
            &config.backup_source,
            &config.backup_dir,
            &release.version.to_string(),
            config.backup_keep,
            config.backup_max_age,
        )?;
        Ok(())
    }

    /// Moves `current` to `target`, persisting `switching` first.
    fn switch(&self, state: &mut State, target: Slot, record: Option<SlotRelease>, event: &str) -> Result<(), UpdateError> {
        state.phase = Phase::Switching;
        state.target = Some(target);
        state.record(event, Some(target), record, "");
        self.save(state)?;
        match &self.config.partition {
            None => self.slots.switch_to(target)?,
            Some(partition) => self.point_boot_at(partition, state, target)?,
        }
        state.active = Some(target);
        Ok(())
    }

    /// Restarts the services one at a time; each must be active before the
    /// next. Returns the first failure.
    fn restart_services(&self, services: &[String]) -> Result<(), String> {
        for unit in services {
            let argv = command::expand(&self.config.restart_command, &[("unit", unit)]);
            let outcome = command::run(&argv, None, self.config.active_timeout);
            if !outcome.is_success() {
                return Err(format!("restart of {unit} {}", outcome.describe()));
            }
            let argv = command::expand(&self.config.is_active_command, &[("unit", unit)]);
            let started = std::time::Instant::now();
            loop {
                let outcome = command::run(&argv, None, self.config.active_timeout);
                if outcome.is_success() {
                    tracing::info!(unit, "service active");
                    break;
                }
                if started.elapsed() >= self.config.active_timeout {
                    return Err(format!(
                        "{unit} is not active {} after its restart",
                        humantime::format_duration(self.config.active_timeout)
                    ));
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        Ok(())
    }

    /// Runs the trial of the active slot: services, then the health check
    /// until it passes or fails `failures_to_revert` times in a row.
    fn run_trial(&self, state: &mut State, services: &[String], health: &HealthCheck) -> Result<TrialResult, UpdateError> {
        let Some(active) = state.active else {
            return Ok(TrialResult::FailedWithoutFallback("no active slot".to_owned()));
        };
        let record = state.slot_release(active).cloned();
        if let Err(reason) = self.restart_services(services) {
            return self.revert(state, &reason);
        }
        let checks = crate::health::TrialChecks::new(&self.config, health, self.runtime_path());
        if !checks.grace_period().is_zero() {
            tracing::info!(grace_period = %humantime::format_duration(checks.grace_period()), "waiting before the first health check");
            std::thread::sleep(checks.grace_period());
        }
        let limit = checks.failures_to_revert();
        loop {
            let outcome = checks.run_round();
            if outcome.is_ok() {
                if let Some(partition) = &self.config.partition {
                    partition.boot.mark_good(active)?;
                }
                crate::metrics::trial_finished(&self.config.state_dir);
                state.phase = Phase::Committed;
                state.committed = Some(active);
                state.target = None;
                state.health_failures = 0;
                state.record("committed", Some(active), record, "health check passed");
                self.save(state)?;
                return Ok(TrialResult::Committed);
            }
            let failure = outcome.err().map(|f| f.to_string()).unwrap_or_default();
            state.health_failures += 1;
            crate::metrics::update(&self.config.state_dir, |c| c.health_check_failures += 1);
            tracing::warn!(failures = state.health_failures, limit, %failure, "health check failed");
            self.save(state)?;
            if state.health_failures >= limit {
                let reason = format!("health check failed {} times in a row, last: {failure}", state.health_failures);
                return self.revert(state, &reason);
            }
            std::thread::sleep(checks.interval());
        }
    }

    /// Switches back to the committed slot after a failed trial and remembers
    /// the failed release so it is not installed again automatically.
    fn revert(&self, state: &mut State, reason: &str) -> Result<TrialResult, UpdateError> {
        let failed_slot = state.active;
        let failed = failed_slot.and_then(|slot| state.slot_release(slot)).cloned();
        if let Some(release) = &failed {
            state.rejected.retain(|r| r.release.digest != release.digest);
            state.rejected.push(RejectedRelease { release: release.clone(), reason: reason.to_owned(), time: now_text() });
        }
        let fallback = state.committed.filter(|slot| Some(*slot) != failed_slot);
        let Some(fallback) = fallback else {
            state.phase = Phase::Failed;
            state.target = None;
            state.last_error = Some(format!("{reason}; no committed slot to revert to"));
            state.record("trial failed", failed_slot, failed, format!("{reason}; no committed slot to revert to"));
            self.save(state)?;
            return Ok(TrialResult::FailedWithoutFallback(reason.to_owned()));
        };
        let fallback_release = state.slot_release(fallback).cloned();
        self.switch(state, fallback, fallback_release, "reverting")?;
        self.finish_revert(state, fallback, failed_slot, failed, reason)
    }

    fn finish_revert(
        &self,
        state: &mut State,
        fallback: Slot,
        failed_slot: Option<Slot>,
        failed: Option<SlotRelease>,
        reason: &str,
    ) -> Result<TrialResult, UpdateError> {
        let services = self.slot_manifest(fallback).map(|m| m.services).unwrap_or_default();
        if let Err(error) = self.restart_services(&services) {
            tracing::error!(%error, "services did not come back after the revert");
        }
        state.phase = Phase::Reverted;
        state.target = None;
        state.health_failures = 0;
        state.last_error = Some(reason.to_owned());
        state.record("reverted", failed_slot, failed, reason);
        self.save(state)?;
        crate::metrics::update(&self.config.state_dir, |c| c.reverts += 1);
        crate::metrics::trial_finished(&self.config.state_dir);
        Ok(TrialResult::Reverted(reason.to_owned()))
    }

    /// Brings the robot back to a consistent state after `tenderd` stopped
    /// in the middle of an install, and finishes an interrupted trial.
    pub fn recover(&self) -> Result<(), UpdateError> {
        let mut state = self.load_state()?;
        match state.phase {
            Phase::Idle | Phase::Staged | Phase::Committed | Phase::Reverted | Phase::Failed => Ok(()),
            Phase::Staging => {
                let target = state.target;
                tracing::warn!(slot = ?target, "install was interrupted while staging; the active slot is unchanged");
                if let Some(slot) = target {
                    state.set_slot_release(slot, None);
                    self.unmount_leftover(slot);
                }
                state.phase = Phase::Failed;
                state.target = None;
                state.last_error = Some("install was interrupted while staging".to_owned());
                state.record("recovered", target, None, "staging was interrupted; active slot unchanged");
                self.save(&state)
            }
            Phase::Switching => self.recover_switch(&mut state),
            Phase::Trial => {
                tracing::warn!("a trial was interrupted; running its health check again");
                self.resume_trial(&mut state).map(|_| ())
            }
        }
    }

    fn recover_switch(&self, state: &mut State) -> Result<(), UpdateError> {
        let Some(target) = state.target else {
            state.phase = Phase::Failed;
            return self.save(state);
        };
        // The slot the robot runs or boots next, by the link or the boot loader.
        let (selected, on_trial) = match &self.config.partition {
            None => (self.slots.linked_slot(), true),
            Some(partition) => {
                let selection = partition.boot.selection()?;
                (selection.slot, selection.trial == Some(target))
            }
        };
        if state.committed == Some(target) {
            // Finish the interrupted revert.
            if selected != Some(target) {
                match &self.config.partition {
                    None => self.slots.switch_to(target)?,
                    Some(partition) => partition.boot.mark_bad(target.other(), target)?,
                }
            }
            let failed_slot = Some(target.other());
            let failed = state.slot_release(target.other()).cloned();
            state.active = Some(target);
            self.finish_revert(state, target, failed_slot, failed, "revert was interrupted and finished on restart")?;
            return Ok(());
        }
        if selected == Some(target) && on_trial {
            state.active = Some(target);
            state.phase = Phase::Trial;
            state.health_failures = 0;
            self.save(state)?;
            return self.resume_trial(state).map(|_| ());
        }
        state.phase = Phase::Failed;
        state.target = None;
        state.last_error = Some("install was interrupted before the switch".to_owned());
        state.record("recovered", Some(target), None, "switch was interrupted; active slot unchanged");
        self.save(state)
    }

    fn resume_trial(&self, state: &mut State) -> Result<TrialResult, UpdateError> {
        let Some(active) = state.active else {
            return Ok(TrialResult::FailedWithoutFallback("no active slot".to_owned()));
        };
        if let Some(partition) = &self.config.partition {
            if let Some(result) = self.resume_partition_trial(partition, state, active)? {
                return Ok(result);
            }
        }
        let Some(manifest) = self.slot_manifest(active) else {
            return self.revert(state, "the manifest of the slot on trial is missing");
        };
        self.run_trial(state, &manifest.services, &manifest.health)
    }

    /// Marks the release on trial as bad without waiting for its health
    /// check, and reverts to the committed release.
    pub fn mark_bad(&self) -> Result<SlotRelease, UpdateError> {
        let mut state = self.load_state()?;
        if state.phase != Phase::Trial {
            return Err(UpdateError::NothingToCommit { phase: state.phase });
        }
        let fallback = state.committed.and_then(|slot| state.slot_release(slot).cloned());
        match self.revert(&mut state, "marked bad by hand")? {
            TrialResult::Reverted(_) => fallback.ok_or(UpdateError::NothingToCommit { phase: state.phase }),
            _ => Err(UpdateError::NothingToCommit { phase: state.phase }),
        }
    }

    /// Marks the release on trial as good without waiting for its health check.
    pub fn commit(&self) -> Result<SlotRelease, UpdateError> {
        let mut state = self.load_state()?;
        if state.phase != Phase::Trial {
            return Err(UpdateError::NothingToCommit { phase: state.phase });
        }
        let active = state.active.ok_or(UpdateError::NothingToCommit { phase: state.phase })?;
        let release = state.slot_release(active).cloned().ok_or(UpdateError::NothingToCommit { phase: state.phase })?;
        if let Some(partition) = &self.config.partition {
            partition.boot.mark_good(active)?;
        }
        state.phase = Phase::Committed;
        state.committed = Some(active);
        state.target = None;
        state.health_failures = 0;
        state.record("committed", Some(active), Some(release.clone()), "committed by hand");
        self.save(&state)?;
        Ok(release)
    }

    /// Switches to the other slot when it holds a verified earlier release,
    /// and commits it. A release on trial is reverted instead.
    pub fn rollback(&self) -> Result<SlotRelease, UpdateError> {
        self.recover_if_stable()?;
        let mut state = self.load_state()?;

        let reject = |reason: String| UpdateError::Rollback { reason };
        let active = state.active.ok_or_else(|| reject("no release is installed".to_owned()))?;
        let other = active.other();
        let other_release = state
            .slot_release(other)
            .cloned()
            .ok_or_else(|| reject(format!("slot {other} contains no complete release")))?;

        if state.phase == Phase::Trial {
            if state.committed != Some(other) {
                return Err(reject(format!("slot {other} was never committed")));
            }
            self.revert(&mut state, "rolled back by hand during the trial")?;
            return Ok(other_release);
        }

        let active_release = state.slot_release(active).cloned();
        if let Some(active_release) = &active_release {
            if other_release.version >= active_release.version {
                return Err(reject(format!(
                    "slot {other} contains {other_release}, which is not earlier than the active {active_release}"
                )));
            }
        }

        if !crate::online::downgrade_authorized(&self.config, &other_release.digest) {
            return Err(reject(format!(
                "going back from {} to {other_release} needs a signed downgrade authorisation; publish one with \
                 `tender repo allow-downgrade --version {}`, then run `tenderd refresh REPOSITORY` on the robot",
                active_release.map(|r| r.to_string()).unwrap_or_default(),
                other_release.version
            )));
        }

        let manifest = self
            .slot_manifest(other)
            .ok_or_else(|| reject(format!("the manifest of slot {other} is missing")))?;
        if let Some(partition) = &self.config.partition {
            self.backup_config(&other_release)?;
            self.rollback_partition(partition, &mut state, other, &other_release, &manifest)?;
            return Ok(other_release);
        }
        check_slot(&self.slots.slot_dir(other), &manifest)
            .map_err(|e| reject(format!("slot {other} no longer matches {other_release}: {e}")))?;

        self.backup_config(&other_release)?;
        self.switch(&mut state, other, Some(other_release.clone()), "rollback")?;
        if let Err(error) = self.restart_services(&manifest.services) {
            tracing::error!(%error, "services did not come back after the rollback");
        }

        state.phase = Phase::Committed;
        state.committed = Some(other);
        state.target = None;
        state.health_failures = 0;
        // Otherwise the daemon would install the newer release again at its
        // next poll; `tenderd resume` lifts the hold.
        state.held = true;
        state.record("rolled back", Some(other), Some(other_release.clone()), "held until `tenderd resume`");
        self.save(&state)?;
        Ok(other_release)
    }

    /// Finishes an interrupted staging or switch, but leaves a trial alone.
    fn recover_if_stable(&self) -> Result<(), UpdateError> {
        let state = self.load_state()?;
        if matches!(state.phase, Phase::Staging | Phase::Switching) {
            self.recover()?;
        }
        Ok(())
    }
}
