//! Release recipes: the TOML file that names a release, describes how to build
//! its tree with colcon, and tells the robot how to install and check it.
//!
//! [`Recipe::load`] reads and validates a recipe in one step, so code that
//! has a [`Recipe`] can rely on every rule checked here. Paths in the recipe
//! are relative to the recipe file; [`Recipe`] stores them resolved.

use std::path::{Path, PathBuf};
use std::time::Duration;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use serde::Deserialize;
use tender_updater::format::limits::MAX_CHUNK_BYTES;
use tender_updater::format::path::check_entry_path;
use tender_updater::format::Sha256Digest;

use crate::oci::compress::Compression;
use crate::oci::settings::{check_env, check_label, check_user, ImageFile, ImageSettings, DEFAULT_USER};

/// Failures to read or validate a recipe.
#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
    #[error("cannot read recipe {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },

    #[error("recipe {} is not a valid release recipe: {message}", path.display())]
    Parse { path: PathBuf, message: String },

    #[error("recipe {}: invalid `{field}` = {value}: {reason}", path.display())]
    Invalid { path: PathBuf, field: String, value: String, reason: String },
}

/// A validated release recipe.
#[derive(Debug, Clone)]
pub struct Recipe {
    /// The recipe file, as given.
    pub path: PathBuf,
    /// SHA-256 of the recipe file's bytes, recorded in the manifest.
    pub sha256: Sha256Digest,
    pub name: String,
    pub compatible: String,
    /// Install prefix on the robot, such as `/opt/ecar`.
    pub prefix: String,
    /// Path the tree runs at on the robot, through the A/B symlink, such as
    /// `/opt/ecar/current`. Build-machine install paths are rewritten to it.
    pub runtime_path: String,
    pub colcon: ColconSettings,
    /// Owner forced on every entry.
    pub owner: Owner,
    pub files: Vec<ExtraFile>,
    /// Exclude patterns as written, for messages.
    pub exclude_patterns: Vec<String>,
    /// Compiled exclude patterns, matched against entry paths such as
    /// `lib/python3.11/site-packages/x/__pycache__`.
    pub exclude: GlobSet,
    pub services: Vec<String>,
    pub pre_switch: PreSwitchSettings,
    pub health: HealthSettings,
    pub chunking: ChunkingSettings,
    pub rollout: RolloutSettings,
    pub delta: DeltaSettings,
    pub cross: crate::cross::CrossSettings,
    /// Container image settings of `tender image`.
    pub image: ImageSettings,
}

/// Staged rollout written into each release's signed metadata: waves as
/// (time after `SOURCE_DATE_EPOCH`, percentage of the fleet), and channels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutSettings {
    pub waves: Vec<(Duration, u32)>,
    pub channels: Vec<String>,
}

impl Default for RolloutSettings {
    /// Canary first: 10 % of the fleet at release time, everyone a day later.
    fn default() -> Self {
        Self { waves: vec![(Duration::ZERO, 10), (Duration::from_secs(86_400), 100)], channels: Vec::new() }
    }
}

impl RolloutSettings {
    /// Returns the `rollout` object of a target's `custom` field, with wave
    /// starts counted from `source_date_epoch`, or `None` for a release open
    /// to all.
    pub fn to_custom(&self, source_date_epoch: u64) -> Option<serde_json::Value> {
        if self.waves.is_empty() && self.channels.is_empty() {
            return None;
        }
        let epoch = std::time::UNIX_EPOCH + Duration::from_secs(source_date_epoch);
        let waves: Vec<serde_json::Value> = self
            .waves
            .iter()
            .map(|(after, percent)| {
                let start = humantime::format_rfc3339_seconds(epoch + *after).to_string();
                serde_json::json!({"start": start, "percent": percent})
            })
            .collect();
        let mut rollout = serde_json::json!({ "waves": waves });
        if !self.channels.is_empty() {
            rollout["channels"] = serde_json::json!(self.channels);
        }
        Some(rollout)
    }
}

/// How to run colcon, and what to write in place of the build machine's Python.
#[derive(Debug, Clone)]
pub struct ColconSettings {
    /// The colcon workspace, resolved against the recipe's directory. Its
    /// packages are under `src/`.
    pub workspace: PathBuf,
    /// Extra `colcon build` arguments.
    pub args: Vec<String>,
    /// Arguments passed to CMake through one `--cmake-args` group.
    pub cmake_args: Vec<String>,
    /// Interpreter written after `#!` in place of a build-machine Python,
    /// such as `/usr/bin/env python3`.
    pub python_shebang: String,
    /// Python executable written into colcon's setup scripts in place of the
    /// build machine's, such as `/usr/bin/python3`.
    pub python_executable: String,
}

/// User and group ids given to every entry of the release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Owner {
    #[serde(default)]
    pub uid: u32,
    #[serde(default)]
    pub gid: u32,
}

/// A file or directory from the source tree added to the release tree.
#[derive(Debug, Clone)]
pub struct ExtraFile {
    /// Source path, resolved against the recipe's directory.
    pub source: PathBuf,
    /// Entry path in the release tree, such as `config/default.yaml`.
    pub destination: String,
}

/// Checks run on the robot against the staged slot before the switch.
#[derive(Debug, Clone)]
pub struct PreSwitchSettings {
    pub required_files: Vec<String>,
    pub self_test: Vec<String>,
    pub self_test_timeout: Duration,
    /// Release file that is the filesystem image of partition slots, such
    /// as `rootfs.img`. When set, the required files and the `{slot}/`
    /// paths of the self-test are paths inside the image, where a robot with
    /// partition slots looks for them, and `tender release` checks them there.
    pub image: Option<String>,
}

/// The health check run on the robot after the switch.
#[derive(Debug, Clone)]
pub struct HealthSettings {
    pub command: Vec<String>,
    pub timeout: Duration,
    pub interval: Duration,
    pub failures_to_revert: u32,
}

/// FastCDC chunk sizes in bytes and the zstd level of stored chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChunkingSettings {
    #[serde(default = "default_min_bytes")]
    pub min_bytes: u32,
    #[serde(default = "default_avg_bytes")]
    pub avg_bytes: u32,
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u32,
    #[serde(default = "default_zstd_level")]
    pub zstd_level: i32,
}

impl Default for ChunkingSettings {
    fn default() -> Self {
        Self {
            min_bytes: default_min_bytes(),
            avg_bytes: default_avg_bytes(),
            max_bytes: default_max_bytes(),
            zstd_level: default_zstd_level(),
        }
    }
}

/// Delta packs written with each release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeltaSettings {
    /// Packs are written from each of this many earlier releases; 0 writes none.
    #[serde(default = "default_delta_from_last")]
    pub from_last: u32,
    #[serde(default = "default_delta_zstd_level")]
    pub zstd_level: i32,
}

impl Default for DeltaSettings {
    fn default() -> Self {
        Self { from_last: default_delta_from_last(), zstd_level: default_delta_zstd_level() }
    }
}

fn default_delta_from_last() -> u32 {
    3
}

fn default_delta_zstd_level() -> i32 {
    19
}

/// Most earlier releases a recipe may ask packs from.
const MAX_DELTA_FROM_LAST: u32 = 20;

fn default_min_bytes() -> u32 {
    16 * 1024
}

fn default_avg_bytes() -> u32 {
    64 * 1024
}

fn default_max_bytes() -> u32 {
    256 * 1024
}

fn default_zstd_level() -> i32 {
    12
}

fn default_failures_to_revert() -> u32 {
    5
}

fn default_python_shebang() -> String {
    "/usr/bin/env python3".to_owned()
}

fn default_python_executable() -> String {
    "/usr/bin/python3".to_owned()
}

// The raw TOML shape. Durations stay strings here so their errors can name
// the field.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RecipeFile {
    name: String,
    compatible: String,
    prefix: String,
    runtime_path: String,
    colcon: ColconFile,
    #[serde(default)]
    owner: Option<Owner>,
    #[serde(default)]
    files: Vec<ExtraFileEntry>,
    #[serde(default)]
    exclude: Vec<String>,
    #[serde(default)]
    services: Vec<String>,
    #[serde(default)]
    pre_switch: PreSwitchFile,
    health: HealthFile,
    #[serde(default)]
    chunking: ChunkingSettings,
    #[serde(default)]
    rollout: Option<RolloutFile>,
    #[serde(default)]
    delta: DeltaSettings,
    #[serde(default)]
    cross: CrossFile,
    #[serde(default)]
    image: Option<ImageFile>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CrossFile {
    #[serde(default)]
    target: Option<String>,
    #[serde(default)]
    toolchains: std::collections::BTreeMap<String, PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RolloutFile {
    #[serde(default)]
    waves: Vec<WaveFile>,
    #[serde(default)]
    channels: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WaveFile {
    after: String,
    percent: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ColconFile {
    workspace: PathBuf,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    cmake_args: Vec<String>,
    #[serde(default = "default_python_shebang")]
    python_shebang: String,
    #[serde(default = "default_python_executable")]
    python_executable: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExtraFileEntry {
    source: PathBuf,
    destination: String,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PreSwitchFile {
    #[serde(default)]
    required_files: Vec<String>,
    #[serde(default)]
    self_test: Vec<String>,
    #[serde(default)]
    self_test_timeout: Option<String>,
    #[serde(default)]
    image: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HealthFile {
    command: Vec<String>,
    timeout: String,
    interval: String,
    #[serde(default = "default_failures_to_revert")]
    failures_to_revert: u32,
}

/// Options that `tender` sets itself; a recipe that sets them would produce
/// a tree that the builder cannot find or relocate.
const RESERVED_COLCON_ARGS: &[&str] = &["--build-base", "--install-base", "--base-paths", "--log-base", "--cmake-args"];

/// Default self-test timeout when the recipe sets a self-test but no timeout.
const DEFAULT_SELF_TEST_TIMEOUT: Duration = Duration::from_secs(30);

impl Recipe {
    /// Reads and validates the recipe at `path`.
    pub fn load(path: &Path) -> Result<Self, RecipeError> {
        let bytes = std::fs::read(path).map_err(|source| RecipeError::Read { path: path.to_owned(), source })?;
        let text = std::str::from_utf8(&bytes).map_err(|e| RecipeError::Parse {
            path: path.to_owned(),
            message: format!("the file is not UTF-8 ({e}); save it as UTF-8"),
        })?;
        let raw: RecipeFile = toml::from_str(text)
            .map_err(|e| RecipeError::Parse { path: path.to_owned(), message: e.to_string().trim_end().to_owned() })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Validator { path }.recipe(raw, &base, Sha256Digest::of(&bytes))
    }

    /// Directory the recipe's relative paths are resolved against.
    pub fn directory(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }
}

/// Builds [`RecipeError::Invalid`] values that name the recipe file.
struct Validator<'a> {
    path: &'a Path,
}

impl Validator<'_> {
    fn invalid(&self, field: &str, value: impl std::fmt::Debug, reason: impl Into<String>) -> RecipeError {
        RecipeError::Invalid {
            path: self.path.to_owned(),
            field: field.to_owned(),
            value: format!("{value:?}"),
            reason: reason.into(),
        }
    }

    fn recipe(&self, raw: RecipeFile, base: &Path, sha256: Sha256Digest) -> Result<Recipe, RecipeError> {
        self.identifier("name", &raw.name)?;
        self.identifier("compatible", &raw.compatible)?;
        self.absolute_path("prefix", &raw.prefix)?;
        self.absolute_path("runtime_path", &raw.runtime_path)?;

        let colcon = self.colcon(raw.colcon, base)?;
        let files = raw
            .files
            .into_iter()
            .enumerate()
            .map(|(index, file)| self.extra_file(index, file, base))
            .collect::<Result<Vec<_>, _>>()?;
        let exclude = self.exclude(&raw.exclude)?;
        for (index, service) in raw.services.iter().enumerate() {
            self.service(index, service)?;
        }
        let pre_switch = self.pre_switch(raw.pre_switch)?;
        let health = self.health(raw.health)?;
        self.chunking(&raw.chunking)?;
        self.delta(&raw.delta)?;
        let cross = self.cross(raw.cross, base)?;
        let rollout = match raw.rollout {
            None => RolloutSettings::default(),
            Some(file) => self.rollout(file)?,
        };
        let image = match raw.image {
            None => ImageSettings::default(),
            Some(file) => self.image(file, base)?,
        };

        Ok(Recipe {
            path: self.path.to_owned(),
            sha256,
            name: raw.name,
            compatible: raw.compatible,
            prefix: raw.prefix,
            runtime_path: raw.runtime_path,
            colcon,
            owner: raw.owner.unwrap_or(Owner { uid: 0, gid: 0 }),
            files,
            exclude_patterns: raw.exclude,
            exclude,
            services: raw.services,
            pre_switch,
            health,
            chunking: raw.chunking,
            rollout,
            delta: raw.delta,
            cross,
            image,
        })
    }

    fn image(&self, file: ImageFile, base: &Path) -> Result<ImageSettings, RecipeError> {
        for (index, entry) in file.env.iter().enumerate() {
            check_env(entry).map_err(|reason| self.invalid(&format!("image.env[{index}]"), entry, reason))?;
        }
        for (field, command) in [("image.entrypoint", &file.entrypoint), ("image.cmd", &file.cmd)] {
            if let Some(command) = command {
                if command.first().is_some_and(String::is_empty) {
                    return Err(self.invalid(field, command, "the program must not be empty"));
                }
            }
        }
        if let Some(workdir) = &file.workdir {
            self.absolute_path("image.workdir", workdir)?;
        }
        let user = file.user.unwrap_or_else(|| DEFAULT_USER.to_owned());
        check_user(&user).map_err(|reason| self.invalid("image.user", &user, reason))?;
        for key in file.labels.keys() {
            check_label(key).map_err(|reason| self.invalid(&format!("image.labels.{key}"), key, reason))?;
        }
        let compression = match &file.compression {
            None => Compression::Gzip,
            Some(name) => Compression::parse_layer_codec(name)
                .ok_or_else(|| self.invalid("image.compression", name, "use \"gzip\" (readable by Docker) or \"zstd\""))?,
        };
        Ok(ImageSettings {
            env: file.env,
            entrypoint: file.entrypoint,
            cmd: file.cmd,
            workdir: file.workdir,
            user,
            labels: file.labels,
            base: file.base.map(|path| base.join(path)),
            compression,
        })
    }

    fn rollout(&self, file: RolloutFile) -> Result<RolloutSettings, RecipeError> {
        let mut waves = Vec::new();
        for (index, wave) in file.waves.iter().enumerate() {
            let field = format!("rollout.waves[{index}]");
            // Zero is allowed here: a first wave at release time.
            let after = humantime::parse_duration(&wave.after).map_err(|e| {
                self.invalid(&format!("{field}.after"), &wave.after, format!("{e}; write it like \"0s\" or \"24h\""))
            })?;
            if wave.percent > 100 {
                return Err(self.invalid(&format!("{field}.percent"), wave.percent, "must be 0 to 100"));
            }
            waves.push((after, wave.percent));
        }
        Ok(RolloutSettings { waves, channels: file.channels })
    }

    /// Names end up in file names and TUF target names, so they are limited
    /// to letters, digits, `.`, `_` and `-`.
    fn identifier(&self, field: &str, value: &str) -> Result<(), RecipeError> {
        let valid_start = value.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
        let valid_chars = value.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
        if !valid_start || !valid_chars || value.len() > 100 {
            return Err(self.invalid(
                field,
                value,
                "use 1 to 100 ASCII letters, digits, '.', '_' or '-', starting with a letter or digit",
            ));
        }
        Ok(())
    }

    /// Robot paths are written into shell scripts, so only characters that
    /// need no quoting are accepted.
    fn absolute_path(&self, field: &str, value: &str) -> Result<(), RecipeError> {
        let plain = value.chars().all(|c| c.is_ascii_alphanumeric() || "/._-+".contains(c));
        let relative = value.strip_prefix('/').unwrap_or("");
        if !value.starts_with('/') || !plain || check_entry_path(relative).is_err() {
            return Err(self.invalid(
                field,
                value,
                "use an absolute path such as \"/opt/ecar\" with no trailing '/', no '.' or '..' \
                 components, and only ASCII letters, digits, '/', '.', '_', '-' or '+'",
            ));
        }
        Ok(())
    }

    fn colcon(&self, raw: ColconFile, base: &Path) -> Result<ColconSettings, RecipeError> {
        if raw.workspace.as_os_str().is_empty() {
            return Err(self.invalid("colcon.workspace", &raw.workspace, "name the colcon workspace directory"));
        }
        for arg in &raw.args {
            let option = arg.split('=').next().unwrap_or(arg);
            if RESERVED_COLCON_ARGS.contains(&option) {
                let reason = if option == "--cmake-args" {
                    "list CMake arguments in `colcon.cmake_args` instead; colcon keeps only the last \
                     --cmake-args group and tender adds its own"
                        .to_owned()
                } else {
                    format!("remove it; tender sets {option} itself")
                };
                return Err(self.invalid("colcon.args", arg, reason));
            }
        }
        if !raw.python_shebang.starts_with('/') || raw.python_shebang.contains(['\n', '\r', '\0']) {
            return Err(self.invalid(
                "colcon.python_shebang",
                &raw.python_shebang,
                "give the interpreter line without \"#!\", starting with '/', such as \"/usr/bin/env python3\"",
            ));
        }
        self.absolute_path("colcon.python_executable", &raw.python_executable)?;
        Ok(ColconSettings {
            workspace: base.join(raw.workspace),
            args: raw.args,
            cmake_args: raw.cmake_args,
            python_shebang: raw.python_shebang,
            python_executable: raw.python_executable,
        })
    }

    fn extra_file(&self, index: usize, raw: ExtraFileEntry, base: &Path) -> Result<ExtraFile, RecipeError> {
        if raw.source.as_os_str().is_empty() {
            return Err(self.invalid(&format!("files[{index}].source"), &raw.source, "name a file or directory"));
        }
        if let Err(e) = check_entry_path(&raw.destination) {
            return Err(self.invalid(
                &format!("files[{index}].destination"),
                &raw.destination,
                format!("{e}; give a path relative to the release tree, such as \"config/default.yaml\""),
            ));
        }
        Ok(ExtraFile { source: base.join(raw.source), destination: raw.destination })
    }

    fn exclude(&self, patterns: &[String]) -> Result<GlobSet, RecipeError> {
        let mut set = GlobSetBuilder::new();
        for (index, pattern) in patterns.iter().enumerate() {
            // `*` stays inside one path component; `**` crosses components.
            let glob = GlobBuilder::new(pattern).literal_separator(true).build().map_err(|e| {
                self.invalid(
                    &format!("exclude[{index}]"),
                    pattern,
                    format!("{e}; write a glob such as \"**/__pycache__\" or \"include/**\""),
                )
            })?;
            set.add(glob);
        }
        set.build().map_err(|e| self.invalid("exclude", patterns, e.to_string()))
    }

    fn service(&self, index: usize, service: &str) -> Result<(), RecipeError> {
        let valid = !service.is_empty()
            && service.len() <= 256
            && service.chars().all(|c| c.is_ascii_alphanumeric() || ":_.@-".contains(c));
        if !valid {
            return Err(self.invalid(
                &format!("services[{index}]"),
                service,
                "give a systemd unit name such as \"ecar-motor-controller\" or \"ecar-motor-controller.service\"",
            ));
        }
        Ok(())
    }

    fn pre_switch(&self, raw: PreSwitchFile) -> Result<PreSwitchSettings, RecipeError> {
        for (index, file) in raw.required_files.iter().enumerate() {
            if let Err(e) = check_entry_path(file) {
                return Err(self.invalid(
                    &format!("pre_switch.required_files[{index}]"),
                    file,
                    format!("{e}; give a path relative to the release tree, such as \"bin/motor_controller\""),
                ));
            }
        }
        if let Some(image) = &raw.image {
            if let Err(e) = check_entry_path(image) {
                return Err(self.invalid(
                    "pre_switch.image",
                    image,
                    format!("{e}; name the image file of the release tree, such as \"rootfs.img\""),
                ));
            }
        }
        let self_test_timeout = match &raw.self_test_timeout {
            Some(text) => self.duration("pre_switch.self_test_timeout", text)?,
            None => DEFAULT_SELF_TEST_TIMEOUT,
        };
        Ok(PreSwitchSettings { required_files: raw.required_files, self_test: raw.self_test, self_test_timeout, image: raw.image })
    }

    fn health(&self, raw: HealthFile) -> Result<HealthSettings, RecipeError> {
        if raw.command.is_empty() || raw.command[0].is_empty() {
            return Err(self.invalid(
                "health.command",
                &raw.command,
                "give the program and its arguments, such as [\"bash\", \"-c\", \"source {prefix}/setup.bash && health_check\"]",
            ));
        }
        if raw.failures_to_revert == 0 {
            return Err(self.invalid(
                "health.failures_to_revert",
                raw.failures_to_revert,
                "use 1 or more; it is the number of consecutive failed checks that reverts the robot",
            ));
        }
        Ok(HealthSettings {
            command: raw.command,
            timeout: self.duration("health.timeout", &raw.timeout)?,
            interval: self.duration("health.interval", &raw.interval)?,
            failures_to_revert: raw.failures_to_revert,
        })
    }

    fn duration(&self, field: &str, text: &str) -> Result<Duration, RecipeError> {
        let duration = humantime::parse_duration(text).map_err(|e| {
            self.invalid(field, text, format!("{e}; write a duration such as \"30s\", \"2m\" or \"1500ms\""))
        })?;
        if duration.is_zero() {
            return Err(self.invalid(field, text, "use a duration longer than zero"));
        }
        if duration.as_millis() > u128::from(u32::MAX) {
            return Err(self.invalid(field, text, "use a duration shorter than 49 days"));
        }
        Ok(duration)
    }

    fn chunking(&self, chunking: &ChunkingSettings) -> Result<(), RecipeError> {
        use fastcdc::v2020::{AVERAGE_MAX, AVERAGE_MIN, MAXIMUM_MIN, MINIMUM_MAX, MINIMUM_MIN};
        let ChunkingSettings { min_bytes, avg_bytes, max_bytes, zstd_level } = *chunking;
        if !(MINIMUM_MIN..=MINIMUM_MAX).contains(&min_bytes) {
            return Err(self.invalid(
                "chunking.min_bytes",
                min_bytes,
                format!("use {MINIMUM_MIN} to {MINIMUM_MAX} bytes (the FastCDC range)"),
            ));
        }
        if !(AVERAGE_MIN..=AVERAGE_MAX).contains(&avg_bytes) || avg_bytes < min_bytes {
            return Err(self.invalid(
                "chunking.avg_bytes",
                avg_bytes,
                format!("use {AVERAGE_MIN} to {AVERAGE_MAX} bytes and at least chunking.min_bytes ({min_bytes})"),
            ));
        }
        // The robot rejects chunks above MAX_CHUNK_BYTES, which is below
        // FastCDC's own maximum.
        if u64::from(max_bytes) > MAX_CHUNK_BYTES || max_bytes < MAXIMUM_MIN || max_bytes < avg_bytes {
            return Err(self.invalid(
                "chunking.max_bytes",
                max_bytes,
                format!(
                    "use {MAXIMUM_MIN} to {MAX_CHUNK_BYTES} bytes (the largest chunk a robot accepts) \
                     and at least chunking.avg_bytes ({avg_bytes})"
                ),
            ));
        }
        let levels = zstd::compression_level_range();
        if zstd_level < 1 || !levels.contains(&zstd_level) {
            return Err(self.invalid(
                "chunking.zstd_level",
                zstd_level,
                format!("use a zstd level from 1 to {}", levels.end()),
            ));
        }
        Ok(())
    }
}

impl Validator<'_> {
    fn cross(&self, file: CrossFile, base: &Path) -> Result<crate::cross::CrossSettings, RecipeError> {
        let architecture = |field: &str, name: &str| {
            crate::cross::check_architecture(name).map_err(|reason| self.invalid(field, name, reason))
        };
        if let Some(target) = &file.target {
            architecture("cross.target", target)?;
        }
        let mut toolchains = std::collections::BTreeMap::new();
        for (name, toolchain) in file.toolchains {
            let field = format!("cross.toolchains.{name}");
            architecture(&field, &name)?;
            let path = base.join(&toolchain);
            if !path.is_file() {
                return Err(self.invalid(&field, &toolchain, "no such CMake toolchain file; the path is relative to the recipe"));
            }
            toolchains.insert(name, path);
        }
        if let Some(target) = &file.target {
            if *target != std::env::consts::ARCH && !toolchains.contains_key(target) {
                return Err(self.invalid(
                    "cross.target",
                    target,
                    format!("no toolchain for it; add `{target} = \"FILE.cmake\"` under [cross.toolchains]"),
                ));
            }
        }
        Ok(crate::cross::CrossSettings { target: file.target, toolchains })
    }

    fn delta(&self, delta: &DeltaSettings) -> Result<(), RecipeError> {
        if delta.from_last > MAX_DELTA_FROM_LAST {
            return Err(self.invalid(
                "delta.from_last",
                delta.from_last,
                format!("use 0 (no packs) to {MAX_DELTA_FROM_LAST} earlier releases"),
            ));
        }
        let levels = zstd::compression_level_range();
        if delta.zstd_level < 1 || !levels.contains(&delta.zstd_level) {
            return Err(self.invalid(
                "delta.zstd_level",
                delta.zstd_level,
                format!("use a zstd level from 1 to {}", levels.end()),
            ));
        }
        Ok(())
    }
}

impl Recipe {
    /// Manifest form of the pre-switch checks.
    pub fn manifest_pre_switch(&self) -> tender_updater::format::PreSwitch {
        tender_updater::format::PreSwitch {
            required_files: self.pre_switch.required_files.clone(),
            self_test: self.pre_switch.self_test.clone(),
            self_test_timeout_ms: millis(self.pre_switch.self_test_timeout),
        }
    }

    /// Manifest form of the health check.
    pub fn manifest_health(&self) -> tender_updater::format::HealthCheck {
        tender_updater::format::HealthCheck {
            command: self.health.command.clone(),
            timeout_ms: millis(self.health.timeout),
            interval_ms: millis(self.health.interval),
            failures_to_revert: self.health.failures_to_revert,
        }
    }
}

/// Whole milliseconds; validation keeps every recipe duration below `u32::MAX` ms.
fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = r#"
name = "ecar-4wd4ws"
compatible = "ecar-4wd4ws"
prefix = "/opt/ecar"
runtime_path = "/opt/ecar/current"
services = ["ecar-motor-controller"]
exclude = ["**/__pycache__"]

[colcon]
workspace = "ecar-ws"
cmake_args = ["-G", "Ninja"]

[[files]]
source = "ecar-config/default.yaml"
destination = "config/default.yaml"

[pre_switch]
required_files = ["bin/motor_controller"]
self_test = ["{slot}/bin/motor_controller", "--self-test"]
self_test_timeout = "30s"

[health]
command = ["bash", "-c", "source {prefix}/setup.bash && health_check"]
timeout = "30s"
interval = "2s"
"#;

    fn load(text: &str) -> Result<Recipe, RecipeError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("recipe.toml");
        std::fs::write(&path, text).expect("write recipe");
        Recipe::load(&path)
    }

    #[test]
    fn valid_recipe_gets_defaults() {
        let recipe = load(VALID).expect("valid recipe");
        assert_eq!(recipe.owner, Owner { uid: 0, gid: 0 });
        assert_eq!(recipe.health.failures_to_revert, 5);
        assert_eq!(recipe.chunking, ChunkingSettings::default());
        assert_eq!(recipe.colcon.python_shebang, "/usr/bin/env python3");
        assert_eq!(recipe.manifest_health().interval_ms, 2000);
        assert_eq!(recipe.manifest_pre_switch().self_test_timeout_ms, 30_000);
        assert!(recipe.colcon.workspace.ends_with("ecar-ws"));
        assert!(recipe.exclude.is_match("lib/x/__pycache__"));
        assert!(!recipe.exclude.is_match("lib/x/__pycache__.py"));
    }

    #[test]
    fn unknown_key_is_named() {
        let err = load(&VALID.replace("prefix =", "prefixx = \"/x\"\nprefix =")).expect_err("unknown key");
        let message = err.to_string();
        assert!(message.contains("prefixx"), "{message}");
        assert!(message.contains("recipe.toml"), "{message}");
    }

    #[test]
    fn unknown_key_in_table_is_named() {
        let err = load(&VALID.replace("interval = \"2s\"", "interval = \"2s\"\nretries = 3")).expect_err("unknown key");
        assert!(err.to_string().contains("retries"), "{err}");
    }

    #[test]
    fn bad_duration_names_field() {
        let err = load(&VALID.replace("timeout = \"30s\"\ninterval", "timeout = \"soon\"\ninterval"))
            .expect_err("bad duration");
        assert!(err.to_string().contains("health.timeout"), "{err}");
    }

    #[test]
    fn chunk_max_above_robot_limit_is_rejected() {
        let text = format!("{VALID}\n[chunking]\nmax_bytes = {}\n", MAX_CHUNK_BYTES + 1);
        let err = load(&text).expect_err("too large");
        assert!(err.to_string().contains("chunking.max_bytes"), "{err}");
    }

    #[test]
    fn cmake_args_in_colcon_args_are_rejected() {
        let text = VALID.replace("cmake_args = [\"-G\", \"Ninja\"]", "args = [\"--cmake-args\", \"-GNinja\"]");
        let err = load(&text).expect_err("reserved");
        assert!(err.to_string().contains("colcon.cmake_args"), "{err}");
    }

    #[test]
    fn destination_outside_tree_is_rejected() {
        let err = load(&VALID.replace("\"config/default.yaml\"", "\"../etc/passwd\"")).expect_err("escapes");
        assert!(err.to_string().contains("files[0].destination"), "{err}");
    }

    #[test]
    fn runtime_path_must_be_absolute() {
        let err = load(&VALID.replace("\"/opt/ecar/current\"", "\"opt/ecar/current\"")).expect_err("relative");
        assert!(err.to_string().contains("runtime_path"), "{err}");
    }

    #[test]
    fn rollout_defaults_to_canary_first() {
        let recipe = load(VALID).expect("valid");
        let rollout = recipe.rollout.to_custom(1_700_000_000).expect("waves");
        let waves = rollout["waves"].as_array().expect("waves array");
        assert_eq!(waves.len(), 2);
        assert_eq!(waves[0]["percent"], 10);
        assert_eq!(waves[0]["start"], "2023-11-14T22:13:20Z");
        assert_eq!(waves[1]["percent"], 100);
        assert_eq!(waves[1]["start"], "2023-11-15T22:13:20Z");
    }

    #[test]
    fn empty_rollout_opens_release_to_all() {
        let recipe = load(&format!("{VALID}\n[rollout]\nwaves = []\n")).expect("valid");
        assert_eq!(recipe.rollout.to_custom(1_700_000_000), None);
    }

    #[test]
    fn image_section_is_optional_and_validated() {
        let recipe = load(VALID).expect("valid");
        assert_eq!(recipe.image, ImageSettings::default());

        let text = format!("{VALID}\n[image]\nenv = [\"ROS_DOMAIN_ID=42\"]\ncompression = \"zstd\"\nbase = \"base-image\"\n");
        let recipe = load(&text).expect("valid image section");
        assert_eq!(recipe.image.env, ["ROS_DOMAIN_ID=42"]);
        assert_eq!(recipe.image.compression, Compression::Zstd);
        assert!(recipe.image.base.as_deref().is_some_and(|b| b.ends_with("base-image") && b.is_absolute()));

        let cases = [
            ("env = [\"ROS_DOMAIN_ID\"]", "image.env[0]"),
            ("user = \"0:0\"", "image.user"),
            ("compression = \"xz\"", "image.compression"),
            ("workdir = \"opt/ecar\"", "image.workdir"),
            ("labels = { \"org.opencontainers.image.version\" = \"9\" }", "image.labels.org.opencontainers.image.version"),
            ("entrypoint = [\"\"]", "image.entrypoint"),
        ];
        for (line, field) in cases {
            let err = load(&format!("{VALID}\n[image]\n{line}\n")).expect_err(line);
            assert!(err.to_string().contains(field), "{line}: {err}");
        }
    }

    #[test]
    fn pre_switch_image_is_an_entry_path() {
        assert_eq!(load(VALID).expect("valid").pre_switch.image, None);
        let text = VALID.replace("self_test_timeout = \"30s\"", "self_test_timeout = \"30s\"\nimage = \"rootfs.img\"");
        assert_eq!(load(&text).expect("valid").pre_switch.image.as_deref(), Some("rootfs.img"));
        let text = VALID.replace("self_test_timeout = \"30s\"", "self_test_timeout = \"30s\"\nimage = \"/rootfs.img\"");
        let err = load(&text).expect_err("absolute");
        assert!(err.to_string().contains("pre_switch.image"), "{err}");
    }

    #[test]
    fn rollout_percentage_above_100_is_rejected() {
        let text = format!("{VALID}\n[rollout]\nwaves = [{{ after = \"1h\", percent = 150 }}]\n");
        let err = load(&text).expect_err("percentage");
        assert!(err.to_string().contains("rollout.waves[0].percent"), "{err}");
    }
}
