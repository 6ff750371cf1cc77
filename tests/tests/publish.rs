//! The TUF repository that `tender release` publishes, checked with the real
//! `tender` binary, python-tuf's reference client (`tuf.ngclient.Updater`)
//! over `python -m http.server`, and `tender audit`.
//!
//! Releases package the colcon tree of the shared fixture with `--tree`, so
//! each repository here costs no colcon build. `SOURCE_DATE_EPOCH` is the
//! current time, because the timestamp a release writes expires one day
//! after it and python-tuf rejects expired metadata.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::tuf_repo::Server;
use common::{bin, expect_success, fixture, run, stderr, stdout, venv};
use sha2::{Digest, Sha256};

/// python-tuf client: refreshes from BASE/metadata/ with the trusted root
/// in META/root.json, downloads the target NAME from BASE/targets/ into
/// DOWNLOADS and prints the versions it trusts as JSON.
const TUF_CLIENT: &str = r#"
import json, sys
from tuf.ngclient import Updater
base, meta, downloads, name = sys.argv[1:5]
with open(meta + "/root.json", "rb") as f:
    bootstrap = f.read()
updater = Updater(metadata_dir=meta, metadata_base_url=base + "/metadata/", target_dir=downloads,
                  target_base_url=base + "/targets/", bootstrap=bootstrap)
updater.refresh()
info = updater.get_targetinfo(name)
if info is None:
    sys.exit("target %s not found" % name)
path = updater.download_target(info)
trusted = updater._trusted_set
print(json.dumps({"path": path, "custom": info.custom, "root": trusted.root.version,
                  "timestamp": trusted.timestamp.version, "snapshot": trusted.snapshot.version,
                  "targets": trusted.targets.version}))
"#;

/// External signer: signs stdin with the ed25519 key file given as its
/// argument and prints the hex signature, as an HSM wrapper would.
const EXTERNAL_SIGNER: &str = r#"
import json, sys
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
with open(sys.argv[1]) as f:
    secret = bytes.fromhex(json.load(f)["keyval"]["private"])
print(Ed25519PrivateKey.from_private_bytes(secret).sign(sys.stdin.buffer.read()).hex())
"#;

const NAME: &str = "ecar-4wd4ws";

/// A keys directory, a recipe and an output directory of one test.
struct Setup {
    dir: tempfile::TempDir,
    epoch: String,
}

impl Setup {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        common::copy_recipes(&dir.path().join("recipes"));
        tender(&["keys", "generate", "--out"], &[dir.path().join("keys").as_os_str()]).expect_ok("keys generate");
        let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_secs();
        Self { dir, epoch: now.to_string() }
    }

    fn keys(&self) -> PathBuf {
        self.dir.path().join("keys")
    }

    fn out(&self) -> PathBuf {
        self.dir.path().join("out")
    }

    fn repo(&self) -> PathBuf {
        self.out().join("repo")
    }

    fn metadata(&self, file: &str) -> serde_json::Value {
        let path = self.repo().join("metadata").join(file);
        serde_json::from_slice(&fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).expect("JSON")
    }

    /// Runs `tender release --tree` of the fixture's colcon tree into `out`.
    fn release_into(&self, out: &Path, version: &str, extra: &[&str]) -> Output {
        let tree = fixture().dir.join("out/work/install");
        let mut command = Command::new(bin("tender"));
        command
            .arg("release")
            .arg("--recipe")
            .arg(self.dir.path().join("recipes/ecar-4wd4ws.toml"))
            .args(["--version", version, "--out"])
            .arg(out)
            .arg("--keys")
            .arg(self.keys())
            .arg("--tree")
            .arg(&tree)
            .args(["--source-date-epoch", &self.epoch])
            .args(extra);
        run(&mut command)
    }

    fn release(&self, version: &str, extra: &[&str]) -> Output {
        self.release_into(&self.out(), version, extra)
    }

    /// Runs `tender repo SUBCOMMAND --repo REPO ARGS…`.
    fn repo_command(&self, subcommand: &str, args: &[&str]) -> Output {
        let mut command = Command::new(bin("tender"));
        command.args(["repo", subcommand, "--repo"]).arg(self.repo()).args(args);
        run(&mut command)
    }

    fn path(&self, relative: &str) -> String {
        self.dir.path().join(relative).display().to_string()
    }

    fn audit(&self) -> Output {
        let mut command = Command::new(bin("tender"));
        command.arg("audit").arg(self.repo()).arg("--root").arg(self.keys().join("root.json"));
        run(&mut command)
    }
}

trait ExpectOk {
    fn expect_ok(self, what: &str) -> String;
}

impl ExpectOk for Output {
    fn expect_ok(self, what: &str) -> String {
        expect_success(&self, what)
    }
}

fn tender(args: &[&str], paths: &[&std::ffi::OsStr]) -> Output {
    run(Command::new(bin("tender")).args(args).args(paths))
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Runs the python-tuf client against the repository of `setup` with a
/// fresh client directory that trusts `trusted_root`, and returns its report.
fn python_tuf(setup: &Setup, client: &str, trusted_root: &Path, target: &str) -> serde_json::Value {
    let server = Server::static_files(&setup.repo());
    let client_dir = setup.dir.path().join(client);
    let meta = client_dir.join("metadata");
    let downloads = client_dir.join("downloads");
    fs::create_dir_all(&meta).expect("client metadata dir");
    fs::create_dir_all(&downloads).expect("client downloads dir");
    fs::copy(trusted_root, meta.join("root.json")).expect("trusted root");
    let script = setup.dir.path().join("tuf_client.py");
    fs::write(&script, TUF_CLIENT).expect("client script");
    let output = run(Command::new(venv().join("bin/python3"))
        .arg(&script)
        .arg(server.url("").trim_end_matches('/'))
        .arg(&meta)
        .arg(&downloads)
        .arg(target));
    let printed = expect_success(&output, "python-tuf refresh and download");
    serde_json::from_str(printed.trim()).unwrap_or_else(|e| panic!("client output {printed:?}: {e}"))
}

fn manifest_name(version: &str) -> String {
    format!("{NAME}-{version}.manifest.json")
}

#[test]
fn two_releases_publish_consistent_metadata() {
    let setup = Setup::new();
    setup.release("1.0.0", &[]).expect_ok("release 1.0.0");
    setup.release("1.1.0", &[]).expect_ok("release 1.1.0");
    let metadata = setup.repo().join("metadata");

    let root = setup.metadata("root.json");
    assert_eq!(root["signed"]["version"], 1);
    assert_eq!(root["signed"]["consistent_snapshot"], true);
    let role_keys: Vec<&serde_json::Value> =
        ["root", "targets", "snapshot", "timestamp"].iter().map(|role| &root["signed"]["roles"][role]["keyids"][0]).collect();
    for (i, key) in role_keys.iter().enumerate() {
        assert_eq!(role_keys.iter().filter(|other| *other == key).count(), 1, "role {i} shares its key");
    }
    assert_eq!(fs::read(metadata.join("1.root.json")).expect("1.root.json"), fs::read(setup.keys().join("root.json")).expect("keys root"));

    for version in [1, 2] {
        assert!(metadata.join(format!("{version}.targets.json")).is_file(), "{version}.targets.json");
        assert!(metadata.join(format!("{version}.snapshot.json")).is_file(), "{version}.snapshot.json");
    }
    let targets_bytes = fs::read(metadata.join("2.targets.json")).expect("2.targets.json");
    assert_eq!(targets_bytes, fs::read(metadata.join("targets.json")).expect("targets.json"));
    assert_eq!(targets_bytes, fs::read(setup.repo().join("targets.json")).expect("top-level targets.json"));
    let snapshot_bytes = fs::read(metadata.join("2.snapshot.json")).expect("2.snapshot.json");
    assert_eq!(snapshot_bytes, fs::read(metadata.join("snapshot.json")).expect("snapshot.json"));

    let snapshot = setup.metadata("snapshot.json");
    assert_eq!(snapshot["signed"]["version"], 2);
    let listed = &snapshot["signed"]["meta"]["targets.json"];
    assert_eq!(listed["version"], 2);
    assert_eq!(listed["length"], targets_bytes.len());
    assert_eq!(listed["hashes"]["sha256"], sha256_hex(&targets_bytes));

    let timestamp = setup.metadata("timestamp.json");
    assert_eq!(timestamp["signed"]["version"], 2);
    let listed = &timestamp["signed"]["meta"]["snapshot.json"];
    assert_eq!(listed["version"], 2);
    assert_eq!(listed["length"], snapshot_bytes.len());
    assert_eq!(listed["hashes"]["sha256"], sha256_hex(&snapshot_bytes));

    let targets = setup.metadata("targets.json");
    for version in ["1.0.0", "1.1.0"] {
        let name = manifest_name(version);
        let target = &targets["signed"]["targets"][&name];
        let digest = target["hashes"]["sha256"].as_str().expect("sha256");
        let stored = fs::read(setup.repo().join("targets").join(format!("{digest}.{name}"))).expect("consistent target");
        assert_eq!(sha256_hex(&stored), digest, "{name}");
        assert_eq!(target["length"], stored.len(), "{name}");
        assert_eq!(stored, fs::read(setup.repo().join("manifests").join(&name)).expect("manifests/ copy"), "{name}");
        let custom = &target["custom"];
        assert_eq!(custom["name"], NAME);
        assert_eq!(custom["version"], version);
        assert_eq!(custom["compatible"], NAME);
        assert!(custom["architecture"].is_string(), "{custom}");
    }

    // The same source and SOURCE_DATE_EPOCH into a fresh directory give the same bytes.
    let again = setup.dir.path().join("out-again");
    setup.release_into(&again, "1.0.0", &[]).expect_ok("second release of 1.0.0");
    let first = setup.dir.path().join("out-first");
    setup.release_into(&first, "1.0.0", &[]).expect_ok("first release of 1.0.0");
    for file in ["repo/metadata/1.targets.json", "repo/metadata/1.snapshot.json", "repo/metadata/timestamp.json", "ecar-4wd4ws-1.0.0.tender"] {
        assert!(fs::read(again.join(file)).expect("again") == fs::read(first.join(file)).expect("first"), "{file} differs");
    }
}

#[test]
fn python_tuf_downloads_release_manifest() {
    let setup = Setup::new();
    setup.release("1.0.0", &[]).expect_ok("release 1.0.0");
    setup.release("1.1.0", &[]).expect_ok("release 1.1.0");
    let report = python_tuf(&setup, "client", &setup.keys().join("root.json"), &manifest_name("1.1.0"));
    assert_eq!(report["timestamp"], 2, "{report}");
    assert_eq!(report["snapshot"], 2, "{report}");
    assert_eq!(report["targets"], 2, "{report}");
    assert_eq!(report["custom"]["version"], "1.1.0", "{report}");
    let downloaded = fs::read(report["path"].as_str().expect("path")).expect("downloaded manifest");
    assert_eq!(downloaded, fs::read(setup.repo().join("manifests").join(manifest_name("1.1.0"))).expect("manifest"));
}

#[test]
fn rotated_root_refreshes_in_python_tuf() {
    let setup = Setup::new();
    setup.release("1.0.0", &[]).expect_ok("release 1.0.0");
    let new_key = setup.path("root2.key");
    tender(&["keys", "new", "--out", &new_key], &[]).expect_ok("keys new");
    let old_key = setup.keys().join("root.key").display().to_string();

    // The new key alone cannot publish: the old root's threshold is missing.
    let pending = setup.repo_command("rotate-root", &["--new-root-key", &format!("{new_key}.pub"), "--key", &new_key]);
    let printed = pending.expect_ok("rotate-root with the new key only");
    assert!(printed.contains("draft root version 2"), "{printed}");
    assert!(!setup.repo().join("metadata/2.root.json").exists(), "published without the old root key");

    let done = setup.repo_command("sign-root", &["--key", &old_key]).expect_ok("sign-root with the old key");
    assert!(done.contains("published root version 2"), "{done}");
    let rotated = setup.metadata("2.root.json");
    assert_eq!(rotated["signatures"].as_array().expect("signatures").len(), 2, "{rotated}");
    assert_eq!(fs::read(setup.repo().join("root.json")).expect("top-level root"), fs::read(setup.repo().join("metadata/2.root.json")).expect("2.root.json"));

    // The old key can no longer sign a root on its own.
    let stale = setup.repo_command("threshold", &["--role", "targets", "1"]);
    stale.expect_ok("a no-op edit starts draft 3");
    let refused = setup.repo_command("sign-root", &["--key", &old_key]);
    assert!(!refused.status.success(), "{}", stdout(&refused));
    assert!(stderr(&refused).contains("not a root key") || stderr(&refused).contains("verifies with none"), "{}", stderr(&refused));

    setup.release("1.1.0", &[]).expect_ok("release after rotation");
    let report = python_tuf(&setup, "client", &setup.keys().join("root.json"), &manifest_name("1.1.0"));
    assert_eq!(report["root"], 2, "{report}");
    assert_eq!(report["targets"], 2, "{report}");
    expect_success(&setup.audit(), "audit after rotation");
}

#[test]
fn targets_threshold_two_needs_both_keys() {
    let setup = Setup::new();
    setup.release("1.0.0", &[]).expect_ok("release 1.0.0");
    let second = setup.path("release2.key");
    tender(&["keys", "new", "--out", &second], &[]).expect_ok("keys new");
    setup.repo_command("add-key", &["--role", "targets", "--key", &format!("{second}.pub")]).expect_ok("add-key");
    setup.repo_command("threshold", &["--role", "targets", "2"]).expect_ok("threshold");
    let root_key = setup.keys().join("root.key").display().to_string();
    setup.repo_command("sign-root", &["--key", &root_key]).expect_ok("sign-root");
    let root = setup.metadata("2.root.json");
    assert_eq!(root["signed"]["roles"]["targets"]["threshold"], 2);

    let one_key = setup.release("1.1.0", &[]);
    assert!(!one_key.status.success(), "released with one of two keys");
    assert!(stderr(&one_key).contains("requires 2"), "{}", stderr(&one_key));

    let first = setup.keys().join("release.key").display().to_string();
    setup.release("1.1.0", &["--key", &first, "--key", &second]).expect_ok("release with both keys");
    let targets = setup.metadata("targets.json");
    assert_eq!(targets["signatures"].as_array().expect("signatures").len(), 2, "{targets}");
    let report = python_tuf(&setup, "client", &setup.keys().join("root.json"), &manifest_name("1.1.0"));
    assert_eq!(report["root"], 2, "{report}");
    expect_success(&setup.audit(), "audit with threshold 2");
}

#[test]
fn external_signer_signs_release_and_root() {
    let setup = Setup::new();
    let script = setup.path("sign.py");
    fs::write(&script, EXTERNAL_SIGNER).expect("signer script");
    let python = venv().join("bin/python3").display().to_string();
    let release_key = setup.keys().join("release.key").display().to_string();
    let spec = format!("cmd:{python} {script} {release_key}");
    setup.release("1.0.0", &["--key", &spec]).expect_ok("release signed by the external signer");

    let release_id = tender_keys::PrivateKey::load(&setup.keys().join("release.key")).expect("key").key_id().expect("id");
    let targets = setup.metadata("targets.json");
    assert_eq!(targets["signatures"][0]["keyid"], release_id.as_str(), "{targets}");
    expect_success(&setup.audit(), "audit of the externally signed release");

    // A detached root signature made by the external signer publishes a root change.
    setup.repo_command("threshold", &["--role", "targets", "1"]).expect_ok("start draft");
    let draft = setup.out().join("root-draft.json");
    assert!(draft.is_file(), "no draft next to the repository");
    let root_key = setup.keys().join("root.key").display().to_string();
    let signature = setup.path("root.sig");
    let root_spec = format!("cmd:{python} {script} {root_key}");
    let output = run(Command::new(bin("tender"))
        .args(["repo", "sign", "--metadata"])
        .arg(&draft)
        .args(["--key", &root_spec, "--out", &signature]));
    expect_success(&output, "repo sign");
    let printed = setup.repo_command("add-signature", &["--signature", &signature]).expect_ok("add-signature");
    assert!(printed.contains("published root version 2"), "{printed}");
    assert!(!draft.exists(), "draft kept after publication");

    let wrong = setup.release("1.1.0", &["--key", "cmd:false"]);
    assert!(!wrong.status.success());
    assert!(stderr(&wrong).contains("external signer"), "{}", stderr(&wrong));
}

#[test]
fn timestamp_resign_bumps_version() {
    let setup = Setup::new();
    setup.release("1.0.0", &[]).expect_ok("release 1.0.0");
    let snapshot_before = fs::read(setup.repo().join("metadata/snapshot.json")).expect("snapshot");
    let key = setup.keys().join("timestamp.key");
    let output = run(Command::new(bin("tender"))
        .args(["timestamp", "--repo"])
        .arg(setup.repo())
        .arg("--key")
        .arg(&key)
        .args(["--expires", "2h"]));
    let printed = expect_success(&output, "tender timestamp");
    assert!(printed.contains("version 2"), "{printed}");
    let timestamp = setup.metadata("timestamp.json");
    assert_eq!(timestamp["signed"]["version"], 2);
    let expires = tender_keys::parse_time(timestamp["signed"]["expires"].as_str().expect("expires")).expect("time");
    let left = expires.duration_since(SystemTime::now()).expect("expires in the future");
    assert!(left > Duration::from_secs(3600), "{left:?}");
    assert!(left <= Duration::from_secs(7200), "{left:?}");
    assert_eq!(fs::read(setup.repo().join("metadata/snapshot.json")).expect("snapshot"), snapshot_before);

    let wrong = run(Command::new(bin("tender"))
        .args(["timestamp", "--repo"])
        .arg(setup.repo())
        .arg("--key")
        .arg(setup.keys().join("snapshot.key")));
    assert!(!wrong.status.success());
    assert!(stderr(&wrong).contains("not a timestamp key"), "{}", stderr(&wrong));

    let report = python_tuf(&setup, "client", &setup.keys().join("root.json"), &manifest_name("1.0.0"));
    assert_eq!(report["timestamp"], 2, "{report}");
}

#[test]
fn republishing_existing_version_is_refused() {
    let setup = Setup::new();
    setup.release("1.0.0", &[]).expect_ok("release 1.0.0");
    setup.release("1.1.0", &[]).expect_ok("release 1.1.0");
    // Roll targets.json back to version 1: the next release would be
    // version 2 again, with other content than the published 2.targets.json.
    let metadata = setup.repo().join("metadata");
    fs::copy(metadata.join("1.targets.json"), metadata.join("targets.json")).expect("roll back");
    let before = fs::read(metadata.join("2.targets.json")).expect("2.targets.json");
    let refused = setup.release("1.2.0", &[]);
    assert!(!refused.status.success(), "republished version 2");
    assert!(stderr(&refused).contains("refusing to overwrite"), "{}", stderr(&refused));
    assert_eq!(fs::read(metadata.join("2.targets.json")).expect("2.targets.json"), before);
}

#[test]
fn audit_passes_then_fails_on_tampered_target() {
    let setup = Setup::new();
    setup.release("1.0.0", &[]).expect_ok("release 1.0.0");
    let printed = expect_success(&setup.audit(), "audit of a good repository");
    assert!(printed.contains("result: OK"), "{printed}");
    assert!(printed.contains("metadata/1.root.json: version 1"), "{printed}");

    let json = run(Command::new(bin("tender")).arg("audit").arg(setup.repo()).arg("--json"));
    let report: serde_json::Value = serde_json::from_str(&expect_success(&json, "audit --json")).expect("JSON");
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["timestamp"]["version"], 1, "{report}");

    let name = manifest_name("1.0.0");
    let digest = sha256_hex(&fs::read(setup.repo().join("manifests").join(&name)).expect("manifest"));
    let target = setup.repo().join("targets").join(format!("{digest}.{name}"));
    let mut bytes = fs::read(&target).expect("target");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    fs::write(&target, &bytes).expect("tamper");

    let failed = setup.audit();
    assert!(!failed.status.success(), "audit passed a tampered target");
    let message = stderr(&failed);
    let lines: Vec<&str> = message.lines().filter(|line| line.starts_with("error:")).collect();
    assert_eq!(lines.len(), 1, "{message}");
    assert!(lines[0].contains(&digest), "{message}");
    assert!(lines[0].contains("sha256"), "{message}");
}
