//! Health checks from the robot's `[health]` section: commands with
//! timeouts, systemd units, HTTP endpoints, paths, the grace period and the
//! count of failures before a revert. Each test installs 1.0.0, adds the
//! checks, then installs 1.0.1 and looks at how its trial ended.

mod common;

use std::fs;
use std::process::Output;
use std::time::{Duration, Instant};

use common::ops::append_config;
use common::robot::Robot;
use common::{expect_success, fixture, stdout};
use tender_e2e::fault_server::{Fault, FaultServer};

/// Creates a robot running 1.0.0 with the `[health]` text `health`, whose
/// `is_active` reports a unit inactive while `run/inactive-UNIT` exists.
fn robot_with_checks(health: &str) -> Robot {
    let fixture = fixture();
    let robot = Robot::new(&fixture.keys);
    expect_success(&robot.install(&fixture.bundle_100), "install 1.0.0");
    let config_path = robot.path("etc/tender/updater.toml");
    let config = fs::read_to_string(&config_path).expect("config");
    let line = config.lines().find(|l| l.starts_with("is_active")).expect("is_active line").to_owned();
    let is_active = format!(
        "is_active = [\"sh\", \"-c\", \"test ! -e {}/run/inactive-$1\", \"sh\", \"{{unit}}\"]",
        robot.root.path().display()
    );
    fs::write(&config_path, config.replace(&line, &is_active)).expect("write config");
    append_config(&robot, health);
    robot
}

fn install_101(robot: &Robot) -> Output {
    robot.install(&fixture().bundle_101)
}

/// Asserts that 1.0.1 was reverted, and returns the revert reason.
fn assert_reverted(robot: &Robot, output: &Output) -> String {
    assert_eq!(output.status.code(), Some(2), "expected a revert:\n{}\n{}", stdout(output), common::stderr(output));
    let status = robot.status();
    assert_eq!(status["version"], "1.0.0", "{status}");
    assert_eq!(status["state"], "reverted", "{status}");
    status["last_error"].as_str().expect("revert reason").to_owned()
}

#[test]
fn every_check_kind_passes() {
    let site = tempfile::tempdir().expect("site dir");
    fs::write(site.path().join("healthz"), "ok\n").expect("healthz");
    let server = FaultServer::start(site.path()).expect("server");
    // The files a running node would leave: a ready file and its socket.
    let create_node_files = |robot: &Robot| {
        fs::create_dir_all(robot.path("run/ecar")).expect("run/ecar");
        fs::write(robot.path("run/ecar/ready"), "").expect("ready file");
        std::os::unix::net::UnixListener::bind(robot.path("run/ecar/perception.sock")).expect("bind socket")
    };
    let health = format!(
        r#"[health]
failures_to_revert = 1
[[health.checks]]
kind = "command"
name = "prefix is active"
command = ["test", "-x", "{{prefix}}/bin/motor_controller"]
timeout = "5s"
[[health.checks]]
kind = "systemd_unit"
unit = "ecar-perception"
[[health.checks]]
kind = "http"
url = "{}/healthz"
timeout = "5s"
[[health.checks]]
kind = "path"
path = "/run/ecar/ready"
type = "file"
[[health.checks]]
kind = "path"
path = "/run/ecar/perception.sock"
type = "socket"
"#,
        server.url()
    );
    let robot = robot_with_checks(&health);
    let _socket = create_node_files(&robot);
    let output = install_101(&robot);
    expect_success(&output, "install 1.0.1 with every check kind");
    assert_eq!(robot.status()["version"], "1.0.1");
    assert!(server.requests().iter().any(|r| r.path == "/healthz"), "the http check sent no request");
}

#[test]
fn failing_command_check_reverts() {
    let robot = robot_with_checks(
        "[health]\nfailures_to_revert = 3\ninterval = \"100ms\"\n[[health.checks]]\nkind = \"command\"\nname = \"lidar\"\ncommand = [\"sh\", \"-c\", \"echo no lidar frames; exit 3\"]\n",
    );
    let output = install_101(&robot);
    let reason = assert_reverted(&robot, &output);
    assert!(reason.contains("failed 3 times in a row"), "{reason}");
    assert!(reason.contains("command check \"lidar\""), "{reason}");
    assert!(reason.contains("no lidar frames"), "{reason}");
}

#[test]
fn command_check_times_out() {
    let robot = robot_with_checks(
        "[health]\nfailures_to_revert = 1\n[[health.checks]]\nkind = \"command\"\nname = \"slow\"\ncommand = [\"sleep\", \"10\"]\ntimeout = \"300ms\"\n",
    );
    let started = Instant::now();
    let output = install_101(&robot);
    let reason = assert_reverted(&robot, &output);
    assert!(reason.contains("command check \"slow\" timed out after 300ms"), "{reason}");
    assert!(started.elapsed() < Duration::from_secs(10), "the timeout did not stop the check");
}

#[test]
fn inactive_unit_check_reverts() {
    let robot = robot_with_checks("[health]\nfailures_to_revert = 1\n[[health.checks]]\nkind = \"systemd_unit\"\nunit = \"ecar-lidar\"\n");
    fs::write(robot.path("run/inactive-ecar-lidar"), "").expect("mark inactive");
    let output = install_101(&robot);
    let reason = assert_reverted(&robot, &output);
    assert!(reason.contains("systemd unit check ecar-lidar is not active"), "{reason}");
}

#[test]
fn http_check_needs_2xx() {
    let site = tempfile::tempdir().expect("site dir");
    fs::write(site.path().join("healthz"), "ok\n").expect("healthz");
    let server = FaultServer::start(site.path()).expect("server");
    server.add_fault("/healthz", Fault::Status { code: 503, retry_after: None }, None);
    let url = format!("{}/healthz", server.url());
    let robot = robot_with_checks(&format!("[health]\nfailures_to_revert = 1\n[[health.checks]]\nkind = \"http\"\nurl = \"{url}\"\ntimeout = \"5s\"\n"));
    let output = install_101(&robot);
    let reason = assert_reverted(&robot, &output);
    assert!(reason.contains(&format!("http check {url} answered HTTP 503")), "{reason}");
}

#[test]
fn missing_path_and_wrong_kind_revert() {
    let robot = robot_with_checks("[health]\nfailures_to_revert = 1\n[[health.checks]]\nkind = \"path\"\npath = \"/run/ecar/missing\"\n");
    let output = install_101(&robot);
    let reason = assert_reverted(&robot, &output);
    assert!(reason.contains("/run/ecar/missing found no such path"), "{reason}");

    let robot = robot_with_checks("[health]\nfailures_to_revert = 1\n[[health.checks]]\nkind = \"path\"\npath = \"/run/ecar.sock\"\ntype = \"socket\"\n");
    fs::write(robot.path("run/ecar.sock"), "").expect("plain file");
    let output = install_101(&robot);
    let reason = assert_reverted(&robot, &output);
    assert!(reason.contains("exists but is not a socket"), "{reason}");
}

/// Creates `run/nav-ready` one second after the last service restart,
/// like a node that needs time to come up.
fn mark_ready_after_restart(robot: &Robot) -> std::thread::JoinHandle<()> {
    let log = robot.path("var/log/fake-systemctl.log");
    let ready = robot.path("run/nav-ready");
    let _ = fs::remove_file(&log);
    std::thread::spawn(move || {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(60) {
            if fs::read_to_string(&log).unwrap_or_default().contains("restart ecar-navigation") {
                std::thread::sleep(Duration::from_secs(1));
                let _ = fs::write(&ready, "");
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    })
}

#[test]
fn grace_period_delays_first_check() {
    let check = "[[health.checks]]\nkind = \"path\"\npath = \"/run/nav-ready\"\n";
    let robot = robot_with_checks(&format!("[health]\nfailures_to_revert = 1\ngrace_period = \"3s\"\n{check}"));
    let ready = mark_ready_after_restart(&robot);
    let output = install_101(&robot);
    ready.join().expect("ready thread");
    expect_success(&output, "install with a grace period");
    assert_eq!(robot.status()["version"], "1.0.1");

    // Without the grace period the same check fails at once.
    let robot = robot_with_checks(&format!("[health]\nfailures_to_revert = 1\n{check}"));
    let ready = mark_ready_after_restart(&robot);
    let output = install_101(&robot);
    ready.join().expect("ready thread");
    let reason = assert_reverted(&robot, &output);
    assert!(reason.contains("nav-ready found no such path"), "{reason}");
}

#[test]
fn invalid_check_is_rejected_at_load() {
    let robot = robot_with_checks("[health]\n[[health.checks]]\nkind = \"http\"\nurl = \"https://127.0.0.1/healthz\"\n");
    let output = install_101(&robot);
    assert_eq!(output.status.code(), Some(1));
    assert!(common::stderr(&output).contains("write an http:// URL"), "{}", common::stderr(&output));
}
