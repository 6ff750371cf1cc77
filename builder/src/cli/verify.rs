//! `tender verify`: audit the signatures and every chunk of a bundle or a
//! repository against a trusted root.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use tender_builder::audit::{audit, AuditReport};

/// Check a bundle or repository against a trusted root.json and print who signed what.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A `.tender` bundle, a repository directory, or an http(s):// repository URL.
    #[arg(value_name = "BUNDLE|REPO")]
    source: String,

    /// The trusted root.json to check signatures against.
    #[arg(long, value_name = "FILE")]
    root: PathBuf,

    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let report = audit(&args.source, &args.root).with_context(|| format!("cannot verify {}", args.source))?;
    print_and_check(&report, &args.source, args.json, "verification")
}

/// Prints a bundle or legacy repository audit and fails when a check failed.
pub fn print_and_check(report: &AuditReport, source: &str, json: bool, what: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    if json {
        writeln!(stdout, "{}", serde_json::to_string_pretty(report)?)?;
    } else {
        writeln!(stdout, "{}", report.to_text())?;
    }
    if !report.ok {
        let first = report
            .errors
            .first()
            .cloned()
            .or_else(|| report.releases.iter().flat_map(|r| r.chunk_errors.first()).next().cloned())
            .unwrap_or_default();
        anyhow::bail!("{what} of {source} failed: {first}");
    }
    Ok(())
}
