//! `kiln build` without `--dry-run`: runs the engine, then names, pushes and
//! exports the image as the flags ask.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use kiln::build::engine::{
    self, BuildRequest, CacheSpec, ProgressMode, PullPolicy, Reporter, SecretSource, Summary,
};
use kiln::frontend::stages::Dockerfile;
use kiln::layer::Mode;
use kiln::plan::PlanOptions;
use kiln::registry::credentials::{AuthConfig, AuthEnv};
use kiln::registry::{self, PushOptions};
use kiln::store::{Descriptor, Store};
use kiln::transport;

use super::build::{BuildArgs, Progress};
use super::output::OutputSpec;

pub struct Input<'a> {
    pub df: &'a Dockerfile,
    pub plan: PlanOptions,
    pub context: Option<PathBuf>,
    pub ignore: Vec<String>,
    pub outputs: &'a [OutputSpec],
}

/// `id=ID[,src=FILE|,env=VAR]`; with neither src nor env, BuildKit reads
/// the environment variable named ID.
fn parse_secret(spec: &str) -> Result<(String, SecretSource)> {
    let mut id = None;
    let mut src = None;
    let mut env = None;
    for field in spec.split(',') {
        match field.split_once('=') {
            Some(("id", v)) => id = Some(v.to_string()),
            Some(("src" | "source", v)) => src = Some(PathBuf::from(v)),
            Some(("env", v)) => env = Some(v.to_string()),
            Some(("type", "file" | "env")) => {}
            _ => bail!("invalid --secret {spec:?}: expected id=ID,src=FILE or id=ID,env=VAR"),
        }
    }
    let id = id.with_context(|| format!("--secret {spec:?} has no id"))?;
    let source = match (src, env) {
        (Some(f), None) => {
            if !f.is_file() {
                bail!("--secret {spec:?}: {} is not a file", f.display());
            }
            SecretSource::File(std::fs::canonicalize(&f)?)
        }
        (None, Some(v)) => SecretSource::Env(v),
        (None, None) => SecretSource::Env(id.clone()),
        (Some(_), Some(_)) => bail!("--secret {spec:?}: give src or env, not both"),
    };
    Ok((id, source))
}

fn cache_specs(list: &[String], export: bool) -> Result<Vec<CacheSpec>> {
    let flag = if export { "--cache-to" } else { "--cache-from" };
    list.iter()
        .map(|s| CacheSpec::parse(s, export).map_err(|e| anyhow::anyhow!("{flag} {e}")))
        .collect()
}

/// The display `--progress` and `-q` ask for; `auto` is the live view on
/// a terminal and plain lines otherwise, as with docker.
fn progress_mode(args: &BuildArgs) -> ProgressMode {
    if args.quiet {
        return ProgressMode::Quiet;
    }
    match args.progress {
        Progress::Auto if std::io::stderr().is_terminal() => ProgressMode::Tty,
        Progress::Auto | Progress::Plain => ProgressMode::Plain,
        Progress::Tty => ProgressMode::Tty,
        Progress::Json => ProgressMode::Json,
        Progress::Quiet => ProgressMode::Quiet,
    }
}

pub fn execute(root: Option<PathBuf>, args: &BuildArgs, input: Input) -> Result<()> {
    let reporter = Reporter::new(progress_mode(args));
    let result = build_and_output(root, args, input, &reporter);
    if let Err(e) = &result {
        reporter.error(&format!("{e:#}"));
    }
    result
}

fn build_and_output(
    root: Option<PathBuf>,
    args: &BuildArgs,
    input: Input,
    reporter: &Reporter,
) -> Result<()> {
    let root = super::system::store_root(root);
    let store =
        Store::open(&root).with_context(|| format!("open the store at {}", root.display()))?;
    let mut secrets = BTreeMap::new();
    for s in &args.secrets {
        let (id, src) = parse_secret(s)?;
        secrets.insert(id, src);
    }
    let mut labels = BTreeMap::new();
    for l in &args.labels {
        let (k, v) = l.split_once('=').unwrap_or((l.as_str(), ""));
        labels.insert(k.to_string(), v.to_string());
    }
    let pull = match args.pull.as_deref() {
        None | Some("missing") | Some("false") => PullPolicy::Missing,
        Some("always") | Some("true") => PullPolicy::Always,
        Some("never") => PullPolicy::Never,
        Some(other) => bail!("invalid --pull {other:?}: missing, always or never"),
    };
    let docker_format = match args.media_types.as_str() {
        "oci" => false,
        "docker" => true,
        other => bail!("invalid --media-types {other:?}: oci or docker"),
    };
    let req = BuildRequest {
        plan: input.plan,
        context: input
            .context
            .as_ref()
            .map(std::fs::canonicalize)
            .transpose()
            .context("resolve the build context")?,
        ignore: input.ignore,
        no_cache: args.no_cache,
        no_cache_filter: args.no_cache_filter.clone(),
        isolation: args.isolation.parse().map_err(anyhow::Error::msg)?,
        snapshotter: args
            .snapshotter
            .as_deref()
            .map(str::parse)
            .transpose()
            .map_err(anyhow::Error::msg)?,
        source_date_epoch: args.source_date_epoch,
        secrets,
        labels,
        pull,
        client: args.tls.options(),
        docker_format,
        progress: reporter.mode(),
        reporter: Some(reporter.clone()),
        explain_cache: args.explain_cache,
        cache_from: cache_specs(&args.cache_from, false)?,
        cache_to: cache_specs(&args.cache_to, true)?,
    };
    let built = engine::build(&store, input.df, &req)?;
    let id = built.id.to_string();

    let mut names = Vec::new();
    for t in &args.tags {
        let name = transport::normalize_name(t)?;
        transport::set_name(&store, &name, &built.manifest)
            .with_context(|| format!("name the image {t}"))?;
        names.push(name);
    }
    if let Some(f) = &args.iidfile {
        std::fs::write(f, &id).with_context(|| format!("write {}", f.display()))?;
    }
    let mut outputs = Vec::new();
    let mut pushed_digest = None;
    let mut registries: Vec<String> = Vec::new();
    if args.push {
        registries.extend(names.iter().cloned());
    }
    // Layers a FROM image or a cache hit left in the registry come now when
    // an output writes bytes (registries get mounts instead: `push`).
    if input
        .outputs
        .iter()
        .any(|o| !matches!(o, OutputSpec::Image { .. } | OutputSpec::Registry(_)))
    {
        let img = transport::StoredImage::load(&store, &built.manifest)?;
        let digests: Vec<_> = img
            .manifest
            .layers
            .iter()
            .map(|l| l.digest.clone())
            .collect();
        registry::lazy::ensure_blobs(
            &store,
            &digests,
            &args.tls.options(),
            &reporter.transfer_progress(),
        )
        .context("fetch the image's layers")?;
    }
    for o in input.outputs {
        match o {
            OutputSpec::Image { name, push } => {
                if let Some(n) = name {
                    let full = transport::normalize_name(n)?;
                    transport::set_name(&store, &full, &built.manifest)?;
                    if *push {
                        registries.push(full.clone());
                    }
                    names.push(full);
                }
            }
            OutputSpec::Registry(r) => registries.push(r.clone()),
            OutputSpec::OciDir { dir, tag } => {
                let dest = match tag {
                    Some(t) => format!("oci:{}:{t}", dir.display()),
                    None => format!("oci:{}", dir.display()),
                };
                transport::export(&store, &id, &dest)
                    .with_context(|| format!("export to {dest}"))?;
                outputs.push(dest);
            }
            OutputSpec::OciArchive(f) => {
                let dest = format!("oci-archive:{}", f.display());
                transport::export(&store, &id, &dest)
                    .with_context(|| format!("export to {dest}"))?;
                outputs.push(dest);
            }
            OutputSpec::DockerArchive(f) => {
                // `FILE:REF` names the image itself; a bare FILE takes the first -t.
                let given = f.display().to_string();
                let dest = match names.first() {
                    Some(n) if !given.contains(':') => format!("docker-archive:{given}:{n}"),
                    _ => format!("docker-archive:{given}"),
                };
                transport::export(&store, &id, &dest)
                    .with_context(|| format!("export to {dest}"))?;
                outputs.push(dest);
            }
            OutputSpec::Local(dir) => {
                export_files(&store, &built.manifest, dir, false)?;
                outputs.push(format!("local:{}", dir.display()));
            }
            OutputSpec::Tar(file) => {
                export_files(&store, &built.manifest, file, true)?;
                outputs.push(format!("tar:{}", file.display()));
            }
        }
    }
    for r in &registries {
        let digest = push(&store, &built.manifest, r, args, reporter)?;
        outputs.push(format!("pushed {r}@{digest}"));
        pushed_digest = Some(digest);
    }
    if let Some(f) = &args.digestfile {
        let d = pushed_digest
            .clone()
            .unwrap_or_else(|| built.manifest.digest.to_string());
        std::fs::write(f, d).with_context(|| format!("write {}", f.display()))?;
    }
    if let Some(f) = &args.metadata_file {
        let meta = serde_json::json!({
            "containerimage.config.digest": id,
            "containerimage.digest": built.manifest.digest.to_string(),
            "image.name": names.join(","),
            "kiln.steps": built.steps,
            "kiln.cached_steps": built.cached_steps,
        });
        std::fs::write(f, serde_json::to_vec_pretty(&meta)?)
            .with_context(|| format!("write {}", f.display()))?;
    }
    reporter.summary(&Summary {
        id: id.clone(),
        digest: built.manifest.digest.to_string(),
        size: built.size,
        names,
        outputs,
        steps: built.steps,
        cached_steps: built.cached_steps,
        took: reporter.elapsed(),
    });
    println!("{id}");
    Ok(())
}

fn push(
    store: &Store,
    desc: &Descriptor,
    dest: &str,
    args: &BuildArgs,
    reporter: &Reporter,
) -> Result<String> {
    let reference = super::remote::docker_reference(dest)?;
    let env = AuthEnv::from_process();
    let credential = AuthConfig::open(&env)?
        .get(reference.registry())
        .with_context(|| format!("look up credentials for {}", reference.registry()))?;
    let opts = PushOptions {
        client: args.tls.options(),
        ..PushOptions::default()
    };
    let progress = reporter.transfer_progress();
    let pushed = registry::push(store, desc, &reference, credential, &opts, &progress)
        .with_context(|| format!("push to {reference}"))?;
    Ok(pushed.digest.to_string())
}

/// A tar of the tree at `root` (an empty archive for none) to `dest`, or to
/// stdout for `-`; symlinks are stored as links.
fn write_tar(root: Option<&std::path::Path>, dest: &std::path::Path) -> Result<()> {
    let out: Box<dyn std::io::Write> = if dest.as_os_str() == "-" {
        Box::new(std::io::stdout().lock())
    } else {
        Box::new(std::fs::File::create(dest).with_context(|| format!("create {}", dest.display()))?)
    };
    let mut builder = tar::Builder::new(std::io::BufWriter::new(out));
    builder.follow_symlinks(false);
    if let Some(root) = root {
        builder
            .append_dir_all(".", root)
            .with_context(|| format!("write the image's files to {}", dest.display()))?;
    }
    let mut out = builder
        .into_inner()
        .with_context(|| format!("finish {}", dest.display()))?;
    std::io::Write::flush(&mut out).with_context(|| format!("write {}", dest.display()))?;
    Ok(())
}

/// `--output type=local|tar`: the image's files (flattened), not the image.
fn export_files(store: &Store, desc: &Descriptor, dest: &PathBuf, tar: bool) -> Result<()> {
    let img = transport::StoredImage::load(store, desc)?;
    let layers: Vec<kiln::store::LayerSource> = img
        .manifest
        .layers
        .iter()
        .zip(&img.config.rootfs.diff_ids)
        .map(|(l, d)| kiln::store::LayerSource {
            blob: l.digest.clone(),
            diff_id: d.clone(),
        })
        .collect();
    let unpacked = store
        .ensure_unpacked(&layers, Mode::Flatten)
        .context("unpack the image")?;
    // In process, not `cp`/`tar`: kiln's own image has neither.
    let Some(tree) = unpacked.last() else {
        if tar {
            write_tar(None, dest)?;
        } else {
            std::fs::create_dir_all(dest)?;
        }
        return Ok(());
    };
    if tar {
        write_tar(Some(&tree.rootfs), dest)
    } else {
        std::fs::create_dir_all(dest)?;
        kiln::snapshot::copy_tree(&tree.rootfs, dest)
            .with_context(|| format!("copy the image's files to {}", dest.display()))
    }
}
