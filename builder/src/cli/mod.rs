//! Command-line interface of `tender`: one module per subcommand, each with
//! its clap arguments and a `run` function.

mod audit;
mod fs_image;
mod image;
mod keys;
mod publish;
mod release;
mod repo;
mod timestamp;
mod verify;

use std::io::IsTerminal;

use clap::{Parser, Subcommand};

/// Build, sign and package releases for Tender robots.
#[derive(Debug, Parser)]
#[command(name = "tender", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Keys(keys::Args),
    Release(release::Args),
    Image(image::Args),
    FsImage(fs_image::Args),
    Repo(repo::Args),
    Publish(publish::Args),
    Timestamp(timestamp::Args),
    Audit(audit::Args),
    Verify(verify::Args),
}

/// Parses the command line and runs the subcommand.
pub fn run() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Keys(args) => keys::run(args),
        Command::Release(args) => release::run(args),
        Command::Image(args) => image::run(args),
        Command::FsImage(args) => fs_image::run(args),
        Command::Repo(args) => repo::run(args),
        Command::Publish(args) => publish::run(args),
        Command::Timestamp(args) => timestamp::run(args),
        Command::Audit(args) => audit::run(args),
        Command::Verify(args) => verify::run(args),
    }
}

/// Sends `tracing` events to stderr, filtered by `RUST_LOG` (default `info`).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .without_time()
        .init();
}

/// Returns the error and its causes on one line, without repeated causes.
pub fn error_message(error: &anyhow::Error) -> String {
    tender_updater::error_line(error.as_ref())
}

/// Returns whether `error` is a write to a closed stdout, such as
/// `tender release ... | head -1`, which is not a failure.
pub fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error
        .chain()
        .filter_map(|cause| cause.downcast_ref::<std::io::Error>())
        .any(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn error_message_skips_repeated_causes() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let error = anyhow::Error::new(io).context("cannot read keys/root.json: no such file").context("cannot release");
        assert_eq!(error_message(&error), "cannot release: cannot read keys/root.json: no such file");
    }

    #[test]
    fn release_accepts_tree_instead_of_colcon() {
        let cli = Cli::try_parse_from([
            "tender", "release", "--recipe", "r.toml", "--version", "1.0.0", "--out", "out", "--keys", "keys", "--tree",
            "install",
        ])
        .expect("valid arguments");
        assert!(matches!(cli.command, Command::Release(_)));
    }

    #[test]
    fn image_takes_several_releases_and_platforms() {
        let cli = Cli::try_parse_from([
            "tender", "image", "--recipe", "r.toml", "--version", "1.0.0", "--out", "img", "--release", "amd64",
            "--release", "arm64", "--platform", "linux/amd64", "--platform", "linux/arm64", "--compression", "zstd",
        ])
        .expect("valid arguments");
        assert!(matches!(cli.command, Command::Image(_)));
    }

    #[test]
    fn image_rejects_unknown_compression() {
        let result = Cli::try_parse_from([
            "tender", "image", "--recipe", "r.toml", "--version", "1.0.0", "--out", "img", "--release", "out",
            "--compression", "xz",
        ]);
        assert!(result.is_err());
    }

    #[test]
    fn release_rejects_invalid_version() {
        let result = Cli::try_parse_from([
            "tender", "release", "--recipe", "r.toml", "--version", "1.0", "--out", "out", "--keys", "keys",
        ]);
        assert!(result.is_err());
    }
}
