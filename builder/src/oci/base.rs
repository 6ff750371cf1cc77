//! Importing a base image that goes below the workspace layer: an OCI image
//! layout directory, or a root file system tarball (`.tar`, `.tar.gz`,
//! `.tgz`, `.tar.zst`).
//!
//! Every blob of a layout is checked before it is used. JSON documents are
//! bounded in size and must match their descriptor's digest and size. Each
//! layer must match its digest and size, and start with the magic number of
//! the compression its media type declares (gzip `1f 8b`, zstd
//! `28 b5 2f fd`, neither for a plain tar). It must also decompress to the
//! `diff_id` that the base configuration lists. A Docker schema 2 manifest may list only
//! Docker layer media types, which have no zstd variant. Imported layers
//! keep their bytes and get the OCI media type of their compression.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest};
use sha2::{Digest as _, Sha256};
use tender_updater::format::Sha256Digest;

use crate::oci::compress::{decoder, layer_media_type_codec, Compression, Encoder, MediaTypeFamily};
use crate::oci::layer::Layer;
use crate::oci::layout::{HashingWriter, LayoutError, LayoutWriter, INDEX_FILE, LAYOUT_VERSION, OCI_LAYOUT_FILE};
use crate::oci::platform::Platform;

/// Largest `oci-layout`, `index.json`, manifest or configuration accepted.
pub const MAX_JSON_BYTES: u64 = 4 * 1024 * 1024;

const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// Reasons a base image is rejected.
#[derive(Debug, thiserror::Error)]
pub enum BaseError {
    #[error(transparent)]
    Layout(#[from] LayoutError),

    #[error("cannot read base image {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },

    #[error("base image {}: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },

    #[error("base image {}: layer {digest} is declared {media_type} but its bytes are {found}; fix the media type in the base manifest or rebuild the base image", path.display())]
    CompressionMismatch { path: PathBuf, digest: String, media_type: String, found: &'static str },

    #[error("base image {}: layer {digest} has media type {media_type} inside a Docker schema 2 manifest, which allows only Docker tar and gzip layers; convert the base with `skopeo copy --format oci`", path.display())]
    DockerManifestLayer { path: PathBuf, digest: String, media_type: String },

    #[error("base image {}: blob {digest} does not match its descriptor ({detail}); the base image is damaged", path.display())]
    BlobMismatch { path: PathBuf, digest: String, detail: String },

    #[error("base image {}: no manifest for {platform}; it has {available}", path.display())]
    NoPlatform { path: PathBuf, platform: Platform, available: String },

    #[error("base tarball {} is named as {declared} ({media_type}) but its bytes are {found}; rename it to match its compression", path.display())]
    TarballMismatch { path: PathBuf, declared: &'static str, media_type: String, found: &'static str },
}

/// Origin of a base image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BaseSource {
    /// An OCI image layout directory.
    Layout(PathBuf),
    /// A root file system tarball, plain or compressed.
    Rootfs(PathBuf),
}

impl BaseSource {
    /// Classifies `path`: a directory is a layout, and a file is a tarball.
    pub fn from_path(path: &Path) -> Result<Self, BaseError> {
        let metadata = std::fs::metadata(path).map_err(|source| BaseError::Read { path: path.to_owned(), source })?;
        Ok(if metadata.is_dir() { Self::Layout(path.to_owned()) } else { Self::Rootfs(path.to_owned()) })
    }

    pub fn path(&self) -> &Path {
        match self {
            Self::Layout(path) | Self::Rootfs(path) => path,
        }
    }
}

/// A base image copied into the layout being written.
#[derive(Debug, Clone)]
pub struct BaseImage {
    pub layers: Vec<Layer>,
    /// The base's configuration; `None` for a tarball.
    pub config: Option<ImageConfiguration>,
}

/// Imports the base image for `platform` into `layout`. A tarball's
/// content is recompressed with `compression`; a layout's layers are
/// copied unchanged.
pub fn import_base(
    source: &BaseSource,
    platform: &Platform,
    layout: &LayoutWriter,
    compression: Compression,
) -> Result<BaseImage, BaseError> {
    match source {
        BaseSource::Layout(dir) => import_layout(dir, platform, layout),
        BaseSource::Rootfs(path) => import_tarball(path, layout, compression),
    }
}

fn invalid(path: &Path, reason: impl Into<String>) -> BaseError {
    BaseError::Invalid { path: path.to_owned(), reason: reason.into() }
}

fn import_layout(dir: &Path, platform: &Platform, layout: &LayoutWriter) -> Result<BaseImage, BaseError> {
    let marker: serde_json::Value = parse_json(dir, &read_bounded(dir, &dir.join(OCI_LAYOUT_FILE))?, OCI_LAYOUT_FILE)?;
    if marker["imageLayoutVersion"] != LAYOUT_VERSION {
        return Err(invalid(dir, format!("{OCI_LAYOUT_FILE} has imageLayoutVersion {}, expected {LAYOUT_VERSION:?}", marker["imageLayoutVersion"])));
    }
    let index: ImageIndex = parse_json(dir, &read_bounded(dir, &dir.join(INDEX_FILE))?, INDEX_FILE)?;
    let descriptor = select_manifest(dir, index.manifests(), platform)?;

    let manifest_bytes = read_blob(dir, &descriptor)?;
    let manifest: ImageManifest = parse_json(dir, &manifest_bytes, "the manifest")?;
    let docker = descriptor.media_type().as_ref() == DOCKER_MANIFEST
        || manifest.media_type().as_ref().is_some_and(|m| m.as_ref() == DOCKER_MANIFEST);

    let config_bytes = read_blob(dir, manifest.config())?;
    let config: ImageConfiguration = parse_json(dir, &config_bytes, "the configuration")?;
    let (os, arch) = (config.os().to_string(), config.architecture().to_string());
    if os != platform.os || arch != platform.architecture {
        return Err(invalid(dir, format!("its configuration is for {os}/{arch}, but the release is for {platform}; pass a base for {platform}")));
    }
    let diff_ids = config.rootfs().diff_ids();
    if diff_ids.len() != manifest.layers().len() {
        return Err(invalid(dir, format!("the manifest lists {} layers but the configuration {} diff_ids", manifest.layers().len(), diff_ids.len())));
    }

    let mut layers = Vec::with_capacity(diff_ids.len());
    for (descriptor, diff_id) in manifest.layers().iter().zip(diff_ids) {
        layers.push(import_layer(dir, descriptor, diff_id, docker, layout)?);
    }
    tracing::info!(base = %dir.display(), layers = layers.len(), "base image imported");
    Ok(BaseImage { layers, config: Some(config) })
}

/// Picks the manifest for `platform`, looking one level into nested indexes.
fn select_manifest(dir: &Path, entries: &[Descriptor], platform: &Platform) -> Result<Descriptor, BaseError> {
    let mut manifests = Vec::new();
    for entry in entries {
        match entry.media_type().as_ref() {
            OCI_MANIFEST | DOCKER_MANIFEST => manifests.push(entry.clone()),
            OCI_INDEX | DOCKER_MANIFEST_LIST => {
                let nested: ImageIndex = parse_json(dir, &read_blob(dir, entry)?, "a nested index")?;
                manifests.extend(nested.manifests().iter().filter(|d| {
                    matches!(d.media_type().as_ref(), OCI_MANIFEST | DOCKER_MANIFEST)
                }).cloned());
            }
            _ => {}
        }
    }
    let matches = |descriptor: &Descriptor| match descriptor.platform() {
        None => true,
        Some(found) => {
            found.os().to_string() == platform.os
                && found.architecture().to_string() == platform.architecture
                && (platform.variant.is_none() || found.variant() == &platform.variant)
        }
    };
    let mut candidates: Vec<&Descriptor> = manifests.iter().filter(|d| matches(d)).collect();
    match candidates.len() {
        1 => Ok(candidates.remove(0).clone()),
        0 => {
            let available: Vec<String> = manifests
                .iter()
                .filter_map(|d| d.platform().as_ref().map(|p| format!("{}/{}", p.os(), p.architecture())))
                .collect();
            let available = if available.is_empty() { "no image manifest".to_owned() } else { available.join(", ") };
            Err(BaseError::NoPlatform { path: dir.to_owned(), platform: platform.clone(), available })
        }
        count => Err(invalid(dir, format!("{count} manifests match {platform}; keep one image in the base layout"))),
    }
}

/// Copies one layer into `layout` after checking its media type,
/// compression, digest, size and `diff_id`.
fn import_layer(dir: &Path, descriptor: &Descriptor, diff_id: &str, docker: bool, layout: &LayoutWriter) -> Result<Layer, BaseError> {
    let media_type = descriptor.media_type().to_string();
    let digest = descriptor.digest().to_string();
    let Some((declared, family)) = layer_media_type_codec(&media_type) else {
        return Err(invalid(dir, format!("layer {digest} has media type {media_type}, which is not a tar, gzip or zstd layer")));
    };
    if docker && family == MediaTypeFamily::Oci {
        return Err(BaseError::DockerManifestLayer { path: dir.to_owned(), digest, media_type });
    }
    let path = blob_path(dir, descriptor)?;
    let mut file = File::open(&path).map_err(|source| BaseError::Read { path: path.clone(), source })?;
    let mut magic = [0u8; 4];
    let read = read_prefix(&mut file, &mut magic).map_err(|source| BaseError::Read { path: path.clone(), source })?;
    let found = Compression::detect(&magic[..read]);
    if found != declared {
        return Err(BaseError::CompressionMismatch { path: dir.to_owned(), digest, media_type, found: found.name() });
    }

    // Copy the blob as it is, hashing it on the way.
    let mut writer = layout.blob_writer()?;
    let mut source = io::Cursor::new(magic[..read].to_vec()).chain(file.take(descriptor.size().saturating_add(1)));
    io::copy(&mut source, writer.writer()).map_err(|source| BaseError::Read { path: path.clone(), source })?;
    let blob = writer.finish()?;
    let expected = descriptor.digest().digest();
    if blob.digest.to_hex() != expected || blob.size != descriptor.size() {
        let detail = format!("expected {} bytes with sha256 {expected}, found {} bytes with sha256 {}", descriptor.size(), blob.size, blob.digest);
        return Err(BaseError::BlobMismatch { path: dir.to_owned(), digest, detail });
    }

    // Decompress the copy to check the diff_id the configuration lists.
    let copy = layout.blob_path(&blob.digest);
    let reader = File::open(&copy).map_err(|source| BaseError::Read { path: copy.clone(), source })?;
    let mut hasher = HashingWriter::new(io::sink());
    let mut plain = decoder(declared, reader).map_err(|source| BaseError::Read { path: path.clone(), source })?;
    io::copy(&mut plain, &mut hasher).map_err(|e| invalid(dir, format!("layer {digest} does not decompress as {}: {e}", declared.name())))?;
    let (_, uncompressed) = hasher.finish();
    let diff = format!("sha256:{}", uncompressed.digest);
    if diff != diff_id {
        return Err(invalid(dir, format!("layer {digest} decompresses to {diff}, but the configuration lists diff_id {diff_id}")));
    }
    Ok(Layer { blob, diff_id: uncompressed.digest, media_type: declared.oci_layer_media_type() })
}

/// Recompresses a root file system tarball into one layer.
fn import_tarball(path: &Path, layout: &LayoutWriter, compression: Compression) -> Result<BaseImage, BaseError> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let declared = if name.ends_with(".tar.gz") || name.ends_with(".tgz") {
        Compression::Gzip
    } else if name.ends_with(".tar.zst") || name.ends_with(".tar.zstd") || name.ends_with(".tzst") {
        Compression::Zstd
    } else if name.ends_with(".tar") {
        Compression::None
    } else {
        return Err(invalid(path, "name a root file system tarball .tar, .tar.gz, .tgz or .tar.zst, after its compression"));
    };
    let read_error = |source| BaseError::Read { path: path.to_owned(), source };
    let mut file = File::open(path).map_err(read_error)?;
    let mut magic = [0u8; 4];
    let read = read_prefix(&mut file, &mut magic).map_err(read_error)?;
    let found = Compression::detect(&magic[..read]);
    if found != declared {
        return Err(BaseError::TarballMismatch {
            path: path.to_owned(),
            declared: declared.name(),
            media_type: declared.oci_layer_media_type().to_string(),
            found: found.name(),
        });
    }
    let compressed = io::Cursor::new(magic[..read].to_vec()).chain(file);
    let mut plain = decoder(declared, compressed).map_err(read_error)?;

    // A ustar or GNU tar header has "ustar" at offset 257 of its first block.
    let mut first_block = vec![0u8; 512];
    let got = read_prefix(&mut plain, &mut first_block).map_err(read_error)?;
    if got < 512 || &first_block[257..262] != b"ustar" {
        return Err(invalid(path, "it is not a ustar, GNU or PAX tar archive after decompression"));
    }

    let mut writer = layout.blob_writer()?;
    let encoder = Encoder::new(compression, writer.writer()).map_err(read_error)?;
    let mut hashed = HashingWriter::new(encoder);
    hashed.write_all(&first_block).map_err(read_error)?;
    io::copy(&mut plain, &mut hashed).map_err(read_error)?;
    let (encoder, uncompressed) = hashed.finish();
    encoder.finish().and_then(|inner| inner.flush()).map_err(read_error)?;
    let blob = writer.finish()?;
    tracing::info!(base = %path.display(), digest = %blob.digest, "base tarball imported");
    let layer = Layer { blob, diff_id: uncompressed.digest, media_type: compression.oci_layer_media_type() };
    Ok(BaseImage { layers: vec![layer], config: None })
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn read_prefix(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..])? {
            0 => break,
            read => filled += read,
        }
    }
    Ok(filled)
}

/// Path of a descriptor's blob; only SHA-256 digests are supported.
fn blob_path(dir: &Path, descriptor: &Descriptor) -> Result<PathBuf, BaseError> {
    let digest = descriptor.digest();
    let hex = digest.digest();
    if digest.algorithm().to_string() != "sha256" || hex.parse::<Sha256Digest>().is_err() {
        return Err(invalid(dir, format!("blob {digest} is not a sha256 digest in lowercase hex; only sha256 blobs are supported")));
    }
    Ok(dir.join("blobs/sha256").join(hex))
}

/// Reads a JSON blob and checks it against its descriptor.
fn read_blob(dir: &Path, descriptor: &Descriptor) -> Result<Vec<u8>, BaseError> {
    let path = blob_path(dir, descriptor)?;
    if descriptor.size() > MAX_JSON_BYTES {
        return Err(invalid(dir, format!("blob {} is {} bytes, more than the {MAX_JSON_BYTES} bytes allowed for a manifest, index or configuration", descriptor.digest(), descriptor.size())));
    }
    let bytes = read_bounded(dir, &path)?;
    let actual = hex::encode(Sha256::digest(&bytes));
    if actual != descriptor.digest().digest() || bytes.len() as u64 != descriptor.size() {
        let detail = format!("expected {} bytes, found {} bytes with sha256 {actual}", descriptor.size(), bytes.len());
        return Err(BaseError::BlobMismatch { path: dir.to_owned(), digest: descriptor.digest().to_string(), detail });
    }
    Ok(bytes)
}

fn read_bounded(dir: &Path, path: &Path) -> Result<Vec<u8>, BaseError> {
    let file = File::open(path).map_err(|source| BaseError::Read { path: path.to_owned(), source })?;
    let mut bytes = Vec::new();
    file.take(MAX_JSON_BYTES + 1).read_to_end(&mut bytes).map_err(|source| BaseError::Read { path: path.to_owned(), source })?;
    if bytes.len() as u64 > MAX_JSON_BYTES {
        return Err(invalid(dir, format!("{} is larger than {MAX_JSON_BYTES} bytes", path.display())));
    }
    Ok(bytes)
}

fn parse_json<T: serde::de::DeserializeOwned>(dir: &Path, bytes: &[u8], document: &str) -> Result<T, BaseError> {
    serde_json::from_slice(bytes).map_err(|e| invalid(dir, format!("{document} is not valid OCI JSON: {e}")))
}
