//! Partition-slot robots for the end-to-end tests: image releases made with
//! `tender fs-image` and `tender release --tree`, image-file slot devices,
//! and a simulated boot loader that reads and writes its environment with
//! Debian's own tools.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::robot::Robot;
use super::{bin, expect_success, fixture, run, workspace_root};

pub const DEVICE_BYTES: usize = 4 << 20;
pub const ENV_BYTES: u64 = 0x4000;

/// Returns a recipe for an image tree, with `pre_switch` as the lines of
/// its `[pre_switch]` section.
pub fn image_recipe(health: &str, pre_switch: &str) -> String {
    format!(
        "name = \"ecar-4wd4ws\"\ncompatible = \"ecar-4wd4ws\"\nprefix = \"/opt/ecar\"\nruntime_path = \"/opt/ecar/current\"\n\
         [colcon]\nworkspace = \"unused\"\n[health]\ncommand = [\"{health}\"]\ntimeout = \"10s\"\ninterval = \"100ms\"\nfailures_to_revert = 1\n\
         [pre_switch]\n{pre_switch}"
    )
}

/// Image releases as bundles, and the directory that contains their trees.
pub struct Images {
    pub dir: tempfile::TempDir,
    pub bundles: BTreeMap<&'static str, PathBuf>,
}

/// One image release: the fixture release packed into the image, the
/// health command and the lines of the recipe's `[pre_switch]` section.
pub struct ImageSpec {
    pub version: &'static str,
    pub source_version: &'static str,
    pub health: &'static str,
    pub pre_switch: &'static str,
}

/// Builds image releases 1.0.0 (healthy), 1.0.1 (fails its health check)
/// and 1.0.2 (healthy), without pre-switch checks.
pub fn images() -> Images {
    image_releases(&[
        ImageSpec { version: "1.0.0", source_version: "1.0.0", health: "true", pre_switch: "" },
        ImageSpec { version: "1.0.1", source_version: "1.0.1", health: "false", pre_switch: "" },
        ImageSpec { version: "1.0.2", source_version: "1.0.1", health: "true", pre_switch: "" },
    ])
}

/// Packs each spec's fixture release into an erofs image with `tender
/// fs-image` and releases the image tree, which also contains a `VERSION` file.
pub fn image_releases(specs: &[ImageSpec]) -> Images {
    let dir = tempfile::tempdir().expect("tempdir");
    fs::create_dir(dir.path().join("unused")).expect("workspace");
    let mut bundles = BTreeMap::new();
    for spec in specs {
        let version = spec.version;
        let tree = dir.path().join(format!("tree-{version}"));
        fs::create_dir(&tree).expect("tree");
        write_erofs_image(spec.source_version, None, &tree.join("rootfs.img"));
        // Each version's image differs, as a new release would.
        fs::write(tree.join("VERSION"), version).expect("version file");
        let recipe = dir.path().join(format!("image-{version}.toml"));
        fs::write(&recipe, image_recipe(spec.health, spec.pre_switch)).expect("recipe");
        let out = dir.path().join("out");
        release_tree(&recipe, version, &tree, &out);
        bundles.insert(version, out.join(format!("ecar-4wd4ws-{version}.tender")));
    }
    Images { dir, bundles }
}

/// Writes an erofs image of the fixture release `source_version` to `out`,
/// over the root filesystem tarball `base` when one is given.
pub fn write_erofs_image(source_version: &str, base: Option<&Path>, out: &Path) {
    let mut command = Command::new(bin("tender"));
    command
        .arg("fs-image")
        .arg("--recipe")
        .arg(workspace_root().join("recipes/ecar-4wd4ws.toml"))
        .arg("--release")
        .arg(fixture().repo.parent().expect("out"))
        .args(["--version", source_version, "--type", "erofs", "--out"])
        .arg(out);
    if let Some(base) = base {
        command.arg("--base").arg(base);
    }
    expect_success(&run(&mut command), "tender fs-image");
}

/// Releases `tree` as `version` into `out`, signed with the fixture keys.
pub fn release_tree(recipe: &Path, version: &str, tree: &Path, out: &Path) {
    let fixture = fixture();
    let release = run(Command::new(bin("tender"))
        .arg("release")
        .arg("--recipe")
        .arg(recipe)
        .args(["--version", version, "--out"])
        .arg(out)
        .arg("--keys")
        .arg(&fixture.keys)
        .arg("--tree")
        .arg(tree)
        .env("SOURCE_DATE_EPOCH", &fixture.epoch));
    expect_success(&release, "release an image");
}

/// The boot loader of the simulated robot, with its Debian tool.
pub enum Loader {
    Uboot,
    Grub,
}

impl Loader {
    pub fn config(&self) -> &'static str {
        match self {
            Loader::Uboot => "[boot]\nbackend = \"uboot\"\nuboot = [{ device = \"/boot/env0.bin\", size = 0x4000 }, { device = \"/boot/env1.bin\", size = 0x4000 }]\nboot_limit = 3\nreboot_command = [\"true\"]\n",
            Loader::Grub => "[boot]\nbackend = \"grub\"\ngrub_env = \"/boot/grub/grubenv\"\nboot_limit = 3\nreboot_command = [\"true\"]\n",
        }
    }

    /// Writes the board's first environment with the boot loader's tool.
    pub fn init(&self, robot: &Robot) {
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

    pub fn read(&self, robot: &Robot) -> BTreeMap<String, String> {
        let output = match self {
            Loader::Uboot => run(Command::new("fw_printenv").arg("-c").arg(robot.path("boot/fw_env.config"))),
            Loader::Grub => run(Command::new("grub-editenv").arg(robot.path("boot/grub/grubenv")).arg("list")),
        };
        let text = expect_success(&output, "read the boot environment");
        text.lines().filter_map(|l| l.split_once('=')).map(|(n, v)| (n.to_owned(), v.to_owned())).collect()
    }

    pub fn set(&self, robot: &Robot, name: &str, value: &str) {
        let output = match self {
            Loader::Uboot => run(Command::new("fw_setenv").arg("-c").arg(robot.path("boot/fw_env.config")).args([name, value])),
            Loader::Grub => run(Command::new("grub-editenv").arg(robot.path("boot/grub/grubenv")).arg("set").arg(format!("{name}={value}"))),
        };
        expect_success(&output, "write the boot environment");
    }

    /// Simulates one boot: counts a trial boot and falls back past the limit, as the
    /// boot loader script does. Returns the slot it starts.
    pub fn boot(&self, robot: &Robot) -> String {
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

pub fn partition_robot(loader: &Loader) -> Robot {
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

