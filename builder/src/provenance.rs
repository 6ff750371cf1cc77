//! Provenance of a release: the git commit of its sources and the
//! `SOURCE_DATE_EPOCH` that fixes every time stamp.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Returns the `HEAD` commit of the git checkout that contains `paths[0]`.
/// Returns `None` outside a git checkout, when any of `paths` is ignored by
/// git (a copy below `target/`, say, which no commit describes), and when
/// `git status --porcelain` lists a change to any of `paths` (modified,
/// staged or untracked), because then the commit does not describe what was
/// built.
pub fn clean_commit(paths: &[PathBuf]) -> Option<String> {
    let first = paths.first()?;
    let directory = if first.is_dir() { first.as_path() } else { first.parent()? };
    let commit = git(directory, &["rev-parse", "HEAD"])?;
    // Canonical paths, because git does not resolve `..` in a path it is given.
    let absolute: Vec<String> = paths
        .iter()
        .filter_map(|p| std::fs::canonicalize(p).or_else(|_| std::path::absolute(p)).ok())
        .map(|p| p.display().to_string())
        .collect();
    let mut ignore_args = vec!["check-ignore", "--"];
    ignore_args.extend(absolute.iter().map(String::as_str));
    if git_succeeds(directory, &ignore_args) {
        tracing::info!(directory = %directory.display(), "the sources are ignored by git, so the manifest records no source commit");
        return None;
    }
    let mut status_args = vec!["status".to_owned(), "--porcelain".to_owned(), "--".to_owned()];
    status_args.extend(absolute.iter().cloned());
    let status_args: Vec<&str> = status_args.iter().map(String::as_str).collect();
    let status = git(directory, &status_args)?;
    if !status.is_empty() {
        tracing::warn!(
            directory = %directory.display(),
            "the sources have uncommitted changes, so the manifest records no source commit"
        );
        return None;
    }
    Some(commit)
}

/// Returns the commit time of `HEAD` of the git checkout at `directory`, in
/// seconds since the Unix epoch.
pub fn commit_time(directory: &Path) -> Option<u64> {
    git(directory, &["log", "-1", "--format=%ct"])?.parse().ok()
}

/// Runs git in `directory` and returns whether it exited 0.
fn git_succeeds(directory: &Path, args: &[&str]) -> bool {
    Command::new("git").arg("-C").arg(directory).args(args).output().is_ok_and(|output| output.status.success())
}

/// Runs git in `directory` and returns its trimmed stdout, or `None` when git
/// is missing or fails.
fn git(directory: &Path, args: &[&str]) -> Option<String> {
    let output = Command::new("git").arg("-C").arg(directory).args(args).output().ok()?;
    if !output.status.success() {
        tracing::debug!(
            directory = %directory.display(),
            ?args,
            stderr = %String::from_utf8_lossy(&output.stderr).trim(),
            "git failed"
        );
        return None;
    }
    Some(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// Origin of the `SOURCE_DATE_EPOCH` of a release, for the summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EpochSource {
    Flag,
    Environment,
    GitCommit,
    /// No flag, no environment variable and no git checkout.
    Zero,
}

/// The `SOURCE_DATE_EPOCH` environment variable is not a whole number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("SOURCE_DATE_EPOCH={0:?} is not a number of seconds; set it to an integer such as 1700000000, or unset it")]
pub struct InvalidEpoch(pub String);

/// Picks the `SOURCE_DATE_EPOCH`: the flag, else the environment variable,
/// else the commit time of the git checkout at `workspace`, else 0.
pub fn source_date_epoch(
    flag: Option<u64>,
    environment: Option<&str>,
    workspace: &Path,
) -> Result<(u64, EpochSource), InvalidEpoch> {
    if let Some(epoch) = flag {
        return Ok((epoch, EpochSource::Flag));
    }
    if let Some(text) = environment {
        let epoch = text.trim().parse::<u64>().map_err(|_| InvalidEpoch(text.to_owned()))?;
        return Ok((epoch, EpochSource::Environment));
    }
    if let Some(epoch) = commit_time(workspace) {
        return Ok((epoch, EpochSource::GitCommit));
    }
    Ok((0, EpochSource::Zero))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_wins_over_environment() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(source_date_epoch(Some(5), Some("7"), dir.path()), Ok((5, EpochSource::Flag)));
        assert_eq!(source_date_epoch(None, Some("7"), dir.path()), Ok((7, EpochSource::Environment)));
    }

    #[test]
    fn invalid_environment_value_is_rejected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = source_date_epoch(None, Some("yesterday"), dir.path()).expect_err("not a number");
        assert!(err.to_string().contains("SOURCE_DATE_EPOCH"), "{err}");
    }

    #[test]
    fn directory_outside_git_gives_zero() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(source_date_epoch(None, None, dir.path()), Ok((0, EpochSource::Zero)));
        assert_eq!(clean_commit(&[dir.path().to_owned()]), None);
    }

    #[test]
    fn ignored_sources_record_no_commit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = dir.path();
        let git = |args: &[&str]| {
            let status = Command::new("git").arg("-C").arg(repo).args(args).output().expect("git");
            assert!(status.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&status.stderr));
        };
        git(&["init", "--quiet"]);
        std::fs::write(repo.join(".gitignore"), "/target\n").expect("gitignore");
        std::fs::create_dir_all(repo.join("src")).expect("src");
        std::fs::write(repo.join("src/recipe.toml"), "name = \"x\"\n").expect("recipe");
        git(&["add", "."]);
        git(&["-c", "user.name=t", "-c", "user.email=t@localhost", "commit", "--quiet", "-m", "init"]);
        std::fs::create_dir_all(repo.join("target/copy")).expect("copy");
        std::fs::write(repo.join("target/copy/recipe.toml"), "name = \"x\"\n").expect("copied recipe");

        assert!(clean_commit(&[repo.join("src"), repo.join("src/recipe.toml")]).is_some());
        let through_dots = repo.join("src/../target/copy");
        assert_eq!(clean_commit(&[through_dots.clone(), through_dots.join("recipe.toml")]), None);
    }
}
