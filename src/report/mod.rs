//! The scan report: one data model, built from the scans and completed with the DKMS
//! state, the build recipes, the module backups and the sections beyond the tree.
//!
//! The model lives here and each format in a file of its own, so that a format reads
//! from the model and never decides anything: [`text`] for people, [`markdown`] for
//! bug reports, [`json`] for tools (its field names are a contract: fields are added,
//! never renamed; see the README), [`prometheus`] for node_exporter; [`system`] and
//! [`dkms`] render the sections beyond the tree and the DKMS state for text and Markdown.

pub(crate) mod dkms;
pub(crate) mod json;
pub(crate) mod markdown;
pub(crate) mod prometheus;
pub(crate) mod system;
pub(crate) mod text;

pub(crate) use markdown::render_markdown;
pub(crate) use text::{render_text, TextOptions};

use crate::exit::Outcome;
use crate::finding::{Finding, Severity};
use crate::scan::{BackupVerdict, FileResult, FileStatus, TreeScan};
use crate::system::{Sections, SystemFinding, SystemReport};
use crate::term;
use serde::Serialize;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Report {
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
    /// How to call kfd-audit again on the same system (`kfd-audit --root /mnt`), for
    /// the commands the text report names.
    #[serde(skip)]
    pub again: String,
    /// The `--tree` arguments of this scan (` --tree /usr/src/X`), carried by those commands.
    #[serde(skip)]
    pub tree_args: String,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct ModuleBackupReport {
    pub path: String,
    pub original: String,
    pub verdict: crate::scan::BackupVerdict,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct TreeReport {
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
pub(crate) struct FileReport {
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
pub(crate) struct CleanReport {
    pub reference: String,
    pub origin: String,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct BackupReport {
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
pub(crate) struct Summary {
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
                path_bytes: term::path_bytes(&b.path),
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

impl Summary {
    /// Counts one finding under its severity.
    fn count_finding(&mut self, severity: Severity) {
        self.findings += 1;
        match severity {
            Severity::Critical => self.critical += 1,
            Severity::High => self.high += 1,
            Severity::Medium => self.medium += 1,
            Severity::Low => self.low += 1,
            Severity::Info => self.info += 1,
        }
    }

    /// Counts one file of a tree: its status, its backups and its findings.
    fn count_file(&mut self, f: &FileResult) {
        // `files` counts what is on disk; missing files are counted apart.
        if f.status != FileStatus::Missing {
            self.files += 1;
        }
        match f.status {
            FileStatus::Ok => self.ok += 1,
            FileStatus::Modified => self.modified += 1,
            FileStatus::Missing => self.missing += 1,
            FileStatus::Added => self.added += 1,
            FileStatus::Unverified => self.unverified += 1,
            FileStatus::Symlink => self.symlinks += 1,
            FileStatus::Unreadable => self.unreadable += 1,
        }
        self.backups += f.backups.len();
        self.unsafe_backups += f
            .backups
            .iter()
            .filter(|b| b.verdict == BackupVerdict::Unsafe)
            .count();
        for finding in &f.findings {
            self.count_finding(finding.severity);
        }
    }
}

/// Problems with a tree or its references that did not stop its scan, in the order
/// a reader needs them: dkms.conf, the missing reference, the scan's own, skipped lines.
fn tree_problems(s: &TreeScan) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(p) = &s.tree.conf_problem {
        problems.push(p.clone());
    }
    if s.refs.is_empty() {
        problems.push(
            "no clean reference (no dpkg md5sums or RPM database list this tree, no baseline): files are unverified; \
             take a baseline while the tree is clean with 'kfd-audit baseline create'"
                .to_string(),
        );
    }
    problems.extend(s.refs.notes.iter().cloned());
    problems.extend(s.problems.iter().cloned());
    for sk in &s.refs.skipped {
        problems.push(format!(
            "{}:{}: skipped ({})",
            term::path(&sk.file),
            sk.line,
            sk.message
        ));
    }
    problems
}

/// One tree of the report; with `all_files` every file is listed, else only those
/// with something to say.
fn tree_report(s: &TreeScan, all_files: bool) -> TreeReport {
    TreeReport {
        path: term::path(&s.tree.system_path),
        package: s.tree.package(),
        version: s.tree.version(),
        references: s.refs.kinds.iter().map(|k| k.to_string()).collect(),
        dpkg_package: s.refs.dpkg_package.clone(),
        problems: tree_problems(s),
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
    }
}

impl Report {
    pub(crate) fn build(root: &Path, scans: &[TreeScan], all_files: bool) -> Report {
        let mut summary = Summary {
            trees: scans.len(),
            ..Summary::default()
        };
        for f in scans.iter().flat_map(|s| &s.files) {
            summary.count_file(f);
        }
        let trees = scans.iter().map(|s| tree_report(s, all_files)).collect();
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
            again: "kfd-audit".to_string(),
            tree_args: String::new(),
        }
    }

    /// Adds the DKMS state. A module probably built from changed sources is something
    /// found even when the sources are clean again (a restore without a rebuild).
    pub(crate) fn attach_dkms(&mut self, state: crate::dkms::DkmsState) {
        self.dkms = Some(state);
        self.exit_code = self.outcome().code();
    }

    /// Adds the backups of installed modules (they do not change the exit code: a
    /// module backup is reported so a user knows which one is safe to put back).
    pub(crate) fn with_module_backups(
        mut self,
        found: &[crate::dkms::backups::ModuleBackup],
    ) -> Report {
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
    pub(crate) fn add_system(&mut self, system: SystemReport) {
        for f in system.findings() {
            self.summary.count_finding(f.finding.severity);
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
    pub(crate) fn attach_build(&mut self, audits: Vec<crate::dkms::recipe::BuildAudit>) {
        for (t, a) in self.trees.iter_mut().zip(audits) {
            if a.overrides.is_empty() && a.patches.is_empty() && a.findings.is_empty() {
                continue;
            }
            for f in &a.findings {
                self.summary.count_finding(f.finding.severity);
            }
            t.build = Some(a);
        }
        self.exit_code = self.outcome().code();
    }

    pub(crate) fn outcome(&self) -> Outcome {
        let o = Report::outcome_of(&self.summary);
        if self.dkms.as_ref().is_some_and(|d| d.rebuild_due()) || self.nothing_verified() {
            o.worst(Outcome::Found)
        } else {
            o
        }
    }

    /// Records whether the source trees were scanned (`--sections` without `tree`:
    /// no), which decides whether "no tree found" counts as nothing verified.
    pub(crate) fn set_trees_checked(&mut self, checked: bool) {
        self.trees_checked = checked;
        self.exit_code = self.outcome().code();
    }

    /// The source trees were to be checked, and no file could be compared with a
    /// reference: no tree was found, or no reference lists any file. "Clean" would be
    /// a claim nothing supports, so this is something found (exit 1) with its fix.
    pub(crate) fn nothing_verified(&self) -> bool {
        let s = &self.summary;
        self.trees_checked && s.ok + s.modified + s.missing + s.added == 0
    }

    /// The answer in one word, and the reasons for it (see [`Verdict`]).
    pub(crate) fn verdict(&self) -> Verdict {
        let s = &self.summary;
        let rebuild = self.dkms.as_ref().is_some_and(|d| d.rebuild_due());
        if s.critical + s.high + s.medium + s.unsafe_backups > 0 {
            Verdict::Unsafe
        } else if s.modified + s.missing + s.added + s.symlinks + s.unreadable + s.low > 0 {
            Verdict::Changed
        } else if rebuild {
            Verdict::RebuildDue
        } else if self.nothing_verified() {
            Verdict::NotVerified
        } else {
            Verdict::Clean
        }
    }
}

/// The scan's answer, in the words the text report leads with. "Unsafe" only when a
/// rule found something unsafe (a finding of medium severity or above, or a backup
/// that holds one); "changed" when files only differ (or findings are low).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Clean,
    Unsafe,
    Changed,
    /// Nothing else found, but a module was built from changed sources (or replaced
    /// by hand): the sources may be clean, the module the kernel loads is not known to be.
    RebuildDue,
    /// No file could be compared with a reference (no tree, or no reference for it).
    NotVerified,
}

impl Verdict {
    pub(crate) fn word(self) -> &'static str {
        match self {
            Verdict::Clean => "clean",
            Verdict::Unsafe => "UNSAFE",
            Verdict::Changed => "CHANGED",
            Verdict::RebuildDue => "REBUILD DUE",
            Verdict::NotVerified => "NOT VERIFIED",
        }
    }
}
