//! `kfd-audit scan`: the whole audit, rendered in the format asked for.

use crate::app::audit::{self, AuditOptions};
use crate::app::{Cli, Format, ScanArgs};
use crate::exit::Outcome;
use crate::io::root::Root;
use crate::recovery::shell_quote;
use crate::reference::LoadOptions;
use crate::report::{self, Report, TextOptions};
use crate::scan::{self, ScanOptions};
use crate::system::Section;
use crate::term;
use std::io::Write;

/// The audit `scan` runs: every part the user selected, clean content looked for.
pub(crate) fn audit_options(cli: &Cli, args: &ScanArgs) -> AuditOptions {
    AuditOptions {
        trees: args.trees.trees.clone(),
        sections: if args.sections.is_empty() {
            Section::ALL.to_vec()
        } else {
            args.sections.iter().map(|s| Section::from(*s)).collect()
        },
        scan: ScanOptions {
            scope: args.scope.as_deref().map(scan::scope_prefix),
            refs: LoadOptions {
                lenient: args.trees.lenient,
            },
            clean_content: true,
            diff: args.diff,
            max_file_size: args.trees.max_file_size,
        },
        rule_dirs: cli.rules.clone(),
        run_rules: !args.no_rules,
        dkms: true,
        system: true,
        rocm_packages: args.rocm_packages.clone(),
        progress: !cli.quiet,
    }
}

/// How to call kfd-audit again on the same system: a follow-up command without the
/// `--root` that was used would act on another system.
pub(crate) fn again(cli: &Cli) -> String {
    if cli.root == std::path::Path::new("/") {
        "kfd-audit".to_string()
    } else {
        format!("kfd-audit --root {}", shell_quote(&term::path(&cli.root)))
    }
}

pub(crate) fn cmd_scan(cli: &Cli, args: &ScanArgs, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    let root = Root::open(&cli.root)?;
    let audit = audit::run(&root, &audit_options(cli, args))?;
    let mut report = Report::build(root.dir(), &audit.scans, args.all_files);
    if audit.trees_checked {
        report = report.with_module_backups(&audit.module_backups);
        if let Some(state) = audit.dkms.clone() {
            report.attach_dkms(state);
        }
        report.attach_build(audit.build.clone());
    }
    report.set_trees_checked(audit.trees_checked);
    report.again = again(cli);
    report.tree_args = args
        .trees
        .trees
        .iter()
        .map(|t| format!(" --tree {}", shell_quote(&term::path(t))))
        .collect();
    if let Some(system) = audit.system.clone() {
        report.add_system(system);
    }
    let scans = &audit.scans;
    match cli.format {
        Format::Json => out.write_all(report.to_json().as_bytes())?,
        Format::Markdown => out.write_all(report::render_markdown(&report).as_bytes())?,
        Format::Prometheus => out.write_all(
            crate::report::prometheus::render(&report, scans, std::time::SystemTime::now())
                .as_bytes(),
        )?,
        Format::Text => {
            let text = report::render_text(
                &report,
                &TextOptions {
                    color: term::use_color(cli.color.into()),
                    verbose: cli.verbose > 0,
                    width: term::columns(),
                },
            );
            if cli.quiet {
                out.write_all(text.lines().next().unwrap_or_default().as_bytes())?;
                out.write_all(b"\n")?;
            } else {
                // The full report (-v) and diffs are long: a pager on a terminal, as git does.
                crate::pager::page(
                    &text,
                    (cli.verbose > 0 || args.diff) && cli.pager_enabled(),
                    out,
                )?;
            }
        }
    }
    Ok(report.outcome())
}
