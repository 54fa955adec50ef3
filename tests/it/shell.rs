//! Shell ergonomics: completion scripts, man pages, the log filter.

use std::process::Command;

use crate::util::Hoist;
use hoist_testutil::cli::run;

/// Every subcommand name a completion script must offer.
const SUBCOMMANDS: &[&str] = &["build", "pull", "push", "login", "completion", "man"];

#[test]
fn bash_completion_loads_and_completes_a_subcommand() {
    hoist_testutil::require_program!("bash");
    let h = Hoist::new();
    let script = h.path("hoist.bash");
    std::fs::write(&script, h.ok(&["completion", "bash"])).unwrap();
    // What bash does on `hoist pu<TAB>`: the function the script registered
    // with `complete` fills COMPREPLY.
    let out = hoist_testutil::run_ok(Command::new("bash").arg("-c").arg(format!(
        "set -e; source '{}'; complete -p hoist; \
         COMP_WORDS=(hoist pu); COMP_CWORD=1; COMP_LINE='hoist pu'; COMP_POINT=8; \
         _hoist hoist pu hoist; echo \"reply: ${{COMPREPLY[*]}}\"",
        script.display()
    )));
    assert!(out.contains("-F _hoist hoist"), "{out}");
    let reply: Vec<&str> = out
        .lines()
        .find_map(|l| l.strip_prefix("reply: "))
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(reply, ["pull", "push"], "{out}");
}

#[test]
fn completions_are_generated_for_every_shell() {
    let h = Hoist::new();
    for shell in ["bash", "zsh", "fish", "powershell", "elvish"] {
        let script = h.ok(&["completion", shell]);
        for sub in SUBCOMMANDS {
            assert!(script.contains(sub), "{shell}: no `{sub}` in\n{script}");
        }
        // The shells that are installed parse what we generate.
        let checker = match shell {
            "zsh" => Some(("zsh", "-n")),
            "fish" => Some(("fish", "--no-execute")),
            _ => None,
        };
        if let Some((program, flag)) = checker {
            if hoist_testutil::which(program).is_none() {
                hoist_testutil::cannot_run(&format!("checking {shell}'s script needs `{program}`"));
                continue;
            }
            let file = h.path(&format!("hoist.{shell}"));
            std::fs::write(&file, &script).unwrap();
            hoist_testutil::run_ok(Command::new(program).arg(flag).arg(&file));
        }
    }
    let bad = h.run(&["completion", "tcsh"]);
    assert_eq!(bad.code(), 2, "{}", bad.stderr);
}

#[test]
fn man_pages_render_with_man() {
    hoist_testutil::require_program!("man");
    let h = Hoist::new();
    let dir = h.path("man1");
    h.ok(&["man", dir.to_str().unwrap()]);
    for page in [
        "hoist.1",
        "hoist-pull.1",
        "hoist-build.1",
        "hoist-autobuild-serve.1",
    ] {
        assert!(dir.join(page).is_file(), "{page} missing");
    }
    let text = hoist_testutil::run_ok(
        Command::new("man")
            .arg("-l")
            .arg(dir.join("hoist-pull.1"))
            .env("MANPAGER", "cat")
            .env("MANWIDTH", "100"),
    );
    assert!(
        text.contains("hoist-pull - Download an image from a registry"),
        "{text}"
    );
    assert!(text.contains("--platform"), "{text}");
}

/// A fresh store migrates its database and says so at debug level from
/// `hoist_cache`: a message only a filter that lets it through shows.
#[test]
fn rust_log_and_hoist_log_filter_the_log() {
    const LINE: &str = "migrated metadata database";
    let stderr_with = |vars: &[(&str, &str)], args: &[&str]| {
        let h = Hoist::new();
        let mut command = h.command();
        command.env_remove("RUST_LOG").env_remove("HOIST_LOG");
        for (k, v) in vars {
            command.env(k, v);
        }
        let r = run(command.args(args).arg("images"), None);
        r.assert_ok();
        r.stderr
    };
    assert!(!stderr_with(&[], &[]).contains(LINE));
    assert!(stderr_with(&[("RUST_LOG", "hoist_cache=debug")], &[]).contains(LINE));
    assert!(stderr_with(&[("HOIST_LOG", "debug")], &[]).contains(LINE));
    // HOIST_LOG is hoist's own and wins over RUST_LOG; --log-level over both.
    let quiet = stderr_with(&[("HOIST_LOG", "warn"), ("RUST_LOG", "debug")], &[]);
    assert!(!quiet.contains(LINE), "{quiet}");
    let quiet = stderr_with(&[("RUST_LOG", "debug")], &["--log-level", "warn"]);
    assert!(!quiet.contains(LINE), "{quiet}");
    // Another crate's target filters hoist_cache's message out.
    assert!(!stderr_with(&[("RUST_LOG", "hoist_registry=debug")], &[]).contains(LINE));

    let h = Hoist::new();
    let r = run(h.command().env("RUST_LOG", "[\x1b").arg("images"), None);
    assert_eq!(r.code(), 2, "{}", r.stderr);
    assert!(
        r.stderr.starts_with("error: invalid RUST_LOG `[\\u{1b}`"),
        "{}",
        r.stderr
    );
}
