//! `kiln import`: a one-layer image from a root filesystem tarball, as
//! `docker import` makes. The input (plain, gzip or zstd tar, from a file or
//! a pipe) is read once: the uncompressed bytes are hashed for the diff_id
//! while they are gzip-compressed into the store, so the layer is never held
//! in memory or written twice.

use std::collections::BTreeMap;
use std::io::{self, Cursor, Read};

use flate2::read::GzEncoder;

use crate::image::changes::apply_changes;
use crate::image::{self, media_types, ContainerConfig, History, ImageConfig, Manifest, RootFs};
use crate::plan::platform::Platform;
use crate::store::{Descriptor, Digest, Store};

use super::local::normalize_name;
use super::TransportError;
use crate::layer::HashingReader;

/// Options of `kiln import`.
#[derive(Debug, Clone, Default)]
pub struct RootfsImport {
    /// `--change` instructions, applied in order.
    pub changes: Vec<String>,
    /// `--message`: the history comment (docker's default: `Imported from SOURCE`).
    pub message: Option<String>,
    /// `--platform`; the host's when absent.
    pub platform: Option<Platform>,
    /// Where the tarball came from (a path or `-`), for the default comment.
    pub source: String,
}

/// The outcome: the image ID, and the store name if one was given.
#[derive(Debug, Clone)]
pub struct Imported {
    pub id: Digest,
    pub manifest: Digest,
    pub name: Option<String>,
}

/// Imports the tarball read from `r` as a new image, naming it `name` if given.
pub fn import_rootfs(
    store: &Store,
    r: impl Read,
    opts: &RootfsImport,
    name: Option<&str>,
) -> Result<Imported, TransportError> {
    // Validate the name and the changes before reading a possibly huge input.
    let name = name.map(normalize_name).transpose()?;
    let mut container = ContainerConfig::default();
    apply_changes(&mut container, &opts.changes).map_err(|e| TransportError::Format {
        what: "kiln import".into(),
        reason: e.to_string(),
    })?;

    let read_err = |e: io::Error| TransportError::Io {
        what: format!("read {}", opts.source),
        source: e,
    };
    let mut plain = crate::layer::Decoder::new(r)
        .map(|(d, _)| d)
        .map_err(read_err)?;
    let head = read_head(&mut plain).map_err(read_err)?;
    if !looks_like_tar(&head) {
        return Err(TransportError::Format {
            what: opts.source.clone(),
            reason: "not a tar archive (plain, gzip or zstd)".into(),
        });
    }
    let mut gz = GzEncoder::new(
        HashingReader::new(Cursor::new(head).chain(plain)),
        flate2::Compression::default(),
    );
    let (layer_digest, layer_size) = super::local::put_reader_kept(store, &mut gz, None)?;
    let diff_id = gz.into_inner().digest();

    let platform = opts.platform.clone().unwrap_or_else(Platform::host);
    let created = now_rfc3339();
    let comment = opts
        .message
        .clone()
        .unwrap_or_else(|| format!("Imported from {}", opts.source));
    let config = ImageConfig {
        created: Some(created.clone()),
        author: None,
        architecture: platform.arch.clone(),
        os: platform.os.clone(),
        variant: platform.variant.clone(),
        config: Some(container),
        rootfs: RootFs {
            diff_ids: vec![diff_id],
            ..RootFs::default()
        },
        history: vec![History {
            created: Some(created),
            created_by: Some(String::new()),
            comment: Some(comment),
            ..History::default()
        }],
        extra: serde_json::Map::new(),
    };
    let config_bytes = image::to_canonical_json(&config)?;
    let (config_digest, config_size) = super::local::put_bytes_kept(store, &config_bytes)?;
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(media_types::OCI_MANIFEST.into()),
        config: descriptor(media_types::OCI_CONFIG, config_digest.clone(), config_size),
        layers: vec![descriptor(
            media_types::OCI_LAYER_TAR_GZIP,
            layer_digest,
            layer_size,
        )],
        annotations: BTreeMap::new(),
        extra: serde_json::Map::new(),
    };
    let manifest_bytes = image::to_canonical_json(&manifest)?;
    let (md, ms) = super::local::put_bytes_kept(store, &manifest_bytes)?;
    if let Some(n) = &name {
        super::local::set_name(
            store,
            n,
            &descriptor(media_types::OCI_MANIFEST, md.clone(), ms),
        )?;
    }
    Ok(Imported {
        id: config_digest,
        manifest: md,
        name,
    })
}

fn descriptor(mt: &str, digest: Digest, size: u64) -> Descriptor {
    Descriptor {
        media_type: mt.to_string(),
        digest,
        size,
        annotations: BTreeMap::new(),
        platform: None,
    }
}

/// The first tar block (or less, for a short input).
fn read_head(r: &mut dyn Read) -> io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(512);
    r.take(512).read_to_end(&mut head)?;
    Ok(head)
}

/// A ustar/GNU magic at offset 257, or an all-zero block (an empty archive).
fn looks_like_tar(head: &[u8]) -> bool {
    head.len() == 512 && (head.get(257..262) == Some(b"ustar") || head.iter().all(|b| *b == 0))
}

/// Now, as RFC 3339 UTC with seconds (what docker writes, minus nanoseconds).
pub(crate) fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    let now = now.replace_nanosecond(0).unwrap_or(now);
    now.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}
