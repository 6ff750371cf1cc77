//! `cargo xtask bench`: measures Tender beside other tools on the same
//! trees in one run and writes `BENCHMARKS.md`.
//!
//! Sections:
//! - release and install of two trees, Tender against `tar | zstd`;
//! - upgrades of the sample workspace, installed from bundles;
//! - two tree pairs (a Debian root file system with a few more packages,
//!   and the sample workspace with a one-line change): bytes a robot
//!   downloads, apply time and peak memory for Tender, xdelta3,
//!   `zstd --patch-from`, casync and a full `tar.zst`;
//! - delta packs of ext4 and erofs images of the Debian pair, against the
//!   chunks a robot lacks and `zstd --patch-from` of the images;
//! - a full install over a link that drops every 1 MiB;
//! - peak memory of `tenderd install` for a release of 1 GiB.

mod corpus;
mod delta;
mod files;
mod images;
mod link;
mod measure;
mod memory;
mod peers;
mod release_install;
mod render;
mod robot;
mod upgrades;

use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::Context;

use self::delta::{bench_tender_pair, PairInput};
use self::files::copy_tree;
use self::robot::{remove_if_present, Tools};
use crate::system::{ensure_bench_packages, ensure_packages};
use crate::tooling::ensure_venv;
use crate::workspace::{cargo, root, run_checked, target_dir};

/// Measure Tender against other tools and write BENCHMARKS.md.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Runs of each timed measurement; the median is reported.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(3..=50))]
    runs: u32,
    /// Measure only these sections (repeat or separate with commas) and
    /// write target/bench/BENCHMARKS.md instead of the repository's page.
    /// Default: every section.
    #[arg(long = "only", value_enum, value_delimiter = ',')]
    only: Vec<Section>,
}

/// A part of the benchmark that `--only` selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Section {
    /// Release and install of two trees against tar and zstd.
    ReleaseInstall,
    /// Upgrades of the sample workspace from bundles.
    Upgrades,
    /// The Debian tree pair against the other tools.
    Debian,
    /// The sample workspace pair against the other tools.
    Workspace,
    /// Delta packs of ext4 and erofs images of the Debian pair.
    Images,
    /// A full install over a link that drops every 1 MiB.
    Link,
    /// Peak memory of installing a release of 1 GiB.
    Memory,
}

/// zstd level of the release-and-install section, used for both tools.
const ZSTD_LEVEL: u32 = 12;
/// Time stamp of the release-and-install section, whose releases are only
/// installed from bundles.
const SOURCE_DATE_EPOCH: &str = "1767225600";

/// Recipe for packaging a prebuilt tree, with a health check that passes.
/// The excludes drop what no tool packages from a root file system: the
/// device nodes under `dev/`, which Tender's scanner rejects and a robot
/// gets from devtmpfs, and anything under the proc and sysfs mount points.
const BENCH_RECIPE: &str = r#"name = "bench"
compatible = "ecar-4wd4ws"
prefix = "/opt/ecar"
runtime_path = "/opt/ecar/current"
services = []
exclude = ["**/__pycache__", "dev/**", "proc/**", "sys/**"]

[colcon]
workspace = "unused"

[health]
command = ["true"]
timeout = "10s"
interval = "100ms"
failures_to_revert = 1

[chunking]
min_bytes = 16384
avg_bytes = 65536
max_bytes = 262144
zstd_level = 12
"#;

/// Results of the sections that ran; `None` for the others.
#[derive(Default)]
pub struct Report {
    pub runs: u32,
    pub trees: Option<Vec<release_install::TreeResult>>,
    pub upgrades: Option<Vec<upgrades::UpgradeResult>>,
    pub pairs: Vec<PairResult>,
    pub link: Option<link::LinkResult>,
    pub memory: Option<memory::MemoryResult>,
    pub images: Option<Vec<images::ImageResult>>,
}

/// One tree pair: its size, Tender's numbers and the other tools'.
pub struct PairResult {
    pub label: String,
    pub old_size: (usize, u64),
    pub new_size: (usize, u64),
    pub tender: delta::TenderPair,
    pub peers: Vec<peers::ToolResult>,
    /// A caveat printed under the pair's heading.
    pub note: Option<String>,
}

impl Args {
    fn wants(&self, section: Section) -> bool {
        self.only.is_empty() || self.only.contains(&section)
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    ensure_packages()?;
    ensure_bench_packages()?;
    run_checked(
        Command::new(cargo())
            .args(["build", "--release", "--quiet", "--package", "tender-builder", "--package", "tender-updater"])
            .current_dir(root()),
    )?;
    let work = target_dir().join("bench");
    remove_if_present(&work)?;
    fs::create_dir_all(&work).with_context(|| format!("cannot create {}", work.display()))?;
    let tools = Tools {
        tender: target_dir().join("release/tender"),
        tenderd: target_dir().join("release/tenderd"),
        keys: work.join("keys"),
        recipe: work.join("bench.toml"),
    };
    fs::write(&tools.recipe, BENCH_RECIPE).with_context(|| format!("cannot write {}", tools.recipe.display()))?;
    run_checked(Command::new(&tools.tender).args(["keys", "generate", "--out"]).arg(&tools.keys).stdout(std::process::Stdio::null()))?;
    // Releases served over HTTP must not have expired, so they are stamped
    // with the current time; both releases of a pair share the stamp.
    let epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .context("the system clock is before 1970")?
        .as_secs()
        .to_string();

    let mut report = Report { runs: args.runs, ..Report::default() };
    let needs_sample = args.wants(Section::ReleaseInstall) || args.wants(Section::Upgrades) || args.wants(Section::Workspace);
    let sample = if needs_sample {
        let venv = ensure_venv()?;
        Some((upgrades::release_sample_workspace(&work, &tools, &venv, &epoch)?, venv))
    } else {
        None
    };
    if let Some((releases, venv)) = &sample {
        if args.wants(Section::Upgrades) {
            report.upgrades = Some(upgrades::bench_upgrades(&work, &tools, releases)?);
        }
        if args.wants(Section::ReleaseInstall) {
            report.trees = Some(bench_release_install(&work, &tools, &releases.dist, venv, args.runs)?);
        }
        if args.wants(Section::Workspace) {
            let input = PairInput {
                label: "sample workspace, one-line change (1.0.0 → 1.0.1)".to_owned(),
                repo: &releases.dist.join("repo"),
                old_version: upgrades::SAMPLE_VERSIONS[0],
                new_version: upgrades::SAMPLE_VERSIONS[1],
                note: None,
            };
            report.pairs.push(bench_pair(&input, &work.join("pair-workspace"), &tools, &epoch, args.runs)?);
        }
    }

    if args.wants(Section::Debian) || args.wants(Section::Link) || args.wants(Section::Images) {
        let (old, new) = corpus::debian_pair()?;
        if args.wants(Section::Images) {
            report.images = Some(images::bench_images(&old, &new, &work, &tools, &epoch)?);
        }
        let out = work.join("debian-out");
        for (tree, version) in [(&old, DEBIAN_OLD_VERSION), (&new, DEBIAN_NEW_VERSION)] {
            release_tree(&tools, tree, version, &out, &epoch)?;
        }
        if args.wants(Section::Debian) {
            let input = PairInput {
                label: format!("Debian {} minbase → with {}", corpus::DEBIAN_SUITE, corpus::DEBIAN_EXTRA_PACKAGES.join(", ")),
                repo: &out.join("repo"),
                old_version: DEBIAN_OLD_VERSION,
                new_version: DEBIAN_NEW_VERSION,
                note: Some(DEBIAN_OWNER_NOTE.to_owned()),
            };
            report.pairs.push(bench_pair(&input, &work.join("pair-debian"), &tools, &epoch, args.runs)?);
        }
        if args.wants(Section::Link) {
            let label = format!("Debian {} minbase with {}", corpus::DEBIAN_SUITE, corpus::DEBIAN_EXTRA_PACKAGES.join(", "));
            report.link = Some(link::bench_link(&label, &out.join("repo"), DEBIAN_NEW_VERSION, &work, &tools)?);
        }
        remove_if_present(&out)?;
    }

    if args.wants(Section::Memory) {
        let tree = corpus::synthetic_tree()?;
        report.memory = Some(memory::bench_memory(&tree, &work, &tools, &epoch, args.runs)?);
    }

    let page = render::render(&report);
    let path = if args.only.is_empty() { root().join("BENCHMARKS.md") } else { work.join("BENCHMARKS.md") };
    fs::write(&path, page).with_context(|| format!("cannot write {}", path.display()))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

/// Caveat of the Debian pair: the recipe's single owner on a root file
/// system.
const DEBIAN_OWNER_NOTE: &str = "Tender's recipe sets one owner on every entry, root:root here, so the files \
    that debootstrap gives other groups (shadow, utmp, mail, staff) lose their group in the release, and the \
    other tools see the same owners. The setgid programs `chage`, `expiry` and `unix_chkpwd` thus become \
    setgid root on the robot.";

const DEBIAN_OLD_VERSION: &str = "1.0.0";
const DEBIAN_NEW_VERSION: &str = "1.1.0";

/// Releases a prebuilt tree into `out` with the bench recipe; an existing
/// `out/repo` keeps its releases.
fn release_tree(tools: &Tools, tree: &Path, version: &str, out: &Path, epoch: &str) -> anyhow::Result<()> {
    run_checked(
        Command::new(&tools.tender)
            .arg("release")
            .arg("--tree")
            .arg(tree)
            .arg("--recipe")
            .arg(&tools.recipe)
            .args(["--version", version, "--source-date-epoch", epoch, "--out"])
            .arg(out)
            .arg("--keys")
            .arg(&tools.keys)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null()),
    )
    .with_context(|| format!("tender release --tree {} failed", tree.display()))
}

/// Measures Tender and the other tools on one pair, then removes the
/// pair's files.
fn bench_pair(input: &PairInput, work: &Path, tools: &Tools, epoch: &str, runs: u32) -> anyhow::Result<PairResult> {
    remove_if_present(work)?;
    fs::create_dir_all(work).with_context(|| format!("cannot create {}", work.display()))?;
    let (tender, trees) = bench_tender_pair(input, work, tools, runs)?;
    let peers = peers::bench_peers(&trees.old, &trees.new, work, epoch, runs)?;
    let result = PairResult {
        label: input.label.clone(),
        old_size: files::tree_size(&trees.old),
        new_size: files::tree_size(&trees.new),
        tender,
        peers,
        note: input.note.clone(),
    };
    remove_if_present(work)?;
    Ok(result)
}

/// Measures release and install of the sample's install tree and of a
/// larger real tree, the Python packages of the build environment (CMake,
/// Ninja, colcon) without byte code.
fn bench_release_install(
    work: &Path,
    tools: &Tools,
    dist: &Path,
    venv: &Path,
    runs: u32,
) -> anyhow::Result<Vec<release_install::TreeResult>> {
    let sample = work.join("tree-sample");
    copy_tree(&dist.join("work/install"), &sample)?;
    let packages = work.join("tree-python-packages");
    copy_tree(&venv.join("lib/python3.11/site-packages"), &packages)?;
    run_checked(Command::new("find").arg(&packages).args(["-name", "__pycache__", "-prune", "-exec", "rm", "-rf", "{}", "+"]))?;
    Ok(vec![
        release_install::bench_tree("eCar sample install tree", &sample, work, tools, runs)?,
        release_install::bench_tree("build venv site-packages", &packages, work, tools, runs)?,
    ])
}
