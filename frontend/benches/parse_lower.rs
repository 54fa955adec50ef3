//! Parse and lower a generated 5,000-line Dockerfile.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed setup should panic with its message"
)]

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use hoist_frontend::{lower, parse, BuildOptions, NoResolver};

/// About 5,000 lines: 50 stages of ARG/ENV/RUN (with continuations)/COPY/LABEL.
pub fn generate(lines: usize) -> String {
    let mut s = String::from("# syntax=docker/dockerfile:1\nARG BASE=alpine:3.20\n");
    let mut stage = 0;
    while s.lines().count() < lines {
        s.push_str(&format!("FROM ${{BASE}} AS s{stage}\n"));
        s.push_str("ARG VERSION=1.2.3\nWORKDIR /src\n");
        for i in 0..20 {
            s.push_str(&format!(
                "ENV KEY_{i}=value-$VERSION-{i} OTHER_{i}=\"quoted {i}\"\n"
            ));
            s.push_str(&format!(
                "RUN --mount=type=cache,target=/root/.cache set -e; \\\n    echo step {i} && \\\n    make target-{i}\n"
            ));
            s.push_str(&format!(
                "COPY --chown=1000:1000 src/file{i}.txt /app/{i}/\n"
            ));
            s.push_str(&format!("LABEL com.example.step{i}=\"{i}\"\n"));
        }
        if stage > 0 {
            s.push_str(&format!("COPY --from=s{} /app /prev\n", stage - 1));
        }
        s.push_str("CMD [\"/app/run\", \"--flag\"]\n");
        stage += 1;
    }
    s
}

fn bench(c: &mut Criterion) {
    let text = generate(5000);
    let lines = text.lines().count();
    let mut g = c.benchmark_group("dockerfile");
    g.throughput(Throughput::Bytes(text.len() as u64));
    g.bench_function(format!("parse {lines} lines"), |b| {
        b.iter(|| parse(&text).unwrap())
    });
    g.bench_function(format!("parse+lower {lines} lines"), |b| {
        b.iter(|| {
            let ast = parse(&text).unwrap();
            lower(&ast, &BuildOptions::default(), &NoResolver).unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
