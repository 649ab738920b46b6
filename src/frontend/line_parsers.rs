//! Per-instruction argument parsers: how the text after an instruction's
//! keyword and flags becomes its argument nodes. Each instruction family
//! splits differently (JSON arrays, white space, quote-aware words, name/value
//! triples), mirroring BuildKit's dispatch table so that parse dumps match.

mod json;

use std::fmt;

use json::Decoded;

/// BuildKit's wording for a JSON array holding something other than strings.
pub const NOT_STRING_ARRAY: &str =
    "when using JSON array syntax, arrays must be comprised of strings only";

/// A JSON array with a non-string element: always a hard error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonArrayError {
    /// Byte offset, within the text given, of the first non-string element.
    pub offset: usize,
}

impl fmt::Display for JsonArrayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(NOT_STRING_ARRAY)
    }
}

impl std::error::Error for JsonArrayError {}

/// An argument-level error, located by byte offset within the text parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    pub message: String,
    pub offset: usize,
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for LineError {}

impl From<JsonArrayError> for LineError {
    fn from(e: JsonArrayError) -> Self {
        LineError {
            message: NOT_STRING_ARRAY.to_string(),
            offset: e.offset,
        }
    }
}

/// The argument nodes of one instruction.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Args {
    pub values: Vec<String>,
    /// True when the values came from a JSON array (exec form).
    pub json: bool,
}

impl Args {
    fn plain(values: Vec<String>) -> Self {
        Args {
            values,
            json: false,
        }
    }
}

/// Parses `rest` (the trimmed text after keyword and flags) the way the
/// instruction `keyword` (lower case) wants. ONBUILD is not handled here: its
/// argument is a whole instruction, which the parser builds itself.
pub fn parse_args(keyword: &str, rest: &str, escape: char) -> Result<Args, LineError> {
    match keyword {
        "add" | "copy" | "volume" => Ok(maybe_json_to_list(rest)?),
        "cmd" | "entrypoint" | "run" | "shell" => Ok(maybe_json(rest)?),
        "arg" => Ok(Args::plain(parse_words(rest, escape))),
        "env" => name_val(rest, "ENV", escape).map(Args::plain),
        "label" => name_val(rest, "LABEL", escape).map(Args::plain),
        "expose" | "from" => Ok(Args::plain(split_on_blanks(rest))),
        "healthcheck" => Ok(health_config(rest)?),
        "maintainer" | "stopsignal" | "user" | "workdir" => Ok(Args::plain(single(rest))),
        _ => Ok(Args::default()),
    }
}

/// True for the characters Go's `unicode.IsSpace` accepts (the Unicode
/// White_Space property, which is also what Rust uses).
fn is_space(c: char) -> bool {
    c.is_whitespace()
}

/// The blanks of BuildKit's `[\t\v\f\r ]+` splitter (a narrower set than `is_space`).
fn is_blank(c: char) -> bool {
    matches!(c, '\t' | '\u{b}' | '\u{c}' | '\r' | ' ')
}

/// Splits on runs of `[\t\v\f\r ]` (used by FROM, EXPOSE and the non-JSON
/// form of ADD, COPY and VOLUME); quotes mean nothing here.
pub fn split_on_blanks(rest: &str) -> Vec<String> {
    if rest.is_empty() {
        return Vec::new();
    }
    rest.split(is_blank)
        .enumerate()
        .filter(|(i, part)| *i == 0 || !part.is_empty())
        .map(|(_, part)| part.to_string())
        .collect()
}

/// Splits at the first run of `[\t\v\f\r ]`: `(head, tail)`, tail `None` if no blank.
pub fn split_once_on_blanks(text: &str) -> (&str, Option<(usize, &str)>) {
    let Some(start) = text.find(is_blank) else {
        return (text, None);
    };
    let after = &text[start..];
    let tail_at = start + (after.len() - after.trim_start_matches(is_blank).len());
    (&text[..start], Some((tail_at, &text[tail_at..])))
}

fn single(rest: &str) -> Vec<String> {
    if rest.is_empty() {
        Vec::new()
    } else {
        vec![rest.to_string()]
    }
}

/// Quote-aware word splitting for ENV, LABEL and ARG: white space outside
/// quotes separates words; quotes and escape tokens are kept in the words
/// (they are removed later, when the words are expanded).
pub fn parse_words(rest: &str, escape: char) -> Vec<String> {
    words_with_offsets(rest, escape)
        .into_iter()
        .map(|(_, w)| w)
        .collect()
}

/// `parse_words`, with the byte offset where each word starts.
fn words_with_offsets(rest: &str, escape: char) -> Vec<(usize, String)> {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote(char),
    }
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut word = String::new();
    let mut start = 0;
    // A quoted empty string ('' or "") is still a word.
    let mut blank_ok = false;
    let mut chars = rest.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        let last = chars.peek().is_none();
        if phase == Phase::Spaces {
            if is_space(c) {
                continue;
            }
            phase = Phase::Word;
            start = at;
        }
        match phase {
            Phase::Spaces => {}
            Phase::Word => {
                if is_space(c) {
                    if blank_ok || !word.is_empty() {
                        words.push((start, std::mem::take(&mut word)));
                    }
                    word.clear();
                    blank_ok = false;
                    phase = Phase::Spaces;
                    continue;
                }
                if c == '\'' || c == '"' {
                    phase = Phase::Quote(c);
                    blank_ok = true;
                }
                if c == escape {
                    if last {
                        // A lone escape token at the very end is dropped.
                        continue;
                    }
                    // Unquoted, the escape and the escaped character are both
                    // kept, even when the latter is a quote.
                    word.push(c);
                    if let Some((_, next)) = chars.next() {
                        word.push(next);
                    }
                    continue;
                }
                word.push(c);
            }
            Phase::Quote(q) => {
                if c == q {
                    phase = Phase::Word;
                } else if c == escape && q != '\'' {
                    if last {
                        phase = Phase::Word;
                        continue;
                    }
                    word.push(c);
                    if let Some((_, next)) = chars.next() {
                        word.push(next);
                    }
                    continue;
                }
                word.push(c);
            }
        }
    }
    if phase != Phase::Spaces && (blank_ok || !word.is_empty()) {
        words.push((start, word));
    }
    words
}

/// ENV and LABEL: `key value...` (legacy: key, the rest verbatim, `""`) or
/// `k=v k2=v2` (triples key, value, `"="`).
fn name_val(rest: &str, key: &str, escape: char) -> Result<Vec<String>, LineError> {
    let words = words_with_offsets(rest, escape);
    let Some((_, first)) = words.first() else {
        return Ok(Vec::new());
    };
    if !first.contains('=') {
        return match split_once_on_blanks(rest) {
            (name, Some((_, value))) => {
                Ok(vec![name.to_string(), value.to_string(), String::new()])
            }
            (_, None) => Err(LineError {
                message: format!("{key} must have two arguments"),
                offset: 0,
            }),
        };
    }
    let mut out = Vec::with_capacity(words.len() * 3);
    for (at, word) in words {
        let Some((k, v)) = word.split_once('=') else {
            return Err(LineError {
                message: format!(
                    "Syntax error - can't find = in {}. Must be of the form: name=value",
                    super::ast::go_quote(&word)
                ),
                offset: at,
            });
        };
        out.push(k.to_string());
        out.push(v.to_string());
        out.push("=".to_string());
    }
    Ok(out)
}

/// Decodes an exec-form array. `Ok(None)`: the text is not a JSON array
/// (callers fall back to their plain form); `Err`: it is one, but holds a
/// non-string, which BuildKit treats as fatal. Leading white space is
/// allowed; anything after the closing `]` is ignored, as in BuildKit.
pub fn parse_json_array(text: &str) -> Result<Option<Vec<String>>, JsonArrayError> {
    let body = text.trim_start_matches(is_space);
    if !body.starts_with('[') {
        return Ok(None);
    }
    let lead = text.len() - body.len();
    match json::decode_array(body) {
        Decoded::NotJson => Ok(None),
        Decoded::Strings(v) => Ok(Some(v)),
        Decoded::NonString(at) => Err(JsonArrayError { offset: lead + at }),
    }
}

/// RUN, CMD, ENTRYPOINT, SHELL: a JSON array, or the whole text as one node.
fn maybe_json(rest: &str) -> Result<Args, JsonArrayError> {
    if rest.is_empty() {
        return Ok(Args::default());
    }
    Ok(match parse_json_array(rest)? {
        Some(values) => Args { values, json: true },
        None => Args::plain(vec![rest.to_string()]),
    })
}

/// ADD, COPY, VOLUME: a JSON array, or the text split on blanks.
fn maybe_json_to_list(rest: &str) -> Result<Args, JsonArrayError> {
    Ok(match parse_json_array(rest)? {
        Some(values) => Args { values, json: true },
        None => Args::plain(split_on_blanks(rest)),
    })
}

/// HEALTHCHECK: the first word (`CMD`, `NONE`, ...), then the rest like CMD.
fn health_config(rest: &str) -> Result<Args, LineError> {
    // BuildKit scans bytes here; only ASCII white space can separate.
    let sep = rest
        .find(|c: char| c.is_ascii_whitespace() || c == '\u{b}')
        .unwrap_or(rest.len());
    if sep == 0 {
        return Ok(Args::default());
    }
    let tail = rest[sep..].trim_start_matches(|c: char| c.is_ascii_whitespace() || c == '\u{b}');
    let tail_at = rest.len() - tail.len();
    let cmd = maybe_json(tail).map_err(|e| {
        LineError::from(JsonArrayError {
            offset: tail_at + e.offset,
        })
    })?;
    let mut values = vec![rest[..sep].to_string()];
    values.extend(cmd.values);
    Ok(Args {
        values,
        json: cmd.json,
    })
}

/// Splits the leading `--flag[=value]` words off `text` (the text after the
/// keyword). Returns the flags, quotes removed and `\` escapes applied, and
/// the byte offset where the remaining text starts. A bare `--` ends the
/// flags and is dropped.
pub fn extract_flags(text: &str) -> (Vec<String>, usize) {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote(char),
    }
    let mut flags = Vec::new();
    let mut phase = Phase::Spaces;
    let mut word = String::new();
    let mut blank_ok = false;
    let mut chars = text.char_indices();
    while let Some((at, c)) = chars.next() {
        if phase == Phase::Spaces {
            if is_space(c) {
                continue;
            }
            if !text[at..].starts_with("--") {
                return (flags, at);
            }
            phase = Phase::Word;
        }
        match phase {
            Phase::Spaces => {}
            Phase::Word => {
                if is_space(c) {
                    if word == "--" {
                        return (flags, at);
                    }
                    if blank_ok || !word.is_empty() {
                        flags.push(std::mem::take(&mut word));
                    }
                    word.clear();
                    blank_ok = false;
                    phase = Phase::Spaces;
                    continue;
                }
                if c == '\'' || c == '"' {
                    phase = Phase::Quote(c);
                    blank_ok = true;
                    continue;
                }
                // BuildKit escapes flag words with a backslash whatever the
                // escape directive says.
                if c == '\\' {
                    match chars.next() {
                        Some((_, next)) => word.push(next),
                        None => continue,
                    }
                    continue;
                }
                word.push(c);
            }
            Phase::Quote(q) => {
                if c == q {
                    phase = Phase::Word;
                    continue;
                }
                if c == '\\' {
                    match chars.next() {
                        Some((_, next)) => word.push(next),
                        None => phase = Phase::Word,
                    }
                    continue;
                }
                word.push(c);
            }
        }
    }
    if phase != Phase::Spaces && word != "--" && (blank_ok || !word.is_empty()) {
        flags.push(word);
    }
    (flags, text.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn words_keep_quotes_and_escapes() {
        assert_eq!(
            parse_words(r#"a="b c" d\ e 'f g'"#, '\\'),
            s(&[r#"a="b c""#, r"d\ e", "'f g'"])
        );
        assert_eq!(parse_words(r"x=``y` z", '`'), s(&["x=``y` z"]));
        assert_eq!(parse_words("a\\", '\\'), s(&["a"]));
        assert_eq!(parse_words("'' \"\"", '\\'), s(&["''", "\"\""]));
        assert_eq!(parse_words("  ", '\\'), Vec::<String>::new());
    }

    #[test]
    fn flags_stop_at_first_plain_word() {
        assert_eq!(extract_flags("--a=1 --b foo"), (s(&["--a=1", "--b"]), 10));
        assert_eq!(extract_flags("--a -- --b"), (s(&["--a"]), 6));
        assert_eq!(extract_flags("--x=\"a b\" c"), (s(&["--x=a b"]), 10));
        assert_eq!(extract_flags("--"), (s(&[]), 2));
        assert_eq!(extract_flags("-x"), (s(&[]), 0));
        assert_eq!(extract_flags("--a\\"), (s(&["--a"]), 4));
    }

    #[test]
    fn env_forms() {
        assert_eq!(
            name_val("a b  c", "ENV", '\\').unwrap(),
            s(&["a", "b  c", ""])
        );
        assert_eq!(
            name_val("a=1 b=\"2 3\"", "ENV", '\\').unwrap(),
            s(&["a", "1", "=", "b", "\"2 3\"", "="])
        );
        let e = name_val("a=1 b", "LABEL", '\\').unwrap_err();
        assert_eq!(e.offset, 4);
        assert!(e.message.contains("can't find = in \"b\""));
        assert_eq!(
            name_val("a", "LABEL", '\\').unwrap_err().message,
            "LABEL must have two arguments"
        );
    }

    #[test]
    fn healthcheck_splits_type_then_cmd() {
        let a = parse_args("healthcheck", "CMD [\"a\"]", '\\').unwrap();
        assert_eq!(
            a,
            Args {
                values: s(&["CMD", "a"]),
                json: true
            }
        );
        let e = parse_args("healthcheck", "CMD [\"a\", 1]", '\\').unwrap_err();
        assert_eq!(e.offset, 10);
        assert_eq!(
            parse_args("healthcheck", "NONE", '\\').unwrap().values,
            s(&["NONE"])
        );
    }

    #[test]
    fn blanks_split_but_nbsp_does_not() {
        assert_eq!(split_on_blanks("a \t b\u{a0}c"), s(&["a", "b\u{a0}c"]));
        assert_eq!(split_once_on_blanks("a  b c"), ("a", Some((3, "b c"))));
    }
}
