//! Dockerfile diagnostics: every frontend error names file, line and column
//! and shows the offending line with a caret under the column.

use std::fmt;

/// A position in a Dockerfile: 1-based line, 1-based column counted in characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, serde::Serialize)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

impl Pos {
    pub fn new(line: usize, column: usize) -> Self {
        Pos { line, column }
    }
}

/// An error in a Dockerfile (or in a `.dockerignore`), located in its source.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct DockerfileError {
    pub file: String,
    pub pos: Pos,
    /// The physical line the position points into, without its newline.
    pub line_text: String,
    pub message: String,
}

impl DockerfileError {
    /// Builds an error at `pos` in `source` (the whole file text); the line text
    /// is taken from the source so the caret can be drawn.
    pub fn new(file: &str, source: &str, pos: Pos, message: impl Into<String>) -> Self {
        let line_text = source
            .split('\n')
            .nth(pos.line.saturating_sub(1))
            .unwrap_or("")
            .trim_end_matches('\r')
            .to_string();
        DockerfileError {
            file: file.to_string(),
            pos,
            line_text,
            message: message.into(),
        }
    }

    /// The message alone, as BuildKit words it (tests compare against this).
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for DockerfileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.pos.line, self.pos.column, self.message
        )?;
        if self.pos.line == 0 {
            return Ok(());
        }
        let gutter = self.pos.line.to_string();
        let pad = " ".repeat(gutter.len());
        // Keep tabs in the caret's indentation so it lines up under tabbed text.
        let indent: String = self
            .line_text
            .chars()
            .take(self.pos.column.saturating_sub(1))
            .map(|c| if c == '\t' { '\t' } else { ' ' })
            .collect();
        write!(
            f,
            "\n {pad} |\n {gutter} | {}\n {pad} | {indent}^",
            self.line_text
        )
    }
}

/// A non-fatal remark about a Dockerfile (BuildKit prints these as warnings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub pos: Pos,
    pub short: String,
    pub detail: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.pos.line, self.short)?;
        if !self.detail.is_empty() {
            write!(f, " ({})", self.detail)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_file_line_column_and_caret() {
        let src = "FROM a\nMAINTAINER --boo joe\n";
        let e = DockerfileError::new("Dockerfile", src, Pos::new(2, 12), "unknown flag: --boo");
        let s = e.to_string();
        assert!(s.starts_with("Dockerfile:2:12: unknown flag: --boo"), "{s}");
        assert!(s.contains(" 2 | MAINTAINER --boo joe\n"), "{s}");
        assert!(s.ends_with("   |            ^"), "{s:?}");
    }
}
