//! The sandbox (`kiln debug run`) as the unprivileged test user: namespaces,
//! id maps, mounts, USER/WORKDIR/env, exit status, and that nothing of a
//! step outlives it. Root filesystems are built from busybox-static.

use std::fs;
use std::os::unix::fs::{symlink, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::busybox::BUSYBOX;
use crate::support::tools;
use crate::support::user::{running_as_root, TestUser};

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\n";
const GROUP: &str = "root:x:0:\nuser:x:1000:\nwheel:x:10:user\nstaff:x:50:other,user\n";
/// The image's own resolv.conf, which a step must see replaced but never changed.
const IMAGE_RESOLV: &str = "# the image's resolv.conf\n";

/// A busybox root filesystem in `dir`: /bin/busybox, every applet as a
/// symlink to it, /etc/passwd, /etc/group, /etc/resolv.conf, /tmp, /home/user, /sys.
fn make_rootfs(dir: &Path) {
    let bin = dir.join("bin");
    fs::create_dir_all(&bin).unwrap();
    fs::copy(BUSYBOX, bin.join("busybox")).unwrap();
    let list = tools::run_stdout(Command::new(BUSYBOX).arg("--list-full"));
    for applet in list.lines().map(|l| l.trim().trim_start_matches('/')) {
        if applet.is_empty() || applet == "bin/busybox" {
            continue;
        }
        let link = dir.join(applet);
        fs::create_dir_all(link.parent().unwrap()).unwrap();
        symlink("/bin/busybox", &link).unwrap();
    }
    fs::create_dir_all(dir.join("etc")).unwrap();
    fs::write(dir.join("etc/passwd"), PASSWD).unwrap();
    fs::write(dir.join("etc/group"), GROUP).unwrap();
    fs::write(dir.join("etc/resolv.conf"), IMAGE_RESOLV).unwrap();
    fs::create_dir_all(dir.join("tmp")).unwrap();
    fs::set_permissions(dir.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    fs::create_dir_all(dir.join("home/user")).unwrap();
    fs::create_dir_all(dir.join("sys")).unwrap();
}

/// A test user's temporary directory with a busybox root filesystem in `root/`.
struct Fixture {
    user: TestUser,
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let user = TestUser::get();
        let dir = user.tempdir();
        make_rootfs(&dir.path().join("root"));
        user.own(dir.path());
        Fixture { user, dir }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// `kiln debug run` as the test user with `args` before `--` and `cmd` after.
    fn command(&self, args: &[&str], cmd: &[&str]) -> Command {
        let mut c = self.user.command(env!("CARGO_BIN_EXE_kiln"));
        c.args(["debug", "run", "--rootfs"])
            .arg(self.root())
            .args(args)
            .arg("--")
            .args(cmd);
        c
    }

    fn run(&self, args: &[&str], cmd: &[&str]) -> Output {
        self.command(args, cmd).output().expect("start kiln")
    }

    /// Runs `script` with `sh -c`; panics unless it succeeds; returns stdout.
    fn sh(&self, args: &[&str], script: &str) -> String {
        let out = self.run(args, &["sh", "-c", script]);
        assert!(
            out.status.success(),
            "`{script}` failed ({}):\n{}",
            out.status,
            text(&out.stderr)
        );
        text(&out.stdout)
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Pids of processes whose command line is exactly `argv`.
fn processes(argv: &[&str]) -> Vec<u32> {
    let want: Vec<u8> = argv.iter().flat_map(|a| a.bytes().chain([0])).collect();
    fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == want))
        .collect()
}

#[test]
fn root_inside_with_the_subordinate_range_mapped() {
    let f = Fixture::new();
    let out = f.sh(
        &[],
        "id -u; id -g; cat /proc/self/uid_map; cat /proc/self/gid_map",
    );
    let lines: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines[0], ["0"], "{out}");
    assert_eq!(lines[1], ["0"], "{out}");
    let uid = f.user.uid.to_string();
    assert_eq!(lines[2], ["0", uid.as_str(), "1"], "{out}");
    if running_as_root() {
        assert!(f.user.has_subids(), "the test user has subordinate ids");
    }
    if let (Some(su), Some(sg)) = (f.user.subuid, f.user.subgid) {
        assert_eq!(
            lines[3],
            ["1", &su.start.to_string(), &su.count.to_string()],
            "{out}"
        );
        assert_eq!(
            lines[5],
            ["1", &sg.start.to_string(), &sg.count.to_string()],
            "{out}"
        );
    }
}

#[test]
fn chown_inside_lands_on_subordinate_ids() {
    let f = Fixture::new();
    let Some(su) = f.user.subuid else {
        panic!("the test user needs /etc/subuid ranges (run the tests as root)")
    };
    let sg = f.user.subgid.unwrap();
    let out = f.sh(
        &[],
        "touch /tmp/f && chown 1000:1000 /tmp/f && stat -c %u:%g /tmp/f",
    );
    assert_eq!(out.trim(), "1000:1000");
    let meta = fs::metadata(f.root().join("tmp/f")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (su.start + 999, sg.start + 999));
}

#[test]
fn user_by_name_gets_its_groups_and_home() {
    let f = Fixture::new();
    let out = f.sh(
        &["--user", "user"],
        "id -u; id -g; id -G | tr ' ' '\\n' | sort -n | tr '\\n' ' '; echo; echo $HOME",
    );
    assert_eq!(out, "1000\n1000\n10 50 1000 \n/home/user\n");
    let out = f.sh(&["--user", "1000:50"], "id -u; id -g");
    assert_eq!(out, "1000\n50\n");
    // A numeric uid without a passwd entry works, with gid 0 as in Docker.
    let out = f.sh(&["--user", "4242"], "id -u; id -g; echo $HOME");
    assert_eq!(out, "4242\n0\n/\n");
}

#[test]
fn workdir_env_and_hostname() {
    let f = Fixture::new();
    let out = f.sh(
        &[
            "--workdir",
            "/work/dir",
            "--env",
            "FOO=bar baz",
            "--hostname",
            "box",
        ],
        "pwd; echo \"$FOO\"; echo $PATH; hostname; cat /etc/hostname; grep box /etc/hosts",
    );
    assert_eq!(
        out,
        "/work/dir\nbar baz\n/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\nbox\nbox\n127.0.1.1\tbox\n"
    );
    assert!(
        f.root().join("work/dir").is_dir(),
        "WORKDIR is created in the rootfs"
    );
}

#[test]
fn exit_code_and_setup_failures_are_reported() {
    let f = Fixture::new();
    let out = f.run(&[], &["sh", "-c", "echo out; echo err >&2; exit 3"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "out\n");
    assert!(text(&out.stderr).contains("err\n"));
    // A signal shows as 128 + signal.
    let out = f.run(&[], &["sh", "-c", "kill -TERM $$"]);
    assert_eq!(out.status.code(), Some(128 + 15), "{}", text(&out.stderr));

    let out = f.run(&[], &["no-such-command"]);
    let err = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("sandbox setup failed at exec") && err.contains("not found in $PATH"),
        "{err}"
    );
    let out = f.run(&["--user", "nosuch"], &["true"]);
    let err = text(&out.stderr);
    assert!(
        err.contains("switch user") && err.contains("unable to find user nosuch"),
        "{err}"
    );
}

#[test]
fn etc_files_are_provided_without_touching_the_rootfs() {
    let f = Fixture::new();
    assert!(!f.root().join("etc/hosts").exists());
    let out = f.run(&["--print-created"], &["cat", "/etc/resolv.conf"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let host = fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    assert_eq!(
        text(&out.stdout),
        host,
        "the step sees the host's resolv.conf"
    );
    assert_eq!(
        fs::read_to_string(f.root().join("etc/resolv.conf")).unwrap(),
        IMAGE_RESOLV
    );
    // Missing mount points are created empty and reported.
    let err = text(&out.stderr);
    for p in ["/proc", "/dev", "/etc/hosts", "/etc/hostname"] {
        assert!(
            err.contains(&format!("created {p}\n")),
            "{p} not reported:\n{err}"
        );
    }
    assert!(!err.contains("created /etc/resolv.conf"), "{err}");
    assert_eq!(fs::metadata(f.root().join("etc/hosts")).unwrap().len(), 0);
    // A write inside goes to kiln's copy, not to the image's file.
    f.sh(&[], "echo changed > /etc/resolv.conf");
    assert_eq!(
        fs::read_to_string(f.root().join("etc/resolv.conf")).unwrap(),
        IMAGE_RESOLV
    );
}

#[test]
fn devices_and_proc_are_there() {
    let f = Fixture::new();
    let out = f.sh(
        &[],
        "head -c 4 /dev/zero | od -An -tx1; echo x > /dev/null; ls /dev/shm /dev/pts >/dev/null; readlink /dev/ptmx; test -r /proc/self/status && echo proc; \
         test -d /sys/fs && echo sys; touch /sys/x 2>/dev/null || echo sys-ro",
    );
    assert_eq!(out, " 00 00 00 00\npts/ptmx\nproc\nsys\nsys-ro\n");
}

#[test]
fn extra_bind_and_tmpfs_mounts() {
    let f = Fixture::new();
    let shared = f.dir.path().join("shared");
    fs::create_dir(&shared).unwrap();
    fs::write(shared.join("in.txt"), "from host\n").unwrap();
    f.user.own(&shared);
    let ro = format!("{}:/mnt/ro:ro", shared.display());
    let rw = format!("{}:/mnt/rw", shared.display());
    let out = f.run(
        &["--bind", &ro, "--bind", &rw, "--tmpfs", "/scratch", "--print-created"],
        &[
            "sh",
            "-c",
            "cat /mnt/ro/in.txt; touch /mnt/ro/x 2>/dev/null && echo ro-writable; \
             echo out > /mnt/rw/out.txt; echo s > /scratch/s; grep -c ' /scratch tmpfs' /proc/mounts",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "from host\n1\n");
    assert_eq!(fs::read_to_string(shared.join("out.txt")).unwrap(), "out\n");
    assert!(
        !f.root().join("scratch/s").exists(),
        "tmpfs content stays in the tmpfs"
    );
    let err = text(&out.stderr);
    for p in ["/mnt", "/mnt/ro", "/mnt/rw", "/scratch"] {
        assert!(err.contains(&format!("created {p}\n")), "{p}:\n{err}");
    }
}

#[test]
fn network_none_has_only_loopback_up() {
    let f = Fixture::new();
    let out = f.sh(
        &["--network", "none"],
        "tail -n +3 /proc/net/dev | cut -d: -f1; echo --; ip link show lo",
    );
    let (devices, lo) = out.split_once("--\n").unwrap();
    assert_eq!(
        devices.split_whitespace().collect::<Vec<_>>(),
        ["lo"],
        "{out}"
    );
    assert!(lo.contains("lo: <LOOPBACK,UP"), "lo is up:\n{out}");
    // The host network is shared by default.
    let host_ifaces = fs::read_to_string("/proc/net/dev").unwrap().lines().count();
    let inside = f.sh(&[], "cat /proc/net/dev").lines().count();
    assert_eq!(inside, host_ifaces);
}

#[test]
fn pid_namespace_dies_with_the_step() {
    let f = Fixture::new();
    let started = Instant::now();
    let out = f.sh(&[], "echo $$; sleep 1717 >/dev/null 2>&1 & echo started");
    let mut lines = out.lines();
    let pid: u32 = lines.next().unwrap().parse().unwrap();
    assert!(
        pid <= 2,
        "the step runs as the pid namespace's init or its child, got {pid}"
    );
    assert_eq!(lines.next(), Some("started"));
    assert!(started.elapsed() < Duration::from_secs(30));
    // The kernel kills the namespace when its init exits; allow it a moment.
    let deadline = Instant::now() + Duration::from_secs(2);
    while !processes(&["sleep", "1717"]).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the background sleep survived the step"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigint_to_kiln_kills_the_step_within_a_second() {
    interrupt_kills_the_step("-INT", ["1718", "1719"]);
}

#[test]
fn sigterm_to_kiln_kills_the_step_within_a_second() {
    interrupt_kills_the_step("-TERM", ["1721", "1722"]);
}

/// Sends `signal` to kiln while the step runs `sleep A & sleep B`; both
/// sleeps and kiln must be gone within a second.
fn interrupt_kills_the_step(signal: &str, [a, b]: [&str; 2]) {
    let f = Fixture::new();
    let script = format!("sleep {a} & sleep {b}");
    let mut child = f
        .command(&[], &["sh", "-c", &script])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while processes(&["sleep", a]).is_empty() || processes(&["sleep", b]).is_empty() {
        assert!(Instant::now() < deadline, "the step did not start");
        assert!(child.try_wait().unwrap().is_none(), "kiln ended early");
        std::thread::sleep(Duration::from_millis(20));
    }
    // setpriv execs kiln, so the child's pid is kiln's.
    tools::run(Command::new("kill").args([signal, &child.id().to_string()]));
    let sent = Instant::now();
    loop {
        let gone =
            processes(&["sleep", "1718"]).is_empty() && processes(&["sleep", "1719"]).is_empty();
        if gone && child.try_wait().unwrap().is_some() {
            break;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(1),
            "processes of the step left after SIGINT"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn single_id_map_on_request() {
    let f = Fixture::new();
    let out = f.sh(
        &["--idmap", "single"],
        "id -u; cat /proc/self/uid_map; cat /proc/self/setgroups",
    );
    let uid = f.user.uid.to_string();
    let lines: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines,
        [vec!["0"], vec!["0", uid.as_str(), "1"], vec!["deny"]],
        "{out}"
    );
    // Only root exists: chown to another id fails (unless emulated, the
    // default: see layer_write::chown_is_emulated_with_a_single_id_map),
    // and so does another USER.
    let out = f.run(
        &["--idmap", "single", "--emulate-chown", "off"],
        &["sh", "-c", "touch /tmp/g; chown 1000 /tmp/g"],
    );
    assert!(!out.status.success());
    let out = f.run(&["--idmap", "single", "--user", "user"], &["true"]);
    let err = text(&out.stderr);
    assert!(
        err.contains("switch user") && err.contains("single-id map"),
        "{err}"
    );
}

#[test]
fn overlay_root_with_two_lower_dirs() {
    let user = TestUser::get();
    let dir = user.tempdir();
    let [base, top, upper, work, target] =
        ["base", "top", "upper", "work", "target"].map(|n| dir.path().join(n));
    make_rootfs(&base);
    fs::create_dir_all(base.join("data")).unwrap();
    fs::write(base.join("data/old.txt"), "old\n").unwrap();
    fs::write(base.join("data/shadowed.txt"), "base\n").unwrap();
    fs::create_dir_all(top.join("data")).unwrap();
    fs::write(top.join("data/shadowed.txt"), "top\n").unwrap();
    for d in [&upper, &work, &target] {
        fs::create_dir_all(d).unwrap();
    }
    user.own(dir.path());
    let mut cmd = user.command(env!("CARGO_BIN_EXE_kiln"));
    cmd.args(["debug", "run", "--overlay-lower"])
        .arg(&top)
        .arg("--overlay-lower")
        .arg(&base);
    cmd.arg("--overlay-upper")
        .arg(&upper)
        .arg("--overlay-work")
        .arg(&work)
        .arg("--overlay-target")
        .arg(&target);
    cmd.args([
        "--",
        "sh",
        "-c",
        "cat /data/shadowed.txt; echo new > /data/new.txt; rm /data/old.txt",
    ]);
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "top\n");
    assert_eq!(
        fs::read_to_string(upper.join("data/new.txt")).unwrap(),
        "new\n"
    );
    let whiteout = fs::symlink_metadata(upper.join("data/old.txt")).unwrap();
    assert!(
        whiteout.file_type().is_char_device() && whiteout.rdev() == 0,
        "a 0/0 whiteout"
    );
    assert_eq!(
        fs::read_to_string(base.join("data/old.txt")).unwrap(),
        "old\n"
    );
    assert!(!base.join("data/new.txt").exists() && !top.join("data/new.txt").exists());
    // The overlay was mounted in the sandbox's namespace only.
    assert_eq!(fs::read_dir(&target).unwrap().count(), 0);
}

#[test]
fn chroot_tier_as_root() {
    if !running_as_root() {
        eprintln!("skipped: the chroot tier needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    make_rootfs(dir.path());
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["debug", "run", "--isolation", "chroot", "--rootfs"])
        .arg(dir.path())
        .args([
            "--",
            "sh",
            "-c",
            "id -u; cat /proc/self/uid_map; echo $$; hostname; sleep 1720 >/dev/null 2>&1 &",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = text(&out.stdout);
    let lines: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines[0], ["0"]);
    assert_eq!(
        lines[1],
        ["0", "0", "4294967295"],
        "no user namespace: {out}"
    );
    assert!(
        lines[2][0].parse::<u32>().unwrap() <= 2,
        "own pid namespace: {out}"
    );
    assert_eq!(lines[3], ["kiln"]);
    let deadline = Instant::now() + Duration::from_secs(2);
    while !processes(&["sleep", "1720"]).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the background sleep survived the step"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `sh -c script` in a user namespace of root's own (root mapped to root)
/// whose `user.max_user_namespaces` is `limit`: a container runtime that
/// forbids (more) user namespaces.
fn without_user_namespaces(limit: u32, script: &str) -> Output {
    let mut cmd = Command::new(tools::require("unshare"));
    cmd.args(["--user", "--map-root-user", "sh", "-c"])
        .arg(format!(
            "echo {limit} > /proc/sys/user/max_user_namespaces && {script}"
        ))
        .env("KILN", env!("CARGO_BIN_EXE_kiln"));
    cmd.output().unwrap()
}

#[test]
fn auto_falls_back_to_chroot_and_explains_refusals() {
    if !running_as_root() {
        eprintln!("skipped: needs root to build a runtime that forbids user namespaces");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    make_rootfs(dir.path());
    let root = dir.path().display();
    // Root without user namespaces: auto picks chroot, which still works.
    let out = without_user_namespaces(
        0,
        &format!(
            "\"$KILN\" debug run --rootfs {root} -- sh -c 'id -u; cat /proc/self/uid_map; echo $$'"
        ),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<Vec<&str>> = stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines[..2],
        [vec!["0"], vec!["0", "0", "1"]],
        "no new user namespace: {stdout}"
    );
    assert!(lines[2][0].parse::<u32>().unwrap() <= 2, "{stdout}");
    // Asking for rootless there names the stage and the kernel's answer.
    let out = without_user_namespaces(
        0,
        &format!("\"$KILN\" debug run --isolation rootless --rootfs {root} -- true"),
    );
    let err = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("sandbox setup failed at unshare namespaces") && err.contains("CLONE_NEWUSER"),
        "{err}"
    );
    assert!(err.contains("No space left on device"), "{err}");
    // Not root there either: nothing works, and the error says what was
    // tried and what would help. (Limit 1: the inner namespace itself counts.)
    let out = without_user_namespaces(
        1,
        &format!("exec unshare --user --map-user=1001 --map-group=1001 \"$KILN\" debug run --rootfs {root} -- true"),
    );
    let err = text(&out.stderr);
    assert!(!out.status.success());
    for needle in [
        "no isolation tier works here",
        "rootless: unshare(CLONE_NEWUSER|CLONE_NEWNS): No space left on device",
        "chroot: needs root",
        "hostUsers: false",
        "seccomp",
    ] {
        assert!(err.contains(needle), "{needle:?} missing:\n{err}");
    }
}

#[test]
fn bare_chroot_when_mount_namespaces_are_refused() {
    if !running_as_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    make_rootfs(dir.path());
    // Root without CAP_SYS_ADMIN, as in a default Docker container.
    let out = Command::new(tools::require("setpriv"))
        .args(["--bounding-set", "-sys_admin", "--"])
        .arg(env!("CARGO_BIN_EXE_kiln"))
        .args(["debug", "run", "--isolation", "chroot", "--rootfs"])
        .arg(dir.path())
        .args([
            "--",
            "sh",
            "-c",
            "id -u; echo $$; test -e /proc/self || echo no-proc; sleep 1724 & echo bg",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "0");
    assert!(
        lines[1].parse::<u32>().unwrap() > 2,
        "no pid namespace: {stdout}"
    );
    assert_eq!(lines[2..], ["no-proc", "bg"]);
    assert!(
        text(&out.stderr).contains("refused a mount namespace"),
        "{}",
        text(&out.stderr)
    );
    // The command's process group is killed when it ends.
    let deadline = Instant::now() + Duration::from_secs(2);
    while !processes(&["sleep", "1724"]).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the background sleep survived the step"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // `auto` picks it when user namespaces are refused too, and an overlay
    // root is refused with the reason.
    let script = format!(
        "exec setpriv --bounding-set -sys_admin -- \"$KILN\" debug run --rootfs {} -- sh -c 'echo $$'",
        dir.path().display()
    );
    let out = without_user_namespaces(0, &script);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).trim().parse::<u32>().unwrap() > 2);
    let script = format!(
        "exec setpriv --bounding-set -sys_admin -- \"$KILN\" debug run --overlay-lower {0} --overlay-upper {0}/tmp \
         --overlay-work {0}/root --overlay-target {0}/home -- true",
        dir.path().display()
    );
    let out = without_user_namespaces(0, &script);
    let err = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("an overlay root needs a mount namespace"),
        "{err}"
    );
}

#[test]
fn no_subordinate_ids_fall_back_to_a_single_map_with_a_warning() {
    if !running_as_root() {
        eprintln!("skipped: needs root to run as a user without subordinate ids");
        return;
    }
    // `nobody` has no /etc/subuid or /etc/subgid entries.
    assert!(!fs::read_to_string("/etc/subuid")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("nobody:") || l.starts_with("65534:")));
    let dir = tempfile::tempdir().unwrap();
    make_rootfs(dir.path());
    tools::run(
        Command::new("chown")
            .args(["-R", "65534:65534"])
            .arg(dir.path()),
    );
    let out = Command::new(tools::require("setpriv"))
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(env!("CARGO_BIN_EXE_kiln"))
        .args(["debug", "run", "--rootfs"])
        .arg(dir.path())
        .args(["--", "sh", "-c", "id -u; cat /proc/self/uid_map"])
        .current_dir("/")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<Vec<&str>> = stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines, [vec!["0"], vec!["0", "65534", "1"]], "{stdout}");
    let err = text(&out.stderr);
    assert_eq!(err.matches("using a single-id map").count(), 1, "{err}");
    assert!(
        err.contains("no /etc/subuid and /etc/subgid ranges"),
        "{err}"
    );
}

#[test]
fn the_command_inherits_only_stdin_stdout_stderr() {
    let f = Fixture::new();
    // kiln's caller leaks descriptor 7; the sandbox's pipes sit on 3 and 4.
    let mut cmd = f.user.command("sh");
    cmd.arg("-c")
        .arg("exec 7</dev/null; exec \"$@\"")
        .arg("sh")
        .arg(env!("CARGO_BIN_EXE_kiln"))
        .args(["debug", "run", "--rootfs"])
        .arg(f.root())
        .args(["--", "sh", "-c", "ls /proc/$$/fd; true"]);
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "0\n1\n2\n");
}

#[test]
fn library_api_runs_a_spec_and_reports_the_outcome() {
    use kiln::exec::{Executor, ExitStatus, IdMap, Isolation, ProcessSpec, Sandbox};
    let dir = tempfile::tempdir().unwrap();
    make_rootfs(dir.path());
    // This test binary is not kiln: re-execute the real one.
    let sandbox = Sandbox::new(Isolation::Auto).program(env!("CARGO_BIN_EXE_kiln"));
    let mut spec = ProcessSpec::new(
        vec!["sh".into(), "-c".into(), "test \"$A\" = b && exit 7".into()],
        dir.path(),
    );
    spec.env.push("A=b".into());
    let outcome = sandbox.run(&spec).unwrap();
    assert_eq!(outcome.status, ExitStatus::Code(7));
    assert_eq!(outcome.status.code(), 7);
    assert!(!outcome.status.success());
    assert_eq!(
        outcome.created,
        ["/proc", "/dev", "/etc/hosts", "/etc/hostname"]
    );
    assert_eq!(outcome.isolation, Isolation::Rootless);
    assert!(!outcome.bare_chroot);
    if running_as_root() {
        assert_eq!(outcome.idmap, IdMap::Identity);
    }
    // Killed by a signal.
    spec.argv = vec!["sh".into(), "-c".into(), "kill -KILL $$".into()];
    let outcome = sandbox.run(&spec).unwrap();
    assert_eq!(outcome.status, ExitStatus::Signal(9));
    assert_eq!(outcome.status.code(), 137);
    // A setup failure is an error naming the stage, with the errno.
    spec.argv = vec!["/nonexistent".into()];
    let err = sandbox.run(&spec).unwrap_err();
    match err {
        kiln::exec::ExecError::Setup(f) => {
            assert_eq!(f.stage, kiln::exec::Stage::Exec);
            assert_eq!(f.errno, Some(2), "{f}");
        }
        other => panic!("expected a setup failure, got {other}"),
    }
}
