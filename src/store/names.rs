//! Image names: entries of `index.json` keyed by the OCI ref.name annotation.

use std::collections::BTreeMap;
use std::fs;
use std::io;

use serde::{Deserialize, Serialize};

use super::{Digest, Store, StoreError};

/// The annotation that carries an image's name in `index.json`.
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";
const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";

/// An OCI content descriptor.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Descriptor {
    #[serde(rename = "mediaType")]
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<serde_json::Value>,
}

impl Descriptor {
    fn ref_name(&self) -> Option<&str> {
        self.annotations
            .get(REF_NAME_ANNOTATION)
            .map(String::as_str)
    }
}

/// `index.json`. Unknown top-level fields are kept so a layout written by
/// another tool survives a round trip through kiln.
#[derive(Serialize, Deserialize, Debug)]
struct Index {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "mediaType", default, skip_serializing_if = "Option::is_none")]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Vec<Descriptor>,
    #[serde(flatten)]
    rest: serde_json::Map<String, serde_json::Value>,
}

impl Index {
    fn empty() -> Index {
        Index {
            schema_version: 2,
            media_type: Some(INDEX_MEDIA_TYPE.to_string()),
            manifests: Vec::new(),
            rest: serde_json::Map::new(),
        }
    }
}

impl Store {
    /// Points `name` at `desc` (the name is stored as the ref.name annotation,
    /// overriding any in `desc`), replacing an existing entry with that name.
    /// Atomic (temp + fsync + rename of index.json) and serialised with other
    /// writers by the exclusive lock. Refuses with `MissingBlob` if the
    /// descriptor's blob is not in the store: put blobs first, then names.
    pub fn set_name(&self, name: &str, desc: Descriptor) -> Result<(), StoreError> {
        self.set_name_with_blobs(name, desc, &[])
    }

    /// `set_name` for an image whose other blobs (config, layers) are `needs`:
    /// every one is checked under the same exclusive lock that `prune` holds,
    /// so the name can never be written after a prune removed one of them.
    pub fn set_name_with_blobs(
        &self,
        name: &str,
        mut desc: Descriptor,
        needs: &[Digest],
    ) -> Result<(), StoreError> {
        let _lock = self.lock_exclusive()?;
        if let Some(missing) = std::iter::once(&desc.digest)
            .chain(needs)
            .find(|d| !self.knows(d))
        {
            return Err(StoreError::MissingBlob {
                root: self.root.clone(),
                name: name.to_string(),
                digest: missing.clone(),
            });
        }
        desc.annotations
            .insert(REF_NAME_ANNOTATION.to_string(), name.to_string());
        let mut index = self.read_index()?;
        match index
            .manifests
            .iter_mut()
            .find(|d| d.ref_name() == Some(name))
        {
            Some(slot) => *slot = desc,
            None => index.manifests.push(desc),
        }
        self.write_index(&index)
    }

    /// Removes `name`; returns whether it existed. Atomic like `set_name`.
    /// The blobs stay (garbage collection is a separate concern).
    pub fn remove_name(&self, name: &str) -> Result<bool, StoreError> {
        let _lock = self.lock_exclusive()?;
        let mut index = self.read_index()?;
        let before = index.manifests.len();
        index.manifests.retain(|d| d.ref_name() != Some(name));
        if index.manifests.len() == before {
            return Ok(false);
        }
        self.write_index(&index)?;
        Ok(true)
    }

    /// All named entries, in index order. Entries without a ref.name (legal
    /// in OCI layouts) are skipped.
    pub fn names(&self) -> Result<Vec<(String, Descriptor)>, StoreError> {
        let _lock = self.lock_shared()?;
        let index = self.read_index()?;
        Ok(index
            .manifests
            .into_iter()
            .filter_map(|d| d.ref_name().map(|n| (n.to_string(), d.clone())))
            .collect())
    }

    /// The descriptor named `name`, if any.
    pub fn resolve(&self, name: &str) -> Result<Option<Descriptor>, StoreError> {
        Ok(self
            .names()?
            .into_iter()
            .find_map(|(n, d)| (n == name).then_some(d)))
    }

    /// Creates an empty index if none exists. Caller holds the exclusive lock.
    pub(crate) fn init_index(&self) -> Result<(), StoreError> {
        if self.index_path().exists() {
            // Parse it now so a corrupt index is reported at open, not later.
            self.read_index().map(|_| ())
        } else {
            self.write_index(&Index::empty())
        }
    }

    /// Caller holds a lock.
    fn read_index(&self) -> Result<Index, StoreError> {
        let path = self.index_path();
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            // A layout without index.json is treated as having no names.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Index::empty()),
            Err(e) => return Err(self.io(format!("read {}", path.display()), e)),
        };
        let index: Index = serde_json::from_slice(&bytes).map_err(|source| StoreError::Json {
            root: self.root.clone(),
            what: format!("parse {}", path.display()),
            source,
        })?;
        if index.schema_version != 2 {
            return Err(StoreError::Layout {
                root: self.root.clone(),
                reason: format!(
                    "{}: unsupported schemaVersion {}",
                    path.display(),
                    index.schema_version
                ),
            });
        }
        Ok(index)
    }

    /// Caller holds the exclusive lock.
    fn write_index(&self, index: &Index) -> Result<(), StoreError> {
        let path = self.index_path();
        let bytes = serde_json::to_vec_pretty(index).map_err(|source| StoreError::Json {
            root: self.root.clone(),
            what: format!("serialise {}", path.display()),
            source,
        })?;
        self.write_atomic(&path, &bytes)
    }
}
