//! `cargo xtask test`: install what the tests need, build everything, and
//! run every test of the workspace.

use std::process::Command;

use crate::system::ensure_packages;
use crate::tooling::ensure_venv;
use crate::workspace::{cargo, root, run_checked};

/// Install missing tools, build the workspace and run all tests.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// More arguments for `cargo test`, after `--`, such as `-- --test install`.
    #[arg(last = true, value_name = "CARGO_TEST_ARGS")]
    cargo_test_args: Vec<String>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    ensure_packages()?;
    let venv = ensure_venv()?;
    // The end-to-end tests run the `tender` and `tenderd` binaries, which
    // `cargo test` alone does not build.
    run_checked(Command::new(cargo()).args(["build", "--workspace", "--locked"]).current_dir(root()))?;
    run_checked(
        Command::new(cargo())
            .args(["test", "--workspace", "--locked", "--no-fail-fast"])
            .args(&args.cargo_test_args)
            .env("TENDER_VENV", &venv)
            .current_dir(root()),
    )
}
