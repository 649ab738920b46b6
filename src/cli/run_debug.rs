//! `kiln debug run`: one command in the sandbox, for tests and by hand.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use kiln::exec::{
    Executor, IdMapChoice, Isolation, Mount, MountKind, Network, ProcessSpec, RootFs, Sandbox,
    Stdin,
};

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The root filesystem directory.
    #[arg(long, value_name = "DIR", required_unless_present = "overlay_target")]
    rootfs: Option<PathBuf>,
    /// Overlay lower directory, top-most first (repeatable); needs the other --overlay-* flags.
    #[arg(
        long = "overlay-lower",
        value_name = "DIR",
        requires = "overlay_target"
    )]
    overlay_lower: Vec<PathBuf>,
    #[arg(long, value_name = "DIR", requires = "overlay_target")]
    overlay_upper: Option<PathBuf>,
    #[arg(long, value_name = "DIR", requires = "overlay_target")]
    overlay_work: Option<PathBuf>,
    /// Where to mount the overlay (an empty directory).
    #[arg(long, value_name = "DIR", conflicts_with = "rootfs")]
    overlay_target: Option<PathBuf>,
    /// USER: name, uid, name:group or uid:gid.
    #[arg(long, default_value = "")]
    user: String,
    #[arg(long, default_value = "/")]
    workdir: String,
    /// An environment variable (repeatable).
    #[arg(long = "env", value_name = "K=V")]
    env: Vec<String>,
    /// host or none.
    #[arg(long, default_value = "host")]
    network: String,
    #[arg(long, default_value = "kiln")]
    hostname: String,
    /// auto or single.
    #[arg(long, default_value = "auto")]
    idmap: String,
    /// auto, rootless or chroot.
    #[arg(long, default_value = "auto")]
    isolation: String,
    /// Make chown succeed without effect: auto (with a single-id map), on, off.
    #[arg(long, default_value = "auto")]
    emulate_chown: String,
    /// Bind a host path into the sandbox (repeatable): SRC:DST or SRC:DST:ro.
    #[arg(long = "bind", value_name = "SRC:DST[:ro]")]
    binds: Vec<String>,
    /// Mount a fresh tmpfs at DST (repeatable).
    #[arg(long = "tmpfs", value_name = "DST")]
    tmpfs: Vec<String>,
    /// Print the mount points the sandbox created (`created PATH`) on stderr.
    #[arg(long)]
    print_created: bool,
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

/// Runs the command and exits with its status (128 + signal when killed).
pub fn run(args: RunArgs) -> Result<()> {
    let rootfs = match (args.rootfs, args.overlay_target) {
        (Some(dir), None) => RootFs::Dir(dir),
        (None, Some(target)) => RootFs::Overlay {
            lower: args.overlay_lower,
            upper: args
                .overlay_upper
                .context("--overlay-upper is required with --overlay-target")?,
            work: args
                .overlay_work
                .context("--overlay-work is required with --overlay-target")?,
            target,
        },
        _ => bail!("give either --rootfs or --overlay-target"),
    };
    let mut spec = ProcessSpec::new(args.command, "/");
    spec.rootfs = rootfs;
    spec.user = args.user;
    spec.cwd = args.workdir;
    spec.env = args.env;
    spec.hostname = args.hostname;
    spec.network = match args.network.as_str() {
        "host" => Network::Host,
        "none" => Network::None,
        other => bail!("unknown network {other:?} (host, none)"),
    };
    spec.idmap = match args.idmap.as_str() {
        "auto" => IdMapChoice::Auto,
        "single" => IdMapChoice::Single,
        other => bail!("unknown id map {other:?} (auto, single)"),
    };
    spec.emulate_chown = match args.emulate_chown.as_str() {
        "auto" => None,
        "on" => Some(true),
        "off" => Some(false),
        other => bail!("unknown --emulate-chown {other:?} (auto, on, off)"),
    };
    for bind in &args.binds {
        let (source, destination, readonly) = match bind.split(':').collect::<Vec<_>>()[..] {
            [src, dst] => (src, dst, false),
            [src, dst, "ro"] => (src, dst, true),
            _ => bail!("invalid --bind {bind:?}: want SRC:DST or SRC:DST:ro"),
        };
        spec.mounts.push(Mount::new(
            destination.to_owned(),
            MountKind::Bind {
                source: PathBuf::from(source),
                readonly,
            },
        ));
    }
    for destination in args.tmpfs {
        spec.mounts.push(Mount::new(destination, MountKind::Tmpfs));
    }
    let isolation: Isolation = args.isolation.parse().map_err(anyhow::Error::msg)?;
    let outcome = Sandbox::new(isolation)
        .stdin(Stdin::Inherit)
        .run(&spec)
        .context("run in sandbox")?;
    if args.print_created {
        for path in &outcome.created {
            eprintln!("created {path}");
        }
    }
    std::process::exit(outcome.status.code())
}
