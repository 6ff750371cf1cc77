//! Fetchers of repository files: over HTTP or from a local directory.
//!
//! Every fetch takes a byte cap, so a server that sends endless data costs at
//! most that cap (TUF 5.3.3, 5.4.1, 5.5.1, 5.6.1 and 5.7.3 each download "up
//! to" a number of bytes). Names are relative and percent-encoded, as
//! [`super::names`] builds them.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use super::names::percent_decode;

/// Errors of fetching one file.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// HTTP 404 or a missing file. The root update loop ends on it (5.3.3).
    #[error("{location} was not found")]
    NotFound { location: String },

    #[error("{location} is larger than the limit of {limit} bytes")]
    TooLarge { location: String, limit: u64 },

    #[error("download of {location} failed: {detail}")]
    Http { location: String, detail: String },

    #[error("cannot read {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },

    #[error("cannot write the data of {location}: {source}")]
    Write { location: String, source: std::io::Error },

    #[error("cannot {action} {}: {source}", path.display())]
    Local { action: &'static str, path: PathBuf, source: std::io::Error },

    #[error("{name:?} is not a relative repository path; metadata names a file outside the repository")]
    InvalidName { name: String },
}

impl FetchError {
    /// Returns true for HTTP 404 or a missing file.
    pub fn is_not_found(&self) -> bool {
        matches!(self, FetchError::NotFound { .. })
    }
}

/// A place that serves repository files by relative name.
pub trait Fetcher {
    /// Returns the URL or path that `name` is fetched from, for messages.
    fn location(&self, name: &str) -> String;

    /// Streams the file `name` into `sink` and returns its length. Fails with
    /// [`FetchError::TooLarge`] as soon as more than `max_len` bytes arrive.
    fn fetch_to(&self, name: &str, max_len: u64, sink: &mut dyn Write) -> Result<u64, FetchError>;

    /// Fetches `name` into the file `dest`, at most `max_len` bytes. A
    /// fetcher that can resume continues from what an earlier, interrupted
    /// call left beside `dest`; the others start over.
    fn fetch_resumable(&self, name: &str, max_len: u64, dest: &Path) -> Result<u64, FetchError> {
        let mut file = std::fs::File::create(dest).map_err(|source| FetchError::Io { path: dest.to_owned(), source })?;
        let length = self.fetch_to(name, max_len, &mut file)?;
        file.sync_all().map_err(|source| FetchError::Io { path: dest.to_owned(), source })?;
        Ok(length)
    }

    /// Returns the whole file `name`, at most `max_len` bytes.
    fn fetch(&self, name: &str, max_len: u64) -> Result<Vec<u8>, FetchError> {
        let mut bytes = Vec::new();
        self.fetch_to(name, max_len, &mut bytes)?;
        Ok(bytes)
    }
}

/// Checks that `name` is a relative path of non-empty components, none of
/// them `.` or `..`, and with only URL path characters, then returns its
/// decoded components.
pub(crate) fn check_name(name: &str) -> Result<Vec<Vec<u8>>, FetchError> {
    let invalid = || FetchError::InvalidName { name: name.to_owned() };
    let allowed = |byte: u8| byte.is_ascii_alphanumeric() || b"-._~%!$&'()*+,;=:@".contains(&byte);
    name.split('/')
        .map(|component| {
            if !component.bytes().all(allowed) {
                return Err(invalid());
            }
            let decoded = percent_decode(component).ok_or_else(invalid)?;
            let bad = decoded.is_empty() || decoded == b"." || decoded == b".." || decoded.iter().any(|&b| b == b'/' || b == 0);
            if bad {
                return Err(invalid());
            }
            Ok(decoded)
        })
        .collect()
}

/// Copies at most `max_len` bytes from `reader` to `sink`; more is an error.
fn copy_bounded(
    reader: impl Read,
    max_len: u64,
    sink: &mut dyn Write,
    location: &str,
    read_error: impl Fn(std::io::Error) -> FetchError,
) -> Result<u64, FetchError> {
    let mut limited = reader.take(max_len.saturating_add(1));
    let mut buffer = [0u8; 64 * 1024];
    let mut total: u64 = 0;
    loop {
        let count = match limited.read(&mut buffer) {
            Ok(0) => break,
            Ok(count) => count,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_error(e)),
        };
        total += count as u64;
        if total > max_len {
            return Err(FetchError::TooLarge { location: location.to_owned(), limit: max_len });
        }
        sink.write_all(&buffer[..count])
            .map_err(|source| FetchError::Write { location: location.to_owned(), source })?;
    }
    Ok(total)
}

/// Fetches over HTTP(S) below a base URL, retrying with backoff through
/// [`crate::source::Downloader`].
pub struct HttpFetcher {
    base: String,
    downloader: crate::source::Downloader,
}

impl HttpFetcher {
    /// Builds a fetcher for `base_url`, such as `https://updates.example/metadata/`.
    pub fn new(base_url: &str) -> Result<Self, FetchError> {
        Self::with_policy(base_url, crate::source::DownloadPolicy::default())
    }

    /// Like [`HttpFetcher::new`], with the robot's download policy.
    pub fn with_policy(base_url: &str, policy: crate::source::DownloadPolicy) -> Result<Self, FetchError> {
        let downloader = crate::source::Downloader::new(policy)
            .map_err(|e| FetchError::Http { location: base_url.to_owned(), detail: e.to_string() })?;
        Ok(Self { base: base_url.trim_end_matches('/').to_owned(), downloader })
    }
}

impl Fetcher for HttpFetcher {
    fn location(&self, name: &str) -> String {
        format!("{}/{name}", self.base)
    }

    fn fetch_to(&self, name: &str, max_len: u64, sink: &mut dyn Write) -> Result<u64, FetchError> {
        use crate::source::DownloadError;
        check_name(name)?;
        let url = self.location(name);
        tracing::debug!(%url, max_len, "fetching");
        let bytes = self.downloader.get(&url, max_len).map_err(|error| match error {
            DownloadError::NotFound { .. } => FetchError::NotFound { location: url.clone() },
            DownloadError::TooLarge { .. } => FetchError::TooLarge { location: url.clone(), limit: max_len },
            DownloadError::Io { action, path, source } => FetchError::Local { action, path, source },
            other => FetchError::Http { location: url.clone(), detail: other.to_string() },
        })?;
        sink.write_all(&bytes).map_err(|source| FetchError::Write { location: url.clone(), source })?;
        Ok(bytes.len() as u64)
    }

    fn fetch_resumable(&self, name: &str, max_len: u64, dest: &Path) -> Result<u64, FetchError> {
        use crate::source::DownloadError;
        check_name(name)?;
        let url = self.location(name);
        tracing::debug!(%url, max_len, "fetching with resume");
        self.downloader.download_to(&url, dest, max_len).map_err(|error| match error {
            DownloadError::NotFound { .. } => FetchError::NotFound { location: url.clone() },
            DownloadError::TooLarge { .. } => FetchError::TooLarge { location: url.clone(), limit: max_len },
            DownloadError::Io { action, path, source } => FetchError::Local { action, path, source },
            other => FetchError::Http { location: url.clone(), detail: other.to_string() },
        })
    }
}

/// Fetches from a repository directory, such as one on a USB stick.
pub struct DirFetcher {
    root: PathBuf,
}

impl DirFetcher {
    pub fn new(root: &Path) -> Self {
        Self { root: root.to_owned() }
    }

    fn path_of(&self, name: &str) -> Result<PathBuf, FetchError> {
        use std::os::unix::ffi::OsStrExt;
        let mut path = self.root.clone();
        for component in check_name(name)? {
            path.push(std::ffi::OsStr::from_bytes(&component));
        }
        Ok(path)
    }
}

impl Fetcher for DirFetcher {
    fn location(&self, name: &str) -> String {
        match self.path_of(name) {
            Ok(path) => path.display().to_string(),
            Err(_) => format!("{}/{name}", self.root.display()),
        }
    }

    fn fetch_to(&self, name: &str, max_len: u64, sink: &mut dyn Write) -> Result<u64, FetchError> {
        let path = self.path_of(name)?;
        tracing::debug!(path = %path.display(), max_len, "fetching");
        let file = std::fs::File::open(&path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                FetchError::NotFound { location: path.display().to_string() }
            } else {
                FetchError::Io { path: path.clone(), source }
            }
        })?;
        let location = path.display().to_string();
        copy_bounded(file, max_len, sink, &location, |source| FetchError::Io { path: path.clone(), source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_outside_the_repository_are_rejected() {
        for name in ["../root.json", "a/../b", "/etc/passwd", "a//b", "", "a/%2E%2E/b", "a%2Fb/c%00", "a b", "x?y", "x#y"] {
            assert!(matches!(check_name(name), Err(FetchError::InvalidName { .. })), "{name:?} was accepted");
        }
        assert!(check_name("ecar/ab12.manifest.json").is_ok());
        assert!(check_name("1.a%20b.json").is_ok());
    }

    #[test]
    fn dir_fetcher_caps_and_reports_missing_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("timestamp.json"), vec![b'x'; 100]).expect("write");
        let fetcher = DirFetcher::new(dir.path());
        assert_eq!(fetcher.fetch("timestamp.json", 100).expect("within cap").len(), 100);
        let err = fetcher.fetch("timestamp.json", 99).expect_err("over the cap");
        assert!(matches!(err, FetchError::TooLarge { limit: 99, .. }), "{err}");
        let err = fetcher.fetch("2.root.json", 100).expect_err("missing");
        assert!(err.is_not_found(), "{err}");
    }
}
