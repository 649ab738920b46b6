//! Transfer progress on stderr: one indicatif bar per blob (bytes, speed)
//! when stderr is a terminal, plain `Copying blob sha256:… done` lines like
//! skopeo/podman otherwise, nothing with `-q`.

use std::io::{self, IsTerminal, Read};
use std::sync::Arc;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::store::Digest;

#[derive(Clone)]
enum Mode {
    Quiet,
    Plain,
    Bars(MultiProgress),
    Events(OnEvent),
}

/// What a transfer reports to a [`Progress::events`] callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferEvent {
    /// A status line (`Writing manifest to image destination`).
    Line(String),
    /// A blob ended: `kind` is `blob` or `config`, `outcome` as in
    /// [`BlobProgress::finish`].
    Blob {
        kind: &'static str,
        digest: Digest,
        size: u64,
        outcome: String,
    },
}

type OnEvent = Arc<dyn Fn(TransferEvent) + Send + Sync>;

/// The progress display of one command.
#[derive(Clone)]
pub struct Progress {
    mode: Mode,
}

impl Progress {
    /// Bars on a terminal, plain lines otherwise; `quiet` silences both.
    pub fn new(quiet: bool) -> Progress {
        let mode = if quiet {
            Mode::Quiet
        } else if io::stderr().is_terminal() {
            Mode::Bars(MultiProgress::with_draw_target(ProgressDrawTarget::stderr()))
        } else {
            Mode::Plain
        };
        Progress { mode }
    }

    /// Plain lines, terminal or not.
    pub fn plain() -> Progress {
        Progress { mode: Mode::Plain }
    }

    /// Bars on `multi`, a live view that other bars share.
    pub fn bars(multi: MultiProgress) -> Progress {
        Progress {
            mode: Mode::Bars(multi),
        }
    }

    /// Each status line and finished blob goes to `on_event` (a caller
    /// with its own display, e.g. json lines).
    pub fn events(on_event: impl Fn(TransferEvent) + Send + Sync + 'static) -> Progress {
        Progress {
            mode: Mode::Events(Arc::new(on_event)),
        }
    }

    /// Nothing is shown (for library callers and tests).
    pub fn quiet() -> Progress {
        Progress { mode: Mode::Quiet }
    }

    /// A status line (`Writing manifest to image destination`).
    pub fn line(&self, msg: &str) {
        match &self.mode {
            Mode::Quiet => {}
            Mode::Plain => eprintln!("{msg}"),
            Mode::Bars(m) => {
                let _ = m.println(msg);
            }
            Mode::Events(f) => f(TransferEvent::Line(msg.to_string())),
        }
    }

    /// Starts reporting the transfer of one blob of `size` bytes.
    /// `kind` is `blob` or `config`.
    pub fn blob(&self, kind: &'static str, digest: &Digest, size: u64) -> BlobProgress {
        let label = format!("{kind} {}", short(digest));
        let bar = match &self.mode {
            Mode::Bars(m) => {
                let bar = m.add(ProgressBar::new(size));
                let style = ProgressStyle::with_template(
                    "Copying {msg:24} [{bar:30}] {bytes:>10}/{total_bytes:<10} {binary_bytes_per_sec:>12}",
                )
                .map(|s| s.progress_chars("=> "))
                .unwrap_or_else(|_| ProgressStyle::default_bar());
                bar.set_style(style);
                bar.set_message(label.clone());
                bar.enable_steady_tick(Duration::from_millis(200));
                Some(bar)
            }
            _ => None,
        };
        let events = match &self.mode {
            Mode::Events(f) => Some((f.clone(), kind, digest.clone(), size)),
            _ => None,
        };
        BlobProgress {
            bar,
            label,
            plain: matches!(self.mode, Mode::Plain),
            events,
        }
    }
}

/// `sha256:` and the first 12 hex digits, as skopeo prints blob names.
fn short(d: &Digest) -> String {
    format!("sha256:{}", &d.hex()[..12])
}

/// Progress of one blob; cheap to clone into a reader.
#[derive(Clone)]
pub struct BlobProgress {
    bar: Option<ProgressBar>,
    label: String,
    plain: bool,
    events: Option<(OnEvent, &'static str, Digest, u64)>,
}

impl BlobProgress {
    pub fn inc(&self, n: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(n);
        }
    }

    /// Back to zero, when a transfer is restarted after an error.
    pub fn reset(&self) {
        if let Some(bar) = &self.bar {
            bar.set_position(0);
        }
    }

    /// Ends the blob with `outcome` (`done`, `skipped: already exists`, …).
    pub fn finish(&self, outcome: &str) {
        if let Some(bar) = &self.bar {
            bar.set_message(format!("{} {outcome}", self.label));
            bar.finish();
        } else if self.plain {
            eprintln!("Copying {} {outcome}", self.label);
        } else if let Some((f, kind, digest, size)) = &self.events {
            f(TransferEvent::Blob {
                kind,
                digest: digest.clone(),
                size: *size,
                outcome: outcome.to_string(),
            });
        }
    }
}

/// A reader that reports the bytes it passes on.
pub struct CountingReader<R> {
    inner: R,
    progress: BlobProgress,
}

impl<R> CountingReader<R> {
    pub fn new(inner: R, progress: BlobProgress) -> Self {
        CountingReader { inner, progress }
    }
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.inc(n as u64);
        Ok(n)
    }
}
