//! The command line: clap structures, validation into options, dispatch.
//! The only place that uses `anyhow`.

mod build;
mod debug;
mod output;
mod remote;
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
    /// List images in the local store (not implemented yet).
    Images(Pending),
    /// Pull an image from a registry into the store.
    Pull(remote::PullArgs),
    /// Push an image from the store to a registry.
    Push(remote::PushArgs),
    /// Add a name to an image (not implemented yet).
    Tag(Pending),
    /// Remove images (not implemented yet).
    Rmi(Pending),
    /// Show an image's manifest and config (not implemented yet).
    Inspect(Pending),
    /// Show an image's history (not implemented yet).
    History(Pending),
    /// Write images to an archive (not implemented yet).
    Save(Pending),
    /// Read images from an archive (not implemented yet).
    Load(Pending),
    /// Remove unused data from the store (not implemented yet).
    Prune(Pending),
    /// Check and store registry credentials.
    Login(remote::LoginArgs),
    /// Remove registry credentials.
    Logout(remote::LogoutArgs),
    /// Look after the store (`kiln system check`).
    System(system::SystemArgs),
    /// Frontend diagnostics: AST dumps, word expansion, ignore matching.
    #[command(hide = true)]
    Debug(debug::DebugArgs),
}

impl Command {
    fn pending_name(&self) -> Option<&'static str> {
        Some(match self {
            Command::Images(_) => "images",
            Command::Tag(_) => "tag",
            Command::Rmi(_) => "rmi",
            Command::Inspect(_) => "inspect",
            Command::History(_) => "history",
            Command::Save(_) => "save",
            Command::Load(_) => "load",
            Command::Prune(_) => "prune",
            Command::Build(_)
            | Command::Debug(_)
            | Command::System(_)
            | Command::Pull(_)
            | Command::Push(_)
            | Command::Login(_)
            | Command::Logout(_) => return None,
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
        Command::Pull(args) => remote::pull(cli.root, args),
        Command::Push(args) => remote::push(cli.root, args),
        Command::Login(args) => remote::login(args),
        Command::Logout(args) => remote::logout(args),
        _ => Ok(()),
    }
}
