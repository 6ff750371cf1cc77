//! A repository served over HTTP as a release source.
//!
//! Every body is read with a byte limit, so a server that sends endless data
//! costs at most that limit. `Accept-Encoding: identity` keeps lengths and
//! hashes on the raw bytes.

use std::io::Read;
use std::time::Duration;

use super::{ReleaseSource, SourceError};
use crate::format::layout::{repo_chunk_path, repo_manifest_path, TARGETS_FILE};
use crate::format::Sha256Digest;

// TODO: downloads are not resumed after a dropped connection and are not
// retried; a failed chunk fails the install, which leaves the robot unchanged.
pub struct HttpSource {
    base: String,
    client: reqwest::blocking::Client,
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
const READ_TIMEOUT: Duration = Duration::from_secs(60);

impl HttpSource {
    pub fn new(base: &str) -> Result<Self, SourceError> {
        let client = reqwest::blocking::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(READ_TIMEOUT)
            .redirect(reqwest::redirect::Policy::limited(5))
            .user_agent(concat!("tenderd/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| SourceError::Http { url: base.to_owned(), detail: e.to_string() })?;
        Ok(Self { base: base.trim_end_matches('/').to_owned(), client })
    }

    fn get(&self, relative: &str, limit: u64, what: &str) -> Result<Vec<u8>, SourceError> {
        let url = format!("{}/{relative}", self.base);
        let http = |detail: String| SourceError::Http { url: url.clone(), detail };
        tracing::debug!(%url, "GET");
        let response = self
            .client
            .get(&url)
            .header(reqwest::header::ACCEPT_ENCODING, "identity")
            .send()
            .map_err(|e| http(e.to_string()))?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Err(SourceError::NotFound { what: what.to_owned(), source_name: self.base.clone() });
        }
        if !status.is_success() {
            return Err(http(format!("server answered {status}")));
        }
        if let Some(len) = response.content_length() {
            if len > limit {
                return Err(SourceError::TooLarge { what: what.to_owned(), len, limit });
            }
        }
        let mut bytes = Vec::new();
        response.take(limit + 1).read_to_end(&mut bytes).map_err(|e| http(e.to_string()))?;
        if bytes.len() as u64 > limit {
            return Err(SourceError::TooLarge { what: what.to_owned(), len: bytes.len() as u64, limit });
        }
        Ok(bytes)
    }
}

impl ReleaseSource for HttpSource {
    fn describe(&self) -> String {
        self.base.clone()
    }

    fn is_remote(&self) -> bool {
        true
    }

    fn targets(&mut self, limit: u64) -> Result<Vec<u8>, SourceError> {
        self.get(TARGETS_FILE, limit, TARGETS_FILE)
    }

    fn pinned_manifest(&mut self) -> Option<Vec<u8>> {
        None
    }

    fn manifest(&mut self, target_name: &str, limit: u64) -> Result<Vec<u8>, SourceError> {
        crate::format::path::check_entry_path(target_name)
            .map_err(|_| SourceError::NotFound { what: target_name.to_owned(), source_name: self.describe() })?;
        self.get(&repo_manifest_path(target_name), limit, target_name)
    }

    fn chunk(&mut self, digest: &Sha256Digest, limit: u64) -> Result<Vec<u8>, SourceError> {
        self.get(&repo_chunk_path(digest), limit, &format!("chunk {digest}"))
    }
}
