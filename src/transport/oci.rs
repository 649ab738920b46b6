//! OCI image layouts: a directory (`oci:DIR[:TAG]`) and the same layout in a
//! tar file (`oci-archive:FILE[:TAG]`, `kiln save --format oci-archive`).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

use serde_json::json;

use crate::image::{self, media_types, select_manifest, Index};
use crate::plan::platform::Platform;
use crate::registry::reference::Reference;
use crate::store::{Descriptor, Digest, Store, REF_NAME_ANNOTATION};

use super::local::{manifest_media_type, normalize_name, StoredImage};
use super::TransportError;

const LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;
/// containerd's and docker's annotation for the full image name in an index.
pub(crate) const CONTAINERD_NAME: &str = "io.containerd.image.name";

/// The blobs an image consists of: config, layers, then the manifest.
fn image_blobs(img: &StoredImage) -> Vec<(Digest, u64)> {
    let mut out = vec![(img.manifest.config.digest.clone(), img.manifest.config.size)];
    out.extend(
        img.manifest
            .layers
            .iter()
            .map(|l| (l.digest.clone(), l.size)),
    );
    out.push((img.descriptor.digest.clone(), img.descriptor.size));
    out
}

/// The index.json entry for `img` with `annotations`.
fn index_entry(img: &StoredImage, annotations: BTreeMap<String, String>) -> Descriptor {
    let mut platform = json!({
        "architecture": img.config.architecture,
        "os": img.config.os,
    });
    if let Some(v) = img.config.variant.as_deref().filter(|v| !v.is_empty()) {
        platform["variant"] = json!(v);
    }
    let mt = if img.descriptor.media_type.is_empty() {
        media_types::OCI_MANIFEST.to_string()
    } else {
        img.descriptor.media_type.clone()
    };
    Descriptor {
        media_type: mt,
        digest: img.descriptor.digest.clone(),
        size: img.descriptor.size,
        annotations,
        platform: Some(platform),
    }
}

fn io_err(what: String) -> impl FnOnce(io::Error) -> TransportError {
    move |source| TransportError::Io { what, source }
}

/// Writes `img` into the layout directory `dir` (created if needed), naming
/// it `ref_name` in `index.json` (replacing an entry with that name; without
/// a name the entry is added unnamed, as skopeo does). Blobs are written
/// through a temp file and renamed, so a reader never sees a partial blob;
/// index.json is replaced atomically the same way.
pub(crate) fn write_dir(
    store: &Store,
    img: &StoredImage,
    dir: &Path,
    ref_name: Option<&str>,
) -> Result<(), TransportError> {
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).map_err(io_err(format!("create {}", blobs.display())))?;
    for (digest, _) in image_blobs(img) {
        let dest = blobs.join(digest.hex());
        if dest.is_file() {
            continue;
        }
        let tmp = blobs.join(format!(".{}.partial-{}", digest.hex(), std::process::id()));
        let mut reader = store.open_blob(&digest)?;
        let mut write = || -> io::Result<()> {
            let mut f = File::create(&tmp)?;
            io::copy(&mut reader, &mut f)?;
            f.sync_all()?;
            fs::rename(&tmp, &dest)
        };
        if let Err(e) = write() {
            let _ = fs::remove_file(&tmp);
            return Err(TransportError::Io {
                what: format!("write {}", dest.display()),
                source: e,
            });
        }
    }
    let manifest_path = blobs.join(img.descriptor.digest.hex());
    if !manifest_path.is_file() {
        write_file_atomic(&manifest_path, &img.manifest_bytes)?;
    }
    let layout = dir.join("oci-layout");
    if !layout.exists() {
        write_file_atomic(&layout, LAYOUT)?;
    }
    let index_path = dir.join("index.json");
    let mut index: Index = match fs::read(&index_path) {
        Ok(bytes) => image::parse(media_types::OCI_INDEX, &bytes)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => empty_index(),
        Err(e) => return Err(io_err(format!("read {}", index_path.display()))(e)),
    };
    let mut annotations = BTreeMap::new();
    if let Some(r) = ref_name {
        annotations.insert(REF_NAME_ANNOTATION.to_string(), r.to_string());
        index
            .manifests
            .retain(|d| d.annotations.get(REF_NAME_ANNOTATION).map(String::as_str) != Some(r));
    }
    index.manifests.push(index_entry(img, annotations));
    let bytes = serde_json::to_vec(&index).map_err(|e| TransportError::Format {
        what: index_path.display().to_string(),
        reason: e.to_string(),
    })?;
    write_file_atomic(&index_path, &bytes)
}

fn empty_index() -> Index {
    Index {
        schema_version: 2,
        media_type: Some(media_types::OCI_INDEX.to_string()),
        manifests: Vec::new(),
        annotations: BTreeMap::new(),
        extra: serde_json::Map::new(),
    }
}

fn write_file_atomic(path: &Path, bytes: &[u8]) -> Result<(), TransportError> {
    let tmp = path.with_extension(format!("partial-{}", std::process::id()));
    let write = || -> io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        TransportError::Io {
            what: format!("write {}", path.display()),
            source: e,
        }
    })
}

/// Streams an OCI layout holding `images` (each with its index annotations)
/// as a tar to `w`: `oci-layout`, every blob once, then `index.json`.
pub(crate) fn write_tar(
    store: &Store,
    images: &[(StoredImage, BTreeMap<String, String>)],
    w: impl Write,
) -> Result<(), TransportError> {
    let what = || "write the OCI archive".to_string();
    let mut tar = tar::Builder::new(w);
    append_bytes(&mut tar, "oci-layout", LAYOUT).map_err(io_err(what()))?;
    for dir in ["blobs/", "blobs/sha256/"] {
        let mut h = header(0, tar::EntryType::Directory, 0o755);
        tar.append_data(&mut h, dir, io::empty())
            .map_err(io_err(what()))?;
    }
    let mut written = BTreeSet::new();
    for (img, _) in images {
        for (digest, size) in image_blobs(img) {
            if !written.insert(digest.clone()) {
                continue;
            }
            let reader = store.open_blob(&digest)?;
            let mut h = header(size, tar::EntryType::Regular, 0o644);
            tar.append_data(&mut h, format!("blobs/sha256/{}", digest.hex()), reader)
                .map_err(|e| read_or_write(store, &digest, e, what()))?;
        }
        if written.insert(img.descriptor.digest.clone()) {
            let path = format!("blobs/sha256/{}", img.descriptor.digest.hex());
            append_bytes(&mut tar, &path, &img.manifest_bytes).map_err(io_err(what()))?;
        }
    }
    let mut index = empty_index();
    for (img, ann) in images {
        index.manifests.push(index_entry(img, ann.clone()));
    }
    let bytes = serde_json::to_vec(&index).map_err(|e| TransportError::Format {
        what: "index.json".into(),
        reason: e.to_string(),
    })?;
    append_bytes(&mut tar, "index.json", &bytes).map_err(io_err(what()))?;
    tar.into_inner()
        .map_err(io_err(what()))?
        .flush()
        .map_err(io_err(what()))?;
    Ok(())
}

/// A blob-read failure (digest mismatch) reported as a store error rather
/// than a bare I/O error.
pub(crate) fn read_or_write(
    store: &Store,
    d: &Digest,
    e: io::Error,
    what: String,
) -> TransportError {
    if e.get_ref()
        .is_some_and(|i| i.is::<crate::store::StoreError>())
    {
        return TransportError::Store(store.read_error(d, e));
    }
    TransportError::Io { what, source: e }
}

/// A tar header with fixed owner and time, so archives are reproducible.
pub(crate) fn header(size: u64, kind: tar::EntryType, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_size(size);
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h
}

pub(crate) fn append_bytes<W: Write>(
    tar: &mut tar::Builder<W>,
    path: &str,
    bytes: &[u8],
) -> io::Result<()> {
    let mut h = header(bytes.len() as u64, tar::EntryType::Regular, 0o644);
    tar.append_data(&mut h, path, bytes)
}

/// Where an OCI layout's blobs come from when importing.
pub(crate) trait BlobSource {
    /// Makes sure the blob `d` is in the store (copying and verifying it).
    fn ensure(&self, store: &Store, d: &Digest) -> Result<(), TransportError>;
}

/// Blobs in a layout directory, copied into the store on demand.
pub(crate) struct DirBlobs<'a>(pub(crate) &'a Path);

impl BlobSource for DirBlobs<'_> {
    fn ensure(&self, store: &Store, d: &Digest) -> Result<(), TransportError> {
        if store.has(d) {
            return Ok(());
        }
        let path = self.0.join("blobs").join(d.algorithm()).join(d.hex());
        let f = File::open(&path).map_err(io_err(format!("open {}", path.display())))?;
        super::local::put_reader_kept(store, f, Some(d))?;
        Ok(())
    }
}

/// Blobs of an archive, already stored by the streaming read.
pub(crate) struct StoredBlobs;

impl BlobSource for StoredBlobs {
    fn ensure(&self, store: &Store, d: &Digest) -> Result<(), TransportError> {
        if store.has(d) {
            Ok(())
        } else {
            Err(TransportError::Format {
                what: "OCI archive".into(),
                reason: format!("blob {d} is referenced but not in the archive"),
            })
        }
    }
}

/// Which entries of an index to import, and how to name them.
pub(crate) struct OciImport<'a> {
    /// Only the entry whose ref.name is this (`oci:DIR:TAG`); `None`: all
    /// named entries (load), or the only entry (`oci:DIR`).
    pub(crate) ref_name: Option<&'a str>,
    /// Store name to give the image, overriding the names in the index.
    pub(crate) name: Option<&'a str>,
    /// Base of the name given to entries whose ref.name is only a tag.
    pub(crate) fallback_repo: String,
    /// `load`: every entry; transport import: exactly one image is expected.
    pub(crate) all: bool,
}

/// Imports images from an OCI `index.json`, copying their blobs into the
/// store (blobs first, then the name), and returns the names set.
pub(crate) fn import_index(
    store: &Store,
    index_bytes: &[u8],
    source: &dyn BlobSource,
    opts: &OciImport<'_>,
) -> Result<Vec<String>, TransportError> {
    let index: Index = image::parse(media_types::OCI_INDEX, index_bytes)?;
    let selected: Vec<&Descriptor> = match opts.ref_name {
        Some(r) => index
            .manifests
            .iter()
            .filter(|d| d.annotations.get(REF_NAME_ANNOTATION).map(String::as_str) == Some(r))
            .collect(),
        None => index.manifests.iter().collect(),
    };
    if selected.is_empty() {
        return Err(TransportError::Format {
            what: "OCI layout".into(),
            reason: match opts.ref_name {
                Some(r) => format!("no image named {r:?} in index.json"),
                None => "index.json lists no image".into(),
            },
        });
    }
    if !opts.all && selected.len() > 1 {
        return Err(TransportError::Format {
            what: "OCI layout".into(),
            reason: format!(
                "{} images in index.json; say which with :NAME",
                selected.len()
            ),
        });
    }
    let mut names = Vec::new();
    for desc in selected {
        let manifest_desc = resolve_platform(store, source, desc)?;
        let img = copy_image(store, source, &manifest_desc)?;
        let name = match opts.name {
            Some(n) => normalize_name(n)?,
            None => match entry_name(desc, &opts.fallback_repo) {
                Some(n) => n,
                // One image asked for by location: name it after the layout.
                None if !opts.all => format!("{}:latest", opts.fallback_repo),
                None => {
                    tracing::warn!("image {} has no usable name; not named", img.id());
                    continue;
                }
            },
        };
        super::local::set_name(store, &name, &manifest_desc)?;
        names.push(name);
    }
    Ok(names)
}

/// For an index entry that is itself an index, the manifest for this host.
fn resolve_platform(
    store: &Store,
    source: &dyn BlobSource,
    desc: &Descriptor,
) -> Result<Descriptor, TransportError> {
    source.ensure(store, &desc.digest)?;
    let bytes = store.read_blob(&desc.digest)?;
    let mt = manifest_media_type(&desc.media_type, &bytes);
    if !media_types::is_index(&mt) {
        let mut d = desc.clone();
        d.media_type = mt;
        return Ok(d);
    }
    let inner: Index = image::parse(&mt, &bytes)?;
    let host = Platform::host();
    let chosen = select_manifest(&inner, &host).ok_or_else(|| TransportError::Format {
        what: format!("image index {}", desc.digest),
        reason: format!("no manifest for {host}"),
    })?;
    resolve_platform(store, source, chosen)
}

/// Copies config, layers and manifest (in that order) into the store.
fn copy_image(
    store: &Store,
    source: &dyn BlobSource,
    desc: &Descriptor,
) -> Result<StoredImage, TransportError> {
    source.ensure(store, &desc.digest)?;
    let bytes = store.read_blob(&desc.digest)?;
    let manifest: image::Manifest = image::parse(&desc.media_type, &bytes)?;
    source.ensure(store, &manifest.config.digest)?;
    for l in &manifest.layers {
        source.ensure(store, &l.digest)?;
    }
    StoredImage::load(store, desc)
}

/// The store name an index entry asks for: containerd's full-name
/// annotation, else a ref.name that is a full reference, else
/// `<fallback_repo>:<ref.name>` when the ref.name is only a tag.
fn entry_name(desc: &Descriptor, fallback_repo: &str) -> Option<String> {
    if let Some(n) = desc.annotations.get(CONTAINERD_NAME) {
        if let Ok(n) = normalize_name(n) {
            return Some(n);
        }
    }
    let r = desc.annotations.get(REF_NAME_ANNOTATION)?;
    if r.contains('/') || r.contains(':') || r.contains('@') {
        return normalize_name(r).ok();
    }
    Reference::parse(&format!("{fallback_repo}:{r}"))
        .ok()
        .map(|r| r.to_string())
}

/// `localhost/<name>` from a file or directory name, for tag-only ref.names:
/// lower-cased, characters a repository may not hold replaced by `-`.
pub(crate) fn fallback_repo(path: &Path) -> String {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    let cleaned: String = stem
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let cleaned = cleaned.trim_matches('-');
    let cleaned = if cleaned.is_empty() { "image" } else { cleaned };
    format!("localhost/{cleaned}")
}

/// The image with an OCI manifest: a Docker v2.2 manifest (pulled from a
/// registry that serves those) is rewritten with the OCI media types, as
/// skopeo does when it writes an OCI layout. The config bytes are kept, so
/// the image ID does not change. The new manifest only goes to the export,
/// not into the store (where it would look like a dangling image).
pub(crate) fn as_oci(img: &StoredImage) -> Result<StoredImage, TransportError> {
    let is_docker = img.descriptor.media_type == media_types::DOCKER_MANIFEST
        || img.manifest.media_type.as_deref() == Some(media_types::DOCKER_MANIFEST);
    if !is_docker {
        return Ok(img.clone());
    }
    let mut manifest = img.manifest.clone();
    manifest.media_type = Some(media_types::OCI_MANIFEST.to_string());
    if manifest.config.media_type == media_types::DOCKER_CONFIG {
        manifest.config.media_type = media_types::OCI_CONFIG.to_string();
    }
    for l in &mut manifest.layers {
        l.media_type = match l.media_type.as_str() {
            media_types::DOCKER_LAYER_TAR_GZIP => media_types::OCI_LAYER_TAR_GZIP.to_string(),
            media_types::DOCKER_FOREIGN_LAYER_TAR_GZIP => {
                "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip".to_string()
            }
            other => other.to_string(),
        };
    }
    let bytes = image::to_canonical_json(&manifest)?;
    Ok(StoredImage {
        descriptor: Descriptor {
            media_type: media_types::OCI_MANIFEST.to_string(),
            digest: Digest::of_bytes(&bytes),
            size: bytes.len() as u64,
            annotations: BTreeMap::new(),
            platform: None,
        },
        manifest,
        manifest_bytes: bytes,
        config_bytes: img.config_bytes.clone(),
        config: img.config.clone(),
    })
}
