//! Downloads over bad links: retries with exponential backoff and jitter,
//! `Retry-After`, resumption with `Range` and `If-Range`, a bandwidth cap,
//! and a byte limit on everything a server sends.
//!
//! A resumed response is checked before a byte of it is written. A `200`
//! where a range was requested, a `Content-Range` that starts elsewhere or
//! reports another total, a changed ETag and a `416` each restart the file
//! from zero, so nothing is written at a wrong offset. Partial files live beside
//! their destination as `NAME.partial` with the ETag in `NAME.partial.etag`,
//! so a download interrupted by a reboot continues where it stopped.

use std::fs::{self, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::header::{
    HeaderMap, HeaderValue, ACCEPT_ENCODING, AUTHORIZATION, CONTENT_RANGE, ETAG, IF_RANGE, RANGE, RETRY_AFTER, WWW_AUTHENTICATE,
};
use reqwest::StatusCode;

/// Retry, timeout and bandwidth settings of a download.
#[derive(Debug, Clone)]
pub struct DownloadPolicy {
    pub connect_timeout: Duration,
    /// Maximum wait for the next bytes of a response.
    pub read_timeout: Duration,
    /// Attempts per file, the first one included.
    pub max_attempts: u32,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// Longest `Retry-After` that is honoured; longer ones are cut to it.
    pub retry_after_max: Duration,
    /// Bytes per second, or `None` for no cap.
    pub bandwidth_limit: Option<u64>,
    /// Redirects followed per request.
    pub max_redirects: usize,
}

impl Default for DownloadPolicy {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(15),
            read_timeout: Duration::from_secs(30),
            max_attempts: 8,
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(60),
            retry_after_max: Duration::from_secs(300),
            bandwidth_limit: None,
            max_redirects: 5,
        }
    }
}

/// Errors after which a download is not retried.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error("{url} was not found (HTTP 404)")]
    NotFound { url: String },
    #[error("download of {url} failed: server answered {status}")]
    Status { url: String, status: StatusCode },
    #[error("download of {url} failed after {attempts} attempts, last: {last}")]
    GaveUp { url: String, attempts: u32, last: String },
    #[error("{url} is {len} bytes or more, more than the limit of {limit}")]
    TooLarge { url: String, len: u64, limit: u64 },
    #[error("cannot {action} {}: {source}", path.display())]
    Io { action: &'static str, path: PathBuf, source: std::io::Error },
    #[error("cannot create the HTTP client: {0}")]
    Client(String),
    #[error("{url} requires authentication: {detail}")]
    Unauthorized { url: String, detail: String },
}

/// Credentials for a server that responds `401 Unauthorized`, such as an OCI
/// registry. Implementations must never log or print their secrets.
pub trait RequestAuth: Send + Sync {
    /// Returns the `Authorization` header for the next request, if any.
    fn authorization(&self) -> Option<HeaderValue>;

    /// Handles a `401` response whose `WWW-Authenticate` header is
    /// `challenge`, for example by requesting a bearer token from the realm
    /// it names. `Ok` means that [`RequestAuth::authorization`] now returns
    /// something new to retry with; `Err` explains, in one line without
    /// any secret, why the request cannot be authorized.
    fn challenge(&self, client: &Client, challenge: Option<&str>) -> Result<(), String>;
}

/// Authentication rounds per request: one to learn the challenge, one with
/// a fresh token, and one more for a token that expired in between.
const MAX_AUTH_ROUNDS: usize = 3;

/// A failure of one attempt, and whether another attempt may succeed.
enum Attempt {
    Retry { reason: String, wait: Option<Duration> },
    Fatal(DownloadError),
}

/// An HTTP client with the policy of [`DownloadPolicy`].
pub struct Downloader {
    client: Client,
    policy: DownloadPolicy,
    auth: Option<Arc<dyn RequestAuth>>,
}

fn redirect_policy(max: usize) -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() > max {
            return attempt.error(format!("more than {max} redirects"));
        }
        let downgrade = attempt.previous().last().is_some_and(|p| p.scheme() == "https") && attempt.url().scheme() == "http";
        if downgrade {
            return attempt.error("redirect from https to http refused");
        }
        attempt.follow()
    })
}

/// Returns a random duration between zero and `ceiling` ("full jitter").
fn jitter(ceiling: Duration) -> Duration {
    let random = std::collections::hash_map::RandomState::new().build_hasher().finish();
    let nanos = ceiling.as_nanos().max(1) as u64;
    Duration::from_nanos(random % nanos)
}

fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?;
    if let Ok(seconds) = value.trim().parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = httpdate_to_system_time(value.trim())?;
    when.duration_since(std::time::SystemTime::now()).ok()
}

/// Parses the IMF-fixdate form of `Retry-After`, `Sun, 06 Nov 1994 08:49:37 GMT`.
fn httpdate_to_system_time(text: &str) -> Option<std::time::SystemTime> {
    let rest = text.split_once(", ")?.1;
    let parts: Vec<&str> = rest.split_whitespace().collect();
    let [day, month, year, time, "GMT"] = parts[..] else { return None };
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let month = MONTHS.iter().position(|m| *m == month)? + 1;
    humantime::parse_rfc3339(&format!("{year}-{month:02}-{day:0>2}T{time}Z")).ok()
}

/// Parses `bytes START-END/TOTAL`.
fn content_range(headers: &HeaderMap) -> Option<(u64, u64, u64)> {
    let value = headers.get(CONTENT_RANGE)?.to_str().ok()?;
    let spec = value.strip_prefix("bytes ")?;
    let (range, total) = spec.split_once('/')?;
    let (start, end) = range.split_once('-')?;
    Some((start.parse().ok()?, end.parse().ok()?, total.parse().ok()?))
}

fn etag(headers: &HeaderMap) -> Option<String> {
    headers.get(ETAG).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

fn io_error<'p>(action: &'static str, path: &'p Path) -> impl FnOnce(std::io::Error) -> DownloadError + 'p {
    move |source| DownloadError::Io { action, path: path.to_owned(), source }
}

impl Downloader {
    pub fn new(policy: DownloadPolicy) -> Result<Self, DownloadError> {
        let client = Client::builder()
            .connect_timeout(policy.connect_timeout)
            .timeout(policy.read_timeout)
            .redirect(redirect_policy(policy.max_redirects))
            .user_agent(concat!("tenderd/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| DownloadError::Client(e.to_string()))?;
        Ok(Self { client, policy, auth: None })
    }

    /// Sends credentials with every request and responds to `401`
    /// challenges with `auth`.
    pub fn with_auth(mut self, auth: Arc<dyn RequestAuth>) -> Self {
        self.auth = Some(auth);
        self
    }

    pub fn policy(&self) -> &DownloadPolicy {
        &self.policy
    }

    /// Returns the underlying HTTP client, for requests that need other
    /// methods than `GET`.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Sends the request that `build` makes, with the authorization of
    /// [`Downloader::with_auth`], and answers up to [`MAX_AUTH_ROUNDS`]
    /// `401` challenges. A `401` without credentials configured, or one that
    /// new credentials cannot satisfy, is fatal.
    fn send(&self, url: &str, build: &dyn Fn() -> RequestBuilder) -> Result<Response, Attempt> {
        for _ in 0..MAX_AUTH_ROUNDS {
            let mut request = build();
            if let Some(value) = self.auth.as_ref().and_then(|auth| auth.authorization()) {
                request = request.header(AUTHORIZATION, value);
            }
            let response = request.send().map_err(|e| Attempt::Retry { reason: e.to_string(), wait: None })?;
            if response.status() != StatusCode::UNAUTHORIZED {
                return Ok(response);
            }
            let unauthorized = |detail: String| Attempt::Fatal(DownloadError::Unauthorized { url: url.to_owned(), detail });
            let Some(auth) = &self.auth else {
                return Err(unauthorized("the server responded 401 and no credentials are configured".to_owned()));
            };
            let challenge = response.headers().get(WWW_AUTHENTICATE).and_then(|v| v.to_str().ok());
            auth.challenge(&self.client, challenge).map_err(unauthorized)?;
        }
        Err(Attempt::Fatal(DownloadError::Unauthorized {
            url: url.to_owned(),
            detail: format!("the server still responded 401 after {MAX_AUTH_ROUNDS} rounds of authentication"),
        }))
    }

    /// Runs `attempt` until it succeeds, fails for good, or the attempts run
    /// out, sleeping with exponential backoff and full jitter in between,
    /// or for the server's `Retry-After` when it sent one.
    fn with_retries<T>(&self, url: &str, mut attempt: impl FnMut() -> Result<T, Attempt>) -> Result<T, DownloadError> {
        let mut last = String::new();
        for number in 1..=self.policy.max_attempts {
            match attempt() {
                Ok(value) => return Ok(value),
                Err(Attempt::Fatal(error)) => return Err(error),
                Err(Attempt::Retry { reason, wait }) => {
                    if number == self.policy.max_attempts {
                        last = reason;
                        break;
                    }
                    let exponential = self.policy.backoff_initial.saturating_mul(1 << (number - 1).min(16));
                    let pause = match wait {
                        Some(wait) => wait.min(self.policy.retry_after_max),
                        None => jitter(exponential.min(self.policy.backoff_max)),
                    };
                    tracing::warn!(%url, attempt = number, %reason, pause_ms = pause.as_millis() as u64, "download failed; retrying");
                    std::thread::sleep(pause);
                    last = reason;
                }
            }
        }
        Err(DownloadError::GaveUp { url: url.to_owned(), attempts: self.policy.max_attempts, last })
    }

    fn classify(&self, url: &str, response: &Response) -> Result<(), Attempt> {
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        if status == StatusCode::NOT_FOUND {
            return Err(Attempt::Fatal(DownloadError::NotFound { url: url.to_owned() }));
        }
        if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::REQUEST_TIMEOUT {
            return Err(Attempt::Retry { reason: format!("server answered {status}"), wait: retry_after(response.headers()) });
        }
        Err(Attempt::Fatal(DownloadError::Status { url: url.to_owned(), status }))
    }

    /// Downloads a small object into memory, at most `limit` bytes, retrying
    /// from the start after a failure.
    pub fn get(&self, url: &str, limit: u64) -> Result<Vec<u8>, DownloadError> {
        self.get_accepting(url, limit, None)
    }

    /// Like [`Downloader::get`], with an `Accept` header, such as the media
    /// type of an OCI manifest.
    pub fn get_accepting(&self, url: &str, limit: u64, accept: Option<&str>) -> Result<Vec<u8>, DownloadError> {
        self.with_retries(url, || {
            let build = || {
                let request = self.client.get(url).header(ACCEPT_ENCODING, "identity");
                match accept {
                    Some(accept) => request.header(reqwest::header::ACCEPT, accept),
                    None => request,
                }
            };
            let response = self.send(url, &build)?;
            self.classify(url, &response)?;
            if let Some(len) = response.content_length().filter(|len| *len > limit) {
                return Err(Attempt::Fatal(DownloadError::TooLarge { url: url.to_owned(), len, limit }));
            }
            let expected = response.content_length();
            let mut bytes = Vec::new();
            let mut throttle = Throttle::new(self.policy.bandwidth_limit);
            let mut reader = response.take(limit + 1);
            let mut buffer = vec![0u8; throttle.read_size()];
            loop {
                let read = reader.read(&mut buffer).map_err(|e| Attempt::Retry { reason: e.to_string(), wait: None })?;
                if read == 0 {
                    break;
                }
                bytes.extend_from_slice(&buffer[..read]);
                throttle.account(read as u64);
            }
            if bytes.len() as u64 > limit {
                return Err(Attempt::Fatal(DownloadError::TooLarge { url: url.to_owned(), len: bytes.len() as u64, limit }));
            }
            if expected.is_some_and(|len| len != bytes.len() as u64) {
                return Err(Attempt::Retry { reason: format!("connection closed after {} bytes", bytes.len()), wait: None });
            }
            Ok(bytes)
        })
    }

    /// Downloads `url` into `destination`, resuming a partial file left by
    /// an earlier attempt or an earlier run. At most `limit` bytes are
    /// accepted. Returns the number of body bytes received in this call.
    pub fn download_to(&self, url: &str, destination: &Path, limit: u64) -> Result<u64, DownloadError> {
        let partial = partial_path(destination, "partial");
        let etag_path = partial_path(destination, "partial.etag");
        let mut received = 0u64;
        self.with_retries(url, || self.resume_once(url, &partial, &etag_path, limit, &mut received))?;
        fs::rename(&partial, destination).map_err(io_error("rename into place", destination))?;
        let _ = fs::remove_file(&etag_path);
        Ok(received)
    }

    fn resume_once(&self, url: &str, partial: &Path, etag_path: &Path, limit: u64, received: &mut u64) -> Result<(), Attempt> {
        let fatal = |error: DownloadError| Attempt::Fatal(error);
        let stored_etag = fs::read_to_string(etag_path).ok().filter(|tag| !tag.is_empty());
        let mut offset = match (&stored_etag, fs::metadata(partial)) {
            (Some(_), Ok(meta)) => meta.len(),
            _ => 0,
        };
        let build = || {
            let mut request = self.client.get(url).header(ACCEPT_ENCODING, "identity");
            if offset > 0 {
                request = request.header(RANGE, format!("bytes={offset}-"));
                if let Some(tag) = &stored_etag {
                    request = request.header(IF_RANGE, tag.as_str());
                }
            }
            request
        };
        let response = self.send(url, &build)?;

        let status = response.status();
        if status == StatusCode::RANGE_NOT_SATISFIABLE {
            // `bytes */TOTAL` equal to the partial length means the partial
            // file was already complete when the last run stopped.
            let total = response
                .headers()
                .get(CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("bytes */"))
                .and_then(|v| v.parse::<u64>().ok());
            if offset > 0 && total == Some(offset) {
                return Ok(());
            }
            // The partial file does not fit the object any more; start over.
            tracing::warn!(%url, offset, "server responded 416 to a resumed download; starting over");
            truncate(partial, etag_path).map_err(fatal)?;
            return Err(Attempt::Retry { reason: "416 for a resumed range".to_owned(), wait: Some(Duration::ZERO) });
        }
        self.classify(url, &response)?;

        let new_etag = etag(response.headers());
        let total = if status == StatusCode::PARTIAL_CONTENT {
            let Some((start, _end, total)) = content_range(response.headers()) else {
                truncate(partial, etag_path).map_err(fatal)?;
                return Err(Attempt::Retry { reason: "206 without a valid Content-Range".to_owned(), wait: None });
            };
            if start != offset || stored_etag.is_some() && new_etag != stored_etag {
                tracing::warn!(%url, offset, start, "resumed response does not continue the partial file; starting over");
                truncate(partial, etag_path).map_err(fatal)?;
                return Err(Attempt::Retry { reason: "resumed response starts elsewhere or changed".to_owned(), wait: Some(Duration::ZERO) });
            }
            total
        } else {
            if offset > 0 {
                tracing::info!(%url, offset, "server sent the whole object instead of a range; starting over");
            }
            offset = 0;
            response.content_length().unwrap_or(u64::MAX)
        };
        if total != u64::MAX && total > limit {
            return Err(fatal(DownloadError::TooLarge { url: url.to_owned(), len: total, limit }));
        }

        let mut file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(offset == 0)
            .append(offset > 0)
            .open(partial)
            .map_err(|e| fatal(io_error("open", partial)(e)))?;
        if offset == 0 {
            fs::write(etag_path, new_etag.clone().unwrap_or_default()).map_err(|e| fatal(io_error("write", etag_path)(e)))?;
        }

        let mut throttle = Throttle::new(self.policy.bandwidth_limit);
        let mut reader = response.take(limit.saturating_sub(offset) + 1);
        let mut buffer = vec![0u8; throttle.read_size()];
        let mut written = offset;
        loop {
            let read = match reader.read(&mut buffer) {
                Ok(read) => read,
                Err(e) => {
                    let _ = file.sync_data();
                    return Err(Attempt::Retry { reason: format!("connection failed after {written} bytes: {e}"), wait: None });
                }
            };
            if read == 0 {
                break;
            }
            if written + read as u64 > limit {
                return Err(fatal(DownloadError::TooLarge { url: url.to_owned(), len: written + read as u64, limit }));
            }
            file.write_all(&buffer[..read]).map_err(|e| fatal(io_error("write", partial)(e)))?;
            written += read as u64;
            *received += read as u64;
            throttle.account(read as u64);
        }
        file.sync_data().map_err(|e| fatal(io_error("sync", partial)(e)))?;
        if total != u64::MAX && written != total {
            return Err(Attempt::Retry { reason: format!("connection closed after {written} of {total} bytes"), wait: None });
        }
        Ok(())
    }
}

impl Downloader {
    /// Downloads the `length` bytes at `start` of the object at `url` into
    /// `destination`, resuming a partial file left by an earlier attempt or
    /// run. **The object must never change**, such as a blob addressed by its
    /// digest, because no ETag ties the parts of a resumed range together.
    /// A server that ignores `Range` costs the bytes before `start`, which
    /// are read and dropped. Returns the body bytes received in this call.
    pub fn download_range_to(&self, url: &str, start: u64, length: u64, destination: &Path) -> Result<u64, DownloadError> {
        let partial = partial_path(destination, "partial");
        let mut received = 0u64;
        self.with_retries(url, || self.range_once(url, start, length, &partial, &mut received))?;
        fs::rename(&partial, destination).map_err(io_error("rename into place", destination))?;
        Ok(received)
    }

    fn range_once(&self, url: &str, start: u64, length: u64, partial: &Path, received: &mut u64) -> Result<(), Attempt> {
        let fatal = |error: DownloadError| Attempt::Fatal(error);
        let mut have = fs::metadata(partial).map(|meta| meta.len()).unwrap_or(0);
        if have > length {
            truncate(partial, &partial_path(partial, "etag")).map_err(fatal)?;
            have = 0;
        }
        if have == length {
            return Ok(());
        }
        let first = start + have;
        let last = start + length - 1;
        let build = || self.client.get(url).header(ACCEPT_ENCODING, "identity").header(RANGE, format!("bytes={first}-{last}"));
        let response = self.send(url, &build)?;
        self.classify(url, &response)?;
        let skip = if response.status() == StatusCode::PARTIAL_CONTENT {
            match content_range(response.headers()) {
                Some((range_start, range_end, _)) if range_start == first && range_end == last => 0,
                _ => return Err(Attempt::Retry { reason: format!("206 without Content-Range bytes {first}-{last}"), wait: None }),
            }
        } else {
            tracing::debug!(%url, first, "server ignored the range; skipping to it");
            first
        };

        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(partial)
            .map_err(|e| fatal(io_error("open", partial)(e)))?;
        let mut throttle = Throttle::new(self.policy.bandwidth_limit);
        let mut reader = response.take(skip + (length - have));
        let mut buffer = vec![0u8; throttle.read_size()];
        let mut skipped = 0u64;
        let mut written = have;
        loop {
            let read = match reader.read(&mut buffer) {
                Ok(read) => read,
                Err(e) => {
                    let _ = file.sync_data();
                    return Err(Attempt::Retry { reason: format!("connection failed after {written} of {length} bytes: {e}"), wait: None });
                }
            };
            if read == 0 {
                break;
            }
            throttle.account(read as u64);
            let mut part = &buffer[..read];
            if skipped < skip {
                let drop = (skip - skipped).min(part.len() as u64) as usize;
                skipped += drop as u64;
                part = &part[drop..];
            }
            file.write_all(part).map_err(|e| fatal(io_error("write", partial)(e)))?;
            written += part.len() as u64;
            *received += part.len() as u64;
        }
        file.sync_data().map_err(|e| fatal(io_error("sync", partial)(e)))?;
        if written != length {
            return Err(Attempt::Retry { reason: format!("connection closed after {written} of {length} bytes"), wait: None });
        }
        Ok(())
    }
}

fn partial_path(destination: &Path, suffix: &str) -> PathBuf {
    let mut name = destination.file_name().unwrap_or_default().to_os_string();
    name.push(".");
    name.push(suffix);
    destination.with_file_name(name)
}

fn truncate(partial: &Path, etag_path: &Path) -> Result<(), DownloadError> {
    for path in [partial, etag_path] {
        match fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error("remove", path)(e)),
        }
    }
    Ok(())
}

/// Sleeps as needed to keep a transfer under a bytes-per-second cap.
struct Throttle {
    limit: Option<u64>,
    started: Instant,
    bytes: u64,
}

impl Throttle {
    fn new(limit: Option<u64>) -> Self {
        Self { limit, started: Instant::now(), bytes: 0 }
    }

    /// Bytes to read at a time: 64 KiB, or a tenth of a second's worth
    /// under a cap, so a capped transfer flows evenly.
    fn read_size(&self) -> usize {
        match self.limit.filter(|l| *l > 0) {
            Some(limit) => (limit / 10).clamp(1024, 64 * 1024) as usize,
            None => 64 * 1024,
        }
    }

    fn account(&mut self, bytes: u64) {
        let Some(limit) = self.limit.filter(|l| *l > 0) else { return };
        self.bytes += bytes;
        let due = Duration::from_secs_f64(self.bytes as f64 / limit as f64);
        let elapsed = self.started.elapsed();
        if due > elapsed {
            std::thread::sleep(due - elapsed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_parses_seconds_and_dates() {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, "7".parse().expect("header"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(7)));
        assert!(httpdate_to_system_time("Sun, 06 Nov 1994 08:49:37 GMT").is_some());
    }

    #[test]
    fn content_range_is_parsed() {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_RANGE, "bytes 100-199/1000".parse().expect("header"));
        assert_eq!(content_range(&headers), Some((100, 199, 1000)));
    }

    #[test]
    fn jitter_stays_below_ceiling() {
        for _ in 0..100 {
            assert!(jitter(Duration::from_millis(10)) < Duration::from_millis(10));
        }
    }
}
