//! Image refs: names pointing at manifest (or index) descriptors.
//!
//! Names are plain strings; hoist stores the fully qualified reference
//! (`docker.io/library/busybox:latest`) and callers normalize before calling.
//! The database is the source of truth; `content/index.json` is regenerated
//! from it after every change, under `<root>/lock`, so that tools reading the
//! layout (skopeo, umoci) see the same refs as hoist.

use std::fs::{File, OpenOptions};
use std::time::{SystemTime, UNIX_EPOCH};

use oci_spec::image::{Descriptor, MediaType};
use rusqlite::{params, Connection, OptionalExtension, Transaction};

use crate::content::{parse_digest, write_atomic};
use crate::error::{Error, Result};
use crate::Store;

/// Annotation naming an index.json entry (the OCI image-layout convention).
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// containerd's annotation for the full image name, also understood by
/// `docker load` and buildah.
pub const ANNOTATION_IMAGE_NAME: &str = "io.containerd.image.name";

/// One image ref.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRef {
    /// The fully qualified name, e.g. `docker.io/library/busybox:latest`.
    pub name: String,
    /// The manifest or index it points at.
    pub target: Descriptor,
    /// When the name was first created (seconds since the epoch).
    pub created_at: i64,
    /// When it last changed target.
    pub updated_at: i64,
}

/// Ref changes inside one transaction (see [`Store::update_refs`]).
pub struct RefTransaction<'a> {
    tx: &'a Transaction<'a>,
}

impl RefTransaction<'_> {
    /// Point `name` at `target`, creating or moving it.
    pub fn set(&self, name: &str, target: &Descriptor) -> Result<()> {
        let now = now();
        self.tx
            .execute(
                "INSERT INTO refs (name, media_type, digest, size, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?5)
                 ON CONFLICT (name) DO UPDATE SET media_type = ?2, digest = ?3, size = ?4,
                     updated_at = CASE WHEN digest = ?3 THEN updated_at ELSE ?5 END",
                params![
                    name,
                    target.media_type().to_string(),
                    target.digest().to_string(),
                    target.size() as i64,
                    now
                ],
            )
            .map_err(Error::db(format!("set ref `{name}`")))?;
        Ok(())
    }

    /// Remove `name`; false when it did not exist.
    pub fn delete(&self, name: &str) -> Result<bool> {
        let n = self
            .tx
            .execute("DELETE FROM refs WHERE name = ?1", [name])
            .map_err(Error::db(format!("delete ref `{name}`")))?;
        Ok(n > 0)
    }

    /// Look a ref up (sees this transaction's own changes).
    pub fn get(&self, name: &str) -> Result<Option<ImageRef>> {
        get(self.tx, name)
    }

    /// All refs (sees this transaction's own changes).
    pub fn list(&self) -> Result<Vec<ImageRef>> {
        list(self.tx)
    }
}

impl Store {
    /// Look a ref up by its exact (normalized) name.
    pub fn get_ref(&self, name: &str) -> Result<Option<ImageRef>> {
        self.db().read(|c| get(c, name))
    }

    /// All refs, sorted by name.
    pub fn list_refs(&self) -> Result<Vec<ImageRef>> {
        self.db().read(list)
    }

    /// Point `name` at `target` and regenerate index.json.
    pub fn set_ref(&self, name: &str, target: &Descriptor) -> Result<()> {
        self.update_refs(|tx| tx.set(name, target))
    }

    /// Remove `name` and regenerate index.json; false when it did not exist.
    pub fn delete_ref(&self, name: &str) -> Result<bool> {
        self.update_refs(|tx| tx.delete(name))
    }

    /// Change several refs at once: `f` runs in one write transaction while
    /// `<root>/lock` is held; after the commit, index.json is rewritten from
    /// the database before the lock is released, so concurrent processes
    /// never leave an index.json that disagrees with the refs table.
    pub fn update_refs<T>(&self, f: impl FnOnce(&RefTransaction<'_>) -> Result<T>) -> Result<T> {
        let _lock = self.lock()?;
        let value = self.db().write(|tx| f(&RefTransaction { tx }))?;
        self.write_index()?;
        Ok(value)
    }

    /// Rewrite `content/index.json` from the refs table (also repairs an
    /// index.json left stale by a crash between commit and rewrite).
    pub fn sync_index(&self) -> Result<()> {
        let _lock = self.lock()?;
        self.write_index()
    }

    /// Take the store-wide lock (`<root>/lock`); held until the file drops.
    pub fn lock(&self) -> Result<File> {
        let path = self.root().join("lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io("open lock file", &path, e))?;
        crate::sys::lock_exclusive(&file).map_err(|e| Error::io("lock", &path, e))?;
        Ok(file)
    }

    pub(crate) fn write_index(&self) -> Result<()> {
        let refs = self.list_refs()?;
        let manifests: Vec<serde_json::Value> = refs
            .iter()
            .map(|r| {
                serde_json::json!({
                    "mediaType": r.target.media_type().to_string(),
                    "digest": r.target.digest().to_string(),
                    "size": r.target.size(),
                    "annotations": {
                        ANNOTATION_IMAGE_NAME: r.name,
                        ANNOTATION_REF_NAME: r.name,
                    }
                })
            })
            .collect();
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MediaType::ImageIndex.to_string(),
            "manifests": manifests,
        });
        let bytes = serde_json::to_vec_pretty(&index).map_err(|source| Error::Json {
            action: "serialize index.json".to_string(),
            source,
        })?;
        write_atomic(&self.content().dir().join("index.json"), &bytes)
    }
}

fn row_to_ref(
    row: &rusqlite::Row<'_>,
) -> rusqlite::Result<(String, String, String, i64, i64, i64)> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
    ))
}

fn to_ref(raw: (String, String, String, i64, i64, i64)) -> Result<ImageRef> {
    let (name, media_type, digest, size, created_at, updated_at) = raw;
    let digest = parse_digest(&digest)?;
    Ok(ImageRef {
        name,
        target: Descriptor::new(MediaType::from(media_type.as_str()), size as u64, digest),
        created_at,
        updated_at,
    })
}

const SELECT: &str = "SELECT name, media_type, digest, size, created_at, updated_at FROM refs";

fn get(c: &Connection, name: &str) -> Result<Option<ImageRef>> {
    let raw = c
        .query_row(&format!("{SELECT} WHERE name = ?1"), [name], row_to_ref)
        .optional()
        .map_err(Error::db(format!("read ref `{name}`")))?;
    raw.map(to_ref).transpose()
}

fn list(c: &Connection) -> Result<Vec<ImageRef>> {
    let mut stmt = c
        .prepare(&format!("{SELECT} ORDER BY name"))
        .map_err(Error::db("list refs"))?;
    let rows = stmt
        .query_map([], row_to_ref)
        .map_err(Error::db("list refs"))?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(Error::db("list refs"))?;
    rows.into_iter().map(to_ref).collect()
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::content::digest_of;

    fn descriptor(bytes: &[u8]) -> Descriptor {
        Descriptor::new(
            MediaType::ImageManifest,
            bytes.len() as u64,
            digest_of(bytes),
        )
    }

    fn index_names(store: &Store) -> Vec<(String, String)> {
        let index: serde_json::Value = serde_json::from_slice(
            &std::fs::read(store.content().dir().join("index.json")).unwrap(),
        )
        .unwrap();
        index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["annotations"][ANNOTATION_REF_NAME]
                        .as_str()
                        .unwrap()
                        .to_string(),
                    m["digest"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    #[test]
    fn set_get_list_delete_and_index_follows() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert!(index_names(&store).is_empty());
        let a = descriptor(b"a");
        let b = descriptor(b"b");
        store
            .set_ref("docker.io/library/busybox:latest", &a)
            .unwrap();
        store.set_ref("docker.io/library/app:1", &b).unwrap();
        let got = store
            .get_ref("docker.io/library/busybox:latest")
            .unwrap()
            .unwrap();
        assert_eq!(got.target, a);
        assert!(got.created_at > 0);
        assert_eq!(
            store
                .list_refs()
                .unwrap()
                .iter()
                .map(|r| r.name.as_str())
                .collect::<Vec<_>>(),
            [
                "docker.io/library/app:1",
                "docker.io/library/busybox:latest"
            ]
        );
        assert_eq!(
            index_names(&store),
            [
                (
                    "docker.io/library/app:1".to_string(),
                    b.digest().to_string()
                ),
                (
                    "docker.io/library/busybox:latest".to_string(),
                    a.digest().to_string()
                )
            ]
        );
        // Moving a tag.
        store.set_ref("docker.io/library/app:1", &a).unwrap();
        assert_eq!(
            store
                .get_ref("docker.io/library/app:1")
                .unwrap()
                .unwrap()
                .target,
            a
        );
        assert!(store.delete_ref("docker.io/library/app:1").unwrap());
        assert!(!store.delete_ref("docker.io/library/app:1").unwrap());
        assert!(store.get_ref("docker.io/library/app:1").unwrap().is_none());
        assert_eq!(index_names(&store).len(), 1);
    }

    #[test]
    fn failed_update_changes_neither_db_nor_index() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.set_ref("x:1", &descriptor(b"x")).unwrap();
        let before = std::fs::read(store.content().dir().join("index.json")).unwrap();
        let r: Result<()> = store.update_refs(|tx| {
            tx.set("y:1", &descriptor(b"y"))?;
            tx.delete("x:1")?;
            Err(Error::invalid("abort"))
        });
        assert!(r.is_err());
        assert_eq!(store.list_refs().unwrap().len(), 1);
        assert_eq!(
            std::fs::read(store.content().dir().join("index.json")).unwrap(),
            before
        );
    }

    #[test]
    fn concurrent_ref_updates_from_threads_keep_index_consistent() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        Store::open(&root).unwrap();
        std::thread::scope(|s| {
            for t in 0..4 {
                let root = root.clone();
                s.spawn(move || {
                    // Separate Store values: separate connections, as separate
                    // processes would have.
                    let store = Store::open(&root).unwrap();
                    for i in 0..10 {
                        let name = format!("t{t}:{i}");
                        store.set_ref(&name, &descriptor(name.as_bytes())).unwrap();
                    }
                });
            }
        });
        let store = Store::open(&root).unwrap();
        let refs = store.list_refs().unwrap();
        assert_eq!(refs.len(), 40);
        let from_db: Vec<(String, String)> = refs
            .iter()
            .map(|r| (r.name.clone(), r.target.digest().to_string()))
            .collect();
        assert_eq!(index_names(&store), from_db);
    }
}
