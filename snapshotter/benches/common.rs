//! Shared by the benchmark and the `layer` example: a deterministic tree of
//! mixed text and random files.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed setup should panic with its message"
)]

use std::fs;
use std::io::{BufWriter, Write};
use std::path::Path;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*: fast, deterministic, good enough for test data.
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

const WORDS: &[&str] = &[
    "layer",
    "snapshot",
    "overlay",
    "image",
    "build",
    "config",
    "the",
    "of",
    "and",
    "to",
    "container",
    "registry",
    "digest",
    "manifest",
    "tar",
    "gzip",
    "hoist",
    "error",
    "path",
    "file",
    "directory",
    "mount",
    "namespace",
    "process",
    "return",
    "value",
    "struct",
    "fn",
];

/// Fills `dir` with about `total` bytes: half text (compressible), half
/// random (incompressible), in files from 1 KiB to 32 MiB.
pub fn make_tree(dir: &Path, total: u64) {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut written = 0u64;
    let mut n = 0u64;
    while written < total {
        let sub = dir.join(format!("d{:03}/s{:02}", n % 97, n % 13));
        fs::create_dir_all(&sub).unwrap();
        let size = match rng.next() % 100 {
            0..=69 => 1024 + rng.next() % (64 * 1024),
            70..=94 => 64 * 1024 + rng.next() % (1024 * 1024),
            _ => 1024 * 1024 + rng.next() % (32 * 1024 * 1024),
        }
        .min(total - written + 1);
        let text = n % 2 == 0;
        let path = sub.join(format!("f{n}.{}", if text { "txt" } else { "bin" }));
        let mut w = BufWriter::with_capacity(256 * 1024, fs::File::create(&path).unwrap());
        let mut left = size;
        let mut buf = Vec::with_capacity(64 * 1024);
        while left > 0 {
            buf.clear();
            if text {
                while buf.len() < 64 * 1024 {
                    let word = WORDS[(rng.next() % WORDS.len() as u64) as usize];
                    buf.extend_from_slice(word.as_bytes());
                    buf.push(if rng.next() % 12 == 0 { b'\n' } else { b' ' });
                }
            } else {
                while buf.len() < 64 * 1024 {
                    buf.extend_from_slice(&rng.next().to_le_bytes());
                }
            }
            let take = left.min(buf.len() as u64) as usize;
            w.write_all(&buf[..take]).unwrap();
            left -= take as u64;
        }
        w.flush().unwrap();
        written += size;
        n += 1;
    }
}

/// Total size of regular files below `dir`.
#[allow(dead_code)]
pub fn tree_size(dir: &Path) -> u64 {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
        .map(|e| e.metadata().unwrap().len())
        .sum()
}
