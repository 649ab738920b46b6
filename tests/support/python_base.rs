//! A Python 3.11 base image made from Debian 12 packages (the seeds' stand-in
//! for `python:3.11-slim`), built once per machine with `mmdebstrap` and
//! cached under `/var/tmp` like [`super::debian`].
//!
//! `pip install` has to work in RUN steps over it, which on this machine
//! means three things the stock packages do not give: PEP 668's
//! `EXTERNALLY-MANAGED` marker is removed (the image is the environment, as
//! in the official image); the host's extra CAs (`/usr/local/share/
//! ca-certificates/*.crt`, e.g. an intercepting egress proxy's) are trusted;
//! and pip is told, in `/etc/pip.conf`, to use the system bundle and to be
//! patient. RUN steps share the host network and resolver, so no proxy
//! variables are needed: this host has none, its DNS routes PyPI through
//! the proxy.
//!
//! The cache key covers the recipe and the CA files' contents, so a new CA
//! builds a new tarball.

use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use super::tools;

/// The same plain-http mirror as [`super::debian`].
const MIRROR: &str = "http://deb.debian.org/debian";
const SUITE: &str = "bookworm";
/// python3-venv and curl are not needed by pip; they make the image a
/// usable base for seeds (`python3 -m venv`, health checks).
const INCLUDE: &str = "python3,python3-pip,python3-venv,ca-certificates,curl";
/// Where Debian keeps local CAs; the host's are copied to the same place.
const HOST_CA_DIR: &str = "/usr/local/share/ca-certificates";
/// pip's configuration inside the image.
const PIP_CONF: &str = "[global]\n\
    cert = /etc/ssl/certs/ca-certificates.crt\n\
    default-timeout = 180\n\
    disable-pip-version-check = true\n\
    root-user-action = ignore\n";
/// The name the tests give the image, as the seeds' Dockerfiles expect.
pub const NAME: &str = "python:3.11-slim";

/// The shell hooks run over the finished tree (`$1`), in order.
fn customize_hooks() -> Vec<String> {
    vec![
        r#"rm -f "$1"/usr/lib/python3*/EXTERNALLY-MANAGED"#.into(),
        format!(
            r#"for c in {HOST_CA_DIR}/*.crt; do [ -e "$c" ] && cp "$c" "$1{HOST_CA_DIR}/"; done; chroot "$1" update-ca-certificates"#
        ),
        format!(r#"printf '%s' '{PIP_CONF}' > "$1/etc/pip.conf""#),
    ]
}

/// The mmdebstrap arguments before the suite; part of the cache key.
fn mmdebstrap_args() -> Vec<String> {
    let mut args: Vec<String> = vec![
        "--variant=apt".into(),
        format!("--include={INCLUDE}"),
        "--skip=output/dev".into(),
        "--aptopt=Acquire::Check-Valid-Until \"false\"".into(),
        "--aptopt=Acquire::Check-Date \"false\"".into(),
    ];
    for hook in customize_hooks() {
        args.push(format!("--customize-hook={hook}"));
    }
    args
}

/// The host CA files, sorted, with their contents.
fn host_cas() -> Vec<(String, Vec<u8>)> {
    let mut cas: Vec<(String, Vec<u8>)> = match fs::read_dir(HOST_CA_DIR) {
        Ok(dir) => dir
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "crt"))
            .map(|p| {
                let body = fs::read(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
                (p.display().to_string(), body)
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    cas.sort();
    cas
}

fn cache_dir() -> PathBuf {
    super::debian::cache_dir_for("python", &mmdebstrap_args(), &host_cas())
}

/// The path of a plain tarball of the Python base rootfs, readable by every
/// user. Built on first use (needs root and the Debian mirror), then reused.
pub fn rootfs_tar() -> PathBuf {
    static TAR: OnceLock<PathBuf> = OnceLock::new();
    TAR.get_or_init(build_cached).clone()
}

fn build_cached() -> PathBuf {
    super::debian::mmdebstrap_cached("Python", cache_dir(), &mmdebstrap_args())
}

/// Imports the Python rootfs into a store as [`NAME`] (or `name`) with the
/// official image's PATH, LANG and CMD, through `kiln`, a command for
/// `kiln` with the global options (`--root`) already given.
pub fn import_into(mut kiln: Command, name: &str) {
    kiln.arg("import").arg(rootfs_tar()).arg(name).args([
        "--change",
        "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "--change",
        "ENV LANG=C.UTF-8",
        "--change",
        r#"CMD ["python3"]"#,
    ]);
    tools::run(&mut kiln);
}
