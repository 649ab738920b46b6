//! `--cache-from` / `--cache-to`: the layer cache shared through a registry
//! (`type=registry,ref=REPO[:TAG]`) or an OCI layout directory
//! (`type=local,src|dest=DIR`), for builders whose store starts empty.
//!
//! The cache is one OCI image manifest at the reference:
//!
//! ```text
//! manifest  artifactType + config.mediaType = application/vnd.kiln.cache.v1+json
//!   config  {"version":1,"records":[{key, slot, inputs, image, manifest, config}]}
//!           image: the descriptor of the step's resulting image manifest;
//!           manifest/config: that manifest's and config's exact JSON text
//!   layers  every layer blob of every record's image (deduplicated), so
//!           the registry keeps them and a push can mount them
//! ```
//!
//! Why this shape: the whole index comes in two small GETs (manifest,
//! config), so every step's lookup is answered at once, before the first
//! step, and a miss never stops the lookups after it (keys are
//! content-based, a later step can hit again). A hit needs only the step
//! image's manifest and config, which are inline, to compute the next key:
//! the layers stay in the registry as remote records (`store::RemoteBlob`)
//! until a step that executes needs the tree, or an output needs the bytes.
//!
//! Exporting pushes each layer with the push path's rules: a `HEAD` when the
//! cache repository has it, a cross-repository mount when it is elsewhere on
//! that registry, an upload only otherwise.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::image::{self, media_types, Manifest};
use crate::registry::reference::Reference;
use crate::registry::{self, RegistryError};
use crate::store::{CacheRecord, Descriptor, Digest, RemoteBlob, Store, StoreError};

use super::error::EngineError;
use super::Engine;

/// Media type of the cache document's config and its artifact type.
pub const CACHE_MEDIA_TYPE: &str = "application/vnd.kiln.cache.v1+json";
const CACHE_VERSION: u32 = 1;
/// Largest cache config accepted from a registry.
const MAX_CACHE_CONFIG: u64 = 64 * 1024 * 1024;

/// Which steps an export carries (BuildKit's `mode`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CacheMode {
    /// Only the steps of the target stage.
    #[default]
    Min,
    /// The steps of every stage built.
    Max,
}

/// Where a cache lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheLocation {
    /// `REPO[:TAG]` in a registry.
    Registry(String),
    /// An OCI layout directory; the cache manifest is named `tag` there.
    Local { dir: PathBuf, tag: String },
}

/// One `--cache-from` or `--cache-to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheSpec {
    pub location: CacheLocation,
    pub mode: CacheMode,
    /// Export the contents of `RUN --mount=type=cache` directories too
    /// (`mounts=true`; default: with `mode=max`).
    pub mounts: bool,
}

impl CacheSpec {
    /// BuildKit's flag syntax: `type=registry,ref=REF[,mode=min|max]`,
    /// `type=local,src=DIR` (import) / `type=local,dest=DIR` (export); a
    /// bare `REF` is a registry reference (docker's `--cache-from`).
    pub fn parse(spec: &str, export: bool) -> Result<CacheSpec, String> {
        if !spec.contains('=') {
            return Ok(CacheSpec {
                location: CacheLocation::Registry(spec.to_string()),
                mode: CacheMode::Min,
                mounts: false,
            });
        }
        let mut fields = BTreeMap::new();
        for f in spec.split(',') {
            let (k, v) = f
                .split_once('=')
                .ok_or_else(|| format!("{spec:?}: {f:?} is not KEY=VALUE"))?;
            fields.insert(k.trim().to_string(), v.trim().to_string());
        }
        let mode = match fields.get("mode").map(String::as_str) {
            None | Some("min") => CacheMode::Min,
            Some("max") => CacheMode::Max,
            Some(m) => return Err(format!("{spec:?}: mode={m}: min or max")),
        };
        let kind = fields.get("type").map(String::as_str).unwrap_or("registry");
        let location = match kind {
            "registry" => CacheLocation::Registry(
                fields
                    .get("ref")
                    .cloned()
                    .ok_or_else(|| format!("{spec:?}: type=registry needs ref=REPO[:TAG]"))?,
            ),
            "local" => {
                let key = if export { "dest" } else { "src" };
                CacheLocation::Local {
                    dir: fields
                        .get(key)
                        .map(PathBuf::from)
                        .ok_or_else(|| format!("{spec:?}: type=local needs {key}=DIR"))?,
                    tag: fields
                        .get("tag")
                        .cloned()
                        .unwrap_or_else(|| "latest".into()),
                }
            }
            other => return Err(format!("{spec:?}: cache type {other:?}: registry or local")),
        };
        let mounts = match fields.get("mounts").map(String::as_str) {
            None => mode == CacheMode::Max,
            Some("true") => true,
            Some("false") => false,
            Some(m) => return Err(format!("{spec:?}: mounts={m}: true or false")),
        };
        Ok(CacheSpec {
            location,
            mode,
            mounts,
        })
    }

    fn describe(&self) -> String {
        match &self.location {
            CacheLocation::Registry(r) => r.clone(),
            CacheLocation::Local { dir, tag } => format!("{}:{tag}", dir.display()),
        }
    }
}

/// The cache document's config.
#[derive(Serialize, Deserialize)]
struct CacheConfig {
    version: u32,
    records: Vec<Entry>,
    /// `RUN --mount=type=cache` contents, one gzip tar per cache id.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    mounts: Vec<MountEntry>,
}

/// A cache mount's contents: its id and the blob holding them.
#[derive(Serialize, Deserialize, Clone)]
struct MountEntry {
    id: String,
    blob: Descriptor,
}

/// Media type of a cache mount's contents blob.
pub const MOUNT_MEDIA_TYPE: &str = "application/vnd.kiln.cache.mount.v1.tar+gzip";
/// Beside a cache mount's directory name: the digest of the contents a
/// `--cache-from` brought for it, unpacked when a RUN first uses the mount.
const MOUNT_SEED_SUFFIX: &str = ".seed";

/// One step: its key and the image it produced, with that image's
/// manifest and config inline (their exact text).
#[derive(Serialize, Deserialize)]
struct Entry {
    key: Digest,
    slot: String,
    inputs: BTreeMap<String, String>,
    image: Descriptor,
    manifest: String,
    config: String,
}

/// A step's record as the engine saw it (hit or run), for export.
#[derive(Debug, Clone)]
pub(super) struct StepRecord {
    pub stage: usize,
    pub key: Digest,
    pub record: CacheRecord,
}

fn err(what: &str) -> impl FnOnce(RegistryError) -> EngineError + '_ {
    move |e| EngineError::Other(format!("{what}: {e}"))
}

fn store_err(what: &str) -> impl FnOnce(StoreError) -> EngineError + '_ {
    move |e| EngineError::Other(format!("{what}: {e}"))
}

impl Engine<'_> {
    /// Imports every `--cache-from` into the store's layer cache (records
    /// whose layers stay remote); a cache that cannot be read is a warning,
    /// not a failure, as with BuildKit.
    pub(super) fn import_caches(&self) {
        for spec in &self.req.cache_from {
            let t = std::time::Instant::now();
            match self.import_cache(spec) {
                Ok(n) => self.reporter.note(&format!(
                    "cache: imported {n} record(s) from {} in {:.2?}",
                    spec.describe(),
                    t.elapsed()
                )),
                Err(e) => self
                    .reporter
                    .note(&format!("warning: cache from {}: {e}", spec.describe())),
            }
        }
    }

    fn import_cache(&self, spec: &CacheSpec) -> Result<usize, EngineError> {
        match &spec.location {
            CacheLocation::Registry(r) => self.import_registry(r),
            CacheLocation::Local { dir, tag } => self.import_local(dir, tag),
        }
    }

    fn import_registry(&self, reference: &str) -> Result<usize, EngineError> {
        let what = format!("read the cache {reference}");
        let r =
            Reference::parse(reference).map_err(|e| EngineError::Other(format!("{what}: {e}")))?;
        let client = registry::lazy::connect_to(&r, &self.req.client).map_err(err(&what))?;
        let repo = r.repository();
        let target = r.digest().or(r.tag()).unwrap_or("latest");
        let (bytes, _, _) = match client.get_manifest(repo, target) {
            Ok(m) => m,
            Err(RegistryError::ManifestUnknown { .. }) => {
                self.reporter
                    .note(&format!("cache: no cache at {reference} yet"));
                return Ok(0);
            }
            Err(e) => return Err(err(&what)(e)),
        };
        let config_desc = cache_config_descriptor(&bytes, &what)?;
        let mut body = Vec::new();
        client
            .get_blob(repo, &config_desc.digest)
            .map_err(err(&what))?
            .take(MAX_CACHE_CONFIG)
            .read_to_end(&mut body)
            .map_err(|e| EngineError::Other(format!("{what}: {e}")))?;
        if Digest::of_bytes(&body) != config_desc.digest {
            return Err(EngineError::Other(format!(
                "{what}: config does not match its digest {}",
                config_desc.digest
            )));
        }
        let location = |d: &Descriptor| -> Result<(), EngineError> {
            self.store
                .put_remote(&RemoteBlob {
                    digest: d.digest.clone(),
                    size: d.size,
                    media_type: d.media_type.clone(),
                    registry: r.registry().to_string(),
                    repository: repo.to_string(),
                })
                .map_err(store_err("record a cached layer"))
        };
        import_records(self.store, &body, &what, &location)
    }

    /// Reads the layout without opening it as a store (no lock file, no
    /// `tmp/`): a restored CI cache directory may be read-only.
    fn import_local(&self, dir: &Path, tag: &str) -> Result<usize, EngineError> {
        let fail =
            |what: &str, e: String| EngineError::Other(format!("{}: {what}: {e}", dir.display()));
        let index = match std::fs::read(dir.join("index.json")) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.reporter
                    .note(&format!("cache: no cache in {} yet", dir.display()));
                return Ok(0);
            }
            Err(e) => return Err(fail("read index.json", e.to_string())),
        };
        let index: crate::image::Index =
            serde_json::from_slice(&index).map_err(|e| fail("parse index.json", e.to_string()))?;
        let Some(desc) = index.manifests.iter().find(|d| {
            d.annotations
                .get(crate::store::REF_NAME_ANNOTATION)
                .is_some_and(|n| n == tag)
        }) else {
            self.reporter
                .note(&format!("cache: no {tag:?} in {}", dir.display()));
            return Ok(0);
        };
        let bytes = read_layout_blob(dir, &desc.digest)?;
        let what = format!("read the cache in {}", dir.display());
        let config_desc = cache_config_descriptor(&bytes, &what)?;
        let body = read_layout_blob(dir, &config_desc.digest)?;
        let copy = |d: &Descriptor| {
            let f = std::fs::File::open(layout_blob(dir, &d.digest))
                .map_err(|e| fail(&format!("open blob {}", d.digest), e.to_string()))?;
            self.store
                .put_reader(f, Some(&d.digest))
                .map_err(store_err("copy a cached layer"))?;
            Ok(())
        };
        import_records(self.store, &body, &what, &copy)
    }

    /// Writes every `--cache-to` from the records of this build's steps.
    pub(super) fn export_caches(&self, records: &[StepRecord]) -> Result<(), EngineError> {
        for spec in &self.req.cache_to {
            let t = std::time::Instant::now();
            let chosen: Vec<&StepRecord> = records
                .iter()
                .filter(|r| spec.mode == CacheMode::Max || r.stage == self.plan.target)
                .collect();
            let mounts = if spec.mounts {
                self.pack_mounts()?
            } else {
                Vec::new()
            };
            let (config_bytes, layers) = cache_document(self.store, &chosen, mounts)?;
            let summary = match &spec.location {
                CacheLocation::Registry(r) => self.export_registry(r, &config_bytes, &layers)?,
                CacheLocation::Local { dir, tag } => {
                    self.export_local(dir, tag, &config_bytes, &layers)?
                }
            };
            self.reporter.note(&format!(
                "cache: exported {} record(s), {} layer(s) to {} ({summary}) in {:.2?}",
                chosen.len(),
                layers.len(),
                spec.describe(),
                t.elapsed()
            ));
        }
        Ok(())
    }

    fn export_registry(
        &self,
        reference: &str,
        config_bytes: &[u8],
        layers: &[Descriptor],
    ) -> Result<String, EngineError> {
        let what = format!("write the cache {reference}");
        let r =
            Reference::parse(reference).map_err(|e| EngineError::Other(format!("{what}: {e}")))?;
        if r.digest().is_some() {
            return Err(EngineError::Other(format!(
                "{what}: a cache is written to a tag, not a digest"
            )));
        }
        let client = registry::lazy::connect_to(&r, &self.req.client).map_err(err(&what))?;
        let repo = r.repository();
        let (config_digest, config_size) = self
            .store
            .put_bytes(config_bytes)
            .map_err(store_err("store the cache config"))?;
        let config = descriptor(CACHE_MEDIA_TYPE, config_digest, config_size);
        let mut blobs = layers.to_vec();
        blobs.push(config.clone());
        let progress = self.reporter.transfer_progress();
        let (uploaded, mounted, existed) = registry::push::push_blobs(
            self.store,
            &client,
            repo,
            &blobs,
            &self.req.client,
            &progress,
        )
        .map_err(err(&what))?;
        let manifest = cache_manifest(&config, layers)?;
        client
            .put_manifest(
                repo,
                r.tag().unwrap_or("latest"),
                media_types::OCI_MANIFEST,
                &manifest,
            )
            .map_err(err(&what))?;
        Ok(format!(
            "{uploaded} uploaded, {mounted} mounted, {existed} already there"
        ))
    }

    fn export_local(
        &self,
        dir: &Path,
        tag: &str,
        config_bytes: &[u8],
        layers: &[Descriptor],
    ) -> Result<String, EngineError> {
        let digests: Vec<Digest> = layers.iter().map(|l| l.digest.clone()).collect();
        registry::lazy::ensure_blobs(
            self.store,
            &digests,
            &self.req.client,
            &self.reporter.transfer_progress(),
        )
        .map_err(err("fetch layers for the cache"))?;
        let dest = Store::open(dir).map_err(store_err("open the cache directory"))?;
        let mut copied = 0;
        for d in &digests {
            if !dest.has(d) {
                copy_blob(self.store, &dest, d)?;
                copied += 1;
            }
        }
        let (cd, cs) = dest
            .put_bytes(config_bytes)
            .map_err(store_err("store the cache config"))?;
        let config = descriptor(CACHE_MEDIA_TYPE, cd, cs);
        let manifest = cache_manifest(&config, layers)?;
        let (md, ms) = dest
            .put_bytes(&manifest)
            .map_err(store_err("store the cache manifest"))?;
        dest.set_name(tag, descriptor(media_types::OCI_MANIFEST, md, ms))
            .map_err(store_err("name the cache"))?;
        Ok(format!(
            "{copied} copied, {} already there",
            digests.len() - copied
        ))
    }
}

fn descriptor(media_type: &str, digest: Digest, size: u64) -> Descriptor {
    Descriptor {
        media_type: media_type.to_string(),
        digest,
        size,
        annotations: BTreeMap::new(),
        platform: None,
    }
}

/// The cache document's config descriptor, refusing a manifest that is not
/// a kiln cache.
/// `what` names the cache being read, for errors.
fn cache_config_descriptor(manifest: &[u8], what: &str) -> Result<Descriptor, EngineError> {
    let m: Manifest = image::parse(media_types::OCI_MANIFEST, manifest)
        .map_err(|e| EngineError::Other(format!("{what}: cache manifest: {e}")))?;
    if m.config.media_type != CACHE_MEDIA_TYPE {
        return Err(EngineError::Other(format!(
            "{what}: not a kiln cache (config media type {:?}, want {CACHE_MEDIA_TYPE:?})",
            m.config.media_type
        )));
    }
    Ok(m.config)
}

/// The manifest naming `config` and every layer.
fn cache_manifest(config: &Descriptor, layers: &[Descriptor]) -> Result<Vec<u8>, EngineError> {
    let doc = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media_types::OCI_MANIFEST,
        "artifactType": CACHE_MEDIA_TYPE,
        "config": config,
        "layers": layers,
    });
    image::to_canonical_json(&doc)
        .map_err(|e| EngineError::Other(format!("encode the cache manifest: {e}")))
}

/// The cache config for `records` (first record of a key wins) and the
/// layers their images use, deduplicated, in first-use order.
fn cache_document(
    store: &Store,
    records: &[&StepRecord],
    mounts: Vec<MountEntry>,
) -> Result<(Vec<u8>, Vec<Descriptor>), EngineError> {
    let mut keys = BTreeSet::new();
    let mut seen = BTreeSet::new();
    let mut layers = Vec::new();
    let mut entries = Vec::new();
    for r in records {
        if !keys.insert(r.key.clone()) {
            continue;
        }
        let image = &r.record.image;
        let manifest_bytes = store
            .read_blob(&image.digest)
            .map_err(store_err("read a step's manifest"))?;
        let manifest: Manifest = image::parse(&image.media_type, &manifest_bytes)
            .map_err(|e| EngineError::Other(format!("step manifest {}: {e}", image.digest)))?;
        let config_bytes = store
            .read_blob(&manifest.config.digest)
            .map_err(store_err("read a step's config"))?;
        for l in &manifest.layers {
            if seen.insert(l.digest.clone()) {
                layers.push(l.clone());
            }
        }
        let text = |b: Vec<u8>, what: &str| {
            String::from_utf8(b).map_err(|_| {
                EngineError::Other(format!("step {what} {} is not UTF-8", image.digest))
            })
        };
        entries.push(Entry {
            key: r.key.clone(),
            slot: r.record.slot.clone(),
            inputs: r.record.inputs.clone(),
            image: image.clone(),
            manifest: text(manifest_bytes, "manifest")?,
            config: text(config_bytes, "config")?,
        });
    }
    for m in &mounts {
        if seen.insert(m.blob.digest.clone()) {
            layers.push(m.blob.clone());
        }
    }
    let config = CacheConfig {
        version: CACHE_VERSION,
        records: entries,
        mounts,
    };
    let bytes = image::to_canonical_json(&config)
        .map_err(|e| EngineError::Other(format!("encode the cache config: {e}")))?;
    Ok((bytes, layers))
}

/// Stores each record's manifest and config, makes each of its layers known
/// (`layer`: a remote record or a copy), then records the key. Keys the
/// store already has are left alone. Returns the records added.
/// `what` names the cache being read, for errors.
fn import_records(
    store: &Store,
    config: &[u8],
    what: &str,
    layer: &dyn Fn(&Descriptor) -> Result<(), EngineError>,
) -> Result<usize, EngineError> {
    let doc: CacheConfig = serde_json::from_slice(config)
        .map_err(|e| EngineError::Other(format!("{what}: cache config: {e}")))?;
    for m in &doc.mounts {
        let dir = mount_dir(store, &m.id);
        if dir.is_dir() || m.blob.media_type != MOUNT_MEDIA_TYPE {
            continue; // this runner's own contents win
        }
        if !store.knows(&m.blob.digest) {
            layer(&m.blob)?;
        }
        let seed = seed_path(&dir);
        if let Some(parent) = seed.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| EngineError::Other(format!("cache mount {:?}: {e}", m.id)))?;
        }
        std::fs::write(&seed, m.blob.digest.as_str())
            .map_err(|e| EngineError::Other(format!("cache mount {:?}: {e}", m.id)))?;
    }
    import_step_records(store, doc, layer)
}

fn import_step_records(
    store: &Store,
    doc: CacheConfig,
    layer: &dyn Fn(&Descriptor) -> Result<(), EngineError>,
) -> Result<usize, EngineError> {
    if doc.version != CACHE_VERSION {
        return Err(EngineError::Other(format!(
            "cache config version {} (kiln reads {CACHE_VERSION})",
            doc.version
        )));
    }
    let mut added = 0;
    for e in doc.records {
        if store
            .cache_get(&e.key)
            .map_err(store_err("look up the layer cache"))?
            .is_some()
        {
            continue;
        }
        let manifest: Manifest = image::parse(&e.image.media_type, e.manifest.as_bytes())
            .map_err(|x| EngineError::Other(format!("cached manifest {}: {x}", e.image.digest)))?;
        if Digest::of_bytes(e.config.as_bytes()) != manifest.config.digest {
            return Err(EngineError::Other(format!(
                "cached config of {} does not match its digest",
                e.image.digest
            )));
        }
        store
            .put_reader(e.config.as_bytes(), Some(&manifest.config.digest))
            .map_err(store_err("store a cached config"))?;
        for l in &manifest.layers {
            if !store.knows(&l.digest) {
                layer(l)?;
            }
        }
        // Verified against the record's digest: a document that lies is refused.
        store
            .put_reader(e.manifest.as_bytes(), Some(&e.image.digest))
            .map_err(store_err("store a cached manifest"))?;
        store
            .cache_put(
                &e.key,
                &CacheRecord {
                    image: e.image,
                    inputs: e.inputs,
                    slot: e.slot,
                },
            )
            .map_err(store_err("record a cached step"))?;
        added += 1;
    }
    Ok(added)
}

fn layout_blob(dir: &Path, d: &Digest) -> PathBuf {
    dir.join("blobs").join(d.algorithm()).join(d.hex())
}

/// A small blob of the OCI layout `dir`, verified against its digest.
fn read_layout_blob(dir: &Path, d: &Digest) -> Result<Vec<u8>, EngineError> {
    let bytes = std::fs::read(layout_blob(dir, d))
        .map_err(|e| EngineError::Other(format!("{}: read blob {d}: {e}", dir.display())))?;
    if Digest::of_bytes(&bytes) != *d {
        return Err(EngineError::Other(format!(
            "{}: blob {d} does not match its digest",
            dir.display()
        )));
    }
    Ok(bytes)
}

/// Copies blob `d` from one store to another (verified on the way).
fn copy_blob(from: &Store, to: &Store, d: &Digest) -> Result<(), EngineError> {
    if to.has(d) {
        return Ok(());
    }
    let reader = from
        .open_blob(d)
        .map_err(store_err("read a cached layer"))?;
    to.put_reader(reader, Some(d))
        .map_err(store_err("copy a cached layer"))?;
    Ok(())
}

/// Where the cache mount `id` lives in the store (as `run::cache_mount`
/// makes it).
pub(super) fn mount_dir(store: &Store, id: &str) -> PathBuf {
    let hex = image::digest_of(id.as_bytes()).hex().to_string();
    store.root().join("cache").join("mounts").join(hex)
}

fn seed_path(dir: &Path) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(MOUNT_SEED_SUFFIX);
    dir.with_file_name(name)
}

/// Fills `into` (a new, empty cache mount directory for `dir`) with the
/// contents a `--cache-from` brought for it, fetching the blob now: only a
/// RUN that executes with the mount gets here. Returns whether it did; a
/// failure is the caller's warning (a cache mount may start empty).
pub(super) fn seed_mount(eng: &Engine, dir: &Path, into: &Path) -> Result<bool, String> {
    let seed = seed_path(dir);
    let Ok(text) = std::fs::read_to_string(&seed) else {
        return Ok(false);
    };
    let _ = std::fs::remove_file(&seed);
    let digest = Digest::parse(text.trim()).map_err(|e| e.to_string())?;
    registry::lazy::ensure_blobs(
        eng.store,
        std::slice::from_ref(&digest),
        &eng.req.client,
        &eng.reporter.transfer_progress(),
    )
    .map_err(|e| e.to_string())?;
    let blob = eng.store.open_blob(&digest).map_err(|e| e.to_string())?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(blob));
    archive.set_preserve_permissions(true);
    archive.set_preserve_mtime(true);
    archive.unpack(into).map_err(|e| e.to_string())?;
    Ok(true)
}

impl Engine<'_> {
    /// The ids of the cache mounts the RUN steps of this build name.
    fn cache_mount_ids(&self) -> Vec<String> {
        use crate::frontend::instructions::{Instruction, MountType};
        let mut ids = BTreeSet::new();
        for stage in &self.plan.stages {
            for step in &stage.steps {
                let Instruction::Run(r) = &step.instruction else {
                    continue;
                };
                for m in super::run::mounts(r).unwrap_or_default() {
                    if m.kind == MountType::Cache {
                        if let Some(id) = m.id.clone().or(m.target.clone()) {
                            ids.insert(id);
                        }
                    }
                }
            }
        }
        ids.into_iter().collect()
    }

    /// Each used cache mount's directory as a gzip tar blob in the store
    /// (entries sorted, so unchanged contents give the same digest and the
    /// export is a HEAD).
    fn pack_mounts(&self) -> Result<Vec<MountEntry>, EngineError> {
        let mut out = Vec::new();
        for id in self.cache_mount_ids() {
            let dir = mount_dir(self.store, &id);
            if !dir.is_dir() {
                continue;
            }
            // A directory kiln cannot read whole (rootless: files a RUN
            // left to a sub-uid with mode 0600) is left out with a warning:
            // mount contents are an optimisation, the step records are not.
            match self.pack_mount(&dir) {
                Ok(blob) => out.push(MountEntry { id, blob }),
                Err(e) => self
                    .reporter
                    .note(&format!("warning: cache mount {id:?} not exported: {e}")),
            }
        }
        Ok(out)
    }

    fn pack_mount(&self, dir: &Path) -> Result<Descriptor, String> {
        let tmp = tempfile::NamedTempFile::new_in(self.store.root().join("tmp"))
            .map_err(|e| e.to_string())?;
        {
            let gz = flate2::write::GzEncoder::new(tmp.as_file(), flate2::Compression::fast());
            let mut b = tar::Builder::new(gz);
            b.follow_symlinks(false);
            b.mode(tar::HeaderMode::Complete);
            append_sorted(&mut b, dir, Path::new("")).map_err(|e| e.to_string())?;
            b.into_inner()
                .and_then(|gz| gz.finish())
                .map_err(|e| e.to_string())?;
        }
        let f = std::fs::File::open(tmp.path()).map_err(|e| e.to_string())?;
        let (digest, size) = self.store.put_reader(f, None).map_err(|e| e.to_string())?;
        Ok(descriptor(MOUNT_MEDIA_TYPE, digest, size))
    }
}

/// Appends the entries under `root/rel`, sorted by name, depth first.
fn append_sorted<W: std::io::Write>(
    b: &mut tar::Builder<W>,
    root: &Path,
    rel: &Path,
) -> std::io::Result<()> {
    let mut names: Vec<_> = std::fs::read_dir(root.join(rel))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()?;
    names.sort();
    for name in names {
        let path = rel.join(&name);
        let full = root.join(&path);
        let meta = std::fs::symlink_metadata(&full)?;
        if meta.is_dir() {
            b.append_dir(&path, &full)?;
            append_sorted(b, root, &path)?;
        } else {
            b.append_path_with_name(&full, &path)?;
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_like_buildkit() {
        let s = CacheSpec::parse("type=registry,ref=r:5000/c:main,mode=max", true).unwrap();
        assert_eq!(s.location, CacheLocation::Registry("r:5000/c:main".into()));
        assert_eq!((s.mode, s.mounts), (CacheMode::Max, true));
        let s = CacheSpec::parse("ref=r/c", false).unwrap();
        assert_eq!((s.mode, s.mounts), (CacheMode::Min, false));
        let s = CacheSpec::parse("r/c:1", false).unwrap();
        assert_eq!(s.location, CacheLocation::Registry("r/c:1".into()));
        let s = CacheSpec::parse("type=local,dest=/d,mode=max,mounts=false", true).unwrap();
        assert_eq!(
            s.location,
            CacheLocation::Local {
                dir: "/d".into(),
                tag: "latest".into()
            }
        );
        assert!(!s.mounts);
        let s = CacheSpec::parse("type=local,src=/d,tag=t", false).unwrap();
        assert_eq!(
            s.location,
            CacheLocation::Local {
                dir: "/d".into(),
                tag: "t".into()
            }
        );
        for bad in [
            "type=registry",
            "type=local,src=/d",
            "type=gha,ref=x",
            "ref=x,mode=all",
            "ref=x,mounts=yes",
            "ref=x,junk",
        ] {
            assert!(CacheSpec::parse(bad, true).is_err(), "{bad}");
        }
        assert!(CacheSpec::parse("type=local,dest=/d", false).is_err());
    }
}
