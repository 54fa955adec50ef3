//! The git `post-receive` hook: `hoist autobuild hook` and `install-hook`.

use std::io::BufRead;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::server::TOKEN_HEADER;
use crate::Error;

/// What the server answered for one updated ref.
#[derive(Debug, Clone, Serialize)]
pub struct HookResult {
    /// The ref.
    pub git_ref: String,
    /// The new commit.
    pub sha: String,
    /// HTTP status (202 queued, 200 nothing to build, 4xx refused).
    pub status: u16,
    /// The server's JSON answer.
    pub body: String,
}

/// Read `OLD NEW REF` lines (post-receive's stdin) and ask the server at
/// `server` (e.g. `http://127.0.0.1:9870`) to build each updated ref of
/// repository `repo`. Deleted refs are skipped. Results come back in input
/// order; an unreachable server is an error.
pub fn run_hook(
    input: impl BufRead,
    server: &str,
    repo: &str,
    token: Option<&str>,
) -> Result<Vec<HookResult>, Error> {
    let client = reqwest::blocking::Client::new();
    let url = format!("{}/trigger/{repo}", server.trim_end_matches('/'));
    let mut results = Vec::new();
    for line in input.lines() {
        let line = line.map_err(Error::HookInput)?;
        let mut fields = line.split_whitespace();
        let (Some(_old), Some(new), Some(git_ref)) = (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if new.bytes().all(|b| b == b'0') {
            continue;
        }
        let mut request = client.post(&url).json(&serde_json::json!({
            "ref": git_ref,
            "sha": new,
            "source": "hook",
        }));
        if let Some(token) = token {
            request = request.header(TOKEN_HEADER, token);
        }
        let response = request.send().map_err(|source| Error::Http {
            url: url.clone(),
            source,
        })?;
        let status = response.status().as_u16();
        let body = response.text().unwrap_or_default();
        results.push(HookResult {
            git_ref: git_ref.to_string(),
            sha: new.to_string(),
            status,
            body,
        });
    }
    Ok(results)
}

/// Quote `s` for a POSIX shell: single quotes, with `'` written as `'\''`.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Write `<git_dir>/hooks/post-receive` running
/// `PROGRAM autobuild hook --server URL --repo NAME [--secret S]` (the CLI
/// passes `std::env::current_exe()`). Mode 0755, or 0700 when it holds a
/// secret. Returns the hook's path.
pub fn install_hook(
    git_dir: &Path,
    program: &Path,
    server: &str,
    repo: &str,
    secret: Option<&str>,
) -> Result<PathBuf, Error> {
    if !git_dir.join("objects").is_dir() || !git_dir.join("HEAD").is_file() {
        return Err(Error::NotAGitDir(git_dir.to_path_buf()));
    }
    let hooks = git_dir.join("hooks");
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io {
            action: "write the post-receive hook",
            path,
            source,
        }
    };
    std::fs::create_dir_all(&hooks).map_err(io(&hooks))?;
    let mut script = String::from(
        "#!/bin/sh\n# Written by `hoist autobuild install-hook`: queue a build for each pushed ref.\n",
    );
    script.push_str(&format!(
        "exec {} autobuild hook --server {} --repo {}",
        shell_quote(&program.to_string_lossy()),
        shell_quote(server),
        shell_quote(repo)
    ));
    if let Some(s) = secret {
        script.push_str(&format!(" --secret {}", shell_quote(s)));
    }
    script.push('\n');
    let path = hooks.join("post-receive");
    let tmp = hooks.join(".post-receive.tmp");
    std::fs::write(&tmp, script).map_err(io(&tmp))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = if secret.is_some() { 0o700 } else { 0o755 };
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).map_err(io(&tmp))?;
    }
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_a_shell() {
        let hostile = "a'b $(touch /tmp/nope) `x` \"q\"";
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("printf %s {}", shell_quote(hostile)))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8(out.stdout).unwrap(), hostile);
    }
}
