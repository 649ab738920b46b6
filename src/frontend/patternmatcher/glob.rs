//! Go `filepath.Match` glob syntax with `/` as the separator and `\` as the
//! escape: the up-front check every pattern must pass, bracket expressions,
//! and matching one glob against one name.

use std::iter::Peekable;
use std::str::Chars;

/// A bracket expression (`[...]` or `[^...]`) as inclusive ranges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Class {
    pub negated: bool,
    pub ranges: Vec<(char, char)>,
}

impl Class {
    /// Go's classes do not treat the separator specially: `[^a]` matches `/`.
    pub fn contains(&self, c: char) -> bool {
        let inside = self.ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi);
        inside != self.negated
    }
}

/// Parses a bracket expression; `chars` is positioned just after the `[`.
///
/// Go's rules: at least one member; a member is one character or a `\`
/// escape; `-` and `]` must be escaped unless `-` separates a range; the
/// class must be closed.
pub(crate) fn parse_class(chars: &mut Peekable<Chars<'_>>) -> Result<Class, &'static str> {
    let negated = chars.next_if_eq(&'^').is_some();
    let mut ranges = Vec::new();
    loop {
        if !ranges.is_empty() && chars.next_if_eq(&']').is_some() {
            return Ok(Class { negated, ranges });
        }
        let lo = class_member(chars)?;
        let hi = if chars.next_if_eq(&'-').is_some() {
            class_member(chars)?
        } else {
            lo
        };
        ranges.push((lo, hi));
    }
}

fn class_member(chars: &mut Peekable<Chars<'_>>) -> Result<char, &'static str> {
    match chars.next() {
        None => Err("unclosed character class"),
        Some('-') => Err("unescaped '-' in character class"),
        Some(']') => Err("unescaped ']' in character class"),
        Some('\\') => chars.next().ok_or("unclosed character class"),
        Some(c) => Ok(c),
    }
}

/// The syntax check `filepath.Match` performs: every `[` opens a valid
/// class and no `\` is left without a character to escape.
pub(crate) fn validate(pattern: &str) -> Result<(), &'static str> {
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                chars.next().ok_or("trailing backslash")?;
            }
            '[' => {
                parse_class(&mut chars)?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// Returns true when the glob has a wildcard (`*`, `?` or `[`) that is not
/// escaped.
pub(crate) fn has_wildcards(pattern: &str) -> bool {
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                chars.next();
            }
            '*' | '?' | '[' => return true,
            _ => {}
        }
    }
    false
}

enum Token {
    Star,
    Any,
    Literal(char),
    Class(Class),
}

fn tokens(pattern: &str) -> Result<Vec<Token>, &'static str> {
    let mut out = Vec::new();
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        out.push(match c {
            '*' => Token::Star,
            '?' => Token::Any,
            '\\' => Token::Literal(chars.next().ok_or("trailing backslash")?),
            '[' => Token::Class(parse_class(&mut chars)?),
            c => Token::Literal(c),
        });
    }
    Ok(out)
}

/// `filepath.Match(pattern, name)`: `*` and `?` never match `/`. A pattern
/// that fails [`validate`] matches nothing.
pub(crate) fn match_name(pattern: &str, name: &str) -> bool {
    let Ok(toks) = tokens(pattern) else {
        return false;
    };
    let text: Vec<char> = name.chars().collect();
    // rest[j]: does the token suffix starting at the current token match text[j..]?
    // Filled from the last token backwards, so the cost is tokens x chars.
    let mut rest = vec![false; text.len() + 1];
    if let Some(last) = rest.last_mut() {
        *last = true;
    }
    for tok in toks.iter().rev() {
        let mut cur = vec![false; text.len() + 1];
        for j in (0..=text.len()).rev() {
            let here = text.get(j).copied();
            cur[j] = match tok {
                Token::Star => rest[j] || (here.is_some_and(|c| c != '/') && cur[j + 1]),
                Token::Any => here.is_some_and(|c| c != '/') && rest[j + 1],
                Token::Literal(l) => here == Some(*l) && rest[j + 1],
                Token::Class(class) => here.is_some_and(|c| class.contains(c)) && rest[j + 1],
            };
        }
        rest = cur;
    }
    rest[0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_follows_go_filepath_match() {
        for ok in [
            "a", "[a-c]", "[^a]", "[\\]a]", "[\\-]", "[a*]", "a\\*", "]", "a]b",
        ] {
            assert_eq!(validate(ok), Ok(()), "{ok}");
        }
        for bad in [
            "[", "[^", "a[", "[]a]", "[-]", "[x-]", "[-x]", "[a-b-c]", "a\\", "[a\\",
        ] {
            assert!(validate(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn name_matching() {
        assert!(match_name("a*b", "axxb"));
        assert!(!match_name("a*b", "a/b"));
        assert!(match_name("a**b", "axb"));
        assert!(match_name("[^a]", "/"));
        assert!(match_name("l*", "l1"));
        assert!(!match_name("l?", "l"));
        assert!(match_name("\\*", "*"));
        assert!(!match_name("\\*", "x"));
        assert!(match_name("", ""));
        assert!(!match_name("[", "["));
        assert!(match_name("*[a-ζ]", "xα"));
    }

    #[test]
    fn wildcard_detection_respects_escapes() {
        assert!(has_wildcards("l*"));
        assert!(has_wildcards("[ab]"));
        assert!(!has_wildcards("l\\*"));
        assert!(!has_wildcards("plain"));
    }
}
