//! Entry names from a tar: untrusted bytes turned into relative paths, and
//! OCI whiteout markers recognised. These string checks are the first line of
//! defence only; the kernel's `RESOLVE_BENEATH` lookups in `sys::fs` are the
//! one that counts.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

/// Prefix of a whiteout file name.
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// Name of the opaque-directory marker.
pub const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// A checked relative path: components that are neither empty, `.`, `..`,
/// nor contain `/` or NUL.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RelPath(Vec<OsString>);

impl RelPath {
    /// Parses a tar entry name or hardlink target. `./` prefixes, repeated
    /// slashes and `.` components are dropped, as every tar does. Refuses
    /// absolute names and any `..` component (the rule: refuse, not
    /// normalise as containerd does), and NUL bytes.
    pub fn parse(unsafe_path: &[u8]) -> Result<RelPath, String> {
        if unsafe_path.contains(&0) {
            return Err("name contains a NUL byte".into());
        }
        if unsafe_path.starts_with(b"/") {
            return Err("absolute path".into());
        }
        let mut parts = Vec::new();
        for comp in unsafe_path.split(|b| *b == b'/') {
            match comp {
                b"" | b"." => {}
                b".." => return Err("path has a `..` component".into()),
                c => parts.push(OsStr::from_bytes(c).to_os_string()),
            }
        }
        Ok(RelPath(parts))
    }

    /// Directory components and the last one; `None` for the root.
    pub fn split_last(&self) -> Option<(RelPath, &OsStr)> {
        let (last, parent) = self.0.split_last()?;
        Some((RelPath(parent.to_vec()), last.as_os_str()))
    }

    /// This path with `name` appended.
    pub fn join(&self, name: &OsStr) -> RelPath {
        let mut v = self.0.clone();
        v.push(name.to_os_string());
        RelPath(v)
    }

    /// Number of components.
    pub fn depth(&self) -> usize {
        self.0.len()
    }

    /// As a relative `PathBuf` (empty for the root).
    pub fn to_path(&self) -> PathBuf {
        self.0.iter().collect()
    }

    /// A 128-bit digest of the path (truncated sha256: collisions are out of
    /// reach), for sets of many paths.
    pub fn key(&self) -> [u8; 16] {
        use sha2::Digest as _;
        let mut h = sha2::Sha256::new();
        for c in &self.0 {
            h.update(c.as_bytes());
            h.update([0u8]);
        }
        let full = h.finalize();
        let mut out = [0u8; 16];
        out.copy_from_slice(&full[..16]);
        out
    }

    /// `a/b/c`, lossily, for messages and metadata keys.
    pub fn display(&self) -> String {
        self.to_path().to_string_lossy().into_owned()
    }
}

/// What a (checked) entry name says about whiteouts.
#[derive(Debug, PartialEq, Eq)]
pub enum Marker<'a> {
    /// An ordinary entry.
    None,
    /// `.wh..wh..opq`: hide the lower content of the parent directory.
    Opaque,
    /// `.wh.NAME`: delete `NAME` from lower layers.
    Whiteout(&'a OsStr),
    /// Another `.wh..wh.*` name (AUFS bookkeeping such as `.wh..wh.plnk`):
    /// ignored, as Docker does.
    AufsMeta,
}

/// Classifies the last component of an entry name. A whiteout of `.`, `..`
/// or nothing is refused: it could only be an attempt to delete the parent.
pub fn marker(name: &OsStr) -> Result<Marker<'_>, String> {
    let bytes = name.as_bytes();
    if bytes == OPAQUE_MARKER.as_bytes() {
        return Ok(Marker::Opaque);
    }
    let Some(rest) = bytes.strip_prefix(WHITEOUT_PREFIX.as_bytes()) else {
        return Ok(Marker::None);
    };
    if rest.starts_with(WHITEOUT_PREFIX.as_bytes()) {
        return Ok(Marker::AufsMeta);
    }
    match rest {
        b"" | b"." | b".." => Err(format!(
            "whiteout of {:?} names no deletable entry",
            String::from_utf8_lossy(rest)
        )),
        _ => Ok(Marker::Whiteout(OsStr::from_bytes(rest))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_normalises() {
        let p = RelPath::parse(b"./usr//bin/./sh").unwrap();
        assert_eq!(p.display(), "usr/bin/sh");
        assert!(RelPath::parse(b"./").unwrap().split_last().is_none());
        assert_eq!(RelPath::parse(b"etc/").unwrap().display(), "etc");
    }

    #[test]
    fn refuses_escapes() {
        for bad in [
            &b"../x"[..],
            b"a/../../x",
            b"a/..",
            b"/etc/passwd",
            b"//x",
            b"a\0b",
        ] {
            assert!(
                RelPath::parse(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn classifies_whiteouts() {
        assert_eq!(marker(OsStr::new("x")).unwrap(), Marker::None);
        assert_eq!(marker(OsStr::new(".wh..wh..opq")).unwrap(), Marker::Opaque);
        assert_eq!(
            marker(OsStr::new(".wh.foo")).unwrap(),
            Marker::Whiteout(OsStr::new("foo"))
        );
        assert_eq!(
            marker(OsStr::new(".wh..wh.plnk")).unwrap(),
            Marker::AufsMeta
        );
        for bad in [".wh.", ".wh..", ".wh..."] {
            assert!(marker(OsStr::new(bad)).is_err(), "{bad}");
        }
    }
}
