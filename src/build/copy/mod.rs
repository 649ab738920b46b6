//! COPY and ADD as layers, with BuildKit's semantics, rootless.
//!
//! A copy is staged in a private directory of the store holding exactly the
//! layer's paths (see `stage.rs`), then written by `layer::write_layer`
//! with every path's intended owner and mode as a `layer::Metadata` record.
//!
//! Semantics (checked against BuildKit where noted in `tests/build_copy.rs`):
//! - Sources are cleaned and resolved inside their tree (`..` stops at the
//!   root); symlinks on the way and a symlink named as the source itself are
//!   followed inside the tree, symlinks met inside a copied directory are
//!   copied as symlinks. A pattern with `*`, `?` or `[` matches per path
//!   segment (Go's `filepath.Match`); matching nothing is an error.
//! - A directory source copies its contents into the destination (which is
//!   created if missing, or kept as the target has it); a file goes to
//!   `dest/NAME` when `dest` ends in `/` (or is `.`), names a directory of
//!   the target, or several sources or matches are copied, else to `dest`.
//!   Several sources need a destination ending in `/`.
//! - A relative destination is relative to WORKDIR; symlinks of the target
//!   on the destination path are followed inside the image root.
//! - Owners: `--chown` (names from the target's `/etc/passwd` and
//!   `/etc/group`), else 0:0 from the context, else the source image's.
//!   `--chmod` (octal or symbolic) applies to copied files and directories.
//!   Mtimes of copied entries are the sources'.
//! - `--exclude` patterns are matched against paths relative to each copied
//!   source (and the names of wildcard matches); `--parents` keeps each
//!   source's path (from the context root, or after a `/./` pivot).
//! - ADD: local tar archives (plain, gzip, bzip2, xz, zstd) are extracted
//!   into the destination directory with the archive's owners, modes and
//!   mtimes (`--chown`/`--chmod` apply only to the directories the copy
//!   creates, as in BuildKit); `--unpack=false` copies them as
//!   files. URLs are fetched (mode 0600, mtime from `Last-Modified`,
//!   `--checksum` verified) and never extracted.
//! - Heredoc sources become files (mode 0644, the copy's time) named as
//!   written.
//! - `--link`: the layer is made as over an empty image (BuildKit's
//!   semantics): destination symlinks and directories of the target are
//!   not looked at and every parent is created; `--chown` names still come
//!   from the target's files.

mod archive;
mod chmod;
mod chown;
mod context_tree;
mod digest;
mod error;
mod fetch;
mod image_tree;
mod run;
mod stage;
mod tree;

use std::path::{Path, PathBuf};

pub use digest::source_digest;
pub use error::CopyError;

use crate::frontend::instructions::InlineFile;
use crate::layer::{self, WrittenLayer};
use crate::store::{Digest, Store};

/// ADD-only options.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AddOptions {
    /// `--checksum=sha256:<hex>` for URL sources.
    pub checksum: Option<String>,
    /// `--unpack`: `None` extracts local archives (BuildKit's default).
    pub unpack: Option<bool>,
    pub keep_git_dir: bool,
}

/// One COPY or ADD, as the engine builds it from a plan step.
#[derive(Clone, Debug, Default)]
pub struct CopySpec {
    /// Expanded source paths or patterns (context-relative, or paths inside
    /// the source tree for `--from`; URLs for ADD).
    pub sources: Vec<String>,
    /// Heredoc sources, already expanded.
    pub inline: Vec<InlineFile>,
    /// Expanded destination as written.
    pub dest: String,
    /// Current WORKDIR (absolute, `/` by default).
    pub workdir: String,
    pub chown: Option<String>,
    pub chmod: Option<String>,
    pub exclude: Vec<String>,
    pub parents: bool,
    pub link: bool,
    /// `Some` for ADD.
    pub add: Option<AddOptions>,
    pub source_date_epoch: Option<i64>,
}

/// Where the sources are read from.
pub enum CopyFrom<'a> {
    /// The build context directory with its ignore patterns.
    Context { dir: &'a Path, ignore: &'a [String] },
    /// Another stage's or an external image's tree: overlay lower dirs
    /// (top-most first) with their ownership sidecars (same order), and the
    /// chain id of that image (for the cache).
    Image {
        lowers: Vec<PathBuf>,
        recorded: Vec<layer::Metadata>,
        chain_id: Digest,
    },
}

/// The image being built, top-most lower first (empty for scratch).
#[derive(Clone, Debug, Default)]
pub struct Target {
    pub lowers: Vec<PathBuf>,
    pub recorded: Vec<layer::Metadata>,
}

/// The uid and gid that `user` (a USER value) names in the image whose
/// lower dirs are `lowers` (top-most first): numbers as given, names from
/// its `/etc/passwd` and `/etc/group`, by `--chown`'s rules (BuildKit
/// resolves the owner of the directories WORKDIR makes the same way).
pub fn user_ids(lowers: &[PathBuf], user: &str) -> Result<(u64, u64), CopyError> {
    let tree = image_tree::ImageTree::new(lowers, &[]);
    chown::resolve(
        user,
        image_tree::read_small(&tree, "etc/passwd")?.as_deref(),
        image_tree::read_small(&tree, "etc/group")?.as_deref(),
    )
}

/// Writes the layer of one COPY or ADD (gzip) into the store.
pub fn copy_layer(
    store: &Store,
    spec: &CopySpec,
    from: &CopyFrom,
    target: &Target,
) -> Result<WrittenLayer, CopyError> {
    let _span = tracing::info_span!("copy", dest = %spec.dest, add = spec.add.is_some()).entered();
    run::copy_layer(store, spec, from, target)
}
