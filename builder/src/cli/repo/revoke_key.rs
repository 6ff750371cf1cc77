//! `tender repo revoke-key`: remove a key from a role of the draft root.

use tender_builder::rootedit::revoke_key;
use tender_keys::Role;

/// Remove a key from a role in the draft of the next root version.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    draft: super::DraftArgs,

    /// Role to remove the key from: root, targets, snapshot or timestamp.
    #[arg(long, value_parser = super::parse_role)]
    role: Role,

    /// Key id, or a prefix of it that names one key of the role.
    #[arg(long, value_name = "ID")]
    keyid: String,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let describe = format!("revoke key {} from the {} role", args.keyid, args.role);
    super::edit_and_report(&args.draft, &describe, |root| revoke_key(root, args.role, &args.keyid).map(|_| ()))
}
