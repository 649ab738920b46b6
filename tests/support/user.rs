//! The unprivileged user tests run rootless tools as: `kiln-test` with
//! subordinate id ranges when the tests run as root, the current user
//! otherwise.

use std::ffi::OsStr;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

use super::tools;

/// The user created when the tests run as root.
pub const TEST_USER: &str = "kiln-test";
/// Size of the subordinate uid and gid ranges given to [`TEST_USER`].
pub const SUBID_COUNT: u32 = 65536;
/// Lowest subordinate id handed out (Debian's `SUB_UID_MIN`).
const SUBID_MIN: u64 = 100_000;
/// Serializes provisioning across processes (several test binaries or
/// checkouts may run at once).
const LOCK_FILE: &str = "/run/lock/kiln-test-user.lock";
/// Seconds to wait for [`LOCK_FILE`].
const LOCK_TIMEOUT_SECS: u32 = 60;

/// A range of subordinate ids from `/etc/subuid` or `/etc/subgid`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdRange {
    pub start: u32,
    pub count: u32,
}

/// A normal (non-root) user to run rootless commands as.
#[derive(Clone, Debug)]
pub struct TestUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
    /// The user's largest `/etc/subuid` range, if any.
    pub subuid: Option<IdRange>,
    /// The user's largest `/etc/subgid` range, if any.
    pub subgid: Option<IdRange>,
}

impl TestUser {
    /// The test user, provisioned once per process (see [`TestUser::provision`]).
    pub fn get() -> TestUser {
        static USER: OnceLock<TestUser> = OnceLock::new();
        USER.get_or_init(TestUser::provision).clone()
    }

    /// Uncached [`TestUser::get`].
    ///
    /// As root: ensures the normal user [`TEST_USER`] exists (`useradd -m`
    /// when absent) and owns `/etc/subuid` and `/etc/subgid` ranges of
    /// [`SUBID_COUNT`] ids, adding (with `usermod`) only missing ranges,
    /// placed above every existing range so none overlap. Idempotent, and
    /// serialized across threads and processes by an exclusive `flock` on
    /// `/run/lock/kiln-test-user.lock` (bounded wait: 60 s).
    ///
    /// Not root: the current user as it is, with whatever ranges it has
    /// (`subuid`/`subgid` are `None` when it has none).
    pub fn provision() -> TestUser {
        if !running_as_root() {
            let uid = effective_uid();
            let user = TestUser::lookup(&uid.to_string()).unwrap_or_else(|| {
                panic!("the current uid {uid} has no passwd entry (`getent passwd {uid}`)")
            });
            return user;
        }
        let _lock = Flock::acquire(Path::new(LOCK_FILE));
        if TestUser::lookup(TEST_USER).is_none() {
            tools::run(
                Command::new(tools::require("useradd"))
                    .args(["--create-home", "--user-group", "--shell", "/bin/sh"])
                    .arg(TEST_USER),
            );
        }
        let user = TestUser::lookup(TEST_USER)
            .unwrap_or_else(|| panic!("`useradd {TEST_USER}` succeeded but getent cannot see it"));
        let has = |range: Option<IdRange>| range.is_some_and(|r| r.count >= SUBID_COUNT);
        if has(user.subuid) && has(user.subgid) {
            return user;
        }
        // One start, above every range in both files, serves both.
        let start = next_free_start();
        let range = format!("{start}-{}", start + u64::from(SUBID_COUNT) - 1);
        let mut usermod = Command::new(tools::require("usermod"));
        if !has(user.subuid) {
            usermod.args(["--add-subuids", &range]);
        }
        if !has(user.subgid) {
            usermod.args(["--add-subgids", &range]);
        }
        tools::run(usermod.arg(TEST_USER));
        let user = TestUser::lookup(TEST_USER).expect("the test user still exists");
        assert!(
            has(user.subuid) && has(user.subgid),
            "`usermod` added {range} for {TEST_USER} but /etc/subuid or /etc/subgid lacks it: {user:?}"
        );
        user
    }

    /// The passwd entry for `key` (a name or a uid) with its subordinate
    /// ranges, or `None` when there is no such user.
    fn lookup(key: &str) -> Option<TestUser> {
        let output = Command::new(tools::require("getent"))
            .args(["passwd", key])
            .output()
            .unwrap_or_else(|err| panic!("could not run `getent passwd {key}`: {err}"));
        match output.status.code() {
            Some(0) => {}
            Some(2) => return None,
            _ => panic!(
                "`getent passwd {key}` failed with {}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            ),
        }
        let line = String::from_utf8_lossy(&output.stdout);
        let fields: Vec<&str> = line.trim_end().split(':').collect();
        let [name, _, uid, gid, _, home, ..] = fields[..] else {
            panic!("`getent passwd {key}` printed a malformed entry: {line:?}");
        };
        let number = |field: &str| -> u32 {
            field
                .parse()
                .unwrap_or_else(|_| panic!("bad id {field:?} in passwd entry {line:?}"))
        };
        let uid = number(uid);
        Some(TestUser {
            name: name.to_owned(),
            uid,
            gid: number(gid),
            home: PathBuf::from(home),
            subuid: largest_range(&read_subids("/etc/subuid"), name, uid),
            subgid: largest_range(&read_subids("/etc/subgid"), name, uid),
        })
    }

    /// Whether the user has both subordinate uid and gid ranges of at least
    /// [`SUBID_COUNT`] ids (what a rootless build with a full id map needs).
    pub fn has_subids(&self) -> bool {
        [self.subuid, self.subgid]
            .iter()
            .all(|r| r.is_some_and(|r| r.count >= SUBID_COUNT))
    }

    /// A command running `program` as this user: as root through
    /// `setpriv --reuid --regid --init-groups` (no capabilities are kept),
    /// otherwise directly. `HOME`, `USER` and `LOGNAME` name the user, root's
    /// `XDG_RUNTIME_DIR` is dropped, and the working directory is the
    /// user's home (override with `current_dir`).
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = if running_as_root() && self.uid != 0 {
            let mut cmd = Command::new(tools::require("setpriv"));
            cmd.arg(format!("--reuid={}", self.uid))
                .arg(format!("--regid={}", self.gid))
                .arg("--init-groups")
                .arg("--")
                .arg(program)
                .env_remove("XDG_RUNTIME_DIR");
            cmd
        } else {
            Command::new(program)
        };
        cmd.env("HOME", &self.home)
            .env("USER", &self.name)
            .env("LOGNAME", &self.name)
            .current_dir(&self.home);
        cmd
    }

    /// A new temporary directory (under the system temp dir) owned by this
    /// user, so commands from [`TestUser::command`] can use it; removed on drop.
    pub fn tempdir(&self) -> tempfile::TempDir {
        let dir = tempfile::Builder::new()
            .prefix("kiln-user-")
            .tempdir()
            .expect("create a temporary directory");
        self.own(dir.path());
        dir
    }

    /// Gives `path` and everything below it (symlinks not followed) to this
    /// user. No-op unless running as root.
    pub fn own(&self, path: &Path) {
        if !running_as_root() {
            return;
        }
        std::os::unix::fs::lchown(path, Some(self.uid), Some(self.gid))
            .unwrap_or_else(|err| panic!("chown {} to {}: {err}", path.display(), self.name));
        let meta = fs::symlink_metadata(path)
            .unwrap_or_else(|err| panic!("stat {}: {err}", path.display()));
        if meta.is_dir() {
            let entries = fs::read_dir(path)
                .unwrap_or_else(|err| panic!("read directory {}: {err}", path.display()));
            for entry in entries {
                let entry = entry.unwrap_or_else(|err| panic!("read {}: {err}", path.display()));
                self.own(&entry.path());
            }
        }
    }
}

/// Whether this process runs with effective uid 0.
pub fn running_as_root() -> bool {
    effective_uid() == 0
}

/// The effective uid of this process (second field of `Uid:` in `/proc/self/status`).
fn effective_uid() -> u32 {
    let status = fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("no effective uid in /proc/self/status:\n{status}"))
}

/// One `owner:start:count` line of `/etc/subuid` or `/etc/subgid`.
struct SubIdEntry {
    owner: String,
    start: u64,
    count: u64,
}

/// The well-formed entries of a subordinate id file (none when it is absent).
fn read_subids(path: &str) -> Vec<SubIdEntry> {
    let content = match fs::read_to_string(path) {
        Ok(content) => content,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(err) => panic!("read {path}: {err}"),
    };
    content
        .lines()
        .filter_map(|line| {
            let mut fields = line.trim().split(':');
            let (owner, start, count) = (fields.next()?, fields.next()?, fields.next()?);
            Some(SubIdEntry {
                owner: owner.to_owned(),
                start: start.parse().ok()?,
                count: count.parse().ok()?,
            })
        })
        .collect()
}

/// The largest range owned by `name` or `uid` among `entries`.
fn largest_range(entries: &[SubIdEntry], name: &str, uid: u32) -> Option<IdRange> {
    entries
        .iter()
        .filter(|e| e.owner == name || e.owner == uid.to_string())
        .max_by_key(|e| e.count)
        .map(|e| IdRange {
            start: u32::try_from(e.start).expect("subordinate id start fits in u32"),
            count: u32::try_from(e.count).expect("subordinate id count fits in u32"),
        })
}

/// The first multiple of [`SUBID_COUNT`], at least [`SUBID_MIN`], above
/// every range in `/etc/subuid` and `/etc/subgid`.
fn next_free_start() -> u64 {
    let mut entries = read_subids("/etc/subuid");
    entries.extend(read_subids("/etc/subgid"));
    let end = entries
        .iter()
        .map(|e| e.start + e.count)
        .fold(SUBID_MIN, u64::max);
    let start = end.next_multiple_of(u64::from(SUBID_COUNT));
    assert!(
        start + u64::from(SUBID_COUNT) <= u64::from(u32::MAX),
        "no room for {SUBID_COUNT} more subordinate ids above {end}"
    );
    start
}

/// An exclusive `flock(1)` on a file, held by a helper process until drop
/// (or until this process dies, which closes the helper's stdin).
struct Flock {
    child: Child,
}

impl Flock {
    /// Waits (at most [`LOCK_TIMEOUT_SECS`]) for the lock on `path`.
    fn acquire(path: &Path) -> Flock {
        let mut cmd = Command::new(tools::require("flock"));
        cmd.args(["--exclusive", "--timeout", &LOCK_TIMEOUT_SECS.to_string()])
            .arg(path)
            .args(["sh", "-c", "echo locked && read _"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|err| panic!("could not start `{}`: {err}", tools::describe(&cmd)));
        let mut line = String::new();
        let stdout = child.stdout.take().expect("piped stdout");
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read from flock");
        if line.trim() != "locked" {
            drop(child.stdin.take());
            let output = child.wait_with_output().expect("wait for flock");
            panic!(
                "`{}` did not get the lock ({}): {}",
                tools::describe(&cmd),
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Flock { child }
    }
}

impl Drop for Flock {
    fn drop(&mut self) {
        // EOF on stdin ends `read`, the shell, and with it the lock.
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}
