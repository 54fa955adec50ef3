//! ADD of http(s) and git URLs, and build contexts from URLs, against a small
//! HTTP server the test starts on 127.0.0.1 (git through its "dumb" HTTP
//! protocol: a bare repository served as static files).

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use hoist_testutil::git;

use super::common::{hoist, mode, Env};

const LAST_MODIFIED: &str = "Wed, 21 Oct 2015 07:28:00 GMT";
const LAST_MODIFIED_SECS: i64 = 1_445_412_480;

/// Serves the files under `dir`; returns the base URL.
pub(super) fn serve(dir: PathBuf) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let dir = dir.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut first = String::new();
                if reader.read_line(&mut first).is_err() {
                    return;
                }
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                }
                let mut parts = first.split_whitespace();
                let method = parts.next().unwrap_or("");
                let path = parts.next().unwrap_or("/").split('?').next().unwrap_or("/");
                let file = dir.join(path.trim_start_matches('/'));
                let response = match fs::read(&file) {
                    Ok(body) if file.is_file() => {
                        let mut head = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nLast-Modified: {LAST_MODIFIED}\r\nConnection: close\r\n\r\n",
                            body.len()
                        )
                        .into_bytes();
                        if method != "HEAD" {
                            head.extend_from_slice(&body);
                        }
                        head
                    }
                    _ => {
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                            .to_vec()
                    }
                };
                let _ = stream.write_all(&response);
            });
        }
    });
    format!("http://{addr}")
}

/// A repository with tag v1 (sub/in-sub.txt = "v1") and branch main one commit
/// later (sub/in-sub.txt = "main", plus ctx/ holding a Dockerfile), published
/// bare at `<served>/repo.git`.
fn make_repo(served: &Path, work: &Path) {
    fs::create_dir_all(work.join("sub")).unwrap();
    git(work, &["init", "-q", "-b", "main"]);
    fs::write(work.join("top.txt"), "top\n").unwrap();
    fs::write(work.join("sub/in-sub.txt"), "v1\n").unwrap();
    git(work, &["add", "."]);
    git(work, &["commit", "-q", "-m", "one"]);
    git(work, &["tag", "-a", "v1", "-m", "v1"]);
    fs::write(work.join("sub/in-sub.txt"), "main\n").unwrap();
    fs::create_dir_all(work.join("ctx")).unwrap();
    fs::write(
        work.join("ctx/Dockerfile"),
        "FROM busybox\nCOPY hello /hello\n",
    )
    .unwrap();
    fs::write(work.join("ctx/hello"), "hello from git\n").unwrap();
    git(work, &["add", "."]);
    git(work, &["commit", "-q", "-m", "two"]);
    let bare = served.join("repo.git");
    git(
        work,
        &["clone", "-q", "--bare", ".", bare.to_str().unwrap()],
    );
    git(&bare, &["update-server-info"]);
}

fn blob_count(root: &Path) -> usize {
    fs::read_dir(root.join("content/blobs/sha256"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn add_from_http_and_git() {
    hoist_testutil::require_root!();
    hoist_testutil::require_program!("git");
    let env = Env::new();
    let served = env.scratch.path().join("www");
    fs::create_dir_all(&served).unwrap();
    fs::write(served.join("file.txt"), "remote\n").unwrap();
    make_repo(&served, &env.scratch.path().join("work"));
    {
        let file = fs::File::create(served.join("arch.tar.gz")).unwrap();
        let gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
        let mut tar = tar::Builder::new(gz);
        let mut header = tar::Header::new_gnu();
        header.set_size(9);
        header.set_mode(0o755);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_cksum();
        tar.append_data(&mut header, "bin/tool", &b"#!/bin/sh"[..])
            .unwrap();
        tar.into_inner().unwrap().finish().unwrap();
    }
    let base = serve(served.clone());
    let sum = {
        use sha2::Digest;
        format!("{:x}", sha2::Sha256::digest(b"remote\n"))
    };
    env.dockerfile(&format!(
        "FROM busybox\n\
         ADD {base}/file.txt /dl/\n\
         ADD --checksum=sha256:{sum} {base}/file.txt /sum.txt\n\
         ADD {base}/repo.git#v1:sub /src/\n\
         ADD --keep-git-dir {base}/repo.git#main /full/\n\
         ADD {base}/arch.tar.gz /packed/\n\
         ADD --unpack=true {base}/arch.tar.gz /unpacked/\n"
    ));
    let (_, root) = env.build_fs("remote:1", &[]);
    let dl = root.join("dl/file.txt");
    assert_eq!(fs::read_to_string(&dl).unwrap(), "remote\n");
    assert_eq!(mode(&dl), 0o600);
    assert_eq!(
        fs::metadata(&dl).unwrap().mtime(),
        LAST_MODIFIED_SECS,
        "Last-Modified"
    );
    assert_eq!(
        fs::read_to_string(root.join("sum.txt")).unwrap(),
        "remote\n"
    );
    assert_eq!(
        fs::read_to_string(root.join("src/in-sub.txt")).unwrap(),
        "v1\n"
    );
    assert!(
        !root.join("src/sub").exists(),
        "the subdirectory's contents"
    );
    assert!(!root.join("src/.git").exists());
    assert_eq!(
        fs::read_to_string(root.join("full/sub/in-sub.txt")).unwrap(),
        "main\n"
    );
    assert!(root.join("full/.git").is_dir(), "--keep-git-dir");
    assert!(
        root.join("packed/arch.tar.gz").is_file(),
        "a remote archive is not extracted by default"
    );
    assert_eq!(
        fs::read_to_string(root.join("unpacked/bin/tool")).unwrap(),
        "#!/bin/sh"
    );
    assert_eq!(mode(&root.join("unpacked/bin/tool")), 0o755);

    // Unchanged remote content: the second build is cached.
    let again = env.build(&["-t", "remote:2"]);
    again.assert_ok();
    assert!(
        again
            .stderr
            .lines()
            .filter(|l| l.ends_with(" CACHED"))
            .count()
            >= 4,
        "{}",
        again.stderr
    );
}

#[test]
fn add_failures_name_the_url_and_write_nothing() {
    hoist_testutil::require_root!();
    let env = Env::new();
    let served = env.scratch.path().join("www");
    fs::create_dir_all(&served).unwrap();
    fs::write(served.join("file.txt"), "remote\n").unwrap();
    let base = serve(served);
    let before = blob_count(env.root.path());
    env.dockerfile(&format!(
        "FROM busybox\nADD --checksum=sha256:{} {base}/file.txt /x\n",
        "0".repeat(64)
    ));
    let run = env.build(&["-t", "bad:1"]);
    assert!(!run.status.success());
    assert!(
        run.stderr.contains(&format!("{base}/file.txt")),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("checksum mismatch"), "{}", run.stderr);
    assert_eq!(blob_count(env.root.path()), before, "no layer was written");

    env.dockerfile(&format!("FROM busybox\nADD {base}/missing.txt /x\n"));
    let run = env.build(&["-t", "bad:2"]);
    assert!(!run.status.success());
    assert!(
        run.stderr.contains(&format!("{base}/missing.txt")),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("404 Not Found"), "{}", run.stderr);
}

#[test]
fn build_context_from_git_and_tarball_urls() {
    hoist_testutil::require_root!();
    hoist_testutil::require_program!("git");
    let env = Env::new();
    let served = env.scratch.path().join("www");
    fs::create_dir_all(&served).unwrap();
    make_repo(&served, &env.scratch.path().join("work"));
    // A gzip tarball context.
    let tarball = served.join("ctx.tar.gz");
    {
        let file = fs::File::create(&tarball).unwrap();
        let gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
        let mut tar = tar::Builder::new(gz);
        for (name, data) in [
            ("Dockerfile", "FROM busybox\nCOPY payload /payload\n"),
            ("payload", "from a tarball\n"),
        ] {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            tar.append_data(&mut header, name, data.as_bytes()).unwrap();
        }
        tar.into_inner().unwrap().finish().unwrap();
    }
    let base = serve(served);

    // Builds the context at `url` as `tag`; the image's filesystem.
    let build_from = |tag: &str, url: &str, fs_name: &str| {
        let dest = env.scratch.path().join(fs_name);
        let output = format!("type=local,dest={}", dest.display());
        hoist(
            env.root.path(),
            &["build", "-t", tag, "-o", "type=image", "-o", &output, url],
            None,
        )
        .assert_ok();
        dest
    };
    let dest = build_from("fromgit:1", &format!("{base}/repo.git#main:ctx"), "git-fs");
    assert_eq!(
        fs::read_to_string(dest.join("hello")).unwrap(),
        "hello from git\n"
    );
    let dest = build_from("fromtar:1", &format!("{base}/ctx.tar.gz"), "tar-fs");
    assert_eq!(
        fs::read_to_string(dest.join("payload")).unwrap(),
        "from a tarball\n"
    );

    let run = hoist(
        env.root.path(),
        &["build", &format!("{base}/nothing.git#main")],
        None,
    );
    assert!(!run.status.success());
    assert!(run.stderr.contains("nothing.git"), "{}", run.stderr);
}

/// An sshd on 127.0.0.1 accepting only `client_key` for root; killed on drop.
struct Sshd {
    child: std::process::Child,
    port: u16,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn keygen(path: &Path) {
    hoist_testutil::run_ok(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "hoist-test", "-f"])
            .arg(path),
    );
}

fn start_sshd(dir: &Path, client_key: &Path) -> Sshd {
    keygen(&dir.join("host_key"));
    fs::copy(
        client_key.with_extension("pub"),
        dir.join("authorized_keys"),
    )
    .unwrap();
    let port = hoist_testutil::free_port();
    let config = dir.join("sshd_config");
    fs::write(
        &config,
        format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {dir}/host_key\n\
             AuthorizedKeysFile {dir}/authorized_keys\nPidFile {dir}/sshd.pid\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             PermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\n",
            dir = dir.display()
        ),
    )
    .unwrap();
    // sshd refuses to start without its privilege separation directory.
    fs::create_dir_all("/run/sshd").unwrap();
    let child = Command::new("/usr/sbin/sshd")
        .args(["-D", "-e", "-f"])
        .arg(&config)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let sshd = Sshd { child, port };
    // Wait until it listens (bounded: the build would fail clearly anyway).
    for _ in 0..500 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    sshd
}

#[test]
fn git_over_ssh_uses_the_builds_ssh_agent() {
    hoist_testutil::require_root!();
    hoist_testutil::require_program!("git");
    hoist_testutil::require_program!("ssh-keygen");
    hoist_testutil::require_program!("ssh-agent");
    if !Path::new("/usr/sbin/sshd").exists() {
        hoist_testutil::cannot_run("this test needs /usr/sbin/sshd (Debian openssh-server)");
        return;
    }
    let env = Env::new();
    let served = env.scratch.path().join("srv");
    fs::create_dir_all(&served).unwrap();
    make_repo(&served, &env.scratch.path().join("work"));
    let ssh_dir = env.scratch.path().join("ssh");
    fs::create_dir_all(&ssh_dir).unwrap();
    let key = ssh_dir.join("client_key");
    keygen(&key);
    let sshd = start_sshd(&ssh_dir, &key);
    let url = format!(
        "ssh://root@127.0.0.1:{}{}/repo.git",
        sshd.port,
        served.display()
    );
    let ssh_flag = format!("default={}", key.display());

    env.dockerfile(&format!(
        "FROM busybox\nADD {url}#v1:sub /src/\nADD --keep-git-dir {url}#main /full/\n"
    ));
    let (run, root) = env.build_fs("gitssh:1", &["--ssh", &ssh_flag]);
    assert_eq!(
        fs::read_to_string(root.join("src/in-sub.txt")).unwrap(),
        "v1\n"
    );
    assert_eq!(
        fs::read_to_string(root.join("full/sub/in-sub.txt")).unwrap(),
        "main\n"
    );
    assert!(root.join("full/.git").is_dir());
    assert!(!run.stderr.contains("PRIVATE KEY"), "{}", run.stderr);

    // Without the agent the key is nowhere git's ssh looks: refused, naming the URL.
    env.dockerfile(&format!("FROM busybox\nADD {url}#main /other/\n"));
    let refused = env.build(&["-t", "gitssh:2", "--no-cache"]);
    assert!(!refused.status.success());
    assert!(refused.stderr.contains("repo.git"), "{}", refused.stderr);

    // A build context over ssh, through the same agent.
    let dest = env.scratch.path().join("ctx-fs");
    let output = format!("type=local,dest={}", dest.display());
    hoist(
        env.root.path(),
        &[
            "build",
            "--ssh",
            &ssh_flag,
            "-o",
            &output,
            &format!("{url}#main:ctx"),
        ],
        None,
    )
    .assert_ok();
    assert_eq!(
        fs::read_to_string(dest.join("hello")).unwrap(),
        "hello from git\n"
    );
    drop(sshd);
}

/// What the counting server saw.
#[derive(Default)]
struct Counts {
    /// Responses that carried the body (200).
    full: usize,
    /// `304 Not Modified` answers.
    not_modified: usize,
    /// `If-None-Match` values received.
    if_none_match: Vec<String>,
}

/// Serves `/file.txt` from `content` with an ETag derived from its bytes,
/// answering `If-None-Match` with 304; returns the base URL.
fn serve_counting(
    content: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    counts: std::sync::Arc<std::sync::Mutex<Counts>>,
) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut first = String::new();
            if reader.read_line(&mut first).is_err() {
                continue;
            }
            let mut if_none_match = None;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some((name, value)) = line.split_once(':') {
                    if name.eq_ignore_ascii_case("if-none-match") {
                        if_none_match = Some(value.trim().to_owned());
                    }
                }
            }
            let body = content.lock().unwrap().clone();
            let etag = format!(
                "\"{}\"",
                body.len() * 31 + body.first().copied().unwrap_or(0) as usize
            );
            let mut counts = counts.lock().unwrap();
            if let Some(v) = &if_none_match {
                counts.if_none_match.push(v.clone());
            }
            let response = if first.starts_with("GET /file.txt ") {
                if if_none_match.as_deref() == Some(etag.as_str()) {
                    counts.not_modified += 1;
                    format!(
                        "HTTP/1.1 304 Not Modified\r\nETag: {etag}\r\nConnection: close\r\n\r\n"
                    )
                    .into_bytes()
                } else {
                    counts.full += 1;
                    let mut r = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nETag: {etag}\r\nLast-Modified: {LAST_MODIFIED}\r\nConnection: close\r\n\r\n",
                        body.len()
                    )
                    .into_bytes();
                    r.extend_from_slice(&body);
                    r
                }
            } else {
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec()
            };
            drop(counts);
            let _ = stream.write_all(&response);
        }
    });
    format!("http://{addr}")
}

#[test]
fn add_of_an_unchanged_url_is_not_downloaded_again() {
    hoist_testutil::require_root!();
    let env = Env::new();
    let content = std::sync::Arc::new(std::sync::Mutex::new(b"first version\n".to_vec()));
    let counts = std::sync::Arc::new(std::sync::Mutex::new(Counts::default()));
    let base = serve_counting(content.clone(), counts.clone());
    env.dockerfile(&format!("FROM busybox\nADD {base}/file.txt /f.txt\n"));

    let (_, first) = env.build_fs("cond:1", &[]);
    assert_eq!(
        fs::read_to_string(first.join("f.txt")).unwrap(),
        "first version\n"
    );
    assert_eq!(counts.lock().unwrap().full, 1);

    let (second_run, second) = env.build_fs("cond:2", &[]);
    assert_eq!(
        fs::read_to_string(second.join("f.txt")).unwrap(),
        "first version\n"
    );
    assert_eq!(
        fs::metadata(second.join("f.txt")).unwrap().mtime(),
        LAST_MODIFIED_SECS,
        "Last-Modified stays the mtime when the server answers 304"
    );
    {
        let c = counts.lock().unwrap();
        assert_eq!(c.full, 1, "an unchanged file is not downloaded again");
        assert_eq!(c.not_modified, 1);
        assert_eq!(c.if_none_match, vec!["\"536\"".to_owned()]);
    }
    let lines: Vec<&str> = second_run.stderr.lines().collect();
    let add = lines
        .iter()
        .position(|l| l.ends_with("/file.txt /f.txt"))
        .unwrap_or_else(|| panic!("no ADD step in\n{}", second_run.stderr));
    assert!(lines[add + 1].ends_with(" CACHED"), "{}", second_run.stderr);
    assert_eq!(
        env.config("cond:1")["rootfs"],
        env.config("cond:2")["rootfs"],
        "the same layers"
    );

    *content.lock().unwrap() = b"second version, longer\n".to_vec();
    let (_, third) = env.build_fs("cond:3", &[]);
    assert_eq!(
        fs::read_to_string(third.join("f.txt")).unwrap(),
        "second version, longer\n"
    );
    assert_eq!(
        counts.lock().unwrap().full,
        2,
        "a changed file is downloaded"
    );

    // --no-cache still gets the bytes even when the server says 304.
    let (_, fourth) = env.build_fs("cond:4", &["--no-cache"]);
    assert_eq!(
        fs::read_to_string(fourth.join("f.txt")).unwrap(),
        "second version, longer\n"
    );
    assert_eq!(counts.lock().unwrap().full, 3);
}
