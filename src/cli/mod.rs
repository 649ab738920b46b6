//! The command line: clap structures, validation into options, dispatch.
//! The only place that uses `anyhow`.

mod archive;
mod build;
mod debug;
mod images;
mod inspect;
mod output;
mod run_debug;
mod system;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "kiln",
    version,
    about = "Build OCI images from Dockerfiles without a daemon and without root",
    propagate_version = true
)]
pub struct Cli {
    /// Store root (default: $XDG_DATA_HOME/kiln, or /var/lib/kiln as root).
    #[arg(long, global = true, env = "KILN_ROOT", value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Log filter for diagnostics on stderr (error, warn, info, debug, trace).
    #[arg(
        long,
        global = true,
        env = "KILN_LOG",
        default_value = "warn",
        value_name = "LEVEL"
    )]
    pub log_level: String,
    #[command(subcommand)]
    pub command: Command,
}

/// Arguments of a command that does not exist yet; accepted so the error is ours, not clap's.
#[derive(Debug, clap::Args)]
pub struct Pending {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    pub args: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build an image from a Dockerfile (use --dry-run to print the plan).
    #[command(alias = "bud")]
    Build(build::BuildArgs),
    /// List images in the local store.
    Images(images::ImagesArgs),
    /// Pull an image from a registry (not implemented yet).
    Pull(Pending),
    /// Push an image to a registry (not implemented yet).
    Push(Pending),
    /// Add a name to an image.
    Tag(images::TagArgs),
    /// Remove image names, and images left without one.
    Rmi(images::RmiArgs),
    /// Show images as JSON, like docker image inspect.
    Inspect(inspect::InspectArgs),
    /// Show an image's history.
    History(inspect::HistoryArgs),
    /// Write images to a docker or OCI archive.
    Save(archive::SaveArgs),
    /// Read images from a docker or OCI archive.
    Load(archive::LoadArgs),
    /// Make an image from a root filesystem tarball.
    Import(archive::ImportArgs),
    /// Remove unreferenced data from the store.
    Prune(images::PruneArgs),
    /// Store registry credentials (not implemented yet).
    Login(Pending),
    /// Remove registry credentials (not implemented yet).
    Logout(Pending),
    /// Look after the store (`kiln system check`).
    System(system::SystemArgs),
    /// Frontend diagnostics: AST dumps, word expansion, ignore matching.
    #[command(hide = true)]
    Debug(debug::DebugArgs),
}

impl Command {
    fn pending_name(&self) -> Option<&'static str> {
        Some(match self {
            Command::Pull(_) => "pull",
            Command::Push(_) => "push",
            Command::Login(_) => "login",
            Command::Logout(_) => "logout",
            Command::Build(_)
            | Command::Debug(_)
            | Command::System(_)
            | Command::Images(_)
            | Command::Tag(_)
            | Command::Rmi(_)
            | Command::Inspect(_)
            | Command::History(_)
            | Command::Save(_)
            | Command::Load(_)
            | Command::Import(_)
            | Command::Prune(_) => return None,
        })
    }
}

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    // A second init (tests calling run twice) is harmless; ignore its error.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    init_logging(&cli.log_level);
    if let Some(name) = cli.command.pending_name() {
        anyhow::bail!("kiln {name}: not implemented yet");
    }
    match cli.command {
        Command::Build(args) => build::run(args),
        Command::Debug(args) => debug::run(args),
        Command::System(args) => system::run(cli.root, args),
        Command::Images(args) => images::images(cli.root, args),
        Command::Tag(args) => images::tag(cli.root, args),
        Command::Rmi(args) => images::rmi(cli.root, args),
        Command::Inspect(args) => inspect::inspect(cli.root, args),
        Command::History(args) => inspect::history(cli.root, args),
        Command::Prune(args) => images::prune(cli.root, args),
        Command::Save(args) => archive::save(cli.root, args),
        Command::Load(args) => archive::load(cli.root, args),
        Command::Import(args) => archive::import(cli.root, args),
        _ => Ok(()),
    }
}
