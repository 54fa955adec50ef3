//! Instructions and the image they make.

use std::fs;

use super::common::{mode, owner, Env};

#[test]
fn from_copy_and_config_instructions() {
    hoist_testutil::require_root!();
    let env = Env::new();
    env.write("hello.txt", "hello\n");
    env.write("dir/a.txt", "a\n");
    env.write("dir/sub/b.txt", "b\n");
    env.write("x.log", "log\n");
    env.write("y.log", "log2\n");
    env.dockerfile(
        "FROM busybox\n\
         ENV GREETING=hi PATHX=/opt\n\
         WORKDIR /app\n\
         COPY hello.txt .\n\
         COPY dir /app/d/\n\
         COPY --chown=app:app --chmod=640 hello.txt /owned/h.txt\n\
         COPY *.log /logs/\n\
         LABEL org.example.k=v\n\
         EXPOSE 8080 53/udp\n\
         USER app\n\
         VOLUME /data\n\
         STOPSIGNAL SIGINT\n\
         CMD [\"sh\", \"-c\", \"echo $GREETING\"]\n",
    );
    let (_, fs_dir) = env.build_fs("app:1", &["--label", "built.by=hoist"]);
    assert_eq!(
        fs::read_to_string(fs_dir.join("app/hello.txt")).unwrap(),
        "hello\n"
    );
    assert_eq!(
        fs::read_to_string(fs_dir.join("app/d/a.txt")).unwrap(),
        "a\n"
    );
    assert_eq!(
        fs::read_to_string(fs_dir.join("app/d/sub/b.txt")).unwrap(),
        "b\n"
    );
    assert!(
        !fs_dir.join("app/d/dir").exists(),
        "a directory's contents are copied, not itself"
    );
    assert_eq!(owner(&fs_dir.join("owned/h.txt")), (1000, 1000));
    assert_eq!(mode(&fs_dir.join("owned/h.txt")), 0o640);
    assert_eq!(owner(&fs_dir.join("app/hello.txt")), (0, 0));
    assert_eq!(
        fs::read_to_string(fs_dir.join("logs/x.log")).unwrap(),
        "log\n"
    );
    assert_eq!(
        fs::read_to_string(fs_dir.join("logs/y.log")).unwrap(),
        "log2\n"
    );
    assert!(
        fs_dir.join("bin/busybox").is_file(),
        "base image files are there"
    );

    let config = env.config("app:1");
    let c = &config["config"];
    assert!(c["Env"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e == "GREETING=hi"));
    assert_eq!(c["WorkingDir"], "/app");
    assert_eq!(c["User"], "app");
    assert_eq!(c["Labels"]["org.example.k"], "v");
    assert_eq!(c["Labels"]["built.by"], "hoist");
    assert!(c["ExposedPorts"].get("8080/tcp").is_some());
    assert!(c["ExposedPorts"].get("53/udp").is_some());
    assert!(c["Volumes"].get("/data").is_some());
    assert_eq!(c["StopSignal"], "SIGINT");
    assert_eq!(c["Cmd"], serde_json::json!(["sh", "-c", "echo $GREETING"]));
    // One layer for busybox, then WORKDIR and four COPYs.
    let diff_ids = config["rootfs"]["diff_ids"].as_array().unwrap();
    assert_eq!(diff_ids.len(), 6);
    let history = config["history"].as_array().unwrap();
    let with_layers = history
        .iter()
        .filter(|h| !h["empty_layer"].as_bool().unwrap_or(false))
        .count();
    assert_eq!(with_layers, diff_ids.len(), "history: {history:#?}");
    assert!(history.iter().any(|h| h["created_by"]
        .as_str()
        .unwrap()
        .starts_with("ENV GREETING=hi")
        && h["empty_layer"] == true));
}

#[test]
fn run_creates_and_deletes_files() {
    hoist_testutil::require_root!();
    let env = Env::new();
    env.dockerfile(
        "FROM busybox\n\
         RUN mkdir -p /work && echo one > /work/one && echo two > /work/two\n\
         RUN rm /work/one && rm -r /home/app && echo $HOME-$(id -u) > /work/who\n\
         USER app\n\
         RUN id -u > /tmp/uid\n",
    );
    let (run, fs_dir) = env.build_fs("run:1", &[]);
    assert!(
        !fs_dir.join("work/one").exists(),
        "deleted in a later layer"
    );
    assert_eq!(
        fs::read_to_string(fs_dir.join("work/two")).unwrap(),
        "two\n"
    );
    assert!(
        !fs_dir.join("home/app").exists(),
        "a directory of the base image is gone"
    );
    assert_eq!(
        fs::read_to_string(fs_dir.join("work/who")).unwrap(),
        "/root-0\n"
    );
    assert_eq!(
        fs::read_to_string(fs_dir.join("tmp/uid")).unwrap(),
        "1000\n"
    );
    // The deletions travel as whiteouts in the layer of the second RUN.
    let inspect = env.inspect("run:1");
    let layers = inspect["Layers"].as_array().unwrap();
    assert_eq!(layers.len(), 4);
    let digest = layers[2]["Digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:");
    let blob = env.root.path().join("content/blobs/sha256").join(digest);
    let names: Vec<String> =
        tar::Archive::new(flate2::read::GzDecoder::new(fs::File::open(blob).unwrap()))
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect();
    assert!(
        names.iter().any(|n| n.ends_with("work/.wh.one")),
        "{names:?}"
    );
    assert!(
        names.iter().any(|n| n.ends_with("home/.wh.app")),
        "{names:?}"
    );
    assert!(run.stderr.contains("RUN mkdir -p /work"), "{}", run.stderr);
}

#[test]
fn multi_stage_copy_from_and_unused_stage() {
    hoist_testutil::require_root!();
    let env = Env::new();
    env.dockerfile(
        "FROM busybox AS builder\n\
         RUN mkdir /out && echo built > /out/artifact && chmod 700 /out/artifact && chown 1000:1000 /out/artifact\n\
         FROM busybox AS unused\n\
         RUN echo never-runs > /x\n\
         FROM scratch\n\
         COPY --from=builder /out/artifact /artifact\n\
         COPY --from=builder /bin/busybox /bin/\n",
    );
    let (run, fs_dir) = env.build_fs("multi:1", &[]);
    assert_eq!(
        fs::read_to_string(fs_dir.join("artifact")).unwrap(),
        "built\n"
    );
    assert_eq!(mode(&fs_dir.join("artifact")), 0o700);
    assert_eq!(
        owner(&fs_dir.join("artifact")),
        (1000, 1000),
        "COPY --from keeps owners"
    );
    assert!(fs_dir.join("bin/busybox").is_file());
    assert!(!run.stderr.contains("never-runs"), "{}", run.stderr);
    let config = env.config("multi:1");
    assert_eq!(config["rootfs"]["diff_ids"].as_array().unwrap().len(), 2);
}

#[test]
fn run_sandbox_has_dev_and_etc_files_that_never_reach_the_layer() {
    hoist_testutil::require_root!();
    let env = Env::new();
    env.dockerfile(
        "FROM busybox\n\
         RUN echo x > /dev/null && cat /etc/hosts > /hosts.copy && grep -c : /proc/net/dev > /netdevs\n",
    );
    let (_, fs_dir) = env.build_fs("sandbox:1", &["--network", "none"]);
    assert!(fs::read_to_string(fs_dir.join("hosts.copy"))
        .unwrap()
        .contains("localhost"));
    assert_eq!(
        fs::read_to_string(fs_dir.join("netdevs")).unwrap().trim(),
        "1",
        "--network none leaves only lo"
    );
    let inspect = env.inspect("sandbox:1");
    let layers = inspect["Layers"].as_array().unwrap();
    let digest = layers[1]["Digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:");
    let blob = env.root.path().join("content/blobs/sha256").join(digest);
    let mut names: Vec<String> =
        tar::Archive::new(flate2::read::GzDecoder::new(fs::File::open(blob).unwrap()))
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect();
    names.sort();
    assert_eq!(names, ["hosts.copy", "netdevs"], "only what the step wrote");
}

#[test]
fn add_host_shm_size_and_ulimit_reach_run_steps_and_their_cache_keys() {
    hoist_testutil::require_root!();
    let env = Env::new();
    env.dockerfile(
        "FROM busybox\n\
         RUN cat /etc/hosts > /hosts; df -k /dev/shm | tail -n 1 > /shm; \
         ulimit -Sn > /nofile; ulimit -Hn >> /nofile\n",
    );
    let (_, fs_with) = env.build_fs(
        "flags:with",
        &[
            "--add-host",
            "db.internal:10.1.2.3",
            "--add-host",
            "v6host:fd00::7",
            "--shm-size",
            "128m",
            "--ulimit",
            "nofile=256:512",
        ],
    );
    let hosts = fs::read_to_string(fs_with.join("hosts")).unwrap();
    assert!(hosts.contains("10.1.2.3\tdb.internal\n"), "{hosts}");
    assert!(hosts.contains("fd00::7\tv6host\n"), "{hosts}");
    let shm = fs::read_to_string(fs_with.join("shm")).unwrap();
    assert_eq!(
        shm.split_whitespace().nth(1),
        Some("131072"),
        "128 MiB of /dev/shm in KiB: {shm}"
    );
    assert_eq!(
        fs::read_to_string(fs_with.join("nofile")).unwrap(),
        "256\n512\n"
    );

    // Without the flags the step is another step: it runs again, with
    // Docker's defaults, instead of reusing the layer made with them.
    let (run, fs_without) = env.build_fs("flags:without", &[]);
    assert_eq!(super::common::done_steps(&run.stderr), 1, "{}", run.stderr);
    let hosts = fs::read_to_string(fs_without.join("hosts")).unwrap();
    assert!(!hosts.contains("db.internal"), "{hosts}");
    let shm = fs::read_to_string(fs_without.join("shm")).unwrap();
    assert_eq!(shm.split_whitespace().nth(1), Some("65536"), "{shm}");

    // Values that are not a host, a size or a limit are refused before
    // anything runs, naming the value.
    for (flag, value, message) in [
        ("--add-host", "db", "expected NAME:ADDRESS"),
        ("--add-host", "db:not-an-ip", "is not an IP address"),
        ("--ulimit", "nofile=9:3", "soft limit is above the hard one"),
        ("--ulimit", "handles=3", "unknown resource"),
        ("--shm-size", "0", "must be larger than 0"),
        ("--shm-size", "lots", "invalid --shm-size"),
    ] {
        let run = env.build(&[flag, value]);
        assert_ne!(run.code(), 0, "{flag} {value}");
        assert!(
            run.stderr.contains(message),
            "{flag} {value}: {}",
            run.stderr
        );
        assert!(!run.stderr.contains("RUN cat"), "{}", run.stderr);
    }
}
