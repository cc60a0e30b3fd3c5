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

pub(crate) mod ldconfig;
pub mod live;
pub mod modopts;
pub mod rocm;

use crate::error::Result;
use crate::finding::Finding;
use crate::io::root::Root;
use crate::system::live::Topology;
use serde::Serialize;
use std::cell::OnceCell;

/// A part of the scan that can be selected with `--sections`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Section {
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
    pub(crate) const ALL: [Section; 4] = [
        Section::Tree,
        Section::Live,
        Section::Options,
        Section::Rocm,
    ];
}

/// What to do about a finding, in a form the restore planner can act on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub(crate) enum Action {
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
    /// Move `file` out of `dir`, a directory the dynamic loader reads (never delete it:
    /// a SONAME link may point at it), then run `then` in order.
    MoveAside {
        file: String,
        dir: String,
        then: Vec<String>,
    },
    /// Nothing to edit: the setting goes away with a normal reboot.
    Reboot,
    /// Nothing to do (informational findings).
    None,
}

/// A backup found next to a file outside the source trees, judged by hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct SystemBackup {
    pub path: String,
    /// `verified-clean`, `same-as-current` or `unverified`, as for tree backups.
    pub verdict: crate::scan::BackupVerdict,
    /// For a verified-clean copy: the packaged file it is identical to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub matches: Option<String>,
}

/// A finding about a file outside the source trees.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct SystemFinding {
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
pub(crate) enum SectionStatus {
    /// The section read its sources and judged them.
    Checked,
    /// Nothing to read under this root (no KFD topology, no ROCm package, ...).
    Absent,
}

/// What the live section saw of one KFD topology node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct NodeSummary {
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
pub(crate) struct LiveSection {
    pub status: SectionStatus,
    pub notes: Vec<String>,
    pub nodes: Vec<NodeSummary>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct OptionsSection {
    pub status: SectionStatus,
    pub notes: Vec<String>,
    /// Every file read, as the audited system names it, in the order it applies.
    pub files: Vec<String>,
    /// Where the option rules came from.
    pub rules: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct PackageSummary {
    pub package: String,
    pub files: usize,
    pub ok: usize,
    pub modified: usize,
    pub missing: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct RocmSection {
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
pub(crate) struct Sections {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub live: Option<LiveSection>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub module_options: Option<OptionsSection>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rocm: Option<RocmSection>,
}

/// Everything the sections beyond the tree found; `None` for a section not run.
#[derive(Debug, Clone, Default)]
pub(crate) struct SystemReport {
    pub live: Option<Vec<SystemFinding>>,
    pub module_options: Option<Vec<SystemFinding>>,
    pub rocm: Option<Vec<SystemFinding>>,
    pub sections: Sections,
}

impl SystemReport {
    /// Every finding of every section that ran.
    pub(crate) fn findings(&self) -> impl Iterator<Item = &SystemFinding> {
        [&self.live, &self.module_options, &self.rocm]
            .into_iter()
            .flatten()
            .flatten()
    }
}

/// How the sections beyond the tree are run.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub sections: Vec<Section>,
    /// Report malformed lines (sysfs, md5sums) and go on instead of stopping.
    pub lenient: bool,
    /// Package-name patterns for the ROCm section.
    pub rocm_packages: Vec<String>,
    /// The rules in effect; the options section runs those for `<module-options>`.
    pub rules: crate::rules::RuleSet,
    /// `--max-file-size` when given: the rocm section hashes package files under it.
    pub max_file_size: Option<u64>,
    /// The progress line's counters, for the files the rocm section hashes.
    pub counters: Option<std::sync::Arc<crate::progress::Counters>>,
}

impl Options {
    pub(crate) fn wants(&self, s: Section) -> bool {
        self.sections.contains(&s)
    }
}

/// Runs the selected sections beyond the tree.
pub(crate) fn run(root: &Root, opts: &Options) -> Result<SystemReport> {
    let mut report = SystemReport::default();
    let selected: Vec<&dyn SystemSection> = SECTIONS
        .iter()
        .copied()
        .filter(|s| opts.wants(s.section()))
        .collect();
    let ctx = Context::new(root, opts);
    // Read up front, so that a broken topology stops the run before any section has.
    if selected.iter().any(|s| s.reads_topology()) {
        ctx.topology()?;
    }
    for section in selected {
        report.store(section.collect(root, &ctx)?);
    }
    Ok(report)
}

/// Reads a small text file under the root (its symlinks resolved inside the root, see
/// [`Root::resolve_in_root`]). `None` when it does not exist; when it cannot be read (permissions, a
/// directory) a note says so and the scan goes on.
/// Only a regular file of at most [`MAX_TEXT_FILE`] bytes is read: some of these
/// files (`~/.bashrc`) belong to users, who could otherwise make a root-run scan hang
/// on a FIFO or fill its memory from a link to `/dev/zero`.
pub(crate) fn read_text(root: &Root, system_path: &str, notes: &mut Vec<String>) -> Option<String> {
    let host = match root.resolve_in_root(system_path) {
        Ok(host) => host,
        Err(e) if is_absent(&e) => return None,
        Err(e) => {
            notes.push(format!("{system_path}: not read ({e})"));
            return None;
        }
    };
    match read_small(&host, MAX_TEXT_FILE) {
        Ok(bytes) => Some(String::from_utf8_lossy(&bytes).into_owned()),
        Err(None) => None,
        Err(Some(why)) => {
            notes.push(format!("{system_path}: not read ({why})"));
            None
        }
    }
}

/// Whether an error says the file is not there (rather than that it cannot be read).
fn is_absent(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
    )
}

/// Largest configuration or sysfs file read whole.
pub(crate) const MAX_TEXT_FILE: u64 = 4 * 1024 * 1024;

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

// ---------------------------------------------------------------------------------
// What every section beyond the tree is to [`run`]: something that reads the audited
// system and hands back findings plus the details the report shows beside them. A new
// section is one file that implements [`SystemSection`], and one entry in [`SECTIONS`].
// The trait lives here, in the parent, so that the sections use it without a loop.

/// The sections beyond the tree, in the order they run and are reported.
pub(crate) const SECTIONS: &[&dyn SystemSection] = &[
    &live::LiveDriver,
    &crate::system::modopts::ModuleOptions,
    &crate::system::rocm::RocmUserSpace,
];

/// One section of the scan beyond the source trees.
pub(crate) trait SystemSection {
    /// The `--sections` value that selects it.
    fn section(&self) -> Section;

    /// Whether it needs the KFD topology from sysfs. The topology is read once, before
    /// any section runs, when one of the selected sections needs it.
    fn reads_topology(&self) -> bool {
        false
    }

    /// Reads what the section is about under the root and judges it.
    fn collect(&self, root: &Root, ctx: &Context) -> Result<Collected>;
}

/// What a section found: its findings and its details for the report.
#[derive(Debug)]
pub(crate) struct Collected {
    pub findings: Vec<SystemFinding>,
    pub details: Details,
}

/// A section's details, as [`crate::system::Sections`] keeps them.
#[derive(Debug)]
pub(crate) enum Details {
    Live(LiveSection),
    Options(OptionsSection),
    Rocm(RocmSection),
}

impl SystemReport {
    /// Files one section's results where the report expects them.
    pub(crate) fn store(&mut self, collected: Collected) {
        let findings = Some(collected.findings);
        match collected.details {
            Details::Live(s) => {
                self.live = findings;
                self.sections.live = Some(s);
            }
            Details::Options(s) => {
                self.module_options = findings;
                self.sections.module_options = Some(s);
            }
            Details::Rocm(s) => {
                self.rocm = findings;
                self.sections.rocm = Some(s);
            }
        }
    }
}

/// What the sections of one run share: the options, and what more than one of them
/// reads (the topology: the live section judges it, the ROCm section compares
/// `HSA_OVERRIDE_GFX_VERSION` with it).
pub(crate) struct Context<'a> {
    root: &'a Root,
    pub opts: &'a Options,
    topology: OnceCell<Topology>,
}

impl<'a> Context<'a> {
    pub(crate) fn new(root: &'a Root, opts: &'a Options) -> Context<'a> {
        Context {
            root,
            opts,
            topology: OnceCell::new(),
        }
    }

    /// The KFD topology under the root, read on first use.
    pub(crate) fn topology(&self) -> Result<&Topology> {
        if let Some(t) = self.topology.get() {
            return Ok(t);
        }
        let read = live::read_topology(self.root, self.opts.lenient)?;
        Ok(self.topology.get_or_init(|| read))
    }
}
