//! Heredoc openers (`<<EOF`, `<<-'EOF'`, `3<<EOF`) on RUN, COPY and ADD lines,
//! and the helpers to read them. The body itself is collected by the parser,
//! which owns the line reader.

mod lex;

/// A heredoc opener found on an instruction line; its body comes later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeredocOpener {
    /// The delimiter, quotes removed.
    pub name: String,
    /// False when any part of the opener was quoted.
    pub expand: bool,
    /// True for `<<-`.
    pub chomp: bool,
    /// The `N` of `N<<EOF`, 0 when absent.
    pub file_descriptor: u32,
}

/// An opener word that cannot be lexed (an unbalanced quote, a bad `${`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct HeredocError {
    pub message: String,
}

impl HeredocError {
    fn new(message: impl Into<String>) -> Self {
        HeredocError {
            message: message.into(),
        }
    }
}

/// Classifies one word: `Ok(Some)` for a heredoc opener, `Ok(None)` for any
/// other word, `Err` for an opener whose delimiter cannot be lexed.
///
/// The word has the shape `[digits]<<[-][blanks]delimiter`, where the
/// delimiter holds no `<` and lexes to exactly one shell word. It is lexed
/// twice, dropping and keeping quotes: if the counts of quote characters
/// differ, some part was quoted and the body must not be expanded. Escaped
/// quotes appear in both and so do not count.
pub fn parse_heredoc_word(word: &str) -> Result<Option<HeredocOpener>, HeredocError> {
    let digits = word.len() - word.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    let Some(after) = word[digits..].strip_prefix("<<") else {
        return Ok(None);
    };
    let (chomp, after) = match after.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, after),
    };
    let rest = after.trim_start_matches(['\t', '\n', '\u{c}', '\r', ' ']);
    if rest.is_empty() || rest.contains('<') {
        return Ok(None);
    }
    // Heredoc words are lexed with a backslash escape whatever the
    // Dockerfile's escape directive says, as BuildKit does.
    let plain = lex::lex_words(rest, '\\', false, false).map_err(HeredocError::new)?;
    let [(_, name)] = plain.as_slice() else {
        return Ok(None);
    };
    let raw = lex::lex_words(rest, '\\', true, false).map_err(HeredocError::new)?;
    let [(_, raw_name)] = raw.as_slice() else {
        return Err(HeredocError::new(format!(
            "internal lexing of heredoc produced inconsistent results: {rest}"
        )));
    };
    let quotes = |s: &str| s.chars().filter(|c| matches!(c, '\'' | '"')).count();
    let file_descriptor = match &word[..digits] {
        "" => 0,
        n => n.parse().unwrap_or(u32::MAX),
    };
    Ok(Some(HeredocOpener {
        name: name.clone(),
        expand: quotes(name) == quotes(raw_name),
        chomp,
        file_descriptor,
    }))
}

/// The heredoc openers on a whole instruction line, in order. The line is
/// split with quotes and escapes kept, so a quoted `"<<EOF"` is not an
/// opener; a line that cannot be split (an unbalanced quote) has none.
pub fn heredocs_from_line(line: &str, escape: char) -> Result<Vec<HeredocOpener>, HeredocError> {
    Ok(openers_with_offsets(line, escape)?
        .into_iter()
        .map(|(_, h)| h)
        .collect())
}

/// `heredocs_from_line`, with the byte offset of each opener word in `line`.
pub(crate) fn openers_with_offsets(
    line: &str,
    escape: char,
) -> Result<Vec<(usize, HeredocOpener)>, HeredocError> {
    // BuildKit ignores a line-level lexing failure: such a line has no heredocs.
    let words = lex::lex_words(line, escape, true, true).unwrap_or_default();
    let mut out = Vec::new();
    for (char_at, word) in words {
        if let Some(h) = parse_heredoc_word(&word)? {
            let byte_at = line
                .char_indices()
                .nth(char_at)
                .map_or(line.len(), |(b, _)| b);
            out.push((byte_at, h));
        }
    }
    Ok(out)
}

/// Removes the leading TABs of every line (what `<<-` asks for).
pub fn chomp(content: &str) -> String {
    content
        .split_inclusive('\n')
        .map(|line| line.trim_start_matches('\t'))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opener(word: &str) -> HeredocOpener {
        parse_heredoc_word(word).unwrap().unwrap()
    }

    #[test]
    fn reads_fd_chomp_and_quoting() {
        let h = opener("12<<-'EOF'");
        assert_eq!(
            (h.name.as_str(), h.expand, h.chomp, h.file_descriptor),
            ("EOF", false, true, 12)
        );
        assert!(opener("<<eo\\'f").expand);
        assert_eq!(opener("<<eo\\'f").name, "eo'f");
        assert!(!opener("<<'e'o\\'f").expand);
        assert_eq!(opener("99999999999<<X").file_descriptor, u32::MAX);
    }

    #[test]
    fn several_openers_with_chomp() {
        let hs = heredocs_from_line("COPY <<-A 3<<-'B' <<C /d", '\\').unwrap();
        let names: Vec<_> = hs
            .iter()
            .map(|h| (h.name.as_str(), h.chomp, h.file_descriptor))
            .collect();
        assert_eq!(names, [("A", true, 0), ("B", true, 3), ("C", false, 0)]);
        let at = openers_with_offsets("RUN  <<X", '\\').unwrap();
        assert_eq!(at[0].0, 5);
    }

    #[test]
    fn unbalanced_line_has_no_openers() {
        assert!(heredocs_from_line("RUN <<EOF 'oops", '\\')
            .unwrap()
            .is_empty());
        assert!(parse_heredoc_word("<<'EOF").is_err());
    }

    #[test]
    fn chomp_strips_tabs_only() {
        assert_eq!(chomp("\t\ta\n \tb\n\tc"), "a\n \tb\nc");
    }
}
