//! Releases from a repository, through the TUF client: the robot refreshes
//! its trusted metadata (root chain, timestamp, snapshot, targets) in
//! `STATE_DIR/tuf`, picks the newest release for its `compatible`, and
//! downloads the manifest by its consistent target name. The highest
//! versions it has trusted protect it against rollback and freeze attacks.
//!
//! Repository layout: `metadata/` for TUF metadata, `targets/HASH.NAME` for
//! manifests, `chunks/` for the chunk store. A repository in an OCI registry
//! (`oci://`) has the same paths, located through its index.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tender_keys::{Root, Signed};

use crate::config::Config;
use crate::format::limits::{MAX_MANIFEST_BYTES, MAX_ROOT_BYTES};
use crate::delta::DeltaPack;
use crate::format::ReleaseInfo;
use crate::plan::{choose_pack, PackChoice};
use crate::source::{open_source_with_cache, read_bounded, ReleaseSource, SourceError};
use crate::tuf::{init_trusted_root, local_target_file_name, DirFetcher, Fetcher, HttpFetcher, TufClient, TufError};
use crate::verify::{verify_release, VerifiedRelease, VerifyError};

/// Errors of an online release lookup.
#[derive(Debug, thiserror::Error)]
pub enum OnlineError {
    #[error(transparent)]
    Tuf(#[from] TufError),
    #[error(transparent)]
    Verify(#[from] VerifyError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("cannot read the trusted root {}: {detail}", path.display())]
    TrustedRoot { path: PathBuf, detail: String },
    #[error("{source_name} carries root version {found} but this robot trusts version {trusted}; the root chain has a gap, get a bundle with every root version")]
    RootChainGap { source_name: String, trusted: u64, found: u64 },
    #[error("targets.json of {source_name} is version {found}, older than the version {trusted} this robot already trusts (rollback); use a newer bundle")]
    TargetsRollback { source_name: String, trusted: u64, found: u64 },
    #[error("no release{} for compatible {compatible:?} is listed in the signed targets of {repository}", version.as_ref().map(|v| format!(" {v}")).unwrap_or_default())]
    NoRelease { compatible: String, repository: String, version: Option<semver::Version> },
    #[error(transparent)]
    Fetch(#[from] crate::tuf::FetchError),
    #[error(transparent)]
    Delta(#[from] crate::delta::DeltaError),
    #[error("cannot read the downloaded manifest {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Registry(#[from] crate::registry::RegistryError),
    #[error(transparent)]
    Credentials(#[from] crate::registry::auth::CredentialsError),
}

/// Directory of the robot's trusted TUF metadata.
pub fn tuf_dir(config: &Config) -> PathBuf {
    config.state_dir.join("tuf")
}

fn is_url(text: &str) -> bool {
    text.starts_with("http://") || text.starts_with("https://")
}

/// A repository location, opened once for the metadata, targets and chunks.
enum Repository {
    Url(String),
    Dir(PathBuf),
    /// A registry repository with its index loaded.
    Registry(Arc<crate::registry::RegistryClient>),
}

impl Repository {
    fn open(config: &Config, repository: &str) -> Result<Self, OnlineError> {
        if crate::registry::is_registry_reference(repository) {
            let reference = crate::registry::Reference::parse(repository, config.registry.insecure)
                .map_err(crate::registry::RegistryError::from)?;
            let credentials = config.registry.credentials()?;
            let client = crate::registry::RegistryClient::open(reference, credentials, config.download.clone())?;
            return Ok(Self::Registry(Arc::new(client)));
        }
        let base = repository.trim_end_matches('/');
        if is_url(base) {
            return Ok(Self::Url(base.to_owned()));
        }
        Ok(Self::Dir(PathBuf::from(base)))
    }

    /// Returns a fetcher of the repository directory `sub`.
    fn fetcher(&self, config: &Config, sub: &str) -> Result<Box<dyn Fetcher>, OnlineError> {
        Ok(match self {
            Self::Url(base) => Box::new(HttpFetcher::with_policy(&format!("{base}/{sub}"), config.download.clone())?),
            Self::Dir(base) => Box::new(DirFetcher::new(&base.join(sub))),
            Self::Registry(client) => Box::new(crate::registry::RegistryFetcher::new(client.clone(), sub)),
        })
    }

    /// Returns the source of the chunk store.
    fn chunk_source(&self, config: &Config, cache_dir: &Path) -> Result<Box<dyn ReleaseSource>, OnlineError> {
        Ok(match self {
            Self::Url(base) => open_source_with_cache(base, Some(cache_dir), config.download.clone())?,
            Self::Dir(base) => Box::new(crate::source::DirSource::new(base)),
            Self::Registry(client) => Box::new(crate::source::RegistrySource::new(client.clone(), cache_dir)),
        })
    }
}

/// Stores the configured root as the trusted TUF root when the robot has
/// none yet, or when the configured one is newer.
fn seed_trusted_root(config: &Config) -> Result<(), OnlineError> {
    let path = &config.trusted_root;
    let bytes = read_bounded(path, MAX_ROOT_BYTES, "trusted root")
        .map_err(|e| OnlineError::TrustedRoot { path: path.clone(), detail: e.to_string() })?;
    let version_of = |bytes: &[u8]| serde_json::from_slice::<Signed<Root>>(bytes).ok().map(|r| r.signed.version);
    let configured = version_of(&bytes);
    let stored_path = tuf_dir(config).join("root.json");
    let stored = std::fs::read(&stored_path).ok().and_then(|b| version_of(&b));
    if stored.is_none() || configured > stored {
        init_trusted_root(&tuf_dir(config), &bytes, &path.display().to_string())?;
        tracing::info!(root = %path.display(), version = ?configured, "trusted TUF root stored");
    }
    Ok(())
}

/// Versions of the trusted metadata after a refresh.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RefreshReport {
    pub root: u64,
    pub timestamp: u64,
    pub snapshot: u64,
    pub targets: u64,
    /// Releases the trusted targets authorise as downgrades.
    pub downgrades: Vec<String>,
}

/// Refreshes the trusted metadata from `repository` without downloading a
/// release.
pub fn refresh_repository(config: &Config, repository: &str, fallback_time: SystemTime) -> Result<RefreshReport, OnlineError> {
    seed_trusted_root(config)?;
    let opened = Repository::open(config, repository)?;
    let client = TufClient::new(&tuf_dir(config), opened.fetcher(config, "metadata")?).with_fallback_time(fallback_time);
    let trusted = client.refresh()?;
    let downgrades = trusted
        .targets
        .targets
        .iter()
        .filter(|(_, target)| target.custom.as_ref().and_then(|c| c.get("allow_downgrade")).and_then(|v| v.as_bool()) == Some(true))
        .map(|(name, _)| name.clone())
        .collect();
    Ok(RefreshReport {
        root: trusted.root.version,
        timestamp: trusted.timestamp.version,
        snapshot: trusted.snapshot.version,
        targets: trusted.targets.version,
        downgrades,
    })
}

/// Refreshes the trusted metadata from `repository` (a URL, a directory or
/// an `oci://` reference),
/// verifies the newest release for this robot and returns it with a source
/// for its chunks. `fallback_time` is used for expiry checks when the time
/// floor is missing: the build time of the running release.
pub fn fetch_repository_release(
    config: &Config,
    repository: &str,
    cache_dir: &Path,
    fallback_time: SystemTime,
    version: Option<&semver::Version>,
    active_manifest: Option<&[u8]>,
) -> Result<(Box<dyn ReleaseSource>, VerifiedRelease), OnlineError> {
    seed_trusted_root(config)?;
    let opened = Repository::open(config, repository)?;
    let client = TufClient::new(&tuf_dir(config), opened.fetcher(config, "metadata")?).with_fallback_time(fallback_time);
    let trusted = client.refresh()?;

    let mut newest: Option<(String, semver::Version)> = None;
    for (name, target) in &trusted.targets.targets {
        let Some(info) = target.custom.clone().and_then(|c| serde_json::from_value::<ReleaseInfo>(c).ok()) else {
            continue;
        };
        let wanted = version.is_none_or(|v| *v == info.version);
        if wanted && info.compatible == config.compatible && newest.as_ref().is_none_or(|(_, v)| info.version > *v) {
            newest = Some((name.clone(), info.version));
        }
    }
    // TODO: releases listed only by delegated targets roles are not
    // considered; the delegation search runs for a known name only.
    let (name, _) = newest.ok_or_else(|| OnlineError::NoRelease {
        compatible: config.compatible.clone(),
        repository: repository.to_owned(),
        version: version.cloned(),
    })?;
    let found = client.find_target(&trusted, &name)?;
    let manifests = cache_dir.join("manifests");
    std::fs::create_dir_all(&manifests).map_err(|source| OnlineError::Io { path: manifests.clone(), source })?;
    let destination = manifests.join(local_target_file_name(&name));
    let targets_fetcher = opened.fetcher(config, "targets")?;

    let active_manifest = active_manifest.filter(|_| config.delta_packs);
    let active_digest = active_manifest.map(crate::format::Sha256Digest::of);
    let mut delta = None;
    let mut bytes = None;
    let choice = choose_pack(&trusted.targets, &found.file, active_digest.as_ref());
    if choice.is_none() && active_manifest.is_some() {
        tracing::info!(manifest = %name, "download plan: manifest and chunks, no cheaper delta pack from the active release");
    }
    if let (Some(choice), Some(active)) = (choice, active_manifest) {
        tracing::info!(
            pack = %choice.target_name,
            bytes_with_pack = choice.bytes_with_pack(),
            bytes_without_pack = found.file.length.saturating_add(choice.info.chunk_bytes),
            "download plan: delta pack"
        );
        match fetch_pack(&client, &trusted, targets_fetcher.as_ref(), &choice, cache_dir, active, &found) {
            Ok((pack, manifest_bytes)) => {
                delta = Some(pack);
                bytes = Some(manifest_bytes);
            }
            Err(error) => {
                tracing::warn!(pack = %choice.target_name, error = %crate::error_line(&error), "delta pack unusable; fetching the manifest and chunks");
            }
        }
    }
    let bytes = match bytes {
        Some(bytes) => bytes,
        None => {
            client.download_target_resumable(targets_fetcher.as_ref(), &trusted, &found, &destination)?;
            read_bounded(&destination, MAX_MANIFEST_BYTES, &name)?
        }
    };
    let release = verify_release(&trusted.targets, &name, &bytes)?.with_delta(delta);

    // Only the chunk store is read through this source; a repository written
    // by another TUF tool has no top-level files of the old layout.
    let chunks = opened.chunk_source(config, cache_dir)?;
    Ok((chunks, release))
}

/// Downloads the chosen delta pack, resuming an interrupted download, and
/// rebuilds the new manifest from the active one. The manifest bytes are
/// checked against the signed manifest target before they are returned.
fn fetch_pack(
    client: &TufClient,
    trusted: &crate::tuf::TrustedMetadata,
    targets_fetcher: &dyn Fetcher,
    choice: &PackChoice,
    cache_dir: &Path,
    active_manifest: &[u8],
    manifest_target: &crate::tuf::FoundTarget,
) -> Result<(DeltaPack, Vec<u8>), OnlineError> {
    let found = client.find_target(trusted, &choice.target_name)?;
    let dir = cache_dir.join("deltas");
    std::fs::create_dir_all(&dir).map_err(|source| OnlineError::Io { path: dir.clone(), source })?;
    let destination = dir.join(local_target_file_name(&choice.target_name));
    client.download_target_resumable(targets_fetcher, trusted, &found, &destination)?;
    let pack = DeltaPack::open(&destination)?;
    let bytes = pack.manifest(active_manifest, MAX_MANIFEST_BYTES)?;
    let listed = manifest_target.file.hashes.get("sha256").cloned().unwrap_or_default();
    if bytes.len() as u64 != manifest_target.file.length || crate::format::Sha256Digest::of(&bytes).to_hex() != listed {
        return Err(OnlineError::Delta(crate::delta::DeltaError::Damaged {
            path: destination,
            detail: format!("its manifest frame does not rebuild {}", manifest_target.path),
        }));
    }
    Ok((pack, bytes))
}

/// Verifies a bundle offline against the robot's trusted TUF root. It walks
/// the bundle's root chain one version at a time from the trusted root, each
/// new root signed by the threshold of the previous one and of itself. Then
/// it checks the bundle's `targets.json` with the newest root, and rejects a
/// targets version below the one the robot already trusts.
///
/// Offline, signatures, thresholds, the root chain and versions are
/// enforced, but no expiry: a bundle may wait on a USB stick for months,
/// and a robot without a real-time clock cannot tell how long.
pub fn verify_bundle_release(config: &Config, source: &mut dyn ReleaseSource) -> Result<VerifiedRelease, OnlineError> {
    let dir = tuf_dir(config);
    // The robot starts from its stored TUF root, or from the configured one
    // when that is missing or newer. A configured root is stored only once
    // the release verified, so a rejected bundle leaves the state as it was.
    let configured_path = config.trusted_root.clone();
    let configured = read_bounded(&configured_path, MAX_ROOT_BYTES, "trusted root")
        .map_err(|e| OnlineError::TrustedRoot { path: configured_path.clone(), detail: e.to_string() })?;
    let version_of = |bytes: &[u8]| serde_json::from_slice::<Signed<Root>>(bytes).ok().map(|r| r.signed.version);
    let stored = read_bounded(&dir.join("root.json"), MAX_ROOT_BYTES, "trusted root").ok();
    let use_configured = match &stored {
        Some(bytes) => version_of(&configured) > version_of(bytes),
        None => true,
    };
    let (start, start_path) = match (use_configured, stored) {
        (false, Some(bytes)) => (bytes, dir.join("root.json")),
        _ => (configured.clone(), configured_path.clone()),
    };
    let mut current = tender_keys::verify_root(&start, &start_path.display().to_string())
        .map_err(|e| OnlineError::TrustedRoot { path: start_path.clone(), detail: e.to_string() })?;
    let mut pending = use_configured.then(|| start.clone());

    let chain = source.root_chain();
    for (version, bytes) in chain.range(current.version + 1..) {
        let what = format!("roots/{version}.root.json of {}", source.describe());
        if *version != current.version + 1 {
            return Err(OnlineError::RootChainGap { source_name: source.describe(), trusted: current.version, found: *version });
        }
        let next = tender_keys::verify_root_update(&current, bytes, &what)
            .map_err(|e| OnlineError::TrustedRoot { path: PathBuf::from(&what), detail: e.to_string() })?;
        if next.version != *version {
            return Err(OnlineError::TrustedRoot { path: PathBuf::from(&what), detail: format!("its version field is {}", next.version) });
        }
        current = next;
        pending = Some(bytes.clone());
    }

    let release = crate::verify::fetch_verified_release(&current, source, &config.compatible)?;
    let bundle_targets = serde_json::from_slice::<Signed<tender_keys::Targets>>(&source.targets(crate::format::limits::MAX_TARGETS_BYTES)?)
        .map(|t| t.signed.version)
        .unwrap_or(0);

    let trusted_targets = std::fs::read(dir.join("targets.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<Signed<tender_keys::Targets>>(&b).ok())
        .map(|t| t.signed.version);
    if let Some(trusted) = trusted_targets {
        if bundle_targets < trusted {
            return Err(OnlineError::TargetsRollback { source_name: source.describe(), trusted, found: bundle_targets });
        }
    }
    Ok(release.with_pending_root(pending))
}

/// Stores a root that a verified release brought as the trusted root.
pub fn store_pending_root(config: &Config, root: &[u8]) -> Result<(), OnlineError> {
    init_trusted_root(&tuf_dir(config), root, "root from the bundle's root chain")?;
    Ok(())
}

/// Returns true when the robot's trusted `targets.json` (from its last
/// online refresh) lists the manifest `digest` with `allow_downgrade` set.
pub fn downgrade_authorized(config: &Config, digest: &crate::format::Sha256Digest) -> bool {
    let Ok(bytes) = std::fs::read(tuf_dir(config).join("targets.json")) else { return false };
    let Ok(targets) = serde_json::from_slice::<Signed<tender_keys::Targets>>(&bytes) else { return false };
    targets.signed.targets.values().any(|target| {
        target.hashes.get("sha256").is_some_and(|hash| *hash == digest.to_hex())
            && target.custom.as_ref().and_then(|c| c.get("allow_downgrade")).and_then(|v| v.as_bool()) == Some(true)
    })
}

/// Converts a `SOURCE_DATE_EPOCH` into a time.
pub fn epoch_time(seconds: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(seconds)
}
