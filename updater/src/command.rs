//! Running the commands a release or the robot configuration names: the
//! self-test, the health check and the service manager.

use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Exit of a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// Non-zero exit or a signal, with the end of its output.
    Failed { status: String, output: String },
    TimedOut { after: Duration },
    /// The command could not be started at all.
    NotStarted { reason: String },
}

impl Outcome {
    pub fn is_success(&self) -> bool {
        matches!(self, Outcome::Success)
    }

    /// Describes the outcome in one line for logs and error messages.
    pub fn describe(&self) -> String {
        match self {
            Outcome::Success => "succeeded".to_owned(),
            Outcome::Failed { status, output } if output.is_empty() => format!("failed ({status})"),
            Outcome::Failed { status, output } => format!("failed ({status}): {output}"),
            Outcome::TimedOut { after } => format!("timed out after {}", humantime::format_duration(*after)),
            Outcome::NotStarted { reason } => format!("could not start: {reason}"),
        }
    }
}

/// Bytes at the end of the output searched for the lines kept in messages.
const OUTPUT_TAIL: u64 = 4096;
/// Lines of output kept in messages, and the characters kept of each.
const TAIL_LINES: usize = 3;
const TAIL_LINE_CHARS: usize = 240;
const POLL: Duration = Duration::from_millis(20);

/// Replaces `{name}` placeholders in every argument.
pub fn expand(argv: &[String], values: &[(&str, &str)]) -> Vec<String> {
    argv.iter()
        .map(|arg| values.iter().fold(arg.clone(), |acc, (name, value)| acc.replace(&format!("{{{name}}}"), value)))
        .collect()
}

/// Runs `argv` in `cwd`, kills it after `timeout`, and keeps the end of its
/// combined output for the message. The command runs in a process group of
/// its own, and a timeout kills the whole group, so a shell's children do
/// not outlive it and keep a mounted slot busy.
pub fn run(argv: &[String], cwd: Option<&Path>, timeout: Duration) -> Outcome {
    let Some((program, args)) = argv.split_first() else {
        return Outcome::NotStarted { reason: "the command is empty".to_owned() };
    };
    let mut log = match tempfile::tempfile() {
        Ok(file) => file,
        Err(e) => return Outcome::NotStarted { reason: format!("cannot create output file: {e}") },
    };
    let (stdout, stderr) = match (log.try_clone(), log.try_clone()) {
        (Ok(a), Ok(b)) => (a, b),
        _ => return Outcome::NotStarted { reason: "cannot share the output file".to_owned() },
    };
    let mut command = Command::new(program);
    command.args(args).stdin(Stdio::null()).stdout(stdout).stderr(stderr).process_group(0);
    if let Some(dir) = cwd {
        command.current_dir(dir);
    }
    tracing::debug!(?argv, "running command");
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => return Outcome::NotStarted { reason: format!("{program}: {e}") },
    };
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() >= timeout => {
                if rustix::process::kill_process_group(rustix::process::Pid::from_child(&child), rustix::process::Signal::KILL).is_err() {
                    let _ = child.kill();
                }
                let _ = child.wait();
                return Outcome::TimedOut { after: timeout };
            }
            Ok(None) => std::thread::sleep(POLL),
            Err(e) => return Outcome::NotStarted { reason: format!("cannot wait for {program}: {e}") },
        }
    };
    if status.success() {
        return Outcome::Success;
    }
    Outcome::Failed { status: status.to_string(), output: output_tail(&mut log) }
}

/// Returns the last [`TAIL_LINES`] non-empty lines of the output joined with
/// ` | `, each cut to [`TAIL_LINE_CHARS`]. A line cut by the byte limit is
/// left out.
fn output_tail(log: &mut std::fs::File) -> String {
    let len = log.seek(SeekFrom::End(0)).unwrap_or(0);
    let start = len.saturating_sub(OUTPUT_TAIL);
    let mut bytes = Vec::new();
    if log.seek(SeekFrom::Start(start)).is_err() || log.read_to_end(&mut bytes).is_err() {
        return String::new();
    }
    let text = String::from_utf8_lossy(&bytes);
    let mut lines: Vec<&str> = text.lines().collect();
    if start > 0 && lines.len() > 1 {
        lines.remove(0);
    }
    let kept: Vec<String> = lines
        .iter()
        .map(|line| line.trim())
        .filter(|line| !line.is_empty())
        .map(|line| {
            if line.chars().count() > TAIL_LINE_CHARS {
                format!("{}…", line.chars().take(TAIL_LINE_CHARS).collect::<String>())
            } else {
                line.to_owned()
            }
        })
        .collect();
    kept[kept.len().saturating_sub(TAIL_LINES)..].join(" | ")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Turns string literals into an argv.
    pub(crate) fn argv(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn command_failure_keeps_output_tail() {
        let outcome = run(&argv(&["sh", "-c", "echo motor fault; exit 3"]), None, Duration::from_secs(5));
        let Outcome::Failed { status, output } = outcome else { panic!("expected failure, got {outcome:?}") };
        assert!(status.contains('3'), "{status}");
        assert_eq!(output, "motor fault");
    }

    #[test]
    fn command_is_killed_after_timeout() {
        let outcome = run(&argv(&["sleep", "5"]), None, Duration::from_millis(100));
        assert!(matches!(outcome, Outcome::TimedOut { .. }), "{outcome:?}");
    }

    #[test]
    fn timeout_kills_the_children_too() {
        let dir = tempfile::tempdir().expect("tempdir");
        let marker = dir.path().join("child-ran");
        let script = format!("(sleep 1; touch {}) & wait", marker.display());
        let outcome = run(&argv(&["sh", "-c", &script]), None, Duration::from_millis(200));
        assert!(matches!(outcome, Outcome::TimedOut { .. }), "{outcome:?}");
        std::thread::sleep(Duration::from_millis(1500));
        assert!(!marker.exists(), "the shell's child outlived the timeout");
    }

    #[test]
    fn placeholders_are_expanded() {
        let expanded = expand(&argv(&["{slot}/bin/x", "--unit={unit}"]), &[("slot", "/s"), ("unit", "u")]);
        assert_eq!(expanded, argv(&["/s/bin/x", "--unit=u"]));
    }
}
