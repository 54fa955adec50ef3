//! Helpers for the lifecycle tests.

use std::path::Path;
use std::process::Command;

use super::common::{hoist, Env};

/// The store's size as `du` measures it (allocated bytes, each inode once).
pub fn du_bytes(root: &Path) -> u64 {
    let out = Command::new("du")
        .args(["-s", "-B1", "-x"])
        .arg(root)
        .output()
        .expect("run du");
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// Asserts that `image` is complete: `hoist save` reads every blob it
/// needs, and skopeo reads the archive's manifest and config.
pub fn assert_complete(env: &Env, image: &str) {
    let tar = env
        .scratch
        .path()
        .join(format!("{}.tar", image.replace([':', '/'], "-")));
    let run = hoist(
        env.root.path(),
        &["save", "-o", tar.to_str().unwrap(), image],
        None,
    );
    run.assert_ok();
    if Command::new("skopeo").arg("--version").output().is_ok() {
        let out = Command::new("skopeo")
            .args(["inspect", "--raw"])
            .arg(format!("docker-archive:{}", tar.display()))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "skopeo cannot read {image}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Every layer the config lists is in the archive: untar and count.
    let list = Command::new("tar").arg("-tf").arg(&tar).output().unwrap();
    let names = String::from_utf8_lossy(&list.stdout).into_owned();
    let config = env.inspect(image);
    let layers = config["Layers"]
        .as_array()
        .map(|a| a.len())
        .unwrap_or_else(|| panic!("no Layers in {config}"));
    let blobs = names.lines().filter(|l| l.ends_with("layer.tar")).count();
    assert_eq!(
        blobs, layers,
        "{image}: archive has {blobs} layers, the image {layers}:\n{names}"
    );
    std::fs::remove_file(tar).unwrap();
}
