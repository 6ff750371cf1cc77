//! `tender repo allow-downgrade`: sign an authorisation for robots to
//! install one exact older release. Robots refuse any release older than the
//! one they committed unless its target in the signed `targets.json` carries
//! `"allow_downgrade": true`, which binds the authorisation to that
//! manifest's length and hashes.

use std::io::Write;

use super::retarget::{edit_release, ReleaseEdit};

/// Authorise robots to install an older release (or withdraw it): re-sign targets.json with that release marked.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    release: ReleaseEdit,

    /// Withdraw the authorisation instead of granting it.
    #[arg(long)]
    revoke: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let revoke = args.revoke;
    let (target, published) = edit_release(&args.release, |custom| {
        if revoke {
            custom.remove("allow_downgrade");
        } else {
            custom.insert("allow_downgrade".to_owned(), serde_json::Value::Bool(true));
        }
    })?;
    let outcome = if revoke { "may no longer be installed as a downgrade" } else { "may be installed as a downgrade" };
    writeln!(
        std::io::stdout().lock(),
        "{target} {outcome}: targets.json version {}, snapshot {}, timestamp {}",
        published.targets,
        published.snapshot,
        published.timestamp
    )?;
    Ok(())
}
