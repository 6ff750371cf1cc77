//! Boot environments written by Tender and read by the boot loaders' own
//! Debian tools (`fw_printenv`/`fw_setenv` from libubootenv-tool,
//! `grub-editenv` from grub-common), and the other way round.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use tender_updater::boot::{BootControl, BootEnv, GrubEnv, UbootCopy, UbootEnv};
use tender_updater::state::Slot;

const ENV_SIZE: u64 = 0x4000;

fn run(command: &mut Command) -> String {
    let output = command.output().unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(output.status.success(), "{command:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Parses `name=value` lines as the tools print them.
fn parse(text: &str) -> BTreeMap<String, String> {
    text.lines().filter_map(|l| l.split_once('=')).map(|(n, v)| (n.to_owned(), v.to_owned())).collect()
}

/// Empty devices and an fw_env.config for them; the board's defaults are
/// written by fw_setenv, as a board image would ship them.
fn uboot(dir: &Path, copies: usize) -> (UbootEnv, PathBuf) {
    let mut config = String::new();
    let mut list = Vec::new();
    for index in 0..copies {
        let device = dir.join(format!("env{index}.bin"));
        std::fs::write(&device, vec![0u8; ENV_SIZE as usize]).expect("device");
        config.push_str(&format!("{} 0x0 {ENV_SIZE:#x}\n", device.display()));
        list.push(UbootCopy { device, offset: 0, size: ENV_SIZE });
    }
    let config_path = dir.join("fw_env.config");
    std::fs::write(&config_path, config).expect("config");
    let defaults = dir.join("defaults.txt");
    std::fs::write(&defaults, "bootcmd=run tender_boot\nbootlimit=3\ntender_slot=a\n").expect("defaults");
    run(Command::new("fw_setenv").arg("-c").arg(&config_path).arg("-f").arg(&defaults).args(["board", "ecar"]));
    (UbootEnv::new(list).expect("env"), config_path)
}

fn printenv(config: &Path) -> BTreeMap<String, String> {
    parse(&run(Command::new("fw_printenv").arg("-c").arg(config)))
}

#[test]
fn uboot_trial_is_read_by_fw_printenv() {
    for copies in [1, 2] {
        let dir = tempfile::tempdir().expect("tempdir");
        let (env, config) = uboot(dir.path(), copies);
        let control = BootControl { env: BootEnv::Uboot(env), boot_limit: 3 };
        control.start_trial(Slot::B, Slot::A).expect("start trial");
        let vars = printenv(&config);
        assert_eq!(vars["tender_slot"], "b", "{copies} copies");
        assert_eq!(vars["tender_prev"], "a");
        assert_eq!(vars["upgrade_available"], "1");
        assert_eq!(vars["bootcount"], "0");
        assert_eq!(vars["board"], "ecar", "a variable of the board was lost");

        // U-Boot counts a boot; Tender then reads it and marks the slot good.
        run(Command::new("fw_setenv").arg("-c").arg(&config).args(["bootcount", "1"]));
        let selection = control.selection().expect("selection");
        assert_eq!((selection.trial, selection.boot_count), (Some(Slot::B), 1));
        control.mark_good(Slot::B).expect("mark good");
        let vars = printenv(&config);
        assert_eq!(vars["upgrade_available"], "0");
        assert!(!vars.contains_key("tender_prev"));
    }
}

#[test]
fn uboot_damaged_copy_is_repaired_from_the_good_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (env, config) = uboot(dir.path(), 2);
    let control = BootControl { env: BootEnv::Uboot(env), boot_limit: 3 };
    control.start_trial(Slot::B, Slot::A).expect("trial");
    // Damage whichever copy fw_printenv now reads: flip a byte of each copy
    // in turn and keep the damage on the one that contains the trial.
    let damaged = (0..2)
        .map(|index| dir.path().join(format!("env{index}.bin")))
        .find(|path| std::fs::read(path).expect("read").windows(13).any(|w| w == b"tender_slot=b"))
        .expect("a copy holds the trial");
    let mut bytes = std::fs::read(&damaged).expect("read");
    bytes[8] ^= 0xff;
    std::fs::write(&damaged, bytes).expect("damage");
    // The older copy is current now; a mark_bad writes over the damaged one.
    control.mark_bad(Slot::B, Slot::A).expect("mark bad");
    let vars = printenv(&config);
    assert_eq!(vars["tender_slot"], "a");
    assert_eq!(vars["tender_bad"], "b");
    assert!(printenv(&config).contains_key("board"));
}

#[test]
fn uboot_without_valid_copy_is_left_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let device = dir.path().join("env.bin");
    std::fs::write(&device, vec![0u8; ENV_SIZE as usize]).expect("device");
    let env = UbootEnv::new(vec![UbootCopy { device: device.clone(), offset: 0, size: ENV_SIZE }]).expect("env");
    let control = BootControl { env: BootEnv::Uboot(env), boot_limit: 3 };
    let error = control.start_trial(Slot::B, Slot::A).expect_err("no valid copy").to_string();
    assert!(error.contains("no valid copy"), "{error}");
    assert!(std::fs::read(&device).expect("read").iter().all(|&b| b == 0), "tenderd wrote a made-up environment");
}

#[test]
fn grub_trial_is_read_by_grub_editenv() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("grubenv");
    run(Command::new("grub-editenv").arg(&path).arg("create"));
    run(Command::new("grub-editenv").arg(&path).args(["set", "saved_entry=ecar"]));
    let control = BootControl { env: BootEnv::Grub(GrubEnv::new(path.clone())), boot_limit: 2 };
    control.start_trial(Slot::B, Slot::A).expect("trial");
    let vars = parse(&run(Command::new("grub-editenv").arg(&path).arg("list")));
    assert_eq!(vars["tender_slot"], "b");
    assert_eq!(vars["bootlimit"], "2");
    assert_eq!(vars["saved_entry"], "ecar");

    run(Command::new("grub-editenv").arg(&path).args(["set", "bootcount=2"]));
    assert_eq!(control.selection().expect("selection").boot_count, 2);
    control.mark_bad(Slot::B, Slot::A).expect("mark bad");
    let vars = parse(&run(Command::new("grub-editenv").arg(&path).arg("list")));
    assert_eq!(vars["tender_slot"], "a");
    assert_eq!(vars["tender_bad"], "b");
    assert_eq!(std::fs::metadata(&path).expect("meta").len(), 1024);
}
