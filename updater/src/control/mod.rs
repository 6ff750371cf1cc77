//! The local control API: a Unix domain socket that serves newline-delimited
//! JSON, one request per line and one response per line, plus a stream of
//! state events for subscribers.
//!
//! Requests (`command` selects the operation):
//!
//! ```text
//! {"command":"status"}                    -> the fields of `tenderd status --json`
//! {"command":"history"}                   -> the history, oldest first
//! {"command":"deploy","source":"/media/usb0/ecar-4wd4ws-1.0.1.tender"}  -> the install report
//!     optional: "version":"1.0.1", "allow_reverted":true
//! {"command":"rollback"} {"command":"commit"} {"command":"apply"}
//! {"command":"hold"} {"command":"resume"}
//! {"command":"metrics"}                   -> the Prometheus text as a JSON string
//! {"command":"events","replay":N}         -> {"ok":true,"result":"subscribed"}, then one
//!                                            event line per state change, until the client closes
//! ```
//!
//! A response is `{"ok":true,"result":…}` or `{"ok":false,"error":"one line"}`.
//! The socket has mode 0660 and, when `control.group` is set, belongs to
//! that group, so only root and the group's members may connect.

pub mod client;
mod events;
mod server;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::under_root;

pub use events::EventLine;
pub use server::{start, ControlServer};

/// Default socket path on the robot.
pub const DEFAULT_SOCKET: &str = "/run/tender/tenderd.sock";
/// Maximum request line the server reads.
pub const MAX_REQUEST_BYTES: u64 = 64 * 1024;

/// The `[control]` section as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct ControlFile {
    /// Whether `tenderd run` serves the socket.
    enabled: bool,
    socket: PathBuf,
    /// Group that may connect, by name or number; unset keeps the daemon's group.
    group: Option<String>,
}

impl Default for ControlFile {
    fn default() -> Self {
        Self { enabled: true, socket: PathBuf::from(DEFAULT_SOCKET), group: None }
    }
}

/// Settings of the control socket, with the path below the root prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlConfig {
    pub enabled: bool,
    pub socket: PathBuf,
    pub group: Option<String>,
}

impl ControlFile {
    pub(crate) fn resolve(self, root: &Path) -> Result<ControlConfig, String> {
        if !self.socket.is_absolute() {
            return Err(format!("control.socket must be an absolute path, got {}", self.socket.display()));
        }
        if self.group.as_deref().is_some_and(|g| g.trim().is_empty()) {
            return Err("control.group must not be empty; remove it to keep the daemon's group".to_owned());
        }
        Ok(ControlConfig { enabled: self.enabled, socket: under_root(root, &self.socket), group: self.group })
    }
}

/// One request on the control socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    Status,
    History,
    Deploy {
        /// A bundle path, repository directory or http(s):// URL, valid for the daemon's process.
        source: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        version: Option<semver::Version>,
        #[serde(default)]
        allow_reverted: bool,
    },
    Rollback,
    Commit,
    Apply,
    Hold,
    Resume,
    Metrics,
    Events {
        /// History events sent first, newest last, before the live ones.
        #[serde(default)]
        replay: usize,
    },
}

/// One response line.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Errors of the control socket, on both sides.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("permission denied on the tenderd control socket {}; run as root or as a member of {}", path.display(), group_hint(group))]
    PermissionDenied { path: PathBuf, group: Option<String> },
    #[error("group {group:?} in control.group is not in /etc/group; create it (groupadd {group}) or set its number")]
    UnknownGroup { group: String },
    #[error("another tenderd already serves the control socket {}; stop it first", path.display())]
    InUse { path: PathBuf },
    #[error("cannot {action} the control socket {}: {source}", path.display())]
    Io { action: &'static str, path: PathBuf, source: std::io::Error },
    #[error("tenderd sent an invalid response on {}: {detail}", path.display())]
    Protocol { path: PathBuf, detail: String },
    /// The daemon ran the request and it failed; the message is the daemon's.
    #[error("{0}")]
    Remote(String),
}

fn group_hint(group: &Option<String>) -> String {
    match group {
        Some(group) => format!("group {group} (control.group)"),
        None => "the socket's group (set control.group)".to_owned(),
    }
}

/// Looks a group up by name or number in `/etc/group`.
// NOTE: groups that only NSS sources such as LDAP provide are not found;
// give those by number.
pub fn group_id(group: &str) -> Result<u32, ControlError> {
    if let Ok(gid) = group.parse::<u32>() {
        return Ok(gid);
    }
    let text = std::fs::read_to_string("/etc/group")
        .map_err(|source| ControlError::Io { action: "look up the group of", path: PathBuf::from("/etc/group"), source })?;
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?;
            let gid = fields.nth(1)?.parse::<u32>().ok()?;
            (name == group).then_some(gid)
        })
        .next()
        .ok_or_else(|| ControlError::UnknownGroup { group: group.to_owned() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_as_json() {
        let deploy: Request = serde_json::from_str(r#"{"command":"deploy","source":"/media/usb0/a.tender"}"#).expect("deploy");
        assert_eq!(deploy, Request::Deploy { source: "/media/usb0/a.tender".to_owned(), version: None, allow_reverted: false });
        let events: Request = serde_json::from_str(r#"{"command":"events","replay":3}"#).expect("events");
        assert_eq!(events, Request::Events { replay: 3 });
        assert!(serde_json::from_str::<Request>(r#"{"command":"reboot"}"#).is_err());
    }

    #[test]
    fn group_lookup_finds_root_and_rejects_unknown() {
        assert_eq!(group_id("root").expect("root group"), 0);
        assert_eq!(group_id("4242").expect("number"), 4242);
        let error = group_id("no-such-tender-group").expect_err("unknown");
        assert!(error.to_string().contains("not in /etc/group"), "{error}");
    }
}
