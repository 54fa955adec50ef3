//! Base-image watching (Docker Hub's repository links): repositories with
//! `watch_base = true` are rebuilt when an image their Dockerfile's `FROM`
//! lines name changes in its registry.
//!
//! Which images: those the latest successful build used (recorded in
//! `autobuild_bases` with the manifest digest it pulled). A repository never
//! built yet gets its list once from a shallow checkout of the remote's HEAD
//! branch, with the digests of that moment as the baseline, so the first
//! check does not rebuild. Every `poll_interval` each image is resolved in
//! its registry (the host platform's manifest, what a build pulls); when a
//! digest differs, the new one is remembered and the HEAD branch is queued
//! with trigger `base:IMAGE` and a message naming the image and its digest;
//! with `on_base_change = "rebase"` the trigger is `rebase:IMAGE`, which asks
//! the executor to move the repository's last images onto the new base
//! (`hoist_builder::engine::rebase`) instead of running the build again.

use std::collections::BTreeMap;

use hoist_builder::BuildOptions;
use hoist_registry::Client;
use tokio::sync::watch;

use crate::config::RepoConfig;
use crate::executor::{checkout, BuildJob, LogSink};
use crate::image::{base_images, moved_digest, remote_digest};
use crate::server::{autobuild_dir, Queued, Service};
use crate::webhook::PushedRef;
use crate::Error;

/// What one check of a repository's base images did.
#[derive(Debug, Clone, Default)]
pub struct BaseCheck {
    /// Images found by reading the Dockerfile (first check of a repository
    /// never built), with their digests, remembered as the baseline.
    pub discovered: BTreeMap<String, String>,
    /// Images whose digest changed: image → (old, new).
    pub changed: BTreeMap<String, (String, String)>,
    /// Images that could not be resolved, with why.
    pub unresolved: BTreeMap<String, String>,
    /// The builds queued for the change.
    pub queued: Option<Queued>,
}

/// Check `repo`'s base images every `poll_interval` (the first check at
/// once) until `stop` turns true.
pub async fn watch_repo(
    svc: Service,
    repo: RepoConfig,
    client: Client,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        match check_bases(&svc, &repo, &client).await {
            Ok(check) => {
                for (image, why) in &check.unresolved {
                    tracing::warn!(repo = %repo.name, image = %image, error = %crate::redact::shown(&why.to_string()), "cannot resolve a base image");
                }
                for (image, (old, new)) in &check.changed {
                    tracing::info!(repo = %repo.name, image = %image, old = %old, new = %new, "base image changed");
                }
            }
            Err(e) => {
                tracing::warn!(repo = %repo.name, error = %crate::redact::shown(&e.to_string()), "base image check failed")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(repo.poll_interval) => {}
            _ = stop.changed() => return,
        }
    }
}

/// One check of `repo`'s base images (see the module docs).
pub async fn check_bases(
    svc: &Service,
    repo: &RepoConfig,
    client: &Client,
) -> Result<BaseCheck, Error> {
    let mut check = BaseCheck::default();
    let known = {
        let svc = svc.clone();
        let name = repo.name.clone();
        blocking(move || svc.queue().bases(&name)).await?
    };
    if known.is_empty() {
        let images = {
            let svc = svc.clone();
            let repo = repo.clone();
            blocking(move || discover(&svc, &repo)).await?
        };
        for image in images {
            match remote_digest(client, &image).await {
                Ok(d) => {
                    check.discovered.insert(image, d);
                }
                Err(e) => {
                    check.unresolved.insert(image, e);
                }
            }
        }
        if !check.discovered.is_empty() {
            let svc = svc.clone();
            let name = repo.name.clone();
            let found = check.discovered.clone();
            blocking(move || svc.queue().set_bases(&name, None, &found)).await?;
        }
        return Ok(check);
    }
    for (image, old) in known {
        match moved_digest(client, &image, &old).await {
            Ok(Some(new)) => {
                check.changed.insert(image, (old, new));
            }
            Ok(None) => {}
            Err(e) => {
                check.unresolved.insert(image, e);
            }
        }
    }
    let Some(image) = check.changed.keys().next() else {
        return Ok(check);
    };
    let trigger = format!("{}{image}", repo.on_base_change.trigger_prefix());
    let message = check
        .changed
        .iter()
        .map(|(i, (_, d))| format!("base image {i} changed to {d}"))
        .collect::<Vec<_>>()
        .join("; ");
    let svc2 = svc.clone();
    let repo2 = repo.clone();
    let changed = check.changed.clone();
    let queued = blocking(move || {
        let head = crate::resolve_ref(&repo2.url, None, None)?;
        for (image, (_, new)) in &changed {
            svc2.queue().update_base(&repo2.name, image, new)?;
        }
        svc2.enqueue(
            &repo2,
            &[PushedRef {
                git_ref: head.git_ref,
                sha: head.sha,
                message,
            }],
            &trigger,
        )
    })
    .await?;
    check.queued = Some(queued);
    Ok(check)
}

/// The base images of the Dockerfile at the remote's HEAD branch.
fn discover(svc: &Service, repo: &RepoConfig) -> Result<Vec<String>, Error> {
    let head = crate::resolve_ref(&repo.url, None, None)?;
    let build_args = repo
        .plan(&head.git_ref, &head.sha)
        .map(|p| p.build_args)
        .unwrap_or_else(|| repo.build_args.clone());
    let job = BuildJob {
        id: 0,
        repo: repo.name.clone(),
        url: repo.url.clone(),
        git_ref: head.git_ref.clone(),
        sha: head.sha.clone(),
        dockerfile: repo.dockerfile.clone(),
        context: repo.context.clone(),
        build_args: build_args.clone(),
        tags: Vec::new(),
        push_tags: Vec::new(),
        cache_from: Vec::new(),
        cache_to: None,
        trigger: String::new(),
        work_dir: autobuild_dir(svc.store().root()).join("work"),
    };
    let fail = |message: String| Error::Resolve {
        url: repo.url.clone(),
        git_ref: head.git_ref.clone(),
        message,
    };
    // The checkout's git output goes to a scratch log, not a build's.
    let scratch = tempfile::NamedTempFile::new_in(autobuild_dir(svc.store().root()))
        .map_err(|e| fail(format!("cannot create a scratch log: {e}")))?;
    let log = LogSink::open(scratch.path())
        .map_err(|e| fail(format!("cannot open a scratch log: {e}")))?;
    let dir = checkout(std::path::Path::new("git"), &job, &log).map_err(|e| fail(e.message))?;
    let dockerfile = std::fs::read_to_string(dir.path().join(&repo.dockerfile))
        .map_err(|e| fail(format!("cannot read `{}`: {e}", repo.dockerfile)))?;
    let options = BuildOptions {
        build_args,
        ..Default::default()
    };
    base_images(&dockerfile, &repo.dockerfile, &options).map_err(|e| fail(e.message))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(Error::Task(e.to_string())))
}
