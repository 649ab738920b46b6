//! What to run and in what: the process spec handed to the sandbox.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Docker's default `PATH`, used when the spec's environment has none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// One process to run in a sandbox (a RUN step).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessSpec {
    /// The command; `argv[0]` without a slash is looked up in the
    /// environment's `PATH` inside the root filesystem.
    pub argv: Vec<String>,
    /// `K=V` entries, exactly the process's environment, plus `PATH`
    /// ([`DEFAULT_PATH`]) and `HOME` (the user's, else `/`) when missing.
    pub env: Vec<String>,
    /// Docker's USER: `name`, `uid`, `name:group` or `uid:gid`; empty is root.
    /// Names resolve through the root filesystem's /etc/passwd and /etc/group.
    pub user: String,
    /// Working directory inside the root filesystem; created (as root) if
    /// missing; empty means `/`.
    pub cwd: String,
    /// The root filesystem.
    pub rootfs: RootFs,
    /// More mounts inside the root filesystem, done in order after the
    /// standard ones (`/proc`, `/dev`, `/etc/{resolv.conf,hosts,hostname}`).
    pub mounts: Vec<Mount>,
    pub network: Network,
    /// The UTS hostname, also written to /etc/hostname and /etc/hosts;
    /// empty means `kiln`.
    pub hostname: String,
    /// Which id map a rootless sandbox gets.
    pub idmap: IdMapChoice,
    /// Make the chown family succeed without effect (see `exec::seccomp`):
    /// `None` = on exactly when a rootless sandbox got a single-id map.
    #[serde(default)]
    pub emulate_chown: Option<bool>,
    /// Owners and modes to give paths of the root filesystem before the
    /// command runs (see [`OwnerFix`]); each applied one is reported in
    /// `RunOutcome::fixed`.
    #[serde(default)]
    pub owner_fixes: Vec<OwnerFix>,
}

/// A path of a lower layer whose owner (and mode) an unprivileged unpack
/// could only record beside the tree: on disk it belongs to the caller, so
/// the step would see it as root's. The sandbox's root, which owns every
/// mapped id, gives it the recorded ones (an overlay copies it up), so a
/// `chown user /work` of an earlier step still holds for `USER user`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerFix {
    /// Relative container path, `/`-separated.
    pub path: String,
    pub uid: u32,
    pub gid: u32,
    /// Permission bits to set after the chown (which clears setuid/setgid);
    /// `None` for a symlink.
    pub mode: Option<u32>,
}

/// An [`OwnerFix`] the sandbox applied, with the path's change time, size
/// and modification time right after: unchanged afterwards means the
/// command never touched the path, so the copy-up is kiln's alone and
/// stays out of the layer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedFix {
    pub path: String,
    pub ctime: (i64, i64),
    pub mtime: (i64, i64),
    pub size: u64,
}

impl ProcessSpec {
    /// A spec running `argv` as root in `/` of the directory `rootfs`, host
    /// network, hostname `kiln`, automatic id map, empty environment.
    pub fn new(argv: Vec<String>, rootfs: impl Into<PathBuf>) -> ProcessSpec {
        ProcessSpec {
            argv,
            env: Vec::new(),
            user: String::new(),
            cwd: "/".to_owned(),
            rootfs: RootFs::Dir(rootfs.into()),
            mounts: Vec::new(),
            network: Network::Host,
            hostname: "kiln".to_owned(),
            idmap: IdMapChoice::Auto,
            emulate_chown: None,
            owner_fixes: Vec::new(),
        }
    }
}

/// The root filesystem of the sandbox. Host paths; none is written to
/// except as the process itself writes (and see `RunOutcome::created`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RootFs {
    /// A plain directory, bind-mounted onto itself inside the sandbox.
    Dir(PathBuf),
    /// A kernel overlay mounted inside the sandbox's namespaces on `target`
    /// (an existing empty directory): `lower` top-most first (overlayfs's
    /// `lowerdir` order), writes going to `upper` with `work` as overlayfs's
    /// work directory on the same filesystem. Rootless mounts use
    /// `userxattr` (Linux ≥ 5.11), so whiteouts are 0/0 character devices
    /// and opaque directories carry `user.overlay.opaque`. The joined
    /// option string must fit in a page (4096 bytes): callers with many
    /// layers should pass short paths (e.g. symlinks).
    Overlay {
        lower: Vec<PathBuf>,
        upper: PathBuf,
        work: PathBuf,
        target: PathBuf,
    },
    /// fuse-overlayfs (`program`, normally `/usr/bin/fuse-overlayfs`)
    /// started inside the sandbox's user and mount namespaces on `target`
    /// before pivot_root, with the same `lower`/`upper`/`work` meaning as
    /// [`RootFs::Overlay`]. Needs read-write access to `/dev/fuse`. The
    /// daemon lives in the sandbox's pid namespace and dies with it. Its
    /// upper dir marks opaque directories with `user.fuseoverlayfs.opaque`
    /// and `.wh..wh..opq` files, and whiteouts are 0/0 character devices
    /// (or `.wh.NAME` files when mknod is refused).
    FuseOverlay {
        program: PathBuf,
        /// An empty directory on which the sandbox bind-mounts the host's
        /// `/` to serve as the daemon's root (pivot_root would otherwise
        /// move the daemon into its own mount, where it deadlocks).
        daemon_root: PathBuf,
        lower: Vec<PathBuf>,
        upper: PathBuf,
        work: PathBuf,
        target: PathBuf,
    },
}

/// An extra mount, at `destination` inside the root filesystem.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    /// Absolute path inside the container; created (dir, or empty file for
    /// a file bind) when missing and reported in `RunOutcome::created`.
    pub destination: String,
    pub kind: MountKind,
    /// `(uid, gid)` inside the container to give the mounted directory or
    /// file (its source, for a bind) once mounted, as the sandbox's root
    /// (so it works for any mapped id; ignored with a note otherwise).
    #[serde(default)]
    pub owner: Option<(u32, u32)>,
    /// Permission bits to give it likewise.
    #[serde(default)]
    pub mode: Option<u32>,
}

impl Mount {
    pub fn new(destination: impl Into<String>, kind: MountKind) -> Mount {
        Mount {
            destination: destination.into(),
            kind,
            owner: None,
            mode: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MountKind {
    /// A recursive bind of a host file or directory.
    Bind { source: PathBuf, readonly: bool },
    /// A fresh tmpfs.
    Tmpfs,
}

/// The network the process sees.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Network {
    /// The host's network namespace (so package managers can download).
    #[default]
    Host,
    /// A new network namespace with only `lo`, brought up.
    None,
}

/// The id map of a rootless sandbox.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdMapChoice {
    /// Container root = the caller, plus ids 1..=N mapped to the caller's
    /// /etc/subuid and /etc/subgid ranges through newuidmap/newgidmap when
    /// both exist; otherwise [`IdMapChoice::Single`] (with a warning).
    #[default]
    Auto,
    /// Only container root = the caller; `setgroups` denied.
    Single,
}
