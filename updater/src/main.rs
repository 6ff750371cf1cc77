//! `tenderd`: installs verified releases into A/B slots on a robot.

mod remote;
mod tuf_client_command;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use std::io::Write as _;

use clap::{Parser, Subcommand};
use tender_updater::config::{Config, DEFAULT_CONFIG_PATH};
use tender_updater::state::{Phase, State};
use tender_updater::status::{event_line, Status};
use tender_updater::updater::{InstallOptions, Updater};

/// Writes a line to stdout; a closed pipe (`tenderd status | head -1`)
/// surfaces as an error that `main` treats as success.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)?
    }};
}

/// Exit code of an install whose release failed its trial and was reverted.
const EXIT_REVERTED: u8 = 2;
/// Exit code of `tenderd usb` when a bundle was rejected or failed to install.
const EXIT_USB_FAILED: u8 = 1;

#[derive(Debug, Parser)]
#[command(name = "tenderd", version, about = "Install signed Tender releases into A/B slots and keep the robot bootable")]
struct Cli {
    /// Configuration file [default: /etc/tender/updater.toml below --root].
    #[arg(long, global = true)]
    config: Option<PathBuf>,

    /// Directory that stands for `/`: every absolute path of the configuration is taken below it.
    #[arg(long, global = true, default_value = "/")]
    root: PathBuf,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Verify a release and install it: a `.tender` bundle, a repository directory, an http(s):// repository URL or an oci://HOST/REPOSITORY[:TAG] registry.
    Install {
        source: String,
        /// Install a release even though it failed its health check before.
        #[arg(long)]
        allow_reverted: bool,
        /// From a repository, install this version instead of the newest (X.Y.Z).
        #[arg(long, value_name = "X.Y.Z")]
        version: Option<semver::Version>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show the installed version, active slot, state and health failures.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Show what happened, oldest first.
    History {
        #[arg(long)]
        json: bool,
    },
    /// Switch to the other slot when it holds a verified earlier release.
    Rollback,
    /// Mark the release on trial as good now.
    #[command(visible_alias = "mark-good")]
    Commit,
    /// Mark the release on trial as bad now: revert to the committed release.
    MarkBad,
    /// Finish or undo an install that was interrupted, for example at boot.
    Recover,
    /// Poll the configured repository, stage new releases and switch by policy (the daemon).
    Run {
        /// Run one update cycle and exit.
        #[arg(long)]
        once: bool,
    },
    /// Switch to the staged release now and run its health check.
    Apply,
    /// Refresh the trusted TUF metadata from a repository (URL or directory) without installing.
    Refresh {
        repository: String,
        #[arg(long)]
        json: bool,
    },
    /// Stop the daemon from staging or switching new releases.
    Hold,
    /// Let the daemon stage and switch new releases again.
    Resume,
    /// Run the TUF client alone: store a trusted root, refresh metadata, download a target.
    TufClient(tuf_client_command::TufClientArgs),
    /// Install the newest eligible bundle from the USB mount points in `[usb]`, and write a result file next to each bundle.
    Usb {
        /// Scan once, waiting for copies in progress to settle, then exit.
        #[arg(long)]
        once: bool,
    },
    /// Print the deployment metrics in the Prometheus text format.
    Metrics {
        /// Write them to metrics.textfile instead, for node_exporter.
        #[arg(long)]
        textfile: bool,
    },
    /// Print the running daemon's state events as JSON lines.
    Events {
        /// Past events printed first, oldest first.
        #[arg(long, default_value_t = 0)]
        replay: usize,
        /// Exit after this many events.
        #[arg(long)]
        count: Option<usize>,
    },
}

fn config_path(cli: &Cli) -> PathBuf {
    match &cli.config {
        Some(path) => path.clone(),
        None => tender_updater::config::under_root(&cli.root, std::path::Path::new(DEFAULT_CONFIG_PATH)),
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    // The TUF client needs no configuration file.
    if let Command::TufClient(args) = cli.command {
        tuf_client_command::run(args)?;
        return Ok(ExitCode::SUCCESS);
    }
    let config = Config::load(&config_path(&cli), &cli.root)?;
    if let Some(code) = remote::forward(&config, &cli.command)? {
        return Ok(code);
    }
    match cli.command {
        Command::Status { json } => {
            let state = State::load(&config.state_dir)?;
            let status = Status::of_robot(&state, &config);
            if json {
                out!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                out!("{}", status.to_text());
            }
        }
        Command::History { json } => {
            let state = State::load(&config.state_dir)?;
            if json {
                out!("{}", serde_json::to_string_pretty(&state.history)?);
            } else {
                for event in &state.history {
                    out!("{}", event_line(event));
                }
            }
        }
        Command::Install { source, allow_reverted, version, json } => {
            let updater = Updater::open(config)?;
            let report = updater
                .install(&source, &InstallOptions { allow_reverted, version })
                .with_context(|| format!("install from {source} failed"))?;
            if json {
                out!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                out!("{} in slot {}: {} ({})", report.release, report.slot, report.phase, report.detail);
                out!(
                    "staged: {} files kept, {} copied, {} rebuilt; {} bytes written, {} chunks fetched ({} bytes, {} planned)",
                    report.stats.files_kept,
                    report.stats.files_copied,
                    report.stats.files_rebuilt,
                    report.stats.bytes_written,
                    report.stats.chunks_fetched,
                    report.stats.bytes_fetched,
                    report.stats.bytes_planned,
                );
            }
            if !matches!(report.phase, Phase::Committed | Phase::Trial) {
                return Ok(ExitCode::from(EXIT_REVERTED));
            }
        }
        Command::Rollback => {
            let release = Updater::open(config)?.rollback()?;
            out!("rolled back to {release}");
        }
        Command::Commit => {
            let release = Updater::open(config)?.commit()?;
            out!("committed {release}");
        }
        Command::MarkBad => {
            let release = Updater::open(config)?.mark_bad()?;
            out!("marked bad; back on {release}");
        }
        Command::Recover => {
            let updater = Updater::open(config)?;
            updater.recover()?;
            let state = updater.load_state()?;
            out!("{}", Status::new(&state, updater.slots()).to_text());
        }
        Command::Run { once } => {
            tender_updater::daemon::run(&config, once.then_some(1))?;
        }
        Command::Apply => {
            let report = Updater::open(config)?.apply()?;
            out!("{} in slot {}: {} ({})", report.release, report.slot, report.phase, report.detail);
            if !matches!(report.phase, Phase::Committed | Phase::Trial) {
                return Ok(ExitCode::from(EXIT_REVERTED));
            }
        }
        Command::Refresh { repository, json } => {
            let report = Updater::open(config)?.refresh(&repository)?;
            if json {
                out!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                out!(
                    "trusted root {}, timestamp {}, snapshot {}, targets {}",
                    report.root, report.timestamp, report.snapshot, report.targets
                );
                for target in &report.downgrades {
                    out!("downgrade allowed: {target}");
                }
            }
        }
        Command::Hold => {
            Updater::open(config)?.set_hold(true)?;
            out!("held: the daemon stages and switches nothing new until `tenderd resume`");
        }
        Command::Resume => {
            Updater::open(config)?.set_hold(false)?;
            out!("resumed");
        }
        Command::Usb { once } => {
            if config.usb.mounts.is_empty() {
                anyhow::bail!("usb.mounts is empty in the configuration; add mount points such as [\"/media/*\"]");
            }
            if !once {
                tender_updater::usb::watch(&config);
                return Ok(ExitCode::SUCCESS);
            }
            let results = tender_updater::usb::scan_once(&config)?;
            if results.is_empty() {
                out!("no new bundle on the USB mount points");
            }
            let mut code = ExitCode::SUCCESS;
            for result in &results {
                out!("{}: {} {} ({})", result.bundle.display(), result.outcome, result.release.as_deref().unwrap_or("-"), result.detail);
                match result.outcome.as_str() {
                    "rejected" | "failed" => code = ExitCode::from(EXIT_USB_FAILED),
                    "reverted" if code == ExitCode::SUCCESS => code = ExitCode::from(EXIT_REVERTED),
                    _ => {}
                }
            }
            return Ok(code);
        }
        Command::Metrics { textfile } => {
            if textfile {
                let Some(path) = &config.metrics.textfile else {
                    anyhow::bail!("metrics.textfile is not set in the configuration");
                };
                tender_updater::metrics::write_textfile(&config);
                out!("wrote {}", path.display());
            } else {
                out!("{}", tender_updater::metrics::render_for(&config)?.trim_end());
            }
        }
        Command::Events { replay, count } => {
            let Some(mut connection) = tender_updater::control::client::connect(&config)? else {
                anyhow::bail!("no tenderd serves {}; start `tenderd run` first", config.control.socket.display());
            };
            let mut printed = 0usize;
            let mut failure = None;
            connection.events(replay, |event| {
                let line = serde_json::to_string(&event).unwrap_or_default();
                if let Err(error) = writeln!(std::io::stdout().lock(), "{line}") {
                    failure = Some(error);
                    return false;
                }
                printed += 1;
                count.is_none_or(|count| printed < count)
            })?;
            if let Some(error) = failure {
                return Err(error.into());
            }
        }
        Command::TufClient(_) => unreachable!("handled before the configuration is loaded"),
    }
    Ok(ExitCode::SUCCESS)
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error
        .chain()
        .filter_map(|cause| cause.downcast_ref::<std::io::Error>())
        .any(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
}

fn main() -> ExitCode {
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let mut cli = Cli::parse();
    // Commands run from inside a slot (the pre-switch self-test, for one),
    // so a relative root would name another place there.
    match std::path::absolute(&cli.root) {
        Ok(root) => cli.root = root,
        Err(error) => {
            eprintln!("tenderd: error: cannot make --root {} absolute: {error}; pass an absolute path", cli.root.display());
            return ExitCode::FAILURE;
        }
    }
    match run(cli) {
        Ok(code) => code,
        Err(error) if is_broken_pipe(&error) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("tenderd: error: {}", tender_updater::error_line(error.as_ref()));
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_valid() {
        super::Cli::command().debug_assert();
    }
}
