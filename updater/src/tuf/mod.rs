//! A TUF 1.0 client for the robot, following the "Detailed client workflow"
//! (section 5) of The Update Framework specification, with consistent
//! snapshots.
//!
//! Use: [`init_trusted_root`] once with the fleet's `root.json`, then per
//! update [`TufClient::refresh`], [`TufClient::find_target`] and
//! [`TufClient::download_target`]. The steps sit in these modules:
//!
//! | step | module |
//! | --- | --- |
//! | 5.1 fixed update start time, time floor | [`clock`] |
//! | 5.2 to 5.6.6 root, timestamp, snapshot, targets | `refresh` |
//! | 5.6.7 delegation search | `delegation` |
//! | 5.7 fetch target | `target` |
//!
//! Repository names: `N.root.json` and `timestamp.json` always; with
//! consistent snapshots `N.snapshot.json`, `N.targets.json`, `N.ROLE.json`
//! and targets at `DIR/HASH.BASENAME`, else the plain names.

pub mod clock;
mod checks;
mod client;
mod delegation;
mod error;
pub(crate) mod fetch;
mod limits;
mod names;
mod refresh;
mod store;
mod target;

pub use checks::{check_snapshot_rollback, check_timestamp_rollback, TimestampUpdate};
pub use client::{init_trusted_root, local_target_file_name, TufClient};
pub use delegation::FoundTarget;
pub use error::TufError;
pub use fetch::{DirFetcher, FetchError, Fetcher, HttpFetcher};
pub use limits::Limits;
pub use refresh::TrustedMetadata;
pub use store::TrustedStore;
pub use target::{stored_copy_matches, TargetStatus};
