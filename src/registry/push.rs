//! `push`: an image from the content store to a registry.
//!
//! Order matters to registries: every blob must exist before the manifest
//! that references it, so layers go first (in parallel), then the config,
//! then the manifest with its exact bytes and media type (its digest must not
//! change), then every extra tag. Each blob is first checked with `HEAD`; a
//! blob kiln saw in another repository of the same registry is mounted from
//! there instead of uploaded; anything else is streamed from the store.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::image::{self, media_types, Index, Manifest};
use crate::store::{Descriptor, Digest, Store, StoreError};

use super::blob_record;
use super::client::{Client, ClientOptions, Mount};
use super::credentials::Credential;
use super::error::RegistryError;
use super::progress::Progress;
use super::reference::Reference;

/// Uploads at once, by default.
pub const DEFAULT_JOBS: usize = 4;
/// Mount sources tried per blob before uploading.
const MOUNT_CANDIDATES: usize = 3;

#[derive(Debug, Clone, Default)]
pub struct PushOptions {
    pub client: ClientOptions,
    /// Parallel blob uploads (0 means the default).
    pub jobs: usize,
    /// More tags in the destination repository to point at the same manifest.
    pub extra_tags: Vec<String>,
}

/// What a push did.
#[derive(Debug, Clone)]
pub struct Pushed {
    /// Digest of the top manifest (or index) pushed.
    pub digest: Digest,
    /// Every reference written (`dest` and the extra tags).
    pub references: Vec<String>,
    pub uploaded: usize,
    pub mounted: usize,
    pub existed: usize,
}

#[derive(Default)]
struct Counts {
    uploaded: AtomicUsize,
    mounted: AtomicUsize,
    existed: AtomicUsize,
}

/// Pushes the image `src` (a manifest or an index in `store`) to `dest`.
pub fn push(
    store: &Store,
    src: &Descriptor,
    dest: &Reference,
    credential: Option<Credential>,
    opts: &PushOptions,
    progress: &Progress,
) -> Result<Pushed, RegistryError> {
    let client = Client::connect(
        dest.registry(),
        dest.api_host(),
        dest.is_loopback(),
        credential,
        &opts.client,
    )?;
    let repo = dest.repository();
    let ctx = Ctx {
        client: &client,
        store,
        repo,
        jobs: if opts.jobs == 0 {
            DEFAULT_JOBS
        } else {
            opts.jobs
        },
        progress,
        counts: Counts::default(),
        pushed_blobs: Mutex::new(Vec::new()),
        client_opts: &opts.client,
    };
    let bytes = ctx.read_small(&src.digest)?;
    let target = dest.tag().or(dest.digest()).unwrap_or("latest").to_string();
    if media_types::is_index(&src.media_type) {
        let index: Index =
            image::parse(&src.media_type, &bytes).map_err(|e| ctx.protocol(e.to_string()))?;
        for child in &index.manifests {
            if !media_types::is_manifest(&child.media_type) {
                return Err(ctx.protocol(format!(
                    "index {} lists {} of type {}, which kiln cannot push",
                    src.digest, child.digest, child.media_type
                )));
            }
            ctx.push_image(child, child.digest.as_str())?;
        }
    } else if media_types::is_manifest(&src.media_type) {
        ctx.push_blobs_of(&bytes, &src.media_type, &src.digest)?;
    } else {
        return Err(ctx.protocol(format!(
            "{} has media type {}, not an image manifest or index",
            src.digest, src.media_type
        )));
    }
    progress.line("Writing manifest to image destination");
    let digest = client.put_manifest(repo, &target, &src.media_type, &bytes)?;
    let mut references = vec![dest.to_string()];
    for tag in &opts.extra_tags {
        let r = dest
            .with_tag(tag)
            .map_err(|e| ctx.protocol(e.to_string()))?;
        client.put_manifest(repo, tag, &src.media_type, &bytes)?;
        references.push(r.to_string());
    }
    ctx.remember_pushed(dest.registry());
    Ok(Pushed {
        digest,
        references,
        uploaded: ctx.counts.uploaded.load(Ordering::Relaxed),
        mounted: ctx.counts.mounted.load(Ordering::Relaxed),
        existed: ctx.counts.existed.load(Ordering::Relaxed),
    })
}

/// Makes every blob of `blobs` exist in `repo` on `client`'s registry, in
/// parallel: a `HEAD` for one already there, a cross-repository mount for
/// one known in another repository of that registry, else an upload (a blob
/// known only by its location elsewhere is fetched first). Returns
/// (uploaded, mounted, existed).
pub fn push_blobs(
    store: &Store,
    client: &Client,
    repo: &str,
    blobs: &[Descriptor],
    opts: &ClientOptions,
    progress: &Progress,
) -> Result<(usize, usize, usize), RegistryError> {
    let ctx = Ctx {
        client,
        store,
        repo,
        jobs: DEFAULT_JOBS,
        progress,
        counts: Counts::default(),
        pushed_blobs: Mutex::new(Vec::new()),
        client_opts: opts,
    };
    let refs: Vec<&Descriptor> = blobs.iter().collect();
    ctx.parallel(&refs)?;
    ctx.remember_pushed(client.registry());
    Ok((
        ctx.counts.uploaded.load(Ordering::Relaxed),
        ctx.counts.mounted.load(Ordering::Relaxed),
        ctx.counts.existed.load(Ordering::Relaxed),
    ))
}

struct Ctx<'a> {
    client: &'a Client,
    store: &'a Store,
    repo: &'a str,
    jobs: usize,
    progress: &'a Progress,
    counts: Counts,
    pushed_blobs: Mutex<Vec<Digest>>,
    client_opts: &'a ClientOptions,
}

impl Ctx<'_> {
    /// Records where the blobs pushed so far now live, for later mounts
    /// (a failure only costs those mounts).
    fn remember_pushed(&self, registry: &str) {
        let blobs = self
            .pushed_blobs
            .lock()
            .map(|b| b.clone())
            .unwrap_or_default();
        if let Err(e) = blob_record::remember(self.store, registry, self.repo, &blobs) {
            tracing::warn!("cannot record blob locations for later mounts: {e}");
        }
    }

    /// Blobs, then the manifest by digest (a child of an index).
    fn push_image(&self, desc: &Descriptor, target: &str) -> Result<(), RegistryError> {
        let bytes = self.read_small(&desc.digest)?;
        self.push_blobs_of(&bytes, &desc.media_type, &desc.digest)?;
        self.client
            .put_manifest(self.repo, target, &desc.media_type, &bytes)?;
        Ok(())
    }

    /// Layers in parallel, then the config.
    fn push_blobs_of(
        &self,
        bytes: &[u8],
        media_type: &str,
        digest: &Digest,
    ) -> Result<(), RegistryError> {
        let manifest: Manifest = image::parse(media_type, bytes)
            .map_err(|e| self.protocol(format!("manifest {digest}: {e}")))?;
        let mut seen = std::collections::HashSet::new();
        let layers: Vec<&Descriptor> = manifest
            .layers
            .iter()
            .filter(|l| seen.insert(l.digest.clone()))
            .collect();
        self.parallel(&layers)?;
        self.push_blob("config", &manifest.config)
    }

    fn parallel(&self, layers: &[&Descriptor]) -> Result<(), RegistryError> {
        super::parallel::for_each(layers, self.jobs, |desc| self.push_blob("blob", desc))
    }

    /// HEAD, else mount from a repository known to hold it, else upload.
    fn push_blob(&self, kind: &'static str, desc: &Descriptor) -> Result<(), RegistryError> {
        let digest = &desc.digest;
        let bar = self.progress.blob(kind, digest, desc.size);
        let result = self.push_blob_inner(digest, desc.size, &bar);
        match &result {
            Ok(outcome) => bar.finish(outcome),
            Err(_) => bar.finish("failed"),
        }
        if result.is_ok() {
            if let Ok(mut b) = self.pushed_blobs.lock() {
                b.push(digest.clone());
            }
        }
        result.map(|_| ())
    }

    fn push_blob_inner(
        &self,
        digest: &Digest,
        size: u64,
        bar: &super::progress::BlobProgress,
    ) -> Result<String, RegistryError> {
        if self.client.blob_exists(self.repo, digest)? {
            self.counts.existed.fetch_add(1, Ordering::Relaxed);
            return Ok("skipped: already exists".into());
        }
        let path = self.store.blob_path(digest);
        if let Some(remote) = self.store.remote(digest) {
            // Known by location only: a mount when it is on this registry
            // (no bytes move), else fetched once and uploaded.
            if remote.registry == self.client.registry() && remote.repository != self.repo {
                if let Ok(Mount::Mounted) =
                    self.client
                        .mount_blob(self.repo, digest, &remote.repository)
                {
                    self.counts.mounted.fetch_add(1, Ordering::Relaxed);
                    return Ok(format!("mounted from {}", remote.repository));
                }
            }
            super::lazy::ensure_blobs(
                self.store,
                std::slice::from_ref(digest),
                self.client_opts,
                self.progress,
            )?;
        }
        if !path.is_file() {
            return Err(RegistryError::Store {
                what: format!("push blob {digest}"),
                source: StoreError::BlobNotFound {
                    root: self.store.root().to_path_buf(),
                    digest: digest.clone(),
                },
            });
        }
        let mut location = None;
        let candidates =
            blob_record::repos_with(self.store, self.client.registry(), digest, self.repo);
        for from in candidates.iter().take(MOUNT_CANDIDATES) {
            match self.client.mount_blob(self.repo, digest, from) {
                Ok(Mount::Mounted) => {
                    self.counts.mounted.fetch_add(1, Ordering::Relaxed);
                    return Ok(format!("mounted from {from}"));
                }
                Ok(Mount::Upload(url)) => {
                    location = Some(url);
                    break;
                }
                // A refused mount (e.g. no pull right on `from`) is not fatal.
                Err(e) => tracing::debug!(%digest, from, error = %e, "mount refused"),
            }
        }
        let location = match location {
            Some(l) => l,
            None => self.client.start_upload(self.repo)?,
        };
        self.client
            .upload_blob(self.repo, location, digest, &path, size, bar)?;
        self.counts.uploaded.fetch_add(1, Ordering::Relaxed);
        Ok("done".into())
    }

    fn read_small(&self, d: &Digest) -> Result<Vec<u8>, RegistryError> {
        self.store
            .read_blob(d)
            .map_err(|source| RegistryError::Store {
                what: format!("read {d}"),
                source,
            })
    }

    fn protocol(&self, reason: String) -> RegistryError {
        RegistryError::Protocol {
            registry: self.client.registry().to_string(),
            repository: self.repo.to_string(),
            reason,
        }
    }
}
