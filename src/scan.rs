//! The scan: walk a tree without following symlinks, hash each file with the
//! algorithm of the reference that judges it, and classify it. Per-file problems are
//! recorded on the file and the scan goes on; only a broken reference stops it.

use crate::error::Result;
use crate::finding::{Finding, Severity};
use crate::hash::{self, Digest};
use crate::reference::{self, LoadOptions, ReferenceKind, TreeReferences};
use crate::root::Root;
use crate::tree::Tree;
use rayon::prelude::*;
use serde::Serialize;
use std::collections::BTreeSet;
use std::fs::File;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FileStatus {
    /// Matches its clean reference.
    Ok,
    /// Differs from its clean reference.
    Modified,
    /// Listed by a reference, absent from the tree.
    Missing,
    /// In the tree, in no reference although the tree has one.
    Added,
    /// No reference covers the tree at all: nothing can be said about the file.
    Unverified,
    /// A symbolic link: reported, never followed.
    Symlink,
    /// Could not be read (permissions, I/O error, not a regular file).
    Unreadable,
}

impl FileStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            FileStatus::Ok => "ok",
            FileStatus::Modified => "modified",
            FileStatus::Missing => "missing",
            FileStatus::Added => "added",
            FileStatus::Unverified => "unverified",
            FileStatus::Symlink => "symlink",
            FileStatus::Unreadable => "unreadable",
        }
    }

    /// Whether this status alone is something to report (exit code 1).
    pub fn is_notable(self) -> bool {
        !matches!(self, FileStatus::Ok | FileStatus::Unverified)
    }
}

/// What kfd-audit concluded about a backup found next to a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackupVerdict {
    VerifiedClean,
    SameAsCurrent,
    Unsafe,
    Unverified,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backup {
    /// Path relative to the tree.
    pub path: PathBuf,
    pub verdict: BackupVerdict,
    /// The reference the backup's hash was compared with (None: no reference lists
    /// the file it backs up).
    pub reference: Option<ReferenceKind>,
    pub size: Option<u64>,
    /// Why the backup could not be read, when it could not.
    pub detail: Option<String>,
}

impl BackupVerdict {
    pub fn as_str(self) -> &'static str {
        match self {
            BackupVerdict::VerifiedClean => "verified-clean",
            BackupVerdict::SameAsCurrent => "same-as-current",
            BackupVerdict::Unsafe => "unsafe",
            BackupVerdict::Unverified => "unverified",
        }
    }
}

#[derive(Debug, Clone)]
pub struct FileResult {
    /// Path relative to the tree root.
    pub path: PathBuf,
    pub status: FileStatus,
    /// Which reference judged the file (None: no reference lists it).
    pub reference: Option<ReferenceKind>,
    pub expected: Option<Digest>,
    pub actual: Option<Digest>,
    pub size: Option<u64>,
    /// Error text for unreadable files, link target for symlinks.
    pub detail: Option<String>,
    pub findings: Vec<Finding>,
    pub backups: Vec<Backup>,
    /// Where verified clean content of a modified or missing file is (set when the
    /// scan looks for clean content).
    pub clean: Option<crate::content::CleanSource>,
    /// The file against its clean content (`scan --diff`).
    pub diff: Option<crate::diff::FileDiff>,
}

impl FileResult {
    fn new(path: PathBuf, status: FileStatus) -> FileResult {
        FileResult {
            path,
            status,
            reference: None,
            expected: None,
            actual: None,
            size: None,
            detail: None,
            findings: Vec::new(),
            backups: Vec::new(),
            clean: None,
            diff: None,
        }
    }

    pub fn worst_severity(&self) -> Option<Severity> {
        self.findings.iter().map(|f| f.severity).max()
    }
}

#[derive(Debug, Clone)]
pub struct TreeScan {
    pub tree: Tree,
    pub refs: TreeReferences,
    /// Every file of the tree (and every missing one), amd/amdkfd first, then by path.
    pub files: Vec<FileResult>,
    pub bytes_hashed: u64,
    /// Problems met looking for clean content (a corrupt package archive, a refused
    /// member) that did not stop the scan.
    pub problems: Vec<String>,
    /// Whether clean content was looked for (`ScanOptions::clean_content`).
    pub content_checked: bool,
}

impl TreeScan {
    pub fn count(&self, status: FileStatus) -> usize {
        self.files.iter().filter(|f| f.status == status).count()
    }

    pub fn file(&self, rel: &Path) -> Option<&FileResult> {
        self.files.iter().find(|f| f.path == rel)
    }
}

#[derive(Debug, Clone, Default)]
pub struct ScanOptions {
    /// Only files under this tree-relative prefix (`amd/amdkfd`).
    pub scope: Option<PathBuf>,
    pub refs: LoadOptions,
    /// Look for clean content of modified and missing files (baseline copies, the
    /// package archive, verified backups) and name it in the report.
    pub clean_content: bool,
    /// Also diff each modified file against its clean content (implies clean_content).
    pub diff: bool,
    /// Files larger than this are not hashed (`None`: [`DEFAULT_MAX_FILE_SIZE`]).
    pub max_file_size: Option<u64>,
}

/// Largest file the scan hashes unless told otherwise (`--max-file-size`). The
/// largest amdgpu source files are a few megabytes; a sparse file can claim
/// terabytes, and hashing it would take hours.
pub const DEFAULT_MAX_FILE_SIZE: u64 = 1 << 30;

impl ScanOptions {
    pub fn max_file_size(&self) -> u64 {
        self.max_file_size.unwrap_or(DEFAULT_MAX_FILE_SIZE)
    }
}

/// Parses a size as `--max-file-size` takes it: bytes, or with a K, M, G or T
/// suffix (powers of 1024; `KiB`, `MB` and the like are read the same way).
pub fn parse_size(text: &str) -> std::result::Result<u64, String> {
    let t = text.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("'{text}' is not a size (e.g. 1073741824, 512M, 2G)"))?;
    let shift = match unit
        .trim()
        .to_ascii_uppercase()
        .trim_end_matches(['B', 'I'])
    {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => {
            return Err(format!(
                "'{text}' is not a size (e.g. 1073741824, 512M, 2G)"
            ))
        }
    };
    n.checked_mul(1u64 << shift)
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("'{text}' is not a usable size"))
}

/// Turns the user's `--scope` into a tree-relative prefix: `amdkfd` is short for
/// `amd/amdkfd`, `amdgpu` for `amd/amdgpu`; anything else is taken as a path prefix.
pub fn scope_prefix(scope: &str) -> PathBuf {
    match scope {
        "amdkfd" => PathBuf::from("amd/amdkfd"),
        "amdgpu" => PathBuf::from("amd/amdgpu"),
        "display" => PathBuf::from("amd/display"),
        other => PathBuf::from(other.trim_start_matches("./").trim_end_matches('/')),
    }
}

/// The amdkfd compute driver is where capability lies are told; it is listed first.
pub fn order_key(path: &Path) -> (u8, PathBuf) {
    let rank = if path.starts_with("amd/amdkfd") { 0 } else { 1 };
    (rank, path.to_path_buf())
}

#[derive(Debug)]
enum EntryKind {
    File,
    Symlink,
    Special(&'static str),
    Error(String),
}

#[derive(Debug)]
struct WalkEntry {
    rel: PathBuf,
    kind: EntryKind,
}

fn in_scope(rel: &Path, scope: Option<&Path>) -> bool {
    scope.is_none_or(|s| rel.starts_with(s))
}

/// Lists every non-directory entry of the tree, never following symlinks. A
/// directory that is its own ancestor (a bind mount loop) is listed as unreadable
/// and not entered (see [`crate::walk`]).
fn walk(tree: &Tree, scope: Option<&Path>) -> Vec<WalkEntry> {
    let mut out = Vec::new();
    for step in crate::walk::Walk::new(&tree.host_path) {
        match step {
            crate::walk::Step::Entry(entry) => {
                let rel = match entry.path().strip_prefix(&tree.host_path) {
                    Ok(r) if !r.as_os_str().is_empty() => r.to_path_buf(),
                    _ => continue,
                };
                let ft = entry.file_type();
                if ft.is_dir() || !in_scope(&rel, scope) {
                    continue;
                }
                let kind = if ft.is_file() {
                    EntryKind::File
                } else if ft.is_symlink() {
                    EntryKind::Symlink
                } else if ft.is_fifo() {
                    EntryKind::Special("a FIFO")
                } else if ft.is_socket() {
                    EntryKind::Special("a socket")
                } else if ft.is_block_device() || ft.is_char_device() {
                    EntryKind::Special("a device node")
                } else {
                    EntryKind::Special("not a regular file")
                };
                out.push(WalkEntry { rel, kind });
            }
            crate::walk::Step::Loop { entry, ancestor } => {
                let Ok(rel) = entry.path().strip_prefix(&tree.host_path) else {
                    continue;
                };
                if !in_scope(rel, scope) {
                    continue;
                }
                let same = ancestor
                    .strip_prefix(&tree.host_path)
                    .ok()
                    .filter(|a| !a.as_os_str().is_empty())
                    .map(crate::term::path)
                    .unwrap_or_else(|| "the tree's top".to_string());
                out.push(WalkEntry {
                    rel: rel.to_path_buf(),
                    kind: EntryKind::Error(format!(
                        "a directory loop: the same directory as {same} (a bind mount?); not walked again"
                    )),
                });
            }
            crate::walk::Step::Error(err) => {
                let Some(path) = err.path() else { continue };
                let Ok(rel) = path.strip_prefix(&tree.host_path) else {
                    continue;
                };
                if rel.as_os_str().is_empty() || in_scope(rel, scope) {
                    let msg = err
                        .io_error()
                        .map(|e| e.to_string())
                        .unwrap_or_else(|| err.to_string());
                    out.push(WalkEntry {
                        rel: rel.to_path_buf(),
                        kind: EntryKind::Error(msg),
                    });
                }
            }
        }
    }
    out
}

/// Opens a file for reading without following a symlink at its last component and
/// without blocking on a FIFO swapped in since the walk.
pub fn open_nofollow(path: &Path) -> std::io::Result<File> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    Ok(file)
}

fn judge(tree: &Tree, refs: &TreeReferences, entry: &WalkEntry, max_size: u64) -> FileResult {
    let expected = refs.get(&entry.rel);
    let mut r = FileResult::new(entry.rel.clone(), FileStatus::Unverified);
    r.reference = expected.map(|e| e.kind);
    r.expected = expected.map(|e| e.digest.clone());
    let host = tree.host_path.join(&entry.rel);
    match &entry.kind {
        EntryKind::Symlink => {
            r.status = FileStatus::Symlink;
            r.detail = std::fs::read_link(&host)
                .ok()
                .map(|t| format!("-> {}", t.display()));
        }
        EntryKind::Special(what) => {
            r.status = FileStatus::Unreadable;
            r.detail = Some(format!("{what}; not read"));
        }
        EntryKind::Error(msg) => {
            r.status = FileStatus::Unreadable;
            r.detail = Some(msg.clone());
        }
        EntryKind::File => {
            let Some(exp) = expected else {
                r.status = if refs.is_empty() {
                    FileStatus::Unverified
                } else {
                    FileStatus::Added
                };
                r.size = std::fs::symlink_metadata(&host).ok().map(|m| m.len());
                return r;
            };
            let too_large = |size: u64| {
                format!(
                    "{size} bytes, more than --max-file-size ({max_size} bytes); not hashed. \
                     No driver source file is this large: see what it is, or pass a larger --max-file-size to hash it"
                )
            };
            let hashed = open_nofollow(&host).and_then(|f| {
                let len = f.metadata()?.len();
                if len > max_size {
                    return Ok(Err(len));
                }
                // A file that grows while it is read stops being read at the limit.
                let (d, n) = hash::digest_reader(
                    std::io::Read::take(f, max_size + 1),
                    &[exp.digest.algorithm()],
                )?;
                Ok(if n > max_size { Err(n) } else { Ok((d, n)) })
            });
            match hashed {
                Ok(Err(size)) => {
                    r.status = FileStatus::Unreadable;
                    r.size = Some(size);
                    r.detail = Some(too_large(size));
                }
                Ok(Ok((mut digests, size))) => {
                    let actual = digests.remove(0);
                    r.status = if actual == exp.digest {
                        FileStatus::Ok
                    } else {
                        FileStatus::Modified
                    };
                    r.actual = Some(actual);
                    r.size = Some(size);
                }
                Err(e) => {
                    r.status = FileStatus::Unreadable;
                    r.detail = Some(e.to_string());
                }
            }
        }
    }
    r
}

/// Scans one tree against its references.
pub fn scan_tree(root: &Root, tree: &Tree, opts: &ScanOptions) -> Result<TreeScan> {
    let refs = reference::load(root, tree, opts.refs)?;
    let scope = opts.scope.as_deref();
    let entries = walk(tree, scope);
    // Hash in parallel; collect() keeps the walk's order, so output is deterministic.
    let mut files: Vec<FileResult> = entries
        .par_iter()
        .map(|e| judge(tree, &refs, e, opts.max_file_size()))
        .collect();
    let present: BTreeSet<&Path> = entries.iter().map(|e| e.rel.as_path()).collect();
    let mut missing = Vec::new();
    for (rel, exp) in &refs.entries {
        if in_scope(rel, scope) && !present.contains(rel.as_path()) {
            let mut r = FileResult::new(rel.clone(), FileStatus::Missing);
            r.reference = Some(exp.kind);
            r.expected = Some(exp.digest.clone());
            missing.push(r);
        }
    }
    files.extend(missing);
    files.sort_by_cached_key(|f| order_key(&f.path));
    // Backups are listed under the file they back up, not as added files. Hashes
    // decide verified-clean and same-as-current here; `rules::apply` later marks the
    // remaining ones that carry an unsafe change.
    crate::content::backup::attach(
        tree,
        &refs,
        &mut files,
        &crate::content::backup::no_rule_engine,
    );
    let problems = if opts.clean_content || opts.diff {
        crate::content::annotate(root, tree, &refs, &mut files, opts.diff)
    } else {
        Vec::new()
    };
    let bytes_hashed = files
        .iter()
        .filter(|f| f.actual.is_some())
        .filter_map(|f| f.size)
        .sum();
    Ok(TreeScan {
        tree: tree.clone(),
        refs,
        files,
        bytes_hashed,
        problems,
        content_checked: opts.clean_content || opts.diff,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1073741824"), Ok(1 << 30));
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("3g"), Ok(3 << 30));
        assert!(parse_size("0").is_err());
        assert!(parse_size("1P").is_err());
        assert!(parse_size("G").is_err());
        assert!(parse_size("99999999999T").is_err());
    }

    #[test]
    fn scope_shorthands() {
        assert_eq!(scope_prefix("amdkfd"), PathBuf::from("amd/amdkfd"));
        assert_eq!(scope_prefix("./amd/display/"), PathBuf::from("amd/display"));
    }

    #[test]
    fn amdkfd_sorts_first() {
        let mut v = [
            PathBuf::from("Makefile"),
            PathBuf::from("amd/amdkfd/kfd_crat.c"),
            PathBuf::from("amd/amdgpu/a.c"),
        ];
        v.sort_by_cached_key(|p| order_key(p));
        assert_eq!(v[0], PathBuf::from("amd/amdkfd/kfd_crat.c"));
        assert_eq!(v[1], PathBuf::from("Makefile"));
    }
}
