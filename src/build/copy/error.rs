//! Why a COPY or ADD failed. Every message names the source or destination
//! path it is about; the engine adds the Dockerfile location.

use std::io;

use crate::context::ContextError;
use crate::layer::LayerError;

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// A source path or pattern that selects nothing.
    #[error("{path:?}: not found")]
    NotFound { path: String },
    /// A source that climbs out of its tree, or is otherwise unusable.
    #[error("source {path:?}: {reason}")]
    BadSource { path: String, reason: String },
    /// The destination cannot take what is copied.
    #[error("destination {path:?}: {reason}")]
    BadDest { path: String, reason: String },
    #[error("--chown={spec}: {reason}")]
    Chown { spec: String, reason: String },
    #[error("--chmod={spec}: {reason}")]
    Chmod { spec: String, reason: String },
    #[error("invalid --exclude pattern {pattern:?}: {reason}")]
    Exclude { pattern: String, reason: String },
    /// Reading a source failed.
    #[error("{op} {path}: {err}")]
    Read {
        op: &'static str,
        path: String,
        err: io::Error,
    },
    /// Writing the staging tree failed.
    #[error("stage {path}: {op}: {err}")]
    Stage {
        op: &'static str,
        path: String,
        err: io::Error,
    },
    #[error(transparent)]
    Context(#[from] ContextError),
    /// An archive that ADD recognised could not be extracted.
    #[error("extract {path}: {reason}")]
    Archive { path: String, reason: String },
    /// Fetching a URL failed.
    #[error("fetch {url}: {reason}")]
    Fetch { url: String, reason: String },
    #[error("{url}: checksum mismatch: expected {expected}, got {actual}")]
    Checksum {
        url: String,
        expected: String,
        actual: String,
    },
    /// Something this build cannot do (yet), named with its path.
    #[error("{path}: {reason}")]
    Unsupported { path: String, reason: String },
    #[error("write the layer: {0}")]
    Layer(#[from] LayerError),
}

impl CopyError {
    pub(super) fn read(
        op: &'static str,
        path: impl Into<String>,
    ) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |err| CopyError::Read { op, path, err }
    }

    pub(super) fn stage(
        op: &'static str,
        path: impl Into<String>,
    ) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |err| CopyError::Stage { op, path, err }
    }
}
