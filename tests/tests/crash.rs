//! Crash safety, shown by killing `tenderd` with SIGKILL at 200 random
//! points of an upgrade from 1.0.0 to 1.0.1 (download over HTTP, staging,
//! verification, switch, trial and commit), restarting it with `tenderd
//! recover`, and checking the robot after every kill. A second test traces
//! one install with strace and checks the fsync discipline of every rename
//! into the state directory and the slots.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::robot::Robot;
use common::{bin, expect_success, fixture, run};
use sha2::{Digest, Sha256};
use tender_e2e::fault_server::FaultServer;

/// Kills per source: the bundle covers verify, stage, switch and commit;
/// the slow HTTP link adds the download.
const BUNDLE_KILLS: u32 = 120;
const HTTP_KILLS: u32 = 80;
/// Seed of the kill times, printed so a failure can be replayed.
const SEED: u64 = 0x7e4d_e5c4_a5e1;

/// A small linear congruential generator; reproducible kill times are all
/// the harness needs.
struct Random(u64);

impl Random {
    fn next_fraction(&mut self) -> f64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A robot running 1.0.0, copied for each kill.
struct Template {
    robot: Robot,
}

impl Template {
    fn new(extra_config: &str) -> Self {
        let robot = Robot::new(&fixture().keys);
        let config = robot.path("etc/tender/updater.toml");
        let text = fs::read_to_string(&config).expect("config") + extra_config;
        fs::write(&config, text).expect("config");
        expect_success(&robot.install(&fixture().bundle_100), "install 1.0.0");
        Self { robot }
    }

    fn copy_to(&self, dir: &Path) {
        let _ = fs::remove_dir_all(dir);
        let status = Command::new("cp").arg("-a").arg(self.robot.root.path()).arg(dir).status().expect("cp");
        assert!(status.success(), "cannot copy the robot");
    }
}

fn tenderd(root: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(bin("tenderd"));
    command.arg("--root").arg(root).args(args).env("RUST_LOG", "error").stdout(Stdio::null()).stderr(Stdio::null());
    command
}

/// Runs an install and kills it with its whole process group after `delay`.
/// Returns whether it finished before the kill.
fn install_and_kill(root: &Path, source: &str, delay: Duration) -> bool {
    let mut child = tenderd(root, &["install", source]).process_group(0).spawn().expect("spawn tenderd");
    let deadline = Instant::now() + delay;
    while Instant::now() < deadline {
        if child.try_wait().expect("poll").is_some() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let group = format!("-{}", child.id());
    let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
    let _ = child.wait();
    // Wait until no process of the group is left, as after a power cut.
    let quiet = |_: &u32| {
        !Command::new("kill").args(["-0", "--", &group]).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
    };
    let waited = (0..500).find(|attempt| {
        std::thread::sleep(Duration::from_millis(if *attempt == 0 { 0 } else { 10 }));
        quiet(attempt)
    });
    assert!(waited.is_some(), "processes of group {group} survived SIGKILL for 5 s");
    false
}

fn phase_of(root: &Path) -> String {
    fs::read(root.join("var/lib/tender/state.json"))
        .ok()
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .and_then(|state| state["phase"].as_str().map(str::to_owned))
        .unwrap_or_else(|| "none".to_owned())
}

/// Checks every file of a slot against the verified manifest copy kept for it.
fn check_slot(root: &Path, slot_dir: &Path, slot_name: &str) -> Result<(), String> {
    let manifest_path = root.join(format!("var/lib/tender/manifests/{slot_name}.json"));
    let bytes = fs::read(&manifest_path).map_err(|e| format!("{}: {e}", manifest_path.display()))?;
    let manifest: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| format!("corrupt {}: {e}", manifest_path.display()))?;
    for entry in manifest["entries"].as_array().ok_or("manifest without entries")? {
        let path = slot_dir.join(entry["path"].as_str().unwrap_or_default());
        match entry["type"].as_str() {
            Some("file") => {
                let content = fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
                if hex::encode(Sha256::digest(&content)) != entry["sha256"].as_str().unwrap_or_default() {
                    return Err(format!("{} differs from its manifest", path.display()));
                }
            }
            Some("symlink") => {
                let target = fs::read_link(&path).map_err(|e| format!("{}: {e}", path.display()))?;
                if target.to_string_lossy() != entry["target"].as_str().unwrap_or_default() {
                    return Err(format!("{} points elsewhere", path.display()));
                }
            }
            Some("dir") if !path.is_dir() => return Err(format!("{} is missing", path.display())),
            _ => {}
        }
    }
    Ok(())
}

/// After a restart: the state parses, `current` points to the active slot,
/// that slot is committed, not mid-trial, and every file matches its manifest.
fn check_robot(root: &Path) -> Result<String, String> {
    let output = run(Command::new(bin("tenderd")).arg("--root").arg(root).args(["status", "--json"]).env("RUST_LOG", "error"));
    if !output.status.success() {
        return Err(format!("status failed: {}", String::from_utf8_lossy(&output.stderr)));
    }
    let status: serde_json::Value = serde_json::from_slice(&output.stdout).map_err(|e| format!("status is not JSON: {e}"))?;
    let state: serde_json::Value = serde_json::from_slice(&fs::read(root.join("var/lib/tender/state.json")).map_err(|e| e.to_string())?)
        .map_err(|e| format!("state.json is corrupt: {e}"))?;
    let phase = state["phase"].as_str().unwrap_or_default().to_owned();
    if !["committed", "reverted", "failed", "staged", "idle"].contains(&phase.as_str()) {
        return Err(format!("phase {phase} after recover"));
    }
    let link = fs::read_link(root.join("opt/ecar/current")).map_err(|e| format!("current link: {e}"))?;
    let slot_name = link.to_string_lossy().into_owned();
    let active = state["active"].as_str().unwrap_or_default();
    if format!("slot-{active}") != slot_name {
        return Err(format!("current points to {slot_name} but the state says the active slot is {active}"));
    }
    if state["committed"] != state["active"] {
        return Err(format!("active slot {active} is not the committed one ({})", state["committed"]));
    }
    check_slot(root, &root.join("opt/ecar").join(&slot_name), &slot_name)?;
    Ok(format!("{} {}", status["version"].as_str().unwrap_or("?"), phase))
}

fn harness(name: &str, template: &Template, source: &str, kills: u32, random: &mut Random, report: &mut BTreeMap<String, u32>) {
    let work = tempfile::tempdir().expect("work dir");
    let calibration = work.path().join("calibrate");
    template.copy_to(&calibration);
    let started = Instant::now();
    let finished = install_and_kill(&calibration, source, Duration::from_secs(120));
    assert!(finished, "{name}: the calibration install did not finish");
    let full = started.elapsed();
    assert!(check_robot(&calibration).expect("calibrated robot").starts_with("1.0.1 committed"));

    // Installs go on until `kills` of them were killed before they finished,
    // so a loaded machine that finishes some early still reaches the count.
    let mut killed = 0;
    let mut kill = 0;
    while killed < kills {
        assert!(kill < kills * 3, "{name}: only {killed} of {kill} installs were killed before they finished");
        let root = work.path().join(format!("kill-{kill}"));
        template.copy_to(&root);
        // Kill times cover the first 70 % of a measured install, where the
        // download, staging, switch and trial are.
        let delay = full.mul_f64(0.7 * random.next_fraction());
        if install_and_kill(&root, source, delay) {
            *report.entry(format!("{name}: finished before the kill")).or_default() += 1;
        } else {
            killed += 1;
            *report.entry(format!("{name}: killed in {}", phase_of(&root))).or_default() += 1;
        }
        let recovered = run(tenderd(&root, &["recover"]).stdout(Stdio::piped()).stderr(Stdio::piped()));
        assert!(recovered.status.success(), "{name} kill {kill} after {delay:?}: recover failed: {}", common::stderr(&recovered));
        if let Err(problem) = check_robot(&root) {
            panic!("{name} kill {kill} after {delay:?} (seed {SEED:#x}): {problem}");
        }
        // A later install still succeeds, or finds 1.0.1 installed already.
        if kill % 8 == 0 {
            let again = run(tenderd(&root, &["install", source]).stdout(Stdio::piped()).stderr(Stdio::piped()));
            let text = common::stderr(&again);
            assert!(again.status.success() || text.contains("already installed"), "{name} kill {kill}: reinstall failed: {text}");
            let state = check_robot(&root).unwrap_or_else(|problem| panic!("{name} kill {kill} after reinstall: {problem}"));
            assert!(state.starts_with("1.0.1 committed"), "{name} kill {kill}: {state}");
        }
        let _ = fs::remove_dir_all(&root);
        kill += 1;
    }
}

#[test]
fn two_hundred_kills_leave_a_verified_committed_slot() {
    let fixture = fixture();
    let mut random = Random(SEED);
    let mut report = BTreeMap::new();

    let bundle = Template::new("");
    harness("bundle", &bundle, &fixture.bundle_101.display().to_string(), BUNDLE_KILLS, &mut random, &mut report);

    // A capped link without delta packs, so the kills land in the download.
    let server = FaultServer::start(&fixture.repo).expect("server");
    let http = Template::new("\n[download]\nbandwidth_limit = 100000\ndelta_packs = false\n");
    harness("http", &http, &format!("{}/", server.url()), HTTP_KILLS, &mut random, &mut report);

    let total: u32 = report.values().sum();
    eprintln!("crash harness: {total} installs, seed {SEED:#x}");
    for (outcome, count) in &report {
        eprintln!("  {count:4}  {outcome}");
    }
    let killed: u32 = report.iter().filter(|(k, _)| k.contains("killed in")).map(|(_, v)| v).sum();
    assert!(killed >= BUNDLE_KILLS + HTTP_KILLS, "only {killed} SIGKILLs landed inside an install");
}

/// One strace record: the line number and the parsed call.
#[derive(Debug)]
enum Call {
    /// fsync or fdatasync of the file at this path.
    Sync(String),
    /// syncfs through a descriptor of this directory, which flushes every
    /// file of its filesystem.
    SyncFs(String),
    /// openat that creates or truncates the file at this path.
    Create(String),
    Rename { from: String, to: String },
}

fn parse_strace(text: &str, cwd: &Path) -> Vec<Call> {
    let absolute = |path: &str| if path.starts_with('/') { path.to_owned() } else { cwd.join(path).display().to_string() };
    let mut calls = Vec::new();
    for line in text.lines() {
        let line = line.split_once(' ').map_or(line, |(_, rest)| rest).trim_start();
        let descriptor_path = || line.split_once('<').and_then(|(_, rest)| rest.split_once('>')).map(|(path, _)| path.to_owned());
        if line.starts_with("fsync(") || line.starts_with("fdatasync(") {
            calls.extend(descriptor_path().map(Call::Sync));
        } else if line.starts_with("syncfs(") {
            calls.extend(descriptor_path().map(Call::SyncFs));
        } else if let Some(args) = line.strip_prefix("openat(") {
            let quoted: Vec<&str> = args.split('"').collect();
            if quoted.len() >= 3 && (quoted[2].contains("O_CREAT") || quoted[2].contains("O_TRUNC")) {
                calls.push(Call::Create(absolute(quoted[1])));
            }
        } else if let Some(args) = line.strip_prefix("rename(") {
            let quoted: Vec<&str> = args.split('"').collect();
            if quoted.len() >= 4 && line.ends_with("= 0") {
                calls.push(Call::Rename { from: absolute(quoted[1]), to: absolute(quoted[3]) });
            }
        }
    }
    calls
}

#[test]
fn renames_are_synced_before_and_after() {
    let fixture = fixture();
    let robot = Robot::new(&fixture.keys);
    expect_success(&robot.install(&fixture.bundle_100), "install 1.0.0");
    let trace = robot.path("strace.log");
    let output = run(Command::new("strace")
        .args(["-f", "-y", "-qq", "-e", "trace=fsync,fdatasync,syncfs,openat,rename,renameat,renameat2", "-o"])
        .arg(&trace)
        .arg(bin("tenderd"))
        .arg("--root")
        .arg(robot.root.path())
        .arg("install")
        .arg(&fixture.bundle_101)
        .env("RUST_LOG", "error"));
    expect_success(&output, "install 1.0.1 under strace");

    let cwd = std::env::current_dir().expect("cwd");
    let root: PathBuf = robot.root.path().canonicalize().expect("root");
    let state_dir = root.join("var/lib/tender").display().to_string();
    let slots_dir = root.join("opt/ecar").display().to_string();
    let calls = parse_strace(&fs::read_to_string(&trace).expect("trace"), &cwd);
    let mut checked = 0;
    for (index, call) in calls.iter().enumerate() {
        let Call::Rename { from, to } = call else { continue };
        let in_scope = (to.starts_with(&state_dir) && !to.starts_with(&format!("{state_dir}/cache/"))) || to.starts_with(&slots_dir);
        if !in_scope {
            continue;
        }
        checked += 1;
        // The `current` link has no data: symlink(2) writes its target into
        // the directory, which the directory sync flushes.
        let is_link = fs::symlink_metadata(to).is_ok_and(|m| m.file_type().is_symlink());
        // The data counts as synced when, since the file was created, it
        // was synced itself or its filesystem was synced through a
        // directory that contains it.
        let since_created = calls[..index].iter().rev().take_while(|c| !matches!(c, Call::Create(p) if p == from));
        let data_synced = since_created
            .take_while(|c| !matches!(c, Call::Rename { from: f, .. } if f == from))
            .any(|c| match c {
                Call::Sync(p) => p == from,
                Call::SyncFs(dir) => Path::new(from).starts_with(dir),
                _ => false,
            });
        assert!(is_link || data_synced, "rename {from} -> {to} without an fsync of the data first");
        let parent = Path::new(to).parent().expect("parent").display().to_string();
        let dir_synced = calls[index + 1..].iter().any(|c| matches!(c, Call::Sync(p) if *p == parent));
        assert!(dir_synced, "rename {from} -> {to} without an fsync of {parent} after it");
    }
    eprintln!("fsync discipline: {checked} renames into the state directory and the slots checked");
    assert!(checked >= 10, "only {checked} renames were traced");
}

/// Kills of image installs into partition slots.
const PARTITION_KILLS: u32 = 60;

/// After a restart of a partition robot: the environment reads with
/// `fw_printenv`, and either the boot loader selects the committed slot and
/// that device contains its verified image, or the new slot is on trial with a
/// boot limit.
fn check_partition_robot(robot: &Robot, loader: &common::partition::Loader, images: &common::partition::Images) -> Result<String, String> {
    let vars = loader.read(robot);
    let state: serde_json::Value = serde_json::from_slice(&fs::read(robot.path("var/lib/tender/state.json")).map_err(|e| e.to_string())?)
        .map_err(|e| format!("state.json is corrupt: {e}"))?;
    let phase = state["phase"].as_str().unwrap_or_default().to_owned();
    let selected = vars.get("tender_slot").cloned().unwrap_or_default();
    if vars.get("upgrade_available").map(String::as_str) == Some("1") {
        if phase != "trial" || state["active"] != selected.as_str() || !vars.contains_key("bootlimit") {
            return Err(format!("boot counting armed for slot {selected} but the state is {phase} on {}", state["active"]));
        }
        return Ok("trial".to_owned());
    }
    if state["committed"] != selected.as_str() {
        return Err(format!("the boot loader selects slot {selected} but the committed slot is {}", state["committed"]));
    }
    let version = state[format!("slot_{selected}")]["version"].as_str().unwrap_or_default().to_owned();
    let image = images.dir.path().join(format!("tree-{version}/rootfs.img"));
    let expected = fs::read(&image).map_err(|e| format!("{}: {e}", image.display()))?;
    let device = fs::read(robot.path(&format!("dev/slot-{selected}.img"))).map_err(|e| e.to_string())?;
    if device[..expected.len()] != expected[..] {
        return Err(format!("slot {selected} does not hold the image of {version}"));
    }
    Ok(format!("{version} {phase}"))
}

#[test]
fn partition_kills_leave_a_bootable_robot() {
    use common::partition::{images, partition_robot, Loader};
    let images = images();
    let loader = Loader::Uboot;
    let bundle = |version: &str| images.bundles[version].display().to_string();

    // A robot that committed 1.0.0 in slot b, copied for each kill.
    let template = partition_robot(&loader);
    expect_success(&template.tenderd(&["install", &bundle("1.0.0")]), "install 1.0.0");
    loader.boot(&template);
    expect_success(&template.tenderd(&["recover"]), "commit 1.0.0");
    let calibration = tempfile::tempdir().expect("calibration");
    let calibration_root = calibration.path().join("robot");
    let copy = |to: &Path| {
        let _ = fs::remove_dir_all(to);
        let status = Command::new("cp").arg("-a").arg(template.root.path()).arg(to).status().expect("cp");
        assert!(status.success(), "cannot copy the robot");
    };
    copy(&calibration_root);
    let started = Instant::now();
    assert!(install_and_kill(&calibration_root, &bundle("1.0.2"), Duration::from_secs(60)), "calibration install did not finish");
    let full = started.elapsed();

    let mut random = Random(SEED ^ 0x9a27);
    let mut report: BTreeMap<String, u32> = BTreeMap::new();
    for kill in 0..PARTITION_KILLS {
        // A fresh robot directory with the template's files; the boot
        // loader tool's configuration names devices by absolute path.
        let robot = Robot::new(&fixture().keys);
        let root = robot.root.path().to_owned();
        let status = Command::new("cp").arg("-a").arg(format!("{}/.", template.root.path().display())).arg(&root).status().expect("cp");
        assert!(status.success(), "cannot copy the robot");
        let text = fs::read_to_string(root.join("boot/fw_env.config"))
            .expect("fw_env.config")
            .replace(&template.root.path().display().to_string(), &root.display().to_string());
        fs::write(root.join("boot/fw_env.config"), text).expect("fw_env.config");
        // The calibration run finished with warm caches, so the kill times
        // cover the first 60 % of it to land inside the install.
        let delay = full.mul_f64(0.6 * random.next_fraction());
        let outcome = if install_and_kill(&root, &bundle("1.0.2"), delay) { "finished before the kill".to_owned() } else { format!("killed in {}", phase_of(&root)) };
        *report.entry(outcome).or_default() += 1;
        let recovered = run(tenderd(&root, &["recover"]).stdout(Stdio::piped()).stderr(Stdio::piped()));
        assert!(recovered.status.success(), "partition kill {kill} after {delay:?}: recover failed: {}", common::stderr(&recovered));
        let state = check_partition_robot(&robot, &loader, &images).unwrap_or_else(|problem| panic!("partition kill {kill} after {delay:?}: {problem}"));
        // A later install succeeds: boot the trial, or install again.
        if state != "trial" && !state.starts_with("1.0.2") {
            let again = run(tenderd(&root, &["install", &bundle("1.0.2")]).stdout(Stdio::piped()).stderr(Stdio::piped()));
            assert!(again.status.success(), "partition kill {kill}: reinstall failed: {}", common::stderr(&again));
        }
        loader.boot(&robot);
        expect_success(&robot.tenderd(&["recover"]), "recover after the boot");
        let state = check_partition_robot(&robot, &loader, &images).unwrap_or_else(|problem| panic!("partition kill {kill} after the boot: {problem}"));
        assert_eq!(state, "1.0.2 committed", "partition kill {kill}");
    }
    eprintln!("partition crash harness: {PARTITION_KILLS} installs, seed {:#x}", SEED ^ 0x9a27);
    for (outcome, count) in &report {
        eprintln!("  {count:4}  {outcome}");
    }
}
