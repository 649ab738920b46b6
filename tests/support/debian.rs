//! A minimal Debian 12 (bookworm) root filesystem tarball, built once per
//! machine with `mmdebstrap` and cached under `/var/tmp`, for tests that need
//! a real distribution (apt, `_apt`-owned files, `setfattr`).
//!
//! The cache directory's name carries a hash of everything that shapes the
//! tarball (suite, variant, packages, mirror), so changing any of them builds
//! a new one. It is built in a temporary sibling directory and renamed into
//! place, under an exclusive `flock`, so concurrent test processes build it
//! at most once and never see half a tarball.

use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use sha2::{Digest, Sha256};

use super::tools;
use super::user::running_as_root;

/// The mirror apt uses on this machine (`/etc/apt/sources.list.d/debian.sources`);
/// plain http, so no CA setup is involved.
const MIRROR: &str = "http://deb.debian.org/debian";
const SUITE: &str = "bookworm";
/// Extra packages: `attr` for `setfattr`/`getfattr` in xattr scenarios.
const INCLUDE: &str = "attr";
/// Upper bound on building the rootfs (seconds); about 45 s on a good day.
const BUILD_TIMEOUT_SECS: u32 = 900;
/// Upper bound on waiting for another process's build (seconds).
const LOCK_TIMEOUT_SECS: u32 = 1000;

/// The mmdebstrap arguments before the suite; part of the cache key.
fn mmdebstrap_args() -> Vec<String> {
    vec![
        "--variant=apt".into(),
        format!("--include={INCLUDE}"),
        // The sandbox provides /dev; device nodes in the image would only be
        // ownership metadata for an unprivileged unpack.
        "--skip=output/dev".into(),
        // The mirror may be a frozen snapshot whose Release has expired.
        "--aptopt=Acquire::Check-Valid-Until \"false\"".into(),
        "--aptopt=Acquire::Check-Date \"false\"".into(),
    ]
}

/// The cache directory for the current build recipe.
fn cache_dir() -> PathBuf {
    cache_dir_for("debian", &mmdebstrap_args(), &[])
}

/// `/var/tmp/kiln-test-NAME-HASH`, HASH covering the mmdebstrap `args`, any
/// `extra` named inputs (files copied into the tree), suite and mirror.
pub(super) fn cache_dir_for(name: &str, args: &[String], extra: &[(String, Vec<u8>)]) -> PathBuf {
    let mut h = Sha256::new();
    for a in args {
        h.update(a.as_bytes());
        h.update([0]);
    }
    for (n, body) in extra {
        h.update(n.as_bytes());
        h.update([0]);
        h.update(body);
        h.update([0]);
    }
    h.update(SUITE.as_bytes());
    h.update([0]);
    h.update(MIRROR.as_bytes());
    let hex: String = h.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    PathBuf::from(format!("/var/tmp/kiln-test-{name}-{hex}"))
}

/// The path of a plain (uncompressed) tarball of a minimal bookworm rootfs
/// (`mmdebstrap --variant=apt` plus `attr`, no `/dev` nodes), readable by
/// every user. Built on first use (needs root and network access to the
/// Debian mirror), then reused by every test run on this machine.
pub fn rootfs_tar() -> PathBuf {
    static TAR: OnceLock<PathBuf> = OnceLock::new();
    TAR.get_or_init(build_cached).clone()
}

fn build_cached() -> PathBuf {
    mmdebstrap_cached("Debian", cache_dir(), &mmdebstrap_args())
}

/// Builds (once per machine, under an exclusive lock, through a temporary
/// sibling renamed into place) `dir/rootfs.tar` with `mmdebstrap ARGS SUITE
/// TAR MIRROR`, unless it is there; `what` names it in messages.
pub(super) fn mmdebstrap_cached(what: &str, dir: PathBuf, args: &[String]) -> PathBuf {
    let tar = dir.join("rootfs.tar");
    if tar.is_file() {
        return tar;
    }
    assert!(
        running_as_root(),
        "the {what} test rootfs {} is missing and only root can build it \
         (run the tests once as root, or `mmdebstrap` it there by hand)",
        tar.display()
    );
    let lock = dir.with_extension("lock");
    let tmp = dir.with_extension(format!("tmp-{}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).unwrap_or_else(|e| panic!("create {}: {e}", tmp.display()));
    // Under the lock: build only if no one else finished meanwhile.
    let script = r#"
        set -e
        final="$1"; tmp="$2"; shift 2
        if [ -f "$final/rootfs.tar" ]; then exit 0; fi
        timeout "$TIMEOUT" "$@"
        chmod 0755 "$tmp"; chmod 0644 "$tmp/rootfs.tar"
        mv -T "$tmp" "$final"
    "#;
    let mut cmd = Command::new(tools::require("flock"));
    cmd.args(["--exclusive", "--timeout", &LOCK_TIMEOUT_SECS.to_string()])
        .arg(&lock)
        .args(["sh", "-c", script])
        .arg("sh")
        .arg(&dir)
        .arg(&tmp)
        .arg(tools::require("mmdebstrap"))
        .args(args)
        .arg(SUITE)
        .arg(tmp.join("rootfs.tar"))
        .arg(MIRROR)
        .env("TIMEOUT", BUILD_TIMEOUT_SECS.to_string());
    tools::run(&mut cmd);
    let _ = fs::remove_dir_all(&tmp);
    assert!(
        tar.is_file(),
        "mmdebstrap finished but {} is missing",
        tar.display()
    );
    tar
}

/// Imports the Debian rootfs into the kiln store as `name` by running `kiln`
/// through `cmd` (e.g. as the test user, with `--root`), which must be a
/// command for `kiln` with the global options already given.
pub fn import_into(mut kiln: Command, name: &str) {
    tools::run(kiln.arg("import").arg(rootfs_tar()).arg(name));
}
