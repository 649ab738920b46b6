//! `pull`: a manifest (choosing one platform out of an index) and its config
//! and layers, from a registry into the content store.
//!
//! Blobs already in the store are not fetched again. The others download in
//! parallel, each streamed straight into [`Store::put_reader`], which hashes
//! while writing and refuses content that does not match the digest, so a
//! blob is never held whole in memory and never trusted unverified. Blobs are
//! stored exactly as served (gzip, zstd or plain tar): unpacking is separate.

use crate::image::{self, media_types, Index, Manifest};
use crate::plan::platform::Platform;
use crate::store::{Descriptor, Digest, Store, StoreError};

use super::blob_record;
use super::client::{Client, ClientOptions};
use super::credentials::Credential;
use super::error::RegistryError;
use super::progress::{CountingReader, Progress};
use super::reference::Reference;

/// Downloads at once, by default.
pub const DEFAULT_JOBS: usize = 4;
/// Attempts per blob download (a broken stream restarts from zero).
const BLOB_ATTEMPTS: u32 = 3;

#[derive(Debug, Clone)]
pub struct PullOptions {
    /// Which image to take out of an index.
    pub platform: Platform,
    pub client: ClientOptions,
    /// Parallel blob downloads.
    pub jobs: usize,
    /// Store layers absent from the store as remote records (`store::RemoteBlob`)
    /// instead of downloading them: only the manifest and config come now,
    /// the layers when something needs their bytes (`lazy::ensure_blobs`).
    pub lazy_layers: bool,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            platform: Platform::host(),
            client: ClientOptions::default(),
            jobs: DEFAULT_JOBS,
            lazy_layers: false,
        }
    }
}

/// What a pull stored.
#[derive(Debug, Clone)]
pub struct Pulled {
    /// The store name set (`reference`'s normalized form).
    pub name: String,
    /// The platform manifest the name points at.
    pub manifest: Descriptor,
    /// The index or manifest list it was chosen from, when there was one
    /// (stored as a blob too, but not named).
    pub index: Option<Digest>,
    /// Blobs downloaded / already present.
    pub downloaded: usize,
    pub skipped: usize,
}

/// Pulls `reference` into `store` and names it `reference.to_string()`.
pub fn pull(
    store: &Store,
    reference: &Reference,
    credential: Option<Credential>,
    opts: &PullOptions,
    progress: &Progress,
) -> Result<Pulled, RegistryError> {
    let client = Client::connect(
        reference.registry(),
        reference.api_host(),
        reference.is_loopback(),
        credential,
        &opts.client,
    )?;
    let repo = reference.repository();
    let target = reference
        .digest()
        .or(reference.tag())
        .unwrap_or("latest")
        .to_string();
    let store_err = |what: String| move |source: StoreError| RegistryError::Store { what, source };

    let (mut bytes, mut media_type, mut digest) = client.get_manifest(repo, &target)?;
    let mut index_digest = None;
    if media_types::is_index(&media_type) {
        let index: Index =
            image::parse(&media_type, &bytes).map_err(|e| RegistryError::Protocol {
                registry: reference.registry().to_string(),
                repository: repo.to_string(),
                reason: e.to_string(),
            })?;
        let chosen = image::select_manifest(&index, &opts.platform).ok_or_else(|| {
            RegistryError::NoPlatform {
                reference: reference.to_string(),
                want: opts.platform.to_string(),
                available: available_platforms(&index),
            }
        })?;
        let chosen_digest = chosen.digest.clone();
        store
            .put_reader(&bytes[..], Some(&digest))
            .map_err(store_err(format!("store index {digest}")))?;
        index_digest = Some(digest);
        (bytes, media_type, digest) = client.get_manifest(repo, chosen_digest.as_str())?;
        if !media_types::is_manifest(&media_type) {
            return Err(RegistryError::Protocol {
                registry: reference.registry().to_string(),
                repository: repo.to_string(),
                reason: format!(
                    "index entry {chosen_digest} is {media_type}, not an image manifest"
                ),
            });
        }
    } else if !media_types::is_manifest(&media_type) {
        return Err(RegistryError::Protocol {
            registry: reference.registry().to_string(),
            repository: repo.to_string(),
            reason: format!(
                "{}: unsupported manifest media type {media_type:?} (kiln reads OCI and Docker v2 schema 2)",
                super::error::describe_target(&target)
            ),
        });
    }
    let manifest: Manifest =
        image::parse(&media_type, &bytes).map_err(|e| RegistryError::Protocol {
            registry: reference.registry().to_string(),
            repository: repo.to_string(),
            reason: e.to_string(),
        })?;

    let mut blobs: Vec<(&'static str, &Descriptor)> = vec![("config", &manifest.config)];
    blobs.extend(manifest.layers.iter().map(|l| ("blob", l)));
    let mut seen = std::collections::HashSet::new();
    blobs.retain(|(_, d)| seen.insert(d.digest.clone()));
    let (missing, present): (Vec<_>, Vec<_>) = blobs
        .iter()
        .copied()
        .partition(|(_, d)| !store.has(&d.digest));
    for (kind, d) in &present {
        // Refresh its age so a concurrent `prune` spares it until we name it
        // (a blob pruned anyway makes the naming below fail, not dangle).
        store
            .touch_blob(&d.digest)
            .map_err(store_err(format!("keep blob {}", d.digest)))?;
        progress
            .blob(kind, &d.digest, d.size)
            .finish("skipped: already exists");
    }
    let (deferred, missing): (Vec<_>, Vec<_>) = missing
        .into_iter()
        .partition(|(kind, _)| opts.lazy_layers && *kind == "blob");
    for (kind, d) in &deferred {
        store
            .put_remote(&crate::store::RemoteBlob {
                digest: d.digest.clone(),
                size: d.size,
                media_type: d.media_type.clone(),
                registry: reference.registry().to_string(),
                repository: repo.to_string(),
            })
            .map_err(store_err(format!("record blob {}", d.digest)))?;
        progress
            .blob(kind, &d.digest, d.size)
            .finish("deferred: fetched when needed");
    }
    download_all(&client, store, repo, &missing, opts.jobs, progress)?;

    store
        .put_reader(&bytes[..], Some(&digest))
        .map_err(store_err(format!("store manifest {digest}")))?;
    let desc = Descriptor {
        media_type: media_type.clone(),
        digest: digest.clone(),
        size: bytes.len() as u64,
        annotations: Default::default(),
        platform: None,
    };
    let name = reference.to_string();
    let all: Vec<Digest> = blobs.iter().map(|(_, d)| d.digest.clone()).collect();
    store
        .set_name_with_blobs(&name, desc.clone(), &all)
        .map_err(store_err(format!("name {name}")))?;
    if let Err(e) = blob_record::remember(store, reference.registry(), repo, &all) {
        tracing::warn!("cannot record blob locations for later mounts: {e}");
    }
    Ok(Pulled {
        name,
        manifest: desc,
        index: index_digest,
        downloaded: missing.len(),
        skipped: present.len(),
    })
}

/// Downloads `blobs` with up to `jobs` threads; the first error wins.
pub(super) fn download_all(
    client: &Client,
    store: &Store,
    repo: &str,
    blobs: &[(&'static str, &Descriptor)],
    jobs: usize,
    progress: &Progress,
) -> Result<(), RegistryError> {
    super::parallel::for_each(blobs, jobs, |(kind, desc)| {
        download(client, store, repo, kind, desc, progress)
    })
}

fn download(
    client: &Client,
    store: &Store,
    repo: &str,
    kind: &'static str,
    desc: &Descriptor,
    progress: &Progress,
) -> Result<(), RegistryError> {
    let bar = progress.blob(kind, &desc.digest, desc.size);
    let mut attempt = 0;
    loop {
        attempt += 1;
        bar.reset();
        let result = client.get_blob(repo, &desc.digest).and_then(|resp| {
            store
                .put_reader(CountingReader::new(resp, bar.clone()), Some(&desc.digest))
                .map_err(|source| match source {
                    StoreError::DigestMismatch { got, .. } => RegistryError::DigestMismatch {
                        registry: client.registry().to_string(),
                        repository: repo.to_string(),
                        what: format!("get blob {}", desc.digest),
                        expected: desc.digest.to_string(),
                        got: got.to_string(),
                    },
                    source => RegistryError::Store {
                        what: format!(
                            "download blob {} from {}/{repo}",
                            desc.digest,
                            client.registry()
                        ),
                        source,
                    },
                })
        });
        match result {
            Ok(_) => {
                bar.finish("done");
                return Ok(());
            }
            // A broken stream shows up as a store read error; retry it.
            Err(RegistryError::Store {
                source: StoreError::Io { .. },
                ..
            }) if attempt < BLOB_ATTEMPTS => {
                tracing::debug!(digest = %desc.digest, attempt, "blob download interrupted; retrying");
            }
            Err(e) => {
                bar.finish("failed");
                return Err(e);
            }
        }
    }
}

fn available_platforms(index: &Index) -> String {
    let list: Vec<String> = index
        .manifests
        .iter()
        .filter_map(|d| d.platform.as_ref())
        .filter_map(|p| {
            let os = p.get("os")?.as_str()?;
            let arch = p.get("architecture")?.as_str()?;
            Some(match p.get("variant").and_then(|v| v.as_str()) {
                Some(v) => format!("{os}/{arch}/{v}"),
                None => format!("{os}/{arch}"),
            })
        })
        .collect();
    if list.is_empty() {
        "no platforms".to_string()
    } else {
        list.join(", ")
    }
}
