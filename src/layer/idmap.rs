//! Host ids → container ids, for writing what a sandboxed step left on disk.
//!
//! A rootless step's files are owned, on the host, by ids of the sandbox's
//! user namespace: the caller for container root, the subordinate range for
//! container ids 1..=N. The layer must carry the container ids.

use crate::exec::{IdMap, IdRange};

/// The overflow id the kernel shows for an unmapped id (`/proc/sys/fs/overflowuid`).
pub const OVERFLOW_ID: u32 = 65534;

/// One contiguous run of the mapping: host `host..host+count` ↦ container
/// `container..container+count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdExtent {
    pub host: u32,
    pub container: u32,
    pub count: u32,
}

/// How host ids of a tree read back into container ids.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdMapping {
    uids: Vec<IdExtent>,
    gids: Vec<IdExtent>,
}

impl Default for IdMapping {
    fn default() -> Self {
        IdMapping::identity()
    }
}

impl IdMapping {
    /// Any extents; ids outside them are unmapped.
    pub fn new(uids: Vec<IdExtent>, gids: Vec<IdExtent>) -> IdMapping {
        IdMapping { uids, gids }
    }

    /// Every id is itself (root builds, the chroot tier).
    pub fn identity() -> IdMapping {
        let all = vec![IdExtent {
            host: 0,
            container: 0,
            count: u32::MAX,
        }];
        IdMapping::new(all.clone(), all)
    }

    /// Only the caller `(uid, gid)` ↦ 0; every other host id is unmapped.
    pub fn single(uid: u32, gid: u32) -> IdMapping {
        let one = |id| {
            vec![IdExtent {
                host: id,
                container: 0,
                count: 1,
            }]
        };
        IdMapping::new(one(uid), one(gid))
    }

    /// The caller ↦ 0 and the subordinate ranges: host `start + k` ↦ `1 + k`.
    pub fn subordinate(uid: u32, gid: u32, uids: IdRange, gids: IdRange) -> IdMapping {
        let map = |id, r: IdRange| {
            vec![
                IdExtent {
                    host: id,
                    container: 0,
                    count: 1,
                },
                IdExtent {
                    host: r.start,
                    container: 1,
                    count: r.count,
                },
            ]
        };
        IdMapping::new(map(uid, uids), map(gid, gids))
    }

    /// The mapping a sandbox started by this process got: the caller is this
    /// process's effective uid/gid. `IdMap::None` (no user namespace) and
    /// `Identity` read ids as they are.
    pub fn from_exec(m: &IdMap) -> IdMapping {
        let (uid, gid) = crate::sys::fs::effective_ids();
        match m {
            IdMap::Subordinate { uids, gids } => IdMapping::subordinate(uid, gid, *uids, *gids),
            IdMap::Single => IdMapping::single(uid, gid),
            IdMap::Identity | IdMap::None => IdMapping::identity(),
        }
    }

    /// The container uid of host uid `host`, `None` when unmapped.
    pub fn uid(&self, host: u32) -> Option<u32> {
        lookup(&self.uids, host)
    }

    /// The container gid of host gid `host`, `None` when unmapped.
    pub fn gid(&self, host: u32) -> Option<u32> {
        lookup(&self.gids, host)
    }
}

fn lookup(extents: &[IdExtent], host: u32) -> Option<u32> {
    extents.iter().find_map(|e| {
        let k = host.checked_sub(e.host)?;
        (k < e.count).then(|| e.container.saturating_add(k))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subordinate_single_identity() {
        let r = |start| IdRange {
            start,
            count: 65536,
        };
        let m = IdMapping::subordinate(1000, 1001, r(100_000), r(200_000));
        assert_eq!(m.uid(1000), Some(0));
        assert_eq!(m.uid(100_000), Some(1));
        assert_eq!(m.uid(100_099), Some(100));
        assert_eq!(m.uid(100_000 + 65535), Some(65536));
        assert_eq!(m.uid(100_000 + 65536), None);
        assert_eq!(m.gid(1001), Some(0));
        assert_eq!(m.gid(200_041), Some(42));
        assert_eq!(m.gid(1000), None);
        let s = IdMapping::single(1000, 1000);
        assert_eq!((s.uid(1000), s.uid(0), s.gid(5)), (Some(0), None, None));
        let i = IdMapping::identity();
        assert_eq!(
            (i.uid(0), i.uid(4_000_000_000)),
            (Some(0), Some(4_000_000_000))
        );
    }
}
