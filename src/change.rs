//! `--change` instructions, as `docker import --change` accepts them:
//! CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, STOPSIGNAL, USER, VOLUME, WORKDIR.

use anyhow::{bail, Context as _};
use oci_spec::image::Config;

/// Apply `changes` in order to `config`.
pub fn apply(config: &mut Config, changes: &[String]) -> anyhow::Result<()> {
    let mut cmd_set = false;
    for change in changes {
        apply_one(config, change, &mut cmd_set)
            .with_context(|| format!("invalid `--change {change}`"))?;
    }
    Ok(())
}

fn apply_one(config: &mut Config, change: &str, cmd_set: &mut bool) -> anyhow::Result<()> {
    let change = change.trim();
    let (word, rest) = change
        .split_once(|c: char| c.is_whitespace())
        .map(|(w, r)| (w, r.trim()))
        .unwrap_or((change, ""));
    let instruction = word.to_ascii_uppercase();
    if rest.is_empty() {
        bail!("{instruction} needs an argument");
    }
    match instruction.as_str() {
        "CMD" => {
            config.set_cmd(Some(command_form(rest)?));
            *cmd_set = true;
        }
        "ENTRYPOINT" => {
            config.set_entrypoint(Some(command_form(rest)?));
            // As in a Dockerfile: ENTRYPOINT drops an inherited CMD unless a
            // CMD was given in this same list.
            if !*cmd_set {
                config.set_cmd(None);
            }
        }
        "ENV" => {
            let mut env = config.env().clone().unwrap_or_default();
            for (key, value) in key_values(rest, "ENV")? {
                env.retain(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) != key);
                env.push(format!("{key}={value}"));
            }
            config.set_env(Some(env));
        }
        "LABEL" => {
            let mut labels = config.labels().clone().unwrap_or_default();
            for (key, value) in key_values(rest, "LABEL")? {
                labels.insert(key, value);
            }
            config.set_labels(Some(labels));
        }
        "EXPOSE" => {
            let mut ports = config.exposed_ports().clone().unwrap_or_default();
            for port in rest.split_whitespace() {
                let (number, protocol) = port.split_once('/').unwrap_or((port, "tcp"));
                let protocol = protocol.to_ascii_lowercase();
                let valid_number = number
                    .split_once('-')
                    .map_or(vec![number], |(a, b)| vec![a, b])
                    .iter()
                    .all(|n| n.parse::<u16>().is_ok());
                if !valid_number || !matches!(protocol.as_str(), "tcp" | "udp" | "sctp") {
                    bail!("invalid port `{port}` (expected PORT[/tcp|udp|sctp])");
                }
                let port = format!("{number}/{protocol}");
                if !ports.contains(&port) {
                    ports.push(port);
                }
            }
            config.set_exposed_ports(Some(ports));
        }
        "VOLUME" => {
            let mut volumes = config.volumes().clone().unwrap_or_default();
            let paths: Vec<String> = if rest.starts_with('[') {
                serde_json::from_str(rest).context("VOLUME takes a JSON array of strings")?
            } else {
                rest.split_whitespace().map(str::to_string).collect()
            };
            for path in paths {
                if !volumes.contains(&path) {
                    volumes.push(path);
                }
            }
            config.set_volumes(Some(volumes));
        }
        "WORKDIR" => {
            let dir = if rest.starts_with('/') {
                rest.to_string()
            } else {
                let base = config.working_dir().clone().unwrap_or_else(|| "/".to_string());
                format!("{}/{rest}", base.trim_end_matches('/'))
            };
            config.set_working_dir(Some(dir));
        }
        "USER" => {
            config.set_user(Some(rest.to_string()));
        }
        "STOPSIGNAL" => {
            config.set_stop_signal(Some(rest.to_string()));
        }
        "HEALTHCHECK" | "ONBUILD" | "SHELL" => {
            bail!("{instruction} is not supported by `--change` yet (supported: CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, STOPSIGNAL, USER, VOLUME, WORKDIR)")
        }
        _ => bail!(
            "unknown instruction `{word}` (supported: CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, STOPSIGNAL, USER, VOLUME, WORKDIR)"
        ),
    }
    Ok(())
}

/// `["sh","-c","x"]` (exec form) or `echo hi` (shell form, run by /bin/sh -c).
fn command_form(rest: &str) -> anyhow::Result<Vec<String>> {
    if rest.starts_with('[') {
        if let Ok(argv) = serde_json::from_str::<Vec<String>>(rest) {
            return Ok(argv);
        }
    }
    Ok(vec![
        "/bin/sh".to_string(),
        "-c".to_string(),
        rest.to_string(),
    ])
}

/// `k=v k2="two words"` or the legacy single pair `k value with spaces`.
fn key_values(rest: &str, instruction: &str) -> anyhow::Result<Vec<(String, String)>> {
    let words = split_words(rest)?;
    let first_has_equals = words.first().is_some_and(|w| w.contains('='));
    if !first_has_equals {
        let (key, value) = rest
            .split_once(char::is_whitespace)
            .map(|(k, v)| (k, v.trim()))
            .unwrap_or((rest, ""));
        if value.is_empty() {
            bail!("{instruction} needs KEY=VALUE (or KEY VALUE)");
        }
        let value = split_words(value)?.join(" ");
        return Ok(vec![(key.to_string(), value)]);
    }
    let mut pairs = Vec::new();
    for word in words {
        let Some((key, value)) = word.split_once('=') else {
            bail!("`{word}` is not KEY=VALUE");
        };
        if key.is_empty() {
            bail!("`{word}` has an empty key");
        }
        pairs.push((key.to_string(), value.to_string()));
    }
    Ok(pairs)
}

/// Split on whitespace, honouring double and single quotes and backslash
/// escapes (as Dockerfile key=value words do).
fn split_words(s: &str) -> anyhow::Result<Vec<String>> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' | '\'' => {
                in_word = true;
                let quote = c;
                loop {
                    match chars.next() {
                        Some(ch) if ch == quote => break,
                        Some('\\') if quote == '"' => {
                            if let Some(escaped) = chars.next() {
                                word.push(escaped);
                            }
                        }
                        Some(ch) => word.push(ch),
                        None => bail!("unterminated quote in `{s}`"),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(escaped) = chars.next() {
                    word.push(escaped);
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn applied(changes: &[&str]) -> Config {
        let mut config = Config::default();
        apply(
            &mut config,
            &changes.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )
        .unwrap();
        config
    }

    #[test]
    fn every_instruction() {
        let c = applied(&[
            r#"CMD ["sh", "-c", "echo hi"]"#,
            "ENV A=1 B=\"two words\"",
            "ENV C three four",
            "ENV A=replaced",
            "WORKDIR /srv",
            "WORKDIR app",
            "USER 1000:1000",
            "EXPOSE 80 53/udp",
            "LABEL org.example.x=y",
            r#"VOLUME ["/data"]"#,
            "STOPSIGNAL SIGTERM",
        ]);
        assert_eq!(c.cmd().as_ref().unwrap(), &["sh", "-c", "echo hi"]);
        assert_eq!(
            c.env().as_ref().unwrap(),
            &["B=two words", "C=three four", "A=replaced"]
        );
        assert_eq!(c.working_dir().as_deref(), Some("/srv/app"));
        assert_eq!(c.user().as_deref(), Some("1000:1000"));
        assert_eq!(c.exposed_ports().as_ref().unwrap(), &["80/tcp", "53/udp"]);
        assert_eq!(c.labels().as_ref().unwrap()["org.example.x"], "y");
        assert_eq!(c.volumes().as_ref().unwrap(), &["/data"]);
        assert_eq!(c.stop_signal().as_deref(), Some("SIGTERM"));
    }

    #[test]
    fn shell_form_and_entrypoint_resets_inherited_cmd() {
        let mut config = Config::default();
        config.set_cmd(Some(vec!["inherited".to_string()]));
        apply(&mut config, &["ENTRYPOINT echo hi".to_string()]).unwrap();
        assert_eq!(
            config.entrypoint().as_ref().unwrap(),
            &["/bin/sh", "-c", "echo hi"]
        );
        assert!(config.cmd().is_none());
        let c = applied(&["CMD x", r#"ENTRYPOINT ["/bin/e"]"#]);
        assert_eq!(c.cmd().as_ref().unwrap(), &["/bin/sh", "-c", "x"]);
    }

    #[test]
    fn bad_changes_are_refused_with_the_reason() {
        let mut config = Config::default();
        let err = apply(&mut config, &["RUNN x".to_string()]).unwrap_err();
        assert_eq!(format!("{err:#}"), "invalid `--change RUNN x`: unknown instruction `RUNN` (supported: CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, STOPSIGNAL, USER, VOLUME, WORKDIR)");
        assert!(apply(&mut config, &["EXPOSE http".to_string()]).is_err());
        assert!(apply(&mut config, &["CMD".to_string()]).is_err());
        assert!(apply(&mut config, &["ENV A=\"open".to_string()]).is_err());
    }
}
