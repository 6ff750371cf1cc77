//! Running one health check of each kind.

use std::os::unix::fs::FileTypeExt;
use std::time::{Duration, Instant};

use super::{Check, PathKind};
use crate::command;

/// A failed health check: which check, and what went wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{check} {detail}")]
pub struct CheckFailure {
    /// The check's label, such as `http check http://127.0.0.1:8080/healthz`.
    pub check: String,
    pub detail: String,
}

/// Runs `check` once. `prefix` replaces `{prefix}` in command arguments, and
/// `is_active` (with `{unit}`) is the service manager's command that exits 0
/// for an active unit.
pub fn run(check: &Check, prefix: &str, is_active: &[String]) -> Result<(), CheckFailure> {
    let started = Instant::now();
    let result = match check {
        Check::Command { argv, timeout, .. } => {
            let argv = command::expand(argv, &[("prefix", prefix)]);
            outcome_result(command::run(&argv, None, *timeout))
        }
        Check::SystemdUnit { unit } => {
            let argv = command::expand(is_active, &[("unit", unit)]);
            match command::run(&argv, None, Duration::from_secs(30)) {
                command::Outcome::Success => Ok(()),
                other => Err(format!("is not active ({})", other.describe())),
            }
        }
        Check::Http { url, timeout } => http_get(url, *timeout),
        Check::Path { path, kind } => path_exists(path, *kind),
    };
    let elapsed_ms = started.elapsed().as_millis() as u64;
    match result {
        Ok(()) => {
            tracing::debug!(check = %check.label(), elapsed_ms, "health check passed");
            Ok(())
        }
        Err(detail) => {
            // The trial logs the failure with its count; this adds the timing.
            tracing::debug!(check = %check.label(), %detail, elapsed_ms, "health check failed");
            Err(CheckFailure { check: check.label(), detail })
        }
    }
}

fn outcome_result(outcome: command::Outcome) -> Result<(), String> {
    if outcome.is_success() {
        Ok(())
    } else {
        Err(outcome.describe())
    }
}

/// Sends a GET without a proxy and without following redirects; any status
/// outside 200..=299 fails.
fn http_get(url: &str, timeout: Duration) -> Result<(), String> {
    let client = reqwest::blocking::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .map_err(|e| format!("cannot create an HTTP client: {e}"))?;
    let response = client.get(url).send().map_err(|e| {
        if e.is_timeout() {
            format!("timed out after {}", humantime::format_duration(timeout))
        } else {
            format!("failed: {}", crate::error_line(&e))
        }
    })?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("answered HTTP {status}, expected 2xx"))
    }
}

fn path_exists(path: &std::path::Path, kind: PathKind) -> Result<(), String> {
    let metadata = match std::fs::symlink_metadata(path).and_then(|m| if m.file_type().is_symlink() { std::fs::metadata(path) } else { Ok(m) }) {
        Ok(metadata) => metadata,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err("found no such path".to_owned()),
        Err(e) => return Err(format!("cannot inspect the path: {e}")),
    };
    let file_type = metadata.file_type();
    let matches = match kind {
        PathKind::Any => true,
        PathKind::File => file_type.is_file(),
        PathKind::Directory => file_type.is_dir(),
        PathKind::Socket => file_type.is_socket(),
    };
    if matches {
        Ok(())
    } else {
        Err(format!("exists but is not a {}", match kind {
            PathKind::Any => "path",
            PathKind::File => "regular file",
            PathKind::Directory => "directory",
            PathKind::Socket => "socket",
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_check_tells_socket_from_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("ready");
        std::fs::write(&file, "").expect("write");
        let socket = dir.path().join("node.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).expect("bind");
        assert_eq!(path_exists(&file, PathKind::File), Ok(()));
        assert_eq!(path_exists(&socket, PathKind::Socket), Ok(()));
        assert!(path_exists(&file, PathKind::Socket).is_err());
        let missing = path_exists(&dir.path().join("missing"), PathKind::Any).expect_err("missing");
        assert_eq!(missing, "found no such path");
    }

    #[test]
    fn command_check_names_itself_on_failure() {
        let check = Check::Command { name: "lidar".to_owned(), argv: vec!["false".to_owned()], timeout: Duration::from_secs(5) };
        let failure = run(&check, "/opt/ecar/current", &[]).expect_err("false fails");
        assert!(failure.to_string().starts_with("command check \"lidar\" failed"), "{failure}");
    }
}
