//! `tender publish --to oci://…` and `tenderd install oci://…` against
//! Debian's docker-registry on 127.0.0.1. A full install and a delta
//! install fetch only what the robot lacks, and a repeated push sends
//! nothing. An htpasswd registry needs credentials, which never reach the
//! logs. Bad references, credentials and blobs leave the robot unchanged.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use common::robot::Robot;
use common::{bin, expect_success, fixture, run, stderr};
use tender_e2e::local_servers::{AccessLine, Registry};

const REPOSITORY: &str = "ecar/releases";

fn publish(reference: &str, extra: &[&str]) -> Output {
    run(Command::new(bin("tender")).arg("publish").arg("--repo").arg(&fixture().repo).arg("--to").arg(reference).args(extra))
}

/// Media type of every blob the tag's manifest lists, read from the
/// registry's storage.
fn blob_media_types(registry: &Registry, tag: &str) -> BTreeMap<String, String> {
    let digest = registry.tag_digest(REPOSITORY, tag).expect("the tag exists");
    let manifest: serde_json::Value = serde_json::from_slice(&fs::read(registry.blob_path(&digest)).expect("manifest blob")).expect("manifest JSON");
    let mut types = BTreeMap::new();
    for layer in manifest["layers"].as_array().expect("layers") {
        types.insert(layer["digest"].as_str().expect("digest").to_owned(), layer["mediaType"].as_str().expect("media type").to_owned());
    }
    types
}

/// Blob GETs among `requests`, with the media type of each blob.
fn blob_gets<'a>(requests: &'a [AccessLine], types: &BTreeMap<String, String>) -> Vec<(&'a AccessLine, String)> {
    requests
        .iter()
        .filter(|r| r.method == "GET" && r.path.contains("/blobs/sha256:"))
        .map(|r| {
            let digest = r.path.rsplit('/').next().unwrap_or_default();
            (r, types.get(digest).cloned().unwrap_or_else(|| "unknown".to_owned()))
        })
        .collect()
}

fn robot_on_100() -> Robot {
    let robot = Robot::new(&fixture().keys);
    expect_success(&robot.install(&fixture().bundle_100), "install 1.0.0 from the bundle");
    robot
}

fn add_registry_config(robot: &Robot, section: &str) {
    let path = robot.path("etc/tender/updater.toml");
    let mut text = fs::read_to_string(&path).expect("config");
    text.push_str(section);
    fs::write(&path, text).expect("write config");
}

/// Asserts that a failed command printed one line that contains `expected`.
fn assert_one_line_failure(output: &Output, expected: &str) {
    assert_eq!(output.status.code(), Some(1), "stdout: {}\nstderr: {}", common::stdout(output), stderr(output));
    let text = stderr(output);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line:\n{text}");
    assert!(lines[0].contains(expected), "{expected:?} is not in: {text}");
}

#[test]
fn registry_full_and_delta_installs() {
    let registry = Registry::start(None).expect("start docker-registry");
    let reference = registry.reference(REPOSITORY);
    let first = expect_success(&publish(&reference, &[]), "first publish");
    assert!(first.contains("tags moved    1.0.1, latest"), "{first}");
    let pushes_after_first = registry.requests().iter().filter(|r| r.method == "PUT" || r.method == "POST").count();

    let second = expect_success(&publish(&reference, &[]), "repeated publish");
    assert!(second.contains("uploaded      0 blobs"), "{second}");
    assert!(second.contains("tags moved    none"), "{second}");
    let pushes_after_second = registry.requests().iter().filter(|r| r.method == "PUT" || r.method == "POST").count();
    assert_eq!(pushes_after_first, pushes_after_second, "a repeated publish sent data");

    let types = blob_media_types(&registry, "latest");
    assert!(types.values().any(|t| t.ends_with("chunk-pack.v1")), "no chunk pack in {types:?}");

    // A fresh robot installs 1.0.0 in full, from chunk packs and chunk blobs.
    let robot = Robot::new(&fixture().keys);
    let start = registry.requests().len();
    let output = robot.tenderd(&["install", "--json", "--version", "1.0.0", &reference]);
    let report: serde_json::Value = serde_json::from_str(&expect_success(&output, "full install from the registry")).expect("JSON");
    assert_eq!(report["phase"], "committed", "{report}");
    assert_eq!(robot.status()["version"], "1.0.0");
    let full = registry.requests()[start..].to_vec();
    let ranged: Vec<_> = blob_gets(&full, &types).into_iter().filter(|(r, t)| t.ends_with("chunk-pack.v1") && r.status == 206).collect();
    assert!(!ranged.is_empty(), "no ranged read of a chunk pack: {full:?}");

    // The upgrade fetches the delta pack and metadata, no chunk and no pack.
    let start = registry.requests().len();
    let output = robot.tenderd(&["install", "--json", &reference]);
    let report: serde_json::Value = serde_json::from_str(&expect_success(&output, "delta install from the registry")).expect("JSON");
    assert_eq!(report["phase"], "committed", "{report}");
    assert_eq!(robot.status()["version"], "1.0.1");
    assert_eq!(report["stats"]["chunks_fetched"], 0, "{report}");
    let upgrade = registry.requests()[start..].to_vec();
    let gets = blob_gets(&upgrade, &types);
    let chunk_gets: Vec<_> = gets.iter().filter(|(_, t)| t.contains("chunk")).collect();
    assert!(chunk_gets.is_empty(), "the upgrade fetched chunk data: {chunk_gets:?}");
    let target_bytes: u64 = gets.iter().filter(|(_, t)| t.ends_with("target.v1")).map(|(r, _)| r.body_bytes).sum();
    assert_eq!(Some(target_bytes), report["stats"]["delta_bytes"].as_u64(), "only the delta pack crosses as a target: {gets:?}");
}

#[test]
fn htpasswd_registry_needs_credentials_and_hides_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let password = "s3cret-robot-password";
    let htpasswd = dir.path().join("htpasswd");
    let output = run(Command::new("htpasswd").args(["-Bbn", "robot", password]));
    fs::write(&htpasswd, expect_success(&output, "htpasswd -B")).expect("write htpasswd");
    let password_file = dir.path().join("password");
    fs::write(&password_file, format!("{password}\n")).expect("password file");
    let registry = Registry::start(Some(&htpasswd)).expect("start docker-registry with htpasswd");
    let reference = registry.reference(REPOSITORY);

    let anonymous = publish(&reference, &[]);
    assert_one_line_failure(&anonymous, "requires a username and password");

    let password_arg = password_file.display().to_string();
    expect_success(&publish(&reference, &["--username", "robot", "--password-file", &password_arg]), "publish with credentials");

    // Wrong credentials: rejected in one line, robot unchanged.
    let robot = robot_on_100();
    let wrong_file = dir.path().join("wrong");
    fs::write(&wrong_file, "not-the-password\n").expect("wrong password file");
    fs::create_dir_all(robot.path("etc/tender")).expect("etc");
    fs::copy(&wrong_file, robot.path("etc/tender/registry-password")).expect("robot password file");
    add_registry_config(&robot, "\n[registry]\nusername = \"robot\"\npassword_file = \"/etc/tender/registry-password\"\n");
    let before = robot.snapshot();
    let output = robot.tenderd(&["install", &reference]);
    assert_one_line_failure(&output, "rejected the username and password");
    assert_eq!(before, robot.snapshot(), "a rejected install changed the robot");

    // Right credentials with debug logs: installs, and no secret is printed.
    fs::copy(&password_file, robot.path("etc/tender/registry-password")).expect("robot password file");
    let output = run(Command::new(bin("tenderd"))
        .arg("--root")
        .arg(robot.root.path())
        .args(["install", &reference])
        .env("RUST_LOG", "debug"));
    expect_success(&output, "install with credentials");
    assert_eq!(robot.status()["version"], "1.0.1");
    let log = format!("{}{}", common::stdout(&output), stderr(&output));
    assert!(log.contains("registry repository index loaded"), "debug logs are missing: {log}");
    let basic = base64_of(&format!("robot:{password}"));
    assert!(!log.contains(password), "the password appears in the output");
    assert!(!log.contains(&basic), "the Basic credentials appear in the output");
}

#[test]
fn bad_references_leave_the_robot_unchanged() {
    let registry = Registry::start(None).expect("start docker-registry");
    let reference = registry.reference(REPOSITORY);
    expect_success(&publish(&reference, &[]), "publish");
    let robot = robot_on_100();
    let before = robot.snapshot();
    let no_repository = format!("oci://127.0.0.1:{}", registry.port);
    let unknown_tag = format!("{reference}:9.9.9");
    for (source, expected) in [
        (no_repository.as_str(), "names no repository"),
        (unknown_tag.as_str(), "has no such repository or tag"),
        ("oci://127.0.0.1:1/Ecar", "repository \"Ecar\""),
    ] {
        let output = robot.tenderd(&["install", source]);
        assert_one_line_failure(&output, expected);
        assert!(stderr(&output).contains(source.trim_start_matches("oci://").split(':').next().unwrap_or_default()), "{}", stderr(&output));
        assert_eq!(before, robot.snapshot(), "{source} changed the robot");
    }
    let output = publish(&no_repository, &[]);
    assert_one_line_failure(&output, "names no repository");
}

#[test]
fn damaged_blob_is_rejected_by_digest() {
    let registry = Registry::start(None).expect("start docker-registry");
    let reference = registry.reference(REPOSITORY);
    expect_success(&publish(&reference, &[]), "publish");
    let robot = robot_on_100();
    let before = robot.snapshot();

    // Flip a byte of the stored timestamp.json blob; the registry serves it as stored.
    let digest = format!("sha256:{}", sha256_hex(&fs::read(fixture().repo.join("metadata/timestamp.json")).expect("timestamp")));
    let path = registry.blob_path(&digest);
    let mut bytes = fs::read(&path).expect("stored blob");
    bytes[10] ^= 0x20;
    fs::write(&path, bytes).expect("damage blob");

    let output = robot.tenderd(&["install", &reference]);
    assert_one_line_failure(&output, &format!("blob {digest}"));
    assert!(stderr(&output).contains("publish again"), "{}", stderr(&output));
    assert_eq!(before, robot.snapshot(), "a damaged blob changed the robot");
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Standard base64 with padding, to look for Basic credentials in logs.
fn base64_of(text: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = text.as_bytes();
    let mut out = String::new();
    for group in bytes.chunks(3) {
        let value = group.iter().enumerate().fold(0u32, |acc, (i, b)| acc | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= group.len() {
                out.push(ALPHABET[(value >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn base64_helper_matches_known_value() {
    assert_eq!(base64_of("robot:pw"), "cm9ib3Q6cHc=");
    assert!(Path::new("/usr/bin/docker-registry").exists(), "docker-registry is missing; run `cargo xtask test`");
}
