//! Installs from USB sticks: a directory appearing under a watched mount
//! point, with no repository configured, through `tenderd run` and
//! `tenderd usb --once`.

mod common;

use std::fs;
use std::time::Duration;

use common::ops::{append_config, copy_prefix, wait_until, Daemon};
use common::robot::Robot;
use common::{expect_success, fixture, stdout};

/// Creates a robot running 1.0.0 that watches `/media/*`, has no
/// repository, and uses a bundle once it stayed unchanged for `settle`.
fn usb_robot(settle: &str) -> Robot {
    let fixture = fixture();
    let robot = Robot::new(&fixture.keys);
    append_config(&robot, &format!("[usb]\nmounts = [\"/media/*\"]\nsettle = \"{settle}\"\nscan_interval = \"200ms\"\n\n[daemon]\npoll_interval = \"1h\"\npoll_jitter = \"1s\"\n"));
    fs::create_dir_all(robot.path("media")).expect("media dir");
    expect_success(&robot.install(&fixture.bundle_100), "install 1.0.0");
    robot
}

fn result_text(bundle: &std::path::Path) -> String {
    let mut name = bundle.as_os_str().to_owned();
    name.push(".result.txt");
    fs::read_to_string(&name).unwrap_or_else(|e| panic!("no result file next to {}: {e}", bundle.display()))
}

#[test]
fn daemon_installs_from_inserted_stick() {
    let fixture = fixture();
    let robot = usb_robot("2s");
    let daemon = Daemon::start(&robot);

    // The stick appears, and its newest bundle arrives in two writes 700 ms
    // apart, like a slow copy. The watcher waits until it settled for 2 s.
    let stick = robot.path("media/stick0");
    fs::create_dir(&stick).expect("insert stick");
    fs::copy(&fixture.bundle_100, stick.join("ecar-4wd4ws-1.0.0.tender")).expect("copy 1.0.0");
    let bundle = stick.join("ecar-4wd4ws-1.0.1.tender");
    let full = fs::read(&fixture.bundle_101).expect("read 1.0.1");
    fs::write(&bundle, &full[..full.len() / 2]).expect("first half");
    std::thread::sleep(Duration::from_millis(700));
    {
        use std::io::Write;
        fs::OpenOptions::new().append(true).open(&bundle).expect("open").write_all(&full[full.len() / 2..]).expect("second half");
    }

    wait_until(Duration::from_secs(120), "the USB install of 1.0.1", || {
        let status = robot.status();
        status["version"] == "1.0.1" && status["state"] == "committed"
    });
    wait_until(Duration::from_secs(10), "the final result file", || result_text(&bundle).contains("outcome: committed"));
    let result = result_text(&bundle);
    assert!(result.contains("running version: 1.0.1"), "{result}");
    assert!(result.contains("release: ecar-4wd4ws 1.0.1"), "{result}");
    let older = result_text(&stick.join("ecar-4wd4ws-1.0.0.tender"));
    assert!(older.contains("outcome: skipped"), "{older}");
    let log = daemon.log_text();
    assert!(!log.contains("truncated"), "the daemon read the bundle before its copy settled:\n{log}");
}

#[test]
fn pulled_stick_leaves_robot_unchanged() {
    let fixture = fixture();
    let robot = usb_robot("500ms");
    let before = robot.snapshot();

    // The stick was pulled mid-copy: half a bundle stays on it.
    let stick = robot.path("media/stick0");
    fs::create_dir(&stick).expect("insert stick");
    let partial = stick.join("ecar-4wd4ws-1.0.1.tender");
    let len = fs::metadata(&fixture.bundle_101).expect("bundle size").len() as usize;
    copy_prefix(&fixture.bundle_101, &partial, len / 2);
    let output = robot.tenderd(&["usb", "--once"]);
    assert_eq!(output.status.code(), Some(1), "{}", stdout(&output));
    let result = result_text(&partial);
    assert!(result.contains("outcome: rejected"), "{result}");
    assert!(result.contains("truncated"), "{result}");
    assert_eq!(robot.snapshot(), before, "a truncated bundle changed the robot");

    // The next insertion, with a whole copy, installs.
    fs::remove_dir_all(&stick).expect("pull stick");
    fs::create_dir(&stick).expect("insert stick again");
    let bundle = stick.join("ecar-4wd4ws-1.0.1.tender");
    fs::copy(&fixture.bundle_101, &bundle).expect("copy 1.0.1");
    let output = robot.tenderd(&["usb", "--once"]);
    let printed = expect_success(&output, "tenderd usb --once");
    assert!(printed.contains("committed"), "{printed}");
    assert_eq!(robot.status()["version"], "1.0.1");
    assert!(result_text(&bundle).contains("outcome: committed"));

    // The stick stays inserted: the bundle is not installed again.
    let again = expect_success(&robot.tenderd(&["usb", "--once"]), "second scan");
    assert!(again.contains("no new bundle"), "{again}");
}

#[test]
fn stick_falls_back_after_failed_trial() {
    let fixture = fixture();
    let robot = usb_robot("500ms");
    let stick = robot.path("media/stick0");
    fs::create_dir(&stick).expect("insert stick");
    let good = stick.join("ecar-4wd4ws-1.0.1.tender");
    let bad = stick.join("ecar-4wd4ws-1.0.2.tender");
    fs::copy(&fixture.bundle_101, &good).expect("copy 1.0.1");
    fs::copy(&fixture.bundle_102, &bad).expect("copy 1.0.2");

    let output = robot.tenderd(&["usb", "--once"]);
    let printed = stdout(&output);
    assert_eq!(output.status.code(), Some(2), "a revert exits with 2:\n{printed}");
    // 1.0.2 is the newest, fails its health check and reverts; 1.0.1 is
    // then the newest eligible bundle.
    let bad_result = result_text(&bad);
    assert!(bad_result.contains("outcome: reverted"), "{bad_result}\n{printed}");
    assert!(bad_result.contains("health check failed"), "{bad_result}");
    assert!(result_text(&good).contains("outcome: committed"), "{printed}");
    let status = robot.status();
    assert_eq!(status["version"], "1.0.1", "{status}");
    assert_eq!(status["state"], "committed");
}

#[test]
fn read_only_stick_installs_without_result_file() {
    let fixture = fixture();
    let robot = usb_robot("500ms");
    let stick = robot.path("media/stick0");
    let mount = common::mount::Tmpfs::mount(&stick, "size=16m");
    let bundle = stick.join("ecar-4wd4ws-1.0.1.tender");
    fs::copy(&fixture.bundle_101, &bundle).expect("copy 1.0.1");
    mount.read_only();

    let output = robot.tenderd(&["usb", "--once"]);
    let printed = expect_success(&output, "tenderd usb --once from a read-only stick");
    assert!(printed.contains("committed"), "{printed}");
    assert!(common::stderr(&output).contains("the USB stick is read-only"), "{}", common::stderr(&output));
    let mut result = bundle.as_os_str().to_owned();
    result.push(".result.txt");
    assert!(!std::path::Path::new(&result).exists());
    assert_eq!(robot.status()["version"], "1.0.1");

    // Without a result file the next scan finds the release installed already.
    let again = expect_success(&robot.tenderd(&["usb", "--once"]), "second scan of the read-only stick");
    assert!(again.contains("skipped"), "{again}");
    assert!(again.contains("is not newer than the installed"), "{again}");
}

#[test]
fn usb_without_mounts_is_an_error() {
    let robot = Robot::new(&fixture().keys);
    let output = robot.tenderd(&["usb", "--once"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(common::stderr(&output).contains("usb.mounts is empty"), "{}", common::stderr(&output));
}
