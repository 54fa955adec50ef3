//! Several hoist processes on one store at once.

use crate::util::{make_tar, Hoist};

#[test]
fn parallel_imports_into_one_store_all_land_and_index_json_agrees() {
    let h = Hoist::new();
    h.ok(&["images"]);
    let children: Vec<_> = (0..6)
        .map(|i| {
            let tar = h.path(&format!("{i}.tar"));
            // Half share the same layer: concurrent ingest of one blob.
            let content = format!("file {}", i % 2);
            make_tar(&tar, &[("f", content.as_bytes())]);
            h.command()
                .args(["import", tar.to_str().unwrap(), &format!("p:{i}")])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let json: Vec<serde_json::Value> = h
        .ok(&["images", "--format", "json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(json.len(), 6);
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(h.root.join("content/index.json")).unwrap()).unwrap();
    let mut from_index: Vec<(String, String)> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["annotations"]["org.opencontainers.image.ref.name"]
                    .as_str()
                    .unwrap()
                    .to_string(),
                m["digest"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let mut from_db: Vec<(String, String)> = json
        .iter()
        .map(|v| {
            (
                v["Name"].as_str().unwrap().to_string(),
                v["Digest"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    from_index.sort();
    from_db.sort();
    assert_eq!(from_index, from_db);
    assert!(std::fs::read_dir(h.root.join("content/ingest"))
        .unwrap()
        .next()
        .is_none());
}

#[test]
fn an_import_killed_mid_ingest_leaves_no_visible_blob_or_ref() {
    use std::io::Write;
    let h = Hoist::new();
    h.import_busybox("busybox");
    let before = h.snapshot();
    let tar = std::fs::read(h.path("busybox.tar")).unwrap();
    let mut child = h
        .command()
        .args(["import", "-", "killed:1"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&tar[..tar.len() / 2]).unwrap();
    stdin.flush().unwrap();
    // Wait until the ingest file exists: the import is mid-stream.
    let ingest = h.root.join("content/ingest");
    let mut polls = 0;
    while std::fs::read_dir(&ingest).unwrap().next().is_none() {
        polls += 1;
        assert!(polls < 6000, "the import never started its ingest");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    drop(stdin);
    let (mut files, refs) = h.snapshot();
    // Only the ingest file may remain; blobs, index.json and refs are as before.
    files.retain(|path, _| !path.starts_with("ingest/"));
    assert_eq!((files, refs), before);
}
