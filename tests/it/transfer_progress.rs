//! Progress on a real pty (util-linux `script`): `hoist pull`/`push` and
//! the base-image pulls of `hoist build` draw bars with bytes, speed and
//! ETA, plain lines without a pty, nothing with `-q`; `--color` and
//! `NO_COLOR` decide whether the live view is coloured.

use std::process::Command;

use hoist_testutil::{require_program, Registry};

use crate::util::Hoist;

/// Runs `hoist ARGS` on a pty of 120 columns; returns everything the pty
/// showed (stdout and stderr together, as a terminal would).
fn on_pty(h: &Hoist, args: &[&str]) -> String {
    on_pty_with(h, args, &[])
}

/// [`on_pty`] with `vars` set in hoist's environment.
fn on_pty_with(h: &Hoist, args: &[&str], vars: &[(&str, &str)]) -> String {
    let mut line = format!(
        "stty cols 120 rows 40; exec '{}' --root '{}'",
        env!("CARGO_BIN_EXE_hoist"),
        h.root.display()
    );
    for arg in args {
        line += &format!(" '{arg}'");
    }
    let mut command = Command::new("script");
    command
        .args(["-qfec", &line, "/dev/null"])
        .env_remove("NO_COLOR")
        .env("TERM", "xterm");
    for (k, v) in vars {
        command.env(k, v);
    }
    let out = command.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "hoist {args:?} on a pty failed:\n{text}"
    );
    text
}

/// A layer of 3 MB of noise in `image` of `registry` (pushed from a store
/// of its own); returns its short ID and indicatif's rendering of its
/// compressed size (2.86 MiB).
fn push_noise_image(image: &str) -> (String, String) {
    let h = Hoist::new();
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
    h.ok(&["import", rootfs.to_str().unwrap(), image]);
    let inspect = h.inspect(image);
    let layer = inspect["Layers"][0]["Digest"].as_str().unwrap().to_string();
    let size = indicatif::HumanBytes(inspect["Layers"][0]["Size"].as_u64().unwrap()).to_string();
    assert!(size.ends_with("MiB"), "{size}");
    h.ok(&["push", image]);
    let id = layer["sha256:".len().."sha256:".len() + 12].to_string();
    (id, size)
}

/// A build context whose Dockerfile is `dockerfile`.
fn context(h: &Hoist, dockerfile: &str) -> String {
    let context = h.path("context");
    std::fs::create_dir_all(&context).unwrap();
    std::fs::write(context.join("Dockerfile"), dockerfile).unwrap();
    std::fs::write(context.join("a"), "a\n").unwrap();
    context.to_str().unwrap().to_string()
}

#[test]
fn a_build_draws_the_layers_of_its_base_image_pull_on_a_pty() {
    require_program!("docker-registry");
    require_program!("script");
    let registry = Registry::start();
    let image = format!("{}/base:1", registry.addr);
    let (id, size) = push_noise_image(&image);
    let dockerfile = format!("FROM {image}\nCOPY a /a\n");

    // The store lacks the base: the build pulls it, a bar per layer in its
    // live view, collapsing to the finished line.
    let h = Hoist::new();
    let ctx = context(&h, &dockerfile);
    let out = on_pty(&h, &["build", &ctx]);
    let bar = out
        .split(['\r', '\n'])
        .find(|l| l.contains(&format!("{id}: Downloading")))
        .unwrap_or_else(|| panic!("no bar for {id}:\n{out}"));
    for part in ["[", "]", &format!("/{size}"), "B/s", "ETA"] {
        assert!(bar.contains(part), "`{part}` missing from the bar {bar:?}");
    }
    assert!(
        out.contains(&format!("{id}: Download complete {size} in")),
        "{out}"
    );
    assert!(out.contains("build summary (success):"), "{out}");

    // Not a terminal: Docker's plain lines among the build's.
    let h = Hoist::new();
    let ctx = context(&h, &dockerfile);
    let r = h.run(&["build", "--progress", "plain", &ctx]);
    assert_eq!(r.code(), 0, "{}", r.stderr);
    let pulling = r
        .stderr
        .find(&format!("\n{id}: Pulling fs layer\n"))
        .unwrap_or_else(|| panic!("{}", r.stderr));
    let complete = r
        .stderr
        .find(&format!("\n{id}: Download complete\n"))
        .unwrap_or_else(|| panic!("{}", r.stderr));
    assert!(pulling < complete, "{}", r.stderr);
    assert!(!r.stderr.contains('\u{1b}'), "{}", r.stderr);

    // JSON: `pull` objects for the layer, from started to done.
    let h = Hoist::new();
    let ctx = context(&h, &dockerfile);
    let r = h.run(&["build", "--progress", "json", &ctx]);
    assert_eq!(r.code(), 0, "{}", r.stderr);
    let statuses: Vec<String> = r
        .stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == "pull" && v["digest"].as_str().is_some_and(|d| d.contains(&id)))
        .map(|v| v["status"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        statuses.first().map(String::as_str),
        Some("started"),
        "{}",
        r.stderr
    );
    assert_eq!(
        statuses.last().map(String::as_str),
        Some("done"),
        "{}",
        r.stderr
    );
    assert!(statuses.iter().any(|s| s == "progress"), "{}", r.stderr);

    // -q on a terminal: only the image ID.
    let h = Hoist::new();
    let ctx = context(&h, &dockerfile);
    let out = on_pty(&h, &["build", "-q", &ctx]);
    assert!(
        out.starts_with("sha256:") && out.lines().count() == 1,
        "{out:?}"
    );
}

/// Whether `text` holds an SGR sequence (a colour or attribute), as
/// opposed to the cursor movements every live view uses.
fn has_colour(text: &str) -> bool {
    text.split('\u{1b}').skip(1).any(|rest| {
        rest.strip_prefix('[').is_some_and(|params| {
            let end = params.find(|c: char| !(c.is_ascii_digit() || c == ';'));
            end.is_some_and(|i| params[i..].starts_with('m'))
        })
    })
}

#[test]
fn color_follows_the_flag_and_no_color_on_a_pty() {
    require_program!("script");
    let h = Hoist::new();
    let ctx = context(&h, "FROM scratch\nCOPY a /a\n");
    // Built once: from then on, every step is a `=> CACHED` line (blue).
    h.ok(&["build", &ctx]);
    // Flags, environment, whether colours are expected.
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], bool);
    let cases: [Case; 6] = [
        (&[], &[], true),
        (&["--color", "auto"], &[("NO_COLOR", "")], true),
        (&["--color", "always"], &[("NO_COLOR", "1")], true),
        (&[], &[("NO_COLOR", "1")], false),
        (&["--color", "auto"], &[("NO_COLOR", "1")], false),
        (&["--color", "never"], &[], false),
    ];
    for (flags, vars, coloured) in cases {
        let mut args = flags.to_vec();
        args.extend(["build", &ctx]);
        let out = on_pty_with(&h, &args, vars);
        assert!(
            out.contains("CACHED"),
            "{args:?} {vars:?}: a live view\n{out}"
        );
        assert!(
            out.contains("\u{1b}["),
            "{args:?} {vars:?}: the live view moves the cursor\n{out}"
        );
        assert_eq!(
            has_colour(&out),
            coloured,
            "{args:?} {vars:?}: colour expected: {coloured}\n{out:?}"
        );
    }
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
