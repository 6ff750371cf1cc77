//! Staged rollouts: which robots may install a release, and when.
//!
//! A release's signed metadata can carry waves, each a point in time and the
//! percentage of the fleet allowed from then on. Every robot derives a stable
//! bucket in `0..10000` from its robot id and the release, so the same robots
//! go first every time. The allowed share at a moment is the largest
//! percentage of all waves that have started, so adding waves never moves a
//! robot back. Publishing metadata with `paused` set halts a rollout;
//! channels and a per-robot hold narrow it further.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Buckets a fleet is divided into; a percentage is 100 buckets.
pub const BUCKETS: u32 = 10_000;

/// The rollout settings of one release, from its signed metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rollout {
    #[serde(default)]
    pub waves: Vec<Wave>,
    /// When set, no robot that has not installed the release yet starts it.
    #[serde(default)]
    pub paused: bool,
    /// Channels the release is published to; empty for every channel.
    #[serde(default)]
    pub channels: Vec<String>,
}

/// From `start` on, `percent` of the fleet may install the release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Wave {
    /// RFC 3339 time in UTC.
    pub start: String,
    pub percent: u32,
}

/// Decision of the rollout for this robot and a release, now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Eligibility {
    Allowed,
    /// The publisher paused the rollout.
    Paused,
    /// The robot's operator put it on hold.
    Held,
    /// The release is not published to this robot's channel.
    OtherChannel { channel: String },
    /// The robot's bucket is not reached yet; `next` is when the next wave
    /// starts, if any.
    NotYet { bucket: u32, allowed_buckets: u32, next: Option<SystemTime> },
    /// A wave has a start time that is not RFC 3339.
    InvalidWave { start: String },
}

/// This robot's side of a rollout decision.
#[derive(Debug, Clone)]
pub struct RobotRollout<'a> {
    pub robot_id: &'a str,
    pub channel: &'a str,
    pub held: bool,
}

/// Returns the robot's bucket for a release, in `0..BUCKETS`.
pub fn bucket(robot_id: &str, release_name: &str, version: &semver::Version) -> u32 {
    let mut hasher = Sha256::new();
    hasher.update(robot_id.as_bytes());
    hasher.update([0]);
    hasher.update(release_name.as_bytes());
    hasher.update([0]);
    hasher.update(version.to_string().as_bytes());
    let digest = hasher.finalize();
    let value = u64::from_be_bytes([digest[0], digest[1], digest[2], digest[3], digest[4], digest[5], digest[6], digest[7]]);
    (value % u64::from(BUCKETS)) as u32
}

/// Decides whether the robot may install the release at `now`. A release
/// without waves is open to the whole fleet.
pub fn eligibility(
    rollout: &Rollout,
    robot: &RobotRollout<'_>,
    release_name: &str,
    version: &semver::Version,
    now: SystemTime,
) -> Eligibility {
    if robot.held {
        return Eligibility::Held;
    }
    if !rollout.channels.is_empty() && !rollout.channels.iter().any(|c| c == robot.channel) {
        return Eligibility::OtherChannel { channel: robot.channel.to_owned() };
    }
    if rollout.paused {
        return Eligibility::Paused;
    }
    if rollout.waves.is_empty() {
        return Eligibility::Allowed;
    }
    let mut allowed_buckets = 0;
    let mut next: Option<SystemTime> = None;
    for wave in &rollout.waves {
        let Ok(start) = humantime::parse_rfc3339(&wave.start) else {
            return Eligibility::InvalidWave { start: wave.start.clone() };
        };
        if start <= now {
            allowed_buckets = allowed_buckets.max(wave.percent.min(100) * (BUCKETS / 100));
        } else if next.is_none_or(|n| start < n) {
            next = Some(start);
        }
    }
    let bucket = bucket(robot.robot_id, release_name, version);
    if bucket < allowed_buckets {
        Eligibility::Allowed
    } else {
        Eligibility::NotYet { bucket, allowed_buckets, next }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    fn at(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(seconds)
    }

    fn wave(seconds: u64, percent: u32) -> Wave {
        Wave { start: humantime::format_rfc3339_seconds(at(seconds)).to_string(), percent }
    }

    fn robot(id: &str) -> RobotRollout<'_> {
        RobotRollout { robot_id: id, channel: "stable", held: false }
    }

    fn allowed_share(rollout: &Rollout, now: SystemTime, robots: &[String]) -> usize {
        let version = semver::Version::new(1, 2, 0);
        robots
            .iter()
            .filter(|id| eligibility(rollout, &robot(id), "ecar-4wd4ws", &version, now) == Eligibility::Allowed)
            .count()
    }

    #[test]
    fn waves_open_the_fleet_in_stages() {
        let robots: Vec<String> = (0..4000).map(|i| format!("ecar-{i:04}")).collect();
        let rollout = Rollout { waves: vec![wave(1000, 5), wave(2000, 50), wave(3000, 100)], ..Rollout::default() };
        assert_eq!(allowed_share(&rollout, at(999), &robots), 0);
        let canary = allowed_share(&rollout, at(1500), &robots);
        assert!((120..=280).contains(&canary), "5 % of 4000 robots, got {canary}");
        let half = allowed_share(&rollout, at(2500), &robots);
        assert!((1850..=2150).contains(&half), "50 % of 4000 robots, got {half}");
        assert_eq!(allowed_share(&rollout, at(3000), &robots), 4000);
    }

    #[test]
    fn same_robots_go_first_and_never_move_back() {
        let robots: Vec<String> = (0..2000).map(|i| format!("ecar-{i:04}")).collect();
        let version = semver::Version::new(1, 2, 0);
        let first = Rollout { waves: vec![wave(1000, 10)], ..Rollout::default() };
        let more = Rollout { waves: vec![wave(1000, 10), wave(1500, 5), wave(2000, 30)], ..Rollout::default() };
        for id in &robots {
            let before = eligibility(&first, &robot(id), "ecar-4wd4ws", &version, at(1600));
            let after = eligibility(&more, &robot(id), "ecar-4wd4ws", &version, at(1600));
            if before == Eligibility::Allowed {
                assert_eq!(after, Eligibility::Allowed, "{id} moved back when a wave was added");
            }
            assert_eq!(
                bucket(id, "ecar-4wd4ws", &version),
                bucket(id, "ecar-4wd4ws", &version),
                "bucket of {id} is not stable"
            );
        }
    }

    #[test]
    fn buckets_differ_between_releases() {
        let a = semver::Version::new(1, 0, 0);
        let b = semver::Version::new(1, 0, 1);
        let differ = (0..200).filter(|i| bucket(&format!("r{i}"), "ecar", &a) != bucket(&format!("r{i}"), "ecar", &b)).count();
        assert!(differ > 190, "only {differ} of 200 robots changed bucket");
    }

    #[test]
    fn pause_hold_and_channels_stop_a_robot() {
        let version = semver::Version::new(1, 0, 0);
        let open = Rollout::default();
        assert_eq!(eligibility(&open, &robot("r1"), "ecar", &version, at(0)), Eligibility::Allowed);
        let paused = Rollout { paused: true, ..Rollout::default() };
        assert_eq!(eligibility(&paused, &robot("r1"), "ecar", &version, at(0)), Eligibility::Paused);
        let held = RobotRollout { robot_id: "r1", channel: "stable", held: true };
        assert_eq!(eligibility(&open, &held, "ecar", &version, at(0)), Eligibility::Held);
        let beta = Rollout { channels: vec!["beta".to_owned()], ..Rollout::default() };
        assert!(matches!(eligibility(&beta, &robot("r1"), "ecar", &version, at(0)), Eligibility::OtherChannel { .. }));
    }

    #[test]
    fn next_wave_time_is_reported() {
        let version = semver::Version::new(1, 0, 0);
        let rollout = Rollout { waves: vec![wave(1000, 0), wave(5000, 100)], ..Rollout::default() };
        let Eligibility::NotYet { next, .. } = eligibility(&rollout, &robot("r1"), "ecar", &version, at(2000)) else {
            panic!("expected NotYet");
        };
        assert_eq!(next, Some(at(5000)));
    }
}
