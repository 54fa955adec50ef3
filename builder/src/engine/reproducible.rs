//! Reproducible builds: finding inputs that are not pinned (`--reproducible`)
//! and keeping `SOURCE_DATE_EPOCH` in the cache key of the steps whose layers
//! it changes.
//!
//! What a rebuild can only reproduce when its inputs are fixed: a base image
//! named by tag moves, an ADD of a URL without `--checksum` may download other
//! bytes, an ADD of a git branch or tag may check out another commit. The checks
//! work on the lowered graph (after ARG expansion and stage pruning), so only
//! inputs the target actually uses are reported.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use hoist_frontend::graph::{BuildGraph, Op as GraphOp};
use hoist_frontend::instructions::{Dockerfile, Instruction};

use super::build::{BuildError, BuildRequest};
use crate::digest::{CanonicalBytes, CanonicalEncoder, Digest};
use crate::op::{Op, OpContext, OpError};
use crate::progress::{Event, EventSink};

/// How `--reproducible` treats unpinned inputs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Reproducible {
    /// Not checked.
    #[default]
    Off,
    /// A warning per unpinned input (`--reproducible`, or implied by
    /// `SOURCE_DATE_EPOCH`).
    Warn,
    /// Unpinned inputs fail the build before anything runs
    /// (`--reproducible=strict`).
    Strict,
}

/// What `hoist build` asks for reproducibility and provenance
/// (`--source-date-epoch`, `--reproducible`, `--provenance`).
#[derive(Clone, Debug, Default)]
pub struct ReproOptions {
    /// SOURCE_DATE_EPOCH: the config's and new history entries' `created`, and
    /// the upper bound of every mtime in the layers the build writes.
    pub source_date_epoch: Option<i64>,
    /// Checking unpinned inputs; `Off` becomes `Warn` with an epoch.
    pub reproducible: Reproducible,
    /// Attach a SLSA provenance attestation (the image ref then points at an
    /// index holding the image and the attestation).
    pub provenance: bool,
    /// Name of the provenance subject (the first tag), `None` for `_`.
    pub subject_name: Option<String>,
}

impl ReproOptions {
    /// The check mode in effect: an epoch implies warnings.
    pub fn check_mode(&self) -> Reproducible {
        match (self.reproducible, self.source_date_epoch) {
            (Reproducible::Off, Some(_)) => Reproducible::Warn,
            (mode, _) => mode,
        }
    }
}

/// An input a rebuild may not see the same way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unpinned {
    /// Line of the instruction in the Dockerfile (1-based), 0 when unknown.
    pub line: usize,
    /// What is wrong, without the location (`FROM busybox:latest is not pinned…`).
    pub message: String,
}

impl Unpinned {
    /// `Dockerfile:3: FROM busybox is not pinned by digest …`.
    pub fn render(&self, file: &str) -> String {
        if self.line == 0 {
            format!("{file}: {}", self.message)
        } else {
            format!("{file}:{}: {}", self.line, self.message)
        }
    }
}

/// Whether a git ref names a commit (a full SHA-1 or SHA-256 object id):
/// branches and tags can move, so only those pin the checkout.
fn is_commit_id(reference: &str) -> bool {
    matches!(reference.len(), 40 | 64) && reference.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The inputs of `graph` that are not pinned, in Dockerfile order.
/// `dockerfile` (the typed source the graph was lowered from) adds the
/// images named by `COPY --from=` in the stages the graph builds.
pub fn unpinned_inputs(graph: &BuildGraph, dockerfile: Option<&Dockerfile>) -> Vec<Unpinned> {
    unpinned_inputs_with(graph, dockerfile, &BTreeMap::new())
}

/// [`unpinned_inputs`] of a build with named contexts (`--build-context`):
/// a `--from` naming one is pinned as its image is (a directory, git or
/// http context is checked as such, not as an image).
pub fn unpinned_inputs_with(
    graph: &BuildGraph,
    dockerfile: Option<&Dockerfile>,
    named: &BTreeMap<String, hoist_frontend::NamedContext>,
) -> Vec<Unpinned> {
    let mut out = Vec::new();
    if let Some(dockerfile) = dockerfile {
        let names: Vec<&str> = dockerfile
            .stages
            .iter()
            .filter_map(|s| s.name.as_deref())
            .collect();
        for stage in &graph.stages {
            let Some(def) = dockerfile.stages.get(stage.index) else {
                continue;
            };
            for command in &def.commands {
                // `--from` and `from=` are never expanded: the text is the reference.
                let froms: Vec<(&str, &str)> = match &command.instruction {
                    Instruction::Copy(copy) => copy
                        .from
                        .as_deref()
                        .map(|f| ("COPY --from=", f))
                        .into_iter()
                        .collect(),
                    Instruction::Run(run) => run
                        .mounts
                        .iter()
                        .flat_map(|m| m.split(','))
                        .filter_map(|kv| kv.trim().strip_prefix("from="))
                        .map(|f| ("RUN --mount from=", f))
                        .collect(),
                    _ => continue,
                };
                for (what, from) in froms {
                    let is_stage = from.parse::<usize>().is_ok()
                        || names.iter().any(|n| n.eq_ignore_ascii_case(from));
                    let replaced = hoist_frontend::named_context_key(from)
                        .and_then(|key| named.get(&key))
                        .filter(|_| !is_stage);
                    if let Some(hoist_frontend::NamedContext::Image(r)) = replaced {
                        if !r.contains("@sha256:") {
                            out.push(Unpinned {
                                line: command.span.start.line,
                                message: format!(
                                    "{what}{from} (docker-image://{r}) is not pinned by digest"
                                ),
                            });
                        }
                        continue;
                    }
                    if !is_stage && replaced.is_none() && !from.contains("@sha256:") {
                        out.push(Unpinned {
                            line: command.span.start.line,
                            message: format!(
                                "{what}{from} is not pinned by digest (use `{from}@sha256:<digest>`)"
                            ),
                        });
                    }
                }
            }
        }
    }
    for stage in &graph.stages {
        let base = stage.base.trim();
        let is_stage = graph.stages.iter().any(|s| {
            s.name
                .as_deref()
                .is_some_and(|n| n.eq_ignore_ascii_case(base))
        });
        // `context:NAME`: a named directory, git or http context, whose
        // vertices are checked below.
        if base.is_empty()
            || base.eq_ignore_ascii_case("scratch")
            || is_stage
            || base.starts_with("context:")
        {
            continue;
        }
        if !base.contains("@sha256:") {
            out.push(Unpinned {
                line: stage.span.map_or(0, |s| s.start.line),
                message: format!(
                    "FROM {base} is not pinned by digest (use `{base}@sha256:<digest>`)"
                ),
            });
        }
    }
    for vertex in &graph.vertices {
        let line = vertex.span.map_or(0, |s| s.start.line);
        match &vertex.op {
            GraphOp::Http {
                url,
                checksum: None,
                ..
            } => out.push(Unpinned {
                line,
                message: format!(
                    "ADD {url} has no --checksum (use `ADD --checksum=sha256:<digest>`)"
                ),
            }),
            GraphOp::Git { url, reference, .. } if !is_commit_id(reference) => {
                let what = if reference.is_empty() {
                    "the default branch".to_owned()
                } else {
                    format!("ref `{reference}`")
                };
                out.push(Unpinned {
                    line,
                    message: format!(
                        "ADD {url} checks out {what}, which can move (name a full commit id)"
                    ),
                });
            }
            _ => {}
        }
    }
    out.sort_by_key(|u| u.line);
    out.dedup();
    out
}

/// `--reproducible`: a warning per unpinned input, or (strict) an error
/// naming them all before anything runs.
pub(crate) fn check_pinned(
    request: &BuildRequest,
    frontend: &BuildGraph,
    events: &EventSink,
) -> Result<(), BuildError> {
    let mode = request.repro.check_mode();
    if mode == Reproducible::Off {
        return Ok(());
    }
    let file = if request.dockerfile_name.is_empty() {
        "Dockerfile"
    } else {
        request.dockerfile_name.as_str()
    };
    // The graph has lost how `COPY --from=image` was written; the typed
    // Dockerfile still has it (parsing again is cheap; it parsed once already).
    let typed = hoist_frontend::parse(&request.dockerfile)
        .ok()
        .and_then(|ast| hoist_frontend::instructions::convert(&ast).ok());
    let named = super::named::frontend_contexts(&request.named_contexts);
    let found: Vec<String> = unpinned_inputs_with(frontend, typed.as_ref(), &named)
        .iter()
        .map(|u| u.render(file))
        .collect();
    if found.is_empty() {
        return Ok(());
    }
    if mode == Reproducible::Strict {
        return Err(BuildError::Dockerfile(format!(
            "{}\n--reproducible=strict refuses inputs that are not pinned",
            found.join("\n")
        )));
    }
    for message in found {
        events.emit(Event::Warning {
            vertex: None,
            message,
        });
    }
    Ok(())
}

/// Wraps an op whose layer bytes depend on `SOURCE_DATE_EPOCH` (file ops and
/// RUN: their mtimes are clamped to it) so that the epoch enters its cache key:
/// a layer recorded without the epoch (or with another) is never reused for a
/// build with it. Everything else is the inner op's.
pub struct EpochOp<O> {
    inner: Arc<dyn Op<O>>,
    epoch: i64,
}

impl<O> EpochOp<O> {
    /// `inner` built under `epoch` (seconds since 1970).
    pub fn new(inner: Arc<dyn Op<O>>, epoch: i64) -> Self {
        EpochOp { inner, epoch }
    }
}

#[async_trait]
impl<O> Op<O> for EpochOp<O>
where
    O: Send + Sync + 'static,
{
    fn definition(&self) -> CanonicalBytes {
        CanonicalEncoder::new("source-date-epoch", 1)
            .nested("op", &self.inner.definition())
            .str("epoch", &self.epoch.to_string())
            .finish()
    }

    fn selector(&self, input: usize) -> Option<CanonicalBytes> {
        self.inner.selector(input)
    }

    fn content_addressed(&self, input: usize) -> bool {
        self.inner.content_addressed(input)
    }

    async fn content_digest(
        &self,
        context: &OpContext,
        input: usize,
        output: &O,
    ) -> Result<Digest, OpError> {
        self.inner.content_digest(context, input, output).await
    }

    async fn source_digest(&self, context: &OpContext) -> Result<Option<Digest>, OpError> {
        self.inner.source_digest(context).await
    }

    async fn exec(&self, context: &OpContext, inputs: Vec<O>) -> Result<O, OpError> {
        self.inner.exec(context, inputs).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hoist_frontend::{lower, parse, BuildOptions, NoResolver};

    fn check(dockerfile: &str) -> Vec<String> {
        let ast = parse(dockerfile).unwrap();
        let graph = lower(&ast, &BuildOptions::default(), &NoResolver).unwrap();
        let typed = hoist_frontend::instructions::convert(&ast).unwrap();
        unpinned_inputs(&graph, Some(&typed))
            .iter()
            .map(|u| u.render("Dockerfile"))
            .collect()
    }

    #[test]
    fn named_contexts_are_pinned_as_what_they_are() {
        use hoist_frontend::NamedContext;
        let named: BTreeMap<String, NamedContext> = [
            (
                "files".to_owned(),
                NamedContext::Local {
                    context: "files".into(),
                },
            ),
            (
                "alpine".to_owned(),
                NamedContext::Image("localhost:5000/a:1".into()),
            ),
        ]
        .into();
        let df = "FROM alpine\nCOPY --from=files a /a\nCOPY --from=alpine b /b\n";
        let ast = parse(df).unwrap();
        let options = BuildOptions {
            named_contexts: named.clone(),
            ..Default::default()
        };
        let graph = lower(&ast, &options, &NoResolver).unwrap();
        let typed = hoist_frontend::instructions::convert(&ast).unwrap();
        let got: Vec<String> = unpinned_inputs_with(&graph, Some(&typed), &named)
            .iter()
            .map(|u| u.render("Dockerfile"))
            .collect();
        assert_eq!(
            got,
            [
                "Dockerfile:1: FROM localhost:5000/a:1 is not pinned by digest (use `localhost:5000/a:1@sha256:<digest>`)",
                "Dockerfile:3: COPY --from=alpine (docker-image://localhost:5000/a:1) is not pinned by digest",
            ]
        );
    }

    #[test]
    fn reports_unpinned_base_images_with_their_line() {
        let digest = "sha256:".to_owned() + &"a".repeat(64);
        let got = check(&format!(
            "FROM busybox AS build\nRUN true\nFROM alpine@{digest}\nCOPY --from=build /x /x\nFROM build\n"
        ));
        assert_eq!(
            got,
            vec![
                "Dockerfile:1: FROM busybox is not pinned by digest (use `busybox@sha256:<digest>`)"
            ]
        );
    }

    #[test]
    fn reports_copies_from_unpinned_images_of_built_stages_only() {
        let digest = "sha256:".to_owned() + &"a".repeat(64);
        let got = check(&format!(
            "FROM scratch AS unused\nCOPY --from=nginx /a /a\n\
             FROM scratch AS one\nCOPY x /x\n\
             FROM scratch\nCOPY --from=one /x /x\nCOPY --from=1 /a /a\n\
             COPY --from=alpine:3 /b /b\nCOPY --from=alpine@{digest} /c /c\n\
             RUN --mount=type=bind,from=debian,target=/d --mount=from=one,target=/o true\n"
        ));
        assert_eq!(
            got,
            vec![
                "Dockerfile:8: COPY --from=alpine:3 is not pinned by digest (use `alpine:3@sha256:<digest>`)",
                "Dockerfile:10: RUN --mount from=debian is not pinned by digest (use `debian@sha256:<digest>`)",
            ]
        );
    }

    #[test]
    fn scratch_and_stage_bases_are_pinned() {
        assert!(check("FROM scratch AS a\nCOPY x /x\nFROM a\n").is_empty());
    }

    #[test]
    fn the_epoch_is_part_of_the_definition() {
        use crate::engine::artifact::Artifact;
        let inner: Arc<dyn Op<Artifact>> = Arc::new(crate::engine::ops::ScratchOp);
        let plain = inner.definition().digest();
        let one = EpochOp::new(inner.clone(), 1).definition().digest();
        let two = EpochOp::new(inner.clone(), 2).definition().digest();
        assert_ne!(plain, one);
        assert_ne!(one, two);
        assert_eq!(one, EpochOp::new(inner, 1).definition().digest());
    }

    #[test]
    fn commit_ids_pin_git_refs() {
        assert!(is_commit_id(&"a1".repeat(20)));
        assert!(is_commit_id(&"b2".repeat(32)));
        assert!(!is_commit_id("main"));
        assert!(!is_commit_id("v1.2.3"));
        assert!(!is_commit_id(""));
    }

    #[test]
    fn reports_adds_of_urls_without_checksum() {
        let got = check(
            "FROM scratch\nADD https://example.com/a.tar /a\nADD --checksum=sha256:0000000000000000000000000000000000000000000000000000000000000000 https://example.com/b /b\n",
        );
        assert_eq!(
            got,
            vec!["Dockerfile:2: ADD https://example.com/a.tar has no --checksum (use `ADD --checksum=sha256:<digest>`)"]
        );
    }

    #[test]
    fn reports_adds_of_git_branches() {
        let got = check(
            "FROM scratch\nADD https://example.com/r.git#main /src\nADD https://example.com/r.git#0123456789012345678901234567890123456789 /pinned\n",
        );
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(got[0].starts_with("Dockerfile:2: ADD "), "{got:?}");
        assert!(got[0].contains("ref `main`"), "{got:?}");
    }
}
