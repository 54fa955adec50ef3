//! A stable-Rust mutation fuzzer for layer apply: what `cargo fuzz run
//! tar_apply` does on nightly, without coverage feedback.
//!
//! ```text
//! cargo run --release -p hoist-snapshotter --example fuzz_apply -- \
//!     [--seconds 300] [--iterations N] [--seed S] [--corpus DIR] [--crashes DIR]
//! cargo run -p hoist-snapshotter --example fuzz_apply -- --replay FILE...
//! ```
//!
//! Each iteration takes a corpus input (or one an earlier iteration kept),
//! mutates it with tar-aware mutations (header fields set to hostile names,
//! links, types and sizes with the checksum fixed up; blocks spliced,
//! duplicated, dropped; bytes flipped; truncation) and runs
//! `hoist_snapshotter::fuzzing::fuzz_apply` on it: a panic, a change outside
//! the root, a raw control character in a message or an apply slower than
//! the limit is a crash, written to `--crashes` (default
//! `snapshotter/fuzz/artifacts/tar_apply/`) as `crash-<n>`. A watchdog aborts
//! the process (after writing the input) when one iteration hangs. An input
//! whose outcome (error message with digits removed, warnings) was not seen
//! before is kept for further mutation: a crude stand-in for coverage.
//!
//! As root the loop re-executes itself in a private mount namespace with a
//! fresh tmpfs on /tmp (where the scenes are made), so that an escape the
//! fuzzer finds cannot damage the host's /tmp.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed setup should panic with its message"
)]

use std::collections::HashSet;
use std::fs;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hoist_snapshotter::fuzzing::{self, Harness};
use hoist_snapshotter::WhiteoutStyle;

/// xorshift64*: enough randomness for mutations, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
    fn pick<T: Copy>(&mut self, v: &[T]) -> T {
        v[self.below(v.len())]
    }
}

const NAMES: &[&[u8]] = &[
    b"a",
    b"a/x",
    b"a/b/c",
    b"../x",
    b"../sentinel/victim",
    b"../../sentinel",
    b"a/../../x",
    b"/tmp/hoist-fuzz-sentinel/victim",
    b"/",
    b".",
    b"./",
    b"..",
    b"up/sentinel/victim",
    b"up/.wh.sentinel",
    b"up/.wh..wh..opq",
    b".wh..wh..opq",
    b".wh.a",
    b"a/.wh.x",
    b".wh.",
    b".wh...",
    b"dev/null",
    b"etc/passwd",
    b"d/f",
    b"\x1b[2J\x07",
    b"a\xc2\x9bb",
];

const LINKS: &[&[u8]] = &[
    b"a",
    b"..",
    b"../..",
    b"../../../../../../..",
    b"/",
    b"/tmp",
    b"/tmp/hoist-fuzz-sentinel",
    b"/tmp/hoist-fuzz-sentinel/victim",
    b"../sentinel/victim",
    b"../sentinel",
    b"up",
    b"up/sentinel/victim",
    b"etc/passwd",
    b"d/f",
    b"victim-link",
    b"abs/victim",
    b"fifo",
    b"up/etc/passwd",
    b"/etc/passwd",
    b"",
];

const TYPES: &[u8] = b"0125673 4xgLKSZV\0";

const SIZES: &[&[u8]] = &[
    b"00000000000\0",
    b"00000000001\0",
    b"00000001000\0",
    b"77777777777\0",
    b"7777777777777",
    b"\x80\0\0\0\xff\xff\xff\xff\xff\xff\xff\xff",
    b"\x80\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",
    b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",
    b"           \0",
    b"-1\0",
];

const PAX_KEYS: &[&str] = &[
    "path",
    "linkpath",
    "size",
    "uid",
    "gid",
    "mtime",
    "SCHILY.xattr.user.x",
    "SCHILY.xattr.trusted.overlay.opaque",
    "SCHILY.xattr.security.capability",
    "GNU.sparse.major",
];

fn checksum(block: &mut [u8]) {
    block[148..156].fill(b' ');
    let sum: u32 = block.iter().map(|b| u32::from(*b)).sum();
    let s = format!("{sum:06o}\0 ");
    block[148..156].copy_from_slice(s.as_bytes());
}

fn octal_size(field: &[u8]) -> Option<u64> {
    let s: String = field
        .iter()
        .take_while(|b| **b != 0)
        .map(|b| *b as char)
        .filter(|c| *c != ' ')
        .collect();
    u64::from_str_radix(&s, 8).ok()
}

/// Offsets of the blocks that look like headers, following the size fields.
fn headers(data: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut off = 0;
    while off + 512 <= data.len() && out.len() < 10_000 {
        let h = &data[off..off + 512];
        if h.iter().all(|b| *b == 0) {
            break;
        }
        out.push(off);
        let size = octal_size(&h[124..136]).unwrap_or(0).min(1 << 30) as usize;
        off += 512 + size.div_ceil(512) * 512;
    }
    out
}

fn set_field(block: &mut [u8], start: usize, len: usize, value: &[u8]) {
    let f = &mut block[start..start + len];
    f.fill(0);
    let n = value.len().min(len);
    f[..n].copy_from_slice(&value[..n]);
}

fn pax_header(key: &str, value: &[u8]) -> Vec<u8> {
    let body = key.len() + value.len() + 3;
    let mut len = body + 1;
    while len.to_string().len() + body != len {
        len += 1;
    }
    let mut data = format!("{len} {key}=").into_bytes();
    data.extend_from_slice(value);
    data.push(b'\n');
    let mut h = vec![0u8; 512];
    set_field(&mut h, 0, 100, b"././@PaxHeader");
    set_field(&mut h, 100, 8, b"0000644\0");
    set_field(&mut h, 124, 12, format!("{:011o}\0", data.len()).as_bytes());
    h[156] = b'x';
    set_field(&mut h, 257, 8, b"ustar\x0000");
    checksum(&mut h);
    h.extend_from_slice(&data);
    h.resize(h.len().div_ceil(512) * 512, 0);
    h
}

fn fresh_header(rng: &mut Rng) -> Vec<u8> {
    let mut h = vec![0u8; 512];
    set_field(&mut h, 0, 100, rng.pick(NAMES));
    set_field(&mut h, 100, 8, b"0000755\0");
    set_field(&mut h, 124, 12, b"00000000000\0");
    set_field(&mut h, 136, 12, b"00000000000\0");
    h[156] = rng.pick(TYPES);
    set_field(&mut h, 157, 100, rng.pick(LINKS));
    set_field(&mut h, 257, 8, b"ustar  \0");
    set_field(&mut h, 329, 8, b"0000001\0");
    set_field(&mut h, 337, 8, b"0000003\0");
    checksum(&mut h);
    h
}

fn mutate(rng: &mut Rng, input: &[u8], pool: &[Vec<u8>]) -> Vec<u8> {
    let mut d = input.to_vec();
    let rounds = 1 + rng.below(4);
    for _ in 0..rounds {
        let hs = headers(&d);
        match rng.below(12) {
            // A header field set to a hostile value, checksum fixed.
            0..=4 if !hs.is_empty() => {
                let off = rng.pick(&hs);
                let block = &mut d[off..off + 512];
                match rng.below(6) {
                    0 => set_field(block, 0, 100, rng.pick(NAMES)),
                    1 => set_field(block, 157, 100, rng.pick(LINKS)),
                    2 => block[156] = rng.pick(TYPES),
                    3 => set_field(block, 124, 12, rng.pick(SIZES)),
                    4 => set_field(
                        block,
                        100,
                        8,
                        rng.pick(&[&b"0000000\0"[..], b"0007777\0", b"7777777\0"]),
                    ),
                    _ => set_field(block, 345, 155, rng.pick(NAMES)),
                }
                if rng.below(8) != 0 {
                    checksum(block);
                }
            }
            // A new entry or PAX header inserted before a header.
            5 => {
                let at = if hs.is_empty() { 0 } else { rng.pick(&hs) };
                let ins = if rng.below(2) == 0 {
                    fresh_header(rng)
                } else {
                    let key = rng.pick(PAX_KEYS);
                    let value: Vec<u8> = match key {
                        "path" => rng.pick(NAMES).to_vec(),
                        "linkpath" => rng.pick(LINKS).to_vec(),
                        "size" | "uid" | "gid" | "mtime" => rng
                            .pick(&[
                                "0",
                                "1",
                                "-1",
                                "9223372036854775807",
                                "18446744073709551616",
                                "1e9",
                                "4611686018427387904",
                            ])
                            .as_bytes()
                            .to_vec(),
                        _ => b"y".to_vec(),
                    };
                    pax_header(key, &value)
                };
                d.splice(at..at, ins);
            }
            // Blocks duplicated, dropped or taken from another input.
            6 => {
                if d.len() >= 512 {
                    let n = d.len() / 512;
                    let a = rng.below(n) * 512;
                    let len = (1 + rng.below(4)) * 512;
                    let chunk = d[a..(a + len).min(d.len())].to_vec();
                    let at = rng.below(n + 1) * 512;
                    d.splice(at..at, chunk);
                }
            }
            7 => {
                if d.len() >= 1024 {
                    let n = d.len() / 512;
                    let a = rng.below(n) * 512;
                    let len = (1 + rng.below(2)) * 512;
                    d.drain(a..(a + len).min(d.len()));
                }
            }
            8 => {
                let other = &pool[rng.below(pool.len())];
                if other.len() >= 512 && d.len() >= 512 {
                    let a = rng.below(other.len() / 512) * 512;
                    let len = (1 + rng.below(4)) * 512;
                    let chunk = other[a..(a + len).min(other.len())].to_vec();
                    let at = rng.below(d.len() / 512 + 1) * 512;
                    d.splice(at..at, chunk);
                }
            }
            // Raw byte damage and truncation.
            9 | 10 => {
                for _ in 0..1 + rng.below(8) {
                    if d.is_empty() {
                        break;
                    }
                    let i = rng.below(d.len());
                    d[i] = match rng.below(3) {
                        0 => d[i] ^ (1 << rng.below(8)),
                        1 => rng.pick(&[0u8, 0xff, 0x80, b'/', b'.', b'0', b'7', b' ']),
                        _ => rng.next() as u8,
                    };
                }
            }
            _ => {
                if !d.is_empty() {
                    let n = rng.below(d.len());
                    d.truncate(n);
                }
            }
        }
    }
    // Inputs stay small: a run is two applies of a few MiB at most.
    d.truncate(4 << 20);
    d
}

/// The outcome with numbers taken out, to tell new behaviour from old.
fn signature(data: &[u8]) -> String {
    let h = Harness::new();
    let outcome = h.apply(data, WhiteoutStyle::Delete);
    let mut s = match &outcome {
        Ok(r) => format!("ok {}", r.warnings.len().min(3)),
        Err(_) => "err".to_string(),
    };
    let root = h.root().display().to_string();
    for t in fuzzing::texts(&outcome) {
        s.push('|');
        let t = t.replace(&root, "ROOT");
        s.extend(t.chars().filter(|c| !c.is_ascii_digit()).take(120));
    }
    s
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// Root only: run again in a private mount namespace over a fresh /tmp.
fn reexec_in_namespace(args: &[String]) {
    if std::env::var_os("HOIST_FUZZ_IN_NS").is_some()
        || !rustix::process::geteuid().is_root()
        || args.iter().any(|a| a == "--no-namespace")
    {
        return;
    }
    let exe = std::env::current_exe().expect("current exe");
    let status = std::process::Command::new("unshare")
        .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
        .arg("mount -t tmpfs hoist-fuzz /tmp && exec \"$0\" \"$@\"")
        .arg(exe)
        .args(args)
        .env("HOIST_FUZZ_IN_NS", "1")
        .status();
    match status {
        Ok(s) => std::process::exit(s.code().unwrap_or(1)),
        Err(e) => eprintln!("unshare not usable ({e}); fuzzing on the host's /tmp"),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let corpus = arg(&args, "--corpus")
        .map(PathBuf::from)
        .unwrap_or_else(|| here.join("fuzz/corpus/tar_apply"));
    let crashes = arg(&args, "--crashes")
        .map(PathBuf::from)
        .unwrap_or_else(|| here.join("fuzz/artifacts/tar_apply"));
    let crashes = std::path::absolute(crashes).expect("crash dir path");
    reexec_in_namespace(&args);
    if let Some(i) = args.iter().position(|a| a == "--replay") {
        // Replays saved inputs, printing what each does.
        let mut failed = false;
        for f in &args[i + 1..] {
            let data = fs::read(f).unwrap_or_else(|e| panic!("read {f}: {e}"));
            let h = Harness::new();
            let outcome = h.apply(&data, WhiteoutStyle::Delete);
            println!("{f}: {:?}", fuzzing::texts(&outcome));
            drop(h);
            if let Err(p) = catch_unwind(|| fuzzing::fuzz_apply(&data)) {
                failed = true;
                let msg = p.downcast_ref::<String>().cloned().unwrap_or_default();
                println!("{f}: CRASH {msg}");
            }
        }
        std::process::exit(i32::from(failed));
    }
    let seconds: u64 = arg(&args, "--seconds").map_or(60, |s| s.parse().expect("--seconds N"));
    let iterations: u64 =
        arg(&args, "--iterations").map_or(u64::MAX, |s| s.parse().expect("--iterations N"));
    let seed: u64 = arg(&args, "--seed").map_or_else(
        || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                ^ u64::from(std::process::id())
        },
        |s| s.parse().expect("--seed N"),
    );
    let mut pool: Vec<Vec<u8>> = fs::read_dir(&corpus)
        .unwrap_or_else(|e| panic!("read corpus {}: {e}", corpus.display()))
        .map(|e| fs::read(e.unwrap().path()).unwrap())
        .collect();
    assert!(!pool.is_empty(), "empty corpus");
    let mut rng = Rng(seed | 1);
    let mut seen: HashSet<String> = pool.iter().map(|d| signature(d)).collect();
    println!(
        "seed {seed}, {} corpus inputs, {} outcomes, {seconds} s",
        pool.len(),
        seen.len()
    );
    fs::create_dir_all(&crashes).unwrap();
    // Silence the default hook: crashes are reported below, with the input.
    std::panic::set_hook(Box::new(|_| {}));

    // The watchdog: when one iteration runs past the limit, save it and stop.
    let current: Arc<Mutex<Vec<u8>>> = Arc::default();
    let started = Arc::new(AtomicU64::new(0));
    let epoch = Instant::now();
    {
        let current = current.clone();
        let started = started.clone();
        let crashes = crashes.clone();
        std::thread::spawn(move || loop {
            std::thread::sleep(Duration::from_secs(1));
            let s = started.load(Ordering::SeqCst);
            let now = epoch.elapsed().as_millis() as u64;
            if s != 0 && now - s > 2 * fuzzing::TIME_LIMIT.as_millis() as u64 {
                let path = crashes.join("hang-input");
                let _ = fs::write(&path, &*current.lock().unwrap());
                eprintln!(
                    "HANG: an iteration ran {} ms; input in {}",
                    now - s,
                    path.display()
                );
                std::process::exit(3);
            }
        });
    }

    let deadline = Instant::now() + Duration::from_secs(seconds);
    let (mut runs, mut found) = (0u64, 0u64);
    while runs < iterations && Instant::now() < deadline {
        let base = pool[rng.below(pool.len())].clone();
        let input = mutate(&mut rng, &base, &pool);
        *current.lock().unwrap() = input.clone();
        started.store(epoch.elapsed().as_millis() as u64 + 1, Ordering::SeqCst);
        let result = catch_unwind(AssertUnwindSafe(|| fuzzing::fuzz_apply(&input)));
        started.store(0, Ordering::SeqCst);
        runs += 1;
        if let Err(p) = result {
            found += 1;
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            let path = crashes.join(format!("crash-{seed}-{runs}"));
            fs::write(&path, &input).unwrap();
            println!("CRASH {}: {msg}", path.display());
            continue;
        }
        if pool.len() < 20_000 {
            let sig = catch_unwind(AssertUnwindSafe(|| signature(&input))).unwrap_or_default();
            if seen.insert(sig) {
                pool.push(input);
            }
        }
        if runs % 500 == 0 {
            println!(
                "{runs} runs, {} kept, {} outcomes, {found} crashes, {:.0} runs/s",
                pool.len(),
                seen.len(),
                runs as f64 / epoch.elapsed().as_secs_f64()
            );
        }
    }
    println!(
        "done: {runs} runs, {} inputs kept, {} distinct outcomes, {found} crashes",
        pool.len(),
        seen.len()
    );
    if found > 0 {
        std::process::exit(1);
    }
}
