//! What an image *is*, for comparing two builds of one Dockerfile: its
//! unpacked root filesystem as a sorted map of path → file facts, and the
//! image config fields a Dockerfile sets, normalized. [`diff`] lists the
//! differences between two such snapshots, and [`Allowed`] entries (each with
//! its reason) excuse the known, deliberate ones.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::process::Command;

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::tools;

/// One file of an unpacked rootfs. Times are left out on purpose: no two
/// builds agree on them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub kind: &'static str,
    /// Permission bits including setuid, setgid and sticky (`st_mode & 07777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// `sha256:<hex>` of a regular file's content.
    pub sha256: Option<String>,
    /// A symlink's target.
    pub link: Option<String>,
    /// For regular files with other names in the tree: the smallest path of
    /// the hardlink group, so equal groups compare equal.
    pub hardlink: Option<String>,
    /// Extended attributes (name → hex value), `security.selinux` left out:
    /// it belongs to the host, not the image.
    pub xattrs: BTreeMap<String, String>,
    /// `major:minor` of a device node.
    pub rdev: Option<String>,
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {:04o} {}:{}",
            self.kind, self.mode, self.uid, self.gid
        )?;
        if let Some(sha) = &self.sha256 {
            write!(f, " {}", &sha[..sha.len().min(19)])?;
        }
        if let Some(link) = &self.link {
            write!(f, " -> {link}")?;
        }
        if let Some(first) = &self.hardlink {
            write!(f, " hardlink-of {first}")?;
        }
        if let Some(rdev) = &self.rdev {
            write!(f, " dev {rdev}")?;
        }
        for (name, value) in &self.xattrs {
            write!(f, " {name}={value}")?;
        }
        Ok(())
    }
}

/// An image as the comparison sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Rootfs paths relative to `/` (no leading slash); `""` is the root.
    pub files: BTreeMap<String, Node>,
    /// `config:<Field>` (and `history`) → normalized JSON text.
    pub config: BTreeMap<String, String>,
}

impl Snapshot {
    /// Reads the image `tag` of the OCI layout `layout`: unpacks it with
    /// `umoci unpack` into `work` (which must not exist; run as root so
    /// owners and xattrs survive) and reads its config from the layout.
    pub fn of_layout(layout: &Path, tag: &str, work: &Path) -> Snapshot {
        tools::run(
            Command::new(tools::require("umoci"))
                .arg("unpack")
                .arg("--image")
                .arg(format!("{}:{tag}", layout.display()))
                .arg(work),
        );
        Snapshot {
            files: capture_tree(&work.join("rootfs")),
            config: normalize_config(&read_config(layout, tag)),
        }
    }
}

/// Walks `root` (without following symlinks) into a path → [`Node`] map.
pub fn capture_tree(root: &Path) -> BTreeMap<String, Node> {
    let mut files = BTreeMap::new();
    let mut inodes: HashMap<(u64, u64), Vec<String>> = HashMap::new();
    walk(root, root, &mut files, &mut inodes);
    for mut paths in inodes.into_values().filter(|paths| paths.len() > 1) {
        paths.sort();
        for path in &paths {
            if let Some(node) = files.get_mut(path) {
                node.hardlink = Some(paths[0].clone());
            }
        }
    }
    for (path, xattrs) in read_xattrs(root) {
        if let Some(node) = files.get_mut(&path) {
            node.xattrs = xattrs;
        }
    }
    files
}

fn walk(
    root: &Path,
    path: &Path,
    files: &mut BTreeMap<String, Node>,
    inodes: &mut HashMap<(u64, u64), Vec<String>>,
) {
    let meta =
        fs::symlink_metadata(path).unwrap_or_else(|err| panic!("stat {}: {err}", path.display()));
    let rel = relative(root, path);
    let ft = meta.file_type();
    let kind = if ft.is_dir() {
        "dir"
    } else if ft.is_symlink() {
        "symlink"
    } else if ft.is_file() {
        "file"
    } else if ft.is_char_device() {
        "char"
    } else if ft.is_block_device() {
        "block"
    } else if ft.is_fifo() {
        "fifo"
    } else {
        "socket"
    };
    let sha256 = ft.is_file().then(|| {
        let bytes = fs::read(path).unwrap_or_else(|err| panic!("read {}: {err}", path.display()));
        format!("sha256:{:x}", Sha256::digest(&bytes))
    });
    let link = ft.is_symlink().then(|| {
        fs::read_link(path)
            .unwrap_or_else(|err| panic!("readlink {}: {err}", path.display()))
            .to_string_lossy()
            .into_owned()
    });
    if ft.is_file() && meta.nlink() > 1 {
        inodes
            .entry((meta.dev(), meta.ino()))
            .or_default()
            .push(rel.clone());
    }
    let rdev = (ft.is_char_device() || ft.is_block_device()).then(|| {
        let rdev = meta.rdev();
        // Linux's encoding of major/minor in dev_t.
        let major = ((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfff);
        let minor = (rdev & 0xff) | ((rdev >> 12) & !0xff);
        format!("{major}:{minor}")
    });
    files.insert(
        rel,
        Node {
            kind,
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
            sha256,
            link,
            hardlink: None,
            xattrs: BTreeMap::new(),
            rdev,
        },
    );
    if ft.is_dir() {
        let mut children: Vec<_> = fs::read_dir(path)
            .unwrap_or_else(|err| panic!("read directory {}: {err}", path.display()))
            .map(|entry| {
                entry
                    .unwrap_or_else(|err| panic!("read {}: {err}", path.display()))
                    .path()
            })
            .collect();
        children.sort();
        for child in children {
            walk(root, &child, files, inodes);
        }
    }
}

fn relative(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or_else(|_| panic!("{} is not under {}", path.display(), root.display()))
        .to_string_lossy()
        .into_owned()
}

/// Every xattr under `root` (one `getfattr` run), keyed by relative path.
fn read_xattrs(root: &Path) -> BTreeMap<String, BTreeMap<String, String>> {
    let output = Command::new(tools::require("getfattr"))
        .args(["--recursive", "--physical", "--dump", "--match=-"])
        .args(["--encoding=hex", "--absolute-names"])
        .arg(root)
        .output()
        .unwrap_or_else(|err| panic!("run getfattr: {err}"));
    // getfattr exits 1 when some file has no xattr support (e.g. a symlink
    // on some filesystems) but still prints the rest.
    let text = String::from_utf8_lossy(&output.stdout);
    let prefix = root.to_string_lossy();
    let mut all = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if let Some(file) = line.strip_prefix("# file: ") {
            let file = unescape_getfattr(file);
            let rel = file
                .strip_prefix(prefix.as_ref())
                .unwrap_or(&file)
                .trim_start_matches('/')
                .to_owned();
            current = Some(rel);
        } else if let (Some(path), Some((name, value))) = (&current, line.split_once('=')) {
            if name != "security.selinux" {
                all.entry(path.clone())
                    .or_insert_with(BTreeMap::new)
                    .insert(name.to_owned(), value.to_owned());
            }
        }
    }
    all
}

/// getfattr writes unusual bytes of file names as `\NNN` (octal).
fn unescape_getfattr(name: &str) -> String {
    let bytes = name.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|digits| {
            std::str::from_utf8(digits)
                .ok()
                .and_then(|d| u8::from_str_radix(d, 8).ok())
        });
        match (bytes[i], octal) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The config blob of image `tag` in the OCI layout `layout`.
pub fn read_config(layout: &Path, tag: &str) -> Value {
    let read_json = |path: &Path| -> Value {
        let bytes = fs::read(path).unwrap_or_else(|err| panic!("read {}: {err}", path.display()));
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|err| panic!("parse {}: {err}", path.display()))
    };
    let blob = |digest: &Value| {
        let digest = digest.as_str().expect("digest is a string");
        let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
        layout.join("blobs/sha256").join(hex)
    };
    let index = read_json(&layout.join("index.json"));
    let manifest = index["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap_or_else(|| panic!("no tag {tag} in {}/index.json", layout.display()));
    let manifest = read_json(&blob(&manifest["digest"]));
    read_json(&blob(&manifest["config"]["digest"]))
}

/// The Dockerfile-controlled parts of an image config as `config:<Field>`
/// → JSON text. Absent, null and empty values are the same thing (builders
/// differ in which they write), object keys are sorted (serde_json's map),
/// and history becomes one line per entry: `created_by` without BuildKit's
/// ` # buildkit` marker, plus ` (empty layer)`.
pub fn normalize_config(image: &Value) -> BTreeMap<String, String> {
    const FIELDS: [&str; 12] = [
        "Env",
        "Cmd",
        "Entrypoint",
        "WorkingDir",
        "User",
        "ExposedPorts",
        "Volumes",
        "Labels",
        "StopSignal",
        "Healthcheck",
        "OnBuild",
        "Shell",
    ];
    let mut out = BTreeMap::new();
    let config = &image["config"];
    for field in FIELDS {
        let value = &config[field];
        let empty = match value {
            Value::Null => true,
            Value::String(s) => s.is_empty(),
            Value::Array(a) => a.is_empty(),
            Value::Object(o) => o.is_empty(),
            _ => false,
        };
        if !empty {
            out.insert(format!("config:{field}"), value.to_string());
        }
    }
    let history: Vec<String> = image["history"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|entry| {
            let created_by = entry["created_by"].as_str().unwrap_or("");
            let created_by = created_by.strip_suffix(" # buildkit").unwrap_or(created_by);
            if entry["empty_layer"].as_bool().unwrap_or(false) {
                format!("{created_by} (empty layer)")
            } else {
                created_by.to_owned()
            }
        })
        .collect();
    out.insert("history".to_owned(), history.join("\n"));
    out
}

/// One way two snapshots differ.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Difference {
    /// A rootfs path, `config:<Field>` or `history`.
    pub subject: String,
    pub left: Option<String>,
    pub right: Option<String>,
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |side: &Option<String>| side.clone().unwrap_or_else(|| "(absent)".to_owned());
        let (left, right) = (show(&self.left), show(&self.right));
        if left.contains('\n') || right.contains('\n') {
            writeln!(f, "{}:", self.subject)?;
            let indent = |text: &str| text.replace('\n', "\n      ");
            writeln!(f, "  - {}", indent(&left))?;
            write!(f, "  + {}", indent(&right))
        } else {
            write!(f, "{}:\n  - {left}\n  + {right}", self.subject)
        }
    }
}

/// Every difference between `left` and `right`, files first, in path order.
pub fn diff(left: &Snapshot, right: &Snapshot) -> Vec<Difference> {
    let mut out = Vec::new();
    let mut compare = |l: &BTreeMap<String, String>, r: &BTreeMap<String, String>| {
        let keys: std::collections::BTreeSet<&String> = l.keys().chain(r.keys()).collect();
        for key in keys {
            let (a, b) = (l.get(key), r.get(key));
            if a != b {
                out.push(Difference {
                    subject: key.clone(),
                    left: a.cloned(),
                    right: b.cloned(),
                });
            }
        }
    };
    let show = |files: &BTreeMap<String, Node>| -> BTreeMap<String, String> {
        files
            .iter()
            .map(|(path, node)| (format!("/{path}"), node.to_string()))
            .collect()
    };
    compare(&show(&left.files), &show(&right.files));
    compare(&left.config, &right.config);
    out
}

/// A known, deliberate difference: subjects matching `pattern` may differ.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
pub struct Allowed {
    /// A rootfs path (leading `/`) or `config:<Field>` / `history`; `*`
    /// matches within one path component, `**` across components.
    pub pattern: String,
    /// Why the difference is right, for the README and the report.
    pub reason: String,
}

impl Allowed {
    pub fn matches(&self, subject: &str) -> bool {
        glob_match(self.pattern.as_bytes(), subject.as_bytes())
    }
}

/// The differences no [`Allowed`] entry excuses.
pub fn unexpected<'a>(diffs: &'a [Difference], allowed: &[Allowed]) -> Vec<&'a Difference> {
    diffs
        .iter()
        .filter(|d| !allowed.iter().any(|a| a.matches(&d.subject)))
        .collect()
}

fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    match pattern {
        [] => text.is_empty(),
        [b'*', b'*', rest @ ..] => (0..=text.len()).any(|i| glob_match(rest, &text[i..])),
        [b'*', rest @ ..] => {
            let segment = text.iter().position(|&c| c == b'/').unwrap_or(text.len());
            (0..=segment).any(|i| glob_match(rest, &text[i..]))
        }
        [c, rest @ ..] => text.first() == Some(c) && glob_match(rest, &text[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_within_and_across_components() {
        let allowed = |p: &str| Allowed {
            pattern: p.to_owned(),
            reason: String::new(),
        };
        assert!(allowed("/etc/*").matches("/etc/hosts"));
        assert!(!allowed("/etc/*").matches("/etc/ssl/certs"));
        assert!(allowed("/var/**").matches("/var/lib/apt/lists"));
        assert!(allowed("config:Env").matches("config:Env"));
        assert!(!allowed("config:Env").matches("config:Cmd"));
    }
}
