//! TEMP STUB (replaced by the shell branch)
use std::collections::BTreeSet;
pub trait Env {
    fn get(&self, name: &str) -> Option<&str>;
}
pub struct EnvList(Vec<(String, String)>);
impl EnvList {
    pub fn from_list<S: AsRef<str>>(l: &[S]) -> Self {
        EnvList(
            l.iter()
                .map(|s| (s.as_ref().to_string(), String::new()))
                .collect(),
        )
    }
}
impl Env for EnvList {
    fn get(&self, n: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str())
    }
}
#[derive(Debug, Clone, Copy)]
pub struct Lexer {
    pub escape: char,
}
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("x")]
pub struct ShellError;
impl ShellError {
    pub fn offset(&self) -> usize {
        0
    }
}
pub struct Expansion {
    pub value: String,
    pub matched: BTreeSet<String>,
    pub unmatched: BTreeSet<String>,
}
impl Lexer {
    pub fn new(escape: char) -> Self {
        Lexer { escape }
    }
    pub fn process_word(&self, w: &str, _e: &dyn Env) -> Result<String, ShellError> {
        Ok(w.into())
    }
    pub fn process_word_with_matches(
        &self,
        w: &str,
        _e: &dyn Env,
    ) -> Result<Expansion, ShellError> {
        Ok(Expansion {
            value: w.into(),
            matched: BTreeSet::new(),
            unmatched: BTreeSet::new(),
        })
    }
    pub fn process_words(&self, w: &str, _e: &dyn Env) -> Result<Vec<String>, ShellError> {
        Ok(vec![w.into()])
    }
}
