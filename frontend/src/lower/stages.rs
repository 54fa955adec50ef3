//! Stages and FROM: global ARGs, base image resolution, `--from` targets,
//! ONBUILD triggers, the order stages are built in, pruning, and the state a
//! stage starts from.

use std::collections::{BTreeSet, HashMap};

use super::{
    env_pairs, set_pair, BaseKind, FromRef, Lowerer, Plan, Result, StageState, DEFAULT_PATH,
};
use crate::error::{suggest, Error, ErrorKind};
use crate::graph::*;
use crate::instructions::{self, Command, Instruction};
use crate::parser::{parse, Span};

/// Normalises an image reference as Docker does (`alpine` →
/// `docker.io/library/alpine:latest`), with hoist-untrusted's one parser:
/// the error names the part of the value that is wrong (escaped).
pub fn normalize_reference(reference: &str) -> std::result::Result<String, String> {
    hoist_untrusted::Reference::parse(reference.trim())
        .map(|r| r.to_string())
        .map_err(|e| e.to_string())
}

impl Lowerer<'_> {
    fn predefined_args(&self, target_stage: &str) -> Vec<(String, String)> {
        let build = self
            .opts
            .build_platform
            .clone()
            .unwrap_or_else(Platform::host);
        let target = self.target_platform();
        let mut v: Vec<(String, String)> = vec![
            ("BUILDPLATFORM".into(), build.to_string()),
            ("BUILDOS".into(), build.os.clone()),
            ("BUILDARCH".into(), build.architecture.clone()),
            (
                "BUILDVARIANT".into(),
                build.variant.clone().unwrap_or_default(),
            ),
            ("TARGETPLATFORM".into(), target.to_string()),
            ("TARGETOS".into(), target.os.clone()),
            ("TARGETARCH".into(), target.architecture.clone()),
            (
                "TARGETVARIANT".into(),
                target.variant.clone().unwrap_or_default(),
            ),
            ("TARGETSTAGE".into(), target_stage.to_string()),
        ];
        // A build arg may override a predefined one.
        for (k, val) in v.iter_mut() {
            if let Some(b) = self.opts.build_args.get(k.as_str()) {
                *val = b.clone();
            }
        }
        v
    }

    fn find_stage(plans: &[Plan], name: &str) -> Option<usize> {
        let lower = name.to_lowercase();
        plans
            .iter()
            .position(|p| p.def.name.as_deref() == Some(lower.as_str()))
    }

    /// Resolves a `--from` / `from=` value.
    pub(super) fn resolve_from(&self, plans: &[Plan], value: &str, span: Span) -> Result<FromRef> {
        if value.contains('$') {
            return Err(self.err(
                ErrorKind::Stage,
                span,
                format!(
                    "--from={value}: variables are not expanded in --from; declare `FROM {value} AS name` and copy from that stage"
                ),
            ));
        }
        let digits = value.strip_prefix(['+', '-']).unwrap_or(value);
        if !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit()) {
            let idx: i64 = value.parse().unwrap_or(-1);
            if idx < 0 || idx as usize >= plans.len() {
                return Err(self.err(
                    ErrorKind::Stage,
                    span,
                    format!(
                        "invalid stage index {value}: the Dockerfile has {} stage(s), numbered from 0",
                        plans.len()
                    ),
                ));
            }
            return Ok(FromRef::Stage(idx as usize));
        }
        if let Some(i) = Self::find_stage(plans, value) {
            return Ok(FromRef::Stage(i));
        }
        if let Some((key, c)) = self.named(value) {
            return Ok(self.named_from(key, c));
        }
        // As in BuildKit, an unknown stage name is an image reference.
        let r = normalize_reference(value).map_err(|m| {
            let names: Vec<&str> = plans.iter().filter_map(|p| p.def.name.as_deref()).collect();
            let mut msg = format!("--from={value}: {m}");
            if let Some(s) = suggest(value, &names) {
                msg.push_str(&format!(" (did you mean stage {s}?)"));
            }
            self.err(ErrorKind::Stage, span, msg)
        })?;
        Ok(FromRef::Image(r))
    }

    /// The root of an already dispatched stage.
    pub(super) fn stage_root(
        &self,
        done: &HashMap<usize, StageState>,
        i: usize,
        span: Span,
    ) -> Result<VertexId> {
        done.get(&i).map(|st| st.root).ok_or_else(|| {
            // Dependencies are dispatched first, so this means a bug here.
            self.err(
                ErrorKind::Stage,
                span,
                format!("internal error: stage {i} used before it was built"),
            )
        })
    }

    fn compute_deps(&self, plans: &[Plan], i: usize) -> Result<Vec<(usize, Span)>> {
        let mut deps = Vec::new();
        if let BaseKind::Stage(b) = plans[i].base_kind {
            deps.push((b, plans[i].def.span));
        }
        for c in &plans[i].commands {
            let froms: Vec<String> = match &c.instruction {
                Instruction::Copy(cp) => cp.from.iter().cloned().collect(),
                Instruction::Run(r) => r
                    .mounts
                    .iter()
                    .filter_map(|m| Self::mount_from(m))
                    .collect(),
                _ => vec![],
            };
            for f in froms {
                let at = self.span_of(c.span, c.range, &format!("from={f}"));
                if let FromRef::Stage(s) = self.resolve_from(plans, &f, at)? {
                    deps.push((s, at));
                }
            }
        }
        Ok(deps)
    }

    fn reachable(plans: &[Plan], target: usize) -> BTreeSet<usize> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![target];
        while let Some(s) = stack.pop() {
            if seen.insert(s) {
                stack.extend(plans[s].deps.iter().map(|(d, _)| *d));
            }
        }
        seen
    }

    pub(super) fn run(&mut self, mut df: instructions::Dockerfile) -> Result<BuildGraph> {
        self.warnings.append(&mut df.warnings);
        // Which stage is the target decides TARGETSTAGE, so find it first.
        let target_name = match &self.opts.target {
            Some(t) => t.to_lowercase(),
            None => df
                .stages
                .last()
                .and_then(|s| s.name.clone())
                .unwrap_or_default(),
        };
        self.global_args = self.predefined_args(&target_name);
        // Global ARGs: --build-arg wins, else the default expanded with what is known so far.
        for cmd in &df.meta_args {
            let Instruction::Arg(pairs) = &cmd.instruction else {
                continue;
            };
            for (k, default) in pairs {
                self.declared_global.insert(k.clone());
                let value = match (self.opts.build_args.get(k), default) {
                    (Some(v), _) => Some(v.clone()),
                    (None, Some(d)) => {
                        let env = self.global_args.clone();
                        Some(self.expand(d, &env, &[], cmd.span)?)
                    }
                    (None, None) => None,
                };
                if let Some(v) = value {
                    set_pair(&mut self.global_args, k, &v);
                }
            }
        }

        // Like BuildKit, check that every FROM still names an image when no
        // --build-arg is given (defaults only).
        let mut defaults_env = self.predefined_args(&target_name);
        for cmd in &df.meta_args {
            let Instruction::Arg(pairs) = &cmd.instruction else {
                continue;
            };
            for (k, default) in pairs {
                if let Some(d) = default {
                    if let Ok(v) = self.lexer.process_word(d, &defaults_env) {
                        set_pair(&mut defaults_env, k, &v);
                    }
                }
            }
        }
        for (i, def) in df.stages.iter().enumerate() {
            if !def.base.contains('$') {
                continue;
            }
            let Ok(v) = self.lexer.process_word(&def.base, &defaults_env) else {
                continue;
            };
            let earlier_stage = df.stages[..i]
                .iter()
                .any(|s| s.name.as_deref() == Some(v.to_lowercase().as_str()));
            let ok = !v.is_empty()
                && (earlier_stage
                    || v.eq_ignore_ascii_case("scratch")
                    || normalize_reference(&v).is_ok());
            if !ok {
                self.warn(
                    "InvalidDefaultArgInFrom",
                    def.span,
                    format!(
                        "Default value for ARG {} results in empty or invalid base image name",
                        def.base
                    ),
                );
            }
        }

        let target_platform = self.target_platform();
        let mut plans: Vec<Plan> = Vec::new();
        for (i, def) in df.stages.iter().enumerate() {
            let genv = self.global_args.clone();
            let e = self
                .lexer
                .process(&def.base, &genv)
                .map_err(|e| self.err(ErrorKind::Expansion, def.span, e.to_string()))?;
            for name in &e.unmatched {
                if !self.declared_global.contains(name) {
                    let keys: Vec<&str> = genv.iter().map(|(k, _)| k.as_str()).collect();
                    let mut msg = format!("FROM argument '{name}' is not declared");
                    if let Some(s) = suggest(name, &keys) {
                        msg.push_str(&format!(" (did you mean {s}?)"));
                    }
                    self.warn("UndefinedArgInFrom", def.span, msg);
                }
            }
            if e.result.is_empty() {
                return Err(self.err(
                    ErrorKind::Stage,
                    def.span,
                    format!("base name ({}) should not be blank", def.base),
                ));
            }
            if let Some(p) = &def.platform {
                if p == "$TARGETPLATFORM" || p == "${TARGETPLATFORM}" {
                    self.warn(
                        "RedundantTargetPlatform",
                        def.span,
                        format!("Setting platform to predefined {p} in FROM is redundant as this is the default behavior"),
                    );
                }
            }
            let platform = match &def.platform {
                Some(p) => {
                    let v = self
                        .lexer
                        .process_word(p, &genv)
                        .map_err(|e| self.err(ErrorKind::Expansion, def.span, e.to_string()))?;
                    if v.is_empty() {
                        return Err(self.err(
                            ErrorKind::Stage,
                            def.span,
                            format!("empty platform value from expression {p}"),
                        ));
                    }
                    Platform::parse(&v).ok_or_else(|| {
                        self.err(
                            ErrorKind::Stage,
                            def.span,
                            format!("failed to parse platform {v}"),
                        )
                    })?
                }
                None => target_platform.clone(),
            };
            let base = e.result;
            // A stage named like a named context is that context (BuildKit
            // never runs its instructions).
            let replaced = def.name.as_deref().and_then(|n| self.named(n));
            let base_kind = if let Some((key, c)) = replaced.clone() {
                self.named_base(key, c)
            } else if base.eq_ignore_ascii_case("scratch") {
                BaseKind::Scratch
            } else if let Some(b) = Self::find_stage(&plans, &base) {
                BaseKind::Stage(b)
            } else if let Some((key, c)) = self.named(&base) {
                self.named_base(key, c)
            } else {
                BaseKind::Image(normalize_reference(&base).map_err(|m| {
                    self.err(ErrorKind::Stage, def.span, format!("FROM {base}: {m}"))
                })?)
            };
            // What a named context replaced is shown as what it is.
            let base = match (&base_kind, &replaced) {
                (BaseKind::Named(key), _) => format!("context:{key}"),
                (BaseKind::Image(r), Some(_)) => r.clone(),
                (BaseKind::Image(r), None) if self.named(&base).is_some() => r.clone(),
                _ => base,
            };
            plans.push(Plan {
                display_name: def.name.clone().unwrap_or_else(|| format!("stage-{i}")),
                def: def.clone(),
                base,
                base_kind,
                platform,
                commands: if replaced.is_some() {
                    vec![]
                } else {
                    def.commands.clone()
                },
                deps: Vec::new(),
                triggers_done: false,
                resolved: None,
            });
        }

        let target = match &self.opts.target {
            Some(t) => Self::find_stage(&plans, t).ok_or_else(|| {
                let names: Vec<&str> = plans.iter().filter_map(|p| p.def.name.as_deref()).collect();
                let mut msg = format!("target stage {t:?} could not be found");
                if let Some(s) = suggest(t, &names) {
                    msg.push_str(&format!(" (did you mean {s}?)"));
                }
                Error::new(ErrorKind::Stage, msg)
            })?,
            None => plans.len() - 1,
        };

        for i in 0..plans.len() {
            plans[i].deps = self.compute_deps(&plans, i)?;
        }

        // Resolve bases of needed stages and expand ONBUILD triggers; triggers
        // may copy from other stages, so repeat until nothing new is needed.
        loop {
            let reach = if self.lint.all_stages {
                (0..plans.len()).collect()
            } else {
                Self::reachable(&plans, target)
            };
            let mut changed = false;
            for &s in &reach {
                if plans[s].triggers_done {
                    continue;
                }
                plans[s].triggers_done = true;
                let span = plans[s].def.span;
                let triggers: Vec<String> = match plans[s].base_kind.clone() {
                    BaseKind::Scratch | BaseKind::Named(_) => vec![],
                    BaseKind::Image(r) => {
                        let platform = plans[s].platform.clone();
                        let resolved = self.resolve(&r, &platform, span)?;
                        let t = resolved
                            .as_ref()
                            .map(|r| r.config.on_build.clone())
                            .unwrap_or_default();
                        plans[s].resolved = resolved;
                        t
                    }
                    BaseKind::Stage(b) => plans[b]
                        .def
                        .commands
                        .iter()
                        .filter_map(|c| match &c.instruction {
                            Instruction::Onbuild(e) => Some(e.clone()),
                            _ => None,
                        })
                        .collect(),
                };
                if triggers.is_empty() {
                    continue;
                }
                let mut cmds = Vec::new();
                for t in &triggers {
                    cmds.extend(self.trigger_commands(t, span)?);
                }
                cmds.append(&mut plans[s].commands);
                plans[s].commands = cmds;
                plans[s].deps = self.compute_deps(&plans, s)?;
                changed = true;
            }
            if !changed {
                break;
            }
        }

        let reach = Self::reachable(&plans, target);
        // Cycles (a stage copying from itself or from a stage that needs it).
        let mut order = self.topo_order(&plans, target)?;
        if self.lint.all_stages {
            // Every stage, each after what it needs; the target's own order first.
            for s in 0..plans.len() {
                for d in self.topo_order(&plans, s)? {
                    if !order.contains(&d) {
                        order.push(d);
                    }
                }
            }
        }

        let mut states: HashMap<usize, StageState> = HashMap::new();
        let mut stages_out = Vec::new();
        for &s in &order {
            let st = self.dispatch(&plans, s, &states)?;
            let plan = &plans[s];
            stages_out.push(Stage {
                index: s,
                name: plan.def.name.clone(),
                base: plan.base.clone(),
                platform: plan.platform.clone(),
                root: st.root,
                config: st.config.clone(),
                history: st.history.clone(),
                has_base_image: st.has_base_image,
                base_image: st.base_vertex,
                span: Some(plan.def.span),
            });
            states.insert(s, st);
        }
        if let Some(cv) = self.context_vertex {
            let paths = if self.context_whole {
                vec![]
            } else {
                self.context_paths.iter().cloned().collect()
            };
            if let Op::Context { paths: p, .. } = &mut self.vertices[cv].op {
                *p = paths;
            }
        }
        let pruned = (0..plans.len())
            .filter(|i| !reach.contains(i))
            .map(|i| PrunedStage {
                index: i,
                name: plans[i].def.name.clone(),
            })
            .collect();
        let target_pos = stages_out
            .iter()
            .position(|st| st.index == target)
            .unwrap_or(stages_out.len() - 1);
        for (k, v) in &self.opts.labels {
            stages_out[target_pos]
                .config
                .labels
                .insert(k.clone(), v.clone());
        }
        Ok(BuildGraph {
            vertices: std::mem::take(&mut self.vertices),
            stages: stages_out,
            target: target_pos,
            pruned,
            warnings: std::mem::take(&mut self.warnings),
        })
    }

    fn trigger_commands(&self, expr: &str, span: Span) -> Result<Vec<Command>> {
        let ast = parse(expr).map_err(|e| {
            self.err(
                ErrorKind::Instruction,
                span,
                format!("invalid ONBUILD trigger {expr:?}: {}", e.message),
            )
        })?;
        let ctx = instructions::Ctx { ast: &ast };
        let mut out = Vec::new();
        for node in &ast.nodes {
            let ins = instructions::convert_node(&ctx, node).map_err(|e| {
                self.err(
                    ErrorKind::Instruction,
                    span,
                    format!("invalid ONBUILD trigger {expr:?}: {}", e.message),
                )
            })?;
            if matches!(ins, Instruction::Onbuild(_)) {
                return Err(self.err(
                    ErrorKind::Instruction,
                    span,
                    "chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed",
                ));
            }
            out.push(Command {
                instruction: ins,
                span,
                original: node.original.trim().to_string(),
                keyword: node.keyword.clone(),
                range: (0, 0),
            });
        }
        Ok(out)
    }

    /// Dependencies first (depth-first, iterative so long stage chains cannot
    /// exhaust the stack); a dependency back onto the current path is a cycle.
    fn topo_order(&self, plans: &[Plan], target: usize) -> Result<Vec<usize>> {
        // 0 = unvisited, 1 = on the path, 2 = done
        let mut mark = vec![0u8; plans.len()];
        let mut order = Vec::new();
        let sorted_deps = |s: usize| {
            let mut d = plans[s].deps.clone();
            d.sort_by_key(|(x, _)| *x);
            d
        };
        // (stage, its sorted deps, index of the next dep to look at)
        let mut stack = vec![(target, sorted_deps(target), 0usize)];
        mark[target] = 1;
        while let Some((s, deps, next)) = stack.last_mut() {
            let s = *s;
            if *next == deps.len() {
                mark[s] = 2;
                order.push(s);
                stack.pop();
                continue;
            }
            let (d, span) = deps[*next];
            *next += 1;
            match mark[d] {
                1 => {
                    return Err(self.err(
                        ErrorKind::Stage,
                        span,
                        if d == s {
                            format!(
                                "circular dependency detected on stage: {} copies from itself",
                                plans[s].display_name
                            )
                        } else {
                            format!(
                                "circular dependency detected on stage: {}",
                                plans[d].display_name
                            )
                        },
                    ))
                }
                0 => {
                    mark[d] = 1;
                    stack.push((d, sorted_deps(d), 0));
                }
                _ => {}
            }
        }
        Ok(order)
    }

    /// The state a stage starts from: its base's config, root and history.
    pub(super) fn stage_start(
        &mut self,
        plan: &Plan,
        done: &HashMap<usize, StageState>,
    ) -> Result<StageState> {
        let mut st = match &plan.base_kind {
            BaseKind::Scratch => {
                let root = self.scratch();
                StageState {
                    // BuildKit's empty image has `/` as its working directory.
                    config: ImageConfig {
                        working_dir: "/".into(),
                        ..Default::default()
                    },
                    root,
                    env: vec![],
                    args: vec![],
                    history: vec![],
                    cmd_set: false,
                    has_base_image: false,
                    base_vertex: None,
                    used_once: HashMap::new(),
                    workdir_set: false,
                }
            }
            BaseKind::Stage(b) => {
                let Some(base) = done.get(b) else {
                    // The base stage is a dependency, so it is dispatched first.
                    return Err(self.err(
                        ErrorKind::Stage,
                        plan.def.span,
                        format!("internal error: base stage {b} used before it was built"),
                    ));
                };
                let mut config = base.config.clone();
                config.on_build.clear();
                StageState {
                    env: env_pairs(&config),
                    config,
                    root: base.root,
                    args: vec![],
                    history: base.history.clone(),
                    cmd_set: false,
                    has_base_image: base.has_base_image,
                    base_vertex: base.base_vertex,
                    used_once: HashMap::new(),
                    workdir_set: false,
                }
            }
            BaseKind::Named(key) => {
                let root = self.named_root(key, plan.def.span)?;
                StageState {
                    config: ImageConfig {
                        working_dir: "/".into(),
                        ..Default::default()
                    },
                    root,
                    env: vec![],
                    args: vec![],
                    history: vec![self.named_history(key)],
                    cmd_set: false,
                    has_base_image: false,
                    base_vertex: None,
                    used_once: HashMap::new(),
                    workdir_set: false,
                }
            }
            BaseKind::Image(r) => {
                let resolved = plan.resolved.clone();
                let mut config = resolved
                    .as_ref()
                    .map(|r| r.config.clone())
                    .unwrap_or_default();
                config.on_build.clear();
                let reference = resolved
                    .as_ref()
                    .map(|r| r.reference.clone())
                    .filter(|r| !r.is_empty())
                    .unwrap_or_else(|| r.clone());
                let empty = resolved.as_ref().is_some_and(|r| r.empty);
                let root = if empty {
                    self.scratch()
                } else {
                    self.image_vertex(&reference, &plan.platform, Some(plan.def.span))
                };
                StageState {
                    env: env_pairs(&config),
                    config,
                    root,
                    args: vec![],
                    history: vec![],
                    cmd_set: false,
                    has_base_image: !empty,
                    base_vertex: (!empty).then_some(root),
                    used_once: HashMap::new(),
                    workdir_set: false,
                }
            }
        };
        if st.config.env_value("PATH").is_none() {
            st.config.env.push(format!("PATH={DEFAULT_PATH}"));
            set_pair(&mut st.env, "PATH", DEFAULT_PATH);
        }
        Ok(st)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn references_normalise_as_docker_does() {
        let n = |r: &str| normalize_reference(r).unwrap();
        assert_eq!(n("alpine"), "docker.io/library/alpine:latest");
        assert_eq!(n(" alpine:3.20 "), "docker.io/library/alpine:3.20");
        assert_eq!(n("user/app"), "docker.io/user/app:latest");
        assert_eq!(n("docker.io/alpine"), "docker.io/library/alpine:latest");
        assert_eq!(n("index.docker.io/a/b"), "docker.io/a/b:latest");
        assert_eq!(n("localhost/app"), "localhost/app:latest");
        assert_eq!(n("localhost:5000/app:v1"), "localhost:5000/app:v1");
        assert_eq!(n("[::1]:5000/a/b"), "[::1]:5000/a/b:latest");
        assert_eq!(n(&format!("quay.io/a/b@{D}")), format!("quay.io/a/b@{D}"));
        assert_eq!(
            n(&format!("alpine:3@{D}")),
            format!("docker.io/library/alpine:3@{D}")
        );
    }

    #[test]
    fn invalid_references_are_refused_naming_the_value() {
        let e = |r: &str| normalize_reference(r).unwrap_err();
        assert_eq!(
            e("Alpine"),
            "invalid reference format: repository name `library/Alpine` must be lowercase"
        );
        assert!(e("a..b").contains("`a..b`"), "{}", e("a..b"));
        assert!(e("$x").contains("`$x`"), "{}", e("$x"));
        assert!(e("alpine:-x").contains("`-x`"), "{}", e("alpine:-x"));
        assert!(e("alpine@sha256:abc").contains("`sha256:abc`"));
        assert!(e("host:port/app").contains("`host:port`"));
        assert!(e("a\x1b[2J").contains("a\\u{1b}[2J"), "{}", e("a\x1b[2J"));
        assert_eq!(e(""), "invalid reference format: empty reference");
    }

    #[test]
    fn a_bad_base_image_is_one_error_at_its_line() {
        let ast = parse("FROM busybox\nFROM a..b\nRUN true\n").unwrap();
        let err =
            crate::lower(&ast, &crate::BuildOptions::default(), &crate::NoResolver).unwrap_err();
        assert_eq!(err.span.map(|s| s.start.line), Some(2), "{err}");
        let err = err.to_string();
        assert!(err.contains("FROM a..b: invalid reference format"), "{err}");
    }
}
