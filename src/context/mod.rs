//! The build context: choosing and reading its ignore file, and walking it
//! through include/exclude/follow filters. This is the I/O side of
//! `frontend::dockerignore` and `frontend::patternmatcher`.

mod error;
mod filter;
mod follow;
pub mod hashcache;
pub mod walk;

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};

use crate::frontend::dockerignore::read_pattern_lines;
use crate::frontend::error::{DockerfileError, Pos};
use crate::frontend::patternmatcher::PatternMatcher;

pub use error::ContextError;
pub use hashcache::HashCache;
pub use walk::{Entry, EntryKind, FilterOpts, FilteredFs, WalkAction};

/// The ignore file that applies to a build, if any. As in BuildKit,
/// `<Dockerfile name>.dockerignore` beside the Dockerfile wins over
/// `<context>/.dockerignore`. `dockerfile` is the Dockerfile's path as the
/// caller resolved it (a relative path is relative to the current directory).
pub fn ignore_file_for(context_dir: &Path, dockerfile: &Path) -> Option<PathBuf> {
    if let Some(name) = dockerfile.file_name() {
        let mut own = OsString::from(name);
        own.push(".dockerignore");
        let own = dockerfile.with_file_name(own);
        if own.is_file() {
            return Some(own);
        }
    }
    let shared = context_dir.join(".dockerignore");
    shared.is_file().then_some(shared)
}

/// Reads and checks the build's ignore patterns (none without an ignore
/// file). An invalid pattern (a lone `!`, bad glob syntax, a class that can
/// never compile) fails here, located at its line in the ignore file.
/// Bytes that are not UTF-8 are replaced, as patterns are strings.
pub fn load_ignore_patterns(
    context_dir: &Path,
    dockerfile: &Path,
) -> Result<Vec<String>, ContextError> {
    let Some(path) = ignore_file_for(context_dir, dockerfile) else {
        return Ok(Vec::new());
    };
    let bytes = fs::read(&path).map_err(|err| ContextError::Io {
        op: "read",
        path: path.clone(),
        err,
    })?;
    let text = String::from_utf8_lossy(&bytes);
    let lines = read_pattern_lines(&text);
    for line in &lines {
        let checked = PatternMatcher::new(&[line.pattern.as_str()])
            .and_then(|m| m.patterns().iter().try_for_each(|p| p.check()));
        if let Err(err) = checked {
            return Err(ContextError::IgnoreFile(DockerfileError::new(
                &path.display().to_string(),
                &text,
                Pos::new(line.line, line.column),
                err.to_string(),
            )));
        }
    }
    Ok(lines.into_iter().map(|l| l.pattern).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        fs::write(dir.join(name), text).unwrap();
    }

    #[test]
    fn own_ignore_file_wins_over_the_context_one() {
        let tmp = tempfile::tempdir().unwrap();
        let ctx = tmp.path();
        let dockerfile = ctx.join("sub").join("Dockerfile.app");
        fs::create_dir(ctx.join("sub")).unwrap();
        assert_eq!(ignore_file_for(ctx, &dockerfile), None);
        write(ctx, ".dockerignore", "a\n");
        assert_eq!(
            ignore_file_for(ctx, &dockerfile),
            Some(ctx.join(".dockerignore"))
        );
        write(&ctx.join("sub"), "Dockerfile.app.dockerignore", "b\n");
        assert_eq!(
            ignore_file_for(ctx, &dockerfile),
            Some(ctx.join("sub/Dockerfile.app.dockerignore"))
        );
        assert_eq!(load_ignore_patterns(ctx, &dockerfile).unwrap(), ["b"]);
    }

    #[test]
    fn bad_patterns_are_located() {
        let tmp = tempfile::tempdir().unwrap();
        let ctx = tmp.path();
        let dockerfile = ctx.join("Dockerfile");
        write(ctx, ".dockerignore", "ok\n\n  !\n");
        let err = load_ignore_patterns(ctx, &dockerfile)
            .unwrap_err()
            .to_string();
        let file = ctx.join(".dockerignore").display().to_string();
        assert!(
            err.starts_with(&format!("{file}:3:3: illegal exclusion pattern")),
            "{err}"
        );
        write(ctx, ".dockerignore", "[Local-Only]/\n");
        let err = load_ignore_patterns(ctx, &dockerfile)
            .unwrap_err()
            .to_string();
        assert!(err.contains(":1:1: syntax error in pattern"), "{err}");
    }

    #[test]
    fn no_ignore_file_means_no_patterns() {
        let tmp = tempfile::tempdir().unwrap();
        let got = load_ignore_patterns(tmp.path(), &tmp.path().join("Dockerfile")).unwrap();
        assert!(got.is_empty());
    }
}
