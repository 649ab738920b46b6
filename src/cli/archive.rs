//! `kiln save`, `kiln load` and `kiln import`: images to and from files.

use std::fs::File;
use std::io::{self, IsTerminal, Read};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use kiln::plan::platform::Platform;
use kiln::transport::{self, familiar_name, ArchiveFormat, RootfsImport};

use super::images::open_store;

#[derive(Debug, clap::Args)]
pub struct SaveArgs {
    /// Names or image IDs.
    #[arg(required = true)]
    pub images: Vec<String>,
    /// Write to this file instead of stdout.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// `docker-archive` (docker save's format) or `oci-archive`.
    #[arg(long, default_value = "docker-archive")]
    pub format: String,
}

pub fn save(root: Option<PathBuf>, args: SaveArgs) -> Result<()> {
    let format = match args.format.as_str() {
        "docker-archive" | "docker" => ArchiveFormat::Docker,
        "oci-archive" | "oci" => ArchiveFormat::Oci,
        other => bail!("unsupported --format {other:?}: use docker-archive or oci-archive"),
    };
    let store = open_store(root)?;
    for image in &args.images {
        super::remote::fetch_remote_layers(&store, image, &Default::default(), true)?;
    }
    match args.output.as_deref() {
        Some(path) if path.as_os_str() != "-" => {
            transport::write_file_via_temp(path, |w| {
                transport::save(&store, &args.images, format, w)
            })?;
        }
        _ => {
            let stdout = io::stdout();
            if stdout.is_terminal() {
                bail!("cowardly refusing to save to a terminal. Use the -o flag or redirect");
            }
            transport::save(&store, &args.images, format, stdout.lock())?;
        }
    }
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct LoadArgs {
    /// Read from this file instead of stdin.
    #[arg(short, long, value_name = "FILE")]
    pub input: Option<PathBuf>,
    /// Print nothing.
    #[arg(short, long)]
    pub quiet: bool,
}

pub fn load(root: Option<PathBuf>, args: LoadArgs) -> Result<()> {
    let store = open_store(root)?;
    let input: Box<dyn Read> = match &args.input {
        Some(p) if p.as_os_str() != "-" => {
            Box::new(File::open(p).with_context(|| format!("open {}", p.display()))?)
        }
        _ => {
            if io::stdin().is_terminal() {
                bail!("requested load from stdin, but stdin is empty");
            }
            Box::new(io::stdin().lock())
        }
    };
    let loaded = transport::load(&store, input)?;
    if !args.quiet {
        for image in loaded {
            if image.names.is_empty() {
                println!("Loaded image ID: {}", image.id);
            }
            for n in image.names {
                println!("Loaded image: {}", familiar_name(&n));
            }
        }
    }
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// A root filesystem tarball (plain, gzip or zstd), or `-` for stdin.
    pub file: String,
    /// The name to give the image.
    pub name: Option<String>,
    /// A Dockerfile instruction to apply to the config (CMD, ENTRYPOINT, ENV,
    /// EXPOSE, LABEL, ONBUILD, STOPSIGNAL, USER, VOLUME, WORKDIR); repeatable.
    #[arg(short, long = "change", value_name = "INSTRUCTION")]
    pub changes: Vec<String>,
    /// The history comment.
    #[arg(short, long)]
    pub message: Option<String>,
    /// The image's platform (default: this host's).
    #[arg(long)]
    pub platform: Option<String>,
}

pub fn import(root: Option<PathBuf>, args: ImportArgs) -> Result<()> {
    let platform = args.platform.as_deref().map(Platform::parse).transpose()?;
    let store = open_store(root)?;
    let opts = RootfsImport {
        changes: args.changes,
        message: args.message,
        platform,
        source: args.file.clone(),
    };
    let imported = if args.file == "-" {
        transport::import_rootfs(&store, io::stdin().lock(), &opts, args.name.as_deref())?
    } else {
        let f = File::open(&args.file).with_context(|| format!("open {}", args.file))?;
        transport::import_rootfs(&store, f, &opts, args.name.as_deref())?
    };
    println!("{}", imported.id);
    Ok(())
}
