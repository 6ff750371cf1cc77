//! `tender fs-image`: pack a release into a filesystem image for robots
//! whose slots are partitions.

use std::path::PathBuf;

use anyhow::Context;
use indicatif::HumanBytes;
use tender_builder::fsimage::{write_fs_image, FsImageRequest, FsKind};
use tender_builder::oci::source::Release;
use tender_builder::provenance::{source_date_epoch, EpochSource};
use tender_builder::recipe::Recipe;

/// Write an ext4, erofs or squashfs image of a release, reproducibly.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Release recipe (TOML); its name and runtime_path are used.
    #[arg(long, value_name = "FILE")]
    recipe: PathBuf,

    /// The `--out` directory of `tender release`, its repo/ directory or a manifest file.
    #[arg(long, value_name = "PATH")]
    release: PathBuf,

    /// Version of the release.
    #[arg(long, value_name = "X.Y.Z")]
    version: semver::Version,

    /// File system type: ext4, erofs or squashfs.
    #[arg(long = "type", value_name = "TYPE", value_parser = parse_kind)]
    kind: FsKind,

    /// Size of an ext4 image, such as 256MiB.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    size: Option<u64>,

    /// Root filesystem tarball extracted below the release's files.
    #[arg(long, value_name = "FILE")]
    base: Option<PathBuf>,

    /// Time stamp of every file. Default: $SOURCE_DATE_EPOCH, else the
    /// release's own SOURCE_DATE_EPOCH.
    #[arg(long, value_name = "SECONDS")]
    source_date_epoch: Option<u64>,

    /// Image file to write.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
}

fn parse_kind(text: &str) -> Result<FsKind, String> {
    FsKind::parse(text).ok_or_else(|| format!("unknown file system type {text:?}; use ext4, erofs or squashfs"))
}

fn parse_size(text: &str) -> Result<u64, String> {
    let units: [(&str, u64); 4] = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10), ("", 1)];
    for (suffix, factor) in units {
        if let Some(number) = text.strip_suffix(suffix) {
            if let Ok(value) = number.trim().parse::<u64>() {
                return Ok(value * factor);
            }
        }
    }
    Err(format!("invalid size {text:?}; write it like 256MiB or 2GiB"))
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let recipe = Recipe::load(&args.recipe)?;
    let release = Release::open(&args.release, &recipe.name, &args.version)?;
    let environment = std::env::var("SOURCE_DATE_EPOCH").ok();
    let epoch = match (args.source_date_epoch, environment.as_deref()) {
        (None, None) => release.manifest.provenance.source_date_epoch,
        (given, environment) => source_date_epoch(given, environment, &recipe.colcon.workspace).map(|(epoch, _): (u64, EpochSource)| epoch)?,
    };
    let request = FsImageRequest {
        release,
        kind: args.kind,
        runtime_path: recipe.runtime_path.clone(),
        base: args.base,
        size: args.size,
        source_date_epoch: epoch,
        out: args.out,
    };
    let summary = write_fs_image(&request).with_context(|| format!("cannot write the image {}", request.out.display()))?;
    println!("{} {} ({}, sha256 {})", summary.path.display(), HumanBytes(summary.bytes), args_kind(request.kind), summary.sha256);
    Ok(())
}

fn args_kind(kind: FsKind) -> &'static str {
    match kind {
        FsKind::Ext4 => "ext4",
        FsKind::Erofs => "erofs",
        FsKind::Squashfs => "squashfs",
    }
}
