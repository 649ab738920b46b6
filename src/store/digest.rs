//! Content digests: the only algorithm kiln writes or accepts is sha256.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::StoreError;

/// A validated `sha256:<64 lowercase hex>` digest.
///
/// Validation happens once, at construction, so a `Digest` can be turned into
/// a path under `blobs/` without any risk of path traversal.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Digest(String);

const PREFIX: &str = "sha256:";

impl Digest {
    /// Parses `sha256:<hex>`; rejects other algorithms, upper case and wrong lengths.
    pub fn parse(s: &str) -> Result<Digest, StoreError> {
        let invalid = |reason: &'static str| StoreError::InvalidDigest {
            digest: s.to_string(),
            reason,
        };
        let hex = s
            .strip_prefix(PREFIX)
            .ok_or_else(|| invalid("only sha256 digests are supported"))?;
        if hex.len() != 64 {
            return Err(invalid("sha256 hex must be 64 characters"));
        }
        // Lowercase only: the OCI spec requires it, and it keeps one blob one path.
        if !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(invalid("sha256 hex must be lowercase hexadecimal"));
        }
        Ok(Digest(s.to_string()))
    }

    /// The digest of `data`.
    pub fn of_bytes(data: &[u8]) -> Digest {
        Digest::from_hasher(Sha256::new_with_prefix(data))
    }

    /// Finishes a running hash into a digest.
    pub(crate) fn from_hasher(hasher: Sha256) -> Digest {
        Digest(format!("{PREFIX}{}", to_hex(&hasher.finalize())))
    }

    /// Always `"sha256"`.
    pub fn algorithm(&self) -> &str {
        "sha256"
    }

    /// The 64 hex characters after `sha256:`.
    pub fn hex(&self) -> &str {
        &self.0[PREFIX.len()..]
    }

    /// The full `sha256:<hex>` form.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Digest {
    type Error = StoreError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Digest::parse(&s)
    }
}

impl From<Digest> for String {
    fn from(d: Digest) -> String {
        d.0
    }
}
