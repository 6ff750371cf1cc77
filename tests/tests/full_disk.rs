//! Full disks, read-only mounts and unwritable boot environments. Each case
//! mounts a small or read-only tmpfs (the tests run as root) over one part
//! of a simulated robot: the inactive slot, the download cache, a slot
//! device or the boot environment.
//!
//! A case that shows before staging is rejected with the robot unchanged.
//! A filesystem that fills up during staging fails with one line, and its
//! partial data is removed. The active slot and the running release stay as
//! they were, and a later install succeeds once there is room.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::partition::{images, partition_robot, Loader};
use common::robot::Robot;
use common::{expect_success, fixture, stderr};
use tender_e2e::fault_server::FaultServer;

/// A tmpfs mounted over a directory, unmounted when dropped.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs with `options` (such as `size=64k`) over `dir`.
    fn mount(dir: &Path, options: &str) -> Self {
        fs::create_dir_all(dir).expect("mount point");
        let output = Command::new("mount").args(["-t", "tmpfs", "-o", options, "tender-test"]).arg(dir).output().expect("run mount");
        assert!(output.status.success(), "mount -t tmpfs -o {options} {}: {}", dir.display(), stderr(&output));
        Self { dir: dir.to_owned() }
    }

    /// Makes the mount read-only.
    fn read_only(&self) {
        let output = Command::new("mount").args(["-o", "remount,ro"]).arg(&self.dir).output().expect("run mount");
        assert!(output.status.success(), "remount {} read-only: {}", self.dir.display(), stderr(&output));
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).output();
    }
}

/// Returns the one error line of a failed `tenderd` run.
fn error_line(output: &Output, case: &str) -> String {
    let message = stderr(output);
    assert!(!output.status.success(), "{case}: tenderd succeeded:\n{message}");
    let errors: Vec<&str> = message.lines().filter(|l| l.starts_with("tenderd: error:")).collect();
    assert_eq!(errors.len(), 1, "{case}: expected one error line, got:\n{message}");
    eprintln!("{case}: {}", errors[0]);
    errors[0].to_owned()
}

fn robot_with_100() -> Robot {
    let fixture = fixture();
    let robot = Robot::new(&fixture.keys);
    expect_success(&robot.install(&fixture.bundle_100), "install 1.0.0");
    robot
}

/// Lists the entries below `dir`, to check that partial data was removed.
fn entries(dir: &Path) -> Vec<String> {
    walkdir::WalkDir::new(dir).min_depth(1).into_iter().filter_map(Result::ok).map(|e| e.path().display().to_string()).collect()
}

#[test]
fn small_slot_rejected_unchanged() {
    let robot = robot_with_100();
    let _slot = Tmpfs::mount(&robot.path("opt/ecar/slot-b"), "size=64k");
    let before = robot.snapshot();
    let line = error_line(&robot.install(&fixture().bundle_101), "small slot");
    assert!(line.contains("slot b at"), "{line}");
    assert!(line.contains("free but staging needs"), "{line}");
    assert_eq!(robot.snapshot(), before, "the refused install changed the robot");
    assert!(entries(&robot.path("opt/ecar/slot-b")).is_empty());
}

#[test]
fn full_slot_emptied_then_install_succeeds() {
    let robot = robot_with_100();
    let slot = robot.path("opt/ecar/slot-b");
    let active_before = robot.snapshot().into_iter().filter(|(key, _)| !key.starts_with("state/")).collect::<Vec<_>>();
    {
        // Room for the bytes but not for the 134 entries of the release.
        let _full = Tmpfs::mount(&slot, "size=16m,nr_inodes=40");
        let line = error_line(&robot.install(&fixture().bundle_101), "slot out of inodes");
        assert!(line.contains("slot b at"), "{line}");
        assert!(line.contains("ran out of space"), "{line}");
        assert!(line.contains("partial data was removed"), "{line}");
        assert_eq!(entries(&slot), Vec::<String>::new(), "partial data left in the slot");
        let status = robot.status();
        assert_eq!((status["version"].as_str(), status["active_slot"].as_str()), (Some("1.0.0"), Some("a")), "{status}");
        let active_after = robot.snapshot().into_iter().filter(|(key, _)| !key.starts_with("state/")).collect::<Vec<_>>();
        assert_eq!(active_after, active_before, "the active slot changed");
    }
    let _roomy = Tmpfs::mount(&slot, "size=16m");
    expect_success(&robot.install(&fixture().bundle_101), "install 1.0.1 once the slot has room");
    assert_eq!(robot.status()["version"], "1.0.1");
}

#[test]
fn read_only_slot_rejected_unchanged() {
    let robot = robot_with_100();
    let slot = Tmpfs::mount(&robot.path("opt/ecar/slot-b"), "size=16m");
    slot.read_only();
    let before = robot.snapshot();
    let line = error_line(&robot.install(&fixture().bundle_101), "read-only slot");
    assert!(line.contains("slot b at"), "{line}");
    assert!(line.contains("Read-only file system"), "{line}");
    assert!(line.contains("remount it read-write"), "{line}");
    assert_eq!(robot.snapshot(), before, "the refused install changed the robot");
}

/// Creates a robot running 1.0.0 that downloads chunks, not delta packs,
/// from an HTTP server on 127.0.0.1.
fn online_robot() -> (Robot, FaultServer) {
    let robot = robot_with_100();
    let config = robot.path("etc/tender/updater.toml");
    let text = fs::read_to_string(&config).expect("config") + "\n[download]\nmax_attempts = 2\ndelta_packs = false\n";
    fs::write(&config, text).expect("config");
    let server = FaultServer::start(&fixture().repo).expect("server");
    (robot, server)
}

#[test]
fn full_cache_emptied_robot_unchanged() {
    let (robot, server) = online_robot();
    let cache = robot.path("var/lib/tender/cache");
    let url = format!("{}/", server.url());
    for (case, options, expected) in [
        // The signed manifest does not fit.
        ("tiny cache", "size=4k", "ran out of space"),
        // The manifest fits, the chunks do not.
        ("cache without inodes", "size=16m,nr_inodes=4", "ran out of space"),
    ] {
        let _cache = Tmpfs::mount(&cache, options);
        let before = robot.snapshot();
        let line = error_line(&robot.tenderd(&["install", &url]), case);
        assert!(line.contains("download cache"), "{case}: {line}");
        assert!(line.contains(expected), "{case}: {line}");
        assert!(line.contains("free space"), "{case}: {line}");
        assert_eq!(robot.snapshot(), before, "{case}: the robot changed");
        assert_eq!(entries(&cache), Vec::<String>::new(), "{case}: partial data left in the cache");
    }
    let output = robot.tenderd(&["install", &url]);
    expect_success(&output, "install 1.0.1 once the cache has room");
    assert_eq!(robot.status()["version"], "1.0.1");
}

/// Reads both slot devices of a partition robot.
fn slot_devices(robot: &Robot) -> Vec<Vec<u8>> {
    ["a", "b"].iter().map(|slot| fs::read(robot.path(&format!("dev/slot-{slot}.img"))).expect("slot device")).collect()
}

#[test]
fn partition_unwritable_or_full_rejected() {
    let images = images();
    let bundle = images.bundles["1.0.0"].display().to_string();
    type Case = (&'static str, &'static str, &'static str, bool, &'static str);
    // Name, mounted directory, tmpfs options, read-only, expected message.
    let cases: [Case; 3] = [
        ("read-only slot device", "dev", "size=16m", true, "cannot open slot b device"),
        ("sparse device on a full filesystem", "dev", "size=64k", false, "is a sparse file"),
        ("read-only boot environment", "boot", "size=1m", true, "boot environment at"),
    ];
    for (case, dir, options, read_only, expected) in cases {
        let loader = Loader::Uboot;
        let robot = partition_robot(&loader);
        let saved = tempfile::tempdir().expect("tempdir");
        // Move the directory's files onto the tmpfs, keeping sparse devices sparse.
        let mounted = robot.path(dir);
        let output = Command::new("cp").arg("-a").arg("--sparse=always").arg(&mounted).arg(saved.path()).output().expect("cp");
        assert!(output.status.success(), "{case}: {}", stderr(&output));
        let tmpfs = Tmpfs::mount(&mounted, options);
        for item in fs::read_dir(saved.path().join(dir)).expect("saved") {
            let item = item.expect("entry");
            let output = Command::new("cp").arg("-a").arg("--sparse=always").arg(item.path()).arg(&mounted).output().expect("cp");
            assert!(output.status.success(), "{case}: {}", stderr(&output));
        }
        if read_only {
            tmpfs.read_only();
        }
        let env_before = loader.read(&robot);
        let devices_before = slot_devices(&robot);
        let line = error_line(&robot.tenderd(&["install", &bundle]), case);
        assert!(line.contains(expected), "{case}: {line}");
        assert_eq!(loader.read(&robot), env_before, "{case}: the boot environment changed");
        assert!(slot_devices(&robot) == devices_before, "{case}: a slot device changed");
        assert!(!robot.path("var/lib/tender/state.json").exists(), "{case}: the state was written");
        drop(tmpfs);
    }
}

#[test]
fn partition_device_fills_up_during_write() {
    let images = images();
    let image_bytes = fs::metadata(images.dir.path().join("tree-1.0.0/rootfs.img")).expect("image").len();
    let loader = Loader::Uboot;
    let robot = partition_robot(&loader);
    let devices = robot.path("dev");
    for slot in ["a", "b"] {
        fs::remove_file(devices.join(format!("slot-{slot}.img"))).expect("remove device");
    }
    // Slot b's last 64 KiB are allocated, so the room check counts them as
    // written, but the image goes to the unallocated start of the device.
    const ALLOCATED: u64 = 64 * 1024;
    let spare = ALLOCATED / 2;
    let size = (ALLOCATED + image_bytes - spare).div_ceil(4096) * 4096;
    let _tmpfs = Tmpfs::mount(&devices, &format!("size={size}"));
    let device_bytes = common::partition::DEVICE_BYTES as u64;
    for slot in ["a", "b"] {
        let file = fs::File::create(devices.join(format!("slot-{slot}.img"))).expect("device");
        file.set_len(device_bytes).expect("sparse device");
    }
    let mut tail = fs::OpenOptions::new().write(true).open(devices.join("slot-b.img")).expect("device");
    std::io::Seek::seek(&mut tail, std::io::SeekFrom::Start(device_bytes - ALLOCATED)).expect("seek");
    std::io::Write::write_all(&mut tail, &vec![0xa5; ALLOCATED as usize]).expect("allocate the tail");
    drop(tail);

    let env_before = loader.read(&robot);
    let line = error_line(&robot.tenderd(&["install", &images.bundles["1.0.0"].display().to_string()]), "device fills up");
    assert!(line.contains("slot b device"), "{line}");
    assert!(line.contains("ran out of space after"), "{line}");
    assert_eq!(loader.read(&robot), env_before, "the boot environment changed");
    let status = robot.status();
    assert_eq!(status["slot_b"], serde_json::Value::Null, "{status}");
    assert_eq!(status["state"], "failed", "{status}");
}
