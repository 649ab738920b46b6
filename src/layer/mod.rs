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
//!   with `userxattr`) or `trusted` (real root), see [`OverlayXattrs`]. A
//!   hardlink must point inside the same layer (tar writers never do
//!   otherwise). Parent symlinks from lower layers are not visible here; the
//!   merged view is resolved by the kernel inside the mount, so they cannot
//!   lead out of it.
//!
//! What could not be applied (owner ids as non-root, stripped mode bits,
//! xattrs, devices) is kept in a [`Metadata`] sidecar; see `metadata.rs`
//! for the file format.

mod apply;
mod compression;
mod entry_path;
mod error;
mod hash;
mod metadata;
mod unpack;

pub use compression::Compression;
pub use error::LayerError;
pub use metadata::{sidecar_path, Kind, Metadata, Record};
pub use unpack::{unpack, Mode, OverlayXattrs, UnpackOptions, UnpackReport, WhiteoutFormat};
