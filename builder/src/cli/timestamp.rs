//! `tender timestamp`: sign a fresh `timestamp.json` for the current
//! snapshot, for a periodic job that keeps a repository valid for TUF
//! clients between releases.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use tender_builder::keydir::check_role_membership;
use tender_builder::publish::Repository;
use tender_builder::rootchain::load_root_chain;
use tender_builder::signer::{load_signers, parse_key_spec, KeySpec};
use tender_builder::snapshot::publish_timestamp;
use tender_keys::Role;

/// Re-sign timestamp.json with the next version and an expiry counted from now.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Repository directory (OUT/repo of `tender release`).
    #[arg(long, value_name = "DIR")]
    repo: PathBuf,

    /// Timestamp key: a key file (such as KEYS/timestamp.key) or cmd:PROGRAM ARG….
    /// Repeat it to meet a threshold above one.
    #[arg(long = "key", value_name = "KEY", required = true, value_parser = parse_key_spec)]
    keys: Vec<KeySpec>,

    /// How long the new timestamp.json stays valid from now, such as 1d or 6h.
    #[arg(long, value_name = "DURATION", default_value = "1d", value_parser = humantime::parse_duration)]
    expires: Duration,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let repo = Repository::new(&args.repo);
    let chain = load_root_chain(&repo)?.with_context(|| {
        format!("{} has no metadata/1.root.json; publish a release with `tender release` first", args.repo.display())
    })?;
    let signers = load_signers(&args.keys)?;
    check_role_membership(&signers, chain.latest(), Role::Timestamp)?;
    let expires = SystemTime::now()
        .checked_add(args.expires)
        .with_context(|| format!("--expires {:?} is too far in the future", args.expires))?;
    let (version, expires) = publish_timestamp(&repo, chain.latest(), &signers, expires)
        .with_context(|| format!("cannot re-sign the timestamp of {}", args.repo.display()))?;
    writeln!(std::io::stdout().lock(), "timestamp.json version {version}, expires {expires}")?;
    Ok(())
}
