//! Shared by the commands that change the `custom` field of one published
//! release (`allow-downgrade`, `rollout`): find the release's target, edit
//! it, and publish the next targets, snapshot and timestamp, with expiries
//! from the real clock.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context};
use tender_builder::keydir::check_role_membership;
use tender_builder::publish::{sign_role, Repository};
use tender_builder::rootchain::load_root_chain;
use tender_builder::signer::{load_signers, parse_key_spec, KeySpec};
use tender_builder::snapshot::{publish_targets, PublishedVersions, SnapshotSigners};
use tender_keys::{format_time, Role, Signed, Targets};

/// How long the re-signed targets.json stays valid.
const TARGETS_VALIDITY: Duration = Duration::from_secs(365 * 86_400);

/// The release to change and the keys that publish the change.
#[derive(Debug, clap::Args)]
pub struct ReleaseEdit {
    /// Repository directory (OUT/repo of `tender release`).
    #[arg(long, value_name = "DIR")]
    pub repo: PathBuf,

    /// Version of the release to change, such as 1.0.0.
    #[arg(long, value_name = "X.Y.Z")]
    pub version: semver::Version,

    /// Release name, when the repository lists several.
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,

    /// Targets (release) key: a key file or cmd:PROGRAM ARG…; repeat for thresholds.
    #[arg(long = "key", value_name = "KEY", required = true, value_parser = parse_key_spec)]
    pub keys: Vec<KeySpec>,

    /// Snapshot key; repeat for thresholds.
    #[arg(long = "snapshot-key", value_name = "KEY", required = true, value_parser = parse_key_spec)]
    pub snapshot_keys: Vec<KeySpec>,

    /// Timestamp key; repeat for thresholds.
    #[arg(long = "timestamp-key", value_name = "KEY", required = true, value_parser = parse_key_spec)]
    pub timestamp_keys: Vec<KeySpec>,
}

/// Applies `edit` to the `custom` object of the release's target and
/// publishes the result. Returns the target name and the new versions.
pub fn edit_release(
    args: &ReleaseEdit,
    edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>),
) -> anyhow::Result<(String, PublishedVersions)> {
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

    let wanted = args.version.to_string();
    let matches: Vec<String> = targets
        .targets
        .iter()
        .filter(|(_, target)| {
            let custom = target.custom.as_ref();
            let field = |key: &str| custom.and_then(|c| c.get(key)).and_then(|v| v.as_str());
            field("version") == Some(wanted.as_str()) && args.name.as_deref().is_none_or(|name| field("name") == Some(name))
        })
        .map(|(name, _)| name.clone())
        .collect();
    let target_name = match matches.as_slice() {
        [one] => one.clone(),
        [] => bail!("{what} lists no release with version {wanted}; check --version and --name"),
        several => bail!("{what} lists several releases with version {wanted}: {}; pass --name", several.join(", ")),
    };
    let custom = targets
        .targets
        .get_mut(&target_name)
        .and_then(|target| target.custom.as_mut())
        .and_then(|custom| custom.as_object_mut())
        .with_context(|| format!("target {target_name} of {what} has no custom object"))?;
    edit(custom);

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
    let signers = SnapshotSigners { snapshot: &snapshot, timestamp: &timestamp };
    let published = publish_targets(&repo, root, &targets_bytes, version, &signers, epoch)?;
    // The top-level copy of the old layout stays equal to metadata/targets.json.
    let legacy = args.repo.join("targets.json");
    tender_builder::fsutil::write_atomic(&legacy, &targets_bytes).with_context(|| format!("cannot write {}", legacy.display()))?;
    Ok((target_name, published))
}
