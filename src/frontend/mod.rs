//! The Dockerfile frontend: text → parsed nodes → typed instructions → stages.
//! Pure: no I/O beyond what callers hand in.

pub mod ast;
pub mod directives;
pub mod dockerignore;
pub mod error;
pub mod heredoc;
pub mod line_parsers;
pub mod parser;
pub mod patternmatcher;
pub mod shell;

pub use error::{DockerfileError, Pos, Warning};
pub mod flags;
pub mod instructions;
pub mod stages;
