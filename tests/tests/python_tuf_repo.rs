//! Install from a repository whose TUF metadata python-tuf's Metadata API
//! wrote: `tests/fixtures/tuf/republish_with_python_tuf.py` copies the
//! manifests and chunks of the fixture repository and signs new metadata
//! with keys of its own, so `tenderd` reads no metadata written by `tender`.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::robot::Robot;
use common::tuf_repo::Server;
use common::{expect_success, fixture, run, stderr, venv, workspace_root};

/// Runs the republish script on the fixture repository, writing `out`.
fn republish(out: &Path, options: &[&str]) {
    let script = workspace_root().join("tests/fixtures/tuf/republish_with_python_tuf.py");
    let output = run(Command::new(venv().join("bin/python3")).arg(script).args(options).arg(&fixture().repo).arg(out));
    expect_success(&output, "republish_with_python_tuf.py");
}

/// Creates a robot whose `etc/tender/root.json` is the republished root.
fn robot_trusting(repo: &Path) -> Robot {
    let trust_dir = tempfile::tempdir().expect("trusted root dir");
    fs::copy(repo.join("trusted-root.json"), trust_dir.path().join("root.json")).expect("copy trusted root");
    Robot::new(trust_dir.path())
}

fn install_json(robot: &Robot, source: &str) -> Output {
    robot.tenderd(&["install", "--json", source])
}

/// Checks that `robot` committed 1.0.1, the newest release of the fixture.
fn assert_committed_101(robot: &Robot, output: &Output) {
    let report: serde_json::Value = serde_json::from_str(&expect_success(output, "tenderd install")).expect("install JSON");
    assert_eq!(report["phase"], "committed", "{report}");
    let status = robot.status();
    assert_eq!(status["state"], "committed", "{status}");
    assert_eq!(status["version"], "1.0.1", "{status}");
}

/// Checks that installing from `source` fails with exit 1 and one error line
/// containing each of `expected`, and leaves the robot as it was.
fn assert_rejected(robot: &Robot, source: &str, expected: &[&str]) {
    let before = robot.snapshot();
    let output = robot.tenderd(&["install", source]);
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{source} must be rejected: {message}");
    let errors: Vec<&str> = message.lines().filter(|l| l.starts_with("tenderd: error:")).collect();
    assert_eq!(errors.len(), 1, "expected one error line, got:\n{message}");
    for word in expected {
        assert!(errors[0].contains(word), "error for {source} does not mention {word:?}:\n{}", errors[0]);
    }
    assert_eq!(before, robot.snapshot(), "rejecting {source} changed the robot");
}

#[test]
fn republished_repo_has_python_tuf_layout() {
    let dir = tempfile::tempdir().expect("repository dir");
    let repo = dir.path().join("repo");
    republish(&repo, &[]);

    for name in ["metadata/1.root.json", "metadata/1.targets.json", "metadata/1.snapshot.json", "metadata/timestamp.json"] {
        assert!(repo.join(name).is_file(), "{name} is missing");
    }
    // Nothing that `tender` wrote is left for the robot to fall back on.
    for name in ["metadata/targets.json", "metadata/root.json", "targets.json", "root.json", "manifests"] {
        assert!(!repo.join(name).exists(), "{name} must not be copied from the Tender repository");
    }

    let root: serde_json::Value = serde_json::from_slice(&fs::read(repo.join("metadata/1.root.json")).expect("root")).expect("root JSON");
    assert_eq!(root["signed"]["consistent_snapshot"], true);
    let tender_root: serde_json::Value =
        serde_json::from_slice(&fs::read(fixture().keys.join("root.json")).expect("tender root")).expect("tender root JSON");
    let keyids = |root: &serde_json::Value| -> Vec<String> { root["signed"]["keys"].as_object().expect("keys").keys().cloned().collect() };
    let tender_keyids = keyids(&tender_root);
    for keyid in keyids(&root) {
        assert!(!tender_keyids.contains(&keyid), "key {keyid} is one of the Tender keys");
    }

    let targets: serde_json::Value =
        serde_json::from_slice(&fs::read(repo.join("metadata/1.targets.json")).expect("targets")).expect("targets JSON");
    let target = &targets["signed"]["targets"]["ecar-4wd4ws-1.0.1.manifest.json"];
    assert_eq!(target["custom"]["version"], "1.0.1", "{target}");
    assert_eq!(target["custom"]["compatible"], "ecar-4wd4ws", "{target}");
    let digest = target["hashes"]["sha256"].as_str().expect("sha256");
    let manifest = repo.join(format!("targets/{digest}.ecar-4wd4ws-1.0.1.manifest.json"));
    assert!(manifest.is_file(), "{} is missing", manifest.display());
}

#[test]
fn install_python_tuf_repo_over_http() {
    let dir = tempfile::tempdir().expect("repository dir");
    let repo = dir.path().join("repo");
    republish(&repo, &[]);
    let server = Server::static_files(&repo);
    let robot = robot_trusting(&repo);

    let output = install_json(&robot, &server.url(""));
    assert_committed_101(&robot, &output);
}

// NOTE: tenderd rejects this directory after its TUF refresh succeeded. It
// opens the chunk source with `open_source_with_cache`, which takes a
// directory for a repository only if it has a top-level `targets.json` (the
// layout `tender` writes), and a python-tuf repository has none.
#[test]
fn install_python_tuf_repo_from_directory() {
    let dir = tempfile::tempdir().expect("repository dir");
    let repo = dir.path().join("repo");
    republish(&repo, &[]);
    let robot = robot_trusting(&repo);

    let output = install_json(&robot, &repo.display().to_string());
    assert_committed_101(&robot, &output);
}

#[test]
fn tender_root_rejects_python_tuf_repo() {
    let dir = tempfile::tempdir().expect("repository dir");
    let repo = dir.path().join("repo");
    republish(&repo, &[]);
    let server = Server::static_files(&repo);
    let robot = Robot::new(&fixture().keys);
    expect_success(&robot.install(&fixture().bundle_100), "install 1.0.0");

    // The timestamp is signed by a key that the Tender root does not list.
    assert_rejected(&robot, &server.url(""), &["timestamp.json", "0 valid timestamp signature(s)"]);
}

#[test]
fn python_tuf_targets_rollback_rejected() {
    let dir = tempfile::tempdir().expect("repository dir");
    let keys = dir.path().join("keys").display().to_string();
    let state = |number: u32| -> PathBuf { dir.path().join(format!("state-{number}")) };
    // State 1 publishes every role at version 2, state 2 lowers targets to 1
    // and raises snapshot and timestamp, all signed with the same keys.
    let versions_1 = ["--targets-version", "2", "--snapshot-version", "2", "--timestamp-version", "2"];
    let versions_2 = ["--targets-version", "1", "--snapshot-version", "3", "--timestamp-version", "3"];
    republish(&state(1), &[&["--keys", &keys][..], &versions_1].concat());
    republish(&state(2), &[&["--keys", &keys][..], &versions_2].concat());
    let server = Server::static_files(dir.path());
    let robot = robot_trusting(&state(1));

    let output = install_json(&robot, &server.url("state-1/"));
    assert_committed_101(&robot, &output);

    // The client rejects the new snapshot, which lists targets.json at a
    // lower version than the trusted snapshot, before it fetches targets.
    let expected = ["3.snapshot.json", "targets.json version 1", "lower than version 2", "rollback"];
    assert_rejected(&robot, &server.url("state-2/"), &expected);
    assert_rejected(&robot, &state(2).display().to_string(), &expected);
}
