//! Installs from USB sticks. `tenderd usb` and the watcher of `tenderd run`
//! look for `.tender` bundles in the configured mount points and install the
//! newest eligible one with the same checks as any install. A result file
//! next to each bundle records the outcome for the technician.
//!
//! A bundle is used only once its size and mtime stayed the same for
//! `usb.settle`, so a copy in progress is left alone; a bundle cut short
//! (a stick pulled mid-copy) fails verification as truncated before
//! anything on the robot changes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use serde::Deserialize;

use crate::config::{under_root, Config};
use crate::state::{now_text, Phase, State};
use crate::updater::{InstallOptions, UpdateError, Updater};
use crate::verify::VerifiedRelease;

/// Suffix of the result file written next to a bundle.
pub const RESULT_SUFFIX: &str = ".result.txt";
/// Rounds of `usb.settle` that `tenderd usb --once` waits for a bundle
/// that is still being copied.
const MAX_SETTLE_ROUNDS: u32 = 30;

/// The `[usb]` section as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct UsbFile {
    /// Mount point patterns; `*` and `?` match within one path component.
    mounts: Vec<String>,
    #[serde(with = "crate::config::duration_text")]
    settle: Option<Duration>,
    #[serde(with = "crate::config::duration_text")]
    scan_interval: Option<Duration>,
}

/// Mount points of USB sticks and the timing of the watcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsbConfig {
    /// Mount point patterns below the root prefix; empty turns USB installs off.
    pub mounts: Vec<PathBuf>,
    /// How long a bundle's size and mtime must stay the same before it is used.
    pub settle: Duration,
    /// Pause between scans of `tenderd run` and `tenderd usb`.
    pub scan_interval: Duration,
}

impl UsbFile {
    pub(crate) fn resolve(self, root: &Path) -> Result<UsbConfig, String> {
        let mut mounts = Vec::with_capacity(self.mounts.len());
        for pattern in self.mounts {
            let path = Path::new(&pattern);
            if !path.is_absolute() {
                return Err(format!("usb.mounts entry {pattern:?} must be an absolute path such as \"/media/*\""));
            }
            mounts.push(under_root(root, path));
        }
        Ok(UsbConfig {
            mounts,
            settle: self.settle.unwrap_or(Duration::from_secs(2)),
            scan_interval: self.scan_interval.unwrap_or(Duration::from_secs(2)),
        })
    }
}

/// Returns true when `name` matches `pattern`, where `*` matches any run of
/// characters and `?` one character.
fn wildcard_match(pattern: &str, name: &str) -> bool {
    let (pattern, name): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        if p < pattern.len() && (pattern[p] == '?' || pattern[p] == name[n]) {
            p += 1;
            n += 1;
        } else if p < pattern.len() && pattern[p] == '*' {
            star = Some((p, n));
            p += 1;
        } else if let Some((star_p, star_n)) = star {
            p = star_p + 1;
            n = star_n + 1;
            star = Some((star_p, star_n + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|c| *c == '*')
}

/// Expands a mount pattern into the existing directories it matches.
fn expand_pattern(pattern: &Path) -> Vec<PathBuf> {
    let mut found = vec![PathBuf::from("/")];
    for component in pattern.components().skip(1) {
        let text = component.as_os_str().to_string_lossy();
        let wild = text.contains(['*', '?']);
        let mut next = Vec::new();
        for dir in &found {
            if !wild {
                next.push(dir.join(component));
                continue;
            }
            let Ok(entries) = std::fs::read_dir(dir) else { continue };
            let mut names: Vec<PathBuf> = entries
                .filter_map(Result::ok)
                .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                .filter(|e| wildcard_match(&text, &e.file_name().to_string_lossy()))
                .map(|e| e.path())
                .collect();
            names.sort();
            next.extend(names);
        }
        found = next;
    }
    found.into_iter().filter(|p| p.is_dir()).collect()
}

/// A bundle file as seen by one scan.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct BundleFile {
    path: PathBuf,
    size: u64,
    modified: u64,
}

fn stat_bundle(path: &Path) -> Option<BundleFile> {
    // A symlink on a stick could name any file on the robot, so only regular files count.
    let metadata = std::fs::symlink_metadata(path).ok()?;
    if !metadata.is_file() {
        return None;
    }
    let modified = metadata.modified().ok()?.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    Some(BundleFile { path: path.to_owned(), size: metadata.len(), modified })
}

/// Lists the `.tender` files at the top of every matching mount point.
fn find_bundles(config: &UsbConfig) -> Vec<BundleFile> {
    let mut bundles = Vec::new();
    for pattern in &config.mounts {
        for dir in expand_pattern(pattern) {
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            for entry in entries.filter_map(Result::ok) {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.ends_with(".tender") && !name.starts_with('.') {
                    bundles.extend(stat_bundle(&entry.path()));
                }
            }
        }
    }
    bundles.sort_by(|a, b| a.path.cmp(&b.path));
    bundles.dedup();
    bundles
}

fn result_path(bundle: &Path) -> PathBuf {
    let mut name = bundle.as_os_str().to_owned();
    name.push(RESULT_SUFFIX);
    PathBuf::from(name)
}

/// Returns true when the result file next to `bundle` already reports a
/// finished attempt at this exact file (same size and mtime).
fn already_handled(bundle: &BundleFile) -> bool {
    let Ok(text) = std::fs::read_to_string(result_path(&bundle.path)) else { return false };
    let field = |key: &str| text.lines().find_map(|l| l.strip_prefix(key)).map(str::trim).map(str::to_owned);
    field("bundle size:") == Some(bundle.size.to_string())
        && field("bundle modified:") == Some(bundle.modified.to_string())
        && field("outcome:").is_some_and(|o| o != "installing")
}

/// Outcome of one bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleResult {
    pub bundle: PathBuf,
    /// `committed`, `reverted`, `failed`, `rejected`, `skipped`, `held` or `installing`.
    pub outcome: String,
    /// The bundle's release, when it verified.
    pub release: Option<String>,
    pub detail: String,
}

/// Writes the result file next to the bundle. A read-only stick or one that
/// was pulled out is logged and otherwise ignored.
fn write_result(bundle: &BundleFile, result: &BundleResult, config: &Config) {
    let state = State::load(&config.state_dir).ok();
    let running = state
        .as_ref()
        .and_then(|s| s.active.and_then(|slot| s.slot_release(slot)))
        .map_or_else(|| "none".to_owned(), |r| r.version.to_string());
    let name = bundle.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let text = format!(
        "tender USB install result\nbundle: {name}\nbundle size: {}\nbundle modified: {}\nrobot compatible: {}\noutcome: {}\nrelease: {}\nrunning version: {running}\ntime: {}\ndetail: {}\n",
        bundle.size,
        bundle.modified,
        config.compatible,
        result.outcome,
        result.release.as_deref().unwrap_or("-"),
        now_text(),
        result.detail.replace('\n', " "),
    );
    let path = result_path(&bundle.path);
    // The stick is not the robot's state, so a plain write is enough. The
    // sync lets the file survive the technician pulling the stick soon after.
    let written = std::fs::write(&path, text).and_then(|()| std::fs::File::open(&path)?.sync_all());
    match written {
        Ok(()) => tracing::info!(result = %path.display(), outcome = %result.outcome, "USB result file written"),
        Err(error) if error.raw_os_error() == Some(libc::EROFS) => tracing::warn!(
            result = %path.display(),
            "the USB stick is read-only, so no result file was written; the outcome is in `tenderd history`"
        ),
        Err(error) => tracing::warn!(result = %path.display(), %error, "cannot write the USB result file"),
    }
}

/// Returns why a verified bundle may not be installed, or `None` when it may.
fn ineligible(config: &Config, state: &State, release: &VerifiedRelease) -> Option<String> {
    let manifest = release.manifest();
    if manifest.compatible != config.compatible {
        return Some(format!("the bundle is for compatible {:?} but this robot is {:?}", manifest.compatible, config.compatible));
    }
    if manifest.architecture != config.architecture {
        return Some(format!("the bundle is built for {} but this robot is {}", manifest.architecture, config.architecture));
    }
    if let Some(installed) = state.committed_release() {
        if manifest.version <= installed.version {
            return Some(format!("{} {} is not newer than the installed {installed}", manifest.name, manifest.version));
        }
    }
    if let Some(rejected) = state.is_rejected(&release.digest()) {
        return Some(format!("{} {} failed its health check on {} ({})", manifest.name, manifest.version, rejected.time, rejected.reason));
    }
    None
}

/// Verifies every bundle, installs the newest eligible one (the next newest
/// when it reverts), and writes a result file next to each. Returns the
/// result of each bundle.
pub fn install_from(updater: &Updater, bundles: &[PathBuf]) -> Vec<BundleResult> {
    let config = updater.config();
    let files: Vec<BundleFile> = bundles.iter().filter_map(|p| stat_bundle(p)).collect();
    let mut results: Vec<(BundleFile, BundleResult)> = Vec::new();
    let mut eligible: Vec<(BundleFile, Box<dyn crate::source::ReleaseSource>, VerifiedRelease)> = Vec::new();
    let state = match updater.recover().and_then(|()| updater.load_state()) {
        Ok(state) => state,
        Err(error) => {
            tracing::error!(error = %crate::error_line(&error), "cannot read the robot state; USB bundles left alone");
            return Vec::new();
        }
    };
    for file in files {
        let text = file.path.display().to_string();
        let result = |outcome: &str, release: Option<String>, detail: String| BundleResult {
            bundle: file.path.clone(),
            outcome: outcome.to_owned(),
            release,
            detail,
        };
        match updater.verified_release(&text, None) {
            Err(error) => {
                let detail = crate::error_line(&error);
                tracing::warn!(bundle = %text, error = %detail, "USB bundle rejected");
                results.push((file.clone(), result("rejected", None, detail)));
            }
            Ok((source, release)) => {
                let name = format!("{} {}", release.manifest().name, release.manifest().version);
                match ineligible(config, &state, &release) {
                    Some(reason) => results.push((file.clone(), result("skipped", Some(name), reason))),
                    None => eligible.push((file, source, release)),
                }
            }
        }
    }
    // Newest first. A release that fails its trial is reverted and no longer
    // eligible, so the next newest is tried; any other failure stops there.
    eligible.sort_by(|a, b| b.2.manifest().version.cmp(&a.2.manifest().version));
    let mut settled: Option<String> = None;
    for (file, mut source, release) in eligible {
        let name = format!("{} {}", release.manifest().name, release.manifest().version);
        let result = if let Some(reason) = &settled {
            BundleResult { bundle: file.path.clone(), outcome: "skipped".to_owned(), release: Some(name), detail: reason.clone() }
        } else if state.held {
            settled = Some("the robot is held; run `tenderd resume` and insert the stick again".to_owned());
            BundleResult { bundle: file.path.clone(), outcome: "held".to_owned(), release: Some(name), detail: settled.clone().unwrap_or_default() }
        } else {
            let installing = BundleResult {
                bundle: file.path.clone(),
                outcome: "installing".to_owned(),
                release: Some(name.clone()),
                detail: "verified; staging and trial under way".to_owned(),
            };
            write_result(&file, &installing, config);
            tracing::info!(bundle = %file.path.display(), release = %name, "installing from a USB stick");
            let result = install_one(updater, source.as_mut(), &release, &file.path, name.clone());
            match result.outcome.as_str() {
                "committed" => settled = Some(format!("the newer {name} from this stick was installed")),
                "reverted" => {}
                _ => settled = Some(format!("{name} from this stick failed to install; fix that first")),
            }
            result
        };
        results.push((file, result));
    }
    for (file, result) in &results {
        write_result(file, result, config);
    }
    crate::metrics::checked(&config.state_dir);
    crate::metrics::write_textfile(config);
    results.into_iter().map(|(_, result)| result).collect()
}

fn install_one(
    updater: &Updater,
    source: &mut dyn crate::source::ReleaseSource,
    release: &VerifiedRelease,
    path: &Path,
    name: String,
) -> BundleResult {
    let outcome = updater.stage(source, release, &InstallOptions::default()).and_then(|_| updater.apply());
    let (outcome, detail) = match outcome {
        Ok(report) => {
            let outcome = match report.phase {
                Phase::Committed => "committed",
                Phase::Reverted => "reverted",
                _ => "failed",
            };
            (outcome.to_owned(), report.detail)
        }
        Err(error) => ("failed".to_owned(), crate::error_line(&error)),
    };
    BundleResult { bundle: path.to_owned(), outcome, release: Some(name), detail }
}

/// Tracks bundles between the scans of a watcher: when each was first seen
/// unchanged, and which were handled.
#[derive(Debug, Default)]
pub struct Watcher {
    first_seen: HashMap<BundleFile, Instant>,
    handled: std::collections::HashSet<BundleFile>,
}

impl Watcher {
    /// Scans once and installs from bundles that have settled. Returns the
    /// results, empty when nothing was ready. `Locked` means that a daemon
    /// cycle has the state lock, and the bundles stay pending for the next scan.
    pub fn scan(&mut self, config: &Config) -> Result<Vec<BundleResult>, UpdateError> {
        let now = Instant::now();
        let present = find_bundles(&config.usb);
        // Forget bundles that went away, so a stick inserted again is handled again.
        self.first_seen.retain(|file, _| present.contains(file));
        self.handled.retain(|file| present.contains(file));
        let mut ready = Vec::new();
        for file in present {
            if self.handled.contains(&file) || already_handled(&file) {
                self.handled.insert(file);
                continue;
            }
            let since = *self.first_seen.entry(file.clone()).or_insert(now);
            if now.duration_since(since) >= config.usb.settle {
                ready.push(file);
            }
        }
        if ready.is_empty() {
            return Ok(Vec::new());
        }
        let updater = Updater::open(config.clone())?;
        let paths: Vec<PathBuf> = ready.iter().map(|f| f.path.clone()).collect();
        let results = install_from(&updater, &paths);
        // A bundle that changed while it was read is looked at again once it settles.
        for file in ready {
            if stat_bundle(&file.path).as_ref() == Some(&file) {
                self.handled.insert(file);
            }
        }
        Ok(results)
    }
}

/// `tenderd usb --once`: waits until the bundles present have settled
/// (at most [`MAX_SETTLE_ROUNDS`] rounds of `usb.settle`), then installs.
pub fn scan_once(config: &Config) -> Result<Vec<BundleResult>, UpdateError> {
    let mut watcher = Watcher::default();
    for _ in 0..MAX_SETTLE_ROUNDS {
        let pending = find_bundles(&config.usb).into_iter().any(|f| !already_handled(&f));
        if !pending {
            return Ok(Vec::new());
        }
        let results = watcher.scan(config)?;
        if !results.is_empty() {
            return Ok(results);
        }
        std::thread::sleep(config.usb.settle.max(Duration::from_millis(100)));
    }
    tracing::warn!(rounds = MAX_SETTLE_ROUNDS, "USB bundles kept changing; none was installed");
    Ok(Vec::new())
}

/// Scans forever, every `usb.scan_interval`; `tenderd run` runs this in a
/// thread and `tenderd usb` without `--once` in the foreground.
pub fn watch(config: &Config) {
    tracing::info!(mounts = ?config.usb.mounts, "watching for USB bundles");
    let mut watcher = Watcher::default();
    loop {
        match watcher.scan(config) {
            Ok(_) => {}
            Err(UpdateError::Locked { .. }) => tracing::debug!("state locked; USB bundles wait for the next scan"),
            Err(error) => tracing::warn!(error = %crate::error_line(&error), "USB scan failed"),
        }
        std::thread::sleep(config.usb.scan_interval.max(Duration::from_millis(100)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_one_component() {
        assert!(wildcard_match("*", "usb0"));
        assert!(wildcard_match("usb?", "usb1"));
        assert!(wildcard_match("*-stick", "tech-stick"));
        assert!(!wildcard_match("usb?", "usb10"));
        assert!(!wildcard_match("sd*", "usb0"));
    }

    #[test]
    fn patterns_expand_to_existing_directories() {
        let root = tempfile::tempdir().expect("temp dir");
        for dir in ["media/usb0", "media/usb1", "run/media/tech/STICK"] {
            std::fs::create_dir_all(root.path().join(dir)).expect("mkdir");
        }
        std::fs::write(root.path().join("media/file"), "").expect("file");
        let found = expand_pattern(&root.path().join("media/*"));
        assert_eq!(found, vec![root.path().join("media/usb0"), root.path().join("media/usb1")]);
        let nested = expand_pattern(&root.path().join("run/media/*/*"));
        assert_eq!(nested, vec![root.path().join("run/media/tech/STICK")]);
    }
}
