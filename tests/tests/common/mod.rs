//! Shared fixtures of the end-to-end tests: releases built by real colcon
//! through the real `tender` binary, simulated robots driven by the real
//! `tenderd` binary, and forged bundles for the rejection tests.

#![allow(dead_code)]

pub mod forge;
pub mod mount;
pub mod ops;
pub mod partition;
pub mod robot;
pub mod tuf_repo;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::fs;
use std::sync::OnceLock;

use sha2::{Digest, Sha256};

/// `SOURCE_DATE_EPOCH` of releases whose metadata expiry does not matter.
pub const SOURCE_DATE_EPOCH: &str = "1700000000";

/// `SOURCE_DATE_EPOCH` of the shared fixture releases: the start of the
/// current UTC day, so their TUF metadata is fresh (the timestamp expires a
/// day later) and two builds on one day are byte-identical.
pub fn fixture_epoch() -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    (now - now % 86_400).to_string()
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_owned()
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| workspace_root().join("target"))
}

/// Path of a workspace binary; `cargo xtask test` builds them first.
pub fn bin(name: &str) -> PathBuf {
    let path = target_dir().join("debug").join(name);
    assert!(path.is_file(), "{} is missing; run `cargo build --workspace` (or `cargo xtask test`) first", path.display());
    path
}

/// Returns the colcon venv that `cargo xtask test` creates.
pub fn venv() -> PathBuf {
    let path = std::env::var_os("TENDER_VENV").map(PathBuf::from).unwrap_or_else(|| target_dir().join("tender-venv"));
    assert!(path.join("bin/colcon").is_file(), "{} has no colcon; run `cargo xtask test`", path.display());
    path
}

/// Runs a command and returns its output, echoing stderr on failure.
pub fn run(command: &mut Command) -> Output {
    let output = command.output().unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    output
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts success and returns stdout.
pub fn expect_success(output: &Output, what: &str) -> String {
    assert!(
        output.status.success(),
        "{what} failed with {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        stdout(output),
        stderr(output)
    );
    stdout(output)
}

/// Copies the sample recipe and workspace to `dest`, as a checkout at
/// another path would have them.
pub fn copy_recipes(dest: &Path) {
    let source = workspace_root().join("recipes");
    for item in walkdir::WalkDir::new(&source) {
        let item = item.expect("walk recipes");
        let relative = item.path().strip_prefix(&source).expect("below recipes");
        if relative.components().any(|c| matches!(c.as_os_str().to_str(), Some("build" | "install" | "log"))) {
            continue;
        }
        let target = dest.join(relative);
        if item.file_type().is_dir() {
            std::fs::create_dir_all(&target).expect("mkdir");
        } else {
            std::fs::copy(item.path(), &target).expect("copy");
        }
    }
}

/// Removes the canary waves from a copied recipe: the shared releases go to
/// every robot at once, and the rollout tests set waves with
/// `tender repo rollout`.
pub fn open_rollout(recipes: &Path) {
    edit_source(recipes, "ecar-4wd4ws.toml", "    { after = \"0s\", percent = 10 },\n    { after = \"24h\", percent = 100 },\n", "");
}

/// Replaces `from` with `to` in one file of a copied workspace.
pub fn edit_source(recipes: &Path, file: &str, from: &str, to: &str) {
    let path = recipes.join(file);
    let text = std::fs::read_to_string(&path).expect("read source");
    assert!(text.contains(from), "{} does not contain {from:?}", path.display());
    std::fs::write(&path, text.replace(from, to)).expect("write source");
}

/// Runs `tender release` on a copied recipe tree.
pub fn release(recipes: &Path, version: &str, out: &Path, keys: &Path, umask: &str, epoch: &str) -> Output {
    let recipe = recipes.join("ecar-4wd4ws.toml");
    let script = format!(
        "umask {umask} && exec \"$@\""
    );
    run(Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg("sh")
        .arg(bin("tender"))
        .arg("release")
        .arg("--recipe")
        .arg(&recipe)
        .arg("--version")
        .arg(version)
        .arg("--out")
        .arg(out)
        .arg("--keys")
        .arg(keys)
        .arg("--colcon-venv")
        .arg(venv())
        .env("SOURCE_DATE_EPOCH", epoch))
}

/// The releases every test shares, built once per test binary.
pub struct Fixture {
    pub dir: PathBuf,
    pub keys: PathBuf,
    /// Repository with 1.0.0 and 1.0.1.
    pub repo: PathBuf,
    pub bundle_100: PathBuf,
    /// 1.0.0 plus a one-line change in servo_controller.
    pub bundle_101: PathBuf,
    /// 1.0.1 with a steering limit that fails the health check.
    pub bundle_102: PathBuf,
    /// Where 1.0.0 was built from; removed after the build.
    pub build_checkout: PathBuf,
    /// `SOURCE_DATE_EPOCH` of the fixture releases.
    pub epoch: String,
}

static FIXTURE: OnceLock<Fixture> = OnceLock::new();

/// Returns the shared releases, building them on first use. Test binaries run
/// as separate processes, so the releases live in a directory named after a
/// fingerprint of their inputs (the `tender` binary and `recipes/`), built
/// once under a file lock and reused while the inputs stay the same.
pub fn fixture() -> &'static Fixture {
    FIXTURE.get_or_init(|| {
        let base = target_dir().join("e2e");
        fs::create_dir_all(&base).expect("e2e dir");
        let lock = fs::File::create(base.join("lock")).expect("e2e lock");
        lock.lock().expect("take e2e lock");
        let dir = base.join(&fingerprint()[..16]);
        let fixture = fixture_paths(&dir);
        if !dir.join("complete").exists() {
            for old in fs::read_dir(&base).expect("read e2e dir").filter_map(Result::ok) {
                if old.file_type().is_ok_and(|t| t.is_dir()) {
                    let _ = fs::remove_dir_all(old.path());
                }
            }
            build_fixture(&fixture);
            fs::write(dir.join("complete"), "").expect("mark fixture complete");
        }
        fixture
    })
}

/// Hashes the inputs of the fixture releases.
fn fingerprint() -> String {
    let mut hasher = Sha256::new();
    hasher.update(fixture_epoch());
    hasher.update(fs::read(bin("tender")).expect("read tender binary"));
    let recipes = workspace_root().join("recipes");
    for item in walkdir::WalkDir::new(&recipes).sort_by_file_name() {
        let item = item.expect("walk recipes");
        if item.file_type().is_file() {
            hasher.update(item.path().strip_prefix(&recipes).expect("below recipes").to_string_lossy().as_bytes());
            hasher.update(fs::read(item.path()).expect("read recipe file"));
        }
    }
    hex::encode(hasher.finalize())
}

fn fixture_paths(dir: &Path) -> Fixture {
    let out = dir.join("out");
    let bad_out = dir.join("out-bad");
    Fixture {
        dir: dir.to_owned(),
        keys: dir.join("keys"),
        repo: out.join("repo"),
        bundle_100: out.join("ecar-4wd4ws-1.0.0.tender"),
        bundle_101: out.join("ecar-4wd4ws-1.0.1.tender"),
        bundle_102: bad_out.join("ecar-4wd4ws-1.0.2.tender"),
        build_checkout: dir.join("checkout-1"),
        epoch: fs::read_to_string(dir.join("epoch")).unwrap_or_else(|_| fixture_epoch()),
    }
}

fn build_fixture(fixture: &Fixture) {
    let dir = &fixture.dir;
    fs::create_dir_all(dir).expect("fixture dir");
    let epoch = &fixture.epoch;
    fs::write(dir.join("epoch"), epoch).expect("write epoch");
    let keys = dir.join("keys");
    expect_success(&run(Command::new(bin("tender")).args(["keys", "generate", "--out"]).arg(&keys)), "tender keys generate");

    let out = dir.join("out");
    let checkout = dir.join("checkout-1");
    copy_recipes(&checkout);
    open_rollout(&checkout);
    expect_success(&release(&checkout, "1.0.0", &out, &keys, "022", epoch), "release 1.0.0");
    edit_source(&checkout, "ecar-ws/src/servo_controller/include/servo_controller/version.hpp", "\"1.0.0\"", "\"1.0.1\"");
    expect_success(&release(&checkout, "1.0.1", &out, &keys, "022", epoch), "release 1.0.1");
    edit_source(&checkout, "ecar-ws/src/servo_controller/include/servo_controller/limits.hpp", "kMaxSteeringAngleDeg = 35.0", "kMaxSteeringAngleDeg = -35.0");
    // The broken release goes to a repository of its own, so that the
    // newest release of the main repository stays healthy.
    let bad_out = dir.join("out-bad");
    expect_success(&release(&checkout, "1.0.2", &bad_out, &keys, "022", epoch), "release 1.0.2");
}
