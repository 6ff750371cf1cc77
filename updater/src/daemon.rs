//! `tenderd run`: polls the repository, stages new releases in the
//! background, and switches when the policy allows.
//!
//! Each cycle recovers an interrupted install and switches to a staged
//! release when the switch policy allows it. Otherwise, inside the
//! maintenance window and when the link may be used, it looks for a newer
//! release that the rollout allows this robot, and stages it. Between cycles it sleeps for the
//! poll interval plus a random jitter, and notifies systemd that it is alive.

use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::command;
use crate::config::{Config, SwitchPolicy};
use crate::rollout::{eligibility, Eligibility, RobotRollout};
use crate::state::Phase;
use crate::updater::{InstallOptions, UpdateError, Updater};

/// Result of one cycle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CycleOutcome {
    /// No newer release for this robot.
    UpToDate,
    /// Outside the maintenance window; nothing was downloaded.
    OutsideWindow,
    /// The link is metered and downloads on metered links are off.
    Metered,
    /// A newer release exists but the rollout does not allow it yet.
    Deferred(String),
    /// A release was staged and waits for the switch policy.
    Staged(String),
    /// A release was switched to; the string names how its trial ended.
    Applied(String),
    /// The cycle failed; the robot is unchanged or recovered.
    Failed(String),
}

/// Returns true when `now` (UTC) is inside the window `[start, end)`, given
/// as seconds after midnight; a window that ends before it starts wraps
/// around midnight.
pub fn in_window(window: Option<(u32, u32)>, now: SystemTime) -> bool {
    let Some((start, end)) = window else { return true };
    let seconds = now.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs() % 86_400).unwrap_or(0) as u32;
    if start <= end {
        (start..end).contains(&seconds)
    } else {
        seconds >= start || seconds < end
    }
}

/// Reads the id of the current boot, or an empty string when unknown.
fn boot_id(path: &Path) -> String {
    std::fs::read_to_string(path).map(|text| text.trim().to_owned()).unwrap_or_default()
}

fn robot_id(config: &Config) -> String {
    if let Some(id) = &config.daemon.robot_id {
        return id.clone();
    }
    std::fs::read_to_string(&config.daemon.robot_id_file).map(|t| t.trim().to_owned()).unwrap_or_default()
}

fn link_is_metered(config: &Config) -> bool {
    if config.daemon.metered_command.is_empty() {
        return false;
    }
    command::run(&config.daemon.metered_command, None, Duration::from_secs(10)).is_success()
}

/// Runs one poll cycle.
pub fn cycle(updater: &Updater) -> CycleOutcome {
    match try_cycle(updater) {
        Ok(outcome) => outcome,
        Err(error) => {
            tracing::error!(%error, "update cycle failed");
            CycleOutcome::Failed(crate::error_line(&error))
        }
    }
}

fn try_cycle(updater: &Updater) -> Result<CycleOutcome, UpdateError> {
    let config = updater.config();
    let daemon = &config.daemon;
    let now = SystemTime::now();
    updater.recover()?;
    let mut state = updater.load_state()?;
    let current_boot = boot_id(&config.boot_id_file);

    if state.phase == Phase::Staged {
        let allowed = !state.held
            && match daemon.switch {
            SwitchPolicy::Immediately => in_window(daemon.maintenance_window, now),
            SwitchPolicy::NextBoot => !current_boot.is_empty() && state.staged_boot_id.as_deref() != Some(current_boot.as_str()),
            SwitchPolicy::Manual => false,
        };
        if !allowed {
            let release = state.target.and_then(|slot| state.slot_release(slot)).map(|r| r.to_string()).unwrap_or_default();
            return Ok(CycleOutcome::Staged(release));
        }
        let report = updater.apply()?;
        return Ok(CycleOutcome::Applied(format!("{} {}", report.release, report.phase)));
    }

    if !in_window(daemon.maintenance_window, now) {
        return Ok(CycleOutcome::OutsideWindow);
    }
    if !daemon.download_on_metered && link_is_metered(config) {
        return Ok(CycleOutcome::Metered);
    }
    let Some(source_text) = &daemon.source else {
        return Ok(CycleOutcome::Failed("daemon.source is not set in the configuration".to_owned()));
    };
    let (mut source, release) = updater.verified_release(source_text, None)?;
    crate::metrics::checked(&config.state_dir);
    let manifest = release.manifest();
    let newer = state.committed_release().is_none_or(|installed| manifest.version > installed.version);
    if !newer || state.is_rejected(&release.digest()).is_some() {
        return Ok(CycleOutcome::UpToDate);
    }
    let rollout = release.info().rollout.clone().unwrap_or_default();
    let robot_id = robot_id(config);
    let robot = RobotRollout { robot_id: &robot_id, channel: &daemon.channel, held: state.held };
    match eligibility(&rollout, &robot, &manifest.name, &manifest.version, now) {
        Eligibility::Allowed => {}
        other => return Ok(CycleOutcome::Deferred(format!("{} {}: {other:?}", manifest.name, manifest.version))),
    }

    let staged = updater.stage(source.as_mut(), &release, &InstallOptions::default())?;
    state = updater.load_state()?;
    state.staged_boot_id = Some(current_boot);
    updater.save_state(&state)?;
    tracing::info!(release = %staged.release, bytes_fetched = staged.stats.bytes_fetched, "release staged");
    if daemon.switch == SwitchPolicy::Immediately {
        let report = updater.apply()?;
        return Ok(CycleOutcome::Applied(format!("{} {}", report.release, report.phase)));
    }
    Ok(CycleOutcome::Staged(staged.release.to_string()))
}

/// Sends a message to systemd's notify socket, if there is one.
pub fn notify_systemd(message: &str) {
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else { return };
    let path = std::path::PathBuf::from(&socket);
    // An abstract socket name starts with '@', which std cannot address.
    if path.as_os_str().to_string_lossy().starts_with('@') {
        tracing::debug!("abstract NOTIFY_SOCKET is not supported; no systemd notification sent");
        return;
    }
    match std::os::unix::net::UnixDatagram::unbound().and_then(|s| s.send_to(message.as_bytes(), &path)) {
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, "cannot notify systemd"),
    }
}

/// Half the systemd watchdog interval, when systemd asked for one.
fn watchdog_interval() -> Option<Duration> {
    let micros: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    Some(Duration::from_micros(micros / 2))
}

/// Returns a random duration between zero and `ceiling`.
fn jitter(ceiling: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let random = std::collections::hash_map::RandomState::new().build_hasher().finish();
    Duration::from_nanos(random % (ceiling.as_nanos().max(1) as u64))
}

/// Errors that stop the daemon before its first cycle.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Control(#[from] crate::control::ControlError),
    #[error("cannot serve metrics on 127.0.0.1:{port}: {source}; set another metrics.port")]
    MetricsPort { port: u16, source: std::io::Error },
    #[error("cannot start the {what} thread: {source}")]
    Thread { what: &'static str, source: std::io::Error },
}

/// Starts what runs beside the cycles: the control socket, the metrics
/// server and the USB watcher. The returned server removes its socket when
/// dropped.
fn start_services(config: &Config, max_cycles: Option<u64>) -> Result<Option<crate::control::ControlServer>, DaemonError> {
    let control = if config.control.enabled { Some(crate::control::start(config)?) } else { None };
    if let Some(port) = config.metrics.port {
        let listener = crate::metrics::bind(port).map_err(|source| DaemonError::MetricsPort { port, source })?;
        tracing::info!(port, "serving metrics on 127.0.0.1");
        let config = config.clone();
        std::thread::Builder::new()
            .name("metrics".to_owned())
            .spawn(move || crate::metrics::serve(listener, config))
            .map_err(|source| DaemonError::Thread { what: "metrics", source })?;
    }
    // `--once` looks at the repository only; `tenderd usb --once` scans sticks.
    if !config.usb.mounts.is_empty() && max_cycles.is_none() {
        let config = config.clone();
        std::thread::Builder::new()
            .name("usb".to_owned())
            .spawn(move || crate::usb::watch(&config))
            .map_err(|source| DaemonError::Thread { what: "USB watcher", source })?;
    }
    Ok(control)
}

/// Runs cycles until `max_cycles` (or forever), sleeping in between. The
/// state lock is taken for each cycle only, so `tenderd hold` and the other
/// commands work while the daemon sleeps.
pub fn run(config: &Config, max_cycles: Option<u64>) -> Result<(), DaemonError> {
    let daemon = &config.daemon;
    let _control = start_services(config, max_cycles)?;
    notify_systemd("READY=1");
    tracing::info!(source = ?daemon.source, interval = ?daemon.poll_interval, switch = ?daemon.switch, "tenderd started");
    let mut cycles = 0u64;
    loop {
        let outcome = match Updater::open(config.clone()) {
            Ok(updater) => cycle(&updater),
            Err(error) => {
                tracing::warn!(%error, "skipping this update cycle");
                CycleOutcome::Failed(crate::error_line(&error))
            }
        };
        tracing::info!(?outcome, "update cycle finished");
        crate::metrics::write_textfile(config);
        notify_systemd(&format!("STATUS={outcome:?}"));
        cycles += 1;
        if max_cycles.is_some_and(|max| cycles >= max) {
            break;
        }
        let pause = daemon.poll_interval + jitter(daemon.poll_jitter);
        sleep_with_watchdog(pause);
    }
    tracing::info!(cycles, "tenderd stopped");
    Ok(())
}

fn sleep_with_watchdog(total: Duration) {
    let slice = watchdog_interval().unwrap_or(total).max(Duration::from_millis(100));
    let mut left = total;
    while !left.is_zero() {
        let step = left.min(slice);
        std::thread::sleep(step);
        left -= step;
        notify_systemd("WATCHDOG=1");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(hours: u64, minutes: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(20_000 * 86_400 + hours * 3600 + minutes * 60)
    }

    #[test]
    fn window_inside_one_day() {
        let window = Some((2 * 3600, 5 * 3600));
        assert!(in_window(window, at(3, 0)));
        assert!(!in_window(window, at(5, 0)));
        assert!(!in_window(window, at(1, 59)));
    }

    #[test]
    fn window_across_midnight() {
        let window = Some((22 * 3600, 4 * 3600));
        assert!(in_window(window, at(23, 0)));
        assert!(in_window(window, at(1, 0)));
        assert!(!in_window(window, at(12, 0)));
        assert!(in_window(None, at(12, 0)));
    }
}
