//! Health checks of a release on trial: the release's own command from its
//! manifest, combined with the checks the robot's `[health]` section adds
//! (commands with timeouts, systemd units, HTTP endpoints, paths).
//!
//! A round runs every check in order and fails at the first failure. After
//! the switch and the service restarts, the trial waits `grace_period`, then
//! runs rounds every `interval` until one passes (commit) or
//! `failures_to_revert` rounds fail in a row (revert).

mod checks;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::config::under_root;
use crate::format::HealthCheck;

pub use checks::CheckFailure;

/// Default timeout of a command or HTTP check.
const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(30);

/// The `[health]` section as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct HealthFile {
    #[serde(with = "crate::config::duration_text")]
    grace_period: Option<Duration>,
    failures_to_revert: Option<u32>,
    #[serde(with = "crate::config::duration_text")]
    interval: Option<Duration>,
    /// Whether the release's own health command runs too.
    release_check: Option<bool>,
    checks: Vec<CheckFile>,
}

/// One `[[health.checks]]` entry as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "snake_case")]
enum CheckFile {
    Command {
        name: Option<String>,
        command: Vec<String>,
        #[serde(default, with = "crate::config::duration_text")]
        timeout: Option<Duration>,
    },
    SystemdUnit {
        unit: String,
    },
    Http {
        url: String,
        #[serde(default, with = "crate::config::duration_text")]
        timeout: Option<Duration>,
    },
    Path {
        path: PathBuf,
        #[serde(default, rename = "type")]
        kind: PathKind,
    },
}

/// Kind of file system object a path check requires.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PathKind {
    /// Any kind of file system object.
    #[default]
    Any,
    File,
    Directory,
    Socket,
}

/// One health check of the robot configuration, with paths below the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// A command that must exit 0 within `timeout`; `{prefix}` in an
    /// argument is replaced by the runtime path of the active release.
    Command { name: String, argv: Vec<String>, timeout: Duration },
    /// A unit that the configured `services.is_active` command reports active.
    SystemdUnit { unit: String },
    /// An http:// URL whose GET must return a 2xx status within `timeout`.
    /// Redirects are not followed.
    Http { url: String, timeout: Duration },
    /// A path that must exist with the given kind.
    Path { path: PathBuf, kind: PathKind },
}

impl Check {
    /// Names the check in logs and revert reasons, such as `http check http://127.0.0.1:8080/healthz`.
    pub fn label(&self) -> String {
        match self {
            Check::Command { name, .. } => format!("command check {name:?}"),
            Check::SystemdUnit { unit } => format!("systemd unit check {unit}"),
            Check::Http { url, .. } => format!("http check {url}"),
            Check::Path { path, .. } => format!("path check {}", path.display()),
        }
    }
}

/// The robot's health settings, resolved below the root.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HealthConfig {
    /// Wait after the switch and service restarts before the first round.
    pub grace_period: Duration,
    /// Overrides the release's count of consecutive failed rounds.
    pub failures_to_revert: Option<u32>,
    /// Overrides the release's interval between rounds.
    pub interval: Option<Duration>,
    /// Whether the release's own health command runs in each round.
    pub release_check: bool,
    pub checks: Vec<Check>,
}

impl HealthFile {
    /// Validates the section and resolves paths below `root`. Errors name the
    /// offending check.
    pub(crate) fn resolve(self, root: &Path) -> Result<HealthConfig, String> {
        let mut checks = Vec::with_capacity(self.checks.len());
        for (index, check) in self.checks.into_iter().enumerate() {
            let position = index + 1;
            let check = match check {
                CheckFile::Command { name, command, timeout } => {
                    if command.is_empty() {
                        return Err(format!("health check {position} (command) has an empty command"));
                    }
                    let name = name.unwrap_or_else(|| command.join(" "));
                    Check::Command { name, argv: command, timeout: timeout.unwrap_or(DEFAULT_CHECK_TIMEOUT) }
                }
                CheckFile::SystemdUnit { unit } => {
                    if unit.trim().is_empty() {
                        return Err(format!("health check {position} (systemd_unit) has an empty unit"));
                    }
                    Check::SystemdUnit { unit }
                }
                CheckFile::Http { url, timeout } => {
                    if !url.starts_with("http://") {
                        return Err(format!("health check {position} (http) has URL {url:?}; write an http:// URL such as http://127.0.0.1:8080/healthz"));
                    }
                    Check::Http { url, timeout: timeout.unwrap_or(DEFAULT_CHECK_TIMEOUT) }
                }
                CheckFile::Path { path, kind } => {
                    if !path.is_absolute() {
                        return Err(format!("health check {position} (path) has relative path {}; write an absolute path", path.display()));
                    }
                    Check::Path { path: under_root(root, &path), kind }
                }
            };
            checks.push(check);
        }
        if self.failures_to_revert == Some(0) {
            return Err("health.failures_to_revert must be at least 1".to_owned());
        }
        Ok(HealthConfig {
            grace_period: self.grace_period.unwrap_or_default(),
            failures_to_revert: self.failures_to_revert,
            interval: self.interval,
            release_check: self.release_check.unwrap_or(true),
            checks,
        })
    }
}

/// The checks of one trial: the robot's configuration combined with the
/// health check of the release on trial.
pub struct TrialChecks<'a> {
    health: &'a HealthConfig,
    release: &'a HealthCheck,
    is_active_command: &'a [String],
    /// Runtime path of the active release, for `{prefix}`.
    prefix: String,
}

impl<'a> TrialChecks<'a> {
    pub fn new(config: &'a crate::config::Config, release: &'a HealthCheck, prefix: String) -> Self {
        Self { health: &config.health, release, is_active_command: &config.is_active_command, prefix }
    }

    pub fn grace_period(&self) -> Duration {
        self.health.grace_period
    }

    /// Consecutive failed rounds that revert the robot; at least 1.
    pub fn failures_to_revert(&self) -> u32 {
        self.health.failures_to_revert.unwrap_or(self.release.failures_to_revert).max(1)
    }

    pub fn interval(&self) -> Duration {
        self.health.interval.unwrap_or(Duration::from_millis(self.release.interval_ms))
    }

    /// Runs one round: the release's command, then every configured check.
    /// Returns the first failure.
    pub fn run_round(&self) -> Result<(), CheckFailure> {
        if self.health.release_check && !self.release.command.is_empty() {
            let release_check = Check::Command {
                name: "release health check".to_owned(),
                argv: self.release.command.clone(),
                timeout: Duration::from_millis(self.release.timeout_ms),
            };
            checks::run(&release_check, &self.prefix, self.is_active_command)?;
        }
        for check in &self.health.checks {
            checks::run(check, &self.prefix, self.is_active_command)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<HealthConfig, String> {
        let file: HealthFile = toml::from_str(text).map_err(|e| e.to_string())?;
        file.resolve(Path::new("/tmp/robot"))
    }

    #[test]
    fn health_section_parses_every_kind() {
        let config = parse(
            r#"
grace_period = "5s"
failures_to_revert = 2
[[checks]]
kind = "command"
command = ["true"]
timeout = "1s"
[[checks]]
kind = "systemd_unit"
unit = "ecar-perception"
[[checks]]
kind = "http"
url = "http://127.0.0.1:8080/healthz"
[[checks]]
kind = "path"
path = "/run/ecar/perception.sock"
type = "socket"
"#,
        )
        .expect("valid section");
        assert_eq!(config.grace_period, Duration::from_secs(5));
        assert_eq!(config.failures_to_revert, Some(2));
        assert!(config.release_check);
        assert_eq!(config.checks.len(), 4);
        assert_eq!(
            config.checks[3],
            Check::Path { path: PathBuf::from("/tmp/robot/run/ecar/perception.sock"), kind: PathKind::Socket }
        );
    }

    #[test]
    fn health_section_rejects_https_and_relative_paths() {
        let https = parse("[[checks]]\nkind = \"http\"\nurl = \"https://example.invalid/\"\n").expect_err("https");
        assert!(https.contains("http://"), "{https}");
        let relative = parse("[[checks]]\nkind = \"path\"\npath = \"run/x\"\n").expect_err("relative");
        assert!(relative.contains("relative path"), "{relative}");
        let zero = parse("failures_to_revert = 0\n").expect_err("zero");
        assert!(zero.contains("at least 1"), "{zero}");
    }
}
