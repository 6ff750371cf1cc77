//! `tender repo rollout`: set the staged rollout of a published release:
//! its waves, a pause, and its channels. Robots read them from the signed
//! `custom.rollout` field of the release's target.

use std::io::Write;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context};

use super::retarget::{edit_release, ReleaseEdit};

/// Set a release's rollout waves, pause it, or limit it to channels.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    release: ReleaseEdit,

    /// Waves as AFTER:PERCENT, AFTER counted from now, such as `0s:5 24h:50 3d:100`
    /// (canary first). Without it the waves stay as they are.
    #[arg(long, value_name = "AFTER:PERCENT", num_args = 1..)]
    waves: Vec<String>,

    /// Halt the rollout: robots that have not installed the release do not start it.
    #[arg(long, conflicts_with = "resume")]
    pause: bool,

    /// Continue a paused rollout.
    #[arg(long)]
    resume: bool,

    /// Channels the release is published to, such as stable or beta; repeat it.
    #[arg(long = "channel", value_name = "NAME")]
    channels: Vec<String>,
}

/// Parses `AFTER:PERCENT` into an RFC 3339 start and a percentage.
fn parse_wave(text: &str, now: SystemTime) -> anyhow::Result<serde_json::Value> {
    let (after, percent) = text
        .split_once(':')
        .with_context(|| format!("wave {text:?} is invalid; write it as AFTER:PERCENT, such as 24h:50"))?;
    let after: Duration = humantime::parse_duration(after).with_context(|| format!("wave {text:?}: invalid duration {after:?}"))?;
    let percent: u32 = percent.parse().with_context(|| format!("wave {text:?}: invalid percentage {percent:?}"))?;
    if percent > 100 {
        bail!("wave {text:?}: the percentage must be 0 to 100");
    }
    let start = humantime::format_rfc3339_seconds(now + after).to_string();
    Ok(serde_json::json!({"start": start, "percent": percent}))
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let now = SystemTime::now();
    let waves = args.waves.iter().map(|wave| parse_wave(wave, now)).collect::<anyhow::Result<Vec<_>>>()?;
    if waves.is_empty() && !args.pause && !args.resume && args.channels.is_empty() {
        bail!("nothing to change; pass --waves, --pause, --resume or --channel");
    }
    let mut summary = String::new();
    let (target, published) = edit_release(&args.release, |custom| {
        let rollout = custom.entry("rollout").or_insert_with(|| serde_json::json!({}));
        if !rollout.is_object() {
            *rollout = serde_json::json!({});
        }
        if !waves.is_empty() {
            rollout["waves"] = serde_json::Value::Array(waves.clone());
        }
        if args.pause {
            rollout["paused"] = serde_json::Value::Bool(true);
        }
        if args.resume {
            rollout["paused"] = serde_json::Value::Bool(false);
        }
        if !args.channels.is_empty() {
            rollout["channels"] = serde_json::json!(args.channels);
        }
        summary = rollout.to_string();
    })?;
    writeln!(
        std::io::stdout().lock(),
        "{target} rollout {summary}: targets.json version {}, snapshot {}, timestamp {}",
        published.targets,
        published.snapshot,
        published.timestamp
    )?;
    Ok(())
}
