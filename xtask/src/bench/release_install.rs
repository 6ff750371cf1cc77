//! Release and install of one tree, Tender against `tar | zstd`.

use std::fs;
use std::path::Path;

use anyhow::Context;

use super::files::{path_text, shell_quote, strings, tree_size};
use super::measure::{measure, summarize, Summary};
use super::robot::{make_robot, Tools};
use super::{SOURCE_DATE_EPOCH, ZSTD_LEVEL};

/// Results of one tree.
pub struct TreeResult {
    pub label: String,
    pub files: usize,
    pub bytes: u64,
    pub tender_release: Summary,
    pub tender_size: u64,
    pub tar_release: Summary,
    pub tar_size: u64,
    pub tender_install: Summary,
    pub tar_install: Summary,
}

/// Releases `tree` with both tools and installs it on an empty robot or
/// into an empty directory, `runs` times.
pub fn bench_tree(label: &str, tree: &Path, work: &Path, tools: &Tools, runs: u32) -> anyhow::Result<TreeResult> {
    eprintln!("==> measuring {label} ({})", tree.display());
    let (files, bytes) = tree_size(tree);
    let mut tender_release = Vec::new();
    let mut tar_release = Vec::new();
    let mut tender_install = Vec::new();
    let mut tar_install = Vec::new();
    let mut tender_size = 0;
    let mut tar_size = 0;
    for run in 0..runs {
        let out = work.join(format!("out-{run}"));
        let archive = work.join(format!("tree-{run}.tar.zst"));
        let _ = fs::remove_dir_all(&out);
        let _ = fs::remove_file(&archive);
        tender_release.push(measure(&[
            vec![path_text(&tools.tender), "release".into(), "--recipe".into(), path_text(&tools.recipe)],
            strings(&["--version", "1.0.0", "--source-date-epoch", SOURCE_DATE_EPOCH, "--out"]),
            vec![path_text(&out), "--keys".into(), path_text(&tools.keys), "--tree".into(), path_text(tree)],
        ]
        .concat())?);
        let bundle = out.join("bench-1.0.0.tender");
        tender_size = fs::metadata(&bundle).with_context(|| format!("no bundle at {}", bundle.display()))?.len();

        let pipeline = format!(
            "tar --sort=name -C {} -cf - . | zstd -q -T0 -{ZSTD_LEVEL} -o {}",
            shell_quote(tree),
            shell_quote(&archive)
        );
        tar_release.push(measure(&strings(&["bash", "-c", &pipeline]))?);
        tar_size = fs::metadata(&archive)?.len();

        let robot = work.join(format!("robot-{run}"));
        let _ = fs::remove_dir_all(&robot);
        make_robot(&robot, &tools.keys)?;
        tender_install.push(measure(&[
            vec![path_text(&tools.tenderd), "--root".into(), path_text(&robot), "install".into(), path_text(&bundle)],
        ]
        .concat())?);

        let extract = work.join(format!("extract-{run}"));
        let _ = fs::remove_dir_all(&extract);
        fs::create_dir_all(&extract)?;
        let pipeline = format!("zstd -q -dc {} | tar -C {} -xf -", shell_quote(&archive), shell_quote(&extract));
        tar_install.push(measure(&strings(&["bash", "-c", &pipeline]))?);

        let _ = fs::remove_dir_all(&robot);
        let _ = fs::remove_dir_all(&extract);
        let _ = fs::remove_dir_all(&out);
        let _ = fs::remove_file(&archive);
    }
    Ok(TreeResult {
        label: label.to_owned(),
        files,
        bytes,
        tender_release: summarize(&tender_release),
        tender_size,
        tar_release: summarize(&tar_release),
        tar_size,
        tender_install: summarize(&tender_install),
        tar_install: summarize(&tar_install),
    })
}
