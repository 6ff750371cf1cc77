//! `tender image` checked by real tools. skopeo reads the layout and the
//! archive, and umoci unpacks the image into a tree that matches the
//! release manifest. A local Debian `docker-registry` on 127.0.0.1 stores
//! the image and returns it with the same digest.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::UNIX_EPOCH;
use std::time::{Duration, Instant};

use common::{bin, expect_success, fixture, run, stderr, workspace_root};
use sha2::{Digest, Sha256};

const VERSION: &str = "1.0.1";
const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

fn recipe() -> PathBuf {
    workspace_root().join("recipes/ecar-4wd4ws.toml")
}

/// Runs `tender image` on the fixture's 1.0.1 release plus `extra` arguments.
fn tender_image(out: &Path, extra: &[&str]) -> Output {
    let fixture = fixture();
    run(Command::new(bin("tender"))
        .arg("image")
        .arg("--recipe")
        .arg(recipe())
        .arg("--release")
        .arg(fixture.repo.parent().expect("out dir"))
        .args(["--version", VERSION, "--out"])
        .arg(out)
        .args(extra))
}

/// Returns the digest that `tender image` printed for the tag.
fn printed_digest(stdout: &str) -> String {
    let line = stdout.lines().find(|l| l.trim_start().starts_with("digest")).expect("digest line");
    line.split_whitespace().nth(1).expect("digest value").to_owned()
}

/// Writes a skopeo signature policy that accepts any image, so the tests
/// do not depend on the host's /etc/containers/policy.json.
fn policy(dir: &Path) -> PathBuf {
    let path = dir.join("policy.json");
    fs::write(&path, r#"{"default":[{"type":"insecureAcceptAnything"}]}"#).expect("policy");
    path
}

fn skopeo(dir: &Path, args: &[&str]) -> Output {
    let mut command = Command::new("skopeo");
    command.arg("--policy").arg(policy(dir)).args(args);
    run(&mut command)
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Reads the fixture's 1.0.1 manifest.
fn release_manifest() -> serde_json::Value {
    let path = fixture().repo.join(format!("manifests/ecar-4wd4ws-{VERSION}.manifest.json"));
    json(&fs::read_to_string(path).expect("manifest"))
}

fn sha256_file(path: &Path) -> String {
    let mut hasher = Sha256::new();
    let mut file = fs::File::open(path).expect("open");
    let mut buffer = vec![0; 1 << 16];
    loop {
        let read = file.read(&mut buffer).expect("read");
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    hex::encode(hasher.finalize())
}

#[test]
fn layout_and_archive_pass_skopeo_inspect() {
    let dir = tempfile::tempdir().expect("dir");
    let layout = dir.path().join("image");
    let archive = dir.path().join("image.tar");
    let output = tender_image(&layout, &["--archive", archive.to_str().expect("utf-8")]);
    let printed = expect_success(&output, "tender image");
    let digest = printed_digest(&printed);

    let reference = format!("oci:{}:{VERSION}", layout.display());
    let inspect = json(&expect_success(&skopeo(dir.path(), &["inspect", &reference]), "skopeo inspect"));
    assert_eq!(inspect["Digest"], digest.as_str());
    assert_eq!(inspect["Os"], "linux");
    let labels = &inspect["Labels"];
    assert_eq!(labels["org.opencontainers.image.version"], VERSION);
    let epoch: u64 = fixture().epoch.parse().expect("epoch");
    let created = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(epoch)).to_string();
    assert_eq!(labels["org.opencontainers.image.created"], created.as_str());
    let env: Vec<&str> = inspect["Env"].as_array().expect("Env").iter().filter_map(|v| v.as_str()).collect();
    assert!(env.contains(&"ROS_DOMAIN_ID=42"), "{env:?}");
    assert!(env.contains(&"ECAR_CONFIG_PATH=/opt/ecar/config"), "{env:?}");

    let config = json(&expect_success(&skopeo(dir.path(), &["inspect", "--config", &reference]), "skopeo inspect --config"));
    assert_eq!(config["config"]["User"], "1000:1000");
    assert_eq!(config["config"]["WorkingDir"], "/opt/ecar/current");
    assert_eq!(config["config"]["Entrypoint"][0], "/opt/ecar/current/bin/motor_controller");

    let raw = json(&expect_success(&skopeo(dir.path(), &["inspect", "--raw", &reference]), "skopeo inspect --raw"));
    assert_eq!(raw["mediaType"], MANIFEST_TYPE);
    assert_eq!(raw["layers"][0]["mediaType"], "application/vnd.oci.image.layer.v1.tar+gzip");

    let from_archive = format!("oci-archive:{}:{VERSION}", archive.display());
    let archived = json(&expect_success(&skopeo(dir.path(), &["inspect", &from_archive]), "skopeo inspect oci-archive"));
    assert_eq!(archived["Digest"], digest.as_str());
}

#[test]
fn zstd_layout_passes_skopeo_inspect() {
    let dir = tempfile::tempdir().expect("dir");
    let layout = dir.path().join("image");
    expect_success(&tender_image(&layout, &["--compression", "zstd"]), "tender image --compression zstd");
    let reference = format!("oci:{}:{VERSION}", layout.display());
    let raw = json(&expect_success(&skopeo(dir.path(), &["inspect", "--raw", &reference]), "skopeo inspect --raw"));
    assert_eq!(raw["layers"][0]["mediaType"], "application/vnd.oci.image.layer.v1.tar+zstd");
    let inspect = json(&expect_success(&skopeo(dir.path(), &["inspect", &reference]), "skopeo inspect"));
    assert_eq!(inspect["Layers"][0], raw["layers"][0]["digest"]);

    // umoci 0.4.7 (Debian 12) unpacks only gzip and plain layers, so skopeo
    // decompresses the zstd layer and recompresses it with gzip first.
    let converted = dir.path().join("gzip");
    let target = format!("oci:{}:{VERSION}", converted.display());
    let copy = skopeo(dir.path(), &["copy", "--dest-compress", "--dest-compress-format", "gzip", &reference, &target]);
    expect_success(&copy, "skopeo copy to gzip");
    let bundle = dir.path().join("bundle");
    umoci_unpack(&converted, &bundle);
    assert_tree_matches_manifest(&bundle.join("rootfs/opt/ecar/current"));
}

fn umoci_unpack(layout: &Path, bundle: &Path) {
    let output = run(Command::new("umoci")
        .args(["unpack", "--rootless", "--image"])
        .arg(format!("{}:{VERSION}", layout.display()))
        .arg(bundle));
    expect_success(&output, "umoci unpack");
}

#[test]
fn umoci_unpack_matches_release_manifest() {
    let dir = tempfile::tempdir().expect("dir");
    let layout = dir.path().join("image");
    expect_success(&tender_image(&layout, &[]), "tender image");
    let bundle = dir.path().join("bundle");
    umoci_unpack(&layout, &bundle);
    assert_tree_matches_manifest(&bundle.join("rootfs/opt/ecar/current"));
}

/// Checks every entry of the 1.0.1 manifest against the tree at `root`:
/// type, mode, size and SHA-256 of files, symlink targets, hard links, and
/// that the tree contains nothing else.
fn assert_tree_matches_manifest(root: &Path) {
    let manifest = release_manifest();
    assert_matches_manifest(root, manifest["entries"].as_array().expect("entries"));
}

fn assert_matches_manifest(root: &Path, entries: &[serde_json::Value]) {
    for entry in entries {
        let relative = entry["path"].as_str().expect("path");
        let path = root.join(relative);
        let metadata = fs::symlink_metadata(&path).unwrap_or_else(|e| panic!("{relative} is missing from the unpacked image: {e}"));
        let mode = entry["mode"].as_u64().expect("mode") as u32;
        match entry["type"].as_str().expect("type") {
            "dir" => {
                assert!(metadata.is_dir(), "{relative} is not a directory");
                assert_eq!(metadata.permissions().mode() & 0o7777, mode, "{relative} mode");
            }
            "file" => {
                assert!(metadata.is_file(), "{relative} is not a file");
                assert_eq!(metadata.permissions().mode() & 0o7777, mode, "{relative} mode");
                assert_eq!(metadata.len(), entry["size"].as_u64().expect("size"), "{relative} size");
                assert_eq!(sha256_file(&path), entry["sha256"].as_str().expect("sha256"), "{relative} content");
            }
            "symlink" => {
                assert!(metadata.file_type().is_symlink(), "{relative} is not a symlink");
                let target = fs::read_link(&path).expect("read link");
                assert_eq!(target.to_str(), entry["target"].as_str(), "{relative} target");
            }
            "hardlink" => {
                let target = root.join(entry["target"].as_str().expect("target"));
                let target_metadata = fs::metadata(&target).expect("hardlink target");
                assert_eq!((metadata.dev(), metadata.ino()), (target_metadata.dev(), target_metadata.ino()), "{relative} is not a hard link");
            }
            other => panic!("{relative} has unknown type {other}"),
        }
    }
    let unpacked = walkdir::WalkDir::new(root).min_depth(1).into_iter().count();
    assert_eq!(unpacked, entries.len(), "the unpacked tree has other files than the manifest");
}

#[test]
fn rootfs_base_goes_below_release() {
    let dir = tempfile::tempdir().expect("dir");
    let tarball = dir.path().join("rootfs.tar.gz");
    let gzip = flate2::write::GzEncoder::new(fs::File::create(&tarball).expect("create"), flate2::Compression::default());
    let mut archive = tar::Builder::new(gzip);
    let mut header = tar::Header::new_ustar();
    let text = b"ID=debian\nVERSION_ID=12\n";
    header.set_size(text.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    archive.append_data(&mut header, "etc/os-release", text.as_slice()).expect("append");
    archive.into_inner().expect("tar").finish().expect("gzip");

    let layout = dir.path().join("image");
    let output = tender_image(&layout, &["--base", tarball.to_str().expect("utf-8")]);
    expect_success(&output, "tender image --base rootfs.tar.gz");
    let bundle = dir.path().join("bundle");
    umoci_unpack(&layout, &bundle);
    assert_eq!(fs::read(bundle.join("rootfs/etc/os-release")).expect("base file"), text);
    assert!(bundle.join("rootfs/opt/ecar/current/bin/motor_controller").is_file());
}

#[test]
fn image_build_is_reproducible() {
    let dir = tempfile::tempdir().expect("dir");
    let mut digests = Vec::new();
    let mut archives = Vec::new();
    for name in ["first", "second"] {
        let archive = dir.path().join(format!("{name}.tar"));
        let output = tender_image(&dir.path().join(name), &["--archive", archive.to_str().expect("utf-8")]);
        digests.push(printed_digest(&expect_success(&output, "tender image")));
        archives.push(sha256_file(&archive));
    }
    assert_eq!(digests[0], digests[1], "image digests differ between two builds");
    assert_eq!(archives[0], archives[1], "archives differ between two builds");
}

/// Rewrites the single-platform layout at `layout` so that its first
/// layer declares `media_type`, keeping the digests consistent.
fn redeclare_layer(layout: &Path, media_type: &str) {
    let index_path = layout.join("index.json");
    let mut index = json(&fs::read_to_string(&index_path).expect("index"));
    let old = index["manifests"][0]["digest"].as_str().expect("digest").trim_start_matches("sha256:").to_owned();
    let blobs = layout.join("blobs/sha256");
    let mut manifest = json(&fs::read_to_string(blobs.join(&old)).expect("manifest"));
    manifest["layers"][0]["mediaType"] = serde_json::Value::from(media_type);
    let bytes = serde_json::to_vec(&manifest).expect("encode");
    let new = hex::encode(Sha256::digest(&bytes));
    fs::write(blobs.join(&new), &bytes).expect("write manifest");
    index["manifests"][0]["digest"] = serde_json::Value::from(format!("sha256:{new}"));
    index["manifests"][0]["size"] = serde_json::Value::from(bytes.len());
    fs::write(&index_path, serde_json::to_vec(&index).expect("encode")).expect("write index");
}

#[test]
fn base_with_wrong_compression_is_rejected() {
    let cases = [("gzip", "application/vnd.oci.image.layer.v1.tar+zstd"), ("zstd", "application/vnd.oci.image.layer.v1.tar+gzip")];
    for (actual, declared) in cases {
        let dir = tempfile::tempdir().expect("dir");
        let base = dir.path().join("base");
        expect_success(&tender_image(&base, &["--compression", actual]), "tender image for the base");
        redeclare_layer(&base, declared);

        let layout = dir.path().join("image");
        let output = tender_image(&layout, &["--base", base.to_str().expect("utf-8")]);
        assert_eq!(output.status.code(), Some(1), "a {actual} layer declared {declared} was accepted");
        let message = stderr(&output);
        assert!(message.contains(&format!("is declared {declared} but its bytes are {actual}")), "{message}");
        assert_eq!(message.trim_end().lines().count(), 1, "the error is not one line: {message}");
        assert!(!layout.exists(), "a rejected base left a layout behind");
    }
}

#[test]
fn two_architectures_give_an_image_index() {
    let dir = tempfile::tempdir().expect("dir");
    // A copy of the 1.0.1 manifest that claims aarch64, next to the same chunks.
    let repo = dir.path().join("arm64/repo");
    fs::create_dir_all(repo.join("manifests")).expect("mkdir");
    std::os::unix::fs::symlink(fixture().repo.join("chunks"), repo.join("chunks")).expect("link chunks");
    let mut manifest = release_manifest();
    manifest["architecture"] = serde_json::Value::from("aarch64");
    fs::write(repo.join(format!("manifests/ecar-4wd4ws-{VERSION}.manifest.json")), serde_json::to_vec(&manifest).expect("encode"))
        .expect("write");

    let layout = dir.path().join("image");
    let output = tender_image(&layout, &["--release", repo.to_str().expect("utf-8")]);
    expect_success(&output, "tender image with two releases");
    let reference = format!("oci:{}:{VERSION}", layout.display());
    let raw = json(&expect_success(&skopeo(dir.path(), &["inspect", "--raw", &reference]), "skopeo inspect --raw"));
    assert_eq!(raw["mediaType"], "application/vnd.oci.image.index.v1+json");
    let architectures: Vec<&str> =
        raw["manifests"].as_array().expect("manifests").iter().filter_map(|m| m["platform"]["architecture"].as_str()).collect();
    assert_eq!(architectures.len(), 2);
    assert!(architectures.contains(&"arm64"), "{architectures:?}");
    let arm = skopeo(dir.path(), &["--override-arch", "arm64", "inspect", &reference]);
    assert_eq!(json(&expect_success(&arm, "skopeo inspect arm64"))["Architecture"], "arm64");
}

/// Debian's distribution registry, serving on 127.0.0.1 from a temporary
/// directory; killed when dropped.
struct Registry {
    child: Child,
    port: u16,
}

impl Registry {
    fn start(dir: &Path) -> Registry {
        // Reserve a free port, then hand it to the registry.
        let port = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("address").port();
        let storage = dir.join("registry-storage");
        fs::create_dir_all(&storage).expect("storage");
        let config = dir.join("registry.yml");
        let text = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            storage.display()
        );
        fs::write(&config, text).expect("config");
        let log = fs::File::create(dir.join("registry.log")).expect("log");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start docker-registry");
        let registry = Registry { child, port };
        registry.wait_ready(dir);
        registry
    }

    /// Polls `GET /v2/` for up to 10 seconds.
    fn wait_ready(&self, dir: &Path) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                let request = format!("GET /v2/ HTTP/1.0\r\nHost: 127.0.0.1:{}\r\n\r\n", self.port);
                let mut response = String::new();
                let answered = stream.write_all(request.as_bytes()).is_ok() && stream.read_to_string(&mut response).is_ok();
                if answered && (response.starts_with("HTTP/1.0 200") || response.starts_with("HTTP/1.1 200")) {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let log = fs::read_to_string(dir.join("registry.log")).unwrap_or_default();
        panic!("docker-registry did not answer on 127.0.0.1:{} within 10 s; its log:\n{log}", self.port);
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn registry_round_trip_keeps_digest() {
    let dir = tempfile::tempdir().expect("dir");
    let layout = dir.path().join("image");
    let digest = printed_digest(&expect_success(&tender_image(&layout, &[]), "tender image"));
    let registry = Registry::start(dir.path());

    let source = format!("oci:{}:{VERSION}", layout.display());
    let remote = format!("docker://127.0.0.1:{}/ecar:{VERSION}", registry.port);
    let push = skopeo(dir.path(), &["copy", "--preserve-digests", "--dest-tls-verify=false", &source, &remote]);
    expect_success(&push, "skopeo copy to the registry");

    let remote_digest = skopeo(dir.path(), &["inspect", "--tls-verify=false", "--format", "{{.Digest}}", &remote]);
    assert_eq!(expect_success(&remote_digest, "skopeo inspect docker://").trim(), digest);

    let back = dir.path().join("pulled");
    let target = format!("oci:{}:{VERSION}", back.display());
    let pull = skopeo(dir.path(), &["copy", "--preserve-digests", "--src-tls-verify=false", &remote, &target]);
    expect_success(&pull, "skopeo copy from the registry");
    let pulled = skopeo(dir.path(), &["inspect", "--format", "{{.Digest}}", &target]);
    assert_eq!(expect_success(&pulled, "skopeo inspect of the pulled image").trim(), digest);

    let original_raw = expect_success(&skopeo(dir.path(), &["inspect", "--raw", &source]), "raw original");
    let pulled_raw = expect_success(&skopeo(dir.path(), &["inspect", "--raw", &target]), "raw pulled");
    assert_eq!(original_raw, pulled_raw, "the manifest changed on the way through the registry");
    drop(registry);
}

const TREE_RECIPE: &str = r#"
name = "ecar-4wd4ws"
compatible = "ecar-4wd4ws"
prefix = "/opt/ecar"
runtime_path = "/opt/ecar/current"

[colcon]
workspace = "ws"

[health]
command = ["true"]
timeout = "30s"
interval = "2s"
"#;

/// Releases a prebuilt tree with a symlink, a hard link, setuid and setgid
/// modes, a path longer than the ustar name field and a user xattr, then
/// checks that umoci unpacks the image into exactly that tree.
#[test]
fn tree_with_links_and_modes_unpacks_exactly() {
    let dir = tempfile::tempdir().expect("dir");
    let tree = dir.path().join("install");
    let deep = format!("share/{}/{}", "motor_controller_calibration".repeat(3), "wheel_torque_table_front_left".repeat(4));
    let files: [(&str, &[u8], u32); 3] = [
        ("bin/motor_controller", b"#!/bin/sh\necho motor\n", 0o4755),
        ("config/default.yaml", b"max_torque_nm: 40.0\n", 0o644),
        (deep.as_str(), b"0.0 1.5 3.0\n", 0o640),
    ];
    for (path, bytes, mode) in files {
        let path = tree.join(path);
        fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        fs::write(&path, bytes).expect("write");
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod");
    }
    fs::set_permissions(tree.join("config"), fs::Permissions::from_mode(0o2775)).expect("chmod");
    std::os::unix::fs::symlink("motor_controller", tree.join("bin/mc")).expect("symlink");
    fs::hard_link(tree.join("bin/motor_controller"), tree.join("bin/motor_controller.hard")).expect("hard link");
    let with_xattr = xattr::set(tree.join("config/default.yaml"), "user.ecar.origin", b"factory").is_ok();

    let recipe = dir.path().join("recipe.toml");
    fs::write(&recipe, TREE_RECIPE).expect("recipe");
    let keys = dir.path().join("keys");
    expect_success(&run(Command::new(bin("tender")).args(["keys", "generate", "--out"]).arg(&keys)), "keys generate");
    let out = dir.path().join("out");
    let release = run(Command::new(bin("tender"))
        .arg("release")
        .arg("--recipe")
        .arg(&recipe)
        .args(["--version", VERSION, "--source-date-epoch", "1700000000", "--out"])
        .arg(&out)
        .arg("--keys")
        .arg(&keys)
        .arg("--tree")
        .arg(&tree));
    expect_success(&release, "tender release --tree");

    let layout = dir.path().join("image");
    let image = run(Command::new(bin("tender"))
        .arg("image")
        .arg("--recipe")
        .arg(&recipe)
        .arg("--release")
        .arg(&out)
        .args(["--version", VERSION, "--out"])
        .arg(&layout));
    expect_success(&image, "tender image");
    let bundle = dir.path().join("bundle");
    umoci_unpack(&layout, &bundle);
    let root = bundle.join("rootfs/opt/ecar/current");

    let manifest = json(&fs::read_to_string(out.join(format!("repo/manifests/ecar-4wd4ws-{VERSION}.manifest.json"))).expect("manifest"));
    let entries = manifest["entries"].as_array().expect("entries");
    let kinds: Vec<&str> = entries.iter().filter_map(|e| e["type"].as_str()).collect();
    assert!(kinds.contains(&"symlink"), "{kinds:?}");
    assert!(kinds.contains(&"hardlink"), "{kinds:?}");
    assert_matches_manifest(&root, entries);
    assert_eq!(fs::read(root.join(&deep)).expect("long path"), b"0.0 1.5 3.0\n");
    assert_eq!(fs::metadata(root.join("bin/motor_controller")).expect("binary").permissions().mode() & 0o7777, 0o4755);
    assert_eq!(fs::metadata(root.join("config")).expect("config").permissions().mode() & 0o7777, 0o2775);
    if with_xattr {
        let value = xattr::get(root.join("config/default.yaml"), "user.ecar.origin").expect("read xattr");
        assert_eq!(value.as_deref(), Some(b"factory".as_slice()), "umoci did not restore the user xattr");
    } else {
        eprintln!("the temporary directory has no user xattrs, so the xattr check was skipped");
    }
}
