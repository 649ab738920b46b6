//! The slice of shell-word lexing that heredoc detection needs: BuildKit
//! finds heredoc openers by lexing the instruction line (and then each opener
//! word) with its shell lexer, so quotes, escapes, `$` references and `<<`
//! must group characters into words exactly as that lexer does. Variables are
//! never expanded here: an unset reference is kept as written.

/// Nested `${...}` deeper than this is refused instead of risking the stack.
const MAX_NESTING: usize = 64;

/// Splits `text` into words, each with the char index where it starts.
/// `raw_quotes` keeps quote characters in the words; `raw_escapes` keeps
/// escape tokens.
pub(super) fn lex_words(
    text: &str,
    escape: char,
    raw_quotes: bool,
    raw_escapes: bool,
) -> Result<Vec<(usize, String)>, String> {
    let mut lexer = Lexer {
        chars: text.chars().collect(),
        pos: 0,
        escape,
        raw_quotes,
        raw_escapes,
        depth: 0,
    };
    lexer
        .process_until(None, raw_escapes)
        .map(|(_, words)| words)
        .map_err(|e| {
            format!(
                "failed to process {}: {e}",
                super::super::ast::go_quote(text)
            )
        })
}

struct Lexer {
    chars: Vec<char>,
    pos: usize,
    escape: char,
    raw_quotes: bool,
    raw_escapes: bool,
    depth: usize,
}

/// Word accumulation: white space separates words unless it was quoted,
/// escaped or absorbed after `<<`.
#[derive(Default)]
struct Words {
    done: Vec<(usize, String)>,
    word: String,
    start: usize,
    in_word: bool,
}

impl Words {
    fn add_char(&mut self, c: char, at: usize) {
        if c.is_whitespace() {
            if self.in_word && !self.word.is_empty() {
                self.done.push((self.start, std::mem::take(&mut self.word)));
                self.in_word = false;
            }
        } else {
            self.add_raw_char(c, at);
        }
    }

    fn add_raw_char(&mut self, c: char, at: usize) {
        self.begin(at);
        self.word.push(c);
    }

    fn add_string(&mut self, s: &str, at: usize) {
        for c in s.chars() {
            self.add_char(c, at);
        }
    }

    fn add_raw_string(&mut self, s: &str, at: usize) {
        self.begin(at);
        self.word.push_str(s);
    }

    fn begin(&mut self, at: usize) {
        if !self.in_word {
            self.start = at;
            self.in_word = true;
        }
    }

    fn finish(mut self) -> Vec<(usize, String)> {
        if !self.word.is_empty() {
            self.done.push((self.start, self.word));
        }
        self.done
    }
}

impl Lexer {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    /// Reads until `stop` (consumed) or the end of input; returns the text
    /// read (after quote and escape processing) and the words it formed.
    fn process_until(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
    ) -> Result<(String, Vec<(usize, String)>), String> {
        if self.depth >= MAX_NESTING {
            return Err("substitutions nested too deeply".to_string());
        }
        self.depth += 1;
        let saved = std::mem::replace(&mut self.raw_escapes, raw_escapes);
        let out = self.process_inner(stop);
        self.raw_escapes = saved;
        self.depth -= 1;
        out
    }

    fn process_inner(
        &mut self,
        stop: Option<char>,
    ) -> Result<(String, Vec<(usize, String)>), String> {
        let mut result = String::new();
        let mut words = Words::default();
        while let Some(c) = self.peek() {
            let at = self.pos;
            if stop == Some(c) {
                self.pos += 1;
                return Ok((result, words.finish()));
            }
            match c {
                '$' => {
                    let s = self.dollar()?;
                    result.push_str(&s);
                    // Expanded text is split again, like an unquoted expansion.
                    words.add_string(&s, at);
                }
                '\'' | '"' | '<' => {
                    let s = match c {
                        '\'' => self.single_quote()?,
                        '"' => self.double_quote()?,
                        _ => self.possible_heredoc(),
                    };
                    result.push_str(&s);
                    words.add_raw_string(&s, at);
                }
                _ => {
                    self.pos += 1;
                    if c == self.escape {
                        if self.raw_escapes {
                            words.add_raw_char(c, at);
                            result.push(c);
                        }
                        let Some(next) = self.next() else {
                            break;
                        };
                        words.add_raw_char(next, at);
                        result.push(next);
                    } else {
                        words.add_char(c, at);
                        result.push(c);
                    }
                }
            }
        }
        if let Some(stop) = stop {
            return Err(format!(
                "unexpected end of statement while looking for matching {stop}"
            ));
        }
        Ok((result, words.finish()))
    }

    fn single_quote(&mut self) -> Result<String, String> {
        let mut out = String::new();
        let quote = self.next();
        if self.raw_quotes {
            out.extend(quote);
        }
        loop {
            match self.next() {
                None => {
                    return Err(
                        "unexpected end of statement while looking for matching single-quote"
                            .to_string(),
                    )
                }
                Some('\'') => {
                    if self.raw_quotes {
                        out.push('\'');
                    }
                    return Ok(out);
                }
                Some(c) => out.push(c),
            }
        }
    }

    fn double_quote(&mut self) -> Result<String, String> {
        let mut out = String::new();
        let quote = self.next();
        if self.raw_quotes {
            out.extend(quote);
        }
        loop {
            match self.peek() {
                None => {
                    return Err(
                        "unexpected end of statement while looking for matching double-quote"
                            .to_string(),
                    )
                }
                Some('"') => {
                    self.pos += 1;
                    if self.raw_quotes {
                        out.push('"');
                    }
                    return Ok(out);
                }
                Some('$') => {
                    let s = self.dollar()?;
                    out.push_str(&s);
                }
                Some(mut c) => {
                    self.pos += 1;
                    if c == self.escape {
                        if self.raw_escapes {
                            out.push(c);
                        }
                        match self.peek() {
                            None => continue,
                            // Only these can be escaped inside double quotes;
                            // before anything else the escape stays literal.
                            Some(n) if n == '"' || n == '$' || n == self.escape => {
                                self.pos += 1;
                                c = n;
                            }
                            Some(_) => {}
                        }
                    }
                    out.push(c);
                }
            }
        }
    }

    /// `$name`, `${name}` and `${name<op>word}`, all unset: kept as written.
    fn dollar(&mut self) -> Result<String, String> {
        self.pos += 1;
        if self.peek() != Some('{') {
            let name = self.name();
            return Ok(format!("${name}"));
        }
        self.pos += 1;
        match self.peek() {
            None => return Err("syntax error: missing '}'".to_string()),
            Some('{' | '}' | ':') => return Err("syntax error: bad substitution".to_string()),
            Some(_) => {}
        }
        let name = self.name();
        let op = self.next();
        let show = |c: Option<char>| c.unwrap_or('\u{FFFD}');
        match op {
            Some('}') => Ok(format!("${{{name}}}")),
            Some(':' | '+' | '-' | '?' | '#' | '%') => {
                let mut ops = String::from(show(op));
                let mut kind = op;
                if op == Some(':') {
                    kind = self.next();
                    ops.push(show(kind));
                }
                let raw = matches!(kind, Some('#' | '%'));
                let (word, _) = self.sub_until('}', raw, "syntax error: missing '}'")?;
                Ok(format!("${{{name}{ops}{word}}}"))
            }
            Some('/') => {
                if self.peek() == Some('/') {
                    self.pos += 1;
                }
                let (pattern, _) = self.sub_until('/', true, "syntax error: missing '/' in ${}")?;
                let (replacement, _) = self.sub_until('}', true, "syntax error: missing '}'")?;
                Ok(format!("${{{name}/{pattern}/{replacement}}}"))
            }
            other => Err(format!(
                "unsupported modifier ({}) in substitution",
                show(other)
            )),
        }
    }

    /// A nested read up to `stop`; running out of input reports `missing`.
    fn sub_until(
        &mut self,
        stop: char,
        raw_escapes: bool,
        missing: &str,
    ) -> Result<(String, Vec<(usize, String)>), String> {
        self.process_until(Some(stop), raw_escapes).map_err(|e| {
            if self.peek().is_none() {
                missing.to_string()
            } else {
                e
            }
        })
    }

    /// A variable name: a run of digits, one special character, or letters,
    /// digits and underscores.
    fn name(&mut self) -> String {
        let mut name = String::new();
        while let Some(c) = self.peek() {
            if name.is_empty() && c.is_numeric() {
                while let Some(d) = self.peek().filter(|d| d.is_numeric()) {
                    self.pos += 1;
                    name.push(d);
                }
                return name;
            }
            if name.is_empty() && matches!(c, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0') {
                self.pos += 1;
                name.push(c);
                return name;
            }
            if !c.is_alphanumeric() && c != '_' {
                break;
            }
            self.pos += 1;
            name.push(c);
        }
        name
    }

    /// `<<` keeps the white space after it in the same word, so that
    /// `<<  EOF` is one word; a single `<` is ordinary text.
    fn possible_heredoc(&mut self) -> String {
        self.pos += 1;
        if self.peek() != Some('<') {
            return "<".to_string();
        }
        self.pos += 1;
        let mut out = String::from("<<");
        while let Some(c) = self.peek().filter(|c| c.is_whitespace()) {
            self.pos += 1;
            out.push(c);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str, raw_quotes: bool, raw_escapes: bool) -> Vec<String> {
        lex_words(text, '\\', raw_quotes, raw_escapes)
            .unwrap()
            .into_iter()
            .map(|(_, w)| w)
            .collect()
    }

    #[test]
    fn groups_heredoc_openers() {
        assert_eq!(
            words("RUN <<  EOF  > foo", true, true),
            ["RUN", "<<  EOF", ">", "foo"]
        );
        assert_eq!(words("RUN <<- EOF", true, true), ["RUN", "<<-", "EOF"]);
        assert_eq!(words("a<b", true, true), ["a<b"]);
    }

    #[test]
    fn quotes_and_escapes() {
        assert_eq!(words("'e'o\\'f", false, false), ["eo'f"]);
        assert_eq!(words("'e'o\\'f", true, false), ["'e'o'f"]);
        assert_eq!(words("'a b' \"c d\"", false, false), ["a b", "c d"]);
        assert_eq!(words("a\\ b", false, false), ["a b"]);
        assert_eq!(words("a\\ b", true, true), ["a\\ b"]);
        assert!(lex_words("'abc", '\\', false, false).is_err());
        assert!(lex_words("\"abc", '\\', false, false).is_err());
    }

    #[test]
    fn unset_variables_are_kept() {
        assert_eq!(
            words("$EOF ${A} ${B:-x} ${C/a/b} $", false, false),
            ["$EOF", "${A}", "${B:-x}", "${C/a/b}", "$"]
        );
        assert!(lex_words("${", '\\', false, false).is_err());
        assert!(lex_words("${}", '\\', false, false).is_err());
        assert!(lex_words("${a", '\\', false, false).is_err());
    }

    #[test]
    fn nesting_is_bounded() {
        let deep = "${a:-".repeat(10_000);
        assert!(lex_words(&deep, '\\', false, false).is_err());
    }
}
