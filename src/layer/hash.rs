//! sha256 of a stream as it is read: the diff_id of a decompressed layer,
//! computed while the tar reader (or an archive copy) consumes it.

use std::io::{self, Read};

use sha2::{Digest as _, Sha256};

use crate::store::Digest;

pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
        }
    }

    /// The digest of what has been read so far.
    pub fn digest(self) -> Digest {
        Digest::from_hasher(self.hasher)
    }

    /// Reads what is left (a tar reader stops at the end-of-archive blocks,
    /// but the diff_id covers every byte), then returns the inner reader and
    /// the digest.
    pub fn finish(mut self) -> io::Result<(R, Digest)> {
        io::copy(&mut self, &mut io::sink())?;
        Ok((self.inner, Digest::from_hasher(self.hasher)))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}
