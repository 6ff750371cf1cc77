//! Tests of the whole image pipeline on small releases written here: a
//! chunk store and a manifest as `tender release` lays them out.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::json;
use tender_updater::format::manifest::FORMAT_VERSION;
use tender_updater::format::{Entry, EntryKind, HealthCheck, Manifest, PreSwitch, Provenance, Sha256Digest};

use super::*;
use crate::oci::compress::{decoder, Encoder};
use crate::recipe::ChunkingSettings;
use crate::store::ChunkStore;

const EPOCH: u64 = 1_700_000_000;

const RECIPE: &str = r#"
name = "ecar-4wd4ws"
compatible = "ecar-4wd4ws"
prefix = "/opt/ecar"
runtime_path = "/opt/ecar/current"

[colcon]
workspace = "ecar-ws"

[health]
command = ["true"]
timeout = "30s"
interval = "2s"

[image]
env = ["ROS_DOMAIN_ID=42", "ECAR_CONFIG_PATH=/opt/ecar/config"]
entrypoint = ["/opt/ecar/current/bin/motor_controller"]
labels = { "org.opencontainers.image.vendor" = "eCar" }
"#;

fn entry(path: &str, kind: EntryKind, mode: u32) -> Entry {
    Entry { path: path.to_owned(), kind, mode, uid: 0, gid: 0, mtime: EPOCH, xattrs: BTreeMap::new() }
}

/// Writes release 1.0.0 for `architecture` into `out/repo` and returns `out`.
fn write_release(out: &Path, architecture: &str) -> PathBuf {
    let repo = out.join("repo");
    let mut store = ChunkStore::new(&repo, ChunkingSettings::default());
    let mut file = |name: &str, bytes: &[u8]| {
        let (size, sha256, chunks) = store.add(bytes, name).expect("store");
        EntryKind::File { size, sha256, chunks }
    };
    let binary: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 253) as u8).collect();
    let mut capable = entry("bin/motor_controller", file("bin/motor_controller", &binary), 0o755);
    capable.xattrs.insert("user.ecar".to_owned(), hex::encode(b"drive"));
    let entries = vec![
        entry("bin", EntryKind::Dir, 0o755),
        capable,
        entry("bin/motor_controller_link", EntryKind::Hardlink { target: "bin/motor_controller".to_owned() }, 0o755),
        entry("bin/mc", EntryKind::Symlink { target: "motor_controller".to_owned() }, 0o777),
        entry("config", EntryKind::Dir, 0o755),
        entry("config/default.yaml", file("config/default.yaml", b"max_torque_nm: 40.0\n"), 0o644),
        entry("setup.bash", file("setup.bash", b"export ECAR=1\n"), 0o644),
    ];
    let mut entries = entries;
    entries.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
    let manifest = Manifest {
        format: FORMAT_VERSION,
        name: "ecar-4wd4ws".to_owned(),
        version: semver::Version::new(1, 0, 0),
        compatible: "ecar-4wd4ws".to_owned(),
        architecture: architecture.to_owned(),
        prefix: "/opt/ecar".to_owned(),
        provenance: Provenance {
            source_commit: Some("0123456789abcdef0123456789abcdef01234567".to_owned()),
            recipe_sha256: Sha256Digest::of(b"recipe"),
            builder: "tender test".to_owned(),
            source_date_epoch: EPOCH,
        },
        services: Vec::new(),
        pre_switch: PreSwitch::default(),
        health: HealthCheck { command: vec!["true".to_owned()], timeout_ms: 1000, interval_ms: 1000, failures_to_revert: 1 },
        entries,
    };
    manifest.validate().expect("valid manifest");
    let bytes = serde_json::to_vec(&manifest).expect("encode");
    let targets = repo.join("targets");
    std::fs::create_dir_all(&targets).expect("mkdir");
    std::fs::write(targets.join(format!("{}.ecar-4wd4ws-1.0.0.manifest.json", Sha256Digest::of(&bytes))), bytes).expect("write");
    out.to_owned()
}

fn recipe(dir: &Path) -> Recipe {
    let path = dir.join("recipe.toml");
    std::fs::write(&path, RECIPE).expect("write recipe");
    Recipe::load(&path).expect("recipe")
}

fn request(dir: &Path, releases: &[PathBuf], out: &str) -> ImageRequest {
    ImageRequest {
        recipe: recipe(dir),
        version: semver::Version::new(1, 0, 0),
        releases: releases.iter().map(|path| ReleaseInput { path: path.clone(), platform: None }).collect(),
        out: dir.join(out),
        archive: None,
        tag: None,
        compression: None,
        base: None,
    }
}

fn read_json(layout: &Path, digest: &str) -> serde_json::Value {
    let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
    serde_json::from_slice(&std::fs::read(layout.join("blobs/sha256").join(hex)).expect("blob")).expect("json")
}

/// Members of a layer: path, entry type, mode, uid, link name, xattrs, data.
type Member = (String, u8, u32, u64, Option<String>, Vec<(String, Vec<u8>)>, Vec<u8>);

fn layer_members(blob: &Path, compression: Compression) -> Vec<Member> {
    let reader = decoder(compression, std::fs::File::open(blob).expect("layer")).expect("decoder");
    let mut archive = tar::Archive::new(reader);
    let mut members = Vec::new();
    for member in archive.entries().expect("entries") {
        let mut member = member.expect("member");
        let header = member.header().clone();
        let path = member.path().expect("path").to_string_lossy().into_owned();
        let link = member.link_name().expect("link").map(|l| l.to_string_lossy().into_owned());
        let xattrs = member
            .pax_extensions()
            .expect("pax")
            .into_iter()
            .flatten()
            .map(|e| e.expect("record"))
            .filter_map(|e| Some((e.key().ok()?.strip_prefix("SCHILY.xattr.")?.to_owned(), e.value_bytes().to_vec())))
            .collect();
        let mut data = Vec::new();
        member.read_to_end(&mut data).expect("data");
        members.push((path, header.entry_type().as_byte(), header.mode().expect("mode"), header.uid().expect("uid"), link, xattrs, data));
    }
    members
}

#[test]
fn image_digest_is_reproducible() {
    let dir = tempfile::tempdir().expect("tempdir");
    let release = write_release(&dir.path().join("out"), "x86_64");
    let mut first = request(dir.path(), std::slice::from_ref(&release), "image-a");
    first.archive = Some(dir.path().join("a.tar"));
    let mut second = request(dir.path(), &[release], "image-b");
    second.archive = Some(dir.path().join("b.tar"));
    let a = build_image(&first).expect("first image");
    let b = build_image(&second).expect("second image");
    assert_eq!(a.digest, b.digest);
    assert_eq!(
        std::fs::read(dir.path().join("image-a/index.json")).expect("index a"),
        std::fs::read(dir.path().join("image-b/index.json")).expect("index b")
    );
    assert_eq!(std::fs::read(dir.path().join("a.tar")).expect("a"), std::fs::read(dir.path().join("b.tar")).expect("b"));

    // Building again into the same directory replaces the layout.
    let again = build_image(&first).expect("rebuild");
    assert_eq!(again.digest, a.digest);
}

#[test]
fn config_carries_recipe_and_labels() {
    let dir = tempfile::tempdir().expect("tempdir");
    let release = write_release(&dir.path().join("out"), "x86_64");
    let summary = build_image(&request(dir.path(), &[release], "image")).expect("image");
    let layout = &summary.layout;
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).expect("index")).expect("json");
    assert_eq!(index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"], "1.0.0");
    assert_eq!(index["manifests"][0]["platform"], json!({"architecture": "amd64", "os": "linux"}));
    assert_eq!(summary.media_type, "application/vnd.oci.image.manifest.v1+json");

    let manifest = read_json(layout, &summary.digest);
    assert_eq!(manifest["layers"][0]["mediaType"], "application/vnd.oci.image.layer.v1.tar+gzip");
    let config = read_json(layout, manifest["config"]["digest"].as_str().expect("config digest"));
    assert_eq!(config["created"], "2023-11-14T22:13:20Z");
    assert_eq!(config["config"]["Env"], json!(["ROS_DOMAIN_ID=42", "ECAR_CONFIG_PATH=/opt/ecar/config"]));
    assert_eq!(config["config"]["Entrypoint"], json!(["/opt/ecar/current/bin/motor_controller"]));
    assert_eq!(config["config"]["WorkingDir"], "/opt/ecar/current");
    assert_eq!(config["config"]["User"], "1000:1000");
    let labels = &config["config"]["Labels"];
    assert_eq!(labels["org.opencontainers.image.version"], "1.0.0");
    assert_eq!(labels["org.opencontainers.image.revision"], "0123456789abcdef0123456789abcdef01234567");
    assert_eq!(labels["org.opencontainers.image.created"], "2023-11-14T22:13:20Z");
    assert_eq!(labels["org.opencontainers.image.vendor"], "eCar");
    assert_eq!(config["rootfs"]["diff_ids"].as_array().map(Vec::len), Some(1));
}

#[test]
fn layer_holds_release_below_runtime_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let release = write_release(&dir.path().join("out"), "x86_64");
    let summary = build_image(&request(dir.path(), &[release], "image")).expect("image");
    let hex = summary.images[0].layer_digest.trim_start_matches("sha256:");
    let members = layer_members(&summary.layout.join("blobs/sha256").join(hex), Compression::Gzip);
    let paths: Vec<&str> = members.iter().map(|m| m.0.as_str()).collect();
    assert_eq!(
        paths,
        [
            "opt/",
            "opt/ecar/",
            "opt/ecar/current/",
            "opt/ecar/current/bin/",
            "opt/ecar/current/bin/mc",
            "opt/ecar/current/bin/motor_controller",
            "opt/ecar/current/bin/motor_controller_link",
            "opt/ecar/current/config/",
            "opt/ecar/current/config/default.yaml",
            "opt/ecar/current/setup.bash",
        ]
    );
    let by_path: BTreeMap<&str, &Member> = members.iter().map(|m| (m.0.as_str(), m)).collect();
    let binary = by_path["opt/ecar/current/bin/motor_controller"];
    assert_eq!(binary.2, 0o755);
    assert_eq!(binary.5, vec![("user.ecar".to_owned(), b"drive".to_vec())]);
    assert_eq!(binary.6.len(), 300_000);
    let link = by_path["opt/ecar/current/bin/mc"];
    assert_eq!((link.1, link.4.as_deref()), (b'2', Some("motor_controller")));
    let hard = by_path["opt/ecar/current/bin/motor_controller_link"];
    assert_eq!((hard.1, hard.4.as_deref()), (b'1', Some("opt/ecar/current/bin/motor_controller")));
    assert_eq!(by_path["opt/ecar/current/config/default.yaml"].6, b"max_torque_nm: 40.0\n");
}

#[test]
fn zstd_layer_has_oci_zstd_media_type() {
    let dir = tempfile::tempdir().expect("tempdir");
    let release = write_release(&dir.path().join("out"), "x86_64");
    let mut zstd = request(dir.path(), &[release], "image");
    zstd.compression = Some(Compression::Zstd);
    let summary = build_image(&zstd).expect("image");
    let manifest = read_json(&summary.layout, &summary.digest);
    assert_eq!(manifest["layers"][0]["mediaType"], "application/vnd.oci.image.layer.v1.tar+zstd");
    let hex = summary.images[0].layer_digest.trim_start_matches("sha256:");
    let blob = std::fs::read(summary.layout.join("blobs/sha256").join(hex)).expect("layer");
    assert_eq!(Compression::detect(&blob), Compression::Zstd);
}

#[test]
fn two_architectures_give_an_index() {
    let dir = tempfile::tempdir().expect("tempdir");
    let amd64 = write_release(&dir.path().join("amd64"), "x86_64");
    let arm64 = write_release(&dir.path().join("arm64"), "aarch64");
    let summary = build_image(&request(dir.path(), &[amd64.clone(), arm64], "image")).expect("image");
    assert_eq!(summary.media_type, "application/vnd.oci.image.index.v1+json");
    let index = read_json(&summary.layout, &summary.digest);
    let platforms: Vec<&str> =
        index["manifests"].as_array().expect("manifests").iter().filter_map(|m| m["platform"]["architecture"].as_str()).collect();
    assert_eq!(platforms, ["amd64", "arm64"]);

    let error = build_image(&request(dir.path(), &[amd64.clone(), amd64], "dup")).expect_err("duplicate platform");
    assert!(error.to_string().contains("two releases are for linux/amd64"), "{error}");
}

#[test]
fn platform_must_match_manifest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let release = write_release(&dir.path().join("out"), "x86_64");
    let mut wrong = request(dir.path(), &[release], "image");
    wrong.releases[0].platform = Some("linux/arm64".parse().expect("platform"));
    let error = build_image(&wrong).expect_err("mismatch");
    assert!(error.to_string().contains("--platform linux/arm64 does not match"), "{error}");
}

#[test]
fn missing_version_names_both_paths() {
    let dir = tempfile::tempdir().expect("tempdir");
    let release = write_release(&dir.path().join("out"), "x86_64");
    let mut other = request(dir.path(), &[release], "image");
    other.version = semver::Version::new(2, 0, 0);
    let error = build_image(&other).expect_err("no such release");
    let message = error.to_string();
    assert!(message.contains("ecar-4wd4ws-2.0.0.manifest.json"), "{message}");
    assert!(message.contains("manifests/"), "{message}");
}

/// Returns a base layer, a tar with `etc/os-release` compressed with
/// `codec`, and its `diff_id`.
fn base_layer(codec: Compression) -> (Vec<u8>, Sha256Digest) {
    let mut archive = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_ustar();
    header.set_size(11);
    header.set_mode(0o644);
    header.set_cksum();
    archive.append_data(&mut header, "etc/os-release", b"ID=debian\n\n".as_slice()).expect("append");
    let plain = archive.into_inner().expect("tar");
    let mut encoder = Encoder::new(codec, Vec::new()).expect("encoder");
    std::io::Write::write_all(&mut encoder, &plain).expect("compress");
    (encoder.finish().expect("finish"), Sha256Digest::of(&plain))
}

/// Writes a one-layer base layout with `layer` declared as `layer_type`
/// inside a manifest of `manifest_type`.
fn write_base_layout(dir: &Path, layer: &[u8], diff_id: &Sha256Digest, layer_type: &str, manifest_type: &str) {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).expect("mkdir");
    let put = |bytes: &[u8]| {
        let digest = Sha256Digest::of(bytes);
        std::fs::write(blobs.join(digest.to_hex()), bytes).expect("blob");
        json!({"digest": format!("sha256:{digest}"), "size": bytes.len()})
    };
    let config = json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/usr/bin:/bin", "ROS_DOMAIN_ID=0"], "Cmd": ["bash"]},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{diff_id}")]},
    });
    let mut config_descriptor = put(&serde_json::to_vec(&config).expect("config"));
    config_descriptor["mediaType"] = json!("application/vnd.oci.image.config.v1+json");
    let mut layer_descriptor = put(layer);
    layer_descriptor["mediaType"] = json!(layer_type);
    let manifest = json!({"schemaVersion": 2, "mediaType": manifest_type, "config": config_descriptor, "layers": [layer_descriptor]});
    let mut manifest_descriptor = put(&serde_json::to_vec(&manifest).expect("manifest"));
    manifest_descriptor["mediaType"] = json!(manifest_type);
    let index = json!({"schemaVersion": 2, "manifests": [manifest_descriptor]});
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).expect("index")).expect("write");
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).expect("write");
}

const OCI_MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

fn build_on_base(dir: &Path, base: PathBuf) -> Result<ImageSummary, ImageError> {
    let release = write_release(&dir.join("out"), "x86_64");
    let mut on_base = request(dir, &[release], "image");
    on_base.base = Some(base);
    build_image(&on_base)
}

#[test]
fn base_layout_goes_below_workspace_layer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (layer, diff_id) = base_layer(Compression::Zstd);
    let base = dir.path().join("base");
    write_base_layout(&base, &layer, &diff_id, "application/vnd.oci.image.layer.v1.tar+zstd", OCI_MANIFEST_TYPE);
    let summary = build_on_base(dir.path(), base).expect("image on base");
    assert_eq!(summary.images[0].base_layers, 1);
    let manifest = read_json(&summary.layout, &summary.digest);
    assert_eq!(manifest["layers"][0]["digest"], format!("sha256:{}", Sha256Digest::of(&layer)));
    let config = read_json(&summary.layout, manifest["config"]["digest"].as_str().expect("digest"));
    assert_eq!(config["config"]["Env"], json!(["PATH=/usr/bin:/bin", "ROS_DOMAIN_ID=42", "ECAR_CONFIG_PATH=/opt/ecar/config"]));
    // The recipe's entrypoint drops the base's command.
    assert_eq!(config["config"]["Cmd"], serde_json::Value::Null);
    assert_eq!(config["rootfs"]["diff_ids"][0], format!("sha256:{diff_id}"));
}

#[test]
fn gzip_bytes_declared_zstd_are_rejected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (layer, diff_id) = base_layer(Compression::Gzip);
    let base = dir.path().join("base");
    write_base_layout(&base, &layer, &diff_id, "application/vnd.oci.image.layer.v1.tar+zstd", OCI_MANIFEST_TYPE);
    let message = build_on_base(dir.path(), base).expect_err("mismatch").to_string();
    assert!(message.contains("declared application/vnd.oci.image.layer.v1.tar+zstd but its bytes are gzip"), "{message}");
    assert!(message.contains(&Sha256Digest::of(&layer).to_hex()), "{message}");
    assert!(!dir.path().join("image").exists(), "a rejected base must leave no layout");
}

#[test]
fn zstd_bytes_declared_gzip_are_rejected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (layer, diff_id) = base_layer(Compression::Zstd);
    let base = dir.path().join("base");
    write_base_layout(&base, &layer, &diff_id, "application/vnd.oci.image.layer.v1.tar+gzip", OCI_MANIFEST_TYPE);
    let message = build_on_base(dir.path(), base).expect_err("mismatch").to_string();
    assert!(message.contains("declared application/vnd.oci.image.layer.v1.tar+gzip but its bytes are zstd"), "{message}");
}

#[test]
fn zstd_layer_in_docker_manifest_is_rejected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (layer, diff_id) = base_layer(Compression::Zstd);
    let base = dir.path().join("base");
    let docker = "application/vnd.docker.distribution.manifest.v2+json";
    write_base_layout(&base, &layer, &diff_id, "application/vnd.oci.image.layer.v1.tar+zstd", docker);
    let message = build_on_base(dir.path(), base).expect_err("zstd in docker").to_string();
    assert!(message.contains("inside a Docker schema 2 manifest"), "{message}");
    assert!(message.contains("application/vnd.oci.image.layer.v1.tar+zstd"), "{message}");
}

#[test]
fn docker_gzip_layer_becomes_oci_gzip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (layer, diff_id) = base_layer(Compression::Gzip);
    let base = dir.path().join("base");
    let docker = "application/vnd.docker.distribution.manifest.v2+json";
    write_base_layout(&base, &layer, &diff_id, "application/vnd.docker.image.rootfs.diff.tar.gzip", docker);
    let summary = build_on_base(dir.path(), base).expect("docker base");
    let manifest = read_json(&summary.layout, &summary.digest);
    assert_eq!(manifest["layers"][0]["mediaType"], "application/vnd.oci.image.layer.v1.tar+gzip");
}

#[test]
fn damaged_base_blob_is_rejected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (layer, diff_id) = base_layer(Compression::Gzip);
    let base = dir.path().join("base");
    write_base_layout(&base, &layer, &diff_id, "application/vnd.oci.image.layer.v1.tar+gzip", OCI_MANIFEST_TYPE);
    let blob = base.join("blobs/sha256").join(Sha256Digest::of(&layer).to_hex());
    let mut damaged = layer.clone();
    let last = damaged.len() - 1;
    damaged[last] ^= 0xff;
    std::fs::write(&blob, damaged).expect("damage");
    let message = build_on_base(dir.path(), base).expect_err("damaged").to_string();
    assert!(message.contains("does not match its descriptor"), "{message}");
}

#[test]
fn wrong_diff_id_is_rejected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (layer, _) = base_layer(Compression::Gzip);
    let base = dir.path().join("base");
    write_base_layout(&base, &layer, &Sha256Digest::of(b"other"), "application/vnd.oci.image.layer.v1.tar+gzip", OCI_MANIFEST_TYPE);
    let message = build_on_base(dir.path(), base).expect_err("diff_id").to_string();
    assert!(message.contains("but the configuration lists diff_id"), "{message}");
}

#[test]
fn rootfs_tarball_becomes_base_layer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (layer, diff_id) = base_layer(Compression::Gzip);
    let tarball = dir.path().join("rootfs.tar.gz");
    std::fs::write(&tarball, &layer).expect("write");
    let summary = build_on_base(dir.path(), tarball).expect("tarball base");
    let manifest = read_json(&summary.layout, &summary.digest);
    let config = read_json(&summary.layout, manifest["config"]["digest"].as_str().expect("digest"));
    assert_eq!(config["rootfs"]["diff_ids"][0], format!("sha256:{diff_id}"));
    assert_eq!(config["history"].as_array().map(Vec::len), Some(2));
}

#[test]
fn tarball_base_for_two_platforms_is_rejected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (layer, _) = base_layer(Compression::Gzip);
    let tarball = dir.path().join("rootfs.tar.gz");
    std::fs::write(&tarball, &layer).expect("write");
    let amd64 = write_release(&dir.path().join("amd64"), "x86_64");
    let arm64 = write_release(&dir.path().join("arm64"), "aarch64");
    let mut both = request(dir.path(), &[amd64, arm64], "image");
    both.base = Some(tarball);
    let message = build_image(&both).expect_err("one tarball for two platforms").to_string();
    assert!(message.contains("but the image has 2 platforms"), "{message}");
}

#[test]
fn tarball_named_for_other_compression_is_rejected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (layer, _) = base_layer(Compression::Gzip);
    let tarball = dir.path().join("rootfs.tar.zst");
    std::fs::write(&tarball, &layer).expect("write");
    let message = build_on_base(dir.path(), tarball).expect_err("mismatch").to_string();
    assert!(message.contains("named as zstd (application/vnd.oci.image.layer.v1.tar+zstd) but its bytes are gzip"), "{message}");
}
