//! Blob storage: streaming, hash-verified writes and reads.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::PathBuf;

use sha2::{Digest as _, Sha256};

use super::fsutil::TempFile;
use super::{Digest, Store, StoreError};

/// Copy buffer size: large enough to amortise syscalls, small enough that a
/// multi-gigabyte layer never sits in memory.
const BUF_SIZE: usize = 64 * 1024;

impl Store {
    /// Streams `r` into the store and returns its digest and size.
    ///
    /// The content is hashed while it is copied to a temp file in `<root>/tmp`
    /// (never held in memory). If `expected` is given and differs, the temp
    /// file is removed and `DigestMismatch` returned: nothing is stored.
    /// Otherwise the file is fsynced, renamed into `blobs/sha256/`, and the
    /// directory fsynced, so once this returns the blob survives a crash.
    /// Idempotent: storing existing content is a no-op that returns the same
    /// digest. Takes no lock: content addressing makes concurrent puts of the
    /// same blob harmless (rename is atomic and the bytes are identical).
    pub fn put_reader(
        &self,
        mut r: impl Read,
        expected: Option<&Digest>,
    ) -> Result<(Digest, u64), StoreError> {
        let mut tmp = self.temp_file("blob")?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; BUF_SIZE];
        let mut size: u64 = 0;
        let write_what = || match expected {
            Some(d) => format!("write blob {d}"),
            None => "write blob".to_string(),
        };
        loop {
            let n = match r.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.io(format!("{}: read source", write_what()), e)),
            };
            hasher.update(&buf[..n]);
            tmp.file.write_all(&buf[..n]).map_err(|e| {
                self.io(
                    format!("{}: write {}", write_what(), tmp.path().display()),
                    e,
                )
            })?;
            size += n as u64;
        }
        self.commit_blob(tmp, Digest::from_hasher(hasher), size, expected)
    }

    /// The end of every blob write: refuses a digest other than `expected`
    /// (the temp file is dropped, so nothing is stored), else fsyncs the temp
    /// file and renames it into place (or, when the blob exists, only
    /// refreshes its age so a concurrent `prune` spares it until the caller
    /// names it), then fsyncs the directory.
    pub(super) fn commit_blob(
        &self,
        tmp: TempFile,
        digest: Digest,
        size: u64,
        expected: Option<&Digest>,
    ) -> Result<(Digest, u64), StoreError> {
        if let Some(want) = expected {
            if *want != digest {
                return Err(StoreError::DigestMismatch {
                    root: self.root.clone(),
                    what: format!("write blob {want}"),
                    got: digest,
                });
            }
        }
        let dest = self.blob_path(&digest);
        if dest.exists() {
            self.touch_blob(&digest)?;
            return Ok((digest, size));
        }
        let what = || format!("write blob {digest}");
        tmp.file.sync_all().map_err(|e| self.io(what(), e))?;
        tmp.persist(&dest).map_err(|e| self.io(what(), e))?;
        self.sync_dir(&self.blobs_dir())?;
        Ok((digest, size))
    }

    /// Whether the blob file exists (content is not verified; see `check`).
    pub fn has(&self, d: &Digest) -> bool {
        self.blob_path(d).is_file()
    }

    /// Where the blob lives, whether or not it exists. Callers that read the
    /// file directly bypass verification; prefer [`Store::open_blob`].
    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.blobs_dir().join(d.hex())
    }

    /// Opens a blob for streaming. The reader hashes as it goes and, at EOF,
    /// returns an `InvalidData` error wrapping `StoreError::DigestMismatch`
    /// if the bytes on disk do not match `d`. Consumers must therefore read to
    /// EOF before trusting the content.
    pub fn open_blob(&self, d: &Digest) -> Result<VerifiedReader, StoreError> {
        let path = self.blob_path(d);
        let file = File::open(&path).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                StoreError::BlobNotFound {
                    root: self.root.clone(),
                    digest: d.clone(),
                }
            } else {
                self.io(format!("open blob {}", path.display()), e)
            }
        })?;
        Ok(VerifiedReader {
            file,
            hasher: Sha256::new(),
            expected: d.clone(),
            root: self.root.clone(),
            verified: false,
        })
    }

    /// Converts a read error from a `VerifiedReader` back into the
    /// `StoreError` it carries, or wraps a plain I/O error.
    pub(crate) fn read_error(&self, d: &Digest, e: io::Error) -> StoreError {
        if e.get_ref().is_some_and(|i| i.is::<StoreError>()) {
            if let Some(Ok(inner)) = e.into_inner().map(|i| i.downcast::<StoreError>()) {
                return *inner;
            }
            return self.io(
                format!("read blob {d}"),
                io::Error::other("verification failed"),
            );
        }
        self.io(format!("read blob {d}"), e)
    }
}

/// A blob reader that verifies the digest when it reaches EOF.
pub struct VerifiedReader {
    file: File,
    hasher: Sha256,
    expected: Digest,
    root: PathBuf,
    verified: bool,
}

impl Read for VerifiedReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read(buf)?;
        if n > 0 {
            self.hasher.update(&buf[..n]);
            return Ok(n);
        }
        if buf.is_empty() || self.verified {
            return Ok(0);
        }
        let got = Digest::from_hasher(std::mem::take(&mut self.hasher));
        if got != self.expected {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                StoreError::DigestMismatch {
                    root: self.root.clone(),
                    what: format!("read blob {}", self.expected),
                    got,
                },
            ));
        }
        self.verified = true;
        Ok(0)
    }
}
