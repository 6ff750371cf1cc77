//! The fixed update start time (TUF 5.1) on robots without a real-time clock.
//!
//! A time floor file stores the newest time the robot has trusted. The update
//! start time is `max(system clock, floor)`:
//!
//! - A system clock at or after the floor is trusted and used as is.
//! - A system clock before the floor (a robot without an RTC booting at 1970,
//!   or a clock set back) is untrusted, and the floor is used instead. So an
//!   attacker who sets the clock back cannot make expired metadata valid again.
//! - A missing or corrupt floor file falls back to a time the caller supplies,
//!   such as the build time of the running release. Reading the floor never
//!   fails a refresh.
//!
//! After a refresh that succeeded with a trusted clock the floor advances to
//! that clock. The floor therefore never passes the expiry of a timestamp that
//! verified, which keeps a clock that jumped far ahead from locking the robot out.
//!
//! These expiry checks use the update start time: the final root (5.3.10), the
//! timestamp (5.4.4), the snapshot (5.5.6), the top-level targets (5.6.5) and
//! every delegated targets role that a target search loads. Intermediate roots
//! of the root update loop are not checked (5.3.6).

use std::fmt;
use std::path::Path;
use std::time::SystemTime;

use crate::fsutil::{write_atomic, FsError};

/// Name of the time floor file in the trusted metadata directory.
pub const TIME_FLOOR_FILE: &str = "time-floor";

/// Source of the update start time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeSource {
    /// The system clock, at or after the time floor.
    SystemClock,
    /// The time floor, because the system clock was before it.
    TimeFloor,
}

impl fmt::Display for TimeSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TimeSource::SystemClock => "system clock",
            TimeSource::TimeFloor => "time floor, because the system clock is behind it",
        })
    }
}

/// The fixed update start time of one refresh (5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpdateTime {
    pub now: SystemTime,
    pub source: TimeSource,
}

impl UpdateTime {
    /// Chooses the update start time from the system clock and the floor.
    pub fn choose(system_clock: SystemTime, floor: SystemTime) -> Self {
        if system_clock >= floor {
            Self { now: system_clock, source: TimeSource::SystemClock }
        } else {
            Self { now: floor, source: TimeSource::TimeFloor }
        }
    }

    /// Returns true when the system clock was trusted.
    pub fn clock_trusted(&self) -> bool {
        self.source == TimeSource::SystemClock
    }
}

/// Reads the floor from `metadata_dir`, or returns `fallback` when the file
/// is missing or corrupt.
pub fn load_floor(metadata_dir: &Path, fallback: SystemTime) -> SystemTime {
    let path = metadata_dir.join(TIME_FLOOR_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => match tender_keys::parse_time(text.trim()) {
            Some(floor) => floor.max(fallback),
            None => {
                tracing::warn!(path = %path.display(), "time floor file is corrupt; using the fallback time");
                fallback
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => fallback,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read the time floor; using the fallback time");
            fallback
        }
    }
}

/// Advances the floor in `metadata_dir` to `time` when `time` is later than
/// the stored floor. Writes atomically.
pub fn advance_floor(metadata_dir: &Path, time: SystemTime) -> Result<(), FsError> {
    let stored = load_floor(metadata_dir, SystemTime::UNIX_EPOCH);
    if time <= stored {
        return Ok(());
    }
    let text = format!("{}\n", tender_keys::format_time(time));
    write_atomic(&metadata_dir.join(TIME_FLOOR_FILE), text.as_bytes())
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    fn at(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(seconds)
    }

    #[test]
    fn clock_before_floor_uses_floor() {
        let time = UpdateTime::choose(at(100), at(1_700_000_000));
        assert_eq!(time.now, at(1_700_000_000));
        assert_eq!(time.source, TimeSource::TimeFloor);
        assert!(!time.clock_trusted());
    }

    #[test]
    fn clock_after_floor_is_trusted() {
        let time = UpdateTime::choose(at(1_800_000_000), at(1_700_000_000));
        assert_eq!(time.now, at(1_800_000_000));
        assert!(time.clock_trusted());
    }

    #[test]
    fn missing_or_corrupt_floor_uses_fallback() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(load_floor(dir.path(), at(1_600_000_000)), at(1_600_000_000));
        std::fs::write(dir.path().join(TIME_FLOOR_FILE), "not a time").expect("write");
        assert_eq!(load_floor(dir.path(), at(1_600_000_000)), at(1_600_000_000));
    }

    #[test]
    fn floor_only_moves_forward() {
        let dir = tempfile::tempdir().expect("tempdir");
        advance_floor(dir.path(), at(1_700_000_000)).expect("first");
        assert_eq!(load_floor(dir.path(), UNIX_EPOCH), at(1_700_000_000));
        advance_floor(dir.path(), at(1_650_000_000)).expect("older time");
        assert_eq!(load_floor(dir.path(), UNIX_EPOCH), at(1_700_000_000));
        advance_floor(dir.path(), at(1_750_000_000)).expect("newer time");
        assert_eq!(load_floor(dir.path(), UNIX_EPOCH), at(1_750_000_000));
    }

    #[test]
    fn fallback_later_than_floor_wins() {
        let dir = tempfile::tempdir().expect("tempdir");
        advance_floor(dir.path(), at(1_600_000_000)).expect("write");
        assert_eq!(load_floor(dir.path(), at(1_700_000_000)), at(1_700_000_000));
    }
}
