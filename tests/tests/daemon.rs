//! `tenderd run`: polling a repository over a bad link, switch policies,
//! holds, maintenance windows and staged rollouts, with the real binary.

mod common;

use std::fs;
use std::time::{Duration, SystemTime};

use common::forge::release_key;
use common::robot::Robot;
use common::{expect_success, fixture, stdout};
use tender_e2e::fault_server::{Fault, FaultServer};
use std::collections::BTreeMap;

use sha2::{Digest, Sha256};
use tender_keys::{MetaFile, PrivateKey, Signed, Snapshot, Targets, Timestamp};

/// A robot running 1.0.0 whose daemon polls `source`.
fn robot_polling(source: &str, daemon: &str) -> Robot {
    let fixture = fixture();
    let robot = Robot::new(&fixture.keys);
    let config = robot.path("etc/tender/updater.toml");
    let mut text = fs::read_to_string(&config).expect("config");
    text.push_str(&format!(
        "\n[download]\nmax_attempts = 8\nconnect_timeout = \"5s\"\nread_timeout = \"5s\"\nbandwidth_limit = 0\n\n[daemon]\nsource = \"{source}\"\nrobot_id = \"ecar-0007\"\nboot_id_file = \"/run/boot_id\"\n{daemon}\n"
    ));
    fs::write(&config, text).expect("write config");
    fs::write(robot.path("run/boot_id"), "boot-1\n").expect("boot id");
    expect_success(&robot.install(&fixture.bundle_100), "install 1.0.0");
    robot
}

fn run_once(robot: &Robot) {
    expect_success(&robot.tenderd(&["run", "--once"]), "tenderd run --once");
}

#[test]
fn daemon_installs_over_dropping_link() {
    let server = FaultServer::start(&fixture().repo).expect("server");
    server.add_fault("/chunks/", Fault::DropAfter(700), Some(4));
    server.add_fault("/metadata/timestamp.json", Fault::Status { code: 503, retry_after: Some(1) }, Some(1));
    let robot = robot_polling(&server.url(), "");
    run_once(&robot);
    let status = robot.status();
    assert_eq!(status["version"], "1.0.1", "{status}");
    assert_eq!(status["state"], "committed");
    // Only chunks the robot lacked crossed the wire: 1.0.0 to 1.0.1 changes
    // one file.
    let chunk_paths: std::collections::BTreeSet<String> =
        server.requests().iter().filter(|r| r.path.starts_with("/chunks/")).map(|r| r.path.clone()).collect();
    assert!(chunk_paths.len() <= 2, "{chunk_paths:?}");
}

#[test]
fn manual_policy_waits_for_apply() {
    let repo = fixture().repo.display().to_string();
    let robot = robot_polling(&repo, "switch = \"manual\"");
    run_once(&robot);
    let status = robot.status();
    assert_eq!(status["state"], "staged", "{status}");
    assert_eq!(status["version"], "1.0.0");
    run_once(&robot);
    assert_eq!(robot.status()["state"], "staged");
    let applied = expect_success(&robot.tenderd(&["apply"]), "tenderd apply");
    assert!(applied.contains("committed"), "{applied}");
    assert_eq!(robot.status()["version"], "1.0.1");
}

#[test]
fn next_boot_policy_switches_after_reboot() {
    let repo = fixture().repo.display().to_string();
    let robot = robot_polling(&repo, "switch = \"next-boot\"");
    run_once(&robot);
    assert_eq!(robot.status()["state"], "staged");
    run_once(&robot);
    assert_eq!(robot.status()["state"], "staged", "no reboot happened yet");
    fs::write(robot.path("run/boot_id"), "boot-2\n").expect("reboot");
    // A hold also keeps a staged release from being switched to.
    expect_success(&robot.tenderd(&["hold"]), "tenderd hold");
    run_once(&robot);
    assert_eq!(robot.status()["state"], "staged", "the daemon switched while held");
    expect_success(&robot.tenderd(&["resume"]), "tenderd resume");
    run_once(&robot);
    let status = robot.status();
    assert_eq!(status["version"], "1.0.1", "{status}");
    assert_eq!(status["state"], "committed");
}

#[test]
fn hold_stops_the_daemon() {
    let repo = fixture().repo.display().to_string();
    let robot = robot_polling(&repo, "");
    expect_success(&robot.tenderd(&["hold"]), "tenderd hold");
    run_once(&robot);
    let status = robot.status();
    assert_eq!(status["version"], "1.0.0");
    assert_eq!(status["held"], true);
    expect_success(&robot.tenderd(&["resume"]), "tenderd resume");
    run_once(&robot);
    assert_eq!(robot.status()["version"], "1.0.1");
}

#[test]
fn maintenance_window_defers_downloads() {
    let server = FaultServer::start(&fixture().repo).expect("server");
    // A one-hour window that starts two hours from now.
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).expect("clock").as_secs() % 86_400;
    let start = (now + 7200) % 86_400;
    let end = (start + 3600) % 86_400;
    let clock = |s: u64| format!("{:02}:{:02}", s / 3600, (s % 3600) / 60);
    let window = format!("maintenance_window = \"{}-{}\"", clock(start), clock(end));
    let robot = robot_polling(&server.url(), &window);
    run_once(&robot);
    assert_eq!(robot.status()["version"], "1.0.0");
    assert!(server.requests().is_empty(), "the daemon downloaded outside its window");
}

/// Copies the repository and publishes new TUF metadata that gives 1.0.1
/// the rollout settings `rollout`: targets, snapshot and timestamp, each one
/// version up and signed with its role's key.
fn repo_with_rollout(name: &str, rollout: serde_json::Value) -> std::path::PathBuf {
    let fixture = fixture();
    let copy = fixture.dir.join(format!("repo-{name}"));
    let _ = fs::remove_dir_all(&copy);
    let status = std::process::Command::new("cp").arg("-a").arg(&fixture.repo).arg(&copy).status().expect("cp");
    assert!(status.success());
    let metadata = copy.join("metadata");
    let key = |file: &str| PrivateKey::load(&fixture.keys.join(file)).expect("key");
    let read = |file: &str| fs::read(metadata.join(file)).expect("metadata");
    let meta_file = |version: u64, bytes: &[u8]| MetaFile {
        version,
        length: Some(bytes.len() as u64),
        hashes: Some(BTreeMap::from([("sha256".to_owned(), hex::encode(Sha256::digest(bytes)))])),
    };

    let mut targets: Signed<Targets> = serde_json::from_slice(&read("targets.json")).expect("targets");
    for target in targets.signed.targets.values_mut() {
        let custom = target.custom.as_mut().expect("custom");
        if custom["version"] == "1.0.1" {
            custom["rollout"] = rollout.clone();
        }
    }
    targets.signed.version += 1;
    let targets_version = targets.signed.version;
    let targets_bytes = Signed::sign(targets.signed, &[&release_key(&fixture.keys)]).expect("sign").to_canonical_json().expect("json");
    fs::write(metadata.join(format!("{targets_version}.targets.json")), &targets_bytes).expect("write");
    fs::write(metadata.join("targets.json"), &targets_bytes).expect("write");

    let mut snapshot: Signed<Snapshot> = serde_json::from_slice(&read("snapshot.json")).expect("snapshot");
    snapshot.signed.meta.insert("targets.json".to_owned(), meta_file(targets_version, &targets_bytes));
    snapshot.signed.version += 1;
    let snapshot_version = snapshot.signed.version;
    let snapshot_bytes = Signed::sign(snapshot.signed, &[&key("snapshot.key")]).expect("sign").to_canonical_json().expect("json");
    fs::write(metadata.join(format!("{snapshot_version}.snapshot.json")), &snapshot_bytes).expect("write");
    fs::write(metadata.join("snapshot.json"), &snapshot_bytes).expect("write");

    let mut timestamp: Signed<Timestamp> = serde_json::from_slice(&read("timestamp.json")).expect("timestamp");
    timestamp.signed.meta.insert("snapshot.json".to_owned(), meta_file(snapshot_version, &snapshot_bytes));
    timestamp.signed.version += 1;
    let timestamp_bytes = Signed::sign(timestamp.signed, &[&key("timestamp.key")]).expect("sign").to_canonical_json().expect("json");
    fs::write(metadata.join("timestamp.json"), &timestamp_bytes).expect("write");
    copy
}

#[test]
fn paused_rollout_halts_the_fleet() {
    let repo = repo_with_rollout("paused", serde_json::json!({"paused": true}));
    let robot = robot_polling(&repo.display().to_string(), "");
    let output = robot.tenderd(&["run", "--once"]);
    expect_success(&output, "run with a paused rollout");
    assert_eq!(robot.status()["version"], "1.0.0");
}

#[test]
fn rollout_waves_open_in_time() {
    let past = humantime::format_rfc3339_seconds(SystemTime::now() - Duration::from_secs(3600)).to_string();
    let future = humantime::format_rfc3339_seconds(SystemTime::now() + Duration::from_secs(86_400)).to_string();
    let closed = repo_with_rollout("closed", serde_json::json!({"waves": [{"start": past, "percent": 0}, {"start": future, "percent": 100}]}));
    let robot = robot_polling(&closed.display().to_string(), "");
    run_once(&robot);
    assert_eq!(robot.status()["version"], "1.0.0", "the first wave allows no robot");

    let open = repo_with_rollout("open", serde_json::json!({"waves": [{"start": past, "percent": 100}]}));
    let robot = robot_polling(&open.display().to_string(), "");
    run_once(&robot);
    assert_eq!(robot.status()["version"], "1.0.1");
    let _ = stdout;
}
