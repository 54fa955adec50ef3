//! Malicious layers built by hand: each must be refused or contained with a
//! clear message, and a marker outside the root must stay untouched.

use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use hoist_snapshotter::{apply_layer, ApplyOptions, ApplyTarget, ErrorKind, WhiteoutStyle};

/// One raw tar entry with no sanity checks on the name or link.
fn entry(name: &[u8], kind: u8, link: &[u8], data: &[u8], size: Option<u64>) -> Vec<u8> {
    let mut h = tar::Header::new_gnu();
    {
        let old = h.as_old_mut();
        old.name[..name.len()].copy_from_slice(name);
        old.linkname[..link.len()].copy_from_slice(link);
    }
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_000_000);
    h.set_entry_type(tar::EntryType::new(kind));
    h.set_size(size.unwrap_or(data.len() as u64));
    h.set_cksum();
    let mut out = h.as_bytes().to_vec();
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out
}

fn archive(entries: &[Vec<u8>]) -> Vec<u8> {
    let mut out: Vec<u8> = entries.concat();
    out.extend_from_slice(&[0u8; 1024]);
    out
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

struct Scene {
    _tmp: tempfile::TempDir,
    outside: PathBuf,
    marker: PathBuf,
    root: PathBuf,
}

fn scene() -> Scene {
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("outside");
    fs::create_dir(&outside).unwrap();
    let marker = outside.join("marker");
    fs::write(&marker, b"original").unwrap();
    let root = tmp.path().join("root");
    fs::create_dir(&root).unwrap();
    Scene {
        _tmp: tmp,
        outside,
        marker,
        root,
    }
}

fn apply(
    root: &Path,
    style: WhiteoutStyle,
    bytes: &[u8],
) -> Result<hoist_snapshotter::ApplyReport, hoist_snapshotter::Error> {
    let target = ApplyTarget {
        root: root.to_path_buf(),
        whiteouts: style,
        lowers: Vec::new(),
    };
    apply_layer(&target, &mut &bytes[..], &ApplyOptions::default())
}

/// An error's message followed by its source's.
fn with_source(err: &hoist_snapshotter::Error) -> String {
    let source = std::error::Error::source(err).map(|e| e.to_string());
    format!("{err}: {}", source.unwrap_or_default())
}

fn untouched(s: &Scene) {
    assert_eq!(
        fs::read(&s.marker).unwrap(),
        b"original",
        "the marker outside the root changed"
    );
    let names: Vec<_> = fs::read_dir(&s.outside).unwrap().collect();
    assert_eq!(names.len(), 1, "something was created outside the root");
}

const STYLES: [WhiteoutStyle; 2] = [WhiteoutStyle::Delete, WhiteoutStyle::Overlay];

#[test]
fn dotdot_traversal_is_refused() {
    hoist_testutil::require_root!();
    for style in STYLES {
        let s = scene();
        for name in [
            &b"../outside/marker"[..],
            b"./a/../../outside/marker",
            b"a/b/../../../outside/marker",
        ] {
            let bytes = archive(&[entry(name, b'0', b"", b"pwned", None)]);
            let err = apply(&s.root, style, &gzip(&bytes)).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidLayer);
            let msg = err.to_string();
            assert!(
                msg.contains("refusing layer entry") && msg.contains("`..`"),
                "{msg}"
            );
            untouched(&s);
        }
    }
}

#[test]
fn symlink_then_write_through_stays_inside() {
    hoist_testutil::require_root!();
    for style in STYLES {
        let s = scene();
        // A relative symlink climbing out, then a file written through it:
        // resolved as if the root were `/`, so it lands in the root.
        let bytes = archive(&[
            entry(b"escape", b'2', b"../../../../../../../", b"", None),
            entry(b"escape/marker", b'0', b"", b"pwned", None),
        ]);
        apply(&s.root, style, &bytes).unwrap();
        untouched(&s);
        assert_eq!(fs::read(s.root.join("marker")).unwrap(), b"pwned");

        // An absolute symlink to the real outside directory.
        let s = scene();
        let target = s.outside.to_str().unwrap().as_bytes().to_vec();
        let bytes = archive(&[
            entry(b"abs", b'2', &target, b"", None),
            entry(b"abs/marker", b'0', b"", b"pwned", None),
        ]);
        match apply(&s.root, style, &bytes) {
            Ok(_) => {
                // Contained: written under the root at the same path.
                let inside = s
                    .root
                    .join(s.outside.strip_prefix("/").unwrap())
                    .join("marker");
                assert_eq!(fs::read(inside).unwrap(), b"pwned");
            }
            Err(e) => assert!(
                e.to_string().contains("symlink to a missing directory"),
                "{e}"
            ),
        }
        untouched(&s);
    }
}

#[test]
fn absolute_symlink_parent_is_resolved_in_the_root() {
    hoist_testutil::require_root!();
    let s = scene();
    let rel = s
        .marker
        .strip_prefix("/")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let through = format!("slash/{rel}");
    let bytes = archive(&[
        entry(b"slash", b'2', b"/", b"", None),
        entry(through.as_bytes(), b'0', b"", b"pwned", None),
        // Also an absolute entry path: taken relative to the root.
        entry(format!("/{rel}2").as_bytes(), b'0', b"", b"abs", None),
    ]);
    apply(&s.root, WhiteoutStyle::Delete, &bytes).unwrap();
    untouched(&s);
    assert_eq!(fs::read(s.root.join(&rel)).unwrap(), b"pwned");
    assert_eq!(fs::read(s.root.join(format!("{rel}2"))).unwrap(), b"abs");
}

#[test]
fn hardlink_to_host_file_is_refused() {
    hoist_testutil::require_root!();
    let passwd_before = fs::read("/etc/passwd").unwrap();
    let nlink_before = fs::metadata("/etc/passwd").unwrap().nlink();
    for style in STYLES {
        let s = scene();
        let cases: Vec<(Vec<Vec<u8>>, &str)> = vec![
            (
                vec![entry(b"pw", b'1', b"/etc/passwd", b"", None)],
                "does not exist inside the layer root",
            ),
            (
                vec![entry(
                    b"pw",
                    b'1',
                    b"../../../../../../etc/passwd",
                    b"",
                    None,
                )],
                "contains `..`",
            ),
            (
                vec![
                    entry(b"etc", b'2', b"/etc", b"", None),
                    entry(b"pw", b'1', b"etc/passwd", b"", None),
                ],
                "hardlink",
            ),
            (
                vec![
                    entry(b"up", b'2', b"../../../../../..", b"", None),
                    entry(b"pw", b'1', b"up/etc/passwd", b"", None),
                ],
                "does not exist inside the layer root",
            ),
        ];
        for (entries, expect) in cases {
            let root = s.root.join(format!("r{}", rand_suffix()));
            fs::create_dir(&root).unwrap();
            let err = apply(&root, style, &archive(&entries)).unwrap_err();
            let chain = format!("{err} / {:?}", std::error::Error::source(&err));
            assert!(chain.contains(expect), "expected `{expect}` in: {chain}");
        }
        untouched(&s);
    }
    assert_eq!(fs::read("/etc/passwd").unwrap(), passwd_before);
    assert_eq!(fs::metadata("/etc/passwd").unwrap().nlink(), nlink_before);
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

#[test]
fn header_claiming_a_terabyte_fails_cleanly() {
    hoist_testutil::require_root!();
    let s = scene();
    // 1 TiB claimed, 64 KiB present, no end-of-archive marker.
    let mut bytes = entry(b"huge", b'0', b"", &vec![7u8; 64 * 1024], Some(1 << 40));
    bytes.truncate(512 + 64 * 1024);
    let err = apply(&s.root, WhiteoutStyle::Delete, &gzip(&bytes)).unwrap_err();
    let chain = with_source(&err);
    assert!(chain.contains("`huge`"), "{chain}");
    assert!(chain.contains("1099511627776 bytes"), "{chain}");
    assert!(fs::metadata(s.root.join("huge")).unwrap().len() <= 64 * 1024);
    untouched(&s);
}

#[test]
fn overlay_xattrs_from_a_layer_are_dropped() {
    hoist_testutil::require_root!();
    let s = scene();
    let mut b = tar::Builder::new(Vec::new());
    b.append_pax_extensions([
        ("SCHILY.xattr.trusted.overlay.redirect", &b"/outside"[..]),
        ("SCHILY.xattr.user.kept", &b"yes"[..]),
    ])
    .unwrap();
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o755);
    h.set_size(0);
    b.append_data(&mut h, "d", &[][..]).unwrap();
    let bytes = b.into_inner().unwrap();
    let report = apply(&s.root, WhiteoutStyle::Overlay, &bytes).unwrap();
    assert_eq!(report.warnings.len(), 1);
    assert!(report.warnings[0]
        .message
        .contains("trusted.overlay.redirect"));
    let out = crate::util::run(
        "getfattr",
        &["-d", "-m", "-", s.root.join("d").to_str().unwrap()],
    );
    assert!(out.contains("user.kept"), "{out}");
    assert!(!out.contains("overlay"), "{out}");
}

#[test]
fn whiteouts_cannot_name_parents() {
    hoist_testutil::require_root!();
    let s = scene();
    let bytes = archive(&[entry(b"a/.wh...", b'0', b"", b"", None)]);
    let err = apply(&s.root, WhiteoutStyle::Delete, &bytes).unwrap_err();
    assert!(err.to_string().contains("whiteout names no file"), "{err}");
    let bytes = archive(&[entry(b"../.wh.outside", b'0', b"", b"", None)]);
    assert!(apply(&s.root, WhiteoutStyle::Delete, &bytes).is_err());
    untouched(&s);
}

/// Without CAP_MKNOD (as for a rootless user), device nodes are skipped with
/// a warning; everything else is applied. The check runs in a child process
/// whose capability bounding set lacks CAP_MKNOD.
#[test]
fn devices_are_skipped_with_a_warning_without_cap_mknod() {
    hoist_testutil::require_root!();
    hoist_testutil::require_program!("setpriv");
    const NAME: &str = "apply_safety::devices_are_skipped_with_a_warning_without_cap_mknod";
    if std::env::var_os("HOIST_TEST_NO_MKNOD_CHILD").is_some() {
        let s = scene();
        let mut h = tar::Header::new_gnu();
        h.set_path("dev/mem").unwrap();
        h.set_entry_type(tar::EntryType::Char);
        h.set_mode(0o640);
        h.set_size(0);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_device_major(1).unwrap();
        h.set_device_minor(1).unwrap();
        h.set_cksum();
        let dev = h.as_bytes().to_vec();
        let bytes = archive(&[
            entry(b"dev/", b'5', b"", b"", None),
            dev,
            entry(b"dev/fifo", b'6', b"", b"", None),
            entry(b"file", b'0', b"", b"data", None),
        ]);
        let report = apply(&s.root, WhiteoutStyle::Delete, &bytes).unwrap();
        assert_eq!(report.warnings.len(), 1, "{:?}", report.warnings);
        assert_eq!(report.warnings[0].path, "dev/mem");
        assert!(report.warnings[0].message.contains("device node skipped"));
        assert!(!s.root.join("dev/mem").exists());
        assert!(fs::symlink_metadata(s.root.join("dev/fifo")).is_ok());
        assert_eq!(fs::read(s.root.join("file")).unwrap(), b"data");
        println!("child checks passed");
        return;
    }
    let out = std::process::Command::new("setpriv")
        .args(["--bounding-set", "-mknod", "--"])
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", NAME, "--nocapture", "--test-threads=1"])
        .env("HOIST_TEST_NO_MKNOD_CHILD", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("child checks passed"),
        "child failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The layer is inflated on a thread of its own, chunks ahead of the files
/// being written. A refusal on the first entry, with far more data behind
/// it than that thread may hold, still returns the refusal (the thread
/// stops instead of waiting to hand over the rest), and a layer of many
/// chunks gets the diff_id and size of its whole tar stream.
#[test]
fn an_early_refusal_and_a_many_chunk_layer_through_the_inflating_thread() {
    hoist_testutil::require_root!();
    let s = scene();
    let big: Vec<u8> = (0..24u32 << 20).map(|i| (i % 251) as u8).collect();
    let bytes = archive(&[
        entry(b"../outside/marker", b'0', b"", b"pwned", None),
        entry(b"big", b'0', b"", &big, None),
    ]);
    let err = apply(&s.root, WhiteoutStyle::Delete, &gzip(&bytes)).unwrap_err();
    assert!(err.to_string().contains("`..`"), "{err}");
    untouched(&s);
    assert!(!s.root.join("big").exists());

    let bytes = archive(&[entry(b"big", b'0', b"", &big, None)]);
    let report = apply(&s.root, WhiteoutStyle::Delete, &gzip(&bytes)).unwrap();
    use sha2::Digest as _;
    assert_eq!(
        report.diff_id,
        format!("sha256:{}", hex::encode(sha2::Sha256::digest(&bytes)))
    );
    assert_eq!(report.uncompressed_size, bytes.len() as u64);
    assert!(fs::read(s.root.join("big")).unwrap() == big);
}

/// A gzip stream cut off 18 MB in is reported at the entry it cuts, after
/// the entries before it were written, as when one thread read it.
#[test]
fn a_layer_cut_deep_inside_names_the_entry_it_cuts() {
    hoist_testutil::require_root!();
    let s = scene();
    let data: Vec<u8> = (0..12u32 << 20).map(|i| (i % 251) as u8).collect();
    let bytes = archive(&[
        entry(b"first", b'0', b"", &data, None),
        entry(b"second", b'0', b"", &data, None),
    ]);
    let gz = gzip(&bytes);
    let err = apply(&s.root, WhiteoutStyle::Delete, &gz[..gz.len() * 3 / 4]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidLayer);
    let chain = with_source(&err);
    assert!(chain.contains("`second`"), "{chain}");
    assert!(fs::read(s.root.join("first")).unwrap() == data);
    untouched(&s);
}
