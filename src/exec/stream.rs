//! A command's stdout and stderr through kiln: one pipe (both streams, in
//! the order the command wrote them), drained by a thread so the command
//! never blocks on a full pipe, cut into lines for whoever shows them.
//!
//! Two threads: a reader that only moves bytes out of the pipe into a small
//! bounded queue, and a splitter that turns them into [`Piece`]s. The split
//! lets the splitter wait a moment for the rest of a line (commands write
//! through stdio buffers that cut lines anywhere) without ever leaving the
//! pipe undrained for long; the bounded queue means a slow consumer slows
//! the command down instead of growing kiln's memory.

use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use super::parent::Output;

/// How long the splitter waits for the end of a line before it hands out
/// what it has (a prompt, a row of progress dots).
const PARTIAL_AFTER: Duration = Duration::from_millis(100);
/// Longest line kept whole; longer ones are handed out in pieces of this.
const MAX_LINE: usize = 16 * 1024;
/// Bytes one read takes from the pipe.
const READ_SIZE: usize = 8 * 1024;
/// Reads queued between reader and splitter (with `READ_SIZE`: at most
/// 256 KiB in flight).
const QUEUE: usize = 32;

/// New output of the command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece<'a> {
    /// Text not handed out before (invalid UTF-8 replaced). When the
    /// previous piece did not end its line, this continues that line.
    pub text: &'a str,
    /// The line ends here (a `\n`, a `\r`, or the end of the output).
    pub ends_line: bool,
}

/// The pipe and its threads; give [`OutputStream::output`] to the sandbox,
/// then [`OutputStream::finish`] once the run returned.
pub struct OutputStream {
    write: Option<OwnedFd>,
    done: Receiver<()>,
    closed: Arc<AtomicBool>,
}

impl OutputStream {
    /// Starts the threads; `sink` gets every piece, in order, on the
    /// splitter thread.
    pub fn start<F>(sink: F) -> io::Result<OutputStream>
    where
        F: FnMut(Piece<'_>) + Send + 'static,
    {
        // Close-on-exec (std's pipe): only the sandbox, which gets the write
        // end on its stdout and stderr, holds it besides kiln.
        let (read, write) = io::pipe()?;
        let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(QUEUE);
        let (done_tx, done) = mpsc::channel();
        let closed = Arc::new(AtomicBool::new(false));
        thread::Builder::new()
            .name("output-reader".into())
            .spawn(move || read_all(read, tx))?;
        let stop = closed.clone();
        thread::Builder::new()
            .name("output-lines".into())
            .spawn(move || {
                split(rx, sink, &stop);
                let _ = done_tx.send(());
            })?;
        Ok(OutputStream {
            write: Some(write.into()),
            done,
            closed,
        })
    }

    /// Where the sandbox should send the command's output.
    pub fn output(&self) -> Output {
        match &self.write {
            Some(w) => Output::Fd(w.as_raw_fd()),
            None => Output::Null,
        }
    }

    /// Closes kiln's write end and waits up to `grace` for the rest of the
    /// output. A process that outlived the step (no pid namespace in a bare
    /// chroot) may keep the pipe open: then the threads are left to end on
    /// their own and nothing more reaches the sink. True when all output
    /// was handed out.
    pub fn finish(mut self, grace: Duration) -> bool {
        self.write = None;
        let drained = self.done.recv_timeout(grace).is_ok();
        self.closed.store(true, Ordering::SeqCst);
        drained
    }
}

impl Drop for OutputStream {
    fn drop(&mut self) {
        self.closed.store(true, Ordering::SeqCst);
    }
}

fn read_all(mut read: io::PipeReader, tx: SyncSender<Vec<u8>>) {
    let mut buf = vec![0u8; READ_SIZE];
    loop {
        match read.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if tx.send(buf[..n].to_vec()).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                tracing::debug!("reading the step's output: {e}");
                return;
            }
        }
    }
}

/// Cuts the byte stream into pieces: whole lines at once; a line still
/// open after [`PARTIAL_AFTER`] (or longer than [`MAX_LINE`]) as far as it
/// goes, its rest later.
fn split<F: FnMut(Piece<'_>)>(rx: Receiver<Vec<u8>>, mut sink: F, closed: &AtomicBool) {
    let mut line = LineBuf::default();
    let mut emit = |text: &str, ends_line: bool| {
        if !closed.load(Ordering::SeqCst) {
            sink(Piece { text, ends_line });
        }
    };
    loop {
        let got = if line.has_unsent() {
            rx.recv_timeout(PARTIAL_AFTER)
        } else {
            rx.recv().map_err(|_| RecvTimeoutError::Disconnected)
        };
        match got {
            Ok(bytes) => {
                for &b in &bytes {
                    if b == b'\n' || b == b'\r' {
                        // `\r\n` is one end of line, not two.
                        if b == b'\n' && line.after_cr {
                            line.after_cr = false;
                            continue;
                        }
                        line.end(&mut emit);
                        line.after_cr = b == b'\r';
                    } else {
                        line.after_cr = false;
                        line.bytes.push(b);
                        if line.bytes.len() - line.sent >= MAX_LINE {
                            line.partial(&mut emit);
                        }
                    }
                }
            }
            Err(RecvTimeoutError::Timeout) => line.partial(&mut emit),
            Err(RecvTimeoutError::Disconnected) => {
                if !line.bytes.is_empty() {
                    line.end(&mut emit);
                }
                return;
            }
        }
    }
}

/// The open line: its bytes, and how many of them were handed out.
#[derive(Default)]
struct LineBuf {
    bytes: Vec<u8>,
    sent: usize,
    after_cr: bool,
}

impl LineBuf {
    fn has_unsent(&self) -> bool {
        self.bytes.len() > self.sent
    }

    fn end(&mut self, emit: &mut impl FnMut(&str, bool)) {
        let rest = String::from_utf8_lossy(&self.bytes[self.sent..]);
        emit(&rest, true);
        self.bytes.clear();
        self.sent = 0;
    }

    /// Hands out the unsent text up to the last whole UTF-8 character.
    fn partial(&mut self, emit: &mut impl FnMut(&str, bool)) {
        let unsent = &self.bytes[self.sent..];
        let upto = match std::str::from_utf8(unsent) {
            Ok(_) => unsent.len(),
            // An incomplete character at the end waits for its rest…
            Err(e) if e.error_len().is_none() && unsent.len() - e.valid_up_to() < 4 => {
                e.valid_up_to()
            }
            // …anything else is not UTF-8 and goes out replaced.
            Err(_) => unsent.len(),
        };
        if upto == 0 {
            return;
        }
        let text = String::from_utf8_lossy(&unsent[..upto]).into_owned();
        self.sent += upto;
        emit(&text, false);
        // Keep only what the open line still needs, so a line that never
        // ends does not grow the buffer.
        if self.sent >= MAX_LINE {
            self.bytes.drain(..self.sent);
            self.sent = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn pieces(chunks: &[&[u8]], pause: bool) -> Vec<(String, bool)> {
        let got = Arc::new(Mutex::new(Vec::new()));
        let sink = got.clone();
        let (tx, rx) = mpsc::sync_channel(4);
        let closed = AtomicBool::new(false);
        let chunks: Vec<Vec<u8>> = chunks.iter().map(|c| c.to_vec()).collect();
        let feeder = thread::spawn(move || {
            for c in chunks {
                tx.send(c).unwrap();
                if pause {
                    thread::sleep(PARTIAL_AFTER * 3);
                }
            }
        });
        split(
            rx,
            move |p: Piece<'_>| sink.lock().unwrap().push((p.text.to_string(), p.ends_line)),
            &closed,
        );
        feeder.join().unwrap();
        let v = got.lock().unwrap().clone();
        v
    }

    #[test]
    fn whole_lines_split_anywhere_come_out_whole() {
        let got = pieces(&[b"one\ntw", b"o\r\nthree\rfour"], false);
        let want = [
            ("one", true),
            ("two", true),
            ("three", true),
            ("four", true),
        ];
        let want: Vec<(String, bool)> = want.iter().map(|(t, e)| (t.to_string(), *e)).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn an_open_line_is_handed_out_after_a_pause_and_continued() {
        let got = pieces(&[b"Loading...", "é\n".as_bytes()], true);
        assert_eq!(
            got,
            vec![("Loading...".to_string(), false), ("é".to_string(), true)]
        );
    }

    #[test]
    fn a_character_cut_in_two_is_not_mangled() {
        let e = "é".as_bytes();
        let got = pieces(&[&[b'a', e[0]], &[e[1], b'\n']], true);
        assert_eq!(got, vec![("a".to_string(), false), ("é".to_string(), true)]);
    }

    #[test]
    fn a_line_without_end_is_handed_out_in_bounded_pieces() {
        let long = vec![b'x'; MAX_LINE * 3 + 5];
        let got = pieces(&[&long], false);
        let total: usize = got.iter().map(|(t, _)| t.len()).sum();
        assert_eq!(total, long.len());
        assert!(got.iter().all(|(t, _)| t.len() <= MAX_LINE));
        assert!(got.last().unwrap().1);
    }

    #[test]
    fn a_stream_through_a_real_pipe_arrives_in_order() {
        let got = Arc::new(Mutex::new(String::new()));
        let sink = got.clone();
        let stream = OutputStream::start(move |p: Piece<'_>| {
            let mut s = sink.lock().unwrap();
            s.push_str(p.text);
            if p.ends_line {
                s.push('\n');
            }
        })
        .unwrap();
        let Output::Fd(fd) = stream.output() else {
            panic!("no pipe")
        };
        // Far more than the pipe holds: the reader must drain as we write.
        let mut child = std::process::Command::new("sh")
            .args(["-c", "seq 1 200000"])
            .stdout(std::process::Stdio::from(reopen(fd)))
            .spawn()
            .unwrap();
        assert!(child.wait().unwrap().success());
        assert!(stream.finish(Duration::from_secs(10)));
        let s = got.lock().unwrap();
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines.len(), 200000);
        assert_eq!(lines[199999], "200000");
    }

    /// Another descriptor of the write end, through /proc (no `unsafe`).
    fn reopen(fd: std::os::fd::RawFd) -> OwnedFd {
        std::fs::OpenOptions::new()
            .write(true)
            .open(format!("/proc/self/fd/{fd}"))
            .unwrap()
            .into()
    }
}
