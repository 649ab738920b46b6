//! `kiln debug snapshot`: prepare a snapshot over lower dirs, run one
//! command in it, print what changed (JSON). For tests and by hand.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde_json::json;

use kiln::exec::{Executor, IdMapChoice, Isolation, ProcessSpec, Sandbox, Stdin};
use kiln::snapshot::{self, ChangeKind, SnapshotterKind};

#[derive(Debug, clap::Args)]
pub struct SnapshotArgs {
    /// auto, overlay, fuse-overlayfs or walk.
    #[arg(long, default_value = "auto")]
    snapshotter: String,
    /// A lower dir, top-most first (repeatable), as `kiln debug unpack --mode overlay` makes them.
    #[arg(long = "lower", value_name = "DIR")]
    lowers: Vec<PathBuf>,
    /// An empty directory for the snapshot (created when missing).
    #[arg(long, value_name = "DIR", required_unless_present = "probe")]
    work: Option<PathBuf>,
    /// auto, rootless or chroot.
    #[arg(long, default_value = "auto")]
    isolation: String,
    /// auto or single.
    #[arg(long, default_value = "auto")]
    idmap: String,
    /// Keep the work directory (default: removed after the report).
    #[arg(long)]
    keep: bool,
    /// Only say which snapshotter would be chosen and why.
    #[arg(long)]
    probe: bool,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

pub fn run(args: SnapshotArgs) -> Result<()> {
    let requested = match args.snapshotter.as_str() {
        "auto" => None,
        other => Some(
            other
                .parse::<SnapshotterKind>()
                .map_err(anyhow::Error::msg)?,
        ),
    };
    let isolation: Isolation = args.isolation.parse().map_err(anyhow::Error::msg)?;
    let t0 = Instant::now();
    let (kind, why) = snapshot::choose_for(requested, isolation)?;
    let choose_ms = t0.elapsed().as_secs_f64() * 1e3;
    if args.probe {
        println!("{}", json!({"snapshotter": kind.to_string(), "why": why}));
        return Ok(());
    }
    if args.command.is_empty() {
        bail!("give a command after --");
    }
    let work = args.work.context("--work is required")?;
    std::fs::create_dir_all(&work).with_context(|| format!("create {}", work.display()))?;
    let t1 = Instant::now();
    let snap = snapshot::snapshotter(kind).prepare(&args.lowers, &work)?;
    let prepare_ms = t1.elapsed().as_secs_f64() * 1e3;

    let mut spec = ProcessSpec::new(args.command, "/");
    spec.rootfs = snap.rootfs();
    spec.idmap = match args.idmap.as_str() {
        "auto" => IdMapChoice::Auto,
        "single" => IdMapChoice::Single,
        other => bail!("unknown id map {other:?} (auto, single)"),
    };
    let t2 = Instant::now();
    let outcome = Sandbox::new(isolation)
        .stdin(Stdin::Null)
        .run(&spec)
        .context("run in sandbox")?;
    let run_ms = t2.elapsed().as_secs_f64() * 1e3;

    let t3 = Instant::now();
    let list = snap.changes(&outcome.created)?;
    let changes_ms = t3.elapsed().as_secs_f64() * 1e3;
    let changes: Vec<_> = list
        .changes
        .iter()
        .map(|c| {
            let kind = match c.kind {
                ChangeKind::Upsert => "upsert",
                ChangeKind::OpaqueDir => "opaque",
                ChangeKind::Delete => "delete",
            };
            json!({"path": c.path, "kind": kind})
        })
        .collect();
    println!(
        "{}",
        json!({
            "snapshotter": kind.to_string(),
            "why": why,
            "status": outcome.status.code(),
            "created": outcome.created,
            "source": list.source,
            "changes": changes,
            "timings_ms": {"choose": choose_ms, "prepare": prepare_ms, "run": run_ms, "changes": changes_ms},
        })
    );
    if !args.keep {
        snapshot::remove_work(&work)?;
    }
    Ok(())
}
