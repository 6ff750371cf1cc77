//! `cargo xtask release`: prepare the tools and keys, build `tender`, and run
//! `tender release`.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::tooling::ensure_venv;
use crate::workspace::{build_tender, run_checked, target_dir};

/// Build the build environment and `tender`, then release a recipe.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Release recipe (TOML).
    #[arg(long, value_name = "FILE")]
    recipe: PathBuf,

    /// Release version, such as 1.2.0.
    #[arg(long, value_name = "X.Y.Z")]
    version: String,

    /// Output directory for repo/ and the bundle.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,

    /// Keys directory with root.json and release.key. Default: development
    /// keys in target/tender-dev-keys, generated when missing.
    #[arg(long, value_name = "DIR")]
    keys: Option<PathBuf>,

    /// Architecture to build for, such as aarch64 (cross build with the
    /// recipe's toolchain file for it). Default: the recipe's, else the host's.
    #[arg(long, value_name = "ARCH")]
    target: Option<String>,

    /// Also write an OCI image of the release with `tender image`: the layout
    /// OUT/image and its archive OUT/image.tar.
    #[arg(long)]
    image: bool,

    /// More arguments for `tender release`, after `--`, such as
    /// `-- --source-date-epoch 1700000000`.
    #[arg(last = true, value_name = "TENDER_ARGS")]
    tender_args: Vec<String>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let venv = ensure_venv()?;
    let tender = build_tender()?;
    let keys = match args.keys {
        Some(keys) => keys,
        None => dev_keys(&tender)?,
    };
    run_checked(
        Command::new(&tender)
            .arg("release")
            .arg("--recipe")
            .arg(&args.recipe)
            .arg("--version")
            .arg(&args.version)
            .arg("--out")
            .arg(&args.out)
            .arg("--keys")
            .arg(&keys)
            .arg("--colcon-venv")
            .arg(&venv)
            .args(args.target.iter().flat_map(|target| ["--target", target.as_str()]))
            .args(&args.tender_args),
    )?;
    if args.image {
        run_checked(
            Command::new(&tender)
                .arg("image")
                .arg("--recipe")
                .arg(&args.recipe)
                .arg("--release")
                .arg(&args.out)
                .arg("--version")
                .arg(&args.version)
                .arg("--out")
                .arg(args.out.join("image"))
                .arg("--archive")
                .arg(args.out.join("image.tar")),
        )?;
    }
    Ok(())
}

/// Returns the development keys directory, generating its keys when it has
/// no root.json yet.
fn dev_keys(tender: &Path) -> anyhow::Result<PathBuf> {
    let keys = target_dir().join("tender-dev-keys");
    eprintln!(
        "warning: signing with the development keys in {}; they are for development only, \
         so pass --keys with your fleet's keys for releases that robots install",
        keys.display()
    );
    if !keys.join("root.json").is_file() {
        run_checked(Command::new(tender).arg("keys").arg("generate").arg("--out").arg(&keys))?;
    }
    Ok(keys)
}
