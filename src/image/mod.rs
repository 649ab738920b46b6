//! OCI / Docker v2.2 image documents: manifests, indexes, configs, history,
//! and platform selection. Pure data and logic; no I/O (see DESIGN.md).
//!
//! The serde types are written by hand rather than taken from `oci-spec`:
//! kiln must re-serialize Docker v2.2 documents from base images faithfully
//! (unknown keys kept in `extra`, `null` Cmd/Entrypoint kept as `null`), and
//! owning the types is the simplest way to guarantee that.

pub mod changes;
mod config;
pub mod display;
mod manifest;
pub mod media_types;
mod platform;
#[cfg(test)]
mod tests;

use serde::de::DeserializeOwned;
use serde::Serialize;

pub use crate::store::{Descriptor, Digest};
pub use config::{ContainerConfig, EmptyObjectSet, Healthcheck, History, ImageConfig, RootFs};
pub use manifest::{Index, Manifest};
pub use media_types::{is_config, is_index, is_manifest, layer_compression, Compression};
pub use platform::select_manifest;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("invalid {media_type} document: {source}")]
    Parse {
        media_type: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot encode image document: {0}")]
    Encode(#[source] serde_json::Error),
}

/// Parses `bytes` as a document of `media_type`; the error names both.
pub fn parse<T: DeserializeOwned>(media_type: &str, bytes: &[u8]) -> Result<T, ImageError> {
    serde_json::from_slice(bytes).map_err(|source| ImageError::Parse {
        media_type: media_type.to_string(),
        source,
    })
}

/// Compact JSON with object keys sorted at every level, so equal documents
/// always hash to the same digest regardless of struct field order or the
/// order keys had in the source document.
///
/// Goes through `serde_json::Value`, whose map is a `BTreeMap` (the
/// `preserve_order` feature is not enabled), which does the sorting.
pub fn to_canonical_json<T: Serialize>(v: &T) -> Result<Vec<u8>, ImageError> {
    let value = serde_json::to_value(v).map_err(ImageError::Encode)?;
    serde_json::to_vec(&value).map_err(ImageError::Encode)
}

/// The content digest of a serialized document or blob.
pub fn digest_of(bytes: &[u8]) -> Digest {
    Digest::of_bytes(bytes)
}
