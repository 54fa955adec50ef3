//! Real git repositories made with the git CLI.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs git in `dir` (as a test identity, `main` as the default branch,
/// local `file://` transport allowed) and returns its trimmed stdout;
/// panics with both streams when it fails.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=Test", "-c", "user.email=test@example.com"])
        .args([
            "-c",
            "init.defaultBranch=main",
            "-c",
            "protocol.file.allow=always",
        ])
        .args(args)
        .output()
        .expect("run git");
    crate::ok(out, &format!("git {args:?}")).trim().to_string()
}

/// A bare repository and a work tree whose `origin` it is, with nothing
/// committed yet.
pub struct GitRepo {
    /// The bare repository (what servers clone).
    pub bare: PathBuf,
    /// The work tree commits are made in.
    pub work: PathBuf,
}

impl GitRepo {
    /// `dir/<bare>` and `dir/work`, both on branch `main`.
    pub fn init(dir: &Path, bare: &str) -> GitRepo {
        let bare = dir.join(bare);
        let work = dir.join("work");
        let path = |p: &Path| p.to_str().expect("UTF-8 temp path").to_string();
        git(dir, &["init", "-q", "--bare", "-b", "main", &path(&bare)]);
        git(dir, &["init", "-q", "-b", "main", &path(&work)]);
        git(&work, &["remote", "add", "origin", &path(&bare)]);
        GitRepo { bare, work }
    }

    /// Commits everything in the work tree with `message`; the new sha.
    pub fn commit_all(&self, message: &str) -> String {
        git(&self.work, &["add", "-A"]);
        git(&self.work, &["commit", "-q", "-m", message]);
        git(&self.work, &["rev-parse", "HEAD"])
    }

    /// `git push -q origin REFSPEC`.
    pub fn push(&self, refspec: &str) {
        git(&self.work, &["push", "-q", "origin", refspec]);
    }
}
