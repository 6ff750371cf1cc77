//! `tender keys generate` and `tender verify` on real releases.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use common::forge::{read_bundle, write_bundle};
use common::{bin, expect_success, fixture, run, stderr};

fn verify(target: &std::path::Path, json: bool) -> std::process::Output {
    let fixture = fixture();
    let mut command = Command::new(bin("tender"));
    command.arg("verify").arg(target).arg("--root").arg(fixture.keys.join("root.json"));
    if json {
        command.arg("--json");
    }
    run(&mut command)
}

#[test]
fn generated_keys_are_private_and_kept() {
    let dir = tempfile::tempdir().expect("dir");
    let keys = dir.path().join("keys");
    let output = run(Command::new(bin("tender")).args(["keys", "generate", "--out"]).arg(&keys));
    let printed = expect_success(&output, "keys generate");
    for name in ["root.key", "release.key"] {
        let mode = fs::metadata(keys.join(name)).expect("key file").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{name}");
        let secret = fs::read_to_string(keys.join(name)).expect("key");
        let private: serde_json::Value = serde_json::from_str(&secret).expect("key JSON");
        let hex = private["keyval"]["private"].as_str().expect("private key");
        assert!(!printed.contains(hex), "the private key of {name} was printed");
    }
    let before = fs::read(keys.join("root.key")).expect("root key");
    let again = run(Command::new(bin("tender")).args(["keys", "generate", "--out"]).arg(&keys));
    assert!(!again.status.success());
    assert!(stderr(&again).contains("--force"), "{}", stderr(&again));
    assert_eq!(before, fs::read(keys.join("root.key")).expect("root key"), "a key was overwritten");
}

#[test]
fn verify_reports_signers_of_bundle_and_repository() {
    let fixture = fixture();
    let release_id = {
        let key = tender_keys::PrivateKey::load(&fixture.keys.join("release.key")).expect("release key");
        key.key_id().expect("key id").to_string()
    };
    let output = verify(&fixture.bundle_101, true);
    let report: serde_json::Value = serde_json::from_str(&expect_success(&output, "verify bundle")).expect("JSON");
    assert_eq!(report["ok"], true, "{report}");
    let text = report.to_string();
    assert!(text.contains(&release_id), "the report does not name the release key: {report}");

    let output = verify(&fixture.repo, false);
    let printed = expect_success(&output, "verify repository");
    assert!(printed.contains("1.0.0"), "{printed}");
    assert!(printed.contains("1.0.1"), "{printed}");
    assert!(printed.contains(&release_id[..8]), "{printed}");
}

#[test]
fn verify_fails_on_damaged_chunk() {
    let fixture = fixture();
    let mut members = read_bundle(&fixture.bundle_100);
    let (name, bytes) = members.chunks.iter_mut().next().expect("a chunk");
    let name = name.clone();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    let path = fixture.dir.join("audit-damaged.tender");
    write_bundle(&members, &path);
    let output = verify(&path, false);
    assert!(!output.status.success());
    let digest = name.trim_start_matches("chunks/").trim_end_matches(".zst");
    assert!(stderr(&output).contains(digest) || common::stdout(&output).contains(digest), "{}", stderr(&output));
}
