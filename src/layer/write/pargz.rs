//! gzip compression across cores: the stream is cut into fixed 1 MiB
//! chunks, each compressed on its own thread as one gzip member, and the
//! members are written in order (a multi-member gzip file, as pigz
//! writes; Go's gzip reader, so docker, containerd and umoci, and our own
//! `MultiGzDecoder` read them as one stream). Chunk boundaries depend only
//! on the input, so the bytes (and digests) are the same on any machine
//! whatever its core count. Written here rather than taken from a crate:
//! the pigz-style crates tie their block layout or headers to the thread
//! count or add extra fields, which would break reproducible digests.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::thread::JoinHandle;

/// Input bytes per gzip member: big enough that the lost cross-member
/// dictionary costs well under 1% of size, small enough that the members
/// in flight (cores + 1, input and output) stay a few MiB.
const CHUNK: usize = 1 << 20;

pub struct ParGzEncoder<W: Write> {
    inner: W,
    buf: Vec<u8>,
    /// Members being compressed, oldest first.
    pending: VecDeque<JoinHandle<io::Result<Vec<u8>>>>,
    max_pending: usize,
    /// Whether any member was started (an empty stream still gets one).
    started: bool,
}

impl<W: Write> ParGzEncoder<W> {
    pub fn new(inner: W) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        ParGzEncoder {
            inner,
            buf: Vec::with_capacity(CHUNK),
            pending: VecDeque::new(),
            // One more than the cores so a core never waits for the writer.
            max_pending: cores + 1,
            started: false,
        }
    }

    fn spawn_chunk(&mut self) -> io::Result<()> {
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.started = true;
        self.pending
            .push_back(std::thread::spawn(move || member(&data)));
        while self.pending.len() > self.max_pending {
            self.write_oldest()?;
        }
        Ok(())
    }

    fn write_oldest(&mut self) -> io::Result<()> {
        if let Some(h) = self.pending.pop_front() {
            let bytes = h
                .join()
                .map_err(|_| io::Error::other("a gzip worker thread panicked"))??;
            self.inner.write_all(&bytes)?;
        }
        Ok(())
    }

    /// Compresses what is left, writes every member, returns the sink.
    pub fn finish(mut self) -> io::Result<W> {
        if !self.buf.is_empty() || !self.started {
            self.spawn_chunk()?;
        }
        while !self.pending.is_empty() {
            self.write_oldest()?;
        }
        Ok(self.inner)
    }
}

/// One gzip member: level 6, no name, mtime 0 (content-only bytes).
fn member(data: &[u8]) -> io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(data.len() / 2 + 64);
    let mut gz = flate2::GzBuilder::new().write(&mut out, flate2::Compression::default());
    gz.write_all(data)?;
    gz.finish()?;
    Ok(out)
}

impl<W: Write> Write for ParGzEncoder<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.spawn_chunk()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        // Members are only complete at chunk boundaries; nothing to push early.
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn roundtrip(len: usize) {
        let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        let mut enc = ParGzEncoder::new(Vec::new());
        for piece in data.chunks(100_003) {
            enc.write_all(piece).unwrap();
        }
        let gz = enc.finish().unwrap();
        let mut back = Vec::new();
        flate2::read::MultiGzDecoder::new(&gz[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data, "len {len}");
        // The same input always gives the same bytes.
        let mut again = ParGzEncoder::new(Vec::new());
        again.write_all(&data).unwrap();
        assert_eq!(again.finish().unwrap(), gz);
    }

    #[test]
    fn multi_member_streams_round_trip_and_are_deterministic() {
        for len in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 12345] {
            roundtrip(len);
        }
    }
}
