//! A human-readable rendering of a [`BuildGraph`] (`hoist build --dry-run`).

use std::fmt::Write;

use crate::graph::*;

fn describe(v: &Vertex, id: VertexId, unresolved: bool) -> String {
    let inputs: Vec<String> = v.inputs.iter().map(|i| format!("#{i}")).collect();
    let from = if inputs.is_empty() {
        String::new()
    } else {
        format!(" <- {}", inputs.join(", "))
    };
    let body = match &v.op {
        Op::Scratch => "scratch".to_string(),
        Op::Image {
            reference,
            platform,
        } if unresolved => {
            format!("image {reference} ({platform}) unresolved: config and ONBUILD unknown")
        }
        Op::Image {
            reference,
            platform,
        } => format!("image {reference} ({platform})"),
        Op::Context { name, paths } => {
            if paths.is_empty() {
                format!("context {name} (all files)")
            } else {
                format!("context {name} ({})", paths.join(", "))
            }
        }
        Op::Git { url, reference, .. } => format!("git {url} {reference}"),
        Op::Http { url, checksum, .. } => match checksum {
            Some(c) => format!("http {url} (checksum {c})"),
            None => format!("http {url}"),
        },
        Op::Merge => "merge (layers of the second input on the first)".to_string(),
        Op::Exec(e) => {
            let mut s = format!("exec {:?} cwd={}", e.argv, e.cwd);
            if !e.user.is_empty() {
                let _ = write!(s, " user={}", e.user);
            }
            if e.network != NetworkMode::Default {
                let _ = write!(s, " network={:?}", e.network);
            }
            for m in &e.mounts {
                let kind = match &m.kind {
                    MountKind::Bind { input, source, .. } => format!("bind input {input}:{source}"),
                    MountKind::Cache { id, .. } => format!("cache {id}"),
                    MountKind::Tmpfs { .. } => "tmpfs".to_string(),
                    MountKind::Secret { id, .. } => format!("secret {id}"),
                    MountKind::Ssh { id, .. } => format!("ssh {id}"),
                };
                let _ = write!(s, "\n        mount {} ({kind})", m.target);
            }
            s
        }
        Op::File(f) => {
            let mut s = "file".to_string();
            for a in &f.actions {
                let line = match a {
                    FileAction::Copy {
                        input,
                        source,
                        dest,
                        ..
                    } => format!("copy input {input}:{source} -> {dest}"),
                    FileAction::Mkdir { path, .. } => format!("mkdir {path}"),
                    FileAction::Mkfile { path, data, .. } => {
                        format!("mkfile {path} ({} bytes)", data.len())
                    }
                    FileAction::Rm { path, .. } => format!("rm {path}"),
                };
                let _ = write!(s, "\n        {line}");
            }
            s
        }
    };
    format!("  #{id} {}{from}\n      {body}\n", v.name)
}

impl BuildGraph {
    /// Renders stages, ops with their inputs, config and what was pruned.
    pub fn render_plan(&self) -> String {
        self.render_plan_marking(&[])
    }

    /// [`BuildGraph::render_plan`] with the image vertices `unresolved`
    /// marked (a dry run that could not look at those base images) and the
    /// stages built on them.
    pub fn render_plan_marking(&self, unresolved: &[VertexId]) -> String {
        let mut out = String::new();
        let t = self.target_stage();
        let _ = writeln!(
            out,
            "target: stage {} ({}), platform {}",
            t.index,
            t.name.as_deref().unwrap_or("unnamed"),
            t.platform
        );
        if !self.pruned.is_empty() {
            let names: Vec<String> = self
                .pruned
                .iter()
                .map(|p| match &p.name {
                    Some(n) => format!("{} ({n})", p.index),
                    None => p.index.to_string(),
                })
                .collect();
            let _ = writeln!(out, "pruned stages: {}", names.join(", "));
        }
        let _ = writeln!(out, "\nops:");
        for (i, v) in self.vertices.iter().enumerate() {
            out.push_str(&describe(v, i, unresolved.contains(&i)));
        }
        for s in &self.stages {
            let _ = writeln!(
                out,
                "\nstage {} ({}) from {}{} -> #{}",
                s.index,
                s.name.as_deref().unwrap_or("unnamed"),
                s.base,
                match s.base_image {
                    Some(b) if unresolved.contains(&b) => " (unresolved)",
                    _ => "",
                },
                s.root
            );
            let c = &s.config;
            for e in &c.env {
                let _ = writeln!(out, "  env {e}");
            }
            if !c.working_dir.is_empty() {
                let _ = writeln!(out, "  workdir {}", c.working_dir);
            }
            if !c.user.is_empty() {
                let _ = writeln!(out, "  user {}", c.user);
            }
            if let Some(e) = &c.entrypoint {
                let _ = writeln!(out, "  entrypoint {e:?}");
            }
            if let Some(cmd) = &c.cmd {
                let _ = writeln!(out, "  cmd {cmd:?}");
            }
            for p in &c.exposed_ports {
                let _ = writeln!(out, "  expose {p}");
            }
            for v in &c.volumes {
                let _ = writeln!(out, "  volume {v}");
            }
            for (k, v) in &c.labels {
                let _ = writeln!(out, "  label {k}={v}");
            }
            if !c.shell.is_empty() {
                let _ = writeln!(out, "  shell {:?}", c.shell);
            }
            if !c.stop_signal.is_empty() {
                let _ = writeln!(out, "  stopsignal {}", c.stop_signal);
            }
            if let Some(h) = &c.healthcheck {
                let _ = writeln!(out, "  healthcheck {:?}", h.test);
            }
            for o in &c.on_build {
                let _ = writeln!(out, "  onbuild {o}");
            }
            for h in &s.history {
                let _ = writeln!(
                    out,
                    "  history {}{}",
                    h.created_by,
                    if h.empty_layer { " (no layer)" } else { "" }
                );
            }
        }
        for w in &self.warnings {
            let at = w
                .span
                .map(|s| format!("{}:{}: ", s.start.line, s.start.column))
                .unwrap_or_default();
            let _ = writeln!(out, "warning: {at}{} [{}]", w.message, w.rule);
        }
        out
    }
}
