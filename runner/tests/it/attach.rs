//! `Runner::run_attached`: stdin copied through a pipe, a new pty as the
//! controlling terminal, signals and resizes through `Control`, and exec
//! failures told apart (Docker's 126 and 127).

use std::os::fd::AsFd;

use hoist_runner::{Attach, Control, ExitStatus, RunError, Stream, WindowSize};
use libtest_mimic::Failed;

use crate::util::{Env, Root};
use crate::{check, check_eq, need_root};

fn embedded() -> Env {
    Env {
        name: "embedded".into(),
        runtime: hoist_runner::Runtime::Embedded,
        unavailable: None,
    }
}

/// Runs `script` attached as `attach` says; (status, stdout, stderr).
fn attached(
    root: &Root,
    script: &str,
    attach: Attach<'_>,
) -> Result<(ExitStatus, String, String), Failed> {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let result = embedded()
        .runner()
        .run_attached(
            &root.spec(script),
            &mut |stream, bytes| match stream {
                Stream::Stdout => out.extend_from_slice(bytes),
                Stream::Stderr => err.extend_from_slice(bytes),
            },
            attach,
        )
        .map_err(|e| Failed::from(e.to_string()))?;
    Ok((
        result.status,
        String::from_utf8_lossy(&out).into_owned(),
        String::from_utf8_lossy(&err).into_owned(),
    ))
}

pub fn stdin_pipe_tty_and_control() -> Result<(), Failed> {
    need_root!();
    let root = Root::new();
    // stdin: a file's bytes, then EOF.
    let input = tempfile::tempfile().unwrap();
    std::io::Write::write_all(&mut &input, b"one\ntwo\n").unwrap();
    std::io::Seek::rewind(&mut &input).unwrap();
    let (status, out, _) = attached(
        &root,
        "cat; echo end; test -t 0 || echo no-tty",
        Attach {
            stdin: Some(input.as_fd()),
            ..Attach::default()
        },
    )?;
    check_eq!(status, ExitStatus::Exited(0));
    check_eq!(out, "one\ntwo\nend\nno-tty\n");

    // A terminal of the given size, the session's controlling terminal.
    let (status, out, err) = attached(
        &root,
        "test -t 0 && test -t 2 && echo tty; stty size; (exec 3</dev/tty) && echo ctty; exit 3",
        Attach {
            tty: Some(WindowSize {
                rows: 33,
                cols: 101,
            }),
            ..Attach::default()
        },
    )?;
    check_eq!(status, ExitStatus::Exited(3));
    check_eq!(out.replace('\r', ""), "tty\n33 101\nctty\n");
    // stderr is the terminal too: nothing comes as Stream::Stderr.
    check_eq!(err, "");

    // A signal through Control reaches the step's trap: sent once the
    // step says its trap is set.
    let control = Control::new().map_err(|e| Failed::from(e.to_string()))?;
    let mut out = Vec::new();
    let result = embedded()
        .runner()
        .run_attached(
            &root.spec("trap 'echo got-usr1; exit 5' USR1; echo ready; while :; do sleep 1; done"),
            &mut |_, bytes| {
                out.extend_from_slice(bytes);
                if bytes.ends_with(b"ready\n") {
                    control.signal(libc::SIGUSR1);
                }
            },
            Attach {
                control: Some(&control),
                ..Attach::default()
            },
        )
        .map_err(|e| Failed::from(e.to_string()))?;
    check_eq!(result.status, ExitStatus::Exited(5));
    check_eq!(String::from_utf8_lossy(&out), "ready\ngot-usr1\n");
    Ok(())
}

pub fn exec_failures_say_not_found_or_not_executable() -> Result<(), Failed> {
    need_root!();
    let root = Root::new();
    let runner = embedded().runner();
    let mut spec = root.spec("true");
    for (argv0, want_not_found) in [
        ("no-such-program", true),
        ("/no/such/program", true),
        ("/etc/passwd", false),
        ("/etc", false),
    ] {
        spec.argv = vec![argv0.into()];
        match runner.run(&spec, &mut |_, _| {}) {
            Err(RunError::Exec { not_found, message }) => {
                check_eq!(not_found, want_not_found);
                check!(message.contains(argv0), "{message}");
            }
            other => return Err(format!("{argv0}: {other:?}").into()),
        }
    }
    Ok(())
}
