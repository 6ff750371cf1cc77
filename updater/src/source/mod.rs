//! Release sources: a `.tender` bundle, a repository directory, a
//! repository served over HTTP, or one stored in an OCI registry. Every source hands out raw bytes; the
//! caller verifies them before use.

mod bundle;
mod dir;
mod download;
mod http;
mod registry;

use std::path::Path;

use crate::format::Sha256Digest;

pub use bundle::BundleSource;
pub use dir::DirSource;
pub use download::{DownloadError, DownloadPolicy, Downloader, RequestAuth};
pub use http::HttpSource;
pub use registry::RegistrySource;

/// Errors of reading from a release source.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Bundle(#[from] crate::format::bundle::BundleError),
    #[error("cannot read {}: {source}", path.display())]
    Io { path: std::path::PathBuf, source: std::io::Error },
    #[error("cannot {action} {}: {source}", path.display())]
    Local { action: &'static str, path: std::path::PathBuf, source: std::io::Error },
    #[error("{what} is {len} bytes, more than the limit of {limit}")]
    TooLarge { what: String, len: u64, limit: u64 },
    #[error("download of {url} failed: {detail}")]
    Http { url: String, detail: String },
    #[error("{what} was not found in {source_name}")]
    NotFound { what: String, source_name: String },
    #[error("source {0:?} is neither a .tender file, a repository directory nor an http:// or https:// URL")]
    Unknown(String),
}

/// A place that holds a release's metadata and chunks.
pub trait ReleaseSource {
    /// Describes the source in messages, such as its path or URL.
    fn describe(&self) -> String;

    /// Returns true when reading from the source costs network traffic, so
    /// that fetched chunks are worth keeping in the download cache.
    fn is_remote(&self) -> bool {
        false
    }

    /// Returns `targets.json` as stored, at most `limit` bytes.
    fn targets(&mut self, limit: u64) -> Result<Vec<u8>, SourceError>;

    /// Returns the manifest this source is pinned to, if it is a bundle.
    fn pinned_manifest(&mut self) -> Option<Vec<u8>>;

    /// Returns the root versions the source carries, by version: a bundle's
    /// root chain, empty for others.
    fn root_chain(&self) -> std::collections::BTreeMap<u64, Vec<u8>> {
        std::collections::BTreeMap::new()
    }

    /// Returns a manifest target by its TUF target name, at most `limit` bytes.
    fn manifest(&mut self, target_name: &str, limit: u64) -> Result<Vec<u8>, SourceError>;

    /// Returns the stored (compressed) bytes of a chunk, at most `limit` bytes.
    fn chunk(&mut self, digest: &Sha256Digest, limit: u64) -> Result<Vec<u8>, SourceError>;

    /// Starts fetching chunks that [`ReleaseSource::chunk`] will ask for, so
    /// several are in flight at once; sources without a network do nothing.
    /// `chunks` pairs each digest with the most bytes accepted for it.
    fn prefetch(&mut self, _chunks: &[(Sha256Digest, u64)]) {}

    /// Forgets anything kept of a chunk whose bytes failed verification, so
    /// the next [`ReleaseSource::chunk`] fetches it afresh.
    fn discard_chunk(&mut self, _digest: &Sha256Digest) {}
}

/// Opens a source from the text a user gave: an `http://` or `https://` URL
/// of a repository, a `.tender` file, or a repository directory.
pub fn open_source(text: &str) -> Result<Box<dyn ReleaseSource>, SourceError> {
    open_source_with_cache(text, None, DownloadPolicy::default())
}

/// Like [`open_source`]; HTTP downloads resume from partial files in
/// `cache_dir` and follow `policy`.
pub fn open_source_with_cache(
    text: &str,
    cache_dir: Option<&Path>,
    policy: DownloadPolicy,
) -> Result<Box<dyn ReleaseSource>, SourceError> {
    if text.starts_with("http://") || text.starts_with("https://") {
        return Ok(Box::new(HttpSource::new(text, cache_dir, policy)?));
    }
    let path = Path::new(text);
    if path.is_file() {
        return Ok(Box::new(BundleSource::open(path)?));
    }
    if path.join(crate::format::layout::TARGETS_FILE).is_file() {
        return Ok(Box::new(DirSource::new(path)));
    }
    Err(SourceError::Unknown(text.to_owned()))
}

/// Reads a whole file, rejecting one longer than `limit` before reading it.
pub fn read_bounded(path: &Path, limit: u64, what: &str) -> Result<Vec<u8>, SourceError> {
    use std::io::Read;
    let io = |source| SourceError::Io { path: path.to_owned(), source };
    let file = std::fs::File::open(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            SourceError::NotFound { what: what.to_owned(), source_name: path.display().to_string() }
        } else {
            io(source)
        }
    })?;
    let len = file.metadata().map_err(io)?.len();
    if len > limit {
        return Err(SourceError::TooLarge { what: what.to_owned(), len, limit });
    }
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(limit + 1).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() as u64 > limit {
        return Err(SourceError::TooLarge { what: what.to_owned(), len: bytes.len() as u64, limit });
    }
    Ok(bytes)
}
