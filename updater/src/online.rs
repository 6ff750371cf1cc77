//! Releases from a repository, through the TUF client: the robot refreshes
//! its trusted metadata (root chain, timestamp, snapshot, targets) in
//! `STATE_DIR/tuf`, picks the newest release for its `compatible`, and
//! downloads the manifest by its consistent target name. The highest
//! versions it has trusted protect it against rollback and freeze attacks.
//!
//! Repository layout: `metadata/` for TUF metadata, `targets/HASH.NAME` for
//! manifests, `chunks/` for the chunk store.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tender_keys::{Root, Signed};

use crate::config::Config;
use crate::format::limits::{MAX_MANIFEST_BYTES, MAX_ROOT_BYTES};
use crate::format::ReleaseInfo;
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
    #[error("no release for compatible {compatible:?} is listed in the signed targets of {repository}")]
    NoRelease { compatible: String, repository: String },
    #[error(transparent)]
    Fetch(#[from] crate::tuf::FetchError),
    #[error("cannot read the downloaded manifest {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
}

/// Directory of the robot's trusted TUF metadata.
pub fn tuf_dir(config: &Config) -> PathBuf {
    config.state_dir.join("tuf")
}

fn is_url(text: &str) -> bool {
    text.starts_with("http://") || text.starts_with("https://")
}

fn fetcher(config: &Config, repository: &str, sub: &str) -> Result<Box<dyn Fetcher>, OnlineError> {
    let base = repository.trim_end_matches('/');
    if is_url(base) {
        let fetcher = HttpFetcher::with_policy(&format!("{base}/{sub}"), config.download.clone())?;
        return Ok(Box::new(fetcher));
    }
    Ok(Box::new(DirFetcher::new(&Path::new(base).join(sub))))
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

/// Refreshes the trusted metadata from `repository` (a URL or a directory),
/// verifies the newest release for this robot and returns it with a source
/// for its chunks. `fallback_time` is used for expiry checks when the time
/// floor is missing: the build time of the running release.
pub fn fetch_repository_release(
    config: &Config,
    repository: &str,
    cache_dir: &Path,
    fallback_time: SystemTime,
) -> Result<(Box<dyn ReleaseSource>, VerifiedRelease), OnlineError> {
    seed_trusted_root(config)?;
    let client = TufClient::new(&tuf_dir(config), fetcher(config, repository, "metadata")?).with_fallback_time(fallback_time);
    let trusted = client.refresh()?;

    let mut newest: Option<(String, semver::Version)> = None;
    for (name, target) in &trusted.targets.targets {
        let Some(info) = target.custom.clone().and_then(|c| serde_json::from_value::<ReleaseInfo>(c).ok()) else {
            continue;
        };
        if info.compatible == config.compatible && newest.as_ref().is_none_or(|(_, v)| info.version > *v) {
            newest = Some((name.clone(), info.version));
        }
    }
    // TODO: releases listed only by delegated targets roles are not
    // considered; the delegation search runs for a known name only.
    let (name, _) = newest.ok_or_else(|| OnlineError::NoRelease {
        compatible: config.compatible.clone(),
        repository: repository.to_owned(),
    })?;
    let found = client.find_target(&trusted, &name)?;
    let manifests = cache_dir.join("manifests");
    std::fs::create_dir_all(&manifests).map_err(|source| OnlineError::Io { path: manifests.clone(), source })?;
    let destination = manifests.join(local_target_file_name(&name));
    let targets_fetcher = fetcher(config, repository, "targets")?;
    client.download_target(targets_fetcher.as_ref(), &trusted, &found, &destination)?;
    let bytes = read_bounded(&destination, MAX_MANIFEST_BYTES, &name)?;
    let release = verify_release(&trusted.targets, &name, &bytes)?;

    let chunks = open_source_with_cache(repository, Some(cache_dir), config.download.clone())?;
    Ok((chunks, release))
}

/// Converts a `SOURCE_DATE_EPOCH` into a time.
pub fn epoch_time(seconds: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(seconds)
}
