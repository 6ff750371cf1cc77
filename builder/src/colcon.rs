//! Running `colcon build` so that its install tree is reproducible.
//!
//! Packages build one at a time (see [`executor_args`]), and colcon runs
//! through `sh -c 'umask 022 && exec "$@" 2>&1'`, which sets the umask of
//! the build without `unsafe` code and merges its stderr into stdout so the
//! captured log keeps the order of events. The environment
//! adds `PYTHONDONTWRITEBYTECODE=1` (no `__pycache__` in the tree) and
//! `SOURCE_DATE_EPOCH`, and CMake gets `-ffile-prefix-map` for the source and
//! build directories so compiled files do not embed them.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use indicatif::ProgressBar;

/// Failures of a colcon build.
#[derive(Debug, thiserror::Error)]
pub enum ColconError {
    #[error("colcon workspace {} has no src/ directory: {source}; set `colcon.workspace` in the recipe to the directory that contains src/", workspace.display())]
    NoWorkspace { workspace: PathBuf, source: std::io::Error },

    #[error("{} does not contain colcon; create the environment with `cargo xtask release` or `python3 -m venv DIR && DIR/bin/pip install colcon-common-extensions`", venv.display())]
    NoColconInVenv { venv: PathBuf },

    #[error("colcon is not on PATH; pass --colcon-venv DIR or install colcon-common-extensions")]
    NoColcon,

    #[error("cannot prepare {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },

    #[error("cannot run colcon {}: {source}", colcon.display())]
    Spawn { colcon: PathBuf, source: std::io::Error },

    #[error("colcon build failed{}: {status}; its output is above and in {}", failed_packages(packages), log.display())]
    Failed { packages: Vec<String>, status: std::process::ExitStatus, log: PathBuf },

    #[error("colcon built nothing into {}; check that {} contains packages", install.display(), sources.display())]
    NothingInstalled { install: PathBuf, sources: PathBuf },
}

fn failed_packages(packages: &[String]) -> String {
    match packages {
        [] => String::new(),
        [one] => format!(" in package {one}"),
        many => format!(" in packages {}", many.join(", ")),
    }
}

/// A colcon build: the workspace, the output directory and the tools.
#[derive(Debug, Clone)]
pub struct ColconBuild {
    /// The colcon workspace; its packages are under `src/`.
    pub workspace: PathBuf,
    /// Directory for `build/`, `install/`, `log/` and `colcon.log`.
    pub work_dir: PathBuf,
    /// Python virtual environment whose `bin/` contains colcon, CMake and
    /// Ninja; `None` takes colcon from `PATH`.
    pub venv: Option<PathBuf>,
    /// Extra `colcon build` arguments from the recipe.
    pub args: Vec<String>,
    /// CMake arguments from the recipe.
    pub cmake_args: Vec<String>,
    pub source_date_epoch: u64,
}

/// The directories of a finished build. All paths are absolute, as colcon
/// wrote them into the tree.
#[derive(Debug, Clone)]
pub struct BuildOutput {
    pub install_dir: PathBuf,
    pub build_dir: PathBuf,
    pub source_dir: PathBuf,
    /// The virtual environment colcon ran from, when it ran from one.
    pub venv_dir: Option<PathBuf>,
}

impl ColconBuild {
    /// Builds the workspace into a fresh `install/` directory. The `build/`
    /// directory is kept between runs so unchanged packages build faster.
    pub fn run(&self, progress: &ProgressBar) -> Result<BuildOutput, ColconError> {
        let sources = self.workspace.join("src");
        let source_dir = self
            .workspace
            .canonicalize()
            .and_then(|dir| sources.metadata().map(|_| dir))
            .map_err(|source| ColconError::NoWorkspace { workspace: self.workspace.clone(), source })?;
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| ColconError::Io { path, source }
        };
        std::fs::create_dir_all(&self.work_dir).map_err(io(&self.work_dir))?;
        let work_dir = self.work_dir.canonicalize().map_err(io(&self.work_dir))?;
        let build_dir = work_dir.join("build");
        let install_dir = work_dir.join("install");
        // colcon only adds to an install directory, so files of a package
        // that was removed or renamed would stay in the release.
        if install_dir.exists() {
            std::fs::remove_dir_all(&install_dir).map_err(io(&install_dir))?;
        }
        let (colcon, venv_dir) = self.find_colcon()?;

        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg("umask 022 && exec \"$@\" 2>&1")
            .arg("sh")
            .arg(&colcon)
            .arg("--log-base")
            .arg(work_dir.join("log"))
            .arg("build")
            .arg("--merge-install")
            .arg("--base-paths")
            .arg(source_dir.join("src"))
            .arg("--build-base")
            .arg(&build_dir)
            .arg("--install-base")
            .arg(&install_dir)
            .args(executor_args(&self.args))
            .args(&self.args)
            .arg("--cmake-args")
            .args(cmake_args(&self.cmake_args, &source_dir, &build_dir))
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("SOURCE_DATE_EPOCH", self.source_date_epoch.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        if let Some(venv) = &venv_dir {
            command.env("PATH", prepend_path(&venv.join("bin")));
        }
        tracing::info!(workspace = %source_dir.display(), work_dir = %work_dir.display(), "running colcon build");
        tracing::debug!(?command, "colcon command");

        let log = work_dir.join("colcon.log");
        let lines = run_logged(&mut command, &colcon, &log, progress)?;
        if !lines.status.success() {
            let mut stderr = std::io::stderr().lock();
            for line in &lines.output {
                let _ = writeln!(stderr, "{line}");
            }
            return Err(ColconError::Failed {
                packages: parse_failed_packages(&lines.output),
                status: lines.status,
                log,
            });
        }
        if !install_dir.is_dir() {
            return Err(ColconError::NothingInstalled { install: install_dir, sources });
        }
        Ok(BuildOutput { install_dir, build_dir, source_dir, venv_dir })
    }

    /// Returns the colcon executable and the virtual environment it lives in.
    fn find_colcon(&self) -> Result<(PathBuf, Option<PathBuf>), ColconError> {
        if let Some(venv) = &self.venv {
            let venv = std::path::absolute(venv).unwrap_or_else(|_| venv.clone());
            let colcon = venv.join("bin/colcon");
            if !colcon.is_file() {
                return Err(ColconError::NoColconInVenv { venv });
            }
            return Ok((colcon, Some(venv)));
        }
        let path = std::env::var_os("PATH").unwrap_or_default();
        let colcon = std::env::split_paths(&path)
            .map(|dir| dir.join("colcon"))
            .find(|candidate| candidate.is_file())
            .ok_or(ColconError::NoColcon)?;
        // A virtual environment has pyvenv.cfg next to its bin/ directory.
        let venv = colcon
            .parent()
            .and_then(Path::parent)
            .filter(|dir| dir.join("pyvenv.cfg").is_file())
            .map(Path::to_path_buf);
        Ok((colcon, venv))
    }
}

/// Output and exit status of a command.
struct Logged {
    status: std::process::ExitStatus,
    output: Vec<String>,
}

/// Runs `command`, copies each output line to `log` and to debug events, and
/// shows the latest colcon progress line in `progress`.
fn run_logged(command: &mut Command, colcon: &Path, log: &Path, progress: &ProgressBar) -> Result<Logged, ColconError> {
    let spawn = |source| ColconError::Spawn { colcon: colcon.to_owned(), source };
    let log_io = |source| ColconError::Io { path: log.to_owned(), source };
    let mut log_file = std::fs::File::create(log).map_err(log_io)?;
    let mut child = command.spawn().map_err(spawn)?;
    let mut output = Vec::new();
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).split(b'\n') {
            let line = String::from_utf8_lossy(&line.map_err(spawn)?).into_owned();
            writeln!(log_file, "{line}").map_err(log_io)?;
            tracing::debug!(target: "colcon", "{line}");
            let plain = strip_ansi(&line);
            if plain.starts_with("Starting") || plain.starts_with("Finished") || plain.starts_with("Failed") {
                progress.set_message(plain.clone());
            }
            output.push(line);
        }
    }
    let status = child.wait().map_err(spawn)?;
    Ok(Logged { status, output })
}

/// Returns `--executor sequential` unless the recipe chose an executor.
///
/// With `--merge-install` all packages share one install directory, and
/// colcon writes a package's environment hooks (such as
/// `ld_library_path_lib`, colcon-library-path 0.2.1) by looking at what that
/// directory contains when the package finishes. Parallel builds finish in a varying order, so the hooks,
/// and with them the release, would differ from build to build.
fn executor_args(recipe_args: &[String]) -> Vec<&'static str> {
    let chosen = recipe_args.iter().any(|arg| arg == "--executor" || arg.starts_with("--executor="));
    if chosen {
        tracing::warn!("the recipe sets colcon's --executor; a parallel executor makes the install tree depend on build order");
        Vec::new()
    } else {
        vec!["--executor", "sequential"]
    }
}

/// Returns the CMake arguments: the recipe's, with `-ffile-prefix-map` added to the
/// C and C++ flags (merged into the recipe's own flags when it sets them).
fn cmake_args(recipe_args: &[String], source_dir: &Path, build_dir: &Path) -> Vec<String> {
    let prefix_map = format!(
        "-ffile-prefix-map={}=. -ffile-prefix-map={}=build",
        source_dir.display(),
        build_dir.display()
    );
    let mut args = recipe_args.to_vec();
    for variable in ["CMAKE_C_FLAGS", "CMAKE_CXX_FLAGS"] {
        let define = format!("-D{variable}");
        let existing = args.iter_mut().find(|arg| {
            arg.strip_prefix(&define).is_some_and(|rest| rest.starts_with('=') || rest.starts_with(':'))
        });
        match existing {
            Some(arg) => {
                arg.push(' ');
                arg.push_str(&prefix_map);
            }
            None => args.push(format!("{define}={prefix_map}")),
        }
    }
    args
}

/// Returns `PATH` with `dir` in front.
fn prepend_path(dir: &Path) -> std::ffi::OsString {
    let current = std::env::var_os("PATH").unwrap_or_default();
    let paths = std::iter::once(dir.to_path_buf()).chain(std::env::split_paths(&current));
    std::env::join_paths(paths).unwrap_or(current)
}

/// Returns the packages that colcon reported as failed, from its
/// `Failed   <<< NAME [TIME, exited with code N]` lines.
fn parse_failed_packages(output: &[String]) -> Vec<String> {
    let mut packages: Vec<String> = output
        .iter()
        .map(|line| strip_ansi(line))
        .filter(|line| line.starts_with("Failed"))
        .filter_map(|line| line.split_once("<<<").map(|(_, rest)| rest.to_owned()))
        .filter_map(|rest| rest.split_whitespace().next().map(str::to_owned))
        .collect();
    packages.dedup();
    packages
}

/// Removes ANSI colour sequences (`ESC [ ... letter`).
fn strip_ansi(line: &str) -> String {
    let mut plain = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for next in chars.by_ref() {
                if next.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    plain
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_package_is_parsed() {
        let output = [
            "Starting >>> motor_controller".to_owned(),
            "\u{1b}[31mFailed\u{1b}[0m   <<< motor_controller [1.2s, exited with code 2]".to_owned(),
            "Aborted  <<< servo_controller [0.9s]".to_owned(),
        ];
        assert_eq!(parse_failed_packages(&output), ["motor_controller"]);
    }

    #[test]
    fn prefix_map_merges_into_recipe_flags() {
        let args = cmake_args(
            &["-G".to_owned(), "Ninja".to_owned(), "-DCMAKE_CXX_FLAGS=-O2".to_owned()],
            Path::new("/src/ws"),
            Path::new("/out/build"),
        );
        assert_eq!(args[2], "-DCMAKE_CXX_FLAGS=-O2 -ffile-prefix-map=/src/ws=. -ffile-prefix-map=/out/build=build");
        assert_eq!(args[3], "-DCMAKE_C_FLAGS=-ffile-prefix-map=/src/ws=. -ffile-prefix-map=/out/build=build");
    }
}
