//! Rootless: the same runner run by an unprivileged user with subordinate ids
//! (the test, as root, creates `hoist-rootless-test` and its /etc/subuid and
//! /etc/subgid entries when missing, then re-runs this binary as that user).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use hoist_runner::{Mount, NetworkMode, Rootfs, RunSpec, Runner, RunnerConfig};
use libtest_mimic::Failed;

use crate::util::{tree, Root};
use crate::{check, check_eq, need_root};

const HELPER: &str = "__hoist-runner-test-rootless-helper__";

/// In helper mode, run the checks as the current (unprivileged) user and
/// print each step's result between markers. Returns false otherwise.
pub fn helper_if_requested() -> bool {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) != Some(HELPER) {
        return false;
    }
    let rootfs = PathBuf::from(&args[2]);
    let secret = PathBuf::from(&args[3]);
    let overlay_dir = PathBuf::from(&args[4]);
    let runner = match Runner::new(RunnerConfig {
        init_program: std::env::current_exe().expect("current exe"),
        ..RunnerConfig::default()
    }) {
        Ok(r) => r,
        Err(e) => {
            println!("=== runner\nerror: {e}");
            return true;
        }
    };
    let spec = |script: &str| {
        RunSpec::new(
            Rootfs::Dir(rootfs.clone()),
            vec!["sh".into(), "-c".into(), script.into()],
        )
    };
    let mut steps = Vec::new();
    let mut s = spec("id -u; id -g; hostname; tr '\\0' ' ' </proc/1/cmdline; echo; ls /proc | grep -cE '^[0-9]+$'; ls /sys/class/net | tr '\\n' ' '; echo; grep -c . /proc/self/uid_map");
    s.network = NetworkMode::None;
    s.hostname = "rootless".into();
    steps.push(("namespaces", s));
    let mut s = spec("id -u; id -g; id -G; echo $HOME");
    s.user = "app".into();
    steps.push(("user", s));
    steps.push(("exit", spec("exit 7")));
    steps.push(("signal", spec("kill -9 $$")));
    let mut s = spec("cat /run/secrets/s; echo; stat -c '%a %u' /run/secrets/s");
    s.mounts.push(Mount::Secret {
        source: secret,
        target: "/run/secrets/s".into(),
        mode: 0o400,
        uid: 0,
        gid: 0,
    });
    steps.push(("secret", s));
    let mut s = spec("true");
    s.limits.memory = Some(64 << 20);
    steps.push(("limits", s));
    let mut s = spec("cat /etc/hostname; echo new > /made");
    s.hostname = "ovl".into();
    s.rootfs = Rootfs::Mounts(vec![hoist_runner::MountData {
        kind: "overlay".into(),
        source: "overlay".into(),
        target: "/".into(),
        options: vec![
            format!("lowerdir={}", rootfs.display()),
            format!("upperdir={}", overlay_dir.join("upper").display()),
            format!("workdir={}", overlay_dir.join("work").display()),
        ],
    }]);
    steps.push(("overlay", s));
    // The default network, rootless: slirp4netns joins the step's user
    // namespace, which owns its network namespace.
    if let Some(script) = args.get(5).filter(|s| !s.is_empty()) {
        steps.push(("network", spec(script)));
    }
    for (name, spec) in steps {
        println!("=== {name}");
        let mut out = Vec::new();
        match runner.run(&spec, &mut |_, b| out.extend_from_slice(b)) {
            Ok(r) => {
                print!("{}", String::from_utf8_lossy(&out));
                println!("status: {}", r.status);
            }
            Err(e) => {
                eprint!("{}", String::from_utf8_lossy(&out));
                let mut text = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(s) = source {
                    text.push_str(&format!(": {s}"));
                    source = s.source();
                }
                println!("error: {text}")
            }
        }
    }
    true
}

fn ensure_user() -> Result<(u32, u32), Failed> {
    Ok(hoist_testutil::rootless::user())
}

fn section<'a>(out: &'a str, name: &str) -> &'a str {
    let start = format!("=== {name}\n");
    out.split_once(&start)
        .map(|(_, rest)| rest.split("=== ").next().unwrap_or(""))
        .unwrap_or("")
}

pub fn rootless_as_unprivileged_user() -> Result<(), Failed> {
    need_root!();
    for program in ["newuidmap", "newgidmap", "setpriv", "useradd"] {
        if hoist_testutil::which(program).is_none() {
            return crate::util::cannot_run(format!("`{program}` is not installed"));
        }
    }
    let (uid, gid) = ensure_user()?;
    let root = Root::new();
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755))?;
    let chown = Command::new("chown")
        .args([
            "-R",
            &format!("{uid}:{gid}"),
            &root.path().display().to_string(),
        ])
        .status()?;
    check!(chown.success(), "chown of the rootfs failed");
    let secret_dir = tempfile::tempdir()?;
    std::fs::set_permissions(secret_dir.path(), std::fs::Permissions::from_mode(0o755))?;
    let secret = secret_dir.path().join("s");
    std::fs::write(&secret, "rootless-secret")?;
    std::os::unix::fs::chown(&secret, Some(uid), Some(gid))?;
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600))?;
    let overlay_dir = tempfile::tempdir()?;
    std::fs::set_permissions(overlay_dir.path(), std::fs::Permissions::from_mode(0o755))?;
    for d in ["upper", "work"] {
        let p = overlay_dir.path().join(d);
        std::fs::create_dir(&p)?;
        std::os::unix::fs::chown(&p, Some(uid), Some(gid))?;
    }
    let before = tree(root.path());
    let probe = match crate::network::host_address()? {
        Some(ip) => Some(crate::network::Probe::start(ip)?),
        None => None,
    };

    let out = Command::new("setpriv")
        .args([
            &format!("--reuid={uid}"),
            &format!("--regid={gid}"),
            "--init-groups",
        ])
        .arg(std::env::current_exe()?)
        .args([
            HELPER,
            &root.path().display().to_string(),
            &secret.display().to_string(),
            &overlay_dir.path().display().to_string(),
            &probe.as_ref().map(|p| p.script()).unwrap_or_default(),
        ])
        .env_remove("TMPDIR")
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    check!(
        out.status.success(),
        "helper failed: {}\n{text}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    check!(!text.contains("=== runner"), "runner setup failed:\n{text}");

    let ns = section(&text, "namespaces");
    let lines: Vec<&str> = ns.lines().collect();
    check!(lines.len() >= 7, "namespaces step:\n{ns}");
    check_eq!(&lines[..3], &["0", "0", "rootless"]);
    check!(
        lines[3].contains(hoist_runner::INIT_MARKER),
        "PID 1 is {:?}",
        lines[3]
    );
    let count: u32 = lines[4].parse()?;
    check!(count <= 6, "{count} processes visible");
    check_eq!(lines[5].trim(), "lo");
    // Root mapped to the user, plus the subordinate range.
    check_eq!(lines[6], "2");
    check!(ns.contains("status: exit status 0"), "{ns}");

    check_eq!(
        section(&text, "user"),
        "1000\n1000\n1000 10\n/home/app\nstatus: exit status 0\n"
    );
    check_eq!(section(&text, "exit"), "status: exit status 7\n");
    check_eq!(section(&text, "signal"), "status: killed by signal 9\n");
    check_eq!(
        section(&text, "secret"),
        "rootless-secret\n400 0\nstatus: exit status 0\n"
    );
    let limits = section(&text, "limits");
    check!(
        limits.contains("error:") && limits.contains("cgroup"),
        "limits without a delegated cgroup should be refused clearly: {limits}"
    );
    // Overlay inside the user namespace (Linux >= 5.11): the upper dir gets
    // only what the step wrote.
    check_eq!(section(&text, "overlay"), "ovl\nstatus: exit status 0\n");
    check_eq!(
        tree(&overlay_dir.path().join("upper")),
        vec![PathBuf::from("made")]
    );
    if let Some(probe) = &probe {
        let network = section(&text, "network");
        probe.check(network)?;
        check!(network.contains("status: exit status 0"), "{network}");
    }
    check_eq!(tree(root.path()), before);
    check!(
        Path::new(&root.path().join("bin/busybox")).exists(),
        "rootfs damaged"
    );
    Ok(())
}
