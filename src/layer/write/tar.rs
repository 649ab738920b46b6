//! The tar encoding of one entry: a ustar header (`tar::Header` does the
//! field encoding and checksum), preceded by a PAX extended header when a
//! value does not fit ustar (long or non-ASCII names, big ids or sizes,
//! xattrs). Hand-assembled rather than `tar::Builder` because the builder
//! writes GNU long-name entries instead of PAX and cannot check that a file
//! still has the size its header promised.

use std::io::{self, Read, Write};

/// Largest value of an 8-byte octal field (uid, gid).
const MAX_OCTAL_8: u64 = 0o7777777;
/// Largest value of a 12-byte octal field (size, mtime).
const MAX_OCTAL_12: u64 = 0o77777777777;
const BLOCK: usize = 512;

/// What an entry is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum EntryKind {
    File { size: u64 },
    Dir,
    Symlink { target: Vec<u8> },
    Link { target: Vec<u8> },
    Char { major: u32, minor: u32 },
    Block { major: u32, minor: u32 },
    Fifo,
}

/// One tar entry's header data (the content, for files, is streamed).
#[derive(Clone, Debug)]
pub(super) struct Entry {
    /// Name as written (directories end in `/`).
    pub(super) name: Vec<u8>,
    pub(super) kind: EntryKind,
    pub(super) mode: u32,
    pub(super) uid: u64,
    pub(super) gid: u64,
    pub(super) mtime: u64,
    /// `(name, value)`, sorted by name.
    pub(super) xattrs: Vec<(String, Vec<u8>)>,
}

fn fits_ustar_name(b: &[u8]) -> bool {
    b.len() <= 100 && b.is_ascii()
}

/// One PAX record: `"<len> <key>=<value>\n"`, `len` counting itself.
fn pax_record(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    let body = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = body + 1;
    while len != body + len.to_string().len() {
        len = body + len.to_string().len();
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key.as_bytes());
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

fn io_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

fn pad(out: &mut impl Write, len: u64) -> io::Result<()> {
    let rem = (len % BLOCK as u64) as usize;
    if rem != 0 {
        out.write_all(&[0u8; BLOCK][..BLOCK - rem])?;
    }
    Ok(())
}

fn write_header(
    out: &mut impl Write,
    name: &[u8],
    typeflag: u8,
    e: &Entry,
    size: u64,
) -> io::Result<()> {
    let mut h = tar::Header::new_ustar();
    let ustar = h
        .as_ustar_mut()
        .ok_or_else(|| io_err("not a ustar header"))?;
    let n = name.len().min(100);
    ustar.name[..n].copy_from_slice(&name[..n]);
    h.set_mode(e.mode);
    h.set_uid(e.uid.min(MAX_OCTAL_8));
    h.set_gid(e.gid.min(MAX_OCTAL_8));
    h.set_size(size.min(MAX_OCTAL_12));
    h.set_mtime(e.mtime.min(MAX_OCTAL_12));
    h.set_entry_type(tar::EntryType::new(typeflag));
    let (major, minor) = match e.kind {
        EntryKind::Char { major, minor } | EntryKind::Block { major, minor } => (major, minor),
        _ => (0, 0),
    };
    h.set_device_major(major)?;
    h.set_device_minor(minor)?;
    if let EntryKind::Symlink { target } | EntryKind::Link { target } = &e.kind {
        let ustar = h
            .as_ustar_mut()
            .ok_or_else(|| io_err("not a ustar header"))?;
        let n = target.len().min(100);
        ustar.linkname[..n].copy_from_slice(&target[..n]);
    }
    h.set_cksum();
    out.write_all(h.as_bytes())
}

/// Writes the entry's header(s); for a file, the caller then calls
/// [`write_data`].
pub(super) fn write_entry(out: &mut impl Write, e: &Entry) -> io::Result<()> {
    let mut pax = Vec::new();
    if !fits_ustar_name(&e.name) {
        pax_record(&mut pax, "path", &e.name);
    }
    if let EntryKind::Symlink { target } | EntryKind::Link { target } = &e.kind {
        if !fits_ustar_name(target) {
            pax_record(&mut pax, "linkpath", target);
        }
    }
    let size = match e.kind {
        EntryKind::File { size } => size,
        _ => 0,
    };
    if size > MAX_OCTAL_12 {
        pax_record(&mut pax, "size", size.to_string().as_bytes());
    }
    if e.uid > MAX_OCTAL_8 {
        pax_record(&mut pax, "uid", e.uid.to_string().as_bytes());
    }
    if e.gid > MAX_OCTAL_8 {
        pax_record(&mut pax, "gid", e.gid.to_string().as_bytes());
    }
    if e.mtime > MAX_OCTAL_12 {
        pax_record(&mut pax, "mtime", e.mtime.to_string().as_bytes());
    }
    for (k, v) in &e.xattrs {
        pax_record(&mut pax, &format!("SCHILY.xattr.{k}"), v);
    }
    if !pax.is_empty() {
        let ext = Entry {
            name: Vec::new(),
            kind: EntryKind::File {
                size: pax.len() as u64,
            },
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 0,
            xattrs: Vec::new(),
        };
        write_header(out, b"././@PaxHeader", b'x', &ext, pax.len() as u64)?;
        out.write_all(&pax)?;
        pad(out, pax.len() as u64)?;
    }
    let typeflag = match e.kind {
        EntryKind::File { .. } => b'0',
        EntryKind::Link { .. } => b'1',
        EntryKind::Symlink { .. } => b'2',
        EntryKind::Char { .. } => b'3',
        EntryKind::Block { .. } => b'4',
        EntryKind::Dir => b'5',
        EntryKind::Fifo => b'6',
    };
    write_header(out, &e.name, typeflag, e, size)
}

/// Copies exactly `size` bytes of `data` and pads the block; a source that
/// ends early (the file shrank since its `lstat`) is an error, never a
/// corrupt archive.
pub(super) fn write_data(out: &mut impl Write, data: impl Read, size: u64) -> io::Result<()> {
    let copied = io::copy(&mut data.take(size), out)?;
    if copied != size {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("file shrank while being read: {copied} of {size} bytes"),
        ));
    }
    pad(out, size)
}

/// The end-of-archive marker: two zero blocks.
pub(super) fn write_end(out: &mut impl Write) -> io::Result<()> {
    out.write_all(&[0u8; 2 * BLOCK])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_lengths_count_themselves() {
        for n in [0usize, 1, 5, 90, 95, 100, 995, 1000] {
            let mut out = Vec::new();
            pax_record(&mut out, "path", &vec![b'a'; n]);
            let s = String::from_utf8(out.clone()).unwrap();
            let (len, _) = s.split_once(' ').unwrap();
            assert_eq!(len.parse::<usize>().unwrap(), out.len(), "{n}");
        }
    }
}
