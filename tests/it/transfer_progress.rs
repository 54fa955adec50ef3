//! `hoist pull`/`push` progress: bars with bytes, speed and ETA on a real
//! pty (util-linux `script`), plain lines without one, nothing with `-q`.

use std::process::Command;

use hoist_testutil::{require_program, Registry};

use crate::util::Hoist;

/// Runs `hoist ARGS` on a pty of 120 columns; returns everything the pty
/// showed (stdout and stderr together, as a terminal would).
fn on_pty(h: &Hoist, args: &[&str]) -> String {
    let mut line = format!(
        "stty cols 120 rows 40; exec '{}' --root '{}'",
        env!("CARGO_BIN_EXE_hoist"),
        h.root.display()
    );
    for arg in args {
        line += &format!(" '{arg}'");
    }
    let out = Command::new("script")
        .args(["-qfec", &line, "/dev/null"])
        .env_remove("NO_COLOR")
        .env("TERM", "xterm")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "hoist {args:?} on a pty failed:\n{text}"
    );
    text
}

#[test]
fn pull_and_push_draw_a_bar_per_layer_on_a_pty_and_plain_lines_elsewhere() {
    require_program!("docker-registry");
    require_program!("script");
    let registry = Registry::start();
    let h = Hoist::new();
    // A layer of 3 MB of noise: big enough to show sizes in MiB.
    let rootfs = h.path("rootfs.tar");
    // xorshift: incompressible, so the gzip layer stays this size.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let noise: Vec<u8> = (0..3_000_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    crate::util::make_tar(&rootfs, &[("noise.bin", noise.as_slice())]);
    let image = format!("{}/progress:1", registry.addr);
    h.ok(&["import", rootfs.to_str().unwrap(), &image]);
    let inspect = h.inspect(&image);
    let layer = inspect["Layers"][0]["Digest"].as_str().unwrap().to_string();
    // indicatif's own rendering of the size (2.86 MiB).
    let size = indicatif::HumanBytes(inspect["Layers"][0]["Size"].as_u64().unwrap()).to_string();
    assert!(size.ends_with("MiB"), "{size}");
    let id = &layer["sha256:".len().."sha256:".len() + 12];

    let push = on_pty(&h, &["push", &image]);
    assert!(push.contains(&format!("{id}: Pushed")), "{push}");
    assert!(
        push.contains("\u{1b}["),
        "a pty gets a live display:\n{push}"
    );

    let fresh = Hoist::new();
    let pull = on_pty(&fresh, &["pull", &image]);
    // A bar while bytes move (prefix, message, bar, bytes/total, speed,
    // ETA), then the finished line with the total and the time taken.
    let bar = pull
        .split(['\r', '\n'])
        .find(|l| l.contains(&format!("{id}: Downloading")))
        .unwrap_or_else(|| panic!("no bar for {id}:\n{pull}"));
    for part in ["[", "]", &format!("/{size}"), "B/s", "ETA"] {
        assert!(bar.contains(part), "`{part}` missing from the bar {bar:?}");
    }
    assert!(
        pull.contains(&format!("{id}: Download complete 2.86 MiB in")),
        "{pull}"
    );
    assert!(
        pull.contains(&format!("Status: Downloaded newer image for {image}")),
        "{pull}"
    );

    // Not a terminal: Docker's plain lines, no escape sequences.
    let plain = Hoist::new();
    let r = plain.run(&["pull", &image]);
    assert_eq!(r.code(), 0, "{}", r.stderr);
    assert_eq!(
        r.stderr,
        format!("1: Pulling from progress\n{id}: Pulling fs layer\n{id}: Download complete\n")
    );
    // -q on a terminal: only the name.
    let quiet = Hoist::new();
    let out = on_pty(&quiet, &["pull", "-q", &image]);
    assert_eq!(out, format!("{image}\r\n"));
}
