//! ONBUILD triggers and the config instructions, as `docker inspect` shows them.

use std::fs;

use super::common::Env;

#[test]
fn onbuild_triggers_run_after_from_and_are_not_inherited() {
    hoist_testutil::require_root!();
    let env = Env::new();
    env.write("trigger.txt", "from the child's context\n");
    env.write(
        "base.Dockerfile",
        "FROM busybox\n\
         ONBUILD RUN echo first > /onbuild-order\n\
         ONBUILD COPY trigger.txt /from-trigger.txt\n\
         ONBUILD RUN echo second >> /onbuild-order\n\
         RUN echo base > /base\n",
    );
    let base_file = env.context.path().join("base.Dockerfile");
    env.build(&["-t", "onbase:1", "-f", base_file.to_str().unwrap()])
        .assert_ok();
    let base = env.config("onbase:1");
    assert_eq!(
        base["config"]["OnBuild"],
        serde_json::json!([
            "RUN echo first > /onbuild-order",
            "COPY trigger.txt /from-trigger.txt",
            "RUN echo second >> /onbuild-order"
        ])
    );
    assert!(!env.context.path().join("onbuild-order").exists());

    env.dockerfile("FROM onbase:1\nRUN cat /onbuild-order > /seen-by-child\n");
    let (_, child) = env.build_fs("onchild:1", &[]);
    assert_eq!(
        fs::read_to_string(child.join("onbuild-order")).unwrap(),
        "first\nsecond\n"
    );
    assert_eq!(
        fs::read_to_string(child.join("seen-by-child")).unwrap(),
        "first\nsecond\n",
        "triggers run right after FROM, before the child's own steps"
    );
    assert_eq!(
        fs::read_to_string(child.join("from-trigger.txt")).unwrap(),
        "from the child's context\n"
    );
    let config = env.config("onchild:1");
    assert!(
        config["config"]["OnBuild"].is_null()
            || config["config"]["OnBuild"] == serde_json::json!([]),
        "triggers are not inherited: {}",
        config["config"]
    );

    // A grandchild does not run them again.
    env.dockerfile("FROM onchild:1\nRUN cat /onbuild-order > /grand\n");
    let (_, grand) = env.build_fs("ongrand:1", &[]);
    assert_eq!(
        fs::read_to_string(grand.join("grand")).unwrap(),
        "first\nsecond\n"
    );
}

#[test]
fn config_instructions_as_docker_inspect_shows_them() {
    hoist_testutil::require_root!();
    let env = Env::new();
    env.dockerfile(
        "FROM busybox\n\
         SHELL [\"/bin/sh\", \"-ec\"]\n\
         RUN echo $0 > /shell-was\n\
         HEALTHCHECK --interval=5s --timeout=3s --start-period=10s --start-interval=2s --retries=4 CMD wget -q localhost || exit 1\n\
         STOPSIGNAL SIGQUIT\n\
         VOLUME [\"/data\", \"/logs\"]\n\
         VOLUME /cache\n\
         EXPOSE 80 443/tcp 53/udp 8000-8002\n\
         CMD serve\n",
    );
    let (_, root) = env.build_fs("config:1", &[]);
    assert_eq!(
        fs::read_to_string(root.join("shell-was")).unwrap(),
        "/bin/sh\n"
    );
    let c = &env.config("config:1")["config"];
    assert_eq!(c["Shell"], serde_json::json!(["/bin/sh", "-ec"]));
    assert_eq!(
        c["Cmd"],
        serde_json::json!(["/bin/sh", "-ec", "serve"]),
        "shell-form CMD uses SHELL"
    );
    assert_eq!(
        c["Healthcheck"],
        serde_json::json!({
            "Test": ["CMD-SHELL", "wget -q localhost || exit 1"],
            "Interval": 5_000_000_000u64,
            "Timeout": 3_000_000_000u64,
            "StartPeriod": 10_000_000_000u64,
            "StartInterval": 2_000_000_000u64,
            "Retries": 4
        })
    );
    assert_eq!(c["StopSignal"], "SIGQUIT");
    assert_eq!(
        c["Volumes"],
        serde_json::json!({"/cache": {}, "/data": {}, "/logs": {}})
    );
    assert_eq!(
        c["ExposedPorts"],
        serde_json::json!({
            "443/tcp": {}, "53/udp": {}, "80/tcp": {},
            "8000/tcp": {}, "8001/tcp": {}, "8002/tcp": {}
        })
    );

    env.dockerfile("FROM config:1\nHEALTHCHECK NONE\n");
    env.build(&["-t", "config:2"]).assert_ok();
    let c = &env.config("config:2")["config"];
    assert_eq!(c["Healthcheck"], serde_json::json!({"Test": ["NONE"]}));
}
