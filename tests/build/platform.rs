//! Builds for a platform other than the host's: a real amd64+arm64 busybox
//! index in the registry (arm64 from Debian's `busybox-static:arm64`),
//! `FROM --platform`, `--platform`, emulation through binfmt_misc and
//! qemu-user-static, and the message when no emulator is registered.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use hoist_testutil::{require_program, require_root, Registry};
use sha2::{Digest, Sha256};

use super::common::{cached_steps, hoist, Env};

/// Where scripts/test.sh caches `apt-get download busybox-static:arm64`.
pub(super) const DEB_CACHE: &str = "/var/cache/hoist-test";

pub(super) fn arm64_deb() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("HOIST_BUSYBOX_ARM64_DEB") {
        return Some(PathBuf::from(p));
    }
    fs::read_dir(DEB_CACHE)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            name.starts_with("busybox-static_") && name.ends_with("_arm64.deb")
        })
}

/// Skips (fails under HOIST_REQUIRE_ROOT_TESTS) without the arm64 package.
macro_rules! require_arm64_busybox {
    () => {
        match arm64_deb() {
            Some(p) => p,
            None => {
                hoist_testutil::cannot_run(&format!(
                    "this test needs busybox-static:arm64 in {DEB_CACHE} (scripts/test.sh downloads it)"
                ));
                return;
            }
        }
    };
}

fn sha256(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// A blob in an OCI layout; its descriptor.
fn put(layout: &Path, media_type: &str, bytes: &[u8]) -> serde_json::Value {
    let digest = sha256(bytes);
    fs::write(layout.join("blobs/sha256").join(&digest), bytes).unwrap();
    serde_json::json!({"mediaType": media_type, "digest": format!("sha256:{digest}"), "size": bytes.len()})
}

/// One busybox image (rootfs `dir`, architecture `arch`) into `layout`.
fn image(layout: &Path, dir: &Path, arch: &str) -> serde_json::Value {
    let tar = dir.with_extension("tar");
    hoist_testutil::tar_dir(dir, &tar);
    let plain = fs::read(&tar).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&plain).unwrap();
    let gz = gz.finish().unwrap();
    let layer = put(layout, "application/vnd.oci.image.layer.v1.tar+gzip", &gz);
    let config = serde_json::json!({
        "architecture": arch, "os": "linux",
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{}", sha256(&plain))]},
        "history": [{"created_by": format!("busybox for {arch}")}],
    });
    let config = put(
        layout,
        "application/vnd.oci.image.config.v1+json",
        &serde_json::to_vec(&config).unwrap(),
    );
    let manifest = serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config, "layers": [layer],
    });
    let mut d = put(
        layout,
        "application/vnd.oci.image.manifest.v1+json",
        &serde_json::to_vec(&manifest).unwrap(),
    );
    d["platform"] = serde_json::json!({"architecture": arch, "os": "linux"});
    d
}

/// Pushes `REG/busybox:latest`, an index of the host's busybox and Debian's
/// arm64 one, with skopeo; returns the name.
fn push_busybox_index(registry: &Registry, deb: &Path) -> String {
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();

    let host = work.path().join("host");
    hoist_testutil::busybox_rootfs(&host);
    // Debian's arm64 busybox is the same version: the host's applet links fit.
    let arm = work.path().join("arm64");
    hoist_testutil::busybox_rootfs(&arm);
    let unpacked = work.path().join("deb");
    let status = Command::new("dpkg-deb")
        .arg("-x")
        .arg(deb)
        .arg(&unpacked)
        .status()
        .unwrap();
    assert!(status.success(), "dpkg-deb -x {}", deb.display());
    fs::copy(unpacked.join("bin/busybox"), arm.join("bin/busybox")).unwrap();

    let host_arch = hoist_registry::Platform::host().architecture;
    let manifests = vec![
        image(&layout, &host, &host_arch),
        image(&layout, &arm, "arm64"),
    ];
    let index = serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests,
    });
    let mut index = put(
        &layout,
        "application/vnd.oci.image.index.v1+json",
        &serde_json::to_vec(&index).unwrap(),
    );
    index["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": "latest"});
    let top = serde_json::json!({"schemaVersion": 2, "manifests": [index]});
    fs::write(layout.join("index.json"), serde_json::to_vec(&top).unwrap()).unwrap();

    let name = format!("{}/busybox:latest", registry.addr);
    let out = Command::new("skopeo")
        .args(["copy", "--all", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:latest", layout.display()))
        .arg(format!("docker://{name}"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo copy: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    name
}

/// Registers qemu-user-static's arm64 handler (with F) when missing.
fn install_arm64_emulator(env: &Env) {
    let run = hoist(
        env.root.path(),
        &["binfmt", "--install", "linux/arm64"],
        None,
    );
    run.assert_ok();
    assert!(
        run.stdout.contains("linux/arm64      emulated"),
        "{}",
        run.stdout
    );
}

pub(super) fn skopeo_inspect(name: &str, raw: bool) -> serde_json::Value {
    let mut command = Command::new("skopeo");
    command.args(["inspect", "--tls-verify=false"]);
    if raw {
        command.arg("--raw");
    }
    let out = command.arg(format!("docker://{name}")).output().unwrap();
    assert!(
        out.status.success(),
        "skopeo inspect {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A registry serving the amd64+arm64 busybox index, its name there, and a
/// store whose RUN steps can run arm64 binaries.
pub(super) fn arm64_setup(deb: &Path) -> (Registry, String, Env) {
    let registry = Registry::start();
    let base = push_busybox_index(&registry, deb);
    let env = Env::new();
    install_arm64_emulator(&env);
    (registry, base, env)
}

fn read(dir: &Path, path: &str) -> String {
    fs::read_to_string(dir.join(path)).unwrap()
}

#[test]
fn from_platform_runs_foreign_steps_and_the_store_keeps_both_platforms() {
    require_root!();
    require_program!("skopeo");
    require_program!("qemu-aarch64-static");
    let deb = require_arm64_busybox!();
    let (registry, base, env) = arm64_setup(&deb);

    env.dockerfile(&format!(
        "FROM --platform=linux/arm64 {base}\nRUN uname -m > /m\n"
    ));
    let (_, fs_arm) = env.build_fs("arm", &[]);
    assert_eq!(read(&fs_arm, "m"), "aarch64\n");
    let arm = env.inspect("arm");
    assert_eq!(arm["Architecture"], "arm64");
    assert_eq!(arm["Os"], "linux");

    // The name shows the platform it holds (the host's is not pulled yet).
    assert_eq!(env.inspect(&base)["Architecture"], "arm64");

    // Only arm64 of the index is here: a push sends that manifest alone.
    let single = format!("{}/single:1", registry.addr);
    hoist(env.root.path(), &["tag", &base, &single], None).assert_ok();
    let run = hoist(env.root.path(), &["push", &single], None);
    run.assert_ok();
    assert!(
        run.stderr.contains("holds only linux/arm64"),
        "{}",
        run.stderr
    );
    let pushed = skopeo_inspect(&single, false);
    assert_eq!(pushed["Architecture"], "arm64");

    // The same name for the host: pulled next to arm64, not over it.
    env.dockerfile(&format!("FROM {base}\nRUN uname -m > /m\n"));
    let (_, fs_host) = env.build_fs("host", &[]);
    assert_eq!(read(&fs_host, "m"), format!("{}\n", std::env::consts::ARCH));
    let host = env.inspect("host");
    assert_eq!(
        host["Architecture"],
        hoist_registry::Platform::host().architecture
    );

    // With both present, the host's is what `inspect` shows.
    assert_eq!(
        env.inspect(&base)["Architecture"],
        hoist_registry::Platform::host().architecture
    );

    // Both platforms present: the whole index is pushed, as pulled.
    let copy = format!("{}/copy:1", registry.addr);
    hoist(env.root.path(), &["tag", &base, &copy], None).assert_ok();
    hoist(env.root.path(), &["push", &copy], None).assert_ok();
    let raw = skopeo_inspect(&copy, true);
    assert_eq!(raw["manifests"].as_array().map(Vec::len), Some(2), "{raw}");
    assert_eq!(raw, skopeo_inspect(&base, true));

    // Without the registry and after a prune, both platforms still build
    // from the store alone: the name holds the index, and each pulled
    // manifest (with its layers) is kept through it.
    drop(registry);
    hoist(env.root.path(), &["prune", "--all", "--force"], None).assert_ok();
    for (platform, machine) in [("linux/arm64", "aarch64"), ("", std::env::consts::ARCH)] {
        let from = if platform.is_empty() {
            format!("FROM {base}")
        } else {
            format!("FROM --platform={platform} {base}")
        };
        env.dockerfile(&format!("{from}\nRUN uname -m > /m\n"));
        let (run, fs) = env.build_fs("again", &["--no-cache"]);
        assert_eq!(read(&fs, "m"), format!("{machine}\n"), "{}", run.stderr);
    }

    // A platform the index lacks: one message naming image and platform.
    env.dockerfile(&format!("FROM --platform=linux/s390x {base}\nRUN true\n"));
    let run = env.build(&[]);
    assert!(!run.status.success());
    assert!(
        run.stderr.contains(&format!(
            "no linux/s390x image of {base} (it holds linux/amd64, linux/arm64)"
        )),
        "{}",
        run.stderr
    );

    // Removing the names removes both platforms' manifests and layers.
    let blob = |d: &str| {
        env.root
            .path()
            .join("content/blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    let top: serde_json::Value =
        serde_json::from_slice(&fs::read(env.root.path().join("content/index.json")).unwrap())
            .unwrap();
    let index_digest = top["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == base.as_str())
        .map(|m| m["digest"].as_str().unwrap().to_string())
        .unwrap();
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(blob(&index_digest)).unwrap()).unwrap();
    let children: Vec<String> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["digest"].as_str().unwrap().to_string())
        .collect();
    assert!(children.iter().all(|d| blob(d).exists()));
    for name in [base.as_str(), &single, &copy, "again", "arm", "host"] {
        hoist(env.root.path(), &["rmi", "--force", name], None).assert_ok();
    }
    assert!(!blob(&index_digest).exists());
    assert!(children.iter().all(|d| !blob(d).exists()), "{children:?}");
}

#[test]
fn platform_flag_sets_target_args_the_config_and_the_cache_key() {
    require_root!();
    require_program!("skopeo");
    require_program!("qemu-aarch64-static");
    let deb = require_arm64_busybox!();
    let (_registry, base, env) = arm64_setup(&deb);

    // `hoist pull` per platform: the second platform is news, not "up to date".
    let pull = |args: &[&str]| {
        let mut all = vec!["pull"];
        all.extend_from_slice(args);
        all.push(&base);
        let run = hoist(env.root.path(), &all, None);
        run.assert_ok();
        run.stdout
    };
    assert!(pull(&["--platform", "linux/arm64"]).contains("Downloaded newer image"));
    assert!(pull(&["--platform", "linux/arm64"]).contains("Image is up to date"));
    assert!(pull(&[]).contains("Downloaded newer image"));
    assert!(pull(&[]).contains("Image is up to date"));

    env.dockerfile(&format!(
        "FROM {base}\nARG TARGETPLATFORM TARGETOS TARGETARCH TARGETVARIANT\n\
         RUN echo \"$TARGETPLATFORM $TARGETOS $TARGETARCH [$TARGETVARIANT]\" > /t && uname -m >> /t\n"
    ));
    let (_, fs_arm) = env.build_fs("arm", &["--platform", "linux/arm64"]);
    assert_eq!(read(&fs_arm, "t"), "linux/arm64 linux arm64 []\naarch64\n");
    assert_eq!(env.inspect("arm")["Architecture"], "arm64");

    // The host build of the same Dockerfile runs its step (an arm64 result
    // is never reused for amd64) and says the host's platform.
    let (run, fs_host) = env.build_fs("host", &[]);
    let host = hoist_registry::Platform::host();
    assert_eq!(
        read(&fs_host, "t"),
        format!(
            "{host} linux {} []\n{}\n",
            host.architecture,
            std::env::consts::ARCH
        )
    );
    assert_eq!(cached_steps(&run.stderr), 0, "{}", run.stderr);
    // Building arm64 again hits the cache.
    let (run, _) = env.build_fs("arm", &["--platform", "linux/arm64"]);
    assert!(cached_steps(&run.stderr) >= 1, "{}", run.stderr);
}

#[test]
fn a_foreign_run_step_without_an_emulator_fails_with_one_clear_message() {
    require_root!();
    // A platform no handler claims (the tests register arm64 only).
    let handlers: Vec<String> = fs::read_dir("/proc/sys/fs/binfmt_misc")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    let Some((platform, qemu)) = [
        ("linux/s390x", "s390x"),
        ("linux/ppc64le", "ppc64le"),
        ("linux/riscv64", "riscv64"),
        ("linux/mips64le", "mips64el"),
    ]
    .into_iter()
    .find(|(_, q)| !handlers.iter().any(|h| h.contains(q))) else {
        panic!("every candidate platform has a binfmt handler here: {handlers:?}");
    };
    let env = Env::new();
    env.dockerfile(&format!(
        "FROM --platform={platform} scratch\nCOPY Dockerfile /\nRUN echo hi\n"
    ));
    let run = env.build(&["-t", "never"]);
    assert!(!run.status.success());
    // The step's error and the build's last line say it; nothing else does.
    let message = run
        .stderr
        .lines()
        .find(|l| l.starts_with("error: failed to solve:"))
        .unwrap_or_else(|| panic!("no final error:\n{}", run.stderr));
    assert!(
        message.contains(&format!(
            "Dockerfile:3: RUN echo hi: cannot run {platform} binaries"
        )),
        "{message}"
    );
    assert!(
        message.contains("apt-get install qemu-user-static"),
        "{message}"
    );
    assert!(
        message.contains(&format!("hoist binfmt --install {platform}")),
        "{message}"
    );
    assert!(
        message.contains(&format!("/usr/lib/binfmt.d/qemu-{qemu}.conf")),
        "{message}"
    );
    assert_eq!(
        run.stderr.matches("cannot run ").count(),
        2,
        "once for the step, once at the end: {}",
        run.stderr
    );
    let images = hoist(env.root.path(), &["images"], None);
    assert!(!images.stdout.contains("never"), "{}", images.stdout);
}
