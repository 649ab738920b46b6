//! Layer compression, recognised by magic bytes (media types lie: Docker
//! registries serve gzip under `tar` types and vice versa).

use std::io::{self, BufRead, BufReader, Read};

pub use crate::image::Compression;

/// A decompressing reader that can hand back its source afterwards, so the
/// caller can read the compressed stream to its end (which is where a
/// `store::VerifiedReader` checks the blob digest).
pub enum Decoder<R: Read> {
    Plain(BufReader<R>),
    // Boxed: zlib-rs's inflate state is large, the other variants small.
    Gzip(Box<flate2::bufread::MultiGzDecoder<BufReader<R>>>),
    Zstd(zstd::stream::read::Decoder<'static, BufReader<R>>),
}

impl<R: Read> Decoder<R> {
    /// Peeks at the first bytes of `r` and wraps it in the right decoder.
    pub fn new(r: R) -> io::Result<(Decoder<R>, Compression)> {
        let mut buf = BufReader::with_capacity(64 * 1024, r);
        // fill_buf may return fewer bytes than a magic on a tiny or slow
        // source; four bytes is all detection needs, and a blob shorter than
        // that is not a valid layer in any of the formats anyway.
        let kind = Compression::detect(buf.fill_buf()?);
        let dec = match kind {
            Compression::None => Decoder::Plain(buf),
            Compression::Gzip => Decoder::Gzip(Box::new(flate2::bufread::MultiGzDecoder::new(buf))),
            Compression::Zstd => Decoder::Zstd(zstd::stream::read::Decoder::with_buffer(buf)?),
        };
        Ok((dec, kind))
    }

    /// Reads the raw source to EOF (past any trailing bytes the decoder did
    /// not need), so a verifying source gets to check its digest.
    pub fn finish(self) -> io::Result<()> {
        let mut raw = match self {
            Decoder::Plain(b) => b,
            Decoder::Gzip(d) => d.into_inner(),
            Decoder::Zstd(d) => d.finish(),
        };
        io::copy(&mut raw, &mut io::sink())?;
        Ok(())
    }
}

impl<R: Read> Read for Decoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Decoder::Plain(r) => r.read(buf),
            Decoder::Gzip(r) => r.read(buf),
            Decoder::Zstd(r) => r.read(buf),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_by_magic() {
        assert_eq!(Compression::detect(&[0x1f, 0x8b, 8]), Compression::Gzip);
        assert_eq!(
            Compression::detect(&[0x28, 0xb5, 0x2f, 0xfd, 0]),
            Compression::Zstd
        );
        assert_eq!(Compression::detect(b"etc/passwd\0"), Compression::None);
        assert_eq!(Compression::detect(b""), Compression::None);
    }
}
