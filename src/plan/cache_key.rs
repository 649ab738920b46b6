//! Layer cache keys: a step's key is a hash over its named inputs.
//!
//! The engine fills a [`KeyInputs`] per step with whatever can change the
//! step's result, for example:
//!
//! | name | value |
//! |---|---|
//! | `parent` | the previous step's key (or the base image's manifest digest) |
//! | `instruction` | the instruction after expansion, as Dockerfile text |
//! | `env`, `args` | [`canonical_map`] of the ENV and build args the step sees |
//! | `sources` | digest over the selected COPY/ADD sources (path, mode, owner, bytes) |
//! | `platform`, `network`, `mounts`, `secret-ids` | as their names say (secret ids, never values) |
//!
//! Keys are content based: nothing in them names a time, a build or a step
//! position, so a step whose inputs equal those of any earlier build hits,
//! even after an earlier step of this build missed.
//!
//! Pure: no I/O.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::store::Digest;

/// Prefix of every key's hash input. Bump the version whenever the encoding
/// or the meaning of a part changes, so keys written by an older kiln can
/// never be mistaken for current ones (they simply stop matching).
const DOMAIN: &[u8] = b"kiln layer cache key v1\0";

/// Values longer than this are not quoted in [`explain`] output.
const MAX_SHOWN: usize = 80;

/// Named inputs of one step's cache key; [`KeyInputs::key`] hashes all of
/// them in name order. Stored beside the key (see `store::CacheRecord`) so a
/// later miss can be explained.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct KeyInputs {
    pub parts: BTreeMap<String, String>,
}

impl KeyInputs {
    pub fn new() -> Self {
        KeyInputs::default()
    }

    /// Sets part `name` (replacing an earlier value of the same name).
    pub fn with(mut self, name: &str, value: impl Into<String>) -> Self {
        self.parts.insert(name.to_string(), value.into());
        self
    }

    /// The cache key: sha256 over the domain prefix, then each part as
    /// length-prefixed name and value (so no choice of names and values can
    /// make two different input sets encode to the same bytes).
    pub fn key(&self) -> Digest {
        let mut h = Sha256::new_with_prefix(DOMAIN);
        h.update((self.parts.len() as u64).to_le_bytes());
        for (name, value) in &self.parts {
            for field in [name.as_bytes(), value.as_bytes()] {
                h.update((field.len() as u64).to_le_bytes());
                h.update(field);
            }
        }
        Digest::from_hasher(h)
    }
}

impl From<BTreeMap<String, String>> for KeyInputs {
    fn from(parts: BTreeMap<String, String>) -> Self {
        KeyInputs { parts }
    }
}

/// A deterministic text for a set of variables (ENV, build args): a JSON
/// object with keys sorted; a later duplicate replaces an earlier one, as a
/// later ENV line does. [`explain`] recognises this form and names the
/// variables that differ instead of the whole part.
pub fn canonical_map<K: AsRef<str>, V: AsRef<str>>(
    pairs: impl IntoIterator<Item = (K, V)>,
) -> String {
    let map: BTreeMap<String, String> = pairs
        .into_iter()
        .map(|(k, v)| (k.as_ref().to_string(), v.as_ref().to_string()))
        .collect();
    // A map of strings always serialises.
    serde_json::to_string(&map).unwrap_or_default()
}

/// Which named inputs differ between the record of an earlier build (`old`)
/// and this step (`new`), one line each in name order, for `--explain-cache`:
/// `instruction changed: "RUN a" -> "RUN b"`, `args: VERSION changed: "1" -> "2"`,
/// `network added`, `sources changed`. Empty when the inputs are equal.
pub fn explain(old: &KeyInputs, new: &KeyInputs) -> Vec<String> {
    let names: BTreeSet<&String> = old.parts.keys().chain(new.parts.keys()).collect();
    let mut out = Vec::new();
    for name in names {
        match (old.parts.get(name), new.parts.get(name)) {
            (Some(a), Some(b)) if a == b => {}
            (Some(a), Some(b)) => match (as_map(a), as_map(b)) {
                (Some(ma), Some(mb)) => out.extend(explain_map(name, &ma, &mb)),
                _ => out.push(changed(name, a, b)),
            },
            (None, Some(_)) => out.push(format!("{name} added")),
            (Some(_), None) => out.push(format!("{name} removed")),
            (None, None) => {}
        }
    }
    out
}

fn as_map(s: &str) -> Option<BTreeMap<String, String>> {
    if !s.starts_with('{') {
        return None;
    }
    serde_json::from_str(s).ok()
}

fn explain_map(
    part: &str,
    old: &BTreeMap<String, String>,
    new: &BTreeMap<String, String>,
) -> Vec<String> {
    let vars: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    vars.into_iter()
        .filter_map(|v| match (old.get(v), new.get(v)) {
            (Some(a), Some(b)) if a == b => None,
            (Some(a), Some(b)) => Some(format!("{part}: {}", changed(v, a, b))),
            (None, Some(_)) => Some(format!("{part}: {v} added")),
            (Some(_), None) => Some(format!("{part}: {v} removed")),
            (None, None) => None,
        })
        .collect()
}

/// `NAME changed`, with both values quoted when they are short enough to read.
fn changed(name: &str, old: &str, new: &str) -> String {
    let short = |s: &str| s.len() <= MAX_SHOWN && !s.contains('\n');
    if short(old) && short(new) {
        format!("{name} changed: {old:?} -> {new:?}")
    } else {
        format!("{name} changed")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> KeyInputs {
        KeyInputs::new()
            .with("parent", Digest::of_bytes(b"parent").to_string())
            .with("instruction", "RUN make")
            .with("env", canonical_map([("PATH", "/bin"), ("A", "1")]))
            .with("args", canonical_map([("VERSION", "1.2")]))
            .with("sources", Digest::of_bytes(b"sources").to_string())
            .with("platform", "linux/amd64")
    }

    #[test]
    fn key_is_stable() {
        assert_eq!(base().key(), base().key());
        // Insertion order does not matter: parts are hashed in name order.
        let reversed = KeyInputs::new()
            .with("platform", "linux/amd64")
            .with("sources", Digest::of_bytes(b"sources").to_string())
            .with("args", canonical_map([("VERSION", "1.2")]))
            .with("env", canonical_map([("A", "1"), ("PATH", "/bin")]))
            .with("instruction", "RUN make")
            .with("parent", Digest::of_bytes(b"parent").to_string());
        assert_eq!(reversed.key(), base().key());
        // Pinned (computed independently with Python's hashlib): a change of
        // encoding must come with a new DOMAIN version.
        assert_eq!(
            KeyInputs::new()
                .with("instruction", "RUN true")
                .key()
                .as_str(),
            "sha256:cc37b2393d3c98e5d40410fb873d8ca2e0340a921885ba5d91114a0e5e27280e"
        );
    }

    #[test]
    fn key_is_sensitive_to_every_part() {
        let k = base().key();
        for name in [
            "parent",
            "instruction",
            "env",
            "args",
            "sources",
            "platform",
        ] {
            let changed = base().with(name, "something else");
            assert_ne!(changed.key(), k, "{name}");
            let mut removed = base();
            removed.parts.remove(name);
            assert_ne!(removed.key(), k, "{name} removed");
        }
        assert_ne!(base().with("network", "none").key(), k);
        // An empty value is not the same as no value.
        assert_ne!(base().with("mounts", "").key(), k);
    }

    #[test]
    fn boundaries_between_parts_are_unambiguous() {
        let a = KeyInputs::new().with("a", "bc");
        let b = KeyInputs::new().with("ab", "c");
        assert_ne!(a.key(), b.key());
        let one = KeyInputs::new().with("x", "1\0y\u{1}2");
        let two = KeyInputs::new().with("x", "1").with("y", "2");
        assert_ne!(one.key(), two.key());
    }

    #[test]
    fn canonical_map_sorts_and_later_wins() {
        assert_eq!(
            canonical_map([("B", "2"), ("A", "1"), ("B", "3")]),
            r#"{"A":"1","B":"3"}"#
        );
        assert_eq!(canonical_map(Vec::<(String, String)>::new()), "{}");
    }

    #[test]
    fn explain_names_what_changed() {
        assert!(explain(&base(), &base()).is_empty());
        let new = base()
            .with("instruction", "RUN make install")
            .with("args", canonical_map([("VERSION", "1.3"), ("DEBUG", "1")]))
            .with("env", canonical_map([("PATH", "/bin")]))
            .with("sources", Digest::of_bytes(b"other").to_string())
            .with("network", "none");
        let mut old = base();
        old.parts.remove("platform");
        let got = explain(&old, &new.clone().with("platform", "linux/amd64"));
        assert_eq!(
            got,
            [
                "args: DEBUG added",
                "args: VERSION changed: \"1.2\" -> \"1.3\"",
                "env: A removed",
                "instruction changed: \"RUN make\" -> \"RUN make install\"",
                "network added",
                "platform added",
                &format!(
                    "sources changed: \"{}\" -> \"{}\"",
                    Digest::of_bytes(b"sources"),
                    Digest::of_bytes(b"other")
                ),
            ]
        );
        let mut gone = base();
        gone.parts.remove("sources");
        assert_eq!(explain(&base(), &gone), ["sources removed"]);
        // Long or multi-line values are named, not printed.
        let long = base().with("instruction", "RUN ".to_string() + &"x".repeat(100));
        assert_eq!(explain(&base(), &long), ["instruction changed"]);
        let heredoc = base().with("instruction", "RUN <<EOF\nmake\nEOF");
        assert_eq!(explain(&base(), &heredoc), ["instruction changed"]);
    }
}
