//! TUF metadata documents: the signed envelope, `root` and `targets`.

use std::collections::BTreeMap;
use std::fmt;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::{to_canonical_json, Error, KeyId, PrivateKey, PublicKey};

/// The TUF specification version that Tender writes.
pub const SPEC_VERSION: &str = "1.0.0";

/// One signature of a signed document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    pub keyid: KeyId,
    /// ed25519 signature over the canonical JSON of `signed`, as hex.
    pub sig: String,
}

/// The TUF envelope: a document and the signatures over its canonical form.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Signed<T> {
    pub signed: T,
    pub signatures: Vec<Signature>,
}

impl<T: Serialize> Signed<T> {
    /// Signs `signed` with each key; signatures are sorted by key id so the
    /// output is the same for the same keys in any order.
    pub fn sign(signed: T, keys: &[&PrivateKey]) -> Result<Self, Error> {
        let canonical = to_canonical_json(&signed)?;
        let mut signatures = keys
            .iter()
            .map(|key| Ok(Signature { keyid: key.key_id()?, sig: key.sign(&canonical) }))
            .collect::<Result<Vec<_>, Error>>()?;
        signatures.sort_by(|a, b| a.keyid.cmp(&b.keyid));
        signatures.dedup_by(|a, b| a.keyid == b.keyid);
        Ok(Self { signed, signatures })
    }

    /// Encodes the whole envelope as canonical JSON, the form Tender publishes.
    pub fn to_canonical_json(&self) -> Result<Vec<u8>, Error> {
        to_canonical_json(self)
    }
}

/// The four top-level TUF roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Root,
    Targets,
    Snapshot,
    Timestamp,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Root => "root",
            Role::Targets => "targets",
            Role::Snapshot => "snapshot",
            Role::Timestamp => "timestamp",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The keys of one role and how many of them must sign.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleKeys {
    pub keyids: Vec<KeyId>,
    pub threshold: u32,
}

/// `root.json`: which keys each role has, and its threshold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Root {
    #[serde(rename = "_type")]
    pub type_: String,
    pub spec_version: String,
    pub version: u64,
    /// RFC 3339 time in UTC, such as `2027-01-01T00:00:00Z`.
    pub expires: String,
    pub consistent_snapshot: bool,
    pub keys: BTreeMap<KeyId, PublicKey>,
    pub roles: BTreeMap<Role, RoleKeys>,
}

impl Root {
    /// Builds version 1 of a root that trusts `root_key` for the root role and
    /// `release_key` for the other three roles, each with threshold 1.
    pub fn new(root_key: &PublicKey, release_key: &PublicKey, expires: SystemTime) -> Result<Self, Error> {
        let root_id = root_key.key_id()?;
        let release_id = release_key.key_id()?;
        let mut keys = BTreeMap::new();
        keys.insert(root_id.clone(), root_key.clone());
        keys.insert(release_id.clone(), release_key.clone());
        let single = |id: &KeyId| RoleKeys { keyids: vec![id.clone()], threshold: 1 };
        // TODO: the snapshot and timestamp roles share the release key until
        // Tender publishes snapshot.json and timestamp.json with their own keys.
        let roles = BTreeMap::from([
            (Role::Root, single(&root_id)),
            (Role::Targets, single(&release_id)),
            (Role::Snapshot, single(&release_id)),
            (Role::Timestamp, single(&release_id)),
        ]);
        Ok(Self {
            type_: Role::Root.as_str().to_owned(),
            spec_version: SPEC_VERSION.to_owned(),
            version: 1,
            expires: format_time(expires),
            consistent_snapshot: false,
            keys,
            roles,
        })
    }

    pub fn role(&self, role: Role) -> Result<&RoleKeys, Error> {
        self.roles.get(&role).ok_or(Error::MissingRole { role })
    }
}

/// One target file: its length, hashes and Tender's own `custom` fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetFile {
    pub length: u64,
    pub hashes: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom: Option<serde_json::Value>,
}

/// `targets.json`, or a delegated targets role: the release manifests that
/// the fleet may install, and the roles trusted for other paths.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Targets {
    #[serde(rename = "_type")]
    pub type_: String,
    pub spec_version: String,
    pub version: u64,
    pub expires: String,
    pub targets: BTreeMap<String, TargetFile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegations: Option<Delegations>,
}

impl Targets {
    pub fn new(version: u64, expires: SystemTime) -> Self {
        Self {
            type_: Role::Targets.as_str().to_owned(),
            spec_version: SPEC_VERSION.to_owned(),
            version,
            expires: format_time(expires),
            targets: BTreeMap::new(),
            delegations: None,
        }
    }
}

/// Keys and roles that a targets role delegates to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delegations {
    pub keys: BTreeMap<KeyId, PublicKey>,
    pub roles: Vec<DelegatedRole>,
}

/// One delegated targets role, in the order the client searches them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DelegatedRole {
    pub name: String,
    pub keyids: Vec<KeyId>,
    pub threshold: u32,
    /// When set, a search that reaches this role stops after it.
    #[serde(default)]
    pub terminating: bool,
    /// Target path patterns; `*` matches within one path component.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paths: Option<Vec<String>>,
    /// Hex prefixes of the SHA-256 of the target path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_hash_prefixes: Option<Vec<String>>,
}

impl DelegatedRole {
    /// Returns the keys and threshold of this role as a [`RoleKeys`].
    pub fn role_keys(&self) -> RoleKeys {
        RoleKeys { keyids: self.keyids.clone(), threshold: self.threshold }
    }

    /// Returns true when this role is trusted for `target_path`.
    pub fn matches(&self, target_path: &str) -> bool {
        if let Some(patterns) = &self.paths {
            return patterns.iter().any(|pattern| path_matches(pattern, target_path));
        }
        if let Some(prefixes) = &self.path_hash_prefixes {
            use sha2::{Digest, Sha256};
            let digest = hex::encode(Sha256::digest(target_path.as_bytes()));
            return prefixes.iter().any(|prefix| digest.starts_with(prefix.as_str()));
        }
        false
    }
}

/// Matches a TUF delegation path pattern: shell-style `*`, `?` and `[…]`
/// where wildcards never match `/`, and the pattern must cover as many path
/// components as the target path has.
pub fn path_matches(pattern: &str, path: &str) -> bool {
    let pattern_parts: Vec<&str> = pattern.split('/').collect();
    let path_parts: Vec<&str> = path.split('/').collect();
    pattern_parts.len() == path_parts.len()
        && pattern_parts.iter().zip(&path_parts).all(|(p, t)| component_matches(p.as_bytes(), t.as_bytes()))
}

/// Shell-style matching of one path component.
fn component_matches(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => (0..=text.len()).any(|skip| component_matches(rest, &text[skip..])),
        Some((b'?', rest)) => !text.is_empty() && component_matches(rest, &text[1..]),
        Some((b'[', rest)) => {
            let Some(close) = rest.iter().position(|&b| b == b']') else {
                return text.first() == Some(&b'[') && component_matches(rest, &text[1..]);
            };
            let (class, after) = (&rest[..close], &rest[close + 1..]);
            let Some((&first, remaining_text)) = text.split_first() else { return false };
            let (negated, class) = match class.split_first() {
                Some((b'!', tail)) => (true, tail),
                _ => (false, class),
            };
            let mut matched = false;
            let mut index = 0;
            while index < class.len() {
                if index + 2 < class.len() && class[index + 1] == b'-' {
                    matched |= class[index] <= first && first <= class[index + 2];
                    index += 3;
                } else {
                    matched |= class[index] == first;
                    index += 1;
                }
            }
            matched != negated && component_matches(after, remaining_text)
        }
        Some((&literal, rest)) => text.first() == Some(&literal) && component_matches(rest, &text[1..]),
    }
}

/// A file that snapshot or timestamp metadata describes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaFile {
    pub version: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub length: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hashes: Option<BTreeMap<String, String>>,
}

/// `snapshot.json`: the version of every targets metadata file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    #[serde(rename = "_type")]
    pub type_: String,
    pub spec_version: String,
    pub version: u64,
    pub expires: String,
    /// Keyed by file name, such as `targets.json`.
    pub meta: BTreeMap<String, MetaFile>,
}

impl Snapshot {
    pub fn new(version: u64, expires: SystemTime) -> Self {
        Self {
            type_: Role::Snapshot.as_str().to_owned(),
            spec_version: SPEC_VERSION.to_owned(),
            version,
            expires: format_time(expires),
            meta: BTreeMap::new(),
        }
    }
}

/// `timestamp.json`: the current snapshot, re-signed often with a short expiry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timestamp {
    #[serde(rename = "_type")]
    pub type_: String,
    pub spec_version: String,
    pub version: u64,
    pub expires: String,
    /// Contains only `snapshot.json`.
    pub meta: BTreeMap<String, MetaFile>,
}

impl Timestamp {
    pub fn new(version: u64, expires: SystemTime) -> Self {
        Self {
            type_: Role::Timestamp.as_str().to_owned(),
            spec_version: SPEC_VERSION.to_owned(),
            version,
            expires: format_time(expires),
            meta: BTreeMap::new(),
        }
    }
}

/// Parses a TUF `expires` value (RFC 3339 in UTC).
pub fn parse_time(text: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339(text).ok()
}

/// Formats a time as TUF writes it: RFC 3339 in UTC with whole seconds.
pub fn format_time(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(time).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delegation_patterns_stay_in_one_component() {
        assert!(path_matches("releases/*.json", "releases/ecar-1.0.0.json"));
        assert!(!path_matches("releases/*", "releases/beta/ecar.json"));
        assert!(path_matches("*/*", "releases/ecar.json"));
        assert!(path_matches("file?.txt", "file1.txt"));
        assert!(path_matches("file[0-4].txt", "file3.txt"));
        assert!(!path_matches("file[!0-4].txt", "file3.txt"));
        assert!(!path_matches("*", "a/b"));
    }

    #[test]
    fn hash_prefix_delegation_matches_sha256_of_path() {
        use sha2::{Digest, Sha256};
        let digest = hex::encode(Sha256::digest(b"ecar/manifest.json"));
        let role = DelegatedRole {
            name: "bins".to_owned(),
            keyids: vec![],
            threshold: 1,
            terminating: false,
            paths: None,
            path_hash_prefixes: Some(vec![digest[..2].to_owned()]),
        };
        assert!(role.matches("ecar/manifest.json"));
    }
}
