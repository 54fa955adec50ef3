//! Remote input is bounded: a large ADD URL body and a large stdin context
//! stream through hoist to disk, never into its memory.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};

use sha2::{Digest as _, Sha256};

use crate::util::Hoist;

/// The served body: 16 KiB blocks of pseudo-random bytes, each stamped with
/// its index (so the body is not one block repeated), `len` bytes in all.
struct Body {
    block: Vec<u8>,
    len: u64,
    pos: u64,
}

const BLOCK: usize = 16 << 10;

impl Body {
    fn new(len: u64) -> Body {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let block = (0..BLOCK)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        Body { block, len, pos: 0 }
    }
}

impl Read for Body {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.len - self.pos;
        if left == 0 {
            return Ok(0);
        }
        let offset = (self.pos % BLOCK as u64) as usize;
        if offset == 0 {
            let index = self.pos / BLOCK as u64;
            self.block[..8].copy_from_slice(&index.to_le_bytes());
        }
        let n = buf
            .len()
            .min(BLOCK - offset)
            .min(usize::try_from(left).unwrap_or(usize::MAX));
        buf[..n].copy_from_slice(&self.block[offset..offset + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

/// Serves `len` bytes of [`Body`] at every path; returns the base URL.
fn serve(len: u64) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                }
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
                );
                if stream.write_all(head.as_bytes()).is_ok() {
                    let _ = std::io::copy(&mut Body::new(len), &mut stream);
                }
            });
        }
    });
    format!("http://{addr}")
}

/// Feeds hoist's stdin from a thread of its own.
type Feeder = Box<dyn FnOnce(std::process::ChildStdin) + Send>;

/// Runs `hoist ARGS` under GNU time; returns (exit code, stderr, peak RSS
/// of hoist in KiB).
fn run_measured(h: &Hoist, args: &[&str], stdin: Option<Feeder>) -> (i32, String, u64) {
    let report = h.path("time.txt");
    let mut command = Command::new("/usr/bin/time");
    command
        .arg("-f")
        .arg("%M")
        .arg("-o")
        .arg(&report)
        .arg(env!("CARGO_BIN_EXE_hoist"))
        .arg("--root")
        .arg(&h.root)
        .args(args)
        .env_remove("HOIST_ROOT")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
    let mut child = command
        .spawn()
        .expect("run /usr/bin/time (Debian package time)");
    let feeder = stdin.map(|feed| {
        let pipe = child.stdin.take().unwrap();
        std::thread::spawn(move || feed(pipe))
    });
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    if let Some(feeder) = feeder {
        feeder.join().unwrap();
    }
    let peak_kib = std::fs::read_to_string(&report)
        .unwrap()
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("no peak RSS in {report:?}"));
    (status.code().unwrap_or(-1), stderr, peak_kib)
}

/// What hoist may use at most while 200-300 MB pass through it (it peaks
/// near 17 MB for a stdin context and 45 MB for the ADD build, debug
/// build): a body held whole would be twice that or more.
const MAX_PEAK_KIB: u64 = 100 << 10;

#[test]
fn add_of_a_large_url_streams_to_disk_with_its_digest() {
    hoist_testutil::require_root!();
    hoist_testutil::require_program!("/usr/bin/time");
    const LEN: u64 = 300 << 20;
    let h = Hoist::new();
    let url = serve(LEN);
    let mut hasher = Sha256::new();
    std::io::copy(&mut Body::new(LEN), &mut hasher).unwrap();
    let digest = format!("{:x}", hasher.finalize());
    let context = h.path("ctx");
    std::fs::create_dir_all(&context).unwrap();
    std::fs::write(
        context.join("Dockerfile"),
        format!("FROM scratch\nADD {url}/big.bin /big.bin\n"),
    )
    .unwrap();
    let out = h.path("out");
    let output = format!("type=local,dest={}", out.display());
    let (code, stderr, peak_kib) = run_measured(
        &h,
        &[
            "build",
            "--progress",
            "plain",
            "-o",
            &output,
            context.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(code, 0, "{stderr}");
    let file = out.join("big.bin");
    assert_eq!(std::fs::metadata(&file).unwrap().len(), LEN);
    let mut hasher = Sha256::new();
    std::io::copy(&mut std::fs::File::open(&file).unwrap(), &mut hasher).unwrap();
    assert_eq!(format!("{:x}", hasher.finalize()), digest);
    eprintln!("peak RSS of hoist: {peak_kib} KiB");
    assert!(
        peak_kib < MAX_PEAK_KIB,
        "hoist peaked at {peak_kib} KiB while 300 MB streamed through it"
    );
}

#[test]
fn a_large_stdin_context_streams_and_a_huge_dockerfile_is_refused() {
    hoist_testutil::require_program!("/usr/bin/time");
    let h = Hoist::new();
    // 200 MB of context on stdin, a tar made while it is fed: the build
    // only lowers it (--dry-run), so what is measured is the unpacking.
    const LEN: u64 = 200 << 20;
    let producer: Feeder = Box::new(|stdin| {
        let mut tar = tar::Builder::new(stdin);
        let dockerfile = b"FROM scratch\nCOPY big.bin /\n";
        let mut header = tar::Header::new_gnu();
        header.set_size(dockerfile.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        let _ = tar.append_data(&mut header, "Dockerfile", &dockerfile[..]);
        let mut header = tar::Header::new_gnu();
        header.set_size(LEN);
        header.set_mode(0o644);
        header.set_cksum();
        let _ = tar.append_data(&mut header, "big.bin", Body::new(LEN));
        let _ = tar.finish();
    });
    let (code, stderr, peak_kib) = run_measured(&h, &["build", "--dry-run", "-"], Some(producer));
    assert_eq!(code, 0, "{stderr}");
    eprintln!("peak RSS of hoist: {peak_kib} KiB");
    assert!(
        peak_kib < MAX_PEAK_KIB,
        "hoist peaked at {peak_kib} KiB while a 200 MB context streamed through it"
    );

    // Not an archive: a Dockerfile, which has a size limit.
    let huge: Feeder = Box::new(|mut stdin| {
        // hoist stops reading at the limit: the rest meets a closed pipe.
        let _ = std::io::copy(&mut Body::new(17 << 20), &mut stdin);
    });
    let (code, stderr, _) = run_measured(&h, &["build", "--dry-run", "-"], Some(huge));
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("not a tar archive, and larger than a Dockerfile may be (16 MiB)"),
        "{stderr}"
    );
}

/// A tar of `entries` (path, type, data or link target, mode) on stdin of
/// `hoist build ARGS -`.
fn build_stdin_tar(
    h: &Hoist,
    args: &[&str],
    entries: &[(&str, tar::EntryType, &[u8], u32)],
) -> hoist_testutil::cli::Run {
    let mut tar = tar::Builder::new(Vec::new());
    for (path, kind, data, mode) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(*kind);
        header.set_mode(*mode);
        header.set_mtime(1);
        if kind.is_symlink() {
            header.set_size(0);
            tar.append_link(&mut header, path, std::str::from_utf8(data).unwrap())
                .unwrap();
        } else if *kind == tar::EntryType::Char {
            header.set_size(0);
            header.set_device_major(1).unwrap();
            header.set_device_minor(3).unwrap();
            // The name is written raw: the tar crate refuses `..` in paths.
            header.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
            header.set_cksum();
            tar.append(&header, &[][..]).unwrap();
        } else {
            header.set_size(data.len() as u64);
            header.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
            header.set_cksum();
            tar.append(&header, *data).unwrap();
        }
    }
    let bytes = tar.into_inner().unwrap();
    let mut all = args.to_vec();
    all.push("-");
    h.run_with_input(&all, Some(&bytes))
}

#[test]
fn a_stdin_context_unpacks_inside_its_directory_and_holds_only_files() {
    hoist_testutil::require_root!();
    use std::os::unix::fs::PermissionsExt;
    use tar::EntryType::{Char, Regular, Symlink};
    let h = Hoist::new();
    let out = h.path("out");
    let output = format!("type=local,dest={}", out.display());
    let dockerfile = b"FROM scratch\nCOPY . /ctx/\n";
    let r = build_stdin_tar(
        &h,
        &["build", "-o", &output],
        &[
            ("Dockerfile", Regular, dockerfile, 0o644),
            ("a/b.txt", Regular, b"bee\n", 0o750),
            ("out", Symlink, b"/etc", 0o777),
            ("null", Char, b"", 0o666),
        ],
    );
    assert_eq!(r.code(), 0, "{}", r.stderr);
    let b = out.join("ctx/a/b.txt");
    assert_eq!(std::fs::read_to_string(&b).unwrap(), "bee\n");
    assert_eq!(
        std::fs::metadata(&b).unwrap().permissions().mode() & 0o7777,
        0o750
    );
    assert_eq!(
        std::fs::read_link(out.join("ctx/out")).unwrap(),
        std::path::Path::new("/etc")
    );
    // A device node is not context: it is gone, not copied.
    assert!(std::fs::symlink_metadata(out.join("ctx/null")).is_err());

    // Entries that climb out or go through a symlink stay inside, or the
    // build is refused before anything runs.
    let sentinel = h.path("sentinel");
    std::fs::create_dir_all(&sentinel).unwrap();
    let climb = format!("../../../../../../../..{}/pwned", sentinel.display());
    let r = build_stdin_tar(
        &h,
        &["build", "-o", &output],
        &[
            ("Dockerfile", Regular, dockerfile, 0o644),
            (climb.as_str(), Regular, b"x", 0o644),
        ],
    );
    assert_eq!(r.code(), 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("the path contains a `..` component"),
        "{}",
        r.stderr
    );
    let link = format!("{}", sentinel.display());
    let r = build_stdin_tar(
        &h,
        &["build", "-o", &output],
        &[
            ("Dockerfile", Regular, dockerfile, 0o644),
            ("s", Symlink, link.as_bytes(), 0o777),
            ("s/pwned", Regular, b"x", 0o644),
        ],
    );
    // The symlink resolves inside the context, where its target is missing.
    assert_eq!(r.code(), 1, "{}", r.stderr);
    assert!(
        r.stderr.contains(
            "refusing layer entry `s/pwned`: parent `s` is a symlink to a missing directory"
        ),
        "{}",
        r.stderr
    );
    assert_eq!(std::fs::read_dir(&sentinel).unwrap().count(), 0);
}

#[test]
fn a_body_larger_than_the_free_disk_is_refused_before_a_byte_is_written() {
    hoist_testutil::require_root!();
    let h = Hoist::new();
    // 4 EiB announced: no disk has that much free.
    let url = serve(1 << 62);
    let context = h.path("ctx");
    std::fs::create_dir_all(&context).unwrap();
    std::fs::write(
        context.join("Dockerfile"),
        format!("FROM scratch\nADD {url}/huge.bin /huge.bin\n"),
    )
    .unwrap();
    let r = h.run(&["build", "--progress", "plain", context.to_str().unwrap()]);
    assert_eq!(r.code(), 1, "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!(
            "failed to fetch {url}/huge.bin: the server announces 4611686018427387904 bytes, more than the"
        )),
        "{}",
        r.stderr
    );
    // The same for a context from that URL.
    let r = h.run(&["build", &format!("{url}/ctx.tar")]);
    assert_eq!(r.code(), 1, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("the server announces 4611686018427387904 bytes"),
        "{}",
        r.stderr
    );
}
