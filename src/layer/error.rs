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

    /// The ownership/metadata sidecar could not be read or written.
    #[error("metadata file {path}: {what}")]
    Metadata {
        path: PathBuf,
        what: String,
        #[source]
        source: io::Error,
    },
}
