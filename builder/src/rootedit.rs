//! Drafts of the next root version: key and threshold changes, signatures
//! collected from one or several people, and publication once both the
//! previous root's threshold and the draft's own threshold signed it.
//!
//! The draft lives next to the repository directory (`OUT/root-draft.json`
//! for the repository `OUT/repo`), so a web server that serves the
//! repository never serves an unfinished root. Every change to the draft's
//! content removes its signatures, since they no longer cover it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use tender_keys::{format_time, to_canonical_json, KeyId, PublicKey, Role, RoleKeys, Root, Signature, Signed, Verified};

use crate::fsutil::write_atomic;
use crate::publish::{read_optional, PublishError, Repository};
use crate::rootchain::{load_root_chain, publish_root, RootChain, RootChainError};
use crate::signer::{Signer, SignerError};

/// File name of the draft root, in the parent directory of the repository.
pub const DRAFT_FILE: &str = "root-draft.json";

/// Failures to edit, sign or publish a draft root.
#[derive(Debug, thiserror::Error)]
pub enum RootEditError {
    #[error(transparent)]
    Publish(#[from] PublishError),

    #[error(transparent)]
    Chain(#[from] RootChainError),

    #[error(transparent)]
    Signer(#[from] SignerError),

    #[error(transparent)]
    Key(#[from] tender_keys::Error),

    #[error("{} has no metadata/1.root.json; publish a first release with `tender release` before changing the root", repo.display())]
    NoRepository { repo: PathBuf },

    #[error("{} is not a draft root: {source}; delete it to start a new draft", path.display())]
    InvalidDraft { path: PathBuf, source: serde_json::Error },

    #[error("{} is a draft of root version {draft}, but the repository already has version {published}; delete the draft and start again", path.display())]
    StaleDraft { path: PathBuf, draft: u64, published: u64 },

    #[error("{} is not a public or private ed25519 key file: {reason}", path.display())]
    InvalidKeyFile { path: PathBuf, reason: String },

    #[error("key {keyid} is not a {role} key of the draft root; its {role} keys are {listed}")]
    KeyNotInRole { keyid: String, role: Role, listed: String },

    #[error("revoking {keyid} would leave {role} with {left} key(s), below its threshold {threshold}; lower the threshold first with `tender repo threshold`")]
    BelowThreshold { keyid: KeyId, role: Role, left: usize, threshold: u32 },

    #[error("threshold {requested} for {role} is invalid: it must be between 1 and the {keys} key(s) the role has")]
    InvalidThreshold { role: Role, requested: u32, keys: usize },

    #[error("signature {} by key {keyid} does not verify over the draft root version {version}; it was made for other content or with another key", path.display())]
    BadSignature { path: PathBuf, keyid: KeyId, version: u64 },

    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },

    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: std::io::Error },

    #[error("cannot encode {what}: {source}")]
    Encode { what: String, source: serde_json::Error },
}

/// Returns the draft path of the repository `repo`.
pub fn draft_path(repo: &Path) -> PathBuf {
    let absolute = std::path::absolute(repo).unwrap_or_else(|_| repo.to_owned());
    match absolute.parent() {
        Some(parent) => parent.join(DRAFT_FILE),
        None => absolute.join(DRAFT_FILE),
    }
}

/// A repository with its verified root chain and the draft of the next root.
#[derive(Debug)]
pub struct RootEditor {
    pub repo: Repository,
    pub chain: RootChain,
    pub draft_path: PathBuf,
    pub draft: Signed<Root>,
}

/// How far the draft is from publication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DraftStatus {
    pub version: u64,
    /// Valid signatures by root keys of the published (previous) root, and its threshold.
    pub previous_signed: Vec<KeyId>,
    pub previous_threshold: u32,
    /// Valid signatures by root keys of the draft itself, and its threshold.
    pub own_signed: Vec<KeyId>,
    pub own_threshold: u32,
}

impl DraftStatus {
    pub fn complete(&self) -> bool {
        self.previous_signed.len() >= self.previous_threshold.max(1) as usize
            && self.own_signed.len() >= self.own_threshold.max(1) as usize
    }
}

impl RootEditor {
    /// Opens the repository and its draft, or starts a draft of the next
    /// version that expires at `expires`.
    pub fn open(repo_dir: &Path, expires: SystemTime) -> Result<Self, RootEditError> {
        let repo = Repository::new(repo_dir);
        let chain = load_root_chain(&repo)?.ok_or_else(|| RootEditError::NoRepository { repo: repo_dir.to_owned() })?;
        let draft_path = draft_path(repo_dir);
        let published = chain.latest_version();
        let draft = match read_optional(&draft_path)? {
            Some(bytes) => {
                let draft: Signed<Root> = serde_json::from_slice(&bytes)
                    .map_err(|source| RootEditError::InvalidDraft { path: draft_path.clone(), source })?;
                if draft.signed.version != published + 1 {
                    return Err(RootEditError::StaleDraft { path: draft_path, draft: draft.signed.version, published });
                }
                draft
            }
            None => {
                let mut next: Root = (**chain.latest()).clone();
                next.version = published + 1;
                next.expires = format_time(expires);
                Signed { signed: next, signatures: Vec::new() }
            }
        };
        Ok(Self { repo, chain, draft_path, draft })
    }

    pub fn previous(&self) -> &Verified<Root> {
        self.chain.latest()
    }

    /// Changes the draft in memory and removes its signatures. Returns how
    /// many signatures were removed.
    pub fn edit(&mut self, change: impl FnOnce(&mut Root) -> Result<(), RootEditError>) -> Result<usize, RootEditError> {
        let before = self.draft.signed.clone();
        change(&mut self.draft.signed)?;
        if self.draft.signed == before {
            return Ok(0);
        }
        let removed = self.draft.signatures.len();
        self.draft.signatures.clear();
        Ok(removed)
    }

    /// Public keys that may sign the draft: root keys of the previous root
    /// and of the draft.
    fn signing_keys(&self) -> Result<(BTreeMap<KeyId, PublicKey>, Vec<KeyId>), RootEditError> {
        let mut keys = self.previous().keys.clone();
        keys.extend(self.draft.signed.keys.clone());
        let mut keyids = self.previous().role(Role::Root)?.keyids.clone();
        keyids.extend(self.draft.signed.role(Role::Root)?.keyids.iter().cloned());
        keyids.sort();
        keyids.dedup();
        Ok((keys, keyids))
    }

    /// Signs the draft with each signer; each must hold a root key of the
    /// previous root or of the draft.
    pub fn sign(&mut self, signers: &[Signer]) -> Result<(), RootEditError> {
        let canonical = to_canonical_json(&self.draft.signed)?;
        let (keys, keyids) = self.signing_keys()?;
        let what = format!("draft root version {}", self.draft.signed.version);
        for signer in signers {
            let signature = signer.sign_for_role(&canonical, &what, "root", &keys, &keyids)?;
            self.insert_signature(signature);
        }
        Ok(())
    }

    /// Adds a detached signature read from `path` after checking it.
    pub fn add_signature(&mut self, signature: Signature, path: &Path) -> Result<(), RootEditError> {
        let canonical = to_canonical_json(&self.draft.signed)?;
        let (keys, keyids) = self.signing_keys()?;
        let valid = keyids.contains(&signature.keyid)
            && keys.get(&signature.keyid).is_some_and(|key| key.verify(&canonical, &signature.sig));
        if !valid {
            return Err(RootEditError::BadSignature {
                path: path.to_owned(),
                keyid: signature.keyid,
                version: self.draft.signed.version,
            });
        }
        self.insert_signature(signature);
        Ok(())
    }

    fn insert_signature(&mut self, signature: Signature) {
        self.draft.signatures.retain(|existing| existing.keyid != signature.keyid);
        self.draft.signatures.push(signature);
        self.draft.signatures.sort_by(|a, b| a.keyid.cmp(&b.keyid));
    }

    /// Counts the valid signatures of the draft for both thresholds.
    pub fn status(&self) -> Result<DraftStatus, RootEditError> {
        let canonical = to_canonical_json(&self.draft.signed)?;
        let valid = |keys: &BTreeMap<KeyId, PublicKey>, role: &RoleKeys| -> Vec<KeyId> {
            self.draft
                .signatures
                .iter()
                .filter(|s| role.keyids.contains(&s.keyid))
                .filter(|s| keys.get(&s.keyid).is_some_and(|key| key.verify(&canonical, &s.sig)))
                .map(|s| s.keyid.clone())
                .collect()
        };
        let previous_role = self.previous().role(Role::Root)?;
        let own_role = self.draft.signed.role(Role::Root)?;
        Ok(DraftStatus {
            version: self.draft.signed.version,
            previous_signed: valid(&self.previous().keys, previous_role),
            previous_threshold: previous_role.threshold,
            own_signed: valid(&self.draft.signed.keys, own_role),
            own_threshold: own_role.threshold,
        })
    }

    /// Saves the draft; nothing is published.
    pub fn save(&self) -> Result<(), RootEditError> {
        let mut bytes = serde_json::to_vec_pretty(&self.draft)
            .map_err(|source| RootEditError::Encode { what: self.draft_path.display().to_string(), source })?;
        bytes.push(b'\n');
        write_atomic(&self.draft_path, &bytes).map_err(|source| RootEditError::Write { path: self.draft_path.clone(), source })
    }

    /// Publishes the draft when both thresholds are met and removes the
    /// draft file; otherwise saves it. Returns the published root, if any.
    pub fn publish_if_complete(&self) -> Result<Option<Verified<Root>>, RootEditError> {
        if !self.status()?.complete() {
            self.save()?;
            return Ok(None);
        }
        let bytes = self.draft.to_canonical_json()?;
        let what = format!("draft root version {} ({})", self.draft.signed.version, self.draft_path.display());
        let root = publish_root(&self.repo, Some(&self.chain), &bytes, &what)?;
        match std::fs::remove_file(&self.draft_path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(RootEditError::Write { path: self.draft_path.clone(), source }),
        }
        Ok(Some(root))
    }
}

/// Reads a public key from a public key file (`tender keys new` writes
/// FILE.pub) or from a private key file, whose secret part is ignored.
pub fn read_public_key(path: &Path) -> Result<PublicKey, RootEditError> {
    let bytes = read_optional(path)?.ok_or_else(|| RootEditError::Read {
        path: path.to_owned(),
        source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
    })?;
    let key: PublicKey = serde_json::from_slice(&bytes)
        .map_err(|e| RootEditError::InvalidKeyFile { path: path.to_owned(), reason: e.to_string() })?;
    if !key.is_valid() {
        return Err(RootEditError::InvalidKeyFile {
            path: path.to_owned(),
            reason: "keytype and scheme must be ed25519 with a 32-byte public key".to_owned(),
        });
    }
    Ok(key)
}

/// Adds `key` to `role` (once) and returns its key id.
pub fn add_key(root: &mut Root, role: Role, key: PublicKey) -> Result<KeyId, RootEditError> {
    let keyid = key.key_id()?;
    root.keys.insert(keyid.clone(), key);
    let keys = root.roles.entry(role).or_insert(RoleKeys { keyids: Vec::new(), threshold: 1 });
    if !keys.keyids.contains(&keyid) {
        keys.keyids.push(keyid.clone());
        keys.keyids.sort();
    }
    Ok(keyid)
}

/// Removes the key whose id is or starts with `keyid` from `role`, and
/// from the key list when no role uses it any more. Returns its full id.
pub fn revoke_key(root: &mut Root, role: Role, keyid: &str) -> Result<KeyId, RootEditError> {
    let role_keys = root.role(role)?.clone();
    let listed = || role_keys.keyids.iter().map(|id| id.short().to_owned()).collect::<Vec<_>>().join(", ");
    let matching: Vec<&KeyId> = role_keys.keyids.iter().filter(|id| id.as_str().starts_with(keyid)).collect();
    let [found] = matching.as_slice() else {
        return Err(RootEditError::KeyNotInRole { keyid: keyid.to_owned(), role, listed: listed() });
    };
    let found = (*found).clone();
    let left = role_keys.keyids.len() - 1;
    if left < role_keys.threshold.max(1) as usize {
        return Err(RootEditError::BelowThreshold { keyid: found, role, left, threshold: role_keys.threshold });
    }
    if let Some(keys) = root.roles.get_mut(&role) {
        keys.keyids.retain(|id| *id != found);
    }
    if !root.roles.values().any(|keys| keys.keyids.contains(&found)) {
        root.keys.remove(&found);
    }
    Ok(found)
}

/// Sets the threshold of `role`.
pub fn set_threshold(root: &mut Root, role: Role, threshold: u32) -> Result<(), RootEditError> {
    let keys = root.roles.get_mut(&role).ok_or(tender_keys::Error::MissingRole { role })?;
    if threshold == 0 || threshold as usize > keys.keyids.len() {
        return Err(RootEditError::InvalidThreshold { role, requested: threshold, keys: keys.keyids.len() });
    }
    keys.threshold = threshold;
    Ok(())
}

/// Replaces the keys of `role` with `new_keys`, keeping the threshold when
/// the new keys can still meet it and lowering it otherwise.
pub fn replace_role_keys(root: &mut Root, role: Role, new_keys: Vec<PublicKey>) -> Result<Vec<KeyId>, RootEditError> {
    let old = root.role(role)?.clone();
    let mut ids = Vec::new();
    for key in new_keys {
        let keyid = key.key_id()?;
        root.keys.insert(keyid.clone(), key);
        ids.push(keyid);
    }
    ids.sort();
    ids.dedup();
    let threshold = old.threshold.clamp(1, ids.len().max(1) as u32);
    root.roles.insert(role, RoleKeys { keyids: ids.clone(), threshold });
    for keyid in &old.keyids {
        if !root.roles.values().any(|keys| keys.keyids.contains(keyid)) {
            root.keys.remove(keyid);
        }
    }
    Ok(ids)
}

/// Roles whose keys or threshold differ between two roots.
pub fn changed_roles(previous: &Root, next: &Root) -> Vec<Role> {
    [Role::Root, Role::Targets, Role::Snapshot, Role::Timestamp]
        .into_iter()
        .filter(|role| previous.roles.get(role) != next.roles.get(role))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use tender_keys::PrivateKey;

    use super::*;

    fn root() -> (PrivateKey, Root) {
        let root_key = PrivateKey::generate();
        let release_key = PrivateKey::generate();
        let root = Root::new(&root_key.public(), &release_key.public(), UNIX_EPOCH + Duration::from_secs(4_000_000_000))
            .expect("root");
        (root_key, root)
    }

    #[test]
    fn added_key_can_be_revoked_by_prefix() {
        let (_, mut root) = root();
        let extra = PrivateKey::generate();
        let keyid = add_key(&mut root, Role::Targets, extra.public()).expect("add");
        assert_eq!(root.role(Role::Targets).expect("role").keyids.len(), 2);
        let revoked = revoke_key(&mut root, Role::Targets, &keyid.as_str()[..12]).expect("revoke");
        assert_eq!(revoked, keyid);
        assert!(!root.keys.contains_key(&keyid), "unused key kept");
    }

    #[test]
    fn revoke_below_threshold_is_rejected() {
        let (_, mut root) = root();
        let only = root.role(Role::Root).expect("role").keyids[0].clone();
        let err = revoke_key(&mut root, Role::Root, only.as_str()).expect_err("last key");
        assert!(matches!(err, RootEditError::BelowThreshold { .. }), "{err}");
    }

    #[test]
    fn threshold_above_key_count_is_rejected() {
        let (_, mut root) = root();
        let err = set_threshold(&mut root, Role::Targets, 2).expect_err("one key");
        assert!(matches!(err, RootEditError::InvalidThreshold { keys: 1, .. }), "{err}");
        add_key(&mut root, Role::Targets, PrivateKey::generate().public()).expect("add");
        set_threshold(&mut root, Role::Targets, 2).expect("two keys");
        assert_eq!(changed_roles(&root, &root), Vec::<Role>::new());
    }

    #[test]
    fn replaced_root_keys_drop_unused_key() {
        let (old_key, mut root) = root();
        let new_key = PrivateKey::generate();
        replace_role_keys(&mut root, Role::Root, vec![new_key.public()]).expect("replace");
        assert!(!root.keys.contains_key(&old_key.key_id().expect("id")));
        assert_eq!(root.role(Role::Root).expect("role").keyids, vec![new_key.key_id().expect("id")]);
    }
}
