//! Deployment metrics in the Prometheus text exposition format (version
//! 0.0.4): served over HTTP on a localhost port by `tenderd run`, written as
//! a node_exporter textfile, and printed by `tenderd metrics`.
//!
//! Gauges come from the state (`state.json`); counters live in
//! `STATE_DIR/metrics.json`, replaced atomically, so they survive restarts
//! and count installs made by any `tenderd` process.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::config::{under_root, Config};
use crate::format::{EntryKind, Manifest};
use crate::fsutil::write_atomic;
use crate::slot::StageStats;
use crate::state::{Phase, State};
use crate::updater::UpdateError;

const COUNTERS_FILE: &str = "metrics.json";
/// Largest HTTP request head the metrics server reads.
const MAX_REQUEST_BYTES: usize = 8192;
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

/// The `[metrics]` section as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct MetricsFile {
    /// TCP port on 127.0.0.1 for `GET /metrics`; unset for no server.
    port: Option<u16>,
    /// node_exporter textfile collector file, such as
    /// `/var/lib/node_exporter/textfile_collector/tender.prom`.
    textfile: Option<PathBuf>,
}

/// Destinations of the metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetricsConfig {
    /// Port of the HTTP server on 127.0.0.1; `None` for no server.
    pub port: Option<u16>,
    /// Textfile below the root prefix.
    pub textfile: Option<PathBuf>,
}

impl MetricsFile {
    pub(crate) fn resolve(self, root: &Path) -> Result<MetricsConfig, String> {
        let textfile = match self.textfile {
            Some(path) if !path.is_absolute() => {
                return Err(format!("metrics.textfile must be an absolute path, got {}", path.display()))
            }
            Some(path) => Some(under_root(root, &path)),
            None => None,
        };
        Ok(MetricsConfig { port: self.port, textfile })
    }
}

/// Counters and last values kept across restarts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Counters {
    /// Stored bytes fetched from release sources: delta packs and chunks.
    pub downloaded_bytes: u64,
    /// Bytes that delta packs saved against fetching the chunks instead.
    pub delta_saved_bytes: u64,
    /// Failed health check rounds.
    pub health_check_failures: u64,
    pub reverts: u64,
    /// Releases rejected because a signature, hash, length, version or
    /// bundle structure did not verify.
    pub verification_failures: u64,
    /// Unix time of the last finished look for updates (repository or USB).
    pub last_check_seconds: Option<u64>,
    /// Seconds from the start of the last staging to the end of its trial.
    pub last_install_seconds: Option<f64>,
    /// Unix time the last staging started, in milliseconds.
    pub staging_started_ms: Option<u64>,
}

fn counters_path(state_dir: &Path) -> PathBuf {
    state_dir.join(COUNTERS_FILE)
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl Counters {
    /// Loads the counters; a missing or unreadable file counts from zero.
    pub fn load(state_dir: &Path) -> Self {
        let path = counters_path(state_dir);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|error| {
                tracing::warn!(path = %path.display(), %error, "metrics counters are unreadable; counting from zero");
                Self::default()
            }),
            Err(_) => Self::default(),
        }
    }
}

/// Changes the counters with `change` and saves them. A failed save is
/// logged, because metrics must never stop an install.
pub fn update(state_dir: &Path, change: impl FnOnce(&mut Counters)) {
    let mut counters = Counters::load(state_dir);
    change(&mut counters);
    let path = counters_path(state_dir);
    let result = serde_json::to_vec_pretty(&counters)
        .map_err(|e| e.to_string())
        .and_then(|bytes| write_atomic(&path, &bytes).map_err(|e| e.to_string()));
    if let Err(error) = result {
        tracing::warn!(path = %path.display(), %error, "cannot save the metrics counters");
    }
}

/// Records the start of a staging, for the install duration.
pub fn staging_started(state_dir: &Path) {
    update(state_dir, |c| c.staging_started_ms = Some(now_ms()));
}

/// Records the end of a trial: the install duration since the staging started.
pub fn trial_finished(state_dir: &Path) {
    update(state_dir, |c| {
        if let Some(started) = c.staging_started_ms.take() {
            c.last_install_seconds = Some(now_ms().saturating_sub(started) as f64 / 1000.0);
        }
    });
}

/// Records a finished look for updates.
pub fn checked(state_dir: &Path) {
    let seconds = now_ms() / 1000;
    update(state_dir, |c| c.last_check_seconds = Some(seconds));
}

/// Stored bytes of the chunks of `manifest` that `active` does not contain:
/// what the robot would fetch without a delta pack.
fn chunk_route_bytes(manifest: &Manifest, active: Option<&Manifest>) -> u64 {
    let mut have = std::collections::HashSet::new();
    for entry in active.map(|m| m.entries.as_slice()).unwrap_or_default() {
        if let EntryKind::File { chunks, .. } = &entry.kind {
            have.extend(chunks.iter().map(|c| c.digest));
        }
    }
    let mut total = 0u64;
    for entry in &manifest.entries {
        if let EntryKind::File { chunks, .. } = &entry.kind {
            for chunk in chunks {
                if have.insert(chunk.digest) {
                    total = total.saturating_add(chunk.stored);
                }
            }
        }
    }
    total
}

/// Records the bytes a staging fetched and, when it used a delta pack, the
/// bytes the pack saved against the chunks of the same release.
pub fn staged(state_dir: &Path, stats: &StageStats, manifest: &Manifest, active: Option<&Manifest>) {
    let fetched = stats.delta_bytes.saturating_add(stats.bytes_fetched);
    let saved = if stats.delta_bytes > 0 { chunk_route_bytes(manifest, active).saturating_sub(fetched) } else { 0 };
    update(state_dir, |c| {
        c.downloaded_bytes = c.downloaded_bytes.saturating_add(fetched);
        c.delta_saved_bytes = c.delta_saved_bytes.saturating_add(saved);
    });
}

/// Returns true when an error means that a release did not verify
/// (signatures, thresholds, versions, lengths, hashes, bundle structure),
/// as opposed to a source that could not be reached or read.
// NOTE: chunk hash failures found while staging are not counted here.
pub fn is_verification_failure(error: &UpdateError) -> bool {
    use crate::online::OnlineError;
    use crate::source::SourceError;
    use crate::tuf::TufError;
    let source_failure = |e: &SourceError| matches!(e, SourceError::Bundle(_) | SourceError::TooLarge { .. });
    match error {
        UpdateError::Verify(crate::verify::VerifyError::Source(e)) => source_failure(e),
        UpdateError::Verify(_) => true,
        UpdateError::Source(e) => source_failure(e),
        UpdateError::Online(OnlineError::Verify(crate::verify::VerifyError::Source(e))) => source_failure(e),
        UpdateError::Online(OnlineError::Verify(_) | OnlineError::RootChainGap { .. } | OnlineError::TargetsRollback { .. }) => true,
        UpdateError::Online(OnlineError::Tuf(e)) => !matches!(
            e,
            TufError::NoTrustedRoot { .. }
                | TufError::ReadTrusted { .. }
                | TufError::Store(_)
                | TufError::Fetch { .. }
                | TufError::WriteTarget { .. }
                | TufError::FetchTarget { .. }
        ),
        UpdateError::Stage(crate::slot::StageError::Chunk(_) | crate::slot::StageError::FileDigest { .. }) => true,
        UpdateError::Partition(crate::slot::PartitionError::Chunk(_)) => true,
        _ => false,
    }
}

/// Escapes a label value: backslash, double quote and line feed.
fn label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
}

const PHASES: [Phase; 8] = [
    Phase::Idle,
    Phase::Staging,
    Phase::Staged,
    Phase::Switching,
    Phase::Trial,
    Phase::Committed,
    Phase::Reverted,
    Phase::Failed,
];

/// Renders every metric in the Prometheus text format.
pub fn render(state: &State, counters: &Counters) -> String {
    let mut out = String::new();
    let active = state.active.and_then(|slot| state.slot_release(slot).map(|release| (slot, release)));

    family(&mut out, "tender_release_info", "gauge", "Release in the active slot; always 1, the labels carry the values.");
    if let Some((slot, release)) = active {
        out.push_str(&format!(
            "tender_release_info{{name=\"{}\",version=\"{}\",slot=\"{slot}\"}} 1\n",
            label(&release.name),
            label(&release.version.to_string())
        ));
    }
    family(&mut out, "tender_state", "gauge", "Install state: 1 for the current state, 0 for the others.");
    for phase in PHASES {
        out.push_str(&format!("tender_state{{state=\"{phase}\"}} {}\n", u8::from(phase == state.phase)));
    }
    family(&mut out, "tender_held", "gauge", "1 while `tenderd hold` stops new installs.");
    out.push_str(&format!("tender_held {}\n", u8::from(state.held)));
    family(&mut out, "tender_health_failures", "gauge", "Consecutive failed health check rounds of the current trial.");
    out.push_str(&format!("tender_health_failures {}\n", state.health_failures));
    family(&mut out, "tender_last_check_timestamp_seconds", "gauge", "Unix time of the last finished look for updates.");
    if let Some(seconds) = counters.last_check_seconds {
        out.push_str(&format!("tender_last_check_timestamp_seconds {seconds}\n"));
    }
    family(&mut out, "tender_last_install_duration_seconds", "gauge", "Seconds from the start of the last staging to the end of its trial.");
    if let Some(seconds) = counters.last_install_seconds {
        out.push_str(&format!("tender_last_install_duration_seconds {seconds:.3}\n"));
    }
    let counters_list = [
        ("tender_downloaded_bytes_total", "Bytes fetched from release sources: delta packs and chunks.", counters.downloaded_bytes),
        ("tender_delta_saved_bytes_total", "Bytes that delta packs saved against fetching chunks.", counters.delta_saved_bytes),
        ("tender_health_check_failures_total", "Failed health check rounds.", counters.health_check_failures),
        ("tender_reverts_total", "Trials that ended with a revert to the committed slot.", counters.reverts),
        ("tender_verification_failures_total", "Releases rejected because they did not verify.", counters.verification_failures),
    ];
    for (name, help, value) in counters_list {
        family(&mut out, name, "counter", help);
        out.push_str(&format!("{name} {value}\n"));
    }
    out
}

/// Renders the metrics of the robot that `config` describes.
pub fn render_for(config: &Config) -> Result<String, crate::state::StateError> {
    let state = State::load(&config.state_dir)?;
    Ok(render(&state, &Counters::load(&config.state_dir)))
}

/// Writes the node_exporter textfile, if one is configured. The collector
/// reads `*.prom` files, so the atomic helper's temporary name, which does
/// not end in `.prom`, is never read half-written.
pub fn write_textfile(config: &Config) {
    let Some(path) = &config.metrics.textfile else { return };
    let result = render_for(config)
        .map_err(|e| e.to_string())
        .and_then(|text| {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
            }
            write_atomic(path, text.as_bytes()).map_err(|e| e.to_string())
        });
    if let Err(error) = result {
        tracing::warn!(path = %path.display(), %error, "cannot write the metrics textfile");
    }
}

/// Binds the metrics server on 127.0.0.1:`port`.
pub fn bind(port: u16) -> std::io::Result<TcpListener> {
    TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
}

/// Serves `GET /metrics` on `listener` until the process ends, one
/// connection at a time; every other request gets 404 or 405.
pub fn serve(listener: TcpListener, config: Config) {
    for stream in listener.incoming() {
        match stream {
            Ok(stream) => {
                if let Err(error) = answer(stream, &config) {
                    tracing::debug!(%error, "metrics request failed");
                }
            }
            Err(error) => tracing::warn!(%error, "cannot accept a metrics connection"),
        }
    }
}

fn answer(mut stream: TcpStream, config: &Config) -> std::io::Result<()> {
    stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    stream.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    let mut head = Vec::new();
    let mut buffer = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REQUEST_BYTES {
        let read = stream.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        head.extend_from_slice(&buffer[..read]);
    }
    let text = String::from_utf8_lossy(&head);
    let mut words = text.lines().next().unwrap_or_default().split_whitespace();
    let (method, target) = (words.next().unwrap_or_default(), words.next().unwrap_or_default());
    let (status, content_type, body) = match (method, target.split('?').next().unwrap_or_default()) {
        ("GET", "/metrics") => match render_for(config) {
            Ok(body) => ("200 OK", "text/plain; version=0.0.4; charset=utf-8", body),
            Err(error) => ("500 Internal Server Error", "text/plain", format!("{error}\n")),
        },
        ("GET", _) => ("404 Not Found", "text/plain", "metrics are at /metrics\n".to_owned()),
        _ => ("405 Method Not Allowed", "text/plain", "only GET is supported\n".to_owned()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_marks_the_current_state() {
        let state = State::default();
        let text = render(&state, &Counters { reverts: 2, ..Counters::default() });
        assert!(text.contains("tender_state{state=\"idle\"} 1\n"), "{text}");
        assert!(text.contains("tender_state{state=\"trial\"} 0\n"), "{text}");
        assert!(text.contains("# TYPE tender_reverts_total counter\ntender_reverts_total 2\n"), "{text}");
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
