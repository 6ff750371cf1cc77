//! Offline bundles and the trust root: a bundle carries the root chain, so a
//! robot that trusts an older root walks to the root that signed it, and a
//! bundle whose chain has a gap or whose targets metadata is older than what
//! the robot trusts is rejected with the robot unchanged.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::forge::{read_bundle, write_bundle};
use common::robot::Robot;
use common::{bin, expect_success, fixture, run, stderr};

/// Releases the fixture's colcon tree with `tender release --tree`.
fn release_tree(recipes: &Path, keys: &Path, out: &Path, version: &str) -> Output {
    run(Command::new(bin("tender"))
        .arg("release")
        .arg("--recipe")
        .arg(recipes.join("ecar-4wd4ws.toml"))
        .args(["--version", version, "--out"])
        .arg(out)
        .arg("--keys")
        .arg(keys)
        .arg("--tree")
        .arg(fixture().dir.join("out/work/install"))
        .args(["--source-date-epoch", &fixture().epoch]))
}

fn tender(args: &[&str]) -> Output {
    run(Command::new(bin("tender")).args(args))
}

fn trusted_root_version(robot: &Robot) -> u64 {
    let bytes = fs::read(robot.path("var/lib/tender/tuf/root.json")).expect("trusted root");
    let root: serde_json::Value = serde_json::from_slice(&bytes).expect("JSON");
    root["signed"]["version"].as_u64().expect("version")
}

/// Keys, a release 1.0.0, `rotations` root rotations, and a release 1.1.0
/// whose bundle carries every root version.
struct Rotated {
    _dir: tempfile::TempDir,
    keys: PathBuf,
    bundle_100: PathBuf,
    bundle_110: PathBuf,
}

fn rotated_repository(rotations: u32) -> Rotated {
    let dir = tempfile::tempdir().expect("dir");
    let recipes = dir.path().join("recipes");
    common::copy_recipes(&recipes);
    let keys = dir.path().join("keys");
    let out = dir.path().join("out");
    expect_success(&tender(&["keys", "generate", "--out", &keys.display().to_string()]), "keys generate");
    expect_success(&release_tree(&recipes, &keys, &out, "1.0.0"), "release 1.0.0");
    let repo = out.join("repo").display().to_string();
    let mut old_key = keys.join("root.key").display().to_string();
    for rotation in 0..rotations {
        let new_key = dir.path().join(format!("root-{rotation}.key")).display().to_string();
        expect_success(&tender(&["keys", "new", "--out", &new_key]), "keys new");
        let pub_key = format!("{new_key}.pub");
        let args = ["repo", "rotate-root", "--repo", &repo, "--new-root-key", &pub_key, "--key", &new_key, "--key", &old_key];
        expect_success(&tender(&args), "rotate-root");
        old_key = new_key;
    }
    expect_success(&release_tree(&recipes, &keys, &out, "1.1.0"), "release 1.1.0");
    Rotated {
        keys: keys.clone(),
        bundle_100: out.join("ecar-4wd4ws-1.0.0.tender"),
        bundle_110: out.join("ecar-4wd4ws-1.1.0.tender"),
        _dir: dir,
    }
}

#[test]
fn bundle_root_chain_advances_trust() {
    let rotated = rotated_repository(1);
    let robot = Robot::new(&rotated.keys);
    // The robot trusts root version 1, which the keys directory still holds.
    expect_success(&robot.install(&rotated.bundle_100), "install 1.0.0");
    assert_eq!(trusted_root_version(&robot), 1);
    expect_success(&robot.install(&rotated.bundle_110), "install 1.1.0 signed under root 2");
    assert_eq!(trusted_root_version(&robot), 2);
    assert_eq!(robot.status()["version"], "1.1.0");

    // An audit from root version 1 walks the bundle's chain the same way.
    let root_v1 = rotated.keys.join("root.json").display().to_string();
    let bundle = rotated.bundle_110.display().to_string();
    let report = expect_success(&tender(&["verify", &bundle, "--root", &root_v1, "--json"]), "verify from root 1");
    let report: serde_json::Value = serde_json::from_str(&report).expect("JSON");
    assert_eq!(report["ok"], true, "{report}");
}

#[test]
fn bundle_with_root_chain_gap_is_rejected() {
    let rotated = rotated_repository(2);
    let robot = Robot::new(&rotated.keys);
    expect_success(&robot.install(&rotated.bundle_100), "install 1.0.0");
    let mut members = read_bundle(&rotated.bundle_110);
    members.root_chain.retain(|(name, _)| name != "roots/2.root.json");
    let forged = rotated.bundle_110.with_file_name("gap.tender");
    write_bundle(&members, &forged);
    let before = robot.snapshot();
    let output = robot.install(&forged);
    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    assert!(message.contains("gap"), "{message}");
    assert_eq!(before, robot.snapshot());
    assert_eq!(trusted_root_version(&robot), 1);

    let root_v1 = rotated.keys.join("root.json").display().to_string();
    let audit = tender(&["verify", &forged.display().to_string(), "--root", &root_v1]);
    assert!(!audit.status.success());
    assert!(stderr(&audit).contains("skips from version 1 to 3"), "{}", stderr(&audit));
}

#[test]
fn bundle_with_older_targets_is_rejected() {
    let fixture = fixture();
    let robot = Robot::new(&fixture.keys);
    expect_success(&robot.install(&fixture.bundle_100), "install 1.0.0");
    // Online, the robot trusts targets version 2 (1.0.0 and 1.0.1 published).
    expect_success(&robot.tenderd(&["install", &fixture.repo.display().to_string()]), "install 1.0.1 from the repository");
    // The broken 1.0.2 was published alone, so its bundle has targets version 1.
    let before = robot.snapshot();
    let output = robot.install(&fixture.bundle_102);
    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    assert!(message.contains("rollback"), "{message}");
    assert_eq!(before, robot.snapshot());
}
