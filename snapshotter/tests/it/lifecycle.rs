//! The snapshot lifecycle: kinds, names, parents, errors, records on disk,
//! mounts as data, deep overlay chains.

use std::fs;

use hoist_snapshotter::{
    Backend, BackendChoice, ErrorKind, JsonFileRecords, Kind, LocalSnapshotter, SnapshotRecords,
    Snapshotter,
};

use crate::util::*;

fn lifecycle(choice: BackendChoice) {
    let (_tmp, root) = temp_root();
    let s = LocalSnapshotter::open(&root, choice).unwrap();
    let m = s.prepare("a", None).unwrap();
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].kind, "bind");
    assert!(!m[0].is_read_only());
    assert_eq!(
        s.mounts("a").unwrap(),
        m,
        "mounts() gives the same mounts again"
    );
    with_mounted(&s, "a", |p| write(p.join("f"), b"1"));

    // A parent must be committed.
    let err = s.prepare("b", Some("a")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
    assert!(err.to_string().contains("`a`"), "{err}");

    let active_dir = s.own_dir("a").unwrap();
    assert_eq!(s.committed_own_dir("a").unwrap(), None, "not committed yet");
    assert_eq!(s.committed_dir("a").unwrap(), None, "not committed yet");
    s.commit("base", "a").unwrap();
    assert_eq!(s.stat("a").unwrap_err().kind(), ErrorKind::NotFound);
    let info = s.stat("base").unwrap();
    assert_eq!(info.kind, Kind::Committed);
    // The overlay backend keeps a snapshot's own files apart; the native
    // one has none to give.
    let own = s.committed_own_dir("base").unwrap();
    assert_eq!(own, s.own_dir("base").unwrap());
    assert_eq!(own, active_dir, "committing moves no files");
    assert_eq!(own.is_some(), s.backend() == Backend::Overlay);
    if let Some(dir) = own {
        assert_eq!(fs::read(dir.join("f")).unwrap(), b"1");
    }
    assert_eq!(s.committed_own_dir("missing").unwrap(), None);
    // The whole directory, on every backend: what the store's size counts.
    let whole = s.committed_dir("base").unwrap().expect("committed");
    assert!(whole.starts_with(&root), "{}", whole.display());
    assert_eq!(fs::read(whole.join("fs/f")).unwrap(), b"1");
    assert_eq!(s.committed_dir("missing").unwrap(), None);
    assert_eq!(info.parent, None);
    assert_eq!(
        s.mounts("base").unwrap_err().kind(),
        ErrorKind::FailedPrecondition
    );

    // Keys and names share one namespace.
    assert_eq!(
        s.prepare("base", None).unwrap_err().kind(),
        ErrorKind::AlreadyExists
    );

    let mounts = s.prepare("child", Some("base")).unwrap();
    if s.backend() == Backend::Overlay {
        assert_eq!(mounts[0].kind, "overlay");
        assert!(mounts[0].option("lowerdir").is_some());
        assert!(mounts[0].option("upperdir").is_some());
        assert!(mounts[0].option("workdir").is_some());
    } else {
        assert_eq!(mounts[0].kind, "bind");
    }
    with_mounted(&s, "child", |p| {
        assert_eq!(fs::read(p.join("f")).unwrap(), b"1");
        write(p.join("f"), b"2");
    });
    let view = s.view("look", Some("base")).unwrap();
    assert!(view[0].is_read_only());
    {
        let m = Mounted::new(&view);
        assert_eq!(
            fs::read(m.path().join("f")).unwrap(),
            b"1",
            "the base is unchanged"
        );
        assert!(
            fs::write(m.path().join("g"), b"x").is_err(),
            "views are read-only"
        );
    }
    assert_eq!(
        s.commit("nope", "look").unwrap_err().kind(),
        ErrorKind::FailedPrecondition
    );

    // remove refuses a parent with children and names them.
    let err = s.remove("base").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
    let msg = err.to_string();
    assert!(msg.contains("`child`") && msg.contains("`look`"), "{msg}");

    let keys: Vec<String> = s.list().unwrap().into_iter().map(|i| i.key).collect();
    assert_eq!(keys, ["base", "child", "look"]);

    s.remove("look").unwrap();
    s.remove("child").unwrap();
    s.remove("base").unwrap();
    assert!(s.list().unwrap().is_empty());
    let left: Vec<_> = fs::read_dir(root.join("snapshots")).unwrap().collect();
    assert!(left.is_empty(), "remove deletes the directories: {left:?}");
}

#[test]
fn lifecycle_overlay() {
    hoist_testutil::require_root!();
    lifecycle(BackendChoice::Overlay);
}

#[test]
fn lifecycle_native() {
    hoist_testutil::require_root!();
    lifecycle(BackendChoice::Native);
}

#[test]
fn automatic_choice_picks_overlay_here_and_records_survive_reopen() {
    hoist_testutil::require_root!();
    let (_tmp, root) = temp_root();
    {
        let s = LocalSnapshotter::open(&root, BackendChoice::Auto).unwrap();
        assert_eq!(s.backend(), Backend::Overlay);
        s.prepare("k", None).unwrap();
        s.commit("n", "k").unwrap();
    }
    let records = JsonFileRecords::new(root.join("records.json"));
    let set = records.read().unwrap();
    assert_eq!(set.snapshots["n"].kind, Kind::Committed);
    let s = LocalSnapshotter::open(&root, BackendChoice::Auto).unwrap();
    assert_eq!(s.stat("n").unwrap().kind, Kind::Committed);
    // No probe directories are left behind.
    let names: Vec<String> = fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.starts_with("probe")), "{names:?}");
}

#[test]
fn forcing_overlay_where_it_cannot_work_names_the_root() {
    hoist_testutil::require_root!();
    // A root on a read-only bind mount: the probe mount can't even be set up.
    let (_tmp, root) = temp_root();
    fs::create_dir_all(root.join("snapshots")).unwrap();
    let ro = hoist_snapshotter::Mount {
        kind: "bind".into(),
        source: root.clone(),
        options: vec!["rbind".into(), "ro".into()],
    };
    let guard = hoist_snapshotter::MountGuard::new(&[ro], &root).unwrap();
    let err = LocalSnapshotter::open(&root, BackendChoice::Overlay).unwrap_err();
    assert!(
        err.to_string().contains("overlayfs is not usable under"),
        "{err}"
    );
    guard.unmount().unwrap();
}

#[test]
fn a_root_keeps_its_backend() {
    hoist_testutil::require_root!();
    let (_tmp, root) = temp_root();
    LocalSnapshotter::open(&root, BackendChoice::Native).unwrap();
    // Auto follows the recorded choice instead of probing again.
    let s = LocalSnapshotter::open(&root, BackendChoice::Auto).unwrap();
    assert_eq!(s.backend(), Backend::Native);
    let err = LocalSnapshotter::open(&root, BackendChoice::Overlay).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
    assert!(
        err.to_string()
            .contains("uses the native backend, not overlay"),
        "{err}"
    );
}

/// Several opens of one new root at once (an autobuild worker's concurrent
/// builds) all succeed and agree on its backend; one that asks for the other
/// backend than the root got is refused, never recorded over it.
#[test]
fn concurrent_opens_of_a_new_root_agree_on_its_backend() {
    hoist_testutil::require_root!();
    for round in 0..20 {
        let (_tmp, root) = temp_root();
        let barrier = std::sync::Barrier::new(8);
        let results: Vec<_> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|i| {
                    let (root, barrier) = (&root, &barrier);
                    scope.spawn(move || {
                        // Mostly native, so that the opens meet at the marker
                        // (an overlay probe spreads them out); one forced
                        // overlay in odd rounds.
                        let choice = match i {
                            0 if round % 2 == 1 => BackendChoice::Overlay,
                            1 => BackendChoice::Auto,
                            _ => BackendChoice::Native,
                        };
                        barrier.wait();
                        (
                            choice,
                            LocalSnapshotter::open(root, choice).map(|s| s.backend()),
                        )
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let recorded = match fs::read_to_string(root.join("backend")).unwrap().as_str() {
            "native" => Backend::Native,
            "overlay" => Backend::Overlay,
            other => panic!("backend file says {other:?}"),
        };
        for (choice, result) in results {
            match (choice, result) {
                (BackendChoice::Auto, Ok(b)) => assert_eq!(b, recorded),
                (BackendChoice::Native, Ok(b)) | (BackendChoice::Overlay, Ok(b)) => {
                    assert_eq!(
                        b, recorded,
                        "{choice:?} opened, but the root records {recorded:?}"
                    )
                }
                (_, Err(e)) => {
                    assert_eq!(e.kind(), ErrorKind::FailedPrecondition, "{choice:?}: {e}");
                    assert!(e.to_string().contains("not"), "{e}");
                }
            }
        }
        let left: Vec<_> = fs::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("backend."))
            .collect();
        assert!(left.is_empty(), "temporary files left: {left:?}");
    }
}

#[test]
fn crash_leftovers_are_cleaned() {
    hoist_testutil::require_root!();
    let (_tmp, root) = temp_root();
    let s = LocalSnapshotter::open(&root, BackendChoice::Native).unwrap();
    s.prepare("k", None).unwrap();
    fs::create_dir_all(root.join("snapshots/new-abandoned/fs")).unwrap();
    let removed = s.cleanup().unwrap();
    assert_eq!(removed, [root.join("snapshots/new-abandoned")]);
    assert!(s.stat("k").is_ok());
}

/// 80 layers whose absolute paths make a lowerdir= string far longer than a
/// page: the mount helper falls back to relative paths from a forked child.
#[test]
fn deep_overlay_chain_mounts() {
    hoist_testutil::require_root!();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("a-rather-long-directory-name-".repeat(4));
    let s = LocalSnapshotter::open(&root, BackendChoice::Overlay).unwrap();
    let mut parent: Option<String> = None;
    for i in 0..80 {
        let key = format!("k{i}");
        s.prepare(&key, parent.as_deref()).unwrap();
        // Write straight into the upper dir: mounting 80 times is slow.
        let upper = match s.diff_source(&key).unwrap() {
            hoist_snapshotter::DiffSource::OverlayUpper { upper } => upper,
            hoist_snapshotter::DiffSource::Trees { upper, .. } => upper,
        };
        write(upper.join(format!("layer{i}")), format!("{i}").as_bytes());
        write(upper.join("top"), format!("{i}").as_bytes());
        let name = format!("n{i}");
        s.commit(&name, &key).unwrap();
        parent = Some(name);
    }
    let mounts = s.prepare("work", parent.as_deref()).unwrap();
    let options = mounts[0].options.join(",");
    assert!(
        options.len() > 4096,
        "the test must exceed a page: {}",
        options.len()
    );
    let m = Mounted::new(&mounts);
    assert_eq!(fs::read(m.path().join("layer0")).unwrap(), b"0");
    assert_eq!(fs::read(m.path().join("layer79")).unwrap(), b"79");
    assert_eq!(fs::read(m.path().join("top")).unwrap(), b"79");
    write(m.path().join("new"), b"writable");
    drop(m);
    let view = s.view("v", parent.as_deref()).unwrap();
    let m = Mounted::new(&view);
    assert_eq!(fs::read(m.path().join("layer40")).unwrap(), b"40");
}

/// Several threads preparing and committing at once: every record lands,
/// ids stay unique (the JSON records are updated under a file lock).
#[test]
fn concurrent_prepares_keep_every_record() {
    hoist_testutil::require_root!();
    let (_tmp, root) = temp_root();
    let s = std::sync::Arc::new(LocalSnapshotter::open(&root, BackendChoice::Native).unwrap());
    let handles: Vec<_> = (0..8)
        .map(|t| {
            let s = std::sync::Arc::clone(&s);
            std::thread::spawn(move || {
                for i in 0..10 {
                    let key = format!("t{t}-{i}");
                    s.prepare(&key, None).unwrap();
                    s.commit(&format!("{key}-done"), &key).unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let records = JsonFileRecords::new(root.join("records.json"));
    let set = records.read().unwrap();
    assert_eq!(set.snapshots.len(), 80);
    let mut ids: Vec<u64> = set.snapshots.values().map(|r| r.id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 80);
    assert_eq!(fs::read_dir(root.join("snapshots")).unwrap().count(), 80);
}

/// A layer whose hardlink points at a file of a lower layer: on overlay the
/// file is copied up into the new snapshot and linked there.
#[test]
fn hardlink_to_a_lower_layer_file() {
    hoist_testutil::require_root!();
    for choice in [BackendChoice::Overlay, BackendChoice::Native] {
        let (_tmp, root) = temp_root();
        let s = LocalSnapshotter::open(&root, choice).unwrap();
        s.prepare("k", None).unwrap();
        with_mounted(&s, "k", |p| {
            write(p.join("bin/busybox"), b"the binary");
            chmod(p.join("bin/busybox"), 0o755);
        });
        s.commit("base", "k").unwrap();

        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Link);
        h.set_mode(0o755);
        h.set_size(0);
        b.append_link(&mut h, "bin/sh", "bin/busybox").unwrap();
        let layer = b.into_inner().unwrap();

        s.prepare("k2", Some("base")).unwrap();
        s.apply("k2", &mut &layer[..], &Default::default()).unwrap();
        s.commit("top", "k2").unwrap();
        let t = committed_tree(&s, "top");
        assert_eq!(t["bin/sh"].data, t["bin/busybox"].data, "{choice:?}");
        assert_eq!(
            t["bin/sh"].link.as_deref(),
            Some("bin/busybox"),
            "{choice:?}"
        );
        assert_eq!(t["bin/sh"].mode, 0o755);
        // The base still has a single link.
        assert_eq!(committed_tree(&s, "base")["bin/busybox"].link, None);
    }
}

#[test]
fn overlay_refuses_roots_with_option_separators() {
    hoist_testutil::require_root!();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("a:b,c");
    let err = LocalSnapshotter::open(&root, BackendChoice::Overlay).unwrap_err();
    assert!(err.to_string().contains("contains `:` or `,`"), "{err}");
    let s = LocalSnapshotter::open(&root, BackendChoice::Auto).unwrap();
    assert_eq!(s.backend(), Backend::Native);
    s.prepare("k", None).unwrap();
    let mut seen = Vec::new();
    s.walk(&mut |info| {
        seen.push((info.key.clone(), info.kind));
        Ok(())
    })
    .unwrap();
    assert_eq!(seen, [("k".to_string(), Kind::Active)]);
}

/// A process killed after renaming a new snapshot's directory into place but
/// before writing its record leaves `snapshots/N` behind under the id the
/// next snapshot takes: that snapshot replaces it (the crash harness of
/// `tests/fsck/crash.rs` found this as `Directory not empty` on the next
/// build).
#[test]
fn a_leftover_directory_under_the_next_id_is_replaced() {
    let (_tmp, root) = temp_root();
    let s = LocalSnapshotter::open(&root, BackendChoice::Native).unwrap();
    s.prepare("a", None).unwrap();
    // The directory the next snapshot gets: one past the highest in use.
    let used: Vec<u64> = fs::read_dir(root.join("snapshots"))
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().to_str()?.parse().ok())
        .collect();
    let next = used.iter().max().unwrap() + 1;
    let leftover = root.join("snapshots").join(next.to_string());
    fs::create_dir_all(leftover.join("fs")).unwrap();
    fs::write(leftover.join("fs/stale"), b"from a killed process").unwrap();
    s.prepare("b", None).unwrap();
    with_mounted(&s, "b", |p| {
        assert!(!p.join("stale").exists(), "the leftover's files leaked");
    });
}

/// A writable overlay is mounted `volatile` (its unmount then skips a
/// `syncfs` of the whole filesystem), and the marker such a mount leaves
/// does not stop the same active snapshot from being mounted again.
#[test]
fn a_writable_overlay_is_volatile_and_mounts_again() {
    hoist_testutil::require_root!();
    let (_tmp, root) = temp_root();
    let s = LocalSnapshotter::open(&root, BackendChoice::Overlay).unwrap();
    s.prepare("a", None).unwrap();
    s.commit("base", "a").unwrap();
    let mounts = s.prepare("k", Some("base")).unwrap();
    let release = run("uname", &["-r"]);
    let mut version = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().unwrap_or(0));
    let (major, minor) = (version.next().unwrap_or(0), version.next().unwrap_or(0));
    // Linux 5.10 brought the option; older kernels mount without it.
    let expected = (major, minor) >= (5, 10);
    assert_eq!(s.volatile_mounts(), expected, "kernel {release}");
    assert_eq!(mounts[0].options.iter().any(|o| o == "volatile"), expected);
    let work = s
        .own_dir("k")
        .unwrap()
        .unwrap()
        .parent()
        .unwrap()
        .join("work");
    {
        let m = Mounted::new(&mounts);
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
        let target = m.path().to_str().unwrap();
        let line = mountinfo
            .lines()
            .find(|l| l.split(' ').nth(4) == Some(target))
            .unwrap();
        assert_eq!(line.contains("volatile"), expected, "{line}");
        write(m.path().join("f"), b"1");
    }
    if !expected {
        return;
    }
    assert!(
        work.join("work/incompat/volatile").is_dir(),
        "the kernel's marker against a second mount"
    );
    with_mounted(&s, "k", |p| {
        assert_eq!(fs::read(p.join("f")).unwrap(), b"1");
        write(p.join("g"), b"2");
    });
    s.commit("top", "k").unwrap();
    let t = committed_tree(&s, "top");
    assert!(t.contains_key("f") && t.contains_key("g"), "{t:?}");
}
