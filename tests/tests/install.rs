//! Release a real colcon workspace and install it on simulated robots with
//! the real `tender` and `tenderd` binaries.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::tuf_repo::Server;
use common::robot::{describe_tree, sourced_environment, Robot};
use common::{expect_success, fixture, stderr, stdout};

fn install_ok(robot: &Robot, source: &Path) -> serde_json::Value {
    let output = robot.tenderd(&["install", "--json", &source.display().to_string()]);
    serde_json::from_str(&expect_success(&output, "tenderd install")).expect("install JSON")
}

#[test]
fn upgrade_writes_only_changed_files() {
    let fixture = fixture();
    let robot = Robot::new(&fixture.keys);
    let first = install_ok(&robot, &fixture.bundle_100);
    assert_eq!(first["phase"], "committed", "{first}");
    assert_eq!(first["slot"], "a");
    let status = robot.status();
    assert_eq!(status["version"], "1.0.0");
    assert_eq!(status["state"], "committed");

    let second = install_ok(&robot, &fixture.bundle_101);
    assert_eq!(second["phase"], "committed", "{second}");
    assert_eq!(second["slot"], "b");
    let stats = &second["stats"];
    // Only the servo_controller executable changed between 1.0.0 and 1.0.1.
    assert_eq!(stats["files_rebuilt"], 1, "{stats}");
    let status = robot.status();
    assert_eq!(status["version"], "1.0.1");
    assert_eq!(status["active_slot"], "b");
    assert_eq!(status["health_failures"], 0);

    let log = robot.systemctl_log();
    let restarts: Vec<&str> = log.lines().filter(|l| l.starts_with("restart")).collect();
    assert_eq!(
        restarts[..4],
        ["restart ecar-motor-controller", "restart ecar-servo-controller", "restart ecar-perception", "restart ecar-navigation"]
    );
    let backups = fs::read_dir(robot.path("var/lib/tender/backups")).expect("backups").count();
    assert_eq!(backups, 2, "one configuration backup per switch");
}

#[test]
fn installed_workspace_resolves_under_slot() {
    let fixture = fixture();
    let robot = Robot::new(&fixture.keys);
    install_ok(&robot, &fixture.bundle_100);
    let runtime = robot.path("opt/ecar/current");
    let env = sourced_environment(&robot);
    let vars: BTreeMap<&str, &str> = env.lines().filter_map(|l| l.split_once('=')).collect();
    for name in ["COLCON_PREFIX_PATH", "PYTHONPATH"] {
        let value = vars.get(name).unwrap_or_else(|| panic!("{name} is not set after sourcing:\n{env}"));
        assert!(value.starts_with(&runtime.display().to_string()), "{name}={value}");
    }
    let path = vars.get("PATH").expect("PATH");
    assert!(path.contains(&format!("{}/bin", runtime.display())), "PATH={path}");
    let build_dir = fixture.dir.display().to_string();
    assert!(!env.contains(&build_dir), "the environment names the build machine's {build_dir}:\n{env}");

    // No installed file may name a path of the build machine.
    let needles = [fixture.dir.display().to_string(), common::venv().display().to_string()];
    for item in walkdir::WalkDir::new(robot.active_slot_dir()) {
        let item = item.expect("walk");
        if !item.file_type().is_file() {
            continue;
        }
        let bytes = fs::read(item.path()).expect("read");
        for needle in &needles {
            let found = bytes.windows(needle.len()).any(|w| w == needle.as_bytes());
            assert!(!found, "{} contains the build path {needle}", item.path().display());
        }
    }

    let setup = runtime.join("setup.bash");
    let output = common::run(
        Command::new("bash")
            .arg("-c")
            .arg(format!("source '{}' && health_check && motor_controller --version", setup.display()))
            .env_clear()
            .env("PATH", "/usr/bin:/bin"),
    );
    let out = expect_success(&output, "health_check on the robot");
    assert!(out.contains("health_check: ok"), "{out}");
}

#[test]
fn failed_health_check_reverts() {
    let fixture = fixture();
    let robot = Robot::new(&fixture.keys);
    install_ok(&robot, &fixture.bundle_101);
    let before = robot.snapshot();
    let output = robot.install(&fixture.bundle_102);
    assert_eq!(output.status.code(), Some(2), "a reverted install exits 2: {}", stderr(&output));
    assert!(stdout(&output).contains("reverted"), "{}", stdout(&output));

    let status = robot.status();
    assert_eq!(status["state"], "reverted", "{status}");
    assert_eq!(status["version"], "1.0.1");
    assert_eq!(status["active_slot"], "a");
    let last_error = status["last_error"].as_str().unwrap_or_default();
    assert!(last_error.contains("health check failed 5 times"), "{last_error}");
    let mut after = robot.snapshot();
    // The revert restarted services and wrote history, but the active slot
    // and its link are as they were.
    after.retain(|key, _| !key.starts_with("state/"));
    let mut before_slot = before.clone();
    before_slot.retain(|key, _| !key.starts_with("state/"));
    assert_eq!(before_slot, after);

    let events: Vec<String> = robot.history().iter().map(|e| e["event"].as_str().unwrap_or_default().to_owned()).collect();
    assert!(events.contains(&"reverted".to_owned()), "{events:?}");

    let again = robot.install(&fixture.bundle_102);
    assert_eq!(again.status.code(), Some(1));
    let message = stderr(&again);
    assert!(message.contains("failed its health check"), "{message}");
    assert!(message.contains("--allow-reverted"), "{message}");
}

#[test]
fn interrupted_trial_resumes_after_restart() {
    let fixture = fixture();
    let robot = Robot::new(&fixture.keys);
    install_ok(&robot, &fixture.bundle_100);
    fs::write(robot.path("run/kill-tenderd-on-restart"), "").expect("arm crash");
    let output = robot.install(&fixture.bundle_101);
    assert!(output.status.code().is_none(), "tenderd must have been killed: {}", stderr(&output));
    let status = robot.status();
    assert_eq!(status["state"], "trial", "{status}");
    assert_eq!(status["linked_slot"], "b");

    let recovered = robot.tenderd(&["recover"]);
    expect_success(&recovered, "tenderd recover");
    let status = robot.status();
    assert_eq!(status["state"], "committed", "{status}");
    assert_eq!(status["version"], "1.0.1");
}

/// Reference trees of clean installs, to compare a recovered robot with.
fn reference_tree(fixture: &common::Fixture, bundles: &[&Path]) -> BTreeMap<String, String> {
    let robot = Robot::new(&fixture.keys);
    for bundle in bundles {
        install_ok(&robot, bundle);
    }
    let mut tree = BTreeMap::new();
    describe_tree(&robot.active_slot_dir(), "slot", &mut tree);
    tree
}

#[test]
fn killed_install_leaves_consistent_robot() {
    let fixture = fixture();
    let tree_100 = reference_tree(fixture, &[&fixture.bundle_100]);
    let tree_101 = reference_tree(fixture, &[&fixture.bundle_100, &fixture.bundle_101]);
    let mut outcomes = Vec::new();
    let mut interrupted = 0;
    for attempt in 0..12u64 {
        let robot = Robot::new(&fixture.keys);
        install_ok(&robot, &fixture.bundle_100);
        let mut child = Command::new(common::bin("tenderd"))
            .arg("--root")
            .arg(robot.root.path())
            .arg("install")
            .arg(&fixture.bundle_101)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn tenderd");
        std::thread::sleep(Duration::from_millis(5 + attempt * 25));
        if child.try_wait().expect("poll tenderd").is_none() {
            interrupted += 1;
        }
        let _ = child.kill();
        let _ = child.wait();

        expect_success(&robot.tenderd(&["recover"]), "tenderd recover");
        let status = robot.status();
        let state = status["state"].as_str().unwrap_or_default().to_owned();
        assert!(["committed", "failed", "staged"].contains(&state.as_str()), "attempt {attempt}: {status}");
        let mut tree = BTreeMap::new();
        describe_tree(&robot.active_slot_dir(), "slot", &mut tree);
        let expected = if status["version"] == "1.0.1" { &tree_101 } else { &tree_100 };
        assert_eq!(&tree, expected, "attempt {attempt}: active slot differs from a clean install of {}", status["version"]);
        if status["version"] == "1.0.0" {
            let finished = install_ok(&robot, &fixture.bundle_101);
            assert_eq!(finished["phase"], "committed", "attempt {attempt}: {finished}");
        }
        outcomes.push(format!("{}@{}", status["version"], state));
    }
    eprintln!("killed installs: {interrupted} of 12 interrupted; outcomes after recover: {outcomes:?}");
    assert!(interrupted >= 4, "too few installs were interrupted to test recovery: {outcomes:?}");
}

#[test]
fn rollback_and_commit_commands() {
    let fixture = fixture();
    let robot = Robot::new(&fixture.keys);
    install_ok(&robot, &fixture.bundle_100);
    install_ok(&robot, &fixture.bundle_101);

    let nothing = robot.tenderd(&["commit"]);
    assert!(!nothing.status.success());
    assert!(stderr(&nothing).contains("nothing to commit"), "{}", stderr(&nothing));

    // Going back to an older committed release needs a signed authorisation.
    let refused = robot.tenderd(&["rollback"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(stderr(&refused).contains("downgrade authorisation"), "{}", stderr(&refused));
    assert_eq!(robot.status()["version"], "1.0.1");

    // A robot learns the authorisation from an online refresh.
    let repo = authorised_repo_copy(fixture, "rollback");
    let robot = Robot::new(&fixture.keys);
    install_ok(&robot, &fixture.bundle_100);
    install_ok(&robot, &repo);
    assert_eq!(robot.status()["version"], "1.0.1");
    let rollback = robot.tenderd(&["rollback"]);
    let out = expect_success(&rollback, "tenderd rollback");
    assert!(out.contains("1.0.0"), "{out}");
    let status = robot.status();
    assert_eq!(status["version"], "1.0.0");
    assert_eq!(status["active_slot"], "a");
    assert_eq!(status["state"], "committed");

    // A rollback puts the robot on hold, so the daemon does not update it again.
    assert_eq!(status["held"], true);

    let again = robot.tenderd(&["rollback"]);
    assert!(!again.status.success());
    assert!(stderr(&again).contains("not earlier"), "{}", stderr(&again));
}

#[test]
fn refresh_brings_downgrade_authorisation() {
    let fixture = fixture();
    let robot = Robot::new(&fixture.keys);
    install_ok(&robot, &fixture.bundle_100);
    install_ok(&robot, &fixture.bundle_101);
    let repo = authorised_repo_copy(fixture, "refresh");
    let refreshed = expect_success(&robot.tenderd(&["refresh", &repo.display().to_string()]), "tenderd refresh");
    assert!(refreshed.contains("downgrade allowed: ecar-4wd4ws-1.0.0.manifest.json"), "{refreshed}");
    assert_eq!(robot.status()["version"], "1.0.1", "refresh must not install anything");
    expect_success(&robot.tenderd(&["rollback"]), "rollback after refresh");
    assert_eq!(robot.status()["version"], "1.0.0");
}

/// Copies the fixture repository and signs a downgrade authorisation for
/// 1.0.0 into it with `tender repo allow-downgrade`.
fn authorised_repo_copy(fixture: &common::Fixture, name: &str) -> std::path::PathBuf {
    let copy = fixture.dir.join(format!("repo-downgrade-{name}"));
    let _ = fs::remove_dir_all(&copy);
    expect_success(&common::run(Command::new("cp").arg("-a").arg(&fixture.repo).arg(&copy)), "copy repository");
    let key = |file: &str| fixture.keys.join(file).display().to_string();
    let output = common::run(
        Command::new(common::bin("tender"))
            .args(["repo", "allow-downgrade", "--repo"])
            .arg(&copy)
            .args(["--version", "1.0.0", "--key", &key("release.key")])
            .args(["--snapshot-key", &key("snapshot.key"), "--timestamp-key", &key("timestamp.key")]),
    );
    expect_success(&output, "tender repo allow-downgrade");
    copy
}

#[test]
fn downgrade_install_needs_authorisation() {
    let fixture = fixture();
    let robot = Robot::new(&fixture.keys);
    install_ok(&robot, &fixture.bundle_101);
    let repo = fixture.repo.display().to_string();
    let before = robot.snapshot();
    let refused = robot.tenderd(&["install", "--version", "1.0.0", &repo]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(stderr(&refused).contains("allow-downgrade"), "{}", stderr(&refused));
    assert_eq!(before, robot.snapshot());

    let authorised = authorised_repo_copy(fixture, "install");
    let output = robot.tenderd(&["install", "--json", "--version", "1.0.0", &authorised.display().to_string()]);
    let report: serde_json::Value = serde_json::from_str(&expect_success(&output, "authorised downgrade")).expect("JSON");
    assert_eq!(report["phase"], "committed", "{report}");
    assert_eq!(robot.status()["version"], "1.0.0");
}

#[test]
fn install_from_http_repository() {
    let fixture = fixture();
    let server = Server::static_files(&fixture.repo);
    let robot = Robot::new(&fixture.keys);
    install_ok(&robot, &fixture.bundle_100);
    let url = format!("http://127.0.0.1:{}/", server.port);
    let output = robot.tenderd(&["install", "--json", &url]);
    let report: serde_json::Value = serde_json::from_str(&expect_success(&output, "install over HTTP")).expect("JSON");
    assert_eq!(report["phase"], "committed", "{report}");
    let stats = &report["stats"];
    // 1.0.1 differs from 1.0.0 in one file, so the delta pack carries it
    // and no chunk crosses the network.
    assert_eq!(stats["chunks_fetched"], 0, "{stats}");
    assert!(stats["files_from_delta"].as_u64() >= Some(1), "{stats}");
    // The bytes to fetch were known before the download started.
    assert_eq!(stats["bytes_planned"], stats["bytes_fetched"], "{stats}");
    assert_eq!(robot.status()["version"], "1.0.1");

    let again = robot.tenderd(&["install", &url]);
    assert!(!again.status.success());
    assert!(stderr(&again).contains("already installed"), "{}", stderr(&again));
}

#[test]
fn release_is_byte_identical_from_another_checkout() {
    let fixture = fixture();
    let checkout = fixture.dir.join("a-second-checkout-at-a-much-longer-path");
    let out = fixture.dir.join("out-repro");
    let _ = fs::remove_dir_all(&checkout);
    let _ = fs::remove_dir_all(&out);
    common::copy_recipes(&checkout);
    common::open_rollout(&checkout);
    expect_success(&common::release(&checkout, "1.0.0", &out, &fixture.keys, "077", &fixture.epoch), "second release of 1.0.0");
    let first = fs::read(&fixture.bundle_100).expect("first bundle");
    let second = fs::read(out.join("ecar-4wd4ws-1.0.0.tender")).expect("second bundle");
    assert!(first == second, "bundles of the same source differ ({} vs {} bytes)", first.len(), second.len());
}

#[test]
fn relative_root_runs_the_self_test() {
    let fixture = fixture();
    let robot = Robot::new(&fixture.keys);
    let parent = robot.root.path().parent().expect("parent of the robot");
    let name = robot.root.path().file_name().expect("robot directory name");
    let output = common::run(Command::new(common::bin("tenderd")).current_dir(parent).arg("--root").arg(name).arg("install").arg(&fixture.bundle_100));
    expect_success(&output, "install with a relative --root");
    assert_eq!(robot.status()["version"], "1.0.0");
}
