//! The first decision of the download planner: fetch the new manifest and
//! the chunks the robot lacks, or a delta pack built for the exact release
//! the robot runs. Both costs come from signed metadata, so the bytes to
//! fetch are known before any download starts. The rest of the plan
//! (files kept, copied from the active slot, or rebuilt) is made by
//! [`crate::slot::prepare`].

use tender_keys::{TargetFile, Targets};

use crate::format::delta::{DeltaTargetInfo, DELTA_FORMAT};
use crate::format::Sha256Digest;

/// A delta pack the planner chose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackChoice {
    pub target_name: String,
    pub info: DeltaTargetInfo,
    /// Bytes of the pack.
    pub length: u64,
}

impl PackChoice {
    /// Bytes a robot fetches with the pack: the pack and the chunks of files
    /// too large for it.
    pub fn bytes_with_pack(&self) -> u64 {
        self.length.saturating_add(self.info.pack_chunk_bytes)
    }
}

/// Returns the cheapest delta pack from the active manifest `active` to the
/// manifest target `manifest`, if one costs fewer bytes than the manifest
/// and the chunks the robot lacks. Packs of a format newer than this
/// updater reads are skipped before any download.
pub fn choose_pack(targets: &Targets, manifest: &TargetFile, active: Option<&Sha256Digest>) -> Option<PackChoice> {
    let active = active?;
    let wanted: Sha256Digest = manifest.hashes.get("sha256")?.parse().ok()?;
    let without_pack = |info: &DeltaTargetInfo| manifest.length.saturating_add(info.chunk_bytes);
    targets
        .targets
        .iter()
        .filter_map(|(name, file)| {
            let info = DeltaTargetInfo::from_custom(file.custom.as_ref())?;
            let usable = info.format <= DELTA_FORMAT && info.from_manifest == *active && info.to_manifest == wanted;
            usable.then(|| PackChoice {
                target_name: name.clone(),
                info,
                length: file.length,
            })
        })
        .filter(|choice| choice.bytes_with_pack() < without_pack(&choice.info))
        .min_by_key(PackChoice::bytes_with_pack)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::UNIX_EPOCH;

    use super::*;

    fn digest(byte: u8) -> Sha256Digest {
        Sha256Digest::of(&[byte])
    }

    fn pack(from: u8, to: u8, length: u64, chunk_bytes: u64, pack_chunk_bytes: u64) -> TargetFile {
        let info = DeltaTargetInfo {
            format: 1,
            name: "ecar".to_owned(),
            from: semver::Version::new(1, 0, u64::from(from)),
            from_manifest: digest(from),
            to: semver::Version::new(1, 0, u64::from(to)),
            to_manifest: digest(to),
            chunk_bytes,
            pack_chunk_bytes,
        };
        TargetFile { length, hashes: BTreeMap::new(), custom: Some(serde_json::json!({ "delta": info })) }
    }

    fn manifest(to: u8, length: u64) -> TargetFile {
        TargetFile { length, hashes: BTreeMap::from([("sha256".to_owned(), digest(to).to_hex())]), custom: None }
    }

    fn targets(files: Vec<(&str, TargetFile)>) -> Targets {
        let mut targets = Targets::new(1, UNIX_EPOCH);
        targets.targets = files.into_iter().map(|(name, file)| (name.to_owned(), file)).collect();
        targets
    }

    #[test]
    fn smaller_pack_from_the_active_release_is_chosen() {
        let targets = targets(vec![("ecar-1.0.2.from-1.0.1.delta", pack(1, 2, 500, 9_000, 100))]);
        let choice = choose_pack(&targets, &manifest(2, 1_000), Some(&digest(1))).expect("pack");
        assert_eq!(choice.target_name, "ecar-1.0.2.from-1.0.1.delta");
        assert_eq!(choice.bytes_with_pack(), 600);
    }

    #[test]
    fn pack_skipped_when_costlier_or_other_base() {
        let targets = targets(vec![("ecar-1.0.2.from-1.0.1.delta", pack(1, 2, 5_000, 1_000, 0))]);
        assert_eq!(choose_pack(&targets, &manifest(2, 1_000), Some(&digest(1))), None);
        let targets = targets_with_cheap_pack();
        assert_eq!(choose_pack(&targets, &manifest(2, 1_000), Some(&digest(0))), None);
        assert_eq!(choose_pack(&targets, &manifest(2, 1_000), None), None);
        assert_eq!(choose_pack(&targets, &manifest(3, 1_000), Some(&digest(1))), None);
    }

    #[test]
    fn pack_of_newer_format_is_skipped() {
        let mut file = pack(1, 2, 10, 9_000, 0);
        if let Some(custom) = file.custom.as_mut() {
            custom["delta"]["format"] = serde_json::json!(DELTA_FORMAT + 1);
        }
        let targets = targets(vec![("ecar-1.0.2.from-1.0.1.delta", file)]);
        assert_eq!(choose_pack(&targets, &manifest(2, 1_000), Some(&digest(1))), None);
    }

    fn targets_with_cheap_pack() -> Targets {
        targets(vec![("ecar-1.0.2.from-1.0.1.delta", pack(1, 2, 10, 9_000, 0))])
    }
}
