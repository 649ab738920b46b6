//! Errors of `snapshot`.

use std::io;
use std::path::PathBuf;

use super::SnapshotterKind;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The requested snapshotter does not work here.
    #[error("snapshotter {kind} does not work here: {why}")]
    Unavailable { kind: SnapshotterKind, why: String },
    #[error("snapshot: {action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("snapshot: {path}: file name is not UTF-8 (change lists carry UTF-8 paths)")]
    NotUtf8 { path: PathBuf },
}

/// `map_err` helper: an I/O error while doing `action` on `path`.
pub(crate) fn io_err(
    action: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(io::Error) -> SnapshotError {
    let path = path.into();
    move |source| SnapshotError::Io {
        action,
        path,
        source,
    }
}
