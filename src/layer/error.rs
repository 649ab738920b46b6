//! Errors of layer unpacking. Every message names the layer (its digest, or
//! the file it came from) and, where there is one, the tar entry.

use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// The entry would write, link or delete outside the unpack root, or is
    /// otherwise malformed in a way that could be used to: nothing of it was
    /// written.
    #[error("layer {layer}: entry {entry:?}: refused: {reason}")]
    Unsafe {
        layer: String,
        entry: String,
        reason: String,
    },

    /// An I/O failure while applying one entry; `what` names the operation.
    #[error("layer {layer}: entry {entry:?}: {what}")]
    Entry {
        layer: String,
        entry: String,
        what: String,
        #[source]
        source: io::Error,
    },

    /// The layer stream could not be read (truncated, bad compression, bad
    /// tar, or the blob failed its digest check).
    #[error("layer {layer}: {what}")]
    Read {
        layer: String,
        what: String,
        #[source]
        source: io::Error,
    },

    /// The decompressed stream does not hash to the expected diff_id.
    #[error("layer {layer}: diff_id mismatch: expected {expected}, got {got}")]
    DiffIdMismatch {
        layer: String,
        expected: String,
        got: String,
    },

    /// The unpack root could not be opened.
    #[error("layer {layer}: open unpack root {root}")]
    Root {
        layer: String,
        root: PathBuf,
        #[source]
        source: io::Error,
    },

    /// Writing a layer failed (see [`WriteFailure`]).
    #[error(transparent)]
    Write(#[from] WriteFailure),

    /// The ownership/metadata sidecar could not be read or written.
    #[error("metadata file {path}: {what}")]
    Metadata {
        path: PathBuf,
        what: String,
        #[source]
        source: io::Error,
    },
}

/// Errors of layer writing (kept apart from the unpack variants above by
/// their names).
#[derive(Debug, thiserror::Error)]
pub enum WriteFailure {
    /// A path of the change list could not be read from the source tree.
    #[error("write layer: {path:?}: {what}")]
    Source {
        path: String,
        what: String,
        #[source]
        source: io::Error,
    },
    /// The change list breaks its contract (a listed path is missing, a
    /// parent is a symlink, a path is not relative and normal).
    #[error("write layer: {path:?}: refused: {reason}")]
    Refused { path: String, reason: String },
    /// Writing the tar or the compressed stream failed.
    #[error("write layer: {what}")]
    Output {
        what: String,
        #[source]
        source: io::Error,
    },
    /// The blob could not be stored.
    #[error("write layer: store the blob")]
    Store(#[source] crate::store::StoreError),
}
