//! Content digests of build-context paths for cache keys: names, types,
//! modes, link targets and file contents (through the stat-keyed
//! [`HashCache`], so unchanged files are not read again).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use sha2::{Digest as _, Sha256};

use crate::context::HashCache;
use crate::store::Digest;

use super::error::{EngineError, StepRef};
use super::Engine;

impl Engine<'_> {
    /// Digest of the context path `rel` (a file or a whole directory).
    pub(super) fn context_digest(&self, rel: &str, sref: &StepRef) -> Result<String, EngineError> {
        let ctx = self
            .req
            .context
            .as_ref()
            .ok_or_else(|| sref.fail("this step reads the build context, but there is none"))?;
        let Some(cache) = &self.hashcache else {
            return Err(sref.fail("no hash cache"));
        };
        let root = ctx.join(rel.trim_start_matches('/'));
        let mut h = Sha256::new();
        hash_tree(&root, "", cache, &mut h)
            .map_err(sref.wrap(format!("hash the context path {rel:?}")))?;
        Ok(Digest::from_hasher(h).to_string())
    }
}

fn hash_tree(path: &Path, name: &str, cache: &HashCache, h: &mut Sha256) -> std::io::Result<()> {
    let meta = fs::symlink_metadata(path)?;
    let ft = meta.file_type();
    let mode = meta.permissions().mode() & 0o7777;
    let mut field = |s: &[u8]| {
        h.update((s.len() as u64).to_le_bytes());
        h.update(s);
    };
    field(name.as_bytes());
    field(format!("{mode:o}").as_bytes());
    if ft.is_symlink() {
        field(b"symlink");
        field(fs::read_link(path)?.as_os_str().as_encoded_bytes());
    } else if ft.is_dir() {
        field(b"dir");
        let mut names: Vec<String> = fs::read_dir(path)?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<Result<_, _>>()?;
        names.sort();
        for n in names {
            let child = if name.is_empty() {
                n.clone()
            } else {
                format!("{name}/{n}")
            };
            hash_tree(&path.join(&n), &child, cache, h)?;
        }
    } else if ft.is_file() {
        field(b"file");
        field(cache.file_digest(path, &meta)?.to_string().as_bytes());
    } else {
        field(b"other");
    }
    Ok(())
}
