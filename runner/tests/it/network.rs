//! The default network: a private namespace with egress through slirp4netns
//! that reaches the host's non-loopback address and not its loopback, with
//! a resolver that works, and a slirp4netns that ends with its step.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::mpsc;
use std::time::Duration;

use hoist_runner::{Cancel, NetworkMode};
use hoist_testutil::net::{
    debian_mirror_host, host_ipv4, host_resolves_by_dns, nslookup_found, TokenListener,
};
use libtest_mimic::Failed;

use crate::leaks::{parent_of, processes_with};
use crate::util::{stdout_of, Env, Root};
use crate::{check, check_eq, need_root};

/// The host's primary address, or a skip (a failure under
/// HOIST_REQUIRE_ROOT_TESTS=1) on a host without one.
pub(crate) fn host_address() -> Result<Option<Ipv4Addr>, Failed> {
    match host_ipv4() {
        Some(ip) => Ok(Some(ip)),
        None if hoist_testutil::strict() => {
            Err("the host has no non-loopback IPv4 route to test egress with".into())
        }
        None => {
            eprintln!("skipped: the host has no non-loopback IPv4 route");
            Ok(None)
        }
    }
}

/// The script lines that probe the network, and the listeners they probe.
pub(crate) struct Probe {
    pub host: TokenListener,
    pub loopback: TokenListener,
    pub mirror: Option<String>,
}

impl Probe {
    pub(crate) fn start(ip: Ipv4Addr) -> Result<Probe, Failed> {
        let mirror = debian_mirror_host();
        let mirror = match mirror {
            Some(m) if host_resolves_by_dns(&m) => Some(m),
            other => {
                eprintln!(
                    "skipped sub-check: the host cannot resolve apt's mirror {other:?} by DNS, \
                     so a step's resolution of it is not checked"
                );
                None
            }
        };
        Ok(Probe {
            host: TokenListener::start(IpAddr::V4(ip), "reached-host-address")?,
            loopback: TokenListener::start(
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                "reached-host-loopback",
            )?,
            mirror,
        })
    }

    /// A busybox script printing one `key=value` line per probe.
    pub(crate) fn script(&self) -> String {
        let (h, l) = (self.host.addr, self.loopback.addr);
        let mut s = format!(
            "echo resolv=$(grep '^nameserver' /etc/resolv.conf)\n\
             echo ifaces=$(ls /sys/class/net | sort | tr '\\n' ' ')\n\
             echo host=$(nc -w 5 {} {} </dev/null 2>/dev/null)\n\
             echo loopback=$(nc -w 5 127.0.0.1 {} </dev/null 2>/dev/null)\n\
             echo gateway=$(nc -w 5 10.0.2.2 {} </dev/null 2>/dev/null)\n",
            h.ip(),
            h.port(),
            l.port(),
            l.port()
        );
        if let Some(m) = &self.mirror {
            s.push_str(&format!("echo dns=$(nslookup {m} 2>&1 | tr '\\n' ' ')\n"));
        }
        s
    }

    /// Check what [`Probe::script`] printed in the default network.
    pub(crate) fn check(&self, out: &str) -> Result<(), Failed> {
        let value = |key: &str| {
            out.lines()
                .find_map(|l| l.strip_prefix(&format!("{key}=")))
                .unwrap_or("<missing>")
                .trim()
                .to_owned()
        };
        check_eq!(value("resolv"), "nameserver 10.0.2.3");
        check_eq!(value("ifaces"), "lo tap0");
        check_eq!(value("host"), self.host.token);
        check_eq!(value("loopback"), "");
        check_eq!(value("gateway"), "");
        check!(
            !out.contains(&self.loopback.token),
            "the step reached the host's loopback:\n{out}"
        );
        if let Some(m) = &self.mirror {
            let dns = value("dns");
            check!(
                nslookup_found(&dns.replace("Name:", "\nName:")),
                "the step cannot resolve {m}, which the host resolves: {dns}"
            );
        }
        Ok(())
    }
}

pub fn default_network_is_private_with_egress(env: &Env) -> Result<(), Failed> {
    need_root!();
    let Some(ip) = host_address()? else {
        return Ok(());
    };
    let probe = Probe::start(ip)?;
    let root = Root::new();
    let mut spec = root.spec(&format!(
        "{}echo hostname=$(hostname) hosts=$(grep -c netbox /etc/hosts)\n\
         echo tun_flags=$(cat /sys/class/net/tap0/tun_flags)",
        probe.script()
    ));
    spec.network = NetworkMode::Default;
    spec.hostname = "netbox".into();
    let out = stdout_of(env, &spec)?;
    probe.check(&out)?;
    check!(
        out.contains("hostname=netbox hosts=1"),
        "hostname or /etc/hosts:\n{out}"
    );
    // As root, the runner makes the tap before slirp4netns and keeps it
    // (IFF_PERSIST, 0x800): slirp4netns then exits at once, without
    // unregistering the device (net.rs, `persistent_tap`).
    let flags = out
        .lines()
        .find_map(|l| l.strip_prefix("tun_flags=0x"))
        .and_then(|hex| u32::from_str_radix(hex.trim(), 16).ok());
    check!(
        flags.is_some_and(|f| f & 0x800 != 0),
        "tap0 is not persistent:\n{out}"
    );
    Ok(())
}

pub fn host_network_is_the_hosts(env: &Env) -> Result<(), Failed> {
    need_root!();
    let listener = TokenListener::start(IpAddr::V4(Ipv4Addr::LOCALHOST), "host-loopback")?;
    let root = Root::new();
    let mut spec = root.spec(&format!(
        "nc -w 5 127.0.0.1 {} </dev/null",
        listener.addr.port()
    ));
    spec.network = NetworkMode::Host;
    let out = stdout_of(env, &spec)?;
    check_eq!(out.trim(), "host-loopback");
    Ok(())
}

/// slirp4netns processes started by `parent` for the namespace of `init`.
pub(crate) fn slirps_for(init: u32, parent: u32) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args.first().is_some_and(|a| a.ends_with("slirp4netns"))
            && args.contains(&init.to_string())
            && parent_of(pid) == Some(parent)
        {
            found.push(pid);
        }
    }
    found
}

/// The slirp4netns serving the step process carrying `marker`: started by
/// this process for the step's parent (the sandbox init, or the external
/// runtime it became).
fn slirps_of_step(marker: &str) -> Vec<u32> {
    processes_with(marker)
        .into_iter()
        .filter_map(parent_of)
        .flat_map(|init| slirps_for(init, std::process::id()))
        .collect()
}

pub fn slirp_ends_with_its_step(env: &Env) -> Result<(), Failed> {
    need_root!();
    let root = Root::new();
    let marker = format!(
        "slirp-marker-{}-{}",
        std::process::id(),
        env.name.replace(|c: char| !c.is_ascii_alphanumeric(), "")
    );
    let runner = env.runner();
    let cancel = Cancel::new()?;
    let (started_tx, started_rx) = mpsc::channel();
    let spec = root.spec(&format!(
        "trap 'exit 143' TERM; echo started; while true; do sleep 1; done; : {marker}"
    ));
    let (slirps, result) = std::thread::scope(|s| {
        let run = s.spawn(|| {
            let mut sent = false;
            runner.run_with_cancel(
                &spec,
                &mut |_, _| {
                    if !sent {
                        sent = true;
                        let _ = started_tx.send(());
                    }
                },
                Some(&cancel),
            )
        });
        let _ = started_rx.recv_timeout(Duration::from_secs(60));
        let slirps = slirps_of_step(&marker);
        cancel.cancel();
        (slirps, run.join())
    });
    let result = result.map_err(|_| "the run panicked")??;
    check_eq!(slirps.len(), 1);
    check!(!result.status.success(), "the cancelled step succeeded");
    // The run stopped and reaped it before returning: nothing to wait for.
    for pid in slirps {
        check!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "slirp4netns {pid} outlived its cancelled step"
        );
    }
    Ok(())
}
