//! Helpers of the robot operations tests: configuration sections, a
//! `tenderd run` process that is killed when dropped, and bounded waits.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::robot::Robot;
use super::{bin, workspace_root};

/// Appends TOML sections to the robot's `updater.toml`.
pub fn append_config(robot: &Robot, text: &str) {
    let path = robot.path("etc/tender/updater.toml");
    let mut config = fs::read_to_string(&path).expect("read config");
    config.push('\n');
    config.push_str(text);
    fs::write(&path, config).expect("write config");
}

/// Path of the control socket below the robot root, at its default place.
pub fn socket_path(robot: &Robot) -> PathBuf {
    robot.path("run/tender/tenderd.sock")
}

/// Calls `check` every 100 ms until it returns true or `limit` passes.
pub fn wait_until(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `tenderd --root ROBOT run`, killed and reaped on drop.
pub struct Daemon {
    child: Child,
    pub log: PathBuf,
}

impl Daemon {
    /// Starts the daemon and waits until its control socket accepts connections.
    pub fn start(robot: &Robot) -> Self {
        let log = robot.path("var/log/tenderd.log");
        let stderr = fs::File::create(&log).expect("daemon log");
        let child = Command::new(bin("tenderd"))
            .arg("--root")
            .arg(robot.root.path())
            .arg("run")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start tenderd run");
        let mut daemon = Self { child, log };
        let socket = socket_path(robot);
        let started = Instant::now();
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            if let Ok(Some(status)) = daemon.child.try_wait() {
                panic!("tenderd run exited with {status}:\n{}", daemon.log_text());
            }
            assert!(started.elapsed() < Duration::from_secs(30), "the control socket did not appear:\n{}", daemon.log_text());
            std::thread::sleep(Duration::from_millis(50));
        }
        daemon
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Directory of the sample workspace's deployment package, for PYTHONPATH.
pub fn deployment_package() -> PathBuf {
    workspace_root().join("recipes/ecar-ws/src/ecar_deployment")
}

/// Parses Prometheus text with prometheus_client's parser in the test venv
/// and returns `{family: [[labels, value], …]}` with each sample's labels
/// and its name under the key `__name__`.
pub fn parse_prometheus(text: &str) -> serde_json::Value {
    let python = super::venv().join("bin/python3");
    let script = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = {}
for family in text_string_to_metric_families(sys.stdin.read()):
    out[family.name] = {"type": family.type, "samples": [dict(s.labels, __name__=s.name, value=s.value) for s in family.samples]}
print(json.dumps(out))
"#;
    let mut child = Command::new(&python)
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the venv python");
    {
        use std::io::Write;
        child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("write metrics");
    }
    let output = child.wait_with_output().expect("wait for the parser");
    let stdout = super::expect_success(&output, "prometheus_client parser");
    serde_json::from_str(&stdout).expect("parser JSON")
}

/// Returns the value of the first sample of `family` whose labels contain `labels`.
pub fn sample(families: &serde_json::Value, family: &str, labels: &[(&str, &str)]) -> Option<f64> {
    families[family]["samples"].as_array()?.iter().find_map(|s| {
        labels.iter().all(|(key, value)| s[*key] == *value).then(|| s["value"].as_f64()).flatten()
    })
}

/// Copies the first `len` bytes of `source` to `dest`.
pub fn copy_prefix(source: &Path, dest: &Path, len: usize) {
    let bytes = fs::read(source).expect("read bundle");
    fs::write(dest, &bytes[..len.min(bytes.len())]).expect("write partial bundle");
}
