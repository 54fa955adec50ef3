//! Measure the runner's fixed cost per step: run `true` N times in a busybox
//! root and print the mean wall time (embedded runtime, and runc if given),
//! with the network mode `none` and with the default network (slirp4netns).
//!
//! `cargo run --release -p hoist-runner --example step_overhead -- [N] [runc]`
#![allow(clippy::print_stdout)]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed setup should panic with its message"
)]

use std::time::Instant;

use hoist_runner::{NetworkMode, Rootfs, RunSpec, Runner, RunnerConfig, Runtime};

fn main() {
    hoist_runner::init_if_requested();
    let args: Vec<String> = std::env::args().collect();
    let n: u32 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(50);
    let runtime = match args.get(2) {
        Some(rt) => Runtime::External(rt.into()),
        None => Runtime::Embedded,
    };
    let root = tempfile::tempdir().expect("tempdir");
    hoist_testutil::busybox_rootfs(root.path());
    let runner = Runner::new(RunnerConfig {
        runtime: runtime.clone(),
        ..RunnerConfig::default()
    })
    .expect("runner");
    for network in [NetworkMode::None, NetworkMode::Default] {
        let mut spec = RunSpec::new(Rootfs::Dir(root.path().into()), vec!["true".into()]);
        spec.network = network;
        let start = Instant::now();
        for _ in 0..n {
            let r = runner.run(&spec, &mut |_, _| {}).expect("run");
            assert!(r.status.success());
        }
        let mean = start.elapsed() / n;
        println!(
            "{runtime:?}, network {network:?}: {n} runs of `true`, mean wall {mean:?} per step"
        );
    }
}
