//! Forged bundles for the rejection tests: a good bundle taken apart,
//! changed, and (where the case needs it) signed again with the fleet's own
//! release key, so that only the property under test is wrong.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};
use tender_keys::{PrivateKey, Signed, Targets};

/// The members of a bundle, in their order.
pub struct Members {
    pub root: Vec<u8>,
    /// `roots/N.root.json` members, in archive order.
    pub root_chain: Vec<(String, Vec<u8>)>,
    pub targets: Vec<u8>,
    pub manifest: Vec<u8>,
    pub chunks: BTreeMap<String, Vec<u8>>,
}

pub fn read_bundle(path: &Path) -> Members {
    let mut archive = tar::Archive::new(std::fs::File::open(path).expect("open bundle"));
    let mut members = Members { root: vec![], root_chain: vec![], targets: vec![], manifest: vec![], chunks: BTreeMap::new() };
    for entry in archive.entries().expect("entries") {
        let mut entry = entry.expect("entry");
        let name = entry.path().expect("path").display().to_string();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).expect("read member");
        match name.as_str() {
            "root.json" => members.root = bytes,
            "targets.json" => members.targets = bytes,
            "manifest.json" => members.manifest = bytes,
            _ if name.starts_with("roots/") => members.root_chain.push((name, bytes)),
            _ => {
                members.chunks.insert(name, bytes);
            }
        }
    }
    members
}

pub fn write_bundle(members: &Members, path: &Path) {
    let mut builder = tar::Builder::new(std::fs::File::create(path).expect("create bundle"));
    let mut append = |name: &str, bytes: &[u8]| {
        let mut header = tar::Header::new_ustar();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append_data(&mut header, name, bytes).expect("append");
    };
    append("root.json", &members.root);
    for (name, bytes) in &members.root_chain {
        append(name, bytes);
    }
    append("targets.json", &members.targets);
    append("manifest.json", &members.manifest);
    for (name, bytes) in &members.chunks {
        append(name, bytes);
    }
    builder.finish().expect("finish bundle");
}

/// Replaces the manifest and signs targets.json again with `key`, listing
/// the new manifest bytes under the old target name.
pub fn resign_manifest(members: &mut Members, manifest: &serde_json::Value, key: &PrivateKey) {
    let old_digest = hex::encode(Sha256::digest(&members.manifest));
    let new_bytes = tender_keys::to_canonical_json(manifest).expect("canonical manifest");
    let envelope: Signed<Targets> = serde_json::from_slice(&members.targets).expect("targets");
    let mut targets = envelope.signed;
    for target in targets.targets.values_mut() {
        if target.hashes.get("sha256") == Some(&old_digest) {
            target.hashes.insert("sha256".to_owned(), hex::encode(Sha256::digest(&new_bytes)));
            target.length = new_bytes.len() as u64;
            if let Some(custom) = target.custom.as_mut() {
                for field in ["name", "version", "compatible", "architecture"] {
                    custom[field] = manifest[field].clone();
                }
            }
        }
    }
    members.targets = Signed::sign(targets, &[key]).expect("sign").to_canonical_json().expect("json");
    members.manifest = new_bytes;
}

pub fn release_key(keys: &Path) -> PrivateKey {
    PrivateKey::load(&keys.join("release.key")).expect("release key")
}

pub fn manifest_json(members: &Members) -> serde_json::Value {
    serde_json::from_slice(&members.manifest).expect("manifest JSON")
}
