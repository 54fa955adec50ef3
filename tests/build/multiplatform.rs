//! `hoist build --platform A,B`: one solve for every platform into one
//! image index, pushed, written as an OCI archive, shown by `images` and
//! `inspect`; a `FROM --platform=$BUILDPLATFORM` stage runs once; buildx's
//! `--annotation` types land where buildx puts them. Against a real
//! registry, with the arm64 busybox of `tests/build/platform.rs` and
//! qemu-user-static.

use std::collections::BTreeSet;
use std::fs;
use std::process::Command;

use hoist_testutil::{require_program, require_root, Registry};

use super::common::{hoist, Env};
use super::platform::{arm64_deb, arm64_setup, skopeo_inspect, DEB_CACHE};

/// The platforms built: the host's and arm64.
fn platforms() -> (String, String) {
    let host = hoist_registry::Platform::host().to_string();
    (host, "linux/arm64".to_owned())
}

/// The step-number headers of plain progress (`#7 [name]`) whose step name
/// contains `text`: one per vertex of the solve that started or was cached.
fn step_numbers(stderr: &str, text: &str) -> BTreeSet<String> {
    stderr
        .lines()
        .filter(|l| l.starts_with('#') && l.contains(text))
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

fn skopeo(args: &[&str]) -> serde_json::Value {
    let out = Command::new("skopeo").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "skopeo {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The index entry of `arch` in `index`.
fn entry<'a>(index: &'a serde_json::Value, arch: &str) -> &'a serde_json::Value {
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["platform"]["architecture"] == arch)
        .unwrap_or_else(|| panic!("no {arch} manifest in {index}"))
}

#[test]
fn two_platforms_push_one_index_and_the_buildplatform_stage_runs_once() {
    require_root!();
    require_program!("skopeo");
    require_program!("qemu-aarch64-static");
    let Some(deb) = arm64_deb() else {
        hoist_testutil::cannot_run(&format!(
            "this test needs busybox-static:arm64 in {DEB_CACHE} (scripts/test.sh downloads it)"
        ));
        return;
    };
    let (registry, base, env) = arm64_setup(&deb);
    let (host, arm) = platforms();
    let host_arch = hoist_registry::Platform::host().architecture;

    // The tools stage runs on the build platform: its RUN writes a value
    // that differs at every run, so equal copies in both images prove one
    // run.
    env.dockerfile(&format!(
        "FROM --platform=$BUILDPLATFORM {base} AS tools\n\
         RUN cat /proc/sys/kernel/random/uuid > /stamp\n\
         FROM {base}\n\
         ARG TARGETARCH\n\
         COPY --from=tools /stamp /stamp\n\
         RUN echo \"$TARGETARCH $(uname -m)\" > /arch\n"
    ));
    let name = format!("{}/multi:1", registry.addr);
    let dest = env.scratch.path().join("fs");
    let local = format!("type=local,dest={}", dest.display());
    let run = env.build(&[
        "--platform",
        &format!("{host},{arm}"),
        "-t",
        &name,
        "--push",
        "-o",
        "type=image",
        "-o",
        &local,
        "--annotation",
        "index:org.opencontainers.image.description=two platforms",
        "--annotation",
        "manifest[linux/arm64]:com.example.arm=yes",
        "--annotation",
        &format!("manifest-descriptor[{host}]:com.example.host=yes"),
        "--annotation",
        "com.example.every=1",
    ]);
    run.assert_ok();

    // One vertex for the BUILDPLATFORM stage's RUN, named for its platform;
    // one per target platform for the last RUN.
    let tools = step_numbers(&run.stderr, "tools 1/1] RUN cat /proc");
    assert_eq!(tools.len(), 1, "{}", run.stderr);
    assert!(
        run.stderr
            .contains(&format!("[{host} tools 1/1] RUN cat /proc")),
        "{}",
        run.stderr
    );
    for platform in [&host, &arm] {
        let last = step_numbers(&run.stderr, &format!("[{platform} stage-1 2/2] RUN echo"));
        assert_eq!(last.len(), 1, "{platform}: {}", run.stderr);
    }
    // The summary lists it once too, and a line says the platforms
    // shared it.
    let summary_lines = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("  ") && l.contains("tools 1/1] RUN cat /proc"))
        .count();
    assert_eq!(summary_lines, 1, "{}", run.stderr);
    let shared: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("shared by "))
        .collect();
    assert_eq!(
        shared,
        [format!(
            "shared by {host}, {arm} (run once): [{host} tools 1/1] RUN cat \
             /proc/sys/kernel/random/uuid > /stamp"
        )],
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("writing image index sha256:"),
        "{}",
        run.stderr
    );

    // Each platform's files in a directory of its own.
    let files = |platform: &str, file: &str| {
        fs::read_to_string(dest.join(platform.replace('/', "_")).join(file)).unwrap()
    };
    assert_eq!(files(&host, "stamp"), files(&arm, "stamp"));
    assert_eq!(
        files(&host, "arch"),
        format!("{host_arch} {}\n", std::env::consts::ARCH)
    );
    assert_eq!(files(&arm, "arch"), "arm64 aarch64\n");

    // The registry holds the index and both manifests.
    let raw = skopeo_inspect(&name, true);
    assert_eq!(raw["mediaType"], "application/vnd.oci.image.index.v1+json");
    assert_eq!(raw["manifests"].as_array().map(Vec::len), Some(2), "{raw}");
    assert_eq!(
        raw["annotations"]["org.opencontainers.image.description"],
        "two platforms"
    );
    assert_eq!(
        entry(&raw, &host_arch)["annotations"]["com.example.host"],
        "yes"
    );
    assert!(entry(&raw, "arm64")["annotations"].is_null(), "{raw}");
    let manifest = |arch: &str| {
        let digest = entry(&raw, arch)["digest"].as_str().unwrap().to_owned();
        let reference = format!("docker://{}/multi@{digest}", registry.addr);
        skopeo(&["inspect", "--raw", "--tls-verify=false", &reference])
    };
    let arm_manifest = manifest("arm64");
    let host_manifest = manifest(&host_arch);
    assert_eq!(arm_manifest["annotations"]["com.example.arm"], "yes");
    assert_eq!(arm_manifest["annotations"]["com.example.every"], "1");
    assert!(host_manifest["annotations"]["com.example.arm"].is_null());
    assert_eq!(host_manifest["annotations"]["com.example.every"], "1");
    let arm_config = skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--override-arch",
        "arm64",
        &format!("docker://{name}"),
    ]);
    assert_eq!(arm_config["Architecture"], "arm64");

    // One line in `images`; `inspect` lists the platforms.
    let images = hoist(env.root.path(), &["images"], None);
    images.assert_ok();
    assert_eq!(
        images
            .stdout
            .lines()
            .filter(|l| l.contains("/multi "))
            .count(),
        1,
        "{}",
        images.stdout
    );
    let inspected = env.inspect(&name);
    let listed: Vec<String> = inspected["Platforms"]
        .as_array()
        .unwrap_or_else(|| panic!("{inspected}"))
        .iter()
        .map(|p| p.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(listed, [host.clone(), arm.clone()]);
    assert_eq!(
        inspected["Target"]["Digest"],
        raw_digest(&name),
        "{}",
        run.stderr
    );

    // Again: every step from the cache.
    let again = env.build(&["--platform", &format!("{host},{arm}"), "-t", "again"]);
    again.assert_ok();
    assert_eq!(
        super::common::done_steps(&again.stderr),
        0,
        "{}",
        again.stderr
    );
    assert!(
        super::common::cached_steps(&again.stderr) >= 4,
        "{}",
        again.stderr
    );
    assert_eq!(env.inspect("again")["Platforms"], inspected["Platforms"]);

    // `hoist save --format oci` writes the index.
    let saved = env.scratch.path().join("saved.tar");
    hoist(
        env.root.path(),
        &[
            "save",
            "--format",
            "oci",
            "-o",
            saved.to_str().unwrap(),
            &name,
        ],
        None,
    )
    .assert_ok();
    let raw = skopeo(&[
        "inspect",
        "--raw",
        &format!("oci-archive:{}", saved.display()),
    ]);
    assert_eq!(raw["manifests"].as_array().map(Vec::len), Some(2), "{raw}");

    // A dry run plans each platform.
    let dry = env.build(&["--platform", &format!("{host},{arm}"), "--dry-run"]);
    dry.assert_ok();
    assert!(
        dry.stdout.contains(&format!("# platform {arm}\n")),
        "{}",
        dry.stdout
    );
    assert!(
        dry.stdout.contains(&format!("# platform {host}\n")),
        "{}",
        dry.stdout
    );

    // An OCI archive of the index, with each platform's provenance
    // attestation, that skopeo and umoci read.
    let archive = env.scratch.path().join("multi.tar");
    env.build(&[
        "--platform",
        &format!("{host},{arm}"),
        "--provenance",
        "-o",
        &format!("type=oci,dest={},name=multi:oci", archive.display()),
    ])
    .assert_ok();
    let source = format!("oci-archive:{}", archive.display());
    let raw = skopeo(&["inspect", "--raw", &source]);
    let entries = raw["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 4, "{raw}");
    let attested: BTreeSet<&str> = entries
        .iter()
        .filter(|m| m["annotations"]["vnd.docker.reference.type"] == "attestation-manifest")
        .map(|m| {
            m["annotations"]["vnd.docker.reference.digest"]
                .as_str()
                .unwrap()
        })
        .collect();
    let images: BTreeSet<&str> = entries
        .iter()
        .filter(|m| m["platform"]["os"] == "linux")
        .map(|m| m["digest"].as_str().unwrap())
        .collect();
    assert_eq!(attested, images, "{raw}");
    let arm_image = skopeo(&["inspect", "--override-arch", "arm64", &source]);
    assert_eq!(arm_image["Architecture"], "arm64");
    let layout = env.scratch.path().join("layout");
    let copied = Command::new("skopeo")
        .args(["copy", "--override-arch", "arm64", &source])
        .arg(format!("oci:{}:arm", layout.display()))
        .output()
        .unwrap();
    assert!(
        copied.status.success(),
        "{}",
        String::from_utf8_lossy(&copied.stderr)
    );
    if which("umoci") {
        let bundle = env.scratch.path().join("bundle");
        let out = Command::new("umoci")
            .args(["unpack", "--image"])
            .arg(format!("{}:arm", layout.display()))
            .arg(&bundle)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            fs::read_to_string(bundle.join("rootfs/arch")).unwrap(),
            "arm64 aarch64\n"
        );
    }

    // A docker archive and --load hold no index: refused before building,
    // as buildx refuses them.
    for args in [
        vec!["-o", "type=docker,dest=/dev/null"],
        vec!["--load", "-t", "x"],
    ] {
        let mut all = vec!["--platform", "linux/amd64,linux/arm64"];
        all.extend(args);
        let run = env.build(&all);
        assert_eq!(run.code(), 1, "{}", run.stderr);
        assert!(
            run.stderr
                .contains("docker exporter does not currently support exporting manifest lists"),
            "{}",
            run.stderr
        );
        assert!(!run.stderr.contains("#1 "), "{}", run.stderr);
    }
    // A platform annotation for a platform not built.
    let run = env.build(&[
        "--platform",
        &format!("{host},{arm}"),
        "--annotation",
        "manifest[linux/s390x]:a=b",
    ]);
    assert_eq!(run.code(), 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("the build makes no linux/s390x image"),
        "{}",
        run.stderr
    );
}

/// The digest of what `name` points at in the registry: of its raw bytes.
fn raw_digest(name: &str) -> String {
    use sha2::Digest as _;
    let out = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{name}"))
        .output()
        .unwrap();
    assert!(out.status.success());
    // skopeo ends the bytes with a newline of its own.
    let raw = out.stdout.strip_suffix(b"\n").unwrap_or(&out.stdout);
    format!("sha256:{:x}", sha2::Sha256::digest(raw))
}

fn which(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn index_annotations_on_one_platform_make_an_index_of_one_manifest() {
    require_root!();
    require_program!("skopeo");
    let registry = Registry::start();
    let env = Env::new();
    env.dockerfile("FROM busybox\nRUN echo hi > /hi\n");
    let name = format!("{}/annotated:1", registry.addr);
    let archive = env.scratch.path().join("one.tar");
    let run = env.build(&[
        "-t",
        &name,
        "--push",
        "-o",
        "type=image",
        "-o",
        &format!("type=oci,dest={}", archive.display()),
        "--annotation",
        "index:org.opencontainers.image.title=app",
        "--annotation",
        "manifest-descriptor:com.example.desc=d",
        "--annotation",
        "index-descriptor:com.example.layout=l",
        "--annotation",
        "manifest:com.example.m=m",
    ]);
    run.assert_ok();
    let raw = skopeo_inspect(&name, true);
    assert_eq!(raw["mediaType"], "application/vnd.oci.image.index.v1+json");
    let manifests = raw["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 1, "{raw}");
    assert_eq!(raw["annotations"]["org.opencontainers.image.title"], "app");
    assert_eq!(manifests[0]["annotations"]["com.example.desc"], "d");
    // index-descriptor annotations are the OCI layout's only.
    assert!(raw["annotations"]["com.example.layout"].is_null(), "{raw}");
    let digest = manifests[0]["digest"].as_str().unwrap();
    let manifest = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{}/annotated@{digest}", registry.addr),
    ]);
    assert_eq!(manifest["annotations"]["com.example.m"], "m");
    assert!(manifest["annotations"]["org.opencontainers.image.title"].is_null());

    let out = Command::new("tar")
        .args(["-xOf"])
        .arg(&archive)
        .arg("index.json")
        .output()
        .unwrap();
    assert!(out.status.success());
    let layout: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let top = &layout["manifests"][0];
    assert_eq!(top["mediaType"], "application/vnd.oci.image.index.v1+json");
    assert_eq!(top["annotations"]["com.example.layout"], "l", "{layout}");
    assert_eq!(
        top["annotations"]["org.opencontainers.image.ref.name"],
        name
    );
}

#[test]
fn copy_on_scratch_is_one_step_for_three_platforms_and_each_config_says_its_own() {
    require_root!();
    require_program!("skopeo");
    let env = Env::new();
    env.write("f", "hi\n");
    env.dockerfile("FROM scratch\nARG TARGETARCH\nCOPY f /f\nENV ARCH=$TARGETARCH\n");
    let archive = env.scratch.path().join("three.tar");
    let metadata = env.scratch.path().join("metadata.json");
    let run = env.build(&[
        "--metadata-file",
        metadata.to_str().unwrap(),
        "--platform",
        "linux/amd64,linux/arm64",
        "--platform",
        "linux/arm/v7",
        "-o",
        &format!("type=oci,dest={}", archive.display()),
    ]);
    run.assert_ok();
    // No RUN: nothing needs an emulator, and the COPY is one step.
    assert_eq!(
        step_numbers(&run.stderr, "] COPY f /f").len(),
        1,
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains(
            "shared by linux/amd64, linux/arm64, linux/arm/v7 (run once): [linux/amd64 stage-0 \
             1/1] COPY f /f"
        ),
        "{}",
        run.stderr
    );
    let source = format!("oci-archive:{}", archive.display());
    let raw = skopeo(&["inspect", "--raw", &source]);
    let entries = raw["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 3, "{raw}");
    // The metadata names the index, and no one config, as buildx's.
    let metadata: serde_json::Value =
        serde_json::from_slice(&fs::read(&metadata).unwrap()).unwrap();
    assert_eq!(
        metadata["containerimage.descriptor"]["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    assert!(
        metadata.get("containerimage.config.digest").is_none(),
        "{metadata}"
    );
    assert_eq!(entry(&raw, "arm")["platform"]["variant"], "v7");
    for (arch, variant) in [("amd64", None), ("arm64", None), ("arm", Some("v7"))] {
        let mut args = vec!["inspect", "--config", "--override-arch", arch];
        if let Some(v) = variant {
            args.extend(["--override-variant", v]);
        }
        args.push(&source);
        let config = skopeo(&args);
        assert_eq!(config["architecture"], arch, "{config}");
        let env_list = config["config"]["Env"].to_string();
        assert!(env_list.contains(&format!("ARCH={arch}")), "{config}");
    }

    // A tar of the files: a directory per platform, as BuildKit writes it.
    let tar = env.scratch.path().join("files.tar");
    env.build(&[
        "--platform",
        "linux/amd64,linux/arm64,linux/arm/v7",
        "-o",
        &format!("type=tar,dest={}", tar.display()),
    ])
    .assert_ok();
    let out = Command::new("tar").arg("-tf").arg(&tar).output().unwrap();
    assert!(out.status.success());
    let listed: BTreeSet<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| l.ends_with("/f"))
        .map(str::to_owned)
        .collect();
    assert_eq!(
        listed,
        BTreeSet::from(["linux_amd64/f", "linux_arm64/f", "linux_arm_v7/f"].map(str::to_owned))
    );
}
