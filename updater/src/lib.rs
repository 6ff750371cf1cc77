//! The robot side of Tender: the release format a robot accepts, release
//! sources, A/B directory slots, the persistent install state machine,
//! health checks, USB installs, the control socket, metrics, and the
//! `tenderd` command.

pub mod format;
pub mod source;
pub mod verify;
pub mod backup;
pub mod boot;
pub mod command;
pub mod config;
pub mod control;
pub mod daemon;
pub mod delta;
pub mod fsutil;
pub mod health;
pub mod metrics;
pub mod online;
pub mod plan;
pub mod registry;
pub mod rollout;
pub mod slot;
pub mod state;
pub mod status;
pub mod tuf;
pub mod updater;
pub mod usb;

/// Formats an error and its causes as one line. A cause whose text the
/// message already contains is left out, because many errors repeat their
/// source in their own message.
pub fn error_line(error: &(dyn std::error::Error + 'static)) -> String {
    let mut message = error.to_string();
    let mut cause = error.source();
    while let Some(current) = cause {
        let text = current.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        cause = current.source();
    }
    message
}
