//! `kiln debug run-step`: one RUN step over a stored image, end to end
//! (unpack, snapshot, sandbox, change list, layer, optional commit), for
//! tests and benchmarks.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use serde_json::json;

use kiln::build::{run_step, StepInput};
use kiln::exec::{IdMap, IdMapChoice, Isolation, Network};
use kiln::snapshot::SnapshotterKind;
use kiln::store::Store;

#[derive(Debug, clap::Args)]
pub struct RunStepArgs {
    /// The image: a store name or image ID.
    image: String,
    /// auto, overlay, fuse-overlayfs or walk.
    #[arg(long, default_value = "auto")]
    snapshotter: String,
    /// auto, rootless or chroot.
    #[arg(long, default_value = "auto")]
    isolation: String,
    /// auto or single.
    #[arg(long, default_value = "auto")]
    idmap: String,
    /// USER: name, uid, name:group or uid:gid (default: the image's).
    #[arg(long, default_value = "")]
    user: String,
    /// Working directory (default: the image's).
    #[arg(long, default_value = "")]
    workdir: String,
    /// An environment variable (repeatable), over the image's Env.
    #[arg(long = "env", value_name = "K=V")]
    env: Vec<String>,
    /// host or none.
    #[arg(long, default_value = "host")]
    network: String,
    /// Name the committed image.
    #[arg(long, value_name = "NAME")]
    tag: Option<String>,
    /// Clamp times to this (default: $SOURCE_DATE_EPOCH when set).
    #[arg(long, env = "SOURCE_DATE_EPOCH", value_name = "SECONDS")]
    source_date_epoch: Option<i64>,
    /// text (one line) or json.
    #[arg(long, default_value = "text")]
    format: String,
    /// One argument: a shell command (`/bin/sh -c CMD`); more: an exec form argv.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

/// Runs the step; exits with the command's status when it fails.
pub fn run(root: Option<PathBuf>, args: RunStepArgs) -> Result<()> {
    let root = root.unwrap_or_else(Store::default_root);
    let store = Store::open(&root).with_context(|| format!("open store {}", root.display()))?;
    let argv = match args.command.as_slice() {
        [one] => vec!["/bin/sh".into(), "-c".into(), one.clone()],
        many => many.to_vec(),
    };
    super::remote::fetch_remote_layers(&store, &args.image, &Default::default(), true)?;
    let mut input = StepInput::new(args.image, argv);
    input.snapshotter = match args.snapshotter.as_str() {
        "auto" => None,
        other => Some(
            other
                .parse::<SnapshotterKind>()
                .map_err(anyhow::Error::msg)?,
        ),
    };
    input.isolation = args
        .isolation
        .parse::<Isolation>()
        .map_err(anyhow::Error::msg)?;
    input.idmap = match args.idmap.as_str() {
        "auto" => IdMapChoice::Auto,
        "single" => IdMapChoice::Single,
        other => bail!("unknown id map {other:?} (auto, single)"),
    };
    input.network = match args.network.as_str() {
        "host" => Network::Host,
        "none" => Network::None,
        other => bail!("unknown network {other:?} (host, none)"),
    };
    input.user = args.user;
    input.cwd = args.workdir;
    input.env = args.env;
    input.tag = args.tag;
    input.source_date_epoch = args.source_date_epoch;
    let json_out = match args.format.as_str() {
        "json" => true,
        "text" => false,
        other => bail!("unknown format {other:?} (text, json)"),
    };

    let out = run_step(&store, &input)?;
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
    let idmap = match &out.idmap {
        IdMap::Subordinate { .. } => "subordinate",
        IdMap::Single => "single",
        IdMap::Identity => "identity",
        IdMap::None => "none",
    };
    let layer = out.layer.as_ref();
    if json_out {
        let doc = json!({
            "status": out.status.code(),
            "digest": layer.map(|l| l.digest.to_string()),
            "diff_id": layer.map(|l| l.diff_id.to_string()),
            "size": layer.map(|l| l.size),
            "image": out.image.as_ref().map(|d| d.to_string()),
            "changed_paths": out.changed_paths,
            "snapshotter": out.snapshotter.to_string(),
            "snapshotter_reason": out.snapshotter_reason,
            "isolation": out.isolation.to_string(),
            "idmap": idmap,
            "timings_ms": {
                "prepare": ms(out.timings.prepare),
                "run": ms(out.timings.run),
                "changes": ms(out.timings.changes),
                "write": ms(out.timings.write),
                "total": ms(out.timings.total),
            },
        });
        println!("{doc}");
    } else if let Some(l) = layer {
        println!(
            "{} {} {} {}",
            l.digest,
            l.diff_id,
            l.size,
            out.image
                .as_ref()
                .map(|d| d.to_string())
                .unwrap_or_default()
        );
    }
    if !out.status.success() {
        eprintln!(
            "error: step {:?} failed: exit code {}",
            input.argv,
            out.status.code()
        );
        std::process::exit(out.status.code().clamp(1, 255));
    }
    Ok(())
}
