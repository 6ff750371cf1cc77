//! Signature checks against the roles of a trusted root.
//!
//! Signatures are checked over the canonical JSON of the `signed` object as it
//! was parsed into a generic JSON value, so fields that Tender does not know
//! still count towards what was signed.

use std::collections::BTreeSet;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{to_canonical_json, Error, KeyId, Role, Root, Signed, Targets};

/// Who signed a document, for audits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SignatureReport {
    pub role: Role,
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

fn check_type(signed: &serde_json::Value, expected: Role, what: &str) -> Result<(), Error> {
    let found = signed.get("_type").and_then(|t| t.as_str()).unwrap_or("");
    if found != expected.as_str() {
        return Err(Error::WrongType {
            what: what.to_owned(),
            expected: expected.as_str().to_owned(),
            found: found.to_owned(),
        });
    }
    Ok(())
}

fn typed<T: DeserializeOwned>(value: serde_json::Value, what: &str) -> Result<T, Error> {
    serde_json::from_value(value).map_err(|source| Error::Parse { what: what.to_owned(), source })
}

/// Counts valid signatures of `role` keys over `envelope.signed`; each key
/// counts once, however many signatures it has.
fn check_signatures(
    root: &Root,
    role: Role,
    envelope: &Signed<serde_json::Value>,
    what: &str,
) -> Result<SignatureReport, Error> {
    let role_keys = root.role(role)?;
    let canonical = to_canonical_json(&envelope.signed)?;
    let mut valid = BTreeSet::new();
    let mut invalid = BTreeSet::new();
    let mut untrusted = BTreeSet::new();
    for signature in &envelope.signatures {
        let key = root.keys.get(&signature.keyid);
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
        role,
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
            role,
            valid: report.valid.len(),
            threshold: required,
        });
    }
    Ok(report)
}

/// Parses a `root.json` and checks that the threshold of its own root role
/// signed it. `what` names the document in errors, such as its path.
pub fn verify_root(bytes: &[u8], what: &str) -> Result<Verified<Root>, Error> {
    let envelope = parse_envelope(bytes, what)?;
    check_type(&envelope.signed, Role::Root, what)?;
    let root: Root = typed(envelope.signed.clone(), what)?;
    for (keyid, key) in &root.keys {
        if !key.is_valid() || key.key_id()? != *keyid {
            return Err(Error::InvalidPublicKey { keyid: keyid.clone() });
        }
    }
    let report = check_signatures(&root, Role::Root, &envelope, what)?;
    Ok(Verified { value: root, report })
}

/// Parses a `targets.json` and checks it against the targets role of `root`.
pub fn verify_targets(root: &Verified<Root>, bytes: &[u8], what: &str) -> Result<Verified<Targets>, Error> {
    verify_signed(root, Role::Targets, bytes, what)
}

fn verify_signed<T: DeserializeOwned>(
    root: &Verified<Root>,
    role: Role,
    bytes: &[u8],
    what: &str,
) -> Result<Verified<T>, Error> {
    let envelope = parse_envelope(bytes, what)?;
    check_type(&envelope.signed, role, what)?;
    let report = check_signatures(root, role, &envelope, what)?;
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
