//! Filesystem images of a release, for robots whose A/B slots are
//! partitions: the release's files at its runtime path (such as
//! `/opt/ecar/current`), optionally over a base root filesystem tarball,
//! packed by Debian's `mke2fs -d` (ext4), `mkfs.erofs` or `mksquashfs`.
//!
//! The files are written from the manifest and the chunk store, so the
//! image holds exactly the released bytes. Every time stamp is
//! `SOURCE_DATE_EPOCH`, every owner is the manifest's, and the file system
//! UUID and hash seed derive from the manifest digest, so the same release
//! gives the same image bytes. The image is then released like any tree
//! (`tender release --tree`), which chunks it and signs its digest.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use tender_updater::format::{EntryKind, Sha256Digest};

use crate::oci::source::Release;

/// File system types an image can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsKind {
    Ext4,
    Erofs,
    Squashfs,
}

impl FsKind {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "ext4" => Some(Self::Ext4),
            "erofs" => Some(Self::Erofs),
            "squashfs" => Some(Self::Squashfs),
            _ => None,
        }
    }

    fn tool(self) -> &'static str {
        match self {
            Self::Ext4 => "mke2fs",
            Self::Erofs => "mkfs.erofs",
            Self::Squashfs => "mksquashfs",
        }
    }
}

/// Failures to write an image.
#[derive(Debug, thiserror::Error)]
pub enum FsImageError {
    #[error(transparent)]
    Release(#[from] crate::oci::source::SourceError),
    #[error("cannot {action} {}: {source}", path.display())]
    Io { action: &'static str, path: PathBuf, source: std::io::Error },
    #[error("cannot run {tool}: {source}; install Debian's e2fsprogs, erofs-utils or squashfs-tools")]
    Tool { tool: &'static str, source: std::io::Error },
    #[error("{tool} failed ({status}): {output}")]
    ToolFailed { tool: &'static str, status: String, output: String },
    #[error("an ext4 image needs --size, such as --size 256MiB")]
    NoSize,
    #[error("runtime path {0:?} of the recipe is not absolute")]
    RuntimePath(String),
}

/// Inputs of an image.
#[derive(Debug, Clone)]
pub struct FsImageRequest {
    pub release: Release,
    pub kind: FsKind,
    /// Path of the release's files in the image, such as `/opt/ecar/current`.
    pub runtime_path: String,
    /// A root filesystem tarball extracted below the release.
    pub base: Option<PathBuf>,
    /// Size of an ext4 image in bytes; erofs and squashfs take what they need.
    pub size: Option<u64>,
    pub source_date_epoch: u64,
    pub out: PathBuf,
}

/// The written image.
#[derive(Debug, Clone)]
pub struct FsImageSummary {
    pub path: PathBuf,
    pub bytes: u64,
    pub sha256: Sha256Digest,
}

fn io_error<'p>(action: &'static str, path: &'p Path) -> impl FnOnce(std::io::Error) -> FsImageError + 'p {
    move |source| FsImageError::Io { action, path: path.to_owned(), source }
}

/// Writes the image.
pub fn write_fs_image(request: &FsImageRequest) -> Result<FsImageSummary, FsImageError> {
    if let Some(parent) = request.out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(io_error("create", parent))?;
    }
    let staging = tempfile::Builder::new()
        .prefix(".tender-fs-")
        .tempdir_in(request.out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")))
        .map_err(io_error("create a staging directory beside", &request.out))?;
    let root = staging.path().join("root");
    std::fs::create_dir(&root).map_err(io_error("create", &root))?;
    if let Some(base) = &request.base {
        run_tool("tar", Command::new("tar").arg("--numeric-owner").arg("-xpf").arg(base).arg("-C").arg(&root))?;
    }
    let relative = request
        .runtime_path
        .strip_prefix('/')
        .ok_or_else(|| FsImageError::RuntimePath(request.runtime_path.clone()))?;
    let target = root.join(relative);
    std::fs::create_dir_all(&target).map_err(io_error("create", &target))?;
    materialize(&request.release, &target)?;
    set_times(&root, request.source_date_epoch)?;

    let manifest_path = &request.release.manifest_path;
    let manifest_bytes = std::fs::read(manifest_path).map_err(io_error("read", manifest_path))?;
    let uuid = uuid_from(&Sha256Digest::of(&manifest_bytes));
    let epoch = request.source_date_epoch.to_string();
    let out = &request.out;
    let _ = std::fs::remove_file(out);
    let mut command = match request.kind {
        FsKind::Ext4 => {
            let size = request.size.ok_or(FsImageError::NoSize)?;
            let mut command = Command::new("mke2fs");
            command
                .args(["-q", "-F", "-t", "ext4", "-b", "4096", "-U", &uuid, "-E"])
                .arg(format!("hash_seed={uuid},root_owner=0:0"))
                .arg("-d")
                .arg(&root)
                .arg(out)
                .arg(format!("{}k", size / 1024))
                .env("E2FSPROGS_FAKE_TIME", &epoch);
            command
        }
        FsKind::Erofs => {
            let mut command = Command::new("mkfs.erofs");
            command.arg(format!("-T{epoch}")).arg("-U").arg(&uuid).arg("--all-root").arg("-x-1").arg(out).arg(&root);
            command
        }
        FsKind::Squashfs => {
            let mut command = Command::new("mksquashfs");
            command
                .arg(&root)
                .arg(out)
                .args(["-noappend", "-all-root", "-no-xattrs", "-quiet", "-no-progress", "-processors", "1"])
                .args(["-mkfs-time", &epoch, "-all-time", &epoch]);
            command
        }
    };
    if request.kind != FsKind::Squashfs {
        // mksquashfs rejects SOURCE_DATE_EPOCH beside its own time options.
        command.env("SOURCE_DATE_EPOCH", &epoch);
    }
    run_tool(request.kind.tool(), &mut command)?;
    if request.kind == FsKind::Ext4 {
        fix_ext4_ctimes(&root, out, &epoch, staging.path())?;
    }

    let bytes = std::fs::read(out).map_err(io_error("read", out))?;
    Ok(FsImageSummary { path: out.clone(), bytes: bytes.len() as u64, sha256: Sha256Digest::of(&bytes) })
}

/// Writes the release's entries below `target` with their modes and owners.
fn materialize(release: &Release, target: &Path) -> Result<(), FsImageError> {
    for entry in &release.manifest.entries {
        let path = target.join(&entry.path);
        match &entry.kind {
            EntryKind::Dir => std::fs::create_dir_all(&path).map_err(io_error("create", &path))?,
            EntryKind::File { chunks, .. } => {
                let mut file = std::fs::File::create(&path).map_err(io_error("create", &path))?;
                std::io::copy(&mut release.file_reader(chunks), &mut file).map_err(io_error("write", &path))?;
                file.flush().map_err(io_error("write", &path))?;
            }
            EntryKind::Symlink { target: link } => std::os::unix::fs::symlink(link, &path).map_err(io_error("create link", &path))?,
            EntryKind::Hardlink { target: original } => {
                std::fs::hard_link(target.join(original), &path).map_err(io_error("create hardlink", &path))?
            }
        }
        if !matches!(entry.kind, EntryKind::Symlink { .. } | EntryKind::Hardlink { .. }) {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(entry.mode)).map_err(io_error("set the mode of", &path))?;
        }
        if !matches!(entry.kind, EntryKind::Hardlink { .. }) {
            // NOTE: owners other than the builder's own need root; as
            // another user the image keeps the builder's ids for them.
            let _ = std::os::unix::fs::lchown(&path, Some(entry.uid), Some(entry.gid));
        }
    }
    Ok(())
}

/// Sets every time stamp below `root` to `epoch`, without following links.
fn set_times(root: &Path, epoch: u64) -> Result<(), FsImageError> {
    let time = rustix::fs::Timestamps {
        last_access: rustix::fs::Timespec { tv_sec: epoch as i64, tv_nsec: 0 },
        last_modification: rustix::fs::Timespec { tv_sec: epoch as i64, tv_nsec: 0 },
    };
    for item in walkdir::WalkDir::new(root).contents_first(true) {
        let item = item.map_err(|e| FsImageError::Io { action: "read", path: root.to_owned(), source: e.into() })?;
        rustix::fs::utimensat(rustix::fs::CWD, item.path(), &time, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| FsImageError::Io { action: "set the times of", path: item.path().to_owned(), source: e.into() })?;
    }
    Ok(())
}

/// Sets the inode change time of every entry of an ext4 image to `epoch`:
/// `mke2fs -d` copies it from the staging files, where no call can set it.
fn fix_ext4_ctimes(root: &Path, image: &Path, epoch: &str, scratch: &Path) -> Result<(), FsImageError> {
    let mut commands = String::new();
    for item in walkdir::WalkDir::new(root).sort_by_file_name() {
        let item = item.map_err(|e| FsImageError::Io { action: "read", path: root.to_owned(), source: e.into() })?;
        let relative = item.path().strip_prefix(root).unwrap_or(Path::new(""));
        let path = format!("/{}", relative.display());
        if path.contains(['"', '\n']) {
            continue;
        }
        commands.push_str(&format!("sif \"{path}\" ctime @{epoch}\n"));
    }
    let script = scratch.join("ctimes.debugfs");
    std::fs::write(&script, commands).map_err(io_error("write", &script))?;
    run_tool(
        "debugfs",
        Command::new("debugfs").arg("-w").arg("-f").arg(&script).arg(image).env("E2FSPROGS_FAKE_TIME", epoch),
    )
}

/// Formats the first 16 bytes of `digest` as a UUID.
fn uuid_from(digest: &Sha256Digest) -> String {
    let hex = digest.to_hex();
    format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
}

fn run_tool(tool: &'static str, command: &mut Command) -> Result<(), FsImageError> {
    let output = command.output().map_err(|source| FsImageError::Tool { tool, source })?;
    if !output.status.success() {
        let mut text = String::from_utf8_lossy(&output.stderr).trim().to_owned();
        if text.is_empty() {
            text = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        }
        let line = text.lines().last().unwrap_or_default().to_owned();
        return Err(FsImageError::ToolFailed { tool, status: output.status.to_string(), output: line });
    }
    Ok(())
}
