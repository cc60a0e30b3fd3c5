//! DKMS state under the root, and what it says about the module the machine boots.
//!
//! DKMS keeps its state in plain files, so it is read the same way on the running
//! system and on a disk mounted with `--root`:
//! - `/var/lib/dkms/<name>/<ver>/` exists once a source tree is registered (`dkms add`),
//!   with a `source` link to `/usr/src/<name>-<ver>`;
//! - `/var/lib/dkms/<name>/<ver>/<kernel>/<arch>/module/*.ko*` are the modules built for a
//!   kernel, `.../log/make.log` the log of that build (dkms moves it there on success;
//!   a `build/make.log` left behind is the log of a build that failed);
//! - `/var/lib/dkms/<name>/kernel-<kernel>-<arch>` links to `<ver>/<kernel>/<arch>` for
//!   the version installed for that kernel, whose modules are copied to
//!   `/lib/modules/<kernel>/updates/dkms/` (Debian, Ubuntu, Arch; `/extra` on
//!   Fedora/RHEL, `/updates` on SUSE), possibly compressed (`.ko.xz`, `.ko.zst`);
//!   on RHEL and SLES other kernels may load that build through `weak-updates/`
//!   links ([`weak`]).
//!
//! `dkms status` is parsed as well when the tool is there, but only for the running
//! system: run against `--root` it would describe the host, not the audited disk.
//!
//! Provenance compares file times: when was each changed source file last written,
//! and when was the module built (the build's make.log) or installed. File times can
//! lie (`cp -p`, `tar`, a wrong clock), so verdicts say "probably".

use crate::finding::Severity;
use crate::io::root::Root;
use crate::scan::{FileStatus, TreeScan};
use crate::term;
use serde::{Serialize, Serializer};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

mod weak;

pub(crate) const DKMS_TREE: &str = "/var/lib/dkms";
pub(crate) const MODULES_DIR: &str = "/lib/modules";

/// Where dkms installs modules, relative to `/lib/modules/<kernel>`, by distribution.
const INSTALL_DIRS: &[&str] = &["updates/dkms", "updates", "extra"];
/// Where stray copies of modules are looked for, relative to `/lib/modules/<kernel>`.
const STRAY_DIRS: &[&str] = &["updates", "extra", "kernel/drivers/gpu/drm/amd"];
/// Directories a system keeps its administration tools in.
const BIN_DIRS: &[&str] = &["/usr/sbin", "/sbin", "/usr/bin", "/bin"];
const COMPRESSED: &[&str] = &["", ".xz", ".zst", ".gz"];

fn ser_time<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_some(&format_time(*t)),
        None => s.serialize_none(),
    }
}

/// A time as people and tools read it: RFC 3339, UTC, seconds.
pub(crate) fn format_time(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

fn opt_time(t: Option<SystemTime>) -> String {
    t.map(format_time).unwrap_or_else(|| "?".into())
}

/// One line of `dkms status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatusLine {
    pub name: String,
    pub version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    /// `added`, `built`, `installed`, `installed-weak`, or whatever a newer dkms prints.
    pub state: String,
    /// For `installed-weak`: the kernel the module was built for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weak_from: Option<String>,
    /// The parenthesised remarks after the state, e.g. `WARNING! Diff between built and
    /// installed module!`.
    pub remarks: Vec<String>,
}

impl StatusLine {
    /// What a remark means for the person reading the report.
    pub fn explanations(&self) -> Vec<String> {
        let mut out = Vec::new();
        for r in &self.remarks {
            let lower = r.to_ascii_lowercase();
            let text = if lower.contains("diff between built and installed") {
                "dkms status: the installed module differs from the one dkms built (it was replaced or changed by hand after the build)".to_string()
            } else if lower.contains("missing some built modules") {
                "dkms status: some modules of the package were not built for this kernel"
                    .to_string()
            } else if lower.contains("original_module exists")
                || lower.contains("original modules exist")
            {
                "dkms status: dkms saved the kernel's own module and puts it back on 'dkms remove'"
                    .to_string()
            } else {
                format!("dkms status: {r}")
            };
            out.push(text);
        }
        if let Some(from) = &self.weak_from {
            out.push(format!(
                "dkms status: installed as a weak-updates link to the module built for {from}"
            ));
        }
        out
    }
}

/// Parses `dkms status` output: the 3.x form `name/ver, kernel, arch: state (remark)...`,
/// the 2.x form `name, ver, kernel, arch: state`, `added` lines without a kernel, and
/// `installed-weak from <kernel>`. Lines that are none of these (warnings, errors,
/// deprecation notices) are skipped; garbage never panics.
pub fn parse_status(text: &str) -> Vec<StatusLine> {
    text.lines().filter_map(parse_status_line).collect()
}

fn parse_status_line(line: &str) -> Option<StatusLine> {
    let line = line.trim_end();
    let (ident, rest) = line.split_once(": ")?;
    let fields: Vec<&str> = ident.split(", ").map(str::trim).collect();
    if fields
        .iter()
        .any(|f| f.is_empty() || f.contains(char::is_whitespace))
    {
        return None;
    }
    let (name, version, kernel, arch) = match (fields.as_slice(), fields[0].split_once('/')) {
        // 3.x: name/ver[, kernel, arch]
        ([_], Some((n, v))) => (n, v, None, None),
        ([_, k, a], Some((n, v))) => (n, v, Some(*k), Some(*a)),
        // 2.x: name, ver[, kernel, arch]
        ([n, v], None) => (*n, *v, None, None),
        ([n, v, k, a], None) => (*n, *v, Some(*k), Some(*a)),
        _ => return None,
    };
    if name.is_empty() || version.is_empty() || version.contains('/') {
        return None;
    }
    let rest = rest.trim();
    let (state_part, remarks_part) = match rest.find(" (") {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let mut words = state_part.split_whitespace();
    let state = words.next()?.to_string();
    if !state
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return None;
    }
    let weak_from = match (words.next(), words.next()) {
        (Some("from"), Some(k)) => Some(k.to_string()),
        _ => None,
    };
    let mut remarks = Vec::new();
    let mut depth = 0usize;
    let mut current = String::new();
    for c in remarks_part.chars() {
        match c {
            '(' => {
                if depth > 0 {
                    current.push(c);
                }
                depth += 1;
            }
            ')' if depth > 0 => {
                depth -= 1;
                if depth == 0 {
                    remarks.push(std::mem::take(&mut current).trim().to_string());
                } else {
                    current.push(c);
                }
            }
            _ if depth > 0 => current.push(c),
            _ => {}
        }
    }
    if depth > 0 && !current.trim().is_empty() {
        remarks.push(current.trim().to_string());
    }
    Some(StatusLine {
        name: name.to_string(),
        version: version.to_string(),
        kernel: kernel.map(str::to_string),
        arch: arch.map(str::to_string),
        state,
        weak_from,
        remarks,
    })
}

/// A module file on the audited system.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ModuleFile {
    /// The path as the audited system sees it.
    pub path: String,
    #[serde(skip)]
    pub host: PathBuf,
    #[serde(serialize_with = "ser_time")]
    pub mtime: Option<SystemTime>,
    pub size: u64,
}

impl ModuleFile {
    fn at(root: &Root, host: PathBuf) -> Option<ModuleFile> {
        let meta = std::fs::symlink_metadata(&host).ok()?;
        if !meta.is_file() {
            return None;
        }
        let system = root.system_path(&host).unwrap_or_else(|| host.clone());
        Some(ModuleFile {
            path: term::path(&system),
            mtime: meta.modified().ok(),
            size: meta.len(),
            host,
        })
    }

    /// The module's name: the file name without `.ko` and a compression suffix.
    pub(crate) fn module_name(&self) -> String {
        module_name_of(
            &self
                .host
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        )
        .unwrap_or_default()
    }
}

/// `amdgpu.ko.zst` → `amdgpu`; anything that is not `<name>.ko[.xz|.zst|.gz]` → None.
fn module_name_of(file_name: &str) -> Option<String> {
    for ext in COMPRESSED {
        if let Some(stem) = file_name.strip_suffix(&format!(".ko{ext}")) {
            if !stem.is_empty() {
                return Some(stem.to_string());
            }
        }
    }
    None
}

/// Whether the module the kernel loads was probably built from the changed sources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Provenance {
    /// Built after a change that is still in the sources: the changed code is in it.
    BuiltFromChangedSources,
    /// Built before every change still in the sources: not in it yet, but the next
    /// build (DKMS runs one on every kernel update) compiles it in.
    BuiltBeforeChange,
    /// The sources match their references now, but were written after the build
    /// (a restore without a rebuild): the module may still hold the old code.
    SourcesChangedSinceBuild,
    /// Built after the sources' last change, and the sources match their references.
    BuiltFromCleanSources,
    /// The kernel has no module of this package (version).
    NotBuilt,
    /// No reference says which files changed.
    Unknown,
    /// The installed module is not the one dkms built (replaced or changed by hand):
    /// what the kernel loads came from no source kfd-audit can check.
    InstalledNotBuilt,
}

impl Provenance {
    /// Whether the module should be rebuilt even if the sources are clean now.
    pub(crate) fn rebuild_due(self) -> bool {
        matches!(
            self,
            Provenance::BuiltFromChangedSources
                | Provenance::SourcesChangedSinceBuild
                | Provenance::InstalledNotBuilt
        )
    }
}

/// What changed in a source tree, with times, from the scan result.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct SourceChanges {
    /// Files that differ from their references (modified, missing, added) or have findings.
    pub changed_files: usize,
    /// Of those, the ones that go into a build (sources, headers, makefiles, scripts).
    pub build_inputs: usize,
    /// The newest change to a build input and the file it was made to.
    #[serde(serialize_with = "ser_time")]
    pub newest_change: Option<SystemTime>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub newest_change_file: Option<String>,
    /// The oldest change to a build input still in the sources.
    #[serde(serialize_with = "ser_time")]
    pub oldest_change: Option<SystemTime>,
    /// The newest write to any build input of the tree (a restore shows here).
    #[serde(serialize_with = "ser_time")]
    pub newest_write: Option<SystemTime>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub newest_write_file: Option<String>,
    /// Findings of medium severity or worse.
    pub unsafe_findings: usize,
    /// Whether any reference covers the tree.
    pub verified: bool,
    #[serde(skip)]
    change_times: Vec<SystemTime>,
}

/// Whether a file is an input of a DKMS build: a C source or header, assembly, a
/// makefile, a build script or dkms.conf. Backups such as `kfd_crat.c.patched` are
/// not compiled, so a backup made after the build does not make the module "newer".
pub(crate) fn is_build_input(rel: &Path) -> bool {
    let name = rel
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ext = rel
        .extension()
        .map(|e| e.to_string_lossy().into_owned())
        .unwrap_or_default();
    matches!(
        ext.as_str(),
        "c" | "h" | "S" | "s" | "mk" | "sh" | "lds" | "patch"
    ) || name.starts_with("Makefile")
        || name.starts_with("Kbuild")
        || name.starts_with("Kconfig")
        || name == "dkms.conf"
        || name == "configure"
}

fn mtime(p: &Path) -> Option<SystemTime> {
    std::fs::symlink_metadata(p).ok()?.modified().ok()
}

impl SourceChanges {
    pub(crate) fn of(scan: &TreeScan) -> SourceChanges {
        let mut c = SourceChanges {
            verified: !scan.refs.is_empty(),
            ..SourceChanges::default()
        };
        for f in &scan.files {
            c.unsafe_findings += f
                .findings
                .iter()
                .filter(|x| x.severity >= Severity::Medium)
                .count();
            // A finding on a file that matches its reference is the rule's problem, not a change.
            let changed =
                f.status.is_notable() || (f.status != FileStatus::Ok && !f.findings.is_empty());
            if !changed {
                continue;
            }
            c.changed_files += 1;
            let counts = f.status != FileStatus::Added || is_build_input(&f.path);
            if !counts && f.findings.is_empty() {
                continue;
            }
            c.build_inputs += 1;
            let host = scan.tree.host_path.join(&f.path);
            // A deleted file leaves its time on the directory it was deleted from.
            let t = if f.status == FileStatus::Missing {
                host.parent().and_then(mtime)
            } else {
                mtime(&host)
            };
            if let Some(t) = t {
                c.change_times.push(t);
                if c.newest_change.is_none_or(|n| t > n) {
                    c.newest_change = Some(t);
                    c.newest_change_file = Some(term::path(&f.path));
                }
                if c.oldest_change.is_none_or(|o| t < o) {
                    c.oldest_change = Some(t);
                }
            }
        }
        for entry in crate::io::walk::Walk::new(&scan.tree.host_path).entries() {
            let rel = entry
                .path()
                .strip_prefix(&scan.tree.host_path)
                .unwrap_or(entry.path());
            if entry.file_type().is_dir() || !is_build_input(rel) {
                continue;
            }
            if let Some(t) = entry.metadata().ok().and_then(|m| m.modified().ok()) {
                if c.newest_write.is_none_or(|n| t > n) {
                    c.newest_write = Some(t);
                    c.newest_write_file = entry
                        .path()
                        .strip_prefix(&scan.tree.host_path)
                        .ok()
                        .map(term::path);
                }
            }
        }
        c
    }

    /// Changes to build inputs made at or before `t` (these are in a module built at `t`).
    fn changes_before(&self, t: SystemTime) -> usize {
        self.change_times.iter().filter(|c| **c <= t).count()
    }
}

/// One kernel's view of a DKMS package.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct KernelState {
    pub kernel: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    /// The kernel this system runs now (`/proc/sys/kernel/osrelease`).
    pub running: bool,
    /// Headers at `/lib/modules/<kernel>/build`: dkms can build for it.
    pub headers: bool,
    /// Modules dkms built for this kernel, in `/var/lib/dkms/<name>/<ver>/<kernel>/<arch>/module`.
    pub built: Vec<ModuleFile>,
    /// This package's modules in `/lib/modules/<kernel>/updates/dkms` (and the other
    /// places dkms installs to): what the kernel loads.
    pub installed: Vec<ModuleFile>,
    /// The version the `kernel-<kernel>-<arch>` link points to, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub installed_version: Option<String>,
    /// The log of the build for this kernel.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub build_log: Option<String>,
    /// When the module was built: the make.log's time, else the built module's.
    #[serde(serialize_with = "ser_time")]
    pub built_at: Option<SystemTime>,
    /// When the installed module was written.
    #[serde(serialize_with = "ser_time")]
    pub installed_at: Option<SystemTime>,
    /// Whether the installed modules are byte for byte the ones dkms built.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub installed_matches_built: Option<bool>,
    /// What `dkms status` said about this kernel.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<StatusLine>,
    pub provenance: Provenance,
    /// The provenance said plainly.
    pub verdict: String,
    pub notes: Vec<String>,
}

impl KernelState {
    fn new(kernel: &str) -> KernelState {
        KernelState {
            kernel: kernel.to_string(),
            arch: None,
            running: false,
            headers: false,
            built: Vec::new(),
            installed: Vec::new(),
            installed_version: None,
            build_log: None,
            built_at: None,
            installed_at: None,
            installed_matches_built: None,
            status: None,
            provenance: Provenance::NotBuilt,
            verdict: String::new(),
            notes: Vec::new(),
        }
    }

    /// Whether this kernel has (or had) the package's module: built or installed.
    pub(crate) fn has_module(&self) -> bool {
        !self.built.is_empty() || !self.installed.is_empty() || self.installed_version.is_some()
    }

    /// The time that best says which sources the module the kernel loads came from.
    fn evidence(&self) -> Option<(SystemTime, &'static str)> {
        if !self.installed.is_empty() && self.installed_matches_built != Some(true) {
            return self.installed_at.map(|t| (t, "installed"));
        }
        self.built_at.map(|t| (t, "built"))
    }
}

/// A DKMS package (one source tree's `PACKAGE_NAME`/`PACKAGE_VERSION`) on the system.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PackageState {
    pub name: String,
    pub version: String,
    /// The source tree, as the audited system sees it.
    pub tree: String,
    /// Registered with dkms: `/var/lib/dkms/<name>/<ver>/` exists.
    pub registered: bool,
    /// Where `/var/lib/dkms/<name>/<ver>/source` points.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_link: Option<String>,
    /// Other versions of the same name registered with dkms.
    pub other_versions: Vec<String>,
    /// Modules the package builds (from dkms.conf and the DKMS tree).
    pub modules: Vec<String>,
    pub changes: SourceChanges,
    pub kernels: Vec<KernelState>,
    /// A `build/make.log` left by a build that failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed_build_log: Option<String>,
    pub notes: Vec<String>,
}

impl PackageState {
    /// Whether some kernel's module was probably built from sources that differ from
    /// the clean ones (now or before a restore): a rebuild is due.
    pub(crate) fn rebuild_due(&self) -> bool {
        self.kernels.iter().any(|k| k.provenance.rebuild_due())
    }
}

/// A copy of a module next to the real ones, e.g. `amdgpu.ko.xz.backup`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct StrayModule {
    pub path: String,
    pub kernel: String,
    pub module: String,
}

/// Everything kfd-audit knows about DKMS on the audited system.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct DkmsState {
    /// The dkms tool under the root, as the system sees it (None: not installed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    /// Whether `dkms status` was run (only for the running system, and only for
    /// packages registered with dkms).
    pub status_read: bool,
    /// Every parsed `dkms status` line of the scanned packages.
    pub status: Vec<StatusLine>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub running_kernel: Option<String>,
    pub packages: Vec<PackageState>,
    pub stray_modules: Vec<StrayModule>,
    pub notes: Vec<String>,
}

impl DkmsState {
    pub(crate) fn rebuild_due(&self) -> bool {
        self.packages.iter().any(PackageState::rebuild_due)
    }

    pub(crate) fn package_for(&self, tree_system_path: &str) -> Option<&PackageState> {
        self.packages.iter().find(|p| p.tree == tree_system_path)
    }

    /// Reads the DKMS state for the scanned trees.
    pub(crate) fn collect(root: &Root, scans: &[TreeScan]) -> DkmsState {
        let tool = find_tool(root, "dkms");
        let mut notes = Vec::new();
        let running_kernel = running_kernel(root);
        let registered: Vec<(String, String)> = scans
            .iter()
            .map(|s| (s.tree.package(), s.tree.version()))
            .filter(|(n, v)| {
                is_safe_name(n) && is_safe_name(v) && root.path(DKMS_TREE).join(n).join(v).is_dir()
            })
            .collect();
        let (status_read, status) = if !root.is_host_root() {
            (false, Vec::new())
        } else if tool.is_none() {
            notes.push(
                "dkms is not installed: the state below is read from /var/lib/dkms and /lib/modules only; \
                 install dkms (apt install dkms / dnf install dkms) before rebuilding"
                    .to_string(),
            );
            (false, Vec::new())
        } else {
            // Asked per registered package: dkms status diffs every module it lists.
            let mut lines = Vec::new();
            let mut read = !registered.is_empty();
            for (n, v) in &registered {
                match run_dkms_status(n, v) {
                    Ok(l) => lines.extend(l),
                    Err(e) => {
                        notes.push(format!("'dkms status -m {n} -v {v}' failed: {e}"));
                        read = false;
                    }
                }
            }
            (read, lines)
        };
        if tool.is_none() && !root.is_host_root() {
            notes.push(format!(
                "dkms is not installed under {}: install it in that system before rebuilding",
                root.dir().display()
            ));
        }
        let packages: Vec<PackageState> = scans
            .iter()
            .map(|s| package_state(root, s, &status, running_kernel.as_deref()))
            .collect();
        let mut names: BTreeSet<String> = BTreeSet::new();
        for p in &packages {
            names.extend(p.modules.iter().cloned());
        }
        names.insert("amdgpu".to_string());
        let stray_modules = find_stray_modules(root, &names);
        DkmsState {
            tool: tool.map(|t| term::path(&t)),
            status_read,
            status,
            running_kernel,
            packages,
            stray_modules,
            notes,
        }
    }
}

/// The running kernel's release, from `<root>/proc/sys/kernel/osrelease`.
pub(crate) fn running_kernel(root: &Root) -> Option<String> {
    let bytes =
        crate::io::read::read_reference(&root.path("/proc/sys/kernel/osrelease")).ok()??;
    let text = String::from_utf8_lossy(&bytes);
    let k = text.trim();
    is_safe_name(k).then(|| k.to_string())
}

/// A kernel, version or arch name usable as one path component and one argument.
pub(crate) fn is_safe_name(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && !s.starts_with('-')
        && s.chars().all(|c| c.is_ascii_graphic() && c != '/')
}

/// The system path of a tool under the root (`/usr/sbin/dkms`), if it is installed.
pub(crate) fn find_tool(root: &Root, name: &str) -> Option<PathBuf> {
    BIN_DIRS.iter().map(|d| Path::new(d).join(name)).find(|p| {
        root.resolve_in_root(p)
            .is_ok_and(|h| std::fs::metadata(h).is_ok_and(|m| m.is_file()))
    })
}

/// Whether dkms can build for this kernel: its headers are at `/lib/modules/<k>/build`.
pub(crate) fn has_headers(root: &Root, kernel: &str) -> bool {
    let build = Path::new(MODULES_DIR).join(kernel).join("build");
    root.resolve_in_root(&build).is_ok_and(|h| h.is_dir())
}

fn run_dkms_status(name: &str, version: &str) -> Result<Vec<StatusLine>, String> {
    let out = Command::new("dkms")
        .args(["status", "-m", name, "-v", version])
        .env("LC_ALL", "C")
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "exit status {}: {}",
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(parse_status(&String::from_utf8_lossy(&out.stdout)))
}

fn read_dir_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Orders kernel releases the way people read them: `6.1.0-9` before `6.1.0-10`.
pub(crate) fn kernel_order(a: &str, b: &str) -> std::cmp::Ordering {
    fn chunks(s: &str) -> Vec<(bool, &str)> {
        let mut out = Vec::new();
        let mut start = 0;
        let bytes = s.as_bytes();
        for i in 1..=bytes.len() {
            if i == bytes.len() || bytes[i].is_ascii_digit() != bytes[start].is_ascii_digit() {
                out.push((bytes[start].is_ascii_digit(), &s[start..i]));
                start = i;
            }
        }
        out
    }
    let (ca, cb) = (chunks(a), chunks(b));
    for (x, y) in ca.iter().zip(cb.iter()) {
        let ord = match (x, y) {
            ((true, xs), (true, ys)) => {
                let (xt, yt) = (xs.trim_start_matches('0'), ys.trim_start_matches('0'));
                xt.len().cmp(&yt.len()).then_with(|| xt.cmp(yt))
            }
            ((_, xs), (_, ys)) => xs.cmp(ys),
        };
        if ord != std::cmp::Ordering::Equal {
            return ord;
        }
    }
    ca.len().cmp(&cb.len()).then_with(|| a.cmp(b))
}

fn files_equal(a: &Path, b: &Path) -> bool {
    let (Ok(ma), Ok(mb)) = (std::fs::metadata(a), std::fs::metadata(b)) else {
        return false;
    };
    if ma.len() != mb.len() {
        return false;
    }
    match (std::fs::read(a), std::fs::read(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

/// The modules a package makes (by the names dkms gives the installed files) and the
/// directories under `/lib/modules/<kernel>` it may install them to.
fn conf_modules(tree: &crate::tree::Tree) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut modules = BTreeSet::new();
    let mut dest_dirs: BTreeSet<String> = INSTALL_DIRS.iter().map(|s| s.to_string()).collect();
    if let Some(conf) = &tree.conf {
        let dest_names: BTreeMap<u32, &str> =
            conf.indexed("DEST_MODULE_NAME").into_iter().collect();
        for m in conf.built_modules() {
            let n = dest_names
                .get(&m.index)
                .copied()
                .filter(|n| !n.is_empty())
                .unwrap_or(&m.name);
            if !n.is_empty() && !n.contains('$') {
                modules.insert(n.to_string());
            }
            if let Some(d) = &m.dest {
                let d = d.trim_matches('/');
                // In-tree locations hold the kernel's own modules, never dkms's.
                if !d.is_empty() && !d.contains('$') && !d.starts_with("kernel") {
                    dest_dirs.insert(d.to_string());
                }
            }
        }
    }
    (modules, dest_dirs)
}

type Kernels = BTreeMap<String, KernelState>;

fn kernel_entry<'a>(kernels: &'a mut Kernels, k: &str) -> &'a mut KernelState {
    kernels
        .entry(k.to_string())
        .or_insert_with(|| KernelState::new(k))
}

/// Builds in `/var/lib/dkms/<name>/<ver>/<kernel>/<arch>/`: modules and make.log.
fn read_builds(root: &Root, ver_dir: &Path, kernels: &mut Kernels, modules: &mut BTreeSet<String>) {
    for k in read_dir_names(ver_dir) {
        // dkms's own glob for kernel directories: a digit first, a dot somewhere.
        if !k.starts_with(|c: char| c.is_ascii_digit()) || !k.contains('.') || !is_safe_name(&k) {
            continue;
        }
        for arch in read_dir_names(&ver_dir.join(&k)) {
            let base = ver_dir.join(&k).join(&arch);
            if !base.is_dir() || !is_safe_name(&arch) {
                continue;
            }
            let ks = kernel_entry(kernels, &k);
            ks.arch = Some(arch.clone());
            for f in read_dir_names(&base.join("module")) {
                if module_name_of(&f).is_none() {
                    continue;
                }
                if let Some(m) = ModuleFile::at(root, base.join("module").join(&f)) {
                    modules.insert(m.module_name());
                    ks.built.push(m);
                }
            }
            let log = base.join("log/make.log");
            if let Some(t) = mtime(&log) {
                ks.built_at = Some(t);
                ks.build_log = root.system_path(&log).map(|p| term::path(&p));
            } else {
                ks.built_at = ks.built.iter().filter_map(|m| m.mtime).max();
            }
        }
    }
}

/// The `kernel-<kernel>-<arch>` links of a name: which version is installed where.
/// Kernels with this version are marked in `kernels`; the others are returned, so
/// that another version's installed files are not taken for this one's.
fn read_links(name_dir: &Path, version: &str, kernels: &mut Kernels) -> BTreeMap<String, String> {
    let mut foreign = BTreeMap::new();
    for link in read_dir_names(name_dir) {
        let Some(rest) = link.strip_prefix("kernel-") else {
            continue;
        };
        let Ok(target) = std::fs::read_link(name_dir.join(&link)) else {
            continue;
        };
        let parts: Vec<String> = target
            .components()
            .filter_map(|c| match c {
                std::path::Component::Normal(p) => Some(p.to_string_lossy().into_owned()),
                _ => None,
            })
            .collect();
        // The target is `<ver>/<kernel>/<arch>`; the name says `kernel-<kernel>-<arch>`.
        let (ver, k, arch) = match parts.as_slice() {
            [v, k, a] => (v.clone(), k.clone(), Some(a.clone())),
            _ => match rest.rsplit_once('-') {
                Some((k, a)) => ("?".to_string(), k.to_string(), Some(a.to_string())),
                None => continue,
            },
        };
        if !is_safe_name(&k) {
            continue;
        }
        if ver == version || (ver == "?" && kernels.contains_key(&k)) {
            let ks = kernel_entry(kernels, &k);
            ks.installed_version = Some(ver);
            if ks.arch.is_none() {
                ks.arch = arch;
            }
        } else {
            if let Some(ks) = kernels.get_mut(&k) {
                ks.installed_version = Some(ver.clone());
            }
            foreign.insert(k, ver);
        }
    }
    foreign
}

/// The package's module files under `/lib/modules/<kernel>/` for every kernel.
fn read_installed(
    root: &Root,
    dest_dirs: &BTreeSet<String>,
    modules: &BTreeSet<String>,
    foreign: &BTreeMap<String, String>,
    kernels: &mut Kernels,
) {
    for k in read_dir_names(&root.path(MODULES_DIR)) {
        // Another version is installed for this kernel: its files are not ours to judge.
        if !is_safe_name(&k) || foreign.contains_key(&k) {
            continue;
        }
        let kdir = root.path(MODULES_DIR).join(&k);
        let mut found = Vec::new();
        for d in dest_dirs {
            let dir = kdir.join(d);
            for f in read_dir_names(&dir) {
                if module_name_of(&f).is_some_and(|m| modules.contains(&m)) {
                    found.extend(ModuleFile::at(root, dir.join(&f)));
                }
            }
        }
        // No module of its own: RHEL's and SLES's weak-updates links may make it load
        // another kernel's build, which then decides its provenance.
        let mut notes = Vec::new();
        if found.is_empty() {
            (found, notes) = weak::through_links(root, &k, modules);
        }
        if !found.is_empty() || !notes.is_empty() {
            let ks = kernel_entry(kernels, &k);
            ks.installed = found;
            ks.notes.extend(notes);
        }
    }
}

/// Fills in what is derived: headers, times, consistency, dkms status, the verdict.
fn finish_kernel(
    root: &Root,
    ks: &mut KernelState,
    name: &str,
    version: &str,
    status: &[StatusLine],
    changes: &SourceChanges,
) {
    ks.headers = has_headers(root, &ks.kernel);
    ks.installed_at = ks.installed.iter().filter_map(|m| m.mtime).max();
    if !ks.installed.is_empty() && !ks.built.is_empty() {
        let all_match = ks.installed.iter().all(|i| {
            ks.built
                .iter()
                .find(|b| b.module_name() == i.module_name())
                .is_some_and(|b| files_equal(&b.host, &i.host))
        });
        ks.installed_matches_built = Some(all_match);
        if !all_match {
            ks.notes.push(
                "the installed module is not the one dkms built: it was replaced or changed by hand"
                    .to_string(),
            );
        }
    }
    match ks.installed_version.as_deref() {
        Some(v) if v != version => ks.notes.push(format!(
            "{name}/{v} is installed for this kernel, not {version}"
        )),
        Some(_) if ks.installed.is_empty() => ks.notes.push(format!(
            "dkms marks {name}/{version} installed for this kernel, but no module file was found in /lib/modules/{}",
            ks.kernel
        )),
        _ => {}
    }
    ks.status = status
        .iter()
        .find(|s| {
            s.name == name
                && s.version == version
                && s.kernel.as_deref() == Some(ks.kernel.as_str())
                && (ks.arch.is_none() || s.arch == ks.arch)
        })
        .cloned();
    if let Some(s) = &ks.status {
        let explained = s.explanations();
        ks.notes.extend(explained);
    }
    let (provenance, verdict) = judge_provenance(ks, changes);
    ks.provenance = provenance;
    ks.verdict = verdict;
    // A hand-replaced module is judged by its own time above; when that time says
    // nothing is wrong, the replacement itself still is: clean sources say nothing
    // about a .ko that dkms did not build from them.
    let diff_remark = ks.status.as_ref().is_some_and(|s| {
        s.remarks.iter().any(|r| {
            r.to_ascii_lowercase()
                .contains("diff between built and installed")
        })
    });
    if (ks.installed_matches_built == Some(false) || diff_remark) && !ks.provenance.rebuild_due() {
        let installed = ks
            .installed
            .iter()
            .map(|m| m.path.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        ks.provenance = Provenance::InstalledNotBuilt;
        ks.verdict = format!(
            "the installed module ({installed}) is not the one dkms built: it was replaced or changed by hand, \
             so what the kernel loads is not known to come from these sources; rebuild and reinstall it \
             (kfd-audit plan: dkms remove, build, install)"
        );
    }
}

/// Reads one tree's DKMS package state; `status` is parsed `dkms status` output
/// (empty when not read) and `running` the running kernel.
pub(crate) fn package_state(
    root: &Root,
    scan: &TreeScan,
    status: &[StatusLine],
    running: Option<&str>,
) -> PackageState {
    let tree = &scan.tree;
    let name = tree.package();
    let version = tree.version();
    let tree_sys = term::path(&tree.system_path);
    let changes = SourceChanges::of(scan);
    let mut notes = Vec::new();
    let name_dir = root.path(DKMS_TREE).join(&name);
    let ver_dir = name_dir.join(&version);
    let safe = is_safe_name(&name) && is_safe_name(&version);
    let registered = safe && ver_dir.is_dir();
    let source_link = std::fs::read_link(ver_dir.join("source"))
        .ok()
        .map(|p| term::path(&p));
    if let Some(link) = &source_link {
        if link.trim_end_matches('/') != tree_sys {
            notes.push(format!(
                "dkms builds {name}/{version} from {link}, not from {tree_sys}"
            ));
        }
    }
    let other_versions: Vec<String> = read_dir_names(&name_dir)
        .into_iter()
        .filter(|v| {
            *v != version
                && !v.starts_with("kernel-")
                && v != "original_module"
                && name_dir.join(v).is_dir()
        })
        .collect();

    let (mut modules, dest_dirs) = conf_modules(tree);
    let mut kernels = Kernels::new();
    if registered {
        read_builds(root, &ver_dir, &mut kernels, &mut modules);
    }
    if modules.is_empty() {
        modules.insert(name.clone());
    }
    let foreign = if safe {
        read_links(&name_dir, &version, &mut kernels)
    } else {
        BTreeMap::new()
    };
    read_installed(root, &dest_dirs, &modules, &foreign, &mut kernels);
    for (k, v) in &foreign {
        notes.push(format!(
            "{name}/{v} (not this tree's version) is installed for kernel {k}: judge and rebuild it from its own tree (--tree /usr/src/{name}-{v})"
        ));
    }
    if let Some(r) = running {
        // For a disk mounted elsewhere the host's kernel matters only if that system has it.
        if root.is_host_root() || root.path(MODULES_DIR).join(r).is_dir() {
            kernel_entry(&mut kernels, r).running = true;
        }
    }
    let mut kernels: Vec<KernelState> = kernels.into_values().collect();
    kernels.sort_by(|a, b| kernel_order(&a.kernel, &b.kernel));
    for ks in &mut kernels {
        finish_kernel(root, ks, &name, &version, status, &changes);
    }

    let failed = ver_dir.join("build/make.log");
    let failed_build_log = if failed.is_file() {
        let sys = root.system_path(&failed).map(|p| term::path(&p));
        if let Some(p) = &sys {
            notes.push(format!(
                "a dkms build of {name}/{version} failed or was interrupted: its log is {p}"
            ));
        }
        sys
    } else {
        None
    };
    if !registered && tree.conf.is_some() {
        notes.push(format!(
            "{name}/{version} is not registered with dkms (no {DKMS_TREE}/{name}/{version})"
        ));
    }
    if let Some(p) = &tree.conf_problem {
        notes.push(format!("{p}: dkms cannot build this tree"));
    }
    PackageState {
        name,
        version,
        tree: tree_sys,
        registered,
        source_link,
        other_versions,
        modules: modules.into_iter().collect(),
        changes,
        kernels,
        failed_build_log,
        notes,
    }
}

/// Decides where the module a kernel loads (or would load) came from, and says so.
fn judge_provenance(ks: &KernelState, c: &SourceChanges) -> (Provenance, String) {
    let Some((at, how)) = ks.evidence() else {
        return (
            Provenance::NotBuilt,
            if ks.has_module() {
                "no module file of this version for this kernel".to_string()
            } else {
                "no module of this package for this kernel".to_string()
            },
        );
    };
    let installed = !ks.installed.is_empty();
    let loaded = if installed {
        ""
    } else {
        " (built, not installed: the kernel does not load it unless it is installed)"
    };
    if !c.verified {
        return (
            Provenance::Unknown,
            format!(
                "{how} {}; no clean reference for the sources, so it cannot be told whether they were changed \
                 (take a baseline while the tree is clean: kfd-audit baseline create)",
                format_time(at)
            ),
        );
    }
    let what = if c.unsafe_findings > 0 {
        "unsafe"
    } else {
        "changed"
    };
    if c.build_inputs > 0 && !c.change_times.is_empty() {
        let before = c.changes_before(at);
        if before > 0 {
            let later = c.change_times.len() - before;
            let mut v = if installed {
                format!("built after the change: the {what} code is probably live")
            } else {
                format!("built after the change: the {what} code is in this module{loaded}")
            };
            if later > 0 {
                v.push_str(&format!("; {later} later change(s) are not in it yet"));
            }
            return (Provenance::BuiltFromChangedSources, v);
        }
        return (
            Provenance::BuiltBeforeChange,
            format!(
                "built before the change: the {what} code is not in this module yet, but the next build \
                 (dkms runs one for every new kernel) would compile it in{loaded}"
            ),
        );
    }
    match c.newest_write {
        Some(w) if w > at => (
            Provenance::SourcesChangedSinceBuild,
            format!(
                "the sources match their references now, but {} was written after this module was {how} \
                 (a restore without a rebuild?): the module may still hold the old, changed code; rebuild it{loaded}",
                c.newest_write_file.as_deref().unwrap_or("a file")
            ),
        ),
        _ => (
            Provenance::BuiltFromCleanSources,
            format!("{how} after the sources' last change, and the sources match their references: clean{loaded}"),
        ),
    }
}

/// Finds copies such as `amdgpu.ko.xz.backup` or `amdgpu.ko.orig` of the package's
/// modules under `/lib/modules/*/`. depmod ignores these names, so they are not
/// loaded, but they are modules someone saved and may copy back.
fn find_stray_modules(root: &Root, names: &BTreeSet<String>) -> Vec<StrayModule> {
    let mut out = Vec::new();
    let base = root.path(MODULES_DIR);
    for k in read_dir_names(&base) {
        for d in STRAY_DIRS {
            let dir = base.join(&k).join(d);
            if !dir.is_dir() {
                continue;
            }
            for e in walkdir::WalkDir::new(&dir)
                .follow_links(false)
                .max_depth(6)
                .into_iter()
                .flatten()
            {
                if e.file_type().is_dir() {
                    continue;
                }
                let file = e.file_name().to_string_lossy();
                let Some((module, rest)) = file.split_once(".ko") else {
                    continue;
                };
                if !names.contains(module) || module_name_of(&file).is_some() || rest.is_empty() {
                    continue;
                }
                // `updates` contains `updates/dkms`: walk each file once.
                if out
                    .iter()
                    .any(|s: &StrayModule| root.path(&s.path) == e.path())
                {
                    continue;
                }
                out.push(StrayModule {
                    path: root
                        .system_path(e.path())
                        .map(|p| term::path(&p))
                        .unwrap_or_default(),
                    kernel: k.clone(),
                    module: module.to_string(),
                });
            }
        }
    }
    out
}

/// One kernel's lines: what it has, the times, the verdict, the notes.
pub(crate) fn kernel_text(k: &KernelState, indent: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let mut tags = Vec::new();
    if let Some(a) = &k.arch {
        tags.push(a.clone());
    }
    if k.running {
        tags.push("running".into());
    }
    if !k.headers {
        tags.push("no headers".into());
    }
    let what = if !k.installed.is_empty() {
        format!(
            "installed {}",
            k.installed
                .iter()
                .map(|m| m.path.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    } else if !k.built.is_empty() {
        "built, not installed".to_string()
    } else {
        "no module".to_string()
    };
    let _ = writeln!(
        out,
        "{indent}kernel {} ({}): {}",
        term::escape(&k.kernel),
        tags.join(", "),
        term::escape(&what)
    );
    if k.built_at.is_some() || k.installed_at.is_some() {
        let log = k
            .build_log
            .as_ref()
            .map(|l| format!(" (make.log {})", term::escape(l)))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{indent}  built {}{}, installed {}",
            opt_time(k.built_at),
            log,
            opt_time(k.installed_at)
        );
    }
    let _ = writeln!(out, "{indent}  {}", term::escape(&k.verdict));
    for n in &k.notes {
        let _ = writeln!(out, "{indent}  note: {}", term::escape(n));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_dkms_3_status() {
        let s = parse_status(
            "amdgpu/6.8.5-2009582.24.04, 6.1.0-56-amd64, x86_64: installed\n\
             amdgpu/6.8.5-2009582.24.04, 6.1.0-55-amd64, x86_64: installed (WARNING! Diff between built and installed module!)\n\
             amdgpu/6.8.5-2009582.24.04, 6.5.0-1-generic, x86_64: built (original_module exists) (WARNING! Missing some built modules!)\n\
             amdgpu/6.16.6: added\n\
             amdgpu/6.16.6, 6.8.0-40-generic, x86_64: installed (Original modules exist)\n",
        );
        assert_eq!(s.len(), 5);
        assert_eq!(s[0].name, "amdgpu");
        assert_eq!(s[0].version, "6.8.5-2009582.24.04");
        assert_eq!(s[0].kernel.as_deref(), Some("6.1.0-56-amd64"));
        assert_eq!(s[0].arch.as_deref(), Some("x86_64"));
        assert_eq!(s[0].state, "installed");
        assert!(s[0].remarks.is_empty());
        assert_eq!(
            s[1].remarks,
            vec!["WARNING! Diff between built and installed module!"]
        );
        assert!(s[1].explanations()[0].contains("replaced or changed by hand"));
        assert_eq!(s[2].state, "built");
        assert_eq!(
            s[2].remarks,
            vec![
                "original_module exists",
                "WARNING! Missing some built modules!"
            ]
        );
        assert_eq!(s[3].state, "added");
        assert_eq!(s[3].kernel, None);
        assert_eq!(s[4].remarks, vec!["Original modules exist"]);
        assert!(s[4].explanations()[0].contains("kernel's own module"));
    }

    #[test]
    fn parses_dkms_2_status_and_weak() {
        let s = parse_status(
            "amdgpu, 1.9-211.el7, 3.10.0-957.el7.x86_64, x86_64: installed\n\
             amdgpu, 1.9-211.el7: added\n\
             amdgpu, 1.9-211.el7, 3.10.0-1062.el7.x86_64, x86_64: installed-weak from 3.10.0-957.el7.x86_64\n",
        );
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].name, "amdgpu");
        assert_eq!(s[0].version, "1.9-211.el7");
        assert_eq!(s[0].kernel.as_deref(), Some("3.10.0-957.el7.x86_64"));
        assert_eq!(s[1].state, "added");
        assert_eq!(s[2].state, "installed-weak");
        assert_eq!(s[2].weak_from.as_deref(), Some("3.10.0-957.el7.x86_64"));
    }

    #[test]
    fn skips_noise_and_survives_garbage() {
        let s = parse_status(
            "Deprecated feature: REMAKE_INITRD (/usr/src/amdgpu-6.8.5/dkms.conf)\n\
             Error! Could not locate dkms.conf file.\n\
             File: /var/lib/dkms/x/1/source/dkms.conf does not exist.\n\
             : installed\n, , : x\na/b, c: built\n\
             kfdtoy/1.0, 6.1.0-56-amd64, x86_64: installed\n",
        );
        assert_eq!(s.len(), 1, "{s:?}");
        assert_eq!(s[0].name, "kfdtoy");
        for g in [
            "",
            ":",
            ": ",
            "a/: x",
            "/b: x",
            "a/b: (",
            "a/b: x (((",
            "a/b: x )(",
            "é/ü, ☃, ☃: ☃",
            "a/b, k, x86_64: installed (unterminated",
            "\u{0}/\u{0}: \u{0}",
        ] {
            let _ = parse_status(g);
        }
        let t = parse_status("a/b, k, x86_64: installed (unterminated");
        assert_eq!(t[0].remarks, vec!["unterminated"]);
    }

    #[test]
    fn orders_kernels_numerically() {
        let mut v = vec![
            "6.1.0-10-amd64",
            "6.1.0-9-amd64",
            "5.15.0-100-generic",
            "6.10.2",
        ];
        v.sort_by(|a, b| kernel_order(a, b));
        assert_eq!(
            v,
            vec![
                "5.15.0-100-generic",
                "6.1.0-9-amd64",
                "6.1.0-10-amd64",
                "6.10.2"
            ]
        );
    }

    #[test]
    fn module_names() {
        assert_eq!(module_name_of("amdgpu.ko.zst").as_deref(), Some("amdgpu"));
        assert_eq!(module_name_of("amd-sched.ko").as_deref(), Some("amd-sched"));
        assert_eq!(module_name_of("amdgpu.ko.xz.backup"), None);
        assert_eq!(module_name_of(".ko"), None);
        assert!(is_build_input(Path::new("amd/amdkfd/kfd_crat.c")));
        assert!(is_build_input(Path::new("amd/dkms/Makefile")));
        assert!(!is_build_input(Path::new("amd/amdkfd/kfd_crat.c.patched")));
    }

    #[test]
    fn resolves_absolute_links_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        std::fs::create_dir_all(r.join("usr/src/linux-headers-6.1.0-9-amd64/include")).unwrap();
        std::fs::create_dir_all(r.join("lib/modules/6.1.0-9-amd64")).unwrap();
        std::os::unix::fs::symlink(
            "/usr/src/linux-headers-6.1.0-9-amd64",
            r.join("lib/modules/6.1.0-9-amd64/build"),
        )
        .unwrap();
        std::fs::create_dir_all(r.join("lib/modules/6.1.0-8-amd64")).unwrap();
        std::os::unix::fs::symlink(
            "/usr/src/linux-headers-6.1.0-8-amd64",
            r.join("lib/modules/6.1.0-8-amd64/build"),
        )
        .unwrap();
        let root = Root::open(r).unwrap();
        assert!(has_headers(&root, "6.1.0-9-amd64"));
        assert!(!has_headers(&root, "6.1.0-8-amd64"), "dangling link");
        assert!(!has_headers(&root, "6.1.0-7-amd64"));
    }
}
