//! `kiln pull`, `kiln push`, `kiln login`, `kiln logout`: the registry commands.

use std::io::{IsTerminal, Read};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::ArgAction;

use kiln::plan::platform::Platform;
use kiln::registry::credentials::{AuthConfig, AuthEnv, Credential};
use kiln::registry::reference::Reference;
use kiln::registry::{self, Client, ClientOptions, Progress, PullOptions, PushOptions};
use kiln::store::Store;
use kiln::transport;

use super::system::store_root;

/// Connection flags shared by every registry command (podman's spelling).
#[derive(Debug, clap::Args)]
pub struct TlsArgs {
    /// Require HTTPS with a verified certificate; `--tls-verify=false` allows
    /// unverified HTTPS and plain HTTP (loopback registries may use plain HTTP anyway).
    #[arg(long, value_name = "BOOL", default_value_t = true, action = ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true")]
    pub tls_verify: bool,
    /// Read CA certificates (*.crt) and client certificates (*.cert/*.key) from DIR
    /// instead of /etc/containers/certs.d/HOST and /etc/docker/certs.d/HOST.
    #[arg(long, value_name = "DIR")]
    pub cert_dir: Option<PathBuf>,
}

impl TlsArgs {
    pub(crate) fn options(&self) -> ClientOptions {
        ClientOptions {
            tls_verify: self.tls_verify,
            cert_dir: self.cert_dir.clone(),
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct PullArgs {
    /// Image to pull: NAME[:TAG|@DIGEST], optionally prefixed with docker://.
    pub reference: String,
    /// Platform to choose from a multi-platform image (default: this machine's).
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub platform: Option<String>,
    /// No progress output.
    #[arg(short, long)]
    pub quiet: bool,
    #[command(flatten)]
    pub tls: TlsArgs,
}

#[derive(Debug, clap::Args)]
pub struct PushArgs {
    /// Image in the local store to push.
    pub source: String,
    /// Where to push it (default: the image's own name), optionally docker://DEST.
    pub destination: Option<String>,
    /// Also tag the pushed manifest as TAG in the destination repository (repeatable).
    #[arg(short = 't', long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// No progress output.
    #[arg(short, long)]
    pub quiet: bool,
    #[command(flatten)]
    pub tls: TlsArgs,
}

#[derive(Debug, clap::Args)]
pub struct LoginArgs {
    /// Registry to log in to (default: docker.io).
    pub registry: Option<String>,
    #[arg(short, long)]
    pub username: Option<String>,
    /// Password (prefer --password-stdin: arguments are visible to other users).
    #[arg(short, long, conflicts_with = "password_stdin")]
    pub password: Option<String>,
    /// Read the password from standard input.
    #[arg(long)]
    pub password_stdin: bool,
    #[command(flatten)]
    pub tls: TlsArgs,
}

#[derive(Debug, clap::Args)]
pub struct LogoutArgs {
    /// Registry to log out of (default: docker.io).
    pub registry: Option<String>,
}

/// The registry reference in `arg` (`docker://REF` or a plain name). Local
/// transports are handled by the callers before this point.
pub fn docker_reference(arg: &str) -> Result<Reference> {
    let text = arg.strip_prefix("docker://").unwrap_or(arg);
    Reference::parse(text).with_context(|| format!("parse image reference {arg:?}"))
}

fn credential_for(registry: &str) -> Result<Option<Credential>> {
    let env = AuthEnv::from_process();
    let config = AuthConfig::open(&env)?;
    config
        .get(registry)
        .with_context(|| format!("look up credentials for {registry}"))
}

fn open_store(root: Option<PathBuf>) -> Result<Store> {
    let root = store_root(root);
    Store::open(&root).with_context(|| format!("open the store at {}", root.display()))
}

pub fn pull(root: Option<PathBuf>, args: PullArgs) -> Result<()> {
    if transport::is_local(&args.reference) {
        let store = open_store(root)?;
        let names = transport::import(&store, &args.reference, None)
            .with_context(|| format!("pull {}", args.reference))?;
        for n in names {
            println!("{n}");
        }
        return Ok(());
    }
    let reference = docker_reference(&args.reference)?;
    let platform = match &args.platform {
        Some(p) => Platform::parse(p)?,
        None => Platform::host(),
    };
    let store = open_store(root)?;
    let credential = credential_for(reference.registry())?;
    let opts = PullOptions {
        platform,
        client: args.tls.options(),
        ..PullOptions::default()
    };
    let progress = Progress::new(args.quiet);
    let pulled = registry::pull(&store, &reference, credential, &opts, &progress)
        .with_context(|| format!("pull {reference}"))?;
    if !args.quiet {
        println!("Digest: {}", pulled.manifest.digest);
        if pulled.downloaded == 0 {
            println!("Status: Image is up to date for {}", pulled.name);
        } else {
            println!("Status: Downloaded newer image for {}", pulled.name);
        }
    }
    println!("{}", pulled.name);
    Ok(())
}

pub fn push(root: Option<PathBuf>, args: PushArgs) -> Result<()> {
    let store = open_store(root)?;
    if transport::is_local(&args.source) {
        bail!(
            "push takes an image in the store, not {:?}; copy it in first with `kiln pull {}`",
            args.source,
            args.source
        );
    }
    if let Some(dest) = args
        .destination
        .as_deref()
        .filter(|d| transport::is_local(d))
    {
        if !args.tags.is_empty() {
            bail!("-t/--tag applies to registry destinations, not {dest:?}");
        }
        fetch_remote_layers(&store, &args.source, &args.tls.options(), args.quiet)?;
        let digest = transport::export(&store, &args.source, dest)
            .with_context(|| format!("push {} to {dest}", args.source))?;
        if !args.quiet {
            println!("{dest}: digest: {digest}");
        }
        return Ok(());
    }
    // The store name as given, else its normalized form (`busybox` →
    // `docker.io/library/busybox:latest`), else an image ID (prefix).
    let normalized = docker_reference(&args.source).map(|r| r.to_string());
    let by_name = match store.resolve(&args.source)? {
        Some(d) => Some((args.source.clone(), d)),
        None => match &normalized {
            Ok(n) => store.resolve(n)?.map(|d| (n.clone(), d)),
            Err(_) => None,
        },
    };
    let (name, desc) = match by_name {
        Some(found) => found,
        None => match transport::find_image(&store, &args.source) {
            Ok((_, entry)) => {
                let name = entry.names.first().cloned().unwrap_or_default();
                (name, entry.image.descriptor)
            }
            Err(_) => bail!(
                "image {:?} is not in the store at {} (pull or build it first)",
                args.source,
                store.root().display()
            ),
        },
    };
    if name.is_empty() && args.destination.is_none() {
        bail!("image {:?} has no name; give a destination", args.source);
    }
    let dest = match &args.destination {
        Some(d) => docker_reference(d)?,
        None => docker_reference(&name)?,
    };
    let credential = credential_for(dest.registry())?;
    let opts = PushOptions {
        client: args.tls.options(),
        extra_tags: args.tags.clone(),
        ..PushOptions::default()
    };
    let progress = Progress::new(args.quiet);
    let pushed = registry::push(&store, &desc, &dest, credential, &opts, &progress)
        .with_context(|| format!("push {name} to {dest}"))?;
    for r in &pushed.references {
        println!("{r}: digest: {} size: {}", pushed.digest, desc.size);
    }
    Ok(())
}

/// Downloads the layers of image `name` that the store knows only by their
/// registry location (a build's FROM image or cache hits), before an export
/// that writes bytes. Nothing happens for an image whose bytes are all here.
pub(crate) fn fetch_remote_layers(
    store: &Store,
    name: &str,
    opts: &ClientOptions,
    quiet: bool,
) -> Result<()> {
    let Ok((_, entry)) = transport::find_image(store, name) else {
        return Ok(()); // the export itself reports the unknown image
    };
    let digests: Vec<_> = entry
        .image
        .manifest
        .layers
        .iter()
        .map(|l| l.digest.clone())
        .collect();
    registry::lazy::ensure_blobs(store, &digests, opts, &Progress::new(quiet))
        .with_context(|| format!("fetch the layers of {name}"))?;
    Ok(())
}

/// `host[:port]` for a registry given as docker accepts it on the command line
/// (`https://index.docker.io/v1/`, `ghcr.io`, `localhost:5000`).
fn login_host(arg: Option<&str>) -> Result<Reference> {
    let raw = arg.unwrap_or("docker.io");
    let rest = raw
        .strip_prefix("https://")
        .or_else(|| raw.strip_prefix("http://"))
        .unwrap_or(raw);
    let host = rest.split('/').next().unwrap_or(rest);
    let host = match host {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => "docker.io",
        h => h,
    };
    if host.is_empty() {
        bail!("invalid registry {raw:?}");
    }
    // Parse through a dummy repository to get docker's host rules (API host,
    // loopback) without duplicating them.
    let probe = Reference::parse(&format!("{host}/kiln-login-probe"))
        .with_context(|| format!("invalid registry {raw:?}"))?;
    if probe.registry() != host {
        bail!("invalid registry {raw:?}: not a host name");
    }
    Ok(probe)
}

pub fn login(args: LoginArgs) -> Result<()> {
    let probe = login_host(args.registry.as_deref())?;
    let host = probe.registry().to_string();
    let Some(username) = args.username.clone() else {
        bail!("kiln login {host}: give the user name with -u USER");
    };
    let password = if args.password_stdin {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("read the password from standard input")?;
        s.trim_end_matches(['\n', '\r']).to_string()
    } else if let Some(p) = args.password.clone() {
        p
    } else if std::io::stdin().is_terminal() {
        bail!("kiln login {host}: give the password with --password-stdin or -p");
    } else {
        bail!("kiln login {host}: give the password with --password-stdin or -p (standard input is not a terminal)");
    };
    if password.is_empty() {
        bail!("kiln login {host}: the password is empty");
    }
    let cred = Credential {
        username,
        secret: password,
    };
    let client = Client::connect(
        &host,
        probe.api_host(),
        probe.is_loopback(),
        Some(cred.clone()),
        &args.tls.options(),
    )
    .with_context(|| format!("log in to {host}"))?;
    client.verify_login()?;
    let mut config = AuthConfig::open(&AuthEnv::from_process())?;
    config.store(&host, &cred)?;
    config.save()?;
    println!("Login Succeeded");
    Ok(())
}

pub fn logout(args: LogoutArgs) -> Result<()> {
    let host = login_host(args.registry.as_deref())?.registry().to_string();
    let mut config = AuthConfig::open(&AuthEnv::from_process())?;
    if !config.erase(&host)? {
        bail!(
            "not logged in to {host} (no credentials in {})",
            config.path().display()
        );
    }
    config.save()?;
    println!("Removed login credentials for {host}");
    Ok(())
}
