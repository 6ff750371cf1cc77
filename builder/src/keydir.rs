//! The keys directory: `root.key` and `release.key` (ed25519 key files, mode
//! 0600) and the `root.json` they make.
//!
//! `tender release` reads only `root.json` and `release.key`, so the root
//! key can stay offline once the root is signed.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tender_keys::{verify_root, KeyId, PrivateKey, Role, Root, Signed, Verified};
use tender_updater::format::layout::ROOT_FILE;
use tender_updater::format::limits::MAX_ROOT_BYTES;

use crate::fsutil::write_atomic;

pub const ROOT_KEY_FILE: &str = "root.key";
pub const RELEASE_KEY_FILE: &str = "release.key";

/// Failures to write or use a keys directory.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error("{} already exists; pass --force to replace the keys in {} (releases signed with the old keys will no longer verify against the new root)", path.display(), dir.display())]
    Exists { path: PathBuf, dir: PathBuf },

    #[error(transparent)]
    Key(#[from] tender_keys::Error),

    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: std::io::Error },

    #[error("cannot read {}: {source}; generate keys with `tender keys generate --out {}`", path.display(), dir.display())]
    Read { path: PathBuf, dir: PathBuf, source: std::io::Error },

    #[error("{} is {len} bytes, more than the {MAX_ROOT_BYTES} bytes a robot reads; create a smaller root", path.display())]
    RootTooLarge { path: PathBuf, len: u64 },

    #[error("{} is not a valid signed root: {source}", path.display())]
    InvalidRoot { path: PathBuf, source: tender_keys::Error },

    #[error("release key {keyid} in {} is not a targets key of {}; use the release key that root.json lists, or generate a new root", key.display(), root.display())]
    NotTargetsKey { keyid: KeyId, key: PathBuf, root: PathBuf },

    #[error("the expiry {expires:?} is too far in the future; use a duration such as 365d")]
    Expiry { expires: Duration },
}

/// Key ids of a freshly generated keys directory.
#[derive(Debug, Clone)]
pub struct GeneratedKeys {
    pub root_key_id: KeyId,
    pub release_key_id: KeyId,
    pub root_json: PathBuf,
}

/// Generates a root key and a release key in `dir` and a version 1
/// `root.json` signed by the root key that expires `expires_in` from now.
/// Nothing is written when any of the three files exists and `force` is not
/// set.
pub fn generate_keys(dir: &Path, force: bool, expires_in: Duration) -> Result<GeneratedKeys, KeysError> {
    let root_key_path = dir.join(ROOT_KEY_FILE);
    let release_key_path = dir.join(RELEASE_KEY_FILE);
    let root_json = dir.join(ROOT_FILE);
    if !force {
        for path in [&root_key_path, &release_key_path, &root_json] {
            if path.exists() {
                return Err(KeysError::Exists { path: path.clone(), dir: dir.to_owned() });
            }
        }
    }
    let expires = SystemTime::now().checked_add(expires_in).ok_or(KeysError::Expiry { expires: expires_in })?;
    std::fs::create_dir_all(dir).map_err(|source| KeysError::Write { path: dir.to_owned(), source })?;

    let root_key = PrivateKey::generate();
    let release_key = PrivateKey::generate();
    let root = Root::new(&root_key.public(), &release_key.public(), expires)?;
    let signed = Signed::sign(root, &[&root_key])?.to_canonical_json()?;
    root_key.write_new(&root_key_path, force)?;
    release_key.write_new(&release_key_path, force)?;
    write_atomic(&root_json, &signed).map_err(|source| KeysError::Write { path: root_json.clone(), source })?;
    Ok(GeneratedKeys { root_key_id: root_key.key_id()?, release_key_id: release_key.key_id()?, root_json })
}

/// Keys and root that `tender release` signs with.
#[derive(Debug)]
pub struct SigningKeys {
    /// `root.json` as stored, copied byte for byte into releases.
    pub root_json: Vec<u8>,
    pub root: Verified<Root>,
    pub release_key: PrivateKey,
    pub release_key_id: KeyId,
}

/// Loads `root.json` and `release.key` from `dir` and checks that the root
/// is self-signed and lists the release key for the targets role.
pub fn load_signing_keys(dir: &Path) -> Result<SigningKeys, KeysError> {
    let root_path = dir.join(ROOT_FILE);
    let key_path = dir.join(RELEASE_KEY_FILE);
    let read_error = |source| KeysError::Read { path: root_path.clone(), dir: dir.to_owned(), source };
    let len = std::fs::metadata(&root_path).map_err(read_error)?.len();
    if len > MAX_ROOT_BYTES {
        return Err(KeysError::RootTooLarge { path: root_path, len });
    }
    let root_json = std::fs::read(&root_path).map_err(read_error)?;
    let what = root_path.display().to_string();
    let root = verify_root(&root_json, &what).map_err(|source| KeysError::InvalidRoot { path: root_path.clone(), source })?;
    let release_key = PrivateKey::load(&key_path)?;
    let release_key_id = release_key.key_id()?;
    if !root.role(Role::Targets)?.keyids.contains(&release_key_id) {
        return Err(KeysError::NotTargetsKey { keyid: release_key_id, key: key_path, root: root_path });
    }
    Ok(SigningKeys { root_json, root, release_key, release_key_id })
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
        let keys = load_signing_keys(dir.path()).expect("load");
        assert_eq!(keys.release_key_id, generated.release_key_id);
        for file in [ROOT_KEY_FILE, RELEASE_KEY_FILE] {
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
        let err = load_signing_keys(first.path()).expect_err("foreign key");
        assert!(matches!(err, KeysError::NotTargetsKey { .. }), "{err}");
    }
}
