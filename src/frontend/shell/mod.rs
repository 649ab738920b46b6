//! Dockerfile shell-word expansion, matching BuildKit's `shell.Lex`.
//!
//! A word is scanned once: quotes are removed, the escape token is applied and `$`
//! forms are expanded. [`Lexer::process_word`] returns that as one string; and
//! [`Lexer::process_words`] splits it on white space that was neither quoted nor
//! escaped (white space coming out of an unquoted expansion does split).
//!
//! Supported forms: `$V`, `${V}`, `${V:-w}`, `${V-w}`, `${V:+w}`, `${V+w}`,
//! `${V:?w}`, `${V?w}`, `${V#p}`, `${V##p}`, `${V%p}`, `${V%%p}`, `${V/p/r}` and
//! `${V//p/r}`. Positional (`$1`, `${10}`) and special (`$@ $* $# $? $- $$ $! $0`)
//! parameters are accepted but never set. Names are case-sensitive (Unix rules).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::OnceLock;

use regex::Regex;

mod expand;
mod glob;
#[cfg(test)]
mod tests;

/// Variable lookup for expansion (names are case-sensitive).
pub trait Env {
    fn get(&self, name: &str) -> Option<&str>;
}

impl Env for BTreeMap<String, String> {
    fn get(&self, name: &str) -> Option<&str> {
        BTreeMap::get(self, name).map(String::as_str)
    }
}

impl Env for HashMap<String, String> {
    fn get(&self, name: &str) -> Option<&str> {
        HashMap::get(self, name).map(String::as_str)
    }
}

impl<E: Env + ?Sized> Env for &E {
    fn get(&self, name: &str) -> Option<&str> {
        (**self).get(name)
    }
}

/// An ordered `NAME=value` list, read the way BuildKit reads env lists: an entry
/// without `=` defines the name as empty, and the last entry of a name wins (it keeps
/// the position of the name's first entry).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvList(Vec<(String, String)>);

impl EnvList {
    pub fn from_list<S: AsRef<str>>(list: &[S]) -> Self {
        let mut env = Self::default();
        for entry in list {
            let entry = entry.as_ref();
            let (name, value) = entry.split_once('=').unwrap_or((entry, ""));
            env.set(name, value);
        }
        env
    }

    /// Defines `name`, replacing any earlier value.
    pub fn set(&mut self, name: &str, value: &str) {
        match self.0.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = value.to_string(),
            None => self.0.push((name.to_string(), value.to_string())),
        }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The entries in order of first definition.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }
}

impl Env for EnvList {
    fn get(&self, name: &str) -> Option<&str> {
        EnvList::get(self, name)
    }
}

/// The expander. `escape` is the Dockerfile escape token (`\` or `` ` ``).
///
/// `raw_quotes`: quote characters are ordinary literal characters; they neither group
/// nor stop expansion (BuildKit's `SkipProcessQuotes`, used for heredoc bodies).
/// `raw_escapes`: the escape token is kept in the output, though it still protects
/// the character after it (so `\$V` stays `\$V`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lexer {
    pub escape: char,
    pub raw_quotes: bool,
    pub raw_escapes: bool,
}

impl Default for Lexer {
    fn default() -> Self {
        Self::new('\\')
    }
}

/// The result of an expansion with the variable names it looked up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expansion {
    pub value: String,
    /// Names that were looked up and found.
    pub matched: BTreeSet<String>,
    /// Names that were looked up and not found (including positional and special
    /// parameters such as `1` or `@`).
    pub unmatched: BTreeSet<String>,
}

/// Why a word could not be expanded. `offset` is the char index in the input word
/// where the offending construct starts: the opening quote, or the `$` of `${...}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShellError {
    #[error("unterminated quoted string")]
    UnterminatedQuote { offset: usize },
    #[error("missing '}}'")]
    MissingBrace { offset: usize },
    #[error("missing '/' in substitution")]
    MissingSlash { offset: usize },
    /// An empty or invalid name, or an unsupported modifier; `text` is the construct.
    #[error("bad substitution: {text}")]
    BadSubstitution { text: String, offset: usize },
    /// `${V?msg}` / `${V:?msg}` on an unset (or empty) variable.
    #[error("{name}: {message}")]
    Required {
        name: String,
        message: String,
        offset: usize,
    },
    #[error("substitutions nested too deeply")]
    TooDeep { offset: usize },
    #[error("invalid pattern in substitution {pattern:?}: {reason}")]
    InvalidPattern {
        pattern: String,
        reason: String,
        offset: usize,
    },
}

impl ShellError {
    pub fn offset(&self) -> usize {
        match self {
            Self::UnterminatedQuote { offset }
            | Self::MissingBrace { offset }
            | Self::MissingSlash { offset }
            | Self::TooDeep { offset }
            | Self::BadSubstitution { offset, .. }
            | Self::Required { offset, .. }
            | Self::InvalidPattern { offset, .. } => *offset,
        }
    }
}

impl Lexer {
    pub fn new(escape: char) -> Self {
        Self {
            escape,
            raw_quotes: false,
            raw_escapes: false,
        }
    }

    /// Expands `word` into one string: no splitting, no globbing.
    pub fn process_word(&self, word: &str, env: &dyn Env) -> Result<String, ShellError> {
        Ok(expand::run(self, word, env)?.text)
    }

    /// Like [`Lexer::process_word`], also reporting which names were looked up.
    pub fn process_word_with_matches(
        &self,
        word: &str,
        env: &dyn Env,
    ) -> Result<Expansion, ShellError> {
        let out = expand::run(self, word, env)?;
        Ok(Expansion {
            value: out.text,
            matched: out.matched,
            unmatched: out.unmatched,
        })
    }

    /// Expands `word` and splits it into words on unquoted, unescaped white space,
    /// including white space produced by unquoted expansions. Never yields empty words.
    pub fn process_words(&self, word: &str, env: &dyn Env) -> Result<Vec<String>, ShellError> {
        Ok(expand::run(self, word, env)?.words)
    }
}

/// Go's `unicode.IsLetter` (general category L), which upstream uses for names.
fn is_letter(c: char) -> bool {
    static LETTER: OnceLock<Option<Regex>> = OnceLock::new();
    if c.is_ascii() {
        return c.is_ascii_alphabetic();
    }
    unicode_class(c, &LETTER, r"\A\p{L}\z").unwrap_or_else(|| c.is_alphabetic())
}

/// Go's `unicode.IsDigit` (general category Nd).
fn is_digit(c: char) -> bool {
    static DIGIT: OnceLock<Option<Regex>> = OnceLock::new();
    if c.is_ascii() {
        return c.is_ascii_digit();
    }
    unicode_class(c, &DIGIT, r"\A\p{Nd}\z").unwrap_or(false)
}

/// Tests one char against a Unicode class; `None` only if the class failed to compile.
fn unicode_class(c: char, cell: &OnceLock<Option<Regex>>, class: &str) -> Option<bool> {
    let re = cell.get_or_init(|| Regex::new(class).ok()).as_ref()?;
    let mut buf = [0u8; 4];
    Some(re.is_match(c.encode_utf8(&mut buf)))
}
