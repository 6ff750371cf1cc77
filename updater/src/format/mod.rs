//! The release format that a robot accepts. The builder writes exactly this.
//!
//! A release is a manifest (canonical JSON, see [`manifest`]), the TUF
//! metadata that signs it (`root.json`, `targets.json`), and a content-addressed
//! chunk store: each chunk is zstd-compressed and named by the SHA-256 of its
//! uncompressed bytes. The same pieces are laid out either as a static
//! repository directory ([`layout`]) or packed into one `.tender` tar file
//! ([`bundle`]).

pub mod bundle;
pub mod chunk;
pub mod delta;
pub mod digest;
pub mod layout;
pub mod limits;
pub mod manifest;
pub mod path;

pub use digest::Sha256Digest;
pub use manifest::{ChunkRef, Entry, EntryKind, HealthCheck, Manifest, PreSwitch, Provenance, ReleaseInfo};
