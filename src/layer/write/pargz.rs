//! gzip compression across cores: the stream is cut into fixed 1 MiB
//! chunks, each compressed on its own thread as one gzip member, and the
//! members are written in order (a multi-member gzip file, as pigz
//! writes; Go's gzip reader, so docker, containerd and umoci, and our own
//! `MultiGzDecoder` read them as one stream). Chunk boundaries depend only
//! on the input, so the bytes (and digests) are the same on any machine
//! whatever its core count. Written here rather than taken from a crate:
//! the pigz-style crates tie their block layout or headers to the thread
//! count or add extra fields, which would break reproducible digests.
//!
//! Incompressible chunks (random data, media, archives already compressed)
//! are written as stored deflate blocks instead: deflate at level 6 gains
//! nothing on them (its own output falls back to stored blocks) yet runs at
//! ~20 MB/s a core there, so a 1 GiB layer of such data cost ~40 s of CPU
//! for a blob 0.03% smaller. Which encoding a chunk gets is decided from the
//! chunk's bytes only (see [`incompressible`]), so digests stay reproducible.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::thread::JoinHandle;

use flate2::{Compress, Compression, FlushCompress, Status};

/// Input bytes per gzip member: big enough that the lost cross-member
/// dictionary costs well under 1% of size, small enough that the members
/// in flight (cores + 1, input and output) stay a few MiB.
const CHUNK: usize = 1 << 20;

/// Largest payload of one stored deflate block (its LEN field is 16 bits).
const STORED_BLOCK: usize = 0xffff;

/// Bytes of a chunk deflated at level 1 to look for repeated strings the
/// byte histogram cannot see; half a deflate window, from the middle.
const TRIAL: usize = 16 * 1024;

/// gzip member header: deflate, no flags, mtime 0, no extra flags, OS 255
/// ("unknown"), the bytes flate2 writes for level 6 too.
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

pub struct ParGzEncoder<W: Write> {
    inner: W,
    buf: Vec<u8>,
    /// Members being compressed, oldest first.
    pending: VecDeque<JoinHandle<io::Result<Done>>>,
    max_pending: usize,
    /// Chunk buffers back from the workers, reused so a big layer does not
    /// fault in fresh pages for every chunk.
    spare: Vec<Vec<u8>>,
    /// Whether any member was started (an empty stream still gets one).
    started: bool,
}

impl<W: Write> ParGzEncoder<W> {
    pub fn new(inner: W) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        // One more than the cores so a core never waits for the writer.
        Self::with_workers(inner, cores + 1)
    }

    /// At most `workers` chunks in flight (at least one); the bytes written
    /// do not depend on it.
    fn with_workers(inner: W, workers: usize) -> Self {
        ParGzEncoder {
            inner,
            buf: Vec::with_capacity(CHUNK),
            pending: VecDeque::new(),
            max_pending: workers.max(1),
            spare: Vec::new(),
            started: false,
        }
    }

    fn spawn_chunk(&mut self) -> io::Result<()> {
        let next = self
            .spare
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(CHUNK));
        let data = std::mem::replace(&mut self.buf, next);
        self.started = true;
        self.pending
            .push_back(std::thread::spawn(move || member(data)));
        while self.pending.len() > self.max_pending {
            self.write_oldest()?;
        }
        Ok(())
    }

    fn write_oldest(&mut self) -> io::Result<()> {
        if let Some(h) = self.pending.pop_front() {
            let done = h
                .join()
                .map_err(|_| io::Error::other("a gzip worker thread panicked"))??;
            self.inner.write_all(&done.member)?;
            let mut input = done.input;
            input.clear();
            self.spare.push(input);
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

/// A finished member, and the chunk buffer it came from (for reuse).
struct Done {
    member: Vec<u8>,
    input: Vec<u8>,
}

/// One gzip member of `data`: stored blocks if it is incompressible, else
/// deflate level 6. No name, mtime 0 (content-only bytes).
fn member(data: Vec<u8>) -> io::Result<Done> {
    let member = if incompressible(&data) {
        stored_member(&data)?
    } else {
        let mut out = Vec::with_capacity(data.len() / 2 + 64);
        let mut gz = flate2::GzBuilder::new().write(&mut out, Compression::default());
        gz.write_all(&data)?;
        gz.finish()?;
        out
    };
    Ok(Done {
        member,
        input: data,
    })
}

/// Whether deflate would gain (next to) nothing on `data`. Both tests read
/// only `data`, in integers or through the same zlib-rs that compresses,
/// so the answer is the same on every machine.
///
/// 1. The byte histogram is near-uniform: chi-square against the uniform
///    distribution at most n/32, i.e. `256·Σcount² − n² ≤ n²/32`. Chunks
///    of random data score ~255 (whatever their size) and gzip or xz
///    output ~10k per MiB (where level 6 gains 0.1–0.8%); the least uniform
///    stored chunk has an order-0 entropy of ~7.98 bits a byte, so Huffman
///    coding alone could save at most ~0.3% of it. Text, code, ELF and
///    tar headers score in the 100k–millions per MiB, and a chunk only
///    partly made of them does too (measured on Debian and Python image
///    layers, see the commit message).
/// 2. A histogram is blind to repeats (a file of one random block written
///    over and over, a byte ramp): a 16 KiB slice from the middle is
///    deflated at level 1, which on unique bytes expands them ~5% (fixed
///    Huffman codes), and must not come out smaller than it went in.
///    Repeats further apart than the slice are missed; such a chunk is
///    stored, which costs size, never correctness.
fn incompressible(data: &[u8]) -> bool {
    near_uniform(data) && !trial_shrinks(data)
}

fn near_uniform(data: &[u8]) -> bool {
    // Four tables break the store-to-load dependency on runs of one byte.
    let mut counts = [[0u32; 256]; 4];
    let mut quads = data.chunks_exact(4);
    for q in &mut quads {
        counts[0][usize::from(q[0])] += 1;
        counts[1][usize::from(q[1])] += 1;
        counts[2][usize::from(q[2])] += 1;
        counts[3][usize::from(q[3])] += 1;
    }
    for &b in quads.remainder() {
        counts[0][usize::from(b)] += 1;
    }
    let n = data.len() as u128;
    let sum_sq: u128 = (0..256)
        .map(|i| {
            let c = u128::from(counts[0][i] + counts[1][i] + counts[2][i] + counts[3][i]);
            c * c
        })
        .sum();
    // 256·Σc² − n² ≤ n²/32  ⇔  8192·Σc² ≤ 33·n²
    n > 0 && 8192 * sum_sq <= 33 * n * n
}

/// Whether level-1 deflate of the middle `TRIAL` bytes is smaller than they are.
fn trial_shrinks(data: &[u8]) -> bool {
    let start = data.len().saturating_sub(TRIAL) / 2;
    let slice = &data[start..data.len().min(start + TRIAL)];
    let mut z = Compress::new(Compression::fast(), false);
    // Room for strictly less than the slice: running out of it means
    // no gain.
    let mut out = Vec::with_capacity(slice.len().saturating_sub(1));
    matches!(
        z.compress_vec(slice, &mut out, FlushCompress::Finish),
        Ok(Status::StreamEnd)
    ) && out.len() < slice.len()
}

/// A gzip member of stored (uncompressed) deflate blocks holding `data`.
fn stored_member(data: &[u8]) -> io::Result<Vec<u8>> {
    let blocks = data.len().div_ceil(STORED_BLOCK).max(1);
    let mut out = Vec::with_capacity(GZIP_HEADER.len() + data.len() + 5 * blocks + 8);
    out.extend_from_slice(&GZIP_HEADER);
    let mut pieces = data.chunks(STORED_BLOCK).peekable();
    if pieces.peek().is_none() {
        // One empty final block: a member always holds a deflate stream.
        out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
    }
    while let Some(piece) = pieces.next() {
        let len = u16::try_from(piece.len()).map_err(io::Error::other)?;
        // BFINAL on the last block, BTYPE 00 (stored); the 3 header bits
        // are padded to the byte boundary, then LEN and its complement.
        out.push(u8::from(pieces.peek().is_none()));
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(piece);
    }
    let mut crc = flate2::Crc::new();
    crc.update(data);
    out.extend_from_slice(&crc.sum().to_le_bytes());
    // ISIZE is the length modulo 2^32.
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
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

    fn gunzip(gz: &[u8]) -> Vec<u8> {
        let mut back = Vec::new();
        flate2::read::MultiGzDecoder::new(gz)
            .read_to_end(&mut back)
            .unwrap();
        back
    }

    fn encode(data: &[u8], workers: usize) -> Vec<u8> {
        let mut enc = ParGzEncoder::with_workers(Vec::new(), workers);
        for piece in data.chunks(100_003) {
            enc.write_all(piece).unwrap();
        }
        enc.finish().unwrap()
    }

    /// Reproducible pseudo-random bytes (xorshift64*), as incompressible as
    /// /dev/urandom for deflate.
    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            out.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
        }
        out.truncate(len);
        out
    }

    /// Text-like bytes: compressible, as a tar of a distribution is.
    fn text(len: usize) -> Vec<u8> {
        let words = [
            "usr",
            "lib",
            "python3",
            "site-packages",
            "/",
            ".so",
            "\n",
            "Copyright",
        ];
        let mut out = Vec::with_capacity(len + 16);
        let mut i = 0usize;
        while out.len() < len {
            out.extend_from_slice(words[(i * 7 + i / 3) % words.len()].as_bytes());
            out.extend_from_slice(format!(" {i} ").as_bytes());
            i += 1;
        }
        out.truncate(len);
        out
    }

    fn roundtrip(data: &[u8]) -> Vec<u8> {
        let gz = encode(data, 3);
        assert_eq!(gunzip(&gz), data, "len {}", data.len());
        // The same input always gives the same bytes, whatever the number
        // of chunks in flight.
        for workers in [1, 2, 8] {
            assert_eq!(encode(data, workers), gz, "workers {workers}");
        }
        gz
    }

    #[test]
    fn multi_member_streams_round_trip_and_are_deterministic() {
        for len in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 12345] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            roundtrip(&data);
        }
    }

    #[test]
    fn incompressible_chunks_are_stored_and_others_deflated() {
        // Chunks: noise, text, noise, then a short noise tail.
        let mut data = noise(CHUNK, 1);
        data.extend(text(CHUNK));
        data.extend(noise(CHUNK, 2));
        data.extend(noise(70_000, 3));
        let gz = roundtrip(&data);

        assert!(incompressible(&noise(CHUNK, 4)));
        assert!(!incompressible(&text(CHUNK)));
        // A uniform histogram with repeats: one noise block over and over,
        // and a byte ramp; both deflate to almost nothing.
        assert!(!incompressible(&noise(4096, 5).repeat(CHUNK / 4096)));
        let ramp: Vec<u8> = (0..CHUNK).map(|i| i as u8).collect();
        assert!(near_uniform(&ramp) && !incompressible(&ramp));
        // Half noise, half text: deflate still gains a lot.
        let mut half = noise(CHUNK / 2, 6);
        half.extend(text(CHUNK / 2));
        assert!(!incompressible(&half));

        // The noise chunks are one stored member each: header, 17 stored
        // blocks (5 bytes each), the chunk itself, crc and size.
        let stored = stored_member(&data[..CHUNK]).unwrap();
        assert_eq!(stored.len(), 10 + CHUNK + 5 * 17 + 8);
        assert_eq!(&gz[..stored.len()], &stored[..]);
        assert_eq!(gunzip(&stored), &data[..CHUNK]);
        // The text chunk is deflated: the whole stream is well under the
        // three and a bit chunks of noise plus the text.
        assert!(
            gz.len() < 2 * CHUNK + 70_000 + 300 + CHUNK / 4,
            "{}",
            gz.len()
        );
        // The tail is stored too (70_000 bytes: two blocks).
        let tail = stored_member(&data[3 * CHUNK..]).unwrap();
        assert_eq!(&gz[gz.len() - tail.len()..], &tail[..]);
    }

    #[test]
    fn stored_members_decode_at_block_edges() {
        for len in [
            0,
            1,
            STORED_BLOCK - 1,
            STORED_BLOCK,
            STORED_BLOCK + 1,
            2 * STORED_BLOCK,
        ] {
            let data = noise(len, len as u64);
            assert_eq!(gunzip(&stored_member(&data).unwrap()), data, "len {len}");
        }
    }
}
