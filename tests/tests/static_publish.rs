//! `tender publish --to DIR` served by Debian's nginx on 127.0.0.1: a fresh
//! robot installs 1.0.0 from it, then upgrades to 1.0.1 with the delta pack
//! alone, and a repeated publish copies nothing.

mod common;

use common::robot::Robot;
use common::{bin, expect_success, fixture, run};
use std::process::Command;
use tender_e2e::local_servers::Nginx;

fn publish(destination: &std::path::Path) -> String {
    let output = run(Command::new(bin("tender")).arg("publish").arg("--repo").arg(&fixture().repo).arg("--to").arg(destination));
    expect_success(&output, "tender publish --to DIR")
}

#[test]
fn nginx_serves_full_and_delta_installs() {
    let www = tempfile::tempdir().expect("www");
    let site = www.path().join("ecar");
    let first = publish(&site);
    assert!(first.contains("unchanged     0 files"), "{first}");
    let second = publish(&site);
    assert!(second.contains("copied        0 files"), "a repeated publish copied files:\n{second}");
    assert!(site.join("metadata/timestamp.json").is_file());

    let nginx = Nginx::start(&site).expect("start nginx");
    let robot = Robot::new(&fixture().keys);
    let output = robot.tenderd(&["install", "--version", "1.0.0", &nginx.url()]);
    expect_success(&output, "install 1.0.0 from nginx");
    assert_eq!(robot.status()["version"], "1.0.0");
    let before_upgrade = nginx.requests().len();
    assert!(nginx.requests().iter().any(|r| r.path.starts_with("/chunks/")), "1.0.0 came without chunks");

    let output = robot.tenderd(&["install", "--json", &nginx.url()]);
    let report: serde_json::Value = serde_json::from_str(&expect_success(&output, "upgrade from nginx")).expect("JSON report");
    assert_eq!(report["phase"], "committed", "{report}");
    assert_eq!(robot.status()["version"], "1.0.1");

    let upgrade = &nginx.requests()[before_upgrade..];
    let chunks: Vec<_> = upgrade.iter().filter(|r| r.path.starts_with("/chunks/")).collect();
    assert!(chunks.is_empty(), "the upgrade fetched chunks although the delta pack covers it: {chunks:?}");
    let packs: Vec<_> = upgrade.iter().filter(|r| r.path.ends_with(".delta")).collect();
    assert_eq!(packs.len(), 1, "{upgrade:?}");
    assert_eq!(Some(packs[0].body_bytes), report["stats"]["delta_bytes"].as_u64(), "{report}");
    assert!(upgrade.iter().all(|r| r.status == 200 || r.status == 404), "{upgrade:?}");
}

#[test]
fn publish_into_the_repository_is_rejected() {
    let output = run(Command::new(bin("tender"))
        .arg("publish")
        .arg("--repo")
        .arg(&fixture().repo)
        .arg("--to")
        .arg(fixture().repo.join("copy")));
    assert!(!output.status.success());
    let stderr = common::stderr(&output);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("is inside the repository"), "{stderr}");
    assert!(!fixture().repo.join("copy").exists());
}
