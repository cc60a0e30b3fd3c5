//! The restore plan: for each modified or missing file, the verified clean source
//! chosen, its hash, and what happens to the current file. Built from a scan and
//! read-only; applying it is [`super::apply`]'s job.

use crate::content::CleanContent;
use crate::error::{Error, Result};
use crate::io::atomic::{self, TEMP_PREFIX};
use crate::io::hash::{Algorithm, Digest};
use crate::io::root::Root;
use crate::reference::ReferenceKind;
use crate::scan::{FileStatus, TreeScan};
use crate::tree::Tree;
use serde::Serialize;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// kfd-audit's state directory as the audited system names it.
pub(crate) const STATE_DIR: &str = crate::reference::baseline::STATE_DIR;

/// The clean content providers of a scanned tree. The one place the restore
/// engine asks for them, so that new providers arrive here only.
pub(crate) fn clean_content<'a>(root: &Root, scan: &'a TreeScan) -> CleanContent<'a> {
    CleanContent::for_tree(root, &scan.tree, &scan.refs)
}

/// What will happen to one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Action {
    /// The file exists and differs: its current version is quarantined, then replaced.
    Replace,
    /// The file is missing: it is created.
    Create,
}

impl Action {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Action::Replace => "replace",
            Action::Create => "create",
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct PlanItem {
    /// Path inside the tree.
    pub rel: PathBuf,
    pub action: Action,
    /// Digest of the current file when planned (reference algorithm); `None` if missing.
    pub current: Option<Digest>,
    /// The digest the clean bytes were verified against, and the reference vouching for it.
    pub expected: Digest,
    pub reference: ReferenceKind,
    /// The provider that had verified bytes, and where exactly they are.
    pub source: ReferenceKind,
    pub origin: String,
    /// The verified clean bytes (fetched and verified again right before use).
    pub clean: Vec<u8>,
}

/// A modified or missing file for which no verified clean bytes exist.
#[derive(Debug, Clone)]
pub(crate) struct NoSource {
    pub rel: PathBuf,
    pub status: FileStatus,
    pub reference: Option<ReferenceKind>,
    pub detail: Option<String>,
}

/// A file in no reference (added): it can be moved into the quarantine, journaled
/// and undoable like a replacement, never deleted.
#[derive(Debug, Clone)]
pub(crate) struct AddedFile {
    pub rel: PathBuf,
    /// SHA-256 of the file when planned; it is moved only while it still has it.
    pub current: Digest,
    /// Whether the build reads it (a source, header, Makefile or Kbuild fragment):
    /// such a file changes the module as much as a modified one, and `--yes` moves it.
    pub builds: bool,
}

/// One entry of a tree's plan, by its index (the files to restore first, then the
/// added files).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Entry<'a> {
    Restore(&'a PlanItem),
    Move(&'a AddedFile),
}

/// A file the restore will not touch, and why.
#[derive(Debug, Clone)]
pub(crate) struct RefusedFile {
    pub rel: PathBuf,
    pub reason: String,
}

#[derive(Debug, Clone)]
pub(crate) struct TreePlan {
    pub tree: Tree,
    pub dpkg_package: Option<String>,
    /// On RPM systems: the fetch and the reinstall command of the owning package.
    pub(crate) rpm_advice: Vec<String>,
    pub references: Vec<ReferenceKind>,
    pub items: Vec<PlanItem>,
    pub no_source: Vec<NoSource>,
    pub refused: Vec<RefusedFile>,
    /// Regular files in no reference (added), which the restore can move into the
    /// quarantine.
    pub added: Vec<AddedFile>,
    /// Other files in no reference (links, unreadable ones): listed, never touched.
    pub kept: Vec<PathBuf>,
    /// Temporary files of a killed run; the next restore removes them.
    pub leftover_temps: Vec<PathBuf>,
}

impl TreePlan {
    /// The system path of a file of this tree.
    pub(crate) fn system_path(&self, rel: &Path) -> PathBuf {
        self.tree.system_path.join(rel)
    }

    /// Whether anything is to be done or reported for this tree.
    pub(crate) fn is_empty(&self) -> bool {
        self.items.is_empty() && self.no_source.is_empty() && self.refused.is_empty()
    }

    /// How many entries the review can ask about: files to restore, then added files.
    pub(crate) fn entry_count(&self) -> usize {
        self.items.len() + self.added.len()
    }

    /// Entry `i` (see [`Entry`]).
    pub(crate) fn entry(&self, i: usize) -> Entry<'_> {
        match self.items.get(i) {
            Some(item) => Entry::Restore(item),
            None => Entry::Move(&self.added[i - self.items.len()]),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct RestorePlan {
    pub root: PathBuf,
    pub trees: Vec<TreePlan>,
}

impl RestorePlan {
    pub(crate) fn item_count(&self) -> usize {
        self.trees.iter().map(|t| t.items.len()).sum()
    }

    pub(crate) fn no_source_count(&self) -> usize {
        self.trees.iter().map(|t| t.no_source.len()).sum()
    }

    pub(crate) fn refused_count(&self) -> usize {
        self.trees.iter().map(|t| t.refused.len()).sum()
    }

    pub(crate) fn kept_count(&self) -> usize {
        self.trees.iter().map(|t| t.kept.len()).sum()
    }

    pub(crate) fn added_count(&self) -> usize {
        self.trees.iter().map(|t| t.added.len()).sum()
    }

    /// Added files the build reads: `--yes` moves these.
    pub(crate) fn added_build_count(&self) -> usize {
        self.trees
            .iter()
            .flat_map(|t| &t.added)
            .filter(|a| a.builds)
            .count()
    }
}

/// The SHA-256 of an added file, read without following links; `None` when it
/// cannot be read as a regular file (it is then only listed).
fn added_digest(tree: &Tree, rel: &Path) -> Option<Digest> {
    let f = atomic::TreeFile::open(&tree.host_path, rel, None).ok()?;
    f.stat().ok()??;
    let bytes = f.read().ok()??;
    Some(Digest::of_bytes(Algorithm::Sha256, &bytes))
}

/// Whether a file is selected by the `--only` paths: a path relative to the tree
/// (or a directory prefix of it), or an absolute system or host path.
fn only_matches(only: &[PathBuf], tree: &Tree, rel: &Path) -> bool {
    only.is_empty()
        || only.iter().any(|o| {
            if o.is_absolute() {
                tree.system_path.join(rel).starts_with(o) || tree.host_path.join(rel).starts_with(o)
            } else {
                let o = crate::scan::scope_prefix(&o.to_string_lossy());
                rel.starts_with(o)
            }
        })
}

fn is_temp(rel: &Path) -> bool {
    rel.file_name()
        .is_some_and(|n| n.as_bytes().starts_with(TEMP_PREFIX.as_bytes()))
}

/// Shows an origin (a host path under the root) as the audited system names it.
pub(crate) fn display_origin(root: &Root, origin: &str) -> String {
    let p = Path::new(origin);
    match root.system_path(p) {
        Some(sys) if p.is_absolute() => crate::term::path(&sys),
        _ => crate::term::escape(origin).into_owned(),
    }
}

/// Builds the plan from scans, with the clean content they fetched (or, for a scan
/// that did not look for it, fetched here). `only` limits it; a path in `only` that matches no
/// modified, missing or refused file is an error (a typo must not look like "clean").
pub(crate) fn build(root: &Root, scans: &[TreeScan], only: &[PathBuf]) -> Result<RestorePlan> {
    let mut trees = Vec::new();
    let mut matched = vec![false; only.len()];
    for scan in scans {
        let tree = &scan.tree;
        let mut tp = TreePlan {
            tree: tree.clone(),
            dpkg_package: scan.refs.dpkg_package.clone(),
            rpm_advice: [&scan.refs.rpm_fetch, &scan.refs.rpm_reinstall]
                .into_iter()
                .flatten()
                .cloned()
                .collect(),
            references: scan.refs.kinds.clone(),
            items: Vec::new(),
            no_source: Vec::new(),
            refused: Vec::new(),
            added: Vec::new(),
            kept: Vec::new(),
            leftover_temps: Vec::new(),
        };
        let wanted: Vec<PathBuf> = scan
            .files
            .iter()
            .filter(|f| matches!(f.status, FileStatus::Modified | FileStatus::Missing))
            .filter(|f| !is_temp(&f.path) && only_matches(only, tree, &f.path))
            .map(|f| f.path.clone())
            .collect();
        let mut copies = std::collections::BTreeMap::new();
        if scan.content_checked {
            // The scan fetched and verified them: a run fetches clean content once.
            for rel in wanted {
                if let Some(c) = scan.clean_copies.get(&rel) {
                    copies.insert(rel, c.clone());
                }
            }
        } else {
            // Asked for all at once: a package archive is then read through once,
            // not once per file.
            clean_content(root, scan).get_many(&wanted, &mut |rel, copy| {
                if let Some(c) = copy {
                    copies.insert(rel.to_path_buf(), c);
                }
            });
        }
        for f in &scan.files {
            if is_temp(&f.path) {
                tp.leftover_temps.push(f.path.clone());
                continue;
            }
            if !only_matches(only, tree, &f.path) {
                continue;
            }
            let counts = match f.status {
                FileStatus::Modified | FileStatus::Missing => {
                    let expected = scan.refs.get(&f.path).cloned();
                    match (copies.remove(&f.path), expected) {
                        (Some(copy), Some(exp)) => tp.items.push(PlanItem {
                            rel: f.path.clone(),
                            action: if f.status == FileStatus::Missing {
                                Action::Create
                            } else {
                                Action::Replace
                            },
                            current: f.actual.clone(),
                            expected: copy.verified,
                            reference: exp.kind,
                            source: copy.source,
                            origin: copy.origin,
                            clean: copy.bytes,
                        }),
                        _ => tp.no_source.push(NoSource {
                            rel: f.path.clone(),
                            status: f.status,
                            reference: f.reference,
                            detail: None,
                        }),
                    }
                    true
                }
                FileStatus::Symlink if scan.refs.get(&f.path).is_some() => {
                    tp.refused.push(RefusedFile {
                        rel: f.path.clone(),
                        reason: format!(
                            "a symbolic link{} where a file belongs; kfd-audit never writes through a link: remove the link and run again, or restore the file by hand",
                            f.detail.as_deref().map(|d| format!(" ({d})")).unwrap_or_default()
                        ),
                    });
                    true
                }
                FileStatus::Unreadable if scan.refs.get(&f.path).is_some() => {
                    tp.refused.push(RefusedFile {
                        rel: f.path.clone(),
                        reason: format!(
                            "unreadable ({}); fix its permissions or type and run again",
                            f.detail.as_deref().unwrap_or("unknown error")
                        ),
                    });
                    true
                }
                // The tree's own dkms.conf is how dkms builds it at all: moving it
                // away would leave no way to rebuild, so it is only listed.
                FileStatus::Added if f.path == Path::new("dkms.conf") => {
                    tp.kept.push(f.path.clone());
                    false
                }
                FileStatus::Added => match added_digest(tree, &f.path) {
                    Some(current) => {
                        tp.added.push(AddedFile {
                            rel: f.path.clone(),
                            current,
                            // The DKMS state counts an added file with a finding as
                            // read by the build whatever its name (a `.inc` can be
                            // #included): moved with the build inputs, or plan --run
                            // would still refuse after `restore --yes`.
                            builds: crate::dkms::is_build_input(&f.path) || !f.findings.is_empty(),
                        });
                        true
                    }
                    None => {
                        tp.kept.push(f.path.clone());
                        false
                    }
                },
                FileStatus::Symlink | FileStatus::Unreadable => {
                    tp.kept.push(f.path.clone());
                    false
                }
                FileStatus::Ok | FileStatus::Unverified => false,
            };
            if counts {
                for (i, o) in only.iter().enumerate() {
                    if only_matches(std::slice::from_ref(o), tree, &f.path) {
                        matched[i] = true;
                    }
                }
            }
        }
        trees.push(tp);
    }
    if let Some(i) = matched.iter().position(|m| !m) {
        return Err(Error::Refused {
            path: only[i].clone(),
            message: "--only matches no modified, missing, added or refused file of any tree; see 'kfd-audit scan' for what differs".into(),
        });
    }
    Ok(RestorePlan {
        root: root.dir().to_path_buf(),
        trees,
    })
}

/// Where the quarantine copy of a file goes, as the audited system names it.
pub(crate) fn quarantine_path(run: &str, system_path: &Path) -> PathBuf {
    let rel = system_path.strip_prefix("/").unwrap_or(system_path);
    Path::new(STATE_DIR).join("quarantine").join(run).join(rel)
}

fn algorithm_name(a: Algorithm) -> &'static str {
    a.as_str()
}

// ---- JSON view (extend, never rename) ----

#[derive(Debug, Serialize)]
pub(crate) struct PlanJson {
    pub version: u32,
    pub root: String,
    pub dry_run: bool,
    pub trees: Vec<TreePlanJson>,
    pub summary: PlanSummary,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
}

#[derive(Debug, Serialize)]
pub(crate) struct PlanSummary {
    pub restore: usize,
    pub no_source: usize,
    pub refused: usize,
    pub kept: usize,
    /// Added files (in no reference) that can be moved into the quarantine.
    pub added: usize,
}

#[derive(Debug, Serialize)]
pub(crate) struct TreePlanJson {
    pub path: String,
    pub package: String,
    pub version: String,
    pub references: Vec<String>,
    pub restore: Vec<ItemJson>,
    pub no_source: Vec<NoSourceJson>,
    pub refused: Vec<RefusedJson>,
    pub kept: Vec<String>,
    pub added: Vec<AddedJson>,
    pub leftover_temps: Vec<String>,
    pub advice: Vec<String>,
}

#[derive(Debug, Serialize)]
pub(crate) struct ItemJson {
    pub path: String,
    /// The path as bytes when it is not valid UTF-8 (`path` is then lossy).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path_bytes: Option<Vec<u8>>,
    pub action: Action,
    pub source: ReferenceKind,
    pub origin: String,
    pub reference: ReferenceKind,
    pub algorithm: &'static str,
    pub verified: String,
    pub current: Option<String>,
    /// Where the current file goes before it is replaced (`<run>` is the run id).
    pub quarantine: Option<String>,
}

#[derive(Debug, Serialize)]
pub(crate) struct AddedJson {
    pub path: String,
    /// The path as bytes when it is not valid UTF-8 (`path` is then lossy).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path_bytes: Option<Vec<u8>>,
    pub sha256: String,
    /// Whether the build reads it; `restore --yes` moves exactly these.
    pub builds: bool,
    /// Where it goes when moved (`<run>` is the run id).
    pub quarantine: String,
}

#[derive(Debug, Serialize)]
pub(crate) struct NoSourceJson {
    pub path: String,
    /// The path as bytes when it is not valid UTF-8 (`path` is then lossy).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path_bytes: Option<Vec<u8>>,
    pub status: FileStatus,
    pub reference: Option<ReferenceKind>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Debug, Serialize)]
pub(crate) struct RefusedJson {
    pub path: String,
    /// The path as bytes when it is not valid UTF-8 (`path` is then lossy).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path_bytes: Option<Vec<u8>>,
    pub reason: String,
}

fn text(p: &Path) -> String {
    String::from_utf8_lossy(p.as_os_str().as_bytes()).into_owned()
}

/// How to call kfd-audit again on the same system: a follow-up command without the
/// `--root` that was used would act on another system.
pub(crate) fn kfd_audit(root: &Root) -> String {
    if root.is_host_root() {
        "kfd-audit".to_string()
    } else {
        format!(
            "kfd-audit --root {}",
            crate::term::shell_quote(&root.dir().display().to_string())
        )
    }
}

/// What the user can do about files without a verified clean source.
pub(crate) fn advice(root: &Root, tp: &TreePlan) -> Vec<String> {
    if tp.no_source.is_empty() {
        return Vec::new();
    }
    let kfd = kfd_audit(root);
    let again = format!(
        "{kfd} restore --tree {}",
        crate::term::shell_quote(&text(&tp.tree.system_path))
    );
    let mut a = Vec::new();
    if let Some(pkg) = &tp.dpkg_package {
        // Least invasive first: the archive back in apt's cache changes no file, and
        // kfd-audit then restores only the changed ones, journaled and undoable.
        a.push(format!(
            "fetch the package archive again, which changes no file: apt-get install --download-only --reinstall {pkg}; then run {again} again"
        ));
        a.push(format!(
            "or reinstall the package: apt-get install --reinstall {pkg} (dpkg overwrites every changed file of it; copy any you want to keep first)"
        ));
    }
    if let [fetch, reinstall] = tp.rpm_advice.as_slice() {
        a.push(format!(
            "fetch the package file of the installed version: {fetch}, then run {again} again (kfd-audit reads it in place and checks every file against the RPM database)"
        ));
        a.push(format!(
            "or reinstall the package: {reinstall} (rpm overwrites every changed file of it; copy any you want to keep first)"
        ));
    }
    a.push(format!(
        "put a verified clean copy next to the file (e.g. FILE.orig from an unpacked {} {} package) and run {again} again",
        tp.tree.package(),
        tp.tree.version()
    ));
    a.push(format!(
        "restore the file by hand, then check it with '{kfd} scan'"
    ));
    a.push(format!(
        "next time, record a baseline while the tree is clean: '{kfd} baseline create'"
    ));
    a
}

impl RestorePlan {
    pub(crate) fn to_json(&self, root: &Root, dry_run: bool) -> PlanJson {
        let trees = self
            .trees
            .iter()
            .map(|tp| TreePlanJson {
                path: text(&tp.tree.system_path),
                package: tp.tree.package(),
                version: tp.tree.version(),
                references: tp.references.iter().map(|k| k.to_string()).collect(),
                restore: tp
                    .items
                    .iter()
                    .map(|i| ItemJson {
                        path: text(&i.rel),
                        path_bytes: crate::term::path_bytes(&i.rel),
                        action: i.action,
                        source: i.source,
                        origin: display_origin(root, &i.origin),
                        reference: i.reference,
                        algorithm: algorithm_name(i.expected.algorithm()),
                        verified: i.expected.to_hex(),
                        current: i.current.as_ref().map(|d| d.to_hex()),
                        quarantine: (i.action == Action::Replace)
                            .then(|| text(&quarantine_path("<run>", &tp.system_path(&i.rel)))),
                    })
                    .collect(),
                no_source: tp
                    .no_source
                    .iter()
                    .map(|n| NoSourceJson {
                        path: text(&n.rel),
                        path_bytes: crate::term::path_bytes(&n.rel),
                        status: n.status,
                        reference: n.reference,
                        detail: n.detail.clone(),
                    })
                    .collect(),
                refused: tp
                    .refused
                    .iter()
                    .map(|r| RefusedJson {
                        path: text(&r.rel),
                        path_bytes: crate::term::path_bytes(&r.rel),
                        reason: r.reason.clone(),
                    })
                    .collect(),
                kept: tp.kept.iter().map(|p| text(p)).collect(),
                added: tp
                    .added
                    .iter()
                    .map(|a| AddedJson {
                        path: text(&a.rel),
                        path_bytes: crate::term::path_bytes(&a.rel),
                        sha256: a.current.to_hex(),
                        builds: a.builds,
                        quarantine: text(&quarantine_path("<run>", &tp.system_path(&a.rel))),
                    })
                    .collect(),
                leftover_temps: tp.leftover_temps.iter().map(|p| text(p)).collect(),
                advice: advice(root, tp),
            })
            .collect();
        PlanJson {
            version: 1,
            root: self.root.display().to_string(),
            dry_run,
            trees,
            summary: PlanSummary {
                restore: self.item_count(),
                no_source: self.no_source_count(),
                refused: self.refused_count(),
                kept: self.kept_count(),
                added: self.added_count(),
            },
            result: None,
        }
    }
}

/// The current bytes of a planned file (empty when missing), for diffs.
pub(crate) fn current_bytes(tp: &TreePlan, item: &PlanItem) -> Result<Vec<u8>> {
    if item.action == Action::Create {
        return Ok(Vec::new());
    }
    let f = atomic::TreeFile::open(&tp.tree.host_path, &item.rel, None)?;
    Ok(f.read()?.unwrap_or_default())
}

/// The current bytes of an added file, to show before it is moved.
pub(crate) fn added_bytes(tp: &TreePlan, a: &AddedFile) -> Result<Vec<u8>> {
    let f = atomic::TreeFile::open(&tp.tree.host_path, &a.rel, None)?;
    Ok(f.read()?.unwrap_or_default())
}
