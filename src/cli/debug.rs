//! `kiln debug`: the frontend's pieces from the shell, to check them against
//! conformance vectors by hand.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Subcommand;

use kiln::frontend::ast::dump_nodes;
use kiln::frontend::parser::parse;
use kiln::frontend::patternmatcher::PatternMatcher;
use kiln::frontend::shell::{EnvList, Lexer};
use kiln::layer;

#[derive(Debug, clap::Args)]
pub struct DebugArgs {
    #[command(subcommand)]
    pub what: DebugCommand,
}

#[derive(Debug, Subcommand)]
pub enum DebugCommand {
    /// Print a Dockerfile's parse tree in BuildKit's `result` format.
    Ast { file: PathBuf },
    /// Expand one word as a Dockerfile instruction would (quotes removed, no splitting).
    Expand {
        /// A variable (repeatable); `K` alone is set and empty.
        #[arg(long = "env", value_name = "K=V")]
        env: Vec<String>,
        /// The escape token: `\` or `` ` ``.
        #[arg(long, default_value = "\\")]
        escape: String,
        #[arg(allow_hyphen_values = true)]
        word: String,
    },
    /// Say `match` or `nomatch` for each path (does it or a parent match the patterns).
    Ignore {
        #[arg(long = "pattern", value_name = "P", allow_hyphen_values = true)]
        patterns: Vec<String>,
        #[arg(allow_hyphen_values = true)]
        paths: Vec<String>,
    },
    /// Prepare a snapshot over lower dirs, run a command in it, print the change list (JSON).
    Snapshot(Box<super::snapshot_debug::SnapshotArgs>),
    /// Run one command in the sandbox (rootless namespaces or chroot).
    Run(Box<super::run_debug::RunArgs>),
    /// One RUN step over a stored image: snapshot, sandbox, layer, optional commit.
    RunStep(Box<super::step_debug::RunStepArgs>),
    /// Apply layer files to DEST (flatten) or unpack each into DEST/<n> (overlay),
    /// ownership metadata going to DEST.kiln-meta.jsonl (DEST/<n>.kiln-meta.jsonl).
    Unpack {
        #[arg(long, value_parser = ["flatten", "overlay"], default_value = "flatten")]
        mode: String,
        #[arg(required = true, num_args = 2..)]
        paths: Vec<PathBuf>,
    },
}

pub fn run(root: Option<PathBuf>, args: DebugArgs) -> Result<()> {
    match args.what {
        DebugCommand::RunStep(step) => return super::step_debug::run(root, *step),
        DebugCommand::Run(run) => return super::run_debug::run(*run),
        DebugCommand::Snapshot(snap) => return super::snapshot_debug::run(*snap),
        DebugCommand::Ast { file } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("read Dockerfile {}", file.display()))?;
            let parsed = parse(&file.display().to_string(), &text)?;
            for w in &parsed.warnings {
                eprintln!("warning: {}: {w}", file.display());
            }
            print!("{}", dump_nodes(&parsed.nodes));
        }
        DebugCommand::Expand { env, escape, word } => {
            let esc = match escape.as_str() {
                "\\" => '\\',
                "`" => '`',
                other => bail!("invalid escape token {other:?}: must be \\ or `"),
            };
            let env = EnvList::from_list(&env);
            let out = Lexer::new(esc)
                .process_word(&word, &env)
                .with_context(|| format!("expand {word:?}"))?;
            println!("{out}");
        }
        DebugCommand::Ignore { patterns, paths } => {
            let m = PatternMatcher::new(&patterns).context("compile ignore patterns")?;
            for p in &paths {
                let hit = m
                    .matches_or_parent_matches(p)
                    .with_context(|| format!("match {p:?}"))?;
                println!("{}", if hit { "match" } else { "nomatch" });
            }
        }
        DebugCommand::Unpack { mode, mut paths } => {
            let dest = paths.pop().context("no destination")?;
            for (n, file) in paths.iter().enumerate() {
                let (root, mode) = match mode.as_str() {
                    "overlay" => (
                        dest.join(n.to_string()),
                        layer::Mode::OverlayLower(layer::OverlayXattrs::for_current_user()),
                    ),
                    _ => (dest.clone(), layer::Mode::Flatten),
                };
                std::fs::create_dir_all(&root)
                    .with_context(|| format!("create {}", root.display()))?;
                let meta_path = layer::sidecar_path(&root);
                let mut meta = layer::Metadata::load(&meta_path)?;
                let mut opts = layer::UnpackOptions::new(file.display().to_string(), mode);
                // Overlay: the layers already unpacked, topmost first.
                opts.lowers = (0..n).rev().map(|i| dest.join(i.to_string())).collect();
                let input = std::fs::File::open(file)
                    .with_context(|| format!("open {}", file.display()))?;
                let report = layer::unpack(input, &root, &opts, &mut meta)?;
                meta.save(&meta_path)?;
                println!(
                    "{} {} {:?} {:?}",
                    file.display(),
                    report.diff_id,
                    report.compression,
                    report.whiteouts
                );
            }
        }
    }
    Ok(())
}
