//! ed25519 keys in the TUF key format, and key files on disk.

use std::fmt;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use ed25519_dalek::{Signer, Verifier};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{to_canonical_json, Error};

const KEYTYPE_ED25519: &str = "ed25519";

/// TUF key id: the hex SHA-256 of the canonical JSON of the public key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct KeyId(String);

impl KeyId {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Returns the first 8 hex digits, enough to tell keys apart in messages.
    pub fn short(&self) -> &str {
        self.0.get(..8).unwrap_or(&self.0)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct PublicKeyValue {
    public: String,
}

/// A public key as root.json lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicKey {
    keytype: String,
    scheme: String,
    keyval: PublicKeyValue,
}

impl PublicKey {
    fn from_dalek(key: &ed25519_dalek::VerifyingKey) -> Self {
        Self {
            keytype: KEYTYPE_ED25519.to_owned(),
            scheme: KEYTYPE_ED25519.to_owned(),
            keyval: PublicKeyValue { public: hex::encode(key.as_bytes()) },
        }
    }

    pub fn key_id(&self) -> Result<KeyId, Error> {
        let canonical = to_canonical_json(self)?;
        Ok(KeyId(hex::encode(Sha256::digest(canonical))))
    }

    /// Returns the dalek key, or `None` when this is not a well-formed ed25519 key.
    fn to_dalek(&self) -> Option<ed25519_dalek::VerifyingKey> {
        if self.keytype != KEYTYPE_ED25519 || self.scheme != KEYTYPE_ED25519 {
            return None;
        }
        let bytes: [u8; 32] = hex::decode(&self.keyval.public).ok()?.try_into().ok()?;
        ed25519_dalek::VerifyingKey::from_bytes(&bytes).ok()
    }

    pub fn is_valid(&self) -> bool {
        self.to_dalek().is_some()
    }

    /// Checks an ed25519 signature given as hex over `message`.
    pub fn verify(&self, message: &[u8], signature_hex: &str) -> bool {
        let Some(key) = self.to_dalek() else {
            return false;
        };
        let Some(bytes) = hex::decode(signature_hex).ok().and_then(|b| <[u8; 64]>::try_from(b).ok())
        else {
            return false;
        };
        key.verify(message, &ed25519_dalek::Signature::from_bytes(&bytes)).is_ok()
    }
}

#[derive(Serialize, Deserialize)]
struct PrivateKeyValue {
    public: String,
    private: String,
}

#[derive(Serialize, Deserialize)]
struct PrivateKeyFile {
    keytype: String,
    scheme: String,
    keyval: PrivateKeyValue,
}

/// An ed25519 signing key. Its `Debug` output never shows the secret.
pub struct PrivateKey {
    inner: ed25519_dalek::SigningKey,
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateKey").field("public", &self.public().keyval.public).finish()
    }
}

impl PrivateKey {
    pub fn generate() -> Self {
        Self { inner: ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng) }
    }

    pub fn public(&self) -> PublicKey {
        PublicKey::from_dalek(&self.inner.verifying_key())
    }

    pub fn key_id(&self) -> Result<KeyId, Error> {
        self.public().key_id()
    }

    /// Signs `message` and returns the signature as hex.
    pub fn sign(&self, message: &[u8]) -> String {
        hex::encode(self.inner.sign(message).to_bytes())
    }

    /// Loads a key file written by [`PrivateKey::write_new`].
    pub fn load(path: &Path) -> Result<Self, Error> {
        let invalid = |reason: &str| Error::InvalidKeyFile { path: path.to_owned(), reason: reason.to_owned() };
        let text = std::fs::read_to_string(path)
            .map_err(|source| Error::ReadKey { path: path.to_owned(), source })?;
        let file: PrivateKeyFile = serde_json::from_str(&text).map_err(|e| invalid(&e.to_string()))?;
        if file.keytype != KEYTYPE_ED25519 || file.scheme != KEYTYPE_ED25519 {
            return Err(invalid("keytype and scheme must both be \"ed25519\""));
        }
        let secret: [u8; 32] = hex::decode(&file.keyval.private)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| invalid("the private key must be 64 hex digits"))?;
        let key = Self { inner: ed25519_dalek::SigningKey::from_bytes(&secret) };
        if key.public().keyval.public != file.keyval.public {
            return Err(invalid("the public key does not belong to the private key"));
        }
        Ok(key)
    }

    /// Writes the key to a new file with mode 0600. An existing file is kept
    /// unless `overwrite` is set.
    pub fn write_new(&self, path: &Path, overwrite: bool) -> Result<(), Error> {
        let file = PrivateKeyFile {
            keytype: KEYTYPE_ED25519.to_owned(),
            scheme: KEYTYPE_ED25519.to_owned(),
            keyval: PrivateKeyValue {
                public: self.public().keyval.public,
                private: hex::encode(self.inner.to_bytes()),
            },
        };
        let mut text = serde_json::to_string_pretty(&file)
            .map_err(|source| Error::Canonical { source })?;
        text.push('\n');
        let mut options = OpenOptions::new();
        options.write(true).mode(0o600);
        if overwrite {
            options.create(true).truncate(true);
        } else {
            options.create_new(true);
        }
        let write_error = |source: std::io::Error| {
            if source.kind() == std::io::ErrorKind::AlreadyExists {
                Error::KeyExists { path: path.to_owned() }
            } else {
                Error::WriteKey { path: path.to_owned(), source }
            }
        };
        let mut handle = options.open(path).map_err(write_error)?;
        // An overwritten file keeps its old mode, so set 0600 explicitly.
        use std::os::unix::fs::PermissionsExt;
        handle.set_permissions(std::fs::Permissions::from_mode(0o600)).map_err(write_error)?;
        handle.write_all(text.as_bytes()).map_err(write_error)?;
        handle.sync_all().map_err(write_error)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn key_file_round_trips_with_mode_0600() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("release.key");
        let key = PrivateKey::generate();
        key.write_new(&path, false).expect("write");
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let loaded = PrivateKey::load(&path).expect("load");
        assert_eq!(loaded.public(), key.public());
    }

    #[test]
    fn key_file_is_not_overwritten_without_force() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("root.key");
        PrivateKey::generate().write_new(&path, false).expect("first write");
        let err = PrivateKey::generate().write_new(&path, false).expect_err("must refuse");
        assert!(matches!(err, Error::KeyExists { .. }), "{err}");
        PrivateKey::generate().write_new(&path, true).expect("forced write");
    }

    #[test]
    fn signature_verifies_only_for_its_message() {
        let key = PrivateKey::generate();
        let signature = key.sign(b"manifest");
        assert!(key.public().verify(b"manifest", &signature));
        assert!(!key.public().verify(b"manifesT", &signature));
    }
}
