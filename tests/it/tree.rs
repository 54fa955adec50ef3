use crate::util::{make_tar, Hoist};

#[test]
fn images_tree_shows_an_image_imported_on_top_of_another_as_its_child() {
    let h = Hoist::new();
    h.import_busybox("busybox");
    let app = h.path("app.tar");
    make_tar(&app, &[("srv/app.sh", b"#!/bin/sh\necho app\n")]);
    let more = h.path("more.tar");
    make_tar(&more, &[("srv/more", b"more")]);
    let other = h.path("other.tar");
    make_tar(&other, &[("other", b"unrelated")]);
    let app = app.to_str().unwrap();
    h.ok(&[
        "import",
        "--base",
        "busybox",
        app,
        "app:1",
        "-c",
        r#"CMD ["/srv/app.sh"]"#,
    ]);
    h.ok(&["import", "--base", "app:1", more.to_str().unwrap(), "app:2"]);
    h.ok(&[
        "import",
        "--base",
        "busybox",
        more.to_str().unwrap(),
        "side:1",
    ]);
    h.ok(&["import", other.to_str().unwrap(), "other:1"]);

    // The child inherits the base's layers and config.
    let child = h.inspect("app:1");
    let base = h.inspect("busybox");
    assert_eq!(child["Layers"][0], base["Layers"][0]);
    assert_eq!(child["Layers"].as_array().unwrap().len(), 2);
    assert_eq!(
        child["Config"]["config"]["Cmd"],
        serde_json::json!(["/srv/app.sh"])
    );
    assert_eq!(child["Config"]["history"].as_array().unwrap().len(), 2);

    let tree = h.ok(&["images", "--tree"]);
    let shape: Vec<String> = tree
        .lines()
        .map(|l| l.split(" (").next().unwrap().to_string())
        .collect();
    let mut roots: Vec<Vec<String>> = Vec::new();
    for line in shape {
        if !line.starts_with(['├', '└', '│', ' ']) {
            roots.push(Vec::new());
        }
        roots.last_mut().unwrap().push(line);
    }
    roots.sort();
    assert_eq!(
        roots,
        [
            vec![
                "busybox:latest".to_string(),
                "├── app:1".to_string(),
                "│   └── app:2".to_string(),
                "└── side:1".to_string(),
            ],
            vec!["other:1".to_string()],
        ],
        "{tree}"
    );
    assert!(tree.contains("app:1 ("), "{tree}");
    assert!(tree.contains("2 layers"), "{tree}");
}
