//! Every rejected input fails with one line that names the problem, and
//! leaves the active slot and the state files exactly as they were.

mod common;

use std::fs;
use std::path::Path;

use common::forge::{manifest_json, read_bundle, release_key, resign_manifest, write_bundle, Members};
use common::robot::Robot;
use common::{expect_success, fixture, stderr};

/// Installs `bundle` on a robot running 1.0.0 and checks that it is rejected
/// with a message containing `expected`, and that nothing changed.
fn assert_rejected(robot: &Robot, bundle: &Path, expected: &str) {
    let before = robot.snapshot();
    let output = robot.install(bundle);
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{} must be rejected: {message}", bundle.display());
    let errors: Vec<&str> = message.lines().filter(|l| l.starts_with("tenderd: error:")).collect();
    assert_eq!(errors.len(), 1, "expected one error line, got:\n{message}");
    assert!(!errors[0].contains('\n'));
    assert!(errors[0].contains(expected), "error for {} does not mention {expected:?}:\n{}", bundle.display(), errors[0]);
    assert_eq!(before, robot.snapshot(), "rejecting {} changed the robot", bundle.display());
}

fn robot_with_100() -> Robot {
    let fixture = fixture();
    let robot = Robot::new(&fixture.keys);
    expect_success(&robot.install(&fixture.bundle_100), "install 1.0.0");
    robot
}

fn forged(name: &str, edit: impl FnOnce(&mut Members)) -> std::path::PathBuf {
    let fixture = fixture();
    let mut members = read_bundle(&fixture.bundle_101);
    edit(&mut members);
    let dir = fixture.dir.join("forged");
    fs::create_dir_all(&dir).expect("forged dir");
    let path = dir.join(format!("{name}.tender"));
    write_bundle(&members, &path);
    path
}

fn flip_bit(bytes: &mut [u8], index: usize) {
    let index = index.min(bytes.len() - 1);
    bytes[index] ^= 0x01;
}

/// Applies `change` to the manifest's entry list and signs the result with
/// the fleet's own release key.
fn forged_manifest(name: &str, change: impl FnOnce(&mut serde_json::Value)) -> std::path::PathBuf {
    let key = release_key(&fixture().keys);
    forged(name, |members| {
        let mut manifest = manifest_json(members);
        change(&mut manifest);
        resign_manifest(members, &manifest, &key);
    })
}

fn entries(manifest: &mut serde_json::Value) -> &mut Vec<serde_json::Value> {
    manifest["entries"].as_array_mut().expect("entries")
}

fn first_file_index(manifest: &serde_json::Value) -> usize {
    manifest["entries"].as_array().expect("entries").iter().position(|e| e["type"] == "file").expect("a file")
}

#[test]
fn flipped_bit_in_chunk_is_rejected() {
    let robot = robot_with_100();
    let bundle = forged("flipped-chunk", |members| {
        // Flip a bit in every chunk, so whichever the robot needs is damaged.
        for bytes in members.chunks.values_mut() {
            let middle = bytes.len() / 2;
            flip_bit(bytes, middle);
        }
    });
    assert_rejected(&robot, &bundle, "chunk");
    let metrics: serde_json::Value =
        serde_json::from_slice(&fs::read(robot.path("var/lib/tender/metrics.json")).expect("metrics.json")).expect("metrics JSON");
    assert_eq!(metrics["verification_failures"], 1, "{metrics}");
}

#[test]
fn flipped_bit_in_manifest_is_rejected() {
    let robot = robot_with_100();
    let bundle = forged("flipped-manifest", |members| {
        let index = members.manifest.len() / 2;
        flip_bit(&mut members.manifest, index);
    });
    assert_rejected(&robot, &bundle, "not listed in the signed targets.json");
}

#[test]
fn flipped_bit_in_signature_is_rejected() {
    let robot = robot_with_100();
    let bundle = forged("flipped-signature", |members| {
        let text = String::from_utf8(members.targets.clone()).expect("utf8");
        let at = text.find("\"sig\":\"").expect("a signature") + 7;
        let mut bytes = text.into_bytes();
        bytes[at] = if bytes[at] == b'0' { b'1' } else { b'0' };
        members.targets = bytes;
    });
    assert_rejected(&robot, &bundle, "0 valid targets signature(s)");
}

#[test]
fn bundle_signed_by_untrusted_key_is_rejected() {
    let robot = robot_with_100();
    let stranger = tender_keys::PrivateKey::generate();
    let bundle = forged("untrusted-key", |members| {
        let manifest = manifest_json(members);
        resign_manifest(members, &manifest, &stranger);
    });
    assert_rejected(&robot, &bundle, "requires 1");
}

#[test]
fn entry_path_with_dotdot_is_rejected() {
    let robot = robot_with_100();
    let bundle = forged_manifest("dotdot", |manifest| {
        let index = first_file_index(manifest);
        entries(manifest)[index]["path"] = "../../etc/cron.d/evil".into();
    });
    assert_rejected(&robot, &bundle, "'..'");
}

#[test]
fn absolute_entry_path_is_rejected() {
    let robot = robot_with_100();
    let bundle = forged_manifest("absolute", |manifest| {
        let index = first_file_index(manifest);
        entries(manifest)[index]["path"] = "/etc/cron.d/evil".into();
    });
    assert_rejected(&robot, &bundle, "is absolute");
}

#[test]
fn symlink_escaping_slot_is_rejected() {
    let robot = robot_with_100();
    let bundle = forged_manifest("symlink-escape", |manifest| {
        let list = entries(manifest);
        let mut link = list[0].clone();
        link["path"] = "zzz-escape".into();
        link["type"] = "symlink".into();
        link["target"] = "../../../../etc/shadow".into();
        link.as_object_mut().expect("object").remove("xattrs");
        list.push(link);
    });
    assert_rejected(&robot, &bundle, "resolves outside the slot");
}

#[test]
fn hardlink_outside_slot_is_rejected() {
    let robot = robot_with_100();
    let bundle = forged_manifest("hardlink-escape", |manifest| {
        let list = entries(manifest);
        let mut link = list[0].clone();
        link["path"] = "zzz-hardlink".into();
        link["type"] = "hardlink".into();
        link["target"] = "../../../etc/shadow".into();
        list.push(link);
    });
    assert_rejected(&robot, &bundle, "not an earlier file entry");
}

#[test]
fn wrong_compatible_is_rejected() {
    let robot = robot_with_100();
    let bundle = forged_manifest("wrong-compatible", |manifest| {
        manifest["compatible"] = "forklift-2wd".into();
    });
    assert_rejected(&robot, &bundle, "compatible \"forklift-2wd\"");
}

#[test]
fn equal_and_older_versions_are_rejected() {
    let fixture = fixture();
    let robot = robot_with_100();
    assert_rejected(&robot, &fixture.bundle_100, "already installed");
    expect_success(&robot.install(&fixture.bundle_101), "install 1.0.1");
    assert_rejected(&robot, &fixture.bundle_100, "older than the installed");
}

#[test]
fn truncated_bundle_is_rejected() {
    let fixture = fixture();
    let robot = robot_with_100();
    let bytes = fs::read(&fixture.bundle_101).expect("bundle");
    let path = fixture.dir.join("forged-truncated.tender");
    fs::create_dir_all(&fixture.dir).expect("dir");
    fs::write(&path, &bytes[..bytes.len() * 2 / 3]).expect("write");
    assert_rejected(&robot, &path, "truncated");
}

#[test]
fn chunk_larger_than_declared_is_rejected() {
    let robot = robot_with_100();
    let bundle = forged("oversized-chunk", |members| {
        // Every chunk decompresses to far more than any size the manifest declares.
        let bomb = zstd::encode_all(&vec![0u8; 8 * 1024 * 1024][..], 3).expect("compress");
        for bytes in members.chunks.values_mut() {
            *bytes = bomb.clone();
        }
    });
    assert_rejected(&robot, &bundle, "decompresses to more than");
}

#[test]
fn unreachable_repository_is_rejected() {
    let robot = robot_with_100();
    // Bind and drop a listener so the port is closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let before = robot.snapshot();
    let output = robot.tenderd(&["install", &format!("http://127.0.0.1:{port}/")]);
    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    assert!(message.contains(&format!("127.0.0.1:{port}")), "{message}");
    assert_eq!(before, robot.snapshot());
}

#[test]
fn invalid_configuration_is_rejected() {
    let robot = robot_with_100();
    let config = robot.path("etc/tender/updater.toml");
    let text = fs::read_to_string(&config).expect("config");
    fs::write(&config, text.replace("compatible =", "compatibel =")).expect("write config");
    let before = robot.snapshot();
    let output = robot.tenderd(&["install", &fixture().bundle_101.display().to_string()]);
    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    assert_eq!(message.lines().count(), 1, "{message}");
    assert!(message.contains("compatibel"), "{message}");
    assert!(message.contains("updater.toml"), "{message}");
    assert_eq!(before, robot.snapshot());
}

#[test]
fn rejection_on_new_robot_writes_no_state() {
    let fixture = fixture();
    let robot = Robot::new(&fixture.keys);
    let stranger = tender_keys::PrivateKey::generate();
    let bundle = forged("untrusted-key-new-robot", |members| {
        let manifest = manifest_json(members);
        resign_manifest(members, &manifest, &stranger);
    });
    let output = robot.install(&bundle);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(!robot.path("var/lib/tender/tuf/root.json").exists(), "a rejected bundle stored a trusted root");
    assert!(!robot.path("var/lib/tender/state.json").exists(), "a rejected bundle wrote the state");
    assert!(!robot.path("opt/ecar/current").exists());
}
