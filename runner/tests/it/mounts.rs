//! Extra mounts and what the root looks like after a run.

use std::os::unix::fs::MetadataExt;

use hoist_runner::{Mount, MountData, Rootfs, RunSpec};
use libtest_mimic::Failed;

use crate::util::{run, stdout_of, tree, Env, Root};
use crate::{check, check_eq, need_root};

pub fn bind_mounts_ro_rw(env: &Env) -> Result<(), Failed> {
    need_root!();
    let root = Root::new();
    let ro = tempfile::tempdir()?;
    let rw = tempfile::tempdir()?;
    std::fs::write(ro.path().join("in.txt"), "from host\n")?;
    let mut spec = root.spec(
        "cat /ro/in.txt; touch /ro/x 2>/dev/null && echo ro-writable || echo ro-refused; echo made > /cache/out.txt",
    );
    spec.mounts = vec![
        Mount::Bind {
            source: ro.path().into(),
            target: "/ro".into(),
            readonly: true,
        },
        Mount::Bind {
            source: rw.path().into(),
            target: "/cache".into(),
            readonly: false,
        },
    ];
    check_eq!(
        stdout_of(env, &spec)?,
        "from host\nro-refused\n".to_string()
    );
    check_eq!(
        std::fs::read_to_string(rw.path().join("out.txt"))?,
        "made\n"
    );
    check!(!ro.path().join("x").exists(), "read-only bind was written");
    // The mount points the image lacked are gone again.
    check!(
        !root.path().join("ro").exists() && !root.path().join("cache").exists(),
        "mount stubs left in the root"
    );
    Ok(())
}

pub fn tmpfs_mount(env: &Env) -> Result<(), Failed> {
    need_root!();
    let root = Root::new();
    let mut spec = root.spec("grep ' /scratch tmpfs' /proc/mounts | grep -o 'size=[0-9]*k'; stat -c %a /scratch; echo x > /scratch/f && cat /scratch/f");
    spec.mounts = vec![Mount::Tmpfs {
        target: "/scratch".into(),
        size: Some(4 * 1024 * 1024),
        mode: Some(0o1777),
    }];
    check_eq!(stdout_of(env, &spec)?, "size=4096k\n1777\nx\n".to_string());
    check!(
        !root.path().join("scratch").exists(),
        "tmpfs stub left in the root"
    );
    Ok(())
}

pub fn secret_on_tmpfs_leaves_no_trace(env: &Env) -> Result<(), Failed> {
    need_root!();
    let root = Root::new();
    let secrets = tempfile::tempdir()?;
    let source = secrets.path().join("token");
    std::fs::write(&source, "s3cr3t-value")?;
    let mut spec = root.spec(
        "cat /run/secrets/token; echo; stat -c '%a %u %g' /run/secrets/token; grep ' /run/secrets/token ' /proc/mounts | cut -d' ' -f3,4 | cut -d, -f1; echo x > /run/secrets/token 2>/dev/null || echo write-refused",
    );
    spec.user = "app".into();
    spec.mounts = vec![Mount::Secret {
        source: source.clone(),
        target: "/run/secrets/token".into(),
        mode: 0o400,
        uid: 1000,
        gid: 1000,
    }];
    let before = tree(root.path());
    let out = stdout_of(env, &spec)?;
    check_eq!(
        out,
        "s3cr3t-value\n400 1000 1000\ntmpfs ro\nwrite-refused\n".to_string()
    );
    check_eq!(tree(root.path()), before);
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
    check!(
        !mountinfo.contains("secrets"),
        "a secrets mount is visible on the host"
    );
    Ok(())
}

pub fn ssh_agent_socket(env: &Env) -> Result<(), Failed> {
    need_root!();
    let root = Root::new();
    let dir = tempfile::tempdir()?;
    let socket = dir.path().join("agent.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&socket)?;
    let mut spec = root.spec("test -S /run/ssh/agent && stat -c %i /run/ssh/agent");
    spec.mounts = vec![Mount::SshAgent {
        socket: socket.clone(),
        target: "/run/ssh/agent".into(),
    }];
    let out = stdout_of(env, &spec)?;
    check_eq!(out.trim(), std::fs::metadata(&socket)?.ino().to_string());
    check!(
        !root.path().join("run").exists(),
        "socket stub left in the root"
    );
    Ok(())
}

/// An overlay root given as mounts: the upper dir gets only what the step wrote,
/// never the bind targets (/etc/hosts, /etc/resolv.conf, /etc/hostname, a secret,
/// /proc ...), even though the lower layer has none of them.
pub fn overlay_root_layer_gains_nothing(env: &Env) -> Result<(), Failed> {
    need_root!();
    let lower = Root::new();
    for d in ["proc", "sys", "dev"] {
        std::fs::remove_dir(lower.path().join(d))?;
    }
    let work = tempfile::tempdir()?;
    let upper = work.path().join("upper");
    let workdir = work.path().join("work");
    std::fs::create_dir_all(&upper)?;
    std::fs::create_dir_all(&workdir)?;
    let secret = work.path().join("secret");
    std::fs::write(&secret, "pw")?;
    let mut spec = RunSpec::new(
        Rootfs::Mounts(vec![MountData {
            kind: "overlay".into(),
            source: "overlay".into(),
            target: "/".into(),
            options: vec![
                format!("lowerdir={}", lower.path().display()),
                format!("upperdir={}", upper.display()),
                format!("workdir={}", workdir.display()),
            ],
        }]),
        vec![
            "sh".into(),
            "-c".into(),
            "cat /etc/hostname /run/secrets/pw; echo; ls /proc/1 >/dev/null && echo proc; echo new > /made".into(),
        ],
    );
    spec.hostname = "ovl".into();
    spec.mounts = vec![Mount::Secret {
        source: secret,
        target: "/run/secrets/pw".into(),
        mode: 0o400,
        uid: 0,
        gid: 0,
    }];
    let out = stdout_of(env, &spec)?;
    check_eq!(out, "ovl\npw\nproc\n".to_string());
    check_eq!(tree(&upper), vec![std::path::PathBuf::from("made")]);
    check_eq!(std::fs::read_to_string(upper.join("made"))?, "new\n");
    Ok(())
}

/// A directory root without /etc/hosts etc. keeps lacking them, and /etc keeps
/// its modification time.
pub fn dir_root_gains_no_stubs(env: &Env) -> Result<(), Failed> {
    need_root!();
    let root = Root::new();
    std::fs::remove_dir(root.path().join("proc"))?;
    let etc_mtime = std::fs::metadata(root.path().join("etc"))?.modified()?;
    let before = tree(root.path());
    let out = run(
        env,
        &root.spec("cat /etc/hosts >/dev/null && ls /proc/self >/dev/null && echo ok"),
    )?;
    check_eq!(out.stdout, "ok\n".to_string());
    check_eq!(tree(root.path()), before);
    check_eq!(
        std::fs::metadata(root.path().join("etc"))?.modified()?,
        etc_mtime
    );
    Ok(())
}
