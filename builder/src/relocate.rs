//! Relocation of build-machine paths out of the release tree.
//!
//! colcon writes the absolute paths of the machine that built the tree into
//! some files: the install directory into setup scripts (`setup.sh`,
//! `local_setup.*`, `share/*/package.sh`), `.dsv` hooks and CMake files, and
//! the Python that ran colcon into script shebangs and
//! `_colcon_python_executable=`. On the robot the tree lives at the recipe's
//! `runtime_path` and Python is the robot's own, so those paths are rewritten
//! in memory while the tree is scanned. The install tree itself is never
//! changed. A file that still contains a build-machine path after the
//! rewrites fails the release, because it would point into a directory that
//! does not exist on the robot and make the release depend on where it was
//! built.
//!
//! NOTE: only absolute paths are found. A relative path to a build directory,
//! such as the `../../../out/work/build/...` lines setuptools writes into
//! `*.egg-info/SOURCES.txt` when the build directory is near the sources,
//! passes unnoticed; the sample recipe excludes that file.

use std::collections::BTreeSet;
use std::fmt;
use std::io::Read;
use std::path::Path;

use memchr::memmem;

/// Kind of a build-machine directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum BuildPathKind {
    Install,
    Build,
    Source,
    Venv,
}

impl fmt::Display for BuildPathKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BuildPathKind::Install => "install directory",
            BuildPathKind::Build => "build directory",
            BuildPathKind::Source => "source directory",
            BuildPathKind::Venv => "Python virtual environment",
        })
    }
}

/// A build-machine directory whose path must not remain in the release.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct BuildPath {
    pub kind: BuildPathKind,
    /// Absolute path without a trailing `/`.
    pub path: String,
}

impl fmt::Display for BuildPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind, self.path)
    }
}

/// Robot-side replacements of the build machine's directories.
#[derive(Debug, Clone)]
pub struct RuntimeTargets {
    /// Replaces the install directory, such as `/opt/ecar/current`.
    pub runtime_path: String,
    /// Replaces the interpreter of a build-machine Python shebang, such as
    /// `/usr/bin/env python3`.
    pub python_shebang: String,
    /// Replaces a build-machine Python path in setup scripts, such as
    /// `/usr/bin/python3`.
    pub python_executable: String,
}

/// One kind of replacement made in a file.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Rewrite {
    pub from: String,
    pub to: String,
    pub count: usize,
}

/// A file's content after relocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Relocated {
    /// The content contains no build-machine path.
    Unchanged,
    Rewritten { content: Vec<u8>, rewrites: Vec<Rewrite> },
}

/// Largest file read into memory to be rewritten. Setup scripts and CMake
/// files are a few KiB; a larger file with a build path is reported instead.
const MAX_REWRITE_BYTES: u64 = 16 * 1024 * 1024;

/// Block size of the streaming search.
const SEARCH_BLOCK_BYTES: usize = 1024 * 1024;

/// File names that colcon writes with the install directory inside.
const SETUP_SCRIPT_NAMES: &[&str] = &[
    "setup.sh",
    "setup.bash",
    "setup.zsh",
    "setup.ps1",
    "local_setup.sh",
    "local_setup.bash",
    "local_setup.zsh",
    "local_setup.ps1",
];

/// Extensions of text files in which the install directory is rewritten:
/// shell and PowerShell hooks, colcon `.dsv` descriptors, CMake config files
/// and pkg-config files.
const TEXT_EXTENSIONS: &[&str] = &["sh", "bash", "zsh", "ps1", "dsv", "cmake", "pc"];

/// Finds and rewrites build-machine paths.
pub struct Relocator {
    /// Longest path first, so the most specific directory is named.
    build_paths: Vec<BuildPath>,
    install_paths: Vec<String>,
    targets: RuntimeTargets,
}

impl Relocator {
    /// Builds a relocator for `build_paths`. Paths of `/` or shorter than two
    /// bytes are ignored, because they would match almost any file.
    pub fn new(build_paths: Vec<BuildPath>, targets: RuntimeTargets) -> Self {
        let mut build_paths: Vec<BuildPath> = build_paths
            .into_iter()
            .map(|p| BuildPath { kind: p.kind, path: p.path.trim_end_matches('/').to_owned() })
            .filter(|p| p.path.len() >= 2)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        build_paths.sort_by(|a, b| b.path.len().cmp(&a.path.len()).then(a.cmp(b)));
        let install_paths =
            build_paths.iter().filter(|p| p.kind == BuildPathKind::Install).map(|p| p.path.clone()).collect();
        Self { build_paths, install_paths, targets }
    }

    pub fn build_paths(&self) -> &[BuildPath] {
        &self.build_paths
    }

    /// Returns the build paths that occur anywhere in `reader`, reading it in
    /// blocks so memory stays bounded for large files.
    pub fn find_in_reader(&self, mut reader: impl Read) -> std::io::Result<Vec<BuildPath>> {
        let overlap = self.build_paths.iter().map(|p| p.path.len()).max().unwrap_or(0).saturating_sub(1);
        let mut found = BTreeSet::new();
        let mut buffer = Vec::with_capacity(SEARCH_BLOCK_BYTES + overlap);
        let mut block = vec![0u8; SEARCH_BLOCK_BYTES];
        loop {
            let read = reader.read(&mut block)?;
            if read == 0 {
                break;
            }
            buffer.extend_from_slice(&block[..read]);
            found.extend(self.find(&buffer));
            // Keep the tail so a path that spans two blocks is still found.
            let keep = buffer.len().min(overlap);
            buffer.drain(..buffer.len() - keep);
        }
        Ok(found.into_iter().collect())
    }

    /// Returns the build paths that occur in `content`.
    pub fn find(&self, content: &[u8]) -> Vec<BuildPath> {
        self.build_paths
            .iter()
            .filter(|p| memmem::find(content, p.path.as_bytes()).is_some())
            .cloned()
            .collect()
    }

    /// Returns whether the file at `entry_path` may be rewritten at all:
    /// a known text kind, or any file starting with `#!`.
    pub fn may_rewrite(entry_path: &str, size: u64, head: &[u8]) -> bool {
        size <= MAX_REWRITE_BYTES && (is_text_kind(entry_path) || head.starts_with(b"#!"))
    }

    /// Rewrites the build paths of one file's content. Returns the build paths
    /// that remain when some cannot be rewritten.
    ///
    /// Only changes memory: the caller decides what to do with the result.
    pub fn relocate(&self, entry_path: &str, content: &[u8]) -> Result<Relocated, Vec<BuildPath>> {
        if self.find(content).is_empty() {
            return Ok(Relocated::Unchanged);
        }
        let mut text = content.to_vec();
        let mut rewrites = Vec::new();
        if let Some(rewrite) = self.rewrite_shebang(&mut text) {
            rewrites.push(rewrite);
        }
        // NUL bytes mean binary data, whose offsets must not move.
        if is_text_kind(entry_path) && !text.contains(&0) {
            rewrites.extend(self.rewrite_python_paths(&mut text));
            for install in &self.install_paths {
                rewrites.extend(replace_paths(&mut text, install, |_| 0, &self.targets.runtime_path));
            }
        }
        let remaining = self.find(&text);
        if !remaining.is_empty() {
            return Err(remaining);
        }
        Ok(Relocated::Rewritten { content: text, rewrites })
    }

    /// Replaces a `#!` line whose interpreter is a Python under a build path.
    /// A shebang with arguments is kept when the replacement has arguments of
    /// its own, because Linux passes everything after the interpreter as one
    /// argument and `/usr/bin/env python3 -u` would look for `python3 -u`.
    fn rewrite_shebang(&self, text: &mut Vec<u8>) -> Option<Rewrite> {
        let rest = text.strip_prefix(b"#!")?;
        let line_end = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
        let line = std::str::from_utf8(&rest[..line_end]).ok()?;
        let trimmed = line.trim_start();
        let interpreter = trimmed.split([' ', '\t']).next()?;
        let arguments = &trimmed[interpreter.len()..];
        if !self.is_build_python(interpreter) {
            return None;
        }
        if !arguments.trim().is_empty() && self.targets.python_shebang.contains(' ') {
            return None;
        }
        let replacement = format!("#!{}{}", self.targets.python_shebang, arguments.trim_end());
        let rewrite = Rewrite { from: interpreter.to_owned(), to: self.targets.python_shebang.clone(), count: 1 };
        text.splice(..2 + line_end, replacement.into_bytes());
        Some(rewrite)
    }

    /// Returns whether `path` is a Python interpreter inside a build path,
    /// such as `<venv>/bin/python3`.
    fn is_build_python(&self, path: &str) -> bool {
        let name = path.rsplit('/').next().unwrap_or("");
        let is_python = name
            .strip_prefix("python")
            .is_some_and(|version| version.chars().all(|c| c.is_ascii_digit() || c == '.'));
        is_python && self.build_paths.iter().any(|p| path.starts_with(&format!("{}/", p.path)))
    }

    /// Replaces every `<build path>/bin/python[VERSION]` in a text file by the
    /// robot's Python executable.
    fn rewrite_python_paths(&self, text: &mut Vec<u8>) -> Vec<Rewrite> {
        let version_len = |rest: &[u8]| rest.iter().take_while(|b| b.is_ascii_digit() || **b == b'.').count();
        let to = &self.targets.python_executable;
        self.build_paths
            .iter()
            .flat_map(|build_path| replace_paths(text, &format!("{}/bin/python", build_path.path), version_len, to))
            .collect()
    }

    /// Returns the build paths in a symlink target. Symlink targets are kept
    /// verbatim, so such a link fails the release.
    pub fn check_symlink(&self, target: &str) -> Vec<BuildPath> {
        self.find(target.as_bytes())
    }
}

/// Returns whether an entry is a text file of a kind colcon writes the
/// install directory into.
pub fn is_text_kind(entry_path: &str) -> bool {
    let name = entry_path.rsplit('/').next().unwrap_or(entry_path);
    if SETUP_SCRIPT_NAMES.contains(&name) {
        return true;
    }
    Path::new(name)
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|extension| TEXT_EXTENSIONS.contains(&extension))
}

/// Bytes that continue a path component, so a match next to one is part of a
/// longer name (such as `/tmp/install2` for `/tmp/install`).
fn is_path_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'-' | b'.')
}

fn is_boundary_before(text: &[u8], at: usize) -> bool {
    at == 0 || !(is_path_byte(text[at - 1]) || text[at - 1] == b'/')
}

fn is_boundary_after(text: &[u8], end: usize) -> bool {
    end >= text.len() || !is_path_byte(text[end])
}

/// Replaces each whole path that starts with `prefix` and continues for
/// `suffix_len(rest)` more bytes by `to`. A match followed by a byte that
/// continues a name (`from2` for `from`) is kept. Returns one rewrite per
/// distinct path replaced.
fn replace_paths(text: &mut Vec<u8>, prefix: &str, suffix_len: impl Fn(&[u8]) -> usize, to: &str) -> Vec<Rewrite> {
    let mut rewrites: Vec<Rewrite> = Vec::new();
    let mut start = 0;
    let mut output = Vec::with_capacity(text.len());
    while let Some(offset) = memmem::find(&text[start..], prefix.as_bytes()) {
        let at = start + offset;
        let end = at + prefix.len();
        let end = end + suffix_len(&text[end..]);
        output.extend_from_slice(&text[start..at]);
        if is_boundary_before(text, at) && is_boundary_after(text, end) {
            let from = String::from_utf8_lossy(&text[at..end]).into_owned();
            match rewrites.iter_mut().find(|rewrite| rewrite.from == from) {
                Some(rewrite) => rewrite.count += 1,
                None => rewrites.push(Rewrite { from, to: to.to_owned(), count: 1 }),
            }
            output.extend_from_slice(to.as_bytes());
        } else {
            output.extend_from_slice(&text[at..end]);
        }
        start = end;
    }
    output.extend_from_slice(&text[start..]);
    *text = output;
    rewrites
}

#[cfg(test)]
mod tests {
    use super::*;

    const INSTALL: &str = "/home/ci/out/work/install";
    const VENV: &str = "/home/ci/tender/target/tender-venv";

    fn relocator() -> Relocator {
        Relocator::new(
            vec![
                BuildPath { kind: BuildPathKind::Install, path: INSTALL.to_owned() },
                BuildPath { kind: BuildPathKind::Build, path: "/home/ci/out/work/build".to_owned() },
                BuildPath { kind: BuildPathKind::Source, path: "/home/ci/tender/recipes/ecar-ws".to_owned() },
                BuildPath { kind: BuildPathKind::Venv, path: VENV.to_owned() },
            ],
            RuntimeTargets {
                runtime_path: "/opt/ecar/current".to_owned(),
                python_shebang: "/usr/bin/env python3".to_owned(),
                python_executable: "/usr/bin/python3".to_owned(),
            },
        )
    }

    fn rewritten(result: Result<Relocated, Vec<BuildPath>>) -> (String, Vec<Rewrite>) {
        match result {
            Ok(Relocated::Rewritten { content, rewrites }) => (String::from_utf8(content).expect("utf8"), rewrites),
            other => panic!("expected a rewrite, got {other:?}"),
        }
    }

    #[test]
    fn setup_script_prefix_is_rewritten() {
        let script = format!("_colcon_prefix_chain_sh_COLCON_CURRENT_PREFIX={INSTALL}\n. \"{INSTALL}/local_setup.sh\"\n");
        let (text, rewrites) = rewritten(relocator().relocate("setup.sh", script.as_bytes()));
        assert_eq!(
            text,
            "_colcon_prefix_chain_sh_COLCON_CURRENT_PREFIX=/opt/ecar/current\n. \"/opt/ecar/current/local_setup.sh\"\n"
        );
        assert_eq!(rewrites, vec![Rewrite { from: INSTALL.to_owned(), to: "/opt/ecar/current".to_owned(), count: 2 }]);
    }

    #[test]
    fn python_shebang_is_rewritten() {
        let script = format!("#!{VENV}/bin/python3\n# EASY-INSTALL-ENTRY-SCRIPT\nimport re\n");
        let (text, rewrites) = rewritten(relocator().relocate("bin/health_check", script.as_bytes()));
        assert_eq!(text, "#!/usr/bin/env python3\n# EASY-INSTALL-ENTRY-SCRIPT\nimport re\n");
        assert_eq!(rewrites[0].from, format!("{VENV}/bin/python3"));
    }

    #[test]
    fn shebang_with_arguments_is_not_rewritten_to_env() {
        let script = format!("#!{VENV}/bin/python3 -u\nprint()\n");
        let remaining = relocator().relocate("bin/tool", script.as_bytes()).expect_err("cannot rewrite");
        assert_eq!(remaining[0].kind, BuildPathKind::Venv);
    }

    #[test]
    fn colcon_python_executable_is_rewritten() {
        let script = format!("_colcon_python_executable=\"{VENV}/bin/python3\"\n");
        let (text, _) = rewritten(relocator().relocate("local_setup.bash", script.as_bytes()));
        assert_eq!(text, "_colcon_python_executable=\"/usr/bin/python3\"\n");
    }

    #[test]
    fn dsv_hook_is_rewritten() {
        let hook = format!("prepend-non-duplicate;PATH;{INSTALL}/bin\n");
        let (text, _) = rewritten(relocator().relocate("share/x/hook/path.dsv", hook.as_bytes()));
        assert_eq!(text, "prepend-non-duplicate;PATH;/opt/ecar/current/bin\n");
    }

    #[test]
    fn build_path_in_other_file_is_reported() {
        let sources = "../../../../home/ci/out/work/build/ecar_health/PKG-INFO\n";
        let remaining = relocator().relocate("lib/x.egg-info/SOURCES.txt", sources.as_bytes()).expect_err("build path");
        assert_eq!(remaining.len(), 1);
        assert_eq!(remaining[0].kind, BuildPathKind::Build);
    }

    #[test]
    fn install_path_in_binary_is_reported() {
        let binary = format!("\x7fELF\0\0{INSTALL}/lib\0");
        let remaining = relocator().relocate("lib/libx.cmake", binary.as_bytes()).expect_err("binary");
        assert_eq!(remaining[0].kind, BuildPathKind::Install);
    }

    #[test]
    fn longer_name_is_not_rewritten() {
        let script = format!("A={INSTALL}2/lib\n");
        let remaining = relocator().relocate("setup.sh", script.as_bytes()).expect_err("not a whole path");
        assert_eq!(remaining[0].kind, BuildPathKind::Install);
    }

    #[test]
    fn clean_file_is_unchanged() {
        let result = relocator().relocate("setup.sh", b"echo /opt/ecar/current\n");
        assert_eq!(result, Ok(Relocated::Unchanged));
    }

    #[test]
    fn streaming_search_finds_path_across_blocks() {
        let mut content = vec![b'x'; SEARCH_BLOCK_BYTES - 5];
        content.extend_from_slice(VENV.as_bytes());
        content.extend_from_slice(&[b'y'; 100]);
        let found = relocator().find_in_reader(content.as_slice()).expect("read");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].kind, BuildPathKind::Venv);
    }

    #[test]
    fn symlink_into_install_is_reported() {
        assert_eq!(relocator().check_symlink(&format!("{INSTALL}/lib/libx.so.1")).len(), 1);
        assert!(relocator().check_symlink("libx.so.1").is_empty());
    }
}
