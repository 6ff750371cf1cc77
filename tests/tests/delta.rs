//! Delta packs on the wire: a robot running 1.0.0 upgrades to 1.0.1 over
//! the fault-injecting server on 127.0.0.1 with the pack that `tender
//! release` wrote, and falls back to the manifest and chunks when the pack
//! is damaged or its base file changed on the robot.

mod common;

use std::fs;

use common::robot::Robot;
use common::{expect_success, fixture};
use tender_e2e::fault_server::{Fault, FaultServer, RequestLog};

const PACK_NAME: &str = "ecar-4wd4ws-1.0.1.from-1.0.0.delta";

/// URL path of the pack's consistent target file.
fn pack_path() -> String {
    let targets = fixture().repo.join("targets");
    let name = fs::read_dir(&targets)
        .expect("targets dir")
        .filter_map(Result::ok)
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .find(|name| name.ends_with(PACK_NAME))
        .expect("the fixture repository has a delta pack from 1.0.0 to 1.0.1");
    format!("/targets/{name}")
}

fn robot_on_100() -> Robot {
    let robot = Robot::new(&fixture().keys);
    expect_success(&robot.install(&fixture().bundle_100), "install 1.0.0");
    robot
}

fn install(robot: &Robot, server: &FaultServer) -> (serde_json::Value, String) {
    let output = robot.tenderd(&["install", "--json", &format!("{}/", server.url())]);
    let report = serde_json::from_str(&expect_success(&output, "install 1.0.1")).expect("JSON report");
    (report, common::stderr(&output))
}

fn requests_to(server: &FaultServer, prefix: &str) -> Vec<RequestLog> {
    server.requests().into_iter().filter(|r| r.path.starts_with(prefix)).collect()
}

#[test]
fn upgrade_downloads_only_the_pack() {
    let robot = robot_on_100();
    let server = FaultServer::start(&fixture().repo).expect("server");
    let (report, _) = install(&robot, &server);
    assert_eq!(report["phase"], "committed", "{report}");
    assert_eq!(robot.status()["version"], "1.0.1");

    let stats = &report["stats"];
    assert!(stats["files_from_delta"].as_u64() >= Some(1), "{stats}");
    assert_eq!(stats["chunks_fetched"], 0, "{stats}");
    assert!(requests_to(&server, "/chunks/").is_empty(), "chunks crossed the wire: {:?}", server.requests());
    let manifests: Vec<_> = server.requests().into_iter().filter(|r| r.path.ends_with(".manifest.json")).collect();
    assert!(manifests.is_empty(), "the manifest crossed the wire although the pack rebuilds it: {manifests:?}");
    let pack = requests_to(&server, &pack_path());
    assert_eq!(pack.len(), 1, "{pack:?}");
    assert_eq!(Some(pack[0].body_bytes), stats["delta_bytes"].as_u64());
}

#[test]
fn pack_download_resumes_after_dropped_connections() {
    let robot = robot_on_100();
    let server = FaultServer::start(&fixture().repo).expect("server");
    server.add_fault(&pack_path(), Fault::DropAfter(300), Some(2));
    let (report, _) = install(&robot, &server);
    assert_eq!(report["phase"], "committed", "{report}");
    assert!(report["stats"]["files_from_delta"].as_u64() >= Some(1), "{report}");

    let pack = requests_to(&server, &pack_path());
    assert!(pack.iter().any(|r| r.range.as_deref() == Some("bytes=300-")), "no resumed request: {pack:?}");
    let sent: u64 = pack.iter().map(|r| r.body_bytes).sum();
    assert_eq!(Some(sent), report["stats"]["delta_bytes"].as_u64(), "bytes sent twice: {pack:?}");
}

#[test]
fn damaged_pack_falls_back_to_chunks() {
    let robot = robot_on_100();
    let server = FaultServer::start(&fixture().repo).expect("server");
    server.add_fault(&pack_path(), Fault::Corrupt(20), None);
    let (report, stderr) = install(&robot, &server);
    assert_eq!(report["phase"], "committed", "{report}");
    assert_eq!(robot.status()["version"], "1.0.1");
    assert_eq!(report["stats"]["files_from_delta"], 0, "{report}");
    assert!(stderr.contains("delta pack unusable"), "{stderr}");
    assert!(stderr.contains(PACK_NAME), "the warning names the pack: {stderr}");
    assert!(!requests_to(&server, "/chunks/").is_empty(), "no chunk was fetched instead");
    let cache = robot.path("var/lib/tender/cache");
    assert!(!cache.exists(), "the damaged pack stayed in {}", cache.display());
}

#[test]
fn changed_base_file_falls_back_to_chunks() {
    let robot = robot_on_100();
    // Change, in the active slot, every file that 1.0.1 changes: the pack's
    // references no longer match, so those files must come from chunks.
    let old = manifest_files("ecar-4wd4ws-1.0.0.manifest.json");
    let new = manifest_files("ecar-4wd4ws-1.0.1.manifest.json");
    let changed: Vec<&String> = new.iter().filter(|(path, digest)| old.get(*path).is_some_and(|d| d != *digest)).map(|(p, _)| p).collect();
    assert!(!changed.is_empty(), "1.0.1 changes no file of 1.0.0");
    let active = robot.active_slot_dir();
    for path in &changed {
        let file = active.join(path);
        let length = fs::metadata(&file).expect("active file").len() as usize;
        fs::write(&file, vec![0u8; length]).expect("change active file");
    }
    let server = FaultServer::start(&fixture().repo).expect("server");
    let (report, stderr) = install(&robot, &server);
    assert_eq!(report["phase"], "committed", "{report}");
    assert!(stderr.contains("delta group failed"), "{stderr}");
    assert!(!requests_to(&server, "/chunks/").is_empty(), "no chunk was fetched for the changed files");
}

/// Paths and SHA-256 of the file entries of a fixture manifest.
fn manifest_files(name: &str) -> std::collections::BTreeMap<String, String> {
    let bytes = fs::read(fixture().repo.join("manifests").join(name)).expect("manifest");
    let manifest: serde_json::Value = serde_json::from_slice(&bytes).expect("manifest JSON");
    manifest["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter(|entry| entry["type"] == "file")
        .map(|entry| (entry["path"].as_str().unwrap_or_default().to_owned(), entry["sha256"].as_str().unwrap_or_default().to_owned()))
        .collect()
}
