//! What ADD does beyond COPY: local tar archives extracted, URLs fetched.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};

use sha2::{Digest as _, Sha256};

use super::run::Copier;
use super::stage::{Meta, Stage};
use super::tree::{clean_rel, join};
use super::CopyError;

/// Whether an ADD source is fetched rather than read from the context.
pub(super) fn is_remote(src: &str) -> bool {
    src.starts_with("http://") || src.starts_with("https://") || src.starts_with("git@")
}

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

/// Reads a body while hashing it.
struct Hashing<R> {
    inner: R,
    hash: Sha256,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}

/// `Last-Modified` (RFC 7231 IMF-fixdate) as seconds since the epoch.
pub(super) fn http_date(s: &str) -> Option<i64> {
    let fmt = time::format_description::parse_borrowed::<1>(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT",
    )
    .ok()?;
    time::PrimitiveDateTime::parse(s.trim(), &fmt)
        .ok()
        .map(|t| t.assume_utc().unix_timestamp())
}

/// The file name a download gets inside a directory destination.
fn file_name(url: &reqwest::Url, disposition: Option<&str>) -> Option<String> {
    if let Some(d) = disposition {
        for part in d.split(';') {
            if let Some(v) = part.trim().strip_prefix("filename=") {
                let v = v.trim_matches('"');
                let base = v.rsplit('/').next().unwrap_or(v);
                if !base.is_empty() && base != "." && base != ".." {
                    return Some(base.to_string());
                }
            }
        }
    }
    url.path_segments()
        .and_then(|mut s| s.next_back())
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

impl Copier<'_> {
    /// ADD of a URL: mode 0600 (unless `--chmod`), mtime `Last-Modified`.
    pub(super) fn fetch(&self, stage: &mut Stage, src: &str) -> Result<(), CopyError> {
        let err = |reason: String| CopyError::Fetch {
            url: src.to_string(),
            reason,
        };
        if src.starts_with("git@") || src.ends_with(".git") {
            return Err(err("git sources are not supported".into()));
        }
        let expected = match self.spec.add.as_ref().and_then(|a| a.checksum.as_deref()) {
            None => None,
            Some(c) => {
                let hex = c.strip_prefix("sha256:").unwrap_or("");
                if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(err(format!(
                        "--checksum={c}: expected sha256:<64 hex digits>"
                    )));
                }
                Some(format!("sha256:{}", hex.to_ascii_lowercase()))
            }
        };
        let url = reqwest::Url::parse(src).map_err(|e| err(e.to_string()))?;
        let resp = reqwest::blocking::Client::new()
            .get(url.clone())
            .send()
            .map_err(|e| err(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(err(format!("HTTP status {}", resp.status())));
        }
        let header = |name: reqwest::header::HeaderName| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let mtime = header(reqwest::header::LAST_MODIFIED)
            .and_then(|d| http_date(&d))
            .map_or(stage.now(), |s| (s, 0));
        let name = file_name(
            &url,
            header(reqwest::header::CONTENT_DISPOSITION).as_deref(),
        )
        .unwrap_or_else(|| "index.html".to_string());
        let to = self.file_dest(
            stage,
            &name,
            "",
            self.spec.sources.len() + self.spec.inline.len() > 1,
        )?;
        let (uid, gid) = self.owner.unwrap_or((0, 0));
        let mode = self.chmod.as_ref().map_or(0o600, |c| c.apply(0o600, false));
        let mut body = Hashing {
            inner: resp,
            hash: Sha256::new(),
        };
        stage.put_file(
            &to,
            Meta {
                uid,
                gid,
                mode,
                mtime,
            },
            &mut body,
            None,
        )?;
        let actual = format!("sha256:{:x}", body.hash.finalize());
        if let Some(expected) = expected {
            if actual != expected {
                return Err(CopyError::Checksum {
                    url: src.to_string(),
                    expected,
                    actual,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_http_dates() {
        assert_eq!(http_date("Sat, 04 Mar 2017 05:06:07 GMT"), Some(1488603967));
        assert_eq!(http_date("yesterday"), None);
    }
}
