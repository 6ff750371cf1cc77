//! Cross builds: the target architecture of a release and the CMake
//! toolchain file that builds the workspace for it.
//!
//! Architectures use Rust's names (`x86_64`, `aarch64`), as the manifest and
//! `tenderd`'s configuration do. The toolchains are Debian's cross compilers
//! (`crossbuild-essential-arm64` gives `aarch64-linux-gnu-g++`), so a cross
//! build links against the same GCC runtime as a Debian or Ubuntu robot.

use std::collections::BTreeMap;
use std::path::PathBuf;

/// Architectures a release may target.
pub const ARCHITECTURES: [&str; 5] = ["x86_64", "aarch64", "arm", "riscv64", "powerpc64"];

/// The recipe's `[cross]` section.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CrossSettings {
    /// Architecture built when the command line names none; `None` for the
    /// build host's.
    pub target: Option<String>,
    /// CMake toolchain file by architecture, as absolute or recipe-relative
    /// paths that exist.
    pub toolchains: BTreeMap<String, PathBuf>,
}

/// The architecture and toolchain of a release build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildTarget {
    pub architecture: String,
    /// `None` for a native build.
    pub toolchain: Option<PathBuf>,
}

impl BuildTarget {
    /// Returns the build host's architecture, built natively.
    pub fn host() -> Self {
        Self { architecture: std::env::consts::ARCH.to_owned(), toolchain: None }
    }

    pub fn is_cross(&self) -> bool {
        self.toolchain.is_some()
    }
}

/// Checks an architecture name; the error is the reason, for messages.
pub fn check_architecture(name: &str) -> Result<(), String> {
    if ARCHITECTURES.contains(&name) {
        Ok(())
    } else {
        Err(format!("use one of {}", ARCHITECTURES.join(", ")))
    }
}

/// Failures to choose a target.
#[derive(Debug, thiserror::Error)]
pub enum CrossError {
    #[error("unknown target {target:?}: {reason}")]
    Unknown { target: String, reason: String },
    #[error("recipe {} has no toolchain for target {target}; add `{target} = \"FILE.cmake\"` under [cross.toolchains] (for aarch64, a CMake toolchain file that names aarch64-linux-gnu-gcc and aarch64-linux-gnu-g++ from Debian's crossbuild-essential-arm64)", recipe.display())]
    NoToolchain { recipe: PathBuf, target: String },
}

/// Chooses the target: `requested` from the command line, else the recipe's
/// `cross.target`, else the host. A target other than the host needs a
/// toolchain; the host's own toolchain entry, if any, is used too.
pub fn build_target(settings: &CrossSettings, requested: Option<&str>, recipe: &std::path::Path) -> Result<BuildTarget, CrossError> {
    let Some(target) = requested.or(settings.target.as_deref()) else {
        return Ok(BuildTarget::host());
    };
    check_architecture(target).map_err(|reason| CrossError::Unknown { target: target.to_owned(), reason })?;
    match settings.toolchains.get(target) {
        Some(toolchain) => Ok(BuildTarget { architecture: target.to_owned(), toolchain: Some(toolchain.clone()) }),
        None if target == std::env::consts::ARCH => Ok(BuildTarget::host()),
        None => Err(CrossError::NoToolchain { recipe: recipe.to_owned(), target: target.to_owned() }),
    }
}

/// Returns the target of a tree built elsewhere for `architecture`: the
/// architecture is recorded and no toolchain is needed.
pub fn label_target(architecture: &str) -> Result<BuildTarget, CrossError> {
    check_architecture(architecture).map_err(|reason| CrossError::Unknown { target: architecture.to_owned(), reason })?;
    Ok(BuildTarget { architecture: architecture.to_owned(), toolchain: None })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> CrossSettings {
        CrossSettings {
            target: None,
            toolchains: BTreeMap::from([("aarch64".to_owned(), PathBuf::from("/toolchains/aarch64.cmake"))]),
        }
    }

    #[test]
    fn no_target_builds_for_the_host() {
        assert_eq!(build_target(&settings(), None, "r.toml".as_ref()).expect("host"), BuildTarget::host());
    }

    #[test]
    fn requested_target_takes_its_toolchain() {
        let target = build_target(&settings(), Some("aarch64"), "r.toml".as_ref()).expect("aarch64");
        assert_eq!(target.architecture, "aarch64");
        assert!(target.is_cross());
    }

    #[test]
    fn prebuilt_tree_is_labelled_without_toolchain() {
        let target = label_target("aarch64").expect("label");
        assert_eq!((target.architecture.as_str(), target.is_cross()), ("aarch64", false));
        assert!(label_target("arm64").is_err());
    }

    #[test]
    fn target_without_toolchain_is_rejected() {
        let error = build_target(&settings(), Some("riscv64"), "r.toml".as_ref()).expect_err("no toolchain").to_string();
        assert!(error.contains("no toolchain for target riscv64"), "{error}");
        let error = build_target(&settings(), Some("arm64"), "r.toml".as_ref()).expect_err("unknown").to_string();
        assert!(error.contains("use one of"), "{error}");
    }
}
