//! Running the `hoist` binary as an unprivileged user in a user namespace
//! (what `buildah unshare` and rootlesskit do): the user is root inside,
//! its subordinate ids map the rest.

use std::fs;
use std::path::Path;
use std::process::Command;

use crate::cli::Run;

/// The unprivileged user of rootless tests (the runner's tests use the same one).
pub const USER: &str = "hoist-rootless-test";

/// Whether rootless runs can happen here; says why not ([`crate::cannot_run`]:
/// a failure under `HOIST_REQUIRE_ROOT_TESTS=1`).
pub fn available() -> bool {
    let mut missing: Vec<String> = ["setpriv", "unshare", "useradd", "newuidmap", "newgidmap"]
        .iter()
        .filter(|p| crate::which(p).is_none())
        .map(|p| format!("`{p}` is not installed"))
        .collect();
    let help = Command::new("unshare")
        .arg("--help")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    if !help.contains("--map-auto") {
        missing.push("`unshare` has no --map-auto (util-linux 2.38+)".into());
    }
    if missing.is_empty() {
        return true;
    }
    crate::cannot_run(&format!("rootless: {}", missing.join(", ")));
    false
}

/// The uid and gid of [`USER`], created with subordinate ids when missing.
pub fn user() -> (u32, u32) {
    let id = |flag: &str| -> Option<u32> {
        let out = Command::new("id").args([flag, USER]).output().ok()?;
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    };
    if id("-u").is_none() {
        let status = Command::new("useradd")
            .args(["--create-home", "--shell", "/bin/sh", USER])
            .status()
            .expect("useradd runs");
        assert!(status.success(), "useradd {USER} failed");
    }
    for file in ["/etc/subuid", "/etc/subgid"] {
        let mut text = fs::read_to_string(file).unwrap_or_default();
        if !text.lines().any(|l| l.starts_with(&format!("{USER}:"))) {
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            text.push_str(&format!("{USER}:300000:65536\n"));
            fs::write(file, text).expect("write subordinate ids");
        }
    }
    tun_device_for_users();
    (id("-u").expect("uid"), id("-g").expect("gid"))
}

/// RUN steps' default network: slirp4netns opens /dev/net/tun as the user.
/// Debian's udev rules make it 0666 (the tun driver checks capabilities in
/// the namespace, not the file mode, for what it creates); a machine without
/// udev may have left it 0600.
fn tun_device_for_users() {
    use std::os::unix::fs::PermissionsExt;
    let tun = Path::new("/dev/net/tun");
    if let Ok(meta) = fs::metadata(tun) {
        if meta.permissions().mode() & 0o666 != 0o666 {
            fs::set_permissions(tun, fs::Permissions::from_mode(0o666))
                .expect("make /dev/net/tun 0666 as udev does");
        }
    }
}

/// `bin ARGS` as [`USER`] in a new user namespace (mapped to root there, with
/// its subordinate ids) and mount namespace, with `HOME` and `TMPDIR` in
/// `work` (which the user must be able to reach).
pub fn command(bin: &Path, work: &Path, tmp: &Path) -> Command {
    let (uid, gid) = user();
    let mut command = Command::new("setpriv");
    command
        .arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"))
        .arg("--init-groups")
        .args([
            "unshare",
            "--user",
            "--map-root-user",
            "--map-auto",
            "--mount",
        ])
        .arg(bin)
        .env("HOME", work)
        .env("TMPDIR", tmp)
        .current_dir(work);
    command
}

/// Runs `command` (from [`command`]) with `args` to the end.
pub fn run(mut command: Command, args: &[&str]) -> Run {
    crate::cli::run(command.args(args), None)
}
