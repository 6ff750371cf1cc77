//! Cross builds: the sample workspace built for aarch64 with Debian's cross
//! compilers, its program run under `qemu-aarch64`, and the release refused
//! by an x86_64 robot.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::robot::Robot;
use common::{bin, expect_success, fixture, run, stderr, venv};
use sha2::{Digest, Sha256};

/// Entries of a manifest by path.
fn manifest_entries(manifest: &serde_json::Value) -> std::collections::BTreeMap<String, serde_json::Value> {
    manifest["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|entry| (entry["path"].as_str().unwrap_or_default().to_owned(), entry.clone()))
        .collect()
}

fn read_manifest(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&fs::read(path).expect("manifest")).expect("manifest JSON")
}

/// Returns the ELF machine field of a file: 183 for aarch64, 62 for x86_64.
fn elf_machine(path: &Path) -> u16 {
    let bytes = fs::read(path).expect("program");
    assert_eq!(&bytes[..4], b"\x7fELF", "{} is not an ELF file", path.display());
    u16::from_le_bytes([bytes[18], bytes[19]])
}

fn qemu(program: &Path, argument: &str) -> String {
    let output = run(Command::new("qemu-aarch64").arg("-L").arg("/usr/aarch64-linux-gnu").arg(program).arg(argument));
    expect_success(&output, "the aarch64 program under qemu-aarch64")
}

#[test]
fn aarch64_release_runs_and_x86_64_rejects() {
    let fixture = fixture();
    let dir = tempfile::tempdir().expect("tempdir");
    let checkout = dir.path().join("checkout");
    common::copy_recipes(&checkout);
    common::open_rollout(&checkout);
    let out = dir.path().join("out");
    let output = run(Command::new(bin("tender"))
        .arg("release")
        .arg("--recipe")
        .arg(checkout.join("ecar-4wd4ws.toml"))
        .args(["--version", "1.0.0", "--target", "aarch64"])
        .arg("--out")
        .arg(&out)
        .arg("--keys")
        .arg(&fixture.keys)
        .arg("--colcon-venv")
        .arg(venv())
        .env("SOURCE_DATE_EPOCH", &fixture.epoch));
    let summary = expect_success(&output, "release for aarch64");
    assert!(summary.contains("for aarch64"), "{summary}");

    let manifest = read_manifest(&out.join("repo/manifests/ecar-4wd4ws-1.0.0.manifest.json"));
    assert_eq!(manifest["architecture"], "aarch64");
    let entries = manifest_entries(&manifest);

    // The program the release lists is the cross-built one, and it runs.
    let program = out.join("work-aarch64/install/bin/motor_controller");
    assert_eq!(elf_machine(&program), 183);
    let digest = hex::encode(Sha256::digest(fs::read(&program).expect("program")));
    assert_eq!(entries["bin/motor_controller"]["sha256"], digest.as_str());
    assert_eq!(qemu(&program, "--self-test").trim(), "motor_controller self-test: ok");
    assert_eq!(qemu(&program, "--version").trim(), "motor_controller 1.0.0");

    // Python packages are installed unchanged: the same bytes as the native build.
    let native = manifest_entries(&read_manifest(&fixture.repo.join("manifests/ecar-4wd4ws-1.0.0.manifest.json")));
    let python: Vec<&String> = entries.keys().filter(|path| path.ends_with(".py")).collect();
    assert!(!python.is_empty(), "no Python file in the release");
    for path in python {
        assert_eq!(entries[path]["sha256"], native[path]["sha256"], "{path} differs from the native build");
    }

    // One OCI image index holds the native and the aarch64 release.
    let layout = dir.path().join("image");
    let image = run(Command::new(bin("tender"))
        .arg("image")
        .arg("--recipe")
        .arg(checkout.join("ecar-4wd4ws.toml"))
        .arg("--release")
        .arg(fixture.repo.parent().expect("fixture out dir"))
        .arg("--release")
        .arg(&out)
        .args(["--version", "1.0.0", "--out"])
        .arg(&layout));
    expect_success(&image, "tender image for two architectures");
    let policy = dir.path().join("policy.json");
    fs::write(&policy, r#"{"default":[{"type":"insecureAcceptAnything"}]}"#).expect("policy");
    let raw = run(Command::new("skopeo").arg("--policy").arg(&policy).args(["inspect", "--raw"]).arg(format!("oci:{}:1.0.0", layout.display())));
    let index: serde_json::Value = serde_json::from_str(&expect_success(&raw, "skopeo inspect --raw")).expect("index JSON");
    let mut platforms: Vec<&str> =
        index["manifests"].as_array().expect("manifests").iter().filter_map(|m| m["platform"]["architecture"].as_str()).collect();
    platforms.sort_unstable();
    assert_eq!(platforms, ["amd64", "arm64"]);

    // An x86_64 robot running the native 1.0.0 refuses the aarch64 bundle
    // and stays as it was.
    let robot = Robot::new(&fixture.keys);
    expect_success(&robot.install(&fixture.bundle_100), "install the native 1.0.0");
    let before = robot.snapshot();
    let refused = robot.install(&out.join("ecar-4wd4ws-1.0.0.tender"));
    assert!(!refused.status.success(), "an x86_64 robot installed an aarch64 release");
    let message = stderr(&refused);
    assert!(message.contains("aarch64"), "{message}");
    assert!(message.contains("architecture"), "{message}");
    assert_eq!(robot.snapshot(), before);
}

#[test]
fn unknown_target_is_rejected_before_building() {
    let fixture = fixture();
    let dir = tempfile::tempdir().expect("tempdir");
    let checkout = dir.path().join("checkout");
    common::copy_recipes(&checkout);
    for (target, expected) in [("riscv64", "no toolchain for target riscv64"), ("arm64", "use one of")] {
        let output = run(Command::new(bin("tender"))
            .arg("release")
            .arg("--recipe")
            .arg(checkout.join("ecar-4wd4ws.toml"))
            .args(["--version", "1.0.0", "--target", target])
            .arg("--out")
            .arg(dir.path().join("out"))
            .arg("--keys")
            .arg(&fixture.keys)
            .env("SOURCE_DATE_EPOCH", &fixture.epoch));
        assert!(!output.status.success(), "{target} was accepted");
        let message = stderr(&output);
        assert!(message.contains(expected), "{target}: {message}");
        assert_eq!(message.trim().lines().count(), 1, "{message}");
    }
    assert!(!dir.path().join("out").exists(), "a rejected target wrote output");
}
