//! The recipe's optional `[image]` section: how a container runs the
//! release. Validation happens in [`crate::recipe`], so a loaded recipe's
//! settings are always valid.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use crate::oci::compress::Compression;

/// Labels that `tender image` sets from the release; a recipe may not set them.
pub const RESERVED_LABELS: &[&str] =
    &["org.opencontainers.image.version", "org.opencontainers.image.revision", "org.opencontainers.image.created"];

/// User of the container when the recipe names none.
pub const DEFAULT_USER: &str = "1000:1000";

/// Validated image settings of a recipe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSettings {
    /// Environment as `KEY=VALUE`, in recipe order.
    pub env: Vec<String>,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    /// Working directory; `None` means the release's runtime path.
    pub workdir: Option<String>,
    /// `UID[:GID]` or `NAME[:GROUP]`, never root.
    pub user: String,
    /// Labels added to the standard ones.
    pub labels: BTreeMap<String, String>,
    /// Base image below the workspace layer, resolved against the recipe's
    /// directory: an OCI layout directory or a root file system tarball.
    pub base: Option<PathBuf>,
    pub compression: Compression,
}

impl Default for ImageSettings {
    fn default() -> Self {
        Self {
            env: Vec::new(),
            entrypoint: None,
            cmd: None,
            workdir: None,
            user: DEFAULT_USER.to_owned(),
            labels: BTreeMap::new(),
            base: None,
            compression: Compression::Gzip,
        }
    }
}

/// The raw TOML shape of `[image]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ImageFile {
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    #[serde(default)]
    pub workdir: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub base: Option<PathBuf>,
    #[serde(default)]
    pub compression: Option<String>,
}

/// Checks an environment entry: `KEY=VALUE` with a POSIX-style name.
pub fn check_env(entry: &str) -> Result<(), String> {
    let Some((key, _)) = entry.split_once('=') else {
        return Err("write it as KEY=VALUE, such as \"ROS_DOMAIN_ID=42\"".to_owned());
    };
    let valid_start = key.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if !valid_start || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err("the name must be ASCII letters, digits and '_', not starting with a digit".to_owned());
    }
    Ok(())
}

/// Checks a container user: `USER[:GROUP]`, each a number or a name, and
/// not root (uid 0 or the name `root`).
pub fn check_user(user: &str) -> Result<(), String> {
    let (name, group) = match user.split_once(':') {
        Some((name, group)) => (name, Some(group)),
        None => (user, None),
    };
    let valid = |part: &str| {
        !part.is_empty() && part.len() <= 32 && part.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    };
    if !valid(name) || group.is_some_and(|g| !valid(g)) {
        return Err("write UID[:GID] or NAME[:GROUP], such as \"1000:1000\"".to_owned());
    }
    if name == "root" || name.parse::<u32>().is_ok_and(|uid| uid == 0) {
        return Err("the container must not run as root; use an unprivileged user such as \"1000:1000\"".to_owned());
    }
    Ok(())
}

/// Checks a label key: the OCI annotation rules ask for reverse domain
/// notation, so any printable ASCII without spaces is accepted.
pub fn check_label(key: &str) -> Result<(), String> {
    if key.is_empty() || !key.chars().all(|c| c.is_ascii_graphic()) {
        return Err("use printable ASCII without spaces, such as \"org.opencontainers.image.vendor\"".to_owned());
    }
    if RESERVED_LABELS.contains(&key) {
        return Err("tender sets this label from the release; remove it from the recipe".to_owned());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_needs_key_and_value() {
        assert!(check_env("ROS_DOMAIN_ID=42").is_ok());
        assert!(check_env("EMPTY=").is_ok());
        assert!(check_env("ROS_DOMAIN_ID").is_err());
        assert!(check_env("1X=2").is_err());
        assert!(check_env("A B=2").is_err());
    }

    #[test]
    fn user_rejects_root() {
        assert!(check_user("1000:1000").is_ok());
        assert!(check_user("ecar").is_ok());
        assert!(check_user("0").is_err());
        assert!(check_user("0:0").is_err());
        assert!(check_user("root:root").is_err());
        assert!(check_user("1000:").is_err());
    }

    #[test]
    fn standard_labels_are_reserved() {
        assert!(check_label("org.opencontainers.image.vendor").is_ok());
        assert!(check_label("org.opencontainers.image.version").is_err());
        assert!(check_label("has space").is_err());
    }
}
