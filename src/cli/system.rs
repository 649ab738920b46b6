//! `kiln system`: looking after the store itself.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Subcommand;

use kiln::store::Store;

#[derive(Debug, clap::Args)]
pub struct SystemArgs {
    #[command(subcommand)]
    pub what: SystemCommand,
}

#[derive(Debug, Subcommand)]
pub enum SystemCommand {
    /// Re-hash every blob and check that every name points at a stored blob (read-only).
    Check,
}

/// The store root: `--root`/`KILN_ROOT`, else the per-user or system default.
pub fn store_root(root: Option<PathBuf>) -> PathBuf {
    root.unwrap_or_else(Store::default_root)
}

pub fn run(root: Option<PathBuf>, args: SystemArgs) -> Result<()> {
    match args.what {
        SystemCommand::Check => {
            let root = store_root(root);
            let store = Store::open(&root)
                .with_context(|| format!("open the store at {}", root.display()))?;
            let report = store.check()?;
            let names = store.names()?.len();
            println!(
                "store {}: {} blob(s) checked, {} name(s), {} build cache record(s)",
                root.display(),
                report.blobs_checked,
                names,
                report.cache_records
            );
            for (want, got) in &report.corrupt_blobs {
                println!("corrupt blob {want}: content hashes to {got}");
            }
            for (name, digest) in &report.missing_blobs {
                println!("name {name:?} points at missing blob {digest}");
            }
            for (key, digest) in &report.cache_missing_blobs {
                println!("build cache record {key} points at missing blob {digest}");
            }
            for path in &report.corrupt_cache_records {
                println!(
                    "build cache record {} (or its manifest) cannot be read",
                    path.display()
                );
            }
            if report.remote_blobs > 0 {
                println!(
                    "{} blob(s) known by registry location only (fetched when needed)",
                    report.remote_blobs
                );
            }
            for path in &report.corrupt_remote_records {
                println!("remote blob record {} cannot be read", path.display());
            }
            for path in &report.stray_files {
                println!("stray file {}", path.display());
            }
            if report.stale_tmp_files > 0 {
                println!(
                    "{} leftover temporary file(s) (from interrupted or running writes)",
                    report.stale_tmp_files
                );
            }
            if !report.is_ok() {
                bail!("store {} has problems (listed above)", root.display());
            }
            println!("ok");
            Ok(())
        }
    }
}
