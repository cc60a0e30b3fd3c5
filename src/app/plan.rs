//! `kfd-audit plan`: print the recovery plan, or run it with `--run`.

use crate::app::{self, Cli, Format, PlanArgs};
use crate::dkms::DkmsState;
use crate::exit::Outcome;
use crate::io::root::Root;
use crate::recovery::{
    build, render_json, render_markdown, render_text, run_command, PlanOptions, TerminalConfirm,
};
use crate::scan::TreeScan;
use std::io::{IsTerminal, Write};

/// `kfd-audit plan`: print the plan, or with `--run` execute it.
pub fn cmd_plan(cli: &Cli, args: &PlanArgs, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    let root = Root::open(&cli.root)?;
    let trees = app::select_trees(&root, &args.trees)?;
    let opts = args.trees.scan_options();
    let scans: Vec<TreeScan> = crate::app::scan_all(&root, &trees, &opts, None)?;
    let state = DkmsState::collect(&root, &scans);
    let plan = build(&root, &scans, &state, &PlanOptions::for_root(&root));
    if args.run {
        if cli.format != Format::Text {
            anyhow::bail!("plan --run streams the commands' output as text: leave out --format");
        }
        let tty = std::io::stdin().is_terminal();
        return run_command(&plan, args.yes, tty, out, &mut TerminalConfirm);
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
