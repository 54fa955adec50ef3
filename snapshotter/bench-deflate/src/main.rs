//! Compresses a file the way hoist's `ParallelGzip` does (1 MiB blocks, each
//! primed with the previous 32 KiB and ended by a sync flush; blocks that
//! look incompressible stored), on one thread, with flate2's backend (zlib-rs
//! or zlib-ng, by feature) and with libdeflate (whole blocks, no dictionary:
//! libdeflate has no preset dictionary nor sync flush, so each block would
//! be a gzip member of its own). Prints the CPU time of the compression alone
//! (CLOCK_THREAD_CPUTIME_ID: other processes on a loaded machine do not
//! count), the wall time and the output size; and the CPU time of one
//! SHA-256 pass over the file.

use std::time::Instant;

const BLOCK: usize = 1 << 20;
const DICT: usize = 32 * 1024;

fn thread_cpu() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// CPU time of the whole process (zstd's workers are threads of it).
fn process_cpu() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// zstd as hoist writes it: libzstd's multi-threaded mode with `workers`.
fn zstd_layer(data: &[u8], level: i32, workers: u32) -> (f64, f64, usize) {
    use std::io::Write;
    let (cpu, wall) = (process_cpu(), Instant::now());
    let mut e = zstd::stream::write::Encoder::new(Vec::new(), level).unwrap();
    e.multithread(workers).unwrap();
    for chunk in data.chunks(256 * 1024) {
        e.write_all(chunk).unwrap();
    }
    let out = e.finish().unwrap();
    (process_cpu() - cpu, wall.elapsed().as_secs_f64(), out.len())
}

fn looks_incompressible(data: &[u8]) -> bool {
    if data.len() < 64 * 1024 {
        return false;
    }
    let mut counts = [0u32; 256];
    for b in data {
        counts[usize::from(*b)] += 1;
    }
    let expected = data.len() as u64;
    counts.iter().all(|&c| {
        let scaled = u64::from(c) * 256 * 4;
        scaled >= expected * 3 && scaled <= expected * 5
    })
}

fn flate2_block(level: u32, dict: &[u8], data: &[u8]) -> usize {
    use flate2::{Compress, FlushCompress};
    if looks_incompressible(data) {
        return data.len() + data.len() / 65535 * 5 + 5;
    }
    let mut c = Compress::new(flate2::Compression::new(level), false);
    if !dict.is_empty() {
        c.set_dictionary(dict).unwrap();
    }
    let mut out = Vec::with_capacity(data.len() / 2 + 4096);
    loop {
        if out.len() == out.capacity() {
            out.reserve(64 * 1024);
        }
        let consumed = c.total_in() as usize;
        c.compress_vec(&data[consumed..], &mut out, FlushCompress::Sync)
            .unwrap();
        if c.total_in() as usize == data.len() && out.len() < out.capacity() {
            return out.len();
        }
    }
}

fn libdeflate_block(c: &mut libdeflater::Compressor, out: &mut [u8], data: &[u8]) -> usize {
    if looks_incompressible(data) {
        return data.len() + data.len() / 65535 * 5 + 5;
    }
    // A gzip member per block (header and trailer: 18 bytes).
    c.gzip_compress(data, out).unwrap()
}

fn main() {
    let path = std::env::args()
        .nth(1)
        .expect("usage: bench-deflate FILE [LEVEL…]");
    let levels: Vec<u32> = std::env::args()
        .skip(2)
        .map(|l| l.parse().unwrap())
        .collect();
    let levels = if levels.is_empty() {
        vec![3, 6]
    } else {
        levels
    };
    let data = std::fs::read(&path).unwrap();
    let backend = if cfg!(feature = "ng") {
        "zlib-ng"
    } else {
        "zlib-rs"
    };
    println!("{path}: {} bytes", data.len());
    // What hashing a stream costs (the blob was hashed twice before).
    let cpu = thread_cpu();
    let digest = <sha2::Sha256 as sha2::Digest>::digest(&data);
    println!(
        "sha256 of the file: cpu {:.2} s ({:02x}{:02x}…)",
        thread_cpu() - cpu,
        digest[0],
        digest[1]
    );
    if std::env::var_os("ZSTD").is_some() {
        for workers in [1, 2] {
            let (cpu, wall, size) = zstd_layer(&data, 3, workers);
            println!(
                "zstd       level 3, {workers} worker(s): cpu {cpu:7.2} s  wall {wall:7.2} s  out {size}"
            );
        }
        return;
    }
    for level in levels {
        let (cpu, wall) = (thread_cpu(), Instant::now());
        let mut size = 0;
        let mut crc = crc32fast::Hasher::new();
        let mut prev: &[u8] = &[];
        for block in data.chunks(BLOCK) {
            let dict = &prev[prev.len().saturating_sub(DICT)..];
            size += flate2_block(level, dict, block);
            crc.update(block);
            prev = block;
        }
        let _ = crc.finalize();
        println!(
            "{backend:10} level {level}: cpu {:7.2} s  wall {:7.2} s  out {size}",
            thread_cpu() - cpu,
            wall.elapsed().as_secs_f64()
        );

        let (cpu, wall) = (thread_cpu(), Instant::now());
        let mut c =
            libdeflater::Compressor::new(libdeflater::CompressionLvl::new(level as i32).unwrap());
        let mut out = vec![0u8; c.gzip_compress_bound(BLOCK)];
        let mut size = 0;
        for block in data.chunks(BLOCK) {
            size += libdeflate_block(&mut c, &mut out, block);
        }
        println!(
            "{:10} level {level}: cpu {:7.2} s  wall {:7.2} s  out {size}",
            "libdeflate",
            thread_cpu() - cpu,
            wall.elapsed().as_secs_f64()
        );
    }
}
