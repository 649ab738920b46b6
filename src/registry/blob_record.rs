//! Which registry repositories are known to hold which blobs, so a push can
//! ask for a cross-repository mount instead of uploading again.
//!
//! Kept in `<root>/registry-blobs.json` beside the OCI layout (other tools
//! ignore unknown files there): `{"HOST[:PORT]": {"sha256:…": ["repo", …]}}`.
//! It is only a hint: a stale entry costs one refused mount request. Updates
//! are read-modify-write under the store's exclusive lock and land through
//! an atomic rename, so concurrent kiln processes never corrupt it.

use std::collections::BTreeMap;
use std::fs;

use crate::store::{Digest, Store, StoreError};

const FILE: &str = "registry-blobs.json";
/// Repositories remembered per blob; the newest are kept.
const MAX_REPOS: usize = 8;

type Record = BTreeMap<String, BTreeMap<String, Vec<String>>>;

fn load(store: &Store) -> Record {
    // A missing or unreadable file is an empty hint, never an error.
    fs::read(store.root().join(FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Repositories of `registry` other than `except` known to hold `digest`,
/// most recently seen first.
pub fn repos_with(store: &Store, registry: &str, digest: &Digest, except: &str) -> Vec<String> {
    load(store)
        .get(registry)
        .and_then(|blobs| blobs.get(digest.as_str()))
        .map(|repos| {
            repos
                .iter()
                .rev()
                .filter(|r| r.as_str() != except)
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

/// Records that `repo` on `registry` holds every blob in `digests`.
pub fn remember(
    store: &Store,
    registry: &str,
    repo: &str,
    digests: &[Digest],
) -> Result<(), StoreError> {
    let _lock = store.lock_exclusive()?;
    let mut record = load(store);
    let blobs = record.entry(registry.to_string()).or_default();
    for d in digests {
        let repos = blobs.entry(d.to_string()).or_default();
        repos.retain(|r| r != repo);
        repos.push(repo.to_string());
        if repos.len() > MAX_REPOS {
            let excess = repos.len() - MAX_REPOS;
            repos.drain(..excess);
        }
    }
    let bytes = serde_json::to_vec(&record).map_err(|source| StoreError::Json {
        root: store.root().to_path_buf(),
        what: format!("serialise {FILE}"),
        source,
    })?;
    store.write_atomic(&store.root().join(FILE), &bytes)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn remembers_newest_first_and_excludes_target() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let d = Digest::of_bytes(b"x");
        assert!(repos_with(&store, "r:5000", &d, "a").is_empty());
        remember(&store, "r:5000", "a", std::slice::from_ref(&d)).unwrap();
        remember(&store, "r:5000", "b", std::slice::from_ref(&d)).unwrap();
        remember(&store, "other", "c", std::slice::from_ref(&d)).unwrap();
        assert_eq!(repos_with(&store, "r:5000", &d, "x"), ["b", "a"]);
        assert_eq!(repos_with(&store, "r:5000", &d, "b"), ["a"]);
        for i in 0..20 {
            remember(&store, "r:5000", &format!("n{i}"), std::slice::from_ref(&d)).unwrap();
        }
        assert_eq!(repos_with(&store, "r:5000", &d, "").len(), MAX_REPOS);
        // A corrupt file is an empty hint, and is replaced on the next write.
        std::fs::write(dir.path().join(FILE), b"{not json").unwrap();
        assert!(repos_with(&store, "r:5000", &d, "").is_empty());
        remember(&store, "r:5000", "a", std::slice::from_ref(&d)).unwrap();
        assert_eq!(repos_with(&store, "r:5000", &d, ""), ["a"]);
    }
}
