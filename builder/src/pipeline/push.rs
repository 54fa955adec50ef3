//! Pushing the built image to its names (`--push`, `-o type=registry`,
//! `-o type=image,push=true`, autobuild's push rules).

use std::sync::Arc;

use hoist_cache::{Descriptor, Store};
use hoist_registry::{block_on, CacheBlobStore, PushEvent, Reference};

use super::{Notice, Notify, PipelineError};

/// Pushes `target` (an image manifest or an index) of the store to `name`:
/// blobs the registry holds in another repository are mounted, and every
/// blob is recorded as living there afterwards. Progress goes to `notify`
/// as [`Notice::Pushing`], [`Notice::Push`] and [`Notice::Pushed`].
pub fn push_image(
    store: &Arc<Store>,
    client: &hoist_registry::Client,
    name: &str,
    target: &Descriptor,
    notify: &Notify,
) -> Result<(), PipelineError> {
    let reference = Reference::parse(name)
        .map_err(|e| PipelineError::Invalid(format!("invalid name to push `{name}`: {e}")))?;
    let action = || format!("push {}", reference.familiar());
    let blobs = CacheBlobStore::new(Arc::clone(store)).map_err(|e| PipelineError::Other {
        action: action(),
        source: Box::new(e),
    })?;
    notify(Notice::Pushing {
        name: name.to_owned(),
    });
    let forward = {
        let notify = notify.clone();
        let name = name.to_owned();
        move |event: PushEvent| {
            notify(Notice::Push {
                name: name.clone(),
                event: Box::new(event),
            })
        }
    };
    let pushed = block_on(blobs.push(client, &reference, target, Some(Arc::new(forward))))
        .and_then(|r| r)
        .map_err(|source| PipelineError::Registry {
            action: action(),
            source: Box::new(source),
        })?;
    notify(Notice::Pushed {
        name: name.to_owned(),
        digest: pushed.descriptor.digest().to_string(),
        size: pushed.descriptor.size(),
    });
    Ok(())
}

/// A push event as `docker push` shows it (`3f4d90098f5b: Pushed`), for the
/// layers; `None` for what it does not show.
pub fn push_event_line(event: &PushEvent) -> Option<String> {
    let (descriptor, status) = match event {
        PushEvent::BlobExists { descriptor } => (descriptor, "Layer already exists".to_owned()),
        PushEvent::BlobMounted { descriptor, from } => (descriptor, format!("Mounted from {from}")),
        PushEvent::BlobDone { descriptor } => (descriptor, "Pushed".to_owned()),
        PushEvent::Retrying(notice) => return Some(super::retry_line(notice)),
        _ => return None,
    };
    super::layer_line(descriptor, &status)
}
