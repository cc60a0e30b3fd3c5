//! The recovery plan for people (text), bug reports (Markdown) and tools (JSON). The
//! plan is decided in [`super::plan`]; nothing here changes what it says.

use super::plan::{RecoveryPlan, RecoveryStep, StepKind, TreePlan};
use crate::dkms;
use crate::term::{self, plural};
use std::fmt::Write as _;

fn step_tag(st: &RecoveryStep) -> &'static str {
    match (st.runs, st.kind) {
        (true, _) => "",
        (false, StepKind::Restore) => "  [by hand: not run by plan --run]",
        (false, _) => "  [by hand]",
    }
}

/// The plan for a person at a terminal.
pub(crate) fn render_text(plan: &RecoveryPlan) -> String {
    let mut out = String::new();
    head_text(&mut out, plan, true);
    steps_text(&mut out, plan, true);
    notes_text(&mut out, plan);
    fallback_text(&mut out, plan, false);
    out
}

/// The plan right before `plan --run` asks: the same facts, but the steps come
/// last, so that the commands stand right above the question on an 80x25 console;
/// what to do if the machine does not boot comes before them. `quiet` leaves out
/// the trees' details and each step's reason.
pub(crate) fn render_text_for_confirm(plan: &RecoveryPlan, quiet: bool) -> String {
    let mut out = String::new();
    head_text(&mut out, plan, !quiet);
    if !quiet {
        notes_text(&mut out, plan);
    }
    fallback_text(&mut out, plan, quiet);
    // A step and its reason take two lines; with many steps the reasons would push
    // the first commands off the screen, so they are left out then.
    let why = !quiet && plan.steps.len() * 2 <= CONFIRM_ROOM;
    steps_text(&mut out, plan, why);
    out
}

/// The screen lines the steps may take above the question (25 rows, minus the
/// question, the "Steps" title and a blank line).
const CONFIRM_ROOM: usize = 22;

fn head_text(out: &mut String, plan: &RecoveryPlan, trees: bool) {
    let active = plan.trees.iter().filter(|t| t.needs_recovery).count();
    if plan.steps.is_empty() {
        let _ = writeln!(
            out,
            "kfd-audit plan: nothing to do ({} checked)",
            plural(plan.trees.len(), "tree")
        );
    } else {
        let _ = writeln!(
            out,
            "kfd-audit plan: {} for {}{}",
            plural(plan.steps.len(), "step"),
            plural(active, "tree"),
            plan.chroot
                .as_ref()
                .map(|c| format!(
                    " (system mounted at {}; commands run in chroot)",
                    term::escape(c)
                ))
                .unwrap_or_default()
        );
    }
    if plan.trees.is_empty() {
        let _ = writeln!(
            out,
            "no amdgpu DKMS tree under {}/usr/src (name one with --tree PATH)",
            plan.root.trim_end_matches('/')
        );
    }
    if !trees {
        return;
    }
    if let Some(k) = &plan.running_kernel {
        let _ = writeln!(out, "running kernel: {}", term::escape(k));
    }
    for t in &plan.trees {
        tree_text(out, t);
    }
}

fn steps_text(out: &mut String, plan: &RecoveryPlan, why: bool) {
    if plan.steps.is_empty() {
        return;
    }
    let _ = writeln!(out, "\nSteps (as root, in this order):");
    for st in &plan.steps {
        let _ = writeln!(
            out,
            "  {:>2}. {}{}",
            st.number,
            term::escape(&st.command),
            step_tag(st)
        );
        if why {
            let _ = writeln!(out, "      {}", term::escape(&st.why));
        }
    }
}

fn notes_text(out: &mut String, plan: &RecoveryPlan) {
    for n in &plan.notes {
        let _ = writeln!(out, "note: {}", term::escape(n));
    }
}

/// What to do if the machine does not boot; `short`: its first line only.
fn fallback_text(out: &mut String, plan: &RecoveryPlan, short: bool) {
    if plan.steps.is_empty() {
        return;
    }
    if short {
        if let Some(f) = plan.fallback.first() {
            let _ = writeln!(out, "If the machine does not boot: {}", term::escape(f));
        }
        return;
    }
    let _ = writeln!(out, "\nIf the machine does not boot:");
    for (i, f) in plan.fallback.iter().enumerate() {
        let _ = writeln!(out, "  {}. {}", i + 1, term::escape(f));
    }
}

/// One tree: why it needs recovery (or not), its sources' last change, its kernels
/// and notes.
fn tree_text(out: &mut String, t: &TreePlan) {
    let _ = writeln!(
        out,
        "\n{} ({} {})",
        term::escape(&t.path),
        term::escape(&t.package),
        term::escape(&t.version)
    );
    if t.needs_recovery {
        for r in &t.reasons {
            let _ = writeln!(out, "  needs recovery: {}", term::escape(r));
        }
    } else {
        let _ = writeln!(
            out,
            "  nothing to do: the sources match their references and no module was built from changed sources"
        );
    }
    if let Some(c) = t.dkms.changes.newest_change {
        let _ = writeln!(
            out,
            "  sources last changed {} ({})",
            dkms::format_time(c),
            term::escape(t.dkms.changes.newest_change_file.as_deref().unwrap_or("?"))
        );
    }
    for k in &t.dkms.kernels {
        out.push_str(&dkms::kernel_text(k, "  "));
    }
    for n in t.dkms.notes.iter().chain(&t.notes) {
        let _ = writeln!(out, "  note: {}", term::escape(n));
    }
}

fn md_code(s: &str) -> String {
    let ticks = if s.contains('`') { "``" } else { "`" };
    format!("{ticks}{}{ticks}", s.replace('\n', " "))
}

/// The plan as Markdown, for a bug report.
pub(crate) fn render_markdown(plan: &RecoveryPlan) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# kfd-audit recovery plan\n");
    let _ = writeln!(out, "- Root: {}", md_code(&plan.root));
    if let Some(c) = &plan.chroot {
        let _ = writeln!(
            out,
            "- Commands run in: {}",
            md_code(&format!("chroot {c}"))
        );
    }
    if let Some(k) = &plan.running_kernel {
        let _ = writeln!(out, "- Running kernel: {}", md_code(k));
    }
    if let Some(t) = &plan.initramfs_tool {
        let _ = writeln!(out, "- Initramfs tool: {}", md_code(t));
    }
    for t in &plan.trees {
        tree_markdown(&mut out, t);
    }
    if !plan.steps.is_empty() {
        let _ = writeln!(out, "\n## Steps\n");
        for st in &plan.steps {
            let _ = writeln!(
                out,
                "{}. {}{} — {}",
                st.number,
                md_code(&st.command),
                if st.runs { "" } else { " *(by hand)*" },
                st.why
            );
        }
    }
    if !plan.notes.is_empty() {
        let _ = writeln!(out, "\n## Notes\n");
        for n in &plan.notes {
            let _ = writeln!(out, "- {n}");
        }
    }
    if !plan.steps.is_empty() {
        let _ = writeln!(out, "\n## If the machine does not boot\n");
        for (i, f) in plan.fallback.iter().enumerate() {
            let _ = writeln!(out, "{}. {f}", i + 1);
        }
    }
    out
}

/// One tree as Markdown: its reasons, a table of its kernels, its notes.
fn tree_markdown(out: &mut String, t: &TreePlan) {
    let _ = writeln!(
        out,
        "\n## {} ({} {})\n",
        md_code(&t.path),
        t.package,
        t.version
    );
    if t.needs_recovery {
        for r in &t.reasons {
            let _ = writeln!(out, "- Needs recovery: {r}");
        }
    } else {
        let _ = writeln!(out, "- Nothing to do.");
    }
    if !t.dkms.kernels.is_empty() {
        let _ = writeln!(
            out,
            "\n| kernel | module | built | installed | verdict |\n|---|---|---|---|---|"
        );
        for k in &t.dkms.kernels {
            let module = if k.installed.is_empty() {
                if k.built.is_empty() {
                    "-".to_string()
                } else {
                    "built, not installed".to_string()
                }
            } else {
                k.installed
                    .iter()
                    .map(|m| md_code(&m.path))
                    .collect::<Vec<_>>()
                    .join("<br>")
            };
            let mut name = k.kernel.clone();
            if k.running {
                name.push_str(" (running)");
            }
            if !k.headers {
                name.push_str(" (no headers)");
            }
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} |",
                md_code(&name),
                module,
                k.built_at
                    .map(dkms::format_time)
                    .unwrap_or_else(|| "-".into()),
                k.installed_at
                    .map(dkms::format_time)
                    .unwrap_or_else(|| "-".into()),
                k.verdict.replace('|', "\\|")
            );
        }
    }
    for n in t.dkms.notes.iter().chain(&t.notes) {
        let _ = writeln!(out, "\n> {n}");
    }
    for k in &t.dkms.kernels {
        for n in &k.notes {
            let _ = writeln!(out, "\n> {}: {n}", k.kernel);
        }
    }
}

/// The plan as JSON, for tools (the model serialized as it is).
pub(crate) fn render_json(plan: &RecoveryPlan) -> String {
    serde_json::to_string_pretty(plan).expect("plan serializes") + "\n"
}
