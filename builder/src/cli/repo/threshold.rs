//! `tender repo threshold`: set how many keys of a role must sign.

use tender_builder::rootedit::set_threshold;
use tender_keys::Role;

/// Set the signature threshold of a role in the draft of the next root version.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    draft: super::DraftArgs,

    /// Role whose threshold changes: root, targets, snapshot or timestamp.
    #[arg(long, value_parser = super::parse_role)]
    role: Role,

    /// Number of distinct keys of the role that must sign, at least 1.
    #[arg(value_name = "N")]
    threshold: u32,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let describe = format!("set the threshold of the {} role to {}", args.role, args.threshold);
    super::edit_and_report(&args.draft, &describe, |root| set_threshold(root, args.role, args.threshold))
}
