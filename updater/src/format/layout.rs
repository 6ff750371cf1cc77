//! Locations of the pieces of a release, in a repository and in a bundle.
//!
//! Repository (a static directory, servable by any HTTP server):
//!
//! ```text
//! root.json                              trust root (TUF)
//! targets.json                           signed list of release manifests (TUF)
//! manifests/NAME-VERSION.manifest.json   one manifest per release
//! chunks/ab/abcdef….zst                  chunk store, named by plain SHA-256
//! ```
//!
//! Bundle (`NAME-VERSION.tender`, an uncompressed tar): `root.json` (the
//! latest root), `roots/N.root.json` for every root version from 1 on,
//! `targets.json`, `manifest.json` in that order, then `chunks/HEX.zst`
//! sorted by digest. Metadata comes first so a robot verifies it before it
//! reads any chunk, and the root chain lets a robot that trusts an older root
//! walk to the root that signed the bundle.

use crate::format::Sha256Digest;

pub const ROOT_FILE: &str = "root.json";
pub const TARGETS_FILE: &str = "targets.json";
pub const BUNDLE_MANIFEST_FILE: &str = "manifest.json";
pub const BUNDLE_EXTENSION: &str = "tender";
/// Bundle directory of the root chain.
pub const BUNDLE_ROOTS_DIR: &str = "roots";

/// Bundle member name of root version `version`.
pub fn bundle_root_path(version: u64) -> String {
    format!("{BUNDLE_ROOTS_DIR}/{version}.root.json")
}

/// TUF target name of a release manifest.
pub fn manifest_target_name(name: &str, version: &semver::Version) -> String {
    format!("{name}-{version}.manifest.json")
}

/// Repository path of a manifest target.
pub fn repo_manifest_path(target_name: &str) -> String {
    format!("manifests/{target_name}")
}

/// Repository path of a chunk.
pub fn repo_chunk_path(digest: &Sha256Digest) -> String {
    let hex = digest.to_hex();
    format!("chunks/{}/{hex}.zst", &hex[..2])
}

/// Bundle member name of a chunk.
pub fn bundle_chunk_path(digest: &Sha256Digest) -> String {
    format!("chunks/{digest}.zst")
}

/// File name of a release's offline bundle.
pub fn bundle_file_name(name: &str, version: &semver::Version) -> String {
    format!("{name}-{version}.{BUNDLE_EXTENSION}")
}
