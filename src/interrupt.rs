//! Ctrl-C for long-running commands: SIGINT and SIGTERM cancel a token instead
//! of killing the process, so that the work in flight can stop cleanly (steps
//! killed through the runner, active snapshots removed, nothing recorded).
//!
//! A third signal, or any signal once the guarded phase is over, exits at once
//! with status 130, as an unhandled SIGINT would end the process.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use hoist_builder::CancellationToken;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// The exit status of a command stopped by SIGINT (128 + 2, the shell's rule).
pub const EXIT_INTERRUPTED: u8 = 130;

/// The command was interrupted (SIGINT/SIGTERM); `main` exits with 130.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Interrupted(pub String);

/// While alive, SIGINT and SIGTERM cancel a token; after it, they exit with 130.
///
/// The watching thread outlives the guard on purpose: signal handlers cannot
/// be put back to the default action once installed (signal-hook-registry
/// leaves them ignoring), so the thread goes on ending the process the way the
/// default action would.
pub struct Guard {
    active: Arc<AtomicBool>,
}

impl Guard {
    /// Starts watching; `notify` is told once, at the first signal.
    pub fn install(
        cancel: CancellationToken,
        notify: impl Fn(&str) + Send + 'static,
    ) -> std::io::Result<Guard> {
        let mut signals = Signals::new([SIGINT, SIGTERM])?;
        let active = Arc::new(AtomicBool::new(true));
        let watching = active.clone();
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                let mut count = 0;
                for signal in signals.forever() {
                    count += 1;
                    if !watching.load(Ordering::SeqCst) || count >= 3 {
                        std::process::exit(i32::from(EXIT_INTERRUPTED));
                    }
                    if count == 1 {
                        let name = if signal == SIGTERM {
                            "SIGTERM"
                        } else {
                            "SIGINT"
                        };
                        notify(&format!(
                            "{name}: cancelling the build (stopping running steps; \
                             a third signal exits at once)"
                        ));
                    }
                    cancel.cancel();
                }
            })?;
        Ok(Guard { active })
    }

    /// The guarded phase is over: a signal from now on ends the process at
    /// once (the handlers stay registered, so this is how they behave).
    pub fn release(&self) {
        self.active.store(false, Ordering::SeqCst);
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.release();
    }
}
