//! What a build prints while it runs: docker/buildah-like step lines on
//! stderr (`[1/2] STEP 3/5: RUN …`, `--> CACHED`, times), or one JSON event
//! per line for CI systems, or nothing (`-q`).

use std::io::Write;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProgressMode {
    #[default]
    Plain,
    Json,
    Quiet,
}

#[derive(Debug, Default)]
pub struct Reporter {
    pub mode: ProgressMode,
}

impl Reporter {
    pub fn new(mode: ProgressMode) -> Reporter {
        Reporter { mode }
    }

    fn emit(&self, plain: String, json: serde_json::Value) {
        let mut err = std::io::stderr().lock();
        // A closed stderr must not fail the build.
        let _ = match self.mode {
            ProgressMode::Plain => writeln!(err, "{plain}"),
            ProgressMode::Json => writeln!(err, "{json}"),
            ProgressMode::Quiet => Ok(()),
        };
    }

    /// A step starts: `[stage n/N] STEP s/S: TEXT`.
    pub fn step(&self, stage: (usize, usize, &str), step: (usize, usize), text: &str) {
        self.emit(
            format!(
                "[{}/{}] STEP {}/{}: {text}",
                stage.0, stage.1, step.0, step.1
            ),
            serde_json::json!({"event": "step", "stage": stage.2, "stage_index": stage.0,
                "stages": stage.1, "step": step.0, "steps": step.1, "text": text}),
        );
    }

    /// The step ended: reused from the cache or done in `took`.
    pub fn done(&self, cached: bool, took: Duration) {
        let secs = took.as_secs_f64();
        let plain = if cached {
            "--> CACHED".to_string()
        } else {
            format!("--> {secs:.2}s")
        };
        self.emit(
            plain,
            serde_json::json!({"event": "done", "cached": cached, "seconds": secs}),
        );
    }

    /// A cache miss explained (`--explain-cache`, or always in plain mode).
    pub fn explain(&self, reasons: &[String]) {
        if reasons.is_empty() {
            return;
        }
        self.emit(
            format!("    cache miss: {}", reasons.join("; ")),
            serde_json::json!({"event": "cache-miss", "reasons": reasons}),
        );
    }

    pub fn note(&self, message: &str) {
        self.emit(
            message.to_string(),
            serde_json::json!({"event": "note", "message": message}),
        );
    }

    /// The result: image id, manifest digest, size.
    pub fn summary(&self, id: &str, digest: &str, size: u64, names: &[String], took: Duration) {
        let mut plain = format!(
            "COMMIT {id} (manifest {digest}, {size} bytes) in {:.2}s",
            took.as_secs_f64()
        );
        for n in names {
            plain.push_str(&format!("\nNamed {n}"));
        }
        self.emit(
            plain,
            serde_json::json!({"event": "image", "id": id, "digest": digest, "size": size,
                "names": names, "seconds": took.as_secs_f64()}),
        );
    }
}
