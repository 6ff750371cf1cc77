//! Verification of a release against the trusted root: `targets.json` must
//! meet the threshold of the targets role, and the manifest must be one of its
//! targets, byte for byte.

use tender_keys::{verify_targets, Root, SignatureReport, TargetFile, Verified};

use crate::format::layout::TARGETS_FILE;
use crate::format::limits::{MAX_MANIFEST_BYTES, MAX_TARGETS_BYTES};
use crate::format::manifest::ManifestError;
use crate::format::{Manifest, ReleaseInfo, Sha256Digest};
use crate::source::{ReleaseSource, SourceError};

/// A manifest whose bytes are listed in `targets.json` and whose
/// `targets.json` met the threshold of the trusted root. Only
/// [`fetch_verified_release`] and [`verify_release`] create one.
#[derive(Debug, Clone)]
pub struct VerifiedRelease {
    manifest: Manifest,
    info: ReleaseInfo,
    digest: Sha256Digest,
    target_name: String,
    report: SignatureReport,
    /// A newer root from a bundle's root chain, stored as trusted once the
    /// release's chunks verified too.
    pending_root: Option<Vec<u8>>,
    /// The delta pack the planner chose, downloaded and checked against its
    /// signed length and hashes.
    delta: Option<crate::delta::DeltaPack>,
}

impl VerifiedRelease {
    /// Returns the newer trusted root this release brought, if any.
    pub fn pending_root(&self) -> Option<&[u8]> {
        self.pending_root.as_deref()
    }

    pub(crate) fn with_pending_root(mut self, root: Option<Vec<u8>>) -> Self {
        self.pending_root = root;
        self
    }

    /// Returns the delta pack to stage from, if the planner chose one.
    pub fn delta(&self) -> Option<&crate::delta::DeltaPack> {
        self.delta.as_ref()
    }

    pub(crate) fn with_delta(mut self, delta: Option<crate::delta::DeltaPack>) -> Self {
        self.delta = delta;
        self
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Returns the release information of the signed target, rollout included.
    pub fn info(&self) -> &ReleaseInfo {
        &self.info
    }

    /// SHA-256 of the manifest bytes, the release's identity.
    pub fn digest(&self) -> Sha256Digest {
        self.digest
    }

    pub fn target_name(&self) -> &str {
        &self.target_name
    }

    pub fn signatures(&self) -> &SignatureReport {
        &self.report
    }
}

/// Reasons a release is rejected.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Source(#[from] SourceError),
    /// `what` names the document; the source's message names it too.
    #[error("{source}")]
    Signature { what: String, source: tender_keys::Error },
    #[error("manifest (sha256 {digest}) is not listed in the signed targets.json of {source_name}; it was altered or does not belong to this repository")]
    NotListed { digest: Sha256Digest, source_name: String },
    #[error("manifest {target} does not match targets.json: expected {expected_len} bytes with sha256 {expected}, got {actual_len} bytes with sha256 {actual}")]
    HashMismatch { target: String, expected: String, expected_len: u64, actual: Sha256Digest, actual_len: u64 },
    #[error("target {target} in targets.json has no valid Tender release information: {detail}")]
    BadCustom { target: String, detail: String },
    #[error("manifest {target} is invalid: {source}")]
    Manifest { target: String, source: ManifestError },
    #[error("manifest {target} says {field} is {manifest:?} but targets.json says {targets:?}")]
    CustomMismatch { target: String, field: &'static str, manifest: String, targets: String },
    #[error("no release for compatible {compatible:?} is listed in {source_name}")]
    NoRelease { compatible: String, source_name: String },
}

fn release_info(name: &str, target: &TargetFile) -> Result<ReleaseInfo, VerifyError> {
    let custom = target
        .custom
        .clone()
        .ok_or_else(|| VerifyError::BadCustom { target: name.to_owned(), detail: "custom is missing".to_owned() })?;
    serde_json::from_value(custom).map_err(|e| VerifyError::BadCustom { target: name.to_owned(), detail: e.to_string() })
}

/// Checks `manifest_bytes` against the target `target_name` of verified
/// targets metadata and parses it.
pub fn verify_release(
    targets: &Verified<tender_keys::Targets>,
    target_name: &str,
    manifest_bytes: &[u8],
) -> Result<VerifiedRelease, VerifyError> {
    let target = targets.targets.get(target_name).ok_or_else(|| VerifyError::NotListed {
        digest: Sha256Digest::of(manifest_bytes),
        source_name: target_name.to_owned(),
    })?;
    let digest = Sha256Digest::of(manifest_bytes);
    let expected = target.hashes.get("sha256").cloned().unwrap_or_default();
    if expected != digest.to_hex() || target.length != manifest_bytes.len() as u64 {
        return Err(VerifyError::HashMismatch {
            target: target_name.to_owned(),
            expected,
            expected_len: target.length,
            actual: digest,
            actual_len: manifest_bytes.len() as u64,
        });
    }
    let info = release_info(target_name, target)?;
    let manifest = Manifest::parse(manifest_bytes)
        .map_err(|source| VerifyError::Manifest { target: target_name.to_owned(), source })?;
    let actual = manifest.release_info();
    let pairs: [(&'static str, String, String); 4] = [
        ("name", actual.name, info.name.clone()),
        ("version", actual.version.to_string(), info.version.to_string()),
        ("compatible", actual.compatible, info.compatible.clone()),
        ("architecture", actual.architecture, info.architecture.clone()),
    ];
    for (field, manifest_value, targets_value) in pairs {
        if manifest_value != targets_value {
            return Err(VerifyError::CustomMismatch {
                target: target_name.to_owned(),
                field,
                manifest: manifest_value,
                targets: targets_value,
            });
        }
    }
    Ok(VerifiedRelease {
        manifest,
        info,
        digest,
        target_name: target_name.to_owned(),
        report: targets.report().clone(),
        pending_root: None,
        delta: None,
    })
}

/// Finds the target whose sha256 is that of a bundle's own manifest.
fn find_target_by_hash(
    targets: &tender_keys::Targets,
    manifest_bytes: &[u8],
    source: &dyn ReleaseSource,
) -> Result<String, VerifyError> {
    let digest = Sha256Digest::of(manifest_bytes);
    targets
        .targets
        .iter()
        .find(|(_, target)| target.hashes.get("sha256").is_some_and(|h| *h == digest.to_hex()))
        .map(|(name, _)| name.clone())
        .ok_or_else(|| VerifyError::NotListed { digest, source_name: source.describe() })
}

/// Reads `targets.json` from a source and verifies it against `root`.
pub fn fetch_verified_targets(
    root: &Verified<Root>,
    source: &mut dyn ReleaseSource,
) -> Result<Verified<tender_keys::Targets>, VerifyError> {
    let bytes = source.targets(MAX_TARGETS_BYTES)?;
    let what = format!("{TARGETS_FILE} of {}", source.describe());
    verify_targets(root, &bytes, &what).map_err(|source| VerifyError::Signature { what, source })
}

/// Picks and verifies the release to install from a source: a bundle's own
/// manifest, or the newest release for `compatible` in a repository.
pub fn fetch_verified_release(
    root: &Verified<Root>,
    source: &mut dyn ReleaseSource,
    compatible: &str,
) -> Result<VerifiedRelease, VerifyError> {
    let targets = fetch_verified_targets(root, source)?;
    if let Some(manifest_bytes) = source.pinned_manifest() {
        let name = find_target_by_hash(&targets, &manifest_bytes, source)?;
        return verify_release(&targets, &name, &manifest_bytes);
    }
    let mut newest: Option<(String, semver::Version)> = None;
    for (name, target) in &targets.targets {
        let Ok(info) = release_info(name, target) else {
            tracing::warn!(target = %name, "skipping target without Tender release information");
            continue;
        };
        if info.compatible != compatible {
            continue;
        }
        if newest.as_ref().is_none_or(|(_, version)| info.version > *version) {
            newest = Some((name.clone(), info.version));
        }
    }
    let (name, _) = newest.ok_or_else(|| VerifyError::NoRelease {
        compatible: compatible.to_owned(),
        source_name: source.describe(),
    })?;
    let manifest_bytes = source.manifest(&name, MAX_MANIFEST_BYTES)?;
    verify_release(&targets, &name, &manifest_bytes)
}

/// Lists every verified release of a source, for audits.
pub fn fetch_all_releases(
    root: &Verified<Root>,
    source: &mut dyn ReleaseSource,
) -> Result<Vec<VerifiedRelease>, VerifyError> {
    let targets = fetch_verified_targets(root, source)?;
    if let Some(manifest_bytes) = source.pinned_manifest() {
        let name = find_target_by_hash(&targets, &manifest_bytes, source)?;
        return Ok(vec![verify_release(&targets, &name, &manifest_bytes)?]);
    }
    // Delta packs are checked by their signed hashes when a robot uses them.
    let names: Vec<String> = targets
        .targets
        .iter()
        .filter(|(_, target)| crate::format::delta::DeltaTargetInfo::from_custom(target.custom.as_ref()).is_none())
        .map(|(name, _)| name.clone())
        .collect();
    names
        .iter()
        .map(|name| {
            let bytes = source.manifest(name, MAX_MANIFEST_BYTES)?;
            verify_release(&targets, name, &bytes)
        })
        .collect()
}
