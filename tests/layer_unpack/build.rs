//! Layer tars written header by header, so names the `tar` crate refuses to
//! write (`..`, absolute) can be put in: the name bytes go straight into the
//! ustar header and `Builder::append` writes it as it is.

use std::io::Write;

use sha2::{Digest, Sha256};

#[derive(Clone, Debug)]
pub enum Kind {
    File(Vec<u8>),
    Dir,
    Symlink(String),
    Hardlink(String),
    Char(u32, u32),
    Fifo,
}

#[derive(Clone, Debug)]
pub struct Ent {
    pub path: String,
    pub kind: Kind,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    pub xattrs: Vec<(String, Vec<u8>)>,
    /// Real name carried in a PAX `path` record (the header name is a decoy).
    pub pax_path: Option<String>,
    /// Real name carried in a GNU long-name (`L`) entry.
    pub gnu_long_name: Option<String>,
}

fn ent(path: &str, kind: Kind, mode: u32) -> Ent {
    let (uid, gid) = ids();
    Ent {
        path: path.into(),
        kind,
        mode,
        uid,
        gid,
        mtime: 1_000_000_000,
        xattrs: Vec::new(),
        pax_path: None,
        gnu_long_name: None,
    }
}

/// This process's effective ids: the default owner, so unprivileged runs
/// record nothing unless a test asks for other ids.
pub fn ids() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let field = |k: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|v| v.split_whitespace().nth(1))
            .unwrap()
            .parse()
            .unwrap()
    };
    (field("Uid:"), field("Gid:"))
}

pub fn file(path: &str, data: &str) -> Ent {
    ent(path, Kind::File(data.as_bytes().to_vec()), 0o644)
}
pub fn dir(path: &str) -> Ent {
    ent(path, Kind::Dir, 0o755)
}
pub fn symlink(path: &str, target: &str) -> Ent {
    ent(path, Kind::Symlink(target.into()), 0o777)
}
pub fn hardlink(path: &str, target: &str) -> Ent {
    ent(path, Kind::Hardlink(target.into()), 0o644)
}
pub fn chardev(path: &str, major: u32, minor: u32) -> Ent {
    ent(path, Kind::Char(major, minor), 0o666)
}
pub fn fifo(path: &str) -> Ent {
    ent(path, Kind::Fifo, 0o600)
}

impl Ent {
    pub fn mode(mut self, mode: u32) -> Ent {
        self.mode = mode;
        self
    }
    pub fn owner(mut self, uid: u64, gid: u64) -> Ent {
        self.uid = uid;
        self.gid = gid;
        self
    }
    pub fn mtime(mut self, mtime: u64) -> Ent {
        self.mtime = mtime;
        self
    }
    pub fn pax_path(mut self, path: &str) -> Ent {
        self.pax_path = Some(path.into());
        self
    }
    pub fn gnu_long_name(mut self, path: &str) -> Ent {
        self.gnu_long_name = Some(path.into());
        self
    }
    pub fn xattr(mut self, name: &str, value: &[u8]) -> Ent {
        self.xattrs.push((name.into(), value.to_vec()));
        self
    }
}

fn put(field: &mut [u8], bytes: &[u8]) {
    assert!(bytes.len() <= field.len(), "name too long for a raw header");
    field[..bytes.len()].copy_from_slice(bytes);
}

/// The uncompressed tar of `entries`, in order.
pub fn tar(entries: &[Ent]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        if let Some(long) = &e.gnu_long_name {
            let mut h = tar::Header::new_gnu();
            put(&mut h.as_old_mut().name, b"././@LongLink");
            h.set_entry_type(tar::EntryType::GNULongName);
            let mut data = long.as_bytes().to_vec();
            data.push(0);
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append(&h, data.as_slice()).unwrap();
        }
        let mut keys: Vec<(String, Vec<u8>)> = e
            .xattrs
            .iter()
            .map(|(k, v)| (format!("SCHILY.xattr.{k}"), v.clone()))
            .collect();
        if let Some(p) = &e.pax_path {
            keys.push(("path".into(), p.as_bytes().to_vec()));
        }
        if !keys.is_empty() {
            b.append_pax_extensions(keys.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
                .unwrap();
        }
        let mut h = tar::Header::new_ustar();
        h.set_mode(e.mode);
        h.set_uid(e.uid);
        h.set_gid(e.gid);
        h.set_mtime(e.mtime);
        h.set_size(0);
        let mut data: &[u8] = &[];
        match &e.kind {
            Kind::File(d) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(d.len() as u64);
                data = d;
            }
            Kind::Dir => h.set_entry_type(tar::EntryType::Directory),
            Kind::Symlink(t) => {
                h.set_entry_type(tar::EntryType::Symlink);
                put(&mut h.as_old_mut().linkname, t.as_bytes());
            }
            Kind::Hardlink(t) => {
                h.set_entry_type(tar::EntryType::Link);
                put(&mut h.as_old_mut().linkname, t.as_bytes());
            }
            Kind::Char(maj, min) => {
                h.set_entry_type(tar::EntryType::Char);
                h.set_device_major(*maj).unwrap();
                h.set_device_minor(*min).unwrap();
            }
            Kind::Fifo => h.set_entry_type(tar::EntryType::Fifo),
        }
        put(&mut h.as_old_mut().name, e.path.as_bytes());
        h.set_cksum();
        b.append(&h, data).unwrap();
    }
    b.into_inner().unwrap()
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

pub fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 3).unwrap()
}

pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(data))
}
