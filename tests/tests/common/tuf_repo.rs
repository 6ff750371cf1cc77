//! TUF repositories in scenario states, built by
//! `tests/fixtures/tuf/make_repo.py` with python-tuf, served over HTTP on
//! 127.0.0.1, and a `tenderd tuf-client` (plus python-tuf's own client as a
//! control) that talks to them.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::{bin, expect_success, run, stderr, venv, workspace_root};

fn python() -> PathBuf {
    venv().join("bin/python3")
}

fn fixture_script(name: &str) -> PathBuf {
    workspace_root().join("tests/fixtures/tuf").join(name)
}

/// A scenario written by `make_repo.py`: `root.json` and `state-N/` directories.
pub struct Scenario {
    pub dir: tempfile::TempDir,
}

impl Scenario {
    pub fn build(name: &str) -> Self {
        let dir = tempfile::tempdir().expect("scenario dir");
        let output = run(Command::new(python()).arg(fixture_script("make_repo.py")).arg(name).arg(dir.path().join("repo")));
        expect_success(&output, &format!("make_repo.py {name}"));
        Self { dir }
    }

    pub fn repo(&self) -> PathBuf {
        self.dir.path().join("repo")
    }

    pub fn root_file(&self) -> PathBuf {
        self.repo().join("root.json")
    }

    /// Creates a directory below the scenario, for trusted metadata or targets.
    pub fn work_dir(&self, name: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::create_dir_all(&path).expect("work dir");
        path
    }
}

/// A server process on 127.0.0.1 that reports its port like `http.server`.
pub struct Server {
    child: Child,
    pub port: u16,
}

impl Server {
    /// Serves `dir` with `python -m http.server`.
    pub fn static_files(dir: &Path) -> Self {
        let mut command = Command::new(python());
        command.args(["-u", "-m", "http.server", "--bind", "127.0.0.1", "0", "--directory"]).arg(dir);
        Self::start(command)
    }

    /// Starts `endless_server.py`, which sends endless data for timestamp.json.
    pub fn endless() -> Self {
        let mut command = Command::new(python());
        command.arg("-u").arg(fixture_script("endless_server.py"));
        Self::start(command)
    }

    fn start(mut command: Command) -> Self {
        let mut child = command.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("start server");
        let stdout = child.stdout.take().expect("server stdout");
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !line.contains(" port ") && Instant::now() < deadline {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                break;
            }
        }
        let port = line
            .split(" port ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|port| port.parse().ok())
            .unwrap_or_else(|| panic!("the server did not report its port: {line:?}"));
        Self { child, port }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/{path}", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `tenderd tuf-client --metadata-dir DIR ARGS…`.
pub fn tuf_client(metadata_dir: &Path, args: &[&str]) -> Output {
    run(Command::new(bin("tenderd")).arg("tuf-client").arg("--metadata-dir").arg(metadata_dir).args(args))
}

/// `tenderd tuf-client init ROOT` into a new metadata directory.
pub fn init_client(scenario: &Scenario, name: &str) -> PathBuf {
    let metadata_dir = scenario.work_dir(name);
    let output = tuf_client(&metadata_dir, &["init", &scenario.root_file().display().to_string()]);
    expect_success(&output, "tuf-client init");
    metadata_dir
}

/// `tenderd tuf-client refresh` against `state-N` of the served scenario.
pub fn refresh(metadata_dir: &Path, server: &Server, state: u32) -> Output {
    tuf_client(metadata_dir, &["--metadata-url", &server.url(&format!("state-{state}/metadata/")), "refresh"])
}

/// `tenderd tuf-client download` of `target` from `state-N` into `target_dir`.
pub fn download(metadata_dir: &Path, server: &Server, state: u32, target: &str, target_dir: &Path) -> Output {
    tuf_client(
        metadata_dir,
        &[
            "--metadata-url",
            &server.url(&format!("state-{state}/metadata/")),
            "--target-name",
            target,
            "--target-base-url",
            &server.url(&format!("state-{state}/targets/")),
            "--target-dir",
            &target_dir.display().to_string(),
            "download",
        ],
    )
}

/// Runs python-tuf's `ngclient` on `state-N`, keeping its metadata in `metadata_dir`.
pub fn python_tuf(scenario: &Scenario, metadata_dir: &Path, server: &Server, state: u32, target: &str) -> Output {
    let download = scenario.work_dir("python-tuf-targets").join(target.replace('/', "%2F"));
    run(Command::new(python())
        .arg(fixture_script("ngclient_check.py"))
        .arg(metadata_dir)
        .arg(scenario.root_file())
        .arg(server.url(&format!("state-{state}/metadata/")))
        .arg(server.url(&format!("state-{state}/targets/")))
        .arg(target)
        .arg(download))
}

/// Returns the one `tenderd: error:` line of a failed run, asserting exit
/// code 1 and that the error is exactly one line.
pub fn expect_one_error_line(output: &Output, what: &str) -> String {
    let text = stderr(output);
    assert_eq!(output.status.code(), Some(1), "{what} exited with {}; stderr:\n{text}", output.status);
    let errors: Vec<&str> = text.lines().filter(|line| line.starts_with("tenderd: error:")).collect();
    assert_eq!(errors.len(), 1, "{what} printed {} error lines:\n{text}", errors.len());
    assert_eq!(text.lines().last(), Some(errors[0]), "{what}: the error is not the last line:\n{text}");
    errors[0].to_owned()
}

/// Reads every file of a directory, for before/after comparisons.
pub fn dir_contents(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(dir).expect("read metadata dir") {
        let entry = entry.expect("dir entry");
        let name = entry.file_name().to_string_lossy().into_owned();
        files.insert(name, std::fs::read(entry.path()).expect("read file"));
    }
    files
}

/// Reads the `signed.version` of a stored metadata file.
pub fn stored_version(metadata_dir: &Path, file: &str) -> u64 {
    let bytes = std::fs::read(metadata_dir.join(file)).unwrap_or_else(|e| panic!("read {file}: {e}"));
    let value: serde_json::Value = serde_json::from_slice(&bytes).expect("metadata JSON");
    value["signed"]["version"].as_u64().unwrap_or_else(|| panic!("{file} has no signed.version"))
}
