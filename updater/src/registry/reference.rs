//! `oci://HOST[:PORT]/REPOSITORY[:TAG]` references to a Tender repository
//! in an OCI registry, checked against the grammar of the OCI distribution
//! specification 1.1 (repository names and tags).

use std::fmt;

/// URL scheme of Tender's registry references.
pub const SCHEME: &str = "oci://";

/// Tag used when a reference names none.
pub const DEFAULT_TAG: &str = "latest";

/// Errors in an `oci://` reference, each with the value and the fix.
#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    #[error("{text:?} does not start with oci://; write oci://HOST:PORT/REPOSITORY[:TAG]")]
    Scheme { text: String },
    #[error("{text:?} names no registry host; write oci://HOST:PORT/REPOSITORY[:TAG]")]
    NoHost { text: String },
    #[error("{text:?} names no repository; write oci://HOST:PORT/REPOSITORY[:TAG], such as oci://registry.example:5000/ecar/releases")]
    NoRepository { text: String },
    #[error("repository {repository:?} in {text:?} is invalid: use lowercase letters, digits and . _ - between letters or digits, with / between path parts")]
    Repository { text: String, repository: String },
    #[error("tag {tag:?} in {text:?} is invalid: use at most 128 letters, digits, . _ -, not starting with . or -")]
    Tag { text: String, tag: String },
    #[error("host {host:?} in {text:?} is invalid: write HOST or HOST:PORT")]
    Host { text: String, host: String },
}

/// A parsed `oci://` reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// `HOST` or `HOST:PORT`, as written.
    pub host: String,
    pub repository: String,
    pub tag: String,
    /// Whether requests use plain HTTP: only for a host on this machine
    /// (`127.0.0.1`, `localhost`, `[::1]`) or when configured insecure.
    pub plain_http: bool,
}

impl Reference {
    /// Parses `text`. `insecure` allows plain HTTP to any host; without it,
    /// only a host on this machine is reached over plain HTTP.
    pub fn parse(text: &str, insecure: bool) -> Result<Self, ReferenceError> {
        let rest = text.strip_prefix(SCHEME).ok_or_else(|| ReferenceError::Scheme { text: text.to_owned() })?;
        let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
        if host.is_empty() {
            return Err(ReferenceError::NoHost { text: text.to_owned() });
        }
        if !valid_host(host) {
            return Err(ReferenceError::Host { text: text.to_owned(), host: host.to_owned() });
        }
        let path = path.trim_end_matches('/');
        if path.is_empty() {
            return Err(ReferenceError::NoRepository { text: text.to_owned() });
        }
        let (repository, tag) = match path.rsplit_once(':') {
            Some((repository, tag)) if !tag.contains('/') => (repository, tag),
            _ => (path, DEFAULT_TAG),
        };
        if repository.is_empty() {
            return Err(ReferenceError::NoRepository { text: text.to_owned() });
        }
        if !valid_repository(repository) {
            return Err(ReferenceError::Repository { text: text.to_owned(), repository: repository.to_owned() });
        }
        if !valid_tag(tag) {
            return Err(ReferenceError::Tag { text: text.to_owned(), tag: tag.to_owned() });
        }
        Ok(Self {
            host: host.to_owned(),
            repository: repository.to_owned(),
            tag: tag.to_owned(),
            plain_http: is_local_host(host) || insecure,
        })
    }

    /// Returns `http://HOST` or `https://HOST`.
    pub fn base_url(&self) -> String {
        let scheme = if self.plain_http { "http" } else { "https" };
        format!("{scheme}://{}", self.host)
    }

    /// Returns the URL of the blob `digest` (`sha256:HEX`).
    pub fn blob_url(&self, digest: &str) -> String {
        format!("{}/v2/{}/blobs/{digest}", self.base_url(), self.repository)
    }

    /// Returns the URL of the manifest `tag_or_digest`.
    pub fn manifest_url(&self, tag_or_digest: &str) -> String {
        format!("{}/v2/{}/manifests/{tag_or_digest}", self.base_url(), self.repository)
    }

    /// Returns the URL that starts a blob upload.
    pub fn upload_url(&self) -> String {
        format!("{}/v2/{}/blobs/uploads/", self.base_url(), self.repository)
    }

    /// Returns the same reference with another tag.
    pub fn with_tag(&self, tag: &str) -> Self {
        Self { tag: tag.to_owned(), ..self.clone() }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME}{}/{}:{}", self.host, self.repository, self.tag)
    }
}

/// Returns whether `text` is an `oci://` reference rather than a path or URL.
pub fn is_registry_reference(text: &str) -> bool {
    text.starts_with(SCHEME)
}

fn is_local_host(host: &str) -> bool {
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !name.ends_with(':') => name,
        _ => host,
    };
    matches!(name, "127.0.0.1" | "localhost" | "[::1]")
}

fn valid_host(host: &str) -> bool {
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) if !host.ends_with(']') => (name, Some(port)),
        _ => (host, None),
    };
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    let name_ok = if let Some(inner) = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        !inner.is_empty() && inner.bytes().all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
    } else {
        !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
    };
    port_ok && name_ok
}

/// Checks the repository name grammar: path components of
/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*` separated by `/`.
fn valid_repository(repository: &str) -> bool {
    repository.len() <= 255
        && repository.split('/').all(|component| {
            let bytes = component.as_bytes();
            let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
            let separator = |b: u8| b == b'.' || b == b'_' || b == b'-';
            !bytes.is_empty()
                && alnum(bytes[0])
                && alnum(bytes[bytes.len() - 1])
                && bytes.iter().all(|&b| alnum(b) || separator(b))
                && !component.contains("..")
                && !component.contains("___")
                && !bytes.windows(2).any(|pair| separator(pair[0]) && separator(pair[1]) && pair != b"__" && pair != b"--")
        })
}

/// Checks the tag grammar `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
fn valid_tag(tag: &str) -> bool {
    let bytes = tag.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 128
        && (bytes[0].is_ascii_alphanumeric() || bytes[0] == b'_')
        && bytes.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_with_port_and_tag() {
        let reference = Reference::parse("oci://127.0.0.1:5000/ecar/releases:1.0.1", false).expect("valid");
        assert_eq!(reference.host, "127.0.0.1:5000");
        assert_eq!(reference.repository, "ecar/releases");
        assert_eq!(reference.tag, "1.0.1");
        assert!(reference.plain_http);
        assert_eq!(reference.blob_url("sha256:ab"), "http://127.0.0.1:5000/v2/ecar/releases/blobs/sha256:ab");
    }

    #[test]
    fn reference_defaults_to_latest_and_https() {
        let reference = Reference::parse("oci://registry.example/ecar", false).expect("valid");
        assert_eq!(reference.tag, DEFAULT_TAG);
        assert!(!reference.plain_http);
        assert_eq!(reference.base_url(), "https://registry.example");
        assert!(Reference::parse("oci://registry.example/ecar", true).expect("valid").plain_http);
        assert!(Reference::parse("oci://localhost:5000/ecar", false).expect("valid").plain_http);
    }

    #[test]
    fn reference_errors_name_the_value() {
        for (text, expected) in [
            ("oci://127.0.0.1:5000", "names no repository"),
            ("oci://127.0.0.1:5000/", "names no repository"),
            ("oci:///ecar", "names no registry host"),
            ("http://127.0.0.1/ecar", "does not start with oci://"),
            ("oci://127.0.0.1:5000/Ecar", "repository \"Ecar\""),
            ("oci://127.0.0.1:5000/ecar:-x", "tag \"-x\""),
            ("oci://127.0.0.1:port/ecar", "host \"127.0.0.1:port\""),
        ] {
            let error = Reference::parse(text, false).expect_err(text).to_string();
            assert!(error.contains(expected), "{text}: {error}");
        }
    }
}
