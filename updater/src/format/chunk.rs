//! Decoding of stored chunks: bounded decompression, then a digest check.

use std::io::Read;

use crate::format::limits::MAX_STORED_CHUNK_BYTES;
use crate::format::{ChunkRef, Sha256Digest};

/// Reasons a stored chunk is rejected.
#[derive(Debug, thiserror::Error)]
pub enum ChunkError {
    #[error("chunk {digest} is {len} bytes compressed, more than the limit of {MAX_STORED_CHUNK_BYTES}")]
    StoredTooLarge { digest: Sha256Digest, len: u64 },
    #[error("chunk {digest} decompresses to more than the {expected} bytes the manifest declares")]
    TooLarge { digest: Sha256Digest, expected: u64 },
    #[error("chunk {digest} decompresses to {actual} bytes but the manifest declares {expected}")]
    TooSmall { digest: Sha256Digest, expected: u64, actual: u64 },
    #[error("chunk {digest} is not valid zstd data: {source}")]
    Corrupt { digest: Sha256Digest, source: std::io::Error },
    #[error("chunk {expected} is corrupt: its bytes hash to {actual}")]
    DigestMismatch { expected: Sha256Digest, actual: Sha256Digest },
}

/// Decompresses a stored chunk into at most `chunk.size` bytes and checks
/// that they hash to `chunk.digest`. Nothing is returned unless both hold.
pub fn decode_chunk(chunk: &ChunkRef, stored: &[u8]) -> Result<Vec<u8>, ChunkError> {
    let digest = chunk.digest;
    if stored.len() as u64 > MAX_STORED_CHUNK_BYTES {
        return Err(ChunkError::StoredTooLarge { digest, len: stored.len() as u64 });
    }
    let decoder = zstd::stream::read::Decoder::new(stored).map_err(|source| ChunkError::Corrupt { digest, source })?;
    // Read one byte more than declared to notice a chunk that is too large
    // without decompressing all of it.
    let mut plain = Vec::with_capacity(chunk.size as usize);
    decoder
        .take(chunk.size + 1)
        .read_to_end(&mut plain)
        .map_err(|source| ChunkError::Corrupt { digest, source })?;
    let actual_len = plain.len() as u64;
    if actual_len > chunk.size {
        return Err(ChunkError::TooLarge { digest, expected: chunk.size });
    }
    if actual_len < chunk.size {
        return Err(ChunkError::TooSmall { digest, expected: chunk.size, actual: actual_len });
    }
    let actual = Sha256Digest::of(&plain);
    if actual != digest {
        return Err(ChunkError::DigestMismatch { expected: digest, actual });
    }
    Ok(plain)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(plain: &[u8]) -> (ChunkRef, Vec<u8>) {
        let stored = zstd::encode_all(plain, 3).expect("compress");
        let chunk = ChunkRef { digest: Sha256Digest::of(plain), size: plain.len() as u64, stored: stored.len() as u64 };
        (chunk, stored)
    }

    #[test]
    fn chunk_decodes_when_digest_matches() {
        let (chunk, bytes) = stored(b"motor torque table");
        assert_eq!(decode_chunk(&chunk, &bytes).expect("valid"), b"motor torque table");
    }

    #[test]
    fn chunk_larger_than_declared_is_rejected() {
        let (mut chunk, bytes) = stored(&[7u8; 10_000]);
        chunk.size = 100;
        assert!(matches!(decode_chunk(&chunk, &bytes), Err(ChunkError::TooLarge { .. })));
    }

    #[test]
    fn chunk_with_other_content_is_rejected() {
        let (mut chunk, bytes) = stored(b"servo");
        chunk.digest = Sha256Digest::of(b"motor");
        assert!(matches!(decode_chunk(&chunk, &bytes), Err(ChunkError::DigestMismatch { .. })));
    }
}
