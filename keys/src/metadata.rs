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

/// `targets.json`: the release manifests that the fleet may install.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Targets {
    #[serde(rename = "_type")]
    pub type_: String,
    pub spec_version: String,
    pub version: u64,
    pub expires: String,
    pub targets: BTreeMap<String, TargetFile>,
}

impl Targets {
    pub fn new(version: u64, expires: SystemTime) -> Self {
        Self {
            type_: Role::Targets.as_str().to_owned(),
            spec_version: SPEC_VERSION.to_owned(),
            version,
            expires: format_time(expires),
            targets: BTreeMap::new(),
        }
    }
}

/// Formats a time as TUF writes it: RFC 3339 in UTC with whole seconds.
pub fn format_time(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(time).to_string()
}
