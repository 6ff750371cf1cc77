//! Finding and reading a release that `tender release` wrote: its manifest
//! and its chunk store.
//!
//! A release is named by an output directory (`OUT`, with `OUT/repo`), a
//! repository directory (with `chunks/`), or a manifest file inside a
//! repository. In a directory the manifest is looked up by the recipe's
//! name and the requested version, first under its consistent target name
//! in `targets/`, then in the older `manifests/` layout.
//!
//! NOTE: the manifest is checked for structure and every chunk for its
//! digest, but the TUF signatures over the manifest are not checked,
//! because the release directory is taken to be the builder's own output.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use tender_updater::format::chunk::decode_chunk;
use tender_updater::format::layout::{manifest_target_name, repo_chunk_path, repo_manifest_path};
use tender_updater::format::limits::MAX_MANIFEST_BYTES;
use tender_updater::format::manifest::ManifestError;
use tender_updater::format::{ChunkRef, Manifest};

/// Failures to find or read a release.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot read release {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },

    #[error("{} holds no release {target}: looked for {} and {}; pass the `--out` directory of `tender release`, its repo/ directory or a manifest file", dir.display(), consistent.display(), legacy.display())]
    NotFound { dir: PathBuf, target: String, consistent: PathBuf, legacy: PathBuf },

    #[error("{} has {count} manifests named {target} in targets/; pass the manifest file itself", dir.display())]
    Ambiguous { dir: PathBuf, target: String, count: usize },

    #[error("manifest {} is larger than the limit of {MAX_MANIFEST_BYTES} bytes", path.display())]
    TooLarge { path: PathBuf },

    #[error("manifest {} is invalid: {source}", path.display())]
    Invalid { path: PathBuf, source: ManifestError },

    #[error("manifest {} is release {found_name} {found_version}, but the image is for {name} {version}; pass the matching --release or --version", path.display())]
    Mismatch { path: PathBuf, found_name: String, found_version: semver::Version, name: String, version: semver::Version },

    #[error("chunk {}: {reason}; the repository is damaged, so run `tender release` again", path.display())]
    Chunk { path: PathBuf, reason: String },
}

/// A release read from a repository: its validated manifest and where its
/// chunks are.
#[derive(Debug, Clone)]
pub struct Release {
    pub manifest: Manifest,
    /// The manifest file, for messages.
    pub manifest_path: PathBuf,
    /// The repository directory; chunks are at `chunks/ab/HEX.zst` below it.
    pub repo: PathBuf,
}

impl Release {
    /// Finds release `name` `version` at `path` and reads its manifest.
    pub fn open(path: &Path, name: &str, version: &semver::Version) -> Result<Self, SourceError> {
        let (manifest_path, repo) = locate(path, name, version)?;
        let manifest = read_manifest(&manifest_path)?;
        if manifest.name != name || &manifest.version != version {
            return Err(SourceError::Mismatch {
                path: manifest_path,
                found_name: manifest.name,
                found_version: manifest.version,
                name: name.to_owned(),
                version: version.clone(),
            });
        }
        Ok(Self { manifest, manifest_path, repo })
    }

    /// Returns a reader of a file's bytes, decoding and checking one chunk
    /// at a time, so memory stays at one chunk whatever the file size.
    pub fn file_reader<'a>(&'a self, chunks: &'a [ChunkRef]) -> ChunkReader<'a> {
        ChunkReader { repo: &self.repo, chunks, next: 0, current: io::Cursor::new(Vec::new()) }
    }
}

/// Returns the manifest path and the repository directory of a release.
fn locate(path: &Path, name: &str, version: &semver::Version) -> Result<(PathBuf, PathBuf), SourceError> {
    let metadata = std::fs::metadata(path).map_err(|source| SourceError::Read { path: path.to_owned(), source })?;
    if metadata.is_file() {
        // REPO/targets/FILE or REPO/manifests/FILE.
        let repo = path.parent().and_then(Path::parent).map(Path::to_path_buf).unwrap_or_default();
        return Ok((path.to_owned(), repo));
    }
    let repo = if path.join("repo").is_dir() { path.join("repo") } else { path.to_owned() };
    let target = manifest_target_name(name, version);
    let suffix = format!(".{target}");
    let targets_dir = repo.join("targets");
    let mut consistent = Vec::new();
    match std::fs::read_dir(&targets_dir) {
        Ok(items) => {
            for item in items {
                let item = item.map_err(|source| SourceError::Read { path: targets_dir.clone(), source })?;
                if item.file_name().to_str().is_some_and(|n| n.ends_with(&suffix)) {
                    consistent.push(item.path());
                }
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => return Err(SourceError::Read { path: targets_dir, source }),
    }
    match consistent.len() {
        1 => return Ok((consistent.remove(0), repo)),
        0 => {}
        count => return Err(SourceError::Ambiguous { dir: repo, target, count }),
    }
    let legacy = repo.join(repo_manifest_path(&target));
    if legacy.is_file() {
        return Ok((legacy, repo));
    }
    Err(SourceError::NotFound { dir: path.to_owned(), consistent: targets_dir.join(format!("SHA256{suffix}")), legacy, target })
}

fn read_manifest(path: &Path) -> Result<Manifest, SourceError> {
    let read_error = |source| SourceError::Read { path: path.to_owned(), source };
    let file = File::open(path).map_err(read_error)?;
    let mut bytes = Vec::new();
    file.take(MAX_MANIFEST_BYTES + 1).read_to_end(&mut bytes).map_err(read_error)?;
    if bytes.len() as u64 > MAX_MANIFEST_BYTES {
        return Err(SourceError::TooLarge { path: path.to_owned() });
    }
    Manifest::parse(&bytes).map_err(|source| SourceError::Invalid { path: path.to_owned(), source })
}

/// Reads a file's content from the chunk store; see [`Release::file_reader`].
pub struct ChunkReader<'a> {
    repo: &'a Path,
    chunks: &'a [ChunkRef],
    next: usize,
    current: io::Cursor<Vec<u8>>,
}

impl ChunkReader<'_> {
    fn load_next(&mut self) -> io::Result<bool> {
        let Some(chunk) = self.chunks.get(self.next) else { return Ok(false) };
        self.next += 1;
        let path = self.repo.join(repo_chunk_path(&chunk.digest));
        let damaged = |reason: String| io::Error::other(SourceError::Chunk { path: path.clone(), reason });
        let file = File::open(&path).map_err(|e| damaged(e.to_string()))?;
        let mut stored = Vec::new();
        // One byte over the declared stored size is enough to notice a chunk file that is too large.
        file.take(chunk.stored.saturating_add(1)).read_to_end(&mut stored).map_err(|e| damaged(e.to_string()))?;
        if stored.len() as u64 != chunk.stored {
            return Err(damaged(format!("the manifest declares {} stored bytes, the file differs", chunk.stored)));
        }
        let plain = decode_chunk(chunk, &stored).map_err(|e| damaged(e.to_string()))?;
        self.current = io::Cursor::new(plain);
        Ok(true)
    }
}

impl Read for ChunkReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let read = self.current.read(buf)?;
            if read > 0 || buf.is_empty() {
                return Ok(read);
            }
            if !self.load_next()? {
                return Ok(0);
            }
        }
    }
}
