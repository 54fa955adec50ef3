//! COPY and ADD in full: --chmod, --chown, --exclude, --parents, --from an
//! image, --link, and destinations through symlinks.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use super::common::{mode, owner, Env};

#[test]
fn copy_flags_and_symlinked_destinations() {
    hoist_testutil::require_root!();
    let env = Env::new();
    env.write("f.txt", "f\n");
    fs::set_permissions(
        env.context.path().join("f.txt"),
        fs::Permissions::from_mode(0o664),
    )
    .unwrap();
    env.write("dir/a.txt", "a\n");
    env.write("dir/run.sh", "#!/bin/sh\n");
    fs::set_permissions(
        env.context.path().join("dir/run.sh"),
        fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    env.write("dir/x.log", "log\n");
    env.write("dir/sub/skip", "skip\n");
    env.write("dir/sub/keep", "keep\n");
    env.write("a.txt", "top a\n");
    env.write("b.txt", "top b\n");
    env.write("p/q/c.txt", "c\n");
    env.write("x/y/z.txt", "z\n");
    let escape = format!("/hoist-escape-test-{}", std::process::id());
    env.dockerfile(&format!(
        "FROM busybox AS base\n\
         RUN mkdir /real && ln -s /real /link && ln -s {escape} /escape && ln -s ../../../.. /up\n\
         FROM base\n\
         COPY --chmod=u+x,go-w f.txt /sym/f.txt\n\
         COPY --chmod=a=rX dir /symdir/\n\
         COPY --chmod=0600 f.txt /octal.txt\n\
         COPY --chown=app:wheel dir/a.txt /owned/a.txt\n\
         COPY --chown=1234 f.txt /owned/n.txt\n\
         COPY --exclude=*.log --exclude=sub/skip dir /ex/\n\
         COPY --exclude=b.txt *.txt /ex2/\n\
         COPY --parents p/q/c.txt x/./y/z.txt /par/\n\
         COPY --from=busybox:latest /etc/group /from-image-group\n\
         COPY f.txt /link/\n\
         COPY f.txt /escape/x\n\
         COPY f.txt /up/up-x\n",
    ));
    let (_, root) = env.build_fs("copy:1", &[]);
    let read = |p: &str| fs::read_to_string(root.join(p)).unwrap();
    assert_eq!(mode(&root.join("sym/f.txt")), 0o744);
    assert_eq!(mode(&root.join("symdir/a.txt")), 0o444);
    assert_eq!(mode(&root.join("symdir/run.sh")), 0o555);
    assert_eq!(mode(&root.join("symdir/sub")), 0o555);
    assert_eq!(mode(&root.join("octal.txt")), 0o600);
    assert_eq!(owner(&root.join("owned/a.txt")), (1000, 10));
    assert_eq!(owner(&root.join("owned/n.txt")), (1234, 1234));
    assert_eq!(owner(&root.join("ex/a.txt")), (0, 0));
    assert!(root.join("ex/a.txt").is_file());
    assert!(root.join("ex/sub/keep").is_file());
    assert!(!root.join("ex/x.log").exists());
    assert!(!root.join("ex/sub/skip").exists());
    assert_eq!(read("ex2/a.txt"), "top a\n");
    assert!(!root.join("ex2/b.txt").exists());
    assert_eq!(read("par/p/q/c.txt"), "c\n");
    assert_eq!(read("par/y/z.txt"), "z\n");
    assert!(!root.join("par/x").exists());
    assert!(read("from-image-group").contains("app:x:1000:"));
    assert_eq!(
        read("real/f.txt"),
        "f\n",
        "a symlinked directory is followed"
    );
    assert_eq!(
        read(&format!("{}/x", escape.trim_start_matches('/'))),
        "f\n",
        "an absolute symlink resolves inside the image"
    );
    assert!(
        !std::path::Path::new(&escape).exists(),
        "nothing is written outside the rootfs"
    );
    assert_eq!(read("up-x"), "f\n", "`..` stops at the image's root");
}

#[test]
fn copy_link_layers_stay_cached_when_the_base_changes() {
    hoist_testutil::require_root!();
    let env = Env::new();
    env.write("a.txt", "linked\n");
    env.dockerfile(
        "FROM busybox\n\
         ARG MARK\n\
         RUN echo $MARK > /mark\n\
         COPY --link --chmod=640 a.txt /linked/\n",
    );
    let (first_run, first) = env.build_fs("link:1", &["--build-arg", "MARK=1"]);
    let (second_run, second) = env.build_fs("link:2", &["--build-arg", "MARK=2"]);
    assert_eq!(fs::read_to_string(first.join("mark")).unwrap(), "1\n");
    assert_eq!(fs::read_to_string(second.join("mark")).unwrap(), "2\n");
    for root in [&first, &second] {
        assert_eq!(
            fs::read_to_string(root.join("linked/a.txt")).unwrap(),
            "linked\n"
        );
        assert_eq!(mode(&root.join("linked/a.txt")), 0o640);
        assert!(root.join("bin/busybox").is_file());
    }
    let lines: Vec<&str> = second_run.stderr.lines().collect();
    let copy_line = lines
        .iter()
        .position(|l| l.ends_with("COPY --link --chmod=640 a.txt /linked/"))
        .unwrap_or_else(|| panic!("no COPY step in\n{}", second_run.stderr));
    assert!(
        lines[copy_line + 1].ends_with(" CACHED"),
        "the --link layer is reused over a new base:\n{}",
        second_run.stderr
    );
    assert!(!first_run.stderr.is_empty());
    let diff_ids = |img: &str| env.config(img)["rootfs"]["diff_ids"].clone();
    let (a, b) = (diff_ids("link:1"), diff_ids("link:2"));
    let (a, b) = (a.as_array().unwrap(), b.as_array().unwrap());
    assert_eq!(a.len(), 3);
    assert_eq!(a.last(), b.last(), "the same layer on both bases");
    assert_ne!(a[1], b[1]);
}

#[test]
fn copy_link_chown_names_resolve_in_the_stage_below() {
    hoist_testutil::require_root!();
    let env = Env::new();
    env.write("a.txt", "a\n");
    env.write("b.txt", "b\n");
    env.dockerfile(
        "FROM busybox\n\
         ARG MARK\n\
         ARG APPUID\n\
         RUN echo \"svc:x:$APPUID:4242::/home/app:/bin/sh\" >> /etc/passwd \
             && echo 'grp:x:777:' >> /etc/group && echo $MARK > /mark\n\
         COPY --link --chown=svc:grp a.txt /linked/\n\
         COPY --link --chown=svc b.txt /linked/\n",
    );
    let build = |tag: &str, mark: &str, uid: &str| {
        env.build_fs(
            tag,
            &[
                "--build-arg",
                &format!("MARK={mark}"),
                "--build-arg",
                &format!("APPUID={uid}"),
            ],
        )
    };
    let (_, first) = build("linkown:1", "1", "1500");
    let (second_run, second) = build("linkown:2", "2", "1500");
    let (third_run, third) = build("linkown:3", "3", "1600");
    assert_eq!(fs::read_to_string(second.join("mark")).unwrap(), "2\n");
    for root in [&first, &second] {
        assert_eq!(owner(&root.join("linked/a.txt")), (1500, 777));
        assert_eq!(
            owner(&root.join("linked/b.txt")),
            (1500, 4242),
            "a user alone takes its primary group from the stage's passwd"
        );
    }
    assert_eq!(owner(&third.join("linked/a.txt")), (1600, 777));
    assert_eq!(owner(&third.join("linked/b.txt")), (1600, 4242));
    let step_cached = |stderr: &str, step: &str| {
        let lines: Vec<&str> = stderr.lines().collect();
        let at = lines
            .iter()
            .position(|l| l.ends_with(step))
            .unwrap_or_else(|| panic!("no {step} in\n{stderr}"));
        lines[at + 1].ends_with(" CACHED")
    };
    let step = "COPY --link --chown=svc:grp a.txt /linked/";
    assert!(
        step_cached(&second_run.stderr, step),
        "same ids over a new base: the linked layer is reused\n{}",
        second_run.stderr
    );
    assert!(
        !step_cached(&third_run.stderr, step),
        "the name now means another uid: the layer is rebuilt\n{}",
        third_run.stderr
    );
    let diff_ids = |img: &str| env.config(img)["rootfs"]["diff_ids"].clone();
    let (a, b) = (diff_ids("linkown:1"), diff_ids("linkown:2"));
    let (a, b) = (a.as_array().unwrap(), b.as_array().unwrap());
    assert_eq!(a.len(), 4);
    assert_ne!(a[1], b[1], "the bases differ");
    assert_eq!(a[2..], b[2..], "the linked layers are the same bytes");

    env.dockerfile("FROM busybox\nCOPY --link --chown=nobody-here a.txt /x/\n");
    let failed = env.build(&["-t", "linkown:bad"]);
    assert!(
        failed.stderr.contains("unable to find user nobody-here"),
        "{}",
        failed.stderr
    );
}
