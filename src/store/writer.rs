//! Streaming blob writes: for producers that push bytes (a layer writer's
//! compressor) rather than offer a `Read` to [`Store::put_reader`].

use std::io::{self, BufWriter, Write};
use std::os::fd::AsFd;

use sha2::{Digest as _, Sha256};

use super::fsutil::TempFile;
use super::{Digest, Store, StoreError};

/// Large enough to amortise syscalls; the only buffer a blob write holds.
const BUF_SIZE: usize = 256 * 1024;

/// Writeback is started after every this many bytes: a 1 GiB layer's final
/// fsync otherwise waited about 1 s for writes the disk could have done
/// while the layer was being hashed and compressed.
const WRITEBACK_EVERY: u64 = 16 * 1024 * 1024;

/// A blob being written: bytes go to a temp file in `<root>/tmp` and into a
/// sha256 as they arrive. Nothing is visible in the store until
/// [`BlobWriter::finish`]; dropping the writer (on any error path) deletes
/// the temp file.
pub struct BlobWriter {
    store: Store,
    // `Option` so that `finish` can take the buffered file out while the
    // writer still owns the temp file's cleanup.
    out: Option<BufWriter<TempFile>>,
    hasher: Sha256,
    size: u64,
    /// Where the last early writeback started.
    written_back: u64,
}

impl Store {
    /// Starts a streamed blob write. Same guarantees as `put_reader`:
    /// temp file → fsync → rename → fsync of the directory, idempotent.
    pub fn blob_writer(&self) -> Result<BlobWriter, StoreError> {
        let tmp = self.temp_file("blob")?;
        Ok(BlobWriter {
            store: self.clone(),
            out: Some(BufWriter::with_capacity(BUF_SIZE, tmp)),
            hasher: Sha256::new(),
            size: 0,
            written_back: 0,
        })
    }
}

impl Write for TempFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl BlobWriter {
    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Makes the blob durable under its digest and returns `(digest, size)`.
    /// With `expected` set and different, nothing is stored and
    /// `DigestMismatch` is returned.
    pub fn finish(mut self, expected: Option<&Digest>) -> Result<(Digest, u64), StoreError> {
        let store = self.store.clone();
        let out = self.out.take().ok_or_else(|| {
            store.io(
                "finish blob".to_string(),
                io::Error::other("blob writer already finished"),
            )
        })?;
        let tmp = out
            .into_inner()
            .map_err(|e| store.io("write blob: flush".to_string(), e.into_error()))?;
        let digest = Digest::from_hasher(std::mem::take(&mut self.hasher));
        store.commit_blob(tmp, digest, self.size, expected)
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let out = self
            .out
            .as_mut()
            .ok_or_else(|| io::Error::other("blob writer already finished"))?;
        let n = out.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        if self.size - self.written_back >= WRITEBACK_EVERY {
            // Only a hint: a filesystem that refuses it still gets the fsync.
            // From one buffer back: bytes buffered at the last call reached
            // the file after it.
            let from = self.written_back.saturating_sub(BUF_SIZE as u64);
            let _ = crate::sys::writeback::start(out.get_ref().file.as_fd(), from);
            self.written_back = self.size;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.out.as_mut() {
            Some(out) => out.flush(),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn streams_into_the_store_and_matches_put_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        let mut w = store.blob_writer().unwrap();
        for chunk in data.chunks(7919) {
            w.write_all(chunk).unwrap();
        }
        let (d, n) = w.finish(None).unwrap();
        assert_eq!(n, data.len() as u64);
        assert_eq!(d, Digest::of_bytes(&data));
        assert_eq!(store.read_blob(&d).unwrap(), data);
        // Idempotent, and a wrong expectation stores nothing.
        let mut w = store.blob_writer().unwrap();
        w.write_all(&data).unwrap();
        assert_eq!(w.finish(Some(&d)).unwrap(), (d.clone(), n));
        let mut w = store.blob_writer().unwrap();
        w.write_all(b"other").unwrap();
        assert!(w.finish(Some(&d)).is_err());
        let mut w = store.blob_writer().unwrap();
        w.write_all(b"dropped").unwrap();
        drop(w);
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0
        );
        assert!(!store.has(&Digest::of_bytes(b"other")));
    }
}
