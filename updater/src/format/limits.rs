//! Upper bounds on everything a robot reads from a bundle, a repository or a
//! server, checked before the bytes are read or allocated.

/// Largest `root.json` a robot reads.
pub const MAX_ROOT_BYTES: u64 = 512 * 1024;
/// Largest `targets.json` a robot reads.
pub const MAX_TARGETS_BYTES: u64 = 16 * 1024 * 1024;
/// Largest release manifest a robot reads.
pub const MAX_MANIFEST_BYTES: u64 = 128 * 1024 * 1024;
/// Most entries one manifest may list.
pub const MAX_ENTRIES: usize = 4_000_000;
/// Maximum length of an entry path or symlink target, in bytes (Linux `PATH_MAX`).
pub const MAX_PATH_BYTES: usize = 4096;
/// Largest extended attribute value (Linux `XATTR_SIZE_MAX`).
pub const MAX_XATTR_BYTES: usize = 64 * 1024;
/// Largest uncompressed chunk. The builder's FastCDC maximum stays below it.
pub const MAX_CHUNK_BYTES: u64 = 4 * 1024 * 1024;
/// Largest compressed chunk: the zstd worst-case bound for [`MAX_CHUNK_BYTES`].
pub const MAX_STORED_CHUNK_BYTES: u64 = MAX_CHUNK_BYTES + MAX_CHUNK_BYTES / 128 + 1024;
