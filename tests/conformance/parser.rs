//! BuildKit parser vectors: `dockerfile/parser/` (README sections 1–5).

use std::fs;
use std::path::{Path, PathBuf};

use kiln::frontend::ast::{dump_nodes, Node};
use kiln::frontend::directives::{self, detect_syntax, parse_named_directive};
use kiln::frontend::heredoc::{chomp, heredocs_from_line, parse_heredoc_word};
use kiln::frontend::line_parsers::{parse_json_array, parse_words, NOT_STRING_ARRAY};
use kiln::frontend::parser::{parse, Parsed};
use serde_json::Value;

fn data() -> Option<PathBuf> {
    super::dir().map(|d| d.join("dockerfile/parser"))
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn cases(dir: &Path) -> Value {
    serde_json::from_str(&read(&dir.join("cases.json"))).expect("cases.json is JSON")
}

fn parse_ok(name: &str, src: &str) -> Parsed {
    parse(name, src).unwrap_or_else(|e| panic!("{name}: parse failed: {e}"))
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .expect("an array")
        .iter()
        .map(|s| s.as_str().expect("a string").to_string())
        .collect()
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} missing in {v}"))
}

/// The subdirectories of `dir`, sorted.
fn subdirs(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs::read_dir(dir)
        .expect("readable directory")
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.is_dir())
        .collect();
    out.sort();
    out
}

/// Line-by-line comparison that names the first differing line.
fn diff(expected: &str, got: &str) -> String {
    let (e, g): (Vec<_>, Vec<_>) = (expected.lines().collect(), got.lines().collect());
    for i in 0..e.len().max(g.len()) {
        let (a, b) = (e.get(i).copied(), g.get(i).copied());
        if a != b {
            return format!("line {}:\n  expected: {a:?}\n  got:      {b:?}", i + 1);
        }
    }
    "files differ only in trailing newlines".to_string()
}

#[test]
fn testfiles_dump_like_buildkit() {
    let Some(dir) = data() else { return };
    let mut failures = Vec::new();
    let mut ran = 0;
    for case in subdirs(&dir.join("testfiles")) {
        let name = case.file_name().unwrap().to_string_lossy().to_string();
        let expected = read(&case.join("result"));
        ran += 1;
        match parse("Dockerfile", &read(&case.join("Dockerfile"))) {
            Ok(p) => {
                let got = dump_nodes(&p.nodes);
                if got != expected {
                    failures.push(format!("{name}: {}", diff(&expected, &got)));
                }
            }
            Err(e) => failures.push(format!("{name}: parse failed: {e}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    super::report("parser/testfiles", ran, 0);
}

#[test]
fn negative_testfiles_fail_with_a_location() {
    let Some(dir) = data() else { return };
    let mut ran = 0;
    for case in subdirs(&dir.join("testfiles-negative")) {
        let name = case.file_name().unwrap().to_string_lossy().to_string();
        let e = match parse("Dockerfile", &read(&case.join("Dockerfile"))) {
            Ok(p) => panic!("{name}: expected an error, got\n{}", dump_nodes(&p.nodes)),
            Err(e) => e,
        };
        assert!(e.pos.line >= 1 && e.pos.column >= 1, "{name}: {e}");
        let (message, line) = match name.as_str() {
            "env_no_value" => ("ENV must have two arguments", 3),
            "only_comments" => ("file with no instructions", 3),
            "shykes-nested-json" => (NOT_STRING_ARRAY, 1),
            _ => (e.message(), e.pos.line),
        };
        assert_eq!((e.message(), e.pos.line), (message, line), "{name}: {e}");
        ran += 1;
    }
    super::report("parser/testfiles-negative", ran, 0);
}

#[test]
fn line_numbers_span_continuations() {
    let Some(dir) = data() else { return };
    let want = &cases(&dir)["line_numbers"];
    let p = parse_ok(
        "testfile-line",
        &read(&dir.join("testfile-line/Dockerfile")),
    );
    let root = (p.start_line as u64, p.end_line as u64);
    assert_eq!(
        root,
        (
            want["root"]["start_line"].as_u64().unwrap(),
            want["root"]["end_line"].as_u64().unwrap()
        )
    );
    let children: Vec<(u64, u64)> = p
        .nodes
        .iter()
        .map(|n| (n.pos.line as u64, n.end_line as u64))
        .collect();
    let expected: Vec<(u64, u64)> = want["children"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c[0].as_u64().unwrap(), c[1].as_u64().unwrap()))
        .collect();
    assert_eq!(children, expected);
    super::report("parser/line_numbers", 1 + expected.len(), 0);
}

/// The heredocs an instruction carries (those of the wrapped one for ONBUILD).
fn heredocs_of(n: &Node) -> &[kiln::frontend::ast::Heredoc] {
    match &n.onbuild {
        Some(inner) => &inner.heredocs,
        None => &n.heredocs,
    }
}

#[test]
fn heredoc_extract_field_by_field() {
    let Some(dir) = data() else { return };
    let expected: Value = serde_json::from_str(&read(&dir.join("heredoc/expected.json"))).unwrap();
    let p = parse_ok("heredoc", &read(&dir.join("heredoc/Dockerfile")));
    let mut ran = 0;
    for child in expected["children"].as_array().unwrap() {
        let i = child["child_index"].as_u64().unwrap() as usize;
        let node = &p.nodes[i];
        assert_eq!(node.original, str_of(child, "first_line"), "child {i}");
        let got = heredocs_of(node);
        let want = child["heredocs"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        assert_eq!(got.len(), want.len(), "child {i}: {got:?}");
        for (g, w) in got.iter().zip(want) {
            assert_eq!(g.name, str_of(w, "name"), "child {i}");
            assert_eq!(g.content, str_of(w, "content"), "child {i} {}", g.name);
            assert_eq!(
                g.expand,
                w["expand"].as_bool().unwrap(),
                "child {i} {}",
                g.name
            );
            assert_eq!(
                g.chomp,
                w["chomp"].as_bool().unwrap(),
                "child {i} {}",
                g.name
            );
            assert_eq!(
                u64::from(g.file_descriptor),
                w["file_descriptor"].as_u64().unwrap(),
                "child {i} {}",
                g.name
            );
        }
        ran += 1;
    }
    super::report("parser/heredoc_extract", ran, 0);
}

#[test]
fn table_parse_words() {
    let Some(dir) = data() else { return };
    let table = &cases(&dir)["parse_words"]["cases"];
    let mut ran = 0;
    for case in table.as_array().unwrap() {
        let input = str_of(case, "input");
        assert_eq!(parse_words(input, '\\'), strs(&case["expect"]), "{input:?}");
        ran += 1;
    }
    super::report("parser/parse_words", ran, 0);
}

#[test]
fn table_json_array_args() {
    let Some(dir) = data() else { return };
    let table = &cases(&dir)["json_array_args"];
    let mut ran = 0;
    for case in table["valid"].as_array().unwrap() {
        let input = str_of(case, "input");
        let want = strs(&case["expect"]);
        assert_eq!(parse_json_array(input), Ok(Some(want.clone())), "{input:?}");
        let p = parse_ok("valid", &format!("CMD {input}\n"));
        assert_eq!(
            (&p.nodes[0].args, p.nodes[0].json),
            (&want, true),
            "{input:?}"
        );
        ran += 1;
    }
    let forms = [
        "RUN",
        "CMD",
        "ENTRYPOINT",
        "SHELL",
        "HEALTHCHECK CMD",
        "ADD",
        "COPY",
        "VOLUME",
    ];
    for input in strs(&table["invalid_not_string_array"]) {
        assert!(parse_json_array(&input).is_err(), "{input:?}");
        for form in forms {
            let e = parse("invalid", &format!("{form} {input}\n"))
                .err()
                .unwrap_or_else(|| panic!("{form} {input} must fail"));
            assert_eq!(e.message(), NOT_STRING_ARRAY, "{form} {input}");
            assert_eq!(e.pos.column, form.len() + 7, "{form} {input}");
        }
        ran += 1;
    }
    super::report("parser/json_array_args", ran, 0);
}

#[test]
fn table_name_value() {
    let Some(dir) = data() else { return };
    let table = &cases(&dir)["name_value"]["cases"];
    let mut ran = 0;
    for case in table.as_array().unwrap() {
        let src = format!("{} {}\n", str_of(case, "instruction"), str_of(case, "args"));
        match case.get("expect_error").and_then(Value::as_str) {
            Some(msg) => {
                let e = parse("name_value", &src).expect_err(&src);
                assert_eq!(e.message(), msg, "{src}");
            }
            None => {
                let p = parse_ok("name_value", &src);
                assert_eq!(p.nodes[0].args, strs(&case["expect_values"]), "{src}");
            }
        }
        ran += 1;
    }
    super::report("parser/name_value", ran, 0);
}

#[test]
fn table_empty_continuation_warning() {
    let Some(dir) = data() else { return };
    let case = &cases(&dir)["empty_continuation_warning"];
    let p = parse_ok("warnings", &read(&dir.join(str_of(case, "dockerfile"))));
    assert_eq!(
        p.warnings.len() as u64,
        case["expect_warning_count"].as_u64().unwrap()
    );
    for (w, needles) in p
        .warnings
        .iter()
        .zip(case["expect_warnings_contain"].as_array().unwrap())
    {
        let text = w.to_string();
        for needle in strs(needles) {
            assert!(text.contains(&needle), "{text:?} lacks {needle:?}");
        }
    }
    let detail = str_of(case, "expect_first_warning_detail_contains");
    assert!(p.warnings[0].detail.contains(detail));
    super::report("parser/empty_continuation_warning", p.warnings.len(), 0);
}

#[test]
fn table_line_too_long() {
    let Some(dir) = data() else { return };
    let case = &cases(&dir)["line_too_long"];
    let a = str_of(&case["A"], "char").repeat(case["A"]["repeat"].as_u64().unwrap() as usize);
    let src = str_of(case, "dockerfile_template").replace("{A}", &a);
    let e = parse("long", &src).expect_err("a line too long");
    assert_eq!(e.message(), str_of(case, "expect_error"));
    assert_eq!((e.pos.line, e.pos.column), (3, 1));
    super::report("parser/line_too_long", 1, 0);
}

#[test]
fn table_heredoc_word() {
    let Some(dir) = data() else { return };
    let table = &cases(&dir)["heredoc_word"];
    let mut ran = 0;
    for word in strs(&table["valid_name_EOF"]) {
        let h = parse_heredoc_word(&word).unwrap_or_else(|e| panic!("{word:?}: {e}"));
        assert_eq!(h.map(|h| h.name), Some("EOF".to_string()), "{word:?}");
        ran += 1;
    }
    for word in strs(&table["invalid"]) {
        assert!(parse_heredoc_word(&word).is_err(), "{word:?}");
        ran += 1;
    }
    for word in strs(&table["not_heredoc"]) {
        assert_eq!(parse_heredoc_word(&word), Ok(None), "{word:?}");
        ran += 1;
    }
    super::report("parser/heredoc_word", ran, 0);
}

#[test]
fn table_heredocs_from_line() {
    let Some(dir) = data() else { return };
    let table = &cases(&dir)["heredocs_from_line"]["cases"];
    let mut ran = 0;
    for case in table.as_array().unwrap() {
        let line = str_of(case, "line");
        let want = strs(&case["names"]);
        let got: Vec<String> = heredocs_from_line(line, '\\')
            .unwrap_or_else(|e| panic!("{line:?}: {e}"))
            .into_iter()
            .map(|h| h.name)
            .collect();
        // Upstream checks names only for the heredocs it finds (`<<- EOF` is
        // two words to BuildKit's lexer and opens none), so the found names
        // must be a prefix of the listed ones.
        assert!(
            got.len() <= want.len() && want[..got.len()] == got[..],
            "{line:?}: got {got:?}, listed {want:?}"
        );
        if got.len() < want.len() {
            println!(
                "conformance: parser/heredocs_from_line: {line:?} opens {got:?} (listed: {want:?})"
            );
        }
        ran += 1;
    }
    super::report("parser/heredocs_from_line", ran, 0);
}

#[test]
fn table_json_form_never_heredoc() {
    let Some(dir) = data() else { return };
    let case = &cases(&dir)["json_form_never_heredoc"];
    let p = parse_ok("json_heredoc", str_of(case, "dockerfile"));
    assert_eq!(p.nodes.len(), 4);
    for n in &p.nodes[1..] {
        assert!(n.json && n.heredocs.is_empty(), "{}", n.original);
    }
    super::report("parser/json_form_never_heredoc", 3, 0);
}

#[test]
fn table_heredoc_chomp() {
    let Some(dir) = data() else { return };
    let table = &cases(&dir)["heredoc_chomp"]["cases"];
    let mut ran = 0;
    for case in table.as_array().unwrap() {
        assert_eq!(chomp(str_of(case, "input")), str_of(case, "expect"));
        ran += 1;
    }
    super::report("parser/heredoc_chomp", ran, 0);
}

#[test]
fn table_directives() {
    let Some(dir) = data() else { return };
    let table = &cases(&dir)["directives"];
    let mut ran = 0;
    for case in table["parse_all"].as_array().unwrap() {
        let input = str_of(case, "input");
        let got: Vec<(String, String)> = directives::parse_all(input)
            .unwrap_or_else(|e| panic!("{input:?}: {e}"))
            .into_iter()
            .map(|d| (d.name, d.value))
            .collect();
        let want: Vec<(String, String)> = case["expect"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                (
                    str_of(d, "name").to_string(),
                    str_of(d, "value").to_string(),
                )
            })
            .collect();
        assert_eq!(got, want, "{input:?}");
        ran += 1;
    }
    super::report("parser/directives/parse_all", ran, 0);

    let check = |case: &Value, found: Option<directives::Detected>, value_key: &str| {
        let input = str_of(case, "input");
        if !case["found"].as_bool().unwrap() {
            assert_eq!(found, None, "{input:?}");
            return;
        }
        let d = found.unwrap_or_else(|| panic!("{input:?}: not found"));
        assert_eq!(d.value, str_of(case, value_key), "{input:?}");
        if let Some(c) = case.get("cmdline").and_then(Value::as_str) {
            assert_eq!(d.cmdline, c, "{input:?}");
        }
        if let Some(l) = case.get("line").and_then(Value::as_u64) {
            assert_eq!(d.line as u64, l, "{input:?}");
        }
    };
    let mut ran = 0;
    for case in table["detect_syntax"].as_array().unwrap() {
        let mut input = str_of(case, "input").to_string();
        if case.get("input_hex_prefix").and_then(Value::as_str) == Some("efbbbf") {
            input.insert(0, '\u{feff}');
        }
        check(case, detect_syntax(&input), "ref");
        ran += 1;
    }
    super::report("parser/directives/detect_syntax", ran, 0);
    let mut ran = 0;
    for case in table["parse_named_directive_check"].as_array().unwrap() {
        check(
            case,
            parse_named_directive("check", str_of(case, "input")),
            "value",
        );
        ran += 1;
    }
    super::report("parser/directives/parse_named_directive_check", ran, 0);
}
