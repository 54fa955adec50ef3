#![no_main]
//! Lowering any parsable Dockerfile must not panic.

use hoist_frontend::{lower, parse, BuildOptions, NoResolver};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(ast) = parse(text) {
            if let Ok(graph) = lower(&ast, &BuildOptions::default(), &NoResolver) {
                let _ = graph.render_plan();
            }
        }
    }
});
