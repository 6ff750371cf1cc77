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
use std::path::{Path, PathBuf};
use std::process::Command;

use common::robot::Robot;
use common::{bin, expect_success, fixture, run, workspace_root};

const DEVICE_BYTES: usize = 4 << 20;
const ENV_BYTES: u64 = 0x4000;

fn image_recipe(health: &str) -> String {
    format!(
        "name = \"ecar-4wd4ws\"\ncompatible = \"ecar-4wd4ws\"\nprefix = \"/opt/ecar\"\nruntime_path = \"/opt/ecar/current\"\n\
         [colcon]\nworkspace = \"unused\"\n[health]\ncommand = [\"{health}\"]\ntimeout = \"10s\"\ninterval = \"100ms\"\nfailures_to_revert = 1\n"
    )
}

/// Image releases 1.0.0 (healthy), 1.0.1 (fails its health check) and
/// 1.0.2 (healthy), as bundles.
struct Images {
    _dir: tempfile::TempDir,
    bundles: BTreeMap<&'static str, PathBuf>,
}

fn images() -> Images {
    let fixture = fixture();
    let dir = tempfile::tempdir().expect("tempdir");
    fs::create_dir(dir.path().join("unused")).expect("workspace");
    let mut bundles = BTreeMap::new();
    for (version, source_version, health) in [("1.0.0", "1.0.0", "true"), ("1.0.1", "1.0.1", "false"), ("1.0.2", "1.0.1", "true")] {
        let tree = dir.path().join(format!("tree-{version}"));
        fs::create_dir(&tree).expect("tree");
        let image = run(Command::new(bin("tender"))
            .arg("fs-image")
            .arg("--recipe")
            .arg(workspace_root().join("recipes/ecar-4wd4ws.toml"))
            .arg("--release")
            .arg(fixture.repo.parent().expect("out"))
            .args(["--version", source_version, "--type", "erofs", "--out"])
            .arg(tree.join("rootfs.img")));
        expect_success(&image, "tender fs-image");
        // Each version's image differs, as a new release would.
        fs::write(tree.join("VERSION"), version).expect("version file");
        let recipe = dir.path().join(format!("image-{version}.toml"));
        fs::write(&recipe, image_recipe(health)).expect("recipe");
        let out = dir.path().join("out");
        let release = run(Command::new(bin("tender"))
            .arg("release")
            .arg("--recipe")
            .arg(&recipe)
            .args(["--version", version, "--out"])
            .arg(&out)
            .arg("--keys")
            .arg(&fixture.keys)
            .arg("--tree")
            .arg(&tree)
            .env("SOURCE_DATE_EPOCH", &fixture.epoch));
        expect_success(&release, "release an image");
        bundles.insert(version, out.join(format!("ecar-4wd4ws-{version}.tender")));
    }
    Images { _dir: dir, bundles }
}

/// The boot loader of the simulated robot, with its Debian tool.
enum Loader {
    Uboot,
    Grub,
}

impl Loader {
    fn config(&self) -> &'static str {
        match self {
            Loader::Uboot => "[boot]\nbackend = \"uboot\"\nuboot = [{ device = \"/boot/env0.bin\", size = 0x4000 }, { device = \"/boot/env1.bin\", size = 0x4000 }]\nboot_limit = 3\nreboot_command = [\"true\"]\n",
            Loader::Grub => "[boot]\nbackend = \"grub\"\ngrub_env = \"/boot/grub/grubenv\"\nboot_limit = 3\nreboot_command = [\"true\"]\n",
        }
    }

    /// Writes the board's first environment with the boot loader's tool.
    fn init(&self, robot: &Robot) {
        match self {
            Loader::Uboot => {
                let mut config = String::new();
                for index in 0..2 {
                    let device = robot.path(&format!("boot/env{index}.bin"));
                    fs::write(&device, vec![0u8; ENV_BYTES as usize]).expect("env device");
                    config.push_str(&format!("{} 0x0 {ENV_BYTES:#x}\n", device.display()));
                }
                fs::write(robot.path("boot/fw_env.config"), config).expect("fw_env.config");
                fs::write(robot.path("boot/defaults.txt"), "bootcmd=run tender_boot\ntender_slot=a\n").expect("defaults");
                let output = run(Command::new("fw_setenv")
                    .arg("-c")
                    .arg(robot.path("boot/fw_env.config"))
                    .arg("-f")
                    .arg(robot.path("boot/defaults.txt"))
                    .args(["board", "ecar"]));
                expect_success(&output, "fw_setenv");
            }
            Loader::Grub => {
                fs::create_dir_all(robot.path("boot/grub")).expect("grub dir");
                let env = robot.path("boot/grub/grubenv");
                expect_success(&run(Command::new("grub-editenv").arg(&env).arg("create")), "grub-editenv create");
                expect_success(&run(Command::new("grub-editenv").arg(&env).args(["set", "tender_slot=a"])), "grub-editenv set");
            }
        }
    }

    fn read(&self, robot: &Robot) -> BTreeMap<String, String> {
        let output = match self {
            Loader::Uboot => run(Command::new("fw_printenv").arg("-c").arg(robot.path("boot/fw_env.config"))),
            Loader::Grub => run(Command::new("grub-editenv").arg(robot.path("boot/grub/grubenv")).arg("list")),
        };
        let text = expect_success(&output, "read the boot environment");
        text.lines().filter_map(|l| l.split_once('=')).map(|(n, v)| (n.to_owned(), v.to_owned())).collect()
    }

    fn set(&self, robot: &Robot, name: &str, value: &str) {
        let output = match self {
            Loader::Uboot => run(Command::new("fw_setenv").arg("-c").arg(robot.path("boot/fw_env.config")).args([name, value])),
            Loader::Grub => run(Command::new("grub-editenv").arg(robot.path("boot/grub/grubenv")).arg("set").arg(format!("{name}={value}"))),
        };
        expect_success(&output, "write the boot environment");
    }

    /// One boot: counts a trial boot and falls back past the limit, as the
    /// boot loader script does. Returns the slot it starts.
    fn boot(&self, robot: &Robot) -> String {
        let vars = self.read(robot);
        if vars.get("upgrade_available").map(String::as_str) == Some("1") {
            let count: u32 = vars.get("bootcount").and_then(|v| v.parse().ok()).unwrap_or(0) + 1;
            let limit: u32 = vars.get("bootlimit").and_then(|v| v.parse().ok()).unwrap_or(3);
            self.set(robot, "bootcount", &count.to_string());
            if count > limit {
                // altbootcmd: back to the previous slot.
                let previous = vars.get("tender_prev").cloned().unwrap_or_default();
                self.set(robot, "tender_slot", &previous);
                self.set(robot, "upgrade_available", "0");
            }
        }
        self.read(robot)["tender_slot"].clone()
    }
}

fn partition_robot(loader: &Loader) -> Robot {
    let robot = Robot::new(&fixture().keys);
    fs::create_dir_all(robot.path("dev")).expect("dev");
    fs::create_dir_all(robot.path("boot")).expect("boot");
    for slot in ["a", "b"] {
        fs::write(robot.path(&format!("dev/slot-{slot}.img")), vec![0u8; DEVICE_BYTES]).expect("slot device");
    }
    loader.init(&robot);
    let config = robot.path("etc/tender/updater.toml");
    let text = fs::read_to_string(&config).expect("config").replace(
        "[slots]\nbase = \"/opt/ecar\"\n",
        "[slots]\nbase = \"/opt/ecar\"\nkind = \"partition\"\na = \"/dev/slot-a.img\"\nb = \"/dev/slot-b.img\"\nimage = \"rootfs.img\"\n",
    ) + loader.config();
    fs::write(&config, text).expect("config");
    robot
}

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
    assert!(image_bytes(&robot, "b", &images._dir.path().join("tree-1.0.0/rootfs.img")));

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
    let before = loader.read(&robot);
    loader.boot(&robot);
    recover(&robot);
    assert_eq!(loader.read(&robot), before);
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
