//! The two overlay snapshotters: kernel overlayfs and fuse-overlayfs. Both
//! are mounted by the sandbox (inside its user and mount namespaces); here
//! they only get their directories.
//!
//! Many layers: overlayfs takes its options as one page of mount data
//! (4096 bytes), which 200 store paths of ~90 bytes overflow. `prepare`
//! therefore names the lowers through short symlinks `WORK/l/0`, `WORK/l/1`,
//! … and the sandbox, seeing the options too long, mounts from inside
//! `WORK/l` with the relative names `0:1:…` (the kernel resolves relative
//! mount paths against the mounter's cwd), which keeps 500 layers (overlay's
//! own stack limit) under a page. Chosen over the new mount API's
//! `fsconfig(lowerdir+)` because it works on every kernel with `userxattr`
//! (5.11) and needs no new system-call wrappers; the symlinks are created
//! once per step and cost microseconds.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use super::error::{io_err, SnapshotError};
use super::upper::Format;
use super::{Snapshot, SnapshotterKind, State};
use crate::exec::RootFs;

/// Default location of fuse-overlayfs (Debian's package).
pub const FUSE_OVERLAYFS: &str = "/usr/bin/fuse-overlayfs";

pub struct KernelOverlay;

#[derive(Default)]
pub struct FuseOverlay {
    /// The program; `None`: `fuse-overlayfs` on `PATH`, else [`FUSE_OVERLAYFS`].
    pub program: Option<PathBuf>,
}

/// The directories of an overlay snapshot in `work`.
struct Dirs {
    links: Vec<PathBuf>,
    lowers: Vec<PathBuf>,
    upper: PathBuf,
    work: PathBuf,
    target: PathBuf,
}

fn make_dirs(lowers: &[PathBuf], work: &Path) -> Result<Dirs, SnapshotError> {
    let work = std::path::absolute(work).map_err(io_err("resolve", work))?;
    let mkdir = |p: &Path| fs::create_dir(p).map_err(io_err("create directory", p));
    let upper = work.join("upper");
    let ovl_work = work.join("work");
    let target = work.join("merged");
    let l = work.join("l");
    for d in [&upper, &ovl_work, &target, &l] {
        mkdir(d)?;
    }
    let mut lowers: Vec<PathBuf> = lowers
        .iter()
        .map(|p| std::path::absolute(p).map_err(io_err("resolve", p)))
        .collect::<Result<_, _>>()?;
    if lowers.is_empty() {
        // FROM scratch: overlayfs needs a lower dir.
        let empty = work.join("empty");
        mkdir(&empty)?;
        lowers.push(empty);
    }
    let mut links = Vec::with_capacity(lowers.len());
    for (i, lower) in lowers.iter().enumerate() {
        let link = l.join(i.to_string());
        symlink(lower, &link).map_err(io_err("create symlink", &link))?;
        links.push(link);
    }
    Ok(Dirs {
        links,
        lowers,
        upper,
        work: ovl_work,
        target,
    })
}

impl super::Snapshotter for KernelOverlay {
    fn kind(&self) -> SnapshotterKind {
        SnapshotterKind::Overlay
    }

    fn prepare(&self, lowers: &[PathBuf], work: &Path) -> Result<Snapshot, SnapshotError> {
        let d = make_dirs(lowers, work)?;
        Ok(Snapshot {
            kind: SnapshotterKind::Overlay,
            rootfs: RootFs::Overlay {
                lower: d.links,
                upper: d.upper.clone(),
                work: d.work,
                target: d.target,
            },
            state: State::Upper {
                upper: d.upper,
                lowers: d.lowers,
                format: Format::Kernel,
            },
        })
    }
}

impl FuseOverlay {
    pub fn program(&self) -> PathBuf {
        if let Some(p) = &self.program {
            return p.clone();
        }
        let on_path = std::env::var_os("PATH").and_then(|path| {
            std::env::split_paths(&path)
                .map(|d| d.join("fuse-overlayfs"))
                .find(|p| p.is_file())
        });
        on_path.unwrap_or_else(|| PathBuf::from(FUSE_OVERLAYFS))
    }
}

impl super::Snapshotter for FuseOverlay {
    fn kind(&self) -> SnapshotterKind {
        SnapshotterKind::FuseOverlay
    }

    fn prepare(&self, lowers: &[PathBuf], work: &Path) -> Result<Snapshot, SnapshotError> {
        let d = make_dirs(lowers, work)?;
        let daemon_root = d.target.with_file_name("fuse-root");
        fs::create_dir(&daemon_root).map_err(io_err("create directory", &daemon_root))?;
        Ok(Snapshot {
            kind: SnapshotterKind::FuseOverlay,
            rootfs: RootFs::FuseOverlay {
                program: self.program(),
                daemon_root,
                lower: d.links,
                upper: d.upper.clone(),
                work: d.work,
                target: d.target,
            },
            state: State::Upper {
                upper: d.upper,
                lowers: d.lowers,
                format: Format::Fuse,
            },
        })
    }
}
