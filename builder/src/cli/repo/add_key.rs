//! `tender repo add-key`: add a public key to a role of the draft root.

use std::path::PathBuf;

use tender_builder::rootedit::{add_key, read_public_key};
use tender_keys::Role;

/// Add a key to a role in the draft of the next root version.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    draft: super::DraftArgs,

    /// Role that the key signs for: root, targets, snapshot or timestamp.
    #[arg(long, value_parser = super::parse_role)]
    role: Role,

    /// Public key file (FILE.pub of `tender keys new`) or a private key file.
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let key = read_public_key(&args.key)?;
    let keyid = key.key_id()?;
    let describe = format!("add key {keyid} to the {} role", args.role);
    super::edit_and_report(&args.draft, &describe, |root| add_key(root, args.role, key).map(|_| ()))
}
