//! The control socket of `tenderd run`, served to other processes: the
//! `tenderd` commands, the Python client of the ROS 2 bridge, event
//! streams, permissions, and the metrics it exports.

mod common;

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::ops::{append_config, deployment_package, parse_prometheus, sample, socket_path, wait_until, Daemon};
use common::robot::Robot;
use common::{bin, expect_success, fixture, stderr, stdout};

/// Returns a port of 127.0.0.1 that was free a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port()
}

/// Creates a robot running 1.0.0 whose daemon serves metrics on `port` and writes a textfile.
fn robot_with_daemon_config(port: u16) -> Robot {
    let fixture = fixture();
    let robot = Robot::new(&fixture.keys);
    expect_success(&robot.install(&fixture.bundle_100), "install 1.0.0");
    append_config(
        &robot,
        &format!(
            "[daemon]\npoll_interval = \"1h\"\npoll_jitter = \"1s\"\n\n[metrics]\nport = {port}\ntextfile = \"/var/lib/node_exporter/tender.prom\"\n"
        ),
    );
    robot
}

/// Runs the Python client of the sample workspace with the system python3.
fn python_client(robot: &Robot, args: &[&str]) -> Command {
    let mut command = Command::new("python3");
    command
        .args(["-m", "ecar_deployment.client", "--socket"])
        .arg(socket_path(robot))
        .args(args)
        .env("PYTHONPATH", deployment_package())
        .env("PYTHONDONTWRITEBYTECODE", "1");
    command
}

fn http_get(port: u16, path: &str) -> String {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to metrics");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    write!(stream, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").expect("send request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read response");
    response
}

#[test]
fn daemon_serves_status_and_events() {
    let fixture = fixture();
    let port = free_port();
    let robot = robot_with_daemon_config(port);
    let daemon = Daemon::start(&robot);
    let socket = socket_path(&robot);
    let mode = fs::metadata(&socket).expect("socket").permissions().mode() & 0o777;
    assert_eq!(mode, 0o660, "socket mode {mode:o}");

    // A second process subscribes to events: the Python client.
    let events = python_client(&robot, &["events", "--count", "4"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the event subscriber");
    // A raw socket client gets the status.
    let mut raw = UnixStream::connect(&socket).expect("connect");
    raw.write_all(b"{\"command\":\"status\"}\n").expect("send status");
    let mut line = String::new();
    BufReader::new(raw.try_clone().expect("clone")).read_line(&mut line).expect("read status");
    let response: serde_json::Value = serde_json::from_str(&line).expect("status JSON");
    assert_eq!(response["ok"], true, "{response}");
    assert_eq!(response["result"]["version"], "1.0.0", "{response}");
    // Give the subscriber a moment to connect before anything changes.
    std::thread::sleep(Duration::from_millis(500));

    // `tenderd install` goes through the daemon while it runs.
    let output = Command::new(bin("tenderd"))
        .arg("--root")
        .arg(robot.root.path())
        .arg("install")
        .arg(&fixture.bundle_101)
        .env("RUST_LOG", "tenderd=debug")
        .output()
        .expect("run tenderd install");
    expect_success(&output, "tenderd install through the daemon");
    assert!(stderr(&output).contains("forwarding to the running daemon"), "{}", stderr(&output));
    assert!(stdout(&output).contains("committed"), "{}", stdout(&output));

    let output = events.wait_with_output().expect("event subscriber");
    let lines = expect_success(&output, "python event subscriber");
    let received: Vec<serde_json::Value> = lines.lines().map(|l| serde_json::from_str(l).expect("event JSON")).collect();
    let names: Vec<&str> = received.iter().map(|e| e["event"].as_str().unwrap_or_default()).collect();
    assert_eq!(names, ["staging", "staged", "switching", "committed"], "{lines}");
    let last = &received[3];
    assert_eq!(last["phase"], "committed");
    assert_eq!(last["version"], "1.0.1");
    assert_eq!(last["reason"], "health check passed");
    assert!(last["time"].as_str().is_some_and(|t| t.ends_with('Z')), "{last}");

    // The same status through `tenderd status` and the Python client.
    let status = robot.status();
    assert_eq!(status["version"], "1.0.1", "{status}");
    let python_status = expect_success(&python_client(&robot, &["status"]).output().expect("python status"), "python status");
    let python_status: serde_json::Value = serde_json::from_str(&python_status).expect("python status JSON");
    assert_eq!(python_status, status);

    // Metrics over HTTP on 127.0.0.1 and in the textfile parse with a
    // Prometheus parser.
    let response = http_get(port, "/metrics");
    let (head, body) = response.split_once("\r\n\r\n").expect("HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    let families = parse_prometheus(body);
    assert_eq!(sample(&families, "tender_release_info", &[("version", "1.0.1"), ("slot", "b")]), Some(1.0), "{families}");
    assert_eq!(sample(&families, "tender_state", &[("state", "committed")]), Some(1.0));
    assert_eq!(sample(&families, "tender_state", &[("state", "trial")]), Some(0.0));
    assert_eq!(families["tender_reverts"]["type"], "counter", "{families}");
    assert_eq!(sample(&families, "tender_reverts", &[]), Some(0.0));
    assert!(sample(&families, "tender_downloaded_bytes", &[]).is_some_and(|b| b > 0.0), "{families}");
    assert!(sample(&families, "tender_last_install_duration_seconds", &[]).is_some_and(|s| s > 0.0), "{families}");
    assert!(http_get(port, "/other").starts_with("HTTP/1.1 404"));
    wait_until(Duration::from_secs(10), "the metrics textfile", || robot.path("var/lib/node_exporter/tender.prom").exists());
    let textfile = fs::read_to_string(robot.path("var/lib/node_exporter/tender.prom")).expect("textfile");
    let families = parse_prometheus(&textfile);
    assert_eq!(sample(&families, "tender_release_info", &[("version", "1.0.1")]), Some(1.0), "{families}");
    drop(daemon);
}

#[test]
fn bridge_reports_failed_deploy() {
    let fixture = fixture();
    let robot = robot_with_daemon_config(free_port());
    let _daemon = Daemon::start(&robot);
    // The bridge's Trigger handlers, without ROS: deploy the broken 1.0.2,
    // then try a rollback, which needs a downgrade authorisation.
    let script = format!(
        r#"
import json
from ecar_deployment.bridge import bridge_for
bridge = bridge_for({socket:?}, {source:?})
print(json.dumps({{"status": json.loads(bridge.status_message()), "deploy": bridge.deploy(), "rollback": bridge.rollback()}}))
"#,
        socket = socket_path(&robot).display().to_string(),
        source = fixture.bundle_102.display().to_string(),
    );
    let output = Command::new("python3")
        .args(["-c", &script])
        .env("PYTHONPATH", deployment_package())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("run the bridge");
    let printed = expect_success(&output, "bridge script");
    let result: serde_json::Value = serde_json::from_str(&printed).expect("bridge JSON");
    assert_eq!(result["status"]["version"], "1.0.0", "{result}");
    assert_eq!(result["deploy"][0], false, "{result}");
    let message = result["deploy"][1].as_str().unwrap_or_default();
    assert!(message.contains("ecar-4wd4ws 1.0.2"), "{message}");
    assert!(message.contains("reverted"), "{message}");
    assert_eq!(result["rollback"][0], false, "{result}");
    assert!(result["rollback"][1].as_str().unwrap_or_default().contains("slot"), "{result}");

    let metrics = expect_success(&robot.tenderd(&["metrics"]), "tenderd metrics");
    let families = parse_prometheus(&metrics);
    assert_eq!(sample(&families, "tender_reverts", &[]), Some(1.0), "{metrics}");
    assert!(sample(&families, "tender_health_check_failures", &[]).is_some_and(|n| n >= 1.0), "{metrics}");
    assert_eq!(sample(&families, "tender_state", &[("state", "reverted")]), Some(1.0), "{metrics}");
}

#[test]
fn verification_failure_is_counted() {
    let fixture = fixture();
    let robot = robot_with_daemon_config(free_port());
    let stick = tempfile::tempdir().expect("stick");
    let partial = stick.path().join("ecar-4wd4ws-1.0.1.tender");
    let len = fs::metadata(&fixture.bundle_101).expect("bundle size").len() as usize;
    common::ops::copy_prefix(&fixture.bundle_101, &partial, len - 700);
    let output = robot.install(&partial);
    assert_eq!(output.status.code(), Some(1), "{}", stdout(&output));
    let families = parse_prometheus(&expect_success(&robot.tenderd(&["metrics"]), "tenderd metrics"));
    assert_eq!(sample(&families, "tender_verification_failures", &[]), Some(1.0), "{families}");
}

#[test]
fn socket_denies_other_users() {
    let robot = robot_with_daemon_config(free_port());
    let _daemon = Daemon::start(&robot);
    // Let `nobody` reach the configuration and the socket's directory, so
    // that only the socket's own mode denies access.
    fs::set_permissions(robot.root.path(), fs::Permissions::from_mode(0o755)).expect("chmod robot root");
    let output = Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
        .arg(bin("tenderd"))
        .arg("--root")
        .arg(robot.root.path())
        .arg("status")
        .output()
        .expect("run setpriv");
    assert_eq!(output.status.code(), Some(1), "{}\n{}", stdout(&output), stderr(&output));
    let message = stderr(&output);
    assert!(message.contains("permission denied on the tenderd control socket"), "{message}");
    assert!(message.contains("set control.group"), "{message}");

    let python = Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "/usr/bin/python3", "-m", "ecar_deployment.client", "--socket"])
        .arg(socket_path(&robot))
        .arg("status")
        .env("PYTHONPATH", deployment_package())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("run the python client as nobody");
    assert_eq!(python.status.code(), Some(1), "{}", stderr(&python));
    assert!(stderr(&python).contains("permission denied on the tenderd control socket"), "{}", stderr(&python));
}

#[test]
fn unknown_group_stops_the_daemon() {
    let robot = Robot::new(&fixture().keys);
    append_config(&robot, "[control]\ngroup = \"no-such-tender-group\"\n");
    let output = robot.tenderd(&["run", "--once"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("group \"no-such-tender-group\" in control.group is not in /etc/group"), "{}", stderr(&output));
}
