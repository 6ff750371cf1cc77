//! `tender release`: build a recipe's tree (or take a prebuilt one) and write
//! a signed release into an output directory.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use indicatif::HumanBytes;
use tender_builder::cross::{build_target, label_target};
use tender_builder::progress::Progress;
use tender_builder::provenance::{source_date_epoch, EpochSource};
use tender_builder::recipe::Recipe;
use tender_builder::keydir::SigningSpecs;
use tender_builder::release::{write_release, ReleaseRequest, ReleaseSummary, TreeSource};
use tender_builder::signer::{parse_key_spec, KeySpec};
use tender_builder::targets::expiry;

/// Build and sign a release: OUT/repo/ (static repository) and OUT/NAME-VERSION.tender (offline bundle).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Release recipe (TOML).
    #[arg(long, value_name = "FILE")]
    recipe: PathBuf,

    /// Release version, semantic versioning such as 1.2.0.
    #[arg(long, value_name = "X.Y.Z")]
    version: semver::Version,

    /// Output directory. An existing OUT/repo keeps its releases and gets this one added.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,

    /// Keys directory with root.json and the key files release.key,
    /// snapshot.key and timestamp.key (see `tender keys generate`).
    #[arg(long, value_name = "DIR")]
    keys: PathBuf,

    /// Targets (release) key instead of KEYS/release.key: a key file or
    /// cmd:PROGRAM ARG… (an external signer). Repeat it to meet a threshold above one.
    #[arg(long = "key", value_name = "KEY", value_parser = parse_key_spec)]
    targets_keys: Vec<KeySpec>,

    /// Snapshot key instead of KEYS/snapshot.key; a key file or cmd:PROGRAM ARG…. Repeatable.
    #[arg(long = "snapshot-key", value_name = "KEY", value_parser = parse_key_spec)]
    snapshot_keys: Vec<KeySpec>,

    /// Timestamp key instead of KEYS/timestamp.key; a key file or cmd:PROGRAM ARG…. Repeatable.
    #[arg(long = "timestamp-key", value_name = "KEY", value_parser = parse_key_spec)]
    timestamp_keys: Vec<KeySpec>,

    /// Time stamp of every file and of the metadata, in seconds since the Unix
    /// epoch. Default: $SOURCE_DATE_EPOCH, else the commit time of the
    /// workspace's git checkout, else 0.
    #[arg(long, value_name = "SECONDS")]
    source_date_epoch: Option<u64>,

    /// Python virtual environment whose bin/ has colcon, CMake and Ninja.
    /// Default: colcon from PATH.
    #[arg(long, value_name = "DIR", conflicts_with = "tree")]
    colcon_venv: Option<PathBuf>,

    /// Architecture to build for, such as aarch64; a cross build uses the
    /// recipe's [cross.toolchains] entry for it. Default: the recipe's
    /// cross.target, else the build host's.
    #[arg(long, value_name = "ARCH")]
    target: Option<String>,

    /// Directory for colcon's build, install and log directories. Default:
    /// OUT/work, or OUT/work-ARCH for a cross build.
    #[arg(long, value_name = "DIR", conflicts_with = "tree")]
    work_dir: Option<PathBuf>,

    /// Package this already built tree instead of running colcon. Its modes,
    /// hardlinks and extended attributes are kept as they are.
    #[arg(long, value_name = "DIR")]
    tree: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let recipe = Recipe::load(&args.recipe)?;
    let environment = std::env::var("SOURCE_DATE_EPOCH").ok();
    let (epoch, epoch_source) =
        source_date_epoch(args.source_date_epoch, environment.as_deref(), &recipe.colcon.workspace)?;
    if epoch_source == EpochSource::Zero {
        tracing::warn!(
            "no --source-date-epoch, no SOURCE_DATE_EPOCH and no git checkout at {}: using 0, so \
             targets.json expires {} and robots that check expiry reject it; pass --source-date-epoch",
            recipe.colcon.workspace.display(),
            humantime::format_rfc3339_seconds(expiry(0)),
        );
    }
    if epoch_source != EpochSource::Zero && expiry(epoch) < std::time::SystemTime::now() {
        tracing::warn!(
            "SOURCE_DATE_EPOCH {epoch} is more than a year ago, so targets.json expires {} and robots \
             that check expiry reject it; pass a later --source-date-epoch",
            humantime::format_rfc3339_seconds(expiry(epoch)),
        );
    }
    // A prebuilt tree is only labelled with its architecture; no toolchain runs.
    let target = match (&args.tree, args.target.as_deref()) {
        (Some(_), Some(architecture)) => label_target(architecture)?,
        _ => build_target(&recipe.cross, args.target.as_deref(), &recipe.path)?,
    };
    let default_work_dir = match target.is_cross() {
        true => args.out.join(format!("work-{}", target.architecture)),
        false => args.out.join("work"),
    };
    let tree = match args.tree {
        Some(tree) => TreeSource::Prebuilt { tree },
        None => TreeSource::Colcon { venv: args.colcon_venv, work_dir: args.work_dir.unwrap_or(default_work_dir) },
    };
    let request = ReleaseRequest {
        recipe,
        version: args.version,
        out: args.out,
        keys: args.keys,
        signing: SigningSpecs {
            targets: args.targets_keys,
            snapshot: args.snapshot_keys,
            timestamp: args.timestamp_keys,
        },
        source_date_epoch: epoch,
        tree,
        target,
        progress: Progress::new(true),
    };
    let summary = write_release(&request).with_context(|| {
        format!("cannot release {} {}", request.recipe.name, request.version)
    })?;
    if let Some(published) = &summary.published {
        let expired = tender_keys::parse_time(&published.timestamp_expires).is_some_and(|t| t <= std::time::SystemTime::now());
        if expired {
            tracing::warn!(
                "timestamp.json expired at {} (SOURCE_DATE_EPOCH plus one day), so TUF clients reject the \
                 repository until `tender timestamp --repo {} --key {}` signs a current one",
                published.timestamp_expires,
                summary.repo.display(),
                request.keys.join("timestamp.key").display()
            );
        }
    }
    print_summary(&request, &summary)?;
    Ok(())
}

fn print_summary(request: &ReleaseRequest, summary: &ReleaseSummary) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    let entries = summary.entries;
    let store = summary.store;
    writeln!(out, "released {} {} for {}", request.recipe.name, request.version, summary.architecture)?;

    writeln!(
        out,
        "  entries       {} ({} files, {} directories, {} symlinks, {} hardlinks)",
        entries.total(),
        entries.files,
        entries.dirs,
        entries.symlinks,
        entries.hardlinks
    )?;
    writeln!(out, "  bytes         {} ({} bytes)", HumanBytes(store.file_bytes), store.file_bytes)?;
    writeln!(
        out,
        "  chunks        {} distinct of {} referenced, {} already in the repository",
        store.unique_chunks, store.chunk_refs, store.reused_chunks
    )?;
    writeln!(out, "  deduplicated  {} ({} bytes)", HumanBytes(store.deduplicated_bytes), store.deduplicated_bytes)?;
    writeln!(out, "  compressed    {} ({} bytes)", HumanBytes(store.compressed_bytes), store.compressed_bytes)?;

    writeln!(out, "  repository    {}", summary.repo.display())?;
    writeln!(out, "  manifest      {} (sha256 {})", summary.manifest_path.display(), summary.manifest_sha256)?;
    let targets_note = if summary.targets_changed { "" } else { ", unchanged: this release was already listed" };
    writeln!(out, "  target        {}", summary.target_path.display())?;
    writeln!(out, "  root.json     version {}", summary.root_version)?;
    writeln!(out, "  targets.json  version {}{targets_note}", summary.targets_version)?;
    if let Some(published) = &summary.published {
        writeln!(out, "  snapshot.json version {}", published.snapshot)?;
        writeln!(out, "  timestamp.json version {}, expires {}", published.timestamp, published.timestamp_expires)?;
    }
    writeln!(out, "  bundle        {} ({})", summary.bundle_path.display(), HumanBytes(summary.bundle_bytes))?;
    for delta in &summary.deltas {
        writeln!(
            out,
            "  delta         from {}: {} for {} files, against {} of manifest and chunks",
            delta.from,
            HumanBytes(delta.bytes),
            delta.files,
            HumanBytes(delta.without_pack)
        )?;
    }
    writeln!(
        out,
        "  source        commit {}, SOURCE_DATE_EPOCH {}",
        summary.source_commit.as_deref().unwrap_or("none"),
        summary.source_date_epoch
    )?;
    writeln!(out, "  time          {:.1} s", summary.elapsed.as_secs_f64())?;

    if !summary.rewrites.is_empty() {
        writeln!(out, "relocated build-machine paths:")?;
        for file in &summary.rewrites {
            for rewrite in &file.rewrites {
                writeln!(out, "  {}: {} -> {} ({}x)", file.path, rewrite.from, rewrite.to, rewrite.count)?;
            }
        }
    }
    Ok(())
}
