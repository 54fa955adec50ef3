//! Checking the store, as `git fsck` and containerd's content verification
//! do: `hoist fsck`.
//!
//! # What is checked
//!
//! - **Blobs**: every file under `blobs/sha256/` is hashed; its digest must
//!   be its name.
//! - **Refs**: each ref's target, and from it every manifest's config and
//!   layers, must be present, sound, and of the size their descriptors
//!   give. The child manifests of an index may
//!   be absent (platforms never pulled), but not all of them.
//! - **Cache records**: every blob a record names must be present and sound.
//! - **Leases** of processes that are gone.
//! - **Ingest leftovers**: files in `content/ingest/` no process is writing
//!   (a writer holds an `flock` on its file until it commits or drops it;
//!   files a killed collection moved aside are named `gc-<hex>`).
//! - **`index.json`** against the refs table.
//! - Other crates' data (the builder's snapshots) through [`DerivedCheck`].
//!
//! # Damage and leftovers
//!
//! A finding is *damage* when something the store promises is false: a
//! blob that is not what its name says, a ref or record naming what is not
//! there, an `index.json` that disagrees with the database. It is a
//! *leftover* when a killed process left something behind that the next
//! collection removes anyway (a dead lease, an ingest file, a snapshot
//! directory no record names): not wrong, only litter. Only damage makes
//! `hoist fsck` fail.
//!
//! # Repair
//!
//! [`FsckOptions::repair`] removes what cannot be trusted and leftovers:
//! a corrupt blob, the cache records and refs that need it (a record or ref
//! naming a missing blob likewise), dead leases, ingest leftovers; a blob a
//! killed collection moved aside goes back when it is sound and still
//! missing. It rewrites `index.json` from the database. It never removes a
//! blob whose content matches its name. Repair holds the collection lock and
//! the refs lock, so no collection or ref change runs meanwhile.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs;
use std::io::{self, Read};
use std::path::Path;

use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::content::{parse_digest, sha256_digest};
use crate::error::{Error, Result};
use crate::refs::ANNOTATION_REF_NAME;
use crate::Store;

/// What to do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FsckOptions {
    /// Remove what cannot be trusted and what killed processes left.
    pub repair: bool,
}

/// One thing found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// `blob`, `ref`, `cache record`, `lease`, `ingest`, `index`, `snapshot`.
    pub kind: &'static str,
    /// Its id: a digest, a name, a key, a file name.
    pub id: String,
    /// What is wrong, for people.
    pub problem: String,
    /// True for damage, false for a leftover (see the module docs).
    pub damage: bool,
    /// What repair did about it (`removed`, `restored`, `rewritten`), or
    /// `None` when nothing was done.
    pub repaired: Option<String>,
}

impl Finding {
    /// A finding of `kind` about `id`.
    pub fn new(kind: &'static str, id: impl Into<String>, problem: impl Into<String>) -> Self {
        Finding {
            kind,
            id: id.into(),
            problem: problem.into(),
            damage: true,
            repaired: None,
        }
    }

    /// The same finding as a leftover.
    pub fn leftover(mut self) -> Self {
        self.damage = false;
        self
    }
}

/// What a check found.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FsckReport {
    /// How many objects of each kind were looked at, by the kinds of
    /// [`Finding::kind`].
    pub checked: BTreeMap<String, usize>,
    /// What was found, in the order of the checks.
    pub findings: Vec<Finding>,
}

impl FsckReport {
    /// Findings that are damage and were not repaired.
    pub fn unrepaired_damage(&self) -> usize {
        self.findings
            .iter()
            .filter(|f| f.damage && f.repaired.is_none())
            .count()
    }

    /// True when nothing at all was found.
    pub fn is_clean(&self) -> bool {
        self.findings.is_empty()
    }

    /// Findings per kind: (damage, leftovers).
    pub fn counts(&self) -> BTreeMap<&'static str, (usize, usize)> {
        let mut out: BTreeMap<&'static str, (usize, usize)> = BTreeMap::new();
        for f in &self.findings {
            let entry = out.entry(f.kind).or_default();
            if f.damage {
                entry.0 += 1;
            } else {
                entry.1 += 1;
            }
        }
        out
    }

    fn checked(&mut self, what: &str, n: usize) {
        *self.checked.entry(what.to_string()).or_default() += n;
    }
}

/// Data of another crate under the store root that takes part in the check
/// (the builder's snapshots).
pub trait DerivedCheck {
    /// The [`Finding::kind`] of its entries (`snapshot`).
    fn kind(&self) -> &'static str;
    /// Checks its entries, repairing when `repair`; `leased` is true while a
    /// live lease exists (a build runs: its work in progress is not a
    /// leftover). Returns how many entries were checked and the findings.
    #[allow(clippy::type_complexity)]
    fn check(
        &self,
        store: &Store,
        leased: bool,
        repair: bool,
    ) -> std::result::Result<(usize, Vec<Finding>), Box<dyn std::error::Error + Send + Sync>>;
}

/// The state of one blob file.
enum BlobState {
    Sound,
    Corrupt(String),
    Gone,
}

/// Hashes a file: its digest and size, or `None` when it vanished.
fn hash_file(path: &Path) -> Result<Option<(oci_spec::image::Digest, u64)>> {
    let mut file = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("open blob", path, e)),
    };
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io("read blob", path, e)),
        };
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok(Some((sha256_digest(hasher), size)))
}

/// The blobs known sound: those hashed in the first pass, and those a
/// concurrent process committed since (a build finishing while fsck runs
/// names blobs the first pass did not see), hashed when first asked about.
struct Present<'a> {
    store: &'a Store,
    /// Sound blobs and their sizes.
    sound: HashMap<String, u64>,
    /// Looked at after the first pass and found missing or corrupt.
    unsound: HashSet<String>,
    corrupt: &'a BTreeSet<String>,
}

impl Present<'_> {
    /// The size of the blob when it is present and sound.
    fn size(&mut self, digest: &str) -> Option<u64> {
        if let Some(size) = self.sound.get(digest) {
            return Some(*size);
        }
        if self.unsound.contains(digest) || self.corrupt.contains(digest) {
            return None;
        }
        let sound = parse_digest(digest)
            .and_then(|d| {
                let path = self.store.content().blob_path(&d)?;
                Ok(hash_file(&path)?.filter(|(actual, _)| *actual == d))
            })
            .ok()
            .flatten();
        match sound {
            Some((_, size)) => {
                self.sound.insert(digest.to_string(), size);
                Some(size)
            }
            None => {
                self.unsound.insert(digest.to_string());
                None
            }
        }
    }

    fn has(&mut self, digest: &str) -> bool {
        self.size(digest).is_some()
    }
}

/// The result of walking one ref.
struct RefWalk {
    /// Every digest the ref needs (present or not).
    needs: BTreeSet<String>,
    /// What is wrong, if anything.
    problems: Vec<String>,
}

/// Checks that `digest`, named by `whose` as its `what` with size
/// `claimed`, is present, sound and of that size; records the problem
/// otherwise. True when it is present and sound.
fn check_size(
    present: &mut Present<'_>,
    walk: &mut RefWalk,
    what: &str,
    digest: &str,
    claimed: Option<u64>,
    whose: &str,
) -> bool {
    match (present.size(digest), claimed) {
        (None, _) => {
            walk.problems
                .push(format!("{what} {digest} of {whose} is missing or corrupt"));
            false
        }
        (Some(actual), Some(claimed)) if actual != claimed => {
            walk.problems.push(format!(
                "{whose} gives {what} {digest} a size of {claimed} bytes, it has {actual}"
            ));
            true
        }
        (Some(_), _) => true,
    }
}

impl Store {
    /// Checks the store (see the module docs); `derived` are other crates'
    /// data under the root (snapshots).
    pub fn fsck(&self, options: &FsckOptions, derived: &[&dyn DerivedCheck]) -> Result<FsckReport> {
        // Repair excludes collections and ref changes; a check only reads.
        let _locks = if options.repair {
            let gc_lock_path = self.root().join("gc.lock");
            let gc_lock = fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&gc_lock_path)
                .map_err(|e| Error::io("open lock file", &gc_lock_path, e))?;
            crate::sys::lock_exclusive(&gc_lock)
                .map_err(|e| Error::io("lock", &gc_lock_path, e))?;
            Some((gc_lock, self.lock()?))
        } else {
            None
        };
        let mut report = FsckReport::default();

        // Blobs.
        let mut corrupt: BTreeSet<String> = BTreeSet::new();
        let blobs = self.content().blobs()?;
        report.checked("blob", blobs.len());
        let mut sound: HashMap<String, u64> = HashMap::new();
        for (digest, _) in &blobs {
            let path = self.content().blob_path(digest)?;
            let state = match hash_file(&path)? {
                None => BlobState::Gone,
                Some((actual, size)) if actual == *digest => {
                    sound.insert(digest.to_string(), size);
                    BlobState::Sound
                }
                Some((actual, size)) => BlobState::Corrupt(format!(
                    "content does not match its name: {size} bytes hashing to {actual}"
                )),
            };
            match state {
                BlobState::Gone => {}
                BlobState::Sound => {}
                BlobState::Corrupt(problem) => {
                    corrupt.insert(digest.to_string());
                    let mut finding = Finding::new("blob", digest.to_string(), problem);
                    if options.repair && self.content().delete_blob(digest)? {
                        finding.repaired = Some("removed".to_string());
                    }
                    report.findings.push(finding);
                }
            }
        }

        let mut present = Present {
            store: self,
            sound,
            unsound: HashSet::new(),
            corrupt: &corrupt,
        };

        // Refs.
        let refs = self.list_refs()?;
        report.checked("ref", refs.len());
        let mut broken_refs = Vec::new();
        for r in &refs {
            let walk = self.walk_ref(&r.target, &mut present);
            if !walk.problems.is_empty() {
                broken_refs.push((r.name.clone(), walk.problems.join("; ")));
            }
        }
        for (name, problem) in broken_refs {
            let mut finding = Finding::new("ref", name.clone(), problem);
            if options.repair {
                self.db()
                    .write(|tx| tx.execute("DELETE FROM refs WHERE name = ?1", [&name]))
                    .map_err(Error::db(format!("remove ref `{name}`")))?;
                finding.repaired = Some("removed (pull or build it again)".to_string());
            }
            report.findings.push(finding);
        }
        if options.repair && report.findings.iter().any(|f| f.kind == "ref") {
            self.write_index()?;
        }

        // Cache records.
        let records = self.list_cache_records()?;
        report.checked("cache record", records.len());
        for record in &records {
            let missing: Vec<&String> = record.blobs.iter().filter(|b| !present.has(b)).collect();
            if missing.is_empty() {
                continue;
            }
            let what = |b: &String| {
                if corrupt.contains(b) {
                    format!("corrupt blob {b}")
                } else {
                    format!("missing blob {b}")
                }
            };
            let problem = format!(
                "{} needs {}",
                crate::text::escape(&record.description),
                missing
                    .iter()
                    .map(|b| what(b))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            let mut finding = Finding::new("cache record", record.key.clone(), problem);
            if options.repair {
                self.db()
                    .write(|tx| tx.execute("DELETE FROM build_cache WHERE key = ?1", [&record.key]))
                    .map_err(Error::db(format!("remove cache record {}", record.key)))?;
                finding.repaired = Some("removed".to_string());
            }
            report.findings.push(finding);
        }

        // Leases.
        let leases = self.leases()?;
        report.checked("lease", leases.len());
        let mut leased = false;
        for lease in &leases {
            if lease.alive {
                leased = true;
                continue;
            }
            let mut finding = Finding::new(
                "lease",
                lease.id.clone(),
                format!(
                    "held by process {} ({}), which is gone",
                    lease.pid,
                    crate::text::escape(&lease.description)
                ),
            )
            .leftover();
            if options.repair {
                self.db()
                    .write(|tx| tx.execute("DELETE FROM leases WHERE id = ?1", [&lease.id]))
                    .map_err(Error::db(format!("remove lease {}", lease.id)))?;
                finding.repaired = Some("removed".to_string());
            }
            report.findings.push(finding);
        }

        // Ingest leftovers.
        self.check_ingest(options, &mut report)?;

        // index.json.
        self.check_index(options, &mut report)?;

        for d in derived {
            let (n, findings) =
                d.check(self, leased, options.repair)
                    .map_err(|source| Error::Derived {
                        action: format!("check {}", d.kind()),
                        source,
                    })?;
            report.checked(d.kind(), n);
            report.findings.extend(findings);
        }
        Ok(report)
    }

    /// Walks a ref's target: what it needs and what is missing.
    fn walk_ref(&self, target: &oci_spec::image::Descriptor, present: &mut Present<'_>) -> RefWalk {
        let mut walk = RefWalk {
            needs: BTreeSet::new(),
            problems: Vec::new(),
        };
        let digest = target.digest().to_string();
        if check_size(
            present,
            &mut walk,
            "target",
            &digest,
            Some(target.size()),
            "the ref",
        ) {
            self.walk_doc(&digest, present, &mut walk);
        }
        walk
    }

    /// Walks a manifest or index that is present and sound.
    fn walk_doc(&self, digest: &str, present: &mut Present<'_>, walk: &mut RefWalk) {
        if !walk.needs.insert(digest.to_string()) {
            return;
        }
        let doc = parse_digest(digest)
            .and_then(|d| self.content().read_blob(&d))
            .ok()
            .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok());
        let Some(doc) = doc else {
            walk.problems
                .push(format!("{digest} is not a JSON manifest or index"));
            return;
        };
        let whose = format!("manifest {digest}");
        if let Some(children) = doc["manifests"].as_array() {
            let mut any = false;
            for child in children {
                let Some(d) = child["digest"].as_str() else {
                    continue;
                };
                // Platforms never pulled are absent, and that is fine.
                if present.has(d) {
                    any = true;
                    let whose = format!("index {digest}");
                    if check_size(present, walk, "manifest", d, child["size"].as_u64(), &whose) {
                        self.walk_doc(d, present, walk);
                    }
                }
            }
            if !any {
                walk.problems
                    .push(format!("index {digest} has none of its manifests"));
            }
            return;
        }
        if doc["config"]["digest"].as_str().is_none() {
            walk.problems.push(format!("{whose} has no config"));
        }
        let parts = std::iter::once(("config", &doc["config"])).chain(
            doc["layers"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|l| ("layer", l)),
        );
        for (what, d) in parts {
            if let Some(part) = d["digest"].as_str() {
                walk.needs.insert(part.to_string());
                check_size(present, walk, what, part, d["size"].as_u64(), &whose);
            }
        }
    }

    fn check_ingest(&self, options: &FsckOptions, report: &mut FsckReport) -> Result<()> {
        let dir = self.content().ingest_dir();
        let mut n = 0;
        for entry in fs::read_dir(&dir).map_err(|e| Error::io("list", &dir, e))? {
            let entry = entry.map_err(|e| Error::io("list", &dir, e))?;
            n += 1;
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            if let Some(hex) = name.strip_prefix("gc-") {
                // A collection holds gc.lock while it has files aside.
                if !options.repair && self.collection_running()? {
                    continue;
                }
                let mut finding = Finding::new(
                    "ingest",
                    name.clone(),
                    "a blob a killed collection moved aside",
                )
                .leftover();
                if options.repair {
                    finding.repaired = Some(self.restore_aside(hex, &path)?);
                }
                report.findings.push(finding);
                continue;
            }
            let meta = match entry.metadata() {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io("stat ingest file", &path, e)),
            };
            if !crate::gc::abandoned_ingest(&path, &meta, crate::records::now_ms()) {
                // A writer is at work.
                continue;
            }
            let size = meta.len();
            let mut finding = Finding::new(
                "ingest",
                name,
                format!("{size} bytes of an ingest no process is writing"),
            )
            .leftover();
            if options.repair {
                match fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::io("remove ingest file", &path, e)),
                }
                finding.repaired = Some("removed".to_string());
            }
            report.findings.push(finding);
        }
        report.checked("ingest", n);
        Ok(())
    }

    /// True when a collection holds `gc.lock` now.
    fn collection_running(&self) -> Result<bool> {
        let path = self.root().join("gc.lock");
        let file = match fs::OpenOptions::new().write(true).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(Error::io("open lock file", &path, e)),
        };
        Ok(!crate::sys::try_lock_exclusive(&file).map_err(|e| Error::io("lock", &path, e))?)
    }

    /// Puts a blob a killed collection moved aside back when it is sound
    /// and missing; removes it otherwise.
    fn restore_aside(&self, hex: &str, path: &Path) -> Result<String> {
        let outcome = match parse_digest(&format!("sha256:{hex}")) {
            Ok(digest) if !self.content().contains(&digest) => match hash_file(path)? {
                Some((actual, _)) if actual == digest => {
                    self.put_back(&digest, path)?;
                    "restored"
                }
                _ => "removed",
            },
            _ => "removed",
        };
        match fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("remove", path, e)),
        }
        Ok(outcome.to_string())
    }

    fn check_index(&self, options: &FsckOptions, report: &mut FsckReport) -> Result<()> {
        report.checked("index", 1);
        let mut problem = self.index_disagreement()?;
        if problem.is_some() && !options.repair {
            // A ref change commits, then rewrites index.json under the
            // lock: look again once it is done.
            let _lock = self.lock()?;
            problem = self.index_disagreement()?;
        }
        if let Some(problem) = problem {
            let mut finding = Finding::new("index", "index.json", problem);
            if options.repair {
                self.write_index()?;
                finding.repaired = Some("rewritten from the database".to_string());
            }
            report.findings.push(finding);
        }
        Ok(())
    }

    /// How `content/index.json` disagrees with the refs table, if it does.
    pub(crate) fn index_disagreement(&self) -> Result<Option<String>> {
        let path = self.content().dir().join("index.json");
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(Some("index.json is missing".to_string()))
            }
            Err(e) => return Err(Error::io("read", &path, e)),
        };
        let Ok(index) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            return Ok(Some("index.json is not valid JSON".to_string()));
        };
        let mut in_index: BTreeMap<String, (String, String, u64)> = BTreeMap::new();
        for m in index["manifests"].as_array().into_iter().flatten() {
            let Some(name) = m["annotations"][ANNOTATION_REF_NAME].as_str() else {
                continue;
            };
            in_index.insert(
                name.to_string(),
                (
                    m["digest"].as_str().unwrap_or_default().to_string(),
                    m["mediaType"].as_str().unwrap_or_default().to_string(),
                    m["size"].as_u64().unwrap_or(u64::MAX),
                ),
            );
        }
        let mut problems = Vec::new();
        for r in self.list_refs()? {
            let want = (
                r.target.digest().to_string(),
                r.target.media_type().to_string(),
                r.target.size(),
            );
            match in_index.remove(&r.name) {
                None => problems.push(format!("lacks `{}`", crate::text::escape(&r.name))),
                Some(got) if got != want => problems.push(format!(
                    "has `{}` at {} instead of {}",
                    crate::text::escape(&r.name),
                    got.0,
                    want.0
                )),
                Some(_) => {}
            }
        }
        for name in in_index.keys() {
            problems.push(format!(
                "has `{}`, which the database does not",
                crate::text::escape(name)
            ));
        }
        Ok((!problems.is_empty()).then(|| format!("index.json {}", problems.join(", "))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::content::digest_of;
    use crate::NewCacheRecord;
    use oci_spec::image::{Descriptor, MediaType};

    /// A store with one image (a manifest, a config, a layer) and one cache
    /// record naming another blob.
    fn store() -> (tempfile::TempDir, Store, String, String) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let layer = store.content().put(b"layer bytes").unwrap();
        let config = store.content().put(b"{\"rootfs\":{}}").unwrap();
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": config.digest.to_string(), "size": config.size},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                        "digest": layer.digest.to_string(), "size": layer.size}],
        });
        let bytes = serde_json::to_vec(&manifest).unwrap();
        let m = store.content().put(&bytes).unwrap();
        store
            .set_ref(
                "x/app:1",
                &Descriptor::new(MediaType::ImageManifest, m.size, m.digest),
            )
            .unwrap();
        let cached = store.content().put(b"cached layer").unwrap();
        store
            .put_cache_record(
                &NewCacheRecord {
                    key: "k1".into(),
                    blobs: vec![cached.digest.to_string()],
                    description: "RUN make".into(),
                    ..NewCacheRecord::default()
                },
                None,
            )
            .unwrap();
        (
            dir,
            store,
            layer.digest.to_string(),
            cached.digest.to_string(),
        )
    }

    fn corrupt(store: &Store, digest: &str) {
        let path = store
            .content()
            .blob_path(&parse_digest(digest).unwrap())
            .unwrap();
        fs::write(path, b"not what the name says").unwrap();
    }

    #[test]
    fn a_sound_store_is_clean_and_repair_changes_nothing() {
        let (_d, store, _, _) = store();
        let before = store.content().blobs().unwrap();
        let report = store.fsck(&FsckOptions::default(), &[]).unwrap();
        assert!(report.is_clean(), "{:?}", report.findings);
        assert_eq!(report.checked["blob"], 4);
        assert_eq!(report.checked["ref"], 1);
        assert_eq!(report.checked["cache record"], 1);
        let report = store.fsck(&FsckOptions { repair: true }, &[]).unwrap();
        assert!(report.is_clean(), "{:?}", report.findings);
        assert_eq!(store.content().blobs().unwrap(), before);
        assert_eq!(store.list_refs().unwrap().len(), 1);
        assert_eq!(store.list_cache_records().unwrap().len(), 1);
    }

    #[test]
    fn corrupt_blobs_and_what_needs_them_are_found_and_removed() {
        let (_d, store, layer, cached) = store();
        corrupt(&store, &layer);
        corrupt(&store, &cached);
        let report = store.fsck(&FsckOptions::default(), &[]).unwrap();
        let kinds: Vec<(&str, &str)> = report
            .findings
            .iter()
            .map(|f| (f.kind, f.id.as_str()))
            .collect();
        // Blobs come in the order of their digests.
        let mut blobs = [layer.as_str(), cached.as_str()];
        blobs.sort();
        assert_eq!(
            kinds,
            [
                ("blob", blobs[0]),
                ("blob", blobs[1]),
                ("ref", "x/app:1"),
                ("cache record", "k1"),
            ]
        );
        assert_eq!(report.unrepaired_damage(), 4);
        // Checking touched nothing.
        assert_eq!(store.content().blobs().unwrap().len(), 4);
        let report = store.fsck(&FsckOptions { repair: true }, &[]).unwrap();
        assert_eq!(report.unrepaired_damage(), 0);
        assert!(report.findings.iter().all(|f| f.repaired.is_some()));
        // The two sound blobs (manifest, config) stay; the corrupt ones go.
        let left: Vec<String> = store
            .content()
            .blobs()
            .unwrap()
            .into_iter()
            .map(|(d, _)| d.to_string())
            .collect();
        assert_eq!(left.len(), 2);
        assert!(!left.contains(&layer) && !left.contains(&cached));
        assert!(store.list_refs().unwrap().is_empty());
        assert!(store.list_cache_records().unwrap().is_empty());
        assert_eq!(store.index_disagreement().unwrap(), None);
        assert!(store.fsck(&FsckOptions::default(), &[]).unwrap().is_clean());
    }

    #[test]
    fn a_descriptor_with_the_wrong_size_breaks_its_ref_not_the_blob() {
        let (_d, store, _, _) = store();
        let target = store.list_refs().unwrap()[0].target.clone();
        let lying = Descriptor::new(
            MediaType::ImageManifest,
            target.size() + 1,
            target.digest().clone(),
        );
        store.set_ref("x/app:1", &lying).unwrap();
        let report = store.fsck(&FsckOptions::default(), &[]).unwrap();
        assert_eq!(report.findings.len(), 1, "{:?}", report.findings);
        let f = &report.findings[0];
        assert_eq!((f.kind, f.id.as_str()), ("ref", "x/app:1"));
        assert!(
            f.problem.contains(&format!(
                "the ref gives target {} a size of {} bytes, it has {}",
                target.digest(),
                target.size() + 1,
                target.size()
            )),
            "{}",
            f.problem
        );
        let blobs = store.content().blobs().unwrap();
        store.fsck(&FsckOptions { repair: true }, &[]).unwrap();
        assert_eq!(store.content().blobs().unwrap(), blobs);
        assert!(store.list_refs().unwrap().is_empty());
    }

    #[test]
    fn leftovers_are_not_damage_and_repair_removes_them() {
        let (_d, store, _, _) = store();
        // A killed writer's ingest file: unlocked and older than the grace.
        let leftover = store.content().ingest_dir().join("0123abcd");
        fs::write(&leftover, b"half a layer").unwrap();
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
        fs::File::options()
            .write(true)
            .open(&leftover)
            .unwrap()
            .set_modified(old)
            .unwrap();
        // A writer at work: locked, so not a leftover whatever its age.
        let mut writer = store.content().writer().unwrap();
        std::io::Write::write_all(&mut writer, b"in progress").unwrap();
        fs::File::options()
            .write(true)
            .open(writer.path())
            .unwrap()
            .set_modified(old)
            .unwrap();
        // A lease of a process that is gone.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        store
            .db()
            .write(|tx| {
                tx.execute(
                    "INSERT INTO leases VALUES ('dead', ?1, 1, 0, 99999999999999, 'build')",
                    [pid],
                )
            })
            .unwrap();
        let report = store.fsck(&FsckOptions::default(), &[]).unwrap();
        let found: Vec<(&str, &str, bool)> = report
            .findings
            .iter()
            .map(|f| (f.kind, f.id.as_str(), f.damage))
            .collect();
        assert_eq!(
            found,
            [("lease", "dead", false), ("ingest", "0123abcd", false)]
        );
        assert_eq!(report.unrepaired_damage(), 0);
        let report = store.fsck(&FsckOptions { repair: true }, &[]).unwrap();
        assert_eq!(report.findings.len(), 2);
        assert!(!leftover.exists());
        assert!(writer.path().exists());
        assert!(store.leases().unwrap().is_empty());
        let c = writer.commit(None, None).unwrap();
        assert!(store.content().contains(&c.digest));
        assert_eq!(c.digest, digest_of(b"in progress"));
    }

    #[test]
    fn a_stale_index_json_is_found_rewritten_and_mended_on_open() {
        let (d, store, _, _) = store();
        let index = store.content().dir().join("index.json");
        let good = fs::read(&index).unwrap();
        fs::write(&index, b"{\"schemaVersion\":2,\"manifests\":[]}").unwrap();
        let report = store.fsck(&FsckOptions::default(), &[]).unwrap();
        assert_eq!(report.findings.len(), 1);
        assert_eq!(report.findings[0].kind, "index");
        assert!(
            report.findings[0].problem.contains("lacks `x/app:1`"),
            "{}",
            report.findings[0].problem
        );
        store.fsck(&FsckOptions { repair: true }, &[]).unwrap();
        assert_eq!(fs::read(&index).unwrap(), good);
        // A crash between a ref change's commit and its index.json rewrite:
        // the next open of the store rewrites it.
        fs::write(&index, b"{}").unwrap();
        drop(store);
        Store::open(d.path()).unwrap();
        assert_eq!(fs::read(&index).unwrap(), good);
    }

    #[test]
    fn a_blob_a_killed_collection_left_aside_goes_back() {
        let (d, store, layer, _) = store();
        let digest = parse_digest(&layer).unwrap();
        let path = store.content().blob_path(&digest).unwrap();
        let aside = store
            .content()
            .ingest_dir()
            .join(format!("gc-{}", digest.digest()));
        fs::rename(&path, &aside).unwrap();
        let report = store.fsck(&FsckOptions::default(), &[]).unwrap();
        assert!(report.findings.iter().any(|f| f.kind == "ref"));
        drop(store);
        // Opening the store puts it back (no collection runs).
        let store = Store::open(d.path()).unwrap();
        assert!(path.exists() && !aside.exists());
        assert!(store.fsck(&FsckOptions::default(), &[]).unwrap().is_clean());
    }
}
