//! Named build contexts (`--build-context NAME=VALUE`, BuildKit's
//! `context:NAME` frontend options): what `FROM NAME`, `COPY --from=NAME`
//! and `RUN --mount=from=NAME` read instead of the stage or image of that
//! name.
//!
//! BuildKit's rules (`dockerfile2llb` and `dockerui.NamedContext`): a stage
//! whose name is a key is replaced whole by the context (its instructions
//! never run); otherwise a `FROM` image, or a `--from` that names no stage,
//! is looked up by its familiar name without `:latest`
//! (`docker.io/library/alpine:3.18` is the key `alpine:3.18`, `alpine` and
//! `alpine:latest` the key `alpine`). `scratch` is never replaced. A context
//! that is not an image has no config: a stage on it starts with the empty
//! image's (`WorkingDir` `/`, the default `PATH`).

use super::{BaseKind, FromRef, Lowerer, Result};
use crate::error::ErrorKind;
use crate::graph::*;
use crate::parser::Span;

/// A named context as the frontend uses it; the builder turns each
/// `--build-context` value into one (and gives it its files).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamedContext {
    /// A local directory: the graph reads it as the [`Op::Context`] called
    /// `context` (the builder registers the directory under that name).
    Local {
        /// The context's name in the graph.
        context: String,
    },
    /// An image (`docker-image://`, or an OCI layout the builder put in the
    /// store): normalised reference, possibly pinned.
    Image(String),
    /// `docker-image://scratch`: an empty filesystem.
    Scratch,
    /// A git repository checkout (`#REF:DIR`).
    Git {
        /// Remote URL.
        url: String,
        /// Branch, tag or commit (empty: the default branch).
        reference: String,
        /// Subdirectory that becomes the context's root (empty: all).
        subdir: String,
    },
    /// A file downloaded over HTTP(S); as BuildKit, it is not extracted and
    /// is the file `/context` of the context.
    Http {
        /// URL.
        url: String,
    },
}

/// The key a name is looked up under, as BuildKit normalises both the
/// `--build-context` names and the names in the Dockerfile: the familiar
/// reference without `:latest`. `None` for what is no valid reference (such
/// a name can never match).
pub fn named_context_key(name: &str) -> Option<String> {
    let r = hoist_untrusted::Reference::parse_bare(name.trim()).ok()?;
    let familiar = r.familiar();
    Some(match familiar.strip_suffix(":latest") {
        Some(short) if r.digest().is_none() => short.to_string(),
        _ => familiar,
    })
}

impl Lowerer<'_> {
    /// The key and context replacing `name`, if `--build-context` gave one.
    pub(super) fn named(&self, name: &str) -> Option<(String, NamedContext)> {
        if self.opts.named_contexts.is_empty() || name.eq_ignore_ascii_case("scratch") {
            return None;
        }
        let key = named_context_key(name)?;
        let c = self.opts.named_contexts.get(&key)?.clone();
        Some((key, c))
    }

    /// What a stage starts from when `name` is a named context.
    pub(super) fn named_base(&self, key: String, c: NamedContext) -> BaseKind {
        match c {
            NamedContext::Image(r) => BaseKind::Image(r),
            NamedContext::Scratch => BaseKind::Scratch,
            _ => BaseKind::Named(key),
        }
    }

    /// What a `--from` names when it is a named context.
    pub(super) fn named_from(&self, key: String, c: NamedContext) -> FromRef {
        match c {
            NamedContext::Image(r) => FromRef::Image(r),
            _ => FromRef::Named(key),
        }
    }

    fn named_context(&self, key: &str, span: Span) -> Result<NamedContext> {
        self.opts.named_contexts.get(key).cloned().ok_or_else(|| {
            self.err(
                ErrorKind::Stage,
                span,
                format!("internal error: no named context {key}"),
            )
        })
    }

    /// The vertex a `--from` of a named context reads: for a directory its
    /// context itself (read with its `.dockerignore`, files owned by root as
    /// COPY from the main context gives them), else its filesystem.
    pub(super) fn named_source(&mut self, key: &str, span: Span) -> Result<VertexId> {
        match self.named_context(key, span)? {
            NamedContext::Local { context } => Ok(self.named_local(key, &context)),
            _ => self.named_root(key, span),
        }
    }

    fn named_local(&mut self, key: &str, context: &str) -> VertexId {
        let op = Op::Context {
            name: context.to_string(),
            paths: vec![],
        };
        if let Some(v) = self.vertices.iter().position(|v| v.op == op) {
            return v;
        }
        self.add_vertex(
            op,
            vec![],
            format!("[context {key}] load from client"),
            None,
        )
    }

    /// The history line of the layer a stage on a named context starts
    /// with: no Dockerfile line made it, so it is worded as BuildKit's
    /// exporter words a layer without one (the snapshot's description).
    pub(super) fn named_history(&self, key: &str) -> HistoryEntry {
        let created_by = match self.opts.named_contexts.get(key) {
            Some(NamedContext::Local { context }) => format!("local source for {context}"),
            Some(NamedContext::Git { url, reference, .. }) if reference.is_empty() => {
                format!("git snapshot for {url}")
            }
            Some(NamedContext::Git { url, reference, .. }) => {
                format!("git snapshot for {url}#{reference}")
            }
            Some(NamedContext::Http { url }) => format!("http url {url}"),
            _ => format!("[context {key}]"),
        };
        HistoryEntry {
            created_by,
            comment: "buildkit.exporter.image.v0".into(),
            empty_layer: false,
        }
    }

    /// The filesystem of a named context, as the root of a stage.
    pub(super) fn named_root(&mut self, key: &str, span: Span) -> Result<VertexId> {
        let name = format!("[context {key}]");
        if let Some(v) = self.vertices.iter().position(|v| v.name == name) {
            return Ok(v);
        }
        let whole = |input: usize, source: &str| FileAction::Copy {
            input,
            source: source.to_string(),
            dest: "/".into(),
            chown: None,
            chmod: None,
            exclude: vec![],
            include: vec![],
            follow_symlinks: false,
            dir_contents_only: true,
            attempt_unpack: false,
            create_dest_path: true,
            allow_wildcard: false,
            allow_empty_wildcard: false,
        };
        let copy_of = |l: &mut Self, from: VertexId, source: &str| {
            l.add_vertex(
                Op::File(FileOp {
                    root: None,
                    actions: vec![whole(0, source)],
                    owner_from: None,
                }),
                vec![from],
                name.clone(),
                Some(span),
            )
        };
        Ok(match self.named_context(key, span)? {
            NamedContext::Local { context } => {
                let c = self.named_local(key, &context);
                copy_of(self, c, "/")
            }
            NamedContext::Image(r) => {
                // Images are BaseKind/FromRef::Image; kept for completeness.
                let p = self.stage_platform.clone();
                self.image_vertex(&r, &p, Some(span))
            }
            NamedContext::Scratch => self.scratch(),
            NamedContext::Git {
                url,
                reference,
                subdir,
            } => {
                let git = self.add_vertex(
                    Op::Git {
                        url,
                        reference,
                        keep_git_dir: false,
                    },
                    vec![],
                    format!("{name} git"),
                    Some(span),
                );
                let subdir = super::clean_path(&format!("/{subdir}"));
                if subdir == "/" {
                    self.vertices[git].name = name;
                    git
                } else {
                    copy_of(self, git, &subdir)
                }
            }
            NamedContext::Http { url } => self.add_vertex(
                Op::Http {
                    url,
                    checksum: None,
                    filename: "context".into(),
                },
                vec![],
                name,
                Some(span),
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{lower, parse, BuildOptions, NoResolver};

    #[test]
    fn keys_are_familiar_names_without_latest() {
        let k = |n: &str| named_context_key(n).unwrap();
        assert_eq!(k("alpine"), "alpine");
        assert_eq!(k("alpine:latest"), "alpine");
        assert_eq!(k("docker.io/library/alpine:3.18"), "alpine:3.18");
        assert_eq!(k("localhost:5000/app"), "localhost:5000/app");
        assert_eq!(k("base"), "base");
        assert_eq!(named_context_key("Base"), None);
        assert_eq!(named_context_key("a b"), None);
    }

    fn graph(df: &str, contexts: &[(&str, NamedContext)]) -> BuildGraph {
        let opts = BuildOptions {
            named_contexts: contexts
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
            ..Default::default()
        };
        lower(&parse(df).unwrap(), &opts, &NoResolver).unwrap()
    }

    fn local(name: &str) -> NamedContext {
        NamedContext::Local {
            context: name.into(),
        }
    }

    #[test]
    fn a_directory_replaces_an_image_as_the_stage_filesystem() {
        let g = graph(
            "FROM docker.io/library/alpine:latest\nRUN true\n",
            &[("alpine", local("alpine"))],
        );
        let s = g.target_stage();
        assert_eq!(s.base, "context:alpine");
        assert_eq!(s.history[0].created_by, "local source for alpine");
        assert!(!s.has_base_image);
        assert_eq!(s.config.working_dir, "/");
        let run = &g.vertices[s.root];
        let root = &g.vertices[run.inputs[0]];
        assert!(
            matches!(&root.op, Op::File(f) if f.root.is_none()),
            "{root:?}"
        );
        assert!(
            matches!(&g.vertices[root.inputs[0]].op, Op::Context { name, .. } if name == "alpine")
        );
        assert!(!g.vertices.iter().any(|v| matches!(v.op, Op::Image { .. })));
    }

    #[test]
    fn a_stage_of_the_name_is_replaced_whole() {
        let g = graph(
            "FROM busybox AS base\nRUN exit 1\nFROM base\nRUN true\n",
            &[("base", local("base"))],
        );
        assert!(!g
            .vertices
            .iter()
            .any(|v| matches!(&v.op, Op::Exec(e) if e.argv.join(" ").contains("exit 1"))));
        assert!(!g.vertices.iter().any(|v| matches!(v.op, Op::Image { .. })));
    }

    #[test]
    fn copy_from_a_directory_reads_its_context_and_images_are_substituted() {
        let g = graph(
            "FROM scratch\nCOPY --from=files a /a\nCOPY --from=alpine:3.18 /b /b\n",
            &[
                ("files", local("files")),
                (
                    "alpine:3.18",
                    NamedContext::Image("localhost:5000/mirror/alpine:1".into()),
                ),
            ],
        );
        assert!(g
            .vertices
            .iter()
            .any(|v| matches!(&v.op, Op::Context { name, .. } if name == "files")));
        assert!(g.vertices.iter().any(|v| matches!(&v.op,
            Op::Image { reference, .. } if reference == "localhost:5000/mirror/alpine:1")));
        let g = graph(
            "FROM alpine:3.18\n",
            &[(
                "alpine:3.18",
                NamedContext::Image("localhost:5000/mirror/alpine:1".into()),
            )],
        );
        assert_eq!(g.target_stage().base, "localhost:5000/mirror/alpine:1");
    }

    #[test]
    fn scratch_is_never_replaced() {
        let g = graph(
            "FROM scratch\nCOPY --from=x a /a\n",
            &[("scratch", local("s"))],
        );
        assert!(!g.target_stage().has_base_image);
        assert!(!g
            .vertices
            .iter()
            .any(|v| matches!(&v.op, Op::Context { name, .. } if name == "s")));
    }
}
