//! Writing a release into an output directory `OUT`:
//!
//! ```text
//! OUT/repo/metadata/…                             TUF metadata with consistent snapshots (see [`crate::publish`])
//! OUT/repo/targets/<sha256>.NAME-VERSION.manifest.json   the manifest under its consistent target name
//! OUT/repo/root.json                              latest root, for robots that predate metadata/
//! OUT/repo/targets.json                           the same bytes as metadata/targets.json
//! OUT/repo/manifests/NAME-VERSION.manifest.json   the manifest, for robots that predate targets/
//! OUT/repo/chunks/ab/<sha256>.zst                 chunk store, shared by releases
//! OUT/NAME-VERSION.tender                         offline bundle
//! OUT/work/                                       colcon build, install and log directories
//! ```
//!
//! The repository is written in the order chunks, manifest, root,
//! `targets.json`, `snapshot.json`, `timestamp.json`, and last the top-level
//! `targets.json`. `timestamp.json` is the commit point for TUF clients and
//! the top-level `targets.json` for robots that read the older layout: until
//! it is renamed into place, a robot gets the previous release, and after
//! it, every file it lists is complete. The bundle is written last, from the
//! repository's files.
//!
//! The trust root of the release is the latest root of the repository. The
//! keys directory's `root.json` must be one of its versions, so a repository
//! keeps one chain of trust. A new repository starts from it as version 1.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tender_keys::to_canonical_json;
use tender_updater::format::layout::{
    bundle_file_name, manifest_target_name, repo_manifest_path, ROOT_FILE, TARGETS_FILE,
};
use tender_updater::format::manifest::{ManifestError, FORMAT_VERSION};
use tender_updater::format::{Manifest, Provenance, Sha256Digest};

use crate::bundle::{write_bundle, BundleContents, BundleWriteError};
use crate::colcon::{ColconBuild, ColconError};
use crate::entries::chunk_entries;
use crate::extra::add_extra_files;
use crate::fsutil::write_atomic;
use crate::keydir::{load_keys_root, load_role_signers, KeysError, KeysRoot, SigningSpecs};
use crate::publish::{read_optional, PublishError, Repository, METADATA_DIR};
use crate::rootchain::{load_root_chain, publish_root, write_legacy_root, RootChain, RootChainError};
use crate::snapshot::{publish_targets, PublishedVersions, SnapshotSigners};
use crate::pre_switch::check_pre_switch;
use crate::progress::Progress;
use crate::provenance::clean_commit;
use crate::recipe::Recipe;
use crate::relocate::{BuildPath, BuildPathKind, Relocator, RuntimeTargets};
use crate::scan::{scan_tree, FileRewrites, ScanError, ScanOptions, ScannedTree, TreeKind};
use crate::store::{ChunkStore, StoreError, StoreStats};
use crate::delta::{build_delta, Release as DeltaRelease};
use crate::targets::{add_target, listed_releases, target_file, ListedRelease, NewTarget, TargetsError};
use tender_updater::format::delta::DeltaTarget;

/// Name and version of this builder, recorded in every manifest.
pub const BUILDER: &str = concat!("tender ", env!("CARGO_PKG_VERSION"));

/// Failures of a release.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error(transparent)]
    Keys(#[from] KeysError),

    #[error(transparent)]
    Colcon(#[from] ColconError),

    #[error(transparent)]
    Scan(#[from] ScanError),

    #[error(transparent)]
    Store(#[from] StoreError),

    #[error(transparent)]
    Targets(#[from] TargetsError),

    #[error(transparent)]
    Bundle(#[from] BundleWriteError),

    #[error(transparent)]
    Publish(#[from] PublishError),

    #[error(transparent)]
    RootChain(#[from] RootChainError),

    #[error(transparent)]
    Delta(#[from] crate::delta::DeltaError),

    #[error("{} is root version {version}, but a new repository starts from version 1; release into the repository that holds versions 1 to {version}", keys_root.display())]
    RootNotFirst { keys_root: PathBuf, version: u64 },

    #[error("cannot read the tree {}: {source}; pass the install directory of a finished build to --tree", path.display())]
    Tree { path: PathBuf, source: std::io::Error },

    #[error("the tree {} is not a directory; pass the install directory of a finished build to --tree", path.display())]
    TreeNotDirectory { path: PathBuf },

    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },

    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: std::io::Error },

    #[error("{} differs from {}; a repository has one trust root, so use the keys that created it or a fresh --out directory", repo_root.display(), keys_root.display())]
    RootMismatch { repo_root: PathBuf, keys_root: PathBuf },

    #[error("recipe {}: `{field}` names {entry:?}, which is not in the release tree; fix the path or add the file to the tree", recipe.display())]
    MissingInTree { recipe: PathBuf, field: String, entry: String },

    #[error("recipe {}: `{field}` names {entry:?}, which is not in the release tree, and {image} is an {fs_type} image; \
             if the path is inside the image, set pre_switch.image = {image:?}, else fix the path", recipe.display())]
    MissingInTreeWithImage { recipe: PathBuf, field: String, entry: String, image: String, fs_type: tender_updater::slot::FsType },

    #[error("recipe {}: `{field}` names {entry:?}, which is not in the {fs_type} image {image}; fix the path, \
             which is relative to the image's root (such as \"opt/ecar/current/bin/motor_controller\")", recipe.display())]
    MissingInImage { recipe: PathBuf, field: String, entry: String, image: String, fs_type: tender_updater::slot::FsType },

    #[error("recipe {}: cannot check the pre-switch paths inside pre_switch.image {image:?}: {detail}; rebuild the image with `tender fs-image`", recipe.display())]
    ImageCheck { recipe: PathBuf, image: String, detail: String },

    #[error("internal error: the builder wrote a manifest that the updater rejects ({0}); please report this with the recipe")]
    InvalidManifest(ManifestError),

    #[error("cannot encode the manifest: {0}")]
    Encode(tender_keys::Error),
}

/// Origin of the release tree.
#[derive(Debug, Clone)]
pub enum TreeSource {
    /// Build the recipe's colcon workspace.
    Colcon {
        /// Virtual environment with colcon; `None` takes colcon from `PATH`.
        venv: Option<PathBuf>,
        /// Directory for colcon's build, install and log directories.
        work_dir: PathBuf,
    },
    /// Package a tree that was built before, as it is on disk.
    Prebuilt { tree: PathBuf },
}

/// Everything a release needs.
#[derive(Debug, Clone)]
pub struct ReleaseRequest {
    pub recipe: Recipe,
    pub version: semver::Version,
    /// Output directory; `repo/` and the bundle are written into it.
    pub out: PathBuf,
    /// Keys directory with `root.json` and the default key files.
    pub keys: PathBuf,
    /// Keys that replace the key files of the keys directory.
    pub signing: SigningSpecs,
    pub source_date_epoch: u64,
    pub tree: TreeSource,
    /// Architecture of the release, and the toolchain of a cross build.
    pub target: crate::cross::BuildTarget,
    pub progress: Progress,
}

/// Entries of a release by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EntryCounts {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub hardlinks: u64,
}

impl EntryCounts {
    pub fn total(&self) -> u64 {
        self.files + self.dirs + self.symlinks + self.hardlinks
    }
}

/// Paths and counters of a written release, for the summary.
#[derive(Debug, Clone)]
pub struct ReleaseSummary {
    pub target_name: String,
    pub manifest_path: PathBuf,
    pub manifest_sha256: Sha256Digest,
    pub repo: PathBuf,
    pub bundle_path: PathBuf,
    pub bundle_bytes: u64,
    pub targets_version: u64,
    /// `false` when the repository already listed this exact release.
    pub targets_changed: bool,
    /// Versions written to `metadata/`; `None` when nothing changed.
    pub published: Option<PublishedVersions>,
    /// The manifest under its consistent target name in `repo/targets/`.
    pub target_path: PathBuf,
    pub root_version: u64,
    pub architecture: String,
    pub source_commit: Option<String>,
    pub source_date_epoch: u64,
    pub entries: EntryCounts,
    pub store: StoreStats,
    pub rewrites: Vec<FileRewrites>,
    /// Delta packs written from earlier releases.
    pub deltas: Vec<DeltaSummary>,
    pub elapsed: Duration,
}

/// A tree ready to scan, and how to scan it.
struct PreparedTree {
    dir: PathBuf,
    build_paths: Vec<BuildPath>,
    /// Bits cleared from every mode; see [`prepare_tree`].
    clear_mode_bits: u32,
    source_commit: Option<String>,
}

/// Builds or finds the tree, scans it, stores its chunks and writes the
/// repository files and the bundle.
pub fn write_release(request: &ReleaseRequest) -> Result<ReleaseSummary, ReleaseError> {
    let started = Instant::now();
    let recipe = &request.recipe;
    let keys_root = load_keys_root(&request.keys)?;
    let repo = request.out.join("repo");
    let repository = Repository::new(&repo);
    let (chain, new_repository) = release_root_chain(&repository, &keys_root)?;
    let signers = load_role_signers(&request.keys, &request.signing, chain.latest())?;

    let prepared = prepare_tree(request)?;
    let relocator = Relocator::new(
        prepared.build_paths.clone(),
        RuntimeTargets {
            runtime_path: recipe.runtime_path.clone(),
            python_shebang: recipe.colcon.python_shebang.clone(),
            python_executable: recipe.colcon.python_executable.clone(),
        },
    );
    let tree = scan(request, &prepared, &relocator)?;
    check_pre_switch(recipe, &tree)?;
    let entries_by_kind = count_entries(&tree);
    let rewrites = tree.rewrites.clone();

    let mut store = ChunkStore::new(&repo, recipe.chunking);
    let total_bytes = tree.entries.iter().map(|e| if let TreeKind::File { size, .. } = e.kind { size } else { 0 }).sum();
    let chunk_bar = request.progress.bytes("chunking", total_bytes);
    let entries = chunk_entries(tree.entries, &mut store, request.source_date_epoch, &chunk_bar)?;
    chunk_bar.finish_and_clear();

    let manifest = Manifest {
        format: FORMAT_VERSION,
        name: recipe.name.clone(),
        version: request.version.clone(),
        compatible: recipe.compatible.clone(),
        architecture: request.target.architecture.clone(),
        prefix: recipe.prefix.clone(),
        provenance: Provenance {
            source_commit: prepared.source_commit.clone(),
            recipe_sha256: recipe.sha256,
            builder: BUILDER.to_owned(),
            source_date_epoch: request.source_date_epoch,
        },
        services: recipe.services.clone(),
        pre_switch: recipe.manifest_pre_switch(),
        health: recipe.manifest_health(),
        entries,
    };
    manifest.validate().map_err(ReleaseError::InvalidManifest)?;
    let manifest_bytes = to_canonical_json(&manifest).map_err(ReleaseError::Encode)?;
    let target_name = manifest_target_name(&recipe.name, &request.version);
    let manifest_path = repo.join(repo_manifest_path(&target_name));
    write_file(&manifest_path, &manifest_bytes)?;
    let target_path = repository.write_target(&target_name, &manifest_bytes)?;

    if new_repository {
        let what = keys_root.path.display().to_string();
        publish_root(&repository, None, &keys_root.bytes, &what)?;
    }
    write_legacy_root(&repository, chain.latest_bytes())?;
    let targets_path = repo.join(TARGETS_FILE);
    let tuf_targets_path = repo.join(METADATA_DIR).join(TARGETS_FILE);
    // A repository written before metadata/ existed has only the top-level file.
    let existing = match read_optional(&tuf_targets_path)? {
        Some(bytes) => Some(bytes),
        None => read_optional(&targets_path)?,
    };
    let what = tuf_targets_path.display().to_string();
    let deltas = match &existing {
        Some(existing) => write_deltas(&repository, existing, &what, chain.roots(), &manifest, &manifest_bytes, recipe)?,
        None => Vec::new(),
    };
    let info = manifest.release_info();
    let updated = add_target(
        existing.as_deref(),
        &what,
        chain.roots(),
        &signers.targets,
        &NewTarget {
            name: &target_name,
            manifest: &manifest_bytes,
            info: &info,
            rollout: recipe.rollout.to_custom(request.source_date_epoch),
            extra: deltas.iter().map(|delta| (delta.target_name.clone(), delta.target.clone())).collect(),
        },
        request.source_date_epoch,
    )?;
    let mut published = None;
    if updated.changed {
        let snapshot_signers = SnapshotSigners { snapshot: &signers.snapshot, timestamp: &signers.timestamp };
        published = Some(publish_targets(
            &repository,
            chain.latest(),
            &updated.bytes,
            updated.version,
            &snapshot_signers,
            request.source_date_epoch,
        )?);
        write_file(&targets_path, &updated.bytes)?;
    }
    tracing::info!(target = target_name, version = updated.version, "targets.json written");

    let bundle_path = request.out.join(bundle_file_name(&recipe.name, &request.version));
    let bundle_bar = request.progress.items("bundle");
    let root_chain = chain.roots().iter().filter_map(|root| chain.version_bytes(root.version).map(|bytes| (root.version, bytes))).collect();
    let contents = BundleContents {
        root: chain.latest_bytes(),
        root_chain,
        targets: &updated.bytes,
        manifest: &manifest_bytes,
        chunks: store.chunks().map(|digest| (*digest, store.chunk_path(digest))).collect(),
        mtime: request.source_date_epoch,
    };
    let bundle_bytes = write_bundle(&bundle_path, &contents, &bundle_bar)?;
    bundle_bar.finish_and_clear();

    Ok(ReleaseSummary {
        target_name,
        manifest_path,
        manifest_sha256: Sha256Digest::of(&manifest_bytes),
        repo,
        bundle_path,
        bundle_bytes,
        targets_version: updated.version,
        targets_changed: updated.changed,
        published,
        target_path,
        root_version: chain.latest_version(),
        architecture: manifest.architecture,
        source_commit: prepared.source_commit,
        source_date_epoch: request.source_date_epoch,
        entries: entries_by_kind,
        store: store.stats(),
        rewrites,
        deltas: deltas.into_iter().map(|delta| delta.summary).collect(),
        elapsed: started.elapsed(),
    })
}

/// A delta pack of this release, for the summary.
#[derive(Debug, Clone)]
pub struct DeltaSummary {
    pub target_name: String,
    pub from: semver::Version,
    pub bytes: u64,
    pub files: usize,
    /// Bytes a robot on `from` downloads without the pack: the manifest and
    /// the chunks it lacks.
    pub without_pack: u64,
}

struct PublishedDelta {
    target_name: String,
    target: tender_keys::TargetFile,
    summary: DeltaSummary,
}

/// Writes delta packs from the recipe's number of earlier releases of the
/// same name and `compatible`, each as a consistent target.
fn write_deltas(
    repository: &Repository,
    existing: &[u8],
    what: &str,
    roots: &[tender_keys::Verified<tender_keys::Root>],
    manifest: &Manifest,
    manifest_bytes: &[u8],
    recipe: &Recipe,
) -> Result<Vec<PublishedDelta>, ReleaseError> {
    let earlier = listed_releases(existing, what, roots)?
        .into_iter()
        .filter(|listed| {
            listed.info.name == manifest.name
                && listed.info.compatible == manifest.compatible
                && listed.info.architecture == manifest.architecture
                && listed.info.version < manifest.version
        })
        .take(recipe.delta.from_last as usize);
    let mut published = Vec::new();
    for listed in earlier {
        let Some(old_bytes) = read_listed_manifest(repository, &listed)? else {
            tracing::warn!(target = listed.target_name, "no delta pack: the manifest is missing from the repository");
            continue;
        };
        let old = Manifest::parse(&old_bytes).map_err(ReleaseError::InvalidManifest)?;
        let Some(delta) = build_delta(
            repository.dir(),
            DeltaRelease { manifest: &old, bytes: &old_bytes },
            DeltaRelease { manifest, bytes: manifest_bytes },
            recipe.delta.zstd_level,
        )?
        else {
            continue;
        };
        repository.write_target(&delta.target_name, &delta.bytes)?;
        let custom = serde_json::to_value(DeltaTarget { delta: delta.info.clone() }).map_err(|source| {
            ReleaseError::Delta(crate::delta::DeltaError::Encode(source))
        })?;
        published.push(PublishedDelta {
            target: target_file(&delta.bytes, custom),
            summary: DeltaSummary {
                target_name: delta.target_name.clone(),
                from: old.version.clone(),
                bytes: delta.bytes.len() as u64,
                files: delta.files,
                without_pack: manifest_bytes.len() as u64 + delta.info.chunk_bytes,
            },
            target_name: delta.target_name,
        });
    }
    Ok(published)
}

/// Reads an earlier release's manifest from the repository and checks it
/// against its listing; `None` when the repository no longer has it.
fn read_listed_manifest(repository: &Repository, listed: &ListedRelease) -> Result<Option<Vec<u8>>, ReleaseError> {
    let Some(digest) = listed.file.hashes.get("sha256") else { return Ok(None) };
    let candidates = [
        repository.dir().join(crate::publish::consistent_target_path(&listed.target_name, digest)),
        repository.dir().join(repo_manifest_path(&listed.target_name)),
    ];
    for path in candidates {
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => return Err(ReleaseError::Read { path, source }),
        };
        if Sha256Digest::of(&bytes).to_hex() == *digest && bytes.len() as u64 == listed.file.length {
            return Ok(Some(bytes));
        }
        tracing::warn!(path = %path.display(), "manifest differs from its listing in targets.json; not used for a delta");
    }
    Ok(None)
}

/// Returns the verified root chain that the release signs under, and
/// whether the repository is new (its version 1 root still to publish).
/// The keys directory's root must be a version of the repository's chain.
fn release_root_chain(repo: &Repository, keys_root: &KeysRoot) -> Result<(RootChain, bool), ReleaseError> {
    let mismatch = |repo_root: PathBuf| ReleaseError::RootMismatch { repo_root, keys_root: keys_root.path.clone() };
    if let Some(chain) = load_root_chain(repo)? {
        let version = keys_root.root.version;
        if chain.version_bytes(version) != Some(keys_root.bytes.as_slice()) {
            let file = crate::publish::versioned_file(version.min(chain.latest_version()), ROOT_FILE);
            return Err(mismatch(repo.metadata_path(&file)));
        }
        return Ok((chain, false));
    }
    // A repository written before metadata/ existed has only a top-level root.json.
    let legacy_root = repo.dir().join(ROOT_FILE);
    match std::fs::read(&legacy_root) {
        Ok(existing) if existing != keys_root.bytes => return Err(mismatch(legacy_root)),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(ReleaseError::Read { path: legacy_root, source }),
    }
    if keys_root.root.version != 1 {
        return Err(ReleaseError::RootNotFirst { keys_root: keys_root.path.clone(), version: keys_root.root.version });
    }
    Ok((RootChain::first(keys_root.bytes.clone(), keys_root.root.clone()), true))
}

/// Builds the tree with colcon or checks the prebuilt one, and lists the
/// build-machine paths that must not remain in it.
///
/// A colcon tree has its group and other write bits cleared, as if every
/// file had been installed under umask 022. Some install rules copy the
/// modes of the checkout, such as CMake's `install(DIRECTORY …
/// USE_SOURCE_PERMISSIONS)`, and those depend on the umask of the user who
/// cloned the sources. A prebuilt tree keeps its modes exactly.
fn prepare_tree(request: &ReleaseRequest) -> Result<PreparedTree, ReleaseError> {
    let recipe = &request.recipe;
    let workspace = &recipe.colcon.workspace;
    let mut build_paths = Vec::new();
    match &request.tree {
        TreeSource::Colcon { venv, work_dir } => {
            let mut cmake_args = recipe.colcon.cmake_args.clone();
            if let Some(toolchain) = &request.target.toolchain {
                let toolchain = std::path::absolute(toolchain).map_err(|source| ReleaseError::Read { path: toolchain.clone(), source })?;
                cmake_args.push(format!("-DCMAKE_TOOLCHAIN_FILE={}", toolchain.display()));
            }
            let build = ColconBuild {
                workspace: workspace.clone(),
                work_dir: work_dir.clone(),
                venv: venv.clone(),
                args: recipe.colcon.args.clone(),
                cmake_args,
                source_date_epoch: request.source_date_epoch,
            };
            let spinner = request.progress.spinner("colcon");
            let output = build.run(&spinner);
            spinner.finish_and_clear();
            let output = output?;
            push_path_forms(&mut build_paths, BuildPathKind::Install, &output.install_dir);
            push_path_forms(&mut build_paths, BuildPathKind::Install, &work_dir.join("install"));
            push_path_forms(&mut build_paths, BuildPathKind::Build, &output.build_dir);
            push_path_forms(&mut build_paths, BuildPathKind::Build, &work_dir.join("build"));
            push_path_forms(&mut build_paths, BuildPathKind::Source, &output.source_dir);
            push_path_forms(&mut build_paths, BuildPathKind::Source, workspace);
            if let Some(venv) = &output.venv_dir {
                push_path_forms(&mut build_paths, BuildPathKind::Venv, venv);
            }
            let mut sources = vec![workspace.clone(), recipe.path.clone()];
            sources.extend(recipe.files.iter().map(|file| file.source.clone()));
            Ok(PreparedTree {
                dir: output.install_dir,
                build_paths,
                clear_mode_bits: 0o022,
                source_commit: clean_commit(&sources),
            })
        }
        TreeSource::Prebuilt { tree } => {
            let metadata = std::fs::metadata(tree).map_err(|source| ReleaseError::Tree { path: tree.clone(), source })?;
            if !metadata.is_dir() {
                return Err(ReleaseError::TreeNotDirectory { path: tree.clone() });
            }
            push_path_forms(&mut build_paths, BuildPathKind::Install, tree);
            if workspace.is_dir() {
                push_path_forms(&mut build_paths, BuildPathKind::Source, workspace);
            }
            // NOTE: nothing ties a prebuilt tree to a commit, so none is recorded.
            Ok(PreparedTree { dir: tree.clone(), build_paths, clear_mode_bits: 0, source_commit: None })
        }
    }
}

/// Adds `path` as written (made absolute) and with symlinks resolved, since
/// tools write either form into the tree.
fn push_path_forms(paths: &mut Vec<BuildPath>, kind: BuildPathKind, path: &Path) {
    let forms = [std::path::absolute(path).ok(), path.canonicalize().ok()];
    for form in forms.into_iter().flatten() {
        if let Some(text) = form.to_str() {
            paths.push(BuildPath { kind, path: text.to_owned() });
        }
    }
}

fn scan(request: &ReleaseRequest, prepared: &PreparedTree, relocator: &Relocator) -> Result<ScannedTree, ReleaseError> {
    let recipe = &request.recipe;
    let bar = request.progress.items("scanning");
    let options = ScanOptions {
        exclude: &recipe.exclude,
        owner: Some(recipe.owner),
        clear_mode_bits: prepared.clear_mode_bits,
        relocator,
    };
    let mut tree = scan_tree(&prepared.dir, &options, &bar)?;
    bar.finish_and_clear();
    add_extra_files(&mut tree, &recipe.files, recipe.owner, relocator)?;
    for file in &tree.rewrites {
        for rewrite in &file.rewrites {
            tracing::debug!(path = file.path, from = rewrite.from, to = rewrite.to, count = rewrite.count, "relocated");
        }
    }
    Ok(tree)
}

fn count_entries(tree: &ScannedTree) -> EntryCounts {
    let mut counts = EntryCounts::default();
    for entry in &tree.entries {
        match entry.kind {
            TreeKind::File { .. } => counts.files += 1,
            TreeKind::Dir => counts.dirs += 1,
            TreeKind::Symlink { .. } => counts.symlinks += 1,
            TreeKind::Hardlink { .. } => counts.hardlinks += 1,
        }
    }
    counts
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), ReleaseError> {
    write_atomic(path, bytes).map_err(|source| ReleaseError::Write { path: path.to_owned(), source })
}
