//! The scan report: one data model, rendered as text for people, JSON for tools
//! (the contract in DESIGN.md: extend, never rename) and Markdown for bug reports.

pub mod prometheus;

use crate::exit::Outcome;
use crate::finding::{Finding, Severity};
use crate::scan::{BackupVerdict, FileResult, FileStatus, TreeScan};
use crate::system::{Sections, SystemFinding, SystemReport};
use crate::term;
use anstyle::{AnsiColor, Style};
use serde::Serialize;
use std::fmt::Write as _;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub version: u32,
    pub root: String,
    pub exit_code: u8,
    pub trees: Vec<TreeReport>,
    pub summary: Summary,
    /// DKMS state and where the modules came from (see `dkms.rs`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dkms: Option<crate::dkms::DkmsState>,
    /// Backup copies of amd modules under /lib/modules (`amdgpu.ko.xz.backup`).
    pub module_backups: Vec<ModuleBackupReport>,
    /// Findings about the running driver (section `live`); absent when not run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub live: Option<Vec<SystemFinding>>,
    /// Findings about module options and the kernel command line (section `options`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub module_options: Option<Vec<SystemFinding>>,
    /// Findings about ROCm packages and HSA_OVERRIDE_GFX_VERSION (section `rocm`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rocm: Option<Vec<SystemFinding>>,
    /// What each section beyond the tree read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sections: Option<Sections>,
    /// Whether the source trees were scanned (`--sections` without `tree`: no).
    #[serde(skip)]
    pub trees_checked: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct ModuleBackupReport {
    pub path: String,
    pub original: String,
    pub verdict: crate::scan::BackupVerdict,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TreeReport {
    pub path: String,
    pub package: String,
    pub version: String,
    pub references: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dpkg_package: Option<String>,
    /// Problems with the tree itself or its references that did not stop the scan.
    pub problems: Vec<String>,
    pub files_checked: usize,
    /// Backup files found in the tree, listed under the files they back up and not
    /// counted in `files_checked`.
    pub backups: usize,
    /// Whether clean content was looked for (then a modified file without `clean`
    /// has none anywhere).
    #[serde(skip)]
    pub content_checked: bool,
    pub files: Vec<FileReport>,
    /// What dkms will really compile: overrides, build-time patches, and findings
    /// about them (see `recipe.rs`). Absent when nothing changes the build.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub build: Option<crate::dkms::recipe::BuildAudit>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FileReport {
    /// Path relative to the tree; invalid UTF-8 is replaced here and kept in `path_bytes`.
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path_bytes: Option<Vec<u8>>,
    pub status: FileStatus,
    /// The reference that judged the file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actual: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    pub findings: Vec<Finding>,
    pub backups: Vec<BackupReport>,
    /// Where verified clean content of a modified or missing file is: the reference
    /// kind and the source (`dpkg archive /var/cache/apt/archives/...deb`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clean: Option<CleanReport>,
    /// Unified diff against the clean content (`scan --diff`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<crate::diff::FileDiff>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CleanReport {
    pub reference: String,
    pub origin: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct BackupReport {
    pub path: String,
    /// The backup's name as bytes when it is not valid UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path_bytes: Option<Vec<u8>>,
    pub verdict: crate::scan::BackupVerdict,
    /// The reference the backup was compared with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// Whether a restore may use it: only a verified-clean backup.
    pub restorable: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Summary {
    pub trees: usize,
    pub files: usize,
    pub ok: usize,
    pub modified: usize,
    pub missing: usize,
    pub added: usize,
    pub unverified: usize,
    pub symlinks: usize,
    pub unreadable: usize,
    pub findings: usize,
    pub critical: usize,
    pub high: usize,
    pub medium: usize,
    pub low: usize,
    pub info: usize,
    /// Backup files next to tree files (not counted in `files`).
    pub backups: usize,
    /// Backups in which the rule engine finds an unsafe change (they count as found:
    /// copying one back re-applies the change).
    pub unsafe_backups: usize,
    /// Backup copies of amd modules under /lib/modules.
    pub module_backups: usize,
}

/// The bytes of a path that is not valid UTF-8 (`None` when it is), for the
/// `path_bytes` fields that carry such names losslessly in JSON.
pub fn path_bytes(p: &Path) -> Option<Vec<u8>> {
    let bytes = p.as_os_str().as_bytes();
    std::str::from_utf8(bytes).is_err().then(|| bytes.to_vec())
}

fn path_fields(p: &Path) -> (String, Option<Vec<u8>>) {
    let bytes = p.as_os_str().as_bytes();
    match std::str::from_utf8(bytes) {
        Ok(s) => (s.to_string(), None),
        Err(_) => (
            String::from_utf8_lossy(bytes).into_owned(),
            Some(bytes.to_vec()),
        ),
    }
}

fn file_report(f: &FileResult) -> FileReport {
    let (path, path_bytes) = path_fields(&f.path);
    FileReport {
        path,
        path_bytes,
        status: f.status,
        reference: f.reference.map(|r| r.to_string()),
        expected: f.expected.as_ref().map(|d| d.to_hex()),
        actual: f.actual.as_ref().map(|d| d.to_hex()),
        detail: f.detail.clone(),
        findings: f.findings.clone(),
        backups: f
            .backups
            .iter()
            .map(|b| BackupReport {
                path: term::path(&b.path),
                path_bytes: self::path_bytes(&b.path),
                verdict: b.verdict,
                reference: b.reference.map(|r| r.to_string()),
                restorable: b.verdict == BackupVerdict::VerifiedClean,
                size: b.size,
                detail: b.detail.clone(),
            })
            .collect(),
        clean: f.clean.as_ref().map(|c| CleanReport {
            reference: c.kind.to_string(),
            origin: c.origin.clone(),
        }),
        diff: f.diff.as_deref().cloned(),
    }
}

/// Whether a file is worth listing by default: anything but a clean, quiet file.
fn has_something_to_say(f: &FileResult) -> bool {
    f.status.is_notable() || !f.findings.is_empty() || !f.backups.is_empty()
}

impl Report {
    pub fn build(root: &Path, scans: &[TreeScan], all_files: bool) -> Report {
        let mut summary = Summary {
            trees: scans.len(),
            ..Summary::default()
        };
        let mut trees = Vec::new();
        for s in scans {
            for f in &s.files {
                // `files` counts what is on disk; missing files are counted apart.
                if f.status != FileStatus::Missing {
                    summary.files += 1;
                }
                match f.status {
                    FileStatus::Ok => summary.ok += 1,
                    FileStatus::Modified => summary.modified += 1,
                    FileStatus::Missing => summary.missing += 1,
                    FileStatus::Added => summary.added += 1,
                    FileStatus::Unverified => summary.unverified += 1,
                    FileStatus::Symlink => summary.symlinks += 1,
                    FileStatus::Unreadable => summary.unreadable += 1,
                }
                summary.backups += f.backups.len();
                summary.unsafe_backups += f
                    .backups
                    .iter()
                    .filter(|b| b.verdict == BackupVerdict::Unsafe)
                    .count();
                for finding in &f.findings {
                    summary.findings += 1;
                    match finding.severity {
                        Severity::Critical => summary.critical += 1,
                        Severity::High => summary.high += 1,
                        Severity::Medium => summary.medium += 1,
                        Severity::Low => summary.low += 1,
                        Severity::Info => summary.info += 1,
                    }
                }
            }
            let mut problems = Vec::new();
            if let Some(p) = &s.tree.conf_problem {
                problems.push(p.clone());
            }
            if s.refs.is_empty() {
                problems.push(
                    "no clean reference (no dpkg md5sums list this tree, no baseline): files are unverified; \
                     take a baseline while the tree is clean with 'kfd-audit baseline create'"
                        .to_string(),
                );
            }
            problems.extend(s.problems.iter().cloned());
            for sk in &s.refs.skipped {
                problems.push(format!(
                    "{}:{}: skipped ({})",
                    term::path(&sk.file),
                    sk.line,
                    sk.message
                ));
            }
            trees.push(TreeReport {
                path: term::path(&s.tree.system_path),
                package: s.tree.package(),
                version: s.tree.version(),
                references: s.refs.kinds.iter().map(|k| k.to_string()).collect(),
                dpkg_package: s.refs.dpkg_package.clone(),
                problems,
                files_checked: s
                    .files
                    .iter()
                    .filter(|f| f.status != FileStatus::Missing)
                    .count(),
                backups: s.files.iter().map(|f| f.backups.len()).sum(),
                content_checked: s.content_checked,
                build: None,
                files: s
                    .files
                    .iter()
                    .filter(|f| all_files || has_something_to_say(f))
                    .map(file_report)
                    .collect(),
            });
        }
        let outcome = Report::outcome_of(&summary);
        Report {
            version: 1,
            root: root.display().to_string(),
            exit_code: outcome.code(),
            trees,
            summary,
            dkms: None,
            module_backups: Vec::new(),
            live: None,
            module_options: None,
            rocm: None,
            sections: None,
            trees_checked: true,
        }
    }

    /// Adds the DKMS state. A module probably built from changed sources is something
    /// found even when the sources are clean again (a restore without a rebuild).
    pub fn attach_dkms(&mut self, state: crate::dkms::DkmsState) {
        self.dkms = Some(state);
        self.exit_code = self.outcome().code();
    }

    /// Adds the backups of installed modules (they do not change the exit code: a
    /// module backup is reported so a user knows which one is safe to put back).
    pub fn with_module_backups(mut self, found: &[crate::content::backup::ModuleBackup]) -> Report {
        self.summary.module_backups = found.len();
        self.module_backups = found
            .iter()
            .map(|m| ModuleBackupReport {
                path: term::path(&m.path),
                original: term::path(&m.original),
                verdict: m.verdict,
                reference: m.reference.clone(),
            })
            .collect();
        self
    }

    /// Adds the findings of the sections beyond the tree; they count into the
    /// summary and the exit code like the trees' findings.
    pub fn add_system(&mut self, system: SystemReport) {
        for f in system.findings() {
            self.summary.findings += 1;
            match f.finding.severity {
                Severity::Critical => self.summary.critical += 1,
                Severity::High => self.summary.high += 1,
                Severity::Medium => self.summary.medium += 1,
                Severity::Low => self.summary.low += 1,
                Severity::Info => self.summary.info += 1,
            }
        }
        self.live = system.live;
        self.module_options = system.module_options;
        self.rocm = system.rocm;
        self.sections = Some(system.sections);
        self.exit_code = self.outcome().code();
    }

    fn outcome_of(s: &Summary) -> Outcome {
        let found = s.modified
            + s.missing
            + s.added
            + s.symlinks
            + s.unreadable
            + s.critical
            + s.high
            + s.medium
            + s.low
            + s.unsafe_backups;
        if found > 0 {
            Outcome::Found
        } else {
            Outcome::Clean
        }
    }

    /// Adds each tree's build-recipe audit (same order as the trees); its findings
    /// count in the summary and the exit code like findings in files.
    pub fn attach_build(&mut self, audits: Vec<crate::dkms::recipe::BuildAudit>) {
        for (t, a) in self.trees.iter_mut().zip(audits) {
            if a.overrides.is_empty() && a.patches.is_empty() && a.findings.is_empty() {
                continue;
            }
            for f in &a.findings {
                self.summary.findings += 1;
                match f.finding.severity {
                    Severity::Critical => self.summary.critical += 1,
                    Severity::High => self.summary.high += 1,
                    Severity::Medium => self.summary.medium += 1,
                    Severity::Low => self.summary.low += 1,
                    Severity::Info => self.summary.info += 1,
                }
            }
            t.build = Some(a);
        }
        self.exit_code = self.outcome().code();
    }

    pub fn outcome(&self) -> Outcome {
        let o = Report::outcome_of(&self.summary);
        if self.dkms.as_ref().is_some_and(|d| d.rebuild_due()) {
            o.worst(Outcome::Found)
        } else {
            o
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("report serializes") + "\n"
    }
}

const BOLD: Style = Style::new().bold();
const RED: Style = AnsiColor::Red.on_default().bold();
const YELLOW: Style = AnsiColor::Yellow.on_default();
const GREEN: Style = AnsiColor::Green.on_default();
const DIM: Style = Style::new().dimmed();

struct Painter {
    color: bool,
}

impl Painter {
    fn paint(&self, style: Style, text: &str) -> String {
        if self.color {
            format!("{}{}{}", style.render(), text, style.render_reset())
        } else {
            text.to_string()
        }
    }
}

fn status_style(s: FileStatus) -> Style {
    match s {
        FileStatus::Ok => GREEN,
        FileStatus::Modified | FileStatus::Missing => RED,
        FileStatus::Unverified => DIM,
        _ => YELLOW,
    }
}

fn severity_style(s: Severity) -> Style {
    match s {
        Severity::Critical | Severity::High => RED,
        Severity::Medium => YELLOW,
        _ => DIM,
    }
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("{n} {word}")
    } else {
        format!("{n} {word}s")
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
pub fn render_text(r: &Report, color: bool, verbose: bool) -> String {
    let p = Painter { color };
    let s = &r.summary;
    let mut out = String::new();
    let verdict = if r.exit_code == 0 {
        p.paint(GREEN, "clean")
    } else {
        p.paint(RED, "CHANGED")
    };
    if r.trees_checked {
        let _ = writeln!(
            out,
            "{} {}: {} checked in {}: {} modified, {} missing, {} added{}",
            p.paint(BOLD, "kfd-audit scan"),
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
            p.paint(BOLD, "kfd-audit scan"),
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
    for t in &r.trees {
        let refs = if t.references.is_empty() {
            "none".to_string()
        } else {
            t.references.join(", ")
        };
        let _ = writeln!(
            out,
            "\n{} ({} {}; {} checked; references: {})",
            p.paint(BOLD, &term::escape(&t.path)),
            term::escape(&t.package),
            term::escape(&t.version),
            plural(t.files_checked, "file"),
            refs
        );
        for problem in &t.problems {
            let _ = writeln!(
                out,
                "  {} {}",
                p.paint(YELLOW, "note:"),
                term::escape(problem)
            );
        }
        for f in &t.files {
            if f.status == FileStatus::Ok
                && f.findings.is_empty()
                && f.backups.is_empty()
                && !verbose
            {
                continue;
            }
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
                p.paint(status_style(f.status), f.status.as_str()),
                term::escape(&f.path),
                p.paint(DIM, &judged),
                detail
            );
            for finding in &f.findings {
                let _ = writeln!(
                    out,
                    "      {} {} line {}: {}",
                    p.paint(
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
                labelled(&mut out, "why", &finding.why);
                labelled(&mut out, "fix", &finding.fix);
            }
            for b in &f.backups {
                let _ = writeln!(
                    out,
                    "      backup {}: {} ({})",
                    term::escape(&b.path),
                    p.paint(verdict_style(b.verdict), b.verdict.as_str()),
                    verdict_meaning(b)
                );
            }
            if let Some(c) = &f.clean {
                let _ = writeln!(out, "      clean copy: {}", term::escape(&c.origin));
            } else if matches!(f.status, FileStatus::Modified | FileStatus::Missing)
                && t.content_checked
            {
                let _ = writeln!(
                    out,
                    "      no clean copy: no baseline copy, package archive or verified backup has it (see 'kfd-audit diff')"
                );
            }
            if let Some(d) = &f.diff {
                let marks: std::collections::BTreeSet<usize> =
                    f.findings.iter().map(|x| x.line).collect();
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
    }
    for t in &r.trees {
        let Some(b) = &t.build else { continue };
        let _ = writeln!(
            out,
            "\n{} {}",
            p.paint(BOLD, "what dkms will build for"),
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
                p.paint(
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
            labelled(&mut out, "why", &f.finding.why);
            labelled(&mut out, "fix", &f.finding.fix);
        }
    }
    if !r.module_backups.is_empty() {
        let _ = writeln!(
            out,
            "\n{}",
            p.paint(BOLD, "module backups under /lib/modules")
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
                p.paint(verdict_style(m.verdict), m.verdict.as_str()),
                term::escape(&m.original),
                term::escape(by)
            );
        }
    }
    if let Some(d) = &r.dkms {
        let _ = writeln!(out);
        out.push_str(&crate::dkms::render_text(d));
    }
    if let Some(sections) = &r.sections {
        out.push_str(&crate::system::render_text(
            r.live.as_deref(),
            r.module_options.as_deref(),
            r.rocm.as_deref(),
            sections,
            color,
        ));
    }
    out
}

/// Renders the report as Markdown, for pasting into a bug report.
pub fn render_markdown(r: &Report) -> String {
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
            continue;
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
    if let Some(d) = &r.dkms {
        let _ = writeln!(
            out,
            "\n## DKMS state\n\n```text\n{}```",
            crate::dkms::render_text(d)
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
    out.push_str(&crate::system::render_markdown(&system));
    out
}
