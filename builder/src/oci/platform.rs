//! Image platforms (`OS/ARCH[/VARIANT]`) as OCI and Go name them, and the
//! mapping from the Rust architecture names that manifests record.

use std::fmt;
use std::str::FromStr;

/// An image platform such as `linux/arm64` or `linux/arm/v7`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Platform {
    pub os: String,
    /// GOARCH name: `amd64`, `arm64`, `arm`, `riscv64`…
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    /// Returns the Linux platform of a release built for the Rust architecture
    /// `arch` (`std::env::consts::ARCH` of the build), or `None` for an
    /// architecture this mapping does not know.
    pub fn from_rust_arch(arch: &str) -> Option<Self> {
        let (architecture, variant) = match arch {
            "x86_64" => ("amd64", None),
            "x86" => ("386", None),
            "aarch64" => ("arm64", None),
            // Rust's `arm` targets that run ROS 2 are ARMv7 with hard float.
            "arm" => ("arm", Some("v7")),
            "riscv64" => ("riscv64", None),
            "s390x" => ("s390x", None),
            "loongarch64" => ("loong64", None),
            _ => return None,
        };
        Some(Self { os: "linux".to_owned(), architecture: architecture.to_owned(), variant: variant.map(str::to_owned) })
    }

    /// Converts this platform to its OCI descriptor form.
    pub fn to_oci(&self) -> oci_spec::image::Platform {
        let mut platform = oci_spec::image::Platform::default();
        platform.set_os(self.os.as_str().into());
        platform.set_architecture(self.architecture.as_str().into());
        platform.set_variant(self.variant.clone());
        platform
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(variant) = &self.variant {
            write!(f, "/{variant}")?;
        }
        Ok(())
    }
}

impl FromStr for Platform {
    type Err = String;

    /// Parses `OS/ARCH` or `OS/ARCH/VARIANT`, each part lowercase letters and digits.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = text.split('/').collect();
        let valid = |part: &&str| !part.is_empty() && part.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        if !(2..=3).contains(&parts.len()) || !parts.iter().all(valid) {
            return Err(format!("invalid platform {text:?}; write OS/ARCH or OS/ARCH/VARIANT, such as linux/arm64 or linux/arm/v7"));
        }
        Ok(Self { os: parts[0].to_owned(), architecture: parts[1].to_owned(), variant: parts.get(2).map(|v| (*v).to_owned()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_arch_maps_to_goarch() {
        assert_eq!(Platform::from_rust_arch("x86_64").map(|p| p.to_string()).as_deref(), Some("linux/amd64"));
        assert_eq!(Platform::from_rust_arch("aarch64").map(|p| p.to_string()).as_deref(), Some("linux/arm64"));
        assert_eq!(Platform::from_rust_arch("arm").map(|p| p.to_string()).as_deref(), Some("linux/arm/v7"));
        assert_eq!(Platform::from_rust_arch("m68k"), None);
    }

    #[test]
    fn platform_parses_and_rejects() {
        let platform: Platform = "linux/arm/v7".parse().expect("valid");
        assert_eq!(platform.variant.as_deref(), Some("v7"));
        assert!("linux".parse::<Platform>().is_err());
        assert!("linux/ARM64".parse::<Platform>().is_err());
        assert!("linux//v7".parse::<Platform>().is_err());
    }
}
