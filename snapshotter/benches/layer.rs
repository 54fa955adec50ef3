//! diff + compress and apply of a large layer (HOIST_BENCH_MB, default
//! 1024 MB of mixed text and random files), with `tar | gzip` and
//! `gzip -d | tar -x` of the same tree measured in the same run.
//!
//! Run: `cargo bench -p hoist-snapshotter --bench layer`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed setup should panic with its message"
)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use hoist_snapshotter::{
    apply_layer, write_layer, ApplyOptions, ApplyTarget, DiffOptions, DiffSource, WhiteoutStyle,
};

#[path = "common.rs"]
mod common;

/// Counts bytes and drops them.
struct Sink(u64);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn sh(script: &str) {
    let status = Command::new("sh").arg("-ec").arg(script).status().unwrap();
    assert!(status.success(), "{script}");
}

fn bench_dir() -> (tempfile::TempDir, PathBuf, u64) {
    let mb: u64 = std::env::var("HOIST_BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let base = std::env::var_os("HOIST_BENCH_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
    let tmp = tempfile::Builder::new()
        .prefix("hoist-bench-")
        .tempdir_in(base)
        .unwrap();
    let tree = tmp.path().join("tree");
    common::make_tree(&tree, mb * 1024 * 1024);
    let size = common::tree_size(&tree);
    (tmp, tree, size)
}

fn layer(c: &mut Criterion) {
    let (tmp, tree, size) = bench_dir();
    let blob = tmp.path().join("layer.tar.gz");
    let source = DiffSource::Trees {
        lower: None,
        upper: tree.clone(),
    };
    let desc = write_layer(
        &source,
        &DiffOptions::default(),
        &mut std::fs::File::create(&blob).unwrap(),
    )
    .unwrap();
    eprintln!(
        "tree: {} MB of files, layer: {} MB gzip ({} MB tar)",
        size / 1_000_000,
        desc.size / 1_000_000,
        desc.uncompressed_size / 1_000_000
    );

    let mut g = c.benchmark_group("layer");
    g.sample_size(10);
    g.warm_up_time(std::time::Duration::from_millis(1));
    g.measurement_time(std::time::Duration::from_secs(1));
    g.throughput(Throughput::Bytes(size));

    g.bench_function("hoist diff+gzip", |b| {
        b.iter(|| {
            let mut sink = Sink(0);
            write_layer(&source, &DiffOptions::default(), &mut sink).unwrap()
        })
    });
    g.bench_function("tar | gzip", |b| {
        b.iter(|| {
            sh(&format!(
                "tar -C {} -cf - . | gzip -6 > /dev/null",
                tree.display()
            ))
        })
    });
    g.bench_function("hoist diff+zstd", |b| {
        b.iter(|| {
            let mut sink = Sink(0);
            let options = DiffOptions {
                compression: hoist_snapshotter::Compression::Zstd,
                ..Default::default()
            };
            write_layer(&source, &options, &mut sink).unwrap()
        })
    });
    g.bench_function("hoist apply (gzip)", |b| {
        b.iter_batched(
            || tempfile::tempdir_in(tmp.path()).unwrap(),
            |out| {
                let target = ApplyTarget {
                    root: out.path().to_path_buf(),
                    whiteouts: WhiteoutStyle::Delete,
                    lowers: Vec::new(),
                };
                let mut file = std::fs::File::open(&blob).unwrap();
                apply_layer(&target, &mut file, &ApplyOptions::default()).unwrap();
                out
            },
            BatchSize::PerIteration,
        )
    });
    g.bench_function("gzip -d | tar -x", |b| {
        b.iter_batched(
            || tempfile::tempdir_in(tmp.path()).unwrap(),
            |out| {
                sh(&format!(
                    "gzip -dc {} | tar -C {} -xf -",
                    blob.display(),
                    out.path().display()
                ));
                out
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
    let _ = Path::new(&tree);
}

criterion_group!(benches, layer);
criterion_main!(benches);
