//! The TUF client of `tenderd tuf-client` against real repositories that
//! python-tuf built, served by real HTTP servers on 127.0.0.1. Each attack
//! must fail with exit code 1 and one error line, and must leave the trusted
//! metadata as the specification requires. python-tuf's own client runs on
//! the same repositories as a control.

mod common;

use std::fs;
use std::time::{Duration, Instant};

use common::tuf_repo::{
    dir_contents, download, expect_one_error_line, init_client, python_tuf, refresh, stored_version, tuf_client, Scenario,
    Server,
};
use common::{expect_success, stdout};

const MANIFEST: &str = "ecar/manifest-1.0.0.json";
const MANIFEST_DATA: &[u8] = b"{\"release\": \"ecar-4wd4ws\", \"version\": \"1.0.0\"}\n";

fn download_and_check(scenario_name: &str) {
    let scenario = Scenario::build(scenario_name);
    let server = Server::static_files(&scenario.repo());
    let metadata_dir = init_client(&scenario, "trusted");
    let target_dir = scenario.work_dir("targets");

    let first = download(&metadata_dir, &server, 1, MANIFEST, &target_dir);
    let out = expect_success(&first, "first download");
    assert!(out.contains("downloaded ecar/manifest-1.0.0.json from role targets"), "{out}");
    let stored = target_dir.join("ecar%2Fmanifest-1.0.0.json");
    assert_eq!(fs::read(&stored).expect("stored target"), MANIFEST_DATA);
    for file in ["root.json", "timestamp.json", "snapshot.json", "targets.json", "time-floor"] {
        assert!(metadata_dir.join(file).is_file(), "{file} was not stored");
    }

    let again = download(&metadata_dir, &server, 1, MANIFEST, &target_dir);
    let out = expect_success(&again, "second download");
    assert!(out.contains("already up to date"), "{out}");

    // State 2 serves target bytes that differ from the signed hash.
    fs::remove_file(&stored).expect("remove stored target");
    let tampered = download(&metadata_dir, &server, 2, MANIFEST, &target_dir);
    let line = expect_one_error_line(&tampered, "download of a tampered target");
    assert!(line.contains("its sha256 is"), "{line}");
    let left: Vec<_> = fs::read_dir(&target_dir).expect("target dir").collect();
    assert!(left.is_empty(), "a rejected target left files behind: {left:?}");

    let python_dir = scenario.work_dir("python-tuf");
    expect_success(&python_tuf(&scenario, &python_dir, &server, 1, MANIFEST), "python-tuf control");
    assert!(!python_tuf(&scenario, &python_dir, &server, 2, MANIFEST).status.success(), "python-tuf accepted the tampered target");
}

#[test]
fn plain_repository_downloads_target() {
    download_and_check("basic");
}

#[test]
fn consistent_repository_downloads_target() {
    download_and_check("consistent");
}

#[test]
fn delegated_targets_follow_paths_and_terminating() {
    let scenario = Scenario::build("delegated");
    let server = Server::static_files(&scenario.repo());
    let metadata_dir = init_client(&scenario, "trusted");
    let target_dir = scenario.work_dir("targets");

    let out = expect_success(&download(&metadata_dir, &server, 1, "releases/ecar-1.0.0.json", &target_dir), "delegated target");
    assert!(out.contains("from role releases"), "{out}");
    assert_eq!(fs::read(target_dir.join("releases%2Fecar-1.0.0.json")).expect("stored"), MANIFEST_DATA);

    let out = expect_success(&download(&metadata_dir, &server, 1, "beta/nightly-7.json", &target_dir), "nested target");
    assert!(out.contains("from role beta-nightly"), "{out}");

    // "releases" is terminating, so "shadow" after it is never searched.
    let shadowed = download(&metadata_dir, &server, 1, "releases/shadowed.json", &target_dir);
    let line = expect_one_error_line(&shadowed, "target behind a terminating delegation");
    assert!(line.contains("is not listed by any targets role trusted for it"), "{line}");
    assert!(!metadata_dir.join("shadow.json").exists(), "the role after a terminating delegation was fetched");

    // "releases" lists other/ecar-9.json, but its pattern releases/* does not cover it.
    let outside = download(&metadata_dir, &server, 1, "other/ecar-9.json", &target_dir);
    let line = expect_one_error_line(&outside, "target outside the role's paths");
    assert!(line.contains("is not listed by any targets role trusted for it"), "{line}");

    for role in ["releases.json", "beta.json", "beta-nightly.json"] {
        assert!(metadata_dir.join(role).is_file(), "{role} was not stored");
    }

    let python_dir = scenario.work_dir("python-tuf");
    for target in ["releases/ecar-1.0.0.json", "beta/nightly-7.json"] {
        expect_success(&python_tuf(&scenario, &python_dir, &server, 1, target), "python-tuf control");
    }
    for target in ["releases/shadowed.json", "other/ecar-9.json"] {
        assert!(!python_tuf(&scenario, &python_dir, &server, 1, target).status.success(), "python-tuf found {target}");
    }
}

/// What one attack scenario must do to a client that trusts its state 1.
struct Attack {
    scenario: &'static str,
    /// Text the error line must contain.
    error: &'static str,
    /// Trusted files that may change, because the specification persists
    /// every file that verified before the rejected one.
    may_change: &'static [&'static str],
}

/// Refreshes state 1, then checks that state 2 fails as `attack` expects. Returns the
/// trusted metadata directory for further checks.
fn assert_attack_rejected(attack: &Attack) -> (Scenario, std::path::PathBuf) {
    let scenario = Scenario::build(attack.scenario);
    let server = Server::static_files(&scenario.repo());
    let metadata_dir = init_client(&scenario, "trusted");
    expect_success(&refresh(&metadata_dir, &server, 1), &format!("{}: refresh of state 1", attack.scenario));
    let before = dir_contents(&metadata_dir);

    let output = refresh(&metadata_dir, &server, 2);
    let line = expect_one_error_line(&output, attack.scenario);
    assert!(line.contains(attack.error), "{}: expected {:?} in {line}", attack.scenario, attack.error);

    let mut after = dir_contents(&metadata_dir);
    let mut expected = before;
    for file in attack.may_change {
        after.remove(*file);
        expected.remove(*file);
    }
    assert_eq!(
        expected.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>(),
        "{}: trusted files appeared or vanished",
        attack.scenario
    );
    for (file, bytes) in &expected {
        assert!(after.get(file) == Some(bytes), "{}: trusted {file} changed", attack.scenario);
    }

    let python_dir = scenario.work_dir("python-tuf");
    expect_success(&python_tuf(&scenario, &python_dir, &server, 1, MANIFEST), "python-tuf control on state 1");
    let control = python_tuf(&scenario, &python_dir, &server, 2, MANIFEST);
    assert!(!control.status.success(), "{}: python-tuf accepted state 2: {}", attack.scenario, stdout(&control));
    (scenario, metadata_dir)
}

#[test]
fn timestamp_rollback_is_rejected() {
    assert_attack_rejected(&Attack {
        scenario: "rollback-timestamp",
        error: "timestamp metadata version 1 is lower than the trusted version 2",
        may_change: &[],
    });
}

#[test]
fn snapshot_rollback_is_rejected() {
    assert_attack_rejected(&Attack {
        scenario: "rollback-snapshot",
        error: "it lists snapshot.json version 1, lower than version 2",
        may_change: &[],
    });
}

#[test]
fn targets_rollback_is_rejected() {
    assert_attack_rejected(&Attack {
        scenario: "rollback-targets",
        error: "it lists targets.json version 1, lower than version 2",
        // The new timestamp verified and was persisted (5.4.5).
        may_change: &["timestamp.json"],
    });
}

#[test]
fn expired_timestamp_is_rejected() {
    assert_attack_rejected(&Attack { scenario: "freeze", error: "(system clock) (possible freeze attack)", may_change: &[] });
}

#[test]
fn oversized_timestamp_is_rejected() {
    assert_attack_rejected(&Attack {
        scenario: "endless-timestamp",
        error: "is larger than the limit of 16384 bytes",
        may_change: &[],
    });
}

#[test]
fn mixed_targets_version_is_rejected() {
    assert_attack_rejected(&Attack {
        scenario: "mix-and-match",
        error: "targets metadata has version 2 but snapshot.json lists version 3",
        may_change: &["timestamp.json", "snapshot.json"],
    });
}

#[test]
fn badly_signed_targets_is_rejected() {
    let (_scenario, metadata_dir) = assert_attack_rejected(&Attack {
        scenario: "arbitrary-targets",
        error: "0 valid targets signature(s) but the root requires 1",
        may_change: &["timestamp.json", "snapshot.json"],
    });
    assert_eq!(stored_version(&metadata_dir, "targets.json"), 2);
}

#[test]
fn timestamp_below_threshold_is_rejected() {
    assert_attack_rejected(&Attack {
        scenario: "threshold",
        error: "1 valid timestamp signature(s) but the root requires 2",
        may_change: &[],
    });
}

#[test]
fn revoked_timestamp_key_is_rejected() {
    let (_scenario, metadata_dir) = assert_attack_rejected(&Attack {
        scenario: "revoked-key",
        error: "0 valid timestamp signature(s) but the root requires 1",
        // Root 2 verified and was persisted (5.3.8); it rotated the timestamp
        // key, so the trusted timestamp and snapshot were deleted (5.3.11).
        may_change: &["root.json", "timestamp.json", "snapshot.json"],
    });
    assert_eq!(stored_version(&metadata_dir, "root.json"), 2);
    assert!(!metadata_dir.join("timestamp.json").exists(), "the timestamp of the revoked key is still trusted");
}

#[test]
fn root_chain_gap_stops_at_trusted_root() {
    let (_scenario, metadata_dir) = assert_attack_rejected(&Attack {
        scenario: "root-gap",
        // 2.root.json is missing, so the client keeps root 1, whose
        // timestamp key no longer signs the timestamp.
        error: "0 valid timestamp signature(s) but the root requires 1",
        may_change: &[],
    });
    assert_eq!(stored_version(&metadata_dir, "root.json"), 1);
}

#[test]
fn fast_forward_recovery_after_key_rotation() {
    let scenario = Scenario::build("fast-forward-recovery");
    let server = Server::static_files(&scenario.repo());
    let metadata_dir = init_client(&scenario, "trusted");
    let out = expect_success(&refresh(&metadata_dir, &server, 1), "refresh of the fast-forwarded state");
    assert!(out.contains("timestamp 1000, snapshot 1000"), "{out}");

    let out = expect_success(&refresh(&metadata_dir, &server, 2), "refresh after the key rotation");
    assert!(out.contains("root 4, timestamp 1, snapshot 1, targets 1"), "{out}");
    assert_eq!(stored_version(&metadata_dir, "timestamp.json"), 1);
    assert_eq!(stored_version(&metadata_dir, "snapshot.json"), 1);

    let target_dir = scenario.work_dir("targets");
    expect_success(&download(&metadata_dir, &server, 2, MANIFEST, &target_dir), "download after recovery");

    let python_dir = scenario.work_dir("python-tuf");
    expect_success(&python_tuf(&scenario, &python_dir, &server, 1, MANIFEST), "python-tuf control on state 1");
    expect_success(&python_tuf(&scenario, &python_dir, &server, 2, MANIFEST), "python-tuf control on state 2");
}

#[test]
fn endless_server_costs_at_most_cap() {
    let scenario = Scenario::build("basic");
    let server = Server::endless();
    let metadata_dir = init_client(&scenario, "trusted");
    let before = dir_contents(&metadata_dir);
    let started = Instant::now();
    let output = tuf_client(&metadata_dir, &["--metadata-url", &server.url("metadata/"), "refresh"]);
    let line = expect_one_error_line(&output, "refresh against an endless timestamp");
    assert!(line.contains("is larger than the limit of 16384 bytes"), "{line}");
    assert!(started.elapsed() < Duration::from_secs(20), "the client read for {:?}", started.elapsed());
    assert_eq!(dir_contents(&metadata_dir), before);
}

#[test]
fn clock_behind_time_floor_uses_floor() {
    let scenario = Scenario::build("basic");
    let server = Server::static_files(&scenario.repo());
    let metadata_dir = init_client(&scenario, "trusted");

    // A floor far ahead of the system clock makes the clock untrusted, and
    // every metadata file is expired at the floor.
    fs::write(metadata_dir.join("time-floor"), "2090-01-01T00:00:00Z\n").expect("write floor");
    let output = refresh(&metadata_dir, &server, 1);
    let line = expect_one_error_line(&output, "refresh with the clock behind the floor");
    assert!(line.contains("2090-01-01T00:00:00Z (time floor, because the system clock is behind it)"), "{line}");

    // A corrupt floor falls back and never blocks the update; the refresh
    // then writes a valid floor.
    fs::write(metadata_dir.join("time-floor"), "garbage").expect("write floor");
    expect_success(&refresh(&metadata_dir, &server, 1), "refresh with a corrupt floor");
    let floor = fs::read_to_string(metadata_dir.join("time-floor")).expect("floor");
    assert!(floor.trim_end().ends_with('Z'), "{floor:?}");
    assert_eq!(floor.len(), "2026-01-01T00:00:00Z\n".len(), "{floor:?}");
}
