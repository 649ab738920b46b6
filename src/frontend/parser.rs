//! Dockerfile text → [`Node`]s, the way BuildKit's parser does it: parser
//! directives at the top, comments, continuation lines joined with the
//! escape token, `--flags` split off, per-instruction argument parsing and
//! heredoc bodies read after their instruction line.

mod lines;

use super::ast::{Heredoc, Node};
use super::directives::{Directive, DirectiveParser, Directives, Prefix};
use super::error::{DockerfileError, Pos, Warning};
use super::heredoc::{openers_with_offsets, HeredocOpener};
use super::line_parsers::{extract_flags, parse_args, split_once_on_blanks};
use lines::{Lines, Logical, PhysicalLine, MAX_LINE};

/// `ONBUILD ONBUILD ...` is rejected later anyway; past this depth the parser
/// rejects it itself rather than build an unboundedly deep tree.
const MAX_ONBUILD_NESTING: usize = 16;

/// A parsed Dockerfile.
#[derive(Debug, Clone)]
pub struct Parsed {
    /// File name and full text, for building located errors later.
    pub file: String,
    pub source: String,
    /// The escape token in effect: `\` or `` ` ``.
    pub escape: char,
    pub directives: Directives,
    /// Top-level instructions in order.
    pub nodes: Vec<Node>,
    pub warnings: Vec<Warning>,
    /// First and last physical line (1-based) of the instructions.
    pub start_line: usize,
    pub end_line: usize,
}

/// Parses a whole Dockerfile.
pub fn parse(file: &str, source: &str) -> Result<Parsed, DockerfileError> {
    Parser {
        file,
        source,
        lines: Lines::new(source),
        escape: '\\',
        directive_parser: DirectiveParser::new(Prefix::Hash),
        directives: Directives::default(),
        warnings: Vec::new(),
    }
    .run()
}

struct Parser<'a> {
    file: &'a str,
    source: &'a str,
    lines: Lines<'a>,
    escape: char,
    directive_parser: DirectiveParser,
    directives: Directives,
    warnings: Vec<Warning>,
}

impl<'a> Parser<'a> {
    fn error(&self, pos: Pos, message: impl Into<String>) -> DockerfileError {
        DockerfileError::new(self.file, self.source, pos, message)
    }

    fn next_line(&mut self) -> Result<Option<PhysicalLine<'a>>, DockerfileError> {
        self.lines.next_line().map_err(|line| {
            self.error(
                Pos::new(line, 1),
                format!("dockerfile line greater than max allowed size of {MAX_LINE}"),
            )
        })
    }

    fn run(mut self) -> Result<Parsed, DockerfileError> {
        let mut nodes: Vec<Node> = Vec::new();
        let mut start_line = 0;
        let mut comments: Vec<String> = Vec::new();
        while let Some(first) = self.next_line()? {
            let trimmed = first.text.trim_start();
            let col = first.first_col
                + first.text[..first.text.len() - trimmed.len()]
                    .chars()
                    .count();
            let is_comment = trimmed.starts_with('#');
            if let Some(text) = trimmed.strip_prefix('#') {
                // BuildKit's doc-comment rule: a bare `#` clears what was collected.
                match text.trim() {
                    "" => comments.clear(),
                    c => comments.push(c.to_string()),
                }
            }
            let directive = self
                .directive_parser
                .parse_line(trimmed, first.no, col)
                .map_err(|e| self.error(e.pos, e.message))?;
            if let Some(d) = directive {
                // A directive is not a doc comment.
                comments.pop();
                self.apply_directive(d, trimmed, col)?;
            }

            let content = if is_comment { "" } else { trimmed };
            let (content, ended) = lines::trim_continuation(content, self.escape);
            if ended && content.is_empty() {
                continue;
            }
            let mut logical = Logical::default();
            logical.push(content, first.no, col);
            let mut end_line = if ended {
                first.no
            } else {
                self.join_continuations(&mut logical, first.no)?
            };

            let mut node = self.build_node(&logical)?;
            node.comments = std::mem::take(&mut comments);
            self.read_heredocs(&mut node, &logical, &mut end_line)?;
            let mut level = Some(&mut node);
            while let Some(n) = level {
                n.end_line = end_line;
                level = n.onbuild.as_deref_mut();
            }
            if nodes.is_empty() {
                start_line = first.no;
            }
            nodes.push(node);
        }
        let Some(end_line) = nodes.last().map(|n| n.end_line) else {
            let line = self.lines.read().max(1);
            return Err(self.error(Pos::new(line, 1), "file with no instructions"));
        };
        Ok(Parsed {
            file: self.file.to_string(),
            source: self.source.to_string(),
            escape: self.escape,
            directives: self.directives,
            nodes,
            warnings: self.warnings,
            start_line,
            end_line,
        })
    }

    /// Appends continuation lines to `logical` until one does not end with
    /// the escape token (or the file ends); returns the last line consumed.
    fn join_continuations(
        &mut self,
        logical: &mut Logical,
        first_line: usize,
    ) -> Result<usize, DockerfileError> {
        let mut end_line = first_line;
        let mut saw_empty = false;
        while let Some(next) = self.next_line()? {
            end_line = next.no;
            let lead_trimmed = next.text.trim_start();
            // Comments inside a continuation are dropped; blank lines too,
            // but BuildKit warns about those.
            if lead_trimmed.starts_with('#') {
                continue;
            }
            if lead_trimmed.is_empty() {
                saw_empty = true;
                continue;
            }
            let (piece, ended) = lines::trim_continuation(next.text, self.escape);
            logical.push(piece, next.no, next.first_col);
            if ended {
                break;
            }
        }
        if saw_empty {
            self.warnings.push(Warning {
                pos: Pos::new(end_line, 1),
                short: format!("Empty continuation line found in: {}", logical.text),
                detail: "Empty continuation lines will become errors in a future release"
                    .to_string(),
            });
        }
        Ok(end_line)
    }

    /// Records a directive; `escape` also switches the escape token at once.
    fn apply_directive(
        &mut self,
        d: Directive,
        line: &str,
        col: usize,
    ) -> Result<(), DockerfileError> {
        let slot = match d.name.as_str() {
            "escape" => {
                if d.value != "`" && d.value != "\\" {
                    // The value is the last thing on the line: point at it.
                    let end = line
                        .trim_end_matches(['\t', '\n', '\u{c}', '\r', ' '])
                        .len();
                    let at = end.saturating_sub(d.value.len());
                    let vcol = col + line.get(..at).map_or(0, |s| s.chars().count());
                    return Err(self.error(
                        Pos::new(d.pos.line, vcol),
                        format!("invalid escape token '{}' does not match ` or \\", d.value),
                    ));
                }
                self.escape = if d.value == "`" { '`' } else { '\\' };
                &mut self.directives.escape
            }
            "syntax" => &mut self.directives.syntax,
            _ => &mut self.directives.check,
        };
        *slot = Some(d);
        Ok(())
    }

    /// Builds the node for one logical line. ONBUILD wraps the instruction
    /// written after it; the chain is built iteratively, innermost last.
    fn build_node(&self, logical: &Logical) -> Result<Node, DockerfileError> {
        let mut outer: Vec<Node> = Vec::new();
        let mut base = 0;
        let mut line = logical.text.as_str();
        let mut node = loop {
            let split = split_command(line);
            let keyword = split.keyword.to_lowercase();
            let mut node = Node {
                keyword,
                flags: split.flags,
                original: line.to_string(),
                rest: split.rest.to_string(),
                pos: logical.pos_at(base + split.keyword_at),
                ..Node::default()
            };
            if node.keyword == "onbuild" {
                if split.rest.is_empty() {
                    break node;
                }
                if outer.len() >= MAX_ONBUILD_NESTING {
                    return Err(self.error(
                        node.pos,
                        "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed",
                    ));
                }
                base += split.rest_at;
                line = split.rest;
                outer.push(node);
                continue;
            }
            let args = parse_args(&node.keyword, split.rest, self.escape).map_err(|e| {
                self.error(logical.pos_at(base + split.rest_at + e.offset), e.message)
            })?;
            node.args = args.values;
            node.json = args.json;
            break node;
        };
        while let Some(mut parent) = outer.pop() {
            parent.onbuild = Some(Box::new(node));
            node = parent;
        }
        Ok(node)
    }

    /// Reads the bodies of the heredocs opened on a RUN, COPY or ADD line (or
    /// ONBUILD of one) in shell form, attaching them to that instruction.
    fn read_heredocs(
        &mut self,
        node: &mut Node,
        logical: &Logical,
        end_line: &mut usize,
    ) -> Result<(), DockerfileError> {
        let target = node.onbuild.as_deref().unwrap_or(node);
        let capable = matches!(target.keyword.as_str(), "run" | "copy" | "add") && !target.json;
        let line = logical.text.as_str();
        if !capable || !line.contains("<<") {
            return Ok(());
        }
        // BuildKit lexes the line with a backslash escape, whatever the directive.
        let openers = openers_with_offsets(line, '\\').map_err(|e| {
            let at = line.find("<<").unwrap_or(0);
            self.error(logical.pos_at(at), e.message)
        })?;
        let mut heredocs = Vec::with_capacity(openers.len());
        for (at, opener) in openers {
            heredocs.push(self.read_body(opener, logical.pos_at(at), end_line)?);
        }
        match node.onbuild.as_deref_mut() {
            Some(inner) => inner.heredocs = heredocs,
            None => node.heredocs = heredocs,
        }
        Ok(())
    }

    /// Collects body lines, raw, up to the delimiter line.
    fn read_body(
        &mut self,
        opener: HeredocOpener,
        opened_at: Pos,
        end_line: &mut usize,
    ) -> Result<Heredoc, DockerfileError> {
        let mut content = String::new();
        loop {
            let Some(line) = self.next_line()? else {
                return Err(self.error(opened_at, "unterminated heredoc"));
            };
            *end_line = line.no;
            let candidate = if opener.chomp {
                line.text.trim_start_matches('\t')
            } else {
                line.text
            };
            if candidate == opener.name {
                break;
            }
            content.push_str(line.raw);
        }
        Ok(Heredoc {
            name: opener.name,
            content,
            expand: opener.expand,
            chomp: opener.chomp,
            file_descriptor: opener.file_descriptor,
        })
    }
}

/// An instruction line cut into keyword, flags and the rest.
struct Split<'a> {
    keyword: &'a str,
    keyword_at: usize,
    flags: Vec<String>,
    rest: &'a str,
    rest_at: usize,
}

/// Splits at the first run of blanks into the keyword and its arguments,
/// then takes the leading `--flags` off the arguments.
fn split_command(line: &str) -> Split<'_> {
    let body = line.trim_start();
    let lead = line.len() - body.len();
    let body = body.trim_end();
    let (keyword, tail) = split_once_on_blanks(body);
    let Some((tail_at, tail)) = tail else {
        return Split {
            keyword,
            keyword_at: lead,
            flags: Vec::new(),
            rest: "",
            rest_at: lead + body.len(),
        };
    };
    let (flags, after_flags) = extract_flags(tail);
    let remainder = &tail[after_flags..];
    let rest = remainder.trim();
    let rest_at = lead + tail_at + after_flags + (remainder.len() - remainder.trim_start().len());
    Split {
        keyword,
        keyword_at: lead,
        flags,
        rest,
        rest_at,
    }
}

#[cfg(test)]
mod tests;
