//! `docker save` archives (`docker-archive:FILE[:REF]`, `kiln save`/`load`).
//!
//! Written in the classic layout that `docker load`, `podman load` and
//! `skopeo` all read (the one skopeo itself writes): `<config-hex>.json`,
//! one uncompressed `<diff-id-hex>.tar` per layer, `manifest.json`
//! (`[{Config, RepoTags, Layers}]`) and `repositories`. Compressed layers are
//! decompressed on the way out and checked against the config's diff_ids.
//!
//! Loaded layers are stored as they are in the archive (normally plain tars,
//! media type `application/vnd.oci.image.layer.v1.tar`, so their digest IS
//! the diff_id): no recompression, byte-identical round trips.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};

use serde::{Deserialize, Serialize};

use crate::image::{self, media_types, Compression, ImageConfig, Manifest};
use crate::store::{Descriptor, Digest, Store};

use super::archive_in::{store_json, ArchiveContents};
use super::local::{normalize_name, StoredImage};
use super::location::ArchiveSelector;
use super::oci::{append_bytes, header, read_or_write};
use super::TransportError;
use crate::layer::{Decoder, HashingReader};

/// One entry of `manifest.json`.
#[derive(Serialize, Deserialize, Debug)]
struct ArchiveManifest {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

fn write_err(e: io::Error) -> TransportError {
    TransportError::Io {
        what: "write the docker archive".into(),
        source: e,
    }
}

/// Streams a docker archive of `images` (each with the store names to list
/// in `RepoTags`) to `w`.
pub(crate) fn write_archive(
    store: &Store,
    images: &[(StoredImage, Vec<String>)],
    w: impl Write,
) -> Result<(), TransportError> {
    let mut tar = tar::Builder::new(w);
    let mut written = BTreeSet::new();
    let mut manifest = Vec::new();
    // repository → tag → top layer id, as docker's `repositories` file has it.
    let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for (img, names) in images {
        let config_path = format!("{}.json", img.id().hex());
        if written.insert(config_path.clone()) {
            append_bytes(&mut tar, &config_path, &img.config_bytes).map_err(write_err)?;
        }
        let diff_ids = &img.config.rootfs.diff_ids;
        if diff_ids.len() != img.manifest.layers.len() {
            return Err(TransportError::Format {
                what: format!("image {}", img.id()),
                reason: format!(
                    "{} layers but {} diff_ids in the config",
                    img.manifest.layers.len(),
                    diff_ids.len()
                ),
            });
        }
        let mut layers = Vec::new();
        for (i, (layer, diff_id)) in img.manifest.layers.iter().zip(diff_ids).enumerate() {
            let path = format!("{}.tar", diff_id.hex());
            if written.insert(path.clone()) {
                append_layer(
                    store,
                    &mut tar,
                    &path,
                    layer,
                    diff_id,
                    img.layer_compression(i),
                )?;
            }
            layers.push(path);
        }
        // Full names: docker load reads them as it reads its own familiar
        // ones, and podman would otherwise qualify `busybox` as `localhost/busybox`.
        let tags: Vec<String> = names.clone();
        if let Some(top) = diff_ids.last() {
            for n in names {
                if let Ok(r) = crate::registry::reference::Reference::parse(n) {
                    if let Some(tag) = r.tag() {
                        repositories
                            .entry(format!("{}/{}", r.registry(), r.repository()))
                            .or_default()
                            .insert(tag.to_string(), top.hex().to_string());
                    }
                }
            }
        }
        manifest.push(ArchiveManifest {
            config: config_path,
            repo_tags: Some(tags),
            layers,
        });
    }
    append_bytes(&mut tar, "manifest.json", &to_json(&manifest)?).map_err(write_err)?;
    if !repositories.is_empty() {
        append_bytes(&mut tar, "repositories", &to_json(&repositories)?).map_err(write_err)?;
    }
    tar.into_inner()
        .map_err(write_err)?
        .flush()
        .map_err(write_err)?;
    Ok(())
}

fn to_json<T: Serialize>(v: &T) -> Result<Vec<u8>, TransportError> {
    serde_json::to_vec(v).map_err(|e| TransportError::Format {
        what: "docker archive".into(),
        reason: e.to_string(),
    })
}

/// Appends one layer as an uncompressed tar. A plain-tar blob is streamed
/// straight from the store; a compressed one is decompressed into an
/// anonymous temp file first (a tar header needs the size up front).
fn append_layer<W: Write>(
    store: &Store,
    tar: &mut tar::Builder<W>,
    path: &str,
    layer: &Descriptor,
    diff_id: &Digest,
    compression: Option<Compression>,
) -> Result<(), TransportError> {
    let mismatch = |got: Digest| TransportError::Format {
        what: format!("layer {}", layer.digest),
        reason: format!("uncompressed content hashes to {got}, the config says {diff_id}"),
    };
    let compression = match compression {
        Some(c) => c,
        None => {
            // Unknown media type: trust the bytes, not the name.
            let mut head = [0u8; 4];
            let n = store
                .open_blob(&layer.digest)?
                .read(&mut head)
                .map_err(write_err)?;
            Compression::detect(&head[..n])
        }
    };
    if compression == Compression::None {
        if &layer.digest != diff_id {
            return Err(mismatch(layer.digest.clone()));
        }
        let reader = store.open_blob(&layer.digest)?;
        let mut h = header(layer.size, tar::EntryType::Regular, 0o644);
        return tar.append_data(&mut h, path, reader).map_err(|e| {
            read_or_write(store, &layer.digest, e, "write the docker archive".into())
        });
    }
    let mut tmp: File = tempfile::tempfile().map_err(|e| TransportError::Io {
        what: "create a temporary file".into(),
        source: e,
    })?;
    let blob = store.open_blob(&layer.digest)?;
    let mut hashing =
        HashingReader::new(
            Decoder::new(blob)
                .map(|(d, _)| d)
                .map_err(|e| TransportError::Io {
                    what: format!("decompress layer {}", layer.digest),
                    source: e,
                })?,
        );
    let size = io::copy(&mut hashing, &mut tmp).map_err(|e| {
        read_or_write(
            store,
            &layer.digest,
            e,
            format!("decompress layer {}", layer.digest),
        )
    })?;
    let got = hashing.digest();
    if &got != diff_id {
        return Err(mismatch(got));
    }
    tmp.seek(SeekFrom::Start(0)).map_err(write_err)?;
    let mut h = header(size, tar::EntryType::Regular, 0o644);
    tar.append_data(&mut h, path, tmp).map_err(write_err)
}

/// Imports the images of a docker archive already streamed into the store.
/// `selector` picks one (by name or `@N`); without it, every image is
/// imported when `all`, else the archive must hold exactly one. `name`
/// overrides the archive's RepoTags. Returns the names set and, for each
/// image, its ID.
pub(crate) fn import(
    store: &Store,
    contents: &ArchiveContents,
    selector: Option<&ArchiveSelector>,
    name: Option<&str>,
    all: bool,
) -> Result<Vec<(Digest, Vec<String>)>, TransportError> {
    let bad = |reason: String| TransportError::Format {
        what: "docker archive".into(),
        reason,
    };
    let bytes = contents
        .json
        .get("manifest.json")
        .ok_or_else(|| bad("no manifest.json".into()))?;
    let entries: Vec<ArchiveManifest> =
        serde_json::from_slice(bytes).map_err(|e| bad(format!("parse manifest.json: {e}")))?;
    let normalized_tags = |e: &ArchiveManifest| -> Vec<String> {
        e.repo_tags
            .iter()
            .flatten()
            .filter_map(|t| normalize_name(t).ok())
            .collect()
    };
    let chosen: Vec<&ArchiveManifest> = match selector {
        Some(ArchiveSelector::Index(i)) => vec![entries
            .get(*i)
            .ok_or_else(|| bad(format!("@{i}: the archive has {} image(s)", entries.len())))?],
        Some(ArchiveSelector::Name(n)) => {
            let found: Vec<&ArchiveManifest> = entries
                .iter()
                .filter(|e| normalized_tags(e).iter().any(|t| t == n))
                .collect();
            if found.is_empty() {
                return Err(bad(format!("no image tagged {n} in the archive")));
            }
            found.into_iter().take(1).collect()
        }
        None if all => entries.iter().collect(),
        None if entries.len() == 1 => entries.iter().collect(),
        None => {
            return Err(bad(format!(
                "{} images in the archive; say which with :NAME or :@N",
                entries.len()
            )))
        }
    };
    let mut out = Vec::new();
    for entry in chosen {
        let (config_digest, config_size, config_bytes) =
            store_json(store, contents, &entry.config)?;
        let config: ImageConfig = image::parse(media_types::OCI_CONFIG, &config_bytes)?;
        if config.rootfs.diff_ids.len() != entry.layers.len() {
            return Err(bad(format!(
                "{}: {} layers listed but the config has {} diff_ids",
                entry.config,
                entry.layers.len(),
                config.rootfs.diff_ids.len()
            )));
        }
        let mut layers = Vec::new();
        for (path, diff_id) in entry.layers.iter().zip(&config.rootfs.diff_ids) {
            let (digest, size) = contents.blob(store, path)?;
            layers.push(stored_layer(store, digest, size, diff_id)?);
        }
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(media_types::OCI_MANIFEST.to_string()),
            config: Descriptor {
                media_type: media_types::OCI_CONFIG.to_string(),
                digest: config_digest.clone(),
                size: config_size,
                annotations: BTreeMap::new(),
                platform: None,
            },
            layers,
            annotations: BTreeMap::new(),
            extra: serde_json::Map::new(),
        };
        let manifest_bytes = image::to_canonical_json(&manifest)?;
        let (md, ms) = super::local::put_bytes_kept(store, &manifest_bytes)?;
        let desc = Descriptor {
            media_type: media_types::OCI_MANIFEST.to_string(),
            digest: md,
            size: ms,
            annotations: BTreeMap::new(),
            platform: None,
        };
        let names = match name {
            Some(n) => vec![normalize_name(n)?],
            None => match selector {
                Some(ArchiveSelector::Name(n)) => vec![n.clone()],
                _ => normalized_tags(entry),
            },
        };
        for n in &names {
            super::local::set_name(store, n, &desc)?;
        }
        out.push((config_digest, names));
    }
    Ok(out)
}

/// The descriptor of a stored archive layer, after checking that its
/// uncompressed content is the config's diff_id.
fn stored_layer(
    store: &Store,
    digest: Digest,
    size: u64,
    diff_id: &Digest,
) -> Result<Descriptor, TransportError> {
    let mut head = [0u8; 4];
    let n = store
        .open_blob(&digest)?
        .read(&mut head)
        .map_err(|e| TransportError::Io {
            what: format!("read layer {digest}"),
            source: e,
        })?;
    let compression = Compression::detect(&head[..n]);
    let got = if compression == Compression::None {
        digest.clone()
    } else {
        let mut hashing = HashingReader::new(
            Decoder::new(store.open_blob(&digest)?)
                .map(|(d, _)| d)
                .map_err(|e| TransportError::Io {
                    what: format!("decompress layer {digest}"),
                    source: e,
                })?,
        );
        io::copy(&mut hashing, &mut io::sink())
            .map_err(|e| read_or_write(store, &digest, e, format!("decompress layer {digest}")))?;
        hashing.digest()
    };
    if &got != diff_id {
        return Err(TransportError::Format {
            what: format!("layer {digest}"),
            reason: format!("uncompressed content hashes to {got}, the config says {diff_id}"),
        });
    }
    let media_type = match compression {
        Compression::None => media_types::OCI_LAYER_TAR,
        Compression::Gzip => media_types::OCI_LAYER_TAR_GZIP,
        Compression::Zstd => media_types::OCI_LAYER_TAR_ZSTD,
    };
    Ok(Descriptor {
        media_type: media_type.to_string(),
        digest,
        size,
        annotations: BTreeMap::new(),
        platform: None,
    })
}
