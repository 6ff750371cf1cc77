//! `tender audit`: check a TUF repository (directory or URL) from its root
//! chain to every chunk, or a `.tender` bundle, and report every problem.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use tender_builder::audit::audit;
use tender_builder::repo_audit::audit_repository;

/// Audit a repository (directory or http(s):// URL) or a bundle: signatures, thresholds, expiry, hashes, chunks.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Repository directory, http(s):// repository URL, or `.tender` bundle.
    #[arg(value_name = "REPO|URL|BUNDLE")]
    source: String,

    /// Trusted root.json. Default: version 1 of the repository's own root
    /// chain, or the root.json inside a bundle (trusted on first use).
    #[arg(long, value_name = "FILE")]
    root: Option<PathBuf>,

    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if Path::new(&args.source).is_file() {
        return audit_bundle(&args);
    }
    let report = audit_repository(&args.source, args.root.as_deref()).with_context(|| format!("cannot audit {}", args.source))?;
    let mut stdout = std::io::stdout().lock();
    if args.json {
        writeln!(stdout, "{}", serde_json::to_string_pretty(&report)?)?;
    } else {
        writeln!(stdout, "{}", report.to_text())?;
    }
    if !report.ok {
        let count = report.errors.len() + report.releases.iter().map(|r| r.chunk_errors.len()).sum::<usize>();
        anyhow::bail!("audit of {} failed ({count} problem(s)): {}", args.source, report.first_error().unwrap_or_default());
    }
    Ok(())
}

/// Audits a bundle with the checks of `tender verify`. A bundle contains no
/// snapshot or timestamp, so only the root, targets and chunks are checked.
fn audit_bundle(args: &Args) -> anyhow::Result<()> {
    let extracted;
    let root = match &args.root {
        Some(root) => root.clone(),
        None => {
            extracted = extract_bundle_root(Path::new(&args.source))?;
            tracing::warn!("no --root: trusting the root.json inside {}", args.source);
            extracted.path().to_owned()
        }
    };
    let report = audit(&args.source, &root).with_context(|| format!("cannot audit {}", args.source))?;
    super::verify::print_and_check(&report, &args.source, args.json, "audit")
}

/// Copies the bundle's `root.json` member to a temporary file.
fn extract_bundle_root(bundle: &Path) -> anyhow::Result<tempfile::NamedTempFile> {
    use std::io::Read;
    let file = std::fs::File::open(bundle).with_context(|| format!("cannot open {}", bundle.display()))?;
    let mut archive = tar::Archive::new(file);
    let mut entries = archive.entries().with_context(|| format!("{} is not a tar bundle", bundle.display()))?;
    let mut first = entries
        .next()
        .with_context(|| format!("{} is empty", bundle.display()))?
        .with_context(|| format!("cannot read {}", bundle.display()))?;
    let name = first.path()?.display().to_string();
    anyhow::ensure!(name == "root.json", "{} starts with {name}, not root.json; pass --root", bundle.display());
    let limit = tender_updater::format::limits::MAX_ROOT_BYTES;
    let mut bytes = Vec::new();
    (&mut first).take(limit + 1).read_to_end(&mut bytes)?;
    anyhow::ensure!(bytes.len() as u64 <= limit, "root.json in {} is larger than {limit} bytes", bundle.display());
    let mut temp = tempfile::NamedTempFile::new()?;
    temp.write_all(&bytes)?;
    Ok(temp)
}
