//! Id maps of a rootless sandbox, written by the parent: container root =
//! the caller, plus the caller's subordinate ranges when the setuid
//! helpers `newuidmap`/`newgidmap` (Debian's `uidmap`) can grant them.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;

use super::error::ExecError;
use super::spec::IdMapChoice;

/// A range of subordinate ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdRange {
    pub start: u32,
    pub count: u32,
}

/// The id map a sandbox got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdMap {
    /// 0 → caller, 1..=count → the subordinate ranges.
    Subordinate { uids: IdRange, gids: IdRange },
    /// Only 0 → caller; setgroups(2) denied.
    Single,
    /// Root caller: every id of kiln's own user namespace maps to itself.
    Identity,
    /// No user namespace (chroot tier).
    None,
}

impl IdMap {
    /// Whether ids other than 0 exist inside (so `chown`, `useradd` work).
    pub fn is_full(&self) -> bool {
        matches!(self, IdMap::Subordinate { .. } | IdMap::Identity)
    }
}

/// Picks the map for the caller `uid` (warning once when it must fall back).
pub fn plan(choice: IdMapChoice, uid: u32) -> IdMap {
    if uid == 0 {
        return IdMap::Identity;
    }
    if choice == IdMapChoice::Single || HELPERS_FAILED.load(Ordering::Relaxed) {
        return IdMap::Single;
    }
    let name = user_name(uid);
    let uids = largest_range(Path::new("/etc/subuid"), name.as_deref(), uid);
    let gids = largest_range(Path::new("/etc/subgid"), name.as_deref(), uid);
    let helpers = find_tool("newuidmap").is_some() && find_tool("newgidmap").is_some();
    match (uids, gids, helpers) {
        (Some(uids), Some(gids), true) => IdMap::Subordinate { uids, gids },
        _ => {
            static WARN: Once = Once::new();
            WARN.call_once(|| {
                let why = if helpers {
                    format!(
                        "user {} has no /etc/subuid and /etc/subgid ranges",
                        name.as_deref().unwrap_or(&uid.to_string())
                    )
                } else {
                    "newuidmap/newgidmap are missing (Debian package uidmap)".to_owned()
                };
                tracing::warn!(
                    "{why}: using a single-id map; inside the sandbox only root exists, \
                     so chown to other ids and switching USER fail"
                );
            });
            IdMap::Single
        }
    }
}

/// Writes `map` for process `pid` (in a fresh user namespace).
pub fn apply(pid: u32, map: &IdMap, uid: u32, gid: u32) -> Result<(), ExecError> {
    let err = |what: String| ExecError::IdMap { pid, what };
    let write = |file: &str, text: &str| {
        let path = format!("/proc/{pid}/{file}");
        fs::write(&path, text).map_err(|e| err(format!("write {text:?} to {path}: {e}")))
    };
    match map {
        IdMap::None => Ok(()),
        IdMap::Identity => {
            // Every id this namespace has, as itself: all 2^32 of them on
            // the host, but only its own extents when kiln runs as root of
            // a user namespace (`unshare -r`, a `--userns=auto` container),
            // where a line naming an unmapped id is refused.
            for file in ["uid_map", "gid_map"] {
                let own = format!("/proc/self/{file}");
                let text = fs::read_to_string(&own).map_err(|e| err(format!("read {own}: {e}")))?;
                let lines = identity_lines(&text)
                    .ok_or_else(|| err(format!("{own} is not an id map: {text:?}")))?;
                write(file, &lines)?;
            }
            Ok(())
        }
        IdMap::Single => {
            write("setgroups", "deny")?;
            write("uid_map", &format!("0 {uid} 1\n"))?;
            write("gid_map", &format!("0 {gid} 1\n"))
        }
        IdMap::Subordinate { uids, gids } => {
            helper("newuidmap", pid, uid, *uids).map_err(err)?;
            helper("newgidmap", pid, gid, *gids).map_err(err)
        }
    }
}

/// Set once `newuidmap` failed in this process: later sandboxes plan a
/// single-id map instead of failing the same way.
static HELPERS_FAILED: AtomicBool = AtomicBool::new(false);

/// [`apply`], except that a subordinate map whose helper fails before any
/// map was written (newuidmap without the setuid bit or its capability,
/// `no_new_privs`, or ranges the container's own user namespace does not
/// map, as with Kubernetes `hostUsers: false` and a non-root user) becomes
/// a single-id map, said once. Returns the map written.
pub fn apply_or_fall_back(pid: u32, map: &IdMap, uid: u32, gid: u32) -> Result<IdMap, ExecError> {
    let err = match apply(pid, map, uid, gid) {
        Ok(()) => return Ok(map.clone()),
        Err(err) => err,
    };
    let untouched = ["uid_map", "gid_map"]
        .iter()
        .all(|f| fs::read_to_string(format!("/proc/{pid}/{f}")).is_ok_and(|t| t.trim().is_empty()));
    if !matches!(map, IdMap::Subordinate { .. }) || !untouched {
        return Err(err);
    }
    if !HELPERS_FAILED.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            "{err}; using a single-id map instead: inside the sandbox only root exists, \
             so chown to other ids and switching USER fail"
        );
    }
    apply(pid, &IdMap::Single, uid, gid)?;
    Ok(IdMap::Single)
}

/// `INSIDE INSIDE COUNT` for each `INSIDE OUTSIDE COUNT` extent of an id
/// map file: the ids of the current namespace mapped to themselves.
fn identity_lines(own: &str) -> Option<String> {
    let mut out = String::new();
    for line in own.lines().filter(|l| !l.trim().is_empty()) {
        let f: Vec<u32> = line
            .split_whitespace()
            .map(str::parse)
            .collect::<Result<_, _>>()
            .ok()?;
        let [inside, _outside, count] = f[..] else {
            return None;
        };
        out.push_str(&format!("{inside} {inside} {count}\n"));
    }
    (!out.is_empty()).then_some(out)
}

/// `newuidmap PID 0 ID 1 1 START COUNT` (or newgidmap).
fn helper(tool: &str, pid: u32, id: u32, range: IdRange) -> Result<(), String> {
    let path = find_tool(tool).ok_or_else(|| format!("{tool} not found"))?;
    let output = Command::new(&path)
        .args([pid, 0, id, 1, 1, range.start, range.count].map(|n| n.to_string()))
        .output()
        .map_err(|e| format!("run {}: {e}", path.display()))?;
    if !output.status.success() {
        return Err(format!(
            "{tool} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(())
}

/// `tool` in `PATH`, or in /usr/bin, /usr/sbin, /bin, /sbin.
fn find_tool(tool: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/bin", "/usr/sbin", "/bin", "/sbin"])
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(tool))
        .find(|p| p.is_file());
    found
}

/// The name of `uid` in /etc/passwd.
fn user_name(uid: u32) -> Option<String> {
    let passwd = fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        (f.len() > 2 && f[2].parse() == Ok(uid)).then(|| f[0].to_owned())
    })
}

/// The largest range in the subordinate id file `path` owned by `name` or `uid`.
fn largest_range(path: &Path, name: Option<&str>, uid: u32) -> Option<IdRange> {
    let text = fs::read_to_string(path).ok()?;
    parse_ranges(&text, name, uid)
}

fn parse_ranges(text: &str, name: Option<&str>, uid: u32) -> Option<IdRange> {
    let uid = uid.to_string();
    text.lines()
        .filter_map(|line| {
            let mut f = line.trim().split(':');
            let (owner, start, count) = (f.next()?, f.next()?, f.next()?);
            if owner != uid && Some(owner) != name {
                return None;
            }
            Some(IdRange {
                start: start.parse().ok()?,
                count: count.parse().ok()?,
            })
        })
        .filter(|r| r.count > 0)
        .max_by_key(|r| r.count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_copies_the_own_extents() {
        assert_eq!(
            identity_lines("         0          0 4294967295\n").as_deref(),
            Some("0 0 4294967295\n")
        );
        assert_eq!(
            identity_lines("0 1000 1\n1 100000 65536\n").as_deref(),
            Some("0 0 1\n1 1 65536\n")
        );
        assert_eq!(identity_lines(""), None);
        assert_eq!(identity_lines("0 x 1\n"), None);
    }

    #[test]
    fn picks_the_largest_range_by_name_or_uid() {
        let text =
            "alice:100000:65536\n1001:300000:10\nbob:200000:65536\n# junk\nalice:500000:131072\n";
        let r = parse_ranges(text, Some("alice"), 1000).unwrap();
        assert_eq!(
            r,
            IdRange {
                start: 500000,
                count: 131072
            }
        );
        let r = parse_ranges(text, Some("carol"), 1001).unwrap();
        assert_eq!(
            r,
            IdRange {
                start: 300000,
                count: 10
            }
        );
        assert_eq!(parse_ranges(text, Some("dave"), 1002), None);
    }
}
