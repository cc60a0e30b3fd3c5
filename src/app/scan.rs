//! `kfd-audit scan`: the whole audit, rendered in the format asked for.

use crate::app::audit::{self, AuditOptions};
use crate::app::{Cli, Format, ScanArgs};
use crate::exit::Outcome;
use crate::io::root::Root;
use crate::reference::LoadOptions;
use crate::report::{self, Report};
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
    report.trees_checked = audit.trees_checked;
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
            let text =
                report::render_text(&report, term::use_color(cli.color.into()), cli.verbose > 0);
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
