//! Why did a step rebuild? Each cache record keeps the *preimage* of its key
//! in words a person can compare: the instruction's text, the op's fields,
//! the environment (build args and ENV) it saw, the base image digest, the
//! mount and secret ids (never secret contents), the content digests and
//! modes of the context paths it selected, and its inputs' preimage digests.
//!
//! A step's records are found again through its *step identity* (context
//! directory, Dockerfile name, stage and position in the stage), so the
//! nearest earlier record of "step 3 of stage build" is found whatever its
//! key was. For a step that runs, [`Explainer::explain`] compares its
//! preimage with that record's and names the first input that differs:
//!
//! ```text
//! step 2/3 COPY src/ /app/: src/main.rs changed (blake3:ab12cd34ef56… → blake3:9f0e1d2c3b4a…)
//! step 3/3 RUN make: ARG VERSION changed from 1.2 to 1.3
//! step 1/3 RUN apk add gcc: base image busybox:latest moved to sha256:5b0e2f…
//! ```
//!
//! Inputs come before outputs: a step whose own fields are unchanged but
//! whose input step rebuilt is explained by that step's reason, with
//! `(in step …)` appended. [`predict`] does the same without running
//! anything (`hoist build --dry-run --explain`).

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use hoist_cache::Store;
use hoist_frontend::dockerignore::Matcher;
use hoist_frontend::graph::{BuildGraph as FrontendGraph, MountKind, Op as GraphOp};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::engine::hash::content_digest;
use crate::graph::VertexId;

/// Format version of stored preimages; records of another version are
/// treated as having none. 2: files' digests are BLAKE3 (`blake3:<hex>`).
const PREIMAGE_VERSION: u32 = 2;

/// One context path as a preimage keeps it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileState {
    /// `blake3:<hex>` of the content (files, [`content_digest`]), the link
    /// target (symlinks), or empty (directories).
    pub digest: String,
    /// Permission bits and type.
    pub mode: u32,
    /// Stat fields that let the next build reuse `digest` without reading
    /// the file; not compared.
    #[serde(default)]
    pub size: u64,
    #[serde(default)]
    mtime_ns: i64,
    #[serde(default)]
    ino: u64,
}

/// What a step's cache key was computed from, readably.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Preimage {
    /// Format version.
    pub version: u32,
    /// How people call the step (`step 2/3 COPY f /f`).
    pub label: String,
    /// The instruction's text.
    pub instruction: String,
    /// The op's canonical fields (environment and mounts apart).
    pub op: serde_json::Value,
    /// Environment the step saw (build args and ENV), by name.
    pub env: BTreeMap<String, String>,
    /// Base image: name and manifest digest.
    pub base: Option<(String, String)>,
    /// Mount and secret ids.
    pub mounts: Vec<String>,
    /// Context paths selected, with their content.
    pub files: BTreeMap<String, FileState>,
    /// Inputs: (label, preimage digest).
    pub inputs: Vec<(String, String)>,
}

impl Preimage {
    /// Digest over everything compared (not the stat fields).
    pub fn digest(&self) -> String {
        let files: Vec<(&String, &str, u32)> = self
            .files
            .iter()
            .map(|(p, f)| (p, f.digest.as_str(), f.mode))
            .collect();
        let value = serde_json::json!([
            self.instruction,
            self.op,
            self.env,
            self.base,
            self.mounts,
            files,
            self.inputs
        ]);
        format!(
            "sha256:{}",
            hex::encode(Sha256::digest(value.to_string().as_bytes()))
        )
    }
}

fn short(digest: &str) -> String {
    match digest.split_once(':') {
        Some((alg, hex)) if hex.len() > 12 => format!("{alg}:{}…", &hex[..12]),
        _ => digest.to_owned(),
    }
}

/// The explanation of one step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Explanation {
    /// The step (`step 2/3 COPY f /f`).
    pub label: String,
    /// Why it ran.
    pub reason: String,
}

/// Explanations gathered during a build, by vertex, for the caller to show
/// (plain text at the end, a `reason` field in json progress).
#[derive(Debug, Default)]
pub struct Explanations {
    by_vertex: Mutex<BTreeMap<usize, Explanation>>,
}

impl Explanations {
    /// An empty set.
    pub fn new() -> Arc<Self> {
        Arc::new(Explanations::default())
    }

    /// The explanation of `vertex`, if it ran.
    pub fn get(&self, vertex: VertexId) -> Option<Explanation> {
        self.lock().get(&vertex.index()).cloned()
    }

    /// Every explanation, in step order.
    pub fn all(&self) -> Vec<Explanation> {
        self.lock().values().cloned().collect()
    }

    pub(crate) fn insert(&self, vertex: VertexId, explanation: Explanation) {
        self.lock().insert(vertex.index(), explanation);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<usize, Explanation>> {
        // Single inserts and reads: a poisoned map is still consistent.
        self.by_vertex.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Computes preimages of a build's steps and explains misses.
pub struct Explainer {
    store: Arc<Store>,
    graph: FrontendGraph,
    context_dir: PathBuf,
    ignore: Matcher,
    /// Named directory contexts (`--build-context`), by local name.
    named: HashMap<String, (PathBuf, Matcher)>,
    /// Step identity of each frontend vertex.
    steps: Vec<String>,
    labels: Vec<String>,
    /// Frontend vertex of each solver vertex.
    frontend_of: HashMap<VertexId, usize>,
    /// Why vertices ignore the cache (`--no-cache`, `--no-cache-filter x`).
    ignore_cache: HashMap<usize, String>,
    /// Names of ENV variables per vertex's stage (the rest are build args).
    env_names: Vec<Vec<String>>,
    /// Shared, not cloned: a context's preimage lists every file.
    preimages: Mutex<HashMap<usize, Arc<Preimage>>>,
    /// The nearest earlier record's preimage of each vertex, read once, on
    /// first use: that is before the vertex records anything (its preimage
    /// is computed, and with `--explain` it is explained, before its record
    /// is written), so a step's new record never hides its old one. Lazy
    /// because a no-op build needs none of them.
    previous: Vec<std::sync::OnceLock<Option<Arc<Preimage>>>>,
    /// The build's engine: its hashing of the context for the cache keys
    /// already walked and read the files a preimage lists (`None` for a dry
    /// run).
    engine: Option<Arc<crate::engine::Engine>>,
}

/// Splits `[stage 2/5] RUN make` into (`stage`, `2/5`, `RUN make`).
fn split_name(name: &str) -> Option<(&str, &str, &str)> {
    let rest = name.strip_prefix('[')?;
    let (head, instruction) = rest.split_once("] ")?;
    let (stage, position) = head.rsplit_once(' ')?;
    Some((stage, position, instruction))
}

impl Explainer {
    /// Compares the files of named directory contexts too (local name,
    /// directory and `.dockerignore` rules).
    pub fn with_named_contexts(
        mut self,
        contexts: Vec<(String, crate::engine::LocalContext)>,
    ) -> Explainer {
        for (name, c) in contexts {
            let dir = c.dir.canonicalize().unwrap_or(c.dir);
            self.named.insert(name, (dir, c.ignore));
        }
        self
    }

    /// An explainer for `graph`, built from `context_dir` with `ignore`.
    /// `ids[i]` is the solver vertex of frontend vertex `i`; `ignore_cache`
    /// says why vertices bypass the cache.
    pub fn new(
        store: Arc<Store>,
        graph: &FrontendGraph,
        context_dir: &std::path::Path,
        dockerfile_name: &str,
        ignore: Matcher,
        ids: &[VertexId],
        ignore_cache: HashMap<usize, String>,
    ) -> Explainer {
        let context_dir = context_dir
            .canonicalize()
            .unwrap_or_else(|_| context_dir.to_path_buf());
        let n = graph.vertices.len();
        let mut local: Vec<Option<String>> = vec![None; n];
        let mut labels: Vec<String> = vec![String::new(); n];
        let single_stage = graph.stages.len() == 1;
        for (i, v) in graph.vertices.iter().enumerate() {
            // `[context NAME] load from client` is no step of a stage.
            if matches!(v.op, GraphOp::Context { .. }) {
                continue;
            }
            if let Some((stage, position, instruction)) = split_name(&v.name) {
                let number = position.split('/').next().unwrap_or(position);
                local[i] = Some(format!("{stage}/{number}"));
                labels[i] = if single_stage || stage.starts_with("stage-") {
                    format!("step {position} {instruction}")
                } else {
                    format!("step {position} [{stage}] {instruction}")
                };
            }
        }
        for stage in &graph.stages {
            if let Some(base) = stage.base_image {
                if local[base].is_none() {
                    let name = stage
                        .name
                        .clone()
                        .unwrap_or(format!("stage-{}", stage.index));
                    local[base] = Some(format!("from:{name}"));
                    labels[base] = graph.vertices[base].name.clone();
                    if let GraphOp::Image { reference, .. } = &graph.vertices[base].op {
                        let familiar = reference.split('@').next().unwrap_or(reference);
                        labels[base] = format!("FROM {}", familiar_name(familiar));
                    }
                }
            }
        }
        for (i, v) in graph.vertices.iter().enumerate() {
            for (k, input) in v.inputs.iter().enumerate() {
                if local[*input].is_some() {
                    continue;
                }
                if let GraphOp::Context { name, .. } = &graph.vertices[*input].op {
                    let consumer = local[i].clone().unwrap_or(format!("vertex{i}"));
                    local[*input] = Some(format!("{consumer}/context{k}"));
                    labels[*input] = if name == "context" {
                        "the build context".to_owned()
                    } else {
                        format!("the build context {name}")
                    };
                }
            }
        }
        let steps: Vec<String> = local
            .into_iter()
            .enumerate()
            .map(|(i, l)| {
                let l = l.unwrap_or(format!("vertex{i}"));
                let text = format!("{}\0{dockerfile_name}\0{l}", context_dir.display());
                if labels[i].is_empty() {
                    labels[i] = graph.vertices[i].name.clone();
                }
                format!("sha256:{}", hex::encode(Sha256::digest(text.as_bytes())))
            })
            .collect();
        // The stage of each vertex: stages own the chain from their root.
        let mut env_names = vec![Vec::new(); n];
        for stage in &graph.stages {
            let names: Vec<String> = stage
                .config
                .env
                .iter()
                .map(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k).to_owned())
                .collect();
            let mut todo = vec![stage.root];
            while let Some(v) = todo.pop() {
                if !env_names[v].is_empty() {
                    continue;
                }
                env_names[v] = names.clone();
                if let Some(first) = graph.vertices[v].inputs.first() {
                    todo.push(*first);
                }
            }
        }
        let mut frontend_of = HashMap::new();
        for (i, id) in ids.iter().enumerate() {
            frontend_of.entry(*id).or_insert(i);
        }
        let previous = steps.iter().map(|_| std::sync::OnceLock::new()).collect();
        Explainer {
            previous,
            store,
            graph: graph.clone(),
            context_dir,
            ignore,
            named: HashMap::new(),
            steps,
            labels,
            frontend_of,
            ignore_cache,
            env_names,
            preimages: Mutex::new(HashMap::new()),
            engine: None,
        }
    }

    /// Takes a context's files from what `engine` hashed for the build's
    /// keys rather than walking and reading the context again.
    pub fn with_engine(mut self, engine: Arc<crate::engine::Engine>) -> Explainer {
        self.engine = Some(engine);
        self
    }

    /// The preimage of frontend vertex `i` as of now.
    pub fn preimage(&self, i: usize) -> Arc<Preimage> {
        if let Some(p) = self
            .preimages
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&i)
        {
            return Arc::clone(p);
        }
        let v = &self.graph.vertices[i];
        let mut p = Preimage {
            version: PREIMAGE_VERSION,
            label: self.labels[i].clone(),
            instruction: split_name(&v.name)
                .map_or(v.name.as_str(), |(_, _, t)| t)
                .to_owned(),
            ..Preimage::default()
        };
        let mut op = serde_json::to_value(&v.op).unwrap_or_default();
        match &v.op {
            GraphOp::Image { reference, .. } => {
                if let Some((name, digest)) = reference.split_once('@') {
                    p.base = Some((name.to_owned(), digest.to_owned()));
                    p.instruction = format!("FROM {name}");
                }
                op = serde_json::Value::Null;
            }
            GraphOp::Exec(exec) => {
                for e in &exec.env {
                    let (k, val) = e.split_once('=').unwrap_or((e.as_str(), ""));
                    p.env.insert(k.to_owned(), val.to_owned());
                }
                for m in &exec.mounts {
                    match &m.kind {
                        MountKind::Cache { id, .. } => p.mounts.push(format!("cache {id}")),
                        MountKind::Secret { id, .. } => p.mounts.push(format!("secret {id}")),
                        MountKind::Ssh { id, .. } => p.mounts.push(format!("ssh {id}")),
                        MountKind::Bind { source, .. } => p.mounts.push(format!("bind {source}")),
                        MountKind::Tmpfs { .. } => p.mounts.push("tmpfs".to_owned()),
                    }
                }
                if let Some(o) = op.as_object_mut() {
                    for k in ["env", "proxy_env", "mounts", "argv"] {
                        o.remove(k);
                    }
                }
            }
            GraphOp::Context { name, paths } => {
                p.files = self.context_files(i, name, paths);
            }
            _ => {}
        }
        p.op = op;
        p.inputs = v
            .inputs
            .iter()
            .map(|input| (self.labels[*input].clone(), self.preimage(*input).digest()))
            .collect();
        let p = Arc::new(p);
        self.preimages
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(i, Arc::clone(&p));
        p
    }

    /// The selected context paths with their content digests.
    fn context_files(&self, i: usize, name: &str, paths: &[String]) -> BTreeMap<String, FileState> {
        let (context_dir, ignore) = match self.named.get(name) {
            Some((dir, ignore)) if name != "context" => (dir, ignore),
            _ => (&self.context_dir, &self.ignore),
        };
        let sources = if paths.is_empty() {
            vec![String::new()]
        } else {
            paths.to_vec()
        };
        // The build's own hashing of the selection, when it made one: a
        // 20,000-file context is then neither walked nor read again.
        let hashed = self.engine.as_ref().and_then(|engine| {
            let context = engine.context(name).ok()?;
            engine.hashes.selected(&context.dir, &sources)
        });
        if let Some(entries) = hashed {
            return files_of_selection(&entries);
        }
        let Ok(entries) = crate::engine::hash::select(context_dir, &sources, Some(ignore)) else {
            return BTreeMap::new();
        };
        let previous = self.previous(i);
        files_of_entries(context_dir, entries, previous.as_ref().map(|p| &p.files))
    }

    /// The preimage of the nearest earlier record of frontend vertex `i`'s step.
    fn previous(&self, i: usize) -> Option<Arc<Preimage>> {
        self.previous[i]
            .get_or_init(|| {
                let row = self
                    .store
                    .latest_cache_record_of_step(&self.steps[i])
                    .ok()??;
                let p: Preimage = serde_json::from_slice(row.preimage.as_deref()?).ok()?;
                (p.version == PREIMAGE_VERSION).then(|| Arc::new(p))
            })
            .clone()
    }

    /// Why frontend vertex `i` does not match its nearest earlier record, or
    /// `None` when it matches.
    fn difference(&self, i: usize, depth: usize) -> Option<String> {
        let now = self.preimage(i);
        let Some(before) = self.previous(i) else {
            return Some("no earlier build of this step".to_owned());
        };
        if now.base != before.base {
            if let (Some((name, digest)), Some((old_name, _))) = (&now.base, &before.base) {
                if name == old_name {
                    return Some(format!(
                        "base image {} moved to {}",
                        familiar_name(name),
                        short(digest)
                    ));
                }
            }
        }
        if now.instruction != before.instruction {
            return Some("the instruction's text changed".to_owned());
        }
        if now.env != before.env {
            let keys: std::collections::BTreeSet<&String> =
                now.env.keys().chain(before.env.keys()).collect();
            for key in keys {
                let (new, old) = (now.env.get(key), before.env.get(key));
                if new == old {
                    continue;
                }
                let kind = if self.env_names[i].contains(key) {
                    "ENV"
                } else {
                    "ARG"
                };
                return Some(match (old, new) {
                    (Some(o), Some(n)) => format!("{kind} {key} changed from {o} to {n}"),
                    (None, Some(n)) => format!("{kind} {key} set to {n}"),
                    (Some(o), None) => format!("{kind} {key} (was {o}) is no longer set"),
                    (None, None) => continue,
                });
            }
        }
        if now.mounts != before.mounts {
            return Some(format!(
                "its mounts changed ({} → {})",
                before.mounts.join(", "),
                now.mounts.join(", ")
            ));
        }
        if now.op != before.op || now.base != before.base {
            return Some("the instruction's options changed".to_owned());
        }
        if now.files.len() + before.files.len() > 0 {
            for (path, state) in &now.files {
                match before.files.get(path) {
                    None => return Some(format!("{path} was added")),
                    Some(old) if old.digest != state.digest => {
                        return Some(format!(
                            "{path} changed ({} → {})",
                            short(&old.digest),
                            short(&state.digest)
                        ))
                    }
                    Some(old) if old.mode != state.mode => {
                        return Some(format!(
                            "{path} changed mode ({:o} → {:o})",
                            old.mode & 0o7777,
                            state.mode & 0o7777
                        ))
                    }
                    _ => {}
                }
            }
            if let Some(path) = before.files.keys().find(|p| !now.files.contains_key(*p)) {
                return Some(format!("{path} was removed"));
            }
        }
        let inputs = self.graph.vertices[i].inputs.clone();
        for (k, input) in inputs.iter().enumerate() {
            let changed = before
                .inputs
                .get(k)
                .is_none_or(|(_, digest)| *digest != now.inputs[k].1);
            if !changed {
                continue;
            }
            if depth > 64 {
                return Some(format!("{} changed", self.labels[*input]));
            }
            let reason = self
                .difference(*input, depth + 1)
                .unwrap_or_else(|| format!("{} changed", self.labels[*input]));
            let direct = matches!(
                self.graph.vertices[*input].op,
                GraphOp::Image { .. } | GraphOp::Context { .. }
            ) || reason.ends_with(')') && reason.contains(" (in ");
            return Some(if direct {
                reason
            } else {
                format!("{reason} (in {})", self.labels[*input])
            });
        }
        None
    }

    fn reason(&self, i: usize) -> String {
        if let Some(why) = self.ignore_cache.get(&i) {
            return why.clone();
        }
        self.difference(i, 0).unwrap_or_else(|| {
            "the earlier result is no longer in the cache (pruned, or its layers are gone)"
                .to_owned()
        })
    }

    /// Why solver vertex `vertex`, which is about to run, missed the cache.
    pub fn explain(&self, vertex: VertexId) -> Option<Explanation> {
        let i = *self.frontend_of.get(&vertex)?;
        Some(Explanation {
            label: self.labels[i].clone(),
            reason: self.reason(i),
        })
    }

    /// `(label, None)` for a step predicted to come from the cache,
    /// `(label, Some(reason))` for one predicted to run, for the vertices
    /// `needed` (frontend indices, inputs before consumers).
    pub fn predict(&self, needed: &[usize]) -> Vec<(String, Option<String>)> {
        let mut runs: HashMap<usize, bool> = HashMap::new();
        let mut out = Vec::new();
        for &i in needed {
            let mut reason = self.ignore_cache.get(&i).cloned();
            if reason.is_none() {
                reason = match self.previous_present(i) {
                    false => Some(self.reason(i)),
                    true => self.graph.vertices[i]
                        .inputs
                        .iter()
                        .find(|input| runs.get(input).copied().unwrap_or(false))
                        .map(|input| format!("{} will run", self.labels[*input])),
                };
            }
            runs.insert(i, reason.is_some());
            out.push((self.labels[i].clone(), reason));
        }
        out
    }

    /// Whether the step's latest record matches now and its blobs are all
    /// present (a hit is likely).
    fn previous_present(&self, i: usize) -> bool {
        let Ok(Some(row)) = self.store.latest_cache_record_of_step(&self.steps[i]) else {
            return false;
        };
        let matches = row
            .preimage
            .as_deref()
            .and_then(|b| serde_json::from_slice::<Preimage>(b).ok())
            .is_some_and(|p| p.digest() == self.preimage(i).digest());
        matches
            && row.blobs.iter().all(|b| {
                b.parse()
                    .map(|d| self.store.content().contains(&d))
                    .unwrap_or(false)
            })
    }
}

impl crate::engine::index::StepRecorder for Explainer {
    fn step_of(&self, vertex: VertexId) -> Option<(String, Vec<u8>)> {
        let i = *self.frontend_of.get(&vertex)?;
        let preimage = self.preimage(i);
        Some((self.steps[i].clone(), serde_json::to_vec(&*preimage).ok()?))
    }
}

/// `docker.io/library/busybox:latest` → `busybox:latest`.
fn familiar_name(name: &str) -> String {
    hoist_untrusted::Reference::parse(name).map_or_else(|_| name.to_owned(), |r| r.familiar())
}

/// A context's files in a preimage, from the build's own hashing of them.
fn files_of_selection(
    entries: &[crate::engine::hash::SelectedEntry],
) -> BTreeMap<String, FileState> {
    entries
        .iter()
        .map(|e| {
            // A symlink's target as the hashing read it: not read again.
            let digest = match (e.content, &e.link) {
                (Some(content), _) => content_state(&content),
                (None, Some(target)) => link_state(target),
                (None, None) => String::new(),
            };
            let state = FileState {
                digest,
                mode: e.mode,
                size: e.size,
                mtime_ns: e.mtime_ns,
                ino: e.ino,
            };
            (e.path.clone(), state)
        })
        .collect()
}

/// A context's files in a preimage, from a walk of it (`entries`): a file
/// whose stat fields match the step's previous record keeps its digest,
/// any other is read, inside `dir` as the build's own hashing reads it
/// (what cannot be read is left without a digest).
fn files_of_entries(
    dir: &std::path::Path,
    entries: BTreeMap<String, std::fs::Metadata>,
    previous: Option<&BTreeMap<String, FileState>>,
) -> BTreeMap<String, FileState> {
    let root = hoist_untrusted::Root::new(dir).ok();
    let mut buf = vec![0; 64 << 10];
    let mut out = BTreeMap::new();
    for (path, meta) in entries {
        let mut state = FileState {
            digest: String::new(),
            mode: meta.mode(),
            size: meta.len(),
            mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
            ino: meta.ino(),
        };
        if meta.is_file() {
            state.digest = match previous.and_then(|f| f.get(&path)) {
                Some(old)
                    if old.size == state.size
                        && old.mtime_ns == state.mtime_ns
                        && old.ino == state.ino
                        && !old.digest.is_empty() =>
                {
                    old.digest.clone()
                }
                _ => root
                    .as_ref()
                    .and_then(|r| content_digest(r, &path, &mut buf).ok())
                    .map(|d| content_state(&d))
                    .unwrap_or_default(),
            };
        } else if meta.file_type().is_symlink() {
            state.digest = root
                .as_ref()
                .and_then(|r| r.read_link(&path).ok())
                .map(|t| link_state(&t))
                .unwrap_or_default();
        }
        out.insert(path, state);
    }
    out
}

/// A symlink's entry in a preimage: its target.
fn link_state(target: &std::path::Path) -> String {
    format!("link:{}", target.display())
}

/// A regular file's entry in a preimage: its [`content_digest`].
fn content_state(digest: &[u8; 32]) -> String {
    format!("blake3:{}", hex::encode(digest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_contexts_files_from_the_builds_hashing_are_those_of_a_walk() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let ctx = dir.path().join("ctx");
        std::fs::create_dir_all(ctx.join("sub")).unwrap();
        std::fs::write(ctx.join("a.txt"), "alpha").unwrap();
        std::fs::write(ctx.join("sub/run.sh"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(
            ctx.join("sub/run.sh"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        std::os::unix::fs::symlink("../a.txt", ctx.join("sub/link")).unwrap();
        let cache = crate::engine::hash::StatCache::load(dir.path().join("stat-cache"));
        let all = vec![String::new()];
        assert!(cache.selected(&ctx, &all).is_none());
        crate::engine::hash::selection_digest(&ctx, &all, None, &cache).unwrap();
        let hashed = files_of_selection(&cache.selected(&ctx, &all).unwrap());

        let walked = files_of_entries(
            &ctx,
            crate::engine::hash::select(&ctx, &all, None).unwrap(),
            None,
        );
        assert_eq!(hashed, walked);
        let names: Vec<&str> = hashed.keys().map(String::as_str).collect();
        assert_eq!(names, ["", "a.txt", "sub", "sub/link", "sub/run.sh"]);
        assert_eq!(
            hashed["a.txt"].digest,
            format!("blake3:{}", blake3::hash(b"alpha").to_hex())
        );
        assert_eq!(hashed["sub/link"].digest, "link:../a.txt");
        assert_eq!(hashed["sub/run.sh"].mode & 0o7777, 0o755);
        assert_eq!(hashed["sub"].digest, "");
    }

    #[test]
    fn names_split_into_stage_position_and_text() {
        assert_eq!(
            split_name("[build 2/5] RUN make all"),
            Some(("build", "2/5", "RUN make all"))
        );
        assert_eq!(split_name("load build context"), None);
        assert_eq!(short("sha256:0123456789abcdef"), "sha256:0123456789ab…");
        assert_eq!(
            familiar_name("docker.io/library/busybox:latest"),
            "busybox:latest"
        );
    }
}
