//! Change lists → OCI layers.
//!
//! [`write_tar`] turns a [`ChangeList`] into an uncompressed layer tar and
//! returns its sha256 (the diff_id); [`write_layer`] does the same in one
//! streaming pass into the store: tar bytes → sha256 (diff_id) →
//! compressor → blob writer (sha256 = blob digest). Nothing is held in
//! memory but the sorted list of names and a few MiB of buffers (the
//! copy buffer, the diff_id hashing thread's batches, gzip chunks in
//! flight).
//!
//! # The tar
//! - Entries, in bytewise order of their names, each name once:
//!   - every listed `Upsert`/`OpaqueDir` path as found in `source`;
//!   - every ancestor directory of a listed path that the list does not
//!     name, when `source` has it as a directory (what containerd's and
//!     BuildKit's differs write too: an extractor then never invents a
//!     parent's mode or owner). Ancestors absent from `source` are skipped;
//!   - `DIR/.wh.NAME` for a `Delete` of `DIR/NAME`: an empty regular file,
//!     mode 0, owner 0:0, mtime `SOURCE_DATE_EPOCH` or 0;
//!   - `DIR/.wh..wh..opq` (same attributes) for an `OpaqueDir`, placed
//!     before every child of DIR (extractors that apply entries in order
//!     must clear the directory before this layer's children arrive).
//! - Headers: ustar, with a PAX header (`././@PaxHeader`) only when needed:
//!   names or link targets longer than 100 bytes or not ASCII (`path`,
//!   `linkpath`), ids above 0o7777777, sizes from 8 GiB, xattrs
//!   (`SCHILY.xattr.NAME`, sorted). uname/gname are empty, only numeric ids
//!   count. Directories end in `/`. mtime is whole seconds, clamped to
//!   `min(mtime, SOURCE_DATE_EPOCH)` when set (BuildKit's rule), negative
//!   ones to 0; atime/ctime are never written, so the bytes depend only on
//!   the tree and the options.
//! - Kinds: files, directories, symlinks, fifos, char and block devices,
//!   hardlinks: among the emitted regular files, those sharing (device,
//!   inode) with a link count above 1 become one file (the first name in
//!   order) and `Link` entries naming it; so a RUN's `ln lowerfile new`
//!   stays a hardlink (overlay copies the lower file up, both names then
//!   share the upper inode, and the snapshotter lists both). Sockets are
//!   skipped (tar cannot carry them), with a warning.
//! - Modes: the permission bits incl. setuid/setgid/sticky.
//! - Xattrs: see `ownership::keep_xattr` (overlay and fuse-overlayfs
//!   bookkeeping, `security.selinux` and `system.*` dropped);
//!   `security.capability` in the namespaced form (revision 3, written
//!   by root of a user namespace) is written in revision 2, rootid dropped.
//!
//! # Ownership (never squashed silently)
//! For each emitted path, the on-disk owner is read back through
//! [`WriteOptions::ids`] (host id → container id). Then, if a lower layer's
//! sidecar ([`WriteOptions::recorded`], top-most first, first record wins)
//! has a record for the same path and the same kind:
//! - owner: the record's uid/gid replace the on-disk ones when those map to
//!   container 0:0 (what an unprivileged unpack leaves on every path, and
//!   what a copy-up keeps), or when the on-disk ids have no container id;
//!   the record's xattrs that are not on disk are added. A step that
//!   really changed the owner (possible with subordinate ids) keeps it; a
//!   step that explicitly chowned a recorded path to 0:0 is
//!   indistinguishable from one that did not touch it (limit).
//! - mode: the record's mode replaces the on-disk one when they differ only
//!   by setuid/setgid bits that are missing on disk (bits the kernel strips
//!   by itself); any other difference is the step's chmod and is kept.
//!
//! On-disk ids that map to nothing and have no record (only possible with a
//! single-id map, for files of foreign owners) are written as 65534
//! (`nobody`, what the kernel shows) and counted in a warning. Devices that
//! unpacking could only record (never created on disk) never reach a
//! layer: a step cannot change what it cannot see, and a `Delete` of one is
//! an ordinary whiteout.

mod listing;
mod ownership;
mod pargz;
mod sink;
mod tar;

use std::collections::{BTreeSet, HashMap};
use std::ffi::OsStr;
use std::io::{self, BufWriter, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;

use rustix::fs::FileType;

pub use self::listing::{Listed, ListedKind};
use self::tar::{Entry, EntryKind};
use super::error::WriteFailure;
use super::idmap::IdMapping;
use super::{Kind, LayerError, Metadata};
use crate::image::Compression;
use crate::snapshot::changes::{ChangeKind, ChangeList};
use crate::store::{Digest, Store};
use crate::sys::{fs as sfs, tree};

/// How to write a layer.
#[derive(Clone, Debug)]
pub struct WriteOptions {
    /// Blob compression (`write_layer` only); gzip by default.
    pub compression: Compression,
    /// Clamp every mtime to this (seconds since the epoch).
    pub source_date_epoch: Option<i64>,
    /// Host → container ids of the tree's owners.
    pub ids: IdMapping,
    /// The lower layers' unpack sidecars, top-most first.
    pub recorded: Vec<Metadata>,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions {
            compression: Compression::Gzip,
            source_date_epoch: None,
            ids: IdMapping::identity(),
            recorded: Vec::new(),
        }
    }
}

/// A layer in the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WrittenLayer {
    /// Digest of the (compressed) blob.
    pub digest: Digest,
    /// sha256 of the uncompressed tar.
    pub diff_id: Digest,
    /// Blob size in bytes.
    pub size: u64,
    /// The OCI layer media type for the compression.
    pub media_type: String,
    /// The entries as written when every one is 0:0 with no xattrs and no
    /// device (a plain layer): the tree it was written from can only equal
    /// what extraction would make if so (see `store::adopt`); otherwise
    /// `None`.
    pub listing: Option<Arc<[Listed]>>,
}

impl WrittenLayer {
    /// See [`WrittenLayer::listing`].
    pub fn is_plain(&self) -> bool {
        self.listing.is_some()
    }
}

/// OCI media type of a layer blob with compression `c`.
pub fn layer_media_type(c: Compression) -> &'static str {
    use crate::image::media_types as mt;
    match c {
        Compression::None => mt::OCI_LAYER_TAR,
        Compression::Gzip => mt::OCI_LAYER_TAR_GZIP,
        Compression::Zstd => mt::OCI_LAYER_TAR_ZSTD,
    }
}

/// Output buffer between the tar encoder and the hashing/compression chain.
const BUF_SIZE: usize = 256 * 1024;

fn output_err(what: &str) -> impl FnOnce(io::Error) -> LayerError + '_ {
    move |source| {
        WriteFailure::Output {
            what: what.to_string(),
            source,
        }
        .into()
    }
}

/// Writes the layer tar of `changes` to `out` (uncompressed; `compression`
/// is ignored) and returns its sha256 (the diff_id).
pub fn write_tar(
    out: impl Write,
    changes: &ChangeList,
    opts: &WriteOptions,
) -> Result<Digest, LayerError> {
    let mut hashed = sink::HashWriter::new(out);
    {
        let mut buf = BufWriter::with_capacity(BUF_SIZE, &mut hashed);
        emit(&mut buf, changes, opts)?;
        buf.flush().map_err(output_err("flush the tar"))?;
    }
    let (_, diff_id) = hashed.finish().map_err(output_err("flush the tar"))?;
    Ok(diff_id)
}

/// Writes the layer of `changes` into `store` (compressed as
/// `opts.compression`) in one pass; atomic (see `Store::blob_writer`).
pub fn write_layer(
    store: &Store,
    changes: &ChangeList,
    opts: &WriteOptions,
) -> Result<WrittenLayer, LayerError> {
    let blob = store.blob_writer().map_err(WriteFailure::Store)?;
    let compressor =
        sink::Compressor::new(blob, opts.compression).map_err(output_err("start compressor"))?;
    let mut hashed = sink::HashWriter::new(compressor);
    let listing = {
        let mut buf = BufWriter::with_capacity(BUF_SIZE, &mut hashed);
        let listing = emit(&mut buf, changes, opts)?;
        buf.flush().map_err(output_err("flush the tar"))?;
        listing
    };
    let (compressor, diff_id) = hashed.finish().map_err(output_err("flush the tar"))?;
    let blob = compressor
        .finish()
        .map_err(output_err("finish compression"))?;
    let (digest, size) = blob.finish(None).map_err(WriteFailure::Store)?;
    tracing::debug!(%digest, %diff_id, size, "layer written");
    Ok(WrittenLayer {
        digest,
        diff_id,
        size,
        media_type: layer_media_type(opts.compression).to_string(),
        listing: listing.map(Arc::from),
    })
}

/// One thing to emit, in name order.
#[derive(Debug)]
enum Item<'a> {
    /// A path of `source`; `listed` false for an implied ancestor.
    Path {
        path: &'a str,
        listed: bool,
        opaque: bool,
    },
    Whiteout,
    Opaque {
        dir: &'a str,
    },
}

fn refused(path: &str, reason: impl Into<String>) -> LayerError {
    WriteFailure::Refused {
        path: path.to_string(),
        reason: reason.into(),
    }
    .into()
}

/// Relative, `/`-separated, no empty, `.` or `..` component.
fn check_path(path: &str) -> Result<(), LayerError> {
    if path
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(refused(path, "not a normal relative path"));
    }
    Ok(())
}

fn split(path: &str) -> (&str, &str) {
    path.rsplit_once('/').unwrap_or(("", path))
}

/// The sorted plan: `(sort key, item)`.
fn plan(changes: &ChangeList) -> Result<Vec<(Vec<u8>, Item<'_>)>, LayerError> {
    let listed: BTreeSet<&str> = changes.changes.iter().map(|c| c.path.as_str()).collect();
    let mut ancestors: BTreeSet<&str> = BTreeSet::new();
    let mut items = Vec::new();
    for c in &changes.changes {
        if c.path.is_empty() {
            // The root itself: a layer has no entry for it (extractors
            // never change the root's own attributes).
            tracing::debug!("change list names the root directory; not written");
            continue;
        }
        check_path(&c.path)?;
        let p = c.path.as_str();
        let mut at = p;
        while let Some((parent, _)) = at.rsplit_once('/') {
            if !listed.contains(parent) {
                ancestors.insert(parent);
            }
            at = parent;
        }
        match c.kind {
            ChangeKind::Upsert | ChangeKind::OpaqueDir => {
                let opaque = c.kind == ChangeKind::OpaqueDir;
                items.push((
                    p.as_bytes().to_vec(),
                    Item::Path {
                        path: p,
                        listed: true,
                        opaque,
                    },
                ));
                if opaque {
                    items.push((format!("{p}/").into_bytes(), Item::Opaque { dir: p }));
                }
            }
            ChangeKind::Delete => {
                let (dir, name) = split(p);
                let key = whiteout_name(dir, &format!(".wh.{name}"));
                items.push((key, Item::Whiteout));
            }
        }
    }
    for a in ancestors {
        items.push((
            a.as_bytes().to_vec(),
            Item::Path {
                path: a,
                listed: false,
                opaque: false,
            },
        ));
    }
    items.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(items)
}

fn whiteout_name(dir: &str, name: &str) -> Vec<u8> {
    if dir.is_empty() {
        name.as_bytes().to_vec()
    } else {
        format!("{dir}/{name}").into_bytes()
    }
}

/// State of one emission pass.
struct Emitter<'a> {
    opts: &'a WriteOptions,
    root: OwnedFd,
    /// The parent directory last opened, by relative path.
    parent: Option<(String, OwnedFd)>,
    /// (dev, ino) of multiply-linked files → the name first written.
    links: HashMap<(u64, u64), Vec<u8>>,
    unmapped: u64,
    /// The entries so far while the layer is plain (see
    /// [`WrittenLayer::listing`]); `None` from the first entry that is not.
    listing: Option<Vec<Listed>>,
    whiteout_mtime: u64,
}

fn clamp_mtime(mtime: i64, epoch: Option<i64>) -> u64 {
    let t = match epoch {
        Some(e) => mtime.min(e),
        None => mtime,
    };
    u64::try_from(t).unwrap_or(0)
}

/// Returns the listing of a plain layer (see [`WrittenLayer::listing`]).
fn emit(
    out: &mut impl Write,
    changes: &ChangeList,
    opts: &WriteOptions,
) -> Result<Option<Vec<Listed>>, LayerError> {
    let items = plan(changes)?;
    let root = sfs::open_root(&changes.source).map_err(|e| WriteFailure::Source {
        path: changes.source.display().to_string(),
        what: "open the source directory".into(),
        source: e,
    })?;
    let mut em = Emitter {
        opts,
        root,
        parent: None,
        links: HashMap::new(),
        unmapped: 0,
        listing: Some(Vec::new()),
        whiteout_mtime: opts
            .source_date_epoch
            .and_then(|e| u64::try_from(e).ok())
            .unwrap_or(0),
    };
    for (key, item) in &items {
        match item {
            Item::Path {
                path,
                listed,
                opaque,
            } => em.path(out, path, *listed, *opaque)?,
            Item::Whiteout => em.marker(out, key.clone())?,
            Item::Opaque { dir } => em.marker(out, format!("{dir}/.wh..wh..opq").into_bytes())?,
        }
    }
    tar::write_end(out).map_err(output_err("write the end of the tar"))?;
    if em.unmapped > 0 {
        tracing::warn!(
            paths = em.unmapped,
            "files owned by host ids outside the sandbox's id map (and without recorded \
             ownership) were written as 65534:65534"
        );
    }
    Ok(em.listing)
}

impl Emitter<'_> {
    fn source_err(path: &str, what: &str) -> impl FnOnce(io::Error) -> LayerError {
        let (path, what) = (path.to_string(), what.to_string());
        move |source| WriteFailure::Source { path, what, source }.into()
    }

    /// The directory holding `path`, opened without following any symlink.
    fn parent_fd(&mut self, path: &str) -> Result<Option<&OwnedFd>, LayerError> {
        let (dir, _) = split(path);
        if self.parent.as_ref().is_none_or(|(d, _)| d != dir) {
            self.parent = None;
            let fd = match sfs::open_dir_no_symlinks(self.root.as_fd(), Path::new(dir)) {
                Ok(fd) => fd,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
                Err(e) if sfs::is_escape(&e) || e.raw_os_error() == Some(libc::ENOTDIR) => {
                    return Err(refused(
                        path,
                        "a parent directory is a symlink or not a directory",
                    ))
                }
                Err(e) => return Err(Self::source_err(path, "open parent directory")(e)),
            };
            self.parent = Some((dir.to_string(), fd));
        }
        Ok(self.parent.as_ref().map(|(_, fd)| fd))
    }

    fn marker(&mut self, out: &mut impl Write, name: Vec<u8>) -> Result<(), LayerError> {
        let e = Entry {
            name,
            kind: EntryKind::File { size: 0 },
            mode: 0,
            uid: 0,
            gid: 0,
            mtime: self.whiteout_mtime,
            xattrs: Vec::new(),
        };
        tar::write_entry(out, &e).map_err(output_err("write a whiteout"))?;
        self.list(&e);
        Ok(())
    }

    /// Adds a written entry to the listing, or drops the listing when the
    /// entry makes the layer not plain.
    fn list(&mut self, e: &Entry) {
        let Some(listing) = self.listing.as_mut() else {
            return;
        };
        let text = |b: &[u8]| String::from_utf8(b.to_vec()).ok();
        let name = e.name.strip_suffix(b"/").unwrap_or(&e.name);
        let kind = match &e.kind {
            _ if (e.uid, e.gid) != (0, 0) || !e.xattrs.is_empty() => None,
            EntryKind::File { size } => Some(ListedKind::File { size: *size }),
            EntryKind::Dir => Some(ListedKind::Dir),
            EntryKind::Symlink { target } => Some(ListedKind::Symlink(target.clone())),
            EntryKind::Link { target } => text(target).map(ListedKind::Link),
            EntryKind::Fifo => Some(ListedKind::Fifo),
            EntryKind::Char { .. } | EntryKind::Block { .. } => None,
        };
        match (kind, text(name)) {
            (Some(kind), Some(path)) if listing.len() < listing::MAX_LISTED => {
                listing.push(Listed {
                    path,
                    kind,
                    mode: e.mode,
                    mtime: e.mtime,
                })
            }
            _ => self.listing = None,
        }
    }

    fn path(
        &mut self,
        out: &mut impl Write,
        path: &str,
        listed: bool,
        opaque: bool,
    ) -> Result<(), LayerError> {
        let (_, leaf) = split(path);
        let leaf = OsStr::new(leaf);
        let Some(parent) = self.parent_fd(path)? else {
            return if listed {
                Err(refused(
                    path,
                    "listed as changed but its directory is not in the source",
                ))
            } else {
                Ok(())
            };
        };
        let parent = parent
            .try_clone()
            .map_err(Self::source_err(path, "duplicate directory fd"))?;
        let st =
            match sfs::lstat_at(parent.as_fd(), leaf).map_err(Self::source_err(path, "lstat"))? {
                Some(st) => st,
                None if listed => {
                    return Err(refused(
                        path,
                        "listed as changed but absent from the source",
                    ))
                }
                None => return Ok(()),
            };
        let ft = sfs::file_type(&st);
        if !listed && ft != FileType::Directory {
            return Ok(());
        }
        if opaque && ft != FileType::Directory {
            return Err(refused(
                path,
                "listed as an opaque directory but is not a directory",
            ));
        }
        let (kind, rkind) = match ft {
            FileType::RegularFile => (
                EntryKind::File {
                    size: st.st_size as u64,
                },
                Kind::File,
            ),
            FileType::Directory => (EntryKind::Dir, Kind::Dir),
            FileType::Symlink => {
                let target = tree::readlink_at(parent.as_fd(), leaf)
                    .map_err(Self::source_err(path, "readlink"))?;
                (EntryKind::Symlink { target }, Kind::Symlink)
            }
            FileType::CharacterDevice | FileType::BlockDevice => {
                let (major, minor) = (rustix::fs::major(st.st_rdev), rustix::fs::minor(st.st_rdev));
                if ft == FileType::CharacterDevice {
                    (EntryKind::Char { major, minor }, Kind::Char)
                } else {
                    (EntryKind::Block { major, minor }, Kind::Block)
                }
            }
            FileType::Fifo => (EntryKind::Fifo, Kind::Fifo),
            _ => {
                tracing::warn!(path, "skipping a socket: tar cannot carry it");
                return Ok(());
            }
        };
        let mut name = path.as_bytes().to_vec();
        if ft == FileType::Directory {
            name.push(b'/');
        }
        // Hardlinks: the inode's first name in order carries the content.
        let mut kind = kind;
        if ft == FileType::RegularFile && st.st_nlink > 1 {
            let key = (st.st_dev, st.st_ino);
            match self.links.get(&key) {
                Some(first) => {
                    kind = EntryKind::Link {
                        target: first.clone(),
                    }
                }
                None => {
                    self.links.insert(key, name.clone());
                }
            }
        }
        let xattrs = match kind {
            EntryKind::Link { .. } => Vec::new(),
            _ => tree::xattrs_at(parent.as_fd(), leaf)
                .map_err(Self::source_err(path, "read xattrs"))?,
        };
        let owner = ownership::resolve(
            path,
            rkind,
            st.st_uid,
            st.st_gid,
            st.st_mode & 0o7777,
            xattrs,
            &self.opts.ids,
            &self.opts.recorded,
        );
        if owner.unmapped {
            self.unmapped += 1;
        }
        let mut entry = Entry {
            name,
            kind,
            mode: owner.mode,
            uid: owner.uid,
            gid: owner.gid,
            mtime: clamp_mtime(st.st_mtime, self.opts.source_date_epoch),
            xattrs: owner.xattrs,
        };
        if let EntryKind::Link { .. } = entry.kind {
            entry.xattrs.clear();
        }
        tar::write_entry(out, &entry).map_err(output_err("write a tar header"))?;
        self.list(&entry);
        if let EntryKind::File { size } = entry.kind {
            let file =
                tree::open_file_at(parent.as_fd(), leaf).map_err(Self::source_err(path, "open"))?;
            tar::write_data(out, file, size).map_err(Self::source_err(path, "read"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::changes::Change;

    fn change(path: &str, kind: ChangeKind) -> Change {
        Change {
            path: path.into(),
            kind,
        }
    }

    #[test]
    fn plan_orders_names_and_adds_ancestors() {
        let list = ChangeList {
            source: "/nonexistent".into(),
            changes: vec![
                change("a/b", ChangeKind::Upsert),
                change("a/z", ChangeKind::Delete),
                change("d", ChangeKind::OpaqueDir),
                change("d/-x", ChangeKind::Upsert),
                change("e/f/g", ChangeKind::Delete),
            ],
        };
        let keys: Vec<String> = plan(&list)
            .unwrap()
            .into_iter()
            .map(|(k, _)| String::from_utf8(k).unwrap())
            .collect();
        assert_eq!(
            keys,
            [
                "a",
                "a/.wh.z",
                "a/b",
                "d",
                "d/",
                "d/-x",
                "e",
                "e/f",
                "e/f/.wh.g"
            ]
        );
        let bad = ChangeList {
            source: "/".into(),
            changes: vec![change("a/../b", ChangeKind::Upsert)],
        };
        assert!(plan(&bad).is_err());
    }
}
