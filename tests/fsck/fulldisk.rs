//! Full disks: a store on a small tmpfs filling up mid-RUN, mid-commit,
//! mid-pull and mid-cache-export. Each time: exit code 1, an error naming
//! the disk and the store, no partial blob visible, `hoist fsck` sound, and
//! the next build (or pull) works once `hoist prune` has freed space; the
//! automatic collection runs meanwhile without making anything worse.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use hoist_testutil::cli::{Hoist, Run};
use hoist_testutil::Registry;

use super::common::{Env, HOIST};
use super::util::{assert_sound, fsck_json};

/// A size-limited tmpfs, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(status.success(), "mount a tmpfs of {size}");
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// A store on a tmpfs of `size` with busybox imported, and a context.
struct SmallStore {
    disk: Tmpfs,
    hoist: Hoist,
    context: tempfile::TempDir,
}

impl SmallStore {
    fn new(size: &str) -> SmallStore {
        let disk = Tmpfs::mount(size);
        let hoist = Hoist::new(HOIST, disk.path().join("store"));
        let scratch = tempfile::tempdir().unwrap();
        hoist.import_busybox(&scratch.path().join("busybox.tar"), "busybox:latest", &[]);
        SmallStore {
            disk,
            hoist,
            context: tempfile::tempdir().unwrap(),
        }
    }

    fn root(&self) -> PathBuf {
        self.disk.path().join("store")
    }

    fn build(&self, dockerfile: &str, args: &[&str]) -> Run {
        fs::write(self.context.path().join("Dockerfile"), dockerfile).unwrap();
        let mut all = vec!["build", "--progress", "plain"];
        all.extend_from_slice(args);
        all.push(self.context.path().to_str().unwrap());
        self.hoist.run(&all)
    }

    /// Asserts what every full-disk failure must give.
    fn assert_full_disk_failure(&self, run: &Run, what: &str) {
        assert_eq!(
            run.code(),
            1,
            "{what}: exit code\nstdout: {}\nstderr: {}",
            run.stdout,
            run.stderr
        );
        let hint = format!(
            "hint: the disk is full: the store `{}` is on tmpfs `tmpfs` mounted at `{}`",
            self.root().display(),
            self.disk.path().display()
        );
        assert!(
            run.stderr.contains(&hint),
            "{what}: no `{hint}` in:\n{}",
            run.stderr
        );
        // No partial blob: nothing left in ingest, every blob sound (fsck
        // hashes them all), no damage.
        let ingest: Vec<_> = fs::read_dir(self.root().join("content/ingest"))
            .unwrap()
            .collect();
        assert!(ingest.is_empty(), "{what}: ingest files left: {ingest:?}");
        let doc = fsck_json(&self.root(), &[]);
        assert_eq!(doc["sound"], true, "{what}: {doc:#}");
        let findings = doc["findings"].as_array().unwrap();
        assert!(findings.is_empty(), "{what}: {doc:#}");
    }

    /// `hoist save` reads every blob of `image` (written off the small
    /// disk, in the OCI format, which stages nothing in the store).
    fn assert_saves(&self, image: &str) {
        let out = self.context.path().join("saved.tar");
        self.hoist.ok(&[
            "save",
            "--format",
            "oci",
            "-o",
            out.to_str().unwrap(),
            image,
        ]);
        fs::remove_file(out).unwrap();
    }

    fn prune_all(&self) {
        self.hoist.ok(&["prune", "-a", "-f"]);
    }
}

const RANDOM_6MB: &str = "FROM busybox\nARG N=0\nRUN head -c 6000000 /dev/urandom > /r-$N\n";

#[test]
fn a_full_disk_mid_run_fails_cleanly() {
    hoist_testutil::require_root!();
    let store = SmallStore::new("24m");
    // The automatic collection runs after every build that ran steps (a
    // cap below any store's size), and must make nothing worse.
    fs::write(
        store.root().join("config.toml"),
        "[gc]\nmax-storage = 1000\n",
    )
    .unwrap();
    let run = store.build(
        "FROM busybox\nRUN head -c 40000000 /dev/zero > /big\n",
        &["-t", "big"],
    );
    store.assert_full_disk_failure(&run, "mid-RUN");
    assert!(
        run.stderr
            .contains("(the disk was full: No space left on device)"),
        "{}",
        run.stderr
    );
    // The step's files went with its failure: the next build has room.
    let run = store.build(RANDOM_6MB, &["-t", "small"]);
    run.assert_ok();
    assert_sound(&store.root(), "after the next build and its collection");
    store.assert_saves("small");
    store.assert_saves("busybox");
}

#[test]
fn a_full_disk_mid_commit_fails_cleanly_and_prune_makes_room() {
    hoist_testutil::require_root!();
    let store = SmallStore::new("24m");
    // busybox and this image (its layer, and the snapshot of its chain)
    // leave about 9 MB: room for the next step's 6 MB, not for its layer.
    store
        .build(RANDOM_6MB, &["-t", "one", "--build-arg", "N=1"])
        .assert_ok();
    let run = store.build(RANDOM_6MB, &["-t", "two", "--build-arg", "N=2"]);
    store.assert_full_disk_failure(&run, "mid-commit");
    assert!(
        run.stderr.contains("No space left on device"),
        "{}",
        run.stderr
    );
    // The image built before is whole.
    store.assert_saves("one");
    // Prune frees the cache (snapshots, records) and the build then fits.
    store.prune_all();
    let run = store.build(RANDOM_6MB, &["-t", "two", "--build-arg", "N=2"]);
    run.assert_ok();
    assert_sound(&store.root(), "after prune and the next build");
    store.assert_saves("one");
    store.assert_saves("two");
}

#[test]
fn a_full_disk_mid_pull_fails_cleanly() {
    hoist_testutil::require_root!();
    hoist_testutil::require_program!("docker-registry");
    let registry = Registry::start();
    // An image with a 12 MB layer of random bytes in the registry.
    let source = Env::new();
    source.dockerfile("FROM busybox\nRUN head -c 12000000 /dev/urandom > /big\n");
    let name = format!("{}/big:1", registry.addr);
    source.build(&["-t", &name]).assert_ok();
    source.hoist().ok(&["push", &name]);

    let store = SmallStore::new("24m");
    store
        .build(RANDOM_6MB, &["-t", "one", "--build-arg", "N=1"])
        .assert_ok();
    // About 9 MB free: not enough for the layer.
    let run = store.hoist.run(&["pull", &name]);
    store.assert_full_disk_failure(&run, "mid-pull");
    assert!(
        store.hoist.run(&["inspect", &name]).code() == 1,
        "a failed pull names no image"
    );
    store.hoist.ok(&["rmi", "one"]);
    store.prune_all();
    store.hoist.ok(&["pull", &name]);
    assert_sound(&store.root(), "after the next pull");
    store.assert_saves(&name);
    store
        .build("FROM busybox\nRUN echo next > /next\n", &["-t", "next"])
        .assert_ok();
}

#[test]
fn a_full_disk_mid_cache_export_fails_cleanly() {
    hoist_testutil::require_root!();
    let store = SmallStore::new("24m");
    store
        .build(RANDOM_6MB, &["-t", "one", "--build-arg", "N=1"])
        .assert_ok();
    // Room for less than the 6 MB layer the export copies.
    let fill = store.disk.path().join("fill");
    let free = hoist_cache::disk::disk_of(store.disk.path()).unwrap().free;
    fs::write(&fill, vec![0u8; (free.saturating_sub(4_000_000)) as usize]).unwrap();
    let dest = store.disk.path().join("cache");
    let to = format!("type=local,dest={}", dest.display());
    let run = store.build(
        RANDOM_6MB,
        &["-t", "one", "--build-arg", "N=1", "--cache-to", &to],
    );
    store.assert_full_disk_failure(&run, "mid-cache-export");
    // No partial blob in the exported layout either.
    if dest.join("blobs/sha256").exists() {
        for entry in fs::read_dir(dest.join("blobs/sha256")).unwrap() {
            let path = entry.unwrap().path();
            let bytes = fs::read(&path).unwrap();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            assert_eq!(hoist_testutil::sha256_hex(&bytes), name, "partial blob");
        }
    }
    // The space the filler took is back; what the failed export wrote
    // into the store's disk goes with a prune.
    fs::remove_file(&fill).unwrap();
    store.hoist.ok(&["prune", "-f"]);
    let run = store.build(
        RANDOM_6MB,
        &["-t", "one", "--build-arg", "N=1", "--cache-to", &to],
    );
    run.assert_ok();
    assert_eq!(
        super::common::cached_steps(&run.stderr),
        2,
        "{}",
        run.stderr
    );
    assert_sound(&store.root(), "after the next export");
}
