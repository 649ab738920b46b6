//! `kiln build`: docker's flags, the Dockerfile and context, and (for now)
//! the resolved plan.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::ValueEnum;

use kiln::context;
use kiln::frontend::stages::parse_dockerfile;
use kiln::plan::{plan, Base, NoBaseEnv, Plan, PlanOptions, Platform, Source};
use kiln::registry::reference::Reference;

use super::output::OutputSpec;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Progress {
    Auto,
    Plain,
    Tty,
    Json,
    Quiet,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PlanFormat {
    Text,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// Build context directory, or `-` to read the Dockerfile from stdin (no context).
    #[arg(default_value = ".", value_name = "CONTEXT")]
    pub context: String,
    /// Dockerfile (default: CONTEXT/Dockerfile, else CONTEXT/Containerfile).
    #[arg(short = 'f', long = "file", value_name = "PATH")]
    pub file: Option<PathBuf>,
    /// Name the image (repeatable).
    #[arg(short = 't', long = "tag", value_name = "NAME[:TAG]")]
    pub tags: Vec<String>,
    /// Set a build-time variable; `K` alone takes its value from the environment.
    #[arg(long = "build-arg", value_name = "K=V")]
    pub build_args: Vec<String>,
    /// Build this stage and what it needs.
    #[arg(long, value_name = "STAGE")]
    pub target: Option<String>,
    /// Do not use the layer cache.
    #[arg(long)]
    pub no_cache: bool,
    /// Target platform (os/arch[/variant]).
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<String>,
    /// Add an image label (repeatable).
    #[arg(long = "label", value_name = "K=V")]
    pub labels: Vec<String>,
    /// Progress output on stderr: auto (tty on a terminal, else plain), plain
    /// (step lines, command output indented, step times, a summary), tty (a
    /// live view with transfer bars), json (one event per line), quiet.
    #[arg(long, value_enum, default_value_t = Progress::Auto)]
    pub progress: Progress,
    /// Print only the image id (and the end of a failed command's output).
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Write the image id to this file.
    #[arg(long, value_name = "FILE")]
    pub iidfile: Option<PathBuf>,
    /// Where to write the result (repeatable): type=local,dest=DIR, oci:DIR[:TAG], docker-archive:FILE, …
    #[arg(short = 'o', long = "output", value_name = "DEST")]
    pub outputs: Vec<String>,
    /// Push every -t name to its registry.
    #[arg(long)]
    pub push: bool,
    /// Print the resolved plan instead of building.
    #[arg(long)]
    pub dry_run: bool,
    /// Plan format for --dry-run.
    #[arg(long, value_enum, default_value_t = PlanFormat::Text)]
    pub format: PlanFormat,
    /// A secret for RUN --mount=type=secret: id=ID[,src=FILE|,env=VAR] (repeatable).
    #[arg(long = "secret", value_name = "SPEC")]
    pub secrets: Vec<String>,
    /// Rebuild these stages without the cache (repeatable, or comma-separated).
    #[arg(long = "no-cache-filter", value_name = "STAGE", value_delimiter = ',')]
    pub no_cache_filter: Vec<String>,
    /// Isolation of RUN steps: auto, rootless or chroot.
    #[arg(long, default_value = "auto", value_name = "TIER")]
    pub isolation: String,
    /// Snapshotter for RUN steps: overlay, fuse-overlayfs or walk (default: probed).
    #[arg(long, value_name = "KIND")]
    pub snapshotter: Option<String>,
    /// Clamp file times and date the image to this (seconds since the epoch).
    #[arg(long, env = "SOURCE_DATE_EPOCH", value_name = "SECONDS")]
    pub source_date_epoch: Option<i64>,
    /// When to pull FROM images: missing (default), always, never; `--pull` alone is always.
    #[arg(long, value_name = "POLICY", num_args = 0..=1, default_missing_value = "always")]
    pub pull: Option<String>,
    /// Docker (v2s2) media types instead of OCI: --format docker (buildah's flag is
    /// --format; here --format is the --dry-run plan format).
    #[arg(long = "media-types", value_name = "oci|docker", default_value = "oci")]
    pub media_types: String,
    /// Write the pushed manifest digest to this file.
    #[arg(long, value_name = "FILE")]
    pub digestfile: Option<PathBuf>,
    /// Write the build result (image id, manifest digest, names) as JSON to this file.
    #[arg(long = "metadata-file", value_name = "FILE")]
    pub metadata_file: Option<PathBuf>,
    /// Say for each cache miss which input changed.
    #[arg(long)]
    pub explain_cache: bool,
    /// Import a layer cache before building (repeatable): type=registry,ref=REPO[:TAG],
    /// type=local,src=DIR, or a bare REF.
    #[arg(long = "cache-from", value_name = "SPEC")]
    pub cache_from: Vec<String>,
    /// Export the layer cache after building (repeatable):
    /// type=registry,ref=REPO[:TAG][,mode=min|max] or type=local,dest=DIR[,mode=min|max].
    #[arg(long = "cache-to", value_name = "SPEC")]
    pub cache_to: Vec<String>,
    #[command(flatten)]
    pub tls: super::remote::TlsArgs,
}

/// `K=V` pairs; `K` alone is looked up in the environment and dropped when unset, as docker does.
fn build_args(list: &[String]) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for item in list {
        match item.split_once('=') {
            Some(("", _)) => bail!("invalid --build-arg {item:?}: the name is empty"),
            Some((k, v)) => {
                out.insert(k.to_string(), v.to_string());
            }
            None => {
                if let Ok(v) = std::env::var(item) {
                    out.insert(item.clone(), v);
                }
            }
        }
    }
    Ok(out)
}

/// `-t` names follow docker's reference grammar (normalized later when the image is stored).
fn check_tag(t: &str) -> Result<()> {
    Reference::parse(t)?;
    Ok(())
}

struct Input {
    dockerfile_name: String,
    text: String,
    context: Option<PathBuf>,
    ignore: Vec<String>,
    ignore_file: Option<PathBuf>,
}

fn read_input(args: &BuildArgs) -> Result<Input> {
    if args.context == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("read the Dockerfile from stdin")?;
        return Ok(Input {
            dockerfile_name: "<stdin>".into(),
            text,
            context: None,
            ignore: Vec::new(),
            ignore_file: None,
        });
    }
    let ctx = PathBuf::from(&args.context);
    if !ctx.is_dir() {
        bail!("build context {} is not a directory", ctx.display());
    }
    if args.file.as_deref() == Some(Path::new("-")) {
        // `-f -` (docker): the Dockerfile from stdin, the context from CONTEXT; only
        // the context's own .dockerignore applies.
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("read the Dockerfile from stdin")?;
        let stdin_df = ctx.join("Dockerfile");
        let ignore_file = Some(ctx.join(".dockerignore")).filter(|p| p.is_file());
        let ignore = if ignore_file.is_some() {
            context::load_ignore_patterns(&ctx, &stdin_df)?
        } else {
            Vec::new()
        };
        return Ok(Input {
            dockerfile_name: "<stdin>".into(),
            text,
            context: Some(ctx),
            ignore,
            ignore_file,
        });
    }
    let dockerfile = match &args.file {
        Some(f) => f.clone(),
        None => ["Dockerfile", "Containerfile"]
            .iter()
            .map(|n| ctx.join(n))
            .find(|p| p.is_file())
            .with_context(|| {
                format!(
                    "no Dockerfile or Containerfile in {} (use -f to name one)",
                    ctx.display()
                )
            })?,
    };
    let text = std::fs::read_to_string(&dockerfile)
        .with_context(|| format!("read Dockerfile {}", dockerfile.display()))?;
    let ignore_file = context::ignore_file_for(&ctx, &dockerfile);
    let ignore = context::load_ignore_patterns(&ctx, &dockerfile)?;
    Ok(Input {
        dockerfile_name: dockerfile.display().to_string(),
        text,
        context: Some(ctx),
        ignore,
        ignore_file,
    })
}

pub fn run(root: Option<PathBuf>, args: BuildArgs) -> Result<()> {
    for t in &args.tags {
        check_tag(t)?;
    }
    let outputs: Vec<OutputSpec> = args
        .outputs
        .iter()
        .map(|o| OutputSpec::parse(o).map_err(anyhow::Error::msg))
        .collect::<Result<_>>()?;
    if args.push && args.tags.is_empty() {
        bail!("--push needs at least one -t name to push to");
    }
    let target_platform = match &args.platform {
        Some(p) => Platform::parse(p)?,
        None => Platform::host(),
    };
    let input = read_input(&args)?;
    let df = parse_dockerfile(&input.dockerfile_name, &input.text)?;
    let opts = PlanOptions {
        build_args: build_args(&args.build_args)?,
        target: args.target.clone(),
        target_platform,
        build_platform: Platform::host(),
    };
    let plan = plan(&df, &opts, &NoBaseEnv)?;
    if args.dry_run {
        match args.format {
            PlanFormat::Json => println!("{}", serde_json::to_string_pretty(&plan)?),
            PlanFormat::Text => print!("{}", render_plan(&df.file, &input, &plan, &outputs, &args)),
        }
        return Ok(());
    }
    drop(plan);
    super::build_run::execute(
        root,
        &args,
        super::build_run::Input {
            df: &df,
            plan: opts,
            context: input.context.clone(),
            ignore: input.ignore.clone(),
            outputs: &outputs,
        },
    )
}

fn stage_label(plan: &Plan, index: usize) -> String {
    plan.stages
        .iter()
        .find(|s| s.index == index)
        .map(|s| format!("stage {} {}", s.index, s.label()))
        .unwrap_or_else(|| format!("stage {index}"))
}

fn render_plan(
    file: &str,
    input: &Input,
    plan: &Plan,
    outputs: &[OutputSpec],
    args: &BuildArgs,
) -> String {
    let mut o = String::new();
    o.push_str(&format!("Dockerfile: {file}\n"));
    match &input.context {
        Some(c) => {
            let ignore = match &input.ignore_file {
                Some(f) => format!("{} pattern(s) from {}", input.ignore.len(), f.display()),
                None => "no ignore file".into(),
            };
            o.push_str(&format!("context: {} ({ignore})\n", display_dir(c)));
        }
        None => o.push_str("context: none (Dockerfile from stdin)\n"),
    }
    o.push_str(&format!("target: {}\n", stage_label(plan, plan.target)));
    if !plan.global_args.is_empty() {
        let list: Vec<String> = plan
            .global_args
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        o.push_str(&format!("global args: {}\n", list.join(" ")));
    }
    for (n, s) in plan.stages.iter().enumerate() {
        let base = match &s.base {
            Base::Scratch => "scratch".to_string(),
            Base::Image(r) => format!("image {r}"),
            Base::Stage(i) => stage_label(plan, *i),
        };
        o.push_str(&format!(
            "\n[{}/{}] stage {} {} FROM {base} ({})\n",
            n + 1,
            plan.stages.len(),
            s.index,
            s.label(),
            s.platform
        ));
        let uses: Vec<String> = s
            .sources
            .iter()
            .map(|d| match d {
                Source::Stage(i) => stage_label(plan, *i),
                Source::Image(r) => format!("image {r}"),
            })
            .collect();
        if !uses.is_empty() {
            o.push_str(&format!("  uses: {}\n", uses.join(", ")));
        }
        for (i, step) in s.steps.iter().enumerate() {
            o.push_str(&format!(
                "  {}/{} {}:{} {}\n",
                i + 1,
                s.steps.len(),
                step.pos.line,
                step.pos.column,
                step.text
            ));
            if !step.undefined.is_empty() {
                o.push_str(&format!(
                    "        note: not set here (may come from the base image): {}\n",
                    step.undefined.join(", ")
                ));
            }
        }
    }
    if !plan.skipped.is_empty() {
        let list: Vec<String> = plan
            .skipped
            .iter()
            .map(|s| match &s.name {
                Some(n) => format!("stage {} {n:?}", s.index),
                None => format!("stage {} #{}", s.index, s.index),
            })
            .collect();
        let why = match &args.target {
            Some(t) => format!("not needed for --target {t}"),
            None => "not needed by the last stage".into(),
        };
        o.push_str(&format!("\nskipped ({why}): {}\n", list.join(", ")));
    }
    if !args.tags.is_empty() {
        o.push_str(&format!("\ntags: {}\n", args.tags.join(", ")));
    }
    if !outputs.is_empty() {
        o.push_str(&format!("outputs: {}\n", args.outputs.join(", ")));
    }
    for arg in &plan.unused_build_args {
        o.push_str(&format!(
            "warning: build-arg {arg} was not consumed by any ARG\n"
        ));
    }
    o
}

fn display_dir(p: &Path) -> String {
    p.display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_checked() {
        for ok in [
            "app",
            "app:1.0",
            "127.0.0.1:5000/a/b:v1",
            "reg.example/x_y/z-w",
        ] {
            assert!(check_tag(ok).is_ok(), "{ok}");
        }
        for bad in ["", "App", "a b", "a:", "a::b", "-a", "a@sha256:short"] {
            assert!(check_tag(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn build_args_from_env_and_pairs() {
        std::env::set_var("KILN_TEST_BUILD_ARG", "fromenv");
        let m = build_args(&[
            "A=1".into(),
            "KILN_TEST_BUILD_ARG".into(),
            "KILN_TEST_UNSET_ARG_XYZ".into(),
        ])
        .unwrap();
        assert_eq!(m.get("A").map(String::as_str), Some("1"));
        assert_eq!(
            m.get("KILN_TEST_BUILD_ARG").map(String::as_str),
            Some("fromenv")
        );
        assert!(!m.contains_key("KILN_TEST_UNSET_ARG_XYZ"));
        assert!(build_args(&["=x".into()]).is_err());
    }
}
