//! `tender publish --to oci://HOST:PORT/REPOSITORY[:TAG]`: the repository as
//! one OCI artifact (layout in `tender_updater::registry::index`).
//!
//! Chunks of at least [`OWN_BLOB_MIN_BYTES`] are blobs of their own. Smaller
//! ones are concatenated into chunk packs of about [`PACK_TARGET_BYTES`], so
//! a release of many small chunks does not become thousands of layers. A chunk
//! that the tag's previous index already places in a pack keeps that place,
//! so packs never change and a repeated publish uploads nothing.
//!
//! Push order: blobs (chunks and packs, targets, the older layout, metadata,
//! the index, the empty config), then the manifest under the version tag of
//! the newest release, and last under the reference's tag. Moving that tag
//! is the commit point: until then robots read the previous manifest, whose
//! blobs the registry still holds.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, LOCATION, WWW_AUTHENTICATE};
use reqwest::StatusCode;
use tender_updater::registry::index::{
    sha256_digest, Descriptor, ImageManifest, Location, RepositoryIndex, ARTIFACT_TYPE, CHUNK_MEDIA_TYPE, CHUNK_PACK_MEDIA_TYPE,
    EMPTY_CONFIG, EMPTY_CONFIG_MEDIA_TYPE, INDEX_FORMAT, INDEX_MEDIA_TYPE, LEGACY_MEDIA_TYPE, MANIFEST_MEDIA_TYPE, MAX_INDEX_BYTES,
    MAX_MANIFEST_BYTES, METADATA_MEDIA_TYPE, TARGET_MEDIA_TYPE, TITLE_ANNOTATION, VERSION_ANNOTATION,
};
use tender_updater::registry::{Credentials, Reference, RegistryAuth};
use tender_updater::source::RequestAuth;

use super::{repository_files, FileKind, ListError, RepositoryFile};

/// Chunks of at least this many stored bytes are blobs of their own.
pub const OWN_BLOB_MIN_BYTES: u64 = 64 * 1024;
/// Size at which a chunk pack is closed and the next one started.
pub const PACK_TARGET_BYTES: u64 = 4 * 1024 * 1024;
/// Attempts per registry request that fails with a connection error or a 5xx.
const MAX_ATTEMPTS: u32 = 4;

/// Failures of a registry publish.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error(transparent)]
    List(#[from] ListError),
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{url} requires authentication: {detail}")]
    Unauthorized { url: String, detail: String },
    #[error("{action} {url} failed: {detail}")]
    Request { action: &'static str, url: String, detail: String },
    #[error("the manifest for {reference} is {size} bytes, more than the {MAX_MANIFEST_BYTES} bytes registries accept; the repository has too many chunk blobs")]
    ManifestTooLarge { reference: String, size: u64 },
    #[error("cannot encode {what}: {source}")]
    Encode { what: &'static str, source: serde_json::Error },
}

/// Counters of a registry publish.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushSummary {
    pub manifest_digest: String,
    pub uploaded_blobs: u64,
    pub uploaded_bytes: u64,
    /// Blobs the registry already had.
    pub present_blobs: u64,
    pub packs: u64,
    /// Tags that now point to the manifest.
    pub tags: Vec<String>,
    /// Tags that already pointed to it.
    pub unchanged_tags: Vec<String>,
}

/// Source of a blob's bytes.
enum Content {
    File(PathBuf),
    Bytes(Vec<u8>),
}

struct Blob {
    digest: String,
    size: u64,
    media_type: &'static str,
    title: Option<String>,
    content: Content,
}

/// Pushes the repository `repo` to `reference` with `credentials`.
pub fn publish_to_registry(repo: &std::path::Path, reference: &Reference, credentials: Credentials) -> Result<PushSummary, PushError> {
    let registry = Registry::new(reference, credentials)?;
    let files = repository_files(repo)?;
    let previous = registry.previous_index()?;
    let (blobs, index) = plan_blobs(&files, previous.as_ref())?;
    // Blobs that the tag's manifest lists are in the registry, which checks
    // every blob of a manifest before it accepts it.
    let known: BTreeSet<String> = previous
        .as_ref()
        .map(|p| p.manifest.layers.iter().chain([&p.manifest.config]).map(|l| l.digest.clone()).collect())
        .unwrap_or_default();

    let index_bytes = serde_json::to_vec(&index).map_err(|source| PushError::Encode { what: "the repository index", source })?;
    let index_blob = Blob {
        digest: sha256_digest(&index_bytes),
        size: index_bytes.len() as u64,
        media_type: INDEX_MEDIA_TYPE,
        title: Some("tender-index.json".to_owned()),
        content: Content::Bytes(index_bytes),
    };
    let config_blob = Blob {
        digest: sha256_digest(EMPTY_CONFIG),
        size: EMPTY_CONFIG.len() as u64,
        media_type: EMPTY_CONFIG_MEDIA_TYPE,
        title: None,
        content: Content::Bytes(EMPTY_CONFIG.to_vec()),
    };

    let mut summary = PushSummary { packs: blobs.iter().filter(|b| b.media_type == CHUNK_PACK_MEDIA_TYPE).count() as u64, ..Default::default() };
    let mut pushed = BTreeSet::new();
    for blob in blobs.iter().chain([&index_blob, &config_blob]) {
        if !pushed.insert(blob.digest.clone()) {
            continue;
        }
        if known.contains(&blob.digest) || registry.has_blob(&blob.digest)? {
            summary.present_blobs += 1;
            continue;
        }
        registry.upload(blob)?;
        summary.uploaded_blobs += 1;
        summary.uploaded_bytes += blob.size;
    }

    let manifest = ImageManifest {
        schema_version: 2,
        media_type: MANIFEST_MEDIA_TYPE.to_owned(),
        artifact_type: Some(ARTIFACT_TYPE.to_owned()),
        config: descriptor(&config_blob),
        layers: std::iter::once(&index_blob).chain(&blobs).map(descriptor).collect(),
        annotations: newest_version(&files).map(|v| BTreeMap::from([(VERSION_ANNOTATION.to_owned(), v.to_string())])).unwrap_or_default(),
    };
    let manifest_bytes = serde_json::to_vec(&manifest).map_err(|source| PushError::Encode { what: "the manifest", source })?;
    if manifest_bytes.len() as u64 > MAX_MANIFEST_BYTES {
        return Err(PushError::ManifestTooLarge { reference: reference.to_string(), size: manifest_bytes.len() as u64 });
    }
    summary.manifest_digest = sha256_digest(&manifest_bytes);

    // The version tag first and the reference's tag last: moving it is the
    // commit point for robots that follow it.
    let mut tags = Vec::new();
    if let Some(version) = newest_version(&files) {
        let tag = version.to_string().replace('+', "_");
        if tag != reference.tag {
            tags.push(tag);
        }
    }
    tags.push(reference.tag.clone());
    for tag in tags {
        if registry.tag_digest(&tag)?.as_deref() == Some(summary.manifest_digest.as_str()) {
            summary.unchanged_tags.push(tag);
            continue;
        }
        registry.put_manifest(&tag, &manifest_bytes)?;
        tracing::info!(reference = %reference.with_tag(&tag), manifest = %summary.manifest_digest, "tag moved");
        summary.tags.push(tag);
    }
    Ok(summary)
}

fn descriptor(blob: &Blob) -> Descriptor {
    Descriptor {
        media_type: blob.media_type.to_owned(),
        digest: blob.digest.clone(),
        size: blob.size,
        annotations: blob.title.iter().map(|title| (TITLE_ANNOTATION.to_owned(), title.clone())).collect(),
    }
}

/// Returns the newest release version that the top-level targets list.
fn newest_version(files: &[RepositoryFile]) -> Option<semver::Version> {
    let file = files.iter().find(|f| f.path == "metadata/targets.json")?;
    let bytes = std::fs::read(&file.source).ok()?;
    let targets: tender_keys::Signed<tender_keys::Targets> = serde_json::from_slice(&bytes).ok()?;
    targets
        .signed
        .targets
        .values()
        .filter_map(|target| target.custom.clone().and_then(|c| serde_json::from_value::<tender_updater::format::ReleaseInfo>(c).ok()))
        .map(|info| info.version)
        .max()
}

/// The tag's manifest and index before this publish.
struct Previous {
    manifest: ImageManifest,
    index: RepositoryIndex,
}

/// Decides the blob of every repository file and writes the index.
fn plan_blobs(files: &[RepositoryFile], previous: Option<&Previous>) -> Result<(Vec<Blob>, RepositoryIndex), PushError> {
    let mut index = RepositoryIndex { format: INDEX_FORMAT, files: BTreeMap::new() };
    let mut blobs = Vec::new();
    let mut kept_packs = BTreeSet::new();
    let mut to_pack = Vec::new();
    for file in files {
        if file.kind == FileKind::Chunk && file.length < OWN_BLOB_MIN_BYTES {
            let earlier = previous.and_then(|p| p.index.files.get(&file.path)).filter(|l| l.offset.is_some() && l.length == file.length);
            match earlier {
                Some(location) => {
                    kept_packs.insert(location.blob.clone());
                    index.files.insert(file.path.clone(), location.clone());
                }
                None => to_pack.push(file),
            }
            continue;
        }
        let digest = file_digest(&file.source)?;
        let media_type = match file.kind {
            FileKind::Chunk => CHUNK_MEDIA_TYPE,
            FileKind::Target => TARGET_MEDIA_TYPE,
            FileKind::LegacyManifest | FileKind::LegacyMetadata => LEGACY_MEDIA_TYPE,
            FileKind::VersionedMetadata | FileKind::Metadata | FileKind::Timestamp => METADATA_MEDIA_TYPE,
        };
        index.files.insert(file.path.clone(), Location { blob: digest.clone(), offset: None, length: file.length });
        blobs.push(Blob { digest, size: file.length, media_type, title: Some(file.path.clone()), content: Content::File(file.source.clone()) });
    }
    // Packs kept from the previous manifest stay layers, with their sizes.
    if let Some(previous) = previous {
        for layer in previous.manifest.layers.iter().filter(|l| kept_packs.contains(&l.digest)) {
            blobs.push(Blob {
                digest: layer.digest.clone(),
                size: layer.size,
                media_type: CHUNK_PACK_MEDIA_TYPE,
                title: None,
                content: Content::Bytes(Vec::new()),
            });
        }
    }
    let mut pack = Vec::new();
    let mut members: Vec<(String, u64, u64)> = Vec::new();
    for (position, file) in to_pack.iter().enumerate() {
        let bytes = std::fs::read(&file.source).map_err(|source| PushError::Read { path: file.source.clone(), source })?;
        members.push((file.path.clone(), pack.len() as u64, bytes.len() as u64));
        pack.extend_from_slice(&bytes);
        if pack.len() as u64 >= PACK_TARGET_BYTES || position + 1 == to_pack.len() {
            let digest = sha256_digest(&pack);
            for (path, offset, length) in members.drain(..) {
                index.files.insert(path, Location { blob: digest.clone(), offset: Some(offset), length });
            }
            blobs.push(Blob {
                digest,
                size: pack.len() as u64,
                media_type: CHUNK_PACK_MEDIA_TYPE,
                title: None,
                content: Content::Bytes(std::mem::take(&mut pack)),
            });
        }
    }
    Ok((blobs, index))
}

fn file_digest(path: &std::path::Path) -> Result<String, PushError> {
    use sha2::Digest as _;
    let read_error = |source| PushError::Read { path: path.to_owned(), source };
    let mut file = std::fs::File::open(path).map_err(read_error)?;
    let mut hasher = sha2::Sha256::new();
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let read = file.read(&mut buffer).map_err(|source| PushError::Read { path: path.to_owned(), source })?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok(format!("sha256:{}", hex::encode(hasher.finalize())))
}

/// HTTP access to one registry repository, with authentication.
struct Registry {
    reference: Reference,
    client: Client,
    auth: Arc<RegistryAuth>,
}

impl Registry {
    fn new(reference: &Reference, credentials: Credentials) -> Result<Self, PushError> {
        let client = Client::builder()
            .connect_timeout(Duration::from_secs(15))
            .timeout(Duration::from_secs(300))
            .user_agent(concat!("tender/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| PushError::Request { action: "create a client for", url: reference.base_url(), detail: e.to_string() })?;
        Ok(Self { reference: reference.clone(), client, auth: Arc::new(RegistryAuth::new(&reference.host, credentials)) })
    }

    /// Sends the request `build` makes, responds to authentication
    /// challenges, and retries connection errors and 5xx responses with a
    /// short backoff.
    fn send(&self, action: &'static str, url: &str, build: &dyn Fn(&Client) -> RequestBuilder) -> Result<Response, PushError> {
        let mut last = String::new();
        for attempt in 1..=MAX_ATTEMPTS {
            if attempt > 1 {
                std::thread::sleep(Duration::from_millis(250 << attempt));
            }
            let mut authorized = None;
            for _ in 0..3 {
                let mut request = build(&self.client);
                if let Some(value) = self.auth.authorization() {
                    request = request.header(AUTHORIZATION, value);
                }
                let response = match request.send() {
                    Ok(response) => response,
                    Err(error) => {
                        last = error.to_string();
                        break;
                    }
                };
                if response.status() != StatusCode::UNAUTHORIZED {
                    authorized = Some(response);
                    break;
                }
                let challenge = response.headers().get(WWW_AUTHENTICATE).and_then(|v| v.to_str().ok()).map(str::to_owned);
                self.auth
                    .challenge(&self.client, challenge.as_deref())
                    .map_err(|detail| PushError::Unauthorized { url: url.to_owned(), detail })?;
            }
            let Some(response) = authorized else {
                tracing::warn!(url, attempt, error = %last, "registry request failed; retrying");
                continue;
            };
            let status = response.status();
            if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
                last = format!("the registry responded {status}");
                tracing::warn!(url, attempt, %status, "registry request failed; retrying");
                continue;
            }
            return Ok(response);
        }
        Err(PushError::Request { action, url: url.to_owned(), detail: format!("{last} after {MAX_ATTEMPTS} attempts") })
    }

    fn fail(action: &'static str, url: &str, response: Response) -> PushError {
        let status = response.status();
        let mut body = String::new();
        let _ = response.take(512).read_to_string(&mut body);
        let body = body.split_whitespace().collect::<Vec<_>>().join(" ");
        PushError::Request { action, url: url.to_owned(), detail: format!("the registry responded {status}: {body}") }
    }

    fn has_blob(&self, digest: &str) -> Result<bool, PushError> {
        let url = self.reference.blob_url(digest);
        let response = self.send("HEAD", &url, &|client| client.head(&url))?;
        match response.status() {
            status if status.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(Self::fail("HEAD", &url, response)),
        }
    }

    /// Uploads a blob with a POST that opens an upload and one monolithic PUT.
    fn upload(&self, blob: &Blob) -> Result<(), PushError> {
        let bytes = match &blob.content {
            Content::Bytes(bytes) => bytes.clone(),
            // NOTE: the whole blob is held in memory for the PUT; chunks are
            // at most a few hundred KiB, delta packs and manifests larger.
            Content::File(path) => std::fs::read(path).map_err(|source| PushError::Read { path: path.clone(), source })?,
        };
        let start_url = self.reference.upload_url();
        let response = self.send("POST", &start_url, &|client| client.post(&start_url).header("Content-Length", "0"))?;
        if response.status() != StatusCode::ACCEPTED {
            return Err(Self::fail("POST", &start_url, response));
        }
        let location = response
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| PushError::Request { action: "POST", url: start_url.clone(), detail: "the registry sent no Location".to_owned() })?;
        let base = reqwest::Url::parse(&start_url)
            .map_err(|e| PushError::Request { action: "POST", url: start_url.clone(), detail: e.to_string() })?;
        let mut put_url = base
            .join(location)
            .map_err(|e| PushError::Request { action: "POST", url: start_url.clone(), detail: format!("invalid Location {location:?}: {e}") })?;
        put_url.query_pairs_mut().append_pair("digest", &blob.digest);
        let put_text = put_url.to_string();
        tracing::debug!(digest = blob.digest, bytes = blob.size, "uploading blob");
        let response = self.send("PUT", &put_text, &|client| {
            client.put(put_url.clone()).header(CONTENT_TYPE, "application/octet-stream").body(bytes.clone())
        })?;
        if response.status() != StatusCode::CREATED {
            return Err(Self::fail("PUT", &put_text, response));
        }
        Ok(())
    }

    /// Returns the digest the tag points to, or `None` when it does not exist.
    fn tag_digest(&self, tag: &str) -> Result<Option<String>, PushError> {
        let url = self.reference.manifest_url(tag);
        let response = self.send("GET", &url, &|client| client.get(&url).header(ACCEPT, MANIFEST_MEDIA_TYPE))?;
        match response.status() {
            StatusCode::NOT_FOUND => Ok(None),
            status if status.is_success() => {
                let mut bytes = Vec::new();
                response
                    .take(MAX_MANIFEST_BYTES + 1)
                    .read_to_end(&mut bytes)
                    .map_err(|e| PushError::Request { action: "GET", url: url.clone(), detail: e.to_string() })?;
                Ok(Some(sha256_digest(&bytes)))
            }
            _ => Err(Self::fail("GET", &url, response)),
        }
    }

    /// Returns the tag's current manifest and index when they are Tender's.
    fn previous_index(&self) -> Result<Option<Previous>, PushError> {
        let url = self.reference.manifest_url(&self.reference.tag);
        let response = self.send("GET", &url, &|client| client.get(&url).header(ACCEPT, MANIFEST_MEDIA_TYPE))?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !response.status().is_success() {
            return Err(Self::fail("GET", &url, response));
        }
        let mut bytes = Vec::new();
        response
            .take(MAX_MANIFEST_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| PushError::Request { action: "GET", url: url.clone(), detail: e.to_string() })?;
        let Ok(manifest) = serde_json::from_slice::<ImageManifest>(&bytes) else {
            tracing::warn!(%url, "the tag has no OCI image manifest; publishing without reusing chunk packs");
            return Ok(None);
        };
        let Some(layer) = manifest.index_layer().cloned() else {
            tracing::warn!(%url, "the tag is not a Tender repository; publishing without reusing chunk packs");
            return Ok(None);
        };
        let blob_url = self.reference.blob_url(&layer.digest);
        let response = self.send("GET", &blob_url, &|client| client.get(&blob_url))?;
        if !response.status().is_success() {
            return Err(Self::fail("GET", &blob_url, response));
        }
        let mut index_bytes = Vec::new();
        response
            .take(MAX_INDEX_BYTES + 1)
            .read_to_end(&mut index_bytes)
            .map_err(|e| PushError::Request { action: "GET", url: blob_url.clone(), detail: e.to_string() })?;
        if sha256_digest(&index_bytes) != layer.digest {
            tracing::warn!(url = %blob_url, "the previous index does not match its digest; publishing without reusing chunk packs");
            return Ok(None);
        }
        match serde_json::from_slice::<RepositoryIndex>(&index_bytes) {
            Ok(index) => Ok(Some(Previous { manifest, index })),
            Err(error) => {
                tracing::warn!(url = %blob_url, %error, "the previous index is invalid; publishing without reusing chunk packs");
                Ok(None)
            }
        }
    }

    fn put_manifest(&self, tag: &str, bytes: &[u8]) -> Result<(), PushError> {
        let url = self.reference.manifest_url(tag);
        let content_type = HeaderValue::from_static(MANIFEST_MEDIA_TYPE);
        let response = self.send("PUT", &url, &|client| client.put(&url).header(CONTENT_TYPE, content_type.clone()).body(bytes.to_vec()))?;
        if !response.status().is_success() {
            return Err(Self::fail("PUT", &url, response));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(dir: &std::path::Path, path: &str, bytes: &[u8], kind: FileKind) -> RepositoryFile {
        let source = dir.join(path.replace('/', "_"));
        std::fs::write(&source, bytes).expect("write");
        RepositoryFile { path: path.to_owned(), kind, source, length: bytes.len() as u64 }
    }

    #[test]
    fn chunk_packs_keep_their_places() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = vec![
            file(dir.path(), "chunks/aa/aa1.zst", b"first chunk", FileKind::Chunk),
            file(dir.path(), "chunks/bb/bb2.zst", b"second", FileKind::Chunk),
            file(dir.path(), "metadata/timestamp.json", b"{}", FileKind::Timestamp),
        ];
        let (blobs, index) = plan_blobs(&files, None).expect("plan");
        let packs: Vec<&Blob> = blobs.iter().filter(|b| b.media_type == CHUNK_PACK_MEDIA_TYPE).collect();
        assert_eq!(packs.len(), 1);
        let second = &index.files["chunks/bb/bb2.zst"];
        assert_eq!(second.offset, Some(11));
        assert_eq!(second.length, 6);
        assert_eq!(second.blob, packs[0].digest);

        // A later publish with one more chunk keeps the old pack and packs only the new chunk.
        let manifest = ImageManifest {
            schema_version: 2,
            media_type: MANIFEST_MEDIA_TYPE.to_owned(),
            artifact_type: Some(ARTIFACT_TYPE.to_owned()),
            config: descriptor(&blobs[0]),
            layers: blobs.iter().map(descriptor).collect(),
            annotations: BTreeMap::new(),
        };
        let previous = Previous { manifest, index: index.clone() };
        let mut more = files.clone();
        more.push(file(dir.path(), "chunks/cc/cc3.zst", b"third", FileKind::Chunk));
        let (blobs_2, index_2) = plan_blobs(&more, Some(&previous)).expect("second plan");
        assert_eq!(index_2.files["chunks/bb/bb2.zst"], *second);
        assert_ne!(index_2.files["chunks/cc/cc3.zst"].blob, second.blob);
        assert_eq!(blobs_2.iter().filter(|b| b.media_type == CHUNK_PACK_MEDIA_TYPE).count(), 2);
    }
}
