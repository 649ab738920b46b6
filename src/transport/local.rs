//! Images in the store: loading a name's manifest and config, and finding an
//! image from what a user typed (a name in any docker spelling, or an ID prefix).

use std::collections::BTreeMap;

use crate::image::{self, media_types, Compression, ImageConfig, Manifest};
use crate::registry::reference::Reference;
use crate::store::{Descriptor, Digest, Store};

use super::TransportError;

/// A single-platform image read (and verified) from the store.
#[derive(Debug, Clone)]
pub struct StoredImage {
    /// The manifest's descriptor (what a name points at).
    pub descriptor: Descriptor,
    pub manifest: Manifest,
    /// The manifest document exactly as stored (or as converted for export).
    pub manifest_bytes: Vec<u8>,
    /// The config blob exactly as stored (its digest is the image ID).
    pub config_bytes: Vec<u8>,
    pub config: ImageConfig,
}

impl StoredImage {
    /// Reads the manifest `desc` points at and its config. Refuses an index:
    /// store names point at single-platform manifests.
    pub fn load(store: &Store, desc: &Descriptor) -> Result<StoredImage, TransportError> {
        let bytes = store.read_blob(&desc.digest)?;
        let mt = manifest_media_type(&desc.media_type, &bytes);
        if media_types::is_index(&mt) {
            return Err(TransportError::Format {
                what: format!("manifest {}", desc.digest),
                reason: "is an image index; store names must point at one platform's manifest"
                    .into(),
            });
        }
        let manifest: Manifest = image::parse(&mt, &bytes)?;
        let config_bytes = store.read_blob(&manifest.config.digest)?;
        let config: ImageConfig = image::parse(&manifest.config.media_type, &config_bytes)?;
        Ok(StoredImage {
            descriptor: desc.clone(),
            manifest,
            manifest_bytes: bytes,
            config_bytes,
            config,
        })
    }

    /// The image ID: the config digest, as docker defines it.
    pub fn id(&self) -> &Digest {
        &self.manifest.config.digest
    }

    /// Compressed layer bytes plus the config: what the image occupies in the store.
    pub fn size(&self) -> u64 {
        self.manifest.layers.iter().map(|l| l.size).sum::<u64>() + self.manifest.config.size
    }

    /// The compression of layer `i`, from its media type.
    pub fn layer_compression(&self, i: usize) -> Option<Compression> {
        self.manifest
            .layers
            .get(i)
            .and_then(|l| media_types::layer_compression(&l.media_type))
    }
}

/// The manifest's media type: the descriptor's, else the document's own
/// `mediaType`, else OCI (a layout may omit both).
pub(crate) fn manifest_media_type(desc_mt: &str, bytes: &[u8]) -> String {
    if !desc_mt.is_empty() {
        return desc_mt.to_string();
    }
    serde_json::from_slice::<serde_json::Value>(bytes)
        .ok()
        .and_then(|v| v.get("mediaType")?.as_str().map(str::to_string))
        .unwrap_or_else(|| media_types::OCI_MANIFEST.to_string())
}

/// Normalizes a user-typed name the way docker does (`busybox` →
/// `docker.io/library/busybox:latest`), the form store names are kept in.
pub fn normalize_name(s: &str) -> Result<String, TransportError> {
    Ok(Reference::parse(s)?.to_string())
}

/// Docker's short form of a store name (`busybox:latest`); names that do not
/// parse (written by another tool) are shown as they are.
pub fn familiar_name(name: &str) -> String {
    Reference::parse(name)
        .map(|r| r.familiar())
        .unwrap_or_else(|_| name.to_string())
}

/// One image of the store with all its names, grouped by image ID.
#[derive(Debug, Clone)]
pub struct ImageEntry {
    /// Store names (full normalized form), sorted.
    pub names: Vec<String>,
    pub image: StoredImage,
}

/// Every named image, grouped by image ID (several manifests with the same
/// config are one image, as for docker), sorted by name.
pub fn list_images(store: &Store) -> Result<Vec<ImageEntry>, TransportError> {
    let mut by_manifest: BTreeMap<Digest, (Descriptor, Vec<String>)> = BTreeMap::new();
    for (name, desc) in store.names()? {
        by_manifest
            .entry(desc.digest.clone())
            .or_insert_with(|| (desc.clone(), Vec::new()))
            .1
            .push(name);
    }
    let mut by_id: BTreeMap<Digest, ImageEntry> = BTreeMap::new();
    for (_, (desc, names)) in by_manifest {
        let image = match StoredImage::load(store, &desc) {
            Ok(i) => i,
            Err(e) => {
                // A broken or foreign entry must not hide every other image.
                tracing::warn!("skipping {names:?}: {e}");
                continue;
            }
        };
        by_id
            .entry(image.id().clone())
            .or_insert_with(|| ImageEntry {
                names: Vec::new(),
                image,
            })
            .names
            .extend(names);
    }
    let mut out: Vec<ImageEntry> = by_id.into_values().collect();
    for e in &mut out {
        e.names.sort();
    }
    out.sort_by(|a, b| a.names.cmp(&b.names));
    Ok(out)
}

/// Images whose manifest is in the store but no name points at it any more
/// (a name moved to another image by `tag`, `load` or `import`): docker's
/// dangling `<none>:<none>` images, which `kiln prune` removes. Found by
/// looking at the small JSON blobs no name reaches.
pub fn dangling_images(store: &Store) -> Result<Vec<ImageEntry>, TransportError> {
    const MAX_MANIFEST: u64 = 256 * 1024;
    let mut out: Vec<ImageEntry> = Vec::new();
    for (d, size) in store.unreferenced_blobs()? {
        if size > MAX_MANIFEST {
            continue;
        }
        let Ok(bytes) = std::fs::read(store.blob_path(&d)) else {
            continue; // pruned meanwhile
        };
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            continue;
        };
        if v.get("config").is_none() || v.get("layers").is_none() {
            continue;
        }
        let desc = Descriptor {
            media_type: manifest_media_type("", &bytes),
            digest: d,
            size,
            annotations: BTreeMap::new(),
            platform: None,
        };
        // Half-pruned leftovers (config or a layer gone) are not images.
        let Ok(image) = StoredImage::load(store, &desc) else {
            continue;
        };
        // A layer known only by its registry location counts (`store::RemoteBlob`).
        if image.manifest.layers.iter().all(|l| store.knows(&l.digest))
            && !out.iter().any(|e| e.image.id() == image.id())
        {
            out.push(ImageEntry {
                names: Vec::new(),
                image,
            });
        }
    }
    Ok(out)
}

/// How a user's word matched an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Matched {
    /// By a name (full normalized form).
    Name(String),
    /// By image ID (prefix).
    Id,
}

/// Finds the image `input` names: first as a reference (normalized), then as
/// an image ID or unique prefix of one (`sha256:` optional), like docker.
pub fn find_image(store: &Store, input: &str) -> Result<(Matched, ImageEntry), TransportError> {
    let not_found = || TransportError::NotFound {
        name: input.to_string(),
    };
    if let Ok(name) = normalize_name(input) {
        if let Some(desc) = store.resolve(&name)? {
            let image = StoredImage::load(store, &desc)?;
            let names = list_images(store)?
                .into_iter()
                .find(|e| e.image.id() == image.id())
                .map(|e| e.names)
                .unwrap_or_else(|| vec![name.clone()]);
            // The image as the name points at it (its manifest), with all its names.
            return Ok((Matched::Name(name), ImageEntry { names, image }));
        }
    }
    let hex = input.strip_prefix("sha256:").unwrap_or(input);
    if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(not_found());
    }
    let hex = hex.to_ascii_lowercase();
    let mut hits: Vec<ImageEntry> = list_images(store)?
        .into_iter()
        .filter(|e| e.image.id().hex().starts_with(&hex))
        .collect();
    if hits.is_empty() {
        hits = dangling_images(store)?
            .into_iter()
            .filter(|e| e.image.id().hex().starts_with(&hex))
            .collect();
    }
    match hits.len() {
        0 => Err(not_found()),
        1 => Ok((Matched::Id, hits.remove(0))),
        _ => Err(TransportError::Ambiguous {
            prefix: input.to_string(),
        }),
    }
}

/// Names the manifest `desc` in the store, the way every kiln writer should:
/// touch each blob of the image (so a concurrent `prune` spares them for its
/// grace period), then name it with every blob re-checked under the store
/// lock that `prune` holds, so no name ever points at a missing blob.
pub fn set_name(store: &Store, name: &str, desc: &Descriptor) -> Result<(), TransportError> {
    let img = StoredImage::load(store, desc)?;
    let mut blobs = vec![img.manifest.config.digest.clone()];
    blobs.extend(img.manifest.layers.iter().map(|l| l.digest.clone()));
    for d in &blobs {
        store.touch_blob(d)?;
    }
    let mut d = desc.clone();
    d.annotations.clear();
    d.platform = None;
    store.set_name_with_blobs(name, d, &blobs)?;
    Ok(())
}

/// `put_bytes`, then mark the blob used (see [`set_name`]); retried when a
/// concurrent `prune` deleted an old identical blob between the two steps.
pub(crate) fn put_bytes_kept(store: &Store, bytes: &[u8]) -> Result<(Digest, u64), TransportError> {
    let mut last = None;
    for _ in 0..3 {
        let (d, n) = store.put_bytes(bytes)?;
        match store.touch_blob(&d) {
            Ok(()) => return Ok((d, n)),
            Err(e) => last = Some(e),
        }
    }
    Err(last.map_or_else(
        || TransportError::Format {
            what: "store".into(),
            reason: "blob vanished".into(),
        },
        TransportError::Store,
    ))
}

/// `put_reader`, then mark the blob used. A streamed blob cannot be written
/// again, so a concurrent prune in between is reported (try again).
pub(crate) fn put_reader_kept(
    store: &Store,
    r: impl std::io::Read,
    expected: Option<&Digest>,
) -> Result<(Digest, u64), TransportError> {
    let (d, n) = store.put_reader(r, expected)?;
    store.touch_blob(&d)?;
    Ok((d, n))
}
