//! A slow registry: the real docker-registry behind `SlowProxy`, which
//! throttles it to 100 kB/s, stalls it mid-blob or lets the test kill the
//! pull mid-blob. A stall ends in the idle timeout (`HOIST_REGISTRY_TIMEOUT`)
//! and a `Range` request for the rest; a pull killed mid-blob leaves its
//! ingest, and the next `hoist pull` asks only for what it lacks. The proxy
//! counts the bytes: resumed pulls fetch less than a whole pull, and the
//! image is the pushed one, byte for byte (digests checked, fsck clean).

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use hoist_testutil::cli::Hoist;
use hoist_testutil::slowproxy::{SlowProxy, Stall};
use hoist_testutil::Registry;

use super::common::HOIST;
use super::util::fsck_json;

/// A tar holding one file of `size` bytes that do not compress.
fn random_tar(path: &Path, size: usize, seed: u64) {
    let mut state = seed;
    let mut data = Vec::with_capacity(size + 8);
    while data.len() < size {
        // splitmix64
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        data.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    data.truncate(size);
    let mut builder = tar::Builder::new(std::fs::File::create(path).unwrap());
    let mut header = tar::Header::new_gnu();
    header.set_size(size as u64);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_cksum();
    builder.append_data(&mut header, "data", &data[..]).unwrap();
    builder.finish().unwrap();
}

/// A registry holding `slow/big:1` (one layer of 4 MB) and `slow/small:1`
/// (one of 300 kB), pushed from a store of their own.
struct Source {
    registry: Registry,
    store: tempfile::TempDir,
}

impl Source {
    fn new() -> Source {
        let registry = Registry::start();
        let store = tempfile::tempdir().unwrap();
        let hoist = Hoist::new(HOIST, store.path().join("store"));
        for (name, size, seed) in [("big", 4_000_000, 1), ("small", 300_000, 2)] {
            let tar = store.path().join(format!("{name}.tar"));
            random_tar(&tar, size, seed);
            let image = format!("{}/slow/{name}:1", registry.addr);
            hoist.ok(&["import", tar.to_str().unwrap(), &image]);
            hoist.ok(&["push", &image]);
        }
        Source { registry, store }
    }

    /// The image ID the source store has for `name` (`big` or `small`).
    fn id(&self, name: &str) -> String {
        let hoist = Hoist::new(HOIST, self.store.path().join("store"));
        id_of(&hoist, &format!("{}/slow/{name}:1", self.registry.addr))
    }
}

fn id_of(hoist: &Hoist, image: &str) -> String {
    hoist.inspect(image)["Id"].as_str().unwrap().to_string()
}

/// An empty store.
fn store() -> (tempfile::TempDir, Hoist) {
    let dir = tempfile::tempdir().unwrap();
    let hoist = Hoist::new(HOIST, dir.path().join("store"));
    (dir, hoist)
}

/// fsck finds no damage and no leftover but the lease of a killed pull
/// (`hoist prune` and collections clear those), and no ingest is left.
fn assert_clean(hoist: &Hoist, what: &str) {
    let doc = fsck_json(hoist.root(), &[]);
    assert_eq!(doc["sound"], true, "{what}: {doc:#}");
    let others: Vec<_> = doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| !(f["kind"] == "lease" && f["damage"] == false))
        .collect();
    assert!(others.is_empty(), "{what}: {doc:#}");
    // Each leftover with its size and whether its blob is in the store (a
    // writer killed after linking the blob would leave such a name).
    let ingest: Vec<String> = std::fs::read_dir(hoist.root().join("content/ingest"))
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            let len = e.metadata().map_or(0, |m| m.len());
            let blob = name
                .strip_prefix("sha256-")
                .is_some_and(|hex| hoist.root().join("content/blobs/sha256").join(hex).exists());
            format!("{name} ({len} bytes, blob present: {blob})")
        })
        .collect();
    assert!(ingest.is_empty(), "{what}: ingest files left: {ingest:?}");
}

/// Bytes a whole pull of `name` through `proxy` costs (into a store of its
/// own), the proxy's count reset after.
fn whole_pull_bytes(proxy: &SlowProxy, name: &str) -> u64 {
    let (_dir, hoist) = store();
    proxy.reset();
    hoist.ok(&["pull", &format!("{}/slow/{name}:1", proxy.addr)]);
    let bytes = proxy.bytes_sent();
    proxy.reset();
    bytes
}

#[test]
fn a_pull_killed_mid_blob_resumes_where_it_stopped() {
    let source = Source::new();
    let proxy = SlowProxy::start(&source.registry.addr);
    let whole = whole_pull_bytes(&proxy, "big");
    assert!(whole > 4_000_000, "a whole pull sent {whole} bytes");

    let (_dir, hoist) = store();
    let image = format!("{}/slow/big:1", proxy.addr);
    // The registry hangs at 70 % of the pull (inside the layer: the
    // manifest and config are a few hundred bytes); the test kills the pull
    // there, as a CI runner's timeout would.
    proxy.fault_at(whole * 7 / 10, Stall::UntilClosed);
    let mut pull = hoist
        .command()
        .args(["pull", &image])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    proxy.wait_faults(1, Duration::from_secs(300));
    // What the proxy sent may still sit in the socket's buffers when it
    // stalls (a busy machine's hoist reads behind): kill once the bytes
    // before the stall have reached the partial layer, as a CI timeout long
    // after the stall would.
    let ingest = hoist.root().join("content/ingest");
    let partials = || -> Vec<(String, u64)> {
        std::fs::read_dir(&ingest)
            .map(|dir| {
                dir.flatten()
                    .map(|e| {
                        let len = e.metadata().map_or(0, |m| m.len());
                        (e.file_name().to_string_lossy().into_owned(), len)
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !partials()
        .iter()
        .any(|(name, len)| name.starts_with("sha256-") && *len >= 1 << 20)
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    pull.kill().unwrap();
    pull.wait().unwrap();
    let partial = partials();
    assert!(
        partial
            .iter()
            .any(|(name, len)| name.starts_with("sha256-") && *len >= 1 << 20),
        "the killed pull left no partial layer: {partial:?}"
    );
    assert!(hoist.run(&["inspect", &image]).code() != 0);

    proxy.reset();
    let out = hoist.run(&["--log-level", "info", "pull", &image]);
    out.assert_ok();
    let resumed = proxy.bytes_sent();
    eprintln!("killed pull resumed: {resumed} of {whole} bytes fetched again");
    assert!(
        resumed + (1 << 20) <= whole,
        "the second pull fetched {resumed} of {whole} bytes: it did not resume\n{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("resuming blob sha256:"),
        "{}",
        out.stderr
    );
    assert_eq!(id_of(&hoist, &image), source.id("big"));
    assert_clean(&hoist, "after the resumed pull");
    let saved = hoist.root().join("../saved.tar");
    hoist.ok(&["save", "-o", saved.to_str().unwrap(), &image]);
}

#[test]
fn a_registry_stalled_mid_blob_times_out_and_the_pull_resumes_with_range() {
    let source = Source::new();
    let proxy = SlowProxy::start(&source.registry.addr);
    let whole = whole_pull_bytes(&proxy, "big");

    let (_dir, hoist) = store();
    let image = format!("{}/slow/big:1", proxy.addr);
    // Hangs for good at half the pull: only the idle timeout ends it (1 s
    // here instead of the default 60 s).
    proxy.fault_at(whole / 2, Stall::UntilClosed);
    let mut pull = hoist.command();
    pull.env("HOIST_REGISTRY_TIMEOUT", "1s")
        .args(["--log-level", "info", "pull", &image]);
    let pull = hoist_testutil::cli::run(&mut pull, None);
    pull.assert_ok();
    assert_eq!(proxy.faults_hit(), 1, "the stall never happened");
    // A restart would fetch the first half again: 1.5 × the whole.
    let sent = proxy.bytes_sent();
    eprintln!("stalled pull: {sent} bytes for a whole of {whole}");
    assert!(
        sent < whole + whole / 5,
        "the pull fetched {sent} bytes for {whole}: it started over\n{}",
        pull.stderr
    );
    assert_eq!(id_of(&hoist, &image), source.id("big"));
    assert_clean(&hoist, "after the stalled pull");
}

#[test]
fn a_registry_at_100_kb_per_second_is_slow_not_failed() {
    let source = Source::new();
    let proxy = SlowProxy::start(&source.registry.addr);
    let whole = whole_pull_bytes(&proxy, "small");
    proxy.throttle(100_000);
    let (_dir, hoist) = store();
    let image = format!("{}/slow/small:1", proxy.addr);
    // The idle timeout is about silence, not speed: a steady trickle much
    // slower than the layer's size per timeout passes (3 s of transfer
    // against a 2 s timeout; each slice comes every 0.1 s).
    let mut pull = hoist.command();
    pull.env("HOIST_REGISTRY_TIMEOUT", "2s")
        .args(["pull", &image]);
    let pull = hoist_testutil::cli::run(&mut pull, None);
    pull.assert_ok();
    assert_eq!(id_of(&hoist, &image), source.id("small"));
    // A machine starved for longer than the timeout may cut the body
    // once; it resumes, so never much more than the whole is fetched.
    let sent = proxy.bytes_sent();
    assert!(
        sent < whole + whole / 5,
        "the slow pull fetched {sent} bytes for {whole}\n{}",
        pull.stderr
    );
    assert_clean(&hoist, "after the slow pull");

    // A timeout that is no duration is refused, naming the variable.
    let mut bad = hoist.command();
    bad.env("HOIST_REGISTRY_TIMEOUT", "soon")
        .args(["pull", &image]);
    let bad = hoist_testutil::cli::run(&mut bad, None);
    assert_eq!(bad.code(), 1, "{}", bad.stderr);
    assert!(
        bad.stderr
            .contains("invalid HOIST_REGISTRY_TIMEOUT=\"soon\""),
        "{}",
        bad.stderr
    );
}
