//! Byte caps and counts that bound one refresh, so that a hostile repository
//! costs a robot at most these amounts.

/// Limits of one refresh. A length that signed metadata lists for a file
/// (timestamp for snapshot, snapshot for targets) replaces the cap of that file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Maximum size of one `N.root.json`, in bytes (W in TUF 5.3.3).
    pub max_root_bytes: u64,
    /// Maximum size of `timestamp.json`, in bytes (X in 5.4.1).
    pub max_timestamp_bytes: u64,
    /// Maximum size of `snapshot.json` when the timestamp lists no length (Y in 5.5.1).
    pub max_snapshot_bytes: u64,
    /// Maximum size of top-level or delegated targets metadata when the
    /// snapshot lists no length (Z in 5.6.1).
    pub max_targets_bytes: u64,
    /// Maximum number of new root versions fetched in one refresh (Y in 5.3.3).
    pub max_root_rotations: u32,
    /// Maximum number of targets roles visited in one target search (5.6.7.1).
    pub max_delegations: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_root_bytes: 512 * 1024,
            max_timestamp_bytes: 16 * 1024,
            max_snapshot_bytes: 2 * 1024 * 1024,
            max_targets_bytes: 16 * 1024 * 1024,
            max_root_rotations: 256,
            max_delegations: 32,
        }
    }
}
