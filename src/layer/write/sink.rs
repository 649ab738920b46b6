//! The output chain of a layer write: tar bytes → sha256 (diff_id) →
//! compressor → the store's blob writer (which hashes the blob digest).

use std::io::{self, Write};

use sha2::{Digest as _, Sha256};

use crate::image::Compression;
use crate::store::Digest;

/// Hashes and counts what passes through.
pub(super) struct HashWriter<W> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> HashWriter<W> {
    pub(super) fn new(inner: W) -> Self {
        HashWriter {
            inner,
            hasher: Sha256::new(),
        }
    }

    pub(super) fn finish(mut self) -> io::Result<(W, Digest)> {
        self.inner.flush()?;
        Ok((self.inner, Digest::from_hasher(self.hasher)))
    }
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A compressing writer. gzip: level 6 (flate2's default, what docker and
/// BuildKit use), 1 MiB members compressed in parallel (see `pargz`),
/// headers without name or mtime so the bytes depend on the content only. zstd: level 3 (the library default), single-threaded, so
/// the output is deterministic.
pub(super) enum Compressor<W: Write> {
    Plain(W),
    Gzip(super::pargz::ParGzEncoder<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> Compressor<W> {
    pub(super) fn new(inner: W, c: Compression) -> io::Result<Self> {
        Ok(match c {
            Compression::None => Compressor::Plain(inner),
            Compression::Gzip => Compressor::Gzip(super::pargz::ParGzEncoder::new(inner)),
            Compression::Zstd => Compressor::Zstd(zstd::stream::write::Encoder::new(inner, 3)?),
        })
    }

    /// Writes the compressed stream's trailer and returns the sink.
    pub(super) fn finish(self) -> io::Result<W> {
        match self {
            Compressor::Plain(w) => Ok(w),
            Compressor::Gzip(g) => g.finish(),
            Compressor::Zstd(z) => z.finish(),
        }
    }
}

impl<W: Write> Write for Compressor<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Compressor::Plain(w) => w.write(buf),
            Compressor::Gzip(w) => w.write(buf),
            Compressor::Zstd(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        // Flushing a compressor would emit a sync block and change the
        // bytes; the chain is flushed once, by `finish`.
        Ok(())
    }
}
