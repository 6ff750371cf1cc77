//! `tenderd run`: polling a repository over a bad link, switch policies,
//! holds, maintenance windows and staged rollouts, with the real binary.

mod common;

use std::fs;
use std::time::SystemTime;

use common::robot::Robot;
use common::{expect_success, fixture};
use tender_e2e::fault_server::{Fault, FaultServer};

/// Creates a robot running 1.0.0 whose daemon polls `source`.
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

/// Copies the repository and sets the rollout of 1.0.1 with
/// `tender repo rollout ARGS…`.
fn repo_with_rollout(name: &str, args: &[&str]) -> std::path::PathBuf {
    let fixture = fixture();
    let copy = fixture.dir.join(format!("repo-{name}"));
    let _ = fs::remove_dir_all(&copy);
    let status = std::process::Command::new("cp").arg("-a").arg(&fixture.repo).arg(&copy).status().expect("cp");
    assert!(status.success());
    let key = |file: &str| fixture.keys.join(file).display().to_string();
    let output = common::run(
        std::process::Command::new(common::bin("tender"))
            .args(["repo", "rollout", "--repo"])
            .arg(&copy)
            .args(["--version", "1.0.1", "--key", &key("release.key")])
            .args(["--snapshot-key", &key("snapshot.key"), "--timestamp-key", &key("timestamp.key")])
            .args(args),
    );
    expect_success(&output, "tender repo rollout");
    copy
}

#[test]
fn paused_rollout_halts_the_fleet() {
    let repo = repo_with_rollout("paused", &["--pause"]);
    let robot = robot_polling(&repo.display().to_string(), "");
    let output = robot.tenderd(&["run", "--once"]);
    expect_success(&output, "run with a paused rollout");
    assert_eq!(robot.status()["version"], "1.0.0");
}

#[test]
fn rollout_waves_open_in_time() {
    // The first wave lets no robot in; everyone a day later.
    let closed = repo_with_rollout("closed", &["--waves", "0s:0", "1d:100"]);
    let robot = robot_polling(&closed.display().to_string(), "");
    run_once(&robot);
    assert_eq!(robot.status()["version"], "1.0.0", "the first wave allows no robot");

    let open = repo_with_rollout("open", &["--waves", "0s:100"]);
    let robot = robot_polling(&open.display().to_string(), "");
    run_once(&robot);
    assert_eq!(robot.status()["version"], "1.0.1");
}

#[test]
fn beta_release_skips_stable_robots() {
    let repo = repo_with_rollout("beta", &["--channel", "beta"]);
    let robot = robot_polling(&repo.display().to_string(), "");
    run_once(&robot);
    assert_eq!(robot.status()["version"], "1.0.0", "a stable robot installed a beta release");
    let beta = robot_polling(&repo.display().to_string(), "channel = \"beta\"");
    run_once(&beta);
    assert_eq!(beta.status()["version"], "1.0.1");
}
