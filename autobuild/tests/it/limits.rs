//! The server against clients that do not play fair: slow and half-open
//! connections, floods, readers without the read token; and credentials in
//! repository URLs kept out of everything it shows.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use hoist_autobuild::BuildState;
use serde_json::json;

use crate::common::*;

/// Read until the server closes the connection; false when it is still
/// open at `deadline`.
fn closed_by(s: &mut TcpStream, deadline: Instant) -> bool {
    let mut buf = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue, // a 408 before the close
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false
            }
            Err(_) => return true, // reset
        }
    }
}

#[test]
fn a_request_is_answered_while_300_connections_hang_and_they_are_closed() {
    let repo = Repo::new();
    let server = TestServer::start(&format!(
        "{}[server]\nheader_timeout = \"2s\"\n",
        config_text(repo.url(), 1, MAIN_RULE)
    ));
    // 300 connections that send part of a request head and then nothing,
    // more than the 256 connections the server serves at once.
    let started = Instant::now();
    let mut hanging: Vec<TcpStream> = (0..300)
        .map(|_| {
            let mut s = TcpStream::connect(server.addr).unwrap();
            s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                .unwrap();
            s
        })
        .collect();
    // A normal request is still answered, at once.
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let asked = Instant::now();
    let r = client.get(server.url("/api/builds")).send().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.text().unwrap(), "[]");
    assert!(
        asked.elapsed() < Duration::from_secs(3),
        "answered after {:?}",
        asked.elapsed()
    );
    // Every hanging connection is closed: to make room, or when its 2 s
    // for the headers are over.
    let deadline = started + Duration::from_secs(10);
    let still_open = hanging
        .iter_mut()
        .filter_map(|s| (!closed_by(s, deadline)).then_some(()))
        .count();
    assert_eq!(still_open, 0, "connections still open after 10 s");
    // And the server still serves.
    assert_eq!(server.page("/api/builds"), "[]");
}

#[test]
fn a_body_over_max_body_gets_413_and_a_slow_body_408() {
    let repo = Repo::new();
    let server = TestServer::start(&format!(
        "{}[server]\nmax_body = \"1KiB\"\nbody_timeout = \"1s\"\n",
        config_text(repo.url(), 1, MAIN_RULE)
    ));
    let r = server
        .client()
        .post(server.url("/trigger/demo"))
        .header("x-hoist-token", SECRET)
        .body(vec![b' '; 2048])
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 413);
    let answer: serde_json::Value = r.json().unwrap();
    assert_eq!(
        answer["error"],
        "the request body is larger than 1024 bytes"
    );

    // Headers, then a body that never comes.
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.write_all(
        format!(
            "POST /trigger/demo HTTP/1.1\r\nHost: x\r\nX-Hoist-Token: {SECRET}\r\n\
             Content-Length: 100\r\n\r\n{{"
        )
        .as_bytes(),
    )
    .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
        }
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(server.builds().is_empty());
}

#[test]
fn a_flood_of_webhooks_gets_429_with_retry_after() {
    let repo = Repo::new();
    let server = TestServer::start(&format!(
        "{}[server]\nrate_limit = 6\nrate_burst = 3\n",
        config_text(repo.url(), 1, MAIN_RULE)
    ));
    let post = || {
        server
            .client()
            .post(server.url("/hooks/github/demo"))
            .header("x-github-event", "push")
            .body("{}")
            .send()
            .unwrap()
    };
    // The burst: answered (wrong signature).
    for _ in 0..3 {
        assert_eq!(post().status().as_u16(), 401);
    }
    let r = post();
    assert_eq!(r.status().as_u16(), 429);
    // 6 a minute: the next token comes within 10 s.
    let after: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=10).contains(&after), "Retry-After: {after}");
    // The trigger URL shares the source's bucket; pages are not limited.
    let r = server
        .client()
        .post(server.url("/trigger/demo"))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 429);
    assert_eq!(server.page("/api/builds"), "[]");
}

#[test]
fn the_read_token_guards_pages_api_and_logs() {
    let repo = Repo::new();
    let sha = git(&repo.work, &["rev-parse", "HEAD"]);
    let server = TestServer::start(&format!(
        "{}[server]\nread_token = \"r34d\"\n",
        config_text(repo.url(), 1, MAIN_RULE)
    ));
    // Webhooks keep their own authentication and need no read token.
    let (status, answer) = crate::webhooks::push_hook(
        &server,
        hoist_autobuild::Provider::GitHub,
        "refs/heads/main",
        &sha,
        "x",
    );
    assert_eq!(status, 202, "{answer}");
    let id = queued_ids(&answer)[0];
    let client = server.client();
    for path in [
        "/".to_string(),
        "/api/builds".to_string(),
        format!("/api/builds/{id}"),
        format!("/builds/{id}"),
    ] {
        let r = client.get(server.url(&path)).send().unwrap();
        assert_eq!(r.status().as_u16(), 401, "{path}");
        assert!(r.headers().contains_key("www-authenticate"), "{path}");
        let r = client
            .get(server.url(&path))
            .bearer_auth("wrong")
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 401, "{path}");
        let r = client
            .get(server.url(&path))
            .bearer_auth("r34d")
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{path}");
    }
    // `?token=` works and sets a cookie the page's links then carry.
    let r = client
        .get(server.url(&format!("/builds/{id}?token=r34d")))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(cookie.starts_with("hoist_read_token=r34d;"), "{cookie}");
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    let r = client
        .get(server.url("/api/builds"))
        .header("cookie", "hoist_read_token=r34d")
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    // The badge stays public.
    let r = client.get(server.url("/badge/demo.svg")).send().unwrap();
    assert_eq!(r.status().as_u16(), 200);

    let b: hoist_autobuild::BuildRecord = wait_until("the build to finish", || {
        let r = client
            .get(server.url(&format!("/api/builds/{id}")))
            .bearer_auth("r34d")
            .send()
            .ok()?;
        let b: hoist_autobuild::BuildRecord = r.json().ok()?;
        b.state.is_final().then_some(b)
    });
    assert_eq!(b.state, BuildState::Succeeded);
}

#[test]
fn credentials_in_the_repository_url_are_redacted_everywhere() {
    // Nothing listens there: fetching fails, and git's message quotes the URL.
    let port = hoist_testutil::free_port();
    let url = format!("http://builder:hunter2@127.0.0.1:{port}/demo.git");
    let server = TestServer::start(&config_text(&url, 1, MAIN_RULE));
    let shown = format!("http://builder:***@127.0.0.1:{port}/demo.git");

    // The trigger URL resolving the branch: the error names the URL.
    let r = server
        .client()
        .post(server.url("/trigger/demo"))
        .header("x-hoist-token", SECRET)
        .json(&json!({ "ref": "main" }))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let text = r.text().unwrap();
    assert!(!text.contains("hunter2"), "{text}");
    assert!(text.contains(&shown), "{text}");

    // A build of a given commit: the checkout fails.
    let r = server
        .client()
        .post(server.url("/trigger/demo"))
        .header("x-hoist-token", SECRET)
        .json(&json!({ "ref": "refs/heads/main", "sha": "a".repeat(40) }))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let answer: serde_json::Value = r.json().unwrap();
    let b = server.wait_final(queued_ids(&answer)[0]);
    assert_eq!(b.state, BuildState::Failed);

    let api = server.page(&format!("/api/builds/{}", b.id));
    let list = server.page("/api/builds");
    let log_page = server.page(&format!("/builds/{}", b.id));
    let status = server.page("/");
    let log_file =
        std::fs::read_to_string(hoist_autobuild::server::log_path(server.store.path(), b.id))
            .unwrap();
    let listed =
        serde_json::to_string(&hoist_autobuild::list(server.store.path(), None, 10).unwrap())
            .unwrap();
    for (what, text) in [
        ("API", &api),
        ("API list", &list),
        ("log page", &log_page),
        ("status page", &status),
        ("log file", &log_file),
        ("list", &listed),
    ] {
        assert!(!text.contains("hunter2"), "{what}: {text}");
    }
    // The URL is shown, redacted, where it is shown at all.
    assert!(status.contains(&shown), "{status}");
    assert!(log_file.contains(&shown), "{log_file}");
    assert!(log_page.contains(&shown), "{log_page}");
    let error = b.error.unwrap();
    assert!(error.contains("git fetch"), "{error}");
}
