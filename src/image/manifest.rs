//! Image manifests and indexes (OCI, and Docker v2.2 which has the same shape).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::store::Descriptor;

/// A single-platform image manifest.
///
/// Fields kiln does not interpret (`artifactType`, `subject`, ...) land in
/// `extra` so a base image's manifest re-serializes without losing them.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Manifest {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    /// Optional in OCI, required in Docker v2.2; absent stays absent.
    #[serde(rename = "mediaType", default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// An image index / Docker manifest list.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Index {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(rename = "mediaType", default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub manifests: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}
