//! ADD's local archives: tar, plain or gzip/bzip2/xz/zstd compressed,
//! recognised by content (not by name) and extracted into the destination.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};

use super::run::Copier;
use super::stage::{Meta, Stage};
use super::tree::{clean_rel, join};
use super::CopyError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Packing {
    Plain,
    Gzip,
    Bzip2,
    Xz,
    Zstd,
}

/// A local file ADD recognised as a tar archive.
pub(super) struct Archive {
    file: File,
    packing: Packing,
}

fn packing_of(magic: &[u8]) -> Packing {
    if magic.starts_with(&[0x1f, 0x8b]) {
        Packing::Gzip
    } else if magic.starts_with(b"BZh") {
        Packing::Bzip2
    } else if magic.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Packing::Xz
    } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Packing::Zstd
    } else {
        Packing::Plain
    }
}

fn decoder(mut file: File, packing: Packing, rel: &str) -> Result<Box<dyn Read>, CopyError> {
    file.seek(SeekFrom::Start(0))
        .map_err(CopyError::read("seek", rel))?;
    Ok(match packing {
        Packing::Plain => Box::new(file),
        Packing::Gzip => Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(file))),
        Packing::Bzip2 => Box::new(bzip2::read::MultiBzDecoder::new(BufReader::new(file))),
        Packing::Zstd => Box::new(
            zstd::stream::read::Decoder::new(file)
                .map_err(CopyError::read("start zstd on", rel))?,
        ),
        Packing::Xz => {
            // lzma-rs decodes into a writer: spool to an unnamed temp file.
            let mut out = tempfile::tempfile().map_err(CopyError::read("spool", rel))?;
            lzma_rs::xz_decompress(&mut BufReader::new(file), &mut out).map_err(|e| {
                CopyError::Archive {
                    path: rel.to_string(),
                    reason: format!("xz: {e}"),
                }
            })?;
            out.seek(SeekFrom::Start(0))
                .map_err(CopyError::read("seek", rel))?;
            Box::new(out)
        }
    })
}

/// Whether a ustar/GNU/v7 header's checksum holds (what makes a file a tar
/// for BuildKit: its first header reads).
fn is_tar_header(block: &[u8; 512]) -> bool {
    if block.iter().all(|b| *b == 0) {
        return false;
    }
    let field = &block[148..156];
    let text: String = field
        .iter()
        .take_while(|b| **b != 0 && **b != b' ')
        .map(|b| char::from(*b))
        .collect();
    let text = text.trim();
    let Ok(want) = u32::from_str_radix(text, 8) else {
        return false;
    };
    let sum: u32 = block
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u32::from(*b)
            }
        })
        .sum();
    sum == want
}

/// `Some` when `file` is a (possibly compressed) tar archive. A compressed
/// file that is not a tar (`x.gz`) is copied as it is, as BuildKit does.
pub(super) fn detect(mut file: File, rel: &str) -> Result<Option<Archive>, CopyError> {
    let mut magic = [0u8; 6];
    let n = read_full(&mut file, &mut magic).map_err(CopyError::read("read", rel))?;
    let packing = packing_of(&magic[..n]);
    let check = file.try_clone().map_err(CopyError::read("reopen", rel))?;
    let mut block = [0u8; 512];
    let is_tar = match decoder(check, packing, rel) {
        Ok(mut r) => read_full(&mut r, &mut block).is_ok_and(|n| n == 512) && is_tar_header(&block),
        Err(CopyError::Archive { .. }) => false,
        Err(e) => return Err(e),
    };
    Ok(is_tar.then_some(Archive { file, packing }))
}

fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Extracts `archive` into the destination directory with the archive's
/// owners, modes and mtimes (`--chown` and `--chmod` do not apply).
pub(super) fn extract(
    copier: &Copier,
    stage: &mut Stage,
    archive: Archive,
    rel: &str,
) -> Result<(), CopyError> {
    let bad = |reason: String| CopyError::Archive {
        path: rel.to_string(),
        reason,
    };
    let reader = decoder(archive.file, archive.packing, rel)?;
    let mut tar = tar::Archive::new(reader);
    let entries = tar.entries().map_err(|e| bad(e.to_string()))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| bad(e.to_string()))?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let inside = clean_rel(&name);
        if inside.is_empty() {
            continue;
        }
        let to = join(&copier.dest.rel, &inside);
        let h = entry.header();
        let num = |r: io::Result<u64>| r.map_err(|e| bad(format!("{name}: {e}")));
        // BuildKit keeps the archive's owners even with --chown (which only
        // owns the directories the copy creates).
        let (uid, gid) = (num(h.uid())?, num(h.gid())?);
        let meta = Meta {
            uid,
            gid,
            mode: num(h.mode().map(u64::from))? as u32 & 0o7777,
            mtime: (i64::try_from(num(h.mtime())?).unwrap_or(0), 0),
        };
        let kind = h.entry_type();
        let link = entry
            .link_name_bytes()
            .map(|l| String::from_utf8_lossy(&l).into_owned());
        match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                stage.put_file(&to, meta, &mut entry, None)?;
            }
            tar::EntryType::Directory => stage.put_dir(&to, meta)?,
            tar::EntryType::Symlink => {
                let target = link.ok_or_else(|| bad(format!("{name}: symlink without target")))?;
                stage.put_symlink(&to, meta, &target)?;
            }
            tar::EntryType::Link => {
                let target = link.ok_or_else(|| bad(format!("{name}: hardlink without target")))?;
                stage.put_hardlink(&to, &join(&copier.dest.rel, &clean_rel(&target)))?;
            }
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader => {}
            other => {
                tracing::warn!(archive = rel, entry = %name, kind = ?other, "ADD skips a device or fifo");
            }
        }
    }
    Ok(())
}
