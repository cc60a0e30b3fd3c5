//! Command-line interface: argument definitions and dispatch to the library.
//! Errors become one `kfd-audit: error: ...` line and exit code 2.

pub mod demo;
pub mod diff;
pub mod plan;
pub mod restore;
pub mod rules;

use crate::error::Error;
use crate::exit::Outcome;
use crate::io::root::Root;
use crate::reference::baseline;
use crate::reference::LoadOptions;
use crate::report::{self, Report};
use crate::scan::{self, ScanOptions, TreeScan};
use crate::system::{self, Section};
use crate::term::{self, ColorChoice};
use crate::tree::{self, Tree};
use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "kfd-audit",
    version,
    about = "Audit AMD's amdgpu/amdkfd DKMS driver sources: what changed, what is dangerous, how to get a clean driver back",
    after_help = "Exit codes: 0 nothing found, 1 something found, 2 could not complete."
)]
pub struct Cli {
    /// Audit a system mounted at DIR (every system path is read under it)
    #[arg(long, global = true, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,

    /// Output format
    #[arg(long, global = true, value_enum, default_value_t = Format::Text)]
    pub format: Format,

    /// When to color the output (NO_COLOR and TERM=dumb turn off 'auto')
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,

    /// Print less: only the summary and errors
    #[arg(short, long, global = true)]
    pub quiet: bool,

    /// Print more: also clean files and details
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Add the rules in DIR/*.toml to the built-in ones (repeatable)
    #[arg(long = "rules", global = true, value_name = "DIR")]
    pub rules: Vec<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
    Markdown,
    /// node_exporter textfile metrics (scan only)
    Prometheus,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Verify every amdgpu DKMS tree against its clean references and report changes
    Scan(ScanArgs),
    /// Record or show kfd-audit's own trusted manifest of a clean tree
    #[command(subcommand)]
    Baseline(BaselineCommand),
    /// Print the DKMS recovery sequence for this system (or run it with --run)
    Plan(PlanArgs),
    /// Show what changed: unified diff of modified files against their clean content
    Diff(DiffArgs),
    /// Restore modified and missing files from verified clean sources (asks first)
    Restore(restore::RestoreArgs),
    /// Put back what the last (or a named) restore replaced, from the quarantine
    Undo(restore::UndoArgs),
    /// Reproduce the incident in a throw-away sandbox and show what kfd-audit does
    Demo(crate::app::demo::DemoArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff) to stdout: kfd-audit man > /usr/local/share/man/man1/kfd-audit.1
    Man,
    /// List the rules, or check rule files (syntax, regexes, ids, examples)
    #[command(subcommand)]
    Rules(crate::app::rules::RulesCommand),
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    #[command(flatten)]
    pub trees: TreeArgs,

    /// Files to diff: inside a tree (absolute), or relative to a tree's root
    /// (amd/amdkfd/kfd_crat.c). Default: every modified or missing file
    #[arg(value_name = "PATH")]
    pub paths: Vec<PathBuf>,

    /// Lines of context around each change
    #[arg(short = 'U', long, value_name = "N", default_value_t = crate::diff::CONTEXT)]
    pub context: usize,
}

#[derive(Debug, Args, Clone, Default)]
pub struct TreeArgs {
    /// Audit this DKMS source tree instead of every <root>/usr/src/amdgpu-* (repeatable)
    #[arg(long = "tree", value_name = "PATH")]
    pub trees: Vec<PathBuf>,

    /// Report malformed reference lines and skip them instead of stopping
    #[arg(long)]
    pub lenient: bool,

    /// Do not hash files larger than SIZE (bytes, or 512M, 2G...); they are reported
    /// as unreadable [default: 1G]
    #[arg(long, value_name = "SIZE", value_parser = scan::parse_size)]
    pub max_file_size: Option<u64>,
}

#[derive(Debug, Args)]
pub struct ScanArgs {
    #[command(flatten)]
    pub trees: TreeArgs,

    /// Only files under this part of the tree: 'amdkfd', 'amdgpu' or a path prefix
    #[arg(long, value_name = "PREFIX")]
    pub scope: Option<String>,

    /// List every file in the report, not only those with something to say
    #[arg(long)]
    pub all_files: bool,

    /// Show each modified file's diff against its clean content under it
    #[arg(long)]
    pub diff: bool,

    /// Only compare files with their references; do not run the rules
    #[arg(long)]
    pub no_rules: bool,

    /// Parts of the scan to run, comma-separated: tree (DKMS sources and state), live (running
    /// driver in /sys), options (modprobe.d, kernel command line), rocm (ROCm packages,
    /// HSA_OVERRIDE_GFX_VERSION) [default: all]
    #[arg(long, value_enum, value_delimiter = ',', value_name = "LIST")]
    pub sections: Vec<Section>,

    /// Package-name patterns (comma-separated, * and ? as in the shell) whose dpkg
    /// md5sums the rocm section verifies [default: rocm-core*,hsa-rocr*,hip-runtime-amd*,...]
    #[arg(long, value_delimiter = ',', value_name = "PATTERNS")]
    pub rocm_packages: Vec<String>,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub trees: TreeArgs,

    /// Run the plan's commands now, one by one, stopping at the first failure
    #[arg(long)]
    pub run: bool,

    /// With --run: do not ask for confirmation
    #[arg(long, requires = "run")]
    pub yes: bool,
    /// Only compare files with their references; do not run the rules
    #[arg(long)]
    pub no_rules: bool,
}

#[derive(Debug, Subcommand)]
pub enum BaselineCommand {
    /// Record a SHA-256 manifest of each tree while it is clean
    Create {
        #[command(flatten)]
        trees: TreeArgs,
        /// Trust the tree even if dpkg's md5sums say it was changed
        #[arg(long)]
        force: bool,
        /// Store clean copies of every file, not only amd/amdkfd and the watched files
        #[arg(long)]
        all: bool,
    },
}

/// Resolves the trees to work on: those named with --tree, else all discovered.
pub fn select_trees(root: &Root, args: &TreeArgs) -> Result<Vec<Tree>, Error> {
    if args.trees.is_empty() {
        tree::discover(root)
    } else {
        args.trees.iter().map(|p| tree::from_arg(root, p)).collect()
    }
}

impl TreeArgs {
    /// Scan options for commands that judge whole trees (plan, restore): the user's
    /// reference and size settings, no scope, no diff.
    pub fn scan_options(&self) -> ScanOptions {
        ScanOptions {
            refs: LoadOptions {
                lenient: self.lenient,
            },
            max_file_size: self.max_file_size,
            ..ScanOptions::default()
        }
    }
}

pub fn scan_all(
    root: &Root,
    trees: &[Tree],
    opts: &ScanOptions,
    counters: Option<&crate::progress::Counters>,
) -> Result<Vec<TreeScan>, Error> {
    trees
        .iter()
        .map(|t| scan::scan_tree_counted(root, t, opts, counters))
        .collect()
}

fn cmd_scan(cli: &Cli, args: &ScanArgs, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    let root = Root::open(&cli.root)?;
    let sections = if args.sections.is_empty() {
        Section::ALL.to_vec()
    } else {
        args.sections.clone()
    };
    let trees_checked = sections.contains(&Section::Tree);
    let trees = if trees_checked {
        select_trees(&root, &args.trees)?
    } else {
        Vec::new()
    };
    let opts = ScanOptions {
        scope: args.scope.as_deref().map(scan::scope_prefix),
        refs: LoadOptions {
            lenient: args.trees.lenient,
        },
        clean_content: true,
        diff: args.diff,
        max_file_size: args.trees.max_file_size,
    };
    // A progress line on a terminal's stderr while the trees are hashed, and the
    // rules compiled meanwhile (tens of milliseconds of regex building that would
    // otherwise come first, with a core idle while the trees are listed).
    let counters = std::sync::Arc::new(crate::progress::Counters::default());
    let display = crate::progress::Display::start(counters.clone(), cli.quiet);
    let (rules, scans) = std::thread::scope(|s| {
        let rules = s.spawn(|| crate::app::rules::load(&cli.rules));
        let scans = scan_all(&root, &trees, &opts, Some(&counters));
        (rules.join(), scans)
    });
    drop(display);
    let rules = rules.unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
    let mut scans = scans?;
    if !args.no_rules {
        for s in &mut scans {
            let tree = s.tree.clone();
            crate::rules::apply(&rules, &root, &tree, s);
        }
    }
    let mut report = Report::build(root.dir(), &scans, args.all_files);
    // The DKMS state, module backups and build recipe are about the trees' modules:
    // part of `tree`.
    if trees_checked {
        report = report.with_module_backups(&crate::dkms::backups::module_backups(&root));
        report.attach_dkms(crate::dkms::DkmsState::collect(&root, &scans));
        // Build-time patches are judged by the same rules as in-place changes.
        let judge = |target: &str, new: &str, old: Option<&str>| {
            if args.no_rules {
                return Vec::new();
            }
            rules.check(
                std::path::Path::new(target),
                new.as_bytes(),
                old.map(str::as_bytes),
            )
        };
        report.attach_build(
            scans
                .iter()
                .map(|s| crate::dkms::recipe::audit(&root, s, &judge))
                .collect(),
        );
    }
    report.trees_checked = trees_checked;
    let system = system::run(
        &root,
        &system::Options {
            sections,
            lenient: args.trees.lenient,
            rules: rules.clone(),
            rocm_packages: if args.rocm_packages.is_empty() {
                crate::system::rocm::default_patterns()
            } else {
                args.rocm_packages.clone()
            },
        },
    )?;
    report.add_system(system);
    match cli.format {
        Format::Json => out.write_all(report.to_json().as_bytes())?,
        Format::Markdown => out.write_all(report::render_markdown(&report).as_bytes())?,
        Format::Prometheus => out.write_all(
            crate::report::prometheus::render(&report, &scans, std::time::SystemTime::now())
                .as_bytes(),
        )?,
        Format::Text => {
            let text = report::render_text(&report, term::use_color(cli.color), cli.verbose > 0);
            if cli.quiet {
                out.write_all(text.lines().next().unwrap_or_default().as_bytes())?;
                out.write_all(b"\n")?;
            } else {
                out.write_all(text.as_bytes())?;
            }
        }
    }
    Ok(report.outcome())
}

fn cmd_baseline(cli: &Cli, cmd: &BaselineCommand, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    match cmd {
        BaselineCommand::Create { trees, force, all } => {
            let root = Root::open(&cli.root)?;
            let trees = select_trees(&root, trees)?;
            if trees.is_empty() {
                anyhow::bail!(
                    "no amdgpu DKMS tree under {}; name one with --tree PATH",
                    root.path("/usr/src").display()
                );
            }
            for t in &trees {
                let created = baseline::create(
                    &root,
                    t,
                    baseline::CreateOptions {
                        force: *force,
                        all_copies: *all,
                    },
                )?;
                writeln!(
                    out,
                    "baseline of {}: {} files, {} clean copies -> {}{}",
                    term::path(&t.system_path),
                    created.files,
                    created.copies,
                    term::path(&created.manifest),
                    if created.skipped_symlinks > 0 {
                        format!(" ({} symlinks not recorded)", created.skipped_symlinks)
                    } else {
                        String::new()
                    }
                )?;
            }
            Ok(Outcome::Clean)
        }
    }
}

/// Runs a parsed command line, writing the command's output to `out`.
pub fn run(cli: &Cli, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    if cli.format == Format::Prometheus && !matches!(cli.command, Command::Scan(_)) {
        anyhow::bail!(
            "--format prometheus is for 'kfd-audit scan' only; use text, json or markdown here"
        );
    }
    match &cli.command {
        Command::Scan(args) => cmd_scan(cli, args, out),
        Command::Baseline(cmd) => cmd_baseline(cli, cmd, out),
        Command::Plan(args) => plan::cmd_plan(cli, args, out),
        Command::Diff(args) => diff::cmd(cli, &args.trees, &args.paths, args.context, out),
        Command::Restore(args) => crate::app::restore::restore(cli, args, out),
        Command::Undo(args) => crate::app::restore::undo(cli, args, out),
        Command::Demo(args) => crate::app::demo::cmd(cli, args, out),
        Command::Completions { shell } => {
            clap_complete::generate(*shell, &mut Cli::command(), "kfd-audit", out);
            Ok(Outcome::Clean)
        }
        Command::Man => {
            clap_mangen::Man::new(Cli::command()).render(out)?;
            Ok(Outcome::Clean)
        }
        Command::Rules(cmd) => crate::app::rules::run(cli, cmd, out),
    }
}

/// The binary's entry point.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match run(&cli, &mut out) {
        Ok(outcome) => outcome.into(),
        Err(err) => {
            // A closed pipe (`kfd-audit scan | head`) is not an error of ours.
            if err
                .downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
            {
                return ExitCode::SUCCESS;
            }
            eprintln!("kfd-audit: error: {}", term::escape(&format!("{err:#}")));
            Outcome::Failed.into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }
}
