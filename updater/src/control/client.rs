//! The command side of the control socket: `tenderd status` and the other
//! commands use it when a daemon serves the socket.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use super::{ControlError, EventLine, Request, Response};
use crate::config::Config;

/// Maximum response line a client reads; the history is the largest response.
const MAX_RESPONSE_BYTES: u64 = 16 * 1024 * 1024;

/// A connection to a running daemon.
pub struct Client {
    path: PathBuf,
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

/// Connects to the daemon's control socket. Returns `None` when no daemon
/// serves it (no socket file, or no process listening), so the caller works on
/// the state directly, and an error when the socket exists but this user
/// may not use it.
pub fn connect(config: &Config) -> Result<Option<Client>, ControlError> {
    connect_path(&config.control.socket, config.control.group.as_deref())
}

pub fn connect_path(path: &Path, group: Option<&str>) -> Result<Option<Client>, ControlError> {
    match UnixStream::connect(path) {
        Ok(stream) => {
            let writer = stream.try_clone().map_err(|source| ControlError::Io { action: "use", path: path.to_owned(), source })?;
            Ok(Some(Client { path: path.to_owned(), reader: BufReader::new(stream), writer }))
        }
        Err(error) if matches!(error.kind(), ErrorKind::NotFound | ErrorKind::ConnectionRefused) => Ok(None),
        Err(error) if error.kind() == ErrorKind::PermissionDenied => {
            Err(ControlError::PermissionDenied { path: path.to_owned(), group: group.map(str::to_owned) })
        }
        Err(source) => Err(ControlError::Io { action: "connect to", path: path.to_owned(), source }),
    }
}

impl Client {
    fn read_line(&mut self) -> Result<Option<String>, ControlError> {
        let mut line = String::new();
        let read = (&mut self.reader)
            .take(MAX_RESPONSE_BYTES)
            .read_line(&mut line)
            .map_err(|source| ControlError::Io { action: "read from", path: self.path.clone(), source })?;
        Ok((read > 0).then_some(line))
    }

    /// Sends `request` and returns the daemon's result, or its error as
    /// [`ControlError::Remote`].
    pub fn request(&mut self, request: &Request) -> Result<serde_json::Value, ControlError> {
        let protocol = |detail: String| ControlError::Protocol { path: self.path.clone(), detail };
        let mut line = serde_json::to_vec(request).map_err(|e| protocol(e.to_string()))?;
        line.push(b'\n');
        self.writer
            .write_all(&line)
            .map_err(|source| ControlError::Io { action: "write to", path: self.path.clone(), source })?;
        let Some(answer) = self.read_line()? else {
            return Err(ControlError::Protocol { path: self.path.clone(), detail: "the daemon closed the connection".to_owned() });
        };
        let response: Response =
            serde_json::from_str(&answer).map_err(|e| ControlError::Protocol { path: self.path.clone(), detail: e.to_string() })?;
        match response {
            Response { ok: true, result, .. } => Ok(result.unwrap_or(serde_json::Value::Null)),
            Response { error, .. } => Err(ControlError::Remote(error.unwrap_or_else(|| "the daemon reported an error without a message".to_owned()))),
        }
    }

    /// Subscribes to state events, `replay` past ones first, and calls
    /// `each` for every event until it returns false or the daemon stops.
    pub fn events(&mut self, replay: usize, mut each: impl FnMut(EventLine) -> bool) -> Result<(), ControlError> {
        self.request(&Request::Events { replay })?;
        while let Some(line) = self.read_line()? {
            let event: EventLine =
                serde_json::from_str(&line).map_err(|e| ControlError::Protocol { path: self.path.clone(), detail: e.to_string() })?;
            if !each(event) {
                break;
            }
        }
        Ok(())
    }
}
