//! The robot side of Tender: the release format a robot accepts, release
//! sources, A/B directory slots, the persistent install state machine,
//! health checks, and the `tenderd` command.

pub mod format;
pub mod source;
pub mod verify;
pub mod backup;
pub mod command;
pub mod config;
pub mod fsutil;
pub mod slot;
pub mod state;
pub mod status;
pub mod updater;
