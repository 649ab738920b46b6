//! Physical lines in, logical lines out: the reader enforces BuildKit's line
//! length limit, and a logical line remembers where each of its pieces came
//! from so that any offset in it can be turned back into a line and column.

use crate::frontend::error::Pos;

/// Go's `bufio.Scanner` refuses a line (with its newline) longer than 64 KiB.
pub(super) const MAX_LINE: usize = 65535;

/// One line of the source.
#[derive(Debug, Clone, Copy)]
pub(super) struct PhysicalLine<'a> {
    /// 1-based line number.
    pub no: usize,
    /// The line as written, with its line ending (heredoc bodies keep it).
    pub raw: &'a str,
    /// The line without trailing CR/LF characters (and without a BOM on line 1).
    pub text: &'a str,
    /// Column of `text`'s first character (2 after a BOM, else 1).
    pub first_col: usize,
}

/// Yields the lines of a source text one at a time.
pub(super) struct Lines<'a> {
    rest: &'a str,
    read: usize,
}

impl<'a> Lines<'a> {
    pub fn new(source: &'a str) -> Self {
        Lines {
            rest: source,
            read: 0,
        }
    }

    /// How many lines have been handed out.
    pub fn read(&self) -> usize {
        self.read
    }

    /// The next line; `Err(line_no)` if that line is too long.
    pub fn next_line(&mut self) -> Result<Option<PhysicalLine<'a>>, usize> {
        if self.rest.is_empty() {
            return Ok(None);
        }
        let end = self.rest.find('\n').map_or(self.rest.len(), |i| i + 1);
        let (raw, rest) = self.rest.split_at(end);
        self.rest = rest;
        self.read += 1;
        if raw.strip_suffix('\n').unwrap_or(raw).len() > MAX_LINE {
            return Err(self.read);
        }
        let mut text = raw.trim_end_matches(['\r', '\n']);
        let mut first_col = 1;
        if self.read == 1 {
            if let Some(t) = text.strip_prefix('\u{feff}') {
                text = t;
                first_col = 2;
            }
        }
        Ok(Some(PhysicalLine {
            no: self.read,
            raw,
            text,
            first_col,
        }))
    }
}

/// An instruction's text after joining continuation lines, with a map from
/// byte offsets back to source positions.
#[derive(Debug, Default)]
pub(super) struct Logical {
    pub text: String,
    /// (byte offset in `text`, line, column of that byte in its line)
    pieces: Vec<(usize, usize, usize)>,
}

impl Logical {
    pub fn push(&mut self, piece: &str, line: usize, col: usize) {
        self.pieces.push((self.text.len(), line, col));
        self.text.push_str(piece);
    }

    /// The source position of the character at byte `offset` of `text`.
    pub fn pos_at(&self, offset: usize) -> Pos {
        // The last piece starting at or before the offset holds it; empty
        // pieces (lines that were only a continuation token) lose to the
        // piece after them.
        let piece = self
            .pieces
            .iter()
            .rev()
            .find(|(start, _, _)| *start <= offset)
            .or(self.pieces.first());
        let Some(&(start, line, col)) = piece else {
            return Pos::new(1, 1);
        };
        let within = self
            .text
            .get(start.min(offset)..offset)
            .map_or(0, |s| s.chars().count());
        Pos::new(line, col + within)
    }
}

/// Removes a trailing continuation token: the escape token as the last
/// non-blank (space or tab) character, unless it is itself escaped, or a line
/// holding only the token. Returns the remaining text and whether the line
/// ends the instruction (no continuation).
pub(super) fn trim_continuation(line: &str, escape: char) -> (&str, bool) {
    let body = line.trim_end_matches([' ', '\t']);
    let Some(before) = body.strip_suffix(escape) else {
        return (line, true);
    };
    if before.ends_with(escape) {
        return (line, true);
    }
    (before, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuation_token_rules() {
        assert_eq!(trim_continuation("a \\ \t", '\\'), ("a ", false));
        assert_eq!(trim_continuation("\\", '\\'), ("", false));
        assert_eq!(trim_continuation("a\\\\", '\\'), ("a\\\\", true));
        assert_eq!(trim_continuation("a`", '`'), ("a", false));
        assert_eq!(trim_continuation("a\\", '`'), ("a\\", true));
        assert_eq!(trim_continuation("", '\\'), ("", true));
    }

    #[test]
    fn maps_offsets_back_to_lines() {
        let mut l = Logical::default();
        l.push("RUN a ", 3, 5);
        l.push("", 4, 1);
        l.push("  b", 5, 1);
        assert_eq!(l.pos_at(0), Pos::new(3, 5));
        assert_eq!(l.pos_at(4), Pos::new(3, 9));
        assert_eq!(l.pos_at(6), Pos::new(5, 1));
        assert_eq!(l.pos_at(8), Pos::new(5, 3));
    }

    #[test]
    fn reader_strips_endings_and_bom() {
        let mut r = Lines::new("\u{feff}a\r\nb");
        let a = r.next_line().unwrap().unwrap();
        assert_eq!((a.text, a.raw, a.first_col), ("a", "\u{feff}a\r\n", 2));
        assert_eq!(r.next_line().unwrap().unwrap().text, "b");
        assert!(r.next_line().unwrap().is_none());
        let long = "a".repeat(MAX_LINE + 1);
        assert_eq!(Lines::new(&long).next_line().unwrap_err(), 1);
    }
}
