//! Image archives: the tar files `hoist save` writes and `hoist load` reads.
//!
//! - **OCI** ([`save_oci`]): an OCI image layout in a tar (`oci-layout`,
//!   `index.json`, `blobs/sha256/…`), as `skopeo copy oci-archive:` reads and
//!   writes. Each `index.json` entry carries `org.opencontainers.image.ref.name`
//!   and `io.containerd.image.name` set to the name the caller gives
//!   (hoist passes the fully qualified reference).
//! - **Docker** ([`save_docker`]): the layout of `docker save`: `manifest.json`,
//!   `repositories`, `<config-hex>.json` and `<diff-id-hex>/layer.tar`
//!   (uncompressed, so `sha256(layer.tar)` is the diff ID), which every
//!   `docker load` and `skopeo … docker-archive:` accept.
//!
//! [`load`] reads both, including what `docker save` (old and new layouts),
//! skopeo and buildah write, plain or gzip/zstd compressed. Every blob is
//! verified: by its file name when it lives under `blobs/`, by the config's
//! diff IDs for docker layers. On failure every blob the load added is removed
//! again, so the store is left as it was.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, Write};

use oci_spec::image::{Descriptor, Digest, ImageIndex, ImageManifest, MediaType};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use hoist_untrusted::tar_writer::{EntryHeader, EntryKind, TarWriter};

use crate::content::{parse_digest, sha256_digest, Committed, OCI_LAYOUT_CONTENT};
use crate::error::{Error, Result};
use crate::image::{
    is_index, is_manifest, is_oci_manifest, layer_compression, media_types, to_oci_manifest,
    Compression,
};
use crate::refs::{ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME};
use crate::Store;

/// An image to save: what its ref points at, and the names to record.
#[derive(Clone, Debug)]
pub struct SaveImage {
    /// The names to write (OCI: ref-name annotations; Docker: `RepoTags`,
    /// which `docker load` expects in the short form `busybox:latest`).
    pub names: Vec<String>,
    /// The manifest or index.
    pub target: Descriptor,
}

/// An image found in a loaded archive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadedImage {
    /// Names as the archive spells them (not normalized).
    pub names: Vec<String>,
    /// The manifest (or index) now in the store.
    pub target: Descriptor,
}

/// The result of [`load`].
#[derive(Clone, Debug, Default)]
pub struct Loaded {
    /// The images, in archive order.
    pub images: Vec<LoadedImage>,
    /// Blobs this load added to the store (the rest were already there).
    pub created_blobs: Vec<Digest>,
}

impl Loaded {
    /// Undo the load's blob additions (for a caller that fails afterwards,
    /// e.g. on an invalid name). Errors are ignored: a leftover blob is
    /// unreferenced and harmless.
    pub fn discard(&self, store: &Store) {
        for digest in &self.created_blobs {
            let _ = store.content().delete_blob(digest);
        }
    }
}

fn write_err(action: &str) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::Stream {
        action: format!("write the archive ({action})"),
        source,
    }
}

/// Archive entries are owned by 0 with mtime 0 (and the one tar writer adds
/// nothing about the host), so the same images give the same bytes.
fn entry(path: &str, kind: EntryKind, mode: u32) -> EntryHeader {
    EntryHeader {
        path: path.as_bytes().to_vec(),
        kind,
        mode,
        uid: 0,
        gid: 0,
        mtime: 0,
        xattrs: Vec::new(),
    }
}

fn append_data<W: Write>(
    tar: &mut TarWriter<W>,
    path: &str,
    size: u64,
    data: &mut dyn Read,
) -> Result<()> {
    tar.write_header(&entry(path, EntryKind::File { size }, 0o644))
        .map_err(write_err(path))?;
    if !tar.write_data(data, size).map_err(write_err(path))? {
        return Err(Error::Stream {
            action: format!("read the content of {path}"),
            source: io::Error::new(io::ErrorKind::UnexpectedEof, "shorter than its size"),
        });
    }
    Ok(())
}

fn append_bytes<W: Write>(tar: &mut TarWriter<W>, path: &str, bytes: &[u8]) -> Result<()> {
    append_data(tar, path, bytes.len() as u64, &mut &bytes[..])
}

fn append_dir<W: Write>(tar: &mut TarWriter<W>, path: &str) -> Result<()> {
    tar.write_header(&entry(path, EntryKind::Dir, 0o755))
        .map_err(write_err(path))
}

fn append_blob<W: Write>(store: &Store, tar: &mut TarWriter<W>, digest: &Digest) -> Result<()> {
    let size = store.content().blob_size(digest)?;
    let mut file = store.content().open_blob(digest)?;
    let path = format!("blobs/sha256/{}", digest.digest());
    append_data(tar, &path, size, &mut file)
}

fn to_json<T: Serialize>(value: &T, what: &str) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|source| Error::Json {
        action: format!("serialize {what}"),
        source,
    })
}

/// Write `images` as an OCI image layout tar. Manifests with Docker media
/// types are converted to OCI ones in the archive (the store is unchanged).
pub fn save_oci(store: &Store, images: &[SaveImage], out: impl Write) -> Result<()> {
    let mut tar = TarWriter::new(out);
    let mut blobs: BTreeSet<String> = BTreeSet::new();
    let mut extra: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut entries = Vec::new();
    for image in images {
        let mut target = image.target.clone();
        let media_type = target.media_type().to_string();
        if is_manifest(&media_type) {
            let manifest = store.read_manifest(target.digest())?;
            if !is_oci_manifest(&manifest) {
                let converted = to_json(&to_oci_manifest(&manifest)?, "a converted manifest")?;
                let digest = crate::content::digest_of(&converted);
                target = Descriptor::new(MediaType::ImageManifest, converted.len() as u64, digest);
                blobs.insert(manifest.config().digest().to_string());
                for layer in manifest.layers() {
                    blobs.insert(layer.digest().to_string());
                }
                extra.insert(target.digest().to_string(), converted);
            } else {
                blobs.extend(store.reachable_blobs(&target)?);
            }
        } else if is_index(&media_type) {
            // An archive must be complete: an index pulled for some
            // platforms only cannot be written as it is.
            let missing = store.missing_manifests(&target)?;
            if !missing.is_empty() {
                return Err(Error::invalid(format!(
                    "image index {} lacks {} of its {} manifests in the store (platforms never pulled): pull them with `hoist pull --platform`, or save in the docker format (one platform)",
                    target.digest(),
                    missing.len(),
                    store.read_index(target.digest())?.manifests().len()
                )));
            }
            blobs.extend(store.reachable_blobs(&target)?);
        } else {
            return Err(Error::UnsupportedMediaType {
                media_type,
                what: "an image to save",
            });
        }
        if image.names.is_empty() {
            entries.push(target.clone());
        }
        for name in &image.names {
            let mut entry = target.clone();
            // The target's own (`index-descriptor` annotations of a build),
            // then the names.
            let mut annotations = target.annotations().clone().unwrap_or_default();
            annotations.insert(ANNOTATION_REF_NAME.to_string(), name.clone());
            annotations.insert(ANNOTATION_IMAGE_NAME.to_string(), name.clone());
            entry.set_annotations(Some(annotations));
            entries.push(entry);
        }
    }
    append_bytes(&mut tar, "oci-layout", OCI_LAYOUT_CONTENT.as_bytes())?;
    append_dir(&mut tar, "blobs")?;
    append_dir(&mut tar, "blobs/sha256")?;
    for digest in &blobs {
        if extra.contains_key(digest) {
            continue;
        }
        append_blob(store, &mut tar, &parse_digest(digest)?)?;
    }
    for (digest, bytes) in &extra {
        let digest = parse_digest(digest)?;
        append_bytes(
            &mut tar,
            &format!("blobs/sha256/{}", digest.digest()),
            bytes,
        )?;
    }
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media_types::OCI_INDEX,
        "manifests": entries,
    });
    append_bytes(&mut tar, "index.json", &to_json(&index, "index.json")?)?;
    tar.finish()
        .and_then(|mut w| w.flush())
        .map_err(write_err("finish"))
}

#[derive(Serialize, Deserialize, Debug)]
#[serde(rename_all = "PascalCase")]
struct DockerManifestEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// Write `images` in the `docker save` layout. Layers are decompressed into
/// `<diff-id-hex>/layer.tar` (through a temp file in the store, since a tar
/// header needs the size first) and checked against the config's diff IDs.
pub fn save_docker(store: &Store, images: &[SaveImage], out: impl Write) -> Result<()> {
    let mut tar = TarWriter::new(out);
    let mut manifest_json = Vec::new();
    let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut written: BTreeSet<String> = BTreeSet::new();
    for image in images {
        let resolved = store.image(&image.target)?;
        let config_digest = resolved.id().clone();
        let config_path = format!("{}.json", config_digest.digest());
        if written.insert(config_path.clone()) {
            let bytes = store.content().read_blob(&config_digest)?;
            append_bytes(&mut tar, &config_path, &bytes)?;
        }
        let diff_ids = resolved.config.rootfs().diff_ids();
        if diff_ids.len() != resolved.layers().len() {
            return Err(Error::invalid(format!(
                "image {config_digest} has {} layers but {} diff IDs in its config",
                resolved.layers().len(),
                diff_ids.len()
            )));
        }
        let mut layer_paths = Vec::new();
        for (layer, diff_id) in resolved.layers().iter().zip(diff_ids) {
            let diff_id = parse_digest(diff_id)?;
            let dir = diff_id.digest().to_string();
            let path = format!("{dir}/layer.tar");
            if written.insert(path.clone()) {
                let mut tmp = tempfile_in_store(store)?;
                let compression =
                    layer_compression(layer.media_type().as_ref()).ok_or_else(|| {
                        Error::UnsupportedMediaType {
                            media_type: layer.media_type().to_string(),
                            what: "a layer",
                        }
                    })?;
                let blob = store.content().open_blob(layer.digest())?;
                let (actual, size) =
                    decompress_hashing(blob, compression, &mut tmp).map_err(|source| {
                        Error::Stream {
                            action: format!("decompress layer {}", layer.digest()),
                            source,
                        }
                    })?;
                if actual != diff_id {
                    return Err(Error::DigestMismatch {
                        expected: diff_id,
                        actual,
                    });
                }
                tmp.rewind().map_err(|source| Error::Stream {
                    action: "rewind a temp file".to_string(),
                    source,
                })?;
                append_dir(&mut tar, &dir)?;
                append_bytes(&mut tar, &format!("{dir}/VERSION"), b"1.0")?;
                append_data(&mut tar, &path, size, &mut tmp)?;
            }
            layer_paths.push(path);
        }
        for name in &image.names {
            let (repository, tag) = split_tag(name);
            if let Some(top) = layer_paths.last() {
                repositories
                    .entry(repository.to_string())
                    .or_default()
                    .insert(
                        tag.to_string(),
                        top.trim_end_matches("/layer.tar").to_string(),
                    );
            }
        }
        manifest_json.push(DockerManifestEntry {
            config: config_path,
            repo_tags: Some(image.names.clone()),
            layers: layer_paths,
        });
    }
    append_bytes(
        &mut tar,
        "manifest.json",
        &to_json(&manifest_json, "manifest.json")?,
    )?;
    append_bytes(
        &mut tar,
        "repositories",
        &to_json(&repositories, "repositories")?,
    )?;
    tar.finish()
        .and_then(|mut w| w.flush())
        .map_err(write_err("finish"))
}

fn split_tag(name: &str) -> (&str, &str) {
    let slash = name.rfind('/').map_or(0, |i| i + 1);
    match name[slash..].rfind(':') {
        Some(i) => (&name[..slash + i], &name[slash + i + 1..]),
        None => (name, "latest"),
    }
}

fn tempfile_in_store(store: &Store) -> Result<File> {
    let dir = store.tmp_dir()?;
    tempfile_in(&dir)
}

fn tempfile_in(dir: &std::path::Path) -> Result<File> {
    let mut random = [0u8; 8];
    getrandom::fill(&mut random).map_err(|e| Error::Stream {
        action: "draw a random temp name".to_string(),
        source: io::Error::other(e.to_string()),
    })?;
    let path = dir.join(format!("save-{}", hex::encode(random)));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| Error::io("create temp file", &path, e))?;
    // Unlinked right away: the open descriptor keeps the data, and nothing
    // is left behind whatever happens next.
    std::fs::remove_file(&path).map_err(|e| Error::io("remove temp file", &path, e))?;
    Ok(file)
}

/// Decompress `input` into `out`, returning the digest and size of the
/// uncompressed bytes.
fn decompress_hashing(
    input: impl Read,
    compression: Compression,
    out: &mut impl Write,
) -> io::Result<(Digest, u64)> {
    let input = BufReader::with_capacity(256 * 1024, input);
    let mut reader: Box<dyn Read> = match compression {
        Compression::None => Box::new(input),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(input)),
        Compression::Zstd => Box::new(zstd::Decoder::with_buffer(input)?),
    };
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])?;
        size += n as u64;
    }
    Ok((sha256_digest(hasher), size))
}

/// Files of the archive kept in memory (metadata) and blobs already moved
/// into the store, by normalized path.
struct Pass<'a> {
    store: &'a Store,
    small: HashMap<String, Vec<u8>>,
    blobs: HashMap<String, Committed>,
    links: HashMap<String, String>,
    created: Vec<Digest>,
}

const SMALL_FILE: u64 = 64 * 1024;
const MAX_JSON: u64 = 16 * 1024 * 1024;

fn normalize(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

impl Pass<'_> {
    fn record(&mut self, path: String, committed: Committed) {
        if committed.created {
            self.created.push(committed.digest.clone());
        }
        self.blobs.insert(path, committed);
    }

    fn resolve(&self, path: &str) -> String {
        let mut path = normalize(path);
        for _ in 0..16 {
            match self.links.get(&path) {
                Some(target) => path = target.clone(),
                None => break,
            }
        }
        path
    }

    /// The archive member `path` as a blob in the store.
    fn blob(&mut self, path: &str) -> Result<Committed> {
        let path = self.resolve(path);
        if let Some(c) = self.blobs.get(&path) {
            return Ok(c.clone());
        }
        let Some(bytes) = self.small.get(&path) else {
            return Err(Error::invalid(format!(
                "the archive has no file `{path}`, which its manifest lists"
            )));
        };
        let committed = self.store.content().put(bytes)?;
        self.record(path, committed.clone());
        Ok(committed)
    }

    fn bytes(&self, path: &str) -> Result<Vec<u8>> {
        let path = self.resolve(path);
        if let Some(bytes) = self.small.get(&path) {
            return Ok(bytes.clone());
        }
        if let Some(c) = self.blobs.get(&path) {
            return self.store.content().read_blob(&c.digest);
        }
        Err(Error::invalid(format!(
            "the archive has no file `{path}`, which its manifest lists"
        )))
    }
}

/// Read an image archive (OCI layout or `docker save` layout, plain, gzip or
/// zstd) into the store and return what it holds. Refs are not touched: the
/// caller normalizes the names and tags the images.
pub fn load(store: &Store, input: impl Read) -> Result<Loaded> {
    let mut pass = Pass {
        store,
        small: HashMap::new(),
        blobs: HashMap::new(),
        links: HashMap::new(),
        created: Vec::new(),
    };
    let result = load_inner(&mut pass, input);
    match result {
        Ok(images) => Ok(Loaded {
            images,
            created_blobs: pass.created,
        }),
        Err(e) => {
            for digest in &pass.created {
                let _ = store.content().delete_blob(digest);
            }
            Err(e)
        }
    }
}

fn read_err(source: io::Error) -> Error {
    Error::Stream {
        action: "read the archive (not a valid tar file?)".to_string(),
        source,
    }
}

fn load_inner(pass: &mut Pass<'_>, input: impl Read) -> Result<Vec<LoadedImage>> {
    let mut input = BufReader::with_capacity(256 * 1024, input);
    let head = input.fill_buf().map_err(read_err)?;
    if head.is_empty() {
        return Err(Error::invalid("the archive is empty"));
    }
    let reader: Box<dyn Read> = match Compression::sniff(head) {
        Compression::None => Box::new(input),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(input)),
        Compression::Zstd => Box::new(zstd::Decoder::with_buffer(input).map_err(read_err)?),
    };
    let mut archive = tar::Archive::new(reader);
    let entries = archive.entries().map_err(read_err)?;
    for entry in entries {
        let mut entry = entry.map_err(read_err)?;
        let raw_path = entry
            .path()
            .map_err(read_err)?
            .to_string_lossy()
            .into_owned();
        let path = normalize(&raw_path);
        let kind = entry.header().entry_type();
        if kind.is_symlink() || kind.is_hard_link() {
            let target = entry
                .link_name()
                .map_err(read_err)?
                .map(|t| t.to_string_lossy().into_owned())
                .unwrap_or_default();
            let target = if kind.is_symlink() && !target.starts_with('/') {
                let parent = path.rsplit_once('/').map_or("", |(p, _)| p);
                normalize(&format!("{parent}/{target}"))
            } else {
                normalize(&target)
            };
            pass.links.insert(path, target);
            continue;
        }
        if !kind.is_file() {
            continue;
        }
        let size = entry.size();
        let blob_digest = path
            .strip_prefix("blobs/")
            .and_then(|rest| rest.split_once('/'))
            .map(|(alg, hex)| format!("{alg}:{hex}"));
        if let Some(digest) = blob_digest {
            let digest = parse_digest(&digest)?;
            if pass.store.content().contains(&digest) {
                // Already stored: skip the bytes, but still count them in.
                io::copy(&mut entry, &mut io::sink()).map_err(read_err)?;
                let size = pass.store.content().blob_size(&digest)?;
                let committed = Committed {
                    digest,
                    size,
                    created: false,
                };
                pass.record(path, committed);
            } else {
                let committed = pass
                    .store
                    .content()
                    .ingest(&mut entry, Some(size), Some(&digest))
                    .map_err(|e| match e {
                        Error::Stream { source, .. } => read_err(source),
                        other => other,
                    })?;
                pass.record(path, committed);
            }
        } else if size <= SMALL_FILE || (path.ends_with(".json") && size <= MAX_JSON) {
            let mut bytes = Vec::with_capacity(size as usize);
            entry.read_to_end(&mut bytes).map_err(read_err)?;
            if bytes.len() as u64 != size {
                return Err(read_err(io::Error::from(io::ErrorKind::UnexpectedEof)));
            }
            pass.small.insert(path, bytes);
        } else {
            let committed = pass
                .store
                .content()
                .ingest(&mut entry, Some(size), None)
                .map_err(|e| match e {
                    Error::Stream { source, .. } => read_err(source),
                    other => other,
                })?;
            pass.record(path, committed);
        }
    }
    if pass.small.contains_key("manifest.json") {
        load_docker(pass)
    } else if pass.small.contains_key("index.json") {
        load_oci(pass)
    } else {
        Err(Error::invalid(
            "not an image archive: it has neither `manifest.json` (docker save) nor `index.json` (OCI image layout)",
        ))
    }
}

fn parse<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|source| Error::Json {
        action: format!("parse {what} in the archive"),
        source,
    })
}

fn load_docker(pass: &mut Pass<'_>) -> Result<Vec<LoadedImage>> {
    let entries: Vec<DockerManifestEntry> = parse(&pass.bytes("manifest.json")?, "manifest.json")?;
    let mut images = Vec::new();
    for entry in entries {
        let config_bytes = pass.bytes(&entry.config)?;
        let config: oci_spec::image::ImageConfiguration =
            parse(&config_bytes, &format!("image config `{}`", entry.config))?;
        crate::image::check_config_times(&config)?;
        let config_blob = pass.blob(&entry.config)?;
        let diff_ids = config.rootfs().diff_ids();
        if diff_ids.len() != entry.layers.len() {
            return Err(Error::invalid(format!(
                "manifest.json lists {} layers for `{}` but its config has {} diff IDs",
                entry.layers.len(),
                entry.config,
                diff_ids.len()
            )));
        }
        let mut layers = Vec::new();
        for (path, diff_id) in entry.layers.iter().zip(diff_ids) {
            let blob = pass.blob(path)?;
            let diff_id = parse_digest(diff_id)?;
            let mut head = [0u8; 4];
            let n = pass
                .store
                .content()
                .open_blob(&blob.digest)?
                .read(&mut head)
                .map_err(read_err)?;
            let compression = Compression::sniff(&head[..n]);
            let actual = if compression == Compression::None {
                blob.digest.clone()
            } else {
                let file = pass.store.content().open_blob(&blob.digest)?;
                decompress_hashing(file, compression, &mut io::sink())
                    .map_err(|source| Error::Stream {
                        action: format!("decompress layer `{path}`"),
                        source,
                    })?
                    .0
            };
            if actual != diff_id {
                return Err(Error::invalid(format!(
                    "layer `{path}` does not match its diff ID: expected {diff_id}, got {actual}"
                )));
            }
            let media_type = match compression {
                Compression::None => MediaType::ImageLayer,
                Compression::Gzip => MediaType::ImageLayerGzip,
                Compression::Zstd => MediaType::ImageLayerZstd,
            };
            layers.push(Descriptor::new(media_type, blob.size, blob.digest));
        }
        let manifest = oci_spec::image::ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .config(Descriptor::new(
                MediaType::ImageConfig,
                config_blob.size,
                config_blob.digest,
            ))
            .layers(layers)
            .build()
            .map_err(|e| Error::invalid(format!("cannot build a manifest: {e}")))?;
        let bytes = to_json(&manifest, "a manifest")?;
        let committed = pass.store.content().put(&bytes)?;
        let target = Descriptor::new(
            MediaType::ImageManifest,
            committed.size,
            committed.digest.clone(),
        );
        pass.record(format!("\0manifest:{}", committed.digest), committed);
        images.push(LoadedImage {
            names: entry.repo_tags.unwrap_or_default(),
            target,
        });
    }
    Ok(images)
}

fn load_oci(pass: &mut Pass<'_>) -> Result<Vec<LoadedImage>> {
    let index: ImageIndex = parse(&pass.bytes("index.json")?, "index.json")?;
    let mut images = Vec::new();
    for descriptor in index.manifests() {
        verify_tree(pass.store, descriptor)?;
        let annotations = descriptor.annotations().clone().unwrap_or_default();
        let names = annotations
            .get(ANNOTATION_IMAGE_NAME)
            .or_else(|| annotations.get(ANNOTATION_REF_NAME))
            .map(|n| vec![n.clone()])
            .unwrap_or_default();
        let mut target = descriptor.clone();
        target.set_annotations(None);
        images.push(LoadedImage { names, target });
    }
    if images.is_empty() {
        return Err(Error::invalid("the archive's index.json lists no images"));
    }
    Ok(images)
}

/// Check that a manifest or index and everything below it is in the store
/// with the sizes the descriptors announce.
fn verify_tree(store: &Store, descriptor: &Descriptor) -> Result<()> {
    let check = |d: &Descriptor, what: &str| -> Result<()> {
        match store.content().blob_size(d.digest()) {
            Ok(size) if size == d.size() => Ok(()),
            Ok(size) => Err(Error::invalid(format!(
                "{what} {} is {size} bytes in the archive but its descriptor says {}",
                d.digest(),
                d.size()
            ))),
            Err(e) if e.is_not_found() => Err(Error::invalid(format!(
                "the archive lacks {what} {}",
                d.digest()
            ))),
            Err(e) => Err(e),
        }
    };
    let media_type = descriptor.media_type().to_string();
    check(descriptor, "manifest")?;
    if is_index(&media_type) {
        for child in store.read_index(descriptor.digest())?.manifests() {
            verify_tree(store, child)?;
        }
    } else if is_manifest(&media_type) {
        let manifest: ImageManifest = store.read_manifest(descriptor.digest())?;
        check(manifest.config(), "config")?;
        crate::image::check_config_times(&store.read_config(manifest.config().digest())?)?;
        for layer in manifest.layers() {
            check(layer, "layer")?;
        }
    } else {
        return Err(Error::UnsupportedMediaType {
            media_type,
            what: "an entry of index.json",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::image::{ImageConfigurationBuilder, ImageManifestBuilder, RootFsBuilder};

    fn layer_tar() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_size(5);
        h.set_mode(0o644);
        b.append_data(&mut h, "etc/hello", &b"hello"[..]).unwrap();
        b.into_inner().unwrap()
    }

    /// An image with one gzip layer; returns its manifest descriptor.
    fn image(store: &Store) -> Descriptor {
        let tar = layer_tar();
        let diff_id = crate::content::digest_of(&tar);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&tar).unwrap();
        let layer = store.content().put(&gz.finish().unwrap()).unwrap();
        let config = ImageConfigurationBuilder::default()
            .rootfs(
                RootFsBuilder::default()
                    .diff_ids(vec![diff_id.to_string()])
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        let config = store.put_json(&config, media_types::OCI_CONFIG).unwrap();
        let manifest = ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .config(config)
            .layers(vec![Descriptor::new(
                MediaType::ImageLayerGzip,
                layer.size,
                layer.digest,
            )])
            .build()
            .unwrap();
        store
            .put_json(&manifest, media_types::OCI_MANIFEST)
            .unwrap()
    }

    fn blob_names(store: &Store) -> Vec<String> {
        store
            .content()
            .blobs()
            .unwrap()
            .into_iter()
            .map(|(d, _)| d.to_string())
            .collect()
    }

    #[test]
    fn oci_archive_round_trips_with_the_same_digests() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let src = Store::open(a.path()).unwrap();
        let target = image(&src);
        let mut out = Vec::new();
        let images = [SaveImage {
            names: vec!["docker.io/library/x:1".to_string()],
            target: target.clone(),
        }];
        save_oci(&src, &images, &mut out).unwrap();
        let dst = Store::open(b.path()).unwrap();
        let loaded = load(&dst, &out[..]).unwrap();
        assert_eq!(
            loaded.images,
            [LoadedImage {
                names: vec!["docker.io/library/x:1".to_string()],
                target
            }]
        );
        assert_eq!(blob_names(&src), blob_names(&dst));
        assert_eq!(loaded.created_blobs.len(), 3);
        // Loading again adds nothing.
        assert!(load(&dst, &out[..]).unwrap().created_blobs.is_empty());
    }

    #[test]
    fn docker_archive_round_trips_config_and_diff_ids() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let src = Store::open(a.path()).unwrap();
        let target = image(&src);
        let original = src.image(&target).unwrap();
        let mut out = Vec::new();
        let images = [SaveImage {
            names: vec!["x:1".to_string()],
            target,
        }];
        save_docker(&src, &images, &mut out).unwrap();
        let mut names: Vec<String> = tar::Archive::new(&out[..])
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let diff = original.config.rootfs().diff_ids()[0]
            .trim_start_matches("sha256:")
            .to_string();
        let config = format!("{}.json", original.id().digest());
        // Directories end in `/`, as in `docker save`'s archives.
        let mut expected = vec![
            config,
            format!("{diff}/"),
            format!("{diff}/VERSION"),
            format!("{diff}/layer.tar"),
            "manifest.json".to_string(),
            "repositories".to_string(),
        ];
        expected.sort();
        assert_eq!(names, expected);
        let dst = Store::open(b.path()).unwrap();
        let loaded = load(&dst, &out[..]).unwrap();
        assert_eq!(loaded.images[0].names, ["x:1"]);
        let image = dst.image(&loaded.images[0].target).unwrap();
        assert_eq!(image.id(), original.id());
        assert_eq!(
            image.layers()[0].digest().to_string(),
            format!("sha256:{diff}")
        );
        assert_eq!(image.layers()[0].media_type(), &MediaType::ImageLayer);
        assert_eq!(
            dst.content().read_blob(image.layers()[0].digest()).unwrap(),
            layer_tar()
        );
    }

    #[test]
    fn not_an_archive_is_refused_and_store_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let before = blob_names(&store);
        let err = load(&store, &b"this is not a tar file at all, just some text that is long enough to fill a header block................................................................................................................................................................................................................................................................................................................................................................................................................................"[..]).unwrap_err();
        assert!(
            err.to_string().starts_with("failed to read the archive"),
            "{err}"
        );
        let err = load(&store, &b""[..]).unwrap_err();
        assert_eq!(err.to_string(), "the archive is empty");
        assert_eq!(blob_names(&store), before);
    }

    #[test]
    fn tar_without_image_metadata_is_refused_and_its_blobs_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let blob = b"some blob";
        let digest = crate::content::digest_of(blob);
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_size(blob.len() as u64);
        h.set_mode(0o644);
        b.append_data(
            &mut h,
            format!("blobs/sha256/{}", digest.digest()),
            &blob[..],
        )
        .unwrap();
        let tar = b.into_inner().unwrap();
        let err = load(&store, &tar[..]).unwrap_err();
        assert!(err.to_string().starts_with("not an image archive"), "{err}");
        assert!(blob_names(&store).is_empty());
    }

    #[test]
    fn blob_with_wrong_content_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let digest = crate::content::digest_of(b"expected");
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_size(8);
        h.set_mode(0o644);
        b.append_data(
            &mut h,
            format!("blobs/sha256/{}", digest.digest()),
            &b"tampered"[..],
        )
        .unwrap();
        let err = load(&store, &b.into_inner().unwrap()[..]).unwrap_err();
        assert!(err.is_mismatch(), "{err}");
        assert!(blob_names(&store).is_empty());
    }

    #[test]
    fn split_tag_handles_ports() {
        assert_eq!(split_tag("busybox:latest"), ("busybox", "latest"));
        assert_eq!(
            split_tag("localhost:5000/a/b:1"),
            ("localhost:5000/a/b", "1")
        );
        assert_eq!(
            split_tag("localhost:5000/a"),
            ("localhost:5000/a", "latest")
        );
    }
}
