//! `tender repo allow-downgrade`: sign an authorisation for robots to
//! install one exact older release. Robots refuse any release older than the
//! one they committed unless its target in the signed `targets.json` carries
//! `"allow_downgrade": true`, which binds the authorisation to that
//! manifest's length and hashes.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context};
use tender_builder::keydir::check_role_membership;
use tender_builder::publish::{sign_role, Repository};
use tender_builder::rootchain::load_root_chain;
use tender_builder::signer::{load_signers, parse_key_spec, KeySpec};
use tender_builder::snapshot::{publish_targets, SnapshotSigners};
use tender_keys::{format_time, Role, Signed, Targets};

/// How long the re-signed targets.json stays valid.
const TARGETS_VALIDITY: Duration = Duration::from_secs(365 * 86_400);

/// Authorise robots to install an older release (or withdraw it): re-sign targets.json with that release marked.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Repository directory (OUT/repo of `tender release`).
    #[arg(long, value_name = "DIR")]
    repo: PathBuf,

    /// Version of the release robots may go back to, such as 1.0.0.
    #[arg(long, value_name = "X.Y.Z")]
    version: semver::Version,

    /// Withdraw the authorisation instead of granting it.
    #[arg(long)]
    revoke: bool,

    /// Release name, when the repository lists several.
    #[arg(long, value_name = "NAME")]
    name: Option<String>,

    /// Targets (release) key: a key file or cmd:PROGRAM ARG…; repeat for thresholds.
    #[arg(long = "key", value_name = "KEY", required = true, value_parser = parse_key_spec)]
    keys: Vec<KeySpec>,

    /// Snapshot key; repeat for thresholds.
    #[arg(long = "snapshot-key", value_name = "KEY", required = true, value_parser = parse_key_spec)]
    snapshot_keys: Vec<KeySpec>,

    /// Timestamp key; repeat for thresholds.
    #[arg(long = "timestamp-key", value_name = "KEY", required = true, value_parser = parse_key_spec)]
    timestamp_keys: Vec<KeySpec>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let repo = Repository::new(&args.repo);
    let chain = load_root_chain(&repo)?.with_context(|| {
        format!("{} has no metadata/1.root.json; publish a release with `tender release` first", args.repo.display())
    })?;
    let root = chain.latest();
    let bytes = repo
        .read_metadata("targets.json")?
        .with_context(|| format!("{} has no metadata/targets.json", args.repo.display()))?;
    let what = repo.metadata_path("targets.json").display().to_string();
    tender_keys::verify_targets(root, &bytes, &what).with_context(|| format!("{what} does not verify"))?;
    let envelope: Signed<Targets> = serde_json::from_slice(&bytes).with_context(|| format!("{what} is not valid JSON"))?;
    let mut targets = envelope.signed;

    let mut marked = Vec::new();
    for (target_name, target) in targets.targets.iter_mut() {
        let Some(custom) = target.custom.as_mut().and_then(|c| c.as_object_mut()) else { continue };
        let version_matches = custom.get("version").and_then(|v| v.as_str()) == Some(args.version.to_string().as_str());
        let name_matches = args.name.as_deref().is_none_or(|name| custom.get("name").and_then(|v| v.as_str()) == Some(name));
        if version_matches && name_matches {
            if args.revoke {
                custom.remove("allow_downgrade");
            } else {
                custom.insert("allow_downgrade".to_owned(), serde_json::Value::Bool(true));
            }
            marked.push(target_name.clone());
        }
    }
    match marked.len() {
        0 => bail!("{what} lists no release with version {}; check --version and --name", args.version),
        1 => {}
        _ => bail!("{what} lists several releases with version {}: {}; pass --name", args.version, marked.join(", ")),
    }

    let now = SystemTime::now();
    targets.version += 1;
    targets.expires = format_time(now + TARGETS_VALIDITY);
    let version = targets.version;
    let signers = load_signers(&args.keys)?;
    check_role_membership(&signers, root, Role::Targets)?;
    let targets_bytes = sign_role(targets, &signers, root, Role::Targets, &what)?.to_canonical_json()?;
    let snapshot = load_signers(&args.snapshot_keys)?;
    let timestamp = load_signers(&args.timestamp_keys)?;
    let epoch = now.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let published = publish_targets(
        &repo,
        root,
        &targets_bytes,
        version,
        &SnapshotSigners { snapshot: &snapshot, timestamp: &timestamp },
        epoch,
    )?;
    // The top-level copy of the old layout stays equal to metadata/targets.json.
    let legacy = args.repo.join("targets.json");
    tender_builder::fsutil::write_atomic(&legacy, &targets_bytes).with_context(|| format!("cannot write {}", legacy.display()))?;
    let outcome = if args.revoke { "may no longer be installed as a downgrade" } else { "may be installed as a downgrade" };
    writeln!(
        std::io::stdout().lock(),
        "{} {outcome}: targets.json version {}, snapshot {}, timestamp {}",
        marked[0],
        published.targets,
        published.snapshot,
        published.timestamp
    )?;
    Ok(())
}
