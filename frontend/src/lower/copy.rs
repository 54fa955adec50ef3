//! COPY and ADD: build-context, stage and image sources, URLs, git
//! repositories, inline heredoc files, and `--link` layers.

use std::collections::HashMap;

use super::{clean_path, relative_to_workdir, FromRef, Lowerer, Plan, Result, StageState};
use crate::error::ErrorKind;
use crate::graph::*;
use crate::instructions::Copy;
use crate::parser::Span;
use crate::shell::{Lexer, LexerOptions};

fn is_http_source(s: &str) -> bool {
    (s.starts_with("http://") || s.starts_with("https://")) && git_source(s).is_none()
}

/// Recognises git sources for ADD: `git@host:repo`, `git://…`, `ssh://…`, and
/// http(s) URLs ending in `.git` (optionally with `#ref[:subdir]`).
fn git_source(s: &str) -> Option<(String, String)> {
    let (url, fragment) = match s.split_once('#') {
        Some((u, f)) => (u, f.to_string()),
        None => (s, String::new()),
    };
    let is_git = url.starts_with("git@")
        || url.starts_with("git://")
        || url.starts_with("ssh://")
        || ((url.starts_with("https://") || url.starts_with("http://")) && url.ends_with(".git"));
    is_git.then(|| (url.to_string(), fragment))
}

impl Lowerer<'_> {
    pub(super) fn copy_instruction(
        &mut self,
        plans: &[Plan],
        st: &mut StageState,
        c: &Copy,
        span: Span,
        label: String,
        done: &HashMap<usize, StageState>,
    ) -> Result<()> {
        let env = &st.env;
        let declared = &st.args;
        let kw = if c.add { "ADD" } else { "COPY" };
        let mut sources = Vec::new();
        for s in &c.sources {
            sources.push(self.expand(s, env, declared, span)?);
        }
        let dest_raw = self.expand(&c.dest, env, declared, span)?;
        let chown = match &c.chown {
            Some(v) => Some(self.expand(v, env, declared, span)?),
            None => None,
        };
        let chmod = match &c.chmod {
            Some(v) => Some(self.expand(v, env, declared, span)?),
            None => None,
        };
        if let Some(m) = &chmod {
            match u32::from_str_radix(m, 8) {
                Ok(p) if p <= 0o7777 => {}
                Ok(_) => {
                    return Err(self.err(
                        ErrorKind::Instruction,
                        span,
                        format!("invalid chmod parameter: '{m}'. it should be octal string and between 0 and 07777"),
                    ))
                }
                Err(_) => {
                    let symbolic = m.split(',').all(|part| {
                        let p = part.trim_start_matches(['u', 'g', 'o', 'a']);
                        p.starts_with(['+', '-', '='])
                            && p[1..].chars().all(|ch| matches!(ch, 'r' | 'w' | 'x' | 'X' | 's' | 't'))
                    });
                    if !symbolic {
                        return Err(self.err(
                            ErrorKind::Instruction,
                            span,
                            format!("invalid chmod parameter: '{m}'. it should be octal string and between 0 and 07777"),
                        ));
                    }
                }
            }
        }
        let checksum = match &c.checksum {
            Some(v) => Some(self.expand(v, env, declared, span)?),
            None => None,
        };
        let mut exclude = Vec::new();
        for e in &c.exclude {
            exclude.push(self.expand(e, env, declared, span)?);
        }
        if checksum.is_some() {
            if sources.len() != 1 {
                return Err(self.err(
                    ErrorKind::Instruction,
                    span,
                    "checksum can't be specified for multiple sources",
                ));
            }
            if !is_http_source(&sources[0]) && git_source(&sources[0]).is_none() {
                return Err(self.err(
                    ErrorKind::Instruction,
                    span,
                    "checksum can't be specified for non-HTTP(S) sources",
                ));
            }
        }
        let dest = relative_to_workdir(&st.config.working_dir, &dest_raw);

        let mut msg = String::from(kw);
        if c.parents {
            msg.push_str(" --parents");
        }

        if let Some(o) = &chown {
            msg.push_str(&format!(" --chown={o}"));
        }
        if let Some(m) = &chmod {
            msg.push_str(&format!(" --chmod={m}"));
        }

        let mut inputs = vec![st.root];
        let mut actions = Vec::new();
        let source_vertex = match &c.from {
            Some(f) => Some(
                match self.resolve_from(
                    plans,
                    f,
                    self.span_of(span, self.current_range, &format!("from={f}")),
                )? {
                    FromRef::Stage(i) => self.stage_root(done, i, span)?,
                    FromRef::Image(r) => {
                        let p = self.stage_platform.clone();
                        let resolved = self.resolve(&r, &p, span)?;
                        let r = resolved
                            .map(|x| x.reference)
                            .filter(|x| !x.is_empty())
                            .unwrap_or(r);
                        self.image_vertex(&r, &p, Some(span))
                    }
                    FromRef::Named(key) => self.named_source(&key, span)?,
                },
            ),
            None => None,
        };
        let input_of = |inputs: &mut Vec<VertexId>, v: VertexId| -> usize {
            match inputs.iter().position(|x| *x == v) {
                Some(i) if i > 0 => i,
                _ => {
                    inputs.push(v);
                    inputs.len() - 1
                }
            }
        };
        for src in &sources {
            msg.push(' ');
            msg.push_str(src);
            let copy = |input: usize, source: String, include: Vec<String>, local: bool| {
                FileAction::Copy {
                    input,
                    source,
                    dest: dest.clone(),
                    chown: chown.clone(),
                    chmod: chmod.clone(),
                    exclude: exclude.clone(),
                    include,
                    follow_symlinks: local,
                    dir_contents_only: local,
                    attempt_unpack: local && c.add && c.unpack != Some(false),
                    create_dest_path: true,
                    allow_wildcard: local,
                    allow_empty_wildcard: local,
                }
            };
            if source_vertex.is_none() && c.add {
                if let Some((url, fragment)) = git_source(src) {
                    let (reference, subdir) = match fragment.split_once(':') {
                        Some((r, d)) => (r.to_string(), d.to_string()),
                        None => (fragment.clone(), String::new()),
                    };
                    let v = self.add_vertex(
                        Op::Git {
                            url,
                            reference,
                            keep_git_dir: c.keep_git_dir,
                        },
                        vec![],
                        format!("git {src}"),
                        Some(span),
                    );
                    let i = input_of(&mut inputs, v);
                    let source = if subdir.is_empty() {
                        "/".to_string()
                    } else {
                        clean_path(&format!("/{subdir}"))
                    };
                    let mut action = copy(i, source, vec![], false);
                    // A checkout's directory is copied by its contents, like a
                    // local directory.
                    if let FileAction::Copy {
                        dir_contents_only, ..
                    } = &mut action
                    {
                        *dir_contents_only = true;
                    }
                    actions.push(action);
                    continue;
                }
                if is_http_source(src) {
                    let path = src.split(['?', '#']).next().unwrap_or(src);
                    let base = path.rsplit('/').next().unwrap_or("");
                    let filename = if matches!(base, "" | "." | "..")
                        || path.ends_with("://")
                        || base.contains(':')
                    {
                        "__unnamed__".to_string()
                    } else {
                        base.to_string()
                    };
                    let v = self.add_vertex(
                        Op::Http {
                            url: src.clone(),
                            checksum: checksum.clone(),
                            filename: filename.clone(),
                        },
                        vec![],
                        format!("https {src}"),
                        Some(span),
                    );
                    let i = input_of(&mut inputs, v);
                    let mut action = copy(i, filename, vec![], false);
                    // A downloaded archive is extracted only when asked to.
                    if let FileAction::Copy { attempt_unpack, .. } = &mut action {
                        *attempt_unpack = c.unpack == Some(true);
                    }
                    actions.push(action);
                    continue;
                }
            } else if source_vertex.is_none() && (is_http_source(src) || git_source(src).is_some())
            {
                let what = if is_http_source(src) {
                    "a URL"
                } else {
                    "a git ref"
                };
                return Err(self.err(
                    ErrorKind::Instruction,
                    span,
                    format!("source can't be {what} for COPY"),
                ));
            }
            let (src_path, include) = if c.parents {
                match src.split_once("/./") {
                    Some((parent, pattern)) => (
                        parent.to_string(),
                        vec![clean_path(&format!("/{pattern}"))
                            .trim_start_matches('/')
                            .to_string()],
                    ),
                    None => (
                        "/".to_string(),
                        vec![clean_path(&format!("/{src}"))
                            .trim_start_matches('/')
                            .to_string()],
                    ),
                }
            } else {
                (src.clone(), vec![])
            };
            let cleaned = clean_path(&format!("/{src_path}"));
            let v = match source_vertex {
                Some(v) => v,
                None => {
                    let ctx = self.context();
                    if cleaned == "/" {
                        self.context_whole = true;
                    } else {
                        self.context_paths
                            .insert(cleaned.trim_start_matches('/').to_string());
                    }
                    ctx
                }
            };
            let i = input_of(&mut inputs, v);
            actions.push(copy(i, cleaned, include, true));
        }
        for inline in &c.inline {
            msg.push_str(&format!(" <<{}", inline.name));
            let data = if inline.expand {
                let raw = Lexer::new(
                    '\\',
                    LexerOptions {
                        skip_process_quotes: true,
                        ..Default::default()
                    },
                );
                raw.process_word(&inline.data, env)
                    .map_err(|e| self.err(ErrorKind::Expansion, span, e.to_string()))?
            } else {
                inline.data.clone()
            };
            let scratch = self.scratch();
            let file = clean_path(&format!("/{}", inline.name));
            let v = self.add_vertex(
                Op::File(FileOp {
                    root: Some(0),
                    actions: vec![FileAction::Mkfile {
                        path: file.clone(),
                        mode: 0o644,
                        data,
                    }],
                    owner_from: None,
                }),
                vec![scratch],
                "preparing inline document".into(),
                Some(span),
            );
            let i = input_of(&mut inputs, v);
            actions.push(FileAction::Copy {
                input: i,
                source: file,
                dest: dest.clone(),
                chown: chown.clone(),
                chmod: chmod.clone(),
                exclude: vec![],
                include: vec![],
                follow_symlinks: false,
                dir_contents_only: false,
                attempt_unpack: false,
                create_dest_path: true,
                allow_wildcard: false,
                allow_empty_wildcard: false,
            });
        }
        msg.push(' ');
        msg.push_str(&dest_raw);
        if c.link {
            // The files go into a layer of their own made on an empty root,
            // so its cache key does not depend on the layers below.
            let base = inputs.remove(0);
            for a in &mut actions {
                if let FileAction::Copy { input, .. } = a {
                    *input -= 1;
                }
            }
            // A name in --chown is looked up in the stage below, which then
            // enters the key only through the ids it resolves to.
            let named = chown.as_deref().is_some_and(|c| {
                let (user, group) = hoist_untrusted::accounts::split_user_group(c);
                [Some(user), group].into_iter().flatten().any(|part| {
                    !part.is_empty() && hoist_untrusted::accounts::numeric_id(part).is_none()
                })
            });
            let owner_from = named.then(|| {
                inputs.push(base);
                inputs.len() - 1
            });
            let layer = self.add_vertex(
                Op::File(FileOp {
                    root: None,
                    actions,
                    owner_from,
                }),
                inputs,
                label.clone(),
                Some(span),
            );
            st.root = self.add_vertex(
                Op::Merge,
                vec![base, layer],
                format!("{label} (link)"),
                Some(span),
            );
        } else {
            st.root = self.add_vertex(
                Op::File(FileOp {
                    root: Some(0),
                    actions,
                    owner_from: None,
                }),
                inputs,
                label,
                Some(span),
            );
        }
        Self::history(st, format!("{msg} # buildkit"), true);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_sources_are_told_apart_as_buildkit_does() {
        assert_eq!(
            git_source("https://example.com/repo.git#v1:sub"),
            Some(("https://example.com/repo.git".into(), "v1:sub".into()))
        );
        assert!(git_source("git@github.com:o/r.git").is_some());
        assert!(git_source("ssh://host/r").is_some());
        assert!(git_source("https://example.com/file.tar.gz").is_none());
        assert!(is_http_source("https://example.com/file.tar.gz"));
        assert!(!is_http_source("https://example.com/repo.git"));
        assert!(!is_http_source("local/file"));
    }

    fn lower_text(text: &str) -> Result<BuildGraph> {
        let ast = crate::parse(text).expect("parses");
        super::super::lower(
            &ast,
            &crate::BuildOptions::default(),
            &super::super::NoResolver,
        )
    }

    #[test]
    fn copy_flags_are_checked_where_they_are_lowered() {
        let e = lower_text("FROM scratch\nCOPY --chmod=999 a /b\n").unwrap_err();
        assert!(e.to_string().contains("999"), "{e}");
        assert!(lower_text("FROM scratch\nCOPY --chmod=755 --link a /b\n").is_ok());
    }
}
