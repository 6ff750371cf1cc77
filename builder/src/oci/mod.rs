//! OCI container images of a release, for hosts that run the workspace with
//! Docker, Podman or docker compose instead of `tenderd`.
//!
//! `tender image` reads what `tender release` wrote and writes an OCI image
//! layout directory, optionally with a tar archive of it. Each step has
//! its own module:
//!
//! - [`source`] finds the release's manifest and chunk store;
//! - [`base`] imports and checks an optional base image;
//! - [`layer`] writes the workspace layer as a deterministic tar
//!   ([`tarball`]) compressed with gzip or zstd ([`compress`]);
//! - [`config`] builds the configuration, manifest and index documents;
//! - [`layout`] writes the blobs and commits the directory, and
//!   [`archive`] packs it.
//!
//! Several releases of one version, one per architecture, give a
//! multi-platform image index.
//!
//! Nothing depends on the clock or the build machine, so the same releases,
//! recipe and options give the same image digest.

pub mod archive;
pub mod base;
pub mod compress;
pub mod config;
pub mod layer;
pub mod layout;
pub mod platform;
pub mod settings;
pub mod source;
pub mod tarball;

#[cfg(test)]
mod tests;

use std::path::PathBuf;

use oci_spec::image::MediaType;

use crate::oci::archive::{write_archive, ArchiveError};
use crate::oci::base::{import_base, BaseError, BaseSource};
use crate::oci::compress::Compression;
use crate::oci::config::{build_config, build_index, build_manifest, with_ref_name, ConfigError, ImageParts};
use crate::oci::layer::{write_release_layer, LayerError};
use crate::oci::layout::{LayoutError, LayoutWriter};
use crate::oci::platform::Platform;
use crate::oci::source::{Release, SourceError};
use crate::recipe::Recipe;

/// Failures of `tender image`.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(transparent)]
    Source(#[from] SourceError),

    #[error(transparent)]
    Layout(#[from] LayoutError),

    #[error(transparent)]
    Layer(#[from] LayerError),

    #[error(transparent)]
    Base(#[from] BaseError),

    #[error(transparent)]
    Config(#[from] ConfigError),

    #[error(transparent)]
    Archive(#[from] ArchiveError),

    #[error("release {} is for architecture {architecture}, which has no known OCI platform; pass --platform OS/ARCH for it", path.display())]
    UnknownArchitecture { path: PathBuf, architecture: String },

    #[error("--platform {platform} does not match release {}, which is built for {architecture}; give the platforms in the order of the --release options", path.display())]
    PlatformMismatch { path: PathBuf, platform: Platform, architecture: String },

    #[error("two releases are for {platform}; an image index holds one image per platform")]
    DuplicatePlatform { platform: Platform },

    #[error("release {} installs below {found}, but the recipe's prefix is {expected}; pass the recipe the release was built from", path.display())]
    PrefixMismatch { path: PathBuf, found: String, expected: String },

    #[error("tag {tag:?} is not a valid image tag (1 to 128 ASCII letters, digits, '_', '.' or '-', not starting with '.' or '-'); pass --tag")]
    InvalidTag { tag: String },

    #[error("no release given; pass --release at least once")]
    NoRelease,

    #[error("base {} is a root file system tarball, which is built for one architecture, but the image has {count} platforms; pass an OCI layout base with one image per platform", path.display())]
    TarballForSeveralPlatforms { path: PathBuf, count: usize },
}

/// One release to put in the image.
#[derive(Debug, Clone)]
pub struct ReleaseInput {
    /// Output directory of `tender release`, its `repo/`, or a manifest file.
    pub path: PathBuf,
    /// Platform of its image; by default the manifest's architecture on Linux.
    pub platform: Option<Platform>,
}

/// Everything `tender image` needs.
#[derive(Debug, Clone)]
pub struct ImageRequest {
    pub recipe: Recipe,
    pub version: semver::Version,
    pub releases: Vec<ReleaseInput>,
    /// Layout directory to write; an earlier layout there is replaced.
    pub out: PathBuf,
    /// Tar archive of the layout to write as well.
    pub archive: Option<PathBuf>,
    /// Tag of the image in the layout; by default the version.
    pub tag: Option<String>,
    /// Overrides the recipe's `image.compression`.
    pub compression: Option<Compression>,
    /// Overrides the recipe's `image.base`.
    pub base: Option<PathBuf>,
}

/// The image of one platform.
#[derive(Debug, Clone)]
pub struct PlatformImage {
    pub platform: Platform,
    /// `sha256:HEX` of the image manifest.
    pub manifest_digest: String,
    /// `sha256:HEX` and size of the workspace layer.
    pub layer_digest: String,
    pub layer_size: u64,
    pub base_layers: usize,
}

/// Paths and digests of the image that `tender image` wrote.
#[derive(Debug, Clone)]
pub struct ImageSummary {
    pub layout: PathBuf,
    pub tag: String,
    /// `sha256:HEX` of what the tag names: the manifest of a single-platform
    /// image, or the image index of several platforms.
    pub digest: String,
    pub media_type: String,
    pub compression: Compression,
    pub images: Vec<PlatformImage>,
    /// The archive and its size in bytes.
    pub archive: Option<(PathBuf, u64)>,
}

/// Builds the image of `request` and commits the layout directory, then
/// writes the archive when one is requested.
pub fn build_image(request: &ImageRequest) -> Result<ImageSummary, ImageError> {
    if request.releases.is_empty() {
        return Err(ImageError::NoRelease);
    }
    let recipe = &request.recipe;
    let tag = request.tag.clone().unwrap_or_else(|| request.version.to_string());
    check_tag(&tag)?;
    let compression = request.compression.unwrap_or(recipe.image.compression);
    let base_source = match request.base.as_ref().or(recipe.image.base.as_ref()) {
        Some(path) => Some(BaseSource::from_path(path)?),
        None => None,
    };

    let mut releases = Vec::new();
    for input in &request.releases {
        let release = Release::open(&input.path, &recipe.name, &request.version)?;
        if release.manifest.prefix != recipe.prefix {
            return Err(ImageError::PrefixMismatch {
                path: release.manifest_path,
                found: release.manifest.prefix,
                expected: recipe.prefix.clone(),
            });
        }
        let platform = release_platform(&release, input.platform.as_ref())?;
        if releases.iter().any(|(_, other)| other == &platform) {
            return Err(ImageError::DuplicatePlatform { platform });
        }
        releases.push((release, platform));
    }

    if let Some(BaseSource::Rootfs(path)) = &base_source {
        if releases.len() > 1 {
            return Err(ImageError::TarballForSeveralPlatforms { path: path.clone(), count: releases.len() });
        }
    }

    let layout = LayoutWriter::create(&request.out)?;
    let root = recipe.runtime_path.trim_start_matches('/');
    let mut images = Vec::new();
    let mut descriptors = Vec::new();
    for (release, platform) in &releases {
        let base = match &base_source {
            Some(source) => Some(import_base(source, platform, &layout, compression)?),
            None => None,
        };
        let layer = write_release_layer(&layout, release, root, compression)?;
        let parts = ImageParts {
            release,
            settings: &recipe.image,
            runtime_path: &recipe.runtime_path,
            platform,
            base: base.as_ref(),
            layer: &layer,
        };
        let config = build_config(&parts)?;
        let config_descriptor = layout.write_json(&config, MediaType::ImageConfig, "image configuration")?;
        let mut layers: Vec<_> = base.iter().flat_map(|b| b.layers.iter()).map(|l| l.blob.descriptor(l.media_type.clone())).collect();
        let base_layers = layers.len();
        layers.push(layer.blob.descriptor(layer.media_type.clone()));
        let manifest = build_manifest(config_descriptor, layers)?;
        let mut descriptor = layout.write_json(&manifest, MediaType::ImageManifest, "image manifest")?;
        descriptor.set_platform(Some(platform.to_oci()));
        tracing::info!(%platform, manifest = %descriptor.digest(), layer = %layer.blob.digest, "image written");
        images.push(PlatformImage {
            platform: platform.clone(),
            manifest_digest: descriptor.digest().to_string(),
            layer_digest: layer.blob.oci_digest().to_string(),
            layer_size: layer.blob.size,
            base_layers,
        });
        descriptors.push(descriptor);
    }

    // One platform: index.json names its manifest. Several: index.json
    // names an image index blob that lists one manifest per platform.
    let tagged = if descriptors.len() == 1 {
        descriptors.remove(0)
    } else {
        let index = build_index(descriptors)?;
        layout.write_json(&index, MediaType::ImageIndex, "image index")?
    };
    let digest = tagged.digest().to_string();
    let media_type = tagged.media_type().to_string();
    let top = build_index(vec![with_ref_name(tagged, &tag)])?;
    let out = layout.commit(&top)?;

    let archive = match &request.archive {
        Some(path) => {
            let mtime = releases.iter().map(|(r, _)| r.manifest.provenance.source_date_epoch).max().unwrap_or(0);
            let size = write_archive(&out, path, mtime)?;
            Some((path.clone(), size))
        }
        None => None,
    };
    Ok(ImageSummary { layout: out, tag, digest, media_type, compression, images, archive })
}

/// Returns the platform of a release: the requested one, checked against the
/// manifest's architecture, or the one the architecture maps to.
fn release_platform(release: &Release, requested: Option<&Platform>) -> Result<Platform, ImageError> {
    let architecture = &release.manifest.architecture;
    let derived = Platform::from_rust_arch(architecture);
    match (requested, derived) {
        (Some(platform), Some(derived)) if platform.architecture != derived.architecture => Err(ImageError::PlatformMismatch {
            path: release.manifest_path.clone(),
            platform: platform.clone(),
            architecture: architecture.clone(),
        }),
        (Some(platform), _) => Ok(platform.clone()),
        (None, Some(derived)) => Ok(derived),
        (None, None) => {
            Err(ImageError::UnknownArchitecture { path: release.manifest_path.clone(), architecture: architecture.clone() })
        }
    }
}

/// Checks a tag against the grammar Docker registries accept:
/// `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
fn check_tag(tag: &str) -> Result<(), ImageError> {
    let valid_start = tag.chars().next().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    let valid_rest = tag.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if !valid_start || !valid_rest || tag.len() > 128 {
        return Err(ImageError::InvalidTag { tag: tag.to_owned() });
    }
    Ok(())
}
