//! `hoist build --load`: into `docker load` when a daemon answers, a clear
//! message when none does.

use std::process::Command;

use super::common::Env;

fn daemon_reachable() -> bool {
    Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn load_streams_into_docker_or_says_why_not() {
    hoist_testutil::require_root!();
    let env = Env::new();
    env.dockerfile("FROM busybox\nRUN echo loaded > /loaded\n");
    let tag = format!("hoist-load-test:{}", std::process::id());
    let run = env.build(&["-t", &tag, "--load"]);
    if daemon_reachable() {
        run.assert_ok();
        let out = Command::new("docker")
            .args(["run", "--rm", &tag, "cat", "/loaded"])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "loaded\n");
        let _ = Command::new("docker").args(["rmi", &tag]).output();
    } else {
        assert!(!run.status.success());
        assert!(
            run.stderr.contains("--load: no Docker daemon is reachable"),
            "{}",
            run.stderr
        );
        assert!(run.stderr.contains("hoist save"), "{}", run.stderr);
        assert!(
            !run.stderr.contains("RUN echo loaded"),
            "refused before building:\n{}",
            run.stderr
        );
    }
}
