//! `tender repo rotate-root`: replace the root keys in the next root
//! version, which the threshold of the old root keys and of the new ones
//! must both sign.

use std::path::PathBuf;

use anyhow::Context;
use tender_builder::rootedit::{read_public_key, replace_role_keys};
use tender_builder::signer::{load_signers, parse_key_spec, KeySpec};
use tender_keys::Role;

/// Replace the root keys: version N+1 signed by the old and the new root keys.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    draft: super::DraftArgs,

    /// New root key (public or private key file). Repeat it for several keys.
    /// Without it the root keys stay, and only the expiry and draft changes are signed.
    #[arg(long = "new-root-key", value_name = "FILE")]
    new_root_keys: Vec<PathBuf>,

    /// Key that signs the new version: old and new root keys, as key files
    /// or cmd:PROGRAM ARG…. Repeat it for several keys.
    #[arg(long = "key", value_name = "KEY", required = true, value_parser = parse_key_spec)]
    keys: Vec<KeySpec>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let mut editor = args.draft.open()?;
    if !args.new_root_keys.is_empty() {
        let keys = args.new_root_keys.iter().map(|path| read_public_key(path)).collect::<Result<Vec<_>, _>>()?;
        editor
            .edit(|root| replace_role_keys(root, Role::Root, keys).map(|_| ()))
            .context("cannot replace the root keys")?;
    }
    let signers = load_signers(&args.keys)?;
    editor.sign(&signers).context("cannot sign the new root")?;
    let published = editor.publish_if_complete().context("cannot publish the new root")?;
    super::report(&editor, published.as_ref())
}
