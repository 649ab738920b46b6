//! What a step changed, as the layer writer consumes it.
//!
//! Contract between the snapshotters (which produce a `ChangeList` from an
//! overlay upper dir or a before/after walk) and `layer::write` (which turns
//! one into a tar). Paths are container paths relative to the root, `/`
//! separated, without a leading `/` and without `.`/`..` components.

use std::path::PathBuf;

/// One changed path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Relative container path, e.g. `etc/passwd`.
    pub path: String,
    pub kind: ChangeKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// Added or modified: the layer carries the object found at
    /// `ChangeList::source/path` (file, directory, symlink, device, fifo), with
    /// its metadata. A directory listed here does not imply its children.
    Upsert,
    /// Like `Upsert` for a directory, and the directory hides everything the
    /// lower layers had in it (`.wh..wh..opq`).
    OpaqueDir,
    /// Removed: the layer carries a whiteout (`.wh.NAME`) for it.
    Delete,
}

/// Every change of one step, sorted by `path` (bytewise), each path once.
/// A parent directory that is only traversed (not itself changed) is not
/// listed; the writer emits it only if a listed path needs it and it is in
/// `source`.
#[derive(Debug, Clone, Default)]
pub struct ChangeList {
    /// Directory holding the new content of every `Upsert`/`OpaqueDir` path
    /// (the overlay upper dir, or the walked working tree).
    pub source: PathBuf,
    pub changes: Vec<Change>,
}
