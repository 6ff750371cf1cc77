//! Debian packages the build and the tests need, installed with `apt-get`
//! when they are missing and this runs as root.

use std::process::Command;

use anyhow::{bail, Context};

use crate::workspace::run_checked;

/// A command the tasks run, and the Debian package that provides it.
struct Requirement {
    check: &'static [&'static str],
    package: &'static str,
}

const REQUIREMENTS: &[Requirement] = &[
    Requirement { check: &["g++", "--version"], package: "g++" },
    Requirement { check: &["make", "--version"], package: "make" },
    Requirement { check: &["python3", "-c", "import ensurepip, venv"], package: "python3-venv" },
    Requirement { check: &["zstd", "--version"], package: "zstd" },
    Requirement { check: &["tar", "--version"], package: "tar" },
    Requirement { check: &["bash", "--version"], package: "bash" },
];

/// Tools of `cargo xtask bench` only: the Debian corpus and the tools
/// Tender is compared with.
const BENCH_REQUIREMENTS: &[Requirement] = &[
    Requirement { check: &["debootstrap", "--version"], package: "debootstrap" },
    Requirement { check: &["xdelta3", "-V"], package: "xdelta3" },
    Requirement { check: &["casync", "--version"], package: "casync" },
    Requirement { check: &["/usr/bin/time", "--version"], package: "time" },
    Requirement { check: &["zstd", "--version"], package: "zstd" },
];

fn is_present(check: &[&str]) -> bool {
    Command::new(check[0])
        .args(&check[1..])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Installs the missing Debian packages, or fails naming them when this
/// cannot run `apt-get`.
pub fn ensure_packages() -> anyhow::Result<()> {
    install_missing(REQUIREMENTS)
}

/// Installs the missing packages of `cargo xtask bench`, like
/// [`ensure_packages`].
pub fn ensure_bench_packages() -> anyhow::Result<()> {
    install_missing(BENCH_REQUIREMENTS)
}

fn install_missing(requirements: &[Requirement]) -> anyhow::Result<()> {
    let missing: Vec<&str> = requirements.iter().filter(|r| !is_present(r.check)).map(|r| r.package).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let is_root = Command::new("id").arg("-u").output().is_ok_and(|out| out.stdout.starts_with(b"0\n"));
    if !is_root || !is_present(&["apt-get", "--version"]) {
        bail!("missing packages: {}; install them (for example `sudo apt-get install {}`) and run again", missing.join(", "), missing.join(" "));
    }
    eprintln!("installing missing Debian packages: {}", missing.join(" "));
    run_checked(Command::new("apt-get").arg("update")).context("apt-get update failed")?;
    run_checked(
        Command::new("apt-get")
            .args(["install", "--yes", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
    .context("apt-get install failed")?;
    Ok(())
}
