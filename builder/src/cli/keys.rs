//! `tender keys generate`: one key per TUF role and the `root.json` that
//! trusts them. `tender keys new`: one more key, such as a second release key
//! or the next root key.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use tender_builder::fsutil::write_atomic;
use tender_builder::keydir::{
    generate_keys, RELEASE_KEY_FILE, ROOT_KEY_FILE, SNAPSHOT_KEY_FILE, TIMESTAMP_KEY_FILE,
};
use tender_keys::PrivateKey;

/// Manage signing keys.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: KeysCommand,
}

#[derive(Debug, clap::Subcommand)]
enum KeysCommand {
    Generate(GenerateArgs),
    New(NewArgs),
}

/// Generate root.key, release.key, snapshot.key, timestamp.key (mode 0600)
/// and a root.json signed by the root key.
#[derive(Debug, clap::Args)]
struct GenerateArgs {
    /// Directory to write the keys and root.json into; created if missing.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,

    /// Replace existing keys. Releases signed with the old keys stop verifying.
    #[arg(long)]
    force: bool,

    /// How long root.json stays valid from now, such as 365d or 2years.
    #[arg(long, value_name = "DURATION", default_value = "365d", value_parser = humantime::parse_duration)]
    expires: Duration,
}

/// Generate one ed25519 key file (mode 0600) and FILE.pub with its public key.
#[derive(Debug, clap::Args)]
struct NewArgs {
    /// Key file to write; FILE.pub gets the public key, for `tender repo add-key`.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,

    /// Replace an existing key file.
    #[arg(long)]
    force: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        KeysCommand::Generate(args) => generate(args),
        KeysCommand::New(args) => new_key(args),
    }
}

fn generate(args: GenerateArgs) -> anyhow::Result<()> {
    let generated = generate_keys(&args.out, args.force, args.expires)
        .with_context(|| format!("cannot generate keys in {}", args.out.display()))?;
    let mut stdout = std::io::stdout().lock();
    let rows = [
        ("root key     ", &generated.root_key_id, ROOT_KEY_FILE),
        ("release key  ", &generated.release_key_id, RELEASE_KEY_FILE),
        ("snapshot key ", &generated.snapshot_key_id, SNAPSHOT_KEY_FILE),
        ("timestamp key", &generated.timestamp_key_id, TIMESTAMP_KEY_FILE),
    ];
    for (label, keyid, file) in rows {
        writeln!(stdout, "{label}  {keyid}  {}", args.out.join(file).display())?;
    }
    writeln!(stdout, "root.json      {}", generated.root_json.display())?;
    writeln!(
        stdout,
        "keep {} offline: tender release needs only root.json, {RELEASE_KEY_FILE}, {SNAPSHOT_KEY_FILE} and {TIMESTAMP_KEY_FILE}",
        args.out.join(ROOT_KEY_FILE).display()
    )?;
    Ok(())
}

fn new_key(args: NewArgs) -> anyhow::Result<()> {
    let key = PrivateKey::generate();
    key.write_new(&args.out, args.force).with_context(|| format!("cannot create key {}", args.out.display()))?;
    let public_path = PathBuf::from(format!("{}.pub", args.out.display()));
    let mut public = serde_json::to_vec_pretty(&key.public())?;
    public.push(b'\n');
    write_atomic(&public_path, &public).with_context(|| format!("cannot write {}", public_path.display()))?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "key         {}  {}", key.key_id()?, args.out.display())?;
    writeln!(stdout, "public key  {}", public_path.display())?;
    Ok(())
}
