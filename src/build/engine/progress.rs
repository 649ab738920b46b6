//! What a build prints while it runs, on stderr (stdout keeps the image id):
//!
//! - plain: docker/buildah-like step lines (`[1/2] STEP 3/5: RUN …`), the
//!   command's output indented under its step, `--> DONE 1.23s` or
//!   `--> CACHED` per step, and a summary;
//! - tty: a compact live view (finished steps one line each; the running
//!   step with its elapsed time and its last output lines; transfer bars);
//! - json: one event per line for CI systems;
//! - quiet: nothing, except the end of a failed command's output.
//!
//! Command output is indented four spaces rather than prefixed with
//! BuildKit's `#N 0.123`: the step line above already numbers it, plain
//! output is for people and grep (times per line are noise there), and
//! machines get the time of every line from the json events.

use std::collections::VecDeque;
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::exec::Piece;
use crate::registry;

/// Output lines of the running step kept to show again when it fails
/// (quiet and tty modes, which did not show them all).
const TAIL: usize = 20;
/// Output lines of the running step the tty view shows under it.
const LIVE_LINES: usize = 5;
/// Longest output line kept whole (for the tail, the live view, a json
/// event); a line that goes on is cut there, so memory stays bounded.
const MAX_LINE: usize = 16 * 1024;
/// The indentation of a command's output in plain mode.
const INDENT: &str = "    ";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProgressMode {
    #[default]
    Plain,
    /// The live view; falls back to plain when stderr is not a terminal.
    Tty,
    Json,
    Quiet,
}

/// The result of a build, for [`Reporter::summary`].
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub id: String,
    pub digest: String,
    /// Compressed layers, bytes.
    pub size: u64,
    pub names: Vec<String>,
    /// Where the image (or its files) was written or pushed.
    pub outputs: Vec<String>,
    /// Steps that ran (FROM lines not counted).
    pub steps: usize,
    /// Steps taken from the layer cache.
    pub cached_steps: usize,
    pub took: Duration,
}

/// The progress display of one build; cheap to clone (the command output
/// thread holds one).
#[derive(Clone)]
pub struct Reporter {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Reporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reporter")
            .field("mode", &self.inner.mode)
            .finish()
    }
}

impl Default for Reporter {
    fn default() -> Reporter {
        Reporter::new(ProgressMode::Plain)
    }
}

struct Inner {
    mode: ProgressMode,
    started: Instant,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The running step's line (`[1/2] STEP 3/5: RUN …`).
    step: Option<String>,
    /// Its last output lines, oldest first.
    tail: VecDeque<String>,
    /// The output line still open (partial pieces so far).
    open: String,
    /// Plain: an open line was printed without its newline.
    mid_line: bool,
    tty: Option<Tty>,
}

/// The live view's bars: the running step, its output lines below it.
struct Tty {
    multi: MultiProgress,
    step: Option<ProgressBar>,
    lines: Vec<ProgressBar>,
}

impl Reporter {
    pub fn new(mode: ProgressMode) -> Reporter {
        let mode = match mode {
            ProgressMode::Tty if !std::io::stderr().is_terminal() => ProgressMode::Plain,
            m => m,
        };
        let tty = (mode == ProgressMode::Tty).then(|| Tty {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10)),
            step: None,
            lines: Vec::new(),
        });
        Reporter {
            inner: Arc::new(Inner {
                mode,
                started: Instant::now(),
                state: Mutex::new(State {
                    tty,
                    ..State::default()
                }),
            }),
        }
    }

    /// The mode in effect (tty became plain without a terminal).
    pub fn mode(&self) -> ProgressMode {
        self.inner.mode
    }

    /// How pulls and pushes of this build show their blobs: bars in the
    /// live view, `Copying blob …` lines in plain mode, a `blob` event per
    /// finished blob in json mode, nothing in quiet mode.
    pub fn transfer_progress(&self) -> registry::Progress {
        match (self.inner.mode, &self.state().tty) {
            (ProgressMode::Tty, Some(t)) => registry::Progress::bars(t.multi.clone()),
            (ProgressMode::Plain, _) => registry::Progress::plain(),
            (ProgressMode::Json, _) => {
                let me = self.clone();
                registry::Progress::events(move |e| me.transfer(e))
            }
            _ => registry::Progress::quiet(),
        }
    }

    fn transfer(&self, event: registry::TransferEvent) {
        let json = match event {
            registry::TransferEvent::Line(message) => {
                serde_json::json!({"event": "note", "message": message})
            }
            registry::TransferEvent::Blob {
                kind,
                digest,
                size,
                outcome,
            } => serde_json::json!({"event": "blob", "kind": kind,
                "digest": digest.to_string(), "size": size, "outcome": outcome}),
        };
        let mut st = self.state();
        self.emit(&mut st, "", json);
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere while printing leaves nothing half-done that
        // matters here: keep reporting.
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Prints one line: `plain` in plain and tty modes (above the live
    /// bars), the event (with its time) in json mode.
    fn emit(&self, state: &mut State, plain: &str, mut json: serde_json::Value) {
        match self.inner.mode {
            ProgressMode::Plain => {
                let mut err = std::io::stderr().lock();
                // A closed stderr must not fail the build.
                if state.mid_line {
                    let _ = writeln!(err);
                    state.mid_line = false;
                }
                let _ = writeln!(err, "{plain}");
            }
            ProgressMode::Tty => {
                if let Some(t) = &state.tty {
                    let _ = t.multi.println(plain);
                }
            }
            ProgressMode::Json => {
                if let Some(obj) = json.as_object_mut() {
                    obj.insert("time".into(), serde_json::json!(unix_time()));
                }
                let _ = writeln!(std::io::stderr().lock(), "{json}");
            }
            ProgressMode::Quiet => {}
        }
    }

    /// A step starts: `[stage n/N] STEP s/S: TEXT`.
    pub fn step(&self, stage: (usize, usize, &str), step: (usize, usize), text: &str) {
        let line = format!(
            "[{}/{}] STEP {}/{}: {text}",
            stage.0, stage.1, step.0, step.1
        );
        let mut st = self.state();
        st.tail.clear();
        st.open.clear();
        st.step = Some(line.clone());
        if let Some(t) = st.tty.as_mut() {
            t.clear();
            let bar = t.multi.add(ProgressBar::new_spinner());
            bar.set_style(style("{spinner} {msg} {elapsed:.dim}"));
            bar.set_message(line);
            bar.enable_steady_tick(Duration::from_millis(100));
            t.step = Some(bar);
            return;
        }
        let json = serde_json::json!({"event": "step", "stage": stage.2, "stage_index": stage.0,
            "stages": stage.1, "step": step.0, "steps": step.1, "text": text});
        self.emit(&mut st, &line, json);
    }

    /// The step ended: reused from the cache, or done in `took`.
    pub fn done(&self, cached: bool, took: Duration) {
        let secs = took.as_secs_f64();
        let result = if cached {
            "CACHED".to_string()
        } else {
            format!("DONE {}", seconds(took))
        };
        let mut st = self.state();
        let step = st.step.take().unwrap_or_default();
        if let Some(t) = st.tty.as_mut() {
            t.clear();
            let _ = t.multi.println(format!("{step}  {result}"));
            return;
        }
        let json = serde_json::json!({"event": "done", "cached": cached, "seconds": secs});
        self.emit(&mut st, &format!("--> {result}"), json);
    }

    /// New output of the running command (from the output thread).
    pub fn output(&self, piece: Piece<'_>) {
        let mut st = self.state();
        st.open.push_str(piece.text);
        if !piece.ends_line && st.open.len() > MAX_LINE {
            if self.inner.mode == ProgressMode::Json {
                let cut = std::mem::take(&mut st.open);
                let json = serde_json::json!({"event": "output", "line": cut, "partial": true});
                self.emit(&mut st, "", json);
            } else {
                let mut from = st.open.len() - MAX_LINE;
                while !st.open.is_char_boundary(from) {
                    from += 1;
                }
                st.open.drain(..from);
            }
        }
        let line = if piece.ends_line {
            let line = std::mem::take(&mut st.open);
            st.tail.push_back(line.clone());
            if st.tail.len() > TAIL {
                st.tail.pop_front();
            }
            Some(line)
        } else {
            None
        };
        match self.inner.mode {
            ProgressMode::Plain => {
                let mut err = std::io::stderr().lock();
                if !st.mid_line {
                    let _ = write!(err, "{INDENT}");
                }
                let _ = write!(err, "{}", piece.text);
                if piece.ends_line {
                    let _ = writeln!(err);
                } else {
                    let _ = err.flush();
                }
                st.mid_line = !piece.ends_line;
            }
            ProgressMode::Json => {
                // Whole lines only (a piece shows up with its line), except
                // a line longer than MAX_LINE, which goes out in parts.
                if let Some(line) = line {
                    let json = serde_json::json!({"event": "output", "line": line});
                    self.emit(&mut st, "", json);
                }
            }
            ProgressMode::Tty => {
                let open = st.open.clone();
                let shown: Vec<String> = st
                    .tail
                    .iter()
                    .cloned()
                    .chain((!open.is_empty()).then_some(open))
                    .collect();
                if let Some(t) = st.tty.as_mut() {
                    t.show_lines(&shown);
                }
            }
            ProgressMode::Quiet => {}
        }
    }

    /// The running command failed: quiet and tty modes did not show all of
    /// its output, so its last lines are printed now (like BuildKit's
    /// error box); json and plain showed them already.
    pub fn command_failed(&self, at: &str, step: &str, code: i32) {
        let mut st = self.state();
        if !st.open.is_empty() {
            let open = std::mem::take(&mut st.open);
            st.tail.push_back(open);
        }
        let tail: Vec<String> = st.tail.iter().cloned().collect();
        let step_line = st.step.take().unwrap_or_default();
        if let Some(t) = st.tty.as_mut() {
            t.clear();
            let _ = t.multi.println(format!("{step_line}  ERROR"));
        }
        match self.inner.mode {
            ProgressMode::Plain => {
                let line = format!("--> ERROR: {at}: {step}: exit code {code}");
                self.emit(&mut st, &line, serde_json::Value::Null);
            }
            ProgressMode::Json => {
                let json = serde_json::json!({"event": "failed", "at": at, "text": step,
                    "exit_code": code});
                self.emit(&mut st, "", json);
            }
            ProgressMode::Tty | ProgressMode::Quiet => {
                let mut err = std::io::stderr().lock();
                let _ = writeln!(err, "------\n > {at}: {step}:");
                for l in &tail {
                    let _ = writeln!(err, "{INDENT}{l}");
                }
                let _ = writeln!(err, "------");
            }
        }
    }

    /// The build stopped with `message` (printed by the caller too): the
    /// live view is cleared first; json gets an `error` event.
    pub fn error(&self, message: &str) {
        let mut st = self.state();
        if let Some(t) = st.tty.as_mut() {
            t.clear();
        }
        if self.inner.mode == ProgressMode::Json {
            let json = serde_json::json!({"event": "error", "message": message});
            self.emit(&mut st, "", json);
        } else if st.mid_line {
            let _ = writeln!(std::io::stderr());
            st.mid_line = false;
        }
    }

    /// A cache miss explained (`--explain-cache`, or always in plain mode).
    pub fn explain(&self, reasons: &[String]) {
        if reasons.is_empty() {
            return;
        }
        let mut st = self.state();
        self.emit(
            &mut st,
            &format!("{INDENT}cache miss: {}", reasons.join("; ")),
            serde_json::json!({"event": "cache-miss", "reasons": reasons}),
        );
    }

    pub fn note(&self, message: &str) {
        let mut st = self.state();
        self.emit(
            &mut st,
            message,
            serde_json::json!({"event": "note", "message": message}),
        );
    }

    /// The built image: id, manifest digest, size, where it went, how long.
    pub fn summary(&self, s: &Summary) {
        let mut plain = format!(
            "Built in {}: {} steps run, {} cached\n  image id: {}\n  digest:   {}\n  size:     {}",
            seconds(s.took),
            s.steps,
            s.cached_steps,
            s.id,
            s.digest,
            human_size(s.size),
        );
        for n in &s.names {
            plain.push_str(&format!("\n  named:    {n}"));
        }
        for o in &s.outputs {
            plain.push_str(&format!("\n  output:   {o}"));
        }
        let mut st = self.state();
        if let Some(t) = st.tty.as_mut() {
            t.clear();
        }
        self.emit(
            &mut st,
            &plain,
            serde_json::json!({"event": "image", "id": s.id, "digest": s.digest,
                "size": s.size, "names": s.names, "outputs": s.outputs, "steps_run": s.steps,
                "cached_steps": s.cached_steps, "seconds": s.took.as_secs_f64()}),
        );
    }

    /// Time since this reporter was made (the build's start).
    pub fn elapsed(&self) -> Duration {
        self.inner.started.elapsed()
    }
}

impl Tty {
    /// Removes the running step's bars.
    fn clear(&mut self) {
        for bar in self.step.take().into_iter().chain(self.lines.drain(..)) {
            bar.finish_and_clear();
            self.multi.remove(&bar);
        }
    }

    /// Shows the last [`LIVE_LINES`] of `lines` under the step line.
    fn show_lines(&mut self, lines: &[String]) {
        let last = &lines[lines.len().saturating_sub(LIVE_LINES)..];
        while self.lines.len() < last.len() {
            let bar = self.multi.add(ProgressBar::new_spinner());
            bar.set_style(style("    {wide_msg:.dim}"));
            self.lines.push(bar);
        }
        for (bar, line) in self.lines.iter().zip(last) {
            bar.set_message(line.clone());
        }
    }
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_spinner())
}

/// `0.42s`, `12.3s`, `2m05s`.
fn seconds(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 10.0 {
        format!("{s:.2}s")
    } else if s < 60.0 {
        format!("{s:.1}s")
    } else {
        format!("{}m{:02}s", d.as_secs() / 60, d.as_secs() % 60)
    }
}

/// `1.4 MiB (1468006 bytes)`.
fn human_size(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {} ({n} bytes)", units[u])
    }
}

fn unix_time() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes_read_well() {
        assert_eq!(seconds(Duration::from_millis(420)), "0.42s");
        assert_eq!(seconds(Duration::from_millis(12_340)), "12.3s");
        assert_eq!(seconds(Duration::from_secs(125)), "2m05s");
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(1_468_006), "1.4 MiB (1468006 bytes)");
    }

    #[test]
    fn a_line_that_never_ends_and_many_lines_are_kept_bounded() {
        let r = Reporter::new(ProgressMode::Quiet);
        r.step((1, 1, "#0"), (2, 2), "RUN yes | tr -d '\\n'");
        let chunk = "é".repeat(1000);
        for _ in 0..100 {
            r.output(Piece {
                text: &chunk,
                ends_line: false,
            });
        }
        r.output(Piece {
            text: "END",
            ends_line: false,
        });
        let st = r.state();
        assert!(st.open.len() <= MAX_LINE, "{}", st.open.len());
        assert!(st.open.ends_with("éEND"));
        drop(st);
        for n in 0..3 * TAIL {
            r.output(Piece {
                text: &format!("line {n}"),
                ends_line: true,
            });
        }
        let st = r.state();
        assert_eq!(st.tail.len(), TAIL);
        assert_eq!(st.tail.back().map(String::as_str), Some("line 59"));
    }
}
