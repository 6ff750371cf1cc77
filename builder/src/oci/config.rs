//! The image configuration, image manifest and image index documents,
//! built with the `oci-spec` types (OCI image spec 1.1).
//!
//! Every value comes from the release manifest, the recipe and the base
//! image, never from the clock or the build machine, so the same inputs
//! give the same documents. The creation time is the release's
//! `SOURCE_DATE_EPOCH`.

use std::collections::HashMap;
use std::time::{Duration, UNIX_EPOCH};

use oci_spec::image::{
    Descriptor, History, HistoryBuilder, ImageConfiguration, ImageIndex, ImageIndexBuilder, ImageManifest,
    ImageManifestBuilder, MediaType, RootFs,
};
use oci_spec::OciSpecError;

use crate::oci::base::BaseImage;
use crate::oci::layer::Layer;
use crate::oci::platform::Platform;
use crate::oci::settings::ImageSettings;
use crate::oci::source::Release;

/// Annotation that names an image in `index.json` (the tag of `oci:DIR:TAG`).
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";
pub const VERSION_LABEL: &str = "org.opencontainers.image.version";
pub const REVISION_LABEL: &str = "org.opencontainers.image.revision";
pub const CREATED_LABEL: &str = "org.opencontainers.image.created";
pub const TITLE_LABEL: &str = "org.opencontainers.image.title";

/// Failure to assemble a document; only a missing required field of an
/// oci-spec builder causes it.
#[derive(Debug, thiserror::Error)]
#[error("cannot assemble the OCI {document}: {source}")]
pub struct ConfigError {
    document: &'static str,
    source: OciSpecError,
}

/// Parts of one platform's image.
pub struct ImageParts<'a> {
    pub release: &'a Release,
    pub settings: &'a ImageSettings,
    /// Absolute path the release runs at, such as `/opt/ecar/current`.
    pub runtime_path: &'a str,
    pub platform: &'a Platform,
    pub base: Option<&'a BaseImage>,
    /// The workspace layer, which goes above the base layers.
    pub layer: &'a Layer,
}

/// `SOURCE_DATE_EPOCH` in RFC 3339, such as `2023-11-14T22:13:20Z`.
pub fn rfc3339(source_date_epoch: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(source_date_epoch)).to_string()
}

/// Builds the image configuration: the base's settings, overridden by the
/// recipe's, the standard labels, and the layer list and history.
pub fn build_config(parts: &ImageParts) -> Result<ImageConfiguration, ConfigError> {
    let manifest = &parts.release.manifest;
    let created = rfc3339(manifest.provenance.source_date_epoch);
    let base_config = parts.base.and_then(|base| base.config.as_ref());
    let inherited = base_config.and_then(|c| c.config().clone()).unwrap_or_default();

    let mut labels: Vec<(String, String)> = Vec::new();
    if let Some(base_labels) = inherited.labels() {
        let mut sorted: Vec<_> = base_labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        sorted.sort();
        labels.extend(sorted);
    }
    labels.push((TITLE_LABEL.to_owned(), manifest.name.clone()));
    labels.extend(parts.settings.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
    labels.push((VERSION_LABEL.to_owned(), manifest.version.to_string()));
    if let Some(commit) = &manifest.provenance.source_commit {
        labels.push((REVISION_LABEL.to_owned(), commit.clone()));
    }
    labels.push((CREATED_LABEL.to_owned(), created.clone()));
    // Later entries win, so the recipe overrides the base and the release overrides both.
    let labels: HashMap<String, String> = labels.into_iter().collect();

    // The recipe's entrypoint replaces the base's and, as in a Dockerfile,
    // drops the base's command with it.
    let (entrypoint, cmd) = match &parts.settings.entrypoint {
        Some(entrypoint) => (Some(entrypoint.clone()), parts.settings.cmd.clone()),
        None => (inherited.entrypoint().clone(), parts.settings.cmd.clone().or_else(|| inherited.cmd().clone())),
    };

    let mut config = inherited.clone();
    config.set_env(Some(merge_env(inherited.env().as_deref().unwrap_or_default(), &parts.settings.env)));
    config.set_entrypoint(entrypoint);
    config.set_cmd(cmd);
    config.set_working_dir(Some(parts.settings.workdir.clone().unwrap_or_else(|| parts.runtime_path.to_owned())));
    config.set_user(Some(parts.settings.user.clone()));
    config.set_labels(Some(labels));

    let mut diff_ids = Vec::new();
    let mut history: Vec<History> = Vec::new();
    if let Some(base) = parts.base {
        diff_ids.extend(base.layers.iter().map(|layer| format!("sha256:{}", layer.diff_id)));
        match base_config.and_then(|c| c.history().clone()) {
            Some(base_history) => history.extend(base_history),
            None => history.push(history_entry(&created, "tender image: base root file system")?),
        }
    }
    diff_ids.push(format!("sha256:{}", parts.layer.diff_id));
    let description = format!("tender image: {} {} at {}", manifest.name, manifest.version, parts.runtime_path);
    history.push(history_entry(&created, &description)?);

    let mut rootfs = RootFs::default();
    rootfs.set_diff_ids(diff_ids);
    let mut image = ImageConfiguration::default();
    image.set_created(Some(created));
    image.set_os(parts.platform.os.as_str().into());
    image.set_architecture(parts.platform.architecture.as_str().into());
    image.set_variant(parts.platform.variant.clone());
    image.set_config(Some(config));
    image.set_rootfs(rootfs);
    image.set_history(Some(history));
    Ok(image)
}

/// Returns `base` with each `KEY=VALUE` of `overrides` replacing the entry
/// with the same key, or appended when there is none.
fn merge_env(base: &[String], overrides: &[String]) -> Vec<String> {
    let key = |entry: &str| entry.split_once('=').map_or(entry, |(k, _)| k).to_owned();
    let mut merged: Vec<String> = base.to_vec();
    for entry in overrides {
        match merged.iter().position(|existing| key(existing) == key(entry)) {
            Some(index) => merged[index] = entry.clone(),
            None => merged.push(entry.clone()),
        }
    }
    merged
}

fn history_entry(created: &str, created_by: &str) -> Result<History, ConfigError> {
    HistoryBuilder::default()
        .created(created.to_owned())
        .created_by(created_by.to_owned())
        .build()
        .map_err(|source| ConfigError { document: "history entry", source })
}

/// Builds an image manifest of a configuration and its layers, base first.
pub fn build_manifest(config: Descriptor, layers: Vec<Descriptor>) -> Result<ImageManifest, ConfigError> {
    ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(config)
        .layers(layers)
        .build()
        .map_err(|source| ConfigError { document: "image manifest", source })
}

/// Builds an image index of `manifests`, for a multi-platform image blob
/// or a layout's `index.json`.
pub fn build_index(manifests: Vec<Descriptor>) -> Result<ImageIndex, ConfigError> {
    ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(manifests)
        .build()
        .map_err(|source| ConfigError { document: "image index", source })
}

/// Returns `descriptor` annotated with `tag` as its reference name.
pub fn with_ref_name(mut descriptor: Descriptor, tag: &str) -> Descriptor {
    descriptor.set_annotations(Some(HashMap::from([(REF_NAME_ANNOTATION.to_owned(), tag.to_owned())])));
    descriptor
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_is_rfc3339_utc() {
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn recipe_env_overrides_base_by_key() {
        let base = ["PATH=/usr/bin".to_owned(), "ROS_DOMAIN_ID=0".to_owned()];
        let merged = merge_env(&base, &["ROS_DOMAIN_ID=42".to_owned(), "ECAR_CONFIG_PATH=/opt/ecar/config".to_owned()]);
        assert_eq!(merged, ["PATH=/usr/bin", "ROS_DOMAIN_ID=42", "ECAR_CONFIG_PATH=/opt/ecar/config"]);
    }
}
