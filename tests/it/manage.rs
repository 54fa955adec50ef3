use crate::util::{make_tar, Hoist};

fn blob_count(h: &Hoist) -> usize {
    std::fs::read_dir(h.root.join("content/blobs/sha256"))
        .unwrap()
        .count()
}

#[test]
fn images_lists_docker_columns_json_and_ids() {
    let h = Hoist::new();
    h.import_busybox("busybox");
    h.ok(&["tag", "busybox", "registry.example.com:5000/team/bb:v1"]);
    let id = h.inspect("busybox")["Id"].as_str().unwrap().to_string();
    let short = &id[7..19];
    let table = h.ok(&["images"]);
    let lines: Vec<Vec<&str>> = table
        .lines()
        .map(|l| {
            l.split("   ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .collect()
        })
        .collect();
    assert_eq!(
        lines[0],
        ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"]
    );
    let mut rows: Vec<(&str, &str, &str)> = lines[1..].iter().map(|r| (r[0], r[1], r[2])).collect();
    rows.sort();
    assert_eq!(
        rows,
        [
            ("busybox", "latest", short),
            ("registry.example.com:5000/team/bb", "v1", short)
        ]
    );
    assert!(lines[1][3].ends_with("ago"), "{table}");
    assert_eq!(h.ok(&["images", "-q"]), format!("{short}\n"));
    let digests = h.ok(&["images", "--digests"]);
    let target = h.inspect("busybox")["Target"]["Digest"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(digests.lines().next().unwrap().contains("DIGEST"));
    assert!(digests.contains(&target));
    let json: Vec<serde_json::Value> = h
        .ok(&["images", "--format", "json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(json.len(), 2);
    assert!(json
        .iter()
        .all(|v| v["ID"] == id.as_str() && v["Digest"] == target.as_str()));
    assert!(json
        .iter()
        .any(|v| v["Name"] == "docker.io/library/busybox:latest"));
}

#[test]
fn history_lists_entries_newest_first() {
    let h = Hoist::new();
    h.import_busybox("busybox");
    let tar = h.path("x.tar");
    make_tar(&tar, &[("x", b"x")]);
    h.ok(&[
        "import",
        "--base",
        "busybox",
        tar.to_str().unwrap(),
        "app",
        "-m",
        "add x",
    ]);
    let id = h.inspect("app")["Id"].as_str().unwrap()[7..19].to_string();
    let out = h.ok(&["history", "app"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(lines[0].starts_with("IMAGE") && lines[0].contains("CREATED BY"));
    assert!(
        lines[1].starts_with(&id) && lines[1].trim_end().ends_with("add x"),
        "{out}"
    );
    assert!(
        lines[2].starts_with("<missing>")
            && lines[2].contains("hoist import --change 'CMD [\"sh\"]'")
    );
    assert!(lines[2].contains("Imported from"));
}

#[test]
fn tag_and_rmi_follow_docker_rules_and_delete_unused_blobs() {
    let h = Hoist::new();
    h.import_busybox("busybox");
    let only_busybox = blob_count(&h);
    assert_eq!(only_busybox, 3);
    h.ok(&["tag", "busybox", "bb:2"]);
    let tar = h.path("x.tar");
    make_tar(&tar, &[("x", b"x")]);
    h.ok(&[
        "import",
        "--base",
        "busybox",
        tar.to_str().unwrap(),
        "child:1",
    ]);
    assert_eq!(blob_count(&h), 6);
    let id = h.inspect("busybox")["Id"].as_str().unwrap().to_string();

    // By ID with two names: refused.
    let err = h.fails(&["rmi", &id[7..19]]);
    assert!(
        err.starts_with(&format!(
            "error: cannot remove image {} by ID: it has several names (bb:2, busybox:latest)",
            &id[7..19]
        )),
        "{err}"
    );
    // By name while another name remains: only untagged.
    assert_eq!(h.ok(&["rmi", "bb:2"]), "Untagged: bb:2\n");
    assert_eq!(blob_count(&h), 6);
    // The last name of a base image: refused while a child needs it.
    let err = h.fails(&["rmi", "busybox"]);
    assert_eq!(
        err.lines().next().unwrap(),
        "error: cannot remove `busybox:latest`: it is the base of child:1 (use `--force` to remove it anyway)"
    );
    // The child goes; its own blobs go, shared ones stay.
    let child_id = h.inspect("child:1")["Id"].as_str().unwrap().to_string();
    assert_eq!(
        h.ok(&["rmi", "child:1"]),
        format!("Untagged: child:1\nDeleted: {child_id}\n")
    );
    assert_eq!(blob_count(&h), only_busybox);
    assert_eq!(
        h.ok(&["rmi", "busybox"]),
        format!("Untagged: busybox:latest\nDeleted: {id}\n")
    );
    assert_eq!(blob_count(&h), 0);
    assert_eq!(h.ok(&["images", "-q"]), "");
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(h.root.join("content/index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"], serde_json::json!([]));
}

#[test]
fn rmi_force_removes_a_base_and_keeps_the_child_whole() {
    let h = Hoist::new();
    h.import_busybox("busybox");
    let tar = h.path("x.tar");
    make_tar(&tar, &[("x", b"x")]);
    h.ok(&[
        "import",
        "--base",
        "busybox",
        tar.to_str().unwrap(),
        "child:1",
    ]);
    h.ok(&["rmi", "--force", "busybox"]);
    // The child still resolves and can be saved (all its blobs are there).
    let child = h.inspect("child:1");
    for layer in child["Layers"].as_array().unwrap() {
        let d = layer["Digest"].as_str().unwrap();
        assert!(h.root.join("content/blobs/sha256").join(&d[7..]).is_file());
    }
    h.ok(&["save", "child:1", "-o", h.path("c.tar").to_str().unwrap()]);
}

#[test]
fn du_reports_usage_by_kind() {
    let h = Hoist::new();
    h.import_busybox("busybox");
    let out = h.ok(&["du"]);
    assert!(
        out.starts_with(&format!("store: {}\n", h.root.display())),
        "{out}"
    );
    let row = |kind: &str| -> Vec<String> {
        out.lines()
            .find(|l| l.trim_start().starts_with(kind))
            .unwrap_or_else(|| panic!("no {kind} row in {out}"))
            .split("   ")
            .map(|c| c.trim().to_string())
            .filter(|c| !c.is_empty())
            .collect()
    };
    assert_eq!(row("images")[1], "1");
    assert_eq!(row("blobs in use")[1], "3");
    assert_eq!(row("blobs unreferenced")[1..], ["0", "0B"]);
    assert_eq!(row("ingest")[1..], ["0", "0B"]);
    let json: serde_json::Value = serde_json::from_str(&h.ok(&["du", "--format", "json"])).unwrap();
    let blobs: u64 = std::fs::read_dir(h.root.join("content/blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert_eq!(json["Usage"][1]["Type"], "blobs in use");
    assert_eq!(json["Usage"][1]["Size"], blobs);
}
