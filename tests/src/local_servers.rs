//! Real servers for the publishing tests, each on 127.0.0.1 with its files,
//! configuration and logs in a temporary directory, and killed when
//! dropped: Debian's `docker-registry` (the CNCF distribution registry) and
//! `nginx`.

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Maximum wait for a server to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// One request of an access log in the common log format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLine {
    pub method: String,
    pub path: String,
    pub status: u16,
    pub body_bytes: u64,
}

/// Parses the access log lines of `text`: `… "GET /path HTTP/1.1" 200 512 …`.
pub fn parse_access_log(text: &str) -> Vec<AccessLine> {
    let mut lines = Vec::new();
    for line in text.lines() {
        let Some((_, rest)) = line.split_once("] \"") else { continue };
        let Some((request, after)) = rest.split_once('"') else { continue };
        let mut request_parts = request.split(' ');
        let (Some(method), Some(path)) = (request_parts.next(), request_parts.next()) else { continue };
        let mut numbers = after.split_whitespace();
        let status = numbers.next().and_then(|s| s.parse().ok());
        let bytes = numbers.next().map(|b| if b == "-" { 0 } else { b.parse().unwrap_or(0) });
        if let (Some(status), Some(body_bytes)) = (status, bytes) {
            lines.push(AccessLine { method: method.to_owned(), path: path.to_owned(), status, body_bytes });
        }
    }
    lines
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn wait_for_port(port: u16, child: &mut Child, log: &Path) -> std::io::Result<()> {
    let started = Instant::now();
    while started.elapsed() < START_TIMEOUT {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            let text = fs::read_to_string(log).unwrap_or_default();
            return Err(std::io::Error::other(format!("server exited with {status} before listening:\n{text}")));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(std::io::Error::other(format!("server did not listen on 127.0.0.1:{port} within {START_TIMEOUT:?}")))
}

/// A `docker-registry serve` process with filesystem storage.
pub struct Registry {
    child: Child,
    pub dir: tempfile::TempDir,
    pub port: u16,
}

impl Registry {
    /// Starts a registry; with `htpasswd`, every request needs Basic
    /// credentials listed in that bcrypt htpasswd file.
    pub fn start(htpasswd: Option<&Path>) -> std::io::Result<Self> {
        let dir = tempfile::tempdir()?;
        let port = free_port()?;
        let storage = dir.path().join("storage");
        let auth = match htpasswd {
            Some(path) => format!("auth:\n  htpasswd:\n    realm: tender-test\n    path: {}\n", path.display()),
            None => String::new(),
        };
        let config = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\n{auth}http:\n  addr: 127.0.0.1:{port}\n",
            storage.display()
        );
        let config_path = dir.path().join("config.yml");
        fs::write(&config_path, config)?;
        let log_path = dir.path().join("registry.log");
        let log = fs::File::create(&log_path)?;
        let mut child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        if let Err(error) = wait_for_port(port, &mut child, &log_path) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(error);
        }
        Ok(Self { child, dir, port })
    }

    /// Returns `oci://127.0.0.1:PORT/PATH`.
    pub fn reference(&self, path: &str) -> String {
        format!("oci://127.0.0.1:{}/{path}", self.port)
    }

    /// Returns every request the registry has logged so far.
    pub fn requests(&self) -> Vec<AccessLine> {
        parse_access_log(&fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default())
    }

    /// Path of a blob's data file in the registry storage.
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.dir.path().join("storage/docker/registry/v2/blobs/sha256").join(&hex[..2]).join(hex).join("data")
    }

    /// Returns the manifest digest a tag points to, read from the storage.
    pub fn tag_digest(&self, repository: &str, tag: &str) -> Option<String> {
        let link = self
            .dir
            .path()
            .join("storage/docker/registry/v2/repositories")
            .join(repository)
            .join("_manifests/tags")
            .join(tag)
            .join("current/link");
        fs::read_to_string(link).ok().map(|text| text.trim().to_owned())
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An `nginx` serving one directory.
pub struct Nginx {
    child: Child,
    pub dir: tempfile::TempDir,
    pub port: u16,
}

impl Nginx {
    /// Starts nginx in the foreground serving `root`.
    pub fn start(root: &Path) -> std::io::Result<Self> {
        let dir = tempfile::tempdir()?;
        let port = free_port()?;
        let prefix = dir.path();
        fs::create_dir_all(prefix.join("logs"))?;
        // nginx started as root runs its workers as the user `nobody`, which
        // cannot enter the test's temporary directories, so they stay root.
        let is_root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"));
        let user = if is_root { "user root;\n" } else { "" };
        let p = prefix.display();
        let config = format!(
            "{user}daemon off;\nmaster_process on;\nworker_processes 1;\npid {p}/nginx.pid;\nerror_log {p}/logs/error.log;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n  access_log {p}/logs/access.log;\n  client_body_temp_path {p}/tmp-body;\n  proxy_temp_path {p}/tmp-proxy;\n\
               fastcgi_temp_path {p}/tmp-fastcgi;\n  uwsgi_temp_path {p}/tmp-uwsgi;\n  scgi_temp_path {p}/tmp-scgi;\n\
               types {{ application/json json; }}\n  default_type application/octet-stream;\n\
               server {{\n    listen 127.0.0.1:{port};\n    root {};\n  }}\n}}\n",
            root.display()
        );
        let config_path = prefix.join("nginx.conf");
        fs::write(&config_path, config)?;
        let log_path = prefix.join("logs/stderr.log");
        let log = fs::File::create(&log_path)?;
        let mut child = Command::new("nginx")
            .arg("-c")
            .arg(&config_path)
            .arg("-p")
            .arg(prefix)
            .arg("-e")
            .arg(prefix.join("logs/error.log"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        if let Err(error) = wait_for_port(port, &mut child, &log_path) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(error);
        }
        Ok(Self { child, dir, port })
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    /// Returns every request in the access log so far. nginx writes a line
    /// when a response ends, so call it after the client finished.
    pub fn requests(&self) -> Vec<AccessLine> {
        parse_access_log(&fs::read_to_string(self.dir.path().join("logs/access.log")).unwrap_or_default())
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGKILL of the master leaves the worker behind; SIGQUIT through
        // `nginx -s quit` stops both.
        let _ = Command::new("kill").arg("-QUIT").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_log_lines_are_parsed() {
        let text = "127.0.0.1 - - [04/Dec/2026:23:39:43 +0000] \"GET /v2/ecar/blobs/sha256:ab HTTP/1.1\" 206 512 \"\" \"tenderd/0.1.0\"\n\
                    time=\"…\" level=info msg=\"response completed\"\n\
                    127.0.0.1 - - [04/Dec/2026:23:39:44 +0000] \"HEAD /v2/ecar/blobs/sha256:cd HTTP/1.1\" 404 - \"-\" \"tender/0.1.0\"\n";
        let lines = parse_access_log(text);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0], AccessLine { method: "GET".to_owned(), path: "/v2/ecar/blobs/sha256:ab".to_owned(), status: 206, body_bytes: 512 });
        assert_eq!(lines[1].status, 404);
        assert_eq!(lines[1].body_bytes, 0);
    }
}
