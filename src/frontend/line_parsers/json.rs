//! A small reader for the exec form `["a", "b"]`, written to answer exactly
//! the questions BuildKit's use of Go's `encoding/json` decoder answers:
//! is the text a syntactically valid JSON array (only the first value is
//! read; anything after its closing `]` is ignored), and if so, is every
//! element a string? It also reports where the first non-string element
//! starts so that the error can point at it.
//!
//! Nested values are skipped with an explicit stack rather than recursion so
//! that hostile nesting cannot overflow the stack.

/// Go's decoder refuses nesting deeper than this; deeper text is not JSON.
const MAX_DEPTH: usize = 10_000;

/// What the text at hand turned out to be.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Decoded {
    /// Not a valid JSON array (or a number Go cannot represent): callers fall back.
    NotJson,
    /// An array whose elements are all strings.
    Strings(Vec<String>),
    /// A valid array with a non-string element starting at this byte offset.
    NonString(usize),
}

/// Decodes the JSON value at the start of `text`, which must begin with `[`.
pub(super) fn decode_array(text: &str) -> Decoded {
    let mut r = Reader {
        b: text.as_bytes(),
        s: text,
        i: 0,
    };
    match r.top_array() {
        Some((items, first_bad)) => match first_bad {
            Some(at) => Decoded::NonString(at),
            None => Decoded::Strings(items),
        },
        None => Decoded::NotJson,
    }
}

struct Reader<'a> {
    b: &'a [u8],
    s: &'a str,
    i: usize,
}

impl Reader<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        if self.peek() == Some(c) {
            self.i += 1;
            Some(())
        } else {
            None
        }
    }

    /// The outer array: strings are decoded, anything else is validated and
    /// its start remembered.
    fn top_array(&mut self) -> Option<(Vec<String>, Option<usize>)> {
        self.eat(b'[')?;
        let mut items = Vec::new();
        let mut first_bad = None;
        self.skip_ws();
        if self.eat(b']').is_some() {
            return Some((items, None));
        }
        loop {
            self.skip_ws();
            let start = self.i;
            if self.peek() == Some(b'"') {
                items.push(self.string()?);
            } else {
                self.skip_value(1)?;
                first_bad.get_or_insert(start);
            }
            self.skip_ws();
            match self.peek()? {
                b',' => self.i += 1,
                b']' => return Some((items, first_bad)),
                _ => return None,
            }
        }
    }

    /// Validates one value of any kind, starting at `depth` open containers.
    fn skip_value(&mut self, depth: usize) -> Option<()> {
        // Each entry is the closing byte expected for an open container.
        let mut stack: Vec<u8> = Vec::new();
        loop {
            self.skip_ws();
            match self.peek()? {
                open @ (b'[' | b'{') => {
                    self.i += 1;
                    if depth + stack.len() + 1 > MAX_DEPTH {
                        return None;
                    }
                    let close = if open == b'[' { b']' } else { b'}' };
                    stack.push(close);
                    self.skip_ws();
                    if self.eat(close).is_some() {
                        stack.pop();
                    } else {
                        if close == b'}' {
                            self.object_key()?;
                        }
                        continue;
                    }
                }
                b'"' => {
                    self.string()?;
                }
                b't' => self.literal(b"true")?,
                b'f' => self.literal(b"false")?,
                b'n' => self.literal(b"null")?,
                _ => self.number()?,
            }
            // A value just ended: close containers or move to the next element.
            loop {
                let Some(&close) = stack.last() else {
                    return Some(());
                };
                self.skip_ws();
                match self.peek()? {
                    b',' => {
                        self.i += 1;
                        if close == b'}' {
                            self.skip_ws();
                            self.object_key()?;
                        }
                        break;
                    }
                    c if c == close => {
                        self.i += 1;
                        stack.pop();
                    }
                    _ => return None,
                }
            }
        }
    }

    /// `"key" :` inside an object.
    fn object_key(&mut self) -> Option<()> {
        if self.peek() != Some(b'"') {
            return None;
        }
        self.string()?;
        self.skip_ws();
        self.eat(b':')
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        if self.b.get(self.i..self.i + word.len())? == word {
            self.i += word.len();
            Some(())
        } else {
            None
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.i;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.i += 1;
        }
        self.i - start
    }

    fn number(&mut self) -> Option<()> {
        let start = self.i;
        let _ = self.eat(b'-');
        match self.peek()? {
            b'0' => self.i += 1,
            b'1'..=b'9' => {
                self.digits();
            }
            _ => return None,
        }
        if self.eat(b'.').is_some() && self.digits() == 0 {
            return None;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if self.digits() == 0 {
                return None;
            }
        }
        // Go decodes every number into a float64 and fails on overflow,
        // which makes the whole text "not JSON" for the Dockerfile parser.
        let value: f64 = self.s.get(start..self.i)?.parse().ok()?;
        value.is_finite().then_some(())
    }

    /// A string literal, decoded like Go does (lone surrogates become U+FFFD).
    fn string(&mut self) -> Option<String> {
        self.eat(b'"')?;
        let mut out = String::new();
        let mut run = self.i;
        loop {
            match self.peek()? {
                b'"' => {
                    out.push_str(self.s.get(run..self.i)?);
                    self.i += 1;
                    return Some(out);
                }
                b'\\' => {
                    out.push_str(self.s.get(run..self.i)?);
                    self.i += 1;
                    let c = self.peek()?;
                    self.i += 1;
                    match c {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => out.push(self.unicode_escape()?),
                        _ => return None,
                    }
                    run = self.i;
                }
                c if c < 0x20 => return None,
                _ => self.i += 1,
            }
        }
    }

    fn hex4(&mut self) -> Option<u32> {
        let text = self.s.get(self.i..self.i + 4)?;
        if !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        self.i += 4;
        u32::from_str_radix(text, 16).ok()
    }

    /// The code point of `\uXXXX` (the `\u` already read), pairing surrogates.
    fn unicode_escape(&mut self) -> Option<char> {
        let first = self.hex4()?;
        if !(0xD800..0xE000).contains(&first) {
            return char::from_u32(first);
        }
        // A high surrogate followed by an escaped low one forms a pair;
        // anything else leaves the surrogate alone as U+FFFD, as Go does.
        if first < 0xDC00 && self.b.get(self.i..self.i + 2) == Some(b"\\u") {
            let save = self.i;
            self.i += 2;
            if let Some(second) = self.hex4() {
                if (0xDC00..0xE000).contains(&second) {
                    let c = 0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00);
                    return char::from_u32(c);
                }
            }
            self.i = save;
        }
        Some('\u{FFFD}')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Decoded {
        Decoded::Strings(v.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn reads_arrays_of_strings() {
        assert_eq!(decode_array("[]"), strings(&[]));
        assert_eq!(decode_array("[ \"a\" ,\t\"b\" ]"), strings(&["a", "b"]));
        assert_eq!(
            decode_array(r#"["\ud83d\ude00", "\ud800x", "\u00e9"]"#),
            strings(&["😀", "\u{FFFD}x", "é"])
        );
    }

    #[test]
    fn ignores_text_after_the_array() {
        assert_eq!(decode_array("[\"a\"] && ls"), strings(&["a"]));
    }

    #[test]
    fn points_at_the_first_non_string() {
        assert_eq!(
            decode_array(r#"[ "echo", [ "nested json" ], 1 ]"#),
            Decoded::NonString(10)
        );
        assert_eq!(
            decode_array(r#"["a",{"c": [1, {}]},"b"]"#),
            Decoded::NonString(5)
        );
    }

    #[test]
    fn rejects_malformed_text() {
        for bad in [
            "['a']",
            "[\"a\"",
            "[\"a",
            "[\"a\",]",
            "[01]",
            "[1.]",
            "[1e400]",
            "[{\"a\" 1}]",
            "[\"\\x\"]",
            "[\"\t\"]",
            "[tru]",
        ] {
            assert_eq!(decode_array(bad), Decoded::NotJson, "{bad}");
        }
    }

    #[test]
    fn deep_nesting_is_bounded_not_recursive() {
        let deep = format!("[{}{}]", "[".repeat(20_000), "]".repeat(20_000));
        assert_eq!(decode_array(&deep), Decoded::NotJson);
        let ok = format!("[{}{}]", "[".repeat(9_000), "]".repeat(9_000));
        assert_eq!(decode_array(&ok), Decoded::NonString(1));
    }
}
