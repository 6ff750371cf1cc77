//! Filesystem images of a release for partition slots: `tender fs-image`
//! writes ext4, erofs and squashfs images that are byte-identical from one
//! run to the next, whose files the file systems' own Debian tools read back
//! equal to the release manifest, and that `tender release --tree` chunks.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::{bin, expect_success, fixture, run, workspace_root};
use sha2::{Digest, Sha256};

fn fs_image(kind: &str, out: &Path) -> String {
    let fixture = fixture();
    let output = run(Command::new(bin("tender"))
        .arg("fs-image")
        .arg("--recipe")
        .arg(workspace_root().join("recipes/ecar-4wd4ws.toml"))
        .arg("--release")
        .arg(fixture.repo.parent().expect("out dir"))
        .args(["--version", "1.0.1", "--type", kind, "--size", "16MiB", "--out"])
        .arg(out));
    expect_success(&output, &format!("tender fs-image --type {kind}"))
}

/// Extracts the image into `dir` with the file system's own tool.
fn extract(kind: &str, image: &Path, dir: &Path) {
    let output = match kind {
        "ext4" => run(Command::new("debugfs").arg("-R").arg(format!("rdump / {}", dir.display())).arg(image)),
        "erofs" => run(Command::new("fsck.erofs").arg(format!("--extract={}", dir.display())).arg(image)),
        _ => run(Command::new("unsquashfs").arg("-no-xattrs").arg("-d").arg(dir).arg(image)),
    };
    expect_success(&output, &format!("extract the {kind} image"));
}

#[test]
fn images_are_reproducible_and_match_the_manifest() {
    let fixture = fixture();
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(fixture.repo.join("manifests/ecar-4wd4ws-1.0.1.manifest.json")).expect("manifest")).expect("JSON");
    for kind in ["ext4", "erofs", "squashfs"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = dir.path().join("first.img");
        let second = dir.path().join("second.img");
        fs_image(kind, &first);
        std::thread::sleep(std::time::Duration::from_millis(1100));
        fs_image(kind, &second);
        assert!(fs::read(&first).expect("first") == fs::read(&second).expect("second"), "{kind} images of one release differ");

        let tree = dir.path().join("tree");
        fs::create_dir(&tree).expect("tree dir");
        extract(kind, &first, &tree);
        let current = tree.join("opt/ecar/current");
        let mut files = 0;
        for entry in manifest["entries"].as_array().expect("entries") {
            let path = current.join(entry["path"].as_str().unwrap_or_default());
            if entry["type"] == "file" {
                let digest = hex::encode(Sha256::digest(fs::read(&path).unwrap_or_else(|e| panic!("{kind}: {}: {e}", path.display()))));
                assert_eq!(entry["sha256"].as_str(), Some(digest.as_str()), "{kind}: {}", path.display());
                files += 1;
            } else if entry["type"] == "symlink" {
                assert_eq!(fs::read_link(&path).expect("link").to_string_lossy(), entry["target"].as_str().unwrap_or_default());
            }
        }
        assert!(files > 10, "{kind}: only {files} files checked");
    }
}

const IMAGE_RECIPE: &str = r#"name = "ecar-4wd4ws"
compatible = "ecar-4wd4ws"
prefix = "/opt/ecar"
runtime_path = "/opt/ecar/current"

[colcon]
workspace = "unused"

[health]
command = ["true"]
timeout = "10s"
interval = "1s"
failures_to_revert = 1
"#;

#[test]
fn image_release_is_chunked_and_signed() {
    let fixture = fixture();
    let dir = tempfile::tempdir().expect("tempdir");
    let tree = dir.path().join("tree");
    fs::create_dir(&tree).expect("tree");
    let summary = fs_image("erofs", &tree.join("rootfs.img"));
    // An image release has the image as its only file, so its recipe has
    // no pre-switch checks on workspace files.
    let recipe = dir.path().join("image.toml");
    fs::write(&recipe, IMAGE_RECIPE).expect("image recipe");
    fs::create_dir(dir.path().join("unused")).expect("workspace dir");
    let out = dir.path().join("out");
    let output = run(Command::new(bin("tender"))
        .arg("release")
        .arg("--recipe")
        .arg(&recipe)
        .args(["--version", "1.0.1", "--out"])
        .arg(&out)
        .arg("--keys")
        .arg(&fixture.keys)
        .arg("--tree")
        .arg(&tree)
        .env("SOURCE_DATE_EPOCH", &fixture.epoch));
    expect_success(&output, "release of the image tree");
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(out.join("repo/manifests/ecar-4wd4ws-1.0.1.manifest.json")).expect("manifest")).expect("JSON");
    let image = manifest["entries"].as_array().expect("entries").iter().find(|e| e["path"] == "rootfs.img").expect("rootfs.img entry");
    let digest = summary.split("sha256 ").nth(1).expect("digest printed").trim().trim_end_matches(')');
    assert_eq!(image["sha256"].as_str(), Some(digest));
    assert!(!image["chunks"].as_array().expect("chunks").is_empty());
}

/// Releases the image tree at `tree` with `recipe` into `out`.
fn release_image(recipe: &Path, tree: &Path, out: &Path) -> std::process::Output {
    let fixture = fixture();
    run(Command::new(bin("tender"))
        .arg("release")
        .arg("--recipe")
        .arg(recipe)
        .args(["--version", "1.0.1", "--out"])
        .arg(out)
        .arg("--keys")
        .arg(&fixture.keys)
        .arg("--tree")
        .arg(tree)
        .env("SOURCE_DATE_EPOCH", &fixture.epoch))
}

#[test]
fn sample_image_recipe_checks_paths_inside_the_image() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tree = dir.path().join("tree");
    fs::create_dir(&tree).expect("tree");
    fs_image("erofs", &tree.join("rootfs.img"));
    let sample = workspace_root().join("recipes/ecar-image.toml");
    let output = release_image(&sample, &tree, &dir.path().join("out"));
    expect_success(&output, "release with the sample image recipe");
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.path().join("out/repo/manifests/ecar-4wd4ws-1.0.1.manifest.json")).expect("manifest"))
            .expect("JSON");
    assert_eq!(manifest["pre_switch"]["self_test"][0], "{slot}/opt/ecar/current/bin/motor_controller");

    // A typo in a path inside the image fails the release.
    let text = fs::read_to_string(&sample).expect("sample recipe");
    let typo = dir.path().join("typo.toml");
    fs::write(&typo, text.replace("\"opt/ecar/current/setup.bash\"", "\"opt/ecar/current/setup.bsh\"")).expect("recipe");
    fs::create_dir(dir.path().join("ecar-ws")).expect("workspace dir");
    let output = release_image(&typo, &tree, &dir.path().join("out-typo"));
    assert!(!output.status.success(), "the release with a typo succeeded");
    let message = common::stderr(&output);
    assert!(message.contains("\"opt/ecar/current/setup.bsh\", which is not in the erofs image rootfs.img"), "{message}");
    assert!(!dir.path().join("out-typo/repo/manifests").exists(), "the release with a typo wrote a manifest");
}
