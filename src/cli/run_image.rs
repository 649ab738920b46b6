//! `kiln run [--rm] IMAGE [CMD…]`: runs an image's entrypoint and command
//! (or CMD given here) in the rootless sandbox over a throwaway snapshot,
//! sharing the host network, to smoke-test a build without docker or
//! podman. Not a container manager: nothing is kept, nothing detaches, no
//! ports are mapped (the host network is shared).

use std::path::PathBuf;

use anyhow::{Context, Result};

use kiln::build::step::{run_layer, StepInput};
use kiln::exec::Network;
use kiln::store::{LayerSource, Store};
use kiln::transport;

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Accepted for docker compatibility: nothing is ever kept.
    #[arg(long)]
    pub rm: bool,
    /// Accepted for docker compatibility (stdin is always passed through).
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Accepted for docker compatibility (no terminal is allocated).
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Set an environment variable (repeatable).
    #[arg(short = 'e', long = "env", value_name = "K=V")]
    pub env: Vec<String>,
    /// Run as this user (name, uid, name:group or uid:gid).
    #[arg(short = 'u', long, value_name = "USER")]
    pub user: Option<String>,
    /// Working directory inside the image.
    #[arg(short = 'w', long, value_name = "DIR")]
    pub workdir: Option<String>,
    /// Replace the image's ENTRYPOINT (docker: a single executable).
    #[arg(long, value_name = "CMD")]
    pub entrypoint: Option<String>,
    /// host (default) or none.
    #[arg(long, default_value = "host", value_name = "MODE")]
    pub network: String,
    /// Isolation: auto, rootless or chroot.
    #[arg(long, default_value = "auto", value_name = "TIER")]
    pub isolation: String,
    /// The image (name or ID).
    pub image: String,
    /// Command (replaces the image's CMD).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

pub fn run(root: Option<PathBuf>, args: RunArgs) -> Result<()> {
    let root = super::system::store_root(root);
    let store =
        Store::open(&root).with_context(|| format!("open the store at {}", root.display()))?;
    let (_, entry) = transport::find_image(&store, &args.image)
        .with_context(|| format!("image {:?}", args.image))?;
    let img = entry.image;
    super::remote::fetch_remote_layers(&store, &args.image, &Default::default(), true)?;
    let cfg = img.config.config.clone().unwrap_or_default();
    let entrypoint: Vec<String> = match &args.entrypoint {
        Some(e) if e.is_empty() => Vec::new(),
        Some(e) => vec![e.clone()],
        None => cfg.entrypoint.clone().flatten().unwrap_or_default(),
    };
    let cmd: Vec<String> = if !args.command.is_empty() {
        args.command.clone()
    } else if args.entrypoint.is_some() {
        Vec::new()
    } else {
        cfg.cmd.clone().flatten().unwrap_or_default()
    };
    let argv: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if argv.is_empty() {
        anyhow::bail!(
            "image {:?} has no ENTRYPOINT or CMD; give a command",
            args.image
        );
    }
    let layers: Vec<LayerSource> = img
        .manifest
        .layers
        .iter()
        .zip(&img.config.rootfs.diff_ids)
        .map(|(l, d)| LayerSource {
            blob: l.digest.clone(),
            diff_id: d.clone(),
        })
        .collect();
    let mut input = StepInput::new(args.image.clone(), argv);
    input.env = args.env.clone();
    input.user = args.user.clone().unwrap_or_default();
    input.cwd = args.workdir.clone().unwrap_or_default();
    input.network = match args.network.as_str() {
        "host" | "default" => Network::Host,
        "none" => Network::None,
        other => anyhow::bail!("invalid --network {other:?}: host or none"),
    };
    input.isolation = args.isolation.parse().map_err(anyhow::Error::msg)?;
    input.discard = true;
    let out = run_layer(&store, &layers, &img.config, &input)
        .with_context(|| format!("run {}", args.image))?;
    let code = out.status.code();
    if code != 0 {
        std::process::exit(code);
    }
    Ok(())
}
