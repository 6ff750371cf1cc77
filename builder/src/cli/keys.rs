//! `tender keys generate`: a root key, a release key and the `root.json`
//! that trusts them.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use tender_builder::keydir::{generate_keys, RELEASE_KEY_FILE, ROOT_KEY_FILE};

/// Manage signing keys.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: KeysCommand,
}

#[derive(Debug, clap::Subcommand)]
enum KeysCommand {
    Generate(GenerateArgs),
}

/// Generate root.key, release.key (mode 0600) and a root.json signed by the root key.
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

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        KeysCommand::Generate(args) => generate(args),
    }
}

fn generate(args: GenerateArgs) -> anyhow::Result<()> {
    let generated = generate_keys(&args.out, args.force, args.expires)
        .with_context(|| format!("cannot generate keys in {}", args.out.display()))?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "root key     {}  {}", generated.root_key_id, args.out.join(ROOT_KEY_FILE).display())?;
    writeln!(stdout, "release key  {}  {}", generated.release_key_id, args.out.join(RELEASE_KEY_FILE).display())?;
    writeln!(stdout, "root.json    {}", generated.root_json.display())?;
    writeln!(
        stdout,
        "keep {} offline: tender release needs only root.json and {RELEASE_KEY_FILE}",
        args.out.join(ROOT_KEY_FILE).display()
    )?;
    Ok(())
}
