//! The read side of a registry: resolve a tag to the repository manifest,
//! load the index, and fetch files by the digest of the blob that contains
//! them. Every whole blob is checked against its digest before it is used,
//! on top of the TUF and chunk checks that follow.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;

use super::auth::{Credentials, RegistryAuth};
use super::index::{sha256_digest, ImageManifest, Location, RepositoryIndex, MANIFEST_MEDIA_TYPE, MAX_INDEX_BYTES, MAX_MANIFEST_BYTES};
use super::reference::{Reference, ReferenceError};
use crate::source::{DownloadError, DownloadPolicy, Downloader};
use crate::tuf::{FetchError, Fetcher};

/// Errors of reading a repository from a registry.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    #[error("{reference} was not found: the registry has no such repository or tag; publish it with `tender publish --to {reference}` or check the name")]
    UnknownTag { reference: String },
    #[error("cannot read {reference}: {detail}")]
    Download { reference: String, detail: String },
    #[error("{reference} is not a Tender repository: {detail}; publish it with `tender publish`")]
    NotTender { reference: String, detail: String },
    #[error("blob {expected} of {reference} has digest {actual}: the registry returned other bytes than its manifest lists; publish again or check the registry's storage")]
    Digest { reference: String, expected: String, actual: String },
    #[error("{path} is not in the index of {reference}")]
    Missing { reference: String, path: String },
    #[error("cannot read {}: {source}", path.display())]
    Io { path: std::path::PathBuf, source: std::io::Error },
    #[error("cannot {action} {}: {source}", path.display())]
    Local { action: &'static str, path: std::path::PathBuf, source: std::io::Error },
}

/// A Tender repository in a registry, with its index loaded.
pub struct RegistryClient {
    reference: Reference,
    downloader: Downloader,
    manifest_digest: String,
    index: RepositoryIndex,
}

impl std::fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryClient").field("reference", &self.reference).field("manifest", &self.manifest_digest).finish_non_exhaustive()
    }
}

impl RegistryClient {
    /// Resolves `reference` to its manifest and loads the repository index.
    pub fn open(reference: Reference, credentials: Credentials, policy: DownloadPolicy) -> Result<Self, RegistryError> {
        let text = reference.to_string();
        let auth = Arc::new(RegistryAuth::new(&reference.host, credentials));
        let downloader = Downloader::new(policy)
            .map_err(|e| RegistryError::Download { reference: text.clone(), detail: e.to_string() })?
            .with_auth(auth);
        let manifest_url = reference.manifest_url(&reference.tag);
        tracing::debug!(url = %manifest_url, "resolving the registry tag");
        let manifest_bytes = downloader.get_accepting(&manifest_url, MAX_MANIFEST_BYTES, Some(MANIFEST_MEDIA_TYPE)).map_err(|error| match error {
            DownloadError::NotFound { .. } => RegistryError::UnknownTag { reference: text.clone() },
            other => RegistryError::Download { reference: text.clone(), detail: other.to_string() },
        })?;
        let not_tender = |detail: String| RegistryError::NotTender { reference: text.clone(), detail };
        let manifest: ImageManifest =
            serde_json::from_slice(&manifest_bytes).map_err(|e| not_tender(format!("its manifest is not an OCI image manifest ({e})")))?;
        let layer = manifest.index_layer().ok_or_else(|| not_tender("its manifest has no Tender index layer".to_owned()))?.clone();
        if layer.size > MAX_INDEX_BYTES {
            return Err(not_tender(format!("its index is {} bytes, more than the limit of {MAX_INDEX_BYTES}", layer.size)));
        }
        let mut client = Self { reference, downloader, manifest_digest: sha256_digest(&manifest_bytes), index: RepositoryIndex::default() };
        let index_bytes = client.blob(&layer.digest, layer.size)?;
        client.index = serde_json::from_slice(&index_bytes).map_err(|e| not_tender(format!("its index blob is invalid ({e})")))?;
        tracing::info!(reference = %text, manifest = %client.manifest_digest, files = client.index.files.len(), "registry repository index loaded");
        Ok(client)
    }

    pub fn reference(&self) -> &Reference {
        &self.reference
    }

    pub fn downloader(&self) -> &Downloader {
        &self.downloader
    }

    /// Returns where the repository file `path` is.
    pub fn location(&self, path: &str) -> Option<&Location> {
        self.index.files.get(path)
    }

    /// Downloads the whole blob `digest` of at most `limit` bytes into
    /// memory and checks its digest.
    pub fn blob(&self, digest: &str, limit: u64) -> Result<Vec<u8>, RegistryError> {
        let url = self.reference.blob_url(digest);
        tracing::debug!(%url, "GET blob");
        let bytes = self
            .downloader
            .get(&url, limit)
            .map_err(|e| RegistryError::Download { reference: self.reference.to_string(), detail: e.to_string() })?;
        self.check_digest(digest, &sha256_digest(&bytes))?;
        Ok(bytes)
    }

    /// Downloads the whole blob `digest` into `destination`, resuming an
    /// earlier partial download, and checks its digest. A file that fails
    /// the check is removed.
    pub fn blob_to_file(&self, digest: &str, limit: u64, destination: &Path) -> Result<u64, RegistryError> {
        let url = self.reference.blob_url(digest);
        tracing::debug!(%url, "GET blob with resume");
        let received = self.downloader.download_to(&url, destination, limit).map_err(|e| self.download_error(e))?;
        let actual = file_digest(destination)?;
        if let Err(error) = self.check_digest(digest, &actual) {
            let _ = std::fs::remove_file(destination);
            return Err(error);
        }
        Ok(received)
    }

    /// Downloads the repository file at `location` into `destination`: a
    /// whole blob, checked against its digest, or a ranged read of a chunk
    /// pack, which the caller checks against the chunk digest.
    pub fn file_to(&self, location: &Location, destination: &Path) -> Result<u64, RegistryError> {
        match location.offset {
            None => self.blob_to_file(&location.blob, location.length, destination),
            Some(offset) => {
                let url = self.reference.blob_url(&location.blob);
                tracing::debug!(%url, offset, length = location.length, "GET range of a chunk pack");
                self.downloader.download_range_to(&url, offset, location.length, destination).map_err(|e| self.download_error(e))
            }
        }
    }

    /// Keeps a local file error whole, so that a full cache is recognised as one.
    fn download_error(&self, error: DownloadError) -> RegistryError {
        match error {
            DownloadError::Io { action, path, source } => RegistryError::Local { action, path, source },
            other => RegistryError::Download { reference: self.reference.to_string(), detail: other.to_string() },
        }
    }

    fn check_digest(&self, expected: &str, actual: &str) -> Result<(), RegistryError> {
        if expected != actual {
            return Err(RegistryError::Digest { reference: self.reference.to_string(), expected: expected.to_owned(), actual: actual.to_owned() });
        }
        Ok(())
    }
}

fn file_digest(path: &Path) -> Result<String, RegistryError> {
    use sha2::Digest as _;
    let io = |source| RegistryError::Io { path: path.to_owned(), source };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut hasher = sha2::Sha256::new();
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let read = file.read(&mut buffer).map_err(io)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok(format!("sha256:{}", hex::encode(hasher.finalize())))
}

/// A [`Fetcher`] of one repository directory (`metadata` or `targets`)
/// stored in a registry, for the TUF client.
pub struct RegistryFetcher {
    client: Arc<RegistryClient>,
    prefix: String,
}

impl RegistryFetcher {
    pub fn new(client: Arc<RegistryClient>, prefix: &str) -> Self {
        Self { client, prefix: prefix.trim_matches('/').to_owned() }
    }

    fn locate(&self, name: &str, max_len: u64) -> Result<(String, Location), FetchError> {
        crate::tuf::fetch::check_name(name)?;
        let path = format!("{}/{name}", self.prefix);
        let location = self.client.location(&path).cloned().ok_or_else(|| FetchError::NotFound { location: self.location(name) })?;
        if location.length > max_len {
            return Err(FetchError::TooLarge { location: self.location(name), limit: max_len });
        }
        Ok((path, location))
    }
}

fn fetch_error(location: String, error: RegistryError) -> FetchError {
    match error {
        RegistryError::Local { action, path, source } => FetchError::Local { action, path, source },
        other => FetchError::Http { location, detail: other.to_string() },
    }
}

impl Fetcher for RegistryFetcher {
    fn location(&self, name: &str) -> String {
        format!("{}/{}/{name}", self.client.reference(), self.prefix)
    }

    fn fetch_to(&self, name: &str, max_len: u64, sink: &mut dyn Write) -> Result<u64, FetchError> {
        let (_, location) = self.locate(name, max_len)?;
        let bytes = match location.offset {
            None => self.client.blob(&location.blob, location.length).map_err(|e| fetch_error(self.location(name), e))?,
            Some(_) => {
                let temp = tempfile::NamedTempFile::new().map_err(|source| FetchError::Write { location: self.location(name), source })?;
                self.client.file_to(&location, temp.path()).map_err(|e| fetch_error(self.location(name), e))?;
                std::fs::read(temp.path()).map_err(|source| FetchError::Io { path: temp.path().to_owned(), source })?
            }
        };
        sink.write_all(&bytes).map_err(|source| FetchError::Write { location: self.location(name), source })?;
        Ok(bytes.len() as u64)
    }

    fn fetch_resumable(&self, name: &str, max_len: u64, dest: &Path) -> Result<u64, FetchError> {
        let (_, location) = self.locate(name, max_len)?;
        self.client.file_to(&location, dest).map_err(|e| fetch_error(self.location(name), e))
    }
}
