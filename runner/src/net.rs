//! The default network of a step ([`NetworkMode::Default`]): a network
//! namespace of its own with egress through slirp4netns, a user-mode TCP/IP
//! stack that runs in the host's namespace and relays the step's connections
//! as ordinary sockets of an unprivileged process.
//!
//! The step sees `lo` and `tap0` (10.0.2.100/24, MTU 65520), a default route
//! via 10.0.2.2 and a resolver at 10.0.2.3 that slirp4netns forwards to the
//! host's resolvers (from the host's namespace, so a loopback resolver such
//! as systemd-resolved's 127.0.0.53 works, `--disable-host-loopback`
//! notwithstanding: checked by hand with a forwarder on 127.0.0.53 and a
//! resolv.conf naming it; that resolver's port 53 is then the one loopback
//! service a step reaches, and only through 10.0.2.3:53). It reaches what the host reaches
//! through its routes: the internet, the LAN and the host's own non-loopback
//! addresses. It does not reach the host's loopback: its own 127.0.0.1 and
//! ::1 are its own `lo`, and `--disable-host-loopback` refuses the gateway
//! alias 10.0.2.2 that would otherwise lead to the host's 127.0.0.1.
//!
//! Why slirp4netns, and not pasta or a veth pair with NAT:
//! - one mechanism as root and rootless: slirp4netns joins the step's user
//!   and network namespaces by the init's pid, so a rootless step's network
//!   namespace is owned by its user namespace like every other namespace;
//! - it touches nothing of the host: no bridge, no veth, no iptables or
//!   nftables rules, no `ip_forward` or `route_localnet` sysctl to set and
//!   leave behind, no conflict with the host's firewall; a killed hoist
//!   leaves no state, and `--exit-fd` ends slirp4netns with it;
//! - the host's loopback is shut by one flag, with no firewall rule that a
//!   host's own rules could shadow;
//! - pasta (passt) copies the host's addresses into the namespace by
//!   default, so a step connecting to the host's own address reaches itself,
//!   and it maps its gateway address to the host's loopback unless told
//!   otherwise;
//! - it runs sandboxed (`--enable-sandbox`: its own mount namespace and, as
//!   root, no capabilities but `CAP_NET_BIND_SERVICE`; `--enable-seccomp`),
//!   as Podman runs it rootless.
//!
//! The cost is throughput (every packet crosses a user-mode stack, ample for
//! package downloads with the 65520 MTU) and about 35 ms per step: ~8 ms to
//! start it and configure the interface, ~19 ms for the kernel to unregister
//! the tap device when it exits (measured with `examples/step_overhead`, see
//! `docs/runner.md`).
//!
//! [`NetworkMode::Default`]: crate::NetworkMode::Default

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::sys;

/// The resolver the step's `/etc/resolv.conf` names: slirp4netns's DNS
/// forwarder.
pub(crate) const NAMESERVER: &str = "10.0.2.3";

/// The step's interface to slirp4netns.
const TAP: &str = "tap0";

/// How long slirp4netns may take to configure the namespace.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors while giving a step its network.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// slirp4netns is not installed.
    #[error(
        "slirp4netns is not installed (it gives RUN steps their default network; \
         install the Debian package slirp4netns, or run steps with network mode none)"
    )]
    NotInstalled,
    /// slirp4netns could not be started.
    #[error("failed to start {program}")]
    Spawn {
        /// The program.
        program: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// slirp4netns ended or timed out before the namespace was configured.
    #[error("slirp4netns did not configure the step's network ({reason}): {log}")]
    NotReady {
        /// What happened.
        reason: String,
        /// What slirp4netns printed.
        log: String,
    },
}

/// A running slirp4netns serving one step's namespace. Dropping it stops
/// and reaps the process; if hoist dies instead, the closed `--exit-fd`
/// pipe ends it.
#[derive(Debug)]
pub(crate) struct Slirp {
    child: Child,
    /// Write end of the `--exit-fd` pipe: slirp4netns exits when it closes.
    exit: Option<OwnedFd>,
}

impl Slirp {
    /// Start slirp4netns for the network namespace of `pid` (and, when that
    /// process is in a user namespace of ours, through that user namespace)
    /// and wait until the interface is configured. Its output goes to `log`.
    pub(crate) fn start(pid: libc::pid_t, log: &Path) -> Result<Slirp, NetError> {
        let program = crate::run::which("slirp4netns").ok_or(NetError::NotInstalled)?;
        let spawn_err = |source| NetError::Spawn {
            program: program.clone(),
            source,
        };
        if let Err(e) = persistent_tap(pid) {
            // slirp4netns makes the device itself, as before.
            tracing::debug!(error = %e, "no persistent tap for the step's network");
        }
        let (ready_r, ready_w) = sys::pipe().map_err(spawn_err)?;
        let (exit_r, exit_w) = sys::pipe().map_err(spawn_err)?;
        let out = File::create(log).map_err(spawn_err)?;
        let err = out.try_clone().map_err(spawn_err)?;
        let mut command = Command::new(&program);
        command
            .args([
                "--configure",
                "--mtu=65520",
                "--disable-host-loopback",
                "--enable-sandbox",
                "--enable-seccomp",
            ])
            .arg(format!("--ready-fd={}", ready_w.as_raw_fd()))
            .arg(format!("--exit-fd={}", exit_r.as_raw_fd()))
            .arg(pid.to_string())
            .arg(TAP)
            // hoist's environment may hold credentials; slirp4netns needs none.
            .env_clear()
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        sys::keep_fds_on_exec(&mut command, &[ready_w.as_raw_fd(), exit_r.as_raw_fd()]);
        let child = command.spawn().map_err(spawn_err)?;
        drop((ready_w, exit_r));
        let mut slirp = Slirp {
            child,
            exit: Some(exit_w),
        };
        let not_ready = |reason: String| NetError::NotReady {
            reason,
            log: summarize_log(&std::fs::read_to_string(log).unwrap_or_default()),
        };
        let revents = sys::poll_in(&[ready_r.as_raw_fd()], READY_TIMEOUT.as_millis() as i32)
            .map_err(|e| not_ready(format!("poll: {e}")))?;
        if revents[0] == 0 {
            return Err(not_ready(format!("no answer in {READY_TIMEOUT:?}")));
        }
        let mut byte = [0u8; 1];
        match File::from(ready_r).read(&mut byte) {
            Ok(1) if byte[0] == b'1' => Ok(slirp),
            _ => {
                // The ready pipe closes without a byte when slirp4netns
                // exits; closing the exit pipe ends it if it has not yet.
                slirp.exit.take();
                let status = slirp.child.wait();
                Err(not_ready(match status {
                    Ok(s) => format!("it exited: {s}"),
                    Err(e) => format!("it closed its ready pipe: {e}"),
                }))
            }
        }
    }
}

/// Makes the step's `tap0` (in the network namespace of `pid`) before
/// slirp4netns opens it, as a persistent device. slirp4netns then finds it
/// there, and the device goes when the namespace does, in the kernel's own
/// time. Made by slirp4netns, it went when slirp4netns exited: unregistering
/// a network device waits for RCU grace periods, and killing slirp4netns took
/// 13 to 40 ms here where starting it takes 3 (0.3 ms with the device made
/// beforehand). Each step ran that long more. Needs `CAP_NET_ADMIN` over the
/// namespace and `CAP_SYS_ADMIN` to enter it: a rootless hoist has neither, and
/// slirp4netns makes the device as before.
fn persistent_tap(pid: libc::pid_t) -> std::io::Result<()> {
    let ns = File::open(format!("/proc/{pid}/ns/net"))?;
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                // Only this thread enters the namespace, and it ends here.
                sys::setns_net(&ns)?;
                // Its descriptors in a table of its own: a process another
                // thread makes meanwhile (a step's init waiting for its
                // go-ahead, a spawn not yet at exec) would otherwise get a
                // copy of the tun descriptor and keep the device attached,
                // and slirp4netns could not take it (`TUNSETIFF`: busy).
                sys::unshare(libc::CLONE_FILES)?;
                let tun = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open("/dev/net/tun")?;
                sys::persistent_tap(&tun, TAP)
            })
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("the thread panicked")))
    })
}

impl Drop for Slirp {
    fn drop(&mut self) {
        self.exit.take();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What slirp4netns said, for an error message: its lines without the
/// seccomp warning it always prints, control characters escaped, and a hint
/// for the usual cause of a rootless failure.
fn summarize_log(log: &str) -> String {
    let mut lines: Vec<String> = log
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("WARNING: Support for seccomp"))
        .map(|l| {
            l.chars()
                .map(|c| {
                    if c.is_control() {
                        c.escape_default().to_string()
                    } else {
                        c.to_string()
                    }
                })
                .collect()
        })
        .collect();
    if log.contains("/dev/net/tun") {
        lines.push(
            "hint: slirp4netns opens /dev/net/tun as the user running hoist; \
             Debian's udev rules make it mode 0666"
                .into(),
        );
    }
    if lines.is_empty() {
        "(no output)".into()
    } else {
        lines.join("; ")
    }
}

/// The step's `/etc/resolv.conf` in the default network: slirp4netns's
/// forwarder as the only nameserver (the host's nameservers may be loopback
/// addresses, which mean the step's own `lo` inside the namespace), and the
/// host's `search`, `domain` and `options` lines.
pub(crate) fn resolv_conf(host: &str) -> String {
    let mut text = String::new();
    for line in host.lines() {
        let word = line.split_whitespace().next().unwrap_or("");
        if matches!(word, "search" | "domain" | "options") {
            text.push_str(line.trim());
            text.push('\n');
        }
    }
    text.push_str(&format!("nameserver {NAMESERVER}\n"));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_keeps_search_and_options_and_names_slirps_forwarder() {
        let host = "# comment\nnameserver 127.0.0.53\nnameserver 10.1.1.1\n\
                    search corp.example\noptions edns0 trust-ad\n";
        assert_eq!(
            resolv_conf(host),
            "search corp.example\noptions edns0 trust-ad\nnameserver 10.0.2.3\n"
        );
        assert_eq!(resolv_conf(""), "nameserver 10.0.2.3\n");
    }

    #[test]
    fn slirp_log_is_one_escaped_line_with_a_hint() {
        let log = "open(\"/dev/net/tun\"): Permission denied\n\
                   WARNING: Support for seccomp is experimental\nchild failed(1)\x1b[2J\n";
        assert_eq!(
            summarize_log(log),
            "open(\"/dev/net/tun\"): Permission denied; child failed(1)\\u{1b}[2J; \
             hint: slirp4netns opens /dev/net/tun as the user running hoist; \
             Debian's udev rules make it mode 0666"
        );
        assert_eq!(summarize_log(""), "(no output)");
    }
}
