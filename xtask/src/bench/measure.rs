//! Wall time and peak memory of a command, and medians of repeated samples.
//!
//! Every timed command runs under a small Python wrapper that reports its
//! wall time, and under GNU time (`/usr/bin/time`), which reports the
//! maximum resident set size from `wait4`, so Tender and the other tools are
//! measured the same way. For a pipeline such as `zstd -dc | tar -x`, that
//! maximum is the largest single process of the pipeline, not the sum of its
//! processes. GNU time is small, so the smallest value it reports is about
//! 1 MiB; Python's own `RUSAGE_CHILDREN` would report at least the wrapper's
//! size, about 14 MiB, because the child starts as a copy of it.

use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};

/// Runs the command given after the timeout in seconds under GNU time, in
/// a process group of its own, then prints `seconds max_rss_kib exit_code`
/// on a line of its own. A command that outlives the timeout is killed with
/// its group and reported with the code `timeout`.
const MEASURE_PY: &str = r#"
import os, signal, subprocess, sys, tempfile, time
fd, report = tempfile.mkstemp()
os.close(fd)
start = time.perf_counter()
child = subprocess.Popen(["/usr/bin/time", "--quiet", "-f", "%M", "-o", report] + sys.argv[2:], start_new_session=True)
try:
    code = child.wait(timeout=float(sys.argv[1]))
except subprocess.TimeoutExpired:
    os.killpg(child.pid, signal.SIGKILL)
    child.wait()
    code = "timeout"
elapsed = time.perf_counter() - start
with open(report) as lines:
    fields = lines.read().split()
os.unlink(report)
sys.stdout.flush()
print(f"\n{elapsed:.6f} {fields[-1] if fields else 0} {code}")
"#;

/// Default maximum time of one measured command.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// Wall time and peak memory of one run.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub seconds: f64,
    pub max_rss_kib: u64,
}

/// One measured run and the standard output of the measured command.
#[derive(Debug)]
pub struct Measured {
    pub sample: Sample,
    pub stdout: String,
}

/// Measures `argv` with [`DEFAULT_TIMEOUT`].
pub fn measure(argv: &[String]) -> anyhow::Result<Sample> {
    Ok(measure_with(argv, &[], DEFAULT_TIMEOUT)?.sample)
}

/// Measures `argv` with extra environment variables, killing it after
/// `timeout`. Fails when the command fails or times out, with the end of
/// its standard error.
pub fn measure_with(argv: &[String], env: &[(&str, &str)], timeout: Duration) -> anyhow::Result<Measured> {
    let output = Command::new("python3")
        .arg("-c")
        .arg(MEASURE_PY)
        .arg(timeout.as_secs().to_string())
        .args(argv)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .context("cannot run python3 to measure a command")?;
    let text = String::from_utf8_lossy(&output.stdout);
    let (child_stdout, line) = text.trim_end().rsplit_once('\n').unwrap_or(("", text.trim_end()));
    let fields: Vec<&str> = line.split_whitespace().collect();
    let [seconds, rss, code] = fields[..] else {
        bail!("cannot parse the measurement of {argv:?}: {line:?}");
    };
    if code != "0" {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(20).collect::<Vec<_>>().into_iter().rev().collect();
        bail!("{argv:?} exited with {code} while measured; its standard error ends with:\n{}", tail.join("\n"));
    }
    let sample = Sample {
        seconds: seconds.parse().with_context(|| format!("invalid time {seconds:?} from the measurement wrapper"))?,
        max_rss_kib: rss.parse().with_context(|| format!("invalid peak memory {rss:?} from the measurement wrapper"))?,
    };
    Ok(Measured { sample, stdout: child_stdout.to_owned() })
}

/// Median of `values`; the upper one of the two middle values for an even
/// count. `values` must not be empty.
pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Medians of repeated samples.
#[derive(Debug, Clone)]
pub struct Summary {
    pub seconds: f64,
    pub max_rss_kib: f64,
    pub all_seconds: Vec<f64>,
}

impl Summary {
    /// Peak memory in bytes.
    pub fn max_rss_bytes(&self) -> f64 {
        self.max_rss_kib * 1024.0
    }
}

/// Summarizes `samples`, which must not be empty.
pub fn summarize(samples: &[Sample]) -> Summary {
    let mut seconds: Vec<f64> = samples.iter().map(|s| s.seconds).collect();
    let all_seconds = seconds.clone();
    let mut rss: Vec<f64> = samples.iter().map(|s| s.max_rss_kib as f64).collect();
    Summary { seconds: median(&mut seconds), max_rss_kib: median(&mut rss), all_seconds }
}

/// Median of byte counts that should be equal in every run.
pub fn median_bytes(values: &[u64]) -> u64 {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    sorted.get(sorted.len() / 2).copied().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 3.0);
    }

    #[test]
    fn median_bytes_of_empty_list_is_zero() {
        assert_eq!(median_bytes(&[]), 0);
        assert_eq!(median_bytes(&[5, 1, 9]), 5);
    }

    #[test]
    fn measure_reports_output_and_failure() {
        let argv = vec!["sh".to_owned(), "-c".to_owned(), "echo hello".to_owned()];
        let measured = measure_with(&argv, &[], Duration::from_secs(10)).expect("measure echo");
        assert_eq!(measured.stdout.trim(), "hello");
        assert!(measured.sample.seconds >= 0.0);

        let failing = vec!["sh".to_owned(), "-c".to_owned(), "echo broken >&2; exit 3".to_owned()];
        let error = measure_with(&failing, &[], Duration::from_secs(10)).expect_err("exit 3");
        let message = error.to_string();
        assert!(message.contains("exited with 3"), "{message}");
        assert!(message.contains("broken"), "{message}");
    }

    #[test]
    fn measure_reports_small_peak_memory() {
        let argv = vec!["true".to_owned()];
        let measured = measure_with(&argv, &[], Duration::from_secs(10)).expect("measure true");
        assert!(measured.sample.max_rss_kib > 0, "{:?}", measured.sample);
        assert!(measured.sample.max_rss_kib < 8 * 1024, "{:?}", measured.sample);
    }

    #[test]
    fn measure_kills_command_after_timeout() {
        let argv = vec!["sleep".to_owned(), "5".to_owned()];
        let error = measure_with(&argv, &[], Duration::from_secs(1)).expect_err("timeout");
        assert!(error.to_string().contains("timeout"), "{error}");
    }
}
