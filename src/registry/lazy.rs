//! The one path by which a blob the store knows only by its registry
//! location (`store::RemoteBlob`) gets its bytes: unpacking for a step,
//! exports that write bytes, and pushes to another registry all call
//! [`ensure_blobs`] first.

use std::collections::BTreeMap;

use crate::store::{Descriptor, Digest, Store};

use super::client::{Client, ClientOptions};
use super::credentials::{AuthConfig, AuthEnv};
use super::error::RegistryError;
use super::progress::Progress;
use super::reference::Reference;

/// Downloads every blob of `digests` that the store has no bytes for but a
/// remote record; blobs already here (or unknown) are left alone. Blobs of
/// one repository download in parallel. Returns how many were fetched.
pub fn ensure_blobs(
    store: &Store,
    digests: &[Digest],
    opts: &ClientOptions,
    progress: &Progress,
) -> Result<usize, RegistryError> {
    let mut by_repo: BTreeMap<(String, String), Vec<Descriptor>> = BTreeMap::new();
    for d in digests {
        if let Some(r) = store.remote(d) {
            let list = by_repo.entry((r.registry, r.repository)).or_default();
            if !list.iter().any(|x| x.digest == r.digest) {
                list.push(Descriptor {
                    media_type: r.media_type,
                    digest: r.digest,
                    size: r.size,
                    annotations: Default::default(),
                    platform: None,
                });
            }
        }
    }
    let mut fetched = 0;
    for ((registry, repo), blobs) in by_repo {
        let client = connect(&registry, &repo, opts)?;
        let list: Vec<(&'static str, &Descriptor)> = blobs.iter().map(|d| ("blob", d)).collect();
        super::pull::download_all(
            &client,
            store,
            &repo,
            &list,
            super::pull::DEFAULT_JOBS,
            progress,
        )?;
        for d in &blobs {
            if let Err(e) = store.drop_remote(&d.digest) {
                tracing::debug!("drop remote record: {e}");
            }
        }
        let all: Vec<Digest> = blobs.iter().map(|d| d.digest.clone()).collect();
        if let Err(e) = super::blob_record::remember(store, &registry, &repo, &all) {
            tracing::debug!("cannot record blob locations: {e}");
        }
        fetched += blobs.len();
    }
    Ok(fetched)
}

/// A client for `registry`, with the user's credential for it.
pub(crate) fn connect(
    registry: &str,
    repo: &str,
    opts: &ClientOptions,
) -> Result<Client, RegistryError> {
    let reference =
        Reference::parse(&format!("{registry}/{repo}")).map_err(|e| RegistryError::Protocol {
            registry: registry.to_string(),
            repository: repo.to_string(),
            reason: e.to_string(),
        })?;
    connect_to(&reference, opts)
}

/// A client for `reference`'s registry, with the user's credential for it.
pub fn connect_to(reference: &Reference, opts: &ClientOptions) -> Result<Client, RegistryError> {
    let env = AuthEnv::from_process();
    let credential = AuthConfig::open(&env)
        .and_then(|c| c.get(reference.registry()))
        .map_err(|e| RegistryError::Protocol {
            registry: reference.registry().to_string(),
            repository: reference.repository().to_string(),
            reason: format!("credentials: {e}"),
        })?;
    Client::connect(
        reference.registry(),
        reference.api_host(),
        reference.is_loopback(),
        credential,
        opts,
    )
}
