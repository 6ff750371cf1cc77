//! `tender repo sign`: a detached signature over a metadata file, so that
//! people who each hold one root key can sign a draft root apart and send
//! only their signature file.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use tender_builder::fsutil::write_atomic;
use tender_builder::publish::{read_optional, Repository};
use tender_builder::rootchain::load_root_chain;
use tender_builder::signer::{parse_key_spec, KeySpec};
use tender_keys::{to_canonical_json, KeyId, PublicKey, Signed};

/// Sign a metadata file (such as OUT/root-draft.json) and write the signature to a file.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Metadata file to sign: a TUF envelope {"signed": …, "signatures": […]}.
    #[arg(long, value_name = "FILE")]
    metadata: PathBuf,

    /// Signing key: a key file or cmd:PROGRAM ARG….
    #[arg(long, value_name = "KEY", value_parser = parse_key_spec)]
    key: KeySpec,

    /// Signature file to write, for `tender repo add-signature`.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,

    /// Repository whose root keys an external signer's key may be; needed
    /// only for an old root key that the draft no longer lists.
    #[arg(long, value_name = "DIR")]
    repo: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let bytes = read_optional(&args.metadata)?.with_context(|| format!("{} does not exist", args.metadata.display()))?;
    let envelope: Signed<serde_json::Value> = serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is not TUF metadata (an object with signed and signatures)", args.metadata.display()))?;
    let canonical = to_canonical_json(&envelope.signed)?;

    let mut keys: BTreeMap<KeyId, PublicKey> = envelope
        .signed
        .get("keys")
        .and_then(|keys| serde_json::from_value(keys.clone()).ok())
        .unwrap_or_default();
    if let Some(repo) = &args.repo {
        if let Some(chain) = load_root_chain(&Repository::new(repo))? {
            keys.extend(chain.latest().keys.clone());
        }
    }
    let signer = args.key.load()?;
    // A key file names its own key; an external signer's key is found
    // among the keys of the document and of the repository's root.
    let keyids: Vec<KeyId> = match (signer.known_key_id(), signer.known_public_key()) {
        (Some(keyid), Some(public)) => {
            keys.insert(keyid.clone(), public);
            vec![keyid.clone()]
        }
        _ => keys.keys().cloned().collect(),
    };
    let what = args.metadata.display().to_string();
    let signature = signer.sign_for_role(&canonical, &what, "any", &keys, &keyids)?;
    let mut text = serde_json::to_vec_pretty(&signature)?;
    text.push(b'\n');
    write_atomic(&args.out, &text).with_context(|| format!("cannot write {}", args.out.display()))?;
    writeln!(std::io::stdout().lock(), "signed {} with key {}: {}", what, signature.keyid, args.out.display())?;
    Ok(())
}
