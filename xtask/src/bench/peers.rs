//! The other tools on a tree pair: xdelta3 and `zstd --patch-from` on tar
//! archives, casync chunk stores, and a full `tar.zst`.
//!
//! The trees are the slots Tender installed, so every tool packages the
//! same files with the same modes. The tar archives are made with a fixed
//! order, time stamp and owner, so that two archives of one tree are equal.
//! Apply means making the newer tree in an empty directory from what was
//! downloaded and what the robot has: the older tar archive for xdelta3 and
//! zstd, the older tree for casync, nothing for the full archive.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;

use super::files::{file_len, path_text, shell_quote, strings, walk};
use super::measure::{measure, summarize, Sample, Summary};
use super::robot::remove_if_present;
use crate::workspace::run_checked;

/// zstd level of the patch and of the full archive: the highest regular
/// level, as a publisher that compresses once for a fleet would pick.
pub const PEER_ZSTD_LEVEL: u32 = 19;
/// zstd window, in log2 bytes: 2 GiB, larger than any tree of the bench, so
/// long-distance matching reaches every byte of the older archive.
pub const PEER_ZSTD_WINDOW_LOG: u32 = 31;

/// One tool's numbers for one pair.
pub struct ToolResult {
    pub tool: &'static str,
    /// Bytes the robot downloads for the upgrade.
    pub download_bytes: u64,
    /// Time and peak memory of making the newer tree.
    pub apply: Summary,
    /// Files the robot must keep for this tool to work.
    pub needs: &'static str,
}

/// Measures every tool on the pair `old` → `new`, applying `runs` times.
pub fn bench_peers(old: &Path, new: &Path, work: &Path, epoch: &str, runs: u32) -> anyhow::Result<Vec<ToolResult>> {
    let old_tar = work.join("old.tar");
    let new_tar = work.join("new.tar");
    make_tar(old, &old_tar, epoch)?;
    make_tar(new, &new_tar, epoch)?;
    let extract = work.join("extract");
    Ok(vec![
        xdelta3(&old_tar, &new_tar, work, &extract, runs)?,
        zstd_patch(&old_tar, &new_tar, work, &extract, runs)?,
        casync(old, new, work, &extract, runs)?,
        full_archive(&new_tar, work, &extract, runs)?,
    ])
}

/// Archives `tree` with entries in name order, every time stamp set to
/// `epoch` and owner 0:0, as Tender records them.
fn make_tar(tree: &Path, archive: &Path, epoch: &str) -> anyhow::Result<()> {
    run_checked(
        Command::new("tar")
            .args(["--sort=name", &format!("--mtime=@{epoch}"), "--owner=0", "--group=0", "--numeric-owner", "-C"])
            .arg(tree)
            .arg("-cf")
            .arg(archive)
            .arg("."),
    )
}

/// Runs `apply` `runs` times, each into an empty `extract` directory.
fn apply_runs(extract: &Path, runs: u32, apply: impl Fn() -> anyhow::Result<Sample>) -> anyhow::Result<Summary> {
    let mut samples = Vec::new();
    for _ in 0..runs {
        remove_if_present(extract)?;
        fs::create_dir_all(extract).with_context(|| format!("cannot create {}", extract.display()))?;
        samples.push(apply()?);
    }
    remove_if_present(extract)?;
    Ok(summarize(&samples))
}

/// `xdelta3 -B` source window: the next power of two at or above the older
/// archive, so matches can come from anywhere in it (xdelta3's default is
/// 64 MiB), capped at xdelta3's maximum of 2 GiB.
fn xdelta3_window(old_tar: &Path) -> anyhow::Result<u64> {
    Ok(file_len(old_tar)?.next_power_of_two().clamp(64 << 20, 1 << 31))
}

fn xdelta3(old_tar: &Path, new_tar: &Path, work: &Path, extract: &Path, runs: u32) -> anyhow::Result<ToolResult> {
    eprintln!("==> xdelta3");
    let patch = work.join("patch.xd3");
    let window = xdelta3_window(old_tar)?.to_string();
    run_checked(
        Command::new("xdelta3")
            .args(["-e", "-9", "-f", "-B", &window, "-s"])
            .arg(old_tar)
            .arg(new_tar)
            .arg(&patch),
    )?;
    let pipeline = format!(
        "xdelta3 -d -c -B {window} -s {} {} | tar -x -C {}",
        shell_quote(old_tar),
        shell_quote(&patch),
        shell_quote(extract)
    );
    let apply = apply_runs(extract, runs, || measure(&strings(&["bash", "-c", &pipeline])))?;
    Ok(ToolResult { tool: "xdelta3 -9", download_bytes: file_len(&patch)?, apply, needs: "the older tar archive" })
}

fn zstd_patch(old_tar: &Path, new_tar: &Path, work: &Path, extract: &Path, runs: u32) -> anyhow::Result<ToolResult> {
    eprintln!("==> zstd --patch-from");
    let patch = work.join("patch.zst");
    run_checked(
        Command::new("zstd")
            .args(["-q", "-f", &format!("-{PEER_ZSTD_LEVEL}"), &format!("--long={PEER_ZSTD_WINDOW_LOG}")])
            .arg(format!("--patch-from={}", path_text(old_tar)))
            .arg(new_tar)
            .arg("-o")
            .arg(&patch),
    )?;
    let pipeline = format!(
        "zstd -q -d -c --long={PEER_ZSTD_WINDOW_LOG} --patch-from={} {} | tar -x -C {}",
        shell_quote(old_tar),
        shell_quote(&patch),
        shell_quote(extract)
    );
    let apply = apply_runs(extract, runs, || measure(&strings(&["bash", "-c", &pipeline])))?;
    Ok(ToolResult {
        tool: "zstd --patch-from",
        download_bytes: file_len(&patch)?,
        apply,
        needs: "the older tar archive",
    })
}

fn casync(old: &Path, new: &Path, work: &Path, extract: &Path, runs: u32) -> anyhow::Result<ToolResult> {
    eprintln!("==> casync");
    let old_store = work.join("old.castr");
    let new_store = work.join("new.castr");
    let old_index = work.join("old.caidx");
    let new_index = work.join("new.caidx");
    for (store, index, tree) in [(&old_store, &old_index, old), (&new_store, &new_index, new)] {
        run_checked(
            Command::new("casync")
                .arg("make")
                .arg(format!("--store={}", path_text(store)))
                .arg(index)
                .arg(tree)
                .stdout(std::process::Stdio::null()),
        )?;
    }

    let missing = missing_chunk_bytes(&old_store, &new_store);
    let download_bytes = missing + file_len(&new_index)?;
    // casync extract creates the directory itself.
    let target = extract.join("tree");
    let argv = vec![
        "casync".to_owned(),
        "extract".to_owned(),
        format!("--store={}", path_text(&new_store)),
        format!("--seed={}", path_text(old)),
        path_text(&new_index),
        path_text(&target),
    ];
    let apply = apply_runs(extract, runs, || measure(&argv))?;
    Ok(ToolResult {
        tool: "casync (missing chunks + index)",
        download_bytes,
        apply,
        needs: "the older tree as seed",
    })
}

/// Sum of the sizes of the chunk files in `new_store` that `old_store`
/// lacks. Chunk files are named by the digest of their content.
fn missing_chunk_bytes(old_store: &Path, new_store: &Path) -> u64 {
    let names = |store: &Path| -> Vec<(PathBuf, u64)> {
        walk(store)
            .into_iter()
            .filter_map(|path| {
                let meta = fs::metadata(&path).ok().filter(|meta| meta.is_file())?;
                let relative = path.strip_prefix(store).ok()?.to_owned();
                Some((relative, meta.len()))
            })
            .collect()
    };
    let old: HashSet<PathBuf> = names(old_store).into_iter().map(|(name, _)| name).collect();
    names(new_store).into_iter().filter(|(name, _)| !old.contains(name)).map(|(_, len)| len).sum()
}

fn full_archive(new_tar: &Path, work: &Path, extract: &Path, runs: u32) -> anyhow::Result<ToolResult> {
    eprintln!("==> full tar.zst");
    let archive = work.join("full.tar.zst");
    run_checked(
        Command::new("zstd")
            .args(["-q", "-f", &format!("-{PEER_ZSTD_LEVEL}"), &format!("--long={PEER_ZSTD_WINDOW_LOG}")])
            .arg(new_tar)
            .arg("-o")
            .arg(&archive),
    )?;
    let pipeline = format!(
        "zstd -q -d -c --long={PEER_ZSTD_WINDOW_LOG} {} | tar -x -C {}",
        shell_quote(&archive),
        shell_quote(extract)
    );
    let apply = apply_runs(extract, runs, || measure(&strings(&["bash", "-c", &pipeline])))?;
    Ok(ToolResult { tool: "full tar.zst", download_bytes: file_len(&archive)?, apply, needs: "nothing" })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_chunks_count_only_new_names() {
        let dir = tempfile::tempdir().expect("dir");
        let old = dir.path().join("old");
        let new = dir.path().join("new");
        fs::create_dir_all(old.join("ab")).expect("old store");
        fs::create_dir_all(new.join("ab")).expect("new store");
        fs::write(old.join("ab/ab01.cacnk"), [0u8; 10]).expect("shared chunk in old");
        fs::write(new.join("ab/ab01.cacnk"), [0u8; 10]).expect("shared chunk in new");
        fs::write(new.join("ab/ab02.cacnk"), [0u8; 7]).expect("new chunk");
        assert_eq!(missing_chunk_bytes(&old, &new), 7);
    }
}
