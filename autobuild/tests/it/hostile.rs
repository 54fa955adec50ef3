//! Hostile and broken input: a clear answer each, nothing queued, the
//! server keeps serving.

use std::io::{Read, Write};

use hoist_autobuild::{BuildState, Provider};
use serde_json::json;

use crate::common::*;
use crate::webhooks::{push_hook, send_hook};

#[test]
fn bad_requests_get_clear_answers_and_queue_nothing() {
    let repo = Repo::new();
    let sha = git(&repo.work, &["rev-parse", "HEAD"]);
    let server = TestServer::start(&config_text(repo.url(), 1, MAIN_RULE));
    let body = serde_json::to_vec(&json!({"ref": "refs/heads/main", "after": sha})).unwrap();

    // Wrong secret, for every provider.
    for p in [
        Provider::GitHub,
        Provider::Bitbucket,
        Provider::GitLab,
        Provider::Gitea,
    ] {
        let (status, answer) = send_hook(&server, p, "demo", "push", &body, "wrong");
        assert_eq!(status, 401, "{p:?} {answer}");
        assert_eq!(answer["error"], "missing or wrong signature");
    }
    // Missing signature.
    let r = server
        .client()
        .post(server.url("/hooks/github/demo"))
        .header("x-github-event", "push")
        .body(body.clone())
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    // Unknown repository and provider.
    let (status, answer) = send_hook(&server, Provider::GitHub, "nope", "push", &body, SECRET);
    assert_eq!(status, 404);
    assert_eq!(answer["error"], "unknown repository `nope`");
    let r = server
        .client()
        .post(server.url("/hooks/svn/demo"))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    // Malformed JSON, correctly signed.
    let (status, answer) = send_hook(
        &server,
        Provider::GitHub,
        "demo",
        "push",
        b"{\"ref\": ",
        SECRET,
    );
    assert_eq!(status, 400);
    assert!(
        answer["error"].as_str().unwrap().contains("not valid JSON"),
        "{answer}"
    );
    // JSON without the fields a push has.
    let (status, answer) = send_hook(&server, Provider::Gitea, "demo", "push", b"{}", SECRET);
    assert_eq!(status, 400);
    assert_eq!(answer["error"], "the push payload has no usable `ref`");
    // Ping.
    let (status, answer) = send_hook(&server, Provider::GitHub, "demo", "ping", b"{}", SECRET);
    assert_eq!(status, 200);
    assert_eq!(answer["pong"], true);
    // Branch deletion.
    let deletion = serde_json::to_vec(&json!({
        "ref": "refs/heads/main", "before": sha, "after": "0".repeat(40), "deleted": true
    }))
    .unwrap();
    let (status, answer) = send_hook(&server, Provider::GitHub, "demo", "push", &deletion, SECRET);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["queued"], json!([]));
    // A sha that is not one.
    let (status, answer) = push_hook(&server, Provider::GitHub, "refs/heads/main", "HEAD~1", "x");
    assert_eq!(status, 400);
    assert_eq!(answer["error"], "`HEAD~1` is not a full commit id");
    // Wrong trigger token.
    let r = server
        .client()
        .post(server.url("/trigger/demo"))
        .header("x-hoist-token", "wrong")
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);

    assert!(server.builds().is_empty(), "{:?}", server.builds());
    // Still serving: a good push builds.
    let (status, answer) = push_hook(&server, Provider::GitHub, "refs/heads/main", &sha, "ok");
    assert_eq!(status, 202, "{answer}");
    assert_eq!(
        server.wait_final(queued_ids(&answer)[0]).state,
        BuildState::Succeeded
    );
}

/// POST over raw TCP: the body is written from another thread while this
/// one reads the answer, so a server that answers before reading the body
/// (and closes) cannot make the client miss the answer, as a client that
/// stops at the first write error would.
fn raw_post(addr: std::net::SocketAddr, head: &str, body: Vec<u8>, chunked: bool) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    let mut w = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        for chunk in body.chunks(64 << 10) {
            let sent = if chunked {
                write!(w, "{:x}\r\n", chunk.len())
                    .and_then(|_| w.write_all(chunk))
                    .and_then(|_| w.write_all(b"\r\n"))
            } else {
                w.write_all(chunk)
            };
            if sent.is_err() {
                return; // the server answered and closed
            }
        }
        if chunked {
            let _ = w.write_all(b"0\r\n\r\n");
        }
    });
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
        }
        if answer.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    let _ = s.shutdown(std::net::Shutdown::Both);
    writer.join().unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn a_ten_mib_body_gets_413() {
    let repo = Repo::new();
    let server = TestServer::start(&format!(
        "{}[server]\nmax_body = \"1MiB\"\n",
        config_text(repo.url(), 1, MAIN_RULE)
    ));
    let big = vec![b'x'; 10 << 20];
    // Signed correctly, so only the size can refuse it.
    let sig = Provider::GitHub.sign(SECRET, &big);
    let head = format!(
        "POST /hooks/github/demo HTTP/1.1\r\nHost: x\r\nX-GitHub-Event: push\r\n\
         X-Hub-Signature-256: {sig}\r\nConnection: close\r\n"
    );
    let answer = raw_post(
        server.addr,
        &format!("{head}Content-Length: {}\r\n\r\n", big.len()),
        big.clone(),
        false,
    );
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    // Streamed without a Content-Length: refused once 1 MiB has arrived.
    let answer = raw_post(
        server.addr,
        &format!("{head}Transfer-Encoding: chunked\r\n\r\n"),
        big,
        true,
    );
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");

    // Nothing queued, still serving.
    assert!(server.builds().is_empty());
    assert_eq!(server.page("/api/builds"), "[]");
}

#[test]
fn commit_messages_are_escaped_on_the_pages() {
    let repo = Repo::new();
    let msg = "<script>alert('x')</script> & \"quotes\"";
    let sha = repo.commit("hello", "x", msg);
    repo.push("main");
    let server = TestServer::start(&config_text(repo.url(), 1, MAIN_RULE));
    let (status, answer) = push_hook(&server, Provider::GitHub, "refs/heads/main", &sha, msg);
    assert_eq!(status, 202, "{answer}");
    let b = server.wait_final(queued_ids(&answer)[0]);
    assert_eq!(b.message, msg);

    for path in ["/".to_string(), format!("/builds/{}", b.id)] {
        let page = server.page(&path);
        assert!(!page.contains("<script>"), "{path}: {page}");
        assert!(
            page.contains(
                "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;quotes&quot;"
            ),
            "{path}: {page}"
        );
    }
    let page = server.page("/");
    assert!(page.contains("http-equiv=\"refresh\""), "{page}");
    assert!(page.contains(&format!("id=\"build-{}\" data-state=\"succeeded\"", b.id)));
    assert!(page.contains(&sha[..7]));
    let badge = server
        .client()
        .get(server.url("/badge/demo.svg"))
        .send()
        .unwrap();
    assert_eq!(badge.headers()["content-type"], "image/svg+xml");
    assert!(badge.text().unwrap().contains(">passing</text>"));
    let r = server
        .client()
        .get(server.url("/badge/nope.svg"))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
}

#[test]
fn refs_with_shell_metacharacters_build_safely_or_are_refused() {
    let marker =
        std::env::temp_dir().join(format!("hoist-autobuild-marker-{}", std::process::id()));
    let _ = std::fs::remove_file(&marker);
    let m = marker.to_str().unwrap();
    let repo = Repo::new();

    // A branch git accepts: no spaces, but `$(...)`, `${IFS}`, backquotes and `;`.
    let branch = format!("$(touch${{IFS}}{m});`touch${{IFS}}{m}`");
    git(&repo.work, &["checkout", "-q", "-b", &branch]);
    let sha = repo.commit("hello", "hostile branch", "hostile");
    repo.push(&format!("HEAD:refs/heads/{branch}"));

    let server = TestServer::start(&config_text(repo.url(), 1, MAIN_RULE));
    let git_ref = format!("refs/heads/{branch}");
    let (status, answer) = push_hook(&server, Provider::GitHub, &git_ref, &sha, "x");
    assert_eq!(status, 202, "{answer}");
    let b = server.wait_final(queued_ids(&answer)[0]);
    assert_eq!(b.state, BuildState::Succeeded, "{b:?}");
    assert_eq!(b.git_ref, git_ref);
    let rec = server.rec.builds.lock().unwrap().clone();
    assert_eq!(rec[0].tree["hello"], "hostile branch");
    assert_eq!(rec[0].tags, vec![format!("127.0.0.1:5000/demo:{branch}")]);

    // One git refuses (a space): 400, nothing queued.
    let spaced = format!("refs/heads/$(touch {m})");
    let (status, answer) = push_hook(&server, Provider::GitHub, &spaced, &sha, "x");
    assert_eq!(status, 400, "{answer}");
    assert!(answer["error"]
        .as_str()
        .unwrap()
        .contains("is not a valid git ref"));
    // And through the trigger URL.
    let r = server
        .client()
        .post(server.url("/trigger/demo"))
        .header("x-hoist-token", SECRET)
        .json(&json!({ "ref": format!("$(touch {m})") }))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);

    assert_eq!(server.builds().len(), 1);
    assert!(!marker.exists(), "a ref name was run by a shell");
}
