//! `tender image`: write an OCI image of one or more releases.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use indicatif::HumanBytes;
use tender_builder::oci::compress::Compression;
use tender_builder::oci::platform::Platform;
use tender_builder::oci::{build_image, ImageRequest, ImageSummary, ReleaseInput};
use tender_builder::recipe::Recipe;

/// Write an OCI image layout (and optionally its tar archive) of released files.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Release recipe (TOML); its [image] section sets environment, entrypoint, user and labels.
    #[arg(long, value_name = "FILE")]
    recipe: PathBuf,

    /// Release to put in the image: the --out directory of `tender release`, its
    /// repo/ directory, or a manifest file. Repeat it with one release per
    /// architecture to write a multi-platform image index.
    #[arg(long = "release", value_name = "PATH", required = true)]
    releases: Vec<PathBuf>,

    /// Version of the release(s), semantic versioning such as 1.2.0.
    #[arg(long, value_name = "X.Y.Z")]
    version: semver::Version,

    /// OCI image layout directory to write. An earlier layout there is replaced.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,

    /// Also write the layout as a tar archive (for `oci-archive:` and `podman load`).
    #[arg(long, value_name = "FILE")]
    archive: Option<PathBuf>,

    /// Tag of the image in the layout (`oci:DIR:TAG`). Default: the version.
    #[arg(long, value_name = "TAG")]
    tag: Option<String>,

    /// Layer compression, overriding the recipe: gzip (readable by Docker) or zstd.
    #[arg(long, value_name = "CODEC", value_parser = parse_compression)]
    compression: Option<Compression>,

    /// Base image below the workspace layer, overriding the recipe: an OCI layout
    /// directory or a root file system tarball (.tar, .tar.gz, .tgz, .tar.zst).
    #[arg(long, value_name = "PATH")]
    base: Option<PathBuf>,

    /// Platform OS/ARCH[/VARIANT] of the release at the same position, such as
    /// linux/arm/v7. Default: Linux and the architecture in the release manifest.
    #[arg(long = "platform", value_name = "PLATFORM")]
    platforms: Vec<Platform>,
}

fn parse_compression(value: &str) -> Result<Compression, String> {
    Compression::parse_layer_codec(value).ok_or_else(|| format!("invalid compression {value:?}; use gzip or zstd"))
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if args.platforms.len() > args.releases.len() {
        anyhow::bail!(
            "{} --platform options for {} --release options; give at most one platform per release, in the same order",
            args.platforms.len(),
            args.releases.len()
        );
    }
    let recipe = Recipe::load(&args.recipe)?;
    let releases = args
        .releases
        .iter()
        .enumerate()
        .map(|(index, path)| ReleaseInput { path: path.clone(), platform: args.platforms.get(index).cloned() })
        .collect();
    let request = ImageRequest {
        recipe,
        version: args.version,
        releases,
        out: args.out,
        archive: args.archive,
        tag: args.tag,
        compression: args.compression,
        base: args.base,
    };
    let summary = build_image(&request)
        .with_context(|| format!("cannot write the image of {} {}", request.recipe.name, request.version))?;
    print_summary(&summary)?;
    Ok(())
}

fn print_summary(summary: &ImageSummary) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "image {}:{}", summary.layout.display(), summary.tag)?;
    writeln!(out, "  digest        {} ({})", summary.digest, summary.media_type)?;
    writeln!(out, "  compression   {}", summary.compression.name())?;
    for image in &summary.images {
        writeln!(out, "  {:<13} manifest {}", image.platform.to_string(), image.manifest_digest)?;
        writeln!(
            out,
            "  {:<13} layer {} ({}), {} base layer(s)",
            "",
            image.layer_digest,
            HumanBytes(image.layer_size),
            image.base_layers
        )?;
    }
    if let Some((path, size)) = &summary.archive {
        writeln!(out, "  archive       {} ({})", path.display(), HumanBytes(*size))?;
    }
    Ok(())
}
