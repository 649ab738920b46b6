//! Streaming helpers: hashing readers and decompression, so
//! every layer is processed in one pass and never held whole in memory.

use std::io::{self, BufRead, BufReader, Read};

use sha2::{Digest as _, Sha256};

use crate::image::Compression;
use crate::store::Digest;

/// A reader that hashes and counts what passes through it.
pub(crate) struct HashReader<R> {
    inner: R,
    sha: Sha256,
    size: u64,
}

impl<R: Read> HashReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        HashReader {
            inner,
            sha: Sha256::new(),
            size: 0,
        }
    }

    /// The digest and byte count of everything read so far.
    pub(crate) fn finish(self) -> (Digest, u64) {
        (digest_from(self.sha), self.size)
    }
}

impl<R: Read> Read for HashReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.sha.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
}

fn digest_from(sha: Sha256) -> Digest {
    let hex: String = sha.finalize().iter().map(|b| format!("{b:02x}")).collect();
    // 64 lowercase hex digits always parse; the fallback is unreachable.
    Digest::parse(&format!("sha256:{hex}")).unwrap_or_else(|_| Digest::of_bytes(b""))
}

/// Wraps `r` in the decompressor its first bytes call for.
pub(crate) fn decompressed<'a>(r: impl Read + 'a) -> io::Result<Box<dyn Read + 'a>> {
    let mut r = BufReader::with_capacity(64 * 1024, r);
    let kind = Compression::detect(r.fill_buf()?);
    decompress_as(r, kind)
}

/// Wraps `r` in the decompressor for `kind`.
pub(crate) fn decompress_as<'a>(
    r: impl Read + 'a,
    kind: Compression,
) -> io::Result<Box<dyn Read + 'a>> {
    Ok(match kind {
        Compression::None => Box::new(r),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(r)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(r)?),
    })
}
