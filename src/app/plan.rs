//! `kfd-audit plan`: print the recovery plan, or run it with `--run`.

use crate::app::audit::{self, AuditOptions};
use crate::app::{Cli, Format, PlanArgs};
use crate::exit::Outcome;
use crate::io::root::Root;
use crate::recovery::{
    build, render_json, render_markdown, render_text, run_command, shell_quote, PlanOptions,
    RunOptions, TerminalConfirm,
};
use std::io::{IsTerminal, Write};

/// The audit `plan` runs: the same tree part as `scan`, rules included (unless
/// `--no-rules`), so that both say the same about the same module and the plan's
/// reasons name the findings; with the DKMS state, no sections beyond the tree.
pub(crate) fn audit_options(cli: &Cli, args: &PlanArgs) -> AuditOptions {
    let mut opts = AuditOptions {
        dkms: true,
        run_rules: !args.no_rules,
        ..args.trees.audit_options(cli)
    };
    // The plan itself uses no clean bytes; the rules do (diff-aware checks).
    opts.scan.clean_content = opts.run_rules;
    opts
}

/// `kfd-audit plan`: print the plan, or with `--run` execute it.
pub(crate) fn cmd_plan(cli: &Cli, args: &PlanArgs, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    let root = Root::open(&cli.root)?;
    let audit = audit::run(&root, &audit_options(cli, args))?;
    let state = audit
        .dkms
        .as_ref()
        .expect("the plan's audit collects the DKMS state");
    let plan = build(&root, &audit.scans, state, &PlanOptions::for_root(&root));
    if args.run {
        if cli.format != Format::Text {
            anyhow::bail!("plan --run streams the commands' output as text: leave out --format");
        }
        // Advice to run it again says it the way it was called: same root, same trees.
        let mut again = format!("{} plan --run", crate::restore::plan::kfd_audit(&root));
        for t in &args.trees.trees {
            again.push_str(" --tree ");
            again.push_str(&shell_quote(&t.display().to_string()));
        }
        let opts = RunOptions {
            yes: args.yes,
            tty: std::io::stdin().is_terminal(),
            quiet: cli.quiet,
            again,
        };
        return run_command(&plan, &opts, out, &mut TerminalConfirm);
    }
    match cli.format {
        Format::Text | Format::Prometheus => out.write_all(render_text(&plan).as_bytes())?,
        Format::Markdown => out.write_all(render_markdown(&plan).as_bytes())?,
        Format::Json => out.write_all(render_json(&plan).as_bytes())?,
    }
    Ok(if plan.needs_recovery() {
        Outcome::Found
    } else {
        Outcome::Clean
    })
}
