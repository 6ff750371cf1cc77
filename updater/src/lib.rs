//! The robot side of Tender: the release format a robot accepts, release
//! sources, A/B directory slots, the persistent install state machine,
//! health checks, and the `tenderd` command.

pub mod format;
