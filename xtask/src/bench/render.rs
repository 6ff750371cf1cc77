//! `BENCHMARKS.md` from the results of one run: one function per section.

use std::fmt::Write as _;
use std::fs;
use std::process::Command;

use super::images::ImageResult;
use super::link::{LinkResult, DROP_AFTER};
use super::memory::MemoryResult;
use super::peers::{PEER_ZSTD_LEVEL, PEER_ZSTD_WINDOW_LOG};
use super::release_install::TreeResult;
use super::robot::stat;
use super::upgrades::UpgradeResult;
use super::{PairResult, Report, ZSTD_LEVEL};

/// Peak memory `tenderd` may use while installing a release of 1 GiB.
const MEMORY_TARGET_MIB: f64 = 32.0;
/// Largest ratio of bytes sent over the faulty link to bytes needed.
const LINK_TARGET_RATIO: f64 = 1.02;

/// Renders the whole page; sections that did not run are left out.
pub fn render(report: &Report) -> String {
    let mut page = String::new();
    header(&mut page, report.runs);
    targets(&mut page, report);
    if !report.pairs.is_empty() {
        pairs_intro(&mut page);
        for pair in &report.pairs {
            pair_section(&mut page, pair);
        }
    }
    if let Some(images) = &report.images {
        images_section(&mut page, images);
    }
    if let Some(link) = &report.link {
        link_section(&mut page, link);
    }
    if let Some(memory) = &report.memory {
        memory_section(&mut page, memory);
    }
    if let Some(trees) = &report.trees {
        release_install_section(&mut page, trees);
    }
    if let Some(upgrades) = &report.upgrades {
        upgrades_section(&mut page, upgrades);
    }
    samples_section(&mut page, report);
    page
}

/// First line of a command's output, from stdout or else stderr (xdelta3
/// prints its version there).
fn command_version(argv: &[&str]) -> String {
    let Some((program, args)) = argv.split_first() else { return String::new() };
    let Ok(output) = Command::new(program).args(args).output() else { return format!("{program}: not found") };
    let first = |bytes: &[u8]| String::from_utf8_lossy(bytes).lines().next().unwrap_or_default().trim().to_owned();
    let stdout = first(&output.stdout);
    if stdout.is_empty() {
        first(&output.stderr)
    } else {
        stdout
    }
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

/// Bytes in MiB, or in KiB below 1 MiB, with the exact count beside them.
fn mib_exact(bytes: u64) -> String {
    if bytes < 1 << 20 {
        format!("{:.1} KiB ({bytes} B)", bytes as f64 / 1024.0)
    } else {
        format!("{} ({bytes} B)", mib(bytes as f64))
    }
}

fn met(condition: bool) -> &'static str {
    if condition {
        "met"
    } else {
        "**missed**"
    }
}

fn header(page: &mut String, runs: u32) {
    let _ = writeln!(page, "# Benchmarks\n");
    let _ = writeln!(
        page,
        "Written by `cargo xtask bench` on {}. Machine: {}. Each time and memory figure is the median of {runs} \
         runs in this one run of the benchmark; memory is the largest resident set of one process of the \
         measured command, as GNU time reports it, about 1 MiB at the least. Timings come from one shared machine and vary between runs \
         of the benchmark.\n",
        humantime::format_rfc3339_seconds(std::time::SystemTime::now()),
        machine_description(),
    );
    let _ = writeln!(page, "Tool versions:\n");
    for argv in [
        &["zstd", "--version"][..],
        &["tar", "--version"],
        &["xdelta3", "-V"],
        &["casync", "--version"],
        &["debootstrap", "--version"],
    ] {
        let _ = writeln!(page, "- `{}`: {}", argv.join(" "), command_version(argv));
    }
    let _ = writeln!(page);
}

/// States each target and whether this run met it.
fn targets(page: &mut String, report: &Report) {
    let _ = writeln!(page, "## Targets\n");
    let _ = writeln!(
        page,
        "The targets are measured here and never asserted by tests: Tender downloads at most as many bytes \
         as the smallest of xdelta3, `zstd --patch-from` and casync on each tree pair; `tenderd` stays within \
         {MEMORY_TARGET_MIB:.0} MiB of peak memory while installing a release of 1 GiB; over a link that drops \
         every 1 MiB, the bytes sent are at most {LINK_TARGET_RATIO} × the bytes needed.\n"
    );
    for pair in &report.pairs {
        let best = best_delta_peer(pair);
        let tender = pair.tender.download_bytes;
        let line = match best {
            Some((tool, bytes)) => format!(
                "- Download bytes, {}: Tender {} against {} for {tool}, {:.2} ×: {}.",
                pair.label,
                mib_exact(tender),
                mib_exact(bytes),
                tender as f64 / bytes.max(1) as f64,
                met(tender <= bytes)
            ),
            None => format!("- Download bytes, {}: no delta tool ran.", pair.label),
        };
        let _ = writeln!(page, "{line}");
    }
    if let Some(memory) = &report.memory {
        for (source, summary) in [("a bundle", &memory.from_bundle), ("an HTTP repository", &memory.from_http)] {
            let peak = summary.max_rss_bytes() / 1024.0 / 1024.0;
            let _ = writeln!(
                page,
                "- Peak memory installing {} from {source}: {peak:.1} MiB: {}.",
                mib(memory.bytes as f64),
                met(peak <= MEMORY_TARGET_MIB)
            );
        }
    }
    if let Some(link) = &report.link {
        let line = match &link.outcome {
            Ok(_) => {
                let ratio = link.sent_bytes as f64 / link.needed_bytes.max(1) as f64;
                format!("- Link dropping every 1 MiB: {ratio:.3} × the bytes needed: {}.", met(ratio <= LINK_TARGET_RATIO))
            }
            Err(_) => "- Link dropping every 1 MiB: the install failed, see below: **missed**.".to_owned(),
        };
        let _ = writeln!(page, "{line}");
    }
    let _ = writeln!(page);
}

/// Returns the delta tool with the fewest download bytes, leaving out the
/// full archive.
fn best_delta_peer(pair: &PairResult) -> Option<(&'static str, u64)> {
    pair.peers
        .iter()
        .filter(|peer| peer.tool != "full tar.zst")
        .map(|peer| (peer.tool, peer.download_bytes))
        .min_by_key(|(_, bytes)| *bytes)
}

fn pairs_intro(page: &mut String) {
    let _ = writeln!(page, "## Tree pairs: bytes to download, apply time and memory\n");
    let _ = writeln!(
        page,
        "Each pair is an older and a newer tree. Tender: both are released with `tender release` into one \
         output directory, the repository is served over HTTP on 127.0.0.1, a robot installs the older \
         release, and `tenderd install URL --version NEW --json` is measured. Its download is the body bytes \
         the server sent for that install, TUF metadata and the release manifest included; its apply time \
         covers the download from 127.0.0.1, verification, staging into the inactive slot, the switch and a \
         health check that runs `true`. The server is the fault-injecting test server of `tests/`, running \
         unoptimized inside `cargo xtask`, which reads and hashes each file per request, so the download \
         part of Tender's time is slower than a production HTTP server would make it.\n"
    );
    let _ = writeln!(
        page,
        "The other tools work on the trees Tender installed, so all see the same files. Their archives are \
         `tar --sort=name --mtime=@EPOCH --owner=0 --group=0 --numeric-owner`. xdelta3: `xdelta3 -e -9 -B \
         WINDOW -s OLD.tar NEW.tar` with a source window covering the older archive. zstd: `zstd \
         -{PEER_ZSTD_LEVEL} --long={PEER_ZSTD_WINDOW_LOG} --patch-from=OLD.tar NEW.tar`. casync: `casync make` \
         of each tree into its own store; the download is the chunk files of the newer store that the older \
         store lacks, plus the newer index. Full: `zstd -{PEER_ZSTD_LEVEL} --long={PEER_ZSTD_WINDOW_LOG}` of \
         the newer tar. Their apply makes the newer tree in an empty directory from files already on the \
         machine (`xdelta3 -d | tar -x`, `zstd -d --patch-from | tar -x`, `casync extract --seed=OLDTREE`, \
         `zstd -d | tar -x`) and excludes the download.\n"
    );

}

fn pair_section(page: &mut String, pair: &PairResult) {
    let _ = writeln!(page, "### {}\n", pair.label);
    let _ = writeln!(
        page,
        "Older tree: {} files, {}. Newer tree: {} files, {}.\n",
        pair.old_size.0,
        mib(pair.old_size.1 as f64),
        pair.new_size.0,
        mib(pair.new_size.1 as f64)
    );
    if let Some(note) = &pair.note {
        let _ = writeln!(page, "{note}\n");
    }
    let _ = writeln!(page, "| tool | download | apply time | apply peak memory | the robot keeps |");
    let _ = writeln!(page, "| --- | ---: | ---: | ---: | --- |");
    let tender = &pair.tender;
    let _ = writeln!(
        page,
        "| Tender | {} | {:.3} s | {} | the older slot |",
        mib_exact(tender.download_bytes),
        tender.apply.seconds,
        mib(tender.apply.max_rss_bytes())
    );
    for peer in &pair.peers {
        let _ = writeln!(
            page,
            "| {} | {} | {:.3} s | {} | {} |",
            peer.tool,
            mib_exact(peer.download_bytes),
            peer.apply.seconds,
            mib(peer.apply.max_rss_bytes()),
            peer.needs
        );
    }
    let report = &tender.report;
    let _ = writeln!(
        page,
        "\nTender's download: {} requests, of which {} outside the chunk store (TUF metadata, and the delta pack or the manifest); `--json` stats: bytes_planned \
         {}, bytes_fetched {} in {} chunks, {} files rebuilt, {} copied from the active slot, {} kept. \
         Installing the older release on an empty robot downloaded {}.\n",
        tender.requests,
        mib_exact(tender.metadata_bytes),
        stat(report, "bytes_planned"),
        stat(report, "bytes_fetched"),
        stat(report, "chunks_fetched"),
        stat(report, "files_rebuilt"),
        stat(report, "files_copied"),
        stat(report, "files_kept"),
        mib_exact(tender.full_install_bytes),
    );
}

fn images_section(page: &mut String, images: &[ImageResult]) {
    let _ = writeln!(page, "## Filesystem images\n");
    let _ = writeln!(
        page,
        "ext4 and erofs images of the Debian pair above (`mke2fs -d` with a fixed UUID and hash seed, \
         `mkfs.erofs`), each released as a tree containing `rootfs.img`. The images are larger than a 32 MiB \
         delta group, so the pack patches them in windows. Tender's bytes are the pack target's length and, \
         without the pack, the stored chunks that a robot running the older image lacks; metadata is left \
         out. zstd: `zstd -{PEER_ZSTD_LEVEL} --long={PEER_ZSTD_WINDOW_LOG} --patch-from=OLD.img NEW.img`, which \
         keeps the whole older image in memory. No robot installs these images here.\n"
    );
    let _ = writeln!(page, "| image | older | newer | Tender pack | Tender chunks | zstd --patch-from | `tender release` of the newer image |");
    let _ = writeln!(page, "| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    for image in images {
        let optional = |bytes: Option<u64>| bytes.map_or_else(|| "none".to_owned(), mib_exact);
        let _ = writeln!(
            page,
            "| {} | {} | {} | {} | {} | {} | {:.1} s, {} |",
            image.kind,
            mib(image.old_bytes as f64),
            mib(image.new_bytes as f64),
            optional(image.pack_bytes),
            optional(image.chunk_bytes),
            mib_exact(image.zstd_patch_bytes),
            image.release.seconds,
            mib(image.release.max_rss_kib as f64 * 1024.0)
        );
    }
    let _ = writeln!(page);
}

fn link_section(page: &mut String, link: &LinkResult) {
    let _ = writeln!(page, "## Install over a link that drops every 1 MiB\n");
    let _ = writeln!(
        page,
        "A full install of {} on an empty robot from a server that closes every connection after {DROP_AFTER} \
         body bytes, on every request. Bytes needed: the body bytes of the same install over a clean link. \
         `tenderd` runs with its default download policy (8 attempts per file, backoff from 500 ms up to \
         60 s). Chunk files are stored at most 256 KiB here, so only larger files, such as the release \
         manifest, meet the drop. One run.\n",
        link.label
    );
    let _ = writeln!(page, "| bytes needed | bytes sent | ratio | requests | responses cut | result |");
    let _ = writeln!(page, "| ---: | ---: | ---: | ---: | ---: | --- |");
    let result = match &link.outcome {
        Ok(sample) => format!("installed in {:.1} s", sample.seconds),
        Err(_) => "failed, see below".to_owned(),
    };
    let _ = writeln!(
        page,
        "| {} | {} | {:.3} | {} | {} | {result} |\n",
        mib_exact(link.needed_bytes),
        mib_exact(link.sent_bytes),
        link.sent_bytes as f64 / link.needed_bytes.max(1) as f64,
        link.requests,
        link.cut_responses,
    );
    if let Err(error) = &link.outcome {
        // The first line names the measured command; the rest is the end of
        // tenderd's standard error.
        let stderr = error.split_once('\n').map_or(error.as_str(), |(_, rest)| rest);
        let _ = writeln!(page, "The end of `tenderd`'s standard error:\n\n```\n{}\n```\n", stderr.trim());
    }
}

fn memory_section(page: &mut String, memory: &MemoryResult) {
    let _ = writeln!(page, "## Memory with a release of 1 GiB\n");
    let _ = writeln!(
        page,
        "A deterministic synthetic tree (seeded; 70 % of the files up to 64 KiB, 25 % up to 8 MiB, 5 % up \
         to 128 MiB; half word text that compresses, half pseudo-random bytes) released once and installed \
         on an empty robot, from the bundle and from the repository over HTTP on 127.0.0.1. Target: at most \
         {MEMORY_TARGET_MIB:.0} MiB for `tenderd`. The time from HTTP is mostly the unoptimized test \
         server's, which reads and hashes each file per request.\n"
    );
    let _ = writeln!(page, "| step | time | peak memory |");
    let _ = writeln!(page, "| --- | ---: | ---: |");
    let _ = writeln!(
        page,
        "| `tender release` of {} files, {} (bundle {}), one run | {:.1} s | {} |",
        memory.files,
        mib(memory.bytes as f64),
        mib(memory.bundle_bytes as f64),
        memory.release.seconds,
        mib(memory.release.max_rss_bytes())
    );
    for (step, summary) in [("`tenderd install` from the bundle", &memory.from_bundle), ("`tenderd install` from HTTP", &memory.from_http)] {
        let _ = writeln!(page, "| {step} | {:.1} s | {} |", summary.seconds, mib(summary.max_rss_bytes()));
    }
    let _ = writeln!(page);
}

fn release_install_section(page: &mut String, trees: &[TreeResult]) {
    let _ = writeln!(page, "## Release and install\n");
    let _ = writeln!(
        page,
        "Release: `tender release --tree` (scan, chunk, compress, sign, write the repository and the bundle) \
         against `tar --sort=name -cf - . | zstd -T0 -{ZSTD_LEVEL}`. Both compress at zstd level {ZSTD_LEVEL}; \
         `zstd -T0` uses every core, Tender's release compresses chunks on one thread. Install: `tenderd \
         install BUNDLE` on an empty robot (verify, stage, check every file, switch, a health check that runs \
         `true`) against `zstd -dc | tar -xf -` into an empty directory. Tender also hashes every file after \
         staging and syncs the file system before the switch; tar does neither.\n"
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
            mib(tree.tender_release.max_rss_bytes()),
            mib(tree.tar_release.max_rss_bytes())
        );
        let _ = writeln!(
            page,
            "| | | | install time | {:.3} s | {:.3} s |",
            tree.tender_install.seconds, tree.tar_install.seconds
        );
        let _ = writeln!(
            page,
            "| | | | install peak memory | {} | {} |",
            mib(tree.tender_install.max_rss_bytes()),
            mib(tree.tar_install.max_rss_bytes())
        );
    }
    let _ = writeln!(page);
}

fn upgrades_section(page: &mut String, upgrades: &[UpgradeResult]) {
    let _ = writeln!(page, "## Upgrades of the sample workspace\n");
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
         slots hold a release, an upgrade writes only the files that changed.\n"
    );
}

/// Lists every timed sample, so a reader can see the spread behind each
/// median.
fn samples_section(page: &mut String, report: &Report) {
    let _ = writeln!(page, "## All samples, in seconds\n");
    let line = |page: &mut String, name: &str, seconds: &[f64]| {
        let samples: Vec<String> = seconds.iter().map(|s| format!("{s:.3}")).collect();
        let _ = writeln!(page, "- {name}: {}", samples.join(", "));
    };
    for pair in &report.pairs {
        line(page, &format!("{} / Tender", pair.label), &pair.tender.apply.all_seconds);
        for peer in &pair.peers {
            line(page, &format!("{} / {}", pair.label, peer.tool), &peer.apply.all_seconds);
        }
    }
    if let Some(memory) = &report.memory {
        line(page, "1 GiB / install from the bundle", &memory.from_bundle.all_seconds);
        line(page, "1 GiB / install from HTTP", &memory.from_http.all_seconds);
    }
    for tree in report.trees.iter().flatten() {
        for (step, summary) in [
            ("Tender release", &tree.tender_release),
            ("tar + zstd release", &tree.tar_release),
            ("Tender install", &tree.tender_install),
            ("tar + zstd extract", &tree.tar_install),
        ] {
            line(page, &format!("{} / {step}", tree.label), &summary.all_seconds);
        }
    }
}
