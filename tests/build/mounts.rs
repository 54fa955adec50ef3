//! `RUN --mount` of every type.

use std::fs;
use std::path::Path;

use super::common::{hoist, Env};

fn files_under(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        let ft = entry.file_type().unwrap();
        if ft.is_dir() {
            files_under(&path, out);
        } else if ft.is_file() {
            out.push(path);
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn cache_mount_persists_across_builds_and_stays_out_of_the_image() {
    hoist_testutil::require_root!();
    let env = Env::new();
    env.dockerfile(
        "FROM busybox AS seed\n\
         RUN mkdir -p /seed && echo seeded > /seed/s.txt\n\
         FROM busybox\n\
         ARG N\n\
         RUN --mount=type=cache,target=/cache,id=c1 echo run-$N >> /cache/log && cp /cache/log /cachelog\n\
         RUN --mount=type=cache,target=/c2,uid=1000,gid=1000,mode=0700 stat -c '%u %g %a' /c2 > /c2stat\n\
         RUN --mount=type=cache,target=/c3,from=seed,source=/seed cat /c3/s.txt > /c3copy\n\
         RUN --mount=type=cache,target=/c4,sharing=locked --mount=type=cache,target=/c5,sharing=private \
             touch /c4/x /c5/y && echo ok > /c45\n",
    );
    let (_, first) = env.build_fs("cache:1", &["--build-arg", "N=1"]);
    assert_eq!(
        fs::read_to_string(first.join("cachelog")).unwrap(),
        "run-1\n"
    );
    let (_, second) = env.build_fs("cache:2", &["--build-arg", "N=2"]);
    assert_eq!(
        fs::read_to_string(second.join("cachelog")).unwrap(),
        "run-1\nrun-2\n",
        "the cache directory keeps its contents across builds"
    );
    for dir in [&first, &second] {
        for target in ["cache", "c2", "c3", "c4", "c5"] {
            assert!(
                !dir.join(target).exists(),
                "/{target} must not be in the image"
            );
        }
    }
    assert_eq!(
        fs::read_to_string(second.join("c2stat")).unwrap(),
        "1000 1000 700\n"
    );
    assert_eq!(
        fs::read_to_string(second.join("c3copy")).unwrap(),
        "seeded\n"
    );
    assert_eq!(fs::read_to_string(second.join("c45")).unwrap(), "ok\n");
    let mut on_disk = Vec::new();
    files_under(&env.root.path().join("cache-mounts"), &mut on_disk);
    assert!(
        on_disk
            .iter()
            .any(|p| p.ends_with("log") && fs::read_to_string(p).unwrap() == "run-1\nrun-2\n"),
        "the cache lives under <root>/cache-mounts: {on_disk:?}"
    );
}

#[test]
fn bind_and_tmpfs_mounts() {
    hoist_testutil::require_root!();
    let env = Env::new();
    env.write("ctx.txt", "from the context\n");
    env.write("dir/a", "a\n");
    env.write("dir/ignored", "left out by .dockerignore\n");
    env.write(".dockerignore", "dir/ignored\n");
    env.dockerfile(
        "FROM busybox AS seed\n\
         RUN mkdir -p /seed && echo from-stage > /seed/s.txt\n\
         FROM busybox\n\
         RUN --mount=type=bind,source=ctx.txt,target=/mnt/ctx.txt cat /mnt/ctx.txt > /from-ctx\n\
         RUN --mount=type=bind,from=seed,source=/seed,target=/s cat /s/s.txt > /from-stage\n\
         RUN --mount=type=bind,from=busybox,source=/bin,target=/bb ls /bb/busybox > /from-image\n\
         RUN --mount=type=bind,source=dir,target=/d,rw touch /d/new && ls /d > /rw-list\n\
         RUN --mount=type=bind,source=dir,target=/ro sh -c 'touch /ro/x 2>/dev/null && echo writable > /ro-result || echo read-only > /ro-result'\n\
         RUN --mount=type=tmpfs,target=/t,size=1m echo x > /t/x && grep ' /t ' /proc/mounts > /tmpfs-info\n",
    );
    let (_, root) = env.build_fs("bind:1", &[]);
    let read = |p: &str| fs::read_to_string(root.join(p)).unwrap();
    assert_eq!(read("from-ctx"), "from the context\n");
    assert_eq!(read("from-stage"), "from-stage\n");
    assert_eq!(read("from-image"), "/bb/busybox\n");
    assert_eq!(
        read("rw-list"),
        "a\nnew\n",
        "the context as the build sees it (.dockerignore applies)"
    );
    assert_eq!(read("ro-result"), "read-only\n");
    assert!(
        !env.context.path().join("dir/new").exists(),
        "an rw bind writes to a throwaway copy"
    );
    assert!(
        read("tmpfs-info").contains("size=1024k"),
        "{}",
        read("tmpfs-info")
    );
    for target in ["mnt", "s", "bb", "d", "ro", "t"] {
        assert!(
            !root.join(target).exists(),
            "/{target} must not be in the image"
        );
    }
}

#[test]
fn secrets_and_ssh_never_reach_the_store_or_the_output() {
    hoist_testutil::require_root!();
    hoist_testutil::require_program!("ssh-agent");
    hoist_testutil::require_program!("ssh-keygen");
    let env = Env::new();
    let secret_file = env.scratch.path().join("token");
    let file_secret = "S3CRET-file-bytes-4711";
    let env_secret = "ENV-SECRET-bytes-0815";
    fs::write(&secret_file, file_secret).unwrap();
    let key = env.scratch.path().join("id_ed25519");
    let status = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(status.success());
    let key_text = fs::read_to_string(&key).unwrap();
    let key_line = key_text
        .lines()
        .nth(1)
        .expect("a private key body line")
        .to_owned();
    env.dockerfile(
        "FROM busybox\n\
         RUN --mount=type=secret,id=tok sha256sum < /run/secrets/tok > /secret-sum && stat -c '%a %u' /run/secrets/tok > /secret-stat\n\
         RUN --mount=type=secret,id=envtok,env=TOKEN,target=/s/t,mode=0440,uid=1000,gid=1000 \
             sh -c 'printf %s \"$TOKEN\" | sha256sum > /env-sum && sha256sum < /s/t > /env-file-sum && stat -c \"%a %u %g\" /s/t > /secret-stat2'\n\
         RUN --mount=type=secret,id=absent echo optional > /optional\n\
         RUN --mount=type=ssh sh -c 'test -S \"$SSH_AUTH_SOCK\" && echo \"$SSH_AUTH_SOCK\" > /ssh-sock'\n\
         RUN --mount=type=ssh,id=deploy,target=/agent test -S /agent && echo ok > /ssh-key\n\
         RUN --mount=type=ssh,id=deploy,target=/agent2,uid=1000,gid=1000,mode=0660 stat -c '%a %u %g' /agent2 > /ssh-stat\n\
         RUN --mount=type=ssh stat -c '%a %u %g' /run/buildkit/ssh_agent.0 > /ssh-default-stat\n",
    );
    let secret_arg = format!("id=tok,src={}", secret_file.display());
    let key_arg = format!("deploy={}", key.display());
    let dest = env.scratch.path().join("fs");
    let output = format!("type=local,dest={}", dest.display());
    let context = env.context.path().to_str().unwrap().to_owned();
    let mut command = env.hoist().command();
    command
        .args([
            "build",
            "--progress",
            "plain",
            "-t",
            "secret:1",
            "-o",
            "type=image",
            "-o",
        ])
        .arg(&output)
        .args([
            "--secret",
            &secret_arg,
            "--secret",
            "id=envtok,env=HOIST_TEST_TOKEN",
        ])
        .args(["--ssh", "default", "--ssh", &key_arg])
        .arg(&context)
        .env("HOIST_TEST_TOKEN", env_secret)
        .env_remove("SSH_AUTH_SOCK");
    // `--ssh default` forwards $SSH_AUTH_SOCK: give it an agent holding the key.
    let agent_dir = tempfile::tempdir().unwrap();
    let sock = agent_dir.path().join("agent.sock");
    let mut agent = std::process::Command::new("ssh-agent")
        .args(["-D", "-a"])
        .arg(&sock)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    while !sock.exists() {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    command.env("SSH_AUTH_SOCK", &sock);
    let out = command.output().unwrap();
    let _ = agent.kill();
    let _ = agent.wait();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    let read = |p: &str| fs::read_to_string(dest.join(p)).unwrap();
    let sum = |s: &str| {
        use sha2::Digest;
        format!("{:x}  -\n", sha2::Sha256::digest(s.as_bytes()))
    };
    assert_eq!(read("secret-sum"), sum(file_secret));
    assert_eq!(read("env-sum"), sum(env_secret));
    assert_eq!(read("env-file-sum"), sum(env_secret));
    assert_eq!(read("secret-stat"), "400 0\n");
    assert_eq!(read("secret-stat2"), "440 1000 1000\n");
    assert_eq!(read("optional"), "optional\n");
    assert_eq!(read("ssh-sock"), "/run/buildkit/ssh_agent.0\n");
    assert_eq!(read("ssh-key"), "ok\n");
    assert_eq!(
        read("ssh-stat"),
        "660 1000 1000\n",
        "mode, uid, gid of the socket"
    );
    assert_eq!(read("ssh-default-stat"), "600 0 0\n", "BuildKit's defaults");
    assert!(!dest.join("run/secrets").exists());
    assert!(!dest.join("s").exists());
    assert!(!dest.join("agent").exists());

    let history = hoist(
        env.root.path(),
        &["history", "--no-trunc", "secret:1"],
        None,
    );
    let inspect = hoist(env.root.path(), &["inspect", "secret:1"], None);
    let mut files = Vec::new();
    files_under(env.root.path(), &mut files);
    files_under(&dest, &mut files);
    assert!(files.iter().any(|f| f.ends_with("meta.db")));
    for needle in [file_secret, env_secret, key_line.as_str()] {
        for text in [&stdout, &stderr, &history.stdout, &inspect.stdout] {
            assert!(!text.contains(needle), "secret in the output");
        }
        for f in &files {
            let data = fs::read(f).unwrap();
            assert!(
                !contains(&data, needle.as_bytes()),
                "secret in {}",
                f.display()
            );
            // Layers are gzip: look inside them too.
            if data.starts_with(&[0x1f, 0x8b]) {
                let mut plain = Vec::new();
                use std::io::Read;
                let _ = flate2::read::GzDecoder::new(&data[..]).read_to_end(&mut plain);
                assert!(
                    !contains(&plain, needle.as_bytes()),
                    "secret in layer {}",
                    f.display()
                );
            }
        }
    }
}

#[test]
fn a_required_secret_that_is_missing_fails_the_step() {
    hoist_testutil::require_root!();
    let env = Env::new();
    env.dockerfile("FROM busybox\nRUN --mount=type=secret,id=npmrc,required echo never\n");
    let run = env.build(&["-t", "nosecret:1"]);
    assert!(!run.status.success());
    assert!(
        run.stderr.contains("secret npmrc not found"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("Dockerfile:2"), "{}", run.stderr);
}

#[test]
fn security_insecure_needs_the_entitlement_and_gets_every_capability() {
    hoist_testutil::require_root!();
    let env = Env::new();
    env.dockerfile(
        "FROM busybox\n\
         RUN grep '^Seccomp:' /proc/self/status > /sandboxed\n\
         RUN grep '^CapEff:' /proc/self/status > /sandboxed-caps\n\
         RUN --security=insecure grep '^Seccomp:' /proc/self/status > /insecure\n\
         RUN --security=insecure cat /proc/self/status | grep CapEff > /insecure-caps\n\
         RUN --network=none sh -c 'ls /sys/class/net > /net-none'\n\
         RUN sh -c 'awk \"\\$5 == \\\"/sys\\\" {print substr(\\$6, 1, 2)}\" /proc/self/mountinfo; test -c /proc/keys && echo masked || echo keys; ls /dev | sort' > /sandboxed-view\n\
         RUN --security=insecure sh -c 'awk \"\\$5 == \\\"/sys\\\" {print substr(\\$6, 1, 2)}\" /proc/self/mountinfo; test -c /proc/keys && echo masked || echo keys; ls /dev | sort' > /insecure-view\n",
    );
    let refused = env.build(&["-t", "insecure:0"]);
    assert!(!refused.status.success());
    assert!(
        refused
            .stderr
            .contains("Dockerfile:4: RUN --security=insecure")
            && refused.stderr.contains("--allow security.insecure"),
        "{}",
        refused.stderr
    );
    assert!(
        !refused.stderr.contains("RUN grep"),
        "refused before any step ran:\n{}",
        refused.stderr
    );

    let (_, root) = env.build_fs("insecure:1", &["--allow", "security.insecure"]);
    let read = |p: &str| fs::read_to_string(root.join(p)).unwrap();
    let caps = |text: &str| {
        let hex = text
            .split_whitespace()
            .last()
            .unwrap_or_default()
            .to_owned();
        u64::from_str_radix(&hex, 16).unwrap_or_else(|_| panic!("bad CapEff in {text:?}"))
    };
    assert_eq!(read("insecure").split_whitespace().last(), Some("0"));
    assert_ne!(read("sandboxed"), read("insecure"), "{}", read("sandboxed"));
    let ours = caps(
        fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .find(|l| l.starts_with("CapEff:"))
            .unwrap(),
    );
    assert_eq!(
        caps(&read("insecure-caps")),
        ours,
        "the insecure step has every capability hoist has"
    );
    const CAP_SYS_ADMIN: u64 = 1 << 21;
    assert_ne!(ours & CAP_SYS_ADMIN, 0);
    assert_eq!(
        caps(&read("sandboxed-caps")),
        0xa80425fb & ours,
        "a sandboxed step has Docker's default set"
    );
    assert_eq!(read("net-none"), "lo\n");

    // Privileged as BuildKit's insecure mode is: /sys writable, nothing
    // masked, the host's devices present; a sandboxed step has none of it.
    let sandboxed = read("sandboxed-view");
    let insecure = read("insecure-view");
    let mut s = sandboxed.lines();
    assert_eq!(
        (s.next(), s.next()),
        (Some("ro"), Some("masked")),
        "{sandboxed}"
    );
    let mut i = insecure.lines();
    assert_eq!(
        (i.next(), i.next()),
        (Some("rw"), Some("keys")),
        "{insecure}"
    );
    if std::path::Path::new("/dev/loop-control").exists() {
        assert!(insecure.lines().any(|l| l == "loop-control"), "{insecure}");
        assert!(
            !sandboxed.lines().any(|l| l == "loop-control"),
            "{sandboxed}"
        );
    }

    let bad = env.build(&["-t", "insecure:2", "--allow", "security.everything"]);
    assert!(
        bad.stderr
            .contains("invalid --allow \"security.everything\""),
        "{}",
        bad.stderr
    );
}
