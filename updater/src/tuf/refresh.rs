//! The metadata refresh of the TUF client workflow, steps 5.2 to 5.6.6:
//! trusted root, root update loop, timestamp, snapshot and top-level targets.
//!
//! Each step verifies a file completely before it becomes trusted, and then
//! persists it, as the specification requires. A refresh that fails later
//! therefore keeps what verified before the failure: a newer root, timestamp
//! or snapshot stays trusted, which only ever raises the rollback floor.

use std::collections::BTreeSet;

use tender_keys::{
    verify_root, verify_root_update, verify_snapshot, verify_targets, verify_timestamp, Role, RoleKeys, Root, Snapshot,
    Targets, Timestamp, Verified,
};

use super::checks::{
    check_expiry, check_listed_version, check_meta_file, check_snapshot_rollback, check_timestamp_rollback,
    TimestampUpdate, SNAPSHOT_META_KEY,
};
use super::clock::UpdateTime;
use super::error::TufError;
use super::fetch::Fetcher;
use super::limits::Limits;
use super::names::{remote_metadata_name, snapshot_meta_key};
use super::store::TrustedStore;

/// Inputs of one refresh: the fetcher, the trusted store, the limits and the
/// fixed update start time (5.1).
pub(crate) struct Session<'a> {
    pub fetcher: &'a dyn Fetcher,
    pub store: &'a TrustedStore,
    pub limits: &'a Limits,
    pub time: UpdateTime,
}

/// Verifies targets metadata bytes; `what` names the file in errors.
pub(crate) type VerifyTargets<'a> = dyn Fn(&[u8], &str) -> Result<Verified<Targets>, tender_keys::Error> + 'a;

/// The top-level metadata after a successful refresh.
#[derive(Debug, Clone)]
pub struct TrustedMetadata {
    pub root: Verified<Root>,
    pub timestamp: Verified<Timestamp>,
    pub snapshot: Verified<Snapshot>,
    pub targets: Verified<Targets>,
    /// The fixed update start time used for every expiry check.
    pub update_time: UpdateTime,
}

/// Loads the trusted root (5.2). Its expiry does not matter here, because
/// the root update loop may replace it.
pub(crate) fn load_trusted_root(store: &TrustedStore, limits: &Limits) -> Result<Verified<Root>, TufError> {
    let role = Role::Root.as_str();
    let bytes = store
        .load(role, limits.max_root_bytes)?
        .ok_or_else(|| TufError::NoTrustedRoot { dir: store.dir().to_owned() })?;
    verify_root(&bytes, "root.json").map_err(|source| TufError::InvalidTrustedRoot {
        file: "root.json".to_owned(),
        dir: store.dir().to_owned(),
        source,
    })
}

/// Runs steps 5.3 to 5.6.6 and returns the new trusted top-level metadata.
pub(crate) fn refresh(session: &Session<'_>, trusted_root: Verified<Root>) -> Result<TrustedMetadata, TufError> {
    let root = update_root(session, trusted_root)?;
    let timestamp = update_timestamp(session, &root)?;
    let snapshot = update_snapshot(session, &root, &timestamp)?;
    let targets = {
        let verify = |bytes: &[u8], what: &str| verify_targets(&root, bytes, what);
        update_targets_role(session, &snapshot, root.consistent_snapshot, Role::Targets.as_str(), &verify)?
    };
    Ok(TrustedMetadata { root, timestamp, snapshot, targets, update_time: session.time })
}

/// Runs the root update loop (5.3).
fn update_root(session: &Session<'_>, mut trusted: Verified<Root>) -> Result<Verified<Root>, TufError> {
    let role = Role::Root.as_str();
    let start_keys = (role_keys(&trusted, Role::Timestamp), role_keys(&trusted, Role::Snapshot));

    // 5.3.3: at most Y new versions per refresh, then on to 5.3.10.
    for _ in 0..session.limits.max_root_rotations {
        let Some(next) = trusted.version.checked_add(1) else { break };
        let file = remote_metadata_name(role, Some(next));
        let bytes = match session.fetcher.fetch(&file, session.limits.max_root_bytes) {
            Ok(bytes) => bytes,
            Err(e) if e.is_not_found() => break,
            Err(source) => return Err(TufError::Fetch { role: role.to_owned(), file, source }),
        };

        // 5.3.4: signed by a threshold of the trusted root and of itself.
        let new = verify_root_update(&trusted, &bytes, &file)
            .map_err(|source| TufError::Verify { role: role.to_owned(), file: file.clone(), source })?;

        // 5.3.5: the version must be exactly N+1.
        if new.version != next {
            return Err(TufError::RootVersion { file, trusted: trusted.version, expected: next, found: new.version });
        }

        // 5.3.6: the expiry of an intermediate root does not matter.
        // 5.3.7 and 5.3.8: trust it and persist it.
        session.store.save(role, &bytes)?;
        tracing::info!(version = new.version, "trusted a new root version");
        trusted = new;
    }

    // 5.3.10: the final root must not be expired.
    check_expiry(role, "root.json", &trusted.expires, &session.time)?;

    // 5.3.11: new timestamp or snapshot keys delete the trusted timestamp and
    // snapshot, so a repository can recover from a fast-forward attack.
    let end_keys = (role_keys(&trusted, Role::Timestamp), role_keys(&trusted, Role::Snapshot));
    if start_keys != end_keys {
        tracing::info!("timestamp or snapshot keys changed; deleting the trusted timestamp and snapshot");
        session.store.remove(Role::Timestamp.as_str())?;
        session.store.remove(Role::Snapshot.as_str())?;
    }

    // 5.3.12: consistent snapshots follow `trusted.consistent_snapshot`, which
    // the later steps read from the root they are given.
    Ok(trusted)
}

/// Returns the key ids and threshold of a role, in an order-independent form.
fn role_keys(root: &Root, role: Role) -> Option<(BTreeSet<String>, u32)> {
    root.roles.get(&role).map(|RoleKeys { keyids, threshold }| {
        (keyids.iter().map(|id| id.as_str().to_owned()).collect(), *threshold)
    })
}

/// A stored trusted file: its bytes and what they verified to.
type StoredTrusted<T> = (Vec<u8>, Verified<T>);

/// Loads and verifies a stored trusted file. A stored file that no longer
/// verifies, for example after a key rotation, is ignored with a warning.
fn load_trusted<T>(
    session: &Session<'_>,
    role: &str,
    max_len: u64,
    verify: impl Fn(&[u8]) -> Result<Verified<T>, tender_keys::Error>,
) -> Result<Option<StoredTrusted<T>>, TufError> {
    let Some(bytes) = session.store.load(role, max_len)? else { return Ok(None) };
    match verify(&bytes) {
        Ok(verified) => Ok(Some((bytes, verified))),
        Err(error) => {
            let path = session.store.path(role);
            tracing::warn!(path = %path.display(), %error, "ignoring trusted metadata that no longer verifies");
            Ok(None)
        }
    }
}

/// Updates the timestamp (5.4).
fn update_timestamp(session: &Session<'_>, root: &Verified<Root>) -> Result<Verified<Timestamp>, TufError> {
    let role = Role::Timestamp.as_str();
    let file = remote_metadata_name(role, None);
    let max_len = session.limits.max_timestamp_bytes;
    let trusted = load_trusted(session, role, max_len, |bytes| verify_timestamp(root, bytes, "trusted timestamp.json"))?;

    // 5.4.1 and 5.4.2: download with a cap, then check the signatures.
    let bytes = session
        .fetcher
        .fetch(&file, max_len)
        .map_err(|source| TufError::Fetch { role: role.to_owned(), file: file.clone(), source })?;
    let new = verify_timestamp(root, &bytes, &file)
        .map_err(|source| TufError::Verify { role: role.to_owned(), file: file.clone(), source })?;
    if !new.meta.contains_key(SNAPSHOT_META_KEY) {
        return Err(TufError::NotListed { listed_in: file, missing: SNAPSHOT_META_KEY.to_owned() });
    }

    // 5.4.3: versions must not go down; an equal version keeps the trusted file.
    let (timestamp, is_new) = match trusted {
        Some((_, trusted)) => match check_timestamp_rollback(&trusted, &new, &file)? {
            TimestampUpdate::Newer => (new, true),
            TimestampUpdate::SameVersion => (trusted, false),
        },
        None => (new, true),
    };

    // 5.4.4: the timestamp in use must not be expired.
    check_expiry(role, &file, &timestamp.expires, &session.time)?;

    // 5.4.5: persist a new timestamp.
    if is_new {
        session.store.save(role, &bytes)?;
    }
    Ok(timestamp)
}

/// Updates the snapshot (5.5).
fn update_snapshot(
    session: &Session<'_>,
    root: &Verified<Root>,
    timestamp: &Timestamp,
) -> Result<Verified<Snapshot>, TufError> {
    let role = Role::Snapshot.as_str();
    let listed_in = "timestamp.json";
    let meta = timestamp.meta.get(SNAPSHOT_META_KEY).ok_or_else(|| TufError::NotListed {
        listed_in: listed_in.to_owned(),
        missing: SNAPSHOT_META_KEY.to_owned(),
    })?;
    let max_len = meta.length.unwrap_or(session.limits.max_snapshot_bytes);
    let trusted = load_trusted(session, role, max_len, |bytes| verify_snapshot(root, bytes, "trusted snapshot.json"))?;
    if let Some((bytes, trusted)) = &trusted {
        // The trusted file is the one the timestamp lists: no download needed.
        if trusted.version == meta.version && check_meta_file(meta, bytes, "trusted snapshot.json", listed_in).is_ok() {
            check_expiry(role, "snapshot.json", &trusted.expires, &session.time)?;
            return Ok(trusted.clone());
        }
    }

    // 5.5.1: download with the listed length, or the cap, as the limit.
    let file = remote_metadata_name(role, root.consistent_snapshot.then_some(meta.version));
    let bytes = session
        .fetcher
        .fetch(&file, max_len)
        .map_err(|source| TufError::Fetch { role: role.to_owned(), file: file.clone(), source })?;

    // 5.5.2: length and hashes listed in the timestamp.
    check_meta_file(meta, &bytes, &file, listed_in)?;

    // 5.5.3: signatures.
    let new = verify_snapshot(root, &bytes, &file)
        .map_err(|source| TufError::Verify { role: role.to_owned(), file: file.clone(), source })?;

    // 5.5.4: the version the timestamp lists.
    check_listed_version(role, &file, listed_in, meta.version, new.version)?;

    // 5.5.5: no targets role may disappear or go down.
    if let Some((_, trusted)) = &trusted {
        check_snapshot_rollback(trusted, &new, &file)?;
    }

    // 5.5.6 and 5.5.7: expiry, then persist.
    check_expiry(role, &file, &new.expires, &session.time)?;
    session.store.save(role, &bytes)?;
    Ok(new)
}

/// Updates top-level or delegated targets metadata (5.6.1 to 5.6.6), with
/// the version, length and hashes that the snapshot lists for `role`.
pub(crate) fn update_targets_role(
    session: &Session<'_>,
    snapshot: &Snapshot,
    consistent_snapshot: bool,
    role: &str,
    verify: &VerifyTargets<'_>,
) -> Result<Verified<Targets>, TufError> {
    let listed_in = "snapshot.json";
    let meta_key = snapshot_meta_key(role);
    let meta = snapshot
        .meta
        .get(&meta_key)
        .ok_or_else(|| TufError::NotListed { listed_in: listed_in.to_owned(), missing: meta_key.clone() })?;
    let max_len = meta.length.unwrap_or(session.limits.max_targets_bytes);
    let trusted_name = format!("trusted {meta_key}");
    let trusted = load_trusted(session, role, max_len, |bytes| verify(bytes, &trusted_name))?;
    if let Some((bytes, trusted)) = trusted {
        // The trusted file is the one the snapshot lists: no download needed.
        if trusted.version == meta.version && check_meta_file(meta, &bytes, &trusted_name, listed_in).is_ok() {
            check_expiry(role, &meta_key, &trusted.expires, &session.time)?;
            return Ok(trusted);
        }
    }

    // 5.6.1: download with the listed length, or the cap, as the limit.
    let file = remote_metadata_name(role, consistent_snapshot.then_some(meta.version));
    let bytes = session
        .fetcher
        .fetch(&file, max_len)
        .map_err(|source| TufError::Fetch { role: role.to_owned(), file: file.clone(), source })?;

    // 5.6.2: length and hashes listed in the snapshot.
    check_meta_file(meta, &bytes, &file, listed_in)?;

    // 5.6.3: signatures, by the root (top-level) or the delegating role.
    let new = verify(&bytes, &file).map_err(|source| TufError::Verify { role: role.to_owned(), file: file.clone(), source })?;

    // 5.6.4: the version the snapshot lists.
    check_listed_version(role, &file, listed_in, meta.version, new.version)?;

    // 5.6.5 and 5.6.6: expiry, then persist.
    check_expiry(role, &file, &new.expires, &session.time)?;
    session.store.save(role, &bytes)?;
    Ok(new)
}
