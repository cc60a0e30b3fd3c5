//! The sections beyond the tree (running driver, module options, ROCm user space) as
//! text and Markdown. The sections collect their findings and details in
//! [`crate::system`]; how they read to a person is decided here, beside the rest of the
//! report, with the same colours.

use crate::finding::Severity;
use crate::system::{SectionStatus, Sections, SystemFinding};
use crate::term::{self, paint, severity_style, BOLD, RED, YELLOW};
use std::fmt::Write as _;

/// Each finding with where it is (`file:line`), its title, its backups, why and fix.
fn render_findings(out: &mut String, findings: &[SystemFinding], color: bool) {
    for f in findings {
        let at = if f.finding.line > 0 {
            format!("{}:{}", f.source, f.finding.line)
        } else {
            f.source.clone()
        };
        let _ = writeln!(
            out,
            "  {} {} {}: {}",
            paint(
                color,
                severity_style(f.finding.severity),
                &f.finding.severity.as_str().to_uppercase()
            ),
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
    let counted = findings
        .iter()
        .filter(|f| f.finding.severity > Severity::Info)
        .count();
    let verdict = match (status, counted) {
        (SectionStatus::Absent, 0) => "nothing to check".to_string(),
        (_, 0) => "clean".to_string(),
        (_, n) => paint(color, RED, &format!("{n} to fix")),
    };
    let _ = writeln!(
        out,
        "\n{} ({}): {}",
        paint(color, BOLD, title),
        summary,
        verdict
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

/// Renders the sections beyond the tree as text (appended to the scan report).
pub(crate) fn render_text(
    live: Option<&[SystemFinding]>,
    options: Option<&[SystemFinding]>,
    rocm: Option<&[SystemFinding]>,
    sections: &Sections,
    color: bool,
) -> String {
    let mut out = String::new();
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
        render_section(
            &mut out,
            "running driver",
            s.status,
            &s.notes,
            &summary,
            findings,
            color,
        );
    }
    if let (Some(findings), Some(s)) = (options, &sections.module_options) {
        let summary = format!("{} files read", s.files.len());
        render_section(
            &mut out,
            "module options",
            s.status,
            &s.notes,
            &summary,
            findings,
            color,
        );
    }
    if let (Some(findings), Some(s)) = (rocm, &sections.rocm) {
        let files: usize = s.packages.iter().map(|p| p.files).sum();
        let summary = format!("{} packages, {} files", s.packages.len(), files);
        render_section(
            &mut out,
            "ROCm user space",
            s.status,
            &s.notes,
            &summary,
            findings,
            color,
        );
    }
    out
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
