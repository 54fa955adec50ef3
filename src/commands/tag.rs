//! `hoist tag SOURCE TARGET`.

use crate::context::Context;
use crate::resolve;

/// Give an image another name
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Existing image (name, ID or digest)
    source: String,
    /// New name, NAME[:TAG]
    target: String,
}

pub fn run(context: &Context, args: Args) -> anyhow::Result<()> {
    let target = resolve::parse_tag_name(&args.target)?;
    let store = context.store()?;
    let (entry, _) = resolve::resolve(&store, &args.source)?;
    store.set_ref(&target.to_string(), &entry.target)?;
    Ok(())
}
