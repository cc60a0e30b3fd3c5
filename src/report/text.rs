//! The scan report as text for a person at a terminal, often an 80x25 Linux console
//! after a freeze, with no scrollback: the answer first. The verdict and its reason,
//! then per file its worst finding in one line (other findings on the same lines
//! folded into it), the backup verdicts one line each, one line per section with
//! nothing to say, and the next command to run. With `-v` the full report follows the
//! verdict instead: every finding with its "why" and "fix", the DKMS state and every
//! section's notes (`kfd-audit explain RULE-ID` prints one rule's texts).
//!
//! Every name that comes from a tree or the system is escaped ([`term::escape`]):
//! a file name must not be able to rewrite the user's screen.

use super::{BackupReport, FileReport, Report, TreeReport, Verdict};
use crate::dkms::recipe::BuildAudit;
use crate::dkms::state::Provenance;
use crate::scan::{BackupVerdict, FileStatus};
use crate::term::{self, paint, painted_severity, plural, BOLD, DIM, GREEN, RED, YELLOW};
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

/// How the text report is laid out.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TextOptions {
    pub color: bool,
    /// `-v`: every finding with its why and fix, clean files with `--all-files`, the
    /// whole DKMS state and every section's notes.
    pub verbose: bool,
    /// Columns the lines of the default report fit in (`-v` wraps nothing: it goes
    /// through the pager).
    pub width: usize,
}

/// Findings in a file (or section) shown one line each before the rest are counted.
const GROUPS_SHOWN: usize = 3;
/// Changed files without a finding or backup listed per tree before the rest are counted.
const QUIET_FILES_SHOWN: usize = 8;
/// Notes of a tree shown before the rest are counted.
const NOTES_SHOWN: usize = 3;

/// Renders the report for a person: the verdict and its reasons, then the short body
/// (or with `-v` the full one), then the command to run next.
pub(crate) fn render_text(r: &Report, o: &TextOptions) -> String {
    let mut out = String::new();
    headline(&mut out, r, o);
    if o.verbose {
        verbose_body(&mut out, r, o.color);
    } else {
        short_body(&mut out, r, o);
    }
    next_text(&mut out, r, o);
    out
}

/// Why the verdict is what it is, in a few words: each kind of thing found, counted.
fn reasons(r: &Report) -> Vec<String> {
    let s = &r.summary;
    let mut out = Vec::new();
    let unsafe_findings = s.critical + s.high + s.medium;
    if unsafe_findings > 0 {
        out.push(plural(unsafe_findings, "unsafe finding"));
    }
    if s.unsafe_backups > 0 {
        out.push(plural(s.unsafe_backups, "unsafe backup"));
    }
    let changed = s.modified + s.missing + s.added;
    if changed > 0 {
        out.push(format!("{} changed", plural(changed, "file")));
    }
    if s.symlinks > 0 {
        out.push(plural(s.symlinks, "symlink"));
    }
    if s.unreadable > 0 {
        out.push(format!("{} unreadable", plural(s.unreadable, "file")));
    }
    // Low findings are a reason only when nothing unsafe is (they are counted below).
    if s.low > 0 && unsafe_findings + s.unsafe_backups == 0 {
        out.push(plural(s.low, "low finding"));
    }
    if r.dkms.as_ref().is_some_and(|d| d.rebuild_due()) {
        out.push("rebuild due".to_string());
    }
    if r.nothing_verified() {
        out.push("nothing verified".to_string());
    }
    out
}

/// The first kernel whose module needs a rebuild, said plainly (the reason of a
/// "rebuild due" verdict).
fn rebuild_reason(d: &crate::dkms::DkmsState) -> String {
    let due: Vec<(&crate::dkms::PackageState, &crate::dkms::KernelState)> = d
        .packages
        .iter()
        .flat_map(|p| p.kernels.iter().map(move |k| (p, k)))
        .filter(|(_, k)| k.provenance.rebuild_due())
        .collect();
    let Some((p, k)) = due.first() else {
        return "rebuild due".to_string();
    };
    let what = match k.provenance {
        Provenance::InstalledNotBuilt => "was replaced by hand, not built by dkms",
        Provenance::SourcesChangedSinceBuild => "was built before the sources were restored",
        _ => "was built from changed sources",
    };
    let more = if due.len() > 1 {
        format!(" (+{} more)", due.len() - 1)
    } else {
        String::new()
    };
    format!(
        "the {} module of {} {what}{more}",
        term::escape(&p.name),
        term::escape(&k.kernel)
    )
}

/// The verdict line, the counts, and for "nothing verified" the way to a reference.
fn headline(out: &mut String, r: &Report, o: &TextOptions) {
    let s = &r.summary;
    let color = o.color;
    let verdict = r.verdict();
    let word = match verdict {
        Verdict::Clean => paint(color, GREEN, verdict.word()),
        _ => paint(color, RED, verdict.word()),
    };
    let counts = format!(
        "{} checked in {}: {} modified, {} missing, {} added{}",
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
    let reason = match verdict {
        Verdict::Clean if r.trees_checked => counts.clone(),
        Verdict::Clean => "source trees not checked (--sections)".to_string(),
        Verdict::RebuildDue => r.dkms.as_ref().map(rebuild_reason).unwrap_or_default(),
        Verdict::NotVerified if r.trees.is_empty() => format!(
            "no amdgpu DKMS tree found under {}/usr/src",
            r.root.trim_end_matches('/')
        ),
        Verdict::NotVerified => format!(
            "no file could be compared with a clean reference ({} unverified)",
            s.unverified
        ),
        Verdict::Unsafe | Verdict::Changed => reasons(r).join(", "),
    };
    let _ = writeln!(
        out,
        "{} {}: {}",
        paint(color, BOLD, "kfd-audit scan"),
        word,
        reason
    );
    if verdict != Verdict::Clean && r.trees_checked && !r.trees.is_empty() {
        let _ = writeln!(out, "  {counts}");
    }
    // The default report shows each backup's verdict under its file.
    if s.backups > 0 && o.verbose {
        let _ = writeln!(
            out,
            "  backups: {} next to tree files ({} unsafe), each under the file it backs up",
            s.backups, s.unsafe_backups
        );
    }
    if s.findings > 0 {
        let _ = writeln!(
            out,
            "  findings: {} critical, {} high, {} medium, {} low, {} info",
            s.critical, s.high, s.medium, s.low, s.info
        );
    }
    if verdict == Verdict::NotVerified {
        let fix = if r.trees.is_empty() {
            "name the driver's source tree with 'scan --tree PATH' (a path of the audited system), \
             or install the driver package (amdgpu-dkms) that puts it under /usr/src"
                .to_string()
        } else {
            let pkg = r
                .trees
                .iter()
                .find_map(|t| t.dpkg_package.clone())
                .unwrap_or_else(|| "amdgpu-dkms".to_string());
            format!(
                "get a clean reference: reinstall the package that owns the tree so that the package \
                 database lists its files ('apt-get install --reinstall {pkg}', or 'dnf reinstall {pkg}'), \
                 or restore kfd-audit's baseline directory (/var/lib/kfd-audit/baseline) from a backup; \
                 take a new baseline ('kfd-audit baseline create') only of a tree you know is clean"
            )
        };
        for line in term::wrap(&format!("fix: {fix}"), o.width.saturating_sub(2)) {
            let _ = writeln!(out, "  {line}");
        }
    }
}

/// The full report (`-v`): every tree's files with every finding's why and fix, the
/// build, the module backups, the DKMS state and every section with its notes.
fn verbose_body(out: &mut String, r: &Report, color: bool) {
    for t in &r.trees {
        tree_text(out, t, color, true);
    }
    for t in &r.trees {
        if let Some(b) = &t.build {
            build_text(out, t, b, color);
        }
    }
    module_backups_text(out, r, color);
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
}

/// The default report's body: one line per thing to act on.
fn short_body(out: &mut String, r: &Report, o: &TextOptions) {
    for t in &r.trees {
        short_tree(out, t, o);
    }
    for t in &r.trees {
        if let Some(b) = &t.build {
            short_build(out, t, b, o);
        }
    }
    short_module_backups(out, r, o);
    if let Some(d) = &r.dkms {
        short_dkms(out, d, o);
    }
    if let Some(sections) = &r.sections {
        out.push_str(&super::system::render_short(
            r.live.as_deref(),
            r.module_options.as_deref(),
            r.rocm.as_deref(),
            sections,
            o.color,
            o.width,
        ));
    }
}

/// A one-line finding of a tree file: `SEVERITY RULE-ID line N: title`, the title cut
/// to fit (its full text is behind `kfd-audit explain RULE-ID`).
fn tree_finding_line(
    indent: &str,
    f: &crate::finding::Finding,
    color: bool,
    width: usize,
) -> String {
    let sev = f.severity.as_str().to_uppercase();
    let what = if f.title.is_empty() {
        &f.text
    } else {
        &f.title
    };
    let head = format!("{indent}{sev} {} line {}: ", term::escape(&f.rule), f.line);
    let room = width.saturating_sub(head.chars().count());
    let line = format!("{head}{}", term::fit(&term::escape(what), room.max(8)));
    super::system::paint_severity(&line, &sev, f.severity, color)
}

/// Findings close enough to share a hunk of a unified diff (changes at most two
/// contexts apart are one hunk), worst group first. Each group is shown as its worst
/// finding with the others folded into it.
fn finding_groups(findings: &[crate::finding::Finding]) -> Vec<Vec<&crate::finding::Finding>> {
    let mut sorted: Vec<&crate::finding::Finding> = findings.iter().collect();
    sorted.sort_by_key(|f| f.line);
    let mut groups: Vec<Vec<&crate::finding::Finding>> = Vec::new();
    for f in sorted {
        match groups.last_mut() {
            Some(g) if f.line <= g.last().map_or(0, |l| l.line) + 2 * crate::diff::CONTEXT => {
                g.push(f)
            }
            _ => groups.push(vec![f]),
        }
    }
    for g in &mut groups {
        // Worst first; among equals, the earliest line.
        g.sort_by(|a, b| b.severity.cmp(&a.severity).then(a.line.cmp(&b.line)));
    }
    groups.sort_by(|a, b| {
        b[0].severity
            .cmp(&a[0].severity)
            .then(a[0].line.cmp(&b[0].line))
    });
    groups
}

/// What was folded into a group's worst finding, rules of one family written once:
/// `+5 on lines 38-42: KFD-DEVID-001, KFD-MARK-001 x2, -003, -004`.
fn folded_line(rest: &[&crate::finding::Finding], width: usize) -> String {
    let mut ids: Vec<(String, usize)> = Vec::new();
    let mut sorted: Vec<&&crate::finding::Finding> = rest.iter().collect();
    sorted.sort_by(|a, b| a.rule.cmp(&b.rule));
    for f in sorted {
        match ids.iter_mut().find(|(id, _)| *id == f.rule) {
            Some((_, n)) => *n += 1,
            None => ids.push((f.rule.clone(), 1)),
        }
    }
    let mut names: Vec<String> = Vec::new();
    let mut family = "";
    for (id, n) in &ids {
        let (fam, num) = id.rsplit_once('-').unwrap_or(("", id));
        let shown = if !fam.is_empty() && fam == family {
            format!("-{num}")
        } else {
            id.clone()
        };
        family = fam;
        let shown = term::escape(&shown).into_owned();
        names.push(if *n > 1 {
            format!("{shown} x{n}")
        } else {
            shown
        });
    }
    let lines: Vec<usize> = rest.iter().map(|f| f.line).collect();
    let (lo, hi) = (
        lines.iter().min().copied().unwrap_or(0),
        lines.iter().max().copied().unwrap_or(0),
    );
    let span = if lo == hi {
        format!("line {lo}")
    } else {
        format!("lines {lo}-{hi}")
    };
    let line = format!("      +{} on {span}: {}", rest.len(), names.join(", "));
    term::fit(&line, width).into_owned()
}

/// What a backup verdict means, in a few words (the full sentence is in `-v`).
fn verdict_short(b: &BackupReport) -> String {
    match b.verdict {
        BackupVerdict::VerifiedClean => "usable to restore".into(),
        BackupVerdict::SameAsCurrent => "a copy of the current file".into(),
        BackupVerdict::Unsafe => "has an unsafe change; never used".into(),
        BackupVerdict::Unverified => match &b.detail {
            Some(_) => "not read (-v says why); not used".into(),
            None if b.reference.is_some() => "another version; not used".into(),
            None => "no reference to judge it by; not used".into(),
        },
    }
}

/// How bad a listed file is, for ordering: worst finding, then an unsafe backup.
fn file_rank(f: &FileReport) -> (Option<crate::finding::Severity>, bool) {
    (
        f.findings.iter().map(|x| x.severity).max(),
        f.backups.iter().any(|b| b.verdict == BackupVerdict::Unsafe),
    )
}

/// One tree in the default report: its heading, its notes (cut), then per file its
/// status, its worst findings with the rest folded, and its backups; files that only
/// differ are listed up to a count.
fn short_tree(out: &mut String, t: &TreeReport, o: &TextOptions) {
    let color = o.color;
    let refs = if t.references.is_empty() {
        "none".to_string()
    } else {
        t.references.join(", ")
    };
    // The path names the package and version; -v repeats them.
    let heading = format!("{} (references: {})", term::escape(&t.path), refs);
    let _ = writeln!(
        out,
        "\n{}",
        paint(color, BOLD, &term::fit(&heading, o.width))
    );
    for problem in t.problems.iter().take(NOTES_SHOWN) {
        let line = term::fit(&term::escape(problem), o.width.saturating_sub(8)).into_owned();
        let _ = writeln!(out, "  {} {line}", paint(color, YELLOW, "note:"));
    }
    if t.problems.len() > NOTES_SHOWN {
        let _ = writeln!(
            out,
            "  +{} more notes (scan -v)",
            t.problems.len() - NOTES_SHOWN
        );
    }
    let mut files: Vec<&FileReport> = t
        .files
        .iter()
        .filter(|f| f.status != FileStatus::Ok || !f.findings.is_empty() || !f.backups.is_empty())
        .collect();
    // Worst first; the sort is stable, so equal files keep the tree's order.
    files.sort_by_key(|f| std::cmp::Reverse(file_rank(f)));
    let mut quiet_shown = 0usize;
    let mut quiet_left = 0usize;
    for f in files {
        let quiet = f.findings.is_empty() && f.backups.is_empty();
        if quiet {
            if quiet_shown == QUIET_FILES_SHOWN {
                quiet_left += 1;
                continue;
            }
            quiet_shown += 1;
        }
        short_file(out, t, f, o);
    }
    if quiet_left > 0 {
        let _ = writeln!(
            out,
            "  +{} more changed (scan -v lists them)",
            plural(quiet_left, "file")
        );
    }
}

/// One file: `modified amd/amdkfd/kfd_crat.c`, its finding groups, its backups.
fn short_file(out: &mut String, t: &TreeReport, f: &FileReport, o: &TextOptions) {
    let color = o.color;
    let clean = if f.clean.is_some() {
        ""
    } else if matches!(f.status, FileStatus::Modified | FileStatus::Missing) && t.content_checked {
        "  (no clean copy)"
    } else {
        ""
    };
    let status = f.status.as_str();
    let path = term::escape(&f.path);
    let room = o.width.saturating_sub(2 + status.len() + 1 + clean.len());
    // Statuses padded to the longest common one ("modified") so that paths align.
    let pad = " ".repeat(8usize.saturating_sub(status.len()));
    let _ = writeln!(
        out,
        "  {}{pad} {}{}",
        paint(color, status_style(f.status), status),
        term::fit_left(&path, room.saturating_sub(pad.len()).max(16)),
        clean
    );
    let groups = finding_groups(&f.findings);
    for g in groups.iter().take(GROUPS_SHOWN) {
        let _ = writeln!(out, "{}", tree_finding_line("    ", g[0], color, o.width));
        if g.len() > 1 {
            let _ = writeln!(out, "{}", folded_line(&g[1..], o.width));
        }
    }
    if groups.len() > GROUPS_SHOWN {
        let rest: usize = groups[GROUPS_SHOWN..].iter().map(Vec::len).sum();
        let _ = writeln!(
            out,
            "    +{} elsewhere in this file (scan -v)",
            plural(rest, "finding")
        );
    }
    for b in &f.backups {
        let name = b.path.rsplit('/').next().unwrap_or(&b.path);
        let verdict = b.verdict.as_str();
        let line = format!("    backup {}: {verdict} ({})", name, verdict_short(b));
        let line = term::fit(&line, o.width).into_owned();
        // Colour only the verdict word, after the line was cut to fit.
        let _ = writeln!(
            out,
            "{}",
            line.replacen(
                &format!(": {verdict}"),
                &format!(": {}", paint(color, verdict_style(b.verdict), verdict)),
                1
            )
        );
    }
    push_diff(out, f, color);
}

/// A file's diff against its clean content (`scan --diff`), its findings' lines marked.
fn push_diff(out: &mut String, f: &FileReport, color: bool) {
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

/// What dkms will build, short: the counts and the worst findings.
fn short_build(out: &mut String, t: &TreeReport, b: &BuildAudit, o: &TextOptions) {
    let heading = format!(
        "what dkms will build for {}: {}, {}",
        term::escape(&t.path),
        plural(b.overrides.len(), "override"),
        plural(b.patches.len(), "build-time patch").replace("patchs", "patches")
    );
    let _ = writeln!(
        out,
        "\n{}",
        paint(o.color, BOLD, &term::fit(&heading, o.width))
    );
    let mut findings: Vec<_> = b.findings.iter().collect();
    findings.sort_by_key(|f| std::cmp::Reverse(f.finding.severity));
    for f in findings.iter().take(GROUPS_SHOWN) {
        let at = format!("{}:{}", f.path, f.finding.line);
        let _ = writeln!(
            out,
            "{}",
            super::system::placed_finding_line("  ", &f.finding, &at, o.color, o.width)
        );
    }
    if findings.len() > GROUPS_SHOWN {
        let _ = writeln!(
            out,
            "  +{} more (scan -v)",
            plural(findings.len() - GROUPS_SHOWN, "finding")
        );
    }
}

/// Module backups under /lib/modules, one line each.
fn short_module_backups(out: &mut String, r: &Report, o: &TextOptions) {
    if r.module_backups.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\n{}",
        paint(o.color, BOLD, "module backups under /lib/modules")
    );
    for m in &r.module_backups {
        let verdict = m.verdict.as_str();
        let room = o.width.saturating_sub(4 + verdict.len());
        let _ = writeln!(
            out,
            "  {}: {}",
            term::fit_left(&term::escape(&m.path), room),
            paint(o.color, verdict_style(m.verdict), verdict)
        );
    }
}

/// A kernel's module in a few words, from its provenance; "unsafe" only when a rule
/// found something unsafe in the sources.
fn provenance_short(p: &crate::dkms::PackageState, k: &crate::dkms::KernelState) -> String {
    let what = if p.changes.unsafe_findings > 0 {
        "unsafe"
    } else {
        "changed"
    };
    match k.provenance {
        Provenance::BuiltFromChangedSources => format!("built from the {what} sources"),
        Provenance::SourcesChangedSinceBuild => {
            "built before the sources were restored; may hold the old code".into()
        }
        Provenance::InstalledNotBuilt => "installed module is not the one dkms built".into(),
        Provenance::BuiltBeforeChange => {
            format!("built before the change; the next build compiles the {what} code in")
        }
        Provenance::BuiltFromCleanSources => "built from clean sources".into(),
        Provenance::NotBuilt => "no module of this version".into(),
        Provenance::Unknown => "sources unverified: what it was built from is unknown".into(),
    }
}

/// The DKMS state, short: per package whether a rebuild is due, and one line per
/// kernel that has its module.
fn short_dkms(out: &mut String, d: &crate::dkms::DkmsState, o: &TextOptions) {
    let _ = writeln!(out);
    let mut notes = d.notes.iter();
    if d.tool.is_none() {
        // The first note says where dkms is missing and what to do.
        let line = match notes.next() {
            Some(n) => format!("DKMS: {}", term::escape(n)),
            None => "DKMS: dkms is not installed".to_string(),
        };
        let _ = writeln!(out, "{}", term::fit(&line, o.width));
    }
    for n in notes.take(2) {
        let _ = writeln!(
            out,
            "  note: {}",
            term::fit(&term::escape(n), o.width.saturating_sub(8))
        );
    }
    for p in &d.packages {
        let state = if p.rebuild_due() {
            paint(o.color, RED, "rebuild due")
        } else if !p.registered {
            "not registered with dkms".to_string()
        } else {
            "no rebuild due".to_string()
        };
        let _ = writeln!(
            out,
            "DKMS {}/{}: {}",
            term::escape(&p.name),
            term::escape(&p.version),
            state
        );
        for k in p.kernels.iter().filter(|k| k.has_module()) {
            let mut tags = Vec::new();
            if k.running {
                tags.push("running");
            }
            if !k.headers {
                tags.push("no headers");
            }
            let tags = if tags.is_empty() {
                String::new()
            } else {
                format!(" ({})", tags.join(", "))
            };
            let line = format!(
                "  kernel {}{tags}: {}",
                term::escape(&k.kernel),
                provenance_short(p, k)
            );
            let _ = writeln!(out, "{}", term::fit(&line, o.width));
        }
        if !p.kernels.iter().any(|k| k.has_module()) {
            let _ = writeln!(out, "  no kernel has a module of this package");
        }
    }
    if !d.stray_modules.is_empty() {
        let _ = writeln!(
            out,
            "  {} next to the modules (scan -v)",
            plural(d.stray_modules.len(), "stray module copy").replace("copys", "copies")
        );
    }
}

/// What to run next, with the `--root` and `--tree` of this scan, and where the
/// explanations are.
fn next_text(out: &mut String, r: &Report, o: &TextOptions) {
    let again = &r.again;
    let trees = &r.tree_args;
    let s = &r.summary;
    let no_clean_copy = r.trees.iter().any(|t| {
        t.content_checked
            && t.files.iter().any(|f| {
                f.clean.is_none() && matches!(f.status, FileStatus::Modified | FileStatus::Missing)
            })
    });
    let next = match r.verdict() {
        Verdict::Clean => None,
        Verdict::NotVerified if r.trees.is_empty() => Some(format!("{again} scan --tree PATH")),
        Verdict::NotVerified => Some(format!("{again} scan{trees} (once a reference is there)")),
        _ if s.modified + s.missing + s.added > 0 && no_clean_copy => Some(format!(
            "{again} diff{trees} (how to get a clean copy), then restore"
        )),
        _ if s.modified + s.missing + s.added > 0 => {
            Some(format!("{again} restore{trees}, then plan --run"))
        }
        _ if r.dkms.as_ref().is_some_and(|d| d.rebuild_due()) => {
            Some(format!("{again} plan --run{trees}"))
        }
        _ if s.findings > 0 || s.unsafe_backups > 0 => Some(format!(
            "follow the fix of each finding ({again} scan -v{trees})"
        )),
        _ => Some(format!("{again} scan -v{trees} (the details)")),
    };
    let Some(next) = next else {
        return;
    };
    let _ = writeln!(out);
    for line in term::wrap(&format!("next: {next}"), o.width) {
        let _ = writeln!(out, "{line}");
    }
    if !o.verbose && s.findings > 0 {
        let worst = worst_rule(r);
        let more = match worst {
            Some(id) => format!("why and fix: scan -v, or kfd-audit explain {id}"),
            None => "why and fix: scan -v".to_string(),
        };
        for line in term::wrap(&more, o.width) {
            let _ = writeln!(out, "{line}");
        }
    }
}

/// The id of the worst finding that a rule made (tree files, then module options:
/// the checks of the running driver, ROCm and DKMS are not rules `explain` knows).
fn worst_rule(r: &Report) -> Option<String> {
    let tree = r
        .trees
        .iter()
        .flat_map(|t| t.files.iter().flat_map(|f| f.findings.iter()));
    let options = r.module_options.iter().flatten().map(|f| &f.finding);
    let mut worst: Option<&crate::finding::Finding> = None;
    for f in tree.chain(options) {
        if worst.is_none_or(|w| f.severity > w.severity) {
            worst = Some(f);
        }
    }
    worst.map(|f| term::escape(&f.rule).into_owned())
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
            painted_severity(color, finding.severity),
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
    push_diff(out, f, color);
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
            painted_severity(color, f.finding.severity),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::finding::{Finding, Severity};

    fn f(rule: &str, severity: Severity, line: usize) -> Finding {
        Finding {
            rule: rule.into(),
            severity,
            title: String::new(),
            line,
            text: String::new(),
            why: String::new(),
            fix: String::new(),
        }
    }

    #[test]
    fn findings_of_one_hunk_fold_into_the_worst() {
        let list = vec![
            f("KFD-MARK-001", Severity::Info, 38),
            f("KFD-MARK-003", Severity::Info, 38),
            f("KFD-DEVID-001", Severity::High, 41),
            f("KFD-MARK-001", Severity::Info, 42),
            f("KFD-MEM-001", Severity::Critical, 43),
            // Further than two contexts from line 43: a hunk of its own.
            f(
                "KFD-GFX-001",
                Severity::High,
                43 + 2 * crate::diff::CONTEXT + 1,
            ),
        ];
        let groups = finding_groups(&list);
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0][0].rule, "KFD-MEM-001");
        assert_eq!(groups[0].len(), 5);
        assert_eq!(groups[1][0].rule, "KFD-GFX-001");
        assert_eq!(
            folded_line(&groups[0][1..], 80),
            "      +4 on lines 38-42: KFD-DEVID-001, KFD-MARK-001 x2, -003"
        );
        assert!(folded_line(&groups[0][1..], 30).ends_with("..."));
        assert_eq!(folded_line(&groups[0][1..], 30).chars().count(), 30);
    }
}
