//! Partition slots with boot counting: image releases (`tender fs-image`,
//! then `tender release --tree`) installed into image-file slots, with the
//! boot loader's environment checked and changed by Debian's own tools. A
//! reboot is simulated the way the boot loader behaves: with
//! `upgrade_available=1` it counts the boot in `bootcount`, and past
//! `bootlimit` it runs `altbootcmd`, which selects `tender_prev`. Then
//! `tenderd recover` runs, as at boot.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use common::partition::{image_releases, images, partition_robot, ImageSpec, Loader, ENV_BYTES};
use common::robot::Robot;
use common::expect_success;

/// Digest of every file of the robot but its logs: devices, state, environment.
fn snapshot(robot: &Robot) -> BTreeMap<String, String> {
    use sha2::{Digest, Sha256};
    walkdir::WalkDir::new(robot.root.path())
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file() && !e.path().starts_with(robot.path("var/log")) && e.path() != robot.path("var/lib/tender/lock"))
        .map(|e| {
            let digest = hex::encode(Sha256::digest(fs::read(e.path()).unwrap_or_default()));
            (e.path().display().to_string(), digest)
        })
        .collect()
}

fn install(robot: &Robot, bundle: &Path) -> serde_json::Value {
    let output = robot.tenderd(&["install", "--json", &bundle.display().to_string()]);
    serde_json::from_str(&expect_success(&output, "install an image release")).expect("report")
}

fn recover(robot: &Robot) {
    expect_success(&robot.tenderd(&["recover"]), "tenderd recover at boot");
}

fn image_bytes(robot: &Robot, slot: &str, image: &Path) -> bool {
    let written = fs::read(robot.path(&format!("dev/slot-{slot}.img"))).expect("device");
    let expected = fs::read(image).expect("image");
    written[..expected.len()] == expected[..]
}

fn check_flow(loader: Loader) {
    let images = images();
    let robot = partition_robot(&loader);

    // 1.0.0 goes to slot b (the boot loader starts a), on trial.
    let report = install(&robot, &images.bundles["1.0.0"]);
    assert_eq!(report["phase"], "trial", "{report}");
    let vars = loader.read(&robot);
    assert_eq!((vars["tender_slot"].as_str(), vars["upgrade_available"].as_str()), ("b", "1"), "{vars:?}");
    assert_eq!(vars["tender_prev"], "a");
    assert!(image_bytes(&robot, "b", &images.dir.path().join("tree-1.0.0/rootfs.img")));

    // Reboot: the boot loader counts the boot, tenderd checks health and commits.
    assert_eq!(loader.boot(&robot), "b");
    recover(&robot);
    let status = robot.status();
    assert_eq!((status["state"].as_str(), status["version"].as_str()), (Some("committed"), Some("1.0.0")), "{status}");
    assert_eq!(status["boot"]["slot"], "b", "{status}");
    assert_eq!(status["boot"]["trial"], serde_json::Value::Null, "{status}");
    let vars = loader.read(&robot);
    assert_eq!(vars["upgrade_available"], "0");
    assert!(!vars.contains_key("tender_prev"));

    // 1.0.1 fails its health check after the reboot: slot a is marked bad
    // and the boot loader goes back to b.
    let report = install(&robot, &images.bundles["1.0.1"]);
    assert_eq!(report["phase"], "trial", "{report}");
    assert_eq!(loader.boot(&robot), "a");
    recover(&robot);
    let vars = loader.read(&robot);
    assert_eq!((vars["tender_slot"].as_str(), vars["tender_bad"].as_str()), ("b", "a"), "{vars:?}");
    assert_eq!(robot.status()["state"], "reverted");

    // 1.0.2 never reaches tenderd: the boot loader falls back on its own.
    let report = install(&robot, &images.bundles["1.0.2"]);
    assert_eq!(report["phase"], "trial", "{report}");
    let vars = loader.read(&robot);
    assert!(!vars.get("tender_bad").is_some_and(|bad| bad.contains('a')), "the new release's slot is still marked bad: {vars:?}");
    for _ in 0..4 {
        loader.boot(&robot);
    }
    assert_eq!(loader.read(&robot)["tender_slot"], "b");
    recover(&robot);
    let status = robot.status();
    assert_eq!((status["state"].as_str(), status["version"].as_str()), (Some("reverted"), Some("1.0.0")), "{status}");
    assert!(status["last_error"].as_str().unwrap_or_default().contains("fell back"), "{status}");
    assert_eq!(loader.read(&robot)["tender_bad"], "a");

    // `tenderd mark-bad` during a trial goes back at once.
    let output = robot.tenderd(&["install", "--json", "--allow-reverted", &images.bundles["1.0.2"].display().to_string()]);
    let report: serde_json::Value = serde_json::from_str(&expect_success(&output, "install 1.0.2 again")).expect("report");
    assert_eq!(report["phase"], "trial", "{report}");
    loader.boot(&robot);
    expect_success(&robot.tenderd(&["mark-bad"]), "tenderd mark-bad");
    let vars = loader.read(&robot);
    assert_eq!((vars["tender_slot"].as_str(), vars["tender_bad"].as_str()), ("b", "a"), "{vars:?}");
    assert_eq!(robot.status()["boot"]["bad"], serde_json::json!(["a"]));

    // An ordinary reboot of the committed slot counts nothing.
    check_ordinary_reboot(&loader, &robot);
}

fn check_ordinary_reboot(loader: &Loader, robot: &Robot) {
    let before = loader.read(robot);
    loader.boot(robot);
    recover(robot);
    assert_eq!(loader.read(robot), before);
}

#[test]
fn rollback_selects_the_older_committed_slot() {
    let images = images();
    let loader = Loader::Uboot;
    let robot = partition_robot(&loader);
    for version in ["1.0.0", "1.0.2"] {
        install(&robot, &images.bundles[version]);
        assert_eq!(loader.boot(&robot), if version == "1.0.0" { "b" } else { "a" });
        recover(&robot);
    }
    assert_eq!(robot.status()["version"], "1.0.2");
    // Without a signed downgrade authorisation the robot stays on 1.0.2.
    let refused = robot.tenderd(&["rollback"]);
    assert!(!refused.status.success());
    assert!(common::stderr(&refused).contains("downgrade authorisation"), "{}", common::stderr(&refused));
    assert_eq!(loader.read(&robot)["tender_slot"], "a");

    // A damaged older image is refused before the boot loader changes.
    let device = robot.path("dev/slot-b.img");
    let mut bytes = std::fs::read(&device).expect("device");
    bytes[100] ^= 0xff;
    std::fs::write(&device, &bytes).expect("damage");
    let output = robot.tenderd(&["rollback"]);
    assert!(!output.status.success());
    assert_eq!(loader.read(&robot)["tender_slot"], "a");
}

#[test]
fn uboot_trial_commit_revert_and_fallback() {
    check_flow(Loader::Uboot);
}

#[test]
fn grub_trial_commit_revert_and_fallback() {
    check_flow(Loader::Grub);
}

/// A case name, what breaks the robot, and the expected message.
type BrokenRobot = (&'static str, fn(&Robot), &'static str);

#[test]
fn bad_slot_devices_fail_before_anything_changes() {
    let images = images();
    let cases: [BrokenRobot; 3] = [
        ("missing device", |robot| fs::remove_file(robot.path("dev/slot-b.img")).expect("remove"), "is missing"),
        ("small device", |robot| fs::write(robot.path("dev/slot-b.img"), vec![0u8; 4096]).expect("shrink"), "holds 4096 bytes"),
        ("invalid environment", |robot| {
            for index in 0..2 {
                fs::write(robot.path(&format!("boot/env{index}.bin")), vec![0u8; ENV_BYTES as usize]).expect("wipe env");
            }
        }, "no valid copy"),
    ];
    for (case, break_robot, expected) in cases {
        let robot = partition_robot(&Loader::Uboot);
        break_robot(&robot);
        let before = snapshot(&robot);
        let env_before: Vec<Vec<u8>> = (0..2).map(|i| fs::read(robot.path(&format!("boot/env{i}.bin"))).expect("env")).collect();
        let output = robot.tenderd(&["install", &images.bundles["1.0.0"].display().to_string()]);
        assert!(!output.status.success(), "{case}: the install succeeded");
        let message = common::stderr(&output);
        assert!(message.contains(expected), "{case}: {message}");
        assert_eq!(message.trim().lines().count(), 1, "{case}: {message}");
        assert_eq!(snapshot(&robot), before, "{case}: the robot changed");
        let env_after: Vec<Vec<u8>> = (0..2).map(|i| fs::read(robot.path(&format!("boot/env{i}.bin"))).expect("env")).collect();
        assert!(env_before == env_after, "{case}: the boot environment changed");
    }
}

/// Checks that pass: the self-test runs the release's binary from the
/// mounted image, which must be read-only and mounted at `{slot}`.
const PASSING_CHECKS: &str = r#"image = "rootfs.img"
required_files = ["opt/ecar/current/bin/motor_controller", "opt/ecar/current/setup.bash"]
self_test = ["sh", "-c", "cd {slot} && opt/ecar/current/bin/motor_controller --self-test && ! touch probe 2>/dev/null && grep -q ' {slot} ' /proc/self/mountinfo"]
"#;

/// Lines of this process's mount table that name a path of the robot.
fn robot_mounts(robot: &Robot) -> Vec<String> {
    let root = robot.root.path().display().to_string();
    fs::read_to_string("/proc/self/mountinfo").expect("mountinfo").lines().filter(|line| line.contains(&root)).map(str::to_owned).collect()
}

/// Files a rejected install may change: the state with its history, the
/// metrics, the inactive slot that was written and its manifest copy.
fn changed_files(before: &BTreeMap<String, String>, after: &BTreeMap<String, String>, robot: &Robot) -> Vec<String> {
    let allowed = ["var/lib/tender/state.json", "var/lib/tender/metrics.json", "var/lib/tender/manifests/slot-a.json", "dev/slot-a.img"]
        .map(|path| robot.path(path).display().to_string());
    let mut paths: Vec<&String> = before.keys().chain(after.keys()).collect();
    paths.sort();
    paths.dedup();
    paths.into_iter().filter(|path| before.get(*path) != after.get(*path) && !allowed.contains(path)).cloned().collect()
}

fn state(robot: &Robot) -> serde_json::Value {
    serde_json::from_slice(&fs::read(robot.path("var/lib/tender/state.json")).expect("state.json")).expect("state JSON")
}

/// Installs `bundle`, expects it to be rejected with a one-line message that
/// contains `expected`, and checks that the boot selection, the active slot
/// and the committed release did not change and that nothing stays mounted.
fn expect_rejected(robot: &Robot, loader: &Loader, bundle: &Path, expected: &str) {
    let case = bundle.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
    let before = snapshot(robot);
    let vars_before = loader.read(robot);
    let state_before = state(robot);

    let output = robot.tenderd(&["install", &bundle.display().to_string()]);
    assert!(!output.status.success(), "{case}: the install succeeded");
    let message = common::stderr(&output);
    assert_eq!(message.trim().lines().count(), 1, "{case}: {message}");
    assert!(message.contains(expected), "{case}: {message}");
    assert!(message.contains("the active slot is unchanged"), "{case}: {message}");

    let after = snapshot(robot);
    for path in ["boot/env0.bin", "boot/env1.bin", "dev/slot-b.img"] {
        let path = robot.path(path).display().to_string();
        assert_eq!(before.get(&path), after.get(&path), "{case}: {path} changed");
    }
    assert_eq!(changed_files(&before, &after, robot), Vec::<String>::new(), "{case}: other files changed");
    assert_eq!(loader.read(robot), vars_before, "{case}: the boot environment changed");
    let state_after = state(robot);
    for field in ["active", "committed", "slot_b"] {
        assert_eq!(state_after[field], state_before[field], "{case}: state field {field} changed");
    }
    assert_eq!(state_after["phase"], "failed", "{case}");
    assert_eq!(robot.status()["version"], "1.0.0", "{case}");
    assert_eq!(robot_mounts(robot), Vec::<String>::new(), "{case}: a mount is left behind");
    assert!(!robot.path("var/lib/tender/mnt/slot-a").exists(), "{case}: the mount point is left behind");
}

#[test]
fn pre_switch_checks_run_inside_the_mounted_image() {
    let images = image_releases(&[
        ImageSpec { version: "1.0.0", source_version: "1.0.0", health: "true", pre_switch: PASSING_CHECKS },
        ImageSpec {
            version: "1.0.1",
            source_version: "1.0.1",
            health: "true",
            pre_switch: "self_test = [\"sh\", \"-c\", \"echo encoder 2 is silent; exit 3\"]\n",
        },
        // VERSION is in the release tree, so `tender release` accepts it,
        // but it is not inside the image that the robot mounts.
        ImageSpec { version: "1.0.2", source_version: "1.0.1", health: "true", pre_switch: "required_files = [\"VERSION\"]\n" },
        // The background child keeps the mount busy unless the timeout kills it too.
        ImageSpec {
            version: "1.0.3",
            source_version: "1.0.1",
            health: "true",
            pre_switch: "self_test = [\"sh\", \"-c\", \"sleep 60 & wait\"]\nself_test_timeout = \"1s\"\n",
        },
        ImageSpec { version: "1.0.4", source_version: "1.0.1", health: "true", pre_switch: PASSING_CHECKS },
    ]);
    let loader = Loader::Uboot;
    let robot = partition_robot(&loader);

    // Checks that pass: the image goes on trial, and nothing stays mounted.
    let report = install(&robot, &images.bundles["1.0.0"]);
    assert_eq!(report["phase"], "trial", "{report}");
    assert_eq!(robot_mounts(&robot), Vec::<String>::new());
    assert!(!robot.path("var/lib/tender/mnt/slot-b").exists());
    assert_eq!(loader.boot(&robot), "b");
    recover(&robot);
    assert_eq!(robot.status()["state"], "committed");

    expect_rejected(&robot, &loader, &images.bundles["1.0.1"], "self-test \"sh -c echo encoder 2 is silent; exit 3\" failed");
    expect_rejected(&robot, &loader, &images.bundles["1.0.1"], "encoder 2 is silent");
    expect_rejected(&robot, &loader, &images.bundles["1.0.2"], "required file \"VERSION\" is missing from the image in slot a");
    expect_rejected(&robot, &loader, &images.bundles["1.0.3"], "timed out after 1s");

    // A mount command that fails rejects the install in the same way.
    let config = robot.path("etc/tender/updater.toml");
    let original = fs::read_to_string(&config).expect("config");
    let failing_mount = "mount_command = [\"sh\", \"-c\", \"echo mount: wrong fs type >&2; exit 32\", \"mount\", \"{device}\", \"{mount_point}\"]\n";
    fs::write(&config, original.replace("image = \"rootfs.img\"\n", &format!("image = \"rootfs.img\"\n{failing_mount}"))).expect("config");
    expect_rejected(&robot, &loader, &images.bundles["1.0.4"], "cannot mount slot a device");
    expect_rejected(&robot, &loader, &images.bundles["1.0.4"], "wrong fs type");

    // With the default mount command again, the next release installs, and
    // a mount that a killed tenderd left at the mount point is replaced.
    fs::write(&config, original).expect("config");
    let leftover = robot.path("var/lib/tender/mnt/slot-a");
    fs::create_dir_all(&leftover).expect("mount point");
    let output = common::run(std::process::Command::new("mount").args(["-o", "ro,loop"]).arg(robot.path("dev/slot-b.img")).arg(&leftover));
    expect_success(&output, "mount a leftover");
    assert_eq!(robot_mounts(&robot).len(), 1);
    let report = install(&robot, &images.bundles["1.0.4"]);
    assert_eq!(report["phase"], "trial", "{report}");
    assert_eq!(loader.read(&robot)["tender_slot"], "a");
    assert_eq!(robot_mounts(&robot), Vec::<String>::new());
}
