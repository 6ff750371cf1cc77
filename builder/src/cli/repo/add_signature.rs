//! `tender repo add-signature`: add detached signatures, made with
//! `tender repo sign`, to the draft root and publish it once enough keys
//! signed.

use std::path::PathBuf;

use anyhow::Context;
use tender_keys::Signature;

/// Add detached signatures to the draft root; publish it when enough keys signed.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Repository directory (OUT/repo of `tender release`).
    #[arg(long, value_name = "DIR")]
    repo: PathBuf,

    /// Signature file written by `tender repo sign`. Repeat it for several.
    #[arg(long = "signature", value_name = "FILE", required = true)]
    signatures: Vec<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    // An existing draft keeps its own expiry, so this value is not used.
    let draft = super::DraftArgs { repo: args.repo, expires: std::time::Duration::from_secs(365 * 24 * 3600) };
    let mut editor = draft.open()?;
    for path in &args.signatures {
        let bytes = std::fs::read(path).with_context(|| format!("cannot read signature {}", path.display()))?;
        let signature: Signature = serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is not a signature file of `tender repo sign`", path.display()))?;
        editor.add_signature(signature, path)?;
    }
    let published = editor.publish_if_complete().context("cannot publish the draft root")?;
    super::report(&editor, published.as_ref())
}
