//! What `hoist run` runs: Docker's ENTRYPOINT/CMD table, arguments and
//! `--entrypoint`, exit codes, `-e`, `-w`, `-u`.

use super::common::{Env, Run};

/// Builds `tag` from busybox with `lines` added to the Dockerfile.
fn image(env: &Env, tag: &str, lines: &str) {
    env.dockerfile(&format!("FROM busybox\n{lines}\n"));
    env.build(&["-t", tag]).assert_ok();
}

fn run(env: &Env, args: &[&str]) -> Run {
    let mut all = vec!["run"];
    all.extend_from_slice(args);
    env.hoist().run(&all)
}

/// stdout of a successful run.
fn output(env: &Env, args: &[&str]) -> String {
    let run = run(env, args);
    run.assert_ok();
    run.stdout
}

// Docker's reference table "Understand how CMD and ENTRYPOINT interact",
// with exec_entry = exec_cmd = echo, p1_entry = E, p1_cmd = C, p2_cmd = D.
// One test per row (a CMD form); each checks the three ENTRYPOINT columns.
const NO_ENTRYPOINT: &str = "";
const SHELL_ENTRYPOINT: &str = "ENTRYPOINT echo E";
const EXEC_ENTRYPOINT: &str = "ENTRYPOINT [\"echo\", \"E\"]";

fn row(env: &Env, cmd: &str) -> [Run; 3] {
    [NO_ENTRYPOINT, SHELL_ENTRYPOINT, EXEC_ENTRYPOINT].map(|entry| {
        image(env, "t:row", &format!("{entry}\n{cmd}"));
        run(env, &["t:row"])
    })
}

#[test]
fn table_row_no_cmd() {
    hoist_testutil::require_root!();
    let env = Env::new();
    let [none, shell, exec] = row(&env, "");
    // error, not allowed
    assert_eq!(none.code(), 125, "{}", none.stderr);
    assert!(
        none.stderr.contains("no command specified"),
        "{}",
        none.stderr
    );
    // /bin/sh -c exec_entry p1_entry
    assert_eq!(shell.stdout, "E\n");
    // exec_entry p1_entry
    assert_eq!(exec.stdout, "E\n");
}

#[test]
fn table_row_exec_cmd() {
    hoist_testutil::require_root!();
    let env = Env::new();
    let [none, shell, exec] = row(&env, "CMD [\"echo\", \"C\"]");
    assert_eq!(none.stdout, "C\n");
    // /bin/sh -c exec_entry p1_entry: CMD is ignored
    assert_eq!(shell.stdout, "E\n");
    // exec_entry p1_entry exec_cmd p1_cmd
    assert_eq!(exec.stdout, "E echo C\n");
}

#[test]
fn table_row_shell_cmd() {
    hoist_testutil::require_root!();
    let env = Env::new();
    let [none, shell, exec] = row(&env, "CMD echo C");
    // /bin/sh -c exec_cmd p1_cmd
    assert_eq!(none.stdout, "C\n");
    assert_eq!(shell.stdout, "E\n");
    // exec_entry p1_entry /bin/sh -c exec_cmd p1_cmd
    assert_eq!(exec.stdout, "E /bin/sh -c echo C\n");
}

#[test]
fn table_row_cmd_as_parameters() {
    hoist_testutil::require_root!();
    let env = Env::new();
    let [none, shell, exec] = row(&env, "CMD [\"C\", \"D\"]");
    // p1_cmd p2_cmd: `C` is run as the program, and there is none
    assert_eq!(none.code(), 127, "{}", none.stderr);
    assert!(
        none.stderr
            .contains("exec: \"C\": executable file not found in $PATH"),
        "{}",
        none.stderr
    );
    assert_eq!(shell.stdout, "E\n");
    // exec_entry p1_entry p1_cmd p2_cmd
    assert_eq!(exec.stdout, "E C D\n");
}

#[test]
fn arguments_replace_cmd_and_entrypoint_flag_replaces_entrypoint() {
    hoist_testutil::require_root!();
    let env = Env::new();
    image(&env, "t:ep", "ENTRYPOINT [\"echo\", \"E\"]\nCMD [\"C\"]");
    assert_eq!(output(&env, &["t:ep", "x", "-n"]), "E x -n\n");
    // --entrypoint drops the image's CMD, the arguments follow it.
    assert_eq!(output(&env, &["--entrypoint", "echo", "t:ep"]), "\n");
    assert_eq!(output(&env, &["--entrypoint", "echo", "t:ep", "a"]), "a\n");
    // An empty --entrypoint clears it: CMD (or the arguments) alone.
    image(
        &env,
        "t:ep2",
        "ENTRYPOINT [\"false\"]\nCMD [\"echo\", \"cmd\"]",
    );
    assert_eq!(output(&env, &["--entrypoint", "", "t:ep2"]), "cmd\n");
    assert_eq!(
        output(&env, &["--entrypoint=", "t:ep2", "echo", "a"]),
        "a\n"
    );
}

#[test]
fn exit_codes_follow_docker_run() {
    hoist_testutil::require_root!();
    let env = Env::new();
    assert_eq!(run(&env, &["busybox", "sh", "-c", "exit 7"]).code(), 7);
    assert_eq!(run(&env, &["busybox", "true"]).code(), 0);
    // Killed by SIGTERM: 128 + 15.
    assert_eq!(
        run(&env, &["busybox", "sh", "-c", "kill -TERM $$"]).code(),
        143
    );
    // No such program: 127; not executable: 126.
    let missing = run(&env, &["busybox", "/no/such/program"]);
    assert_eq!(missing.code(), 127, "{}", missing.stderr);
    assert!(
        missing.stderr.contains("/no/such/program"),
        "{}",
        missing.stderr
    );
    let not_exec = run(&env, &["busybox", "/etc/passwd"]);
    assert_eq!(not_exec.code(), 126, "{}", not_exec.stderr);
    assert!(
        not_exec.stderr.contains("Permission denied"),
        "{}",
        not_exec.stderr
    );
    // hoist's own errors: 125.
    let unknown = run(&env, &["no-such-image:1", "true"]);
    assert_eq!(unknown.code(), 125, "{}", unknown.stderr);
    assert!(
        unknown.stderr.contains("no such image"),
        "{}",
        unknown.stderr
    );
    let bad_volume = run(&env, &["-v", "relative:/x", "busybox", "true"]);
    assert_eq!(bad_volume.code(), 125, "{}", bad_volume.stderr);
    assert!(
        bad_volume.stderr.contains("absolute host path"),
        "{}",
        bad_volume.stderr
    );
}

#[test]
fn env_flags_and_env_file_override_the_image() {
    hoist_testutil::require_root!();
    let env = Env::new();
    image(&env, "t:env", "ENV A=image B=image");
    let file = env.scratch.path().join("vars");
    std::fs::write(&file, "# a comment\n\nB=file\nC=file\n").unwrap();
    let out = output(
        &env,
        &[
            "--env-file",
            file.to_str().unwrap(),
            "-e",
            "C=flag",
            "-e",
            "D=x=y",
            "t:env",
            "sh",
            "-c",
            "echo $A $B $C $D",
        ],
    );
    assert_eq!(out, "image file flag x=y\n");
    // A bad line is named with its file and line.
    std::fs::write(&file, "OK=1\nBAD NAME=2\n").unwrap();
    let bad = run(
        &env,
        &["--env-file", file.to_str().unwrap(), "t:env", "true"],
    );
    assert_eq!(bad.code(), 125);
    assert!(
        bad.stderr.contains(&format!("{}:2", file.display())),
        "{}",
        bad.stderr
    );
}

#[test]
fn workdir_and_user_replace_the_images() {
    hoist_testutil::require_root!();
    let env = Env::new();
    image(&env, "t:wu", "WORKDIR /srv\nUSER app");
    assert_eq!(
        output(&env, &["t:wu", "sh", "-c", "pwd; id -u; id -g; echo $HOME"]),
        "/srv\n1000\n1000\n/home/app\n"
    );
    // A missing directory is made, owned by the user, as for RUN.
    assert_eq!(
        output(
            &env,
            &[
                "-w",
                "/new/dir",
                "-u",
                "nobody",
                "t:wu",
                "sh",
                "-c",
                "pwd; id -un; stat -c %u /new/dir"
            ]
        ),
        "/new/dir\nnobody\n65534\n"
    );
    assert_eq!(output(&env, &["-u", "0:10", "t:wu", "id", "-G"]), "10\n");
    let unknown = run(&env, &["-u", "nosuchuser", "t:wu", "true"]);
    assert_eq!(unknown.code(), 125, "{}", unknown.stderr);
    assert!(unknown.stderr.contains("nosuchuser"), "{}", unknown.stderr);
}
