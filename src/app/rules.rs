//! `kfd-audit rules list` and `kfd-audit rules check FILE...`, and loading the rule
//! set a command runs with (built-ins plus `--rules DIR`).

use crate::app::{Cli, Format};
use crate::exit::Outcome;
use crate::rules::{Rule, RuleSet};
use crate::term;
use clap::Subcommand;
use serde::Serialize;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, Subcommand)]
pub(crate) enum RulesCommand {
    /// List the rules in effect (built-in and --rules DIR); 'kfd-audit explain RULE-ID'
    /// prints one in full
    List,
    /// Check rule files: TOML syntax, unknown keys, regexes, duplicate ids and each
    /// rule's examples. Without FILE, checks the rules in effect.
    Check {
        /// Rule files (*.toml) to check
        #[arg(value_name = "FILE")]
        files: Vec<PathBuf>,
    },
}

/// The built-in rules plus every `--rules DIR`.
pub(crate) fn load(dirs: &[PathBuf]) -> anyhow::Result<RuleSet> {
    let mut set = RuleSet::builtin();
    for d in dirs {
        set.load_dir(d)?;
    }
    Ok(set)
}

#[derive(Serialize)]
struct RuleRow<'a> {
    id: &'a str,
    severity: &'a str,
    scope: &'a str,
    title: &'a str,
    files: &'a [String],
    origin: String,
    examples: usize,
    /// Driver versions the rule was run on, clean, in whole-file mode.
    checked: &'a [String],
}

fn row(r: &Rule) -> RuleRow<'_> {
    RuleRow {
        id: &r.id,
        severity: r.severity.as_str(),
        scope: r.scope.as_str(),
        title: &r.title,
        files: &r.file_globs,
        origin: format!("{}:{}", term::path(&r.origin), r.line),
        examples: r.examples.len(),
        checked: &r.checked,
    }
}

pub(crate) fn run(cli: &Cli, cmd: &RulesCommand, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    match cmd {
        RulesCommand::List => {
            let set = load(&cli.rules)?;
            let rows: Vec<RuleRow> = set.rules().iter().map(row).collect();
            match cli.format {
                Format::Json => {
                    serde_json::to_writer_pretty(&mut *out, &rows)?;
                    writeln!(out)?;
                }
                Format::Markdown => {
                    writeln!(
                        out,
                        "| id | severity | scope | title | files | checked on |"
                    )?;
                    writeln!(out, "|---|---|---|---|---|---|")?;
                    for r in &rows {
                        writeln!(
                            out,
                            "| {} | {} | {} | {} | `{}` | {} |",
                            r.id,
                            r.severity,
                            r.scope,
                            r.title.replace('|', "\\|"),
                            r.files.join("`, `"),
                            r.checked.join(", ")
                        )?;
                    }
                }
                Format::Text | Format::Prometheus => {
                    for r in &rows {
                        writeln!(
                            out,
                            "{:<18} {:<8} {:<10} {}",
                            r.id,
                            r.severity,
                            r.scope,
                            term::escape(r.title)
                        )?;
                        if !r.checked.is_empty() {
                            writeln!(
                                out,
                                "{:<18} checked on: {}",
                                "",
                                term::escape(&r.checked.join(", "))
                            )?;
                        }
                        if cli.verbose > 0 {
                            writeln!(
                                out,
                                "{:<18} files: {}  ({})",
                                "",
                                term::escape(&r.files.join(" ")),
                                r.origin
                            )?;
                        }
                    }
                    writeln!(
                        out,
                        "{} rules; 'kfd-audit explain RULE-ID' prints one in full",
                        rows.len()
                    )?;
                }
            }
            Ok(Outcome::Clean)
        }
        RulesCommand::Check { files } => check(cli, files, out),
    }
}

/// Checks rule files; every problem is one `file:line: message` line. Exit 2 if any.
fn check(cli: &Cli, files: &[PathBuf], out: &mut dyn Write) -> anyhow::Result<Outcome> {
    let mut errors = 0usize;
    // Ids must be unique against the built-ins and among the files checked.
    let mut set = RuleSet::builtin();
    let targets: Vec<PathBuf> = if files.is_empty() {
        for d in &cli.rules {
            if let Err(e) = set.load_dir(d) {
                writeln!(out, "{}", term::escape(&e.to_string()))?;
                errors += 1;
            }
        }
        let failures = set.run_examples();
        errors += write_failures(out, &failures)?;
        writeln!(
            out,
            "{} rules, {} examples: {}",
            set.rules().len(),
            set.rules().iter().map(|r| r.examples.len()).sum::<usize>(),
            if errors == 0 { "OK" } else { "FAILED" }
        )?;
        return Ok(if errors == 0 {
            Outcome::Clean
        } else {
            Outcome::Failed
        });
    } else {
        files.to_vec()
    };
    for path in &targets {
        match check_one(&mut set, path) {
            Ok((rules, examples, failures)) => {
                errors += write_failures(out, &failures)?;
                if failures.is_empty() {
                    writeln!(
                        out,
                        "{}: OK ({rules} rules, {examples} examples)",
                        term::path(path)
                    )?;
                }
            }
            Err(e) => {
                writeln!(out, "{}", term::escape(&e.to_string()))?;
                errors += 1;
            }
        }
    }
    if errors > 0 {
        writeln!(
            out,
            "{errors} problem{} in rule files",
            if errors == 1 { "" } else { "s" }
        )?;
        Ok(Outcome::Failed)
    } else {
        Ok(Outcome::Clean)
    }
}

/// One `file:line: message` line per failed example, as compilers print; the count.
fn write_failures(
    out: &mut dyn Write,
    failures: &[crate::rules::ExampleFailure],
) -> std::io::Result<usize> {
    for f in failures {
        writeln!(
            out,
            "{}:{}: {}",
            term::path(&f.origin),
            f.line,
            term::escape(&f.message)
        )?;
    }
    Ok(failures.len())
}

fn check_one(
    set: &mut RuleSet,
    path: &Path,
) -> crate::error::Result<(usize, usize, Vec<crate::rules::ExampleFailure>)> {
    let rules = RuleSet::parse_file(path)?;
    let ids: Vec<String> = rules.iter().map(|r| r.id.clone()).collect();
    set.add(rules)?;
    let mut own = RuleSet::default();
    for id in &ids {
        if let Some(r) = set.get(id) {
            own.add(vec![r.clone()])?;
        }
    }
    let examples = own.rules().iter().map(|r| r.examples.len()).sum();
    Ok((ids.len(), examples, own.run_examples()))
}
