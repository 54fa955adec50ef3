//! Copy an image between an OCI layout and a registry, as `skopeo copy`
//! does; used by `registry/bench/transfer.sh` to compare the two.
//!
//! ```text
//! transfer push LAYOUT_DIR REF_NAME REGISTRY/REPO:TAG
//! transfer pull REGISTRY/REPO:TAG LAYOUT_DIR REF_NAME
//! ```
#![allow(clippy::print_stderr)]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed setup should panic with its message"
)]

use std::sync::Arc;

use hoist_registry::{Client, OciDirStore, PullOptions, PushOptions, Reference};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Err(e) = run(&args).await {
        let mut msg = e.to_string();
        let mut source = e.source();
        while let Some(s) = source {
            msg.push_str(&format!(": {s}"));
            source = s.source();
        }
        eprintln!("transfer: {msg}");
        std::process::exit(1);
    }
}

async fn run(args: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    let client = Client::from_environment()?;
    match args.get(1).map(String::as_str) {
        Some("push") if args.len() == 5 => {
            let store = Arc::new(OciDirStore::open(&args[2])?);
            let root = store
                .get_ref(&args[3])?
                .ok_or_else(|| format!("no image named {} in {}", args[3], args[2]))?;
            let target = Reference::parse(&args[4])?;
            let pushed = client
                .push(&target, &root, store, &PushOptions::default())
                .await?;
            eprintln!(
                "pushed {} ({} uploaded, {} existing)",
                pushed.reference, pushed.uploaded, pushed.existing
            );
        }
        Some("pull") if args.len() == 5 => {
            let reference = Reference::parse(&args[2])?;
            let store = Arc::new(OciDirStore::open(&args[3])?);
            let image = client
                .pull(&reference, store.clone(), &PullOptions::default())
                .await?;
            store.set_ref(&args[4], &image.manifest)?;
            eprintln!("pulled {}", image.reference);
        }
        _ => {
            return Err(
                "usage: transfer push LAYOUT NAME REF | transfer pull REF LAYOUT NAME".into(),
            )
        }
    }
    Ok(())
}
