//! Registry authentication: anonymous, HTTP Basic, a fixed bearer token,
//! and the token flow of the distribution specification, where a `401`
//! carries `WWW-Authenticate: Bearer realm="…",service="…",scope="…"` and
//! the client requests a token from the realm, with Basic credentials when
//! it has them.
//!
//! **Secrets never reach a log or a message**: [`Credentials`] and
//! [`RegistryAuth`] print `<redacted>` in their `Debug` output, header values
//! are marked sensitive, and errors name the registry and the HTTP status,
//! never the password or the token.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use base64::Engine as _;
use reqwest::blocking::Client;
use reqwest::header::HeaderValue;

use crate::source::RequestAuth;

/// Maximum size of a token response that is read.
const MAX_TOKEN_RESPONSE_BYTES: u64 = 64 * 1024;

/// Errors of loading credentials.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("cannot read the registry {what} file {}: {source}; check the path in the configuration", path.display())]
    Read { what: &'static str, path: PathBuf, source: std::io::Error },
    #[error("the registry {what} file {} is empty; write the {what} into it", path.display())]
    Empty { what: &'static str, path: PathBuf },
    #[error("registry password given without a username; set the username too")]
    PasswordWithoutUser,
}

/// Credentials for one registry. Every field may be missing: no field at all
/// is anonymous access.
#[derive(Clone, Default)]
pub struct Credentials {
    pub username: Option<String>,
    pub password: Option<String>,
    /// A bearer token sent as it is, instead of the token flow.
    pub token: Option<String>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = |present: bool| if present { "<redacted>" } else { "none" };
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &redacted(self.password.is_some()))
            .field("token", &redacted(self.token.is_some()))
            .finish()
    }
}

impl Credentials {
    /// Builds credentials from a username and files that hold the password
    /// or the token (one line; a trailing newline is dropped).
    pub fn load(username: Option<&str>, password_file: Option<&Path>, token_file: Option<&Path>) -> Result<Self, CredentialsError> {
        let password = password_file.map(|path| read_secret(path, "password")).transpose()?;
        let token = token_file.map(|path| read_secret(path, "token")).transpose()?;
        if password.is_some() && username.is_none() {
            return Err(CredentialsError::PasswordWithoutUser);
        }
        Ok(Self { username: username.map(str::to_owned), password, token })
    }

    fn basic(&self) -> Option<HeaderValue> {
        let username = self.username.as_deref()?;
        let password = self.password.as_deref().unwrap_or_default();
        let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
        sensitive(&format!("Basic {encoded}"))
    }
}

fn read_secret(path: &Path, what: &'static str) -> Result<String, CredentialsError> {
    let text = std::fs::read_to_string(path).map_err(|source| CredentialsError::Read { what, path: path.to_owned(), source })?;
    let secret = text.trim_end_matches(['\n', '\r']).to_owned();
    if secret.is_empty() {
        return Err(CredentialsError::Empty { what, path: path.to_owned() });
    }
    Ok(secret)
}

fn sensitive(text: &str) -> Option<HeaderValue> {
    let mut value = HeaderValue::from_str(text).ok()?;
    value.set_sensitive(true);
    Some(value)
}

/// The authorization of the next request.
#[derive(Clone, Default)]
enum AuthState {
    #[default]
    Anonymous,
    Basic,
    Bearer(String),
}

/// The authorization state of one registry: it starts anonymous (or with
/// the fixed token) and follows the challenges the registry sends.
pub struct RegistryAuth {
    registry: String,
    credentials: Credentials,
    state: Mutex<AuthState>,
    /// Tokens requested so far, to stop a registry that keeps refusing them.
    token_requests: Mutex<u32>,
}

impl fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryAuth").field("registry", &self.registry).field("credentials", &self.credentials).finish_non_exhaustive()
    }
}

/// Token requests per process before the registry's refusals are final.
const MAX_TOKEN_REQUESTS: u32 = 16;

impl RegistryAuth {
    /// Authenticates to `registry` (`HOST:PORT`, for messages) with `credentials`.
    pub fn new(registry: &str, credentials: Credentials) -> Self {
        let state = match &credentials.token {
            Some(token) => AuthState::Bearer(token.clone()),
            None => AuthState::Anonymous,
        };
        Self { registry: registry.to_owned(), credentials, state: Mutex::new(state), token_requests: Mutex::new(0) }
    }

    fn state(&self) -> AuthState {
        self.state.lock().map(|state| state.clone()).unwrap_or_default()
    }

    fn set_state(&self, new: AuthState) {
        if let Ok(mut state) = self.state.lock() {
            *state = new;
        }
    }

    fn request_token(&self, client: &Client, challenge: &Challenge) -> Result<String, String> {
        {
            let mut count = self.token_requests.lock().map_err(|_| "token state is unusable".to_owned())?;
            *count += 1;
            if *count > MAX_TOKEN_REQUESTS {
                return Err(format!("{} refused {MAX_TOKEN_REQUESTS} tokens in a row; check the credentials", self.registry));
            }
        }
        let realm = challenge.param("realm").ok_or_else(|| format!("{} sent a Bearer challenge without a realm", self.registry))?;
        let realm_url = reqwest::Url::parse(realm).map_err(|_| format!("{} sent an invalid token realm {realm:?}", self.registry))?;
        if realm_url.scheme() != "https" && realm_url.scheme() != "http" {
            return Err(format!("{} sent a token realm {realm:?} that is not http or https", self.registry));
        }
        let mut request = client.get(realm_url);
        let mut query = Vec::new();
        if let Some(service) = challenge.param("service") {
            query.push(("service", service.to_owned()));
        }
        if let Some(scope) = challenge.param("scope") {
            query.push(("scope", scope.to_owned()));
        }
        request = request.query(&query);
        if let Some(basic) = self.credentials.basic() {
            request = request.header(reqwest::header::AUTHORIZATION, basic);
        }
        tracing::debug!(registry = %self.registry, realm, "requesting a registry token");
        let response = request.send().map_err(|e| format!("token request to {realm} failed: {}", e.without_url()))?;
        let status = response.status();
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            return Err(format!("the token service {realm} rejected the credentials (HTTP {status}); check the username and password"));
        }
        if !status.is_success() {
            return Err(format!("the token service {realm} responded {status}"));
        }
        use std::io::Read;
        let mut body = Vec::new();
        response
            .take(MAX_TOKEN_RESPONSE_BYTES + 1)
            .read_to_end(&mut body)
            .map_err(|e| format!("cannot read the token from {realm}: {e}"))?;
        if body.len() as u64 > MAX_TOKEN_RESPONSE_BYTES {
            return Err(format!("the token response of {realm} is larger than {MAX_TOKEN_RESPONSE_BYTES} bytes"));
        }
        #[derive(serde::Deserialize)]
        struct TokenResponse {
            token: Option<String>,
            access_token: Option<String>,
        }
        let parsed: TokenResponse =
            serde_json::from_slice(&body).map_err(|_| format!("the token response of {realm} is not the expected JSON"))?;
        parsed.token.or(parsed.access_token).filter(|t| !t.is_empty()).ok_or_else(|| format!("the token response of {realm} has no token"))
    }
}

impl RequestAuth for RegistryAuth {
    fn authorization(&self) -> Option<HeaderValue> {
        match self.state() {
            AuthState::Anonymous => None,
            AuthState::Basic => self.credentials.basic(),
            AuthState::Bearer(token) => sensitive(&format!("Bearer {token}")),
        }
    }

    fn challenge(&self, client: &Client, challenge: Option<&str>) -> Result<(), String> {
        let challenge = challenge.and_then(Challenge::parse).ok_or_else(|| {
            format!("{} responded 401 without a Basic or Bearer challenge; configure a token_file", self.registry)
        })?;
        let previous = self.state();
        if challenge.scheme.eq_ignore_ascii_case("basic") {
            if self.credentials.username.is_none() {
                return Err(format!("{} requires a username and password; set them in the registry configuration", self.registry));
            }
            if matches!(previous, AuthState::Basic) {
                return Err(format!("{} rejected the username and password; check them", self.registry));
            }
            self.set_state(AuthState::Basic);
            return Ok(());
        }
        if !challenge.scheme.eq_ignore_ascii_case("bearer") {
            return Err(format!("{} asks for {} authentication, which tender does not support", self.registry, challenge.scheme));
        }
        if self.credentials.token.is_some() {
            return Err(format!("{} rejected the configured token; replace the token file's content", self.registry));
        }
        if challenge.param("error").is_some_and(|e| e == "invalid_token") && matches!(previous, AuthState::Bearer(_)) {
            tracing::debug!(registry = %self.registry, "registry token expired; requesting a new one");
        }
        let token = self.request_token(client, &challenge)?;
        self.set_state(AuthState::Bearer(token));
        Ok(())
    }
}

/// One challenge of a `WWW-Authenticate` header: a scheme and its
/// `key="value"` parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub scheme: String,
    pub params: Vec<(String, String)>,
}

impl Challenge {
    /// Parses `Scheme key="value", key=value`; quoted values may contain
    /// commas and `\"`.
    pub fn parse(header: &str) -> Option<Self> {
        let header = header.trim();
        let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
        if scheme.is_empty() {
            return None;
        }
        let mut params = Vec::new();
        let mut chars = rest.chars().peekable();
        loop {
            while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
                chars.next();
            }
            let key: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=' && *c != ',')).collect();
            if key.trim().is_empty() {
                break;
            }
            if chars.next() != Some('=') {
                return None;
            }
            let mut value = String::new();
            if chars.peek() == Some(&'"') {
                chars.next();
                loop {
                    match chars.next()? {
                        '\\' => value.push(chars.next()?),
                        '"' => break,
                        c => value.push(c),
                    }
                }
            } else {
                value = std::iter::from_fn(|| chars.next_if(|c| *c != ',')).collect::<String>().trim().to_owned();
            }
            params.push((key.trim().to_ascii_lowercase(), value));
        }
        Some(Self { scheme: scheme.to_owned(), params })
    }

    pub fn param(&self, key: &str) -> Option<&str> {
        self.params.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenge_is_parsed() {
        let header = r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:ecar/releases:pull,push""#;
        let challenge = Challenge::parse(header).expect("valid");
        assert_eq!(challenge.scheme, "Bearer");
        assert_eq!(challenge.param("realm"), Some("https://auth.example/token"));
        assert_eq!(challenge.param("service"), Some("registry.example"));
        assert_eq!(challenge.param("scope"), Some("repository:ecar/releases:pull,push"));
    }

    #[test]
    fn basic_challenge_is_parsed() {
        let challenge = Challenge::parse(r#"Basic realm="Registry Realm""#).expect("valid");
        assert_eq!(challenge.scheme, "Basic");
        assert_eq!(challenge.param("realm"), Some("Registry Realm"));
    }

    #[test]
    fn debug_output_hides_secrets() {
        let credentials = Credentials {
            username: Some("robot".to_owned()),
            password: Some("hunter2-password".to_owned()),
            token: Some("secret-token-value".to_owned()),
        };
        let auth = RegistryAuth::new("127.0.0.1:5000", credentials.clone());
        for text in [format!("{credentials:?}"), format!("{auth:?}"), format!("{:?}", auth.authorization())] {
            assert!(!text.contains("hunter2-password"), "{text}");
            assert!(!text.contains("secret-token-value"), "{text}");
        }
    }

    #[test]
    fn wrong_basic_credentials_fail_after_one_retry() {
        let credentials = Credentials { username: Some("robot".to_owned()), password: Some("wrong".to_owned()), token: None };
        let auth = RegistryAuth::new("127.0.0.1:5000", credentials);
        let client = Client::new();
        auth.challenge(&client, Some(r#"Basic realm="r""#)).expect("first challenge switches to Basic");
        assert!(auth.authorization().is_some());
        let error = auth.challenge(&client, Some(r#"Basic realm="r""#)).expect_err("second challenge");
        assert!(error.contains("rejected the username and password"), "{error}");
        assert!(!error.contains("wrong"), "{error}");
    }

    #[test]
    fn anonymous_basic_challenge_asks_for_credentials() {
        let auth = RegistryAuth::new("127.0.0.1:5000", Credentials::default());
        let error = auth.challenge(&Client::new(), Some(r#"Basic realm="r""#)).expect_err("no credentials");
        assert!(error.contains("requires a username and password"), "{error}");
    }

    /// A token service and registry on 127.0.0.1: the registry responds 401
    /// with a Bearer challenge until the request carries the token that the
    /// realm issues for the right Basic credentials.
    #[test]
    fn bearer_token_flow_against_local_server() {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("address").port();
        let server = std::thread::spawn(move || {
            let expected_basic = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("robot:pw"));
            for _ in 0..3 {
                let (stream, _) = listener.accept().expect("accept");
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                let mut request_line = String::new();
                reader.read_line(&mut request_line).expect("request line");
                let mut authorization = String::new();
                loop {
                    let mut line = String::new();
                    reader.read_line(&mut line).expect("header");
                    if line.trim().is_empty() {
                        break;
                    }
                    if let Some(value) = line.strip_prefix("authorization: ").or_else(|| line.strip_prefix("Authorization: ")) {
                        authorization = value.trim().to_owned();
                    }
                }
                let response = if request_line.starts_with("GET /token?") && authorization == expected_basic {
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 21\r\nConnection: close\r\n\r\n{\"token\":\"tok-12345\"}".to_owned()
                } else if authorization == "Bearer tok-12345" {
                    "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok".to_owned()
                } else {
                    format!(
                        "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"http://127.0.0.1:{port}/token\",service=\"test\",scope=\"repository:ecar:pull\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    )
                };
                let mut stream = stream;
                stream.write_all(response.as_bytes()).expect("respond");
            }
        });
        let credentials = Credentials { username: Some("robot".to_owned()), password: Some("pw".to_owned()), token: None };
        let downloader = crate::source::Downloader::new(crate::source::DownloadPolicy { max_attempts: 1, ..Default::default() })
            .expect("client")
            .with_auth(std::sync::Arc::new(RegistryAuth::new("127.0.0.1", credentials)));
        let body = downloader.get(&format!("http://127.0.0.1:{port}/v2/ecar/blobs/x"), 100).expect("authorized GET");
        assert_eq!(body, b"ok");
        server.join().expect("server thread");
    }
}
