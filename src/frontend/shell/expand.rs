//! The word scanner behind [`Lexer`].
//!
//! One pass over the input chars builds both results side by side, as upstream does:
//! the single string, and the split words, where quoting and escaping decide whether a
//! white-space char separates words.

use std::collections::BTreeSet;

use super::{glob, is_digit, is_letter, Env, Lexer, ShellError};

pub(super) struct Output {
    pub text: String,
    pub words: Vec<String>,
    pub matched: BTreeSet<String>,
    pub unmatched: BTreeSet<String>,
}

pub(super) fn run(lexer: &Lexer, input: &str, env: &dyn Env) -> Result<Output, ShellError> {
    let chars: Vec<char> = input.chars().collect();
    // Upstream reads the word with Go's text/scanner, which skips a leading BOM.
    let pos = usize::from(chars.first() == Some(&'\u{feff}'));
    let mut scanner = Scanner {
        chars,
        pos,
        env,
        escape: lexer.escape,
        raw_quotes: lexer.raw_quotes,
        depth: 0,
        matched: BTreeSet::new(),
        unmatched: BTreeSet::new(),
    };
    let (text, words) = scanner.scan(None, lexer.raw_escapes)?;
    Ok(Output {
        text,
        words: words.finish(),
        matched: scanner.matched,
        unmatched: scanner.unmatched,
    })
}

/// Word splitting state: quoted or escaped chars always join the current word.
#[derive(Default)]
struct Words {
    done: Vec<String>,
    current: String,
}

impl Words {
    fn push_splitting(&mut self, c: char) {
        if c.is_whitespace() {
            self.flush();
        } else {
            self.current.push(c);
        }
    }

    fn push_splitting_str(&mut self, s: &str) {
        s.chars().for_each(|c| self.push_splitting(c));
    }

    fn flush(&mut self) {
        if !self.current.is_empty() {
            self.done.push(std::mem::take(&mut self.current));
        }
    }

    fn finish(mut self) -> Vec<String> {
        self.flush();
        self.done
    }
}

struct Scanner<'a> {
    chars: Vec<char>,
    pos: usize,
    env: &'a dyn Env,
    escape: char,
    raw_quotes: bool,
    /// How many `${...}` enclose the current position.
    depth: usize,
    matched: BTreeSet<String>,
    unmatched: BTreeSet<String>,
}

/// The scanner recurses once per enclosing `${...}`; a hostile word must not be able
/// to exhaust the stack, and no real Dockerfile comes near this.
const MAX_DEPTH: usize = 64;

impl Scanner<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    fn at_end(&self) -> bool {
        self.pos >= self.chars.len()
    }

    fn lookup(&mut self, name: &str) -> Option<String> {
        match self.env.get(name) {
            Some(value) => {
                self.matched.insert(name.to_string());
                Some(value.to_string())
            }
            None => {
                self.unmatched.insert(name.to_string());
                None
            }
        }
    }

    /// Scans up to `stop` (consumed), or to the end of input when `stop` is `None`.
    /// Running out of input before `stop` is an error the caller rewords.
    fn scan(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
    ) -> Result<(String, Words), ShellError> {
        let mut text = String::new();
        let mut words = Words::default();
        while let Some(c) = self.peek() {
            if Some(c) == stop {
                self.pos += 1;
                return Ok((text, words));
            }
            match c {
                '$' => {
                    let value = self.dollar()?;
                    text.push_str(&value);
                    words.push_splitting_str(&value);
                }
                '\'' | '"' if !self.raw_quotes => {
                    let quoted = if c == '\'' {
                        self.single_quoted()?
                    } else {
                        self.double_quoted(raw_escapes)?
                    };
                    text.push_str(&quoted);
                    words.current.push_str(&quoted);
                }
                _ => {
                    self.pos += 1;
                    if c != self.escape {
                        text.push(c);
                        words.push_splitting(c);
                        continue;
                    }
                    if raw_escapes {
                        text.push(c);
                        words.current.push(c);
                    }
                    // A trailing escape token is dropped (unless kept raw above).
                    let Some(escaped) = self.bump() else { break };
                    text.push(escaped);
                    words.current.push(escaped);
                }
            }
        }
        match stop {
            None => Ok((text, words)),
            Some(_) => Err(ShellError::MissingBrace { offset: self.pos }),
        }
    }

    /// A word nested in `${...}` ending at `stop`; hitting the end of input (even
    /// through an inner error) is reported as `on_end`, as upstream does.
    fn nested(
        &mut self,
        stop: char,
        raw_escapes: bool,
        on_end: ShellError,
    ) -> Result<String, ShellError> {
        match self.scan(Some(stop), raw_escapes) {
            Ok((text, _)) => Ok(text),
            Err(_) if self.at_end() => Err(on_end),
            Err(e) => Err(e),
        }
    }

    /// Everything up to the next `'` is literal; nothing escapes inside.
    fn single_quoted(&mut self) -> Result<String, ShellError> {
        let offset = self.pos;
        self.pos += 1;
        let mut text = String::new();
        loop {
            match self.bump() {
                None => return Err(ShellError::UnterminatedQuote { offset }),
                Some('\'') => return Ok(text),
                Some(c) => text.push(c),
            }
        }
    }

    /// `$` expands; the escape token escapes only `"`, `$` and itself and is kept
    /// before anything else.
    fn double_quoted(&mut self, raw_escapes: bool) -> Result<String, ShellError> {
        let offset = self.pos;
        self.pos += 1;
        let mut text = String::new();
        loop {
            match self.peek() {
                None => return Err(ShellError::UnterminatedQuote { offset }),
                Some('"') => {
                    self.pos += 1;
                    return Ok(text);
                }
                Some('$') => {
                    let value = self.dollar()?;
                    text.push_str(&value);
                }
                Some(c) => {
                    self.pos += 1;
                    if c != self.escape {
                        text.push(c);
                        continue;
                    }
                    // Upstream writes the token twice in raw mode before a char it
                    // does not escape (`"\a"` -> `\\a`); one copy is kept here.
                    match self.peek() {
                        Some(e) if e == '"' || e == '$' || e == self.escape => {
                            self.pos += 1;
                            if raw_escapes {
                                text.push(c);
                            }
                            text.push(e);
                        }
                        Some(_) => text.push(c),
                        None => {
                            if raw_escapes {
                                text.push(c);
                            }
                        }
                    }
                }
            }
        }
    }

    /// Reads a parameter name: a run of digits (positional), one special char, or
    /// letters, digits and `_`. Empty when nothing fits.
    fn name(&mut self) -> String {
        let mut name = String::new();
        match self.peek() {
            Some(c) if is_digit(c) => {
                while let Some(c) = self.peek().filter(|c| is_digit(*c)) {
                    name.push(c);
                    self.pos += 1;
                }
                return name;
            }
            Some(c @ ('@' | '*' | '#' | '?' | '-' | '$' | '!' | '0')) => {
                self.pos += 1;
                name.push(c);
                return name;
            }
            _ => {}
        }
        while let Some(c) = self
            .peek()
            .filter(|c| is_letter(*c) || is_digit(*c) || *c == '_')
        {
            name.push(c);
            self.pos += 1;
        }
        name
    }

    /// At a `$`: expands `$NAME` or `${...}`. A `$` that starts no name is literal.
    fn dollar(&mut self) -> Result<String, ShellError> {
        let start = self.pos;
        self.pos += 1;
        if self.peek() != Some('{') {
            let name = self.name();
            if name.is_empty() {
                return Ok("$".to_string());
            }
            return Ok(self.lookup(&name).unwrap_or_default());
        }
        self.pos += 1;
        if self.depth >= MAX_DEPTH {
            return Err(ShellError::TooDeep { offset: start });
        }
        self.depth += 1;
        let result = self.braced(start);
        self.depth -= 1;
        result
    }

    /// After `${`: the name and what follows it.
    fn braced(&mut self, start: usize) -> Result<String, ShellError> {
        match self.peek() {
            None => return Err(ShellError::MissingBrace { offset: start }),
            Some('{' | '}' | ':') => return Err(self.bad_substitution(start)),
            Some(_) => {}
        }
        let name = self.name();
        match self.bump() {
            None => Err(ShellError::MissingBrace { offset: start }),
            Some('}') => Ok(self.lookup(&name).unwrap_or_default()),
            Some('/') => self.replace(start, &name),
            Some(c @ (':' | '+' | '-' | '?' | '#' | '%')) => self.modifier(start, &name, c),
            Some(_) => Err(self.bad_substitution(start)),
        }
    }

    /// The `${...}` starting at `start`, up to the next `}`, for error messages.
    fn bad_substitution(&self, start: usize) -> ShellError {
        let from = self.pos.saturating_sub(1).max(start);
        let end = self.chars[from..]
            .iter()
            .position(|c| *c == '}')
            .map_or(self.chars.len(), |i| from + i + 1);
        ShellError::BadSubstitution {
            text: self.chars[start..end].iter().collect(),
            offset: start,
        }
    }

    /// `${V-w}`, `${V:-w}`, `+`, `?`, `#`, `##`, `%`, `%%`; `first` was just read.
    fn modifier(&mut self, start: usize, name: &str, first: char) -> Result<String, ShellError> {
        let colon = first == ':';
        let op = if colon {
            self.bump()
                .ok_or(ShellError::MissingBrace { offset: start })?
        } else {
            first
        };
        let pattern_op = op == '#' || op == '%';
        if colon && pattern_op {
            return Err(self.bad_substitution(start));
        }
        // Patterns keep their escapes so `\*` reaches the glob as a literal star.
        let word = self.nested('}', pattern_op, ShellError::MissingBrace { offset: start })?;
        let value = self.lookup(name);
        let missing = value.as_deref().is_none_or(|v| colon && v.is_empty());
        match op {
            '-' => Ok(if missing {
                word
            } else {
                value.unwrap_or_default()
            }),
            '+' => Ok(if missing { String::new() } else { word }),
            '?' if missing => {
                let message = if !word.is_empty() {
                    word
                } else if value.is_none() {
                    "is not allowed to be unset".to_string()
                } else {
                    "is not allowed to be empty".to_string()
                };
                Err(ShellError::Required {
                    name: name.to_string(),
                    message,
                    offset: start,
                })
            }
            '?' => Ok(value.unwrap_or_default()),
            '#' | '%' => {
                let value = value.unwrap_or_default();
                // `##` / `%%`: the doubled char is only recognised after expansion.
                let (greedy, pattern) = match word.strip_prefix(op) {
                    Some(rest) => (true, rest),
                    None => (false, word.as_str()),
                };
                let pattern: Vec<char> = pattern.chars().collect();
                let trimmed = if op == '#' {
                    glob::trim_prefix(&pattern, &value, greedy)
                } else {
                    glob::trim_suffix(&pattern, &value, greedy)
                };
                trimmed.map_err(|reason| ShellError::InvalidPattern {
                    pattern: pattern.iter().collect(),
                    reason,
                    offset: start,
                })
            }
            _ => Err(self.bad_substitution(start)),
        }
    }

    /// `${V/p/r}` and `${V//p/r}`; the first `/` was just read.
    fn replace(&mut self, start: usize, name: &str) -> Result<String, ShellError> {
        let all = self.peek() == Some('/');
        if all {
            self.pos += 1;
        }
        let pattern = self.nested('/', true, ShellError::MissingSlash { offset: start })?;
        let replacement = self.nested('}', true, ShellError::MissingBrace { offset: start })?;
        let value = self.lookup(name).unwrap_or_default();
        let pattern: Vec<char> = pattern.chars().collect();
        glob::replace(&pattern, &value, &replacement, all).map_err(|reason| {
            ShellError::InvalidPattern {
                pattern: pattern.iter().collect(),
                reason,
                offset: start,
            }
        })
    }
}
