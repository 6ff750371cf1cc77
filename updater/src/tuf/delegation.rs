//! The target search (TUF 5.6.7): a preorder depth-first search of the
//! delegation graph, starting at the top-level targets role.
//!
//! - A role already visited is skipped, so cycles end (5.6.7.1).
//! - At most [`Limits::max_delegations`](super::Limits) roles are visited
//!   (5.6.7.1); then the search ends without a result.
//! - A role is only followed when its `paths` or `path_hash_prefixes` match
//!   the target path, and its delegations are searched in order of
//!   appearance (5.6.7.2).
//! - A matching terminating delegation drops every role still waiting, so
//!   the search ends after that role's subtree (5.6.7.2.1).
//! - Each delegated role's metadata is fetched with the version the snapshot
//!   lists and verified with the keys and threshold of its delegating role.
//!   A role that cannot be fetched or verified ends the search with its error.

use std::collections::{BTreeMap, HashSet};

use tender_keys::{verify_delegated, DelegatedRole, KeyId, PublicKey, Role, TargetFile, Targets, Verified};

use super::error::TufError;
use super::refresh::{update_targets_role, Session, TrustedMetadata};

/// A target found by the search, with the role that listed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundTarget {
    /// The target path, such as `releases/ecar-1.0.0.json`.
    pub path: String,
    pub file: TargetFile,
    /// The targets role that listed it: `targets` or a delegated role.
    pub role: String,
}

/// A role waiting to be visited, with the keys its delegator lists for it.
struct Pending {
    role: DelegatedRole,
    delegator: String,
    keys: BTreeMap<KeyId, PublicKey>,
}

const TOP_LEVEL_ROLES: [Role; 4] = [Role::Root, Role::Targets, Role::Snapshot, Role::Timestamp];

/// Searches the delegation graph for `target_path`. Fails with
/// [`TufError::TargetNotFound`] when no role trusted for the path lists it.
pub(crate) fn find_target(
    session: &Session<'_>,
    trusted: &TrustedMetadata,
    target_path: &str,
) -> Result<FoundTarget, TufError> {
    let mut visited: HashSet<String> = HashSet::new();
    let top_level = Role::Targets.as_str().to_owned();
    if let Some(found) = visit(target_path, &top_level, &trusted.targets) {
        return Ok(found);
    }
    visited.insert(top_level.clone());
    let mut stack: Vec<Pending> = Vec::new();
    push_children(target_path, &top_level, &trusted.targets, &mut stack)?;

    while let Some(pending) = stack.pop() {
        if visited.len() >= session.limits.max_delegations {
            tracing::warn!(target_path, max = session.limits.max_delegations, "ending the target search at the role limit");
            break;
        }
        if !visited.insert(pending.role.name.clone()) {
            continue;
        }
        let role_keys = pending.role.role_keys();
        let name = pending.role.name.clone();
        let verify = |bytes: &[u8], what: &str| verify_delegated(&pending.keys, &role_keys, &name, bytes, what);
        let metadata = update_targets_role(session, &trusted.snapshot, trusted.root.consistent_snapshot, &name, &verify)?;
        tracing::debug!(role = %name, delegator = %pending.delegator, "searching delegated role");
        if let Some(found) = visit(target_path, &name, &metadata) {
            return Ok(found);
        }
        push_children(target_path, &name, &metadata, &mut stack)?;
    }
    Err(TufError::TargetNotFound { target: target_path.to_owned(), visited: visited.len() })
}

/// Returns the target when `metadata` lists it (5.6.7.1).
fn visit(target_path: &str, role: &str, metadata: &Verified<Targets>) -> Option<FoundTarget> {
    metadata.targets.get(target_path).map(|file| FoundTarget {
        path: target_path.to_owned(),
        file: file.clone(),
        role: role.to_owned(),
    })
}

/// Pushes the delegations of `metadata` that match the path, so that the
/// first of them is popped first (5.6.7.2). A matching terminating
/// delegation clears the roles still waiting.
fn push_children(target_path: &str, delegator: &str, metadata: &Targets, stack: &mut Vec<Pending>) -> Result<(), TufError> {
    // TODO: succinct hash-bin delegations (`succinct_roles`) are not parsed,
    // so metadata that uses them fails verification as invalid.
    let Some(delegations) = &metadata.delegations else { return Ok(()) };
    let mut children = Vec::new();
    for role in &delegations.roles {
        if TOP_LEVEL_ROLES.iter().any(|top| top.as_str() == role.name) {
            return Err(TufError::ReservedRoleName { role: role.name.clone(), delegator: delegator.to_owned() });
        }
        if !role.matches(target_path) {
            continue;
        }
        children.push(Pending { role: role.clone(), delegator: delegator.to_owned(), keys: delegations.keys.clone() });
        if role.terminating {
            stack.clear();
            break;
        }
    }
    stack.extend(children.into_iter().rev());
    Ok(())
}
