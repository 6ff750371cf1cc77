//! SHA-256 digests as lower-case hex.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize};
use sha2::{Digest, Sha256};

/// A SHA-256 digest. Parsing accepts only 64 lower-case hex digits, so a
/// digest read from a manifest is always safe to use as a file name.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Sha256Digest([u8; 32]);

impl Sha256Digest {
    pub fn of(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }

    pub fn from_hasher(hasher: Sha256) -> Self {
        Self(hasher.finalize().into())
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.to_hex())
    }
}

/// The text was not 64 lower-case hex digits.
#[derive(Debug, thiserror::Error)]
#[error("invalid SHA-256 digest {0:?}: expected 64 lower-case hex digits")]
pub struct InvalidDigest(pub String);

impl FromStr for Sha256Digest {
    type Err = InvalidDigest;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let valid = text.len() == 64 && text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !valid {
            return Err(InvalidDigest(text.chars().take(80).collect()));
        }
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text, &mut bytes).map_err(|_| InvalidDigest(text.to_owned()))?;
        Ok(Self(bytes))
    }
}

impl Serialize for Sha256Digest {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Sha256Digest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_parses_its_own_hex() {
        let digest = Sha256Digest::of(b"chunk");
        assert_eq!(digest.to_hex().parse::<Sha256Digest>().expect("valid"), digest);
    }

    #[test]
    fn digest_rejects_upper_case_and_paths() {
        let upper = Sha256Digest::of(b"x").to_hex().to_uppercase();
        assert!(upper.parse::<Sha256Digest>().is_err());
        assert!("../../etc/passwd".parse::<Sha256Digest>().is_err());
    }
}
