//! How plans, diffs and results look: text for a person at a (recovery) console,
//! Markdown for a bug report. Every name from a tree is escaped before printing.

use super::plan::{advice, display_origin, quarantine_path, Action, RestorePlan};
use crate::io::root::Root;
use crate::term;
use std::fmt::Write as _;
use std::path::Path;

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("{n} {word}")
    } else {
        format!("{n} {word}s")
    }
}

fn algo(d: &crate::io::hash::Digest) -> &'static str {
    d.algorithm().as_str()
}

/// The one-line summary of a plan.
pub(crate) fn summary_line(plan: &RestorePlan) -> String {
    let added = match plan.added_count() {
        0 => String::new(),
        n => format!(
            ", {n} added ({} read by the build)",
            plan.added_build_count()
        ),
    };
    format!(
        "{} to restore, {} without a clean source, {} refused{added}, {} kept",
        plural(plan.item_count(), "file"),
        plan.no_source_count(),
        plan.refused_count(),
        plan.kept_count()
    )
}

/// The plan for a person.
pub(crate) fn plan_text(root: &Root, plan: &RestorePlan, run: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "kfd-audit restore plan: {}", summary_line(plan));
    if plan.trees.is_empty() {
        let _ = writeln!(
            out,
            "no amdgpu DKMS tree under {} (name one with --tree PATH)",
            term::path(&root.path("/usr/src"))
        );
    }
    for tp in &plan.trees {
        let refs = if tp.references.is_empty() {
            "none".to_string()
        } else {
            tp.references
                .iter()
                .map(|r| r.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(
            out,
            "\n{} ({} {}; references: {})",
            term::path(&tp.tree.system_path),
            term::escape(&tp.tree.package()),
            term::escape(&tp.tree.version()),
            refs
        );
        if tp.is_empty() && tp.kept.is_empty() && tp.added.is_empty() {
            let _ = writeln!(out, "  nothing to restore");
        }
        for i in &tp.items {
            let _ = writeln!(out, "  {:<8} {}", i.action.as_str(), term::path(&i.rel));
            let _ = writeln!(
                out,
                "           from {} ({} {}, as {} lists it)",
                display_origin(root, &i.origin),
                algo(&i.expected),
                i.expected,
                i.reference
            );
            match (&i.current, i.action) {
                (Some(cur), Action::Replace) => {
                    let _ = writeln!(
                        out,
                        "           current version ({} {}) is kept in {}",
                        algo(cur),
                        cur,
                        term::path(&quarantine_path(run, &tp.system_path(&i.rel)))
                    );
                }
                _ => {
                    let _ = writeln!(out, "           the file is missing; it is created");
                }
            }
        }
        for n in &tp.no_source {
            let _ = writeln!(
                out,
                "  {:<8} {} ({}; no verified clean source{})",
                "stays",
                term::path(&n.rel),
                n.status.as_str(),
                n.detail
                    .as_deref()
                    .map(|d| format!(": {}", term::escape(d)))
                    .unwrap_or_default()
            );
        }
        for r in &tp.refused {
            let _ = writeln!(
                out,
                "  {:<8} {}: {}",
                "refused",
                term::path(&r.rel),
                term::escape(&r.reason)
            );
        }
        for a in &tp.added {
            let (tag, what) = if a.builds {
                (
                    "move",
                    "added, read by the build: moved into the quarantine (undoable)",
                )
            } else {
                (
                    "added",
                    "added, not read by the build: stays unless you choose to move it",
                )
            };
            let _ = writeln!(out, "  {tag:<8} {}", term::path(&a.rel));
            let _ = writeln!(out, "           {what}");
        }
        for k in &tp.kept {
            let _ = writeln!(
                out,
                "  {:<8} {} (in no reference; nothing is ever deleted)",
                "kept",
                term::path(k)
            );
        }
        for t in &tp.leftover_temps {
            let _ = writeln!(
                out,
                "  {:<8} {} (temporary file of an interrupted run; the next restore removes it)",
                "leftover",
                term::path(t)
            );
        }
        let a = advice(root, tp);
        if !a.is_empty() {
            let _ = writeln!(out, "  for the files that stay as they are:");
            for line in a {
                let _ = writeln!(out, "    - {}", term::escape(&line));
            }
        }
    }
    out
}

/// The plan as Markdown.
pub(crate) fn plan_markdown(root: &Root, plan: &RestorePlan) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# kfd-audit restore plan\n");
    let _ = writeln!(out, "Root: `{}`\n", plan.root.display());
    let _ = writeln!(out, "{}\n", summary_line(plan));
    let cell = |s: &str| s.replace('|', "\\|").replace('`', "'");
    for tp in &plan.trees {
        let _ = writeln!(
            out,
            "## `{}` ({} {})\n",
            cell(&term::path(&tp.tree.system_path)),
            cell(&tp.tree.package()),
            cell(&tp.tree.version())
        );
        if tp.is_empty() && tp.added.is_empty() {
            let _ = writeln!(out, "Nothing to restore.\n");
        } else {
            let _ = writeln!(out, "| action | file | clean source | verified hash |");
            let _ = writeln!(out, "|---|---|---|---|");
            for i in &tp.items {
                let _ = writeln!(
                    out,
                    "| {} | `{}` | {} `{}` | {} `{}` ({}) |",
                    i.action.as_str(),
                    cell(&term::path(&i.rel)),
                    i.source,
                    cell(&display_origin(root, &i.origin)),
                    algo(&i.expected),
                    i.expected,
                    i.reference
                );
            }
            for n in &tp.no_source {
                let _ = writeln!(
                    out,
                    "| stays ({}) | `{}` | none verified | - |",
                    n.status.as_str(),
                    cell(&term::path(&n.rel))
                );
            }
            for r in &tp.refused {
                let _ = writeln!(
                    out,
                    "| refused | `{}` | {} | - |",
                    cell(&term::path(&r.rel)),
                    cell(&r.reason)
                );
            }
            for a in &tp.added {
                let _ = writeln!(
                    out,
                    "| {} | `{}` | in no reference (added) | sha256 `{}` |",
                    if a.builds {
                        "move to quarantine (read by the build)"
                    } else {
                        "stays unless chosen (not read by the build)"
                    },
                    cell(&term::path(&a.rel)),
                    a.current
                );
            }
            out.push('\n');
        }
        if !tp.kept.is_empty() {
            let _ = writeln!(out, "Kept (in no reference; nothing is ever deleted):\n");
            for k in &tp.kept {
                let _ = writeln!(out, "- `{}`", cell(&term::path(k)));
            }
            out.push('\n');
        }
        let a = advice(root, tp);
        if !a.is_empty() {
            let _ = writeln!(out, "For the files without a clean source:\n");
            for line in a {
                let _ = writeln!(out, "- {line}");
            }
            out.push('\n');
        }
    }
    out
}

/// Escapes a diff line for the terminal, keeping tabs (kernel code is indented with them).
fn safe_line(line: &str) -> String {
    line.split('\t')
        .map(|p| term::escape(p).into_owned())
        .collect::<Vec<_>>()
        .join("\t")
}

/// A unified diff from the current file to the clean one.
pub(crate) fn unified_diff(rel: &Path, current: &[u8], clean: &[u8]) -> String {
    let a = String::from_utf8_lossy(current);
    let b = String::from_utf8_lossy(clean);
    let diff = similar::TextDiff::from_lines(a.as_ref(), b.as_ref());
    let name = term::path(rel);
    let mut out = String::new();
    let _ = writeln!(out, "--- {name} (current)");
    let _ = writeln!(out, "+++ {name} (clean)");
    for hunk in diff.unified_diff().context_radius(3).iter_hunks() {
        let _ = writeln!(out, "{}", hunk.header());
        for change in hunk.iter_changes() {
            let sign = match change.tag() {
                similar::ChangeTag::Delete => '-',
                similar::ChangeTag::Insert => '+',
                similar::ChangeTag::Equal => ' ',
            };
            let line = change.value();
            let _ = writeln!(
                out,
                "{sign}{}",
                safe_line(line.strip_suffix('\n').unwrap_or(line))
            );
            if change.missing_newline() {
                let _ = writeln!(out, "\\ No newline at end of file");
            }
        }
    }
    out
}
