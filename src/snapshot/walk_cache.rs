//! The walk snapshotter's merged tree, kept in the store per chain id so a
//! step does not copy the whole base (24 s for 50,000 files on ext4, where
//! nothing can be reflinked) but only reverts what the step changed.
//!
//! Layout (see `store::walk_cache_paths`): `walk-merged/<kind>-<hex>/` holds
//! `rootfs/` (the merged tree), `index` (its stat [`Index`], binary) and,
//! while a step uses it, `dirty`. One step at a time holds it (an `flock`
//! on its lock file, tried without waiting: a second concurrent step over
//! the same base copies a private tree as before).
//!
//! Crash safety: `dirty` is made durable before the step's command runs and
//! removed only after the tree was reverted, checked and, with its new
//! index, synced to disk. A tree found `dirty` (its step crashed or was
//! killed) is thrown away and built again, never trusted. The revert is
//! checked: the tree's index afterwards must equal the one from before in
//! everything but inode numbers, change and birth times (the restored
//! copies are new files); otherwise the tree is thrown away too.
//!
//! The revert, from the stat comparison of before and after: paths the step
//! made are removed; paths it changed, replaced or removed are copied again
//! from the lowers (`Copier::restore`, a whole subtree for a directory);
//! directories whose attributes or times alone changed (an entry added and
//! removed again moves the mtime, which a later layer would carry) get the
//! lowers' attributes back, as do the parents of every reverted path. A
//! copied file with other hardlinks in its lower cannot be linked to its
//! siblings again cheaply: such a tree is thrown away (rare in practice).

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::error::{io_err, SnapshotError};
use super::walk::{self, ancestors, index, index_entry, index_path, Copier, Index, Meta};
use crate::store::WalkCachePaths;

static COUNTER: AtomicU64 = AtomicU64::new(0);

const INDEX_MAGIC: &[u8; 8] = b"KILNWI01";

/// Where a chain's cached tree lives.
pub struct Cache {
    paths: WalkCachePaths,
}

/// The exclusive use of a cached tree for one step (the lock is released
/// when this is dropped).
#[derive(Debug)]
pub struct Lease {
    paths: WalkCachePaths,
    tree: PathBuf,
    lowers: Vec<PathBuf>,
    root: bool,
    _lock: File,
}

impl Cache {
    /// The cache for these lowers, when they are a store's overlay lower
    /// dirs (a `FROM scratch` step, or lowers from elsewhere, have none).
    pub fn locate(lowers: &[PathBuf]) -> Option<Cache> {
        let top = std::path::absolute(lowers.first()?).ok()?;
        crate::store::walk_cache_paths(&top).map(|paths| Cache { paths })
    }

    /// Takes the tree (building it when absent or untrustworthy) and its
    /// index, marked dirty. `None`: another step holds it.
    pub fn acquire(
        self,
        lowers: &[PathBuf],
        root: bool,
    ) -> Result<Option<(Lease, Index)>, SnapshotError> {
        let paths = self.paths;
        if let Some(parent) = paths.lock.parent() {
            fs::create_dir_all(parent).map_err(io_err("create directory", parent))?;
        }
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&paths.lock)
            .map_err(io_err("open", &paths.lock))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Ok(None),
            Err(fs::TryLockError::Error(e)) => return Err(io_err("lock", &paths.lock)(e)),
        }
        // A collector removes the lock file of a tree it prunes while it
        // holds it: a lock taken on such an unlinked file guards nothing.
        let held = lock.metadata().map_err(io_err("stat", &paths.lock))?;
        match fs::metadata(&paths.lock) {
            Ok(m) if m.ino() == held.ino() && m.dev() == held.dev() => {}
            _ => return Ok(None),
        }
        let tree = paths.dir.join("rootfs");
        let lease = Lease {
            tree,
            lowers: lowers.to_vec(),
            root,
            paths,
            _lock: lock,
        };
        let before = match lease.trusted_index() {
            Some(index) => index,
            None => {
                if lease.paths.dir.exists() {
                    tracing::info!(tree = %lease.paths.dir.display(), "walk snapshotter: cached tree left dirty or unreadable; building it again");
                    lease.discard();
                    if lease.paths.dir.exists() {
                        // Could not be moved away: copy a private tree.
                        return Ok(None);
                    }
                }
                lease.build()?
            }
        };
        let dirty = lease.paths.dir.join("dirty");
        File::create(&dirty).map_err(io_err("create", &dirty))?;
        sync_dir(&lease.paths.dir)?;
        Ok(Some((lease, before)))
    }
}

impl Lease {
    pub fn tree(&self) -> &Path {
        &self.tree
    }

    /// The stored index, when the tree is there and clean.
    fn trusted_index(&self) -> Option<Index> {
        if !self.tree.is_dir() || self.paths.dir.join("dirty").exists() {
            return None;
        }
        match load_index(&self.paths.dir.join("index")) {
            Ok(index) => Some(index),
            Err(e) => {
                tracing::debug!(error = %e, "walk snapshotter: cached index unreadable");
                None
            }
        }
    }

    /// Copies the merged lowers into a scratch dir, indexes it, syncs it
    /// and renames it into place: the cache dir is never half-built.
    fn build(&self) -> Result<Index, SnapshotError> {
        let tmp = &self.paths.tmp;
        fs::create_dir_all(tmp).map_err(io_err("create directory", tmp))?;
        let scratch = tmp.join(format!(
            "walk-{}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            nanos()
        ));
        let result = (|| {
            let rootfs = scratch.join("rootfs");
            fs::create_dir_all(&rootfs).map_err(io_err("create directory", &rootfs))?;
            let mut copier = Copier::new(self.root);
            for lower in self.lowers.iter().rev() {
                copier.layer(lower, &rootfs)?;
            }
            let idx = index(&rootfs)?;
            save_index(&scratch.join("index"), &idx)?;
            syncfs(&scratch)?;
            if let Some(parent) = self.paths.dir.parent() {
                fs::create_dir_all(parent).map_err(io_err("create directory", parent))?;
            }
            fs::rename(&scratch, &self.paths.dir)
                .map_err(io_err("rename into", &self.paths.dir))?;
            if let Some(parent) = self.paths.dir.parent() {
                sync_dir(parent)?;
            }
            Ok(idx)
        })();
        if result.is_err() {
            let _ = walk::make_writable(&scratch);
            let _ = fs::remove_dir_all(&scratch);
        }
        result
    }

    /// Reverts the step's changes (`after` is the tree's index now), checks
    /// the result against `before`, stores the new index and clears the
    /// dirty mark. An error leaves the tree dirty: call [`Lease::discard`].
    pub fn give_back(&self, before: &Index, after: Index) -> Result<(), SnapshotError> {
        let t = std::time::Instant::now();
        let reverted = revert(&self.tree, &self.lowers, before, after, self.root)?;
        tracing::debug!(elapsed = ?t.elapsed(), "walk snapshotter: tree reverted");
        if let Some(path) = first_mismatch(before, &reverted) {
            return Err(SnapshotError::Io {
                action: "revert",
                path: self.tree.join(path),
                source: io::Error::other("the reverted tree differs from the base"),
            });
        }
        let index_path = self.paths.dir.join("index");
        let next = self.paths.dir.join("index.new");
        save_index(&next, &reverted)?;
        fs::rename(&next, &index_path).map_err(io_err("rename into", &index_path))?;
        tracing::debug!(elapsed = ?t.elapsed(), "walk snapshotter: index saved");
        // The tree and the index must be on disk before the mark goes.
        syncfs(&self.paths.dir)?;
        tracing::debug!(elapsed = ?t.elapsed(), "walk snapshotter: synced");
        let dirty = self.paths.dir.join("dirty");
        fs::remove_file(&dirty).map_err(io_err("remove", &dirty))
    }

    /// Throws the tree away (best effort; what cannot be removed is left
    /// in the store's `tmp/`, where nothing trusts it).
    pub fn discard(&self) {
        let doomed = self.paths.tmp.join(format!(
            "walk-discard-{}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            nanos()
        ));
        let _ = fs::create_dir_all(&self.paths.tmp);
        if fs::rename(&self.paths.dir, &doomed).is_err() {
            return;
        }
        let _ = walk::make_writable(&doomed);
        if let Err(e) = fs::remove_dir_all(&doomed) {
            tracing::warn!(dir = %doomed.display(), error = %e, "could not remove a discarded walk tree");
        }
    }
}

/// What the revert does at one path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Act {
    /// The step made it: remove it.
    Remove,
    /// The step changed, replaced or removed it: copy it again.
    Restore,
    /// A directory whose attributes or times alone changed.
    Attrs,
}

/// Reverts `tree` to `before` (see the module notes) and returns its index.
fn revert(
    tree: &Path,
    lowers: &[PathBuf],
    before: &Index,
    mut after: Index,
    root: bool,
) -> Result<Index, SnapshotError> {
    // One merge of the two sorted indexes (a lookup per path would cost a
    // tree search each).
    let mut acts: Vec<(String, Act)> = Vec::new();
    let mut old = before.iter().peekable();
    for (path, now) in &after {
        let mut was = None;
        while let Some((p, m)) = old.peek() {
            match p.as_bytes().cmp(path.as_bytes()) {
                std::cmp::Ordering::Less => acts.push(((*p).clone(), Act::Restore)),
                std::cmp::Ordering::Equal => was = Some(*m),
                std::cmp::Ordering::Greater => break,
            }
            old.next();
            if was.is_some() {
                break;
            }
        }
        let act = match was {
            None => Act::Remove,
            Some(was) if was == now => continue,
            Some(was) if was.is_dir() && now.is_dir() && was.same_object(now) => Act::Attrs,
            Some(_) => Act::Restore,
        };
        acts.push((path.clone(), act));
    }
    acts.extend(old.map(|(p, _)| (p.clone(), Act::Restore)));
    if acts.is_empty() {
        return Ok(after);
    }
    acts.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    // Subtrees handled whole: nothing below them is visited on its own.
    let mut whole: BTreeSet<&str> = BTreeSet::new();
    let mut todo: Vec<(&str, Act)> = Vec::new();
    for (path, act) in &acts {
        if ancestors(path).any(|a| whole.contains(a)) {
            continue;
        }
        if *act != Act::Attrs {
            whole.insert(path);
        }
        todo.push((path, *act));
    }
    let mut copier = Copier::new(root);
    let mut parents: BTreeSet<&str> = BTreeSet::new();
    for (path, act) in &todo {
        let dst = tree.join(path);
        let parent = ancestors(path).next().unwrap_or("");
        if !root {
            // A read-only directory of the base must take the change; the
            // parents' attributes are set again below.
            writable(&tree.join(parent))?;
        }
        match act {
            Act::Remove => walk::remove_if_exists(&dst)?,
            Act::Restore => {
                walk::remove_if_exists(&dst)?;
                copier.restore(lowers, path, &dst)?;
            }
            Act::Attrs => copier.reset_attrs(lowers, path, &dst)?,
        }
        parents.insert(parent);
    }
    // Deepest first (bytewise, a child sorts after its parent).
    for parent in parents.iter().rev() {
        let dst = tree.join(parent);
        if dst.is_dir() {
            copier.reset_attrs(lowers, parent, &dst)?;
        }
    }
    if copier.saw_hardlink {
        return Err(SnapshotError::Io {
            action: "revert",
            path: tree.to_path_buf(),
            source: io::Error::other("a restored file has hardlinks in the base"),
        });
    }
    for (path, act) in &todo {
        if *act == Act::Attrs {
            index_entry(tree, path, &mut after)?;
        } else {
            forget(&mut after, path);
            index_path(tree, path, &mut after)?;
        }
    }
    for parent in parents.iter().filter(|p| !p.is_empty()) {
        index_entry(tree, parent, &mut after)?;
    }
    Ok(after)
}

/// Makes a directory of ours writable and searchable if it is not.
fn writable(dir: &Path) -> Result<(), SnapshotError> {
    let st = fs::symlink_metadata(dir).map_err(io_err("stat", dir))?;
    if st.mode() & 0o300 != 0o300 {
        let mode = rustix::fs::Mode::from_raw_mode(st.mode() & 0o7777 | 0o700);
        rustix::fs::chmod(dir, mode).map_err(|e| io_err("chmod", dir)(e.into()))?;
    }
    Ok(())
}

/// Drops `path` and everything under it from `index`.
fn forget(index: &mut Index, path: &str) {
    index.remove(path);
    // Keys under `path/` sort between `path/` and `path0` ('0' follows '/').
    let under: Vec<String> = index
        .range(format!("{path}/")..format!("{path}0"))
        .map(|(k, _)| k.clone())
        .collect();
    for k in under {
        index.remove(&k);
    }
}

/// The first path where `now` does not match `before` in what a fresh copy
/// keeps (all but inode numbers, change and birth times).
fn first_mismatch<'a>(before: &'a Index, now: &'a Index) -> Option<&'a str> {
    let same = |a: &Meta, b: &Meta| {
        a.mode == b.mode
            && a.uid == b.uid
            && a.gid == b.gid
            && a.size == b.size
            && a.mtime == b.mtime
            && a.nlink == b.nlink
            && a.xattrs == b.xattrs
    };
    let mut a = before.iter();
    let mut b = now.iter();
    loop {
        match (a.next(), b.next()) {
            (None, None) => return None,
            (Some((pa, ma)), Some((pb, mb))) => {
                if pa != pb {
                    return Some(if pa < pb { pa } else { pb });
                }
                if !same(ma, mb) {
                    return Some(pa);
                }
            }
            (Some((p, _)), None) | (None, Some((p, _))) => return Some(p),
        }
    }
}

fn syncfs(dir: &Path) -> Result<(), SnapshotError> {
    let f = File::open(dir).map_err(io_err("open", dir))?;
    rustix::fs::syncfs(&f).map_err(|e| io_err("syncfs", dir)(e.into()))
}

fn sync_dir(dir: &Path) -> Result<(), SnapshotError> {
    File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(io_err("sync", dir))
}

fn nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// Writes `index` as: magic, count, then per entry the path (length and
/// bytes) and the fixed-size stat fields, all little-endian.
fn save_index(path: &Path, index: &Index) -> Result<(), SnapshotError> {
    let mut buf = Vec::with_capacity(index.len() * 120 + 16);
    buf.extend_from_slice(INDEX_MAGIC);
    buf.extend_from_slice(&(index.len() as u64).to_le_bytes());
    for (p, m) in index {
        buf.extend_from_slice(&(p.len() as u32).to_le_bytes());
        buf.extend_from_slice(p.as_bytes());
        buf.extend_from_slice(&m.mode.to_le_bytes());
        buf.extend_from_slice(&m.uid.to_le_bytes());
        buf.extend_from_slice(&m.gid.to_le_bytes());
        buf.extend_from_slice(&m.size.to_le_bytes());
        for (s, ns) in [m.mtime, m.ctime] {
            buf.extend_from_slice(&s.to_le_bytes());
            buf.extend_from_slice(&ns.to_le_bytes());
        }
        buf.extend_from_slice(&m.ino.to_le_bytes());
        buf.extend_from_slice(&m.nlink.to_le_bytes());
        match m.btime {
            Some((s, ns)) => {
                buf.push(1);
                buf.extend_from_slice(&s.to_le_bytes());
                buf.extend_from_slice(&ns.to_le_bytes());
            }
            None => buf.push(0),
        }
        match &m.xattrs {
            Some(h) => {
                buf.push(1);
                buf.extend_from_slice(h);
            }
            None => buf.push(0),
        }
    }
    let mut f = File::create(path).map_err(io_err("create", path))?;
    f.write_all(&buf).map_err(io_err("write", path))
}

fn load_index(path: &Path) -> io::Result<Index> {
    let mut buf = Vec::new();
    File::open(path)?.read_to_end(&mut buf)?;
    let mut r = Reader { buf: &buf, at: 0 };
    if r.take(8)? != INDEX_MAGIC {
        return Err(io::Error::other("not a walk index"));
    }
    let n = r.u64()?;
    // Sorted on disk: collected first, the map is built in bulk.
    let mut out: Vec<(String, Meta)> = Vec::with_capacity(n.min(1 << 24) as usize);
    for _ in 0..n {
        let len = r.u32()? as usize;
        let p = std::str::from_utf8(r.take(len)?)
            .map_err(io::Error::other)?
            .to_owned();
        let mode = u16::from_le_bytes(r.array()?);
        let uid = r.u32()?;
        let gid = r.u32()?;
        let size = r.u64()?;
        let mtime = (r.i64()?, r.u32()?);
        let ctime = (r.i64()?, r.u32()?);
        let ino = r.u64()?;
        let nlink = r.u32()?;
        let btime = match r.take(1)?[0] {
            0 => None,
            _ => Some((r.i64()?, r.u32()?)),
        };
        let xattrs = match r.take(1)?[0] {
            0 => None,
            _ => Some(r.array::<32>()?),
        };
        out.push((
            p,
            Meta {
                mode,
                uid,
                gid,
                size,
                mtime,
                ctime,
                ino,
                nlink,
                btime,
                xattrs,
            },
        ));
    }
    if r.at != buf.len() {
        return Err(io::Error::other("trailing bytes in a walk index"));
    }
    Ok(out.into_iter().collect())
}

struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> io::Result<&'a [u8]> {
        let end = self
            .at
            .checked_add(n)
            .filter(|e| *e <= self.buf.len())
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        let s = &self.buf[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn array<const N: usize>(&mut self) -> io::Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn u32(&mut self) -> io::Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> io::Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    fn i64(&mut self) -> io::Result<i64> {
        Ok(i64::from_le_bytes(self.array()?))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn index_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("t/a/b")).unwrap();
        fs::write(dir.path().join("t/a/f"), "x").unwrap();
        let idx = index(&dir.path().join("t")).unwrap();
        assert_eq!(idx.len(), 3);
        let file = dir.path().join("index");
        save_index(&file, &idx).unwrap();
        assert_eq!(load_index(&file).unwrap(), idx);
        // A truncated index is refused, not half-read.
        let bytes = fs::read(&file).unwrap();
        fs::write(&file, &bytes[..bytes.len() - 3]).unwrap();
        assert!(load_index(&file).is_err());
    }

    #[test]
    fn forget_drops_a_subtree_only() {
        let mut idx = Index::new();
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("a/b")).unwrap();
        fs::create_dir_all(dir.path().join("a-b")).unwrap();
        fs::write(dir.path().join("a/b/c"), "").unwrap();
        index_path(dir.path(), "a", &mut idx).unwrap();
        index_path(dir.path(), "a-b", &mut idx).unwrap();
        forget(&mut idx, "a");
        assert_eq!(idx.keys().collect::<Vec<_>>(), vec!["a-b"]);
    }
}
