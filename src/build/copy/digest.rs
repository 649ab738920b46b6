//! The cache key of a copy's inputs.

use std::path::Path;

use serde::Serialize;
use sha2::{Digest as _, Sha256};

use super::context_tree::ContextTree;
use super::run::{exclude_matcher, find_matches, kept_children};
use super::tree::{Node, NodeKind};
use super::{fetch, CopyError, CopyFrom, CopySpec};
use crate::store::Digest;

/// Everything of the spec that shapes the layer.
#[derive(Serialize)]
struct SpecKey<'a> {
    sources: &'a [String],
    inline: Vec<(&'a str, &'a str)>,
    dest: &'a str,
    workdir: &'a str,
    chown: Option<&'a str>,
    chmod: Option<&'a str>,
    exclude: &'a [String],
    parents: bool,
    link: bool,
    add: Option<(Option<&'a str>, Option<bool>, bool)>,
    source_date_epoch: Option<i64>,
}

/// One source path as the key sees it.
#[derive(Serialize)]
struct EntryKey<'a> {
    path: &'a str,
    kind: &'a str,
    mode: u32,
    uid: u64,
    gid: u64,
    link: Option<&'a str>,
    content: Option<String>,
}

/// Digest of everything the copy reads: the spec, and for the context the
/// names (relative to each source), types, modes, owners, link targets and
/// file contents (through `hash_file`, the caller's stat-keyed cache); for
/// an image source its chain id with the patterns (nothing is read). A URL
/// counts by its text and `--checksum` only: without a checksum the caller
/// decides whether a cached download may be reused.
pub fn source_digest(
    spec: &CopySpec,
    from: &CopyFrom,
    hash_file: &dyn Fn(&Path, &std::fs::Metadata) -> std::io::Result<Digest>,
) -> Result<Digest, CopyError> {
    let mut h = Sha256::new();
    let key = SpecKey {
        sources: &spec.sources,
        inline: spec
            .inline
            .iter()
            .map(|f| (f.name.as_str(), f.data.as_str()))
            .collect(),
        dest: &spec.dest,
        workdir: &spec.workdir,
        chown: spec.chown.as_deref(),
        chmod: spec.chmod.as_deref(),
        exclude: &spec.exclude,
        parents: spec.parents,
        link: spec.link,
        add: spec
            .add
            .as_ref()
            .map(|a| (a.checksum.as_deref(), a.unpack, a.keep_git_dir)),
        source_date_epoch: spec.source_date_epoch,
    };
    line(&mut h, &key);
    match from {
        CopyFrom::Image { chain_id, .. } => h.update(chain_id.as_str().as_bytes()),
        CopyFrom::Context { dir, ignore } => {
            let tree = ContextTree::new(dir, ignore)?;
            let exclude = exclude_matcher(&spec.exclude)?;
            for src in &spec.sources {
                if spec.add.is_some() && fetch::is_remote(src) {
                    continue;
                }
                for m in find_matches(&tree, src, spec.parents, exclude.as_ref())? {
                    h.update(b"\0match\0");
                    h.update(m.name.as_bytes());
                    h.update(b"\0");
                    h.update(m.keep.as_bytes());
                    entry(&mut h, &tree, &m.node, "", hash_file)?;
                    if m.node.is_dir() {
                        walk(
                            &mut h,
                            &tree,
                            &m.node,
                            &m.node.rel,
                            exclude.as_ref(),
                            hash_file,
                        )?;
                    }
                }
            }
        }
    }
    Ok(Digest::from_hasher(h))
}

fn line(h: &mut Sha256, value: &impl Serialize) {
    // Serializing these plain structs cannot fail; an empty line would
    // still be a stable key.
    h.update(serde_json::to_vec(value).unwrap_or_default());
    h.update(b"\n");
}

fn walk(
    h: &mut Sha256,
    tree: &ContextTree,
    dir: &Node,
    root: &str,
    exclude: Option<&crate::frontend::patternmatcher::PatternMatcher>,
    hash_file: &dyn Fn(&Path, &std::fs::Metadata) -> std::io::Result<Digest>,
) -> Result<(), CopyError> {
    for (child, inside) in kept_children(tree, dir, root, exclude)? {
        entry(h, tree, &child, &inside, hash_file)?;
        if child.is_dir() {
            walk(h, tree, &child, root, exclude, hash_file)?;
        }
    }
    Ok(())
}

fn entry(
    h: &mut Sha256,
    _tree: &ContextTree,
    node: &Node,
    path: &str,
    hash_file: &dyn Fn(&Path, &std::fs::Metadata) -> std::io::Result<Digest>,
) -> Result<(), CopyError> {
    let (kind, link, content) = match &node.kind {
        NodeKind::File => {
            let meta = std::fs::symlink_metadata(&node.host)
                .map_err(CopyError::read("stat", node.rel.clone()))?;
            let d =
                hash_file(&node.host, &meta).map_err(CopyError::read("hash", node.rel.clone()))?;
            ("file", None, Some(d.as_str().to_string()))
        }
        NodeKind::Dir => ("dir", None, None),
        NodeKind::Symlink(t) => ("symlink", Some(t.as_str()), None),
        NodeKind::Other => ("other", None, None),
    };
    line(
        h,
        &EntryKey {
            path,
            kind,
            mode: node.mode,
            uid: node.uid,
            gid: node.gid,
            link,
            content,
        },
    );
    Ok(())
}
