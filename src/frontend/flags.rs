//! Instruction flags (`--name[=value]` words after the keyword), validated the
//! way BuildKit's `BFlags` does: unknown names, missing values, non-boolean
//! values and repeats of single-valued flags are errors.

use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagKind {
    Bool,
    String,
    /// May be repeated; every occurrence is kept in order.
    Strings,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Value {
    Bool(bool),
    String(String),
    Strings(Vec<String>),
}

/// The error names the flag word so callers can point a caret at it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct FlagError {
    pub message: String,
    /// The flag word as written (`--chown=1`), to locate it in the line.
    pub word: String,
}

/// The declared flags of one instruction and, after [`Flags::parse`], their values.
#[derive(Debug, Clone, Default)]
pub struct Flags {
    declared: BTreeMap<String, (FlagKind, Value)>,
    used: Vec<String>,
}

impl Flags {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn bool(mut self, name: &str, default: bool) -> Self {
        self.declared
            .insert(name.into(), (FlagKind::Bool, Value::Bool(default)));
        self
    }

    pub fn string(mut self, name: &str, default: &str) -> Self {
        self.declared.insert(
            name.into(),
            (FlagKind::String, Value::String(default.into())),
        );
        self
    }

    pub fn strings(mut self, name: &str) -> Self {
        self.declared
            .insert(name.into(), (FlagKind::Strings, Value::Strings(Vec::new())));
        self
    }

    /// Reads the flag words. A bare `--` ends the flags (the parser normally drops it).
    pub fn parse(mut self, words: &[String]) -> Result<Self, FlagError> {
        for word in words {
            if word == "--" {
                break;
            }
            let err = |message: String| FlagError {
                message,
                word: word.clone(),
            };
            let Some(body) = word.strip_prefix("--") else {
                return Err(err(format!("arguments should start with -- : {word}")));
            };
            let (name, value) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (body, None),
            };
            let Some((kind, slot)) = self.declared.get_mut(name) else {
                return Err(err(format!("unknown flag: --{name}")));
            };
            if *kind != FlagKind::Strings && self.used.iter().any(|u| u == name) {
                return Err(err(format!("duplicate flag specified: --{name}")));
            }
            match (kind, slot) {
                (FlagKind::Bool, Value::Bool(b)) => {
                    *b = match value.map(str::to_ascii_lowercase).as_deref() {
                        None | Some("true") => true,
                        Some("false") => false,
                        Some(_) => {
                            return Err(err(format!(
                                "expecting boolean value for flag --{name}, not: {}",
                                value.unwrap_or_default()
                            )))
                        }
                    }
                }
                (FlagKind::String, Value::String(s)) => match value {
                    Some(v) => *s = v.to_string(),
                    None => return Err(err(format!("missing a value on flag: --{name}"))),
                },
                (FlagKind::Strings, Value::Strings(list)) => match value {
                    Some(v) => list.push(v.to_string()),
                    None => return Err(err(format!("missing a value on flag: --{name}"))),
                },
                _ => {
                    return Err(err(format!(
                        "internal: flag --{name} has a mismatched kind"
                    )))
                }
            }
            if !self.used.iter().any(|u| u == name) {
                self.used.push(name.to_string());
            }
        }
        Ok(self)
    }

    pub fn get_bool(&self, name: &str) -> bool {
        matches!(self.declared.get(name), Some((_, Value::Bool(true))))
    }

    pub fn get_string(&self, name: &str) -> String {
        match self.declared.get(name) {
            Some((_, Value::String(s))) => s.clone(),
            _ => String::new(),
        }
    }

    /// The value only when the flag was written.
    pub fn get_opt_string(&self, name: &str) -> Option<String> {
        self.is_used(name).then(|| self.get_string(name))
    }

    pub fn get_opt_bool(&self, name: &str) -> Option<bool> {
        self.is_used(name).then(|| self.get_bool(name))
    }

    pub fn get_strings(&self, name: &str) -> Vec<String> {
        match self.declared.get(name) {
            Some((_, Value::Strings(v))) => v.clone(),
            _ => Vec::new(),
        }
    }

    /// A flag counts as used whenever it appears, even with its default value.
    pub fn is_used(&self, name: &str) -> bool {
        self.used.iter().any(|u| u == name)
    }

    /// Flags in the order they were first written.
    pub fn used(&self) -> &[String] {
        &self.used
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(w: &[&str]) -> Vec<String> {
        w.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn bool_string_and_repeated_flags() {
        let f = Flags::new()
            .bool("link", false)
            .string("from", "")
            .strings("exclude")
            .parse(&words(&[
                "--link",
                "--from=a",
                "--exclude=x",
                "--exclude=y",
            ]))
            .unwrap();
        assert!(f.get_bool("link"));
        assert_eq!(f.get_string("from"), "a");
        assert_eq!(f.get_strings("exclude"), vec!["x", "y"]);
        assert_eq!(f.used(), &["link", "from", "exclude"]);
    }

    #[test]
    fn errors_name_the_flag() {
        let e = Flags::new().parse(&words(&["--boo"])).unwrap_err();
        assert_eq!(e.message, "unknown flag: --boo");
        let e = Flags::new()
            .string("from", "")
            .parse(&words(&["--from"]))
            .unwrap_err();
        assert_eq!(e.message, "missing a value on flag: --from");
        let e = Flags::new()
            .bool("link", false)
            .parse(&words(&["--link=yes"]))
            .unwrap_err();
        assert!(
            e.message.contains("expecting boolean value"),
            "{}",
            e.message
        );
        let e = Flags::new()
            .string("from", "")
            .parse(&words(&["--from=a", "--from=b"]))
            .unwrap_err();
        assert_eq!(e.word, "--from=b");
    }
}
