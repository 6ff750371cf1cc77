//! A small HTTP/1.1 file server for tests that injects the faults of bad
//! robot links: dropped connections, stalls, 5xx and 429 responses with
//! `Retry-After`, servers that ignore `Range`, corrupted bytes, changed
//! ETags and redirects.
//!
//! It listens on 127.0.0.1 only, serves the files of one directory, responds to
//! every request with `Connection: close`, and stops when dropped. Every
//! request is logged with the bytes sent, so tests can check what crossed
//! the wire.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use sha2::{Digest, Sha256};

/// A fault and the requests it applies to.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Applies to request paths that start with this prefix.
    pub path_prefix: String,
    pub fault: Fault,
    /// How many more requests the rule applies to; `None` for all.
    pub remaining: Option<u32>,
}

/// What goes wrong with a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Close the connection after sending this many body bytes.
    DropAfter(u64),
    /// Send the headers, then wait before sending the body.
    Stall(Duration),
    /// Respond with this status and an optional `Retry-After` in seconds.
    Status { code: u16, retry_after: Option<u32> },
    /// Respond `200` with the whole file even when a range was requested.
    IgnoreRange,
    /// Flip one bit of the body byte at this offset of the file.
    Corrupt(u64),
    /// Respond with an ETag that differs from the content's.
    ChangeEtag,
    /// Respond `302` to this location.
    Redirect(String),
}

/// One request the server responded to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestLog {
    pub path: String,
    pub range: Option<String>,
    pub status: u16,
    pub body_bytes: u64,
}

struct Shared {
    root: PathBuf,
    rules: Mutex<Vec<Rule>>,
    log: Mutex<Vec<RequestLog>>,
    stop: AtomicBool,
}

/// A running fault-injecting server; dropping it stops the server.
pub struct FaultServer {
    address: SocketAddr,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// Maximum size of a request head the server reads.
const MAX_HEAD_BYTES: usize = 16 * 1024;
const IO_TIMEOUT: Duration = Duration::from_secs(10);

impl FaultServer {
    /// Serves `root` on an ephemeral port of 127.0.0.1.
    pub fn start(root: &Path) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let address = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let shared = Arc::new(Shared {
            root: root.to_owned(),
            rules: Mutex::new(Vec::new()),
            log: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
        });
        let worker = Arc::clone(&shared);
        let thread = std::thread::spawn(move || accept_loop(&listener, &worker));
        Ok(Self { address, shared, thread: Some(thread) })
    }

    /// Base URL, such as `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Adds a fault for the next `times` requests under `path_prefix`
    /// (`None`: every request).
    pub fn add_fault(&self, path_prefix: &str, fault: Fault, times: Option<u32>) {
        let rule = Rule { path_prefix: path_prefix.to_owned(), fault, remaining: times };
        self.shared.rules.lock().unwrap_or_else(|e| e.into_inner()).push(rule);
    }

    pub fn clear_faults(&self) {
        self.shared.rules.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// Returns every request responded to so far.
    pub fn requests(&self) -> Vec<RequestLog> {
        self.shared.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Total body bytes sent so far.
    pub fn body_bytes_sent(&self) -> u64 {
        self.requests().iter().map(|r| r.body_bytes).sum()
    }
}

impl Drop for FaultServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    let mut workers = Vec::new();
    while !shared.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                let shared = Arc::clone(shared);
                workers.push(std::thread::spawn(move || {
                    let _ = serve(stream, &shared);
                }));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(5)),
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
        workers.retain(|worker| !worker.is_finished());
    }
    for worker in workers {
        let _ = worker.join();
    }
}

/// Takes the first rule for `path`, counting it down.
fn take_fault(shared: &Shared, path: &str) -> Option<Fault> {
    let mut rules = shared.rules.lock().unwrap_or_else(|e| e.into_inner());
    let index = rules.iter().position(|rule| path.starts_with(&rule.path_prefix) && rule.remaining != Some(0))?;
    let rule = &mut rules[index];
    if let Some(remaining) = rule.remaining.as_mut() {
        *remaining -= 1;
    }
    Some(rule.fault.clone())
}

struct Request {
    method: String,
    path: String,
    range: Option<String>,
    if_range: Option<String>,
}

fn read_request(stream: &TcpStream) -> std::io::Result<Request> {
    let mut reader = BufReader::new(stream.try_clone()?.take(MAX_HEAD_BYTES as u64));
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let path = parts.next().unwrap_or("/").to_owned();
    let mut range = None;
    let mut if_range = None;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            match name.trim().to_ascii_lowercase().as_str() {
                "range" => range = Some(value.trim().to_owned()),
                "if-range" => if_range = Some(value.trim().to_owned()),
                _ => {}
            }
        }
    }
    Ok(Request { method, path, range, if_range })
}

/// Parses `bytes=START-` or `bytes=START-END` against a file length.
fn parse_range(range: &str, len: u64) -> Option<(u64, u64)> {
    let spec = range.strip_prefix("bytes=")?;
    let (start, end) = spec.split_once('-')?;
    let start: u64 = start.trim().parse().ok()?;
    let end: u64 = if end.trim().is_empty() { len.checked_sub(1)? } else { end.trim().parse().ok()? };
    (start <= end && end < len).then_some((start, end))
}

fn serve(mut stream: TcpStream, shared: &Shared) -> std::io::Result<()> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let request = read_request(&stream)?;
    let path = request.path.split('?').next().unwrap_or("/").to_owned();
    let fault = take_fault(shared, &path);
    let mut log = RequestLog { path: path.clone(), range: request.range.clone(), status: 0, body_bytes: 0 };
    let result = respond(&mut stream, shared, &request, &path, fault, &mut log);
    shared.log.lock().unwrap_or_else(|e| e.into_inner()).push(log);
    result
}

fn respond(
    stream: &mut TcpStream,
    shared: &Shared,
    request: &Request,
    path: &str,
    fault: Option<Fault>,
    log: &mut RequestLog,
) -> std::io::Result<()> {
    match &fault {
        Some(Fault::Status { code, retry_after }) => {
            log.status = *code;
            let retry = retry_after.map(|s| format!("Retry-After: {s}\r\n")).unwrap_or_default();
            return write!(stream, "HTTP/1.1 {code} Fault\r\n{retry}Content-Length: 0\r\nConnection: close\r\n\r\n");
        }
        Some(Fault::Redirect(location)) => {
            log.status = 302;
            return write!(stream, "HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
        _ => {}
    }
    let relative = path.trim_start_matches('/');
    let file = shared.root.join(relative);
    let body = if relative.split('/').any(|part| part == "..") { None } else { std::fs::read(&file).ok() };
    let Some(mut body) = body else {
        log.status = 404;
        return write!(stream, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    };
    let len = body.len() as u64;
    let mut etag = format!("\"{}\"", hex::encode(&Sha256::digest(&body)[..8]));
    if fault == Some(Fault::ChangeEtag) {
        etag = format!("\"changed-{}\"", &etag[1..9]);
    }
    if let Some(Fault::Corrupt(offset)) = fault {
        if let Some(byte) = body.get_mut(offset as usize) {
            *byte ^= 0x01;
        }
    }
    let ranged = request.range.is_some()
        && fault != Some(Fault::IgnoreRange)
        && request.if_range.as_ref().is_none_or(|tag| *tag == etag);
    let (status, start, end) = match (ranged, request.range.as_deref()) {
        (true, Some(range)) => match parse_range(range, len) {
            Some((start, end)) => (206, start, end),
            None => {
                log.status = 416;
                return write!(
                    stream,
                    "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{len}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
            }
        },
        _ => (200, 0, len.saturating_sub(1)),
    };
    let slice: &[u8] = if len == 0 { &[] } else { &body[start as usize..=end as usize] };
    log.status = status;
    let mut head = format!("HTTP/1.1 {status} {}\r\n", if status == 206 { "Partial Content" } else { "OK" });
    head.push_str(&format!("Content-Length: {}\r\nETag: {etag}\r\nAccept-Ranges: bytes\r\nConnection: close\r\n", slice.len()));
    if status == 206 {
        head.push_str(&format!("Content-Range: bytes {start}-{end}/{len}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    if request.method == "HEAD" {
        return Ok(());
    }
    if let Some(Fault::Stall(duration)) = fault {
        std::thread::sleep(duration);
    }
    let limit = match fault {
        Some(Fault::DropAfter(bytes)) => (bytes as usize).min(slice.len()),
        _ => slice.len(),
    };
    // Send in pieces so a drop lands mid-body, as on a real link.
    for piece in slice[..limit].chunks(16 * 1024) {
        stream.write_all(piece)?;
        log.body_bytes += piece.len() as u64;
    }
    stream.flush()?;
    if limit < slice.len() {
        let _ = stream.shutdown(std::net::Shutdown::Both);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(url: &str, range: Option<&str>) -> (String, Vec<u8>) {
        let address = url.trim_start_matches("http://");
        let (host, path) = address.split_once('/').map(|(h, p)| (h, format!("/{p}"))).unwrap_or((address, "/".into()));
        let mut stream = TcpStream::connect(host).expect("connect");
        let range = range.map(|r| format!("Range: {r}\r\n")).unwrap_or_default();
        write!(stream, "GET {path} HTTP/1.1\r\nHost: {host}\r\n{range}\r\n").expect("send");
        let mut response = Vec::new();
        let _ = stream.read_to_end(&mut response);
        let split = response.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4).unwrap_or(response.len());
        (String::from_utf8_lossy(&response[..split]).into_owned(), response[split..].to_vec())
    }

    #[test]
    fn server_answers_ranges_and_faults() {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(dir.path().join("chunk"), b"0123456789").expect("write");
        let server = FaultServer::start(dir.path()).expect("start");
        let (head, body) = get(&format!("{}/chunk", server.url()), Some("bytes=4-"));
        assert!(head.starts_with("HTTP/1.1 206"), "{head}");
        assert!(head.contains("Content-Range: bytes 4-9/10"), "{head}");
        assert_eq!(body, b"456789");

        server.add_fault("/chunk", Fault::DropAfter(3), Some(1));
        let (_, body) = get(&format!("{}/chunk", server.url()), None);
        assert_eq!(body, b"012");

        server.add_fault("/chunk", Fault::Status { code: 429, retry_after: Some(2) }, Some(1));
        let (head, _) = get(&format!("{}/chunk", server.url()), None);
        assert!(head.starts_with("HTTP/1.1 429"), "{head}");
        assert!(head.contains("Retry-After: 2"), "{head}");

        server.add_fault("/chunk", Fault::IgnoreRange, Some(1));
        let (head, body) = get(&format!("{}/chunk", server.url()), Some("bytes=4-"));
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert_eq!(body.len(), 10);
        assert_eq!(server.requests().len(), 4);
    }
}
