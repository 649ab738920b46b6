//! `security.capability` values: a file capability set by root of a user
//! namespace is stored by the kernel in the namespaced form (revision 3,
//! carrying the host uid of that namespace's root). In an image it must be
//! the plain form (revision 2), valid for whatever namespace runs it.

/// `struct vfs_ns_cap_data` / `vfs_cap_data` (linux/capability.h): a
/// little-endian `magic_etc` (revision in the top byte, flags below), two
/// (permitted, inheritable) pairs, and for revision 3 a trailing `rootid`.
const REVISION_MASK: u32 = 0xFF00_0000;
const REVISION_2: u32 = 0x0200_0000;
const REVISION_3: u32 = 0x0300_0000;
const V2_SIZE: usize = 20;
const V3_SIZE: usize = 24;

/// The revision-2 form of a revision-3 value (rootid dropped); other
/// values are returned unchanged.
pub fn to_v2(value: &[u8]) -> Vec<u8> {
    let Some(magic) = value.get(..4) else {
        return value.to_vec();
    };
    let magic = u32::from_le_bytes([magic[0], magic[1], magic[2], magic[3]]);
    if magic & REVISION_MASK != REVISION_3 || value.len() != V3_SIZE {
        return value.to_vec();
    }
    let magic = (magic & !REVISION_MASK) | REVISION_2;
    let mut out = Vec::with_capacity(V2_SIZE);
    out.extend_from_slice(&magic.to_le_bytes());
    out.extend_from_slice(&value[4..V2_SIZE]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v3_becomes_v2() {
        // cap_net_raw+ep, rootid 1000.
        let mut v3 = vec![0x01, 0, 0, 0x03, 0x00, 0x20, 0, 0, 0, 0, 0, 0];
        v3.extend_from_slice(&[0; 8]);
        v3.extend_from_slice(&1000u32.to_le_bytes());
        let v2 = to_v2(&v3);
        assert_eq!(v2.len(), 20);
        assert_eq!(&v2[..4], &[0x01, 0, 0, 0x02]);
        assert_eq!(&v2[4..], &v3[4..20]);
        assert_eq!(to_v2(&v2), v2);
        assert_eq!(to_v2(b"xy"), b"xy");
    }
}
