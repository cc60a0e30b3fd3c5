//! The sections beyond the tree (running driver, module options, ROCm user space) as
//! text and Markdown. The sections collect their findings and details in
//! [`crate::system`]; how they read to a person is decided here, beside the rest of the
//! report, with the same colours.

use crate::finding::Severity;
use crate::system::{SectionStatus, Sections, SystemFinding};
use crate::term::{self, paint, painted_severity, severity_style, BOLD, RED, YELLOW};
use std::fmt::Write as _;

/// Findings of a section shown one line each in the default report before the
/// rest are counted.
const SYSTEM_SHOWN: usize = 4;

/// Each finding with where it is (`file:line`), its title, its backups, why and fix.
fn render_findings(out: &mut String, findings: &[SystemFinding], color: bool) {
    for f in findings {
        let at = location(f);
        let _ = writeln!(
            out,
            "  {} {} {}: {}",
            painted_severity(color, f.finding.severity),
            f.finding.rule,
            term::escape(&at),
            term::escape(&f.finding.text)
        );
        if !f.finding.title.is_empty() {
            let _ = writeln!(out, "      {}", term::escape(&f.finding.title));
        }
        for b in &f.backups {
            let verdict = serde_json::to_value(b.verdict)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default();
            let _ = writeln!(out, "      backup {}: {}", term::escape(&b.path), verdict);
        }
        let _ = writeln!(out, "      why: {}", term::escape(f.finding.why.trim()));
        let _ = writeln!(out, "      fix: {}", term::escape(f.finding.fix.trim()));
    }
}

/// A section's heading: its title, what it read, and its verdict (findings above
/// info count): `running driver (node 1 0x731f Navi10 gfx1030): 2 to fix`.
fn section_heading(
    title: &str,
    status: SectionStatus,
    summary: &str,
    findings: &[SystemFinding],
    color: bool,
) -> String {
    let counted = findings
        .iter()
        .filter(|f| f.finding.severity > Severity::Info)
        .count();
    let verdict = match (status, counted) {
        (SectionStatus::Absent, 0) => "nothing to check".to_string(),
        (_, 0) => "clean".to_string(),
        (_, n) => paint(color, RED, &format!("{n} to fix")),
    };
    format!("{} ({}): {}", paint(color, BOLD, title), summary, verdict)
}

/// Where a finding is: `file:line`, or the file alone.
fn location(f: &SystemFinding) -> String {
    if f.finding.line > 0 {
        format!("{}:{}", f.source, f.finding.line)
    } else {
        f.source.clone()
    }
}

/// One section: its title, what it read, its verdict (findings above info count),
/// its notes and its findings.
fn render_section(
    out: &mut String,
    title: &str,
    status: SectionStatus,
    notes: &[String],
    summary: &str,
    findings: &[SystemFinding],
    color: bool,
) {
    let _ = writeln!(
        out,
        "\n{}",
        section_heading(title, status, summary, findings, color)
    );
    for n in notes {
        let _ = writeln!(
            out,
            "  {} {}",
            paint(color, YELLOW, "note:"),
            term::escape(n)
        );
    }
    render_findings(out, findings, color);
}

/// One section to render: title, status, notes, what it read, findings.
type SectionView<'a> = (
    &'static str,
    SectionStatus,
    &'a [String],
    String,
    &'a [SystemFinding],
);

/// The sections that ran, each as (title, status, notes, what it read, findings), in
/// the order they print.
fn sections_to_render<'a>(
    live: Option<&'a [SystemFinding]>,
    options: Option<&'a [SystemFinding]>,
    rocm: Option<&'a [SystemFinding]>,
    sections: &'a Sections,
) -> Vec<SectionView<'a>> {
    let mut out = Vec::new();
    if let (Some(findings), Some(s)) = (live, &sections.live) {
        let gpus: Vec<String> = s
            .nodes
            .iter()
            .filter(|n| n.kind != "cpu")
            .map(|n| {
                format!(
                    "node {} {}{}{}",
                    n.node,
                    n.device_id.as_deref().unwrap_or("?"),
                    n.asic.as_ref().map(|a| format!(" {a}")).unwrap_or_default(),
                    n.gfx_target_version
                        .map(|v| format!(" {}", crate::gpu_table::gfx_name(v)))
                        .unwrap_or_default()
                )
            })
            .collect();
        let summary = if s.nodes.is_empty() {
            "no KFD topology".to_string()
        } else if gpus.is_empty() {
            format!("{} nodes, no GPU", s.nodes.len())
        } else {
            gpus.join(", ")
        };
        out.push((
            "running driver",
            s.status,
            s.notes.as_slice(),
            summary,
            findings,
        ));
    }
    if let (Some(findings), Some(s)) = (options, &sections.module_options) {
        let summary = format!("{} files read", s.files.len());
        out.push((
            "module options",
            s.status,
            s.notes.as_slice(),
            summary,
            findings,
        ));
    }
    if let (Some(findings), Some(s)) = (rocm, &sections.rocm) {
        let files: usize = s.packages.iter().map(|p| p.files).sum();
        let summary = format!("{} packages, {} files", s.packages.len(), files);
        out.push((
            "ROCm user space",
            s.status,
            s.notes.as_slice(),
            summary,
            findings,
        ));
    }
    out
}

/// Renders the sections beyond the tree as text (appended to the scan report with `-v`):
/// every note, every finding with its why and fix.
pub(crate) fn render_text(
    live: Option<&[SystemFinding]>,
    options: Option<&[SystemFinding]>,
    rocm: Option<&[SystemFinding]>,
    sections: &Sections,
    color: bool,
) -> String {
    let mut out = String::new();
    for (title, status, notes, summary, findings) in
        sections_to_render(live, options, rocm, sections)
    {
        render_section(&mut out, title, status, notes, &summary, findings, color);
    }
    out
}

/// Renders the sections beyond the tree for the default report: one heading line per
/// section, then its findings one line each, worst first, up to a count. Notes (what a
/// section did not find, such as the package patterns no installed package matched)
/// are counted on the heading and shown with `-v`.
pub(crate) fn render_short(
    live: Option<&[SystemFinding]>,
    options: Option<&[SystemFinding]>,
    rocm: Option<&[SystemFinding]>,
    sections: &Sections,
    color: bool,
    width: usize,
) -> String {
    let mut out = String::new();
    for (title, status, notes, summary, findings) in
        sections_to_render(live, options, rocm, sections)
    {
        let summary = if notes.is_empty() {
            summary
        } else {
            format!("{summary}; {}: -v", term::plural(notes.len(), "note"))
        };
        let _ = writeln!(
            out,
            "{}",
            section_heading(title, status, &summary, findings, color)
        );
        let mut sorted: Vec<&SystemFinding> = findings.iter().collect();
        sorted.sort_by_key(|f| std::cmp::Reverse(f.finding.severity));
        for f in sorted.iter().take(SYSTEM_SHOWN) {
            let _ = writeln!(
                out,
                "{}",
                placed_finding_line("  ", &f.finding, &location(f), color, width)
            );
        }
        if sorted.len() > SYSTEM_SHOWN {
            let _ = writeln!(
                out,
                "  +{} more (scan -v)",
                term::plural(sorted.len() - SYSTEM_SHOWN, "finding")
            );
        }
    }
    out
}

/// A one-line finding beyond the tree: `SEVERITY RULE-ID title (where)`. The title
/// comes first and is cut only when it alone is too long; the place follows when at
/// least [`MIN_PLACE`] columns are left, cut from the left (its file name and line
/// matter most). `-v` shows the whole place with the fix.
pub(super) fn placed_finding_line(
    indent: &str,
    f: &crate::finding::Finding,
    at: &str,
    color: bool,
    width: usize,
) -> String {
    const MIN_PLACE: usize = 16;
    let sev = f.severity.as_str().to_uppercase();
    let what = if f.title.is_empty() {
        &f.text
    } else {
        &f.title
    };
    let what = term::escape(what);
    let at = term::escape(at);
    let head = format!("{indent}{sev} {} ", term::escape(&f.rule));
    let room = width.saturating_sub(head.chars().count());
    let what = term::fit(&what, room.max(8));
    // " (" and ")" around the place.
    let left = room.saturating_sub(what.chars().count() + 3);
    let line = if left >= MIN_PLACE.min(at.chars().count()) && !at.is_empty() {
        format!("{head}{what} ({})", term::fit_left(&at, left))
    } else {
        format!("{head}{what}")
    };
    paint_severity(&line, &sev, f.severity, color)
}

/// Colours the severity word of a line that was cut to fit before (escape sequences
/// take no columns but would count as characters).
pub(super) fn paint_severity(line: &str, sev: &str, severity: Severity, color: bool) -> String {
    if !color {
        return line.to_string();
    }
    line.replacen(sev, &paint(color, severity_style(severity), sev), 1)
}

/// Renders the sections beyond the tree as Markdown.
pub(crate) fn render_markdown(findings: &[(&str, &[SystemFinding])]) -> String {
    let mut out = String::new();
    for (title, list) in findings {
        let _ = writeln!(out, "\n## {title}\n");
        if list.is_empty() {
            let _ = writeln!(out, "Nothing found.");
            continue;
        }
        for f in list.iter() {
            let at = if f.finding.line > 0 {
                format!("{}:{}", f.source, f.finding.line)
            } else {
                f.source.clone()
            };
            let _ = writeln!(
                out,
                "\n### {} {} — `{}`\n\n```\n{}\n```\n\n**Why:** {}\n\n**Fix:** {}",
                f.finding.severity.as_str().to_uppercase(),
                f.finding.rule,
                at,
                f.finding.text,
                f.finding.why.trim(),
                f.finding.fix.trim()
            );
        }
    }
    out
}
