//! `cargo xtask demo`: the whole flow on the sample workspace. Releases
//! 1.0.0 and 1.0.1 (a one-line source change) of `recipes/ecar-ws`, installs
//! both on a simulated robot under `target/demo/robot`, then installs a 1.0.2
//! whose steering limit fails the health check, and shows the revert.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

use crate::tooling::ensure_venv;
use crate::workspace::{cargo, root, run_checked, target_dir};

/// Run the release and install flow on the sample workspace.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// `SOURCE_DATE_EPOCH` of the demo releases: the start of the current UTC
/// day, so the TUF metadata the demo publishes is fresh for a day.
fn source_date_epoch() -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    (now - now % 86_400).to_string()
}

/// Stand-in for systemctl on the simulated robot, which has no systemd.
const DEMO_SYSTEMCTL: &str = "#!/bin/sh\necho \"  [robot] systemctl $1 $2\" >&2\nexit 0\n";

fn step(title: &str) {
    eprintln!("\n==> {title}");
}

pub fn run(_args: Args) -> anyhow::Result<()> {
    let demo = target_dir().join("demo");
    if demo.exists() {
        fs::remove_dir_all(&demo).with_context(|| format!("cannot remove the previous demo in {}", demo.display()))?;
    }
    let venv = ensure_venv()?;
    step("building tender and tenderd");
    run_checked(
        Command::new(cargo())
            .args(["build", "--quiet", "--package", "tender-builder", "--package", "tender-updater"])
            .current_dir(root()),
    )?;
    let tender = target_dir().join("debug/tender");
    let tenderd = target_dir().join("debug/tenderd");

    step("generating the fleet's keys");
    let keys = demo.join("keys");
    run_checked(Command::new(&tender).args(["keys", "generate", "--out"]).arg(&keys))?;

    let source = demo.join("src");
    copy_dir(&root().join("recipes"), &source)?;
    let dist = demo.join("dist");
    let release = |version: &str| -> anyhow::Result<()> {
        step(&format!("releasing ecar-4wd4ws {version} with colcon"));
        run_checked(
            Command::new(&tender)
                .arg("release")
                .arg("--recipe")
                .arg(source.join("ecar-4wd4ws.toml"))
                .args(["--version", version, "--out"])
                .arg(&dist)
                .arg("--keys")
                .arg(&keys)
                .arg("--colcon-venv")
                .arg(&venv)
                .env("SOURCE_DATE_EPOCH", source_date_epoch()),
        )
    };
    let servo = source.join("ecar-ws/src/servo_controller/include/servo_controller");
    release("1.0.0")?;
    edit(&servo.join("version.hpp"), "\"1.0.0\"", "\"1.0.1\"")?;
    release("1.0.1")?;
    edit(&servo.join("version.hpp"), "\"1.0.1\"", "\"1.0.2\"")?;
    edit(&servo.join("limits.hpp"), "kMaxSteeringAngleDeg = 35.0", "kMaxSteeringAngleDeg = -35.0")?;
    release("1.0.2")?;

    step("auditing the repository");
    run_checked(Command::new(&tender).arg("audit").arg(dist.join("repo")).arg("--root").arg(keys.join("root.json")))?;

    let robot = demo.join("robot");
    make_robot(&robot, &keys)?;
    let tenderd_on = |args: &[&str]| {
        let mut command = Command::new(&tenderd);
        // Warnings and errors only, so the demo shows tenderd's results.
        command.arg("--root").arg(&robot).args(args).env("RUST_LOG", "warn");
        command
    };
    step("installing 1.0.0 from its bundle (a USB stick)");
    run_checked(&mut tenderd_on(&["install", &dist.join("ecar-4wd4ws-1.0.0.tender").display().to_string()]))?;
    step("installing 1.0.1 from its bundle: the changed file is rebuilt from it, the others are copied from slot a");
    run_checked(&mut tenderd_on(&["install", &dist.join("ecar-4wd4ws-1.0.1.tender").display().to_string()]))?;

    step("installing 1.0.2, whose steering limit fails the health check (5 failures, 2 s apart)");
    let mut install_102 = tenderd_on(&["install", &dist.join("ecar-4wd4ws-1.0.2.tender").display().to_string()]);
    eprintln!("+ {install_102:?}");
    let status = install_102.status().context("cannot run tenderd")?;
    if status.code() != Some(2) {
        bail!("expected tenderd to revert 1.0.2 and exit 2, but it exited with {status}");
    }
    eprintln!("tenderd reverted 1.0.2 and exited 2, as expected");

    step("tenderd history");
    run_checked(&mut tenderd_on(&["history"]))?;
    step("tenderd status");
    run_checked(&mut tenderd_on(&["status"]))?;
    eprintln!("\nThe simulated robot is in {}; try `{} --root {} status`.", robot.display(), tenderd.display(), robot.display());
    Ok(())
}

/// Lays out a simulated robot that trusts the demo keys.
fn make_robot(robot: &Path, keys: &Path) -> anyhow::Result<()> {
    for dir in ["etc/tender", "opt/ecar/config", "usr/bin"] {
        fs::create_dir_all(robot.join(dir))?;
    }
    fs::copy(keys.join("root.json"), robot.join("etc/tender/root.json"))?;
    fs::write(robot.join("opt/ecar/config/robot.yaml"), "wheelbase_m: 2.8\nmax_speed_mps: 3.0\n")?;
    let systemctl = robot.join("usr/bin/demo-systemctl");
    fs::write(&systemctl, DEMO_SYSTEMCTL)?;
    fs::set_permissions(&systemctl, fs::Permissions::from_mode(0o755))?;
    let sample = fs::read_to_string(root().join("recipes/updater.toml")).context("cannot read recipes/updater.toml")?;
    let systemctl = systemctl.display().to_string();
    let config = sample
        .replace(r#"["systemctl", "restart""#, &format!(r#"["{systemctl}", "restart""#))
        .replace(r#"["systemctl", "is-active", "--quiet""#, &format!(r#"["{systemctl}", "is-active""#));
    fs::write(robot.join("etc/tender/updater.toml"), config)?;
    Ok(())
}

fn edit(path: &Path, from: &str, to: &str) -> anyhow::Result<()> {
    let text = fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    if !text.contains(from) {
        bail!("{} does not contain {from:?}; the sample workspace changed, update the demo", path.display());
    }
    fs::write(path, text.replace(from, to)).with_context(|| format!("cannot write {}", path.display()))
}

fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    for entry in fs::read_dir(from).with_context(|| format!("cannot read {}", from.display()))? {
        let entry = entry?;
        let target: PathBuf = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            fs::create_dir_all(&target)?;
            copy_dir(&entry.path(), &target)?;
        } else {
            fs::create_dir_all(to)?;
            fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}
