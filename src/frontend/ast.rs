//! The parsed (not yet typed) form of a Dockerfile: one [`Node`] per
//! instruction, shaped like BuildKit's parser nodes so that its `result`
//! dumps can be reproduced byte for byte.

use super::error::Pos;

/// A heredoc attached to a RUN, COPY or ADD instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heredoc {
    /// The delimiter with quotes removed (`EOF` for `<<'EOF'`).
    pub name: String,
    /// The body, raw: every line with its newline, tabs kept even for `<<-`.
    pub content: String,
    /// False when any part of the opener was quoted: the body is not expanded.
    pub expand: bool,
    /// True for `<<-`: leading tabs are to be stripped when the body is used.
    pub chomp: bool,
    /// The `N` of `N<<EOF` (0 when absent).
    pub file_descriptor: u32,
}

/// One instruction as parsed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Node {
    /// The instruction word, lower-cased (`run`, `copy`, or an unknown word).
    pub keyword: String,
    /// The leading `--flag[=value]` words, quotes removed, `--` dropped.
    pub flags: Vec<String>,
    /// The argument nodes in order (for ENV/LABEL: key, value, separator triples).
    pub args: Vec<String>,
    /// True when the arguments came from a JSON (exec-form) array.
    pub json: bool,
    /// For ONBUILD: the instruction it wraps.
    pub onbuild: Option<Box<Node>>,
    /// Heredocs opened on this instruction's line, in order.
    pub heredocs: Vec<Heredoc>,
    /// The logical line as written after joining continuations (no heredoc bodies).
    pub original: String,
    /// The text after the keyword and flags, trimmed (what the args were parsed from).
    pub rest: String,
    /// Where the instruction keyword starts.
    pub pos: Pos,
    /// The last physical line this instruction consumed (continuations and heredocs included).
    pub end_line: usize,
    /// Comment lines directly above the instruction, `#` and one space removed.
    pub comments: Vec<String>,
}

impl Node {
    /// BuildKit's `Node.Dump()` format, without the surrounding parentheses.
    pub fn dump(&self) -> String {
        let mut s = self.keyword.to_lowercase();
        if !self.flags.is_empty() {
            let quoted: Vec<String> = self.flags.iter().map(|f| go_quote(f)).collect();
            s.push_str(" [");
            s.push_str(&quoted.join(" "));
            s.push(']');
        }
        if let Some(inner) = &self.onbuild {
            s.push_str(" (");
            s.push_str(&inner.dump());
            s.push(')');
        }
        for a in &self.args {
            s.push(' ');
            s.push_str(&go_quote(a));
        }
        s
    }

    /// The keyword as written, upper-cased, for messages (`RUN`, `COPY`).
    pub fn name(&self) -> String {
        self.keyword.to_uppercase()
    }
}

/// Renders a whole file in the conformance `result` format: one `(…)` line per
/// instruction, each followed by a newline.
pub fn dump_nodes(nodes: &[Node]) -> String {
    let mut out = String::new();
    for n in nodes {
        out.push('(');
        out.push_str(&n.dump());
        out.push_str(")\n");
    }
    out
}

/// Quotes like Go's `strconv.Quote`, which is what the `result` files use.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\x07' => out.push_str("\\a"),
            '\x08' => out.push_str("\\b"),
            '\x0c' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\x0b' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if go_printable(c) => out.push(c),
            c if (c as u32) < 0x10000 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    out.push('"');
    out
}

/// An approximation of Go's `unicode.IsPrint` without Unicode tables: controls,
/// spaces other than U+0020, format characters and private-use code points
/// are not printable. Unassigned code points are treated as printable.
fn go_printable(c: char) -> bool {
    let u = c as u32;
    if c == ' ' {
        return true;
    }
    if c.is_control() || c.is_whitespace() {
        return false;
    }
    let format_or_private = matches!(u,
        0xAD | 0x600..=0x605 | 0x61C | 0x6DD | 0x70F | 0x180E
        | 0x200B..=0x200F | 0x2028..=0x202E | 0x2060..=0x2064 | 0x2066..=0x206F
        | 0xFEFF | 0xFFF9..=0xFFFB | 0xE000..=0xF8FF | 0xD800..=0xDFFF
        | 0xF0000..=0x10FFFF | 0xE0001 | 0xE0020..=0xE007F);
    !format_or_private
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_like_go() {
        assert_eq!(go_quote("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(go_quote("\t\n\x01\x7f"), r#""\t\n\x01\x7f""#);
        assert_eq!(go_quote("♥ 안녕"), "\"♥ 안녕\"");
        assert_eq!(go_quote("\u{a0}\u{feff}"), r#""\u00a0\ufeff""#);
        assert_eq!(go_quote("\0"), r#""\x00""#);
    }

    #[test]
    fn dumps_flags_args_and_onbuild() {
        let inner = Node {
            keyword: "run".into(),
            args: vec!["make".into()],
            ..Default::default()
        };
        let n = Node {
            keyword: "onbuild".into(),
            onbuild: Some(Box::new(inner)),
            ..Default::default()
        };
        assert_eq!(n.dump(), r#"onbuild (run "make")"#);
        let c = Node {
            keyword: "copy".into(),
            flags: vec!["--user=me".into(), "--doit=true".into()],
            args: vec!["foo".into(), "/tmp/".into()],
            ..Default::default()
        };
        assert_eq!(
            dump_nodes(&[c]),
            "(copy [\"--user=me\" \"--doit=true\"] \"foo\" \"/tmp/\")\n"
        );
    }
}
