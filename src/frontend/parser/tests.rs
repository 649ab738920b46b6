//! Parser behaviour the conformance vectors do not pin down.

use super::*;
use crate::frontend::ast::dump_nodes;

fn ok(src: &str) -> Parsed {
    match parse("Dockerfile", src) {
        Ok(p) => p,
        Err(e) => panic!("parse failed: {e}"),
    }
}

fn err(src: &str) -> DockerfileError {
    match parse("Dockerfile", src) {
        Ok(p) => panic!("expected an error, got {}", dump_nodes(&p.nodes)),
        Err(e) => e,
    }
}

#[test]
fn backtick_escape_joins_continuations() {
    let p = ok("# escape=`\nFROM x\nRUN dir c:\\ `\n  && echo `\n\n  done\nCOPY a\\ b c:\\\n");
    assert_eq!(p.escape, '`');
    assert_eq!(
        dump_nodes(&p.nodes),
        "(from \"x\")\n(run \"dir c:\\\\   && echo   done\")\n(copy \"a\\\\\" \"b\" \"c:\\\\\")\n"
    );
    assert_eq!(p.warnings.len(), 1);
    assert_eq!((p.nodes[1].pos, p.nodes[1].end_line), (Pos::new(3, 1), 6));
    assert_eq!(
        p.directives.escape.as_ref().map(|d| d.value.as_str()),
        Some("`")
    );
}

#[test]
fn several_chomped_heredocs_on_one_line() {
    let p = ok("FROM x\nCOPY <<-A <<-'B' /dst/\n\ta\n\tA\n\t\tb $x\n\t\tB\nRUN true\n");
    let c = &p.nodes[1];
    assert_eq!(c.args, ["<<-A", "<<-'B'", "/dst/"]);
    let got: Vec<_> = c
        .heredocs
        .iter()
        .map(|h| (h.name.as_str(), h.content.as_str(), h.expand, h.chomp))
        .collect();
    assert_eq!(
        got,
        [("A", "\ta\n", true, true), ("B", "\t\tb $x\n", false, true)]
    );
    assert_eq!(c.end_line, 6);
    assert_eq!(p.nodes[2].pos.line, 7);
}

#[test]
fn heredoc_inside_onbuild_run() {
    let p = ok("FROM x\nONBUILD RUN --network=none <<EOF\necho hi\nEOF\n");
    let outer = &p.nodes[1];
    assert_eq!(
        dump_nodes(&p.nodes[1..]),
        "(onbuild (run [\"--network=none\"] \"<<EOF\"))\n"
    );
    assert!(outer.heredocs.is_empty());
    let inner = outer.onbuild.as_deref().expect("inner node");
    assert_eq!(inner.heredocs.len(), 1);
    assert_eq!(inner.heredocs[0].content, "echo hi\n");
    assert_eq!(
        (inner.pos, inner.end_line, outer.end_line),
        (Pos::new(2, 9), 4, 4)
    );
    assert_eq!(inner.original, "RUN --network=none <<EOF");
}

#[test]
fn onbuild_json_form_opens_no_heredoc() {
    let p = ok("ONBUILD RUN [\"<<EOF\"]\nEOF\n");
    assert_eq!(dump_nodes(&p.nodes), "(onbuild (run \"<<EOF\"))\n(eof)\n");
}

#[test]
fn crlf_line_endings() {
    let p = ok("FROM x\r\nRUN a \\\r\n  b\r\nRUN <<EOF\r\nline\r\nEOF\r\n");
    assert_eq!(p.nodes[1].args, ["a   b"]);
    assert_eq!(p.nodes[2].heredocs[0].content, "line\r\n");
    assert_eq!(p.end_line, 6);
}

#[test]
fn heredoc_after_a_continuation() {
    let p = ok("FROM x\nRUN --mount=type=cache,target=/c \\\n  <<EOF\nbody\nEOF\nRUN y\n");
    let r = &p.nodes[1];
    assert_eq!(r.flags, ["--mount=type=cache,target=/c"]);
    assert_eq!(r.heredocs[0].content, "body\n");
    assert_eq!((r.pos.line, r.end_line), (2, 5));
    assert_eq!(p.nodes[2].pos.line, 6);
}

#[test]
fn unterminated_heredoc_points_at_opener() {
    let e = err("FROM x\nRUN cat <<EOF\nnever closed\n");
    assert_eq!(e.message(), "unterminated heredoc");
    assert_eq!(e.pos, Pos::new(2, 9));
    // The second of two openers is unterminated.
    let e = err("COPY <<A <<B /\nA\n");
    assert_eq!(e.pos, Pos::new(1, 10));
}

#[test]
fn directives_after_a_blank_line_are_comments() {
    let p = ok("\n# escape=`\nFROM x\nRUN a `\nb\n");
    assert_eq!(p.escape, '\\');
    assert_eq!(p.directives, Directives::default());
    assert_eq!(dump_nodes(&p.nodes), "(from \"x\")\n(run \"a `\")\n(b)\n");
    assert_eq!(p.nodes[0].comments, ["escape=`"]);
}

#[test]
fn invalid_escape_value_is_located() {
    let e = err("# syntax=x\n#  escape =  $  \nFROM x\n");
    assert_eq!(
        e.message(),
        "invalid escape token '$' does not match ` or \\"
    );
    assert_eq!(e.pos, Pos::new(2, 14));
    let e = err("# escape=\\\n# escape=\\\nFROM x\n");
    assert_eq!(e.message(), "only one escape parser directive can be used");
    assert_eq!(e.pos, Pos::new(2, 3));
}

#[test]
fn comments_attach_to_the_next_instruction() {
    let p =
        ok("# syntax=x\n# one\n  #   two  \nFROM a\n# three\n#\n# four\nRUN b \\\n# not me\n c\n");
    assert_eq!(p.nodes[0].comments, ["one", "two"]);
    assert_eq!(p.nodes[1].comments, ["four"]);
    assert_eq!(p.nodes[0].pos, Pos::new(4, 1));
}

#[test]
fn errors_point_at_the_offending_token() {
    let e = err("FROM x\nCMD [\"a\", {\"b\": 1}]\n");
    assert!(e.message().starts_with("when using JSON array syntax"));
    assert_eq!(e.pos, Pos::new(2, 11));
    let e = err("FROM x\nCMD [\"a\", \\\n  {\"b\": 1}]\n");
    assert_eq!(e.pos, Pos::new(3, 3));
    let e = err("FROM x\n  ENV  A");
    assert_eq!(
        (e.message(), e.pos),
        ("ENV must have two arguments", Pos::new(2, 8))
    );
    let e = err("LABEL a=b c");
    assert_eq!(e.pos, Pos::new(1, 11));
}

#[test]
fn line_limit_and_empty_files() {
    let e = err(&format!("FROM x\nRUN {}\n", "a".repeat(MAX_LINE)));
    assert_eq!(
        e.message(),
        "dockerfile line greater than max allowed size of 65535"
    );
    assert_eq!(e.pos, Pos::new(2, 1));
    ok(&format!("FROM x\nRUN {}\n", "a".repeat(MAX_LINE - 4)));
    assert_eq!(err("").pos, Pos::new(1, 1));
    assert_eq!(err("\n\n# c\n").message(), "file with no instructions");
}

#[test]
fn flags_keyword_case_and_positions() {
    let p = ok("\u{feff}  from --platform=$P a AS b\n\tcopy --chmod=\"7 55\" -- --x y\n");
    assert_eq!(
        dump_nodes(&p.nodes),
        "(from [\"--platform=$P\"] \"a\" \"AS\" \"b\")\n(copy [\"--chmod=7 55\"] \"--x\" \"y\")\n"
    );
    assert_eq!(p.nodes[0].pos, Pos::new(1, 4));
    assert_eq!(p.nodes[0].rest, "a AS b");
    assert_eq!(p.nodes[1].pos, Pos::new(2, 2));
    assert_eq!(p.nodes[0].original, "from --platform=$P a AS b");
}

#[test]
fn deep_onbuild_chains_are_refused_not_overflowed() {
    let src = format!("{}RUN x\n", "ONBUILD ".repeat(5000));
    assert!(err(&src).message().contains("ONBUILD ONBUILD"));
    let p = ok("ONBUILD ONBUILD RUN x\n");
    assert_eq!(dump_nodes(&p.nodes), "(onbuild (onbuild (run \"x\")))\n");
}

#[test]
fn hostile_nesting_stays_bounded() {
    let p = ok(&format!("CMD {}\n", "[".repeat(60_000)));
    assert!(!p.nodes[0].json);
    let p = ok(&format!("RUN <<{}\n", "${a:-".repeat(10_000)));
    assert!(p.nodes[0].heredocs.is_empty());
    // A line the shell lexer cannot split opens no heredoc (as in BuildKit).
    let p = ok("RUN <<'EOF\nx\n");
    assert_eq!(dump_nodes(&p.nodes), "(run \"<<'EOF\")\n(x)\n");
}

#[test]
fn never_panics_on_garbage() {
    // A small deterministic generator over characters that matter to the parser.
    let alphabet: Vec<char> =
        "RUN COPY ONBUILD ENV HEALTHCHECK CMD # \\ ` ' \" < - = [ ] { } , : $ \t \r \n \n a 1 ﻿ é"
            .chars()
            .collect();
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..3000 {
        let len = (state % 120) as usize;
        let mut text = String::new();
        for _ in 0..len {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            text.push(alphabet[(state % alphabet.len() as u64) as usize]);
        }
        if let Ok(p) = parse("Dockerfile", &text) {
            let _ = dump_nodes(&p.nodes);
        }
    }
}
