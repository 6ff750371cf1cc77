//! Releases of a synthetic prebuilt tree (no colcon): the output is
//! byte-identical from another checkout path and checkout umask, verifies
//! against the root, and rebuilds the tree's contents.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tender_builder::keydir::generate_keys;
use tender_builder::progress::Progress;
use tender_builder::recipe::Recipe;
use tender_builder::release::{write_release, ReleaseError, ReleaseRequest, ReleaseSummary, TreeSource};
use tender_builder::targets::TargetsError;
use tender_keys::{verify_root, verify_targets};
use tender_updater::format::chunk::decode_chunk;
use tender_updater::format::layout::repo_chunk_path;
use tender_updater::format::{EntryKind, Manifest, Sha256Digest};

const EPOCH: u64 = 1_700_000_000;

const RECIPE: &str = r#"
name = "ecar-test"
compatible = "ecar-test"
prefix = "/opt/ecar"
runtime_path = "/opt/ecar/current"
services = ["ecar-motor-controller"]
exclude = ["**/__pycache__"]

[colcon]
workspace = "ws"

[[files]]
source = "config/default.yaml"
destination = "config/default.yaml"

[pre_switch]
required_files = ["bin/motor_controller", "config/default.yaml"]
self_test = ["{slot}/bin/motor_controller", "--self-test"]

[health]
command = ["bash", "-c", "source {prefix}/setup.bash && health_check"]
timeout = "30s"
interval = "2s"

[chunking]
min_bytes = 1024
avg_bytes = 4096
max_bytes = 16384
"#;

/// Bytes that do not repeat, so FastCDC cuts them into several chunks.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed;
    (0..len)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (state >> 33) as u8
        })
        .collect()
}

fn write(path: &Path, bytes: &[u8], mode: u32) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, bytes).expect("write");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Creates a checkout at `root`: `recipe.toml`, `config/default.yaml` and a
/// built tree in `install/`. `group_writable` imitates a checkout made under
/// umask 002.
fn make_checkout(root: &Path, group_writable: bool) -> PathBuf {
    let install = root.join("install");
    let data_mode = if group_writable { 0o664 } else { 0o644 };
    write(&root.join("recipe.toml"), RECIPE.as_bytes(), data_mode);
    write(&root.join("config/default.yaml"), b"max_torque_nm: 40.0\n", data_mode);

    write(&install.join("bin/motor_controller"), &noise(40_000, 1), 0o755);
    write(&install.join("bin/setuid_helper"), b"#!/bin/sh\nexit 0\n", 0o4755);
    write(&install.join("lib/libmotor.so.1.0"), &noise(100_000, 2), 0o644);
    // The same content under another name: its chunks are stored once.
    write(&install.join("lib/libmotor_copy.so"), &noise(100_000, 2), 0o644);
    std::os::unix::fs::symlink("libmotor.so.1.0", install.join("lib/libmotor.so.1")).expect("symlink");
    std::os::unix::fs::symlink("/usr/bin/python3", install.join("bin/python3")).expect("symlink");
    std::fs::hard_link(install.join("bin/motor_controller"), install.join("bin/motor")).expect("hardlink");
    let deep = install.join("share/ecar").join("d".repeat(60)).join("e".repeat(60)).join("f".repeat(60));
    write(&deep.join("calibration.yaml"), b"wheels: 4\n", 0o644);
    write(&install.join("share/empty.txt"), b"", 0o644);
    write(&install.join("lib/__pycache__/x.cpython-311.pyc"), b"cache", 0o644);
    let setup = format!("_colcon_prefix_chain_sh_COLCON_CURRENT_PREFIX={}\n", install.display());
    write(&install.join("setup.sh"), setup.as_bytes(), 0o644);
    xattr::set(install.join("bin/motor_controller"), "user.tender.test", b"\x01\x02").expect("set user xattr");
    // A capability needs CAP_SETFCAP; without it the release is checked
    // without one.
    let _ = Command::new("setcap").arg("cap_net_bind_service+ep").arg(install.join("bin/setuid_helper")).status();
    install
}

fn keys(dir: &Path) -> PathBuf {
    let keys = dir.join("keys");
    generate_keys(&keys, false, Duration::from_secs(365 * 24 * 3600)).expect("generate keys");
    keys
}

fn release(checkout: &Path, keys: &Path, out: &Path, version: &str) -> Result<ReleaseSummary, ReleaseError> {
    let recipe = Recipe::load(&checkout.join("recipe.toml")).expect("valid recipe");
    write_release(&ReleaseRequest {
        recipe,
        version: version.parse().expect("semver"),
        out: out.to_owned(),
        keys: keys.to_owned(),
        signing: Default::default(),
        source_date_epoch: EPOCH,
        tree: TreeSource::Prebuilt { tree: checkout.join("install") },
        target: tender_builder::cross::BuildTarget::host(),
        progress: Progress::new(false),
    })
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

#[test]
fn release_is_identical_from_other_path_and_umask() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = keys(dir.path());
    let first = dir.path().join("checkout-a");
    make_checkout(&first, false);
    let second = dir.path().join("elsewhere/checkout-b");
    make_checkout(&second, true);

    let a = release(&first, &keys, &dir.path().join("out-a"), "1.0.0").expect("first release");
    let b = release(&second, &keys, &dir.path().join("out-b"), "1.0.0").expect("second release");

    assert_eq!(a.manifest_sha256, b.manifest_sha256);
    assert_eq!(read(&a.manifest_path), read(&b.manifest_path));
    assert_eq!(read(&a.repo.join("targets.json")), read(&b.repo.join("targets.json")));
    assert_eq!(read(&a.bundle_path), read(&b.bundle_path));
}

#[test]
fn release_verifies_and_rebuilds_tree() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = keys(dir.path());
    let checkout = dir.path().join("checkout");
    let install = make_checkout(&checkout, false);
    let summary = release(&checkout, &keys, &dir.path().join("out"), "1.0.0").expect("release");

    let root = verify_root(&read(&summary.repo.join("root.json")), "root.json").expect("root");
    let targets = verify_targets(&root, &read(&summary.repo.join("targets.json")), "targets.json").expect("targets");
    let manifest_bytes = read(&summary.manifest_path);
    let target = &targets.targets["ecar-test-1.0.0.manifest.json"];
    assert_eq!(target.hashes["sha256"], Sha256Digest::of(&manifest_bytes).to_hex());
    assert_eq!(target.length, manifest_bytes.len() as u64);
    let manifest = Manifest::parse(&manifest_bytes).expect("manifest validates");
    assert_eq!(manifest.provenance.source_date_epoch, EPOCH);
    assert!(manifest.entries.iter().all(|e| e.mtime == EPOCH));

    let entries: BTreeMap<&str, &tender_updater::format::Entry> =
        manifest.entries.iter().map(|e| (e.path.as_str(), e)).collect();
    assert!(!entries.contains_key("lib/__pycache__"), "excluded directory was released");
    // "bin/motor" sorts first, so it is the file and the other name the hardlink.
    assert!(matches!(&entries["bin/motor"].kind, EntryKind::File { .. }));
    assert!(matches!(&entries["bin/motor_controller"].kind, EntryKind::Hardlink { target } if target == "bin/motor"));
    assert!(matches!(&entries["bin/python3"].kind, EntryKind::Symlink { target } if target == "/usr/bin/python3"));
    assert!(matches!(&entries["lib/libmotor.so.1"].kind, EntryKind::Symlink { target } if target == "libmotor.so.1.0"));
    assert_eq!(entries["bin/setuid_helper"].mode, 0o4755);
    assert_eq!(entries["config/default.yaml"].mode, 0o644);
    assert_eq!(entries["bin/motor_controller"].xattrs["user.tender.test"], "0102");
    let capability = xattr::get(install.join("bin/setuid_helper"), "security.capability").ok().flatten();
    if let Some(capability) = capability {
        assert_eq!(entries["bin/setuid_helper"].xattrs["security.capability"], hex::encode(capability));
    }
    assert!(entries.keys().any(|path| path.len() > 190), "long path missing");

    // Every file rebuilds from the repository's chunks.
    let mut expected: BTreeMap<&str, Vec<u8>> = BTreeMap::new();
    expected.insert("setup.sh", b"_colcon_prefix_chain_sh_COLCON_CURRENT_PREFIX=/opt/ecar/current\n".to_vec());
    expected.insert("config/default.yaml", read(&checkout.join("config/default.yaml")));
    expected.insert("lib/libmotor.so.1.0", read(&install.join("lib/libmotor.so.1.0")));
    expected.insert("bin/motor", read(&install.join("bin/motor_controller")));
    for (path, content) in &expected {
        let EntryKind::File { chunks, sha256, size } = &entries[path].kind else { panic!("{path} is not a file") };
        let mut rebuilt = Vec::new();
        for chunk in chunks {
            let stored = read(&summary.repo.join(repo_chunk_path(&chunk.digest)));
            rebuilt.extend(decode_chunk(chunk, &stored).expect("chunk decodes"));
        }
        assert_eq!(&rebuilt, content, "{path}");
        assert_eq!(*sha256, Sha256Digest::of(content), "{path}");
        assert_eq!(*size, content.len() as u64, "{path}");
    }
    assert!(summary.store.deduplicated_bytes >= 100_000, "copy of libmotor was stored again");
    assert_eq!(summary.rewrites.len(), 1);
}

#[test]
fn bundle_holds_metadata_then_sorted_chunks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = keys(dir.path());
    let checkout = dir.path().join("checkout");
    make_checkout(&checkout, false);
    let summary = release(&checkout, &keys, &dir.path().join("out"), "1.0.0").expect("release");

    let bundle = read(&summary.bundle_path);
    let mut archive = tar::Archive::new(bundle.as_slice());
    let mut members = Vec::new();
    for entry in archive.entries().expect("tar") {
        let mut entry = entry.expect("member");
        let name = entry.path().expect("name").display().to_string();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).expect("data");
        members.push((name, data));
    }
    let names: Vec<&str> = members.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names[..4], ["root.json", "roots/1.root.json", "targets.json", "manifest.json"]);
    let chunk_names = &names[4..];
    assert!(chunk_names.windows(2).all(|pair| pair[0] < pair[1]), "chunks not sorted");
    assert_eq!(chunk_names.len() as u64, summary.store.unique_chunks);
    assert_eq!(members[0].1, read(&keys.join("root.json")));
    assert_eq!(members[1].1, read(&keys.join("root.json")), "root version 1 is the keys' root");
    assert_eq!(members[2].1, read(&summary.repo.join("targets.json")));
    assert_eq!(members[3].1, read(&summary.manifest_path));
}

#[test]
fn second_release_keeps_first_and_reuses_chunks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = keys(dir.path());
    let checkout = dir.path().join("checkout");
    let install = make_checkout(&checkout, false);
    let out = dir.path().join("out");
    release(&checkout, &keys, &out, "1.0.0").expect("first release");
    write(&install.join("share/new.txt"), b"new in 1.1.0\n", 0o644);
    let second = release(&checkout, &keys, &out, "1.1.0").expect("second release");

    assert_eq!(second.targets_version, 2);
    assert_eq!(second.store.reused_chunks + 1, second.store.unique_chunks);
    let root = verify_root(&read(&out.join("repo/root.json")), "root.json").expect("root");
    let targets = verify_targets(&root, &read(&out.join("repo/targets.json")), "targets.json").expect("targets");
    let names: Vec<&String> = targets.targets.keys().collect();
    assert_eq!(names, ["ecar-test-1.0.0.manifest.json", "ecar-test-1.1.0.from-1.0.0.delta", "ecar-test-1.1.0.manifest.json"]);

    // The delta pack from 1.0.0 carries the one new file and costs less
    // than the manifest and the new chunk.
    assert_eq!(second.deltas.len(), 1);
    let delta = &second.deltas[0];
    assert_eq!((delta.from.to_string(), delta.files), ("1.0.0".to_owned(), 1));
    assert!(delta.bytes < delta.without_pack, "{delta:?}");
    let listed = &targets.targets["ecar-test-1.1.0.from-1.0.0.delta"];
    assert_eq!(listed.length, delta.bytes);
    let info = tender_updater::format::delta::DeltaTargetInfo::from_custom(listed.custom.as_ref()).expect("delta info");
    assert_eq!(info.to.to_string(), "1.1.0");
}

#[test]
fn same_version_with_other_content_is_rejected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = keys(dir.path());
    let checkout = dir.path().join("checkout");
    let install = make_checkout(&checkout, false);
    let out = dir.path().join("out");
    let first = release(&checkout, &keys, &out, "1.0.0").expect("first release");
    let again = release(&checkout, &keys, &out, "1.0.0").expect("same release again");
    assert!(!again.targets_changed);
    assert_eq!(read(&again.bundle_path), read(&first.bundle_path));

    write(&install.join("share/new.txt"), b"changed\n", 0o644);
    let err = release(&checkout, &keys, &out, "1.0.0").expect_err("version exists");
    assert!(matches!(err, ReleaseError::Targets(TargetsError::VersionExists { .. })), "{err}");
}

#[test]
fn build_path_in_unknown_file_fails_release() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = keys(dir.path());
    let checkout = dir.path().join("checkout");
    let install = make_checkout(&checkout, false);
    write(&install.join("share/notes.txt"), format!("built in {}\n", install.display()).as_bytes(), 0o644);
    let out = dir.path().join("out");
    let err = release(&checkout, &keys, &out, "1.0.0").expect_err("build path");
    let message = err.to_string();
    assert!(message.contains("share/notes.txt: install directory"), "{message}");
    assert!(!out.join("repo/targets.json").exists(), "a failed release published targets.json");
}

#[test]
fn missing_required_file_fails_release() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = keys(dir.path());
    let checkout = dir.path().join("checkout");
    let install = make_checkout(&checkout, false);
    std::fs::remove_file(install.join("bin/motor_controller")).expect("remove");
    std::fs::remove_file(install.join("bin/motor")).expect("remove");
    let err = release(&checkout, &keys, &dir.path().join("out"), "1.0.0").expect_err("missing file");
    assert!(err.to_string().contains("pre_switch.required_files[0]"), "{err}");
}
