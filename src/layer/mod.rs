//! Layers: safe unpacking of OCI layer tars (this part), later tar writing.
//!
//! [`unpack`] applies one layer stream to a directory in one of two
//! [`Mode`]s:
//! - `Flatten`: whiteouts delete from the tree (`.wh.NAME` removes NAME,
//!   `.wh..wh..opq` removes the directory's earlier content but keeps what
//!   this same layer put there), so applying layers in order gives a plain
//!   root filesystem.
//! - `OverlayLower`: each layer goes into its own directory, to be stacked as
//!   overlayfs lower dirs. Contract for the mounter: `.wh.NAME` becomes a
//!   character device 0/0 named NAME (what overlayfs writes itself; allowed
//!   for unprivileged users since Linux 5.8), or, only if the kernel refuses
//!   that mknod, a zero-size file with `<ns>.overlay.whiteout` in a directory
//!   marked `<ns>.overlay.opaque=x` (Linux ≥ 6.7); `.wh..wh..opq` becomes
//!   `<ns>.overlay.opaque=y` on the directory, where `<ns>` is `user` (mount
//!   with `userxattr`) or `trusted` (real root), see [`OverlayXattrs`].
//!   Given the lower dirs (`UnpackOptions::lowers`), a layer is read against
//!   their merged view as overlayfs shows it: writing through a symlink of a
//!   lower layer is refused (as in `Flatten`), a parent directory the layer
//!   does not list takes the lower directory's mode, owner and times (the
//!   upper copy is what the merged view shows), and a hardlink may name a
//!   lower file (linked, same inode). A directory that replaces a whiteout
//!   or is whited out in its own layer is marked opaque. Tar-supplied
//!   `*.overlay.*` xattrs are dropped in both modes.
//!
//! What could not be applied (owner ids as non-root, stripped mode bits,
//! xattrs, devices) is kept in a [`Metadata`] sidecar; see `metadata.rs`
//! for the file format.

mod apply;
mod capability;
mod compression;
mod entry_path;
mod error;
mod hash;
pub(crate) use hash::HashingReader;
mod idmap;
mod metadata;
mod unpack;
mod write;

pub use compression::Compression;
pub(crate) use compression::Decoder;
pub use error::{LayerError, WriteFailure};
pub use idmap::{IdExtent, IdMapping, OVERFLOW_ID};
pub use metadata::{sidecar_path, Kind, Metadata, Record};
pub use unpack::{unpack, Mode, OverlayXattrs, UnpackOptions, UnpackReport, WhiteoutFormat};
pub use write::{
    layer_media_type, write_layer, write_tar, Listed, ListedKind, WriteOptions, WrittenLayer,
};

/// Whether a tar entry only carries metadata for the next one (PAX and GNU
/// long-name headers, which the `tar` crate has already applied to it).
pub(crate) fn is_header_only(kind: tar::EntryType) -> bool {
    use tar::EntryType as E;
    matches!(
        kind,
        E::XGlobalHeader | E::XHeader | E::GNULongName | E::GNULongLink
    )
}
