//! Config instructions: ENV, LABEL, MAINTAINER, ARG (inside a stage), CMD,
//! ENTRYPOINT, SHELL, HEALTHCHECK, EXPOSE, USER, VOLUME, STOPSIGNAL, ONBUILD
//! and WORKDIR. They change the image config and history; only WORKDIR adds a
//! vertex (the directory it creates).

use std::collections::BTreeSet;

use super::{relative_to_workdir, set_pair, Lowerer, Result, StageState};
use crate::error::ErrorKind;
use crate::graph::*;
use crate::instructions::{self, Command, CommandLine, Instruction};
use crate::parser::{go_quote, Span};

/// Go's `%q` of a `[]string`: `["a" "b"]`.
fn go_quote_list(items: &[String]) -> String {
    let q: Vec<String> = items.iter().map(|s| go_quote(s)).collect();
    format!("[{}]", q.join(" "))
}

/// Go's `%v` of a `[]string`: `[a b]`.
fn go_list(items: &[String]) -> String {
    format!("[{}]", items.join(" "))
}

/// Go's `time.Duration.String()`.
pub fn go_duration(nanos: u64) -> String {
    if nanos == 0 {
        return "0s".into();
    }
    if nanos < 1_000_000_000 {
        let (unit, div) = if nanos < 1_000 {
            ("ns", 1u64)
        } else if nanos < 1_000_000 {
            ("µs", 1_000)
        } else {
            ("ms", 1_000_000)
        };
        return format!("{}{unit}", trim_frac(nanos, div));
    }
    let mut out = String::new();
    let h = nanos / 3_600_000_000_000;
    let rem = nanos % 3_600_000_000_000;
    let m = rem / 60_000_000_000;
    let s_n = rem % 60_000_000_000;
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if h > 0 || m > 0 {
        out.push_str(&format!("{m}m"));
    }
    out.push_str(&format!("{}s", trim_frac(s_n, 1_000_000_000)));
    out
}

fn trim_frac(n: u64, div: u64) -> String {
    let whole = n / div;
    let frac = n % div;
    if frac == 0 {
        return whole.to_string();
    }
    let width = div.to_string().len() - 1;
    let f = format!("{frac:0width$}");
    format!("{whole}.{}", f.trim_end_matches('0'))
}

/// Go's `%q` of an int (a quoted rune).
fn go_quote_rune(n: u32) -> String {
    match char::from_u32(n) {
        Some(c) => {
            let q = go_quote(&c.to_string());
            let inner = &q[1..q.len() - 1];
            let inner = if inner == "\\\"" { "\"" } else { inner };
            let inner = if c == '\'' { "\\'" } else { inner };
            format!("'{inner}'")
        }
        None => "'\u{FFFD}'".into(),
    }
}

const SIGNALS: &[&str] = &[
    "ABRT", "ALRM", "BUS", "CHLD", "CLD", "CONT", "FPE", "HUP", "ILL", "INT", "IO", "IOT", "KILL",
    "PIPE", "POLL", "PROF", "PWR", "QUIT", "SEGV", "STKFLT", "STOP", "SYS", "TERM", "TRAP", "TSTP",
    "TTIN", "TTOU", "URG", "USR1", "USR2", "VTALRM", "WINCH", "XCPU", "XFSZ",
];

fn valid_signal(s: &str) -> bool {
    if let Ok(n) = s.parse::<u32>() {
        return (1..=64).contains(&n);
    }
    let up = s.to_ascii_uppercase();
    let name = up.strip_prefix("SIG").unwrap_or(&up);
    if SIGNALS.contains(&name) {
        return true;
    }
    for base in ["RTMIN", "RTMAX"] {
        if name == base {
            return true;
        }
        if let Some(rest) = name.strip_prefix(base) {
            if let Some(n) = rest.strip_prefix(['+', '-']) {
                return n.parse::<u32>().is_ok_and(|n| n <= 30);
            }
        }
    }
    false
}

/// Expands EXPOSE specs (`80`, `80/tcp`, `53/udp`, `8000-8010`, `ip:host:ctr`).
fn parse_ports(spec: &str) -> std::result::Result<Vec<String>, String> {
    let (body, proto) = match spec.rsplit_once('/') {
        Some((b, p)) => (b, p.to_ascii_lowercase()),
        None => (spec, "tcp".to_string()),
    };
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(format!("invalid proto: {proto}"));
    }
    let container = body.rsplit(':').next().unwrap_or(body);
    let parse_port = |p: &str| -> std::result::Result<u32, String> {
        p.parse::<u32>()
            .ok()
            .filter(|n| *n <= 65535)
            .ok_or_else(|| format!("invalid containerPort: {container}"))
    };
    let (start, end) = match container.split_once('-') {
        Some((a, b)) => (parse_port(a)?, parse_port(b)?),
        None => {
            let p = parse_port(container)?;
            (p, p)
        }
    };
    if end < start {
        return Err(format!(
            "invalid range specified for containerPort: {container}"
        ));
    }
    Ok((start..=end).map(|p| format!("{p}/{proto}")).collect())
}

/// BuildKit's `SecretsUsedInArgOrEnv` test: a `_`-separated token of the name
/// is a secret-like word (optionally followed by digits at the end), and no
/// token is `public`.
fn looks_secret(name: &str) -> bool {
    const DENY: &[&str] = &[
        "apikey",
        "auth",
        "credential",
        "credentials",
        "key",
        "password",
        "pword",
        "passwd",
        "secret",
        "token",
    ];
    let lower = name.to_ascii_lowercase();
    let tokens: Vec<&str> = lower.split('_').collect();
    let hit = |words: &[&str]| {
        tokens.iter().enumerate().any(|(i, t)| {
            words.iter().any(|w| {
                *t == *w
                    || (i + 1 == tokens.len()
                        && t.strip_prefix(w).is_some_and(|d| {
                            !d.is_empty() && d.chars().all(|c| c.is_ascii_digit())
                        }))
            })
        })
    };
    hit(DENY) && !hit(&["public"])
}

impl Lowerer<'_> {
    /// Lints that concern CMD, ENTRYPOINT and HEALTHCHECK, run before the
    /// instruction is applied so their warnings come first.
    pub(super) fn config_checks(&mut self, st: &mut StageState, cmd: &Command) {
        let span = cmd.span;
        let once = match &cmd.instruction {
            Instruction::Cmd(_) => Some("CMD"),
            Instruction::Entrypoint(_) => Some("ENTRYPOINT"),
            Instruction::Healthcheck(_) => Some("HEALTHCHECK"),
            _ => None,
        };
        if let Some(kw) = once {
            if let Some(prev) = st.used_once.insert(kw, span) {
                self.warn(
                    "MultipleInstructionsDisallowed",
                    prev,
                    format!("Multiple {kw} instructions should not be used in the same stage because only the last one will be used"),
                );
            }
        }
        if let Instruction::Cmd(c) | Instruction::Entrypoint(c) = &cmd.instruction {
            if c.prepend_shell && st.config.shell.is_empty() {
                self.warn(
                    "JSONArgsRecommended",
                    span,
                    format!(
                        "JSON arguments recommended for {} to prevent unintended behavior related to OS signals",
                        once.unwrap_or_default()
                    ),
                );
            }
        }
    }

    pub(super) fn apply_env(
        &mut self,
        st: &mut StageState,
        pairs: &[(String, String)],
        span: Span,
    ) -> Result<()> {
        let mut msg = String::from("ENV");
        let mut expanded = Vec::new();
        for (k, v) in pairs {
            let k = self.expand(k, &st.env, &st.args, span)?;
            let v = self.expand(v, &st.env, &st.args, span)?;
            expanded.push((k, v));
        }
        for (k, v) in expanded {
            if looks_secret(&k) {
                self.warn(
                    "SecretsUsedInArgOrEnv",
                    span,
                    format!("Do not use ARG or ENV instructions for sensitive data (ENV {k:?})"),
                );
            }
            st.config.set_env(&k, &v);
            set_pair(&mut st.env, &k, &v);
            msg.push_str(&format!(" {k}={v}"));
        }
        Self::history(st, msg, false);
        Ok(())
    }

    pub(super) fn apply_label(
        &mut self,
        st: &mut StageState,
        pairs: &[(String, String)],
        span: Span,
    ) -> Result<()> {
        let mut msg = String::from("LABEL");
        for (k, v) in pairs {
            let k = self.expand(k, &st.env, &st.args, span)?;
            let v = self.expand(v, &st.env, &st.args, span)?;
            msg.push_str(&format!(" {k}={v}"));
            st.config.labels.insert(k, v);
        }
        Self::history(st, msg, false);
        Ok(())
    }

    pub(super) fn apply_maintainer(st: &mut StageState, m: &str) {
        st.config.author = m.to_string();
        Self::history(st, format!("MAINTAINER {m}"), false);
    }

    /// ARG inside a stage: a `--build-arg` wins, then the declared default
    /// (expanded), then the value of a global ARG of that name.
    pub(super) fn apply_arg(
        &mut self,
        st: &mut StageState,
        pairs: &[(String, Option<String>)],
        span: Span,
    ) -> Result<()> {
        let mut parts = Vec::new();
        for (k, default) in pairs {
            if looks_secret(k) {
                self.warn(
                    "SecretsUsedInArgOrEnv",
                    span,
                    format!("Do not use ARG or ENV instructions for sensitive data (ARG {k:?})"),
                );
            }
            let mut value = default.clone();
            let from_build_arg = self.opts.build_args.get(k).cloned();
            if value.is_none() && from_build_arg.is_none() {
                value = self
                    .global_args
                    .iter()
                    .find(|(gk, _)| gk == k)
                    .map(|(_, v)| v.clone());
            } else if let Some(b) = from_build_arg {
                value = Some(b);
            } else if let Some(d) = &value {
                value = Some(self.expand(d, &st.env, &st.args, span)?);
            }
            if let Some(v) = &value {
                set_pair(&mut st.env, k, v);
                parts.push(format!("{k}={v}"));
            } else {
                parts.push(k.clone());
            }
            st.args.push((k.clone(), value));
        }
        Self::history(st, format!("ARG {}", parts.join(" ")), false);
        Ok(())
    }

    pub(super) fn apply_cmd(st: &mut StageState, c: &CommandLine) {
        let args = Self::command_args(&st.config, c);
        st.config.cmd = Some(args.clone());
        st.config.args_escaped = true;
        st.cmd_set = true;
        Self::history(st, format!("CMD {}", go_quote_list(&args)), false);
    }

    pub(super) fn apply_entrypoint(st: &mut StageState, c: &CommandLine) {
        let args = Self::command_args(&st.config, c);
        // `ENTRYPOINT []` removes the entrypoint (BuildKit keeps nil there).
        st.config.entrypoint = if args.is_empty() {
            None
        } else {
            Some(args.clone())
        };
        if !st.cmd_set {
            st.config.cmd = None;
        }
        Self::history(st, format!("ENTRYPOINT {}", go_quote_list(&args)), false);
    }

    pub(super) fn apply_shell(st: &mut StageState, sh: &[String]) {
        st.config.shell = sh.to_vec();
        Self::history(st, format!("SHELL {}", go_list(sh)), false);
    }

    pub(super) fn apply_healthcheck(st: &mut StageState, h: &instructions::Health) {
        let hc = Healthcheck {
            test: h.test.clone(),
            interval: h.interval,
            timeout: h.timeout,
            start_period: h.start_period,
            start_interval: h.start_interval,
            retries: h.retries,
        };
        let msg = format!(
            "HEALTHCHECK &{{{} {} {} {} {} {}}}",
            go_quote_list(&hc.test),
            go_quote(&go_duration(hc.interval)),
            go_quote(&go_duration(hc.timeout)),
            go_quote(&go_duration(hc.start_period)),
            go_quote(&go_duration(hc.start_interval)),
            go_quote_rune(hc.retries),
        );
        st.config.healthcheck = Some(hc);
        Self::history(st, msg, false);
    }

    pub(super) fn apply_expose(
        &mut self,
        st: &mut StageState,
        specs: &[String],
        span: Span,
    ) -> Result<()> {
        let mut ports = BTreeSet::new();
        for p in specs {
            let words = self
                .lexer
                .process_words(p, &st.env)
                .map_err(|e| self.err(ErrorKind::Expansion, span, e.to_string()))?;
            for w in words {
                for port in
                    parse_ports(&w).map_err(|m| self.err(ErrorKind::Instruction, span, m))?
                {
                    ports.insert(port);
                }
            }
        }
        let listed: Vec<String> = ports.iter().map(|p| format!("{p}:{{}}")).collect();
        st.config.exposed_ports.extend(ports);
        Self::history(st, format!("EXPOSE map[{}]", listed.join(" ")), false);
        Ok(())
    }

    pub(super) fn apply_user(&mut self, st: &mut StageState, u: &str, span: Span) -> Result<()> {
        let u = self.expand(u, &st.env, &st.args, span)?;
        st.config.user = u.clone();
        Self::history(st, format!("USER {u}"), false);
        Ok(())
    }

    pub(super) fn apply_volume(
        &mut self,
        st: &mut StageState,
        vols: &[String],
        span: Span,
    ) -> Result<()> {
        let mut out = Vec::new();
        for v in vols {
            let v = self.expand(v, &st.env, &st.args, span)?;
            if v.is_empty() {
                return Err(self.err(
                    ErrorKind::Instruction,
                    span,
                    "VOLUME specified can not be an empty string",
                ));
            }
            st.config.volumes.insert(v.clone());
            out.push(v);
        }
        Self::history(st, format!("VOLUME {}", go_list(&out)), false);
        Ok(())
    }

    pub(super) fn apply_stop_signal(
        &mut self,
        st: &mut StageState,
        sig: &str,
        span: Span,
    ) -> Result<()> {
        let sig = self.expand(sig, &st.env, &st.args, span)?;
        if !valid_signal(&sig) {
            return Err(self.err(
                ErrorKind::Instruction,
                span,
                format!("invalid signal: {sig}"),
            ));
        }
        st.config.stop_signal = sig.clone();
        Self::history(st, format!("STOPSIGNAL {sig}"), false);
        Ok(())
    }

    /// Only recorded: the triggers run in the stages built on this one
    /// (see `trigger_commands` in stages.rs).
    pub(super) fn apply_onbuild(st: &mut StageState, expr: &str) {
        st.config.on_build.push(expr.to_string());
    }

    pub(super) fn apply_workdir(
        &mut self,
        st: &mut StageState,
        w: &str,
        span: Span,
        label: String,
    ) -> Result<()> {
        let w = self.expand(w, &st.env, &st.args, span)?;
        if !st.workdir_set && !w.starts_with('/') {
            self.warn(
                "WorkdirRelativePath",
                span,
                format!(
                    "Relative workdir {w:?} can have unexpected results if the base image changes"
                ),
            );
        }
        st.workdir_set = true;
        let wd = relative_to_workdir(&st.config.working_dir, &w);
        let wd = if wd.len() > 1 {
            wd.trim_end_matches('/').to_string()
        } else {
            wd
        };
        st.config.working_dir = wd.clone();
        let layer = wd != "/";
        if layer {
            let chown = (!st.config.user.is_empty()).then(|| st.config.user.clone());
            st.root = self.add_vertex(
                Op::File(FileOp {
                    root: Some(0),
                    actions: vec![FileAction::Mkdir {
                        path: wd.clone(),
                        mode: 0o755,
                        make_parents: true,
                        chown,
                    }],
                    owner_from: None,
                }),
                vec![st.root],
                label,
                Some(span),
            );
        }
        Self::history(st, format!("WORKDIR {wd}"), layer);
        Ok(())
    }

    fn command_args(config: &ImageConfig, c: &CommandLine) -> Vec<String> {
        if c.prepend_shell {
            Self::with_shell(config, &c.args)
        } else {
            c.args.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_quotes() {
        assert_eq!(go_duration(5_000_000_000), "5s");
        assert_eq!(go_duration(90_000_000_000), "1m30s");
        assert_eq!(go_duration(3_600_000_000_000), "1h0m0s");
        assert_eq!(go_duration(1_500_000_000), "1.5s");
        assert_eq!(go_duration(500_000_000), "500ms");
        assert_eq!(go_quote_rune(3), "'\\x03'");
        assert_eq!(go_quote_rune(65), "'A'");
    }

    #[test]
    fn secret_names() {
        for n in [
            "API_KEY",
            "GITHUB_TOKEN",
            "password",
            "AWS_SECRET_ACCESS_KEY",
            "KEY2",
            "auth",
        ] {
            assert!(looks_secret(n), "{n}");
        }
        for n in [
            "KEYS",
            "MONKEY",
            "PUBLIC_KEY",
            "TOKENIZER",
            "KEY2_X",
            "PATH",
        ] {
            assert!(!looks_secret(n), "{n}");
        }
    }

    #[test]
    fn paths_ports_signals() {
        assert_eq!(relative_to_workdir("/app", "sub/"), "/app/sub/");
        assert_eq!(relative_to_workdir("/app", "."), "/app/");
        assert_eq!(relative_to_workdir("", "x"), "/x");
        assert_eq!(relative_to_workdir("/a", "/b/../c"), "/c");
        assert_eq!(parse_ports("80").unwrap(), vec!["80/tcp"]);
        assert_eq!(parse_ports("53/udp").unwrap(), vec!["53/udp"]);
        assert_eq!(parse_ports("8000-8002").unwrap().len(), 3);
        assert!(parse_ports("80/xyz").is_err());
        assert!(valid_signal("SIGTERM") && valid_signal("9") && valid_signal("SIGRTMIN+3"));
        assert!(!valid_signal("SIGFOO"));
    }
}
