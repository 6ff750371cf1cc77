//! A simulated robot: a temporary directory that stands for `/`, with a
//! configuration, the fleet's trusted root, and a stand-in for `systemctl`
//! (systemd itself cannot run in the test sandbox).

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sha2::{Digest, Sha256};

use super::{bin, expect_success, run, stdout};

pub struct Robot {
    pub root: tempfile::TempDir,
}

/// Stand-in for `systemctl restart|is-active UNIT` that logs each call. When
/// the file `run/kill-tenderd-on-restart` exists, it removes the file and
/// kills its caller (tenderd) with SIGKILL, to simulate a crash in a trial.
const FAKE_SYSTEMCTL: &str = r#"#!/bin/sh
root="$(dirname "$(dirname "$(dirname "$0")")")"
echo "$1 $2" >> "$root/var/log/fake-systemctl.log"
if [ "$1" = restart ] && [ -e "$root/run/kill-tenderd-on-restart" ]; then
    rm -f "$root/run/kill-tenderd-on-restart"
    kill -9 "$PPID"
fi
exit 0
"#;

impl Robot {
    /// Creates a robot that trusts the root in `keys`.
    pub fn new(keys: &Path) -> Self {
        let root = tempfile::tempdir().expect("robot root");
        let r = root.path();
        for dir in ["etc/tender", "opt/ecar/config", "var/log", "run", "usr/bin"] {
            fs::create_dir_all(r.join(dir)).expect("robot dir");
        }
        fs::copy(keys.join("root.json"), r.join("etc/tender/root.json")).expect("trusted root");
        fs::write(r.join("opt/ecar/config/robot.yaml"), "wheelbase_m: 2.8\nmax_speed_mps: 3.0\n").expect("config");
        let systemctl = r.join("usr/bin/fake-systemctl");
        fs::write(&systemctl, FAKE_SYSTEMCTL).expect("fake systemctl");
        fs::set_permissions(&systemctl, fs::Permissions::from_mode(0o755)).expect("chmod");
        let config = format!(
            r#"compatible = "ecar-4wd4ws"

[trust]
root = "/etc/tender/root.json"

[slots]
base = "/opt/ecar"

[state]
dir = "/var/lib/tender"

[services]
restart = ["{systemctl}", "restart", "{{unit}}"]
is_active = ["{systemctl}", "is-active", "{{unit}}"]
active_timeout = "10s"

[backup]
source = "/opt/ecar/config"
keep = 3
max_age = "30d"
"#,
            systemctl = systemctl.display()
        );
        fs::write(r.join("etc/tender/updater.toml"), config).expect("config");
        Self { root }
    }

    pub fn path(&self, relative: &str) -> PathBuf {
        self.root.path().join(relative)
    }

    /// Runs `tenderd --root ROBOT ARGS…`.
    pub fn tenderd(&self, args: &[&str]) -> Output {
        run(Command::new(bin("tenderd")).arg("--root").arg(self.root.path()).args(args).env("RUST_LOG", "warn"))
    }

    pub fn install(&self, source: &Path) -> Output {
        self.tenderd(&["install", &source.display().to_string()])
    }

    pub fn status(&self) -> serde_json::Value {
        let output = self.tenderd(&["status", "--json"]);
        serde_json::from_str(&expect_success(&output, "tenderd status")).expect("status JSON")
    }

    pub fn history(&self) -> Vec<serde_json::Value> {
        let output = self.tenderd(&["history", "--json"]);
        serde_json::from_str(&expect_success(&output, "tenderd history")).expect("history JSON")
    }

    /// Returns the slot directory that `current` points to.
    pub fn active_slot_dir(&self) -> PathBuf {
        let link = self.path("opt/ecar/current");
        let target = fs::read_link(&link).expect("current link");
        self.path("opt/ecar").join(target)
    }

    pub fn systemctl_log(&self) -> String {
        fs::read_to_string(self.path("var/log/fake-systemctl.log")).unwrap_or_default()
    }

    /// A fingerprint of everything a rejected install must leave alone: the
    /// `current` link, every entry of the active slot (kind, mode, owner,
    /// time, content, attributes) and every state file.
    pub fn snapshot(&self) -> BTreeMap<String, String> {
        let mut snapshot = BTreeMap::new();
        let link = fs::read_link(self.path("opt/ecar/current")).map(|t| t.display().to_string()).unwrap_or_default();
        snapshot.insert("current".to_owned(), link);
        let slot = self.active_slot_dir();
        describe_tree(&slot, "slot", &mut snapshot);
        let state = self.path("var/lib/tender");
        for name in ["state.json", "manifests/slot-a.json", "manifests/slot-b.json"] {
            let bytes = fs::read(state.join(name)).unwrap_or_default();
            snapshot.insert(format!("state/{name}"), hex::encode(Sha256::digest(&bytes)));
        }
        snapshot
    }
}

/// Adds one line per entry below `dir` to `out`.
pub fn describe_tree(dir: &Path, label: &str, out: &mut BTreeMap<String, String>) {
    for item in walkdir::WalkDir::new(dir).sort_by_file_name() {
        let item = item.expect("walk slot");
        let meta = item.path().symlink_metadata().expect("lstat");
        let relative = item.path().strip_prefix(dir).expect("below slot").display().to_string();
        let content = if meta.is_file() {
            hex::encode(Sha256::digest(fs::read(item.path()).expect("read")))
        } else if meta.file_type().is_symlink() {
            fs::read_link(item.path()).expect("readlink").display().to_string()
        } else {
            String::new()
        };
        let mut xattrs: Vec<String> = xattr::list(item.path())
            .map(|names| names.map(|n| n.to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        xattrs.sort();
        let line = format!(
            "mode={:o} uid={} gid={} mtime={} nlink={} content={content} xattrs={xattrs:?}",
            meta.mode(),
            meta.uid(),
            meta.gid(),
            meta.mtime(),
            meta.nlink()
        );
        out.insert(format!("{label}/{relative}"), line);
    }
}

/// Sources the installed workspace in bash and returns the environment.
pub fn sourced_environment(robot: &Robot) -> String {
    let setup = robot.path("opt/ecar/current/setup.bash");
    let output = run(Command::new("bash").arg("-c").arg(format!("source '{}' && env", setup.display())).env_clear().env("PATH", "/usr/bin:/bin"));
    expect_success(&output, "source setup.bash");
    stdout(&output)
}
