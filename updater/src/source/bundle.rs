//! A `.tender` bundle as a release source, for USB sticks and offline use.

use std::path::Path;

use super::{ReleaseSource, SourceError};
use crate::format::bundle::BundleReader;
use crate::format::Sha256Digest;

pub struct BundleSource {
    reader: BundleReader,
}

impl BundleSource {
    pub fn open(path: &Path) -> Result<Self, SourceError> {
        Ok(Self { reader: BundleReader::open(path)? })
    }
}

fn bounded(bytes: &[u8], limit: u64, what: &str) -> Result<Vec<u8>, SourceError> {
    if bytes.len() as u64 > limit {
        return Err(SourceError::TooLarge { what: what.to_owned(), len: bytes.len() as u64, limit });
    }
    Ok(bytes.to_vec())
}

impl ReleaseSource for BundleSource {
    fn describe(&self) -> String {
        self.reader.path().display().to_string()
    }

    fn targets(&mut self, limit: u64) -> Result<Vec<u8>, SourceError> {
        bounded(&self.reader.targets, limit, "targets.json")
    }

    fn root_chain(&self) -> std::collections::BTreeMap<u64, Vec<u8>> {
        self.reader.root_chain().clone()
    }

    fn pinned_manifest(&mut self) -> Option<Vec<u8>> {
        Some(self.reader.manifest.clone())
    }

    fn manifest(&mut self, _target_name: &str, limit: u64) -> Result<Vec<u8>, SourceError> {
        bounded(&self.reader.manifest, limit, "manifest.json")
    }

    fn chunk(&mut self, digest: &Sha256Digest, limit: u64) -> Result<Vec<u8>, SourceError> {
        let bytes = self.reader.read_chunk(digest)?;
        bounded(&bytes, limit, &format!("chunk {digest}"))
    }
}
