//! Signature checks against the roles of a trusted root.
//!
//! Signatures are checked over the canonical JSON of the `signed` object as it
//! was parsed into a generic JSON value, so fields that Tender does not know
//! still count towards what was signed.

use std::collections::{BTreeMap, BTreeSet};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{to_canonical_json, Error, KeyId, PublicKey, Role, RoleKeys, Root, Signed, Snapshot, Targets, Timestamp};

/// Signers of a document, for audits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SignatureReport {
    /// Role name: `root`, `targets`, `snapshot`, `timestamp` or a delegated role.
    pub role: String,
    pub threshold: u32,
    /// Keys of the role whose signatures are valid.
    pub valid: Vec<KeyId>,
    /// Keys of the role whose signatures do not verify.
    pub invalid: Vec<KeyId>,
    /// Key ids that signed but are not keys of the role.
    pub untrusted: Vec<KeyId>,
}

/// A document whose signatures met the threshold of its role. Only the
/// functions of this module create one.
#[derive(Debug, Clone)]
pub struct Verified<T> {
    value: T,
    report: SignatureReport,
}

impl<T> Verified<T> {
    pub fn report(&self) -> &SignatureReport {
        &self.report
    }

    pub fn into_inner(self) -> T {
        self.value
    }
}

impl<T> std::ops::Deref for Verified<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.value
    }
}

fn parse_envelope(bytes: &[u8], what: &str) -> Result<Signed<serde_json::Value>, Error> {
    serde_json::from_slice(bytes).map_err(|source| Error::Parse { what: what.to_owned(), source })
}

fn check_type(signed: &serde_json::Value, expected: &str, what: &str) -> Result<(), Error> {
    let found = signed.get("_type").and_then(|t| t.as_str()).unwrap_or("");
    if found != expected {
        return Err(Error::WrongType { what: what.to_owned(), expected: expected.to_owned(), found: found.to_owned() });
    }
    Ok(())
}

fn typed<T: DeserializeOwned>(value: serde_json::Value, what: &str) -> Result<T, Error> {
    serde_json::from_value(value).map_err(|source| Error::Parse { what: what.to_owned(), source })
}

/// Counts valid signatures of `role_keys` over `envelope.signed`; each key
/// counts once, however many signatures it has.
fn check_signatures(
    keys: &BTreeMap<KeyId, PublicKey>,
    role_keys: &RoleKeys,
    role: &str,
    envelope: &Signed<serde_json::Value>,
    what: &str,
) -> Result<SignatureReport, Error> {
    let canonical = to_canonical_json(&envelope.signed)?;
    let mut valid = BTreeSet::new();
    let mut invalid = BTreeSet::new();
    let mut untrusted = BTreeSet::new();
    for signature in &envelope.signatures {
        let key = keys.get(&signature.keyid);
        match key {
            Some(key) if role_keys.keyids.contains(&signature.keyid) => {
                if key.verify(&canonical, &signature.sig) {
                    valid.insert(signature.keyid.clone());
                } else {
                    invalid.insert(signature.keyid.clone());
                }
            }
            _ => {
                untrusted.insert(signature.keyid.clone());
            }
        }
    }
    invalid.retain(|id| !valid.contains(id));
    let report = SignatureReport {
        role: role.to_owned(),
        threshold: role_keys.threshold,
        valid: valid.into_iter().collect(),
        invalid: invalid.into_iter().collect(),
        untrusted: untrusted.into_iter().collect(),
    };
    // A threshold of zero would accept unsigned metadata, so at least one
    // valid signature is always required.
    let required = role_keys.threshold.max(1);
    if report.valid.len() < required as usize {
        return Err(Error::ThresholdNotMet {
            what: what.to_owned(),
            role: role.to_owned(),
            valid: report.valid.len(),
            threshold: required,
        });
    }
    Ok(report)
}

fn check_root_keys(root: &Root) -> Result<(), Error> {
    for (keyid, key) in &root.keys {
        if !key.is_valid() || key.key_id()? != *keyid {
            return Err(Error::InvalidPublicKey { keyid: keyid.clone() });
        }
    }
    Ok(())
}

/// Parses a `root.json` and checks that the threshold of its own root role
/// signed it. `what` names the document in errors, such as its path.
pub fn verify_root(bytes: &[u8], what: &str) -> Result<Verified<Root>, Error> {
    let envelope = parse_envelope(bytes, what)?;
    check_type(&envelope.signed, Role::Root.as_str(), what)?;
    let root: Root = typed(envelope.signed.clone(), what)?;
    check_root_keys(&root)?;
    let report = check_signatures(&root.keys, root.role(Role::Root)?, Role::Root.as_str(), &envelope, what)?;
    Ok(Verified { value: root, report })
}

/// Checks a new `root.json` as the TUF client does when it updates its root:
/// the threshold of the trusted root's root role and the threshold of the new
/// root's own root role must both have signed it. Versions and expiry are the
/// caller's to check.
pub fn verify_root_update(trusted: &Verified<Root>, bytes: &[u8], what: &str) -> Result<Verified<Root>, Error> {
    let envelope = parse_envelope(bytes, what)?;
    check_type(&envelope.signed, Role::Root.as_str(), what)?;
    let root: Root = typed(envelope.signed.clone(), what)?;
    check_root_keys(&root)?;
    check_signatures(&trusted.keys, trusted.role(Role::Root)?, "root (trusted)", &envelope, what)?;
    let report = check_signatures(&root.keys, root.role(Role::Root)?, Role::Root.as_str(), &envelope, what)?;
    Ok(Verified { value: root, report })
}

/// Parses a `targets.json` and checks it against the targets role of `root`.
pub fn verify_targets(root: &Verified<Root>, bytes: &[u8], what: &str) -> Result<Verified<Targets>, Error> {
    verify_top_level(root, Role::Targets, bytes, what)
}

/// Parses a `snapshot.json` and checks it against the snapshot role of `root`.
pub fn verify_snapshot(root: &Verified<Root>, bytes: &[u8], what: &str) -> Result<Verified<Snapshot>, Error> {
    verify_top_level(root, Role::Snapshot, bytes, what)
}

/// Parses a `timestamp.json` and checks it against the timestamp role of `root`.
pub fn verify_timestamp(root: &Verified<Root>, bytes: &[u8], what: &str) -> Result<Verified<Timestamp>, Error> {
    verify_top_level(root, Role::Timestamp, bytes, what)
}

/// Parses delegated targets metadata and checks it against the keys and
/// threshold that its delegating role lists for it.
pub fn verify_delegated(
    keys: &BTreeMap<KeyId, PublicKey>,
    role_keys: &RoleKeys,
    role_name: &str,
    bytes: &[u8],
    what: &str,
) -> Result<Verified<Targets>, Error> {
    let envelope = parse_envelope(bytes, what)?;
    check_type(&envelope.signed, Role::Targets.as_str(), what)?;
    let report = check_signatures(keys, role_keys, role_name, &envelope, what)?;
    let value = typed(envelope.signed, what)?;
    Ok(Verified { value, report })
}

fn verify_top_level<T: DeserializeOwned>(root: &Root, role: Role, bytes: &[u8], what: &str) -> Result<Verified<T>, Error> {
    let envelope = parse_envelope(bytes, what)?;
    check_type(&envelope.signed, role.as_str(), what)?;
    let report = check_signatures(&root.keys, root.role(role)?, role.as_str(), &envelope, what)?;
    let value = typed(envelope.signed, what)?;
    Ok(Verified { value, report })
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::PrivateKey;

    fn fixture() -> (PrivateKey, PrivateKey, Vec<u8>) {
        let root_key = PrivateKey::generate();
        let release_key = PrivateKey::generate();
        let expires = UNIX_EPOCH + Duration::from_secs(2_000_000_000);
        let root = Root::new(&root_key.public(), &release_key.public(), expires).expect("root");
        let bytes = Signed::sign(root, &[&root_key]).expect("sign").to_canonical_json().expect("json");
        (root_key, release_key, bytes)
    }

    #[test]
    fn root_verifies_with_its_own_key() {
        let (root_key, _, bytes) = fixture();
        let root = verify_root(&bytes, "root.json").expect("valid root");
        assert_eq!(root.report().valid, vec![root_key.key_id().expect("id")]);
    }

    #[test]
    fn targets_signed_by_unknown_key_is_rejected() {
        let (_, _, bytes) = fixture();
        let root = verify_root(&bytes, "root.json").expect("valid root");
        let stranger = PrivateKey::generate();
        let targets = Targets::new(1, UNIX_EPOCH + Duration::from_secs(2_000_000_000));
        let signed = Signed::sign(targets, &[&stranger]).expect("sign").to_canonical_json().expect("json");
        let err = verify_targets(&root, &signed, "targets.json").expect_err("untrusted key");
        assert!(matches!(err, Error::ThresholdNotMet { valid: 0, .. }), "{err}");
    }

    #[test]
    fn targets_with_changed_field_is_rejected() {
        let (_, release_key, bytes) = fixture();
        let root = verify_root(&bytes, "root.json").expect("valid root");
        let targets = Targets::new(7, UNIX_EPOCH + Duration::from_secs(2_000_000_000));
        let signed = Signed::sign(targets, &[&release_key]).expect("sign").to_canonical_json().expect("json");
        verify_targets(&root, &signed, "targets.json").expect("valid targets");
        let tampered = String::from_utf8(signed).expect("utf8").replace("\"version\":7", "\"version\":8");
        assert!(verify_targets(&root, tampered.as_bytes(), "targets.json").is_err());
    }

    #[test]
    fn rotated_root_needs_old_and_new_keys() {
        let (old_root_key, release_key, bytes) = fixture();
        let trusted = verify_root(&bytes, "1.root.json").expect("valid root");
        let new_root_key = PrivateKey::generate();
        let expires = UNIX_EPOCH + Duration::from_secs(2_000_000_000);
        let mut next = Root::new(&new_root_key.public(), &release_key.public(), expires).expect("root");
        next.version = 2;
        let only_new = Signed::sign(next.clone(), &[&new_root_key]).expect("sign").to_canonical_json().expect("json");
        let err = verify_root_update(&trusted, &only_new, "2.root.json").expect_err("old keys did not sign");
        assert!(matches!(err, Error::ThresholdNotMet { .. }), "{err}");
        let only_old = Signed::sign(next.clone(), &[&old_root_key]).expect("sign").to_canonical_json().expect("json");
        assert!(verify_root_update(&trusted, &only_old, "2.root.json").is_err());
        let both = Signed::sign(next, &[&old_root_key, &new_root_key]).expect("sign").to_canonical_json().expect("json");
        let rotated = verify_root_update(&trusted, &both, "2.root.json").expect("rotation");
        assert_eq!(rotated.version, 2);
    }

    #[test]
    fn duplicate_signatures_count_once() {
        let root_key = PrivateKey::generate();
        let release_key = PrivateKey::generate();
        let expires = UNIX_EPOCH + Duration::from_secs(2_000_000_000);
        let mut root = Root::new(&root_key.public(), &release_key.public(), expires).expect("root");
        root.roles.get_mut(&Role::Root).expect("root role").threshold = 2;
        let mut envelope = Signed::sign(root, &[&root_key]).expect("sign");
        envelope.signatures.push(envelope.signatures[0].clone());
        let bytes = envelope.to_canonical_json().expect("json");
        let err = verify_root(&bytes, "root.json").expect_err("one key cannot meet threshold 2");
        assert!(matches!(err, Error::ThresholdNotMet { valid: 1, threshold: 2, .. }), "{err}");
    }
}
