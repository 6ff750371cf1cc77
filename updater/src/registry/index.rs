//! The registry layout of a Tender repository, shared by `tender publish`
//! (which writes it) and `tenderd` (which reads it).
//!
//! A tag points to one OCI image manifest (image spec 1.1) with the artifact
//! type [`ARTIFACT_TYPE`] and the empty config. Its layers are every blob the
//! repository needs, so a registry's garbage collector keeps them, and the
//! first layer is the repository index ([`INDEX_MEDIA_TYPE`]): a JSON
//! document that maps each repository path (`metadata/3.targets.json`,
//! `targets/HASH.NAME`, `chunks/ab/HEX.zst`) to the blob that holds it,
//! with an offset and length inside a chunk pack. A robot thus needs one
//! manifest request and one index blob to locate every file.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `artifactType` of the manifest of a Tender repository.
pub const ARTIFACT_TYPE: &str = "application/vnd.tender.repository.v1";
/// Media type of the repository index blob.
pub const INDEX_MEDIA_TYPE: &str = "application/vnd.tender.index.v1+json";
/// Media type of a TUF metadata file.
pub const METADATA_MEDIA_TYPE: &str = "application/vnd.tender.tuf.metadata.v1+json";
/// Media type of a TUF target: a release manifest or a delta pack.
pub const TARGET_MEDIA_TYPE: &str = "application/vnd.tender.target.v1";
/// Media type of one zstd-compressed chunk.
pub const CHUNK_MEDIA_TYPE: &str = "application/vnd.tender.chunk.v1+zstd";
/// Media type of a chunk pack: compressed chunks back to back.
pub const CHUNK_PACK_MEDIA_TYPE: &str = "application/vnd.tender.chunk-pack.v1";
/// Media type of a file of the older repository layout.
pub const LEGACY_MEDIA_TYPE: &str = "application/vnd.tender.legacy.v1";
/// Media type of the OCI image manifest.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// The empty config of an artifact without configuration, `{}`.
pub const EMPTY_CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";
pub const EMPTY_CONFIG: &[u8] = b"{}";
/// Annotation with a blob's repository path.
pub const TITLE_ANNOTATION: &str = "org.opencontainers.image.title";
/// Annotation with the newest release version on the manifest.
pub const VERSION_ANNOTATION: &str = "org.opencontainers.image.version";

/// Largest manifest a robot reads; registries commonly cap manifests at 4 MiB.
pub const MAX_MANIFEST_BYTES: u64 = 4 * 1024 * 1024;
/// Largest index blob a robot reads.
pub const MAX_INDEX_BYTES: u64 = 64 * 1024 * 1024;

/// Version of the index format.
pub const INDEX_FORMAT: u32 = 1;

/// The repository index blob.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepositoryIndex {
    pub format: u32,
    /// Location of each repository path, sorted by path.
    pub files: BTreeMap<String, Location>,
}

/// Location of a repository file: a whole blob, or `length` bytes at `offset`
/// of a chunk pack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Location {
    /// `sha256:HEX` of the blob.
    pub blob: String,
    /// Offset inside a chunk pack; absent for a whole blob.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// Length of the file in bytes.
    pub length: u64,
}

/// A content descriptor of the OCI image specification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// An OCI image manifest with an artifact type, as Tender writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageManifest {
    pub schema_version: u32,
    pub media_type: String,
    #[serde(default)]
    pub artifact_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl ImageManifest {
    /// Returns the index layer, when this is a Tender repository.
    pub fn index_layer(&self) -> Option<&Descriptor> {
        if self.artifact_type.as_deref() != Some(ARTIFACT_TYPE) {
            return None;
        }
        self.layers.iter().find(|layer| layer.media_type == INDEX_MEDIA_TYPE)
    }
}

/// Returns `sha256:HEX` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// Checks that `digest` is `sha256:` and 64 lowercase hex digits.
pub fn is_sha256_digest(digest: &str) -> bool {
    digest.strip_prefix("sha256:").is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
}
