//! What every command needs: where the store is, opened on demand.

use std::path::PathBuf;

use anyhow::Context as _;
use hoist_cache::Store;

pub struct Context {
    pub root: PathBuf,
}

impl Context {
    pub fn new(root: Option<PathBuf>) -> Context {
        Context {
            root: root.unwrap_or_else(hoist_cache::default_root),
        }
    }

    /// Open (creating when missing) the store.
    pub fn store(&self) -> anyhow::Result<Store> {
        Store::open(&self.root)
            .with_context(|| format!("failed to open the store at `{}`", self.root.display()))
    }
}
