//! Every property of a release tree survives the trip from the build machine
//! to the robot: hardlinks, empty directories, setuid/setgid/sticky bits,
//! file capabilities, long paths and symlink targets.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use common::robot::{describe_tree, Robot};
use common::{bin, expect_success, run, stderr, SOURCE_DATE_EPOCH};

/// Writes a recipe for a prebuilt tree whose health check always passes.
fn write_recipe(dir: &Path) -> std::path::PathBuf {
    let recipe = dir.join("tree.toml");
    fs::write(
        &recipe,
        r#"name = "ecar-tree"
compatible = "ecar-4wd4ws"
prefix = "/opt/ecar"
runtime_path = "/opt/ecar/current"
services = []

[colcon]
workspace = "unused"

[health]
command = ["true"]
timeout = "5s"
interval = "100ms"
failures_to_revert = 2
"#,
    )
    .expect("recipe");
    recipe
}

/// `security.capability` value for `cap_net_raw+ep` (VFS_CAP_REVISION_2).
const CAP_NET_RAW_EP: [u8; 20] = [0, 0, 0, 2, 0, 32, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

fn build_tree(tree: &Path) {
    let long = ["a".repeat(120), "b".repeat(120), "c".repeat(120)].join("/");
    for dir in ["bin", "lib", "empty/nested-empty", "shared", &format!("share/{long}")] {
        fs::create_dir_all(tree.join(dir)).expect("mkdir");
    }
    fs::write(tree.join(format!("share/{long}/deep.txt")), "deep\n").expect("long path");
    let tool = tree.join("bin/ping-wheels");
    fs::write(&tool, "#!/bin/sh\necho ping\n").expect("tool");
    fs::set_permissions(&tool, fs::Permissions::from_mode(0o4755)).expect("setuid");
    xattr::set(&tool, "security.capability", &CAP_NET_RAW_EP).expect("file capability");
    xattr::set(&tool, "user.ecar.role", b"diagnostics").expect("user xattr");
    fs::set_permissions(tree.join("shared"), fs::Permissions::from_mode(0o1777)).expect("sticky");
    fs::set_permissions(tree.join("lib"), fs::Permissions::from_mode(0o2755)).expect("setgid");
    fs::write(tree.join("lib/libwheel.so.1.2"), vec![7u8; 300_000]).expect("lib");
    std::os::unix::fs::symlink("libwheel.so.1.2", tree.join("lib/libwheel.so.1")).expect("relative symlink");
    std::os::unix::fs::symlink("/usr/lib/x86_64-linux-gnu/libc.so.6", tree.join("lib/libc-system.so")).expect("absolute symlink");
    fs::hard_link(tree.join("lib/libwheel.so.1.2"), tree.join("lib/libwheel-copy.so")).expect("hardlink");
}

/// Drops what legitimately differs between the tree and the slot: the
/// modification time (set to `SOURCE_DATE_EPOCH`) and the owner (the recipe
/// default is root, which the test runs as).
fn comparable(tree: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    tree.iter()
        .filter(|(key, _)| key.as_str() != "t/")
        .map(|(key, line)| {
            let kept: Vec<&str> = line.split(' ').filter(|field| !field.starts_with("mtime=")).collect();
            (key.clone(), kept.join(" "))
        })
        .collect()
}

#[test]
fn tree_metadata_round_trips() {
    let work = tempfile::tempdir().expect("work dir");
    let tree = work.path().join("tree");
    build_tree(&tree);
    let keys = work.path().join("keys");
    expect_success(&run(Command::new(bin("tender")).args(["keys", "generate", "--out"]).arg(&keys)), "keys");
    let out = work.path().join("out");
    let output = run(Command::new(bin("tender"))
        .args(["release", "--recipe"])
        .arg(write_recipe(work.path()))
        .args(["--version", "2.0.0", "--out"])
        .arg(&out)
        .arg("--keys")
        .arg(&keys)
        .arg("--tree")
        .arg(&tree)
        .env("SOURCE_DATE_EPOCH", SOURCE_DATE_EPOCH));
    expect_success(&output, "tender release --tree");

    let robot = Robot::new(&keys);
    expect_success(&robot.install(&out.join("ecar-tree-2.0.0.tender")), "install tree release");
    let mut expected = BTreeMap::new();
    describe_tree(&tree, "t", &mut expected);
    let mut actual = BTreeMap::new();
    describe_tree(&robot.active_slot_dir(), "t", &mut actual);
    assert_eq!(comparable(&expected), comparable(&actual));
    for (key, line) in &actual {
        if key != "t/" {
            assert!(line.contains(&format!("mtime={SOURCE_DATE_EPOCH}")), "{key}: {line}");
        }
    }
    let slot = robot.active_slot_dir();
    let capability = xattr::get(slot.join("bin/ping-wheels"), "security.capability").expect("read xattr");
    assert_eq!(capability.as_deref(), Some(&CAP_NET_RAW_EP[..]));
    assert_eq!(fs::read_link(slot.join("lib/libc-system.so")).expect("link"), Path::new("/usr/lib/x86_64-linux-gnu/libc.so.6"));
}

#[test]
fn unsupported_file_type_fails_the_release() {
    let work = tempfile::tempdir().expect("work dir");
    let tree = work.path().join("tree");
    fs::create_dir_all(tree.join("run")).expect("mkdir");
    let fifo = tree.join("run/motor.fifo");
    expect_success(&run(Command::new("mkfifo").arg(&fifo)), "mkfifo");
    let keys = work.path().join("keys");
    expect_success(&run(Command::new(bin("tender")).args(["keys", "generate", "--out"]).arg(&keys)), "keys");
    let output = run(Command::new(bin("tender"))
        .args(["release", "--recipe"])
        .arg(write_recipe(work.path()))
        .args(["--version", "2.0.0", "--out"])
        .arg(work.path().join("out"))
        .arg("--keys")
        .arg(&keys)
        .arg("--tree")
        .arg(&tree)
        .env("SOURCE_DATE_EPOCH", SOURCE_DATE_EPOCH));
    assert!(!output.status.success());
    assert!(stderr(&output).contains("run/motor.fifo"), "{}", stderr(&output));
}
