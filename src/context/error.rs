//! Errors of the build-context layer. Every message names the path it is
//! about; OS errors are worded like Go's (`permission denied`), which is
//! what BuildKit users and its tests expect to read.

use std::io;
use std::path::PathBuf;

use crate::frontend::error::DockerfileError;
use crate::frontend::patternmatcher::PatternError;

#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    /// Reading the context failed during a walk; `path` is relative to the
    /// context root.
    #[error("walk context: {op} {path}: {}", os_message(.err))]
    Walk {
        op: &'static str,
        path: String,
        err: io::Error,
    },
    /// Any other file-system call failed.
    #[error("{op} {}: {}", .path.display(), os_message(.err))]
    Io {
        op: &'static str,
        path: PathBuf,
        err: io::Error,
    },
    /// The path exists on disk but the filters leave it out of the context.
    #[error("open {path}: not in the build context (excluded by the filters)")]
    Filtered { path: String },
    #[error("invalid context path {path:?}: {reason}")]
    InvalidPath { path: String, reason: &'static str },
    #[error("walk context: {path}: file name is not valid UTF-8")]
    NonUtf8 { path: PathBuf },
    /// A pattern of the ignore file is invalid; shown with file, line and a caret.
    #[error(transparent)]
    IgnoreFile(DockerfileError),
    /// A filter's pattern list was rejected (`which` is `include` or `exclude`).
    #[error("invalid {which} patterns {patterns:?}: {err}")]
    Filter {
        which: &'static str,
        patterns: Vec<String>,
        err: PatternError,
    },
    /// A pattern could not be evaluated during a walk or an open.
    #[error("failed to match {which} patterns: {err}")]
    Match {
        which: &'static str,
        err: PatternError,
    },
    #[error("follow paths: too many levels of symbolic links resolving {path:?}")]
    FollowLoop { path: String },
    /// An error returned by a walk callback, passed through unchanged.
    #[error(transparent)]
    Callback(Box<dyn std::error::Error + Send + Sync + 'static>),
}

impl ContextError {
    /// True when the path does not exist in the (filtered) context.
    pub fn is_not_found(&self) -> bool {
        match self {
            ContextError::Filtered { .. } => true,
            ContextError::Walk { err, .. } | ContextError::Io { err, .. } => {
                err.kind() == io::ErrorKind::NotFound
            }
            _ => false,
        }
    }

    /// The underlying OS error kind, when there is one.
    pub fn io_kind(&self) -> Option<io::ErrorKind> {
        match self {
            ContextError::Walk { err, .. } | ContextError::Io { err, .. } => Some(err.kind()),
            _ => None,
        }
    }
}

/// `Permission denied (os error 13)` becomes `permission denied`.
fn os_message(err: &io::Error) -> String {
    let full = err.to_string();
    let text = match (err.raw_os_error(), full.rfind(" (os error ")) {
        (Some(_), Some(cut)) => &full[..cut],
        _ => full.as_str(),
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_errors_read_like_go() {
        let e = ContextError::Walk {
            op: "open",
            path: "foo/bar".into(),
            err: io::Error::from_raw_os_error(13),
        };
        assert_eq!(
            e.to_string(),
            "walk context: open foo/bar: permission denied"
        );
        assert_eq!(e.io_kind(), Some(io::ErrorKind::PermissionDenied));
        let e = ContextError::Io {
            op: "read",
            path: "/x".into(),
            err: io::Error::from_raw_os_error(2),
        };
        assert_eq!(e.to_string(), "read /x: no such file or directory");
        assert!(e.is_not_found());
    }
}
