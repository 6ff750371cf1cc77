//! `tenderd tuf-client`: the TUF client on its own, without a configuration
//! file: store a trusted root, refresh metadata, download a verified target.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use tender_updater::tuf::{self, DirFetcher, Fetcher, HttpFetcher, TargetStatus, TufClient};

#[derive(Debug, clap::Args)]
pub struct TufClientArgs {
    /// Directory of the trusted metadata (root.json, timestamp.json, …) and the time floor.
    #[arg(long)]
    metadata_dir: PathBuf,

    /// Base URL (http:// or https://) or local directory of the repository metadata.
    #[arg(long)]
    metadata_url: Option<String>,

    /// Target path as the targets metadata lists it, such as `releases/ecar-1.0.0.json`.
    #[arg(long)]
    target_name: Option<String>,

    /// Base URL (http:// or https://) or local directory of the target files.
    #[arg(long)]
    target_base_url: Option<String>,

    /// Directory that receives the target, under its percent-encoded target path.
    #[arg(long)]
    target_dir: Option<PathBuf>,

    /// RFC 3339 time used when the time floor file is missing or corrupt [default: the build's SOURCE_DATE_EPOCH, else 1970].
    #[arg(long)]
    fallback_time: Option<String>,

    #[command(subcommand)]
    action: TufAction,
}

#[derive(Debug, clap::Subcommand)]
enum TufAction {
    /// Store ROOT_FILE as the trusted root after checking its own signatures; no network.
    Init { root_file: PathBuf },
    /// Refresh root, timestamp, snapshot and targets metadata.
    Refresh,
    /// Refresh, then download and verify --target-name into --target-dir.
    Download,
}

/// Time of this build from `SOURCE_DATE_EPOCH` at compile time, or 1970.
fn build_time() -> SystemTime {
    let seconds = option_env!("SOURCE_DATE_EPOCH").and_then(|text| text.parse::<u64>().ok()).unwrap_or(0);
    SystemTime::UNIX_EPOCH + Duration::from_secs(seconds)
}

fn open_fetcher(location: &str) -> anyhow::Result<Box<dyn Fetcher>> {
    if location.starts_with("http://") || location.starts_with("https://") {
        Ok(Box::new(HttpFetcher::new(location)?))
    } else {
        Ok(Box::new(DirFetcher::new(Path::new(location))))
    }
}

fn required<'a, T: ?Sized>(value: Option<&'a T>, option: &str, action: &str) -> anyhow::Result<&'a T> {
    value.with_context(|| format!("`tuf-client {action}` needs {option}"))
}

pub fn run(args: TufClientArgs) -> anyhow::Result<()> {
    let action = match &args.action {
        TufAction::Init { root_file } => {
            let bytes = std::fs::read(root_file).with_context(|| format!("cannot read {}", root_file.display()))?;
            let root = tuf::init_trusted_root(&args.metadata_dir, &bytes, &root_file.display().to_string())?;
            println!("trusted root version {} stored in {}", root.version, args.metadata_dir.display());
            return Ok(());
        }
        TufAction::Refresh => "refresh",
        TufAction::Download => "download",
    };
    let metadata_url = required(args.metadata_url.as_deref(), "--metadata-url", action)?;
    let fallback_time = match &args.fallback_time {
        Some(text) => tender_keys::parse_time(text).with_context(|| format!("--fallback-time {text:?} is not an RFC 3339 time"))?,
        None => build_time(),
    };
    let client = TufClient::new(&args.metadata_dir, open_fetcher(metadata_url)?).with_fallback_time(fallback_time);
    let trusted = client.refresh()?;
    if let TufAction::Refresh = args.action {
        println!(
            "trusted metadata: root {}, timestamp {}, snapshot {}, targets {}",
            trusted.root.version, trusted.timestamp.version, trusted.snapshot.version, trusted.targets.version
        );
        return Ok(());
    }

    let target_name = required(args.target_name.as_deref(), "--target-name", action)?;
    let target_base_url = required(args.target_base_url.as_deref(), "--target-base-url", action)?;
    let target_dir = required(args.target_dir.as_deref(), "--target-dir", action)?;
    let target = client.find_target(&trusted, target_name)?;
    let dest = target_dir.join(tuf::local_target_file_name(target_name));
    let status = client.download_target(open_fetcher(target_base_url)?.as_ref(), &trusted, &target, &dest)?;
    match status {
        TargetStatus::Downloaded => println!("downloaded {target_name} from role {} to {}", target.role, dest.display()),
        TargetStatus::AlreadyPresent => println!("{target_name} is already up to date at {}", dest.display()),
    }
    Ok(())
}
