//! RUN and its `--mount`, `--network` and `--security` flags; heredoc scripts.

use std::collections::{BTreeMap, HashMap};

use super::{clean_path, relative_to_workdir, FromRef, Lowerer, Plan, Result, StageState};
use crate::error::{suggest, ErrorKind};
use crate::graph::*;
use crate::instructions;
use crate::parser::{parse_heredoc, Span};

/// Splits a `--mount` value on commas outside double quotes.
fn split_csv(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in s.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    out.push(cur);
    out
}

impl Lowerer<'_> {
    /// The `from=` of a `--mount`, read exactly as [`Self::parse_mount`] reads
    /// it (trimmed fields, last one wins) so dependencies and mounts agree.
    pub(super) fn mount_from(mount: &str) -> Option<String> {
        split_csv(mount)
            .iter()
            .filter_map(|f| {
                let (k, v) = f.trim().split_once('=')?;
                (k.trim().eq_ignore_ascii_case("from")).then(|| v.to_string())
            })
            .next_back()
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn run_instruction(
        &mut self,
        plans: &[Plan],
        st: &mut StageState,
        run: &instructions::Run,
        span: Span,
        label: String,
        done: &HashMap<usize, StageState>,
    ) -> Result<()> {
        let mut args = run.command.args.clone();
        let files = &run.command.heredocs;
        if !files.is_empty() {
            if args.len() != 1 || !run.command.prepend_shell {
                return Err(self.err(
                    ErrorKind::Instruction,
                    span,
                    "parsing produced an invalid run command",
                ));
            }
            let mut mounts_extra = None;
            if matches!(parse_heredoc(&args[0]), Ok(Some(_))) {
                let mut data = files[0].content.clone();
                if files[0].chomp {
                    data = crate::parser::chomp_heredoc_content(&data);
                }
                if data.starts_with("#!") {
                    // A script with a shebang runs as a file, as BuildKit does.
                    let scratch = self.scratch();
                    let v = self.add_vertex(
                        Op::File(FileOp {
                            root: Some(0),
                            actions: vec![FileAction::Mkfile {
                                path: format!("/{}", files[0].name),
                                mode: 0o755,
                                data,
                            }],
                            owner_from: None,
                        }),
                        vec![scratch],
                        "preparing inline document".into(),
                        Some(span),
                    );
                    mounts_extra = Some(v);
                    args = vec![format!("/dev/pipes/{}", files[0].name)];
                } else {
                    args = vec![data];
                }
            } else {
                let mut full = args[0].clone();
                for f in files {
                    full.push('\n');
                    full.push_str(&f.content);
                    full.push_str(&f.name);
                }
                args = vec![full];
            }
            if let Some(v) = mounts_extra {
                return self.finish_run(plans, st, run, span, label, done, args, Some(v));
            }
        }
        self.finish_run(plans, st, run, span, label, done, args, None)
    }

    #[allow(clippy::too_many_arguments)]
    fn finish_run(
        &mut self,
        plans: &[Plan],
        st: &mut StageState,
        run: &instructions::Run,
        span: Span,
        label: String,
        done: &HashMap<usize, StageState>,
        args: Vec<String>,
        script: Option<VertexId>,
    ) -> Result<()> {
        let argv = if run.command.prepend_shell && script.is_none() {
            Self::with_shell(&st.config, &args)
        } else {
            args.clone()
        };
        let mut inputs = vec![st.root];
        let mut mounts = Vec::new();
        if let Some(v) = script {
            inputs.push(v);
            mounts.push(Mount {
                target: "/dev/pipes/".into(),
                kind: MountKind::Bind {
                    input: inputs.len() - 1,
                    source: "/".into(),
                    readonly: true,
                },
            });
        }
        let env = &st.env;
        let declared = &st.args;
        let mut ssh_count = 0;
        for raw in &run.mounts {
            let mut m = self.parse_mount(
                plans,
                raw,
                env,
                declared,
                span,
                done,
                &mut inputs,
                &mut ssh_count,
            )?;
            // Relative mount targets are relative to the working directory.
            if !m.target.starts_with('/') {
                m.target = relative_to_workdir(&st.config.working_dir, &m.target);
            }
            mounts.push(m);
        }
        let network = match run.network.as_deref() {
            None | Some("default") => NetworkMode::Default,
            Some("none") => NetworkMode::None,
            Some("host") => NetworkMode::Host,
            Some(other) => {
                return Err(self.err(
                    ErrorKind::Instruction,
                    span,
                    format!("unsupported network mode {other:?} (expected default, none or host)"),
                ))
            }
        };
        let security = match run.security.as_deref() {
            None | Some("sandbox") => SecurityMode::Sandbox,
            Some("insecure") => SecurityMode::Insecure,
            Some(other) => {
                return Err(self.err(
                    ErrorKind::Instruction,
                    span,
                    format!("unsupported security mode {other:?} (expected sandbox or insecure)"),
                ))
            }
        };
        let proxy_env: Vec<String> = self
            .opts
            .build_args
            .iter()
            .filter(|(k, _)| hoist_untrusted::proxy::is_build_arg(k))
            .filter(|(k, _)| !st.env.iter().any(|(e, _)| e == *k))
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let exec = ExecOp {
            root: 0,
            mounts,
            argv: argv.clone(),
            env: st.env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
            cwd: if st.config.working_dir.is_empty() {
                "/".into()
            } else {
                st.config.working_dir.clone()
            },
            user: st.config.user.clone(),
            network,
            security,
            proxy_env,
        };
        st.root = self.add_vertex(Op::Exec(exec), inputs, label, Some(span));
        // BuildKit's wording: `RUN |N K=V … argv… # buildkit`.
        let mut build_env: Vec<String> = Vec::new();
        let mut idx: HashMap<String, usize> = HashMap::new();
        for (k, default) in &st.args {
            let v = st
                .env
                .iter()
                .find(|(e, _)| e == k)
                .map(|(_, v)| v.clone())
                .or_else(|| default.clone())
                .unwrap_or_default();
            match idx.get(k) {
                Some(&i) => build_env[i] = format!("{k}={v}"),
                None => {
                    idx.insert(k.clone(), build_env.len());
                    build_env.push(format!("{k}={v}"));
                }
            }
        }
        let mut words = Vec::new();
        if !build_env.is_empty() {
            words.push(format!("|{}", build_env.len()));
            words.extend(build_env);
        }
        words.extend(argv);
        Self::history(st, format!("RUN {} # buildkit", words.join(" ")), true);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn parse_mount(
        &mut self,
        plans: &[Plan],
        raw: &str,
        env: &[(String, String)],
        declared: &[(String, Option<String>)],
        span: Span,
        done: &HashMap<usize, StageState>,
        inputs: &mut Vec<VertexId>,
        ssh_count: &mut usize,
    ) -> Result<Mount> {
        let mut fields: BTreeMap<String, String> = BTreeMap::new();
        let mut kind = "bind".to_string();
        let mut readonly: Option<bool> = None;
        for f in split_csv(raw) {
            let f = f.trim();
            if f.is_empty() {
                continue;
            }
            let (k, v) = match f.split_once('=') {
                Some((k, v)) => (k.trim().to_ascii_lowercase(), Some(v.to_string())),
                None => (f.to_ascii_lowercase(), None),
            };
            let v = match v {
                Some(v) if k != "from" => Some(self.expand(&v, env, declared, span)?),
                other => other,
            };
            let bool_of = |v: &Option<String>| -> std::result::Result<bool, String> {
                match v.as_deref().map(str::to_ascii_lowercase).as_deref() {
                    None | Some("true") | Some("1") => Ok(true),
                    Some("false") | Some("0") => Ok(false),
                    Some(o) => Err(format!("invalid value {o:?} for `{k}` in --mount")),
                }
            };
            match k.as_str() {
                "type" => kind = v.unwrap_or_default().to_ascii_lowercase(),
                "readonly" | "ro" => {
                    readonly =
                        Some(bool_of(&v).map_err(|m| self.err(ErrorKind::Instruction, span, m))?)
                }
                "readwrite" | "rw" => {
                    readonly =
                        Some(!bool_of(&v).map_err(|m| self.err(ErrorKind::Instruction, span, m))?)
                }
                "target" | "dst" | "destination" => {
                    fields.insert("target".into(), v.unwrap_or_default());
                }
                "source" | "src" => {
                    fields.insert("source".into(), v.unwrap_or_default());
                }
                "from" | "id" | "sharing" | "mode" | "uid" | "gid" | "size" | "env" => {
                    fields.insert(k.clone(), v.unwrap_or_default());
                }
                "required" => {
                    let b = bool_of(&v).map_err(|m| self.err(ErrorKind::Instruction, span, m))?;
                    fields.insert("required".into(), b.to_string());
                }
                other => {
                    let keys = [
                        "type", "target", "source", "from", "readonly", "rw", "id", "sharing",
                        "mode", "uid", "gid", "required", "size", "env",
                    ];
                    let mut msg = format!("unexpected key '{other}' in '{raw}'");
                    if let Some(s) = suggest(other, &keys) {
                        msg.push_str(&format!(" (did you mean {s}?)"));
                    }
                    return Err(self.err(ErrorKind::Instruction, span, msg));
                }
            }
        }
        let num = |l: &Self, key: &str, radix: u32, default: u32| -> Result<u32> {
            match fields.get(key) {
                None => Ok(default),
                Some(v) => u32::from_str_radix(v, radix).map_err(|_| {
                    l.err(
                        ErrorKind::Instruction,
                        span,
                        format!("invalid {key} {v:?} in --mount"),
                    )
                }),
            }
        };
        let target = fields.get("target").cloned().unwrap_or_default();
        let from_input = |l: &mut Self, inputs: &mut Vec<VertexId>| -> Result<Option<usize>> {
            let Some(from) = fields.get("from") else {
                return Ok(None);
            };
            let at = l.span_of(span, l.current_range, &format!("from={from}"));
            let v = match l.resolve_from(plans, from, at)? {
                FromRef::Stage(i) => l.stage_root(done, i, span)?,
                FromRef::Image(r) => {
                    let p = l.stage_platform.clone();
                    let resolved = l.resolve(&r, &p, span)?;
                    let r = resolved
                        .map(|x| x.reference)
                        .filter(|x| !x.is_empty())
                        .unwrap_or(r);
                    l.image_vertex(&r, &p, Some(span))
                }
                FromRef::Named(key) => l.named_source(&key, span)?,
            };
            inputs.push(v);
            Ok(Some(inputs.len() - 1))
        };
        let required_target = |l: &Self| -> Result<()> {
            if target.is_empty() {
                return Err(l.err(
                    ErrorKind::Instruction,
                    span,
                    format!("--mount={raw}: mount target must be specified"),
                ));
            }
            Ok(())
        };
        let mount = match kind.as_str() {
            "bind" => {
                required_target(self)?;
                let source = clean_path(&format!(
                    "/{}",
                    fields.get("source").map(String::as_str).unwrap_or("")
                ));
                let input = match from_input(self, inputs)? {
                    Some(i) => i,
                    None => {
                        let c = self.context();
                        if source == "/" {
                            self.context_whole = true;
                        } else {
                            self.context_paths
                                .insert(source.trim_start_matches('/').to_string());
                        }
                        inputs.push(c);
                        inputs.len() - 1
                    }
                };
                Mount {
                    target: target.clone(),
                    kind: MountKind::Bind {
                        input,
                        source,
                        readonly: readonly.unwrap_or(true),
                    },
                }
            }
            "cache" => {
                required_target(self)?;
                let sharing = match fields
                    .get("sharing")
                    .map(|s| s.to_ascii_lowercase())
                    .as_deref()
                {
                    None | Some("shared") => CacheSharing::Shared,
                    Some("private") => CacheSharing::Private,
                    Some("locked") => CacheSharing::Locked,
                    Some(o) => {
                        return Err(self.err(
                            ErrorKind::Instruction,
                            span,
                            format!("unsupported sharing value {o:?}"),
                        ))
                    }
                };
                Mount {
                    target: target.clone(),
                    kind: MountKind::Cache {
                        id: fields
                            .get("id")
                            .cloned()
                            .filter(|s| !s.is_empty())
                            .unwrap_or_else(|| target.clone()),
                        sharing,
                        input: from_input(self, inputs)?,
                        source: fields.get("source").cloned().unwrap_or_else(|| "/".into()),
                        readonly: readonly.unwrap_or(false),
                        mode: num(self, "mode", 8, 0o755)?,
                        uid: num(self, "uid", 10, 0)?,
                        gid: num(self, "gid", 10, 0)?,
                    },
                }
            }
            "tmpfs" => {
                required_target(self)?;
                let size = match fields.get("size") {
                    None => 0,
                    // Docker reads a tmpfs size with RAMInBytes: `64m` is 64 MiB.
                    Some(v) => crate::units::parse_memory_size(v).map_err(|e| {
                        self.err(ErrorKind::Instruction, span, format!("{e} in --mount"))
                    })?,
                };
                Mount {
                    target: target.clone(),
                    kind: MountKind::Tmpfs { size },
                }
            }
            "secret" => {
                let mut id = fields.get("id").cloned().unwrap_or_default();
                let env_name = fields.get("env").cloned().filter(|s| !s.is_empty());
                if id.is_empty() {
                    id = target.rsplit('/').next().unwrap_or("").to_string();
                }
                if id.is_empty() {
                    return Err(self.err(
                        ErrorKind::Instruction,
                        span,
                        format!("--mount={raw}: secret mount needs an id or a target"),
                    ));
                }
                let target = if target.is_empty() && env_name.is_none() {
                    format!("/run/secrets/{id}")
                } else {
                    target.clone()
                };
                Mount {
                    target,
                    kind: MountKind::Secret {
                        required: fields.get("required").is_some_and(|v| v == "true"),
                        mode: num(self, "mode", 8, 0o400)?,
                        uid: num(self, "uid", 10, 0)?,
                        gid: num(self, "gid", 10, 0)?,
                        id,
                        env: env_name,
                    },
                }
            }
            "ssh" => {
                *ssh_count += 1;
                let target = if target.is_empty() {
                    format!("/run/buildkit/ssh_agent.{}", *ssh_count - 1)
                } else {
                    target.clone()
                };
                Mount {
                    target,
                    kind: MountKind::Ssh {
                        id: fields
                            .get("id")
                            .cloned()
                            .filter(|s| !s.is_empty())
                            .unwrap_or_else(|| "default".into()),
                        required: fields.get("required").is_some_and(|v| v == "true"),
                        mode: num(self, "mode", 8, 0o600)?,
                        uid: num(self, "uid", 10, 0)?,
                        gid: num(self, "gid", 10, 0)?,
                    },
                }
            }
            other => {
                let mut msg = format!("unsupported mount type {other:?}");
                if let Some(s) = suggest(other, &["bind", "cache", "tmpfs", "secret", "ssh"]) {
                    msg.push_str(&format!(" (did you mean {s}?)"));
                }
                return Err(self.err(ErrorKind::Instruction, span, msg));
            }
        };
        Ok(mount)
    }
}

#[cfg(test)]
mod tests {
    use crate::graph::MountKind;
    use crate::lower::{lower, BuildOptions, NoResolver};

    #[test]
    fn tmpfs_sizes_read_as_docker_and_overflow_is_an_error() {
        let lower_text = |text: &str| {
            let ast = crate::parse(text).unwrap();
            lower(&ast, &BuildOptions::default(), &NoResolver)
        };
        let graph =
            lower_text("FROM scratch\nRUN --mount=type=tmpfs,target=/t,size=64m true\n").unwrap();
        let sizes: Vec<u64> = graph
            .vertices
            .iter()
            .filter_map(|v| match &v.op {
                crate::graph::Op::Exec(e) => Some(e),
                _ => None,
            })
            .flat_map(|e| e.mounts.iter())
            .filter_map(|m| match m.kind {
                MountKind::Tmpfs { size } => Some(size),
                _ => None,
            })
            .collect();
        assert_eq!(sizes, vec![64 << 20]);
        let e =
            lower_text("FROM scratch\nRUN --mount=type=tmpfs,target=/t,size=99999999999g true\n")
                .unwrap_err();
        assert_eq!(
            e.render("Dockerfile").lines().next().unwrap(),
            "Dockerfile:2:1: invalid size `99999999999g`: too large (the most is 16EiB) in --mount"
        );
    }
}
