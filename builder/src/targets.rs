//! The repository's `targets.json`: the signed list of release manifests.
//!
//! A new release keeps every target of the existing `targets.json`, adds its
//! own manifest, and signs the result as the next version. Only memory is
//! changed here; the caller writes the bytes.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tender_keys::{verify_targets, Role, Root, TargetFile, Targets, Verified};
use tender_updater::format::{ReleaseInfo, Sha256Digest};

use crate::publish::{sign_role, PublishError};
use crate::signer::Signer;

/// How long a new `targets.json` stays valid, counted from `SOURCE_DATE_EPOCH`.
// TODO: a release of a commit older than this is expired when it is written.
// An expiry option would keep the output reproducible and still valid.
pub const TARGETS_VALIDITY: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// Failures to update `targets.json`.
#[derive(Debug, thiserror::Error)]
pub enum TargetsError {
    #[error("{what} does not verify against any root of the repository: {source}; it belongs to another root or was altered, so use a fresh --out directory")]
    Existing { what: String, source: tender_keys::Error },

    #[error("{what} already lists {target} with other content (sha256 {existing}); a version is released once, so choose a new --version")]
    VersionExists { what: String, target: String, existing: String },

    #[error("{what} has version {version}, which cannot be increased")]
    VersionOverflow { what: String, version: u64 },

    #[error("cannot sign targets.json: {0}")]
    Sign(#[from] PublishError),

    #[error("cannot encode the release information of {target}: {source}")]
    Custom { target: String, source: serde_json::Error },
}

/// The `custom` field of a manifest target: the release information that
/// robots read before they download the manifest.
#[derive(Debug, Clone, Serialize)]
pub struct TargetCustom<'a> {
    #[serde(flatten)]
    pub info: &'a ReleaseInfo,
    /// Rollout settings (canary share, waves); absent until Tender has them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollout: Option<serde_json::Value>,
}

/// The new `targets.json`.
#[derive(Debug, Clone)]
pub struct UpdatedTargets {
    /// Canonical JSON of the signed envelope.
    pub bytes: Vec<u8>,
    pub version: u64,
    /// `false` when the existing `targets.json` already listed this exact
    /// manifest and was kept as it was.
    pub changed: bool,
}

/// One manifest to list.
pub struct NewTarget<'a> {
    pub name: &'a str,
    pub manifest: &'a [u8],
    pub info: &'a ReleaseInfo,
    /// The target's `custom.rollout`, or `None` for a release open to all.
    pub rollout: Option<serde_json::Value>,
    /// Other targets published with the manifest, such as delta packs.
    pub extra: Vec<(String, TargetFile)>,
}

/// Returns `targets.json` with `target` added, signed by `signers` for the
/// targets role of the last of `roots`. `existing` is the current
/// `targets.json`, which must verify against one of `roots` (it may have
/// been signed before the latest root changed the targets keys), and `what`
/// names it in errors.
pub fn add_target(
    existing: Option<&[u8]>,
    what: &str,
    roots: &[Verified<Root>],
    signers: &[Signer],
    target: &NewTarget,
    source_date_epoch: u64,
) -> Result<UpdatedTargets, TargetsError> {
    let digest = Sha256Digest::of(target.manifest).to_hex();
    let (mut targets, previous_version) = match existing {
        Some(bytes) => {
            let verified = verify_with_any(roots, bytes, what)?;
            let version = verified.version;
            if let Some(listed) = verified.targets.get(target.name) {
                let listed_digest = listed.hashes.get("sha256").cloned().unwrap_or_default();
                if listed_digest == digest && listed.length == target.manifest.len() as u64 {
                    return Ok(UpdatedTargets { bytes: bytes.to_vec(), version, changed: false });
                }
                return Err(TargetsError::VersionExists {
                    what: what.to_owned(),
                    target: target.name.to_owned(),
                    existing: listed_digest,
                });
            }
            (verified.into_inner().targets, version)
        }
        None => (BTreeMap::new(), 0),
    };
    let version = previous_version
        .checked_add(1)
        .ok_or_else(|| TargetsError::VersionOverflow { what: what.to_owned(), version: previous_version })?;
    let custom = serde_json::to_value(TargetCustom { info: target.info, rollout: target.rollout.clone() })
        .map_err(|source| TargetsError::Custom { target: target.name.to_owned(), source })?;
    targets.insert(
        target.name.to_owned(),
        TargetFile {
            length: target.manifest.len() as u64,
            hashes: BTreeMap::from([("sha256".to_owned(), digest)]),
            custom: Some(custom),
        },
    );
    for (name, file) in &target.extra {
        targets.insert(name.clone(), file.clone());
    }
    let mut document = Targets::new(version, expiry(source_date_epoch));
    document.targets = targets;
    let Some(signing_root) = roots.last() else {
        return Err(TargetsError::Sign(PublishError::Key(tender_keys::Error::MissingRole { role: Role::Root })));
    };
    let bytes = sign_role(document, signers, signing_root, Role::Targets, what)?
        .to_canonical_json()
        .map_err(|e| TargetsError::Sign(e.into()))?;
    Ok(UpdatedTargets { bytes, version, changed: true })
}

/// An earlier release listed in `targets.json`.
#[derive(Debug, Clone)]
pub struct ListedRelease {
    pub target_name: String,
    pub file: TargetFile,
    pub info: ReleaseInfo,
}

/// Returns the releases that `existing` lists, newest version first, after
/// checking its signatures against `roots`.
pub fn listed_releases(existing: &[u8], what: &str, roots: &[Verified<Root>]) -> Result<Vec<ListedRelease>, TargetsError> {
    let verified = verify_with_any(roots, existing, what)?;
    let mut releases: Vec<ListedRelease> = verified
        .targets
        .iter()
        .filter_map(|(name, file)| {
            let info = serde_json::from_value::<ReleaseInfo>(file.custom.clone()?).ok()?;
            Some(ListedRelease { target_name: name.clone(), file: file.clone(), info })
        })
        .collect();
    releases.sort_by(|a, b| b.info.version.cmp(&a.info.version));
    Ok(releases)
}

/// Builds the `targets.json` entry of a file published beside a manifest.
pub fn target_file(bytes: &[u8], custom: serde_json::Value) -> TargetFile {
    TargetFile {
        length: bytes.len() as u64,
        hashes: BTreeMap::from([("sha256".to_owned(), Sha256Digest::of(bytes).to_hex())]),
        custom: Some(custom),
    }
}

/// Verifies `bytes` against the newest of `roots` that accepts it.
fn verify_with_any(roots: &[Verified<Root>], bytes: &[u8], what: &str) -> Result<Verified<Targets>, TargetsError> {
    let mut last_error = None;
    for root in roots.iter().rev() {
        match verify_targets(root, bytes, what) {
            Ok(verified) => return Ok(verified),
            Err(error) => last_error = Some(error),
        }
    }
    let source = last_error.unwrap_or(tender_keys::Error::MissingRole { role: Role::Root });
    Err(TargetsError::Existing { what: what.to_owned(), source })
}

/// Returns the expiry time written for `source_date_epoch`.
pub fn expiry(source_date_epoch: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(source_date_epoch) + TARGETS_VALIDITY
}

#[cfg(test)]
mod tests {
    use tender_keys::{verify_root, PrivateKey, Signed};

    use super::*;

    fn root(root_key: &PrivateKey, release_key: &PrivateKey) -> Vec<Verified<Root>> {
        let expires = UNIX_EPOCH + Duration::from_secs(4_000_000_000);
        let root = Root::new(&root_key.public(), &release_key.public(), expires).expect("root");
        let bytes = Signed::sign(root, &[root_key]).expect("sign").to_canonical_json().expect("json");
        vec![verify_root(&bytes, "root.json").expect("valid")]
    }

    fn signer(key: PrivateKey) -> Vec<Signer> {
        let keyid = key.key_id().expect("id");
        vec![Signer::Local { key, keyid, path: "release.key".into() }]
    }

    fn info(version: &str) -> ReleaseInfo {
        ReleaseInfo {
            name: "ecar".to_owned(),
            version: version.parse().expect("semver"),
            compatible: "ecar".to_owned(),
            architecture: "x86_64".to_owned(),
            rollout: None,
            allow_downgrade: false,
        }
    }

    #[test]
    fn second_release_keeps_first_target() {
        let (root_key, release_key) = (PrivateKey::generate(), PrivateKey::generate());
        let root = root(&root_key, &release_key);
        let release_key = signer(release_key);
        let first_info = info("1.0.0");
        let first = NewTarget { name: "ecar-1.0.0.manifest.json", manifest: b"one", info: &first_info, rollout: None, extra: Vec::new() };
        let v1 = add_target(None, "targets.json", &root, &release_key, &first, 1_700_000_000).expect("v1");
        assert_eq!(v1.version, 1);
        let second_info = info("1.1.0");
        let second = NewTarget { name: "ecar-1.1.0.manifest.json", manifest: b"two", info: &second_info, rollout: None, extra: Vec::new() };
        let v2 = add_target(Some(&v1.bytes), "targets.json", &root, &release_key, &second, 1_700_000_000).expect("v2");
        assert_eq!(v2.version, 2);
        let verified = verify_targets(&root[0], &v2.bytes, "targets.json").expect("verifies");
        assert_eq!(verified.targets.len(), 2);
        // 1_700_000_000 s plus 365 days.
        assert_eq!(verified.expires, "2024-11-13T22:13:20Z");
    }

    #[test]
    fn same_version_with_other_content_is_rejected() {
        let (root_key, release_key) = (PrivateKey::generate(), PrivateKey::generate());
        let root = root(&root_key, &release_key);
        let release_key = signer(release_key);
        let release_info = info("1.0.0");
        let first = NewTarget { name: "ecar-1.0.0.manifest.json", manifest: b"one", info: &release_info, rollout: None, extra: Vec::new() };
        let v1 = add_target(None, "targets.json", &root, &release_key, &first, 0).expect("v1");
        let again = add_target(Some(&v1.bytes), "targets.json", &root, &release_key, &first, 0).expect("same");
        assert!(!again.changed);
        assert_eq!(again.bytes, v1.bytes);
        let other = NewTarget { manifest: b"changed", ..first };
        let err = add_target(Some(&v1.bytes), "targets.json", &root, &release_key, &other, 0).expect_err("exists");
        assert!(matches!(err, TargetsError::VersionExists { .. }), "{err}");
    }
}
