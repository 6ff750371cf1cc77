//! `tender publish`: copy a repository written by `tender release` to a
//! directory for static hosting or to an OCI registry.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use indicatif::HumanBytes;
use tender_builder::distribution::registry::publish_to_registry;
use tender_builder::distribution::static_dir::publish_to_dir;
use tender_updater::registry::{is_registry_reference, Credentials, Reference};

/// Publish a repository to a directory (any HTTP server, CDN or object store) or an OCI registry.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Repository to publish (OUT/repo of `tender release`).
    #[arg(long, value_name = "DIR")]
    repo: PathBuf,

    /// Destination: a directory, or oci://HOST[:PORT]/REPOSITORY[:TAG] (tag default: latest).
    #[arg(long, value_name = "DIR|oci://…")]
    to: String,

    /// Registry username [env: TENDER_REGISTRY_USERNAME].
    #[arg(long, value_name = "NAME")]
    username: Option<String>,

    /// File with the registry password; TENDER_REGISTRY_PASSWORD_FILE also sets it.
    #[arg(long, value_name = "FILE", conflicts_with = "token_file")]
    password_file: Option<PathBuf>,

    /// File with a bearer token sent as it is; TENDER_REGISTRY_TOKEN_FILE also sets it.
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,

    /// Allow plain HTTP to a registry that is not on this machine.
    #[arg(long)]
    insecure: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if !is_registry_reference(&args.to) {
        let destination = PathBuf::from(&args.to);
        let summary = publish_to_dir(&args.repo, &destination)
            .with_context(|| format!("cannot publish {} to {}", args.repo.display(), destination.display()))?;
        writeln!(out, "published {} to {}", args.repo.display(), destination.display())?;
        writeln!(out, "  copied        {} files ({})", summary.copied_files, HumanBytes(summary.copied_bytes))?;
        writeln!(out, "  unchanged     {} files", summary.unchanged_files)?;
        if summary.repaired_files > 0 {
            writeln!(out, "  repaired      {} damaged files", summary.repaired_files)?;
        }
        return Ok(());
    }
    let reference = Reference::parse(&args.to, args.insecure)?;
    let env_path = |name: &str| std::env::var_os(name).map(PathBuf::from);
    let username = args.username.or_else(|| std::env::var("TENDER_REGISTRY_USERNAME").ok());
    let password_file = args.password_file.or_else(|| env_path("TENDER_REGISTRY_PASSWORD_FILE"));
    let token_file = args.token_file.or_else(|| env_path("TENDER_REGISTRY_TOKEN_FILE"));
    let credentials = Credentials::load(username.as_deref(), password_file.as_deref(), token_file.as_deref())?;
    let summary = publish_to_registry(&args.repo, &reference, credentials)
        .with_context(|| format!("cannot publish {} to {reference}", args.repo.display()))?;
    writeln!(out, "published {} to {reference}", args.repo.display())?;
    writeln!(out, "  manifest      {}", summary.manifest_digest)?;
    writeln!(out, "  uploaded      {} blobs ({})", summary.uploaded_blobs, HumanBytes(summary.uploaded_bytes))?;
    writeln!(out, "  present       {} blobs already in the registry", summary.present_blobs)?;
    writeln!(out, "  chunk packs   {}", summary.packs)?;
    writeln!(out, "  tags moved    {}", if summary.tags.is_empty() { "none".to_owned() } else { summary.tags.join(", ") })?;
    if !summary.unchanged_tags.is_empty() {
        writeln!(out, "  tags kept     {}", summary.unchanged_tags.join(", "))?;
    }
    Ok(())
}
