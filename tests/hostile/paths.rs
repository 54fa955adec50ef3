//! Paths: `..` in mount targets, symlinks at every depth of context, stage
//! and image sources, WORKDIR, and ADD archives with path tricks.

use std::fs;

use super::common::{assert_refused, Builder};
use crate::both_modes;

/// Either the build fails naming the Dockerfile line, or it succeeds; in both
/// cases the host is untouched (checked by the caller).
fn ok_or_names_line(run: &hoist_testutil::cli::Run) {
    assert!(
        run.status.success() || run.stderr.contains("Dockerfile:"),
        "a refused build names its line:\n{}",
        run.stderr
    );
}

both_modes!(tmpfs_target_with_dotdot, |b: &Builder| {
    let target = format!("{}/victimdir", b.sentinel.dotdot());
    let run = b.build(
        &format!("FROM busybox\nRUN --mount=type=tmpfs,target={target} touch {target}/planted\n"),
        &[],
    );
    run.assert_ok();
    b.assert_host_untouched(&run);
});

both_modes!(bind_target_with_dotdot, |b: &Builder| {
    b.write("a.txt", "context file");
    let target = format!("{}/victimfile", b.sentinel.dotdot());
    let run = b.build(
        &format!("FROM busybox\nRUN --mount=type=bind,source=a.txt,target={target} cat {target}\n"),
        &[],
    );
    run.assert_ok();
    assert!(run.stderr.contains("context file"), "{}", run.stderr);
    b.assert_host_untouched(&run);
});

both_modes!(cache_target_with_dotdot, |b: &Builder| {
    let target = format!("{}/newcachedir", b.sentinel.dotdot());
    let run = b.build(
        &format!("FROM busybox\nRUN --mount=type=cache,target={target} touch {target}/x\n"),
        &[],
    );
    run.assert_ok();
    b.assert_host_untouched(&run);
});

both_modes!(secret_target_with_dotdot, |b: &Builder| {
    let src = b.context.join("../secret.txt");
    fs::write(&src, "build secret").unwrap();
    let target = format!("{}/victimfile", b.sentinel.dotdot());
    let arg = format!("id=s,src={}", src.display());
    let run = b.build(
        &format!("FROM busybox\nRUN --mount=type=secret,id=s,target={target} cat {target}\n"),
        &["--secret", &arg],
    );
    run.assert_ok();
    b.assert_host_untouched(&run);
});

both_modes!(nested_targets_with_dotdot_and_symlinks, |b: &Builder| {
    // A mount target below a symlink the image plants, and one below another
    // mount (a tmpfs), both pointing at the host's sentinel.
    let s = b.sentinel.path().display().to_string();
    let run = b.build(
        &format!(
            "FROM busybox\n\
             RUN ln -s {s} /link && mkdir -p /deep/a/b && ln -s ../../../../../../..{s} /deep/a/b/c\n\
             RUN --mount=type=tmpfs,target=/link/victimdir --mount=type=tmpfs,target=/deep/a/b/c/newdir \
                 --mount=type=tmpfs,target=/t --mount=type=cache,target=/t/../../..{s}/victimdir/sub true\n"
        ),
        &[],
    );
    ok_or_names_line(&run);
    b.assert_host_untouched(&run);
});

both_modes!(copy_from_stage_through_symlinked_dir, |b: &Builder| {
    let s = b.sentinel.path().display().to_string();
    let run = b.build(
        &format!(
            "FROM busybox AS a\nRUN ln -s {s} /h\nFROM busybox\nCOPY --from=a /h/victimfile /stolen\n"
        ),
        &[],
    );
    assert_refused(&run, 4, "not found");
    b.assert_host_untouched(&run);
});

both_modes!(copy_from_stage_symlinks_at_every_depth, |b: &Builder| {
    let s = b.sentinel.path().display().to_string();
    let stage = format!(
        "FROM busybox AS a\n\
         RUN mkdir -p /a/b/c && ln -s ../../../../../../../..{s} /a/b/c/up && ln -s {s}/victimfile /f \
             && ln -s /a/b/c/up /a/chain && ln -s {s} /h\n"
    );
    for (copy, line_words) in [
        ("COPY --from=a /a/b/c/up/victimfile /stolen", "not found"),
        ("COPY --from=a /a/chain/victimfile2 /stolen", "not found"),
        ("COPY --from=a /f /stolen", "not found"),
        ("COPY --from=a --exclude=nothing /h/ /stolen/", "not found"),
        // A wildcard that matches nothing copies nothing (BuildKit's
        // AllowEmptyWildcard): the build may succeed, with nothing stolen.
        ("COPY --from=a /h/* /stolen/", ""),
        ("COPY --from=a --parents /h/victim* /stolen/", ""),
    ] {
        let run = b.build(&format!("{stage}FROM busybox\n{copy}\n"), &[]);
        if line_words.is_empty() {
            ok_or_names_line(&run);
        } else {
            assert_refused(&run, 4, line_words);
        }
        b.assert_host_untouched(&run);
    }
});

both_modes!(copy_from_image_with_symlink, |b: &Builder| {
    let s = b.sentinel.path().display().to_string();
    b.build(
        &format!("FROM busybox\nRUN ln -s {s} /h && ln -s {s}/victimfile /f\n"),
        &["-t", "evil:1"],
    )
    .assert_ok();
    for copy in [
        "COPY --from=evil:1 /h/victimfile /stolen",
        "COPY --from=evil:1 /f /stolen",
    ] {
        let run = b.build(&format!("FROM busybox\n{copy}\n"), &[]);
        assert_refused(&run, 2, "not found");
        b.assert_host_untouched(&run);
    }
    let run = b.build(
        "FROM evil:1\nRUN --mount=type=bind,from=evil:1,source=/h/victimfile,target=/x cat /x\n",
        &[],
    );
    assert_refused(&run, 2, "not found");
    b.assert_host_untouched(&run);
});

both_modes!(context_symlinks, |b: &Builder| {
    let s = b.sentinel.path();
    b.symlink("out", s);
    b.symlink(
        "deep/er/up",
        "../../../../../../../../..".to_string() + &s.display().to_string(),
    );
    b.symlink("file", s.join("victimfile"));
    for (step, words) in [
        ("COPY out/victimfile /", "not found"),
        ("ADD out/victimfile2 /", "not found"),
        ("COPY deep/er/up/victimfile /", "not found"),
        ("COPY file /stolen", "not found"),
        (
            "RUN --mount=type=bind,source=out/victimfile,target=/x cat /x",
            "not found",
        ),
        ("COPY out/* /x/", ""),
    ] {
        let run = b.build(&format!("FROM busybox\n{step}\n"), &[]);
        if words.is_empty() {
            ok_or_names_line(&run);
        } else {
            assert_refused(&run, 2, words);
        }
        b.assert_host_untouched(&run);
    }
    // Copying the symlinks themselves (a directory holding them) is fine: they
    // stay symlinks in the image, pointing nowhere inside it.
    let run = b.build(
        "FROM busybox\nCOPY deep /deep\nRUN test -L /deep/er/up && ! cat /deep/er/up/victimfile\n",
        &[],
    );
    run.assert_ok();
    b.assert_host_untouched(&run);
});

both_modes!(workdir_through_symlinks_and_dotdot, |b: &Builder| {
    let s = b.sentinel.path().display().to_string();
    let run = b.build(
        &format!(
            "FROM busybox\nRUN ln -s {s} /w\nWORKDIR /w/newdir\nWORKDIR /../../../../..{s}/newdir2\nRUN pwd\n"
        ),
        &[],
    );
    run.assert_ok();
    b.assert_host_untouched(&run);
});

both_modes!(add_archive_tricks, |b: &Builder| {
    let s = b.sentinel.path().display().to_string();
    let mut data = Vec::new();
    {
        let mut t = tar::Builder::new(&mut data);
        let mut entry = |kind: tar::EntryType, name: &str, link: Option<&str>, body: &[u8]| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(kind);
            h.set_size(body.len() as u64);
            h.set_mode(0o777);
            // Names are written raw: the tar crate refuses `..` in set_path.
            let raw = h.as_old_mut();
            raw.name[..name.len()].copy_from_slice(name.as_bytes());
            if let Some(l) = link {
                raw.linkname[..l.len()].copy_from_slice(l.as_bytes());
            }
            h.set_cksum();
            t.append(&h, body).unwrap();
        };
        entry(tar::EntryType::Symlink, "out", Some(&s), b"");
        entry(
            tar::EntryType::Regular,
            "out/victimfile",
            None,
            b"overwritten",
        );
        entry(
            tar::EntryType::Link,
            "hard",
            Some(&format!("{s}/victimfile2")),
            b"",
        );
        entry(tar::EntryType::Link, "hard2", Some("out/victimfile2"), b"");
        entry(
            tar::EntryType::Regular,
            "../../../../../../../tmp/escaped",
            None,
            b"x",
        );
        t.finish().unwrap();
    }
    fs::write(b.context.join("evil.tar"), &data).unwrap();
    let run = b.build("FROM busybox\nADD evil.tar /dest/\n", &[]);
    ok_or_names_line(&run);
    b.assert_host_untouched(&run);
    assert!(!std::path::Path::new("/tmp/escaped").exists());
});

both_modes!(
    symlinked_dockerfile_and_dockerignore_stay_in_the_context,
    |b: &Builder| {
        // A context whose Dockerfile and .dockerignore point at host files:
        // the build reads neither (a parse error would quote the secret).
        b.symlink("Dockerfile", b.sentinel.path().join("victimfile"));
        b.symlink(".dockerignore", b.sentinel.path().join("victimfile"));
        let run = b.hoist(&["build", "--progress", "plain", b.context.to_str().unwrap()]);
        assert_ne!(run.code(), 0, "{}", run.stderr);
        assert!(run.stderr.contains("no Dockerfile"), "{}", run.stderr);
        b.assert_host_untouched(&run);

        // A real Dockerfile beside a .dockerignore link: the ignore file is not
        // the host's (it would exclude nothing here anyway), the build works.
        std::fs::remove_file(b.context.join("Dockerfile")).unwrap();
        let run = b.build("FROM busybox\nCOPY . /ctx\n", &[]);
        run.assert_ok();
        b.assert_host_untouched(&run);
    }
);
