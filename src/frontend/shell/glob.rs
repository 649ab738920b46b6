//! Shell glob patterns of `${V#p}`, `${V%p}` and `${V/p/r}`.
//!
//! BuildKit turns these globs into Go regular expressions, so the match chosen among
//! several candidates is the one a leftmost-first regex engine picks, and `?` and `*`
//! (which become `.`) never match a newline. The matcher here is a small Pike VM so
//! that it reproduces those priorities exactly with no backtracking blow-up and no
//! recursion, whatever the input.

use super::{is_digit, is_letter};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    Lit(char),
    Any,
    Star,
}

/// A parsed pattern. `greedy` decides whether every `*` prefers the longest run
/// (`##`, `%%`, `/`) or the shortest (`#`, `%`).
struct Glob {
    tokens: Vec<Token>,
    greedy: bool,
}

#[derive(Clone, Copy)]
struct Thread {
    state: usize,
    start: usize,
}

enum Work {
    Closure(usize),
    Emit(usize),
}

impl Glob {
    /// `\*`, `\?` and `\\` are literals; `\}` and `\/` had to be escaped to sit inside
    /// `${...}`, so the backslash is dropped there. Any other escape is an error, as
    /// upstream.
    fn parse(pattern: &[char], greedy: bool) -> Result<Self, String> {
        let mut tokens = Vec::with_capacity(pattern.len());
        let mut chars = pattern.iter().copied().peekable();
        // Go's text/scanner, used upstream to read the pattern, skips a leading BOM.
        if chars.peek() == Some(&'\u{feff}') {
            chars.next();
        }
        while let Some(c) = chars.next() {
            let token = match c {
                '*' => Token::Star,
                '?' => Token::Any,
                '\\' => match chars.peek().copied() {
                    Some('}' | '/') => continue,
                    Some(e @ ('*' | '?' | '\\')) => {
                        chars.next();
                        Token::Lit(e)
                    }
                    Some(e) => return Err(format!("invalid escape '\\{e}'")),
                    None => return Err("invalid escape at end of pattern".to_string()),
                },
                c => Token::Lit(c),
            };
            tokens.push(token);
        }
        Ok(Self { tokens, greedy })
    }

    /// Adds the epsilon closure of `state` to `list` in priority order. A `Star` entry
    /// in a list stands for "consume one more character and stay on this star".
    fn add(&self, list: &mut Vec<Thread>, seen: &mut [usize], mark: usize, thread: Thread) {
        let mut work = vec![Work::Closure(thread.state)];
        while let Some(item) = work.pop() {
            let state = match item {
                Work::Emit(state) => {
                    list.push(Thread { state, ..thread });
                    continue;
                }
                Work::Closure(state) => state,
            };
            if seen[state] == mark {
                continue;
            }
            seen[state] = mark;
            if self.tokens.get(state) == Some(&Token::Star) {
                if self.greedy {
                    list.push(Thread { state, ..thread });
                    work.push(Work::Closure(state + 1));
                } else {
                    // Stack order: the skip branch (pushed last) is explored first.
                    work.push(Work::Emit(state));
                    work.push(Work::Closure(state + 1));
                }
            } else {
                list.push(Thread { state, ..thread });
            }
        }
    }

    /// The match a leftmost-first engine reports, searching from `from`; with
    /// `anchored` only a match starting exactly at `from` counts.
    fn find(&self, text: &[char], from: usize, anchored: bool) -> Option<(usize, usize)> {
        let accept = self.tokens.len();
        // `seen[state] == pos + 1` means the state is already in the list for `pos`.
        let mut seen = vec![0usize; accept + 1];
        let mut current = Vec::new();
        let mut next = Vec::new();
        let mut found = None;
        let mut pos = from;
        loop {
            if found.is_none() && (!anchored || pos == from) {
                let seed = Thread {
                    state: 0,
                    start: pos,
                };
                self.add(&mut current, &mut seen, pos + 1, seed);
            }
            if current.is_empty() {
                break;
            }
            let ch = text.get(pos).copied();
            next.clear();
            for thread in &current {
                let target = match self.tokens.get(thread.state) {
                    None => {
                        // Lower-priority threads lose to this match; higher ones ran already.
                        found = Some((thread.start, pos));
                        break;
                    }
                    Some(Token::Lit(l)) if ch == Some(*l) => thread.state + 1,
                    Some(Token::Any) if ch.is_some_and(|c| c != '\n') => thread.state + 1,
                    Some(Token::Star) if ch.is_some_and(|c| c != '\n') => thread.state,
                    Some(_) => continue,
                };
                let moved = Thread {
                    state: target,
                    ..*thread
                };
                self.add(&mut next, &mut seen, pos + 2, moved);
            }
            if ch.is_none() {
                break;
            }
            std::mem::swap(&mut current, &mut next);
            pos += 1;
        }
        found
    }
}

/// `${V#p}` / `${V##p}`: drops the matching prefix.
pub(super) fn trim_prefix(pattern: &[char], value: &str, greedy: bool) -> Result<String, String> {
    let glob = Glob::parse(pattern, greedy)?;
    let text: Vec<char> = value.chars().collect();
    Ok(match glob.find(&text, 0, true) {
        Some((_, end)) => text[end..].iter().collect(),
        None => value.to_string(),
    })
}

/// `${V%p}` / `${V%%p}`: drops the matching suffix. Like upstream, both the pattern
/// and the value are reversed and a prefix is trimmed, which is what decides the
/// shortest/longest choice.
pub(super) fn trim_suffix(pattern: &[char], value: &str, greedy: bool) -> Result<String, String> {
    let glob = Glob::parse(&reverse_pattern(pattern), greedy)?;
    let text: Vec<char> = value.chars().rev().collect();
    Ok(match glob.find(&text, 0, true) {
        Some((_, end)) => value.chars().take(text.len() - end).collect(),
        None => value.to_string(),
    })
}

/// Reverses a pattern while keeping each `\x` pair in order, so escapes survive.
fn reverse_pattern(pattern: &[char]) -> Vec<char> {
    let mut pairs: Vec<&[char]> = Vec::with_capacity(pattern.len());
    let mut i = 0;
    while i < pattern.len() {
        let len = if pattern[i] == '\\' && i + 1 < pattern.len() {
            2
        } else {
            1
        };
        pairs.push(&pattern[i..i + len]);
        i += len;
    }
    pairs.into_iter().rev().flatten().copied().collect()
}

/// `${V/p/r}` (first match) and `${V//p/r}` (every match).
///
/// The replace-all path mirrors Go's `ReplaceAllString`: an empty match right after a
/// previous match is not replaced, the search always advances, and the replacement
/// is a template in which `$0`/`${0}` is the match, `$$` is `$`, and other `$name`
/// references are empty. The single replacement is used literally, as upstream.
pub(super) fn replace(
    pattern: &[char],
    value: &str,
    replacement: &str,
    all: bool,
) -> Result<String, String> {
    let glob = Glob::parse(pattern, true)?;
    let text: Vec<char> = value.chars().collect();
    if !all {
        return Ok(match glob.find(&text, 0, false) {
            Some((start, end)) => {
                let mut out: String = text[..start].iter().collect();
                out.push_str(replacement);
                out.extend(&text[end..]);
                out
            }
            None => value.to_string(),
        });
    }
    let mut out = String::new();
    let mut last_end = 0;
    let mut search = 0;
    while search <= text.len() {
        let Some((start, end)) = glob.find(&text, search, false) else {
            break;
        };
        out.extend(&text[last_end..start]);
        if end > last_end || start == 0 {
            expand_template(&mut out, replacement, &text[start..end]);
        }
        last_end = end;
        search = if end <= search { search + 1 } else { end };
    }
    out.extend(&text[last_end..]);
    Ok(out)
}

/// Go's regexp template expansion for a pattern without capture groups.
fn expand_template(out: &mut String, template: &str, matched: &[char]) {
    let chars: Vec<char> = template.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] != '$' {
            out.push(chars[i]);
            i += 1;
            continue;
        }
        i += 1;
        if chars.get(i) == Some(&'$') {
            out.push('$');
            i += 1;
            continue;
        }
        match template_ref(&chars[i..]) {
            Some((name, used)) => {
                if name == ['0'] {
                    out.extend(matched);
                }
                i += used;
            }
            // A malformed reference leaves the `$` as text.
            None => out.push('$'),
        }
    }
}

/// Parses `name` or `{name}` at the start of `rest`: the name and the chars used.
fn template_ref(rest: &[char]) -> Option<(&[char], usize)> {
    let braced = rest.first() == Some(&'{');
    let body = if braced { &rest[1..] } else { rest };
    let len = body
        .iter()
        .take_while(|c| is_letter(**c) || is_digit(**c) || **c == '_')
        .count();
    if len == 0 {
        return None;
    }
    if braced {
        if body.get(len) != Some(&'}') {
            return None;
        }
        return Some((&body[..len], len + 2));
    }
    Some((&body[..len], len))
}
