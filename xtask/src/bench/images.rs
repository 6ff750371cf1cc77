//! Delta packs of filesystem images: ext4 and erofs images of the Debian
//! pair, each released as a tree containing `rootfs.img`. The newer release's
//! pack is compared with the chunks that a robot running the older image
//! lacks, and with `zstd --patch-from` of the two images. No robot installs
//! the images here; `tests/tests/big_image_delta.rs` installs a smaller
//! pair into partition slots.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::Context;

use super::files::{file_len, path_text, strings, tree_size};
use super::measure::{measure_with, Sample};
use super::peers::{PEER_ZSTD_LEVEL, PEER_ZSTD_WINDOW_LOG};
use super::robot::{remove_if_present, Tools};
use crate::workspace::run_checked;

/// Maximum time of one release of an image.
const TIMEOUT: Duration = Duration::from_secs(60 * 60);

/// UUID and hash seed of the ext4 images, fixed so that both images of a
/// pair differ only by their files.
const EXT4_UUID: &str = "4a3e2f6c-1d7b-4c55-9a0e-7b2d1f3c5e81";

/// Numbers for one image type.
pub struct ImageResult {
    pub kind: &'static str,
    pub old_bytes: u64,
    pub new_bytes: u64,
    /// Bytes of the pack from the older release, `None` when `tender
    /// release` wrote none because the chunks cost no more.
    pub pack_bytes: Option<u64>,
    /// Stored bytes of the chunks a robot running the older image lacks,
    /// from the pack target's `custom.delta`.
    pub chunk_bytes: Option<u64>,
    pub zstd_patch_bytes: u64,
    /// Time and peak memory of `tender release` of the newer image, which
    /// writes the pack.
    pub release: Sample,
}

/// Makes ext4 and erofs images of both trees, releases them and reads the
/// pack's numbers from the repository's `targets.json`.
pub fn bench_images(old: &Path, new: &Path, work: &Path, tools: &Tools, epoch: &str) -> anyhow::Result<Vec<ImageResult>> {
    let (_, new_tree_bytes) = tree_size(new);
    // Room for the newer tree, its inodes and the journal, in whole MiB.
    let ext4_mib = ((new_tree_bytes * 3 / 2) >> 20) + 64;
    let mut results = Vec::new();
    for kind in ["ext4", "erofs"] {
        eprintln!("==> measuring delta packs of {kind} images");
        let dir = work.join(format!("images-{kind}"));
        remove_if_present(&dir)?;
        let out = dir.join("out");
        let mut images = Vec::new();
        let mut release = None;
        for (tree, version) in [(old, "1.0.0"), (new, "1.1.0")] {
            let image_tree = dir.join(format!("tree-{version}"));
            std::fs::create_dir_all(&image_tree).with_context(|| format!("cannot create {}", image_tree.display()))?;
            let image = image_tree.join("rootfs.img");
            make_image(kind, tree, &image, ext4_mib, epoch)?;
            let argv = [
                vec![path_text(&tools.tender), "release".into(), "--recipe".into(), path_text(&tools.recipe)],
                strings(&["--version", version, "--source-date-epoch", epoch, "--out"]),
                vec![path_text(&out), "--keys".into(), path_text(&tools.keys), "--tree".into(), path_text(&image_tree)],
            ]
            .concat();
            release = Some(measure_with(&argv, &[("RUST_LOG", "warn")], TIMEOUT)?.sample);
            images.push(image);
        }
        let patch = dir.join("new.img.zst");
        run_checked(
            Command::new("zstd")
                .args(["-q", "-f", &format!("-{PEER_ZSTD_LEVEL}"), &format!("--long={PEER_ZSTD_WINDOW_LOG}")])
                .arg(format!("--patch-from={}", images[0].display()))
                .arg(&images[1])
                .arg("-o")
                .arg(&patch),
        )?;
        let (pack_bytes, chunk_bytes) = pack_numbers(&out.join("repo/metadata/targets.json"))?;
        results.push(ImageResult {
            kind,
            old_bytes: file_len(&images[0])?,
            new_bytes: file_len(&images[1])?,
            pack_bytes,
            chunk_bytes,
            zstd_patch_bytes: file_len(&patch)?,
            release: release.context("no release was measured")?,
        });
        remove_if_present(&dir)?;
    }
    Ok(results)
}

/// Writes an image of `tree` with fixed identifiers and time stamps.
fn make_image(kind: &str, tree: &Path, image: &Path, ext4_mib: u64, epoch: &str) -> anyhow::Result<()> {
    let mut command = match kind {
        "ext4" => {
            let mut command = Command::new("mke2fs");
            command
                .args(["-q", "-F", "-t", "ext4", "-U", EXT4_UUID, "-E", &format!("hash_seed={EXT4_UUID}"), "-d"])
                .arg(tree)
                .arg(image)
                .arg(format!("{ext4_mib}M"))
                .env("E2FSPROGS_FAKE_TIME", epoch);
            command
        }
        _ => {
            let mut command = Command::new("mkfs.erofs");
            command.arg(format!("-T{epoch}")).arg(image).arg(tree);
            command
        }
    };
    run_checked(command.stdout(std::process::Stdio::null()))
}

/// Returns the length of the pack target `bench-1.1.0.from-1.0.0.delta` and
/// the chunk bytes it replaces, or `None` twice when there is no pack.
fn pack_numbers(targets: &Path) -> anyhow::Result<(Option<u64>, Option<u64>)> {
    let text = std::fs::read(targets).with_context(|| format!("cannot read {}", targets.display()))?;
    let targets: serde_json::Value = serde_json::from_slice(&text).with_context(|| format!("invalid JSON in {}", targets.display()))?;
    let target = &targets["signed"]["targets"]["bench-1.1.0.from-1.0.0.delta"];
    Ok((target["length"].as_u64(), target["custom"]["delta"]["chunk_bytes"].as_u64()))
}
