//! The client API: one [`TufClient`] per repository and trusted metadata
//! directory. It chooses the update start time (5.1), runs the refresh
//! (5.2 to 5.6.6), searches targets (5.6.7) and downloads them (5.7).

use std::path::Path;
use std::time::SystemTime;

use tender_keys::{verify_root, Role, Root, Verified};

use super::clock::{advance_floor, load_floor, UpdateTime};
use super::delegation::{find_target, FoundTarget};
use super::error::TufError;
use super::fetch::Fetcher;
use super::limits::Limits;
use super::refresh::{load_trusted_root, refresh, Session, TrustedMetadata};
use super::store::TrustedStore;
use super::target::{download_target, TargetStatus};

/// A TUF client of one repository.
pub struct TufClient {
    store: TrustedStore,
    fetcher: Box<dyn Fetcher>,
    limits: Limits,
    fallback_time: SystemTime,
}

impl TufClient {
    /// Builds a client that keeps trusted metadata in `metadata_dir` and
    /// fetches metadata with `fetcher`. The directory must already hold a
    /// root, see [`init_trusted_root`]. Nothing is read until [`Self::refresh`].
    pub fn new(metadata_dir: &Path, fetcher: Box<dyn Fetcher>) -> Self {
        Self {
            store: TrustedStore::new(metadata_dir),
            fetcher,
            limits: Limits::default(),
            fallback_time: SystemTime::UNIX_EPOCH,
        }
    }

    /// Replaces the default limits.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Sets the time used when the time floor file is missing or corrupt,
    /// such as the build time of the running release.
    pub fn with_fallback_time(mut self, fallback_time: SystemTime) -> Self {
        self.fallback_time = fallback_time;
        self
    }

    /// Refreshes the top-level metadata (5.1 to 5.6.6). After a refresh that
    /// succeeded with a trusted system clock, the time floor advances to it.
    pub fn refresh(&self) -> Result<TrustedMetadata, TufError> {
        let floor = load_floor(self.store.dir(), self.fallback_time);
        let time = UpdateTime::choose(SystemTime::now(), floor);
        if !time.clock_trusted() {
            tracing::warn!(floor = %tender_keys::format_time(floor), "the system clock is behind the time floor; checking expiry against the floor");
        }
        let trusted_root = load_trusted_root(&self.store, &self.limits)?;
        let session = self.session(time);
        let trusted = refresh(&session, trusted_root)?;
        if time.clock_trusted() {
            advance_floor(self.store.dir(), time.now)?;
        }
        tracing::debug!(
            root = trusted.root.version,
            timestamp = trusted.timestamp.version,
            snapshot = trusted.snapshot.version,
            targets = trusted.targets.version,
            "metadata refreshed"
        );
        Ok(trusted)
    }

    /// Finds the metadata of `target_path` through the delegation search
    /// (5.6.7). Delegated metadata it loads is verified and persisted too.
    pub fn find_target(&self, trusted: &TrustedMetadata, target_path: &str) -> Result<FoundTarget, TufError> {
        find_target(&self.session(trusted.update_time), trusted, target_path)
    }

    /// Downloads `target` from `targets` (the target base URL or directory)
    /// into the file `dest`, unless `dest` already matches (5.7).
    pub fn download_target(
        &self,
        targets: &dyn Fetcher,
        trusted: &TrustedMetadata,
        target: &FoundTarget,
        dest: &Path,
    ) -> Result<TargetStatus, TufError> {
        download_target(targets, target, trusted.root.consistent_snapshot, dest)
    }

    /// Like [`TufClient::download_target`], resuming an interrupted download
    /// when the fetcher can.
    pub fn download_target_resumable(
        &self,
        targets: &dyn Fetcher,
        trusted: &TrustedMetadata,
        target: &FoundTarget,
        dest: &Path,
    ) -> Result<TargetStatus, TufError> {
        super::target::download_target_resumable(targets, target, trusted.root.consistent_snapshot, dest)
    }

    fn session(&self, time: UpdateTime) -> Session<'_> {
        Session { fetcher: self.fetcher.as_ref(), store: &self.store, limits: &self.limits, time }
    }
}

/// Stores `root_bytes` as the trusted root of `metadata_dir` after checking
/// that the threshold of its own root keys signed it. A root older than the
/// one already trusted there is rejected, so `init` cannot roll the robot back.
pub fn init_trusted_root(metadata_dir: &Path, root_bytes: &[u8], what: &str) -> Result<Verified<Root>, TufError> {
    let role = Role::Root.as_str();
    let root = verify_root(root_bytes, what)
        .map_err(|source| TufError::Verify { role: role.to_owned(), file: what.to_owned(), source })?;
    let store = TrustedStore::new(metadata_dir);
    if let Ok(current) = load_trusted_root(&store, &Limits::default()) {
        if current.version > root.version {
            return Err(TufError::Rollback {
                role: role.to_owned(),
                file: what.to_owned(),
                trusted: current.version,
                found: root.version,
            });
        }
    }
    store.save(role, root_bytes)?;
    Ok(root)
}

/// File name under which a target is stored locally: the percent-encoded
/// target path, the same on every download and never leaving its directory.
pub fn local_target_file_name(target_path: &str) -> String {
    super::names::percent_encode(target_path)
}
