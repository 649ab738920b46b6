//! A step's overlay upper dir adopted as its layer's unpacked tree
//! (`store::adopt`): the next step must see exactly what it would see over
//! the extracted layer, and the stored trees must be the same.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::{Kiln, Tier};
use crate::support::tools;

/// Every kind of change a step can leave in an overlay upper dir.
const MAKE: &str = "set -e
mkdir -p /data/sub /data/ro
echo hello > /data/a
printf xx > /data/sub/b
ln /data/a /data/hard
ln -s ../a /data/sub/link
mkfifo /data/fifo
chmod 4755 /data/a
chmod 0700 /data/sub
chmod 0555 /data/ro
touch /data/gone && rm /data/gone
rm /bin/ls
echo changed > /etc/group
rm -r /tmp && mkdir /tmp && chmod 1777 /tmp && touch /tmp/t
rm /etc/passwd && mkdir /etc/passwd
mkdir /root/x && rmdir /root/x";

/// What the next step sees: every path with its kind, mode, owner, size,
/// mtime and link count (the sandbox's own mount points left out, and
/// `/etc`, which gets them: its mtime is now).
const LIST: &str = "find / -mindepth 1 -xdev \\( -path /proc -o -path /sys -o -path /dev \
-o -path /etc/hosts -o -path /etc/resolv.conf -o -path /etc/hostname -o -path /listing \\) \
-prune -o -print | sort | while read -r p; do stat -c '%n %F %a %u %g %s %Y %h' \"$p\"; done \
| grep -v '^/etc directory ' > /listing
cat /listing";

/// One store: the base, step MAKE over it, step LIST over that. Returns
/// the two layers' diff_ids, LIST's output and the trees unpacked right
/// after MAKE.
fn build(tier: Tier, adopt: bool) -> (Kiln, [String; 2], String, usize) {
    let kiln = Kiln::new(tier);
    kiln.import_busybox("base");
    let step = |image: &str, tag: &str, script: &str| {
        let mut c = kiln.step_command(image, "overlay", &["--tag", tag], script);
        c.env("SOURCE_DATE_EPOCH", "1000000000");
        c.env("KILN_ADOPT_UPPER", if adopt { "1" } else { "0" });
        let out = tools::run(&mut c);
        (
            super::report(&out),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (made, _) = step("base", "made", MAKE);
    let trees_after_make = trees(&kiln.store()).len();
    let (listed, stdout) = step("made", "listed", LIST);
    let listing: String = stdout
        .lines()
        .filter(|l| l.starts_with('/'))
        .map(|l| format!("{l}\n"))
        .collect();
    let diff = |v: &serde_json::Value| v["diff_id"].as_str().unwrap().to_string();
    (
        kiln,
        [diff(&made), diff(&listed)],
        listing,
        trees_after_make,
    )
}

/// The unpacked overlay trees of a store, by chain id.
fn trees(store: &Path) -> BTreeMap<String, PathBuf> {
    let mut out = BTreeMap::new();
    for kind in ["overlay-user", "overlay-trusted"] {
        let Ok(entries) = fs::read_dir(store.join("unpacked").join(kind)) else {
            continue;
        };
        for e in entries.flatten() {
            out.insert(e.file_name().to_string_lossy().into_owned(), e.path());
        }
    }
    out
}

/// Everything extraction decides about a tree, per path below the root:
/// kind, mode, owner, size, mtime, links, device, link target, content and
/// xattrs (not atimes: reading moves them; not a whiteout's times).
fn describe(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for e in fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            let m = fs::symlink_metadata(&p).unwrap();
            let ft = m.file_type();
            let detail = if ft.is_symlink() {
                format!("-> {}", fs::read_link(&p).unwrap().display())
            } else if ft.is_file() {
                format!("{:?}", fs::read(&p).unwrap())
            } else if ft.is_dir() {
                todo.push(p.clone());
                String::new()
            } else {
                format!("rdev {} fifo {}", m.rdev(), ft.is_fifo())
            };
            let mut attrs = Vec::new();
            if let Ok(names) = xattr_names(&p) {
                for n in names {
                    attrs.push(n);
                }
            }
            attrs.sort();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            out.insert(
                rel,
                format!(
                    "mode {:o} owner {}:{} size {} mtime {}.{} links {} xattrs {:?} {}",
                    m.mode(),
                    m.uid(),
                    m.gid(),
                    if ft.is_dir() { 0 } else { m.size() },
                    // A whiteout's times are when it was made, in both.
                    if ft.is_char_device() { 0 } else { m.mtime() },
                    if ft.is_char_device() {
                        0
                    } else {
                        m.mtime_nsec()
                    },
                    m.nlink(),
                    attrs,
                    detail
                ),
            );
        }
    }
    out
}

/// `name=value` of every xattr of `p` (not following a symlink).
fn xattr_names(p: &Path) -> std::io::Result<Vec<String>> {
    let mut buf = vec![0u8; 64 * 1024];
    let n = rustix::fs::llistxattr(p, &mut buf[..])?;
    let mut out = Vec::new();
    for name in buf[..n].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let name = std::str::from_utf8(name).unwrap().to_string();
        let mut val = vec![0u8; 64 * 1024];
        let len = rustix::fs::lgetxattr(p, name.as_str(), &mut val[..])?;
        out.push(format!("{name}={:?}", &val[..len]));
    }
    Ok(out)
}

#[test]
fn the_next_step_sees_the_same_tree_over_an_adopted_upper_dir() {
    for tier in Tier::available() {
        let (adopted, digests, listing, n_adopted) = build(tier, true);
        let (extracted, digests_x, listing_x, n_extracted) = build(tier, false);
        let tier = tier.name();
        assert_eq!(n_extracted, 1, "{tier}: only the base unpacked after MAKE");
        assert_eq!(n_adopted, 2, "{tier}: MAKE's upper dir adopted");
        for (a, x) in listing.lines().zip(listing_x.lines()) {
            assert_eq!(a, x, "{tier}: what the next step saw");
        }
        assert_eq!(listing, listing_x, "{tier}: what the next step saw");
        for path in ["/data/a ", "/data/fifo ", "/tmp/t ", "/etc/passwd "] {
            assert!(listing.contains(path), "{tier}: {path} in\n{listing}");
        }
        assert!(!listing.contains("/bin/ls "), "{tier}: whiteout\n{listing}");
        assert_eq!(
            digests, digests_x,
            "{tier}: layers with and without adoption"
        );

        let a = trees(&adopted.store());
        let x = trees(&extracted.store());
        let common: Vec<&String> = a.keys().filter(|k| x.contains_key(*k)).collect();
        assert_eq!(common.len(), 2, "{tier}: base and MAKE in both stores");
        for chain in common {
            let (da, dx) = (&a[chain], &x[chain]);
            let (ta, tx) = (describe(&da.join("rootfs")), describe(&dx.join("rootfs")));
            for (path, want) in &tx {
                assert_eq!(ta.get(path), Some(want), "{tier}: {chain} {path}");
            }
            assert_eq!(ta.len(), tx.len(), "{tier}: {chain}: {:?}", ta.keys());
            assert_eq!(
                fs::read(da.join("meta.jsonl")).unwrap(),
                fs::read(dx.join("meta.jsonl")).unwrap(),
                "{tier}: {chain} sidecar"
            );
        }
    }
}

/// A path whose header owner the unprivileged extraction would record
/// (here `/home/user`, 1000:1000 in the base, emitted as the parent of a
/// new file) keeps the upper dir from being adopted; the layer keeps the
/// owner and the next step still runs over the extracted layer.
#[test]
fn an_upper_dir_with_recorded_owners_is_extracted_instead() {
    let tier = Tier::available()[0];
    let kiln = Kiln::new(tier);
    kiln.import_busybox("base");
    let made = kiln.step("base", "overlay", &["--tag", "made"], "touch /home/user/x");
    assert_eq!(
        trees(&kiln.store()).len(),
        1,
        "{}: not adopted",
        tier.name()
    );
    let entries = super::list_layer(&kiln.blob(made["digest"].as_str().unwrap()));
    assert!(
        entries
            .iter()
            .any(|(_, owner, path)| owner == "1000/1000" && path == "home/user/"),
        "{entries:?}"
    );
    let out = tools::run(&mut kiln.step_command("made", "overlay", &[], "ls /home/user"));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().next(),
        Some("x")
    );
    // MAKE's layer extracted for the next step, whose own upper was adopted.
    assert_eq!(trees(&kiln.store()).len(), 3);
}
