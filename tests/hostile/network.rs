//! Network: a step's default network reaches the host's non-loopback address
//! but no service bound to the host's loopback (which here holds the
//! sentinel's secret), and the host's network needs `--allow network.host`.

use std::net::{IpAddr, Ipv4Addr};

use hoist_testutil::net::{host_ipv4, TokenListener};

use super::common::{assert_refused, Builder};
use crate::both_modes;

both_modes!(loopback_unreachable_egress_works, |b: &Builder| {
    let secret = TokenListener::start(IpAddr::V4(Ipv4Addr::LOCALHOST), &b.sentinel.secret)
        .expect("listen on 127.0.0.1");
    let port = secret.addr.port();
    let ip = host_ipv4();
    let egress = ip.map(|ip| TokenListener::start(IpAddr::V4(ip), "egress-ok").expect("listen"));
    let mut dockerfile = format!(
        "FROM busybox\n\
         RUN (nc -w 5 127.0.0.1 {port}; nc -w 5 10.0.2.2 {port}; nc -w 5 localhost {port}) \
             </dev/null > /stolen 2>/dev/null; cat /stolen; wc -c < /stolen\n"
    );
    match &egress {
        Some(e) => dockerfile.push_str(&format!(
            "RUN nc -w 5 {} {} </dev/null\n",
            e.addr.ip(),
            e.addr.port()
        )),
        None => {
            assert!(!hoist_testutil::strict(), "no non-loopback IPv4 route");
            eprintln!("skipped sub-check: no non-loopback IPv4 route for egress");
        }
    }
    let run = b.build(&dockerfile, &[]);
    run.assert_ok();
    if egress.is_some() {
        assert!(run.stderr.contains("egress-ok"), "{}", run.stderr);
    }
    b.assert_host_untouched(&run);
});

both_modes!(host_network_needs_the_entitlement, |b: &Builder| {
    let secret = TokenListener::start(IpAddr::V4(Ipv4Addr::LOCALHOST), &b.sentinel.secret)
        .expect("listen on 127.0.0.1");
    let port = secret.addr.port();
    let run = b.build(
        &format!("FROM busybox\nRUN echo first\nRUN --network=host nc -w 5 127.0.0.1 {port}\n"),
        &[],
    );
    assert_refused(&run, 3, "--allow network.host");
    b.assert_host_untouched(&run);
    let run = b.build(
        &format!("FROM busybox\nRUN nc -w 5 127.0.0.1 {port}\n"),
        &["--network", "host"],
    );
    assert_refused(&run, 2, "--allow network.host");
    b.assert_host_untouched(&run);
});
