//! RUN steps' networks through `hoist build`: the default network reaches
//! the host's address and DNS but not its loopback; the host's network
//! needs `--allow network.host`, asked of `RUN --network=host` and of
//! `--network host` alike; slirp4netns ends with a cancelled build.

use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::time::{Duration, Instant};

use hoist_testutil::net::{
    debian_mirror_host, host_ipv4, host_resolves_by_dns, nslookup_found, TokenListener,
};

use super::common::{spawn_build, Env, Spawned};

fn loopback_listener() -> TokenListener {
    TokenListener::start(IpAddr::V4(Ipv4Addr::LOCALHOST), "reached-host-loopback").unwrap()
}

#[test]
fn default_network_reaches_the_hosts_address_and_dns_not_its_loopback() {
    hoist_testutil::require_root!();
    let Some(ip) = host_ipv4() else {
        assert!(
            !hoist_testutil::strict(),
            "the host has no non-loopback IPv4 route to test egress with"
        );
        eprintln!("skipped: the host has no non-loopback IPv4 route");
        return;
    };
    let host = TokenListener::start(IpAddr::V4(ip), "reached-host-address").unwrap();
    let loopback = loopback_listener();
    let mirror = debian_mirror_host().filter(|m| host_resolves_by_dns(m));
    if mirror.is_none() {
        eprintln!(
            "skipped sub-check: the host cannot resolve apt's mirror by DNS, \
             so a step's resolution of it is not checked"
        );
    }
    let env = Env::new();
    let (h, l) = (host.addr, loopback.addr);
    env.dockerfile(&format!(
        "FROM busybox\n\
         RUN grep '^nameserver' /etc/resolv.conf > /resolv\n\
         RUN nc -w 5 {} {} </dev/null > /host; true\n\
         RUN nc -w 5 127.0.0.1 {} </dev/null > /loopback; true\n\
         RUN nc -w 5 10.0.2.2 {} </dev/null > /gateway; true\n\
         RUN nslookup {} > /dns 2>&1; true\n",
        h.ip(),
        h.port(),
        l.port(),
        l.port(),
        mirror.as_deref().unwrap_or("localhost"),
    ));
    let (run, fs) = env.build_fs("net:1", &[]);
    let read = |p: &str| std::fs::read_to_string(fs.join(p)).unwrap();
    assert_eq!(read("resolv"), "nameserver 10.0.2.3\n");
    assert_eq!(read("host"), "reached-host-address\n");
    assert_eq!(
        read("loopback"),
        "",
        "the step reached the host's 127.0.0.1"
    );
    assert_eq!(read("gateway"), "", "10.0.2.2 led to the host's 127.0.0.1");
    assert!(!run.stderr.contains("reached-host-loopback"));
    if let Some(m) = mirror {
        assert!(
            nslookup_found(&read("dns")),
            "a step cannot resolve {m}, which the host resolves:\n{}",
            read("dns")
        );
    }
}

#[test]
fn run_network_host_needs_the_entitlement() {
    hoist_testutil::require_root!();
    let listener = loopback_listener();
    let env = Env::new();
    env.dockerfile(&format!(
        "FROM busybox\n\
         RUN echo first-step-output > /first\n\
         RUN --network=host nc -w 5 127.0.0.1 {} </dev/null > /host-net\n",
        listener.addr.port()
    ));
    let refused = env.build(&["-t", "hostnet:0"]);
    assert!(!refused.status.success());
    assert!(
        refused.stderr.contains("Dockerfile:3: RUN --network=host")
            && refused.stderr.contains("network.host entitlement")
            && refused.stderr.contains("--allow network.host"),
        "{}",
        refused.stderr
    );
    assert!(
        !refused.stderr.contains("first-step-output"),
        "refused before any step ran:\n{}",
        refused.stderr
    );
    // security.insecure is another entitlement: it grants no host network.
    let refused = env.build(&["-t", "hostnet:0", "--allow", "security.insecure"]);
    assert!(
        !refused.status.success() && refused.stderr.contains("Dockerfile:3:"),
        "{}",
        refused.stderr
    );

    let (_, fs) = env.build_fs("hostnet:1", &["--allow", "network.host"]);
    assert_eq!(
        std::fs::read_to_string(fs.join("host-net")).unwrap(),
        "reached-host-loopback\n"
    );
}

#[test]
fn build_flag_network_host_needs_the_entitlement() {
    hoist_testutil::require_root!();
    let listener = loopback_listener();
    let env = Env::new();
    env.dockerfile(&format!(
        "FROM busybox\n\
         RUN --network=none echo no-network > /none\n\
         RUN nc -w 5 127.0.0.1 {} </dev/null > /host-net\n",
        listener.addr.port()
    ));
    let refused = env.build(&["-t", "hostflag:0", "--network", "host"]);
    assert!(!refused.status.success());
    // The first step that would get the host's network: line 3 (line 2
    // keeps its own --network=none).
    assert!(
        refused.stderr.contains("Dockerfile:3: RUN nc")
            && refused.stderr.contains("--network host")
            && refused.stderr.contains("--allow network.host"),
        "{}",
        refused.stderr
    );

    let (_, fs) = env.build_fs(
        "hostflag:1",
        &["--network", "host", "--allow", "network.host"],
    );
    assert_eq!(
        std::fs::read_to_string(fs.join("host-net")).unwrap(),
        "reached-host-loopback\n"
    );
}

/// slirp4netns processes whose parent is `parent`.
fn slirps_of(parent: u32) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if comm.trim() == "slirp4netns" && ppid == Some(parent) {
            found.push(pid);
        }
    }
    found
}

#[test]
fn sigint_of_hoist_build_stops_slirp4netns() {
    hoist_testutil::require_root!();
    let env = Env::new();
    env.dockerfile("FROM busybox\nRUN echo step-is-running; while true; do sleep 1; done\n");
    let Spawned {
        mut child,
        lines: receiver,
        reader,
    } = spawn_build(&env, "net-cancelled:1");
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut seen = Vec::new();
    while !seen.iter().any(|l: &String| l.ends_with("step-is-running")) {
        match receiver.recv_timeout(Duration::from_millis(100)) {
            Ok(line) => seen.push(line),
            Err(_) => assert!(
                Instant::now() < deadline && child.try_wait().unwrap().is_none(),
                "the RUN step never started:\n{}",
                seen.join("\n")
            ),
        }
    }
    let slirps = slirps_of(child.id());
    assert_eq!(slirps.len(), 1, "slirp4netns of the running step");

    let sent = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let status = child.wait().unwrap();
    reader.join().unwrap();
    seen.extend(receiver.try_iter());
    assert_eq!(status.code(), Some(130), "{}", seen.join("\n"));
    for pid in slirps {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "slirp4netns {pid} outlived the cancelled build"
        );
    }
}

#[test]
fn without_slirp4netns_the_default_network_fails_clearly_never_the_hosts() {
    hoist_testutil::require_root!();
    let env = Env::new();
    env.dockerfile("FROM busybox\nRUN --network=none echo offline-ok\nRUN echo online\n");
    // A PATH without slirp4netns (hoist needs nothing else from PATH here).
    let empty = tempfile::tempdir().unwrap();
    let run = hoist_testutil::cli::run(
        env.hoist()
            .command()
            .env("PATH", empty.path())
            .args(["build", "--progress", "plain", "-t", "noslirp:1"])
            .arg(env.context.path()),
        None,
    );
    assert!(!run.status.success(), "{}", run.stderr);
    assert!(run.stderr.contains("offline-ok"), "{}", run.stderr);
    assert!(
        run.stderr.contains("slirp4netns is not installed") && run.stderr.contains("Dockerfile:3"),
        "{}",
        run.stderr
    );
}
