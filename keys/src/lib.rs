//! Keys, signatures and the trust root of a Tender fleet.
//!
//! Metadata follows the layout of The Update Framework (TUF 1.0): a `root.json`
//! names the ed25519 keys of each role (`root`, `targets`, `snapshot`,
//! `timestamp`) and how many of them must sign, and every signed document is an
//! envelope `{"signed": …, "signatures": […]}` whose signatures cover the OLPC
//! canonical JSON form of `signed`.
//!
//! A [`Verified`] value can only be built by the verification functions in this
//! crate, so code that holds one knows the threshold of its role was met.

mod canonical;
mod error;
mod key;
mod metadata;
mod verify;

pub use canonical::to_canonical_json;
pub use error::Error;
pub use key::{KeyId, PrivateKey, PublicKey};
pub use metadata::{
    format_time, parse_time, path_matches, DelegatedRole, Delegations, MetaFile, Role, RoleKeys, Root, Signature, Signed,
    Snapshot, TargetFile, Targets, Timestamp, SPEC_VERSION,
};
pub use verify::{
    verify_delegated, verify_root, verify_root_update, verify_snapshot, verify_targets, verify_timestamp,
    SignatureReport, Verified,
};
