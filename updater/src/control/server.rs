//! The daemon side of the control socket: one thread accepts connections
//! and each connection gets a thread of its own, up to [`MAX_CLIENTS`].

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::events::{new_events, EventLine};
use super::{group_id, ControlError, Request, Response, MAX_REQUEST_BYTES};
use crate::config::Config;
use crate::state::State;
use crate::status::Status;
use crate::updater::{InstallOptions, UpdateError, Updater};

/// Maximum connections served at once; more get an error response and are closed.
const MAX_CLIENTS: usize = 32;
/// How often a subscriber's connection looks for new history events.
const EVENT_POLL: Duration = Duration::from_millis(200);
/// How long a request that changes the robot waits for the state lock,
/// which a daemon cycle holds while it works.
const LOCK_WAIT: Duration = Duration::from_secs(30);
/// Mode of the socket: read and write for the owner and the group.
const SOCKET_MODE: u32 = 0o660;

/// The bound socket; dropping it removes the socket file.
pub struct ControlServer {
    path: PathBuf,
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        if let Err(error) = std::fs::remove_file(&self.path) {
            tracing::debug!(path = %self.path.display(), %error, "cannot remove the control socket");
        }
    }
}

/// Binds the control socket with mode 0660 and the configured group, and
/// serves it from a background thread.
pub fn start(config: &Config) -> Result<ControlServer, ControlError> {
    let path = config.control.socket.clone();
    let io = |action: &'static str, path: &Path| {
        let path = path.to_owned();
        move |source| ControlError::Io { action, path, source }
    };
    let gid = config.control.group.as_deref().map(group_id).transpose()?;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io("create the directory of", &path))?;
    }
    if path.exists() {
        if UnixStream::connect(&path).is_ok() {
            return Err(ControlError::InUse { path });
        }
        // A socket left by a daemon that died, because no process listens on it.
        std::fs::remove_file(&path).map_err(io("remove the stale", &path))?;
    }
    let listener = UnixListener::bind(&path).map_err(io("bind", &path))?;
    let server = ControlServer { path: path.clone() };
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(SOCKET_MODE)).map_err(io("set the mode of", &path))?;
    if let Some(gid) = gid {
        std::os::unix::fs::chown(&path, None, Some(gid)).map_err(io("change the group of", &path))?;
    }
    tracing::info!(socket = %path.display(), group = ?config.control.group, "control socket listening");
    let config = config.clone();
    std::thread::Builder::new()
        .name("control".to_owned())
        .spawn(move || accept_loop(listener, config))
        .map_err(io("start the thread of", &path))?;
    Ok(server)
}

fn accept_loop(listener: UnixListener, config: Config) {
    let clients = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        let mut stream = match stream {
            Ok(stream) => stream,
            Err(error) => {
                tracing::warn!(%error, "cannot accept a control connection");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        if clients.fetch_add(1, Ordering::SeqCst) >= MAX_CLIENTS {
            clients.fetch_sub(1, Ordering::SeqCst);
            let _ = send(&mut stream, &failure(format!("tenderd serves at most {MAX_CLIENTS} control connections at once; try again later")));
            continue;
        }
        let config = config.clone();
        let clients = Arc::clone(&clients);
        let spawned = std::thread::Builder::new().name("control-client".to_owned()).spawn(move || {
            if let Err(error) = serve_client(stream, &config) {
                tracing::debug!(%error, "control connection ended with an error");
            }
            clients.fetch_sub(1, Ordering::SeqCst);
        });
        if let Err(error) = spawned {
            tracing::warn!(%error, "cannot start a control connection thread");
        }
    }
}

fn failure(error: String) -> Response {
    Response { ok: false, result: None, error: Some(error) }
}

fn success(result: serde_json::Value) -> Response {
    Response { ok: true, result: Some(result), error: None }
}

fn send(stream: &mut UnixStream, response: &Response) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(response).map_err(std::io::Error::other)?;
    line.push(b'\n');
    stream.write_all(&line)
}

fn serve_client(stream: UnixStream, config: &Config) -> std::io::Result<()> {
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        let read = (&mut reader).take(MAX_REQUEST_BYTES).read_line(&mut line)?;
        if read == 0 {
            return Ok(());
        }
        if !line.ends_with('\n') && read as u64 >= MAX_REQUEST_BYTES {
            return send(&mut writer, &failure(format!("request line is longer than {MAX_REQUEST_BYTES} bytes")));
        }
        let request: Request = match serde_json::from_str(line.trim()) {
            Ok(request) => request,
            Err(error) => {
                send(&mut writer, &failure(format!("invalid request {:?}: {error}", line.trim())))?;
                continue;
            }
        };
        tracing::debug!(?request, "control request");
        if let Request::Events { replay } = request {
            send(&mut writer, &success(serde_json::Value::from("subscribed")))?;
            return stream_events(reader, writer, config, replay);
        }
        let response = match handle(&request, config) {
            Ok(value) => success(value),
            Err(message) => failure(message),
        };
        send(&mut writer, &response)?;
    }
}

/// Opens the updater, waiting up to [`LOCK_WAIT`] while a daemon cycle
/// holds the state lock.
fn open_updater(config: &Config) -> Result<Updater, UpdateError> {
    let started = Instant::now();
    loop {
        match Updater::open(config.clone()) {
            Err(UpdateError::Locked { .. }) if started.elapsed() < LOCK_WAIT => std::thread::sleep(Duration::from_millis(250)),
            other => return other,
        }
    }
}

fn to_value<T: serde::Serialize>(value: &T) -> Result<serde_json::Value, String> {
    serde_json::to_value(value).map_err(|e| format!("cannot encode the response: {e}"))
}

fn handle(request: &Request, config: &Config) -> Result<serde_json::Value, String> {
    let line = |error: UpdateError| crate::error_line(&error);
    let state_line = |error: crate::state::StateError| crate::error_line(&error);
    let value = match request {
        Request::Status => {
            let state = State::load(&config.state_dir).map_err(state_line)?;
            to_value(&Status::of_robot(&state, config))?
        }
        Request::History => to_value(&State::load(&config.state_dir).map_err(state_line)?.history)?,
        Request::Metrics => serde_json::Value::from(crate::metrics::render_for(config).map_err(state_line)?),
        Request::Deploy { source, version, allow_reverted } => {
            tracing::info!(%source, "deploy requested on the control socket");
            let options = InstallOptions { allow_reverted: *allow_reverted, version: version.clone() };
            let report = open_updater(config)
                .and_then(|updater| updater.install(source, &options))
                .map_err(|error| format!("install from {source} failed: {}", line(error)))?;
            to_value(&report)?
        }
        Request::Rollback => to_value(&open_updater(config).and_then(|u| u.rollback()).map_err(line)?.to_string())?,
        Request::Commit => to_value(&open_updater(config).and_then(|u| u.commit()).map_err(line)?.to_string())?,
        Request::Apply => to_value(&open_updater(config).and_then(|u| u.apply()).map_err(line)?)?,
        Request::Hold => {
            open_updater(config).and_then(|u| u.set_hold(true)).map_err(line)?;
            serde_json::Value::from("held")
        }
        Request::Resume => {
            open_updater(config).and_then(|u| u.set_hold(false)).map_err(line)?;
            serde_json::Value::from("resumed")
        }
        Request::Events { .. } => return Err("events are streamed, not answered".to_owned()),
    };
    if !matches!(request, Request::Status | Request::History | Request::Metrics) {
        crate::metrics::write_textfile(config);
    }
    Ok(value)
}

/// Identifies one version of the state file. Each save renames a new file
/// into place, so the inode changes even when two saves share an mtime tick.
fn file_version(path: &Path) -> Option<(u64, SystemTime)> {
    use std::os::unix::fs::MetadataExt;
    let metadata = std::fs::metadata(path).ok()?;
    Some((metadata.ino(), metadata.modified().ok()?))
}

/// Sends one line per new history event until the client closes the
/// connection. The state file is read again whenever it was replaced.
fn stream_events(mut reader: BufReader<UnixStream>, mut writer: UnixStream, config: &Config, replay: usize) -> std::io::Result<()> {
    let state_path = State::path(&config.state_dir);
    let load = || State::load(&config.state_dir).map(|s| s.history).unwrap_or_default();
    let mut seen_version = file_version(&state_path);
    let mut history = load();
    for event in history.iter().skip(history.len().saturating_sub(replay)) {
        write_event(&mut writer, event)?;
    }
    reader.get_ref().set_read_timeout(Some(EVENT_POLL))?;
    let mut scratch = [0u8; 256];
    loop {
        // Reading doubles as the wait between polls and notices a closed client.
        match reader.read(&mut scratch) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {}
            Err(e) => return Err(e),
        }
        let version = file_version(&state_path);
        if version == seen_version {
            continue;
        }
        seen_version = version;
        let latest = load();
        for event in new_events(&history, &latest) {
            write_event(&mut writer, event)?;
        }
        history = latest;
    }
}

fn write_event(writer: &mut UnixStream, event: &crate::state::Event) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(&EventLine::from(event)).map_err(std::io::Error::other)?;
    line.push(b'\n');
    writer.write_all(&line)
}
