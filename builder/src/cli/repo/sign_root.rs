//! `tender repo sign-root`: sign the draft root and publish it once the
//! previous root's threshold and its own are met.

use anyhow::Context;
use tender_builder::signer::{load_signers, parse_key_spec, KeySpec};

/// Sign the draft of the next root version; publish it when enough keys signed.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    draft: super::DraftArgs,

    /// Root key of the published root or of the draft: a key file or
    /// cmd:PROGRAM ARG…. Repeat it for several keys.
    #[arg(long = "key", value_name = "KEY", required = true, value_parser = parse_key_spec)]
    keys: Vec<KeySpec>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let mut editor = args.draft.open()?;
    let signers = load_signers(&args.keys)?;
    editor.sign(&signers).context("cannot sign the draft root")?;
    let published = editor.publish_if_complete().context("cannot publish the draft root")?;
    super::report(&editor, published.as_ref())
}
