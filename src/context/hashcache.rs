//! A persistent content-hash cache for the files of a build context, keyed
//! by what `stat` says about each file, so a build whose COPY sources did not
//! change hashes them without reading them.
//!
//! One JSON file per context (see [`HashCache::file_for`]):
//!
//! ```text
//! {"version":1,"entries":{"<path>":{"dev":..,"ino":..,"size":..,"mode":..,
//!   "mtime":[s,ns],"ctime":[s,ns],"digest":"sha256:..","hashed_at":[s,ns]}}}
//! ```
//!
//! An entry is used only when the file's device, inode, size, mode, mtime
//! and ctime all equal the recorded ones. ctime matters: tools that restore
//! mtimes (`touch -d`, `tar`, `rsync -t`) cannot set it, so an edit that
//! keeps the size and the mtime still changes the key.
//!
//! # Racy timestamps
//!
//! A timestamp only has the resolution of the filesystem (a second or two
//! on some, and Linux stamps files from a coarse clock that lags the real
//! time by up to a scheduler tick). A file written, hashed, and written again
//! within one such step keeps the same stat, and a cache that trusted it
//! would return the first content forever. So each entry records when its
//! hashing began (`hashed_at`, taken before the file is opened) and is
//! trusted only if the file's mtime and ctime are older than that by more
//! than [`RACY_MARGIN`]: any change after the hash then carries a later
//! timestamp. Entries of files changed just before hashing are kept but
//! re-read on their next use, which re-stamps them; the cost is one extra
//! read of a file just edited. Clock skew between a network filesystem's
//! server and this host larger than the margin defeats the rule, as it does
//! git's index.
//!
//! # Concurrency
//!
//! One `HashCache` may be shared by threads (`&self` methods; the map is
//! behind a mutex, hashing happens outside it). Two builds on one context
//! each load, update and save their own copy; saves are atomic (temp file,
//! fsync, rename), so the file is always one build's complete view and the
//! loser's updates are merely lost.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::store::Digest;

/// How much older than its hashing a file's timestamps must be for the entry
/// to be trusted: covers 2 s timestamp granularity (FAT, some network
/// filesystems) and the kernel's coarse clock.
pub const RACY_MARGIN: Duration = Duration::from_secs(2);

const VERSION: u32 = 1;
const BUF_SIZE: usize = 64 * 1024;

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// What identifies one version of a file without reading it.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
struct Stat {
    dev: u64,
    ino: u64,
    size: u64,
    mode: u32,
    mtime: [i64; 2],
    ctime: [i64; 2],
}

impl Stat {
    fn of(m: &fs::Metadata) -> Stat {
        Stat {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mode: m.mode(),
            mtime: [m.mtime(), m.mtime_nsec()],
            ctime: [m.ctime(), m.ctime_nsec()],
        }
    }

    /// The later of mtime and ctime (either may be the later one: mtime can
    /// be set into the future).
    fn changed_at(&self) -> [i64; 2] {
        self.mtime.max(self.ctime)
    }
}

#[derive(Serialize, Deserialize, Clone, Debug)]
struct Entry {
    #[serde(flatten)]
    stat: Stat,
    digest: Digest,
    hashed_at: [i64; 2],
}

impl Entry {
    /// See the module notes on racy timestamps.
    fn trusted(&self, margin: Duration) -> bool {
        let [s, ns] = self.hashed_at;
        let margin_ns = i128::try_from(margin.as_nanos()).unwrap_or(i128::MAX);
        let hashed = i128::from(s) * 1_000_000_000 + i128::from(ns);
        let [cs, cns] = self.stat.changed_at();
        let changed = i128::from(cs) * 1_000_000_000 + i128::from(cns);
        changed.saturating_add(margin_ns) < hashed
    }
}

#[derive(Serialize, Deserialize, Default)]
struct CacheFile {
    version: u32,
    entries: HashMap<String, Entry>,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<String, Entry>,
    /// Paths looked up by this run; `save` keeps only these.
    used: HashSet<String>,
    /// An entry was added or replaced since the last load or save.
    dirty: bool,
}

/// A stat-keyed cache of file content digests for one build context. See
/// the module notes for the key, the racy-timestamp rule and concurrency.
pub struct HashCache {
    file: PathBuf,
    margin: Duration,
    inner: Mutex<Inner>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl HashCache {
    /// Loads the cache kept in `file`. A missing file gives an empty cache;
    /// so does an unreadable, corrupt or other-version file (with a warning
    /// for the corrupt case): the cache only ever saves work, so no content
    /// of it can fail a build.
    pub fn open(file: &Path) -> HashCache {
        let entries = match fs::read(file) {
            Ok(bytes) => match serde_json::from_slice::<CacheFile>(&bytes) {
                Ok(f) if f.version == VERSION => f.entries,
                Ok(f) => {
                    tracing::debug!(file = %file.display(), version = f.version, "other hash cache version; starting empty");
                    HashMap::new()
                }
                Err(e) => {
                    tracing::warn!(file = %file.display(), "corrupt context hash cache, starting empty: {e}");
                    HashMap::new()
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => HashMap::new(),
            Err(e) => {
                tracing::warn!(file = %file.display(), "read context hash cache, starting empty: {e}");
                HashMap::new()
            }
        };
        HashCache {
            file: file.to_path_buf(),
            margin: RACY_MARGIN,
            inner: Mutex::new(Inner {
                entries,
                ..Inner::default()
            }),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// Replaces [`RACY_MARGIN`]: larger for filesystems with coarser
    /// timestamps, smaller in tests that cannot wait seconds.
    pub fn with_racy_margin(mut self, margin: Duration) -> HashCache {
        self.margin = margin;
        self
    }

    /// Where the engine keeps the cache of the context at `context_dir`:
    /// `<store root>/cache/context/<sha256 of its canonical path>.json`.
    /// Fails only if the context directory cannot be canonicalised.
    pub fn file_for(store_root: &Path, context_dir: &Path) -> io::Result<PathBuf> {
        let canonical = fs::canonicalize(context_dir)?;
        let digest = Digest::of_bytes(canonical.as_os_str().as_bytes());
        Ok(store_root
            .join("cache")
            .join("context")
            .join(format!("{}.json", digest.hex())))
    }

    /// The sha256 of the content of the regular file `path`, whose metadata
    /// the caller has just read (`meta`, as from `symlink_metadata`). Served
    /// from the cache when `meta` matches a trusted entry, else read (and
    /// recorded). If the file is not the one `meta` describes any more, or
    /// changes while being read, the digest of what was read is returned
    /// but not recorded. Idempotent; safe to call from several threads.
    pub fn file_digest(&self, path: &Path, meta: &fs::Metadata) -> io::Result<Digest> {
        if !meta.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("hash {}: not a regular file", path.display()),
            ));
        }
        let stat = Stat::of(meta);
        // Non-UTF-8 paths (which the context walk refuses anyway) are hashed
        // every time rather than given a lossy, possibly shared, key.
        let key = path.to_str().map(str::to_string);
        if let Some(key) = &key {
            let mut inner = self.lock();
            inner.used.insert(key.clone());
            if let Some(e) = inner.entries.get(key) {
                if e.stat == stat && e.trusted(self.margin) {
                    self.hits.fetch_add(1, Ordering::Relaxed);
                    return Ok(e.digest.clone());
                }
            }
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        // Before the open, so that every change made after the content was
        // read carries a later timestamp than this.
        let hashed_at = now();
        let mut file = File::open(path)?;
        let before = Stat::of(&file.metadata()?);
        let digest = hash_reader(&mut file)
            .map_err(|e| io::Error::new(e.kind(), format!("hash {}: {e}", path.display())))?;
        let after = Stat::of(&file.metadata()?);
        if before != stat || after != stat {
            tracing::debug!(path = %path.display(), "changed while hashed; not cached");
            return Ok(digest);
        }
        if let Some(key) = key {
            let mut inner = self.lock();
            inner.entries.insert(
                key,
                Entry {
                    stat,
                    digest: digest.clone(),
                    hashed_at,
                },
            );
            inner.dirty = true;
        }
        Ok(digest)
    }

    /// Writes the cache back if anything changed, keeping only the entries
    /// this run looked up (so the file stays the size of what builds of
    /// this context use). Atomic: temp file in the same directory, fsync,
    /// rename, fsync of the directory; a crash leaves the old or the new
    /// file. Creates the directory if needed.
    pub fn save(&self) -> io::Result<()> {
        let mut inner = self.lock();
        let Inner {
            entries,
            used,
            dirty,
        } = &mut *inner;
        let unused = entries.keys().any(|k| !used.contains(k));
        if !*dirty && !unused {
            return Ok(());
        }
        entries.retain(|k, _| used.contains(k));
        let body = CacheFile {
            version: VERSION,
            entries: entries.clone(),
        };
        let bytes = serde_json::to_vec(&body).map_err(io::Error::other)?;
        write_atomic(&self.file, &bytes)?;
        *dirty = false;
        Ok(())
    }

    /// (hits, misses) of [`HashCache::file_digest`] so far; a miss is a
    /// file read.
    pub fn stats(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the map inconsistent
        // (every update is one insert), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn now() -> [i64; 2] {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    [
        i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        i64::from(d.subsec_nanos()),
    ]
}

fn hash_reader(r: &mut impl Read) -> io::Result<Digest> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; BUF_SIZE];
    loop {
        match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => hasher.update(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Digest::from_hasher(hasher))
}

fn write_atomic(dest: &Path, data: &[u8]) -> io::Result<()> {
    let dir = dest.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let tmp = dir.join(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        fs::rename(&tmp, dest)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    const MARGIN: Duration = Duration::from_millis(100);

    fn sha(data: &[u8]) -> Digest {
        Digest::of_bytes(data)
    }

    fn digest_of(c: &HashCache, p: &Path) -> Digest {
        c.file_digest(p, &fs::symlink_metadata(p).unwrap()).unwrap()
    }

    /// Waits until files written now are older than `MARGIN` by the
    /// filesystem's clock as well as ours.
    fn settle() {
        std::thread::sleep(MARGIN * 3);
    }

    #[test]
    fn is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<HashCache>();
    }

    #[test]
    fn second_run_reads_nothing_and_a_change_is_read_again() {
        let tmp = tempfile::tempdir().unwrap();
        let ctx = tmp.path().join("ctx");
        fs::create_dir(&ctx).unwrap();
        let paths: Vec<PathBuf> = (0..1000).map(|i| ctx.join(format!("f{i:04}"))).collect();
        for (i, p) in paths.iter().enumerate() {
            fs::write(p, format!("file {i:04}")).unwrap();
        }
        settle();
        let file = tmp.path().join("cache.json");

        let first = HashCache::open(&file).with_racy_margin(MARGIN);
        for (i, p) in paths.iter().enumerate() {
            assert_eq!(digest_of(&first, p), sha(format!("file {i:04}").as_bytes()));
        }
        assert_eq!(first.stats(), (0, 1000));
        first.save().unwrap();

        let second = HashCache::open(&file).with_racy_margin(MARGIN);
        // Several threads at once, as an engine hashing sources in parallel would.
        std::thread::scope(|s| {
            for chunk in paths.chunks(250) {
                let second = &second;
                s.spawn(move || {
                    for p in chunk {
                        let i: usize = p.to_str().unwrap()[p.to_str().unwrap().len() - 4..]
                            .parse()
                            .unwrap();
                        assert_eq!(digest_of(second, p), sha(format!("file {i:04}").as_bytes()));
                    }
                });
            }
        });
        assert_eq!(second.stats(), (1000, 0));
        // Nothing changed: the file is not rewritten.
        let ino = fs::metadata(&file).unwrap().ino();
        second.save().unwrap();
        assert_eq!(fs::metadata(&file).unwrap().ino(), ino);

        // Same size, mtime put back: only ctime tells, and it is enough.
        let victim = &paths[417];
        let mtime = fs::metadata(victim).unwrap().modified().unwrap();
        fs::write(victim, b"FILE 0417").unwrap();
        fs::File::options()
            .append(true)
            .open(victim)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        settle();
        let third = HashCache::open(&file).with_racy_margin(MARGIN);
        for p in &paths {
            digest_of(&third, p);
        }
        assert_eq!(third.stats(), (999, 1));
        assert_eq!(digest_of(&third, victim), sha(b"FILE 0417"));
        third.save().unwrap();
        let fourth = HashCache::open(&file).with_racy_margin(MARGIN);
        for p in &paths {
            digest_of(&fourth, p);
        }
        assert_eq!(fourth.stats(), (1000, 0));
    }

    #[test]
    fn entries_unused_by_a_run_are_dropped() {
        let tmp = tempfile::tempdir().unwrap();
        let paths: Vec<PathBuf> = (0..20).map(|i| tmp.path().join(format!("f{i}"))).collect();
        for p in &paths {
            fs::write(p, p.to_str().unwrap()).unwrap();
        }
        settle();
        let file = tmp.path().join("cache/nested/c.json");
        let all = HashCache::open(&file).with_racy_margin(MARGIN);
        paths.iter().for_each(|p| drop(digest_of(&all, p)));
        all.save().unwrap();
        let some = HashCache::open(&file).with_racy_margin(MARGIN);
        paths[..5].iter().for_each(|p| drop(digest_of(&some, p)));
        assert_eq!(some.stats(), (5, 0));
        some.save().unwrap();
        let after = HashCache::open(&file).with_racy_margin(MARGIN);
        paths.iter().for_each(|p| drop(digest_of(&after, p)));
        assert_eq!(after.stats(), (5, 15));
    }

    #[test]
    fn a_file_changed_just_before_hashing_is_read_again() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("hot");
        fs::write(&p, b"one").unwrap();
        let file = tmp.path().join("c.json");
        // Default margin: a file written a moment ago is never trusted,
        // even with an identical stat, so a rewrite within the same
        // timestamp tick cannot go unnoticed.
        let c = HashCache::open(&file);
        assert_eq!(digest_of(&c, &p), sha(b"one"));
        assert_eq!(digest_of(&c, &p), sha(b"one"));
        assert_eq!(c.stats(), (0, 2));
        c.save().unwrap();
        assert_eq!(digest_of(&HashCache::open(&file), &p), sha(b"one"));

        // Once the file is older than the margin, the next read re-stamps
        // the entry and the one after is a hit.
        let c = HashCache::open(&file).with_racy_margin(MARGIN);
        settle();
        digest_of(&c, &p);
        digest_of(&c, &p);
        assert_eq!(c.stats(), (1, 1));
    }

    #[test]
    fn corrupt_or_foreign_files_start_empty() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("f");
        fs::write(&p, b"data").unwrap();
        settle();
        let file = tmp.path().join("c.json");
        for junk in [&b"{not json"[..], br#"{"version":99,"entries":{}}"#, b""] {
            fs::write(&file, junk).unwrap();
            let c = HashCache::open(&file).with_racy_margin(MARGIN);
            assert_eq!(digest_of(&c, &p), sha(b"data"));
            assert_eq!(c.stats(), (0, 1));
            c.save().unwrap();
            let again = HashCache::open(&file).with_racy_margin(MARGIN);
            digest_of(&again, &p);
            assert_eq!(again.stats(), (1, 0));
        }
        // No temp files left beside it.
        let names: Vec<_> = fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[test]
    fn stale_metadata_is_hashed_but_not_recorded() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("f");
        fs::write(&p, b"old").unwrap();
        let stale = fs::symlink_metadata(&p).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        fs::write(&p, b"newer").unwrap();
        settle();
        let c = HashCache::open(&tmp.path().join("c.json")).with_racy_margin(MARGIN);
        assert_eq!(c.file_digest(&p, &stale).unwrap(), sha(b"newer"));
        assert_eq!(c.file_digest(&p, &stale).unwrap(), sha(b"newer"));
        assert_eq!(c.stats(), (0, 2));
        assert!(c
            .file_digest(tmp.path(), &fs::metadata(tmp.path()).unwrap())
            .is_err());
    }

    #[test]
    fn file_for_is_keyed_by_the_canonical_path() {
        let tmp = tempfile::tempdir().unwrap();
        let ctx = tmp.path().join("ctx");
        fs::create_dir(&ctx).unwrap();
        std::os::unix::fs::symlink(&ctx, tmp.path().join("link")).unwrap();
        let root = Path::new("/store");
        let a = HashCache::file_for(root, &ctx).unwrap();
        assert_eq!(
            a,
            HashCache::file_for(root, &tmp.path().join("link")).unwrap()
        );
        assert_eq!(HashCache::file_for(root, &ctx.join("../ctx/.")).unwrap(), a);
        assert!(a.starts_with("/store/cache/context"));
        assert!(HashCache::file_for(root, &tmp.path().join("missing")).is_err());
    }
}
