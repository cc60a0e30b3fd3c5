//! The scan report as Markdown, for pasting into a bug report: names are kept as they
//! are (inside code spans) rather than escaped for a terminal, and `|` is escaped in
//! table cells.

use super::{BackupReport, FileReport, Report, TreeReport};
use crate::scan::FileStatus;
use crate::system::SystemFinding;
use std::fmt::Write as _;

/// Renders the report as Markdown, for pasting into a bug report.
pub(crate) fn render_markdown(r: &Report) -> String {
    let s = &r.summary;
    let mut out = String::new();
    let _ = writeln!(out, "# kfd-audit scan report\n");
    let _ = writeln!(out, "Root: `{}`\n", r.root);
    let _ = writeln!(
        out,
        "| files | modified | missing | added | critical | high | medium |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|");
    let _ = writeln!(
        out,
        "| {} | {} | {} | {} | {} | {} | {} |",
        s.files, s.modified, s.missing, s.added, s.critical, s.high, s.medium
    );
    for t in &r.trees {
        tree_markdown(&mut out, t);
    }
    if let Some(d) = &r.dkms {
        let _ = writeln!(
            out,
            "\n## DKMS state\n\n```text\n{}```",
            super::dkms::render_text(d)
        );
    }
    let system: Vec<(&str, &[SystemFinding])> = [
        ("Running driver", r.live.as_deref()),
        ("Module options", r.module_options.as_deref()),
        ("ROCm user space", r.rocm.as_deref()),
    ]
    .into_iter()
    .filter_map(|(t, f)| Some((t, f?)))
    .collect();
    out.push_str(&super::system::render_markdown(&system));
    out
}

/// One tree: its references and problems, the changed files, their backups, diffs
/// and findings.
fn tree_markdown(out: &mut String, t: &TreeReport) {
    let _ = writeln!(
        out,
        "\n## `{}` ({} {})\n\nReferences: {}\n",
        t.path,
        t.package,
        t.version,
        if t.references.is_empty() {
            "none".to_string()
        } else {
            t.references.join(", ")
        }
    );
    for problem in &t.problems {
        let _ = writeln!(out, "> {problem}\n");
    }
    let listed: Vec<_> = t
        .files
        .iter()
        .filter(|f| f.status != FileStatus::Ok || !f.findings.is_empty())
        .collect();
    if listed.is_empty() {
        let _ = writeln!(out, "No changes.");
        return;
    }
    let _ = writeln!(out, "| status | file | reference |\n|---|---|---|");
    for f in &listed {
        let _ = writeln!(
            out,
            "| {} | `{}` | {} |",
            f.status.as_str(),
            f.path.replace('|', "\\|"),
            f.reference.as_deref().unwrap_or("-")
        );
    }
    let backups: Vec<(&FileReport, &BackupReport)> = t
        .files
        .iter()
        .flat_map(|f| f.backups.iter().map(move |b| (f, b)))
        .collect();
    if !backups.is_empty() {
        let _ = writeln!(out, "\n| backup | of | verdict |\n|---|---|---|");
        for (f, b) in backups {
            let _ = writeln!(
                out,
                "| `{}` | `{}` | {} |",
                b.path.replace('|', "\\|"),
                f.path.replace('|', "\\|"),
                b.verdict.as_str()
            );
        }
    }
    for f in &listed {
        if let Some(d) = &f.diff {
            let _ = writeln!(
                out,
                "\n### `{}` against {}\n\n```diff\n{}```",
                f.path,
                f.clean.as_ref().map(|c| c.origin.as_str()).unwrap_or("?"),
                String::from_utf8_lossy(&d.unified())
            );
        }
        for finding in &f.findings {
            let _ = writeln!(
                out,
                "\n### {} {} — `{}` line {}\n\n```c\n{}\n```\n\n**Why:** {}\n\n**Fix:** {}",
                finding.severity.as_str().to_uppercase(),
                finding.rule,
                f.path,
                finding.line,
                finding.text,
                finding.why.trim(),
                finding.fix.trim()
            );
        }
    }
}
