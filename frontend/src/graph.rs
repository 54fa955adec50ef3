//! The build graph: what the builder executes. No Dockerfile words live here,
//! so another frontend could produce the same types.
//!
//! A [`BuildGraph`] is a list of [`Vertex`]es (an [`Op`] plus its inputs, which
//! are indices of earlier vertices) and a list of [`Stage`]s, each naming the
//! vertex holding its final filesystem, its image config and its history lines.
//! Vertices are topologically ordered: every input index is smaller than the
//! vertex's own index.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::parser::Span;

/// Index of a vertex in [`BuildGraph::vertices`].
pub type VertexId = usize;

/// An OS/architecture pair, as in OCI image indexes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub struct Platform {
    /// `linux`.
    pub os: String,
    /// `amd64`, `arm64`, …
    pub architecture: String,
    /// `v7`, `v8`, … when relevant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// The platform this process runs on (`linux/amd64` on x86-64 Linux).
    pub fn host() -> Self {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "arm" => "arm",
            "powerpc64" => "ppc64le",
            "s390x" => "s390x",
            "riscv64" => "riscv64",
            other => other,
        };
        Platform {
            os: std::env::consts::OS.to_string(),
            architecture: architecture.to_string(),
            variant: None,
        }
    }

    /// Parses `os/arch[/variant]` (also `arch` alone, meaning Linux).
    pub fn parse(s: &str) -> Option<Self> {
        let parts: Vec<&str> = s.trim().split('/').collect();
        let norm_arch = |a: &str| -> String {
            match a.to_ascii_lowercase().as_str() {
                "x86_64" | "x86-64" => "amd64".into(),
                "aarch64" => "arm64".into(),
                "i386" => "386".into(),
                other => other.into(),
            }
        };
        let known_os = |o: &str| {
            matches!(
                o,
                "linux" | "windows" | "darwin" | "freebsd" | "netbsd" | "openbsd" | "solaris"
            )
        };
        let p = match parts.as_slice() {
            [one] if !one.is_empty() => {
                if known_os(&one.to_ascii_lowercase()) {
                    Platform {
                        os: one.to_ascii_lowercase(),
                        architecture: Platform::host().architecture,
                        variant: None,
                    }
                } else {
                    Platform {
                        os: "linux".into(),
                        architecture: norm_arch(one),
                        variant: None,
                    }
                }
            }
            [os, arch] if !os.is_empty() && !arch.is_empty() => Platform {
                os: os.to_ascii_lowercase(),
                architecture: norm_arch(arch),
                variant: None,
            },
            [os, arch, variant] if !os.is_empty() && !arch.is_empty() && !variant.is_empty() => {
                Platform {
                    os: os.to_ascii_lowercase(),
                    architecture: norm_arch(arch),
                    variant: Some(variant.to_ascii_lowercase()),
                }
            }
            _ => return None,
        };
        if !p
            .os
            .chars()
            .chain(p.architecture.chars())
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return None;
        }
        Some(p)
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// A health check in an image config (durations in nanoseconds, 0 = default).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Healthcheck {
    /// `["NONE"]`, `["CMD", …]` or `["CMD-SHELL", line]`.
    pub test: Vec<String>,
    /// Time between checks.
    #[serde(default)]
    pub interval: u64,
    /// Time before a check is considered hung.
    #[serde(default)]
    pub timeout: u64,
    /// Grace period after start.
    #[serde(default)]
    pub start_period: u64,
    /// Time between checks during the start period.
    #[serde(default)]
    pub start_interval: u64,
    /// Consecutive failures before unhealthy.
    #[serde(default)]
    pub retries: u32,
}

/// The runtime part of an OCI image config (plus Docker's extensions).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ImageConfig {
    /// `KEY=value` entries in order.
    #[serde(default)]
    pub env: Vec<String>,
    /// Default arguments; `None` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    /// Entrypoint; `None` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// Working directory (empty: unset).
    #[serde(default)]
    pub working_dir: String,
    /// User (empty: unset).
    #[serde(default)]
    pub user: String,
    /// Labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Exposed ports as `80/tcp`.
    #[serde(default)]
    pub exposed_ports: BTreeSet<String>,
    /// Volumes.
    #[serde(default)]
    pub volumes: BTreeSet<String>,
    /// Stop signal (empty: unset).
    #[serde(default)]
    pub stop_signal: String,
    /// Health check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<Healthcheck>,
    /// Shell for shell-form commands (Docker extension); empty: `/bin/sh -c`.
    #[serde(default)]
    pub shell: Vec<String>,
    /// Triggers to run when the image is used as a base (Docker extension).
    #[serde(default)]
    pub on_build: Vec<String>,
    /// Docker's `ArgsEscaped`.
    #[serde(default)]
    pub args_escaped: bool,
    /// Author (MAINTAINER).
    #[serde(default)]
    pub author: String,
}

impl ImageConfig {
    /// The value of an environment variable.
    pub fn env_value(&self, key: &str) -> Option<&str> {
        self.env.iter().rev().find_map(|e| match e.split_once('=') {
            Some((k, v)) if k == key => Some(v),
            None if e == key => Some(""),
            _ => None,
        })
    }

    /// Sets `key=value`, replacing an earlier entry in place.
    pub fn set_env(&mut self, key: &str, value: &str) {
        let entry = format!("{key}={value}");
        for e in &mut self.env {
            if e.split_once('=').map(|(k, _)| k) == Some(key) || e == key {
                *e = entry;
                return;
            }
        }
        self.env.push(entry);
    }
}

/// One image history line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// What created the layer, worded as BuildKit words it.
    pub created_by: String,
    /// `buildkit.dockerfile.v0`.
    pub comment: String,
    /// No layer was produced.
    pub empty_layer: bool,
}

/// Network mode of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// The builder's default (sandboxed network).
    #[default]
    Default,
    /// No network.
    None,
    /// The host's network.
    Host,
}

/// Security mode of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SecurityMode {
    /// Normal sandbox.
    #[default]
    Sandbox,
    /// All capabilities, no seccomp (needs an entitlement).
    Insecure,
}

/// Sharing of a cache mount between concurrent users.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum CacheSharing {
    /// Concurrent users share the directory.
    #[default]
    Shared,
    /// Each concurrent user gets its own directory.
    Private,
    /// Users wait for each other.
    Locked,
}

/// What a mount provides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum MountKind {
    /// A path of another vertex's output (or of the context).
    Bind {
        /// Index into the vertex's inputs.
        input: usize,
        /// Path inside that input.
        source: String,
        /// Read-only (the default).
        readonly: bool,
    },
    /// A persistent cache directory.
    Cache {
        /// Cache id (defaults to the target path).
        id: String,
        /// Sharing mode.
        sharing: CacheSharing,
        /// Seed contents from this input, if any.
        #[serde(skip_serializing_if = "Option::is_none")]
        input: Option<usize>,
        /// Path inside the seed input.
        source: String,
        /// Read-only.
        readonly: bool,
        /// Mode of a new directory.
        mode: u32,
        /// Owner of a new directory.
        uid: u32,
        /// Group of a new directory.
        gid: u32,
    },
    /// A tmpfs.
    Tmpfs {
        /// Size limit in bytes (0: none).
        size: u64,
    },
    /// A secret file (or environment variable when `env` is set).
    Secret {
        /// Secret id.
        id: String,
        /// Fail when the secret is not provided.
        required: bool,
        /// File mode.
        mode: u32,
        /// Owner.
        uid: u32,
        /// Group.
        gid: u32,
        /// Expose as this environment variable instead of (or besides) a file.
        #[serde(skip_serializing_if = "Option::is_none")]
        env: Option<String>,
    },
    /// An SSH agent socket.
    Ssh {
        /// Agent id.
        id: String,
        /// Fail when no agent is provided.
        required: bool,
        /// Socket mode.
        mode: u32,
        /// Owner.
        uid: u32,
        /// Group.
        gid: u32,
    },
}

/// A mount of a process besides its root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    /// Where it appears in the process's filesystem.
    pub target: String,
    /// What it is.
    #[serde(flatten)]
    pub kind: MountKind,
}

/// Running a process on a root filesystem; its output is the changed root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecOp {
    /// Index into the vertex's inputs of the root filesystem.
    pub root: usize,
    /// Extra mounts.
    pub mounts: Vec<Mount>,
    /// Program and arguments.
    pub argv: Vec<String>,
    /// `KEY=value` environment.
    pub env: Vec<String>,
    /// Working directory.
    pub cwd: String,
    /// User (`name`, `uid`, `uid:gid`, …; empty: root).
    pub user: String,
    /// Network mode.
    pub network: NetworkMode,
    /// Security mode.
    pub security: SecurityMode,
    /// Proxy variables given for this build only (never part of the cache key).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub proxy_env: Vec<String>,
}

/// One step of a [`FileOp`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "lowercase")]
pub enum FileAction {
    /// Copy paths of an input into the root.
    Copy {
        /// Index into the vertex's inputs of the source.
        input: usize,
        /// Source path or wildcard pattern inside the input.
        source: String,
        /// Destination path (a trailing `/` means "into this directory").
        dest: String,
        /// Owner for copied files (`user[:group]`), unresolved.
        #[serde(skip_serializing_if = "Option::is_none")]
        chown: Option<String>,
        /// Mode for copied files (octal or symbolic), unresolved.
        #[serde(skip_serializing_if = "Option::is_none")]
        chmod: Option<String>,
        /// Patterns to leave out.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        exclude: Vec<String>,
        /// Only paths matching these patterns (relative to `source`).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        include: Vec<String>,
        /// Follow a symlink given as the source.
        follow_symlinks: bool,
        /// Copy a directory's contents rather than the directory itself.
        dir_contents_only: bool,
        /// Extract a local tar archive instead of copying it.
        attempt_unpack: bool,
        /// Create missing parent directories of `dest`.
        create_dest_path: bool,
        /// `source` may contain wildcards.
        allow_wildcard: bool,
        /// A wildcard that matches nothing is not an error.
        allow_empty_wildcard: bool,
    },
    /// Create a directory.
    Mkdir {
        /// Path.
        path: String,
        /// Mode.
        mode: u32,
        /// Create parents.
        make_parents: bool,
        /// Owner (`user[:group]`), unresolved.
        #[serde(skip_serializing_if = "Option::is_none")]
        chown: Option<String>,
    },
    /// Create a file with the given content.
    Mkfile {
        /// Path.
        path: String,
        /// Mode.
        mode: u32,
        /// Content.
        data: String,
    },
    /// Remove a path.
    Rm {
        /// Path.
        path: String,
        /// Missing paths are not an error.
        allow_not_found: bool,
    },
}

/// File operations on a root filesystem (input 0, or an empty one when the
/// vertex has no inputs besides the sources).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileOp {
    /// Index into the vertex's inputs of the root, `None` to start from scratch.
    pub root: Option<usize>,
    /// Steps in order.
    pub actions: Vec<FileAction>,
    /// Index into the vertex's inputs of a filesystem whose `/etc/passwd` and
    /// `/etc/group` resolve the `chown` names of the actions, when that is not
    /// the root (`COPY --link --chown=name`: the stage below the link). Only the
    /// resolved ids of that input enter the cache key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_from: Option<usize>,
}

/// An operation of the graph.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Op {
    /// An empty filesystem.
    Scratch,
    /// An image's filesystem.
    Image {
        /// Normalised reference (`docker.io/library/alpine:3.20`), possibly with a digest.
        reference: String,
        /// Platform to pull.
        platform: Platform,
    },
    /// Files of a local build context.
    Context {
        /// Context name (`context` for the main one).
        name: String,
        /// Only these paths are needed (empty: the whole context). Relative to
        /// the context root; they may hold wildcards (`src/*.rs`) to expand.
        paths: Vec<String>,
    },
    /// A git repository checkout.
    Git {
        /// Remote URL.
        url: String,
        /// Branch, tag or commit (empty: default branch).
        reference: String,
        /// Keep the `.git` directory.
        keep_git_dir: bool,
    },
    /// A file downloaded over HTTP(S).
    Http {
        /// URL.
        url: String,
        /// Expected digest, if given.
        #[serde(skip_serializing_if = "Option::is_none")]
        checksum: Option<String>,
        /// File name to store it under.
        filename: String,
    },
    /// A process run.
    Exec(ExecOp),
    /// File operations.
    File(FileOp),
    /// The layers of input 1 stacked on those of input 0, as they are: the
    /// upper input was made without looking at the lower one (`COPY --link`).
    Merge,
}

/// An op with its inputs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vertex {
    /// The operation.
    pub op: Op,
    /// Vertices whose outputs this op reads.
    pub inputs: Vec<VertexId>,
    /// Human-readable name (`[build 2/5] RUN make`).
    pub name: String,
    /// Where in the source this vertex comes from (not part of any digest).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub span: Option<Span>,
}

/// A stage of the build and what its image looks like.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stage {
    /// Position among all stages of the source.
    pub index: usize,
    /// Name, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// What the stage starts from (an image reference, `scratch`, or a stage).
    pub base: String,
    /// Platform the stage builds for.
    pub platform: Platform,
    /// The vertex holding the stage's final filesystem.
    pub root: VertexId,
    /// The image config after the stage (base config included).
    pub config: ImageConfig,
    /// History lines this stage adds after its base image's history.
    pub history: Vec<HistoryEntry>,
    /// Whether the base image's history and layers come first (false for scratch).
    pub has_base_image: bool,
    /// The [`Op::Image`] vertex whose layers and history come first (also for
    /// a stage built on another stage); `None` for scratch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_image: Option<VertexId>,
    /// Where the stage begins.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub span: Option<Span>,
}

/// A warning found while lowering (BuildKit's check names in `rule`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Warning {
    /// Rule name, e.g. `UndefinedVar`.
    pub rule: String,
    /// Message.
    pub message: String,
    /// Where.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub span: Option<Span>,
}

impl Warning {
    /// `FILE:LINE:COL: warning: message [Rule]` (without a location: `FILE: warning: …`).
    pub fn render(&self, file: &str) -> String {
        match self.span {
            Some(s) => format!(
                "{file}:{}:{}: warning: {} [{}]",
                s.start.line, s.start.column, self.message, self.rule
            ),
            None => format!("{file}: warning: {} [{}]", self.message, self.rule),
        }
    }
}

/// A stage that was not needed for the target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrunedStage {
    /// Position among all stages.
    pub index: usize,
    /// Name, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// The frontend's output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildGraph {
    /// Ops in dependency order.
    pub vertices: Vec<Vertex>,
    /// Stages that are built, in dependency order; the target is last.
    pub stages: Vec<Stage>,
    /// Index into `stages` of the target stage.
    pub target: usize,
    /// Stages left out because the target does not need them.
    pub pruned: Vec<PrunedStage>,
    /// Warnings (as data; the caller decides how to show them).
    pub warnings: Vec<Warning>,
}

impl BuildGraph {
    /// The target stage.
    pub fn target_stage(&self) -> &Stage {
        &self.stages[self.target]
    }

    /// JSON for tools (`hoist build --dry-run --format json`).
    pub fn to_json(&self) -> String {
        // Serialising plain data structures with string keys cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}
