//! The scan report as text for a person at a terminal: the summary first, then each
//! tree's changes, what dkms will build, the module backups, the DKMS state and the
//! sections beyond the tree. One function per section, in the order they print, so
//! that a section can be read (and changed) without the others.
//!
//! Every name that comes from a tree or the system is escaped ([`term::escape`]):
//! a file name must not be able to rewrite the user's screen.

use super::{BackupReport, FileReport, Report, TreeReport};
use crate::dkms::recipe::BuildAudit;
use crate::scan::{BackupVerdict, FileStatus};
use crate::term::{self, paint, plural, severity_style, BOLD, DIM, GREEN, RED, YELLOW};
use anstyle::Style;
use std::fmt::Write as _;

fn status_style(s: FileStatus) -> Style {
    match s {
        FileStatus::Ok => GREEN,
        FileStatus::Modified | FileStatus::Missing => RED,
        FileStatus::Unverified => DIM,
        _ => YELLOW,
    }
}

fn verdict_style(v: BackupVerdict) -> Style {
    match v {
        BackupVerdict::VerifiedClean => GREEN,
        BackupVerdict::SameAsCurrent | BackupVerdict::Unsafe => RED,
        BackupVerdict::Unverified => YELLOW,
    }
}

/// What a backup verdict means for the user, naming the reference it was judged by.
fn verdict_meaning(b: &BackupReport) -> String {
    let by = b.reference.as_deref().unwrap_or("no reference");
    match b.verdict {
        BackupVerdict::VerifiedClean => format!("matches {by}; usable to restore"),
        BackupVerdict::SameAsCurrent => {
            "a copy of the file as it is now, not a clean backup; never used to restore".into()
        }
        BackupVerdict::Unsafe => {
            "contains a change a rule flags as unsafe; never used to restore".into()
        }
        BackupVerdict::Unverified => match &b.detail {
            Some(d) => format!("not read: {}", d),
            None if b.reference.is_some() => {
                format!("matches neither {by} nor the current file: another version; not used to restore")
            }
            None => "no reference to judge it by; not used to restore".into(),
        },
    }
}

/// Writes a rule's multi-line text under a label, each line escaped and indented so
/// that it reads as one block under the finding.
fn labelled(out: &mut String, label: &str, text: &str) {
    for (i, line) in text.trim().lines().enumerate() {
        let head = if i == 0 {
            format!("{label}:")
        } else {
            String::new()
        };
        let _ = writeln!(out, "        {head:<4} {}", term::escape(line.trim_end()));
    }
}

/// Renders the report for a person: the summary first, then each tree's changes.
pub(crate) fn render_text(r: &Report, color: bool, verbose: bool) -> String {
    let mut out = String::new();
    summary_text(&mut out, r, color);
    for t in &r.trees {
        tree_text(&mut out, t, color, verbose);
    }
    for t in &r.trees {
        if let Some(b) = &t.build {
            build_text(&mut out, t, b, color);
        }
    }
    module_backups_text(&mut out, r, color);
    if let Some(d) = &r.dkms {
        let _ = writeln!(out);
        out.push_str(&super::dkms::render_text(d));
    }
    if let Some(sections) = &r.sections {
        out.push_str(&super::system::render_text(
            r.live.as_deref(),
            r.module_options.as_deref(),
            r.rocm.as_deref(),
            sections,
            color,
        ));
    }
    out
}

/// The verdict line and the counts: files, backups, findings.
fn summary_text(out: &mut String, r: &Report, color: bool) {
    let s = &r.summary;
    let verdict = if r.exit_code == 0 {
        paint(color, GREEN, "clean")
    } else {
        paint(color, RED, "CHANGED")
    };
    if r.trees_checked {
        let _ = writeln!(
            out,
            "{} {}: {} checked in {}: {} modified, {} missing, {} added{}",
            paint(color, BOLD, "kfd-audit scan"),
            verdict,
            plural(s.files, "file"),
            plural(s.trees, "tree"),
            s.modified,
            s.missing,
            s.added,
            if s.unverified > 0 {
                format!(", {} unverified", s.unverified)
            } else {
                String::new()
            }
        );
    } else {
        let _ = writeln!(
            out,
            "{} {}: source trees not checked (--sections)",
            paint(color, BOLD, "kfd-audit scan"),
            verdict
        );
    }
    if s.backups > 0 {
        let _ = writeln!(
            out,
            "backups: {} found next to tree files ({} unsafe), listed under the file each backs up",
            s.backups, s.unsafe_backups
        );
    }
    if s.findings > 0 {
        let _ = writeln!(
            out,
            "findings: {} critical, {} high, {} medium, {} low, {} info",
            s.critical, s.high, s.medium, s.low, s.info
        );
    }
    if r.trees.is_empty() && r.trees_checked {
        let _ = writeln!(
            out,
            "no amdgpu DKMS tree under {}/usr/src (name one with --tree PATH)",
            r.root.trim_end_matches('/')
        );
    }
}

/// One tree: its heading, its problems, then each file worth listing.
fn tree_text(out: &mut String, t: &TreeReport, color: bool, verbose: bool) {
    let refs = if t.references.is_empty() {
        "none".to_string()
    } else {
        t.references.join(", ")
    };
    let _ = writeln!(
        out,
        "\n{} ({} {}; {} checked; references: {})",
        paint(color, BOLD, &term::escape(&t.path)),
        term::escape(&t.package),
        term::escape(&t.version),
        plural(t.files_checked, "file"),
        refs
    );
    for problem in &t.problems {
        let _ = writeln!(
            out,
            "  {} {}",
            paint(color, YELLOW, "note:"),
            term::escape(problem)
        );
    }
    for f in &t.files {
        if f.status == FileStatus::Ok && f.findings.is_empty() && f.backups.is_empty() && !verbose {
            continue;
        }
        file_text(out, t, f, color);
    }
}

/// One file: its status, its findings, its backups, where clean content is, its diff.
fn file_text(out: &mut String, t: &TreeReport, f: &FileReport, color: bool) {
    let judged = f
        .reference
        .as_ref()
        .map(|r| format!("  [{r}]"))
        .unwrap_or_default();
    let detail = f
        .detail
        .as_ref()
        .map(|d| format!("  ({})", term::escape(d)))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "  {:<10} {}{}{}",
        paint(color, status_style(f.status), f.status.as_str()),
        term::escape(&f.path),
        paint(color, DIM, &judged),
        detail
    );
    for finding in &f.findings {
        let _ = writeln!(
            out,
            "      {} {} line {}: {}",
            paint(
                color,
                severity_style(finding.severity),
                &finding.severity.as_str().to_uppercase()
            ),
            finding.rule,
            finding.line,
            term::escape(&finding.text)
        );
        if !finding.title.is_empty() {
            let _ = writeln!(out, "        {}", term::escape(&finding.title));
        }
        labelled(out, "why", &finding.why);
        labelled(out, "fix", &finding.fix);
    }
    for b in &f.backups {
        let _ = writeln!(
            out,
            "      backup {}: {} ({})",
            term::escape(&b.path),
            paint(color, verdict_style(b.verdict), b.verdict.as_str()),
            verdict_meaning(b)
        );
    }
    if let Some(c) = &f.clean {
        let _ = writeln!(out, "      clean copy: {}", term::escape(&c.origin));
    } else if matches!(f.status, FileStatus::Modified | FileStatus::Missing) && t.content_checked {
        let _ = writeln!(
            out,
            "      no clean copy: no baseline copy, package archive or verified backup has it (see 'kfd-audit diff')"
        );
    }
    if let Some(d) = &f.diff {
        let marks: std::collections::BTreeSet<usize> = f.findings.iter().map(|x| x.line).collect();
        let text = d.render(&crate::diff::Render {
            color,
            escape: true,
            headers: false,
            indent: "      ",
            marks: Some(&marks),
        });
        out.push_str(&String::from_utf8_lossy(&text));
    }
}

/// What dkms will build for one tree: overrides, build-time patches, their findings.
fn build_text(out: &mut String, t: &TreeReport, b: &BuildAudit, color: bool) {
    let _ = writeln!(
        out,
        "\n{} {}",
        paint(color, BOLD, "what dkms will build for"),
        term::escape(&t.path)
    );
    for o in &b.overrides {
        let _ = writeln!(
            out,
            "  override {} sets {}",
            term::escape(&o.path),
            if o.sets.is_empty() {
                "nothing".to_string()
            } else {
                term::escape(&o.sets.join(", ")).into_owned()
            }
        );
    }
    for bp in &b.patches {
        let _ = writeln!(
            out,
            "  patch {}:{}{} changes {}",
            term::escape(&bp.path),
            bp.line,
            if bp.inline {
                " (inline here-document)"
            } else {
                ""
            },
            term::escape(&bp.targets.join(", "))
        );
    }
    for f in &b.findings {
        let target = f
            .target
            .as_ref()
            .map(|t| format!(" (in the patch to {})", term::escape(t)))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "      {} {} {}:{}{}: {}",
            paint(
                color,
                severity_style(f.finding.severity),
                &f.finding.severity.as_str().to_uppercase()
            ),
            f.finding.rule,
            term::escape(&f.path),
            f.finding.line,
            target,
            term::escape(&f.finding.text)
        );
        if !f.finding.title.is_empty() {
            let _ = writeln!(out, "        {}", term::escape(&f.finding.title));
        }
        labelled(out, "why", &f.finding.why);
        labelled(out, "fix", &f.finding.fix);
    }
}

/// Backup copies of amd modules under /lib/modules, each with its verdict.
fn module_backups_text(out: &mut String, r: &Report, color: bool) {
    if r.module_backups.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\n{}",
        paint(color, BOLD, "module backups under /lib/modules")
    );
    for m in &r.module_backups {
        let by = m
            .reference
            .as_deref()
            .unwrap_or("no package lists the module");
        let _ = writeln!(
            out,
            "  {}: {} (copy of {}; judged by {})",
            term::escape(&m.path),
            paint(color, verdict_style(m.verdict), m.verdict.as_str()),
            term::escape(&m.original),
            term::escape(by)
        );
    }
}
