//! The output chain of a layer write: tar bytes → sha256 (diff_id) →
//! compressor → the store's blob writer (which hashes the blob digest).

use std::io::{self, Write};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::thread::JoinHandle;

use sha2::{Digest as _, Sha256};

use crate::image::Compression;
use crate::store::Digest;

/// Bytes handed to the hashing thread at a time.
const HASH_BATCH: usize = 1 << 20;

/// Hashes and passes on what it is given. The sha256 runs on a thread of
/// its own: after the compressor went parallel it was the costliest
/// per-byte work left on the writing thread (~0.6 s a GiB with SHA-NI),
/// which also reads the files and hashes the blob. Batches are copies
/// (a memcpy is ~20x cheaper than the hash); at most four are alive.
pub(super) struct HashWriter<W> {
    inner: W,
    /// Bytes not yet handed to the hashing thread.
    batch: Vec<u8>,
    to_hasher: SyncSender<Vec<u8>>,
    /// Emptied batches back from the hashing thread, for reuse.
    spare: Receiver<Vec<u8>>,
    hasher: JoinHandle<Sha256>,
}

impl<W: Write> HashWriter<W> {
    pub(super) fn new(inner: W) -> Self {
        let (to_hasher, batches) = mpsc::sync_channel::<Vec<u8>>(2);
        let (give_back, spare) = mpsc::channel();
        let hasher = std::thread::spawn(move || {
            let mut hasher = Sha256::new();
            for mut batch in batches {
                hasher.update(&batch);
                batch.clear();
                // The writer may be gone already (finished or failed).
                let _ = give_back.send(batch);
            }
            hasher
        });
        HashWriter {
            inner,
            batch: Vec::with_capacity(HASH_BATCH),
            to_hasher,
            spare,
            hasher,
        }
    }

    fn send_batch(&mut self) -> io::Result<()> {
        let next = self
            .spare
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(HASH_BATCH));
        let full = std::mem::replace(&mut self.batch, next);
        self.to_hasher
            .send(full)
            .map_err(|_| io::Error::other("the sha256 thread stopped"))
    }

    pub(super) fn finish(mut self) -> io::Result<(W, Digest)> {
        self.inner.flush()?;
        if !self.batch.is_empty() {
            self.send_batch()?;
        }
        let HashWriter {
            inner,
            to_hasher,
            hasher,
            ..
        } = self;
        // Closing the channel ends the thread's loop.
        drop(to_hasher);
        let hasher = hasher
            .join()
            .map_err(|_| io::Error::other("the sha256 thread panicked"))?;
        Ok((inner, Digest::from_hasher(hasher)))
    }
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.batch.extend_from_slice(&buf[..n]);
        if self.batch.len() >= HASH_BATCH {
            self.send_batch()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A compressing writer. gzip: level 6 (flate2's default, what docker and
/// BuildKit use), 1 MiB members compressed in parallel, incompressible
/// ones stored (see `pargz`), headers without name or mtime so the bytes
/// depend on the content only. zstd: level 3 (the library default),
/// single-threaded, so the output is deterministic.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_writer_passes_every_byte_on_and_hashes_them_in_order() {
        for len in [0, 1, HASH_BATCH - 1, HASH_BATCH, 3 * HASH_BATCH + 7] {
            let data: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
            let mut w = HashWriter::new(Vec::new());
            for piece in data.chunks(77_777) {
                w.write_all(piece).unwrap();
            }
            let (out, digest) = w.finish().unwrap();
            assert_eq!(out, data, "len {len}");
            let mut h = Sha256::new();
            h.update(&data);
            assert_eq!(digest, Digest::from_hasher(h), "len {len}");
        }
    }
}
