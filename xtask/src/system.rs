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
    // Cross builds for arm64 robots, and running their programs in tests.
    Requirement { check: &["aarch64-linux-gnu-g++", "--version"], package: "crossbuild-essential-arm64" },
    Requirement { check: &["qemu-aarch64", "--version"], package: "qemu-user" },
    // The OCI image tests check `tender image` output with real tools and a
    // real registry on 127.0.0.1.
    Requirement { check: &["skopeo", "--version"], package: "skopeo" },
    Requirement { check: &["umoci", "--version"], package: "umoci" },
    Requirement { check: &["docker-registry", "--version"], package: "docker-registry" },
    // Boot environments checked with the boot loaders' own tools, and the
    // fsync discipline traced with strace.
    Requirement { check: &["fw_printenv", "-V"], package: "libubootenv-tool" },
    Requirement { check: &["grub-editenv", "--version"], package: "grub-common" },
    Requirement { check: &["strace", "-V"], package: "strace" },
    // Filesystem images for partition slots, and the tools that read them back.
    Requirement { check: &["mke2fs", "-V"], package: "e2fsprogs" },
    Requirement { check: &["mkfs.erofs", "--help"], package: "erofs-utils" },
    Requirement { check: &["mksquashfs", "-version"], package: "squashfs-tools" },
    // Pre-switch checks mount images read-only, and the full-disk tests
    // mount small tmpfs filesystems.
    Requirement { check: &["mount", "--version"], package: "mount" },
    // The publishing tests serve repositories with these, on 127.0.0.1.
    Requirement { check: &["nginx", "-v"], package: "nginx" },
    Requirement { check: &["sh", "-c", "command -v htpasswd"], package: "apache2-utils" },
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
