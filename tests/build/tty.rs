//! `--progress tty` on a real pseudo-terminal (util-linux `script`).

use std::process::Command;

use super::common::Env;

/// Removes ANSI escape sequences (those that move the cursor between the
/// lines of the live view become line breaks) and carriage returns.
fn strip_escapes(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => {
                // CSI: ESC [ params final-byte; other escapes are two characters.
                // Colours (final `m`) vanish; cursor moves break the line.
                if chars.peek() == Some(&'[') {
                    chars.next();
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            if c != 'm' {
                                out.push('\n');
                            }
                            break;
                        }
                    }
                } else {
                    chars.next();
                    out.push('\n');
                }
            }
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

/// `hoist build --progress tty` with stdout and stderr on a terminal.
fn build_on_a_tty(env: &Env, tag: &str) -> String {
    let command = format!(
        "{} --root {} build --progress tty -t {tag} {}",
        env!("CARGO_BIN_EXE_hoist"),
        env.root.path().display(),
        env.context.path().display()
    );
    let output = Command::new("script")
        .args(["-qefc", &command, "/dev/null"])
        .env("TERM", "xterm-256color")
        .env("COLUMNS", "120")
        .output()
        .unwrap();
    let text = strip_escapes(&String::from_utf8_lossy(&output.stdout));
    assert!(output.status.success(), "{text}");
    text
}

#[test]
fn tty_progress_collapses_finished_steps_and_ends_with_the_summary() {
    hoist_testutil::require_root!();
    hoist_testutil::require_program!("script");
    let env = Env::new();
    env.write("f.txt", "hello\n");
    // The RUN prints, then stays running long enough for the view to be
    // redrawn (10 times a second) with its output under it.
    env.dockerfile(
        "FROM busybox\nRUN echo line-one && echo line-two && sleep 2\nCOPY f.txt /f.txt\n",
    );

    let first = build_on_a_tty(&env, "tty:1");
    // Not the plain renderer: no numbered `#N` lines.
    assert!(!first.lines().any(|l| l.starts_with("#1 ")), "{first}");
    let collapsed = |text: &str, name: &str| -> String {
        text.lines()
            .find(|l| l.starts_with("=> ") && l.contains(name))
            .unwrap_or_else(|| panic!("no collapsed line for {name} in:\n{text}"))
            .to_owned()
    };
    // While it ran, its live line showed the tail of its output.
    assert!(
        first.lines().any(|l| l
            .split("line-one")
            .skip(1)
            .any(|rest| rest.trim_start().starts_with("line-two"))),
        "no output tail in:\n{first}"
    );
    // The time follows the name (the live view may be redrawn right after it).
    let time_after = |line: &str, name: &str| -> bool {
        let rest = line.split(name).nth(1).unwrap_or("").trim_start();
        let time: String = rest
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == 'm' || *c == 's')
            .collect();
        time.ends_with('s') && time.starts_with(|c: char| c.is_ascii_digit())
    };
    let run = collapsed(&first, "RUN echo line-one");
    assert!(!run.contains("CACHED"), "{run}");
    assert!(time_after(&run, "sleep 2"), "a time after the name: {run}");
    let copy = collapsed(&first, "COPY f.txt /f.txt");
    assert!(time_after(&copy, "COPY f.txt /f.txt"), "{copy}");
    assert!(first.contains("build summary (success):"), "{first}");
    assert!(first.contains("total: "), "{first}");

    let again = build_on_a_tty(&env, "tty:2");
    assert!(
        collapsed(&again, "RUN echo line-one").starts_with("=> CACHED "),
        "{again}"
    );
    assert!(collapsed(&again, "COPY f.txt").starts_with("=> CACHED "));
    assert!(again.contains(" 0 run"), "{again}");
}
