//! The robot's configuration file, `/etc/tender/updater.toml` by default.
//!
//! Every absolute path in it is taken below the `--root` prefix, so the whole
//! robot can live in a temporary directory in tests. Commands are run as
//! written.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Default location of the configuration file.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/tender/updater.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration {}: {source}; pass --config FILE", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("configuration {} is invalid: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
}

/// The configuration file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    compatible: String,
    #[serde(default = "default_architecture")]
    architecture: String,
    trust: TrustFile,
    #[serde(default)]
    slots: SlotsFile,
    #[serde(default)]
    state: StateFile,
    #[serde(default)]
    services: ServicesFile,
    #[serde(default)]
    backup: BackupFile,
    #[serde(default)]
    download: DownloadFile,
    #[serde(default)]
    daemon: DaemonFile,
    #[serde(default)]
    registry: RegistryFile,
    #[serde(default)]
    boot: Option<crate::boot::BootFile>,
    #[serde(default)]
    health: crate::health::HealthFile,
    #[serde(default)]
    control: crate::control::ControlFile,
    #[serde(default)]
    metrics: crate::metrics::MetricsFile,
    #[serde(default)]
    usb: crate::usb::UsbFile,
}

/// `[registry]`: credentials for an `oci://` source. Without any field the
/// robot pulls anonymously.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RegistryFile {
    username: Option<String>,
    /// File with the password, for Basic authentication or the token flow.
    password_file: Option<PathBuf>,
    /// File with a bearer token sent as it is.
    token_file: Option<PathBuf>,
    /// Allow plain HTTP to a registry that is not on this machine.
    insecure: bool,
}

/// Settings of the `oci://` source, with paths below the root prefix.
#[derive(Debug, Clone, Default)]
pub struct RegistryConfig {
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    pub token_file: Option<PathBuf>,
    /// Whether plain HTTP is allowed to a registry that is not on this machine.
    pub insecure: bool,
}

impl RegistryConfig {
    /// Reads the password or token files.
    pub fn credentials(&self) -> Result<crate::registry::Credentials, crate::registry::auth::CredentialsError> {
        crate::registry::Credentials::load(self.username.as_deref(), self.password_file.as_deref(), self.token_file.as_deref())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct DaemonFile {
    source: Option<String>,
    #[serde(with = "humantime_serde_compat")]
    poll_interval: Duration,
    #[serde(with = "humantime_serde_compat")]
    poll_jitter: Duration,
    switch: SwitchPolicy,
    maintenance_window: Option<String>,
    metered_command: Vec<String>,
    download_on_metered: bool,
    robot_id: Option<String>,
    robot_id_file: PathBuf,
    channel: String,
    boot_id_file: PathBuf,
}

impl Default for DaemonFile {
    fn default() -> Self {
        Self {
            source: None,
            poll_interval: Duration::from_secs(3600),
            poll_jitter: Duration::from_secs(600),
            switch: SwitchPolicy::Immediately,
            maintenance_window: None,
            metered_command: Vec::new(),
            download_on_metered: false,
            robot_id: None,
            robot_id_file: PathBuf::from("/etc/machine-id"),
            channel: "stable".to_owned(),
            boot_id_file: PathBuf::from("/proc/sys/kernel/random/boot_id"),
        }
    }
}

/// When `tenderd run` switches to a staged release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SwitchPolicy {
    /// As soon as it is staged, inside the maintenance window if one is set.
    Immediately,
    /// At the first cycle after the robot rebooted.
    NextBoot,
    /// Only on `tenderd apply`.
    Manual,
}

/// Settings of `tenderd run`.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// Repository URL or directory to poll.
    pub source: Option<String>,
    pub poll_interval: Duration,
    /// Largest random delay added to each poll interval.
    pub poll_jitter: Duration,
    pub switch: SwitchPolicy,
    /// UTC window as seconds after midnight, `[start, end)`.
    pub maintenance_window: Option<(u32, u32)>,
    /// Command that exits 0 when the link is metered; empty for never.
    pub metered_command: Vec<String>,
    pub download_on_metered: bool,
    pub robot_id: Option<String>,
    pub robot_id_file: PathBuf,
    pub channel: String,
}

/// Parses `HH:MM-HH:MM` into seconds after midnight.
fn parse_window(text: &str) -> Option<(u32, u32)> {
    let (start, end) = text.split_once('-')?;
    let clock = |t: &str| -> Option<u32> {
        let (h, m) = t.trim().split_once(':')?;
        let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
        (h < 24 && m < 60).then_some(h * 3600 + m * 60)
    };
    Some((clock(start)?, clock(end)?))
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct DownloadFile {
    #[serde(with = "humantime_serde_compat")]
    connect_timeout: Duration,
    #[serde(with = "humantime_serde_compat")]
    read_timeout: Duration,
    max_attempts: u32,
    /// Bytes per second; 0 for no cap.
    bandwidth_limit: u64,
    /// Use a repository's delta packs when they cost fewer bytes.
    delta_packs: bool,
}

impl Default for DownloadFile {
    fn default() -> Self {
        let policy = crate::source::DownloadPolicy::default();
        Self {
            connect_timeout: policy.connect_timeout,
            read_timeout: policy.read_timeout,
            max_attempts: policy.max_attempts,
            bandwidth_limit: 0,
            delta_packs: true,
        }
    }
}

fn default_architecture() -> String {
    std::env::consts::ARCH.to_owned()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct TrustFile {
    root: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct SlotsFile {
    base: PathBuf,
    /// `directory` (slot-a, slot-b and a symlink below `base`) or `partition`.
    kind: String,
    /// Partition slots: the two devices, and the release file written to them.
    a: Option<PathBuf>,
    b: Option<PathBuf>,
    image: String,
    /// Partition slots: the commands that mount a staged slot read-only for
    /// the pre-switch checks and unmount it.
    mount_command: Vec<String>,
    unmount_command: Vec<String>,
}

impl Default for SlotsFile {
    fn default() -> Self {
        let mount = crate::slot::MountCommands::default();
        Self {
            base: PathBuf::from("/opt/ecar"),
            kind: "directory".to_owned(),
            a: None,
            b: None,
            image: "rootfs.img".to_owned(),
            mount_command: mount.mount,
            unmount_command: mount.unmount,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    dir: PathBuf,
}

impl Default for StateFile {
    fn default() -> Self {
        Self { dir: PathBuf::from("/var/lib/tender") }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ServicesFile {
    restart: Vec<String>,
    is_active: Vec<String>,
    #[serde(with = "humantime_serde_compat")]
    active_timeout: Duration,
}

impl Default for ServicesFile {
    fn default() -> Self {
        Self {
            restart: ["systemctl", "restart", "{unit}"].map(String::from).to_vec(),
            is_active: ["systemctl", "is-active", "--quiet", "{unit}"].map(String::from).to_vec(),
            active_timeout: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct BackupFile {
    source: PathBuf,
    dir: Option<PathBuf>,
    keep: usize,
    #[serde(with = "humantime_serde_compat")]
    max_age: Duration,
}

impl Default for BackupFile {
    fn default() -> Self {
        Self { source: PathBuf::from("/opt/ecar/config"), dir: None, keep: 5, max_age: Duration::from_secs(30 * 86_400) }
    }
}

/// Parses durations such as `"30s"` or `"2h"` with humantime.
mod humantime_serde_compat {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_duration(&text)
            .map_err(|e| serde::de::Error::custom(format!("invalid duration {text:?} ({e}); write it like \"30s\" or \"5m\"")))
    }
}

/// Parses optional durations such as `"30s"` with humantime; a missing
/// field is `None`.
pub(crate) mod duration_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_duration(&text)
            .map(Some)
            .map_err(|e| serde::de::Error::custom(format!("invalid duration {text:?} ({e}); write it like \"30s\" or \"5m\"")))
    }
}

/// The configuration with every path resolved below the root prefix.
#[derive(Debug, Clone)]
pub struct Config {
    pub compatible: String,
    pub architecture: String,
    pub trusted_root: PathBuf,
    /// Directory that contains `slot-a`, `slot-b` and the `current` link.
    pub slots_base: PathBuf,
    /// `slots.base` as written: the path on the robot, without the prefix.
    pub slots_base_on_robot: PathBuf,
    pub state_dir: PathBuf,
    pub restart_command: Vec<String>,
    pub is_active_command: Vec<String>,
    pub active_timeout: Duration,
    pub backup_source: PathBuf,
    pub backup_dir: PathBuf,
    pub backup_keep: usize,
    pub backup_max_age: Duration,
    pub download: crate::source::DownloadPolicy,
    /// Whether the download planner may choose a delta pack.
    pub delta_packs: bool,
    pub daemon: DaemonConfig,
    /// File with the id of the current boot, below the root prefix.
    pub boot_id_file: PathBuf,
    pub registry: RegistryConfig,
    /// Partition slots and their boot loader; `None` for directory slots.
    pub partition: Option<crate::boot::PartitionSetup>,
    /// Checks of a release on trial, added to the release's own.
    pub health: crate::health::HealthConfig,
    /// The local control socket.
    pub control: crate::control::ControlConfig,
    pub metrics: crate::metrics::MetricsConfig,
    /// Bundles on USB sticks.
    pub usb: crate::usb::UsbConfig,
}

/// Joins an absolute path below `root`; `/opt/ecar` under `/tmp/r` is
/// `/tmp/r/opt/ecar`.
pub fn under_root(root: &Path, path: &Path) -> PathBuf {
    match path.strip_prefix("/") {
        Ok(relative) => root.join(relative),
        Err(_) => root.join(path),
    }
}

impl Config {
    /// Loads the configuration file at `path` (below `root` when it is
    /// absolute and no file exists at it as given).
    pub fn load(path: &Path, root: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        Self::parse(&text, path, root)
    }

    pub fn parse(text: &str, path: &Path, root: &Path) -> Result<Self, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid { path: path.to_owned(), message };
        let file: ConfigFile = toml::from_str(text).map_err(|e| invalid(e.message().to_owned()))?;
        for (field, value) in [
            ("trust.root", &file.trust.root),
            ("slots.base", &file.slots.base),
            ("state.dir", &file.state.dir),
            ("backup.source", &file.backup.source),
        ] {
            if !value.is_absolute() {
                return Err(invalid(format!("{field} must be an absolute path, got {}", value.display())));
            }
        }
        if file.compatible.trim().is_empty() {
            return Err(invalid("compatible must not be empty".to_owned()));
        }
        if file.services.restart.is_empty() || file.services.is_active.is_empty() {
            return Err(invalid("services.restart and services.is_active must name a command".to_owned()));
        }
        let maintenance_window = match &file.daemon.maintenance_window {
            Some(text) => Some(parse_window(text).ok_or_else(|| {
                invalid(format!("daemon.maintenance_window {text:?} is invalid; write it as \"02:00-05:00\" (UTC)"))
            })?),
            None => None,
        };
        let partition = match file.slots.kind.as_str() {
            "directory" => None,
            "partition" => {
                let devices = crate::boot::SlotDevices { a: file.slots.a.as_deref(), b: file.slots.b.as_deref(), image: &file.slots.image };
                let mount = crate::slot::MountCommands { mount: file.slots.mount_command, unmount: file.slots.unmount_command };
                Some(crate::boot::partition_setup(root, &devices, mount, file.boot.as_ref()).map_err(invalid)?)
            }
            other => return Err(invalid(format!("slots.kind {other:?} is unknown; use \"directory\" or \"partition\""))),
        };
        let health = file.health.resolve(root).map_err(&invalid)?;
        let control = file.control.resolve(root).map_err(&invalid)?;
        let metrics = file.metrics.resolve(root).map_err(&invalid)?;
        let usb = file.usb.resolve(root).map_err(&invalid)?;
        let state_dir = under_root(root, &file.state.dir);
        let backup_dir = match &file.backup.dir {
            Some(dir) => under_root(root, dir),
            None => state_dir.join("backups"),
        };
        Ok(Self {
            compatible: file.compatible,
            architecture: file.architecture,
            trusted_root: under_root(root, &file.trust.root),
            slots_base: under_root(root, &file.slots.base),
            slots_base_on_robot: file.slots.base,
            state_dir,
            restart_command: file.services.restart,
            is_active_command: file.services.is_active,
            active_timeout: file.services.active_timeout,
            backup_source: under_root(root, &file.backup.source),
            backup_dir,
            backup_keep: file.backup.keep,
            backup_max_age: file.backup.max_age,
            download: crate::source::DownloadPolicy {
                connect_timeout: file.download.connect_timeout,
                read_timeout: file.download.read_timeout,
                max_attempts: file.download.max_attempts.max(1),
                bandwidth_limit: (file.download.bandwidth_limit > 0).then_some(file.download.bandwidth_limit),
                ..crate::source::DownloadPolicy::default()
            },
            delta_packs: file.download.delta_packs,
            daemon: DaemonConfig {
                source: file.daemon.source,
                poll_interval: file.daemon.poll_interval,
                poll_jitter: file.daemon.poll_jitter,
                switch: file.daemon.switch,
                maintenance_window,
                metered_command: file.daemon.metered_command,
                download_on_metered: file.daemon.download_on_metered,
                robot_id: file.daemon.robot_id,
                robot_id_file: under_root(root, &file.daemon.robot_id_file),
                channel: file.daemon.channel,
            },
            boot_id_file: under_root(root, &file.daemon.boot_id_file),
            registry: RegistryConfig {
                username: file.registry.username,
                password_file: file.registry.password_file.map(|path| under_root(root, &path)),
                token_file: file.registry.token_file.map(|path| under_root(root, &path)),
                insecure: file.registry.insecure,
            },
            partition,
            health,
            control,
            metrics,
            usb,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_paths_go_below_root() {
        let text = "compatible = \"ecar-4wd4ws\"\n[trust]\nroot = \"/etc/tender/root.json\"\n";
        let config = Config::parse(text, Path::new("updater.toml"), Path::new("/tmp/robot")).expect("valid");
        assert_eq!(config.trusted_root, Path::new("/tmp/robot/etc/tender/root.json"));
        assert_eq!(config.slots_base, Path::new("/tmp/robot/opt/ecar"));
        assert_eq!(config.backup_dir, Path::new("/tmp/robot/var/lib/tender/backups"));
    }

    #[test]
    fn sample_config_parses() {
        let text = include_str!("../../recipes/updater.toml");
        let config = Config::parse(text, Path::new("recipes/updater.toml"), Path::new("/")).expect("valid sample");
        assert_eq!(config.compatible, "ecar-4wd4ws");
        assert_eq!(config.backup_keep, 5);
    }

    #[test]
    fn config_rejects_unknown_keys() {
        let text = "compatible = \"x\"\ncompatibel = \"y\"\n[trust]\nroot = \"/r.json\"\n";
        let err = Config::parse(text, Path::new("u.toml"), Path::new("/")).expect_err("typo");
        assert!(err.to_string().contains("compatibel"), "{err}");
    }

    #[test]
    fn partition_mount_commands_default_and_validate() {
        let text = "compatible = \"x\"\n[trust]\nroot = \"/r.json\"\n\
                    [slots]\nkind = \"partition\"\na = \"/dev/a\"\nb = \"/dev/b\"\nMOUNT\
                    [boot]\nbackend = \"grub\"\ngrub_env = \"/boot/grubenv\"\nreboot_command = [\"true\"]\n";
        let config = Config::parse(&text.replace("MOUNT", ""), Path::new("u.toml"), Path::new("/")).expect("defaults");
        let partition = config.partition.expect("partition slots");
        assert_eq!(partition.mount, crate::slot::MountCommands::default());

        let custom = "mount_command = [\"busybox\", \"mount\", \"-o\", \"{options}\", \"{device}\", \"{mount_point}\"]\n";
        let config = Config::parse(&text.replace("MOUNT", custom), Path::new("u.toml"), Path::new("/")).expect("custom");
        assert_eq!(config.partition.expect("partition slots").mount.mount[0], "busybox");

        let invalid = "unmount_command = [\"umount\"]\n";
        let err = Config::parse(&text.replace("MOUNT", invalid), Path::new("u.toml"), Path::new("/")).expect_err("no mount point");
        assert!(err.to_string().contains("slots.unmount_command"), "{err}");
    }

    #[test]
    fn config_rejects_relative_paths() {
        let text = "compatible = \"x\"\n[trust]\nroot = \"root.json\"\n";
        let err = Config::parse(text, Path::new("u.toml"), Path::new("/")).expect_err("relative");
        assert!(err.to_string().contains("trust.root"), "{err}");
    }
}
