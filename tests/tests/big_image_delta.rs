//! Delta packs for filesystem images larger than one 32 MiB delta group:
//! two erofs image releases of about 41 MiB, whose base trees differ by a
//! few bytes in each of 160 files, are served over HTTP on 127.0.0.1. A
//! partition robot running the first upgrades with the pack's windows,
//! whose references it reads from its active device, and falls back to
//! chunks when the pack is damaged or the active image changed.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::partition::{image_recipe, partition_robot, release_tree, write_erofs_image, Loader};
use common::robot::Robot;
use common::{bin, expect_success, run};
use tender_e2e::fault_server::{Fault, FaultServer, RequestLog};

const FILES: usize = 160;
const FILE_BYTES: usize = 256 * 1024;
const DEVICE_BYTES: u64 = 64 << 20;
const PACK_NAME: &str = "ecar-4wd4ws-1.0.1.from-1.0.0.delta";

/// The two image releases in one repository, and the trees they came from.
struct BigImages {
    dir: tempfile::TempDir,
}

impl BigImages {
    fn out(&self) -> PathBuf {
        self.dir.path().join("out")
    }

    fn image(&self, version: &str) -> PathBuf {
        self.dir.path().join(format!("tree-{version}/rootfs.img"))
    }
}

/// Deterministic bytes that do not compress, from a SplitMix64 stream.
fn noise(seed: u64, length: usize) -> Vec<u8> {
    let mut state = seed;
    let mut bytes = Vec::with_capacity(length + 8);
    while bytes.len() < length {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        bytes.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    bytes.truncate(length);
    bytes
}

/// Writes a root filesystem tarball of `FILES` random files; in 1.0.1 each
/// file has 16 bytes changed at a position of its own.
fn write_base(path: &Path, version: &str) {
    let mut builder = tar::Builder::new(fs::File::create(path).expect("base tarball"));
    for index in 0..FILES {
        let mut content = noise(index as u64 + 1, FILE_BYTES);
        if version != "1.0.0" {
            let at = (index * 7919) % (FILE_BYTES - 16);
            content[at..at + 16].copy_from_slice(b"changed in 1.0.1");
        }
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(1_700_000_000);
        header.set_cksum();
        builder
            .append_data(&mut header, format!("data/blob-{index:03}.bin"), content.as_slice())
            .expect("append to base tarball");
    }
    builder.into_inner().expect("finish base tarball");
}

/// Builds the releases once per test binary.
fn big_images() -> &'static BigImages {
    static IMAGES: OnceLock<BigImages> = OnceLock::new();
    IMAGES.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::create_dir(dir.path().join("unused")).expect("workspace");
        let images = BigImages { dir };
        for version in ["1.0.0", "1.0.1"] {
            let base = images.dir.path().join(format!("base-{version}.tar"));
            write_base(&base, version);
            let tree = images.dir.path().join(format!("tree-{version}"));
            fs::create_dir(&tree).expect("tree");
            write_erofs_image("1.0.0", Some(&base), &tree.join("rootfs.img"));
            let recipe = images.dir.path().join(format!("image-{version}.toml"));
            // A low level keeps the test fast; the default is 19.
            fs::write(&recipe, image_recipe("true", "") + "[delta]\nzstd_level = 3\n").expect("recipe");
            release_tree(&recipe, version, &tree, &images.out());
        }
        let size = fs::metadata(images.image("1.0.1")).expect("image").len();
        assert!(size > 32 << 20, "the image must be larger than one delta group, it is {size} bytes");
        images
    })
}

/// Returns a robot with 64 MiB slot devices that committed 1.0.0 from its bundle.
fn robot_on_100(loader: &Loader) -> Robot {
    let images = big_images();
    let robot = partition_robot(loader);
    for slot in ["a", "b"] {
        let device = fs::OpenOptions::new().write(true).open(robot.path(&format!("dev/slot-{slot}.img"))).expect("device");
        device.set_len(DEVICE_BYTES).expect("grow device");
    }
    let bundle = images.out().join("ecar-4wd4ws-1.0.0.tender");
    expect_success(&robot.tenderd(&["install", &bundle.display().to_string()]), "install 1.0.0");
    assert_eq!(loader.boot(&robot), "b");
    expect_success(&robot.tenderd(&["recover"]), "tenderd recover at boot");
    assert_eq!(robot.status()["state"], "committed");
    robot
}

/// Installs the newest release from `server`, with the planner's choice logged.
fn install(robot: &Robot, server: &FaultServer) -> (serde_json::Value, String) {
    let output = run(Command::new(bin("tenderd"))
        .arg("--root")
        .arg(robot.root.path())
        .args(["install", "--json", &format!("{}/", server.url())])
        .env("RUST_LOG", "info"));
    let report = serde_json::from_str(&expect_success(&output, "install 1.0.1")).expect("JSON report");
    (report, common::stderr(&output))
}

/// Boots the trial slot, commits it, and checks that it contains the 1.0.1 image.
fn commit_101(robot: &Robot, loader: &Loader) {
    assert_eq!(loader.boot(robot), "a");
    expect_success(&robot.tenderd(&["recover"]), "tenderd recover at boot");
    let status = robot.status();
    assert_eq!((status["state"].as_str(), status["version"].as_str()), (Some("committed"), Some("1.0.1")), "{status}");
    let written = fs::read(robot.path("dev/slot-a.img")).expect("device");
    let expected = fs::read(big_images().image("1.0.1")).expect("image");
    assert!(written[..expected.len()] == expected[..], "slot a does not contain the 1.0.1 image");
}

fn requests_to(server: &FaultServer, prefix: &str) -> Vec<RequestLog> {
    server.requests().into_iter().filter(|r| r.path.starts_with(prefix)).collect()
}

/// Returns the URL path of the pack, and the chunk bytes that its target lists as replaced.
fn pack_target() -> (String, u64) {
    let targets = big_images().out().join("repo/metadata/targets.json");
    let targets: serde_json::Value = serde_json::from_slice(&fs::read(targets).expect("targets.json")).expect("targets JSON");
    let target = &targets["signed"]["targets"][PACK_NAME];
    let sha256 = target["hashes"]["sha256"].as_str().expect("pack digest");
    let chunk_bytes = target["custom"]["delta"]["chunk_bytes"].as_u64().expect("chunk_bytes");
    assert_eq!(target["custom"]["delta"]["format"], 2, "{target}");
    (format!("/targets/{sha256}.{PACK_NAME}"), chunk_bytes)
}

#[test]
fn image_upgrade_downloads_only_the_pack() {
    let loader = Loader::Uboot;
    let robot = robot_on_100(&loader);
    let server = FaultServer::start(&big_images().out().join("repo")).expect("server");
    let (report, stderr) = install(&robot, &server);
    assert_eq!(report["phase"], "trial", "{report}");
    assert!(stderr.contains("download plan: delta pack"), "{stderr}");
    assert!(stderr.contains("image rebuilt from the delta pack"), "{stderr}");

    let stats = &report["stats"];
    assert_eq!(stats["files_from_delta"], 1, "{stats}");
    assert_eq!(stats["chunks_fetched"], 0, "{stats}");
    assert!(requests_to(&server, "/chunks/").is_empty(), "chunks crossed the wire: {:?}", server.requests());
    let (pack_path, chunk_bytes) = pack_target();
    let pack: u64 = requests_to(&server, &pack_path).iter().map(|r| r.body_bytes).sum();
    eprintln!("1.0.0 -> 1.0.1 image: {pack} bytes of delta pack, {chunk_bytes} bytes of chunks without it");
    assert_eq!(Some(pack), stats["delta_bytes"].as_u64(), "{stats}");
    assert!(pack * 20 < chunk_bytes, "the pack ({pack} bytes) is not far below the chunks ({chunk_bytes} bytes)");
    commit_101(&robot, &loader);
}

#[test]
fn damaged_image_pack_falls_back_to_chunks() {
    let loader = Loader::Grub;
    let robot = robot_on_100(&loader);
    let server = FaultServer::start(&big_images().out().join("repo")).expect("server");
    let (pack_path, _) = pack_target();
    server.add_fault(&pack_path, Fault::Corrupt(2000), None);
    let (report, stderr) = install(&robot, &server);
    assert_eq!(report["phase"], "trial", "{report}");
    assert!(stderr.contains("delta pack unusable"), "{stderr}");
    assert_eq!(report["stats"]["files_from_delta"], 0, "{report}");
    assert!(!requests_to(&server, "/chunks/").is_empty(), "no chunk was fetched instead");
    commit_101(&robot, &loader);
}

#[test]
fn changed_active_image_falls_back_to_chunks() {
    let loader = Loader::Uboot;
    let robot = robot_on_100(&loader);
    // Change bytes of the active image (slot b) inside the first window:
    // the window's reference no longer matches, so the rebuilt image fails
    // its digest check and staging writes the image from chunks.
    let active = robot.path("dev/slot-b.img");
    let mut bytes = fs::read(&active).expect("active device");
    for byte in &mut bytes[(1 << 20)..(1 << 20) + 4096] {
        *byte ^= 0x5a;
    }
    fs::write(&active, &bytes).expect("change active device");
    let server = FaultServer::start(&big_images().out().join("repo")).expect("server");
    let (report, stderr) = install(&robot, &server);
    assert_eq!(report["phase"], "trial", "{report}");
    assert!(stderr.contains("delta pack unusable for the image"), "{stderr}");
    assert_eq!(report["stats"]["files_from_delta"], 0, "{report}");
    assert!(!requests_to(&server, "/chunks/").is_empty(), "no chunk was fetched for the changed image");
    assert_eq!(fs::read(&active).expect("active device"), bytes, "the active device was written");
    commit_101(&robot, &loader);
}
