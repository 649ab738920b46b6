//! Docker's local image commands over the store: `images`, `tag`, `rmi`,
//! `inspect`, `history`, `prune`. Output follows the docker CLI's formats.
//!
//! SIZE everywhere is what the image occupies in the store: the sum of its
//! (compressed) layer blobs plus the config, not docker's uncompressed size
//! (which would cost a decompression of every layer to compute).

use std::collections::BTreeSet;
use std::io::{BufRead, Write};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use kiln::image::display::{human_size, render_template, since};
use kiln::registry::reference::Reference;
use kiln::store::{GcOptions, Store};
use kiln::transport::{self, familiar_name, find_image, list_images, ImageEntry, Matched};

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
fn print_table(rows: &[Vec<String>]) {
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

fn short_id(id: &str, no_trunc: bool) -> String {
    if no_trunc {
        id.to_string()
    } else {
        id.trim_start_matches("sha256:").chars().take(12).collect()
    }
}

/// (repository, tag) of a store name in docker's familiar form.
fn repo_tag(name: &str) -> (String, String) {
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
pub struct InspectArgs {
    /// Names or image IDs.
    #[arg(required = true)]
    pub images: Vec<String>,
    /// A Go template (`{{.Id}}`, `{{json .Config}}`) printed once per image.
    #[arg(short, long)]
    pub format: Option<String>,
}

/// `docker image inspect`'s document for an image.
fn inspect_doc(entry: &ImageEntry) -> Value {
    let img = &entry.image;
    let cfg = &img.config;
    let extra_str = |k: &str| {
        cfg.extra
            .get(k)
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string()
    };
    let repo_tags: Vec<String> = entry.names.iter().map(|n| familiar_name(n)).collect();
    let mut repo_digests: Vec<String> = entry
        .names
        .iter()
        .map(|n| format!("{}@{}", repo_tag(n).0, img.descriptor.digest))
        .collect();
    repo_digests.dedup();
    let mut doc = json!({
        "Id": img.id().to_string(),
        "RepoTags": repo_tags,
        "RepoDigests": repo_digests,
        "Parent": "",
        "Comment": extra_str("comment"),
        "Created": cfg.created.clone().unwrap_or_default(),
        "DockerVersion": extra_str("docker_version"),
        "Author": cfg.author.clone().unwrap_or_default(),
        "Config": serde_json::to_value(cfg.config.clone().unwrap_or_default()).unwrap_or(Value::Null),
        "Architecture": cfg.architecture,
        "Os": cfg.os,
        "Size": img.size(),
        "RootFS": {
            "Type": cfg.rootfs.kind,
            "Layers": cfg.rootfs.diff_ids.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
        },
        "Metadata": { "LastTagTime": "0001-01-01T00:00:00Z" },
    });
    if let Some(v) = cfg.variant.as_deref().filter(|v| !v.is_empty()) {
        doc["Variant"] = json!(v);
    }
    doc
}

pub fn inspect(root: Option<PathBuf>, args: InspectArgs) -> Result<()> {
    let store = open_store(root)?;
    let mut docs = Vec::new();
    let mut missing = Vec::new();
    for input in &args.images {
        match find_image(&store, input) {
            Ok((_, entry)) => docs.push(inspect_doc(&entry)),
            Err(transport::TransportError::NotFound { .. }) => missing.push(input.clone()),
            Err(e) => return Err(e.into()),
        }
    }
    match &args.format {
        Some(fmt) => {
            for d in &docs {
                println!("{}", render_template(fmt, d).map_err(anyhow::Error::msg)?);
            }
        }
        None => println!("{}", serde_json::to_string_pretty(&docs)?),
    }
    if !missing.is_empty() {
        bail!("no such image: {}", missing.join(", "));
    }
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct HistoryArgs {
    pub image: String,
    /// Do not truncate output.
    #[arg(long)]
    pub no_trunc: bool,
    /// Only show image IDs.
    #[arg(short, long)]
    pub quiet: bool,
    /// Print sizes and dates in human-readable form.
    #[arg(
        short = 'H',
        long,
        default_value_t = true,
        num_args = 0..=1,
        default_missing_value = "true",
        require_equals = true,
        action = clap::ArgAction::Set
    )]
    pub human: bool,
    /// `json` (one object per line) or a Go template.
    #[arg(long)]
    pub format: Option<String>,
}

pub fn history(root: Option<PathBuf>, args: HistoryArgs) -> Result<()> {
    let store = open_store(root)?;
    let (_, entry) = find_image(&store, &args.image)?;
    let img = &entry.image;
    // Each non-empty history entry owns the next layer, in order.
    let mut layers = img.manifest.layers.iter();
    let mut rows: Vec<Value> = Vec::new();
    for h in &img.config.history {
        let size = if h.empty_layer {
            0
        } else {
            layers.next().map_or(0, |l| l.size)
        };
        rows.push(json!({
            "Comment": h.comment.clone().unwrap_or_default(),
            "CreatedAt": h.created.clone().unwrap_or_default(),
            "CreatedBy": h.created_by.clone().unwrap_or_default(),
            "CreatedSince": since(h.created.as_deref()),
            "ID": "<missing>",
            "Size": if args.human { human_size(size) } else { size.to_string() },
        }));
    }
    if rows.is_empty() {
        // No history recorded: one anonymous row per layer, as docker shows.
        for l in &img.manifest.layers {
            rows.push(json!({
                "Comment": "", "CreatedAt": "", "CreatedBy": "", "CreatedSince": "N/A",
                "ID": "<missing>",
                "Size": if args.human { human_size(l.size) } else { l.size.to_string() },
            }));
        }
    }
    rows.reverse();
    if let Some(top) = rows.first_mut() {
        top["ID"] = json!(short_id(img.id().as_str(), args.no_trunc));
    }
    let s = |v: &Value, k: &str| v[k].as_str().unwrap_or("").to_string();
    if args.quiet {
        for r in &rows {
            println!("{}", s(r, "ID"));
        }
        return Ok(());
    }
    if let Some(fmt) = &args.format {
        for r in &rows {
            if fmt == "json" {
                println!("{}", serde_json::to_string(r)?);
            } else {
                println!("{}", render_template(fmt, r).map_err(anyhow::Error::msg)?);
            }
        }
        return Ok(());
    }
    let mut table = vec![["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"]
        .map(String::from)
        .to_vec()];
    for r in &rows {
        let mut by = s(r, "CreatedBy").replace('\t', " ");
        if !args.no_trunc && by.chars().count() > 45 {
            by = by.chars().take(44).collect::<String>() + "…";
        }
        let created = if args.human {
            s(r, "CreatedSince")
        } else {
            s(r, "CreatedAt")
        };
        table.push(vec![s(r, "ID"), created, by, s(r, "Size"), s(r, "Comment")]);
    }
    print_table(&table);
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct PruneArgs {
    /// Also remove unpacked layers that images still use (re-created on demand).
    #[arg(short, long)]
    pub all: bool,
    /// Do not ask for confirmation.
    #[arg(short, long)]
    pub force: bool,
}

pub fn prune(root: Option<PathBuf>, args: PruneArgs) -> Result<()> {
    let store = open_store(root)?;
    if !args.force {
        eprint!(
            "WARNING! This will remove all dangling images and unreferenced data.\nAre you sure you want to continue? [y/N] "
        );
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            return Ok(());
        }
    }
    let report = store.gc(&GcOptions {
        all_unpacked: args.all,
        ..GcOptions::default()
    })?;
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
