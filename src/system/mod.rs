//! Beyond the source tree: the parts of a machine that can keep an unsafe driver
//! change alive after the DKMS tree is clean again. Each is a section of `scan`:
//!
//! - `live`: the running driver's KFD topology in sysfs ([`crate::system::live`]);
//! - `options`: module options and kernel command line ([`crate::system::modopts`]);
//! - `rocm`: ROCm packages' files and `HSA_OVERRIDE_GFX_VERSION` ([`crate::system::rocm`]).
//!
//! Findings here are about a file on the audited system (a sysfs attribute, a config
//! line, a library), so each carries its `source` and an [`Action`]: the step that
//! undoes it, for people (`fix`) and for the restore planner (`action`). kfd-audit
//! never edits these files during a scan.

pub mod live;
pub mod modopts;
pub mod rocm;

use crate::error::Result;
use crate::finding::{Finding, Severity};
use crate::io::root::Root;
use crate::term;
use anstyle::{AnsiColor, Style};
use serde::Serialize;
use std::fmt::Write as _;

/// A part of the scan that can be selected with `--sections`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Section {
    /// The DKMS source trees under /usr/src, their DKMS state and module backups
    Tree,
    /// The running driver: /sys/class/kfd/kfd/topology
    Live,
    /// Module options (modprobe.d) and the kernel command line (/proc/cmdline, GRUB)
    Options,
    /// ROCm packages' files against dpkg, and HSA_OVERRIDE_GFX_VERSION
    Rocm,
}

impl Section {
    pub const ALL: [Section; 4] = [
        Section::Tree,
        Section::Live,
        Section::Options,
        Section::Rocm,
    ];
}

/// What to do about a finding, in a form the restore planner can act on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Action {
    /// Take `setting` out of `file` at `line` (the whole line when it holds nothing
    /// else), then run `then` in order.
    RemoveSetting {
        file: String,
        line: usize,
        setting: String,
        whole_line: bool,
        then: Vec<String>,
    },
    /// Put the package's own files back.
    ReinstallPackage { package: String, command: String },
    /// Stop exporting an environment variable (from `file` at `line`, when known).
    UnsetVariable {
        variable: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        file: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        line: Option<usize>,
    },
    /// The running driver is not the clean one: restore the source, rebuild, reboot.
    RestoreDriver { then: Vec<String> },
    /// Nothing to edit: the setting goes away with a normal reboot.
    Reboot,
    /// Nothing to do (informational findings).
    None,
}

/// A backup found next to a file outside the source trees, judged by hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SystemBackup {
    pub path: String,
    /// `verified-clean`, `same-as-current` or `unverified`, as for tree backups.
    pub verdict: crate::scan::BackupVerdict,
    /// For a verified-clean copy: the packaged file it is identical to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub matches: Option<String>,
}

/// A finding about a file outside the source trees.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SystemFinding {
    #[serde(flatten)]
    pub finding: Finding,
    /// The file the finding is about, as the audited system names it.
    pub source: String,
    /// The package that owns `source`, when one does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub package: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub backups: Vec<SystemBackup>,
    pub action: Action,
}

/// Whether a section found what it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SectionStatus {
    /// The section read its sources and judged them.
    Checked,
    /// Nothing to read under this root (no KFD topology, no ROCm package, ...).
    Absent,
}

/// What the live section saw of one KFD topology node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeSummary {
    pub node: u32,
    /// `cpu`, `gpu` (discrete) or `apu` (integrated GPU).
    pub kind: String,
    pub source: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vendor_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub asic: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gfx_target_version: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_gfx_target_version: Option<u32>,
    pub mem_banks: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LiveSection {
    pub status: SectionStatus,
    pub notes: Vec<String>,
    pub nodes: Vec<NodeSummary>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OptionsSection {
    pub status: SectionStatus,
    pub notes: Vec<String>,
    /// Every file read, as the audited system names it, in the order it applies.
    pub files: Vec<String>,
    /// Where the option rules came from.
    pub rules: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PackageSummary {
    pub package: String,
    pub files: usize,
    pub ok: usize,
    pub modified: usize,
    pub missing: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RocmSection {
    pub status: SectionStatus,
    pub notes: Vec<String>,
    /// The package-name patterns used (`--rocm-packages`).
    pub patterns: Vec<String>,
    pub packages: Vec<PackageSummary>,
    /// Files read for HSA_OVERRIDE_GFX_VERSION.
    pub environment_files: Vec<String>,
}

/// Per-section details, beside the findings lists.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Sections {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub live: Option<LiveSection>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub module_options: Option<OptionsSection>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rocm: Option<RocmSection>,
}

/// Everything the sections beyond the tree found; `None` for a section not run.
#[derive(Debug, Clone, Default)]
pub struct SystemReport {
    pub live: Option<Vec<SystemFinding>>,
    pub module_options: Option<Vec<SystemFinding>>,
    pub rocm: Option<Vec<SystemFinding>>,
    pub sections: Sections,
}

impl SystemReport {
    /// Every finding of every section that ran.
    pub fn findings(&self) -> impl Iterator<Item = &SystemFinding> {
        [&self.live, &self.module_options, &self.rocm]
            .into_iter()
            .flatten()
            .flatten()
    }
}

/// How the sections beyond the tree are run.
#[derive(Debug, Clone)]
pub struct Options {
    pub sections: Vec<Section>,
    /// Report malformed lines (sysfs, md5sums) and go on instead of stopping.
    pub lenient: bool,
    /// Package-name patterns for the ROCm section.
    pub rocm_packages: Vec<String>,
    /// The rules in effect; the options section runs those for `<module-options>`.
    pub rules: crate::rules::RuleSet,
}

impl Options {
    pub fn wants(&self, s: Section) -> bool {
        self.sections.contains(&s)
    }
}

/// Runs the selected sections beyond the tree.
pub fn run(root: &Root, opts: &Options) -> Result<SystemReport> {
    let mut report = SystemReport::default();
    let wants_rocm = opts.wants(Section::Rocm);
    if !opts.wants(Section::Live) && !wants_rocm && !opts.wants(Section::Options) {
        return Ok(report);
    }
    // The ROCm section compares HSA_OVERRIDE_GFX_VERSION with the GPUs sysfs reports,
    // so the topology is read whenever either section runs.
    let topology = if opts.wants(Section::Live) || wants_rocm {
        Some(crate::system::live::read_topology(root, opts.lenient)?)
    } else {
        None
    };
    if opts.wants(Section::Live) {
        let topo = topology.as_ref().expect("read above");
        let (findings, section) = crate::system::live::check(topo);
        report.live = Some(findings);
        report.sections.live = Some(section);
    }
    if opts.wants(Section::Options) {
        let (findings, section) = crate::system::modopts::scan(root, &opts.rules)?;
        report.module_options = Some(findings);
        report.sections.module_options = Some(section);
    }
    if wants_rocm {
        let topo = topology.as_ref().expect("read above");
        let env: Vec<(String, String)> = if root.is_host_root() {
            std::env::vars_os()
                .filter_map(|(k, v)| {
                    Some((k.into_string().ok()?, v.to_string_lossy().into_owned()))
                })
                .collect()
        } else {
            Vec::new()
        };
        let (findings, section) = crate::system::rocm::scan(
            root,
            &crate::system::rocm::RocmOptions {
                patterns: opts.rocm_packages.clone(),
                lenient: opts.lenient,
                process_env: env,
            },
            topo,
        )?;
        report.rocm = Some(findings);
        report.sections.rocm = Some(section);
    }
    Ok(report)
}

const BOLD: Style = Style::new().bold();
const RED: Style = AnsiColor::Red.on_default().bold();
const YELLOW: Style = AnsiColor::Yellow.on_default();
const DIM: Style = Style::new().dimmed();

fn paint(color: bool, style: Style, text: &str) -> String {
    if color {
        format!("{}{}{}", style.render(), text, style.render_reset())
    } else {
        text.to_string()
    }
}

fn severity_style(s: Severity) -> Style {
    match s {
        Severity::Critical | Severity::High => RED,
        Severity::Medium => YELLOW,
        _ => DIM,
    }
}

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
pub fn render_text(
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
pub fn render_markdown(findings: &[(&str, &[SystemFinding])]) -> String {
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

/// Reads a small text file under the root (a last-component symlink resolved inside
/// the root). `None` when it does not exist; when it cannot be read (permissions, a
/// directory) a note says so and the scan goes on.
/// Only a regular file of at most [`MAX_TEXT_FILE`] bytes is read: some of these
/// files (`~/.bashrc`) belong to users, who could otherwise make a root-run scan hang
/// on a FIFO or fill its memory from a link to `/dev/zero`.
pub(crate) fn read_text(root: &Root, system_path: &str, notes: &mut Vec<String>) -> Option<String> {
    let host = resolve_in_root(root, system_path);
    match read_small(&host, MAX_TEXT_FILE) {
        Ok(bytes) => Some(String::from_utf8_lossy(&bytes).into_owned()),
        Err(None) => None,
        Err(Some(why)) => {
            notes.push(format!("{system_path}: not read ({why})"));
            None
        }
    }
}

/// Largest configuration or sysfs file read whole.
pub const MAX_TEXT_FILE: u64 = 4 * 1024 * 1024;

/// Reads a small regular file (see [`crate::io::read::read_limited`]). `Err(None)`:
/// it does not exist; `Err(Some(why))`: it cannot be read, and why (without the path).
pub(crate) fn read_small(
    host: &std::path::Path,
    limit: u64,
) -> std::result::Result<Vec<u8>, Option<String>> {
    use crate::error::Error;
    match crate::io::read::read_limited(host, limit) {
        Ok(b) => Ok(b),
        Err(Error::Io { source, .. })
            if matches!(
                source.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ) =>
        {
            Err(None)
        }
        Err(Error::Io { source, .. }) => Err(Some(source.to_string())),
        Err(Error::Refused { message, .. }) => Err(Some(message)),
        Err(e) => Err(Some(e.to_string())),
    }
}

/// The files matching `*<suffix>` in a system directory, sorted by name; empty when the
/// directory does not exist.
pub(crate) fn list_dir(root: &Root, system_dir: &str, suffix: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(root.path(system_dir)) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file() || t.is_symlink()))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.ends_with(suffix) && n.len() > suffix.len() && !n.starts_with('.'))
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|n| format!("{}/{}", system_dir.trim_end_matches('/'), n))
        .collect()
}

/// The host path of a system path whose last component may be a symbolic link, the
/// link resolved as the audited system would: an absolute target is taken under the
/// root, never on the host (`/etc/modprobe.d/x.conf -> /usr/share/x.conf`).
pub(crate) fn resolve_in_root(root: &Root, system_path: &str) -> std::path::PathBuf {
    let mut system = std::path::PathBuf::from(system_path);
    for _ in 0..40 {
        let host = root.path(&system);
        let Ok(target) = std::fs::read_link(&host) else {
            return host;
        };
        system = if target.is_absolute() {
            target
        } else {
            system
                .parent()
                .unwrap_or(std::path::Path::new("/"))
                .join(target)
        };
        system = normalize(&system);
    }
    root.path(&system)
}

/// Resolves `.` and `..` lexically (`/etc/a/../b` → `/etc/b`), never above `/`.
fn normalize(p: &std::path::Path) -> std::path::PathBuf {
    use std::path::Component;
    let mut out = std::path::PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::Normal(x) => out.push(x),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}
