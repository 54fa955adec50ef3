//! A small command for measuring peak memory with `/usr/bin/time -v`:
//!
//! ```text
//! layer make DIR MB            # a tree of mixed text and random files
//! layer diff DIR OUT [gzip|zstd|uncompressed] [THREADS] [LEVEL]
//! layer apply BLOB DIR
//! ```
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed setup should panic with its message"
)]

use std::path::PathBuf;

use hoist_snapshotter::{
    apply_layer, write_layer, ApplyOptions, ApplyTarget, DiffOptions, DiffSource, WhiteoutStyle,
};

#[path = "../benches/common.rs"]
mod common;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("make") => {
            let mb: u64 = args[2].parse().unwrap();
            common::make_tree(&PathBuf::from(&args[1]), mb * 1024 * 1024);
        }
        Some("diff") => {
            let options = DiffOptions {
                compression: args
                    .get(3)
                    .map_or(Default::default(), |c| c.parse().unwrap()),
                threads: args.get(4).map_or(0, |t| t.parse().unwrap()),
                level: args.get(5).map(|l| l.parse().unwrap()),
                ..Default::default()
            };
            let source = DiffSource::Trees {
                lower: None,
                upper: PathBuf::from(&args[1]),
            };
            let mut out = std::io::BufWriter::new(std::fs::File::create(&args[2]).unwrap());
            let d = write_layer(&source, &options, &mut out).unwrap();
            eprintln!("{d:?}");
        }
        Some("apply") => {
            let target = ApplyTarget {
                root: PathBuf::from(&args[2]),
                whiteouts: WhiteoutStyle::Delete,
                lowers: Vec::new(),
            };
            std::fs::create_dir_all(&target.root).unwrap();
            let mut file = std::fs::File::open(&args[1]).unwrap();
            let r = apply_layer(&target, &mut file, &ApplyOptions::default()).unwrap();
            eprintln!("{} entries, diff_id {}", r.entries, r.diff_id);
        }
        _ => eprintln!(
            "usage: layer make DIR MB | diff DIR OUT [COMPRESSION] [THREADS] | apply BLOB DIR"
        ),
    }
}
