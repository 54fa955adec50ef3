//! The base images of a build: which ones the target needs, and pulling
//! those the store lacks (or, with [`PullPolicy::Always`], those whose name
//! moved in the registry).

use std::collections::BTreeMap;
use std::sync::Arc;

use hoist_cache::Store;
use hoist_registry::{CacheBlobStore, PullEvent, PullOptions, Reference};

use super::{Notice, Notify, PipelineError, RegistryClient};
use crate::engine::build::{base_images_for_platforms, registry_platform, BuildRequest};

/// When a build pulls its base images.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PullPolicy {
    /// Only images the store lacks for the platform (`docker build`).
    #[default]
    Missing,
    /// Ask the registry every time and pull when its name points at another
    /// manifest than the store's (`docker build --pull`, and autobuild, so
    /// that a moved base tag is what the build uses). An image the registry
    /// cannot give but the store has is used as it is, with a warning.
    Always,
}

/// Makes the store hold every base image of `request` for its platform, as
/// `policy` says; returns the manifest digest each resolves to. A
/// Dockerfile that does not parse is left to the build to report, and an
/// image that cannot be pulled is a warning: the build then names the
/// missing image at its Dockerfile line.
pub(super) fn ensure(
    store: &Arc<Store>,
    client: &RegistryClient,
    request: &BuildRequest,
    policy: PullPolicy,
    notify: &Notify,
) -> Result<BTreeMap<String, String>, PipelineError> {
    let mut used = BTreeMap::new();
    // Each platform of a multi-platform build needs its own bases; one
    // needed by several (a BUILDPLATFORM stage's) is pulled once.
    let mut images = Vec::new();
    for options in request.platform_options() {
        let options = hoist_frontend::BuildOptions {
            platform: options.platform,
            ..crate::engine::build::frontend_options(request)
        };
        let Ok(found) =
            base_images_for_platforms(&request.dockerfile, &request.dockerfile_name, &options)
        else {
            return Ok(used);
        };
        for pair in found {
            if !images.contains(&pair) {
                images.push(pair);
            }
        }
    }
    // An OCI layout's image is in the store already, and in no registry.
    let layouts = crate::engine::named::layout_images(&request.named_contexts);
    for (image, platform) in images {
        if layouts.contains(&image) {
            continue;
        }
        let Ok(reference) = Reference::parse(&image) else {
            continue;
        };
        let platform = registry_platform(&platform);
        let local = stored(store, &reference, &platform)?;
        if policy == PullPolicy::Missing {
            if let Some(digest) = local {
                used.insert(image, digest);
                continue;
            }
        } else {
            let remote = client.get().and_then(|c| {
                hoist_registry::block_on(c.resolve_image(&reference, Some(&platform)))
                    .and_then(|r| r)
                    .map_err(|source| PipelineError::Registry {
                        action: format!("resolve {}", reference.familiar()),
                        source: Box::new(source),
                    })
            });
            match (remote, local) {
                (Ok(remote), Some(local))
                    if remote.manifest.descriptor.digest().as_ref() == local =>
                {
                    notify(Notice::BaseUpToDate {
                        image: image.clone(),
                        digest: local.clone(),
                    });
                    used.insert(image, local);
                    continue;
                }
                (Ok(_), _) => {}
                (Err(e), Some(local)) => {
                    notify(Notice::BaseFromStore {
                        image: image.clone(),
                        digest: local.clone(),
                        error: hoist_untrusted::text::error_chain(&e),
                    });
                    used.insert(image, local);
                    continue;
                }
                (Err(e), None) => {
                    notify(Notice::PullFailed {
                        image: image.clone(),
                        platform: platform.to_string(),
                        error: hoist_untrusted::text::error_chain(&e),
                    });
                    continue;
                }
            }
        }
        let pulled = client
            .get()
            .and_then(|c| pull_image(store, c, &reference, &platform, notify));
        match pulled {
            Ok(pulled) => {
                used.insert(image, pulled.manifest.digest().to_string());
            }
            Err(e) => notify(Notice::PullFailed {
                image,
                platform: platform.to_string(),
                error: hoist_untrusted::text::error_chain(&e),
            }),
        }
    }
    Ok(used)
}

/// Pulls `reference` for `platform` into the store and names it, as `hoist
/// pull` does; progress goes to `notify` as [`Notice::Pulling`],
/// [`Notice::Pull`] and [`Notice::Pulled`].
pub fn pull_image(
    store: &Arc<Store>,
    client: &hoist_registry::Client,
    reference: &Reference,
    platform: &hoist_registry::Platform,
    notify: &Notify,
) -> Result<hoist_registry::PulledImage, PipelineError> {
    let image = reference.to_string();
    notify(Notice::Pulling {
        image: image.clone(),
        platform: platform.to_string(),
    });
    let blobs = CacheBlobStore::new(Arc::clone(store)).map_err(|e| PipelineError::Other {
        action: format!("open the store to pull {}", reference.familiar()),
        source: Box::new(e),
    })?;
    let forward = {
        let notify = notify.clone();
        let image = image.clone();
        move |event: PullEvent| {
            notify(Notice::Pull {
                image: image.clone(),
                event: Box::new(event),
            })
        }
    };
    let options = PullOptions {
        platform: Some(platform.clone()),
        events: Some(Arc::new(forward)),
    };
    let pulled = hoist_registry::block_on(blobs.pull_image(client, reference, &options))
        .and_then(|r| r)
        .map_err(|source| PipelineError::Registry {
            action: format!("pull {}", reference.familiar()),
            source: Box::new(source),
        })?;
    notify(Notice::Pulled {
        image,
        digest: pulled.manifest.digest().to_string(),
    });
    Ok(pulled)
}

/// The digest of the store's manifest of `reference` for `platform`.
fn stored(
    store: &Store,
    reference: &Reference,
    platform: &hoist_registry::Platform,
) -> Result<Option<String>, PipelineError> {
    let read = |source| PipelineError::Store {
        action: format!("look up {} in the store", reference.familiar()),
        source,
    };
    // A store that cannot say is a store without it: the pull, then the
    // build, report what is wrong.
    let found = match reference.digest() {
        Some(digest) => match digest.parse() {
            Ok(d) => hoist_registry::stored_manifest_by_digest(store, &d, platform)
                .ok()
                .flatten(),
            Err(_) => None,
        },
        None => match store.get_ref(&reference.to_string()).map_err(read)? {
            Some(r) => hoist_registry::stored_manifest(store, &r.target, platform)
                .ok()
                .flatten(),
            None => None,
        },
    };
    Ok(found.map(|m| m.digest().to_string()))
}
