//! Shell-word expansion against BuildKit's vectors (README sections 7, 8 and 9).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use kiln::frontend::shell::{EnvList, Lexer};
use serde_json::Value;

fn shell_dir() -> Option<PathBuf> {
    Some(super::dir()?.join("dockerfile/shell"))
}

fn read(name: &str) -> Option<String> {
    let path = shell_dir()?.join(name);
    Some(std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

fn map(value: &Value) -> BTreeMap<String, String> {
    value
        .as_object()
        .map(|o| {
            o.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|a| a.iter().map(|v| v.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

#[test]
fn env_var_test() {
    let Some(text) = read("envVarTest") else {
        return;
    };
    let env = EnvList::from_list(&["PWD=/home", "SHELL=bash", "KOREAN=한국어", "NULL="]);
    let lexer = Lexer::new('\\');
    let (mut ran, mut skipped) = (0, 0);
    for (n, line) in text.lines().enumerate() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.trim().split('|').map(str::trim).collect();
        assert_eq!(fields.len(), 3, "envVarTest line {}: {line:?}", n + 1);
        let (platform, input, expected) = (fields[0], fields[1], fields[2]);
        if platform == "W" {
            skipped += 1;
            continue;
        }
        let actual = lexer.process_word(input, &env);
        match (expected, &actual) {
            ("error", Err(_)) => {}
            (_, Ok(out)) if expected != "error" && out == expected => {}
            _ => panic!(
                "envVarTest line {}: input {input:?}: expected {expected:?}, got {actual:?}",
                n + 1
            ),
        }
        ran += 1;
    }
    super::report("shell/envVarTest", ran, skipped);
}

#[test]
fn words_test() {
    let Some(text) = read("wordsTest") else {
        return;
    };
    let lexer = Lexer::new('\\');
    let mut entries: Vec<String> = Vec::new();
    let mut ran = 0;
    for (n, line) in text.lines().enumerate() {
        if line.starts_with('#') {
            continue;
        }
        if let Some(entry) = line.strip_prefix("ENV ") {
            entries.push(entry.trim_start().to_string());
            continue;
        }
        let parts: Vec<&str> = line.split('|').collect();
        assert_eq!(parts.len(), 2, "wordsTest line {}: {line:?}", n + 1);
        let input = parts[0].trim();
        let expected: Vec<&str> = parts[1].trim_start().split(',').collect();
        let env = EnvList::from_list(&entries);
        let actual = lexer.process_words(input, &env);
        let ok = match &actual {
            Err(_) => expected == ["error"],
            Ok(words) => expected != ["error"] && *words == expected,
        };
        assert!(
            ok,
            "wordsTest line {}: input {input:?}: expected {expected:?}, got {actual:?}",
            n + 1
        );
        ran += 1;
    }
    super::report("shell/wordsTest", ran, 0);
}

fn lex_cases() -> Option<Value> {
    Some(serde_json::from_str(&read("lex-cases.json")?).unwrap())
}

#[test]
fn lex_cases_with_matches() {
    let Some(cases) = lex_cases() else {
        return;
    };
    let lexer = Lexer::new('\\');
    let mut ran = 0;
    for case in cases["process_word_with_matches"].as_array().unwrap() {
        let input = case["input"].as_str().unwrap();
        let env = map(&case["envs"]);
        let actual = lexer.process_word_with_matches(input, &env);
        ran += 1;
        if case["not_guaranteed"].as_bool() == Some(true) {
            // Only "does not panic" is required here.
            continue;
        }
        if case["expect_error"].as_bool() == Some(true) {
            assert!(
                actual.is_err(),
                "input {input:?} env {env:?}: expected an error, got {actual:?}"
            );
            continue;
        }
        let expected = case["expected"].as_str().unwrap();
        let matched: BTreeSet<String> = strings(&case["matched"]).into_iter().collect();
        let unmatched: BTreeSet<String> = strings(&case["unmatched"]).into_iter().collect();
        let ok = actual
            .as_ref()
            .is_ok_and(|e| e.value == expected && e.matched == matched && e.unmatched == unmatched);
        assert!(
            ok,
            "input {input:?} env {env:?}: expected {expected:?} matched {matched:?} \
             unmatched {unmatched:?}, got {actual:?}"
        );
    }
    super::report("shell/lex-cases.json process_word_with_matches", ran, 0);
}

#[test]
fn lex_cases_platform_args() {
    let Some(cases) = lex_cases() else {
        return;
    };
    let lexer = Lexer::new('\\');
    let mut ran = 0;
    for case in cases["process_word_platform_args"].as_array().unwrap() {
        let input = case["input"].as_str().unwrap();
        let env = map(&case["envs"]);
        let expected = case["expected"].as_str().unwrap();
        let actual = lexer.process_word(input, &env);
        assert!(
            actual.as_deref() == Ok(expected),
            "input {input:?} env {env:?}: expected {expected:?}, got {actual:?}"
        );
        ran += 1;
    }
    super::report("shell/lex-cases.json process_word_platform_args", ran, 0);
}

#[test]
fn lex_cases_required_var_errors() {
    let Some(cases) = lex_cases() else {
        return;
    };
    let lexer = Lexer::new('\\');
    let mut ran = 0;
    for case in cases["required_var_errors"].as_array().unwrap() {
        let input = case["input"].as_str().unwrap();
        let list = strings(&case["env_list"]);
        let env = EnvList::from_list(&list);
        let actual = lexer.process_word(input, &env);
        let ok = match (case["expected"].as_str(), &actual) {
            (Some(expected), Ok(out)) => out == expected,
            (None, Err(e)) => {
                let want = case["expect_error_contains"].as_str().unwrap();
                e.to_string().contains(want)
            }
            _ => false,
        };
        assert!(
            ok,
            "input {input:?} env {list:?}: expected {:?} / error containing {:?}, got {actual:?}",
            case["expected"], case["expect_error_contains"]
        );
        ran += 1;
    }
    super::report("shell/lex-cases.json required_var_errors", ran, 0);
}

#[test]
fn lex_cases_env_list_lookup() {
    let Some(cases) = lex_cases() else {
        return;
    };
    let mut ran = 0;
    for case in cases["env_list_lookup"].as_array().unwrap() {
        let list = strings(&case["env_list"]);
        let name = case["lookup"].as_str().unwrap();
        let expected = case["expected_value"].as_str().unwrap();
        // Upstream's lookup yields "" for a missing name too.
        let actual = EnvList::from_list(&list)
            .get(name)
            .unwrap_or("")
            .to_string();
        assert_eq!(actual, expected, "env list {list:?}, lookup {name:?}");
        ran += 1;
    }
    super::report("shell/lex-cases.json env_list_lookup", ran, 0);
}
