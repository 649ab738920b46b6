//! The command line: clap structures, validation into options, dispatch.
//! The only place that uses `anyhow`.

mod archive;
mod build;
mod build_run;
mod debug;
mod images;
mod inspect;
mod output;
mod remote;
mod run_debug;
mod run_image;
mod snapshot_debug;
mod step_debug;
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

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build an image from a Dockerfile (use --dry-run to print the plan).
    #[command(alias = "bud")]
    Build(Box<build::BuildArgs>),
    /// Run an image's command in the rootless sandbox (host network; nothing is kept).
    Run(run_image::RunArgs),
    /// List images in the local store.
    Images(images::ImagesArgs),
    /// Pull an image from a registry (or a local transport) into the store.
    Pull(remote::PullArgs),
    /// Push an image from the store to a registry (or a local transport).
    Push(remote::PushArgs),
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
    match cli.command {
        Command::Build(args) => build::run(cli.root, *args),
        Command::Debug(args) => debug::run(cli.root, args),
        Command::System(args) => system::run(cli.root, args),
        Command::Run(args) => run_image::run(cli.root, args),
        Command::Images(args) => images::images(cli.root, args),
        Command::Tag(args) => images::tag(cli.root, args),
        Command::Rmi(args) => images::rmi(cli.root, args),
        Command::Inspect(args) => inspect::inspect(cli.root, args),
        Command::History(args) => inspect::history(cli.root, args),
        Command::Prune(args) => images::prune(cli.root, args),
        Command::Save(args) => archive::save(cli.root, args),
        Command::Load(args) => archive::load(cli.root, args),
        Command::Import(args) => archive::import(cli.root, args),
        Command::Pull(args) => remote::pull(cli.root, args),
        Command::Push(args) => remote::push(cli.root, args),
        Command::Login(args) => remote::login(args),
        Command::Logout(args) => remote::logout(args),
    }
}
