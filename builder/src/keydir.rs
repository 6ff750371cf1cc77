//! The keys directory: `root.key`, `release.key`, `snapshot.key` and
//! `timestamp.key` (ed25519 key files, mode 0600) and the version 1
//! `root.json` that trusts them, one key per role.
//!
//! `tender release` reads `root.json` and the keys of the targets, snapshot
//! and timestamp roles, so the root key can stay offline once the root is
//! signed. Any of those keys can instead be an external signer (see
//! [`crate::signer`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tender_keys::{format_time, verify_root, KeyId, PrivateKey, Role, RoleKeys, Root, Signed, Verified, SPEC_VERSION};
use tender_updater::format::layout::ROOT_FILE;
use tender_updater::format::limits::MAX_ROOT_BYTES;

use crate::fsutil::write_atomic;
use crate::signer::{load_signers, KeySpec, Signer, SignerError};

pub const ROOT_KEY_FILE: &str = "root.key";
pub const RELEASE_KEY_FILE: &str = "release.key";
pub const SNAPSHOT_KEY_FILE: &str = "snapshot.key";
pub const TIMESTAMP_KEY_FILE: &str = "timestamp.key";

/// Failures to write or use a keys directory.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error("{} already exists; pass --force to replace the keys in {} (releases signed with the old keys will no longer verify against the new root)", path.display(), dir.display())]
    Exists { path: PathBuf, dir: PathBuf },

    #[error(transparent)]
    Key(#[from] tender_keys::Error),

    #[error(transparent)]
    Signer(#[from] SignerError),

    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: std::io::Error },

    #[error("cannot read {}: {source}; generate keys with `tender keys generate --out {}`", path.display(), dir.display())]
    Read { path: PathBuf, dir: PathBuf, source: std::io::Error },

    #[error("{} is {len} bytes, more than the {MAX_ROOT_BYTES} bytes a robot reads; create a smaller root", path.display())]
    RootTooLarge { path: PathBuf, len: u64 },

    #[error("{} is not a valid signed root: {source}", path.display())]
    InvalidRoot { path: PathBuf, source: tender_keys::Error },

    #[error("the expiry {expires:?} is too far in the future; use a duration such as 365d")]
    Expiry { expires: Duration },
}

/// Key ids of a freshly generated keys directory.
#[derive(Debug, Clone)]
pub struct GeneratedKeys {
    pub root_key_id: KeyId,
    pub release_key_id: KeyId,
    pub snapshot_key_id: KeyId,
    pub timestamp_key_id: KeyId,
    pub root_json: PathBuf,
}

/// Generates one key per role in `dir` and a version 1 `root.json` signed
/// by the root key that expires `expires_in` from now. Nothing is written
/// when any of the files exists and `force` is not set.
pub fn generate_keys(dir: &Path, force: bool, expires_in: Duration) -> Result<GeneratedKeys, KeysError> {
    let key_files = [ROOT_KEY_FILE, RELEASE_KEY_FILE, SNAPSHOT_KEY_FILE, TIMESTAMP_KEY_FILE].map(|name| dir.join(name));
    let root_json = dir.join(ROOT_FILE);
    if !force {
        for path in key_files.iter().chain([&root_json]) {
            if path.exists() {
                return Err(KeysError::Exists { path: path.clone(), dir: dir.to_owned() });
            }
        }
    }
    let expires = SystemTime::now().checked_add(expires_in).ok_or(KeysError::Expiry { expires: expires_in })?;
    std::fs::create_dir_all(dir).map_err(|source| KeysError::Write { path: dir.to_owned(), source })?;

    let keys = [PrivateKey::generate(), PrivateKey::generate(), PrivateKey::generate(), PrivateKey::generate()];
    let [root_key, release_key, snapshot_key, timestamp_key] = &keys;
    let root = initial_root(root_key, release_key, snapshot_key, timestamp_key, expires)?;
    let signed = Signed::sign(root, &[root_key])?.to_canonical_json()?;
    for (key, path) in keys.iter().zip(&key_files) {
        key.write_new(path, force)?;
    }
    write_atomic(&root_json, &signed).map_err(|source| KeysError::Write { path: root_json.clone(), source })?;
    Ok(GeneratedKeys {
        root_key_id: root_key.key_id()?,
        release_key_id: release_key.key_id()?,
        snapshot_key_id: snapshot_key.key_id()?,
        timestamp_key_id: timestamp_key.key_id()?,
        root_json,
    })
}

/// Builds version 1 of a root with one key and threshold 1 per role and
/// consistent snapshots.
fn initial_root(
    root_key: &PrivateKey,
    release_key: &PrivateKey,
    snapshot_key: &PrivateKey,
    timestamp_key: &PrivateKey,
    expires: SystemTime,
) -> Result<Root, KeysError> {
    let mut keys = BTreeMap::new();
    let mut roles = BTreeMap::new();
    for (role, key) in [
        (Role::Root, root_key),
        (Role::Targets, release_key),
        (Role::Snapshot, snapshot_key),
        (Role::Timestamp, timestamp_key),
    ] {
        let keyid = key.key_id()?;
        keys.insert(keyid.clone(), key.public());
        roles.insert(role, RoleKeys { keyids: vec![keyid], threshold: 1 });
    }
    Ok(Root {
        type_: Role::Root.as_str().to_owned(),
        spec_version: SPEC_VERSION.to_owned(),
        version: 1,
        expires: format_time(expires),
        consistent_snapshot: true,
        keys,
        roles,
    })
}

/// `root.json` of a keys directory, as stored and verified.
#[derive(Debug)]
pub struct KeysRoot {
    pub bytes: Vec<u8>,
    pub root: Verified<Root>,
    pub path: PathBuf,
}

/// Loads `root.json` from `dir` and checks that it is self-signed.
pub fn load_keys_root(dir: &Path) -> Result<KeysRoot, KeysError> {
    let path = dir.join(ROOT_FILE);
    let read_error = |source| KeysError::Read { path: path.clone(), dir: dir.to_owned(), source };
    let len = std::fs::metadata(&path).map_err(read_error)?.len();
    if len > MAX_ROOT_BYTES {
        return Err(KeysError::RootTooLarge { path, len });
    }
    let bytes = std::fs::read(&path).map_err(read_error)?;
    let what = path.display().to_string();
    let root = verify_root(&bytes, &what).map_err(|source| KeysError::InvalidRoot { path: path.clone(), source })?;
    Ok(KeysRoot { bytes, root, path })
}

/// Keys chosen on the command line for each role of a release; an empty
/// list takes the role's key file from the keys directory.
#[derive(Debug, Clone, Default)]
pub struct SigningSpecs {
    pub targets: Vec<KeySpec>,
    pub snapshot: Vec<KeySpec>,
    pub timestamp: Vec<KeySpec>,
}

/// Loaded signers of each role a release signs.
#[derive(Debug)]
pub struct RoleSigners {
    pub targets: Vec<Signer>,
    pub snapshot: Vec<Signer>,
    pub timestamp: Vec<Signer>,
}

/// Loads the signers of a release. Defaults come from `dir`: `release.key`
/// for targets, `snapshot.key` and `timestamp.key`; a keys directory made
/// before those two existed signs snapshot and timestamp with the targets
/// keys, which its root lists for them. A key file that `root` does not
/// list for its role is rejected here, before anything is built.
pub fn load_role_signers(dir: &Path, specs: &SigningSpecs, root: &Root) -> Result<RoleSigners, KeysError> {
    let targets = if specs.targets.is_empty() { vec![KeySpec::File(dir.join(RELEASE_KEY_FILE))] } else { specs.targets.clone() };
    let default_for = |chosen: &[KeySpec], file: &str| {
        if !chosen.is_empty() {
            return chosen.to_vec();
        }
        let path = dir.join(file);
        if path.exists() {
            vec![KeySpec::File(path)]
        } else {
            targets.clone()
        }
    };
    let snapshot = default_for(&specs.snapshot, SNAPSHOT_KEY_FILE);
    let timestamp = default_for(&specs.timestamp, TIMESTAMP_KEY_FILE);
    let signers = RoleSigners {
        targets: load_signers(&targets)?,
        snapshot: load_signers(&snapshot)?,
        timestamp: load_signers(&timestamp)?,
    };
    for (role, list) in [(Role::Targets, &signers.targets), (Role::Snapshot, &signers.snapshot), (Role::Timestamp, &signers.timestamp)] {
        check_role_membership(list, root, role)?;
    }
    Ok(signers)
}

/// Checks that every key file among `signers` is listed for `role`.
pub fn check_role_membership(signers: &[Signer], root: &Root, role: Role) -> Result<(), KeysError> {
    let role_keys = root.role(role)?;
    for signer in signers {
        if let Some(keyid) = signer.known_key_id() {
            if !role_keys.keyids.contains(keyid) {
                return Err(KeysError::Signer(SignerError::NotInRole {
                    keyid: keyid.clone(),
                    signer: signer.describe(),
                    role: role.to_string(),
                    candidates: role_keys.keyids.iter().map(|id| id.short().to_owned()).collect::<Vec<_>>().join(", "),
                }));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);

    #[test]
    fn generated_keys_load_for_signing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let generated = generate_keys(dir.path(), false, YEAR).expect("generate");
        let root = load_keys_root(dir.path()).expect("root");
        assert!(root.root.consistent_snapshot);
        let signers = load_role_signers(dir.path(), &SigningSpecs::default(), &root.root).expect("load");
        assert_eq!(signers.targets[0].known_key_id(), Some(&generated.release_key_id));
        assert_eq!(signers.snapshot[0].known_key_id(), Some(&generated.snapshot_key_id));
        assert_eq!(signers.timestamp[0].known_key_id(), Some(&generated.timestamp_key_id));
        for role in [Role::Root, Role::Targets, Role::Snapshot, Role::Timestamp] {
            assert_eq!(root.root.role(role).expect("role").keyids.len(), 1, "{role}");
        }
        for file in [ROOT_KEY_FILE, RELEASE_KEY_FILE, SNAPSHOT_KEY_FILE, TIMESTAMP_KEY_FILE] {
            let mode = std::fs::metadata(dir.path().join(file)).expect("stat").permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{file}");
        }
    }

    #[test]
    fn existing_keys_are_kept_without_force() {
        let dir = tempfile::tempdir().expect("tempdir");
        generate_keys(dir.path(), false, YEAR).expect("generate");
        let before = std::fs::read(dir.path().join(ROOT_KEY_FILE)).expect("read");
        let err = generate_keys(dir.path(), false, YEAR).expect_err("exists");
        assert!(matches!(err, KeysError::Exists { .. }), "{err}");
        assert_eq!(std::fs::read(dir.path().join(ROOT_KEY_FILE)).expect("read"), before);
        generate_keys(dir.path(), true, YEAR).expect("forced");
        assert_ne!(std::fs::read(dir.path().join(ROOT_KEY_FILE)).expect("read"), before);
    }

    #[test]
    fn release_key_of_other_root_is_rejected() {
        let first = tempfile::tempdir().expect("tempdir");
        let second = tempfile::tempdir().expect("tempdir");
        generate_keys(first.path(), false, YEAR).expect("generate");
        generate_keys(second.path(), false, YEAR).expect("generate");
        std::fs::copy(second.path().join(RELEASE_KEY_FILE), first.path().join(RELEASE_KEY_FILE)).expect("copy");
        let root = load_keys_root(first.path()).expect("root");
        let err = load_role_signers(first.path(), &SigningSpecs::default(), &root.root).expect_err("foreign key");
        assert!(matches!(err, KeysError::Signer(SignerError::NotInRole { .. })), "{err}");
    }
}
