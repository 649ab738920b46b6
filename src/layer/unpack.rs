//! `unpack`: one layer stream onto a directory. See the module docs for the
//! contract; the per-entry work is in `apply.rs`.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::apply::Unpacker;
use super::compression::{Compression, Decoder};
use super::hash::HashingReader;
use super::{LayerError, Metadata};
use crate::store::Digest;

/// Which xattr namespace carries overlayfs markers in [`Mode::OverlayLower`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OverlayXattrs {
    /// `user.overlay.*`: read by an overlay mounted with `userxattr` in a
    /// user namespace (Linux ≥ 5.11). What unprivileged kiln uses.
    User,
    /// `trusted.overlay.*`: read by an overlay mounted by real root.
    Trusted,
}

impl OverlayXattrs {
    /// `Trusted` for real root (uid 0 in the initial user namespace),
    /// `User` otherwise, including root inside a user namespace, where
    /// `trusted.*` xattrs cannot be set and overlay needs `userxattr`.
    pub fn for_current_user() -> OverlayXattrs {
        if crate::sys::fs::effective_ids().0 == 0 && in_initial_user_namespace() {
            OverlayXattrs::Trusted
        } else {
            OverlayXattrs::User
        }
    }

    pub(crate) fn prefix(self) -> &'static str {
        match self {
            OverlayXattrs::User => "user.overlay.",
            OverlayXattrs::Trusted => "trusted.overlay.",
        }
    }
}

/// Whether this process's uid map is the identity over all ids, which only
/// the initial user namespace has.
fn in_initial_user_namespace() -> bool {
    std::fs::read_to_string("/proc/self/uid_map").is_ok_and(|m| {
        let fields: Vec<&str> = m.split_whitespace().collect();
        fields == ["0", "0", "4294967295"]
    })
}

/// How whiteouts are applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Apply the layer onto the tree of the layers before it: whiteouts delete.
    /// The result is a plain root filesystem.
    Flatten,
    /// Unpack one layer into its own (normally empty) directory, to serve as
    /// an overlayfs lower dir: whiteouts become overlay whiteouts.
    OverlayLower(OverlayXattrs),
}

/// What to unpack and how.
#[derive(Clone, Debug)]
pub struct UnpackOptions {
    /// Names the layer in errors: its digest, or the file it came from.
    pub layer: String,
    pub mode: Mode,
    /// When set, the decompressed stream must hash to it, else
    /// [`LayerError::DiffIdMismatch`] (after the tree was written: callers
    /// unpack into a temp dir and discard it on error, as the store does).
    pub expected_diff_id: Option<Digest>,
    /// `OverlayLower` only: the directories of the earlier layers, topmost
    /// first, as they will be stacked. Used to refuse writes through their
    /// symlinks, to give implicit parents their attributes, and to resolve
    /// hardlinks to their files. Ignored by `Flatten`.
    pub lowers: Vec<PathBuf>,
}

impl UnpackOptions {
    /// Options with no expected diff_id and no lower dirs.
    pub fn new(layer: impl Into<String>, mode: Mode) -> UnpackOptions {
        UnpackOptions {
            layer: layer.into(),
            mode,
            expected_diff_id: None,
            lowers: Vec::new(),
        }
    }
}

/// What [`unpack`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnpackReport {
    /// sha256 of the decompressed tar stream.
    pub diff_id: Digest,
    pub compression: Compression,
    /// Tar entries applied (whiteouts included, PAX/long-name headers not).
    pub entries: u64,
    /// How whiteouts were written in `OverlayLower` mode (`None` when there
    /// were none or in `Flatten` mode).
    pub whiteouts: Option<WhiteoutFormat>,
}

/// The on-disk form chosen for an overlay whiteout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WhiteoutFormat {
    /// A character device 0/0: what overlayfs itself writes; any user may
    /// create one since Linux 5.8.
    CharDevice,
    /// A zero-size file with `<ns>.overlay.whiteout`, its directory marked
    /// `<ns>.overlay.opaque=x` (Linux ≥ 6.7): the fallback when mknod of
    /// 0/0 is refused (some LSMs or seccomp profiles).
    Xattr,
}

/// Applies one layer (gzip, zstd or plain tar, recognised by magic bytes) to
/// the existing directory `root`.
///
/// Security: every entry is resolved under `root` by the kernel
/// (`openat2(RESOLVE_BENEATH|RESOLVE_NO_MAGICLINKS|RESOLVE_NO_XDEV)`); an entry
/// that is absolute, has a `..` component, would be reached through a symlink
/// leading out of the root (one from an earlier layer or from this one), a
/// hardlink whose target is outside the root or reached through any symlink,
/// or a whiteout of `.`/`..`, fails the whole unpack with
/// [`LayerError::Unsafe`] naming the layer and the entry; nothing outside
/// `root` is ever written. A relative symlink that stays inside the root
/// (`lib -> usr/lib`) may be a parent, as in containerd; an absolute one
/// (`lib -> /usr/lib`) may not, since on the host it names the host's path. Leaves are created and changed without following
/// symlinks. The tree may be left half-applied on error: unpack into a
/// scratch directory and discard it on failure.
///
/// Ownership: applied with `chown` when running as uid 0 (also root in a
/// user namespace); ids it cannot set, modes the kernel strips (setgid of a
/// foreign group), xattrs it cannot set and devices it may not create are
/// recorded in `meta` (see [`Metadata`]), never squashed. Layer-supplied
/// `*.overlay.*` xattrs are dropped: they would steer overlayfs.
pub fn unpack<R: Read>(
    reader: R,
    root: &Path,
    opts: &UnpackOptions,
    meta: &mut Metadata,
) -> Result<UnpackReport, LayerError> {
    let read_err = |what: &str, source| LayerError::Read {
        layer: opts.layer.clone(),
        what: what.to_string(),
        source,
    };
    let (decoder, compression) = Decoder::new(reader).map_err(|e| read_err("read header", e))?;
    let mut archive = tar::Archive::new(HashingReader::new(decoder));
    let mut unpacker = Unpacker::new(root, opts, meta)?;
    let entries = archive.entries().map_err(|e| read_err("read tar", e))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| read_err("read tar entry", e))?;
        unpacker.apply(&mut entry)?;
    }
    let stats = unpacker.finish()?;
    let (decoder, diff_id) = archive
        .into_inner()
        .finish()
        .map_err(|e| read_err("read to end of tar", e))?;
    decoder
        .finish()
        .map_err(|e| read_err("read to end of blob", e))?;
    if let Some(want) = &opts.expected_diff_id {
        if *want != diff_id {
            return Err(LayerError::DiffIdMismatch {
                layer: opts.layer.clone(),
                expected: want.to_string(),
                got: diff_id.to_string(),
            });
        }
    }
    Ok(UnpackReport {
        diff_id,
        compression,
        entries: stats.entries,
        whiteouts: stats.whiteouts,
    })
}
