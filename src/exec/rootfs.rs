//! Inside the sandbox's mount namespace: the root filesystem, /proc, a
//! minimal /dev, the step's /etc files, extra mounts, then pivot_root.

use std::fs::{self, OpenOptions};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::{symlink, DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use crate::sys::fs as sys_fs;
use crate::sys::mount::{self, BIND, NODEV, NOEXEC, NOSUID, PRIVATE, RDONLY, REC, REMOUNT, SHARED};

use super::error::{SetupFailure, Stage};
use super::protocol::{StepFiles, Tier};
use super::spec::{AppliedFix, MountKind, ProcessSpec, RootFs};

/// Host device nodes bind-mounted into the sandbox's /dev.
const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];
/// [`DEVICES`] with their numbers, for a chroot that cannot bind them.
const CHAR_DEVICES: [(&str, u32, u32); 6] = [
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

type Result<T> = std::result::Result<T, SetupFailure>;

fn mount_err(action: String) -> impl FnOnce(io::Error) -> SetupFailure {
    move |e| SetupFailure::new(Stage::Mount, action, &e)
}

/// What [`setup`] did besides the plan.
#[derive(Debug, Default)]
pub struct Mounted {
    /// Container paths of mount points created in the root filesystem.
    pub created: Vec<String>,
    /// Fallbacks taken, for the parent to log.
    pub notes: Vec<String>,
    /// The spec's owner fixes that were applied.
    pub fixed: Vec<AppliedFix>,
}

/// Mounts everything and switches the root.
pub fn setup(spec: &ProcessSpec, tier: Tier, files: &StepFiles, full_map: bool) -> Result<Mounted> {
    mount::mount(None, Path::new("/"), None, REC | PRIVATE, None)
        .map_err(mount_err("make / private".into()))?;
    let root = mount_root(&spec.rootfs, tier)?;
    let mut created = Vec::new();
    let mut notes = Vec::new();
    // A single-id map has no other id to give (its seccomp filter makes
    // the step's own chowns no-ops instead).
    let fixed = if full_map || tier == Tier::Chroot {
        super::owner_fixes::apply(&root, &spec.owner_fixes, &mut notes)
    } else {
        Vec::new()
    };

    let proc_dir = ensure(&root, "/proc", Kind::Dir, &mut created)?;
    let fresh = mount::mount(
        Some(Path::new("proc")),
        &proc_dir,
        Some("proc"),
        NOSUID | NODEV | NOEXEC,
        None,
    );
    match fresh {
        Ok(()) => {}
        // The kernel refuses a fresh proc in a user namespace when the
        // host's /proc has paths masked by over-mounts (a container
        // runtime's masked paths); a recursive bind keeps them masked.
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
            mount::mount(Some(Path::new("/proc")), &proc_dir, None, BIND | REC, None)
                .map_err(mount_err(format!("bind /proc on {}", proc_dir.display())))?;
            notes.push(format!(
                "mount a fresh /proc: {e} (the container runtime masks paths of its /proc; \
                 podman's --security-opt unmask=ALL or docker's systempaths=unconfined lifts \
                 that); steps see kiln's own /proc, whose pids are not theirs"
            ));
        }
        Err(e) => {
            return Err(mount_err(format!("mount proc on {}", proc_dir.display()))(
                e,
            ))
        }
    }

    let dev = ensure(&root, "/dev", Kind::Dir, &mut created)?;
    mount_dev(&dev, full_map)?;

    let sys = ensure(&root, "/sys", Kind::Dir, &mut created)?;
    // A network namespace of our own gets its own sysfs (only its `lo` in
    // /sys/class/net, as docker shows with --network none); sharing the
    // host's network, rootless cannot mount one, so the host's is bound.
    let own_sysfs = spec.network == crate::exec::Network::None
        && mount::mount(
            Some(Path::new("sysfs")),
            &sys,
            Some("sysfs"),
            NOSUID | NODEV | NOEXEC | RDONLY,
            None,
        )
        .is_ok();
    if !own_sysfs {
        mount::mount(Some(Path::new("/sys")), &sys, None, BIND | REC, None)
            .map_err(mount_err(format!("bind /sys on {}", sys.display())))?;
        // Read-only like Docker's (the top mount; submounts keep theirs).
        let ro = mount::locked_flags(&sys).and_then(|locked| {
            mount::mount(None, &sys, None, BIND | REMOUNT | RDONLY | locked, None)
        });
        if let Err(e) = ro {
            notes.push(format!("remount /sys read-only: {e}; it stays writable"));
        }
    }

    // The step's /etc files are written into the sandbox's own /dev tmpfs,
    // bind-mounted over /etc, and unlinked from /dev again: nothing lands
    // in the root filesystem or on the host, and nothing is left to clean up.
    for (name, content) in [
        ("resolv.conf", &files.resolv_conf),
        ("hosts", &files.hosts),
        ("hostname", &files.hostname),
    ] {
        let inside = format!("/etc/{name}");
        // A symlink here (e.g. to a systemd-resolved path) would be followed
        // by mount(2) to wherever it points; leave such files alone.
        if fs::symlink_metadata(root.join(&inside[1..])).is_ok_and(|m| m.file_type().is_symlink()) {
            continue;
        }
        let target = ensure(&root, &inside, Kind::File, &mut created)?;
        let staged = dev.join(format!(".kiln-{name}"));
        fs::write(&staged, content).map_err(mount_err(format!("write {}", staged.display())))?;
        mount::mount(Some(&staged), &target, None, BIND, None).map_err(mount_err(format!(
            "bind {} on {}",
            staged.display(),
            target.display()
        )))?;
        fs::remove_file(&staged).map_err(mount_err(format!("unlink {}", staged.display())))?;
    }

    for m in &spec.mounts {
        let kind = match m.kind {
            MountKind::Bind { ref source, .. } if !source.is_dir() => Kind::File,
            _ => Kind::Dir,
        };
        let target = ensure(&root, &m.destination, kind, &mut created)?;
        match &m.kind {
            MountKind::Bind { source, readonly } => {
                mount::mount(Some(source), &target, None, BIND | REC, None).map_err(mount_err(
                    format!("bind {} on {}", source.display(), target.display()),
                ))?;
                // Before a read-only remount would refuse it.
                set_owner_mode(m, &target, &mut notes);
                if *readonly {
                    let locked = mount::locked_flags(&target)
                        .map_err(mount_err(format!("statvfs {}", target.display())))?;
                    mount::mount(None, &target, None, BIND | REMOUNT | RDONLY | locked, None)
                        .map_err(mount_err(format!("remount {} read-only", target.display())))?;
                }
            }
            MountKind::Tmpfs => {
                mount::mount(
                    Some(Path::new("tmpfs")),
                    &target,
                    Some("tmpfs"),
                    NOSUID | NODEV,
                    None,
                )
                .map_err(mount_err(format!("mount tmpfs on {}", target.display())))?;
                set_owner_mode(m, &target, &mut notes);
            }
        }
    }

    switch_root(&root)?;
    Ok(Mounted {
        created,
        notes,
        fixed,
    })
}

/// Gives a mounted target the owner and mode its mount asks for (as the
/// sandbox's root, so any mapped id works); a failure is a note, not an
/// error (with a single-id map only root exists).
fn set_owner_mode(m: &crate::exec::Mount, target: &Path, notes: &mut Vec<String>) {
    if let Some((uid, gid)) = m.owner {
        if let Err(e) = std::os::unix::fs::chown(target, Some(uid), Some(gid)) {
            notes.push(format!("chown {} to {uid}:{gid}: {e}", m.destination));
        }
    }
    if let Some(mode) = m.mode {
        use std::os::unix::fs::PermissionsExt;
        if let Err(e) = fs::set_permissions(target, fs::Permissions::from_mode(mode)) {
            notes.push(format!("chmod {} to {mode:o}: {e}", m.destination));
        }
    }
}

/// The chroot tier without a mount namespace: chroot into a directory root,
/// no mounts (so no fresh /proc or /dev, and the root's own /etc files).
pub fn chroot_only(rootfs: &RootFs) -> Result<Mounted> {
    let RootFs::Dir(dir) = rootfs else {
        return Err(SetupFailure::msg(
            Stage::Mount,
            "an overlay root needs a mount namespace, which the kernel refused (kernel overlay or fuse-overlayfs)",
        ));
    };
    let fail = |action: &str| {
        let action = format!("{action} {}", dir.display());
        move |e: io::Error| SetupFailure::new(Stage::Pivot, action, &e)
    };
    let mut mounted = Mounted::default();
    make_devices(dir, &mut mounted);
    mount::chroot(dir).map_err(fail("chroot"))?;
    std::env::set_current_dir("/").map_err(fail("chdir / in"))?;
    Ok(mounted)
}

/// Without mounts, the chroot tier's /dev is the root's own, usually empty:
/// `> /dev/null` would create a file that ends up in the layer. Root keeps
/// CAP_MKNOD in a default Docker or Kubernetes container, so the harmless
/// devices are made as nodes (reported as created, so they stay out of the
/// layer), and /dev gets its times back so it does not show as changed.
fn make_devices(root: &Path, mounted: &mut Mounted) {
    let mut created = Vec::new();
    let dev = match ensure(root, "/dev", Kind::Dir, &mut created) {
        Ok(dev) => dev,
        Err(f) => {
            mounted.notes.push(format!("no /dev in the root: {f}"));
            return;
        }
    };
    let result = (|| -> io::Result<()> {
        let fd = sys_fs::open_root(&dev)?;
        let before = fs::symlink_metadata(&dev)?;
        for (name, major, minor) in CHAR_DEVICES {
            if fs::symlink_metadata(dev.join(name)).is_ok() {
                continue;
            }
            let name = std::ffi::OsStr::new(name);
            sys_fs::mknod_at(fd.as_fd(), name, sys_fs::Special::Char, major, minor)?;
            sys_fs::chmod_special_at(fd.as_fd(), name, 0o666)?;
            created.push(format!("/dev/{}", name.to_string_lossy()));
        }
        sys_fs::set_times_fd(fd.as_fd(), before.mtime(), before.mtime_nsec())
    })();
    if let Err(e) = result {
        mounted.notes.push(format!(
            "make device nodes in /dev of the chroot: {e}; steps that use /dev/null and the like \
             write regular files"
        ));
    }
    mounted.created.extend(created);
}

/// Mounts the root filesystem and returns where it is.
fn mount_root(rootfs: &RootFs, tier: Tier) -> Result<PathBuf> {
    match rootfs {
        RootFs::Dir(dir) => {
            // A bind onto itself makes the directory a mount point, which
            // pivot_root needs.
            mount::mount(Some(dir), dir, None, BIND | REC, None).map_err(mount_err(format!(
                "bind root {} onto itself",
                dir.display()
            )))?;
            Ok(dir.clone())
        }
        RootFs::Overlay {
            lower,
            upper,
            work,
            target,
        } => {
            let userxattr = tier == Tier::Rootless;
            let mut data = overlay_options(lower, upper, work, userxattr)
                .map_err(|what| SetupFailure::msg(Stage::Mount, what))?;
            // overlayfs's mount data is one page. With many layers, lower
            // dirs sharing one parent (the snapshotter's `l/0`, `l/1`, …
            // symlinks) are named relative to it: the kernel resolves
            // relative mount paths against the mounter's cwd.
            if data.len() >= MOUNT_DATA_MAX {
                if let Some(parent) = common_parent(lower) {
                    std::env::set_current_dir(&parent)
                        .map_err(mount_err(format!("chdir {}", parent.display())))?;
                    let names: Vec<PathBuf> = lower
                        .iter()
                        .filter_map(|p| p.file_name().map(PathBuf::from))
                        .collect();
                    data = overlay_options(&names, upper, work, userxattr)
                        .map_err(|what| SetupFailure::msg(Stage::Mount, what))?;
                }
            }
            if data.len() >= MOUNT_DATA_MAX {
                return Err(SetupFailure::msg(
                    Stage::Mount,
                    format!(
                        "overlay mount options are {} bytes, over the kernel's {MOUNT_DATA_MAX}: \
                         pass lower dirs that share one parent directory",
                        data.len()
                    ),
                ));
            }
            let mounted = mount::mount(
                Some(Path::new("overlay")),
                target,
                Some("overlay"),
                0,
                Some(&data),
            );
            std::env::set_current_dir("/").map_err(mount_err("chdir /".into()))?;
            mounted.map_err(mount_err(format!(
                "mount overlay on {} ({data})",
                target.display()
            )))?;
            Ok(target.clone())
        }
        RootFs::FuseOverlay {
            program,
            daemon_root,
            lower,
            upper,
            work,
            target,
        } => {
            mount_fuse_overlay(program, daemon_root, lower, upper, work, target)?;
            Ok(target.clone())
        }
    }
}

struct FuseOutput {
    status: std::process::ExitStatus,
    stderr: Vec<u8>,
}

fn read_from_start(mut f: std::fs::File) -> Vec<u8> {
    use std::io::{Read, Seek};
    let mut out = Vec::new();
    if f.seek(io::SeekFrom::Start(0)).is_ok() {
        // Best effort: only used to explain a failure.
        let _ = f.take(64 * 1024).read_to_end(&mut out);
    }
    out
}

/// The size of overlayfs's mount data buffer (one page, NUL included).
const MOUNT_DATA_MAX: usize = 4096;

/// The one directory every path of `paths` is directly in, if any.
fn common_parent(paths: &[PathBuf]) -> Option<PathBuf> {
    let first = paths.first()?.parent()?;
    paths
        .iter()
        .all(|p| p.parent() == Some(first))
        .then(|| first.to_path_buf())
}

/// Starts fuse-overlayfs on `target` and waits until it is mounted (the
/// program daemonizes once the mount is in place). Runs in the sandbox's
/// init, so the daemon is in the sandbox's pid namespace and is killed with
/// it when the step ends.
fn mount_fuse_overlay(
    program: &Path,
    daemon_root: &Path,
    lower: &[PathBuf],
    upper: &Path,
    work: &Path,
    target: &Path,
) -> Result<()> {
    let data = overlay_options(lower, upper, work, false)
        .map_err(|what| SetupFailure::msg(Stage::Mount, what))?;
    // Fail with a clear word about the device before fuse-overlayfs does
    // with a terse one: hosts without udev leave /dev/fuse root-only.
    if let Err(e) = OpenOptions::new().read(true).write(true).open("/dev/fuse") {
        let hint = if e.kind() == io::ErrorKind::PermissionDenied {
            " (fuse-overlayfs needs read-write access to /dev/fuse; as root: \
             `chmod 0666 /dev/fuse`, or a udev rule giving it mode 0666)"
        } else {
            ""
        };
        return Err(SetupFailure::new(
            Stage::Mount,
            format!("open /dev/fuse{hint}"),
            &e,
        ));
    }
    // stderr goes to a memfd, not a pipe: the daemonized child keeps its
    // copy of the descriptor, so a pipe would never reach end-of-file.
    let log = rustix::fs::memfd_create("fuse-overlayfs-stderr", rustix::fs::MemfdFlags::CLOEXEC)
        .map(std::fs::File::from)
        .map_err(|e| mount_err("memfd_create".into())(e.into()))?;
    let log_for_child = log.try_clone().map_err(mount_err("dup memfd".into()))?;
    // The daemon's root: a view of the host's `/` that pivot_root leaves
    // alone (it stays reachable after the old root is detached, since the
    // daemon holds it). The daemon also gets a mount namespace of its own:
    // detaching the old root lazily disconnects every mount below it, so
    // the daemon's `/proc` would vanish from its view, and fuse-overlayfs
    // reads the lowers' xattrs through `/proc/self/fd` (its lookups then
    // fail and the root looks empty). Inside a user namespace the copied
    // mounts are locked to their parents and stay connected, which is why
    // only the chroot tier (real root, no user namespace) showed it. The
    // view is made shared first so the daemon's FUSE mount, made in its
    // namespace, propagates back here; private again after, so our detach
    // does not propagate into the daemon's namespace.
    mount::mount(Some(Path::new("/")), daemon_root, None, BIND | REC, None)
        .map_err(mount_err(format!("bind / on {}", daemon_root.display())))?;
    mount::mount(None, daemon_root, None, REC | SHARED, None)
        .map_err(mount_err(format!("make {} shared", daemon_root.display())))?;
    let mut cmd = std::process::Command::new(program);
    cmd.arg("-o")
        .arg(&data)
        .arg(target)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log_for_child);
    mount::chroot_command_own_mounts(&mut cmd, daemon_root)
        .map_err(mount_err(format!("chroot to {}", daemon_root.display())))?;
    let status = cmd
        .status()
        .map_err(mount_err(format!("start {}", program.display())))?;
    let out = FuseOutput {
        status,
        stderr: read_from_start(log),
    };
    if out.status.success() {
        // The daemon mounted on `target` as its chroot sees it, i.e. on the
        // copy under `daemon_root`: bring that mount to `target` itself.
        let seen = daemon_root.join(target.strip_prefix("/").unwrap_or(target));
        mount::mount(Some(&seen), target, None, BIND, None).map_err(mount_err(format!(
            "bind {} on {}",
            seen.display(),
            target.display()
        )))?;
    }
    mount::mount(None, daemon_root, None, REC | PRIVATE, None)
        .map_err(mount_err(format!("make {} private", daemon_root.display())))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let said: Vec<&str> = stderr
            .lines()
            .filter(|l| !l.contains("unknown argument ignored"))
            .collect();
        return Err(SetupFailure::msg(
            Stage::Mount,
            format!(
                "{} on {} ({data}): {}: {}",
                program.display(),
                target.display(),
                out.status,
                said.join("; ")
            ),
        ));
    }
    Ok(())
}

/// overlayfs's mount data; paths with `,` or `:` (overlayfs's separators)
/// are refused rather than escaped.
fn overlay_options(
    lower: &[PathBuf],
    upper: &Path,
    work: &Path,
    userxattr: bool,
) -> std::result::Result<String, String> {
    if lower.is_empty() {
        return Err("overlay root needs at least one lower directory".into());
    }
    let text = |p: &Path| -> std::result::Result<String, String> {
        let s = p
            .to_str()
            .ok_or_else(|| format!("overlay path {} is not UTF-8", p.display()))?;
        if s.contains([',', ':']) {
            return Err(format!("overlay path {s} contains ',' or ':'"));
        }
        Ok(s.to_owned())
    };
    let lowers: Vec<String> = lower
        .iter()
        .map(|p| text(p))
        .collect::<std::result::Result<_, _>>()?;
    let mut data = format!(
        "lowerdir={},upperdir={},workdir={}",
        lowers.join(":"),
        text(upper)?,
        text(work)?
    );
    if userxattr {
        data.push_str(",userxattr");
    }
    Ok(data)
}

/// A minimal /dev: a tmpfs with the host's harmless devices bind-mounted,
/// /dev/shm, a private devpts and the usual symlinks.
fn mount_dev(dev: &Path, full_map: bool) -> Result<()> {
    mount::mount(
        Some(Path::new("tmpfs")),
        dev,
        Some("tmpfs"),
        NOSUID,
        Some("mode=755,size=65536k"),
    )
    .map_err(mount_err(format!("mount tmpfs on {}", dev.display())))?;
    for name in DEVICES {
        let target = dev.join(name);
        create_file(&target).map_err(mount_err(format!("create {}", target.display())))?;
        let source = Path::new("/dev").join(name);
        mount::mount(Some(&source), &target, None, BIND, None).map_err(mount_err(format!(
            "bind {} on {}",
            source.display(),
            target.display()
        )))?;
    }
    let shm = dev.join("shm");
    mkdir(&shm, 0o1777)?;
    mount::mount(
        Some(Path::new("shm")),
        &shm,
        Some("tmpfs"),
        NOSUID | NODEV | NOEXEC,
        Some("mode=1777,size=65536k"),
    )
    .map_err(mount_err(format!("mount tmpfs on {}", shm.display())))?;
    let pts = dev.join("pts");
    mkdir(&pts, 0o755)?;
    // gid 5 (tty) exists inside only with a full id map, and not even then
    // in a user namespace kiln did not map (EINVAL): fall back to no gid.
    let plain = "newinstance,ptmxmode=0666,mode=0620";
    let with_gid = format!("{plain},gid=5");
    let mut result = Err(io::Error::from_raw_os_error(libc::EINVAL));
    if full_map {
        result = mount::mount(
            Some(Path::new("devpts")),
            &pts,
            Some("devpts"),
            NOSUID | NOEXEC,
            Some(&with_gid),
        );
    }
    if matches!(&result, Err(e) if e.raw_os_error() == Some(libc::EINVAL)) {
        result = mount::mount(
            Some(Path::new("devpts")),
            &pts,
            Some("devpts"),
            NOSUID | NOEXEC,
            Some(plain),
        );
    }
    result.map_err(mount_err(format!("mount devpts on {}", pts.display())))?;
    for (link, to) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        symlink(to, dev.join(link))
            .map_err(mount_err(format!("symlink {}/{link}", dev.display())))?;
    }
    Ok(())
}

/// pivot_root into `root` and detach the old root; chroot when pivot_root
/// is refused (a root on initramfs).
fn switch_root(root: &Path) -> Result<()> {
    let fail = |action: &str| {
        let action = format!("{action} {}", root.display());
        move |e: io::Error| SetupFailure::new(Stage::Pivot, action, &e)
    };
    std::env::set_current_dir(root).map_err(fail("chdir"))?;
    // pivot_root(".", ".") stacks the old root under the new one; detaching
    // "." afterwards removes it without needing a directory for it.
    match mount::pivot_root(Path::new("."), Path::new(".")) {
        Ok(()) => mount::detach(Path::new(".")).map_err(fail("detach old root above"))?,
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            mount::chroot(Path::new(".")).map_err(fail("chroot"))?
        }
        Err(e) => return Err(fail("pivot_root")(e)),
    }
    std::env::set_current_dir("/").map_err(fail("chdir / in"))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Dir,
    File,
}

/// `root` joined with the container path `inside`, created as `kind` (and
/// its parents as directories) when missing, each created path recorded in
/// `created`. Refuses `..` and symlinks on the way, so nothing outside the
/// root filesystem is touched.
fn ensure(root: &Path, inside: &str, kind: Kind, created: &mut Vec<String>) -> Result<PathBuf> {
    let bad = |why: &str| SetupFailure::msg(Stage::Mount, format!("mount point {inside}: {why}"));
    let mut host = root.to_path_buf();
    let mut container = String::new();
    let parts: Vec<_> = Path::new(inside)
        .components()
        .filter(|c| *c != Component::RootDir && *c != Component::CurDir)
        .collect();
    for (i, part) in parts.iter().enumerate() {
        let Component::Normal(name) = part else {
            return Err(bad("`..` is not allowed"));
        };
        host.push(name);
        container.push('/');
        container.push_str(&name.to_string_lossy());
        let last = i + 1 == parts.len();
        match fs::symlink_metadata(&host) {
            Ok(m) if m.file_type().is_symlink() => return Err(bad("a symlink is in the way")),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if last && kind == Kind::File {
                    create_file(&host).map_err(mount_err(format!("create {}", host.display())))?;
                } else {
                    mkdir(&host, 0o755)?;
                }
                created.push(container.clone());
            }
            Err(e) => {
                return Err(SetupFailure::new(
                    Stage::Mount,
                    format!("stat {}", host.display()),
                    &e,
                ))
            }
        }
    }
    Ok(host)
}

fn mkdir(path: &Path, mode: u32) -> Result<()> {
    fs::DirBuilder::new()
        .mode(mode)
        .create(path)
        .map_err(mount_err(format!("mkdir {}", path.display())))
}

fn create_file(path: &Path) -> io::Result<()> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(path)
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_options_in_order_and_checked() {
        let lower = [PathBuf::from("/l/top"), PathBuf::from("/l/base")];
        let data = overlay_options(&lower, Path::new("/u"), Path::new("/w"), true).unwrap();
        assert_eq!(
            data,
            "lowerdir=/l/top:/l/base,upperdir=/u,workdir=/w,userxattr"
        );
        assert!(overlay_options(&[], Path::new("/u"), Path::new("/w"), true).is_err());
        assert!(overlay_options(
            &[PathBuf::from("/a,b")],
            Path::new("/u"),
            Path::new("/w"),
            false
        )
        .is_err());
    }

    #[test]
    fn ensure_creates_and_reports_and_refuses_escapes() {
        let dir = tempfile::tempdir().unwrap();
        let mut created = Vec::new();
        let p = ensure(dir.path(), "/etc/hosts", Kind::File, &mut created).unwrap();
        assert!(p.is_file());
        assert_eq!(created, ["/etc", "/etc/hosts"]);
        created.clear();
        ensure(dir.path(), "/etc/hosts", Kind::File, &mut created).unwrap();
        assert!(created.is_empty());
        assert!(ensure(dir.path(), "/../x", Kind::Dir, &mut created).is_err());
        symlink("/", dir.path().join("up")).unwrap();
        assert!(ensure(dir.path(), "/up/tmp", Kind::Dir, &mut created).is_err());
    }
}
