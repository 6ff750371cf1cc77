//! `cargo xtask bench`: measures Tender beside `tar | zstd` on the same trees
//! in one run and writes `BENCHMARKS.md`.
//!
//! Every timed command runs under a small Python wrapper that reports its
//! wall time and the peak resident memory of its process tree
//! (`RUSAGE_CHILDREN`), so both tools are measured the same way.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

use crate::system::ensure_packages;
use crate::tooling::ensure_venv;
use crate::workspace::{cargo, root, run_checked, target_dir};

/// Measure release and install against tar and zstd, and write BENCHMARKS.md.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Runs of each measurement; the median is reported.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(3..=50))]
    runs: u32,
}

/// zstd level of the sample recipe, used for both tools.
const ZSTD_LEVEL: u32 = 12;
const SOURCE_DATE_EPOCH: &str = "1767225600";

/// Times a command given as arguments and prints `seconds max_rss_kib exit_code`.
const MEASURE_PY: &str = r#"
import resource, subprocess, sys, time
start = time.perf_counter()
code = subprocess.run(sys.argv[1:]).returncode
elapsed = time.perf_counter() - start
print(f"{elapsed:.6f} {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss} {code}")
"#;

/// Recipe for packaging a prebuilt tree with a health check that passes.
const BENCH_RECIPE: &str = r#"name = "bench"
compatible = "ecar-4wd4ws"
prefix = "/opt/ecar"
runtime_path = "/opt/ecar/current"
services = []
exclude = ["**/__pycache__"]

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

#[derive(Debug, Clone, Copy)]
struct Sample {
    seconds: f64,
    max_rss_kib: u64,
}

fn measure(argv: &[String]) -> anyhow::Result<Sample> {
    let output = Command::new("python3")
        .arg("-c")
        .arg(MEASURE_PY)
        .args(argv)
        .stderr(std::process::Stdio::null())
        .output()
        .context("cannot run python3 to measure a command")?;
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text.lines().last().unwrap_or_default();
    let fields: Vec<&str> = line.split_whitespace().collect();
    let [seconds, rss, code] = fields[..] else {
        bail!("cannot parse the measurement of {argv:?}: {text:?}");
    };
    if code != "0" {
        bail!("{argv:?} exited with {code} while measured");
    }
    Ok(Sample { seconds: seconds.parse()?, max_rss_kib: rss.parse()? })
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Medians of repeated samples.
struct Summary {
    seconds: f64,
    max_rss_kib: f64,
    all_seconds: Vec<f64>,
}

fn summarize(samples: &[Sample]) -> Summary {
    let mut seconds: Vec<f64> = samples.iter().map(|s| s.seconds).collect();
    let all_seconds = seconds.clone();
    let mut rss: Vec<f64> = samples.iter().map(|s| s.max_rss_kib as f64).collect();
    Summary { seconds: median(&mut seconds), max_rss_kib: median(&mut rss), all_seconds }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn path_text(path: &Path) -> String {
    path.display().to_string()
}

/// Results of one tree.
struct TreeResult {
    label: String,
    files: usize,
    bytes: u64,
    tender_release: Summary,
    tender_size: u64,
    tar_release: Summary,
    tar_size: u64,
    tender_install: Summary,
    tar_install: Summary,
}

struct Tools {
    tender: PathBuf,
    tenderd: PathBuf,
    keys: PathBuf,
    recipe: PathBuf,
}

fn tree_size(tree: &Path) -> (usize, u64) {
    let mut files = 0;
    let mut bytes = 0;
    for entry in walk(tree) {
        if let Ok(meta) = fs::symlink_metadata(&entry) {
            if meta.is_file() {
                files += 1;
                bytes += meta.len();
            }
        }
    }
    (files, bytes)
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(next) = pending.pop() {
        let Ok(entries) = fs::read_dir(&next) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                pending.push(path.clone());
            }
            found.push(path);
        }
    }
    found
}

fn make_robot(robot: &Path, keys: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(robot.join("etc/tender"))?;
    fs::copy(keys.join("root.json"), robot.join("etc/tender/root.json"))?;
    fs::write(
        robot.join("etc/tender/updater.toml"),
        "compatible = \"ecar-4wd4ws\"\n[trust]\nroot = \"/etc/tender/root.json\"\n[services]\nrestart = [\"true\"]\nis_active = [\"true\"]\nactive_timeout = \"10s\"\n",
    )?;
    Ok(())
}

fn bench_tree(label: &str, tree: &Path, work: &Path, tools: &Tools, runs: u32) -> anyhow::Result<TreeResult> {
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
            "tar --sort=name -C '{}' -cf - . | zstd -q -T0 -{ZSTD_LEVEL} -o '{}'",
            tree.display(),
            archive.display()
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
        let pipeline = format!("zstd -q -dc '{}' | tar -C '{}' -xf -", archive.display(), extract.display());
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

/// Bytes an upgrade wrote and fetched, from `tenderd install --json`.
struct UpgradeResult {
    label: String,
    report: serde_json::Value,
    tree_bytes: u64,
}

fn install_json(tenderd: &Path, robot: &Path, bundle: &Path) -> anyhow::Result<serde_json::Value> {
    let output = Command::new(tenderd)
        .arg("--root")
        .arg(robot)
        .args(["install", "--json"])
        .arg(bundle)
        .env("RUST_LOG", "warn")
        .output()?;
    if !output.status.success() {
        bail!("tenderd install {} failed: {}", bundle.display(), String::from_utf8_lossy(&output.stderr));
    }
    Ok(serde_json::from_slice(&output.stdout)?)
}

/// Releases the sample workspace three times with one-line changes and
/// installs them in order on one robot.
fn bench_upgrades(work: &Path, tools: &Tools, venv: &Path) -> anyhow::Result<Vec<UpgradeResult>> {
    eprintln!("==> measuring upgrades of the sample workspace");
    let source = work.join("src");
    copy_tree(&root().join("recipes"), &source)?;
    let dist = work.join("dist");
    let version_file = source.join("ecar-ws/src/servo_controller/include/servo_controller/version.hpp");
    let mut previous = "1.0.0".to_owned();
    for version in ["1.0.0", "1.0.1", "1.0.2"] {
        if version != "1.0.0" {
            let text = fs::read_to_string(&version_file)?;
            fs::write(&version_file, text.replace(&format!("\"{previous}\""), &format!("\"{version}\"")))?;
        }
        run_checked(
            Command::new(&tools.tender)
                .arg("release")
                .arg("--recipe")
                .arg(source.join("ecar-4wd4ws.toml"))
                .args(["--version", version, "--source-date-epoch", SOURCE_DATE_EPOCH, "--out"])
                .arg(&dist)
                .arg("--keys")
                .arg(&tools.keys)
                .arg("--colcon-venv")
                .arg(venv)
                .stdout(std::process::Stdio::null()),
        )?;
        previous = version.to_owned();
    }
    let robot = work.join("robot-upgrades");
    make_robot(&robot, &tools.keys)?;
    let (_, tree_bytes) = tree_size(&dist.join("work/install"));
    let labels = [
        ("1.0.0", "1.0.0 on an empty robot"),
        ("1.0.1", "1.0.1 over 1.0.0 (slot b empty)"),
        ("1.0.2", "1.0.2 over 1.0.1 (slot a holds 1.0.0)"),
    ];
    let mut results = Vec::new();
    for (version, label) in labels {
        let bundle = dist.join(format!("ecar-4wd4ws-{version}.tender"));
        let report = install_json(&tools.tenderd, &robot, &bundle)?;
        results.push(UpgradeResult { label: label.to_owned(), report, tree_bytes });
    }
    Ok(results)
}

fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    let status = Command::new("cp").arg("-a").arg(from).arg(to).status()?;
    if !status.success() {
        bail!("cp -a {} {} failed", from.display(), to.display());
    }
    Ok(())
}

fn command_version(argv: &[&str]) -> String {
    Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or_default().trim().to_owned())
        .unwrap_or_default()
}

fn machine_description() -> String {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| text.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned()))
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let memory = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| text.lines().next().map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_owned()))
        .and_then(|kib| kib.parse::<u64>().ok())
        .map(|kib| format!("{:.0} GiB", kib as f64 / 1024.0 / 1024.0))
        .unwrap_or_default();
    let kernel = command_version(&["uname", "-r"]);
    format!("{cpu}, {cores} cores, {memory} memory, Linux {kernel}")
}

fn mib(bytes: f64) -> String {
    format!("{:.2} MiB", bytes / 1024.0 / 1024.0)
}

fn render(trees: &[TreeResult], upgrades: &[UpgradeResult], runs: u32) -> String {
    let mut page = String::new();
    let _ = writeln!(page, "# Benchmarks\n");
    let _ = writeln!(
        page,
        "Written by `cargo xtask bench` on {}. Machine: {}. Tools: {}; {}. \
         Each figure is the median of {runs} runs in this one run of the benchmark; \
         memory is the peak resident set of the measured process tree. Both tools \
         compress at zstd level {ZSTD_LEVEL}; `zstd -T0` uses every core, Tender's \
         release compresses chunks on one thread. Timings come from one shared machine \
         and vary between runs of the benchmark.\n",
        humantime::format_rfc3339_seconds(std::time::SystemTime::now()),
        machine_description(),
        command_version(&["zstd", "--version"]),
        command_version(&["tar", "--version"]),
    );
    let _ = writeln!(page, "## Release and install\n");
    let _ = writeln!(
        page,
        "Release: `tender release --tree` (scan, chunk, compress, sign, write the repository and the bundle) \
         against `tar --sort=name -cf - . | zstd -T0 -{ZSTD_LEVEL}`. Install: `tenderd install BUNDLE` on an \
         empty robot (verify, stage, check every file, switch, a health check that runs `true`) against \
         `zstd -dc | tar -xf -` into an empty directory. Tender also hashes every file after staging and \
         syncs the file system before the switch; tar does neither.\n"
    );
    let _ = writeln!(page, "| tree | files | size | step | Tender | tar + zstd |");
    let _ = writeln!(page, "| --- | ---: | ---: | --- | ---: | ---: |");
    for tree in trees {
        let size = mib(tree.bytes as f64);
        let _ = writeln!(
            page,
            "| {} | {} | {size} | release time | {:.3} s | {:.3} s |",
            tree.label, tree.files, tree.tender_release.seconds, tree.tar_release.seconds
        );
        let _ = writeln!(page, "| | | | output size | {} | {} |", mib(tree.tender_size as f64), mib(tree.tar_size as f64));
        let _ = writeln!(
            page,
            "| | | | release peak memory | {} | {} |",
            mib(tree.tender_release.max_rss_kib * 1024.0),
            mib(tree.tar_release.max_rss_kib * 1024.0)
        );
        let _ = writeln!(
            page,
            "| | | | install time | {:.3} s | {:.3} s |",
            tree.tender_install.seconds, tree.tar_install.seconds
        );
        let _ = writeln!(
            page,
            "| | | | install peak memory | {} | {} |",
            mib(tree.tender_install.max_rss_kib * 1024.0),
            mib(tree.tar_install.max_rss_kib * 1024.0)
        );
    }
    let _ = writeln!(page, "\nAll samples, in seconds:\n");
    for tree in trees {
        for (step, summary) in [
            ("Tender release", &tree.tender_release),
            ("tar + zstd release", &tree.tar_release),
            ("Tender install", &tree.tender_install),
            ("tar + zstd extract", &tree.tar_install),
        ] {
            let samples: Vec<String> = summary.all_seconds.iter().map(|s| format!("{s:.3}")).collect();
            let _ = writeln!(page, "- {} / {step}: {}", tree.label, samples.join(", "));
        }
    }
    let _ = writeln!(page, "\n## Upgrades of the sample workspace\n");
    let _ = writeln!(
        page,
        "Three releases of `recipes/ecar-ws`, each with a one-line change in `servo_controller`, installed in \
         order on one robot from their bundles. Bytes written are file bytes written into the inactive slot \
         (copied from the active slot or rebuilt from chunks); extracting a tar archive writes the whole tree \
         every time.\n"
    );
    let _ = writeln!(page, "| install | files kept | copied | rebuilt | bytes written | chunks read from the bundle | tar extraction writes |");
    let _ = writeln!(page, "| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    for upgrade in upgrades {
        let stats = &upgrade.report["stats"];
        let _ = writeln!(
            page,
            "| {} | {} | {} | {} | {} | {} ({} bytes) | {} |",
            upgrade.label,
            stats["files_kept"],
            stats["files_copied"],
            stats["files_rebuilt"],
            stats["bytes_written"],
            stats["chunks_fetched"],
            stats["bytes_fetched"],
            upgrade.tree_bytes,
        );
    }
    let _ = writeln!(
        page,
        "\nThe first install into an empty slot copies every unchanged file from the active slot; once both \
         slots hold a release, an upgrade writes only the files that changed."
    );
    page
}

pub fn run(args: Args) -> anyhow::Result<()> {
    ensure_packages()?;
    let venv = ensure_venv()?;
    run_checked(
        Command::new(cargo())
            .args(["build", "--release", "--quiet", "--package", "tender-builder", "--package", "tender-updater"])
            .current_dir(root()),
    )?;
    let work = target_dir().join("bench");
    if work.exists() {
        fs::remove_dir_all(&work).with_context(|| format!("cannot remove {}", work.display()))?;
    }
    fs::create_dir_all(&work)?;
    let tools = Tools {
        tender: target_dir().join("release/tender"),
        tenderd: target_dir().join("release/tenderd"),
        keys: work.join("keys"),
        recipe: work.join("bench.toml"),
    };
    fs::write(&tools.recipe, BENCH_RECIPE)?;
    run_checked(Command::new(&tools.tender).args(["keys", "generate", "--out"]).arg(&tools.keys).stdout(std::process::Stdio::null()))?;

    let upgrades = bench_upgrades(&work, &tools, &venv)?;

    // The sample's install tree, and a larger real tree: the Python packages
    // of the build environment (CMake, Ninja, colcon), without byte code.
    let sample = work.join("tree-sample");
    copy_tree(&work.join("dist/work/install"), &sample)?;
    let packages = work.join("tree-python-packages");
    copy_tree(&venv.join("lib/python3.11/site-packages"), &packages)?;
    run_checked(Command::new("find").arg(&packages).args(["-name", "__pycache__", "-prune", "-exec", "rm", "-rf", "{}", "+"]))?;

    let trees = vec![
        bench_tree("eCar sample install tree", &sample, &work, &tools, args.runs)?,
        bench_tree("build venv site-packages", &packages, &work, &tools, args.runs)?,
    ];
    let page = render(&trees, &upgrades, args.runs);
    let path = root().join("BENCHMARKS.md");
    fs::write(&path, page).with_context(|| format!("cannot write {}", path.display()))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}
