//! Behaviour the conformance vectors do not cover.

use std::collections::{BTreeMap, HashMap};

use super::{Env, EnvList, Lexer, ShellError};

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn word(lexer: &Lexer, input: &str, env: &dyn Env) -> String {
    lexer
        .process_word(input, env)
        .unwrap_or_else(|e| panic!("{input:?}: {e}"))
}

fn err(lexer: &Lexer, input: &str, env: &dyn Env) -> ShellError {
    match lexer.process_word(input, env) {
        Ok(out) => panic!("{input:?}: expected an error, got {out:?}"),
        Err(e) => e,
    }
}

#[test]
fn backtick_escape_token() {
    let lx = Lexer::new('`');
    let e = env(&[("X", "v")]);
    assert_eq!(word(&lx, "a`$X", &e), "a$X");
    assert_eq!(word(&lx, r"a\b$X", &e), r"a\bv");
    assert_eq!(word(&lx, "\"a`\"b\"", &e), "a\"b");
    assert_eq!(word(&lx, "\"a`$X``\"", &e), "a$X`");
    // Inside double quotes only `"`, `$` and the token itself are escapable.
    assert_eq!(word(&lx, "\"`a\\$X\"", &e), "`a\\v");
    assert_eq!(word(&lx, "end`", &e), "end");
    assert_eq!(word(&lx, "${U:-`}}", &e), "}");
    assert_eq!(
        lx.process_words("a` b c", &e).unwrap(),
        vec!["a b".to_string(), "c".to_string()]
    );
}

#[test]
fn raw_quotes_are_plain_characters() {
    let lx = Lexer {
        raw_quotes: true,
        ..Lexer::new('\\')
    };
    let e = env(&[("X", "v")]);
    assert_eq!(word(&lx, "'$X' \"$X\"", &e), "'v' \"v\"");
    assert_eq!(word(&lx, "it's $X", &e), "it's v");
    assert_eq!(word(&lx, "${U:-'a}", &e), "'a");
    // Escapes are still processed.
    assert_eq!(word(&lx, r"\$X \\ \'", &e), r"$X \ '");
    let words = lx.process_words("\"a b\"", &e).unwrap();
    assert_eq!(words, vec!["\"a".to_string(), "b\"".to_string()]);
}

#[test]
fn raw_escapes_keep_the_token() {
    let lx = Lexer {
        raw_escapes: true,
        ..Lexer::new('\\')
    };
    let e = env(&[("X", "v")]);
    assert_eq!(word(&lx, r"\$X $X", &e), r"\$X v");
    assert_eq!(word(&lx, r"a\b\\", &e), r"a\b\\");
    assert_eq!(word(&lx, r"tail\", &e), r"tail\");
    assert_eq!(word(&lx, r#""\$X\"\a""#, &e), r#"\$X\"\a"#);
    assert_eq!(word(&lx, r"\'$X", &e), r"\'v");
    // Upstream processes `-`/`+`/`?` words with escapes resolved.
    assert_eq!(word(&lx, r"${U:-\$X}", &e), "$X");
    assert_eq!(word(&lx, r"${X:+\\}", &e), r"\");

    let both = Lexer {
        raw_quotes: true,
        raw_escapes: true,
        ..Lexer::new('\\')
    };
    assert_eq!(word(&both, r#"echo "$X" '\$X'"#, &e), r#"echo "v" '\$X'"#);
}

#[test]
fn error_offsets_and_messages() {
    let lx = Lexer::new('\\');
    let e = env(&[("V", "abc"), ("E", "")]);
    let cases: &[(&str, usize, &str)] = &[
        ("ab'cd", 2, "unterminated quoted string"),
        ("x\"y", 1, "unterminated quoted string"),
        ("ab${X", 2, "missing '}'"),
        ("한국${X:-a", 2, "missing '}'"),
        ("x${", 1, "missing '}'"),
        ("ab${}", 2, "bad substitution: ${}"),
        ("a${X:=v}b", 1, "bad substitution: ${X:=v}"),
        ("${.}", 0, "bad substitution: ${.}"),
        ("-${FOO=aaa}", 1, "bad substitution: ${FOO=aaa}"),
        ("${V:#a}", 0, "bad substitution: ${V:#a}"),
        ("${V:/a/b}", 0, "bad substitution: ${V:/a/b}"),
        ("${V/a", 0, "missing '/' in substitution"),
        ("${V/a/b", 0, "missing '}'"),
        ("é${V?x}${U:?message}", 7, "U: message"),
        ("${U?}", 0, "U: is not allowed to be unset"),
        ("${E:?}", 0, "E: is not allowed to be empty"),
        ("'a'${V#\\a}", 3, "invalid escape '\\a'"),
    ];
    for (input, offset, message) in cases {
        let error = err(&lx, input, &e);
        assert_eq!(error.offset(), *offset, "{input:?}: {error:?}");
        let text = error.to_string();
        assert!(
            text.contains(message),
            "{input:?}: {text:?} lacks {message:?}"
        );
    }
}

#[test]
fn nested_modifiers() {
    let lx = Lexer::new('\\');
    let e = env(&[("A", "a"), ("P", "*."), ("F", "name.tar.gz"), ("E", "")]);
    assert_eq!(word(&lx, "${X:-${Y:-${Z:-deep}}}", &e), "deep");
    assert_eq!(word(&lx, "${A:+<${X:-${A}}>}", &e), "<a>");
    assert_eq!(word(&lx, "${F#$P}", &e), "tar.gz");
    assert_eq!(word(&lx, "${F##$P}", &e), "gz");
    assert_eq!(word(&lx, "${F%${X:-.*}}", &e), "name.tar");
    assert_eq!(word(&lx, "${F%%${X:-.*}}", &e), "name");
    assert_eq!(word(&lx, "${F/${X:-tar}/${A}${A}}", &e), "name.aa.gz");
    assert_eq!(word(&lx, "${E-${A}}${E:-${A}}", &e), "a");
    assert_eq!(word(&lx, r#"${X:-"}"}"#, &e), "}");
    assert_eq!(word(&lx, "${X:-'${A}'}", &e), "${A}");
}

#[test]
fn replace_with_empty_pattern() {
    let lx = Lexer::new('\\');
    let e = env(&[("V", "ab"), ("E", "")]);
    assert_eq!(word(&lx, "${V/$E/w}", &e), "wab");
    assert_eq!(word(&lx, "${V//$E/w}", &e), "wawbw");
    assert_eq!(word(&lx, "${V///}", &e), "ab");
    assert_eq!(word(&lx, "${U//$E/w}", &e), "w");
    // A star can match empty too; no empty match right after a real one is replaced.
    assert_eq!(word(&lx, "${V//*/w}", &e), "w");
    assert_eq!(word(&lx, "${V//?/w}", &e), "ww");
    // Upstream's "not guaranteed" rows, as it behaves today.
    assert_eq!(
        err(&lx, "${V//ww}", &e).to_string(),
        "missing '/' in substitution"
    );
    assert_eq!(
        err(&lx, "${V//}", &e).to_string(),
        "missing '/' in substitution"
    );
    assert_eq!(word(&lx, "${U///}", &e), "");
}

#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    let lx = Lexer::new('\\');
    let e = env(&[]);
    let nest = |n: usize| format!("{}x{}", "${U:-".repeat(n), "}".repeat(n));
    assert_eq!(word(&lx, &nest(60), &e), "x");
    let error = err(&lx, &format!("ab{}", nest(100_000)), &e);
    assert_eq!(error, ShellError::TooDeep { offset: 2 + 64 * 5 });
}

#[test]
fn replace_all_uses_go_template_rules() {
    let lx = Lexer::new('\\');
    let e = env(&[("V", "foo")]);
    assert_eq!(word(&lx, r"${V//o/<\$0>}", &e), r"f<\o><\o>");
    assert_eq!(word(&lx, "${V//o/'$$'}", &e), "f$$");
    assert_eq!(word(&lx, "${V//o/'${0}$1$x'}", &e), "foo");
    assert_eq!(word(&lx, "${V//o/'$'}", &e), "f$$");
    // The single replacement is literal.
    assert_eq!(word(&lx, r"${V/o/<\$0>}", &e), r"f<\$0>o");
}

#[test]
fn glob_priorities() {
    let lx = Lexer::new('\\');
    let e = env(&[("V", "a.b.c"), ("N", "a\nb"), ("S", "x*y")]);
    assert_eq!(word(&lx, "${V#*.}", &e), "b.c");
    assert_eq!(word(&lx, "${V##*.}", &e), "c");
    assert_eq!(word(&lx, "${V%.*}", &e), "a.b");
    assert_eq!(word(&lx, "${V%%.*}", &e), "a");
    assert_eq!(word(&lx, "${V#?.?}", &e), ".c");
    assert_eq!(word(&lx, "${V#b}", &e), "a.b.c");
    assert_eq!(word(&lx, "${V/.*./-}", &e), "a-c");
    assert_eq!(word(&lx, r"${S/\*/+}", &e), "x+y");
    // Upstream's globs become Go regexps, where `?` and `*` never match a newline.
    assert_eq!(word(&lx, "${N##*}", &e), "\nb");
    assert_eq!(word(&lx, "${N%%*}", &e), "a\n");
    assert_eq!(word(&lx, "${N#???}", &e), "a\nb");
}

#[test]
fn words_and_lookups() {
    let lx = Lexer::new('\\');
    let e = env(&[("S", " a  b "), ("E", "")]);
    let words = |input: &str| lx.process_words(input, &e).unwrap();
    assert!(words("").is_empty());
    assert!(words("\"\" '' $E").is_empty());
    assert_eq!(words("x$S\"$S\""), vec!["x", "a", "b", " a  b "]);
    assert_eq!(words("a\\\tb"), vec!["a\tb"]);

    let exp = lx
        .process_word_with_matches("$S${E:-$X}$1${@}", &e)
        .unwrap();
    assert_eq!(exp.value, " a  b ");
    assert_eq!(exp.matched.into_iter().collect::<Vec<_>>(), ["E", "S"]);
    assert_eq!(
        exp.unmatched.into_iter().collect::<Vec<_>>(),
        ["1", "@", "X"]
    );
}

#[test]
fn unicode_names_and_bom() {
    let lx = Lexer::new('\\');
    let e = env(&[("é", "acute"), ("名前", "name")]);
    assert_eq!(word(&lx, "$é-${名前}", &e), "acute-name");
    // `٣` is a decimal digit (positional), `²` is neither digit nor letter.
    assert_eq!(word(&lx, "$٣x $²", &e), "x $²");
    assert_eq!(word(&lx, "\u{feff}$é", &e), "acute");
}

#[test]
fn env_implementations() {
    let list = EnvList::from_list(&["A=1", "B", "A=2", "C=x=y"]);
    assert_eq!(list.get("A"), Some("2"));
    assert_eq!(list.get("B"), Some(""));
    assert_eq!(list.get("C"), Some("x=y"));
    assert_eq!(list.get("D"), None);
    let names: Vec<_> = list.iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["A", "B", "C"]);

    let hash: HashMap<String, String> = [("K".to_string(), "v".to_string())].into();
    let lx = Lexer::default();
    assert_eq!(word(&lx, "$K$k", &hash), "v");
    assert_eq!(word(&lx, "$K", &&list), "");
}

#[test]
fn random_input_never_panics() {
    const ALPHABET: &[char] = &[
        '$', '{', '}', ':', '-', '+', '?', '#', '%', '/', '\\', '`', '\'', '"', '*', ' ', '\t',
        '\n', 'a', 'B', '_', '1', '0', '@', '!', '=', '.', '한', '\u{feff}',
    ];
    let e = env(&[("a", "x*/"), ("B", ""), ("aB", "한 a\\")]);
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..20_000 {
        let len = (next() % 24) as usize;
        let input: String = (0..len)
            .map(|_| ALPHABET[(next() % ALPHABET.len() as u64) as usize])
            .collect();
        let bits = next();
        let lx = Lexer {
            escape: if bits & 1 == 0 { '\\' } else { '`' },
            raw_quotes: bits & 2 != 0,
            raw_escapes: bits & 4 != 0,
        };
        let single = lx.process_word(&input, &e);
        let split = lx.process_words(&input, &e);
        assert_eq!(single.is_ok(), split.is_ok(), "{input:?}");
        if let Err(error) = single {
            assert!(
                error.offset() < input.chars().count(),
                "{input:?}: {error:?}"
            );
        }
        if let Ok(words) = split {
            assert!(words.iter().all(|w| !w.is_empty()), "{input:?}");
        }
    }
}
