//! The fuzz corpus of layer apply (`snapshotter/fuzz/corpus/tar_apply/`):
//! every file is replayed through the fuzz target, and the hostile cases
//! generated here are also checked for their specific outcome.
//!
//! The named files are written by [`cases`]; `corpus_files_match_their_generator`
//! keeps them in step (run with `HOIST_WRITE_CORPUS=1` to rewrite them after
//! changing a case). Other files in the directory (`crash-*`, found by the
//! mutation loop `cargo run --example fuzz_apply`) are replayed only.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use hoist_snapshotter::fuzzing::{self, Harness};
use hoist_snapshotter::{ApplyReport, Error, ErrorKind, WhiteoutStyle};

type Outcome = Result<ApplyReport, Error>;

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/tar_apply")
}

/// The fixed sentinel as the corpus names it. When TMPDIR points elsewhere
/// these names still test containment, they just aim at nothing real.
const HOST: &str = "/tmp/hoist-fuzz-sentinel";

/// One raw GNU tar entry with no sanity checks on name, link or size.
fn raw(name: &[u8], kind: u8, link: &[u8], data: &[u8], size_field: Option<[u8; 12]>) -> Vec<u8> {
    let mut h = tar::Header::new_gnu();
    {
        let old = h.as_old_mut();
        old.name[..name.len()].copy_from_slice(name);
        old.linkname[..link.len()].copy_from_slice(link);
    }
    // Searchable directories, so that a non-root applier can fill them.
    h.set_mode(if kind == b'5' { 0o755 } else { 0o644 });
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_000_000);
    h.set_entry_type(tar::EntryType::new(kind));
    h.set_size(data.len() as u64);
    if let Some(f) = size_field {
        h.as_old_mut().size = f;
    }
    h.set_cksum();
    let mut out = h.as_bytes().to_vec();
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out
}

fn file(name: &str, data: &[u8]) -> Vec<u8> {
    raw(name.as_bytes(), b'0', b"", data, None)
}
fn dir(name: &str) -> Vec<u8> {
    raw(name.as_bytes(), b'5', b"", b"", None)
}
fn symlink(name: &str, target: &str) -> Vec<u8> {
    raw(name.as_bytes(), b'2', target.as_bytes(), b"", None)
}
fn hardlink(name: &str, target: &str) -> Vec<u8> {
    raw(name.as_bytes(), b'1', target.as_bytes(), b"", None)
}
fn device(name: &str, kind: u8, major: u32, minor: u32) -> Vec<u8> {
    let mut h = tar::Header::new_gnu();
    h.set_path(name).unwrap();
    h.set_entry_type(tar::EntryType::new(kind));
    h.set_mode(0o640);
    h.set_size(0);
    h.set_mtime(1_000_000);
    h.set_device_major(major).unwrap();
    h.set_device_minor(minor).unwrap();
    h.set_cksum();
    h.as_bytes().to_vec()
}

/// A PAX extended header carrying `records` (key, value).
fn pax(records: &[(&str, &[u8])]) -> Vec<u8> {
    let mut data = Vec::new();
    for (k, v) in records {
        let body = k.len() + v.len() + 3;
        // The length counts its own digits.
        let mut len = body + 1;
        while len.to_string().len() + body != len {
            len += 1;
        }
        data.extend_from_slice(format!("{len} {k}=").as_bytes());
        data.extend_from_slice(v);
        data.push(b'\n');
    }
    raw(b"././@PaxHeader", b'x', b"", &data, None)
}

fn archive(entries: &[Vec<u8>]) -> Vec<u8> {
    let mut out = entries.concat();
    out.extend_from_slice(&[0u8; 1024]);
    out
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// The error and its causes on one line, for matching.
fn chain(outcome: &Outcome) -> String {
    fuzzing::texts(outcome).join(": ")
}

fn expect_err(outcome: &Outcome, parts: &[&str]) {
    let Err(e) = outcome else {
        panic!("expected an error with {parts:?}, got {outcome:?}");
    };
    assert_eq!(e.kind(), ErrorKind::InvalidLayer, "{}", chain(outcome));
    let text = chain(outcome);
    for p in parts {
        assert!(text.contains(p), "expected `{p}` in: {text}");
    }
}

fn expect_ok(outcome: &Outcome) -> &ApplyReport {
    match outcome {
        Ok(r) => r,
        Err(_) => panic!("expected success, got: {}", chain(outcome)),
    }
}

fn content(root: &Path, rel: &str) -> Vec<u8> {
    fs::read(root.join(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
}

fn is_root() -> bool {
    hoist_testutil::is_root()
}

type Expect = fn(&Path, &Outcome);

struct Case {
    name: &'static str,
    bytes: Vec<u8>,
    /// How the case is applied before `expect` runs: deletion whiteouts, or
    /// overlay whiteouts over the harness's lower layer.
    style: WhiteoutStyle,
    /// Checked after applying into a fresh root.
    expect: Expect,
}

/// Every named hostile case, its bytes and what applying it must do.
fn cases() -> Vec<Case> {
    let mut v: Vec<Case> = Vec::new();
    let mut add_styled = |name: &'static str, style, bytes: Vec<u8>, expect: Expect| {
        v.push(Case {
            name,
            bytes,
            style,
            expect,
        })
    };
    // Overlay cases run over the harness's lower layer: etc/passwd, d/f,
    // up -> ../../.., abs -> /tmp/hoist-fuzz-sentinel,
    // victim-link -> ../sentinel/victim, a FIFO `fifo`.
    add_styled(
        "overlay-copy-up.tar",
        WhiteoutStyle::Overlay,
        archive(&[hardlink("pw", "etc/passwd"), hardlink("f2", "/d/f")]),
        |root, o| {
            expect_ok(o);
            let pw = fs::metadata(root.join("pw")).unwrap();
            assert_eq!(
                pw.ino(),
                fs::metadata(root.join("etc/passwd")).unwrap().ino()
            );
            assert!(content(root, "pw").starts_with(b"root:"));
            assert_eq!(content(root, "f2"), b"lower\n");
        },
    );
    add_styled(
        "overlay-copy-up-symlink.tar",
        WhiteoutStyle::Overlay,
        archive(&[hardlink("v", "victim-link")]),
        |root, o| {
            if !is_root() {
                // linkat(AT_EMPTY_PATH) needs CAP_DAC_READ_SEARCH.
                hoist_testutil::cannot_run("this case needs root (linkat with AT_EMPTY_PATH)");
                return;
            }
            expect_ok(o);
            // Copied up as the symlink it is, not followed.
            let v = fs::symlink_metadata(root.join("v")).unwrap();
            assert!(v.is_symlink());
            assert_eq!(
                v.ino(),
                fs::symlink_metadata(root.join("victim-link"))
                    .unwrap()
                    .ino()
            );
            assert_eq!(
                fs::read_link(root.join("v")).unwrap(),
                Path::new("../sentinel/victim")
            );
        },
    );
    add_styled(
        "overlay-copy-up-fifo.tar",
        WhiteoutStyle::Overlay,
        archive(&[hardlink("p", "fifo")]),
        |_, o| {
            expect_err(
                o,
                &[
                    "`p`",
                    "hardlink target in a parent layer is not a regular file or a symlink",
                ],
            )
        },
    );
    add_styled(
        "overlay-copy-up-climb.tar",
        WhiteoutStyle::Overlay,
        archive(&[hardlink("u", "up/sentinel/victim")]),
        |_, o| {
            expect_err(
                o,
                &[
                    "`u`",
                    "`up/sentinel/victim` exists neither in the layer nor in its parents",
                ],
            )
        },
    );
    add_styled(
        "overlay-copy-up-absolute.tar",
        WhiteoutStyle::Overlay,
        archive(&[hardlink("a", "abs/victim")]),
        |_, o| {
            expect_err(
                o,
                &[
                    "`a`",
                    "`abs/victim` exists neither in the layer nor in its parents",
                ],
            )
        },
    );
    add_styled(
        "overlay-copy-up-through-upper-symlink.tar",
        WhiteoutStyle::Overlay,
        archive(&[symlink("etc", HOST), hardlink("pw", "etc/passwd")]),
        |_, o| {
            expect_err(
                o,
                &["`pw`", "parent `etc` is a symlink to a missing directory"],
            )
        },
    );
    let mut add = |name: &'static str, bytes: Vec<u8>, expect: Expect| {
        add_styled(name, WhiteoutStyle::Delete, bytes, expect)
    };

    add(
        "normal.tar",
        {
            let mut b = tar::Builder::new(Vec::new());
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
            h.set_size(0);
            b.append_data(&mut h, "etc/", &[][..]).unwrap();
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o644);
            h.set_size(5);
            b.append_data(&mut h, "etc/hosts", &b"hosts"[..]).unwrap();
            b.append_pax_extensions([("SCHILY.xattr.user.k", &b"v"[..])])
                .unwrap();
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o755);
            h.set_size(2);
            b.append_data(&mut h, "x/".repeat(60) + "deep", &b"ok"[..])
                .unwrap();
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            b.append_link(&mut h, "etc/link", "hosts").unwrap();
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Link);
            h.set_size(0);
            b.append_link(&mut h, "etc/hard", "etc/hosts").unwrap();
            b.into_inner().unwrap()
        },
        |root, o| {
            expect_ok(o);
            assert_eq!(content(root, "etc/hard"), b"hosts");
            assert_eq!(content(root, "etc/link"), b"hosts");
            assert_eq!(content(root, &("x/".repeat(60) + "deep")), b"ok");
        },
    );

    // Names that climb out are refused, naming the entry.
    add(
        "dotdot-name.tar",
        archive(&[file("../sentinel/victim", b"pwned")]),
        |_, o| expect_err(o, &["refusing layer entry `../sentinel/victim`", "`..`"]),
    );
    add(
        "dotdot-deep.tar",
        archive(&[
            dir("a/"),
            dir("a/b/"),
            file("a/b/../../../sentinel/victim", b"pwned"),
        ]),
        |_, o| expect_err(o, &["`a/b/../../../sentinel/victim`", "`..`"]),
    );
    // An absolute name is taken relative to the root, as Docker does.
    add(
        "absolute-name.tar",
        archive(&[file(&format!("{HOST}/victim"), b"pwned")]),
        |root, o| {
            expect_ok(o);
            assert_eq!(content(root, &format!("{}/victim", &HOST[1..])), b"pwned");
        },
    );
    // A symlink to /tmp, then a file through it: /tmp is the root's /tmp,
    // which this layer never made, so the write is refused...
    add(
        "symlink-tmp-then-file.tar",
        archive(&[symlink("a", "/tmp"), file("a/x", b"pwned")]),
        |root, o| {
            expect_err(
                o,
                &["`a/x`", "parent `a` is a symlink to a missing directory"],
            );
            assert!(fs::symlink_metadata(root.join("a")).unwrap().is_symlink());
        },
    );
    // ...and when the layer has a tmp/ the file lands there.
    add(
        "symlink-tmp-with-dir.tar",
        archive(&[
            dir("tmp/"),
            symlink("a", "/tmp"),
            file("a/x", b"pwned"),
            symlink("s", HOST),
            dir(&format!("{}/", &HOST[1..])),
            file("s/victim", b"pwned"),
        ]),
        |root, o| {
            expect_ok(o);
            assert_eq!(content(root, "tmp/x"), b"pwned");
            assert_eq!(content(root, &format!("{}/victim", &HOST[1..])), b"pwned");
        },
    );
    // A symlink to `..` is the root itself when resolved inside it.
    add(
        "symlink-dotdot.tar",
        archive(&[
            symlink("up", ".."),
            symlink("up2", "../../../.."),
            file("up/sentinel/victim", b"pwned"),
            file("up2/up/sentinel/x", b"pwned"),
        ]),
        |root, o| {
            expect_ok(o);
            assert_eq!(content(root, "sentinel/victim"), b"pwned");
            assert_eq!(content(root, "sentinel/x"), b"pwned");
        },
    );
    add(
        "symlink-loop.tar",
        archive(&[symlink("a", "b"), symlink("b", "a"), file("a/x", b"")]),
        |_, o| {
            let Err(e) = o else {
                panic!("a symlink loop was applied")
            };
            let text = chain(o);
            assert!(text.contains("a/x") || text.contains("root/a"), "{text}");
            let _ = e;
        },
    );
    // Hardlinks: to a path with `..`, to an absolute host path, through a
    // symlinked directory, to a symlink that points outside.
    add(
        "hardlink-outside.tar",
        archive(&[hardlink("pw", "../../etc/passwd")]),
        |_, o| {
            expect_err(
                o,
                &["`pw`", "hardlink target `../../etc/passwd` contains `..`"],
            )
        },
    );
    add(
        "hardlink-absolute.tar",
        archive(&[hardlink("v", &format!("{HOST}/victim"))]),
        |_, o| expect_err(o, &["`v`", "does not exist inside the layer root"]),
    );
    add(
        "hardlink-through-symlink-dir.tar",
        archive(&[symlink("d", HOST), hardlink("v", "d/victim")]),
        |_, o| expect_err(o, &["`v`", "does not exist inside the layer root"]),
    );
    add(
        "hardlink-to-outside-symlink.tar",
        archive(&[
            symlink("s", &format!("{HOST}/victim")),
            hardlink("h", "s"),
            symlink("r", "../sentinel/victim"),
            hardlink("h2", "r"),
        ]),
        |root, o| {
            if !is_root() {
                // linkat(AT_EMPTY_PATH) needs CAP_DAC_READ_SEARCH.
                hoist_testutil::cannot_run("this case needs root (linkat with AT_EMPTY_PATH)");
                return;
            }
            expect_ok(o);
            // The link is to the symlink itself: another symlink, resolved
            // at use, inside whatever root the image is run in.
            for (h, s) in [("h", "s"), ("h2", "r")] {
                let a = fs::symlink_metadata(root.join(h)).unwrap();
                let b = fs::symlink_metadata(root.join(s)).unwrap();
                assert!(a.is_symlink());
                assert_eq!(a.ino(), b.ino());
            }
        },
    );
    // Whiteouts cannot climb out, name nothing, or reach outside through a
    // symlink.
    add(
        "whiteout-dotdot.tar",
        archive(&[file("../.wh.sentinel", b"")]),
        |_, o| expect_err(o, &["`../.wh.sentinel`", "`..`"]),
    );
    add(
        "whiteout-names-parent.tar",
        archive(&[dir("a/"), file("a/.wh...", b"")]),
        |_, o| expect_err(o, &["`a/.wh...`", "whiteout names no file"]),
    );
    add(
        "whiteout-through-symlink.tar",
        archive(&[
            symlink("up", "../.."),
            file("up/.wh.sentinel", b""),
            symlink("h", HOST),
            dir(&format!("{}/", &HOST[1..])),
            file(&format!("{}/victim", &HOST[1..]), b"inside"),
            file("h/.wh.victim", b""),
        ]),
        |root, o| {
            expect_ok(o);
            assert!(!root.join(&HOST[1..]).join("victim").exists());
        },
    );
    add(
        "opaque-whiteout.tar",
        archive(&[
            dir("d/"),
            file("d/a", b"a"),
            file("d/.wh..wh..opq", b""),
            file("d/b", b"b"),
            file("../.wh..wh..opq", b""),
        ]),
        |root, o| {
            // The opaque marker keeps this layer's entries; one that climbs
            // out is refused.
            expect_err(o, &["`../.wh..wh..opq`", "`..`"]);
            assert_eq!(content(root, "d/a"), b"a");
            assert_eq!(content(root, "d/b"), b"b");
        },
    );
    // Through a symlink climbing out, an opaque marker empties the root
    // (the layer's entries are known by their names as written, so `up`
    // itself goes too), never the directory beside it.
    add(
        "opaque-through-symlink.tar",
        archive(&[
            file("f", b"f"),
            symlink("up", "../.."),
            file("up/.wh..wh..opq", b""),
        ]),
        |root, o| {
            expect_ok(o);
            assert_eq!(fs::read_dir(root).unwrap().count(), 0);
        },
    );
    // Device nodes belong in a layer's /dev; as root they are created
    // (inside the root), without CAP_MKNOD skipped with a warning.
    add(
        "devices.tar",
        archive(&[
            dir("dev/"),
            device("dev/null", b'3', 1, 3),
            device("dev/sda", b'4', 8, 0),
            raw(b"dev/fifo", b'6', b"", b"", None),
            symlink("up", ".."),
            device("up/sentinel-mem", b'3', 1, 1),
        ]),
        |root, o| {
            let report = expect_ok(o);
            assert!(fs::symlink_metadata(root.join("dev/fifo"))
                .unwrap()
                .file_type()
                .is_fifo());
            if is_root() {
                let null = fs::symlink_metadata(root.join("dev/null")).unwrap();
                assert!(null.file_type().is_char_device());
                assert_eq!(null.rdev(), rustix::fs::makedev(1, 3));
                let sda = fs::symlink_metadata(root.join("dev/sda")).unwrap();
                assert!(sda.file_type().is_block_device());
                assert!(fs::symlink_metadata(root.join("sentinel-mem"))
                    .unwrap()
                    .file_type()
                    .is_char_device());
            } else {
                assert_eq!(report.warnings.len(), 3, "{:?}", report.warnings);
            }
        },
    );
    // Sizes: PAX sizes past i64, past the data, PAX headers past the limits.
    add(
        "pax-huge-size.tar",
        archive(&[pax(&[("size", b"99999999999999999999")]), file("f", b"x")]),
        |_, o| expect_err(o, &["(the first header)", "bad PAX size"]),
    );
    add(
        "pax-size-past-data.tar",
        archive(&[pax(&[("size", b"4611686018427387904")]), file("f", b"x")]),
        |root, o| {
            expect_err(o, &["`f`", "header says 4611686018427387904 bytes"]);
            assert!(fs::metadata(root.join("f")).unwrap().len() < 4096);
        },
    );
    add(
        "pax-header-too-large.tar",
        {
            let mut h = raw(b"././@PaxHeader", b'x', b"", b"", None);
            let mut hd = tar::Header::from_byte_slice(&h[..512]).clone();
            hd.set_size(1 << 40);
            hd.set_cksum();
            h[..512].copy_from_slice(hd.as_bytes());
            h
        },
        |_, o| expect_err(o, &["larger than the 1048576-byte limit"]),
    );
    add(
        "pax-headers-pile-up.tar.gz",
        {
            // Three 600 KiB PAX headers before one entry: each is under the
            // per-header limit, together over the per-entry one.
            let big = vec![b'a'; 600 * 1024];
            let rec: &[(&str, &[u8])] = &[("comment", &big)];
            gzip(&archive(&[pax(rec), pax(rec), pax(rec), file("f", b"")]))
        },
        |_, o| {
            expect_err(
                o,
                &["PAX headers of one entry total more than the 1048576-byte limit"],
            )
        },
    );
    add(
        "pax-nul-in-path.tar",
        archive(&[pax(&[("path", b"a\0b")]), file("f", b"x")]),
        |_, o| {
            let Err(_) = o else {
                panic!("a path with NUL was applied")
            };
            assert!(chain(o).contains(r"a\0b"), "{}", chain(o));
        },
    );
    // Truncation inside data and inside a header.
    add(
        "truncated.tar",
        {
            let mut b = file("t", &[7u8; 1000]);
            b.truncate(512 + 100);
            b
        },
        |root, o| {
            expect_err(o, &["`t`", "its header says 1000 bytes, only 100 follow"]);
            assert_eq!(fs::metadata(root.join("t")).unwrap().len(), 100);
        },
    );
    add(
        "truncated-header.tar",
        {
            let mut b = archive(&[file("a", b"a"), file("b", b"b")]);
            b.truncate(1024 + 300);
            b
        },
        |_, o| expect_err(o, &["(the header after `a`)", "ends inside a tar header"]),
    );
    // GNU long names: a run of them with no entry after, and the last of a
    // run winning.
    add(
        "gnu-longname-loop.tar",
        {
            let long = "a/".repeat(300);
            let mut entries: Vec<Vec<u8>> = (0..50)
                .map(|_| raw(b"././@LongLink", b'L', b"", long.as_bytes(), None))
                .collect();
            entries.push(raw(b"././@LongLink", b'K', b"", b"../../etc", None));
            archive(&entries)
        },
        |_, o| expect_err(o, &["extension headers without an entry after them"]),
    );
    add(
        "gnu-longname-chain.tar",
        archive(&[
            raw(b"././@LongLink", b'L', b"", b"../first\0", None),
            raw(b"././@LongLink", b'L', b"", b"second\0", None),
            raw(b"././@LongLink", b'K', b"", b"/etc/passwd\0", None),
            symlink("ignored", "ignored"),
        ]),
        |root, o| {
            expect_ok(o);
            assert_eq!(
                fs::read_link(root.join("second")).unwrap(),
                Path::new("/etc/passwd")
            );
            assert!(!root.join("ignored").exists());
        },
    );
    add(
        "sparse.tar",
        archive(&[raw(b"sparse", b'S', b"", &[0u8; 512], None)]),
        |_, o| {
            expect_err(
                o,
                &["(the first header)", "GNU sparse files are not supported"],
            )
        },
    );
    // The largest octal size field: 8 GiB claimed, 10 bytes present.
    add(
        "size-max-octal.tar",
        archive(&[raw(
            b"big",
            b'0',
            b"",
            b"0123456789",
            Some(*b"77777777777\0"),
        )]),
        |_, o| expect_err(o, &["`big`", "its header says 8589934591 bytes"]),
    );
    // A base-256 size of u64::MAX on an entry type that is skipped: the
    // skip must not overflow.
    add(
        "size-base256-u64max.tar",
        {
            let mut f = [0xffu8; 12];
            f[..4].copy_from_slice(&[0x80, 0, 0, 0]);
            archive(&[raw(b"skipped", b'Z', b"", b"", Some(f)), file("after", b"")])
        },
        |_, o| expect_err(o, &["(the header after `skipped`)", "ends inside an entry"]),
    );
    add(
        "size-base256-overflow.tar",
        {
            let mut f = [0xffu8; 12];
            f[0] = 0x80;
            archive(&[raw(b"big", b'0', b"", b"", Some(f))])
        },
        |_, o| expect_err(o, &["size in tar header overflows"]),
    );
    // Ids that do not fit a uid_t (found by the mutation loop: they were
    // truncated, and u32::MAX tripped an assertion in rustix).
    add(
        "uid-out-of-range.tar",
        archive(&[pax(&[("uid", b"4294967295")]), file("u", b"")]),
        |root, o| {
            expect_err(o, &["`u`", "uid 4294967295 is out of range"]);
            assert!(!root.join("u").exists());
        },
    );
    add(
        "gid-out-of-range.tar",
        {
            let mut e = file("g", b"");
            e[116..124].copy_from_slice(&[0x80, 0, 0, 1, 0, 0, 0, 0]);
            let mut h = tar::Header::from_byte_slice(&e[..512]).clone();
            h.set_cksum();
            e[..512].copy_from_slice(h.as_bytes());
            archive(&[e])
        },
        |_, o| expect_err(o, &["`g`", "gid 4294967296 is out of range"]),
    );
    // Control characters in names are escaped wherever a name is quoted.
    add(
        "control-chars-name.tar",
        archive(&[file("\x1b[2J\x07/../x\r\n", b"")]),
        |_, o| expect_err(o, &[r"refusing layer entry `\u{1b}[2J\u{7}/../x\r\n`"]),
    );
    add(
        "control-chars-warning.tar",
        archive(&[
            raw(b"\x1b]0;pwned\x07", b'Z', b"", b"", None),
            raw(b"\xc2\x9b31m", b'Z', b"", b"", None),
        ]),
        |root, o| {
            let r = expect_ok(o);
            assert_eq!(r.warnings[0].path, r"\u{1b}]0;pwned\u{7}");
            assert_eq!(r.warnings[1].path, r"\u{9b}31m");
            assert!(r.warnings[0].message.contains("unsupported type `Z`"));
            assert_eq!(fs::read_dir(root).unwrap().count(), 0);
        },
    );
    // The same name twice with different types: the later entry wins.
    add(
        "dir-then-file.tar",
        archive(&[
            dir("d/"),
            file("d/x", b"x"),
            file("d", b"file now"),
            file("e", b"file first"),
            dir("e/"),
        ]),
        |root, o| {
            expect_ok(o);
            assert_eq!(content(root, "d"), b"file now");
            assert!(fs::symlink_metadata(root.join("e")).unwrap().is_dir());
        },
    );
    // A file written over a symlink replaces the symlink, never follows it.
    add(
        "file-over-symlink.tar",
        archive(&[
            symlink("s", "../sentinel/victim"),
            file("s", b"pwned"),
            symlink("t", &format!("{HOST}/victim")),
            file("t", b"pwned"),
            symlink("d", "../sentinel/dir"),
            dir("d/"),
            file("d/inner", b"pwned"),
        ]),
        |root, o| {
            expect_ok(o);
            for f in ["s", "t", "d/inner"] {
                assert!(fs::symlink_metadata(root.join(f)).unwrap().is_file());
                assert_eq!(content(root, f), b"pwned");
            }
            assert!(fs::symlink_metadata(root.join("d")).unwrap().is_dir());
        },
    );
    // Root entries carry nothing of their own.
    add(
        "root-entries.tar",
        archive(&[dir("./"), dir("/"), dir("."), file(".wh..wh..opq", b"")]),
        |root, o| {
            expect_ok(o);
            assert_eq!(fs::read_dir(root).unwrap().count(), 0);
        },
    );
    // A small gzip bomb: 16 KiB that expand to 32 MiB (a 16 MiB file and
    // 16 MiB of zeros after the end of the archive, which the hash reads).
    add(
        "gzip-bomb.tar.gz",
        {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            let mut h = tar::Header::new_gnu();
            h.set_path("zeros").unwrap();
            h.set_size(16 << 20);
            h.set_mode(0o644);
            h.set_cksum();
            e.write_all(h.as_bytes()).unwrap();
            let zeros = vec![0u8; 1 << 20];
            for _ in 0..32 {
                e.write_all(&zeros).unwrap();
            }
            e.finish().unwrap()
        },
        |root, o| {
            let r = expect_ok(o);
            assert_eq!(r.uncompressed_size, 512 + (32 << 20));
            assert_eq!(fs::metadata(root.join("zeros")).unwrap().len(), 16 << 20);
        },
    );
    v
}

#[test]
fn corpus_files_match_their_generator() {
    let dir = corpus_dir();
    let write = std::env::var_os("HOIST_WRITE_CORPUS").is_some_and(|v| v == "1");
    if write {
        fs::create_dir_all(&dir).unwrap();
    }
    for case in cases() {
        let path = dir.join(case.name);
        if write {
            fs::write(&path, &case.bytes).unwrap();
        }
        let stored = fs::read(&path).unwrap_or_default();
        assert!(
            stored == case.bytes,
            "{} differs from its generator; rewrite the corpus with \
             HOIST_WRITE_CORPUS=1 cargo test -p hoist-snapshotter --test it fuzz_corpus",
            path.display()
        );
    }
}

/// Replays every corpus file through the fuzz target (plain and gzip, into
/// fresh roots, sentinels checked), then checks each named case's outcome.
#[test]
fn corpus_replays_through_the_fuzz_target() {
    let mut files: Vec<PathBuf> = fs::read_dir(corpus_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let cases = cases();
    assert!(files.len() >= cases.len(), "corpus is missing files");
    let mut failures = Vec::new();
    for path in &files {
        let bytes = fs::read(path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        // On a thread, so that a hang is reported (the thread is left behind)
        // instead of stalling the test run.
        let (tx, rx) = std::sync::mpsc::channel();
        let input = bytes.clone();
        std::thread::spawn(move || {
            let r = catch_unwind(AssertUnwindSafe(|| fuzzing::fuzz_apply(&input)));
            let _ = tx.send(r.map_err(|p| panic_text(&p)));
        });
        match rx.recv_timeout(fuzzing::TIME_LIMIT * 3) {
            Ok(Ok(())) => {}
            Ok(Err(msg)) => {
                failures.push(format!("{name}: fuzz target: {msg}"));
                continue;
            }
            Err(_) => {
                failures.push(format!(
                    "{name}: fuzz target still running after {:?}",
                    fuzzing::TIME_LIMIT * 3
                ));
                continue;
            }
        }
        let Some(case) = cases.iter().find(|c| c.name == name) else {
            continue;
        };
        let checked = catch_unwind(AssertUnwindSafe(|| {
            let h = Harness::new();
            let outcome = h.apply(&bytes, case.style);
            h.check();
            fuzzing::check_texts(&outcome);
            (case.expect)(&h.root(), &outcome);
        }));
        if let Err(p) = checked {
            failures.push(format!("{name}: {}", panic_text(&p)));
        }
    }
    println!("replayed {} corpus files", files.len());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn panic_text(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "panic".into())
}
