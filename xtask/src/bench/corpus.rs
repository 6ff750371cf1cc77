//! Trees the delta, link and memory sections measure, cached under
//! `target/bench-corpus/` and keyed by their inputs, so a rerun downloads
//! and generates nothing.
//!
//! - Two Debian root file systems from `debootstrap --variant=minbase`, the
//!   second with a few more packages.
//! - A deterministic synthetic tree of 1 GiB for the memory section.
//!
//! A finished tree has a sibling `NAME.inputs` file that contains the inputs
//! it was made from. A tree without it is an interrupted attempt, so it is
//! made again.

use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;
use sha2::{Digest, Sha256};

use crate::workspace::{run_checked, target_dir};

/// Debian mirror that debootstrap downloads from.
pub const DEBIAN_MIRROR: &str = "http://deb.debian.org/debian";
pub const DEBIAN_SUITE: &str = "bookworm";
/// Packages the newer Debian tree adds to minbase.
pub const DEBIAN_EXTRA_PACKAGES: &[&str] = &["less", "nano", "curl", "ca-certificates", "iproute2"];

/// Directory of the cached trees.
pub fn corpus_dir() -> PathBuf {
    target_dir().join("bench-corpus")
}

/// Returns a cached tree named `prefix-KEY`, where KEY is derived from
/// `inputs`, making it with `make` when it is missing or incomplete.
fn cached_tree(prefix: &str, inputs: &str, make: impl FnOnce(&Path) -> anyhow::Result<()>) -> anyhow::Result<PathBuf> {
    let key = hex::encode(&Sha256::digest(inputs.as_bytes())[..8]);
    let dir = corpus_dir();
    let tree = dir.join(format!("{prefix}-{key}"));
    let marker = dir.join(format!("{prefix}-{key}.inputs"));
    if tree.is_dir() && fs::read_to_string(&marker).is_ok_and(|text| text == inputs) {
        eprintln!("==> using the cached tree {}", tree.display());
        return Ok(tree);
    }
    if tree.exists() {
        fs::remove_dir_all(&tree).with_context(|| format!("cannot remove the incomplete tree {}", tree.display()))?;
    }
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    make(&tree)?;
    fs::write(&marker, inputs).with_context(|| format!("cannot write {}", marker.display()))?;
    Ok(tree)
}

/// Returns the older and the newer Debian tree, running debootstrap for
/// a missing one. Downloaded packages are kept in `bench-corpus/debs`.
pub fn debian_pair() -> anyhow::Result<(PathBuf, PathBuf)> {
    let old = debian_tree(&[])?;
    let new = debian_tree(DEBIAN_EXTRA_PACKAGES)?;
    Ok((old, new))
}

fn debian_tree(include: &[&str]) -> anyhow::Result<PathBuf> {
    let include = include.join(",");
    let inputs = format!("variant=minbase\nsuite={DEBIAN_SUITE}\nmirror={DEBIAN_MIRROR}\ninclude={include}\n");
    cached_tree(&format!("debian-{DEBIAN_SUITE}"), &inputs, |tree| {
        let debs = corpus_dir().join("debs");
        fs::create_dir_all(&debs).with_context(|| format!("cannot create {}", debs.display()))?;
        let mut command = Command::new("debootstrap");
        command.arg("--variant=minbase").arg(format!("--cache-dir={}", debs.display()));
        if !include.is_empty() {
            command.arg(format!("--include={include}"));
        }
        command.arg(DEBIAN_SUITE).arg(tree).arg(DEBIAN_MIRROR);
        eprintln!("==> making a Debian tree with debootstrap (a few minutes)");
        run_checked(&mut command).context("debootstrap failed; it needs root and access to the Debian mirror")
    })
}

/// Size of the synthetic tree of the memory section.
pub const SYNTHETIC_BYTES: u64 = 1 << 30;
/// Seed of its content.
const SYNTHETIC_SEED: u64 = 0x7e4d_e2b3_1c0f_5a69;
/// Version of the generator below; change it when the output changes.
const SYNTHETIC_FORMAT: u32 = 1;

/// Returns a deterministic tree of [`SYNTHETIC_BYTES`] bytes, generating it
/// when it is missing.
pub fn synthetic_tree() -> anyhow::Result<PathBuf> {
    let inputs = format!("format={SYNTHETIC_FORMAT}\nseed={SYNTHETIC_SEED:#x}\nbytes={SYNTHETIC_BYTES}\n");
    cached_tree("synthetic", &inputs, |tree| {
        eprintln!("==> generating a synthetic tree of {SYNTHETIC_BYTES} bytes in {}", tree.display());
        generate_tree(tree, SYNTHETIC_SEED, SYNTHETIC_BYTES)
    })
}

/// splitmix64, a small seeded generator; the tree only needs to be the same
/// on every machine, not random in any stronger sense.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A value in `low..high`; `high` must be above `low`.
    fn range(&mut self, low: u64, high: u64) -> u64 {
        low + self.next() % (high - low)
    }
}

/// Words of the compressible files, which zstd shrinks several times over,
/// as it does source code, scripts and text.
const WORDS: &[&str] = &[
    "robot", "wheel", "servo", "steering", "controller", "update", "slot", "chunk", "release", "manifest", "odometry",
    "lidar", "battery", "topic", "node", "launch", "param", "velocity", "angle", "limit", "=", "{", "}", ";", "\n",
];

/// Writes files under `tree` until they hold `total` bytes: 70 % of the
/// files are small (up to 64 KiB), 25 % medium (up to 8 MiB) and 5 % large
/// (up to 128 MiB). Half of the files are word text, half are pseudo-random
/// bytes that do not compress.
fn generate_tree(tree: &Path, seed: u64, total: u64) -> anyhow::Result<()> {
    let mut random = SplitMix64(seed);
    let mut written = 0u64;
    let mut index = 0u32;
    while written < total {
        let size_class = random.range(0, 100);
        let size = match size_class {
            0..70 => random.range(1, 64 << 10),
            70..95 => random.range(64 << 10, 8 << 20),
            _ => random.range(8 << 20, 128 << 20),
        }
        .min(total - written);
        let dir = tree.join(format!("d{:02}", index % 37)).join(format!("e{:02}", index % 11));
        fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let path = dir.join(format!("f{index:05}.bin"));
        let compressible = random.next().is_multiple_of(2);
        write_content(&path, &mut random, size, compressible)?;
        written += size;
        index += 1;
    }
    Ok(())
}

fn write_content(path: &Path, random: &mut SplitMix64, size: u64, compressible: bool) -> anyhow::Result<()> {
    let file = fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let mut left = size;
    let mut block = Vec::with_capacity(64 << 10);
    while left > 0 {
        block.clear();
        let want = left.min(64 << 10) as usize;
        if compressible {
            while block.len() < want {
                let word = WORDS[(random.next() % WORDS.len() as u64) as usize];
                block.extend_from_slice(word.as_bytes());
                block.push(b' ');
            }
        } else {
            while block.len() < want {
                block.extend_from_slice(&random.next().to_le_bytes());
            }
        }
        block.truncate(want);
        out.write_all(&block).with_context(|| format!("cannot write {}", path.display()))?;
        left -= want as u64;
    }
    out.flush().with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tree_is_deterministic() {
        let first = tempfile::tempdir().expect("first dir");
        let second = tempfile::tempdir().expect("second dir");
        generate_tree(first.path(), 7, 32 << 20).expect("first tree");
        generate_tree(second.path(), 7, 32 << 20).expect("second tree");
        let (files, bytes) = crate::bench::files::tree_size(first.path());
        assert_eq!(bytes, 32 << 20);
        for path in crate::bench::files::walk(first.path()) {
            if path.is_file() {
                let relative = path.strip_prefix(first.path()).expect("under the first tree");
                let twin = second.path().join(relative);
                assert_eq!(fs::read(&path).expect("read"), fs::read(&twin).expect("read twin"), "{}", relative.display());
            }
        }
        assert!(files > 1, "{files} files");
    }
}
