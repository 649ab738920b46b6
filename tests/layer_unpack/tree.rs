//! Snapshots of directory trees (names, kinds, modes, owners, link targets,
//! contents) to prove that nothing changed, or that two trees are equal.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

/// path → description, without following symlinks. `skip` names children
/// of `root` to leave out (the unpack root inside a sentinel directory).
pub fn snapshot(root: &Path, skip: &[&str]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    walk(root, root, skip, &mut out, true);
    out
}

fn walk(
    root: &Path,
    dir: &Path,
    skip: &[&str],
    out: &mut BTreeMap<String, String>,
    with_times: bool,
) {
    let mut entries: Vec<_> = fs::read_dir(dir).unwrap().map(|e| e.unwrap()).collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = e.path();
        let rel = path
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        if dir == root && skip.contains(&rel.as_str()) {
            continue;
        }
        let m = fs::symlink_metadata(&path).unwrap();
        let ft = m.file_type();
        let what = if ft.is_symlink() {
            format!("symlink -> {}", fs::read_link(&path).unwrap().display())
        } else if ft.is_dir() {
            "dir".to_string()
        } else if ft.is_file() {
            format!(
                "file {:?}",
                String::from_utf8_lossy(&fs::read(&path).unwrap())
            )
        } else if ft.is_char_device() {
            format!("char {}", m.rdev())
        } else if ft.is_fifo() {
            "fifo".to_string()
        } else {
            "other".to_string()
        };
        let times = if with_times {
            format!(" mtime {}", m.mtime())
        } else {
            String::new()
        };
        out.insert(
            rel,
            format!(
                "{what} mode {:o} owner {}:{}{times}",
                m.mode() & 0o7777,
                m.uid(),
                m.gid()
            ),
        );
        if ft.is_dir() {
            walk(root, &path, &[], out, with_times);
        }
    }
}

/// Like [`snapshot`] without times (for trees made by different tools).
pub fn shape(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    walk(root, root, &[], &mut out, false);
    out
}
