//! Errors of the content store. Every message names the store root and the
//! blob, name or file involved, so a failure is actionable without a backtrace.

use std::io;
use std::path::PathBuf;

use super::Digest;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid digest {digest:?}: {reason}")]
    InvalidDigest {
        digest: String,
        reason: &'static str,
    },

    /// An I/O failure; `what` names the operation and the path.
    #[error("store {root}: {what}")]
    Io {
        root: PathBuf,
        what: String,
        #[source]
        source: io::Error,
    },

    /// Content did not hash to the digest it was supposed to have.
    #[error("store {root}: {what}: digest mismatch: got {got}")]
    DigestMismatch {
        root: PathBuf,
        what: String,
        got: Digest,
    },

    #[error("store {root}: name {name:?} points at missing blob {digest}")]
    MissingBlob {
        root: PathBuf,
        name: String,
        digest: Digest,
    },

    /// A layer cache record would point at (or points at) an absent blob.
    #[error("store {root}: cache record {key} needs missing blob {digest}")]
    CacheMissingBlob {
        root: PathBuf,
        key: Digest,
        digest: Digest,
    },

    #[error("store {root}: blob {digest} not found")]
    BlobNotFound { root: PathBuf, digest: Digest },

    /// The directory is not a layout this store can use.
    #[error("store {root}: {reason}")]
    Layout { root: PathBuf, reason: String },

    #[error("store {root}: {what}")]
    Json {
        root: PathBuf,
        what: String,
        #[source]
        source: serde_json::Error,
    },
}
