//! What an unprivileged unpack could not put on disk, kept beside the tree so
//! that later layer writing restores it instead of squashing it.
//!
//! Format (`*.kiln-meta.jsonl`): UTF-8 JSON Lines, one object per path, sorted
//! by path, for example
//!
//! ```text
//! {"path":"dev/null","kind":"char","uid":0,"gid":0,"mode":438,"rdev":[1,3]}
//! {"path":"etc/shadow","kind":"file","uid":0,"gid":42,"mode":416}
//! {"path":"usr/bin/ping","kind":"file","uid":0,"gid":0,"mode":493,"xattrs":{"security.capability":"AQAAAgAgAAAAAAAAAAAAAAAAAAA="}}
//! ```
//!
//! A record says: "the tar wanted this path to have these owner ids and mode
//! bits (and, when present, these device numbers and xattrs, values in
//! base64); what is on disk may differ". Paths are relative to the unpack
//! root, `/`-separated, without a leading `./`; non-UTF-8 names are stored
//! lossily. Devices a non-root process could not create are recorded with
//! `kind` `char`/`block` and `rdev` and are absent from the tree. A path
//! without a record is on disk exactly as the tar said.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::LayerError;

/// Kind of a recorded entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Char,
    Block,
    Fifo,
}

/// The intended metadata of one path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub path: String,
    pub kind: Kind,
    pub uid: u64,
    pub gid: u64,
    /// Permission bits including setuid/setgid/sticky (no file-type bits).
    pub mode: u32,
    /// `(major, minor)` of a device that was not created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rdev: Option<(u32, u32)>,
    /// Extended attributes that could not be set: name → base64 value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub xattrs: BTreeMap<String, String>,
}

impl Record {
    /// Decoded xattr values (undecodable ones are skipped).
    pub fn xattr_values(&self) -> BTreeMap<String, Vec<u8>> {
        self.xattrs
            .iter()
            .filter_map(|(k, v)| {
                base64::engine::general_purpose::STANDARD
                    .decode(v)
                    .ok()
                    .map(|v| (k.clone(), v))
            })
            .collect()
    }

    pub(crate) fn add_xattr(&mut self, name: &str, value: &[u8]) {
        self.xattrs.insert(
            name.to_string(),
            base64::engine::general_purpose::STANDARD.encode(value),
        );
    }
}

/// All records of one unpack root.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Metadata {
    records: BTreeMap<String, Record>,
}

/// The sidecar file kiln uses for an unpack root `root`: `<root>.kiln-meta.jsonl`
/// beside it (outside the tree, so it never ends up in a layer).
pub fn sidecar_path(root: &Path) -> PathBuf {
    let mut s = root.as_os_str().to_os_string();
    s.push(".kiln-meta.jsonl");
    PathBuf::from(s)
}

impl Metadata {
    /// Reads a sidecar; a missing file is an empty record set.
    pub fn load(path: &Path) -> Result<Metadata, LayerError> {
        let err = |what: &str, source| LayerError::Metadata {
            path: path.to_path_buf(),
            what: what.to_string(),
            source,
        };
        let file = match fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Metadata::default()),
            Err(e) => return Err(err("open", e)),
        };
        let mut records = BTreeMap::new();
        for (n, line) in BufReader::new(file).lines().enumerate() {
            let line = line.map_err(|e| err("read", e))?;
            if line.trim().is_empty() {
                continue;
            }
            let rec: Record = serde_json::from_str(&line)
                .map_err(|e| err(&format!("parse line {}", n + 1), io::Error::other(e)))?;
            records.insert(rec.path.clone(), rec);
        }
        Ok(Metadata { records })
    }

    /// Writes the sidecar (temp file + fsync + rename beside it).
    pub fn save(&self, path: &Path) -> Result<(), LayerError> {
        let err = |what: &str, source| LayerError::Metadata {
            path: path.to_path_buf(),
            what: what.to_string(),
            source,
        };
        let mut tmp = path.as_os_str().to_os_string();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let mut out = io::BufWriter::new(fs::File::create(&tmp).map_err(|e| err("create", e))?);
        for rec in self.records.values() {
            let line =
                serde_json::to_string(rec).map_err(|e| err("encode", io::Error::other(e)))?;
            writeln!(out, "{line}").map_err(|e| err("write", e))?;
        }
        let file = out.into_inner().map_err(|e| err("write", e.into_error()))?;
        file.sync_all().map_err(|e| err("fsync", e))?;
        fs::rename(&tmp, path).map_err(|e| err("rename into place", e))
    }

    /// The record for `path` (relative, `/`-separated).
    pub fn get(&self, path: &str) -> Option<&Record> {
        self.records.get(path)
    }

    /// All records, sorted by path.
    pub fn records(&self) -> impl Iterator<Item = &Record> {
        self.records.values()
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    pub(crate) fn insert(&mut self, rec: Record) {
        self.records.insert(rec.path.clone(), rec);
    }

    /// Forgets `path` and everything below it (it was deleted or replaced).
    pub(crate) fn remove_tree(&mut self, path: &str) {
        self.records.remove(path);
        let prefix = format!("{path}/");
        let below: Vec<String> = self
            .records
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, _)| k.clone())
            .collect();
        for k in below {
            self.records.remove(&k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(path: &str) -> Record {
        Record {
            path: path.into(),
            kind: Kind::File,
            uid: 0,
            gid: 42,
            mode: 0o4755,
            rdev: None,
            xattrs: BTreeMap::new(),
        }
    }

    #[test]
    fn round_trips_and_removes_trees() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.jsonl");
        let mut m = Metadata::default();
        let mut r = rec("a/b");
        r.add_xattr("security.capability", b"\x01\x02");
        m.insert(r);
        m.insert(rec("a/bc"));
        m.insert(rec("a/b/c"));
        let mut dev = rec("dev/null");
        dev.kind = Kind::Char;
        dev.rdev = Some((1, 3));
        m.insert(dev);
        m.save(&path).unwrap();
        let back = Metadata::load(&path).unwrap();
        assert_eq!(back, m);
        assert_eq!(
            back.get("a/b").unwrap().xattr_values()["security.capability"],
            b"\x01\x02"
        );
        let mut m = back;
        m.remove_tree("a/b");
        let left: Vec<_> = m.records().map(|r| r.path.as_str()).collect();
        assert_eq!(left, ["a/bc", "dev/null"]);
        assert!(Metadata::load(&dir.path().join("none")).unwrap().is_empty());
    }
}
