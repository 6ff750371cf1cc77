//! Forwards a command to a running daemon over the control socket, and
//! prints the daemon's result as the command prints its local result.

use std::process::ExitCode;

use anyhow::Context;
use tender_updater::config::Config;
use tender_updater::control::{client, Request};
use tender_updater::state::{Event, Phase};
use tender_updater::status::{event_line, Status};

use crate::{Command, EXIT_REVERTED};

/// Returns the request that stands for `command`, or `None` for commands
/// that always run in this process.
fn request_for(command: &Command) -> anyhow::Result<Option<Request>> {
    Ok(Some(match command {
        Command::Status { .. } => Request::Status,
        Command::History { .. } => Request::History,
        Command::Install { source, allow_reverted, version, .. } => {
            // The daemon has its own working directory, so a local path goes as an absolute one.
            let path = std::path::Path::new(source);
            let source = if path.exists() {
                std::path::absolute(path).with_context(|| format!("cannot resolve the path {source}"))?.display().to_string()
            } else {
                source.clone()
            };
            Request::Deploy { source, version: version.clone(), allow_reverted: *allow_reverted }
        }
        Command::Rollback => Request::Rollback,
        Command::Commit => Request::Commit,
        Command::Apply => Request::Apply,
        Command::Hold => Request::Hold,
        Command::Resume => Request::Resume,
        _ => return Ok(None),
    }))
}

/// Runs `command` through the daemon when one serves the control socket.
/// Returns `None` when no daemon runs, so the caller works directly.
pub fn forward(config: &Config, command: &Command) -> anyhow::Result<Option<ExitCode>> {
    let Some(request) = request_for(command)? else { return Ok(None) };
    let Some(mut connection) = client::connect(config)? else { return Ok(None) };
    tracing::debug!(socket = %config.control.socket.display(), ?request, "forwarding to the running daemon");
    let result = connection.request(&request)?;
    let mut stdout = std::io::stdout().lock();
    print(&mut stdout, command, result)
}

fn print(out: &mut impl std::io::Write, command: &Command, result: serde_json::Value) -> anyhow::Result<Option<ExitCode>> {
    let text = |value: &serde_json::Value| value.as_str().map(str::to_owned).unwrap_or_else(|| value.to_string());
    match command {
        Command::Status { json: true } | Command::History { json: true } | Command::Install { json: true, .. } => {
            writeln!(out, "{}", serde_json::to_string_pretty(&result)?)?;
        }
        Command::Status { json: false } => {
            let status: Status = serde_json::from_value(result.clone()).context("the daemon sent a status of an unknown shape")?;
            writeln!(out, "{}", status.to_text())?;
        }
        Command::History { json: false } => {
            let history: Vec<Event> = serde_json::from_value(result.clone()).context("the daemon sent a history of an unknown shape")?;
            for event in &history {
                writeln!(out, "{}", event_line(event))?;
            }
        }
        Command::Install { json: false, .. } | Command::Apply => {
            let field = |name: &str| result.get(name).map(text).unwrap_or_default();
            writeln!(out, "{} in slot {}: {} ({})", field("release"), field("slot"), field("phase"), field("detail"))?;
        }
        Command::Rollback => writeln!(out, "rolled back to {}", text(&result))?,
        Command::Commit => writeln!(out, "committed {}", text(&result))?,
        Command::Hold => writeln!(out, "held: the daemon stages and switches nothing new until `tenderd resume`")?,
        Command::Resume => writeln!(out, "resumed")?,
        _ => {}
    }
    if matches!(command, Command::Install { .. } | Command::Apply) {
        let phase: Option<Phase> = result.get("phase").and_then(|p| serde_json::from_value(p.clone()).ok());
        if phase != Some(Phase::Committed) {
            return Ok(Some(ExitCode::from(EXIT_REVERTED)));
        }
    }
    Ok(Some(ExitCode::SUCCESS))
}
