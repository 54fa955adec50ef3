//! One behavioural suite run against both backends: a base tree, a change
//! made through the mounted snapshot, then the layer from `diff` applied on
//! the same base must give back exactly the tree that was seen.

use std::fs;
use std::io::Read;
use std::os::unix::fs::symlink;
use std::path::Path;

use hoist_snapshotter::{
    ApplyOptions, Backend, BackendChoice, DiffOptions, LocalSnapshotter, Snapshotter,
};

use crate::util::*;

/// Paths of the entries of a (gzip) layer, in order.
pub fn layer_paths(blob: &[u8]) -> Vec<String> {
    let mut tar_bytes = Vec::new();
    flate2::read::GzDecoder::new(blob)
        .read_to_end(&mut tar_bytes)
        .unwrap();
    let mut ar = tar::Archive::new(&tar_bytes[..]);
    ar.entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect()
}

/// Builds `base`, applies `change` on a snapshot of it, checks that the layer
/// reproduces the change on both a fresh snapshot and the committed one, and
/// returns the layer's entry paths.
pub fn roundtrip(
    choice: BackendChoice,
    setup: impl FnOnce(&Path),
    change: impl FnOnce(&Path),
) -> Vec<String> {
    let (_tmp, root) = temp_root();
    let s = LocalSnapshotter::open(&root, choice).unwrap();
    let want = match choice {
        BackendChoice::Native => Backend::Native,
        _ => Backend::Overlay,
    };
    assert_eq!(s.backend(), want);
    s.prepare("base-work", None).unwrap();
    with_mounted(&s, "base-work", setup);
    s.commit("base", "base-work").unwrap();
    let base_tree = committed_tree(&s, "base");

    s.prepare("step", Some("base")).unwrap();
    let mut expected = Tree::new();
    with_mounted(&s, "step", |p| {
        change(p);
        expected = tree(p);
    });
    let mut blob = Vec::new();
    let desc = s.diff("step", &DiffOptions::default(), &mut blob).unwrap();
    assert_eq!(desc.size, blob.len() as u64);

    s.prepare("re", Some("base")).unwrap();
    let report = s
        .apply("re", &mut &blob[..], &ApplyOptions::default())
        .unwrap();
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    assert_eq!(report.diff_id, desc.diff_id);
    s.commit("re-c", "re").unwrap();
    assert_same_tree(
        &expected,
        &committed_tree(&s, "re-c"),
        "layer applied on base",
    );

    s.commit("step-c", "step").unwrap();
    assert_same_tree(&expected, &committed_tree(&s, "step-c"), "committed step");
    // The base is untouched by everything above.
    assert_same_tree(
        &base_tree,
        &committed_tree(&s, "base"),
        "base after the step",
    );
    layer_paths(&blob)
}

fn create_modify_delete(b: BackendChoice) {
    let paths = roundtrip(
        b,
        |p| {
            write(p.join("a.txt"), b"a");
            write(p.join("b.txt"), b"b");
            write(p.join("dir/c"), b"c");
            write(p.join("keep"), b"k");
        },
        |p| {
            write(p.join("a.txt"), b"changed");
            fs::remove_file(p.join("b.txt")).unwrap();
            fs::remove_file(p.join("dir/c")).unwrap();
            write(p.join("new/d.txt"), b"d");
            fs::create_dir(p.join("empty")).unwrap();
        },
    );
    assert!(paths.contains(&".wh.b.txt".to_string()), "{paths:?}");
    assert!(paths.contains(&"dir/.wh.c".to_string()), "{paths:?}");
    assert!(paths.contains(&"empty/".to_string()), "{paths:?}");
    assert!(!paths.iter().any(|p| p.starts_with("keep")), "{paths:?}");
}

fn replace_file_with_dir_and_back(b: BackendChoice) {
    roundtrip(
        b,
        |p| {
            write(p.join("x"), b"file");
            write(p.join("y/z"), b"inner");
            write(p.join("y/sub/w"), b"deeper");
        },
        |p| {
            fs::remove_file(p.join("x")).unwrap();
            write(p.join("x/inner"), b"now a dir");
            fs::remove_dir_all(p.join("y")).unwrap();
            write(p.join("y"), b"now a file");
        },
    );
}

fn rename(b: BackendChoice) {
    roundtrip(
        b,
        |p| {
            write(p.join("old/name.txt"), b"n");
            write(p.join("dira/f"), b"f");
            write(p.join("dira/g/h"), b"h");
        },
        |p| {
            sh(&format!(
                "cd {} && mv old/name.txt old/new.txt && mv dira dirb",
                p.display()
            ));
        },
    );
}

fn chmod_chown(b: BackendChoice) {
    roundtrip(
        b,
        |p| {
            write(p.join("a"), b"a");
            write(p.join("b"), b"b");
            write(p.join("d/e"), b"e");
        },
        |p| {
            chmod(p.join("a"), 0o600);
            std::os::unix::fs::lchown(p.join("b"), Some(1000), Some(2000)).unwrap();
            chmod(p.join("d"), 0o700);
            std::os::unix::fs::lchown(p.join("d"), Some(5), Some(6)).unwrap();
        },
    );
}

fn hardlinks(b: BackendChoice) {
    let paths = roundtrip(
        b,
        |p| write(p.join("lower"), b"lower content"),
        |p| {
            write(p.join("g"), b"linked");
            fs::hard_link(p.join("g"), p.join("h")).unwrap();
            fs::hard_link(p.join("lower"), p.join("lower2")).unwrap();
        },
    );
    assert!(paths.contains(&"h".to_string()));
}

fn symlinks(b: BackendChoice) {
    roundtrip(
        b,
        |p| {
            write(p.join("target"), b"t");
            write(p.join("to-replace"), b"r");
        },
        |p| {
            symlink("/etc/passwd", p.join("abs")).unwrap();
            symlink("target", p.join("rel")).unwrap();
            symlink("nowhere/at/all", p.join("dangling")).unwrap();
            fs::remove_file(p.join("to-replace")).unwrap();
            symlink("target", p.join("to-replace")).unwrap();
        },
    );
}

fn deep_trees(b: BackendChoice) {
    let deep: String = (0..60).map(|i| format!("d{i}/")).collect();
    let deep2 = deep.clone();
    roundtrip(
        b,
        move |p| {
            write(p.join(&deep).join("bottom"), b"deep");
            write(p.join("gone").join(&deep).join("x"), b"x");
        },
        move |p| {
            write(p.join(&deep2).join("bottom"), b"changed deep");
            write(p.join("new").join(&deep2).join("leaf"), b"leaf");
            fs::remove_dir_all(p.join("gone")).unwrap();
        },
    );
}

fn opaque_dir(b: BackendChoice) {
    let paths = roundtrip(
        b,
        |p| {
            write(p.join("d/1"), b"1");
            write(p.join("d/2"), b"2");
            write(p.join("d/sub/3"), b"3");
        },
        |p| {
            fs::remove_dir_all(p.join("d")).unwrap();
            write(p.join("d/new"), b"new");
        },
    );
    if b != BackendChoice::Native {
        assert!(paths.contains(&"d/.wh..wh..opq".to_string()), "{paths:?}");
    }
}

fn whiteout_whole_tree(b: BackendChoice) {
    let paths = roundtrip(
        b,
        |p| {
            write(p.join("t/a/b/c"), b"c");
            write(p.join("t/a/d"), b"d");
            write(p.join("other"), b"o");
        },
        |p| fs::remove_dir_all(p.join("t")).unwrap(),
    );
    assert_eq!(paths, [".wh.t"]);
}

fn xattrs_setuid_capability(b: BackendChoice) {
    roundtrip(
        b,
        |p| write(p.join("bin/ping"), b"\x7fELF pretend"),
        |p| {
            let ping = p.join("bin/ping");
            write(p.join("bin/tool"), b"tool");
            run("setcap", &["cap_net_raw+ep", ping.to_str().unwrap()]);
            chmod(&ping, 0o4755);
            run(
                "setfattr",
                &[
                    "-n",
                    "user.note",
                    "-v",
                    "hello",
                    p.join("bin/tool").to_str().unwrap(),
                ],
            );
            run(
                "setfattr",
                &[
                    "-n",
                    "trusted.mine",
                    "-v",
                    "x",
                    p.join("bin").to_str().unwrap(),
                ],
            );
        },
    );
}

fn special_files(b: BackendChoice) {
    roundtrip(
        b,
        |p| write(p.join("placeholder"), b""),
        |p| {
            sh(&format!(
                "cd {} && mknod null c 1 3 && mknod loop7 b 7 7 && mkfifo pipe && mkdir -p e1/e2",
                p.display()
            ));
        },
    );
}

type Step = Box<dyn Fn(&Path)>;

/// A chain of three steps: a file becomes a dir, then a file again.
fn stacked_steps(b: BackendChoice) {
    let (_tmp, root) = temp_root();
    let s = LocalSnapshotter::open(&root, b).unwrap();
    let mut parent: Option<String> = None;
    let steps: Vec<Step> = vec![
        Box::new(|p: &Path| write(p.join("x"), b"file")),
        Box::new(|p: &Path| {
            fs::remove_file(p.join("x")).unwrap();
            write(p.join("x/y"), b"dir now");
        }),
        Box::new(|p: &Path| {
            fs::remove_dir_all(p.join("x")).unwrap();
            write(p.join("x"), b"file again");
        }),
    ];
    let (_tmp2, root2) = temp_root();
    let replay = LocalSnapshotter::open(&root2, b).unwrap();
    let mut replay_parent: Option<String> = None;
    for (i, step) in steps.iter().enumerate() {
        let key = format!("k{i}");
        s.prepare(&key, parent.as_deref()).unwrap();
        let mut expected = Tree::new();
        with_mounted(&s, &key, |p| {
            step(p);
            expected = tree(p);
        });
        let mut blob = Vec::new();
        s.diff(&key, &DiffOptions::default(), &mut blob).unwrap();
        let name = format!("n{i}");
        s.commit(&name, &key).unwrap();
        parent = Some(name.clone());

        replay.prepare(&key, replay_parent.as_deref()).unwrap();
        replay
            .apply(&key, &mut &blob[..], &ApplyOptions::default())
            .unwrap();
        replay.commit(&name, &key).unwrap();
        replay_parent = Some(name.clone());
        assert_same_tree(
            &expected,
            &committed_tree(&replay, &name),
            &format!("step {i}"),
        );
    }
    let top = committed_tree(&s, "n2");
    assert_eq!(top["x"].kind, "file");
    assert!(!top.contains_key("x/y"));
}

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod overlay {
            $(
                #[test]
                fn $case() {
                    hoist_testutil::require_root!();
                    super::$case(hoist_snapshotter::BackendChoice::Overlay);
                }
            )*
        }
        mod native {
            $(
                #[test]
                fn $case() {
                    hoist_testutil::require_root!();
                    super::$case(hoist_snapshotter::BackendChoice::Native);
                }
            )*
        }
    };
}

conformance!(
    create_modify_delete,
    replace_file_with_dir_and_back,
    rename,
    chmod_chown,
    hardlinks,
    symlinks,
    deep_trees,
    opaque_dir,
    whiteout_whole_tree,
    xattrs_setuid_capability,
    special_files,
    stacked_steps,
);
