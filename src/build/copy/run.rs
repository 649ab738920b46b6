//! The copy itself: sources matched and resolved, destinations decided,
//! everything put into the staging tree.

use super::chmod::{self, Chmod};
use super::context_tree::ContextTree;
use super::image_tree::{read_small, ImageTree};
use super::stage::{Meta, Stage};
use super::tree::{clean_rel, join, resolve, Node, NodeKind, Tree};
use super::{archive, chown, fetch, CopyError, CopyFrom, CopySpec, Target};
use crate::frontend::patternmatcher::glob::{has_wildcards, match_name};
use crate::frontend::patternmatcher::PatternMatcher;
use crate::layer::WrittenLayer;
use crate::store::Store;

pub(super) fn copy_layer(
    store: &Store,
    spec: &CopySpec,
    from: &CopyFrom,
    target: &Target,
) -> Result<WrittenLayer, CopyError> {
    let target_tree = ImageTree::new(&target.lowers, &target.recorded);
    let owner = match &spec.chown {
        Some(s) => Some(chown::resolve(
            s,
            read_small(&target_tree, "etc/passwd")?.as_deref(),
            read_small(&target_tree, "etc/group")?.as_deref(),
        )?),
        None => None,
    };
    let chmod = spec.chmod.as_deref().map(chmod::parse).transpose()?;
    let exclude = exclude_matcher(&spec.exclude)?;
    // --link: the layer is made over nothing (BuildKit rebases it later), so
    // destinations and parents ignore the target; only --chown names are
    // still looked up in it.
    let scratch = Target::default();
    let over = if spec.link { &scratch } else { target };
    let mut stage = Stage::new(store, over, owner.unwrap_or((0, 0)))?;
    let dest = Dest::new(spec, &stage)?;
    let count = spec.sources.len() + spec.inline.len();
    if count > 1 && !dest.dir_syntax {
        return Err(CopyError::BadDest {
            path: spec.dest.clone(),
            reason: "when copying more than one source, the destination must be a directory \
                     and end with a /"
                .into(),
        });
    }
    let mut copier = Copier {
        spec,
        owner,
        chmod,
        exclude,
        dest,
        several: count > 1,
    };
    match from {
        CopyFrom::Context { dir, ignore } => {
            let tree = ContextTree::new(dir, ignore)?;
            for src in &spec.sources {
                if spec.add.is_some() && fetch::is_remote(src) {
                    copier.fetch(&mut stage, src)?;
                } else {
                    copier.source(&tree, &mut stage, src)?;
                }
            }
        }
        CopyFrom::Image {
            lowers, recorded, ..
        } => {
            let tree = ImageTree::new(lowers, recorded);
            for src in &spec.sources {
                copier.source(&tree, &mut stage, src)?;
            }
        }
    }
    for file in &spec.inline {
        copier.inline(&mut stage, &file.name, file.data.as_bytes())?;
    }
    stage.finish(store, spec.source_date_epoch)
}

pub(super) fn exclude_matcher(patterns: &[String]) -> Result<Option<PatternMatcher>, CopyError> {
    if patterns.is_empty() {
        return Ok(None);
    }
    let m = PatternMatcher::new(patterns).map_err(|e| CopyError::Exclude {
        pattern: patterns.join(","),
        reason: e.to_string(),
    })?;
    for p in m.patterns() {
        p.check().map_err(|e| CopyError::Exclude {
            pattern: p.text().to_string(),
            reason: e.to_string(),
        })?;
    }
    Ok(Some(m))
}

/// The destination, resolved in the target.
pub(super) struct Dest {
    /// Relative to the image root, symlinks resolved.
    pub(super) rel: String,
    /// Written as a directory: ends in `/`, or is `.`/empty (BuildKit adds
    /// the slash itself then).
    pub(super) dir_syntax: bool,
    /// As written, for messages.
    pub(super) shown: String,
}

impl Dest {
    fn new(spec: &CopySpec, stage: &Stage) -> Result<Dest, CopyError> {
        let d = spec.dest.as_str();
        let abs = if d.starts_with('/') {
            d.to_string()
        } else {
            format!("{}/{d}", spec.workdir)
        };
        let dir_syntax = d.is_empty() || d == "." || d.ends_with('/') || d.ends_with("/.");
        let rel = resolve(&|p| stage.kind_at(p), &abs, true)?;
        Ok(Dest {
            rel,
            dir_syntax,
            shown: d.to_string(),
        })
    }

    /// Whether a file copied here goes inside (`dest/NAME`).
    fn is_dir(&self, stage: &Stage) -> Result<bool, CopyError> {
        Ok(self.dir_syntax
            || self.rel.is_empty()
            || stage.kind_at(&self.rel)? == Some(NodeKind::Dir))
    }
}

pub(super) struct Copier<'s> {
    pub(super) spec: &'s CopySpec,
    pub(super) owner: Option<(u64, u64)>,
    pub(super) chmod: Option<Chmod>,
    exclude: Option<PatternMatcher>,
    pub(super) dest: Dest,
    several: bool,
}

/// One match of a source: the name it is copied under, the node copied
/// (symlinks already followed), and the path `--parents` keeps.
pub(super) struct Match {
    pub(super) name: String,
    pub(super) node: Node,
    pub(super) keep: String,
}

impl Copier<'_> {
    /// Owner, mode and mtime of a copied node.
    pub(super) fn meta(&self, node: &Node) -> Meta {
        let (uid, gid) = self.owner.unwrap_or((node.uid, node.gid));
        let mode = match &self.chmod {
            Some(c) if !matches!(node.kind, NodeKind::Symlink(_)) => {
                c.apply(node.mode, node.is_dir())
            }
            _ => node.mode,
        };
        Meta {
            uid,
            gid,
            mode,
            mtime: node.mtime,
        }
    }

    /// Where a non-directory match goes.
    pub(super) fn file_dest(
        &self,
        stage: &mut Stage,
        name: &str,
        keep: &str,
        many: bool,
    ) -> Result<String, CopyError> {
        if self.spec.parents && !keep.is_empty() {
            return Ok(join(&self.dest.rel, keep));
        }
        if many || self.dest.is_dir(stage)? {
            stage.ensure_dir(&self.dest.rel)?;
            return Ok(join(&self.dest.rel, name));
        }
        if self.dest.rel.is_empty() {
            return Err(CopyError::BadDest {
                path: self.dest.shown.clone(),
                reason: "cannot copy a file to the root".into(),
            });
        }
        Ok(self.dest.rel.clone())
    }

    fn source(&mut self, tree: &dyn Tree, stage: &mut Stage, src: &str) -> Result<(), CopyError> {
        let matches = find_matches(tree, src, self.spec.parents, self.exclude.as_ref())?;
        let many = self.several || matches.len() > 1;
        for m in matches {
            if m.node.is_dir() {
                let top = if self.spec.parents {
                    join(&self.dest.rel, &m.keep)
                } else {
                    self.dest.rel.clone()
                };
                if stage.kind_at(&top)?.is_some_and(|k| k != NodeKind::Dir) {
                    return Err(CopyError::BadDest {
                        path: format!("/{top}"),
                        reason: format!("cannot copy directory {src:?} to a non-directory"),
                    });
                }
                if self.spec.parents && !m.keep.is_empty() {
                    stage.put_dir(&top, self.meta(&m.node))?;
                } else {
                    stage.ensure_dir(&top)?;
                }
                self.children(tree, stage, &m.node, &top, &m.node.rel)?;
                continue;
            }
            if let Some(add) = &self.spec.add {
                if add.unpack != Some(false) && m.node.kind == NodeKind::File {
                    let file = tree.open(&m.node)?;
                    if let Some(archive) = archive::detect(file, &m.node.rel)? {
                        stage.ensure_dir(&self.dest.rel)?;
                        archive::extract(self, stage, archive, &m.node.rel)?;
                        continue;
                    }
                }
            }
            let to = self.file_dest(stage, &m.name, &m.keep, many)?;
            stage.put_node(tree, &m.node, &to, self.meta(&m.node))?;
        }
        Ok(())
    }

    /// Copies the contents of the directory `dir` into `to`.
    fn children(
        &self,
        tree: &dyn Tree,
        stage: &mut Stage,
        dir: &Node,
        to: &str,
        root: &str,
    ) -> Result<(), CopyError> {
        for (child, _) in kept_children(tree, dir, root, self.exclude.as_ref())? {
            let t = join(to, child.name());
            if child.is_dir() {
                stage.put_dir(&t, self.meta(&child))?;
                self.children(tree, stage, &child, &t, root)?;
            } else {
                stage.put_node(tree, &child, &t, self.meta(&child))?;
            }
        }
        Ok(())
    }

    fn inline(&self, stage: &mut Stage, name: &str, data: &[u8]) -> Result<(), CopyError> {
        let name = clean_rel(name);
        let base = name.rsplit('/').next().unwrap_or(&name).to_string();
        let now = stage.now();
        let (uid, gid) = self.owner.unwrap_or((0, 0));
        let mode = self.chmod.as_ref().map_or(0o644, |c| c.apply(0o644, false));
        let to = self.file_dest(stage, &base, "", self.several)?;
        let meta = Meta {
            uid,
            gid,
            mode,
            mtime: now,
        };
        stage.put_file(&to, meta, &mut &data[..], None)
    }
}

/// Matches `parts` (one glob per segment) below `dir` (resolved), as
/// `written` (the path as the user wrote it so far).
fn glob(
    tree: &dyn Tree,
    dir: &str,
    parts: &[&str],
    written: &str,
    out: &mut Vec<(String, Node)>,
) -> Result<(), CopyError> {
    let Some((first, rest)) = parts.split_first() else {
        return Ok(());
    };
    match tree.lstat(dir)? {
        Some(n) if n.is_dir() => {}
        _ => return Ok(()),
    }
    for child in tree.children(dir)? {
        if !match_name(first, child.name()) {
            continue;
        }
        let w = join(written, child.name());
        if rest.is_empty() {
            out.push((w, child));
        } else if child.is_dir() {
            glob(tree, &child.rel, rest, &w, out)?;
        }
    }
    Ok(())
}

/// The matches of one source, top-level symlinks followed.
pub(super) fn find_matches(
    tree: &dyn Tree,
    src: &str,
    parents: bool,
    exclude: Option<&PatternMatcher>,
) -> Result<Vec<Match>, CopyError> {
    let (pivot, path) = match src.split_once("/./") {
        Some((p, rest)) if parents => (clean_rel(p), format!("{p}/{rest}")),
        _ => (String::new(), src.to_string()),
    };
    let cleaned = clean_rel(&path);
    let kind = |p: &str| Ok(tree.lstat(p)?.map(|n| n.kind));
    let mut found = Vec::new();
    if has_wildcards(&cleaned) {
        let parts: Vec<&str> = cleaned.split('/').collect();
        let fixed = parts.iter().take_while(|p| !has_wildcards(p)).count();
        let start = resolve(&kind, &parts[..fixed].join("/"), true)?;
        let mut paths = Vec::new();
        glob(
            tree,
            &start,
            &parts[fixed..],
            &parts[..fixed].join("/"),
            &mut paths,
        )?;
        for (written, node) in paths {
            let name = node.name().to_string();
            if excluded(exclude, &name)? {
                continue;
            }
            found.push((written, node));
        }
    } else {
        let resolved = resolve(&kind, &cleaned, true)?;
        let node = tree.lstat(&resolved)?.ok_or_else(|| CopyError::NotFound {
            path: src.to_string(),
        })?;
        found.push((cleaned.clone(), node));
    }
    if found.is_empty() {
        return Err(CopyError::NotFound {
            path: src.to_string(),
        });
    }
    let mut out = Vec::new();
    for (written, node) in found {
        let node = match &node.kind {
            NodeKind::Symlink(_) => {
                let r = resolve(&kind, &node.rel, true)?;
                tree.lstat(&r)?.ok_or_else(|| CopyError::NotFound {
                    path: format!("{src} (symlink {} to {r})", node.rel),
                })?
            }
            _ => node,
        };
        let name = written.rsplit('/').next().unwrap_or(&written).to_string();
        let keep = written
            .strip_prefix(&pivot)
            .map(|k| k.trim_start_matches('/').to_string())
            .unwrap_or_else(|| written.clone());
        out.push(Match { name, node, keep });
    }
    Ok(out)
}

/// The children of `dir` a copy of the directory `root` takes, each with its
/// path inside `root`: `--exclude`d ones are dropped, except directories
/// while a `!` pattern may take something inside them back.
pub(super) fn kept_children(
    tree: &dyn Tree,
    dir: &Node,
    root: &str,
    exclude: Option<&PatternMatcher>,
) -> Result<Vec<(Node, String)>, CopyError> {
    let mut kept = Vec::new();
    for child in tree.children(&dir.rel)? {
        let inside = child
            .rel
            .strip_prefix(root)
            .map(|r| r.trim_start_matches('/'))
            .unwrap_or(&child.rel)
            .to_string();
        if excluded(exclude, &inside)?
            && !(child.is_dir() && exclude.is_some_and(|m| m.exclusions()))
        {
            continue;
        }
        kept.push((child, inside));
    }
    Ok(kept)
}

pub(super) fn excluded(exclude: Option<&PatternMatcher>, rel: &str) -> Result<bool, CopyError> {
    match exclude {
        None => Ok(false),
        Some(m) => m
            .matches_or_parent_matches(rel)
            .map_err(|e| CopyError::Exclude {
                pattern: m
                    .patterns()
                    .iter()
                    .map(|p| p.text())
                    .collect::<Vec<_>>()
                    .join(","),
                reason: e.to_string(),
            }),
    }
}
