//! Command-line interface: argument definitions and dispatch to the library.
//! Errors become one `kfd-audit: error: ...` line and exit code 2.

pub(crate) mod audit;
pub(crate) mod baseline;
pub(crate) mod demo;
pub(crate) mod diff;
pub(crate) mod explain;
pub(crate) mod plan;
pub(crate) mod restore;
pub(crate) mod rules;
pub(crate) mod scan;

pub(crate) use baseline::BaselineCommand;

use crate::app::audit::AuditOptions;
use crate::error::Error;
use crate::exit::Outcome;
use crate::io::root::Root;
use crate::reference::LoadOptions;
use crate::scan::{self as scan_engine, ScanOptions};
use crate::system::Section;
use crate::term::{self, ColorChoice};
use crate::tree::Tree;
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
    pub(crate) root: PathBuf,

    /// Output format
    #[arg(long, global = true, value_enum, default_value_t = Format::Text)]
    pub(crate) format: Format,

    /// When to color the output (NO_COLOR and TERM=dumb turn off 'auto')
    #[arg(long, global = true, value_enum, default_value_t = ColorArg::Auto)]
    pub(crate) color: ColorArg,

    /// Print less: only the summary and errors
    #[arg(short, long, global = true)]
    pub(crate) quiet: bool,

    /// Print more: also clean files and details
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub(crate) verbose: u8,

    /// Never page long output (without it, on a terminal, $PAGER or less -FRX shows
    /// diff, scan -v and explain when they do not fit on the screen)
    #[arg(long, global = true)]
    pub(crate) no_pager: bool,

    /// Add the rules in DIR/*.toml to the built-in ones (repeatable)
    #[arg(long = "rules", global = true, value_name = "DIR")]
    pub(crate) rules: Vec<PathBuf>,

    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    Text,
    Json,
    Markdown,
    /// node_exporter textfile metrics (scan only)
    Prometheus,
}

/// `--color`: the clap face of [`ColorChoice`], which the terminal code knows
/// without knowing clap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub(crate) enum ColorArg {
    #[default]
    Auto,
    Always,
    Never,
}

impl From<ColorArg> for ColorChoice {
    fn from(c: ColorArg) -> ColorChoice {
        match c {
            ColorArg::Auto => ColorChoice::Auto,
            ColorArg::Always => ColorChoice::Always,
            ColorArg::Never => ColorChoice::Never,
        }
    }
}

/// `--sections`: the clap face of [`Section`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, ValueEnum)]
pub(crate) enum SectionArg {
    /// The DKMS source trees under /usr/src, their DKMS state and module backups
    Tree,
    /// The running driver: /sys/class/kfd/kfd/topology
    Live,
    /// Module options (modprobe.d) and the kernel command line (/proc/cmdline, GRUB)
    #[value(alias = "modopts", alias = "module-options")]
    Options,
    /// ROCm packages' files against dpkg, and HSA_OVERRIDE_GFX_VERSION
    Rocm,
}

impl From<SectionArg> for Section {
    fn from(s: SectionArg) -> Section {
        match s {
            SectionArg::Tree => Section::Tree,
            SectionArg::Live => Section::Live,
            SectionArg::Options => Section::Options,
            SectionArg::Rocm => Section::Rocm,
        }
    }
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
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
    /// Print a rule's full text: what it finds, why it matters, how to undo it, examples
    Explain(crate::app::explain::ExplainArgs),
}

#[derive(Debug, Args)]
pub(crate) struct DiffArgs {
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
pub(crate) struct TreeArgs {
    /// Audit this DKMS source tree instead of every <root>/usr/src/amdgpu-* (repeatable).
    /// With --root R, PATH is a path of the audited system: /usr/src/X is read as R/usr/src/X
    #[arg(long = "tree", value_name = "PATH")]
    pub trees: Vec<PathBuf>,

    /// Report malformed reference lines and skip them instead of stopping
    #[arg(long)]
    pub lenient: bool,

    /// Do not hash files larger than SIZE (bytes, or 512M, 2G...); they are reported
    /// as unreadable [default: 1G]
    #[arg(long, value_name = "SIZE", value_parser = scan_engine::parse_size)]
    pub max_file_size: Option<u64>,
}

#[derive(Debug, Args)]
pub(crate) struct ScanArgs {
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
    pub sections: Vec<SectionArg>,

    /// Package-name patterns (comma-separated, * and ? as in the shell) whose dpkg
    /// md5sums the rocm section verifies [default: rocm-core*,hsa-rocr*,hip-runtime-amd*,...]
    #[arg(long, value_delimiter = ',', value_name = "PATTERNS")]
    pub rocm_packages: Vec<String>,
}

#[derive(Debug, Args)]
pub(crate) struct PlanArgs {
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

impl Cli {
    /// Whether long output may go through a pager (`--no-pager` says no; the pager
    /// itself also needs stdout to be a terminal).
    pub(crate) fn pager_enabled(&self) -> bool {
        !self.no_pager
    }
}

/// Resolves the trees to work on: those named with --tree, else all discovered.
pub(crate) fn select_trees(root: &Root, args: &TreeArgs) -> Result<Vec<Tree>, Error> {
    audit::discover(root, &args.trees)
}

impl TreeArgs {
    /// The audit of commands that judge whole trees (plan, restore, diff): the
    /// user's trees, reference and size settings, no scope, no diff, clean content
    /// looked for; no rules, no DKMS state and no system sections unless the command
    /// asks for them.
    pub(crate) fn audit_options(&self, cli: &Cli) -> AuditOptions {
        AuditOptions {
            trees: self.trees.clone(),
            sections: Vec::new(),
            scan: ScanOptions {
                refs: LoadOptions {
                    lenient: self.lenient,
                },
                max_file_size: self.max_file_size,
                clean_content: true,
                ..ScanOptions::default()
            },
            rule_dirs: cli.rules.clone(),
            run_rules: false,
            dkms: false,
            system: false,
            rocm_packages: Vec::new(),
            progress: false,
        }
    }
}

/// Runs a parsed command line, writing the command's output to `out`.
pub(crate) fn run(cli: &Cli, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    if cli.format == Format::Prometheus && !matches!(cli.command, Command::Scan(_)) {
        anyhow::bail!(
            "--format prometheus is for 'kfd-audit scan' only; use text, json or markdown here"
        );
    }
    match &cli.command {
        Command::Scan(args) => scan::cmd_scan(cli, args, out),
        Command::Baseline(cmd) => baseline::cmd_baseline(cli, cmd, out),
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
        Command::Explain(args) => crate::app::explain::cmd(cli, args, out),
    }
}

/// The binary's entry point.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let result = run(&cli, &mut out);
    // Counters for tests and measurements (how often the costly steps ran), never
    // on stdout, which belongs to the report.
    if std::env::var_os("KFD_AUDIT_STATS").is_some() {
        eprintln!(
            "kfd-audit: stats: {} package archive read(s)",
            crate::content::archive::reads()
        );
    }
    match result {
        Ok(outcome) => outcome.into(),
        Err(err) => {
            // A closed pipe (`kfd-audit scan | head`) is not an error of ours.
            if err
                .downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
            {
                return ExitCode::SUCCESS;
            }
            // Ctrl-C at a prompt: the shell's code for a command ended by SIGINT.
            if let Some(i) = err.downcast_ref::<crate::restore::prompt::Interrupted>() {
                eprintln!("kfd-audit: {i}");
                return ExitCode::from(130);
            }
            eprintln!("kfd-audit: error: {}", term::escape(&one_line(&err)));
            Outcome::Failed.into()
        }
    }
}

/// The error and its causes on one line. Our typed errors already print their source
/// (`path: No such file or directory`), so a cause whose text is already there is not
/// repeated (anyhow's `{:#}` would print it twice).
fn one_line(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
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
