//! Reading an image archive (docker-archive or oci-archive, plain or
//! compressed) in ONE streaming pass, so `kiln load` works from a pipe.
//!
//! Every regular file goes straight into the store as a blob (verified
//! against its name when it is `blobs/sha256/<hex>`); small JSON files
//! (`manifest.json`, `index.json`, configs) are also kept in memory, because
//! which file is what is only known once `manifest.json`/`index.json` has been
//! read, and those may come last in the tar.

use std::collections::HashMap;
use std::io::Read;

use crate::store::{Digest, Store};

use super::TransportError;

/// Files larger than this are never kept in memory (JSON documents of an
/// image are far smaller; a layer can be gigabytes).
const MAX_JSON: u64 = 4 * 1024 * 1024;

/// What the archive held.
pub(crate) struct ArchiveContents {
    /// Normalized path (no leading `./`) → the stored blob.
    pub(crate) blobs: HashMap<String, (Digest, u64)>,
    /// Normalized path → content, for small files that look like JSON.
    pub(crate) json: HashMap<String, Vec<u8>>,
}

impl ArchiveContents {
    pub(crate) fn is_docker_archive(&self) -> bool {
        self.json.contains_key("manifest.json")
    }

    pub(crate) fn is_oci_archive(&self) -> bool {
        self.json.contains_key("index.json")
    }

    /// The stored blob at `path` (relative to the archive root, `./` allowed).
    /// A small file that looked like JSON was only kept in memory; it is
    /// stored now that the archive says it is a blob.
    pub(crate) fn blob(&self, store: &Store, path: &str) -> Result<(Digest, u64), TransportError> {
        let path = normalize(path);
        if let Some(b) = self.blobs.get(&path) {
            return Ok(b.clone());
        }
        match self.json.get(&path) {
            Some(bytes) => super::local::put_bytes_kept(store, bytes),
            None => Err(TransportError::Format {
                what: "archive".into(),
                reason: format!("{path:?} is listed but not in the archive"),
            }),
        }
    }
}

/// Strips `./` and leading `/` so `./blobs/x` and `blobs/x` are one path.
fn normalize(path: &str) -> String {
    let mut p = path;
    loop {
        if let Some(r) = p.strip_prefix("./") {
            p = r;
        } else if let Some(r) = p.strip_prefix('/') {
            p = r;
        } else {
            break;
        }
    }
    p.to_string()
}

/// The digest a path like `blobs/sha256/<hex>` claims, if it has that shape.
fn claimed_digest(path: &str) -> Option<Digest> {
    let hex = path.strip_prefix("blobs/sha256/")?;
    Digest::parse(&format!("sha256:{hex}")).ok()
}

/// Reads the whole archive from `r` (a tar, or a gzip/zstd-compressed tar).
pub(crate) fn read_archive(store: &Store, r: impl Read) -> Result<ArchiveContents, TransportError> {
    let io_err = |e| TransportError::Io {
        what: "read the archive".into(),
        source: e,
    };
    let r = crate::layer::Decoder::new(r)
        .map(|(d, _)| d)
        .map_err(io_err)?;
    let mut tar = tar::Archive::new(r);
    let mut contents = ArchiveContents {
        blobs: HashMap::new(),
        json: HashMap::new(),
    };
    for entry in tar.entries().map_err(io_err)? {
        let mut entry = entry.map_err(io_err)?;
        if entry.header().entry_type() == tar::EntryType::Link {
            // A hard link to an earlier file (an archiver deduplicating a
            // layer shared by two images): the same content under a new path.
            let path = normalize(&entry.path().map_err(io_err)?.to_string_lossy());
            if let Some(target) = entry.link_name().map_err(io_err)? {
                let target = normalize(&target.to_string_lossy());
                if let Some(b) = contents.blobs.get(&target).cloned() {
                    contents.blobs.insert(path.clone(), b);
                }
                if let Some(j) = contents.json.get(&target).cloned() {
                    contents.json.insert(path, j);
                }
            }
            continue;
        }
        if entry.header().entry_type() != tar::EntryType::Regular
            && entry.header().entry_type() != tar::EntryType::Continuous
        {
            // Directories, links and the like carry no image content.
            continue;
        }
        let path = normalize(&entry.path().map_err(io_err)?.to_string_lossy());
        let size = entry.size();
        let claimed = claimed_digest(&path);
        if size <= MAX_JSON {
            let mut buf = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
            entry.read_to_end(&mut buf).map_err(io_err)?;
            let digest = match &claimed {
                Some(want) => {
                    let got = Digest::of_bytes(&buf);
                    if &got != want {
                        return Err(TransportError::Format {
                            what: format!("archive entry {path}"),
                            reason: format!("content hashes to {got}"),
                        });
                    }
                    Some(got)
                }
                None => None,
            };
            let looks_json = buf.first().is_some_and(|b| *b == b'{' || *b == b'[');
            // Blobs are stored now; top-level JSON (manifest.json, a config
            // named <hex>.json) is stored later if the image uses it.
            if digest.is_some() || !looks_json {
                let (d, n) = super::local::put_reader_kept(store, buf.as_slice(), digest.as_ref())?;
                contents.blobs.insert(path.clone(), (d, n));
            }
            if looks_json {
                contents.json.insert(path, buf);
            }
        } else {
            let (d, n) = super::local::put_reader_kept(store, &mut entry, claimed.as_ref())?;
            contents.blobs.insert(path, (d, n));
        }
    }
    Ok(contents)
}

/// Stores a JSON file of the archive (e.g. a `<hex>.json` config) and returns
/// its digest and size.
pub(crate) fn store_json(
    store: &Store,
    contents: &ArchiveContents,
    path: &str,
) -> Result<(Digest, u64, Vec<u8>), TransportError> {
    let bytes = contents
        .json
        .get(&normalize(path))
        .ok_or_else(|| TransportError::Format {
            what: "archive".into(),
            reason: format!("{path:?} is listed but not in the archive (or is not JSON)"),
        })?
        .clone();
    let (d, n) = super::local::put_bytes_kept(store, &bytes)?;
    Ok((d, n, bytes))
}
