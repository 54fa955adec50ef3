//! Users, capabilities, no_new_privs, seccomp.

use libtest_mimic::Failed;

use crate::util::{stdout_of, Env, Root};
use crate::{check, check_eq, need_root};

pub fn user_ids_groups_home(env: &Env) -> Result<(), Failed> {
    need_root!();
    let root = Root::new();
    let script = "id -u; id -g; id -G; echo $HOME";
    for (user, want) in [
        ("", "0\n0\n0\n/root\n"),
        ("app", "1000\n1000\n1000 10\n/home/app\n"),
        ("app:daemon", "1000\n1\n1\n/home/app\n"),
        ("1234:5678", "1234\n5678\n5678\n/\n"),
        ("daemon", "1\n1\n1\n/usr/sbin\n"),
    ] {
        let mut spec = root.spec(script);
        spec.user = user.into();
        let out = stdout_of(env, &spec)?;
        check_eq!((user, out.as_str()), (user, want));
    }
    // HOME from the spec wins.
    let mut spec = root.spec("echo $HOME");
    spec.user = "app".into();
    spec.env.push("HOME=/custom".into());
    check_eq!(stdout_of(env, &spec)?, "/custom\n".to_string());
    Ok(())
}

fn status_field(out: &str, key: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Docker's default capability set as a /proc mask.
const DOCKER_CAPS: &str = "00000000a80425fb";

pub fn capabilities_nnp_seccomp(env: &Env) -> Result<(), Failed> {
    need_root!();
    let root = Root::new();
    let script = "cat /proc/self/status; unshare -U true 2>/dev/null && echo unshare-allowed || echo unshare-refused";
    let out = stdout_of(env, &root.spec(script))?;
    check_eq!(status_field(&out, "CapEff"), DOCKER_CAPS);
    check_eq!(status_field(&out, "CapBnd"), DOCKER_CAPS);
    check_eq!(status_field(&out, "CapInh"), "0000000000000000");
    check_eq!(status_field(&out, "CapAmb"), "0000000000000000");
    check_eq!(status_field(&out, "NoNewPrivs"), "1");
    check_eq!(status_field(&out, "Seccomp"), "2");
    check!(
        out.contains("unshare-refused"),
        "unshare was allowed:\n{out}"
    );

    let mut spec = root.spec(script);
    spec.user = "app".into();
    let out = stdout_of(env, &spec)?;
    check_eq!(status_field(&out, "CapEff"), "0000000000000000");
    check_eq!(status_field(&out, "CapPrm"), "0000000000000000");
    check_eq!(status_field(&out, "CapBnd"), DOCKER_CAPS);

    // Both can be turned off; then a user namespace may be made.
    let mut spec = root.spec(script);
    spec.seccomp = false;
    spec.no_new_privileges = false;
    let out = stdout_of(env, &spec)?;
    check_eq!(status_field(&out, "NoNewPrivs"), "0");
    check_eq!(status_field(&out, "Seccomp"), "0");
    check!(
        out.contains("unshare-allowed"),
        "unshare refused without seccomp:\n{out}"
    );
    Ok(())
}

/// `all_capabilities` (RUN --security=insecure) is privileged as BuildKit's
/// insecure mode is: /sys writable, no masked or read-only /proc paths, the
/// host's devices in /dev.
pub fn privileged_sys_proc_dev(env: &Env) -> Result<(), Failed> {
    need_root!();
    let root = Root::new();
    let script = "awk '$5 == \"/sys\" {print substr($6, 1, 2)}' /proc/self/mountinfo; \
                  test -c /proc/keys && echo keys-masked || echo keys-visible; \
                  awk '$5 == \"/proc/sys\" {print substr($6, 1, 2)}' /proc/self/mountinfo | grep -q ro && echo proc-sys-ro || echo proc-sys-rw; \
                  test -c /dev/loop-control && echo loop-control || echo no-loop-control";
    let confined = stdout_of(env, &root.spec(script))?;
    let mut spec = root.spec(script);
    spec.all_capabilities = true;
    spec.seccomp = false;
    let privileged = stdout_of(env, &spec)?;
    let host_has_loop = std::path::Path::new("/dev/loop-control").exists();
    check_eq!(
        confined,
        "ro\nkeys-masked\nproc-sys-ro\nno-loop-control\n".to_string()
    );
    check_eq!(
        privileged,
        format!(
            "rw\nkeys-visible\nproc-sys-rw\n{}\n",
            if host_has_loop {
                "loop-control"
            } else {
                "no-loop-control"
            }
        )
    );
    Ok(())
}
