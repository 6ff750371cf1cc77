//! Installs over a link that drops, stalls, errors, ignores ranges, changes
//! ETags, corrupts bytes and redirects, served by the fault-injecting server
//! on 127.0.0.1 from a real repository.

mod common;

use std::fs;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::robot::Robot;
use common::{expect_success, fixture, stderr};
use tender_e2e::fault_server::{Fault, FaultServer};

/// Creates a robot running 1.0.0 whose downloads give up after `attempts`
/// tries. It fetches chunks, not delta packs, since these tests are about
/// chunk downloads; `delta.rs` covers packs.
fn robot_with_100(attempts: u32, bandwidth_limit: u64) -> Robot {
    let fixture = fixture();
    let robot = Robot::new(&fixture.keys);
    let config = robot.path("etc/tender/updater.toml");
    let mut text = fs::read_to_string(&config).expect("config");
    text.push_str(&format!(
        "\n[download]\nconnect_timeout = \"5s\"\nread_timeout = \"5s\"\nmax_attempts = {attempts}\nbandwidth_limit = {bandwidth_limit}\ndelta_packs = false\n"
    ));
    fs::write(&config, text).expect("write config");
    robot
}

fn install_100(robot: &Robot) {
    expect_success(&robot.install(&fixture().bundle_100), "install 1.0.0");
}

fn install_from(robot: &Robot, server: &FaultServer) -> std::process::Output {
    robot.tenderd(&["install", "--json", &format!("{}/", server.url())])
}

fn chunk_requests(server: &FaultServer) -> Vec<tender_e2e::fault_server::RequestLog> {
    server.requests().into_iter().filter(|r| r.path.starts_with("/chunks/")).collect()
}

#[test]
fn dropped_connections_resume_with_range() {
    let robot = robot_with_100(8, 0);
    install_100(&robot);
    let server = FaultServer::start(&fixture().repo).expect("server");
    server.add_fault("/chunks/", Fault::DropAfter(1000), Some(3));
    server.add_fault("/metadata/timestamp.json", Fault::Status { code: 503, retry_after: Some(1) }, Some(1));
    let output = install_from(&robot, &server);
    let report: serde_json::Value = serde_json::from_str(&expect_success(&output, "install over a dropping link")).expect("JSON");
    assert_eq!(report["phase"], "committed", "{report}");
    assert_eq!(robot.status()["version"], "1.0.1");

    let chunks = chunk_requests(&server);
    let resumed: Vec<_> = chunks.iter().filter(|r| r.range.as_deref().is_some_and(|r| r.starts_with("bytes=1000-"))).collect();
    assert!(!resumed.is_empty(), "no request resumed at byte 1000: {chunks:?}");
    let sent: u64 = chunks.iter().map(|r| r.body_bytes).sum();
    let needed = report["stats"]["bytes_fetched"].as_u64().expect("bytes fetched");
    assert_eq!(sent, needed, "resumed downloads sent {sent} chunk bytes for {needed} needed");
}

#[test]
fn ignored_range_and_changed_etag_restart_cleanly() {
    let robot = robot_with_100(8, 0);
    install_100(&robot);
    let server = FaultServer::start(&fixture().repo).expect("server");
    server.add_fault("/chunks/", Fault::DropAfter(1000), Some(1));
    server.add_fault("/chunks/", Fault::IgnoreRange, Some(1));
    server.add_fault("/chunks/", Fault::DropAfter(500), Some(1));
    server.add_fault("/chunks/", Fault::ChangeEtag, Some(1));
    let output = install_from(&robot, &server);
    expect_success(&output, "install with ignored ranges and a changed ETag");
    assert_eq!(robot.status()["version"], "1.0.1");
    let statuses: Vec<u16> = chunk_requests(&server).iter().map(|r| r.status).collect();
    assert!(statuses.contains(&200), "{statuses:?}");
}

#[test]
fn corrupted_chunk_is_fetched_again() {
    let robot = robot_with_100(8, 0);
    install_100(&robot);
    let server = FaultServer::start(&fixture().repo).expect("server");
    server.add_fault("/chunks/", Fault::Corrupt(100), Some(1));
    expect_success(&install_from(&robot, &server), "install after one corrupted chunk");
    assert_eq!(robot.status()["version"], "1.0.1");
}

#[test]
fn persistent_corruption_leaves_robot_unchanged() {
    let robot = robot_with_100(8, 0);
    install_100(&robot);
    let server = FaultServer::start(&fixture().repo).expect("server");
    server.add_fault("/chunks/", Fault::Corrupt(100), None);
    let before = robot.snapshot();
    let output = install_from(&robot, &server);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("the release is damaged"), "{}", stderr(&output));
    assert_eq!(before, robot.snapshot());
}

#[test]
fn redirect_is_followed() {
    let robot = robot_with_100(8, 0);
    install_100(&robot);
    let server = FaultServer::start(&fixture().repo).expect("server");
    let target = format!("{}/metadata/timestamp.json", server.url());
    server.add_fault("/metadata/timestamp.json", Fault::Redirect(target), Some(1));
    expect_success(&install_from(&robot, &server), "install through a redirect");
    let statuses: Vec<u16> = server.requests().iter().filter(|r| r.path == "/metadata/timestamp.json").map(|r| r.status).collect();
    assert_eq!(statuses, [302, 200]);
}

#[test]
fn server_errors_give_up_with_clear_error() {
    let robot = robot_with_100(3, 0);
    install_100(&robot);
    let server = FaultServer::start(&fixture().repo).expect("server");
    server.add_fault("/metadata/timestamp.json", Fault::Status { code: 500, retry_after: None }, None);
    let before = robot.snapshot();
    let output = install_from(&robot, &server);
    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    assert!(message.contains("after 3 attempts"), "{message}");
    assert!(message.contains("500"), "{message}");
    assert_eq!(before, robot.snapshot());
    let attempts = server.requests().iter().filter(|r| r.path == "/metadata/timestamp.json").count();
    assert_eq!(attempts, 3);
}

#[test]
fn download_resumes_after_tenderd_restart() {
    // An empty robot fetches every chunk of 1.0.0; the bandwidth cap makes
    // the download slow enough to kill tenderd in the middle of it.
    let robot = robot_with_100(8, 20_000);
    let server = FaultServer::start(&fixture().repo).expect("server");
    let url = format!("{}/", server.url());
    let mut child = Command::new(common::bin("tenderd"))
        .arg("--root")
        .arg(robot.root.path())
        .args(["install", &url])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn tenderd");
    // Kill tenderd once a chunk is partly downloaded.
    let partial_dir = robot.path("var/lib/tender/cache/partial");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let has_partial = || {
        fs::read_dir(&partial_dir)
            .map(|entries| entries.filter_map(Result::ok).any(|e| e.file_name().to_string_lossy().ends_with(".partial")))
            .unwrap_or(false)
    };
    while !has_partial() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(child.try_wait().expect("poll").is_none(), "the install finished before it could be interrupted");
    let _ = child.kill();
    let _ = child.wait();
    // Chunks with bytes on disk at the kill; bytes the server sent but the
    // killed tenderd never wrote cannot be resumed.
    let kept: Vec<String> = fs::read_dir(&partial_dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.metadata().is_ok_and(|m| m.len() > 0))
                .filter_map(|e| e.file_name().to_str().and_then(|n| n.strip_suffix(".zst.partial")).map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let sent_before = server.body_bytes_sent();
    let requests_before = server.requests().len();

    let config = robot.path("etc/tender/updater.toml");
    let text = fs::read_to_string(&config).expect("config").replace("bandwidth_limit = 20000", "bandwidth_limit = 0");
    fs::write(&config, text).expect("write config");
    let output = robot.tenderd(&["install", "--json", &url]);
    let report: serde_json::Value = serde_json::from_str(&expect_success(&output, "install after restart")).expect("JSON");
    assert_eq!(report["phase"], "committed", "{report}");

    let requests = server.requests();
    let (before, after) = requests.split_at(requests_before);
    let chunk_bytes: u64 = chunk_requests(&server).iter().map(|r| r.body_bytes).sum();
    let resumed = after.iter().filter(|r| r.path.starts_with("/chunks/") && r.range.is_some()).count();
    let needed: u64 = walk_chunk_bytes(&fixture().repo);
    eprintln!("sent before the kill: {sent_before}; chunk bytes sent in total: {chunk_bytes}; repository chunk bytes: {needed}; resumed requests: {resumed}");
    assert!(resumed >= 1, "no download resumed after the restart");
    assert!(!kept.is_empty(), "no partial chunk was on disk at the kill");
    // A chunk that was partly on disk at the kill continues with a range
    // afterwards; only bytes in flight at the kill are sent twice.
    for request in after.iter().filter(|r| r.path.starts_with("/chunks/")) {
        let on_disk = kept.iter().any(|digest| request.path.ends_with(&format!("{digest}.zst")));
        let started_before = before.iter().any(|b| b.path == request.path && b.body_bytes > 0);
        if on_disk && started_before {
            assert!(request.range.is_some(), "{} was downloaded again from the start", request.path);
        }
    }
}

/// Total bytes of every stored chunk of a repository.
fn walk_chunk_bytes(repo: &std::path::Path) -> u64 {
    walkdir::WalkDir::new(repo.join("chunks"))
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
        .sum()
}
