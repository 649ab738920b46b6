//! `kiln inspect` and `kiln history`: one image's document and layers, in
//! docker's formats.

use std::path::PathBuf;

use anyhow::{bail, Result};
use serde_json::{json, Value};

use kiln::image::display::{human_size, render_template, since};
use kiln::transport::{self, familiar_name, find_image, ImageEntry};

use super::images::{open_store, print_table, repo_tag, short_id};

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
