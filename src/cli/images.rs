//! Docker's local image commands over the store: `images`, `tag`, `rmi`,
//! `prune` (`inspect` and `history` are in `inspect.rs`), formatted as docker does.
//!
//! SIZE everywhere is what the image occupies in the store: the sum of its
//! (compressed) layer blobs plus the config, not docker's uncompressed size
//! (which would cost a decompression of every layer to compute).

use std::collections::BTreeSet;
use std::io::{BufRead, Write};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use serde_json::json;

use kiln::image::display::{human_size, render_template, since};
use kiln::registry::reference::Reference;
use kiln::store::{GcOptions, Store};
use kiln::transport::{self, familiar_name, find_image, list_images, Matched};

use super::system::store_root;

pub(crate) fn open_store(root: Option<PathBuf>) -> Result<Store> {
    let root = store_root(root);
    Store::open(&root).with_context(|| format!("open the store at {}", root.display()))
}

#[derive(Debug, clap::Args)]
pub struct ImagesArgs {
    /// Only images of this repository (or `repo:tag`).
    pub filter: Option<String>,
    /// Only show image IDs.
    #[arg(short, long)]
    pub quiet: bool,
    /// Show the manifest digests.
    #[arg(long)]
    pub digests: bool,
    /// Do not truncate IDs.
    #[arg(long)]
    pub no_trunc: bool,
    /// `json` (one object per line, as docker's `{{json .}}`), or a Go template such as `{{.Repository}}`.
    #[arg(long)]
    pub format: Option<String>,
}

/// docker's tabwriter settings: cells padded to the widest plus 3, at least 10.
pub(crate) fn print_table(rows: &[Vec<String>]) {
    let cols = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .map(|r| r[c].chars().count() + 3)
                .max()
                .unwrap_or(0)
                .max(10)
        })
        .collect();
    let mut out = std::io::stdout().lock();
    for r in rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            if c + 1 == cols {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}", w = widths[c]));
            }
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
}

pub(crate) fn short_id(id: &str, no_trunc: bool) -> String {
    if no_trunc {
        id.to_string()
    } else {
        id.trim_start_matches("sha256:").chars().take(12).collect()
    }
}

/// (repository, tag) of a store name in docker's familiar form.
pub(crate) fn repo_tag(name: &str) -> (String, String) {
    match Reference::parse(name) {
        Ok(r) => {
            let fam = r.familiar();
            let tag = r.tag().unwrap_or("<none>").to_string();
            let repo = fam
                .split('@')
                .next()
                .unwrap_or(&fam)
                .strip_suffix(&format!(":{tag}"))
                .unwrap_or(&fam)
                .to_string();
            (repo, tag)
        }
        Err(_) => (name.to_string(), "<none>".to_string()),
    }
}

fn matches_filter(name: &str, filter: &Reference, with_tag: bool) -> bool {
    let Ok(r) = Reference::parse(name) else {
        return false;
    };
    r.registry() == filter.registry()
        && r.repository() == filter.repository()
        && (!with_tag || r.tag() == filter.tag())
}

pub fn images(root: Option<PathBuf>, args: ImagesArgs) -> Result<()> {
    let store = open_store(root)?;
    let mut entries = list_images(&store)?;
    // Newest first, as docker lists them.
    entries.sort_by(|a, b| {
        b.image
            .config
            .created
            .cmp(&a.image.config.created)
            .then(a.names.cmp(&b.names))
    });
    let filter = match &args.filter {
        Some(f) => {
            let last = f.rsplit('/').next().unwrap_or(f);
            Some((
                Reference::parse(f).with_context(|| format!("invalid filter {f:?}"))?,
                last.contains(':'),
            ))
        }
        None => None,
    };
    if filter.is_none() {
        // Dangling images last, as `<none>:<none>`, like docker.
        entries.extend(transport::dangling_images(&store)?);
    }
    let mut rows = Vec::new();
    let mut json_rows = Vec::new();
    let mut ids = Vec::new();
    for e in &entries {
        let id = e.image.id().to_string();
        let names: Vec<Option<&String>> = if e.names.is_empty() {
            vec![None]
        } else {
            e.names.iter().map(Some).collect()
        };
        for name in names {
            if let (Some((f, with_tag)), Some(name)) = (&filter, name) {
                if !matches_filter(name, f, *with_tag) {
                    continue;
                }
            }
            let (repo, tag) = match name {
                Some(n) => repo_tag(n),
                None => ("<none>".to_string(), "<none>".to_string()),
            };
            let created = since(e.image.config.created.as_deref());
            let size = human_size(e.image.size());
            let digest = e.image.descriptor.digest.to_string();
            json_rows.push(json!({
                "Containers": "N/A",
                "CreatedAt": e.image.config.created.clone().unwrap_or_default(),
                "CreatedSince": created,
                "Digest": digest,
                "ID": short_id(&id, args.no_trunc),
                "Repository": repo,
                "SharedSize": "N/A",
                "Size": size,
                "Tag": tag,
                "UniqueSize": "N/A",
                "VirtualSize": size,
            }));
            let mut row = vec![repo, tag];
            if args.digests {
                row.push(digest);
            }
            row.extend([short_id(&id, args.no_trunc), created, size]);
            rows.push(row);
            ids.push(short_id(&id, args.no_trunc));
        }
    }
    if args.quiet {
        let mut seen = BTreeSet::new();
        for id in ids {
            if seen.insert(id.clone()) {
                println!("{id}");
            }
        }
        return Ok(());
    }
    if let Some(fmt) = &args.format {
        for v in &json_rows {
            if fmt == "json" {
                println!("{}", serde_json::to_string(v)?);
            } else {
                println!("{}", render_template(fmt, v).map_err(anyhow::Error::msg)?);
            }
        }
        return Ok(());
    }
    let mut header = vec!["REPOSITORY".to_string(), "TAG".to_string()];
    if args.digests {
        header.push("DIGEST".into());
    }
    header.extend(["IMAGE ID", "CREATED", "SIZE"].map(String::from));
    rows.insert(0, header);
    print_table(&rows);
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct TagArgs {
    /// The image: a name or an image ID.
    pub source: String,
    /// The new name.
    pub target: String,
}

pub fn tag(root: Option<PathBuf>, args: TagArgs) -> Result<()> {
    let store = open_store(root)?;
    let target = transport::normalize_name(&args.target)?;
    if Reference::parse(&target)?.digest().is_some() {
        bail!(
            "refusing to create a tag with a digest reference: {}",
            args.target
        );
    }
    let (_, entry) = find_image(&store, &args.source)?;
    transport::set_name(&store, &target, &entry.image.descriptor)?;
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct RmiArgs {
    /// Names or image IDs.
    #[arg(required = true)]
    pub images: Vec<String>,
    /// Remove every name of an image given by ID, even when it has several.
    #[arg(short, long)]
    pub force: bool,
}

pub fn rmi(root: Option<PathBuf>, args: RmiArgs) -> Result<()> {
    let store = open_store(root)?;
    let mut failed = 0;
    for input in &args.images {
        if let Err(e) = rmi_one(&store, input, args.force) {
            eprintln!("Error response from daemon: {e:#}");
            failed += 1;
        }
    }
    if failed > 0 {
        bail!("{failed} image(s) could not be removed");
    }
    Ok(())
}

fn rmi_one(store: &Store, input: &str, force: bool) -> Result<()> {
    let (matched, entry) = find_image(store, input)?;
    let to_untag: Vec<String> = match &matched {
        Matched::Name(n) => vec![n.clone()],
        Matched::Id => {
            if entry.names.len() > 1 && !force {
                bail!(
                    "conflict: unable to delete {} (must be forced) - image is referenced in multiple repositories",
                    short_id(entry.image.id().as_str(), false)
                );
            }
            entry.names.clone()
        }
    };
    for n in &to_untag {
        store.remove_name(n)?;
        println!("Untagged: {}", familiar_name(n));
    }
    // The image is gone once no name points at it; its blobs follow (those
    // no other image shares, and only past the grace period, see store::gc).
    let still_named = list_images(store)?
        .iter()
        .any(|e| e.image.id() == entry.image.id());
    if !still_named {
        let img = &entry.image;
        let mut only: BTreeSet<_> = img
            .manifest
            .layers
            .iter()
            .map(|l| l.digest.clone())
            .collect();
        only.insert(img.manifest.config.digest.clone());
        only.insert(img.descriptor.digest.clone());
        store.gc(&GcOptions {
            only: Some(only),
            immediate: [img.descriptor.digest.clone()].into(),
            ..GcOptions::default()
        })?;
        println!("Deleted: {}", img.id());
    }
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct PruneArgs {
    /// Also remove unpacked layers that images still use (re-created on demand).
    #[arg(short, long)]
    pub all: bool,
    /// Also drop the build cache (what `docker builder prune -a` drops), and
    /// the image blobs only it kept.
    #[arg(long)]
    pub cache: bool,
    /// Do not ask for confirmation.
    #[arg(short, long)]
    pub force: bool,
}

pub fn prune(root: Option<PathBuf>, args: PruneArgs) -> Result<()> {
    let store = open_store(root)?;
    if !args.force {
        let what = if args.cache {
            "all dangling images, unreferenced data and the build cache"
        } else {
            "all dangling images and unreferenced data"
        };
        eprint!("WARNING! This will remove {what}.\nAre you sure you want to continue? [y/N] ");
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            return Ok(());
        }
    }
    let report = store.gc(&GcOptions {
        all_unpacked: args.all,
        drop_cache: args.cache,
        ..GcOptions::default()
    })?;
    if !report.removed_cache.is_empty() {
        println!("Deleted build cache objects:");
        for key in &report.removed_cache {
            println!("{key}");
        }
        println!();
    }
    if !report.removed.is_empty() {
        println!("Deleted Images:");
        for (d, _) in &report.removed {
            println!("deleted: {d}");
        }
        println!();
    }
    if report.kept_young > 0 {
        eprintln!(
            "kept {} unreferenced blob(s) younger than {} minutes (possibly in use by a running pull or build)",
            report.kept_young,
            kiln::store::DEFAULT_GRACE.as_secs() / 60
        );
    }
    println!("Total reclaimed space: {}", human_size(report.reclaimed));
    Ok(())
}
