//! The entries of a plain layer as they were written, handed to
//! `store::adopt`, which brings the step's upper dir in line with them.
//! Reading the blob back for the same facts cost a full decompression (1.7 s
//! for a 1 GiB layer) right after the writer had them in hand.

/// One tar entry of a plain layer (owner 0:0, no xattrs, no device).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    /// Relative name without a trailing `/`; whiteouts and opaque markers
    /// keep their `.wh.` names, as in the tar.
    pub path: String,
    pub kind: ListedKind,
    /// Permission bits as written.
    pub mode: u32,
    /// Whole seconds, as written (clamped to `SOURCE_DATE_EPOCH`).
    pub mtime: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListedKind {
    File {
        size: u64,
    },
    Dir,
    Symlink(Vec<u8>),
    /// Another name of the file named here, written earlier.
    Link(String),
    Fifo,
}

/// Past this many entries the listing is dropped (the layer is then not
/// adopted, only extracted): it is held in memory until the step ends.
pub(super) const MAX_LISTED: usize = 1_000_000;
