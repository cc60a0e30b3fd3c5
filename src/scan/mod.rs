//! The scan: walk a tree without following symlinks, hash each file with the
//! algorithm of the reference that judges it, and classify it. Per-file problems are
//! recorded on the file and the scan goes on; only a broken reference stops it.

pub(crate) mod backups;
pub(crate) mod clean;
pub(crate) mod model;

pub(crate) use model::*;

use crate::error::Result;
use crate::io::hash::{self, Algorithm, Digest};
use crate::io::read::open_nofollow;
use crate::io::root::Root;
use crate::progress::Counters;
use crate::reference::{self, Expected, LoadOptions, TreeReferences};
use crate::tree::Tree;
use rayon::prelude::*;
use std::collections::HashSet;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Default)]
pub(crate) struct ScanOptions {
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
pub(crate) const DEFAULT_MAX_FILE_SIZE: u64 = 1 << 30;

impl ScanOptions {
    pub(crate) fn max_file_size(&self) -> u64 {
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
pub(crate) fn scope_prefix(scope: &str) -> PathBuf {
    match scope {
        "amdkfd" => PathBuf::from("amd/amdkfd"),
        "amdgpu" => PathBuf::from("amd/amdgpu"),
        "display" => PathBuf::from("amd/display"),
        other => PathBuf::from(other.trim_start_matches("./").trim_end_matches('/')),
    }
}

/// The amdkfd compute driver is where capability lies are told; it is listed first.
pub(crate) fn order_key(path: &Path) -> (u8, PathBuf) {
    (order_rank(path), path.to_path_buf())
}

fn order_rank(path: &Path) -> u8 {
    if path.starts_with("amd/amdkfd") {
        0
    } else {
        1
    }
}

/// The order of [`order_key`], without copying paths.
pub(crate) fn order_cmp(a: &Path, b: &Path) -> std::cmp::Ordering {
    order_rank(a).cmp(&order_rank(b)).then_with(|| a.cmp(b))
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
/// and not entered (see [`crate::io::walk`]).
fn walk(tree: &Tree, scope: Option<&Path>, counters: Option<&Counters>) -> Vec<WalkEntry> {
    let mut out = Vec::new();
    for step in crate::io::walk::Walk::new(&tree.host_path) {
        match step {
            crate::io::walk::Step::Entry(entry) => {
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
                if let Some(c) = counters {
                    c.found(1);
                }
            }
            crate::io::walk::Step::Loop { entry, ancestor } => {
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
            crate::io::walk::Step::Error(err) => {
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

/// A file's digest with the algorithm of its reference, and its length.
type Hashed = std::io::Result<(Digest, u64)>;

/// Hashes the files at `pending` (regular files a reference lists) with the
/// algorithm of their reference and judges them. MD5 (dpkg's md5sums, most of any
/// tree) goes through [`md5_lanes`](crate::io::md5_lanes), sixteen files at a time on
/// each core; SHA-256 (the baseline) one file per core. Every file is read in
/// chunks, once, and never past `max_size` bytes. Per file this keeps a few words
/// besides the result itself.
fn hash_files(
    tree: &Tree,
    files: &mut [FileResult],
    pending: &[usize],
    max_size: u64,
    counters: Option<&Counters>,
) {
    let lanes = std::env::var_os("KFD_AUDIT_MD5_LANES").is_none_or(|v| v != "off");
    let algorithm = |i: usize| files[i].expected.as_ref().map(Digest::algorithm);
    let on_lanes = |i: usize| lanes && algorithm(i) == Some(Algorithm::Md5);
    let mut md5 = Vec::with_capacity(pending.iter().filter(|&&i| on_lanes(i)).count());
    let mut other = Vec::with_capacity(pending.len() - md5.capacity());
    for (j, &i) in pending.iter().enumerate() {
        match algorithm(i) {
            Some(_) if on_lanes(i) => md5.push(j),
            Some(alg) => other.push((j, alg)),
            None => {}
        }
    }
    // The paths are lent out while the results are written (not copied: a tree may
    // have a hundred thousand files), and given back at the end.
    let paths: Vec<PathBuf> = pending
        .iter()
        .map(|&i| std::mem::take(&mut files[i].path))
        .collect();
    let host = |j: usize| tree.host_path.join(&paths[j]);
    // Sizes let the largest files start first and the progress line show a total.
    let size = |j: usize| std::fs::symlink_metadata(host(j)).map_or(0, |m| m.len());
    let mut md5_sizes: Vec<u64> = md5.par_iter().map(|&j| size(j)).collect();
    // Results go straight to their file, from whichever thread has them.
    let slots = std::sync::Mutex::new(&mut *files);
    let record = |j: usize, r: Hashed| {
        let mut files = slots.lock().unwrap_or_else(|e| e.into_inner());
        record_hash(&mut files[pending[j]], r, max_size);
    };
    // Files already longer than the limit are judged by their length, not read.
    if md5_sizes.iter().any(|&n| n > max_size) {
        let (keep, over): (Vec<_>, Vec<_>) = md5
            .iter()
            .zip(&md5_sizes)
            .partition(|(_, &n)| n <= max_size);
        for (&j, &n) in over {
            record(j, Ok((Digest::Md5([0; 16]), n)));
        }
        (md5, md5_sizes) = keep.into_iter().unzip();
    }
    if let Some(c) = counters {
        let other_bytes: u64 = other.par_iter().map(|&(j, _)| size(j).min(max_size)).sum();
        let total = (md5.len() + other.len()) as u64;
        c.add_total(total, md5_sizes.iter().sum::<u64>() + other_bytes);
    }
    crate::io::md5_lanes::md5_files(
        &|k| host(md5[k]),
        &md5_sizes,
        max_size,
        counters,
        &|k, r| record(md5[k], r.map(|(d, n)| (Digest::Md5(d), n))),
    );
    other.par_iter().for_each(|&(j, alg)| {
        let r = open_nofollow(&host(j)).and_then(|f| {
            let len = f.metadata()?.len();
            if len > max_size {
                // Not read: judged too large by its length.
                return Ok((Digest::of_bytes(alg, b""), len));
            }
            // A file that grows while it is read stops being read past the limit.
            let (mut d, n) = hash::digest_reader(std::io::Read::take(f, max_size + 1), &[alg])?;
            Ok((d.remove(0), n))
        });
        if let Some(c) = counters {
            c.add_bytes(r.as_ref().map_or(0, |(_, n)| (*n).min(max_size)));
            c.file_done();
        }
        record(j, r);
    });
    let files = slots.into_inner().unwrap_or_else(|e| e.into_inner());
    for (&i, path) in pending.iter().zip(paths) {
        files[i].path = path;
    }
}

/// Judges a listed file by its digest; a file longer than `max_size` is not judged.
fn record_hash(r: &mut FileResult, hashed: Hashed, max_size: u64) {
    match hashed {
        Ok((_, size)) if size > max_size => {
            r.status = FileStatus::Unreadable;
            r.size = Some(size);
            r.detail = Some(format!(
                "{size} bytes, more than --max-file-size ({max_size} bytes); not hashed. \
                 No driver source file is this large: see what it is, or pass a larger --max-file-size to hash it"
            ));
        }
        Ok((actual, size)) => {
            r.status = if r.expected.as_ref() == Some(&actual) {
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

/// Judges what needs no reading: symlinks, special files, walk errors, files no
/// reference lists. A listed regular file is left for [`hash_files`].
fn judge(
    tree: &Tree,
    refs: &TreeReferences,
    entry: WalkEntry,
    expected: Option<&Expected>,
) -> FileResult {
    let mut r = FileResult::new(entry.rel, FileStatus::Unverified);
    r.reference = expected.map(|e| e.kind);
    r.expected = expected.map(|e| e.digest.clone());
    match entry.kind {
        EntryKind::Symlink => {
            let target = std::fs::read_link(tree.host_path.join(&r.path)).ok();
            r.detail = target.as_ref().map(|t| format!("-> {}", t.display()));
            // A link the package itself ships (the RPM database records its target)
            // is part of the clean tree while it points where the package put it.
            r.status = match (refs.package_links.get(&r.path), &target) {
                (Some(packaged), Some(t)) if packaged == t => {
                    r.reference = Some(crate::reference::ReferenceKind::Rpmdb);
                    FileStatus::Ok
                }
                _ => FileStatus::Symlink,
            };
        }
        EntryKind::Special(what) => {
            r.status = FileStatus::Unreadable;
            r.detail = Some(format!("{what}; not read"));
        }
        EntryKind::Error(msg) => {
            r.status = FileStatus::Unreadable;
            r.detail = Some(msg);
        }
        EntryKind::File if expected.is_none() => {
            r.status = if refs.is_empty() {
                FileStatus::Unverified
            } else {
                FileStatus::Added
            };
            r.size = std::fs::symlink_metadata(tree.host_path.join(&r.path))
                .ok()
                .map(|m| m.len());
        }
        EntryKind::File => {}
    }
    r
}

/// Puts files in report order ([`order_key`]). The walk already lists them in path
/// order (names sorted, depth first), so a stable sort that keeps runs does little
/// work; it sorts indices, not the large results, and then moves each result once.
fn sort_files(files: &mut [FileResult]) {
    let mut order: Vec<usize> = (0..files.len()).collect();
    order.sort_by(|&a, &b| order_cmp(&files[a].path, &files[b].path));
    // Position i receives the result at order[i]: follow each cycle of the
    // permutation, marking places done by pointing them at themselves.
    for start in 0..order.len() {
        let mut at = start;
        loop {
            let from = order[at];
            order[at] = at;
            if from == start || from == at {
                break;
            }
            files.swap(at, from);
            at = from;
        }
    }
}

/// Scans one tree against its references.
pub(crate) fn scan_tree(root: &Root, tree: &Tree, opts: &ScanOptions) -> Result<TreeScan> {
    scan_tree_counted(root, tree, opts, None)
}

/// [`scan_tree`], advancing `counters` as files are listed and hashed (for a
/// progress display).
pub(crate) fn scan_tree_counted(
    root: &Root,
    tree: &Tree,
    opts: &ScanOptions,
    counters: Option<&Counters>,
) -> Result<TreeScan> {
    let refs = reference::load(root, tree, opts.refs)?;
    Ok(scan_with_references(root, tree, refs, opts, counters))
}

/// [`scan_tree_counted`] against references already loaded (the audit pipeline loads
/// them as a step of its own, so that a command needing only them stops there).
pub(crate) fn scan_with_references(
    root: &Root,
    tree: &Tree,
    refs: TreeReferences,
    opts: &ScanOptions,
    counters: Option<&Counters>,
) -> TreeScan {
    let scope = opts.scope.as_deref();
    let mut entries = walk(tree, scope, counters);
    entries.shrink_to_fit();
    // One reference look-up per file.
    let expected: Vec<Option<&Expected>> = entries.par_iter().map(|e| refs.get(&e.rel)).collect();
    // Listed files the walk did not see are missing. Most often every listed file is
    // there, and counting says so (the walk yields each path once) without building
    // a set of the tree's paths.
    let listed = refs
        .entries
        .keys()
        .filter(|rel| in_scope(rel, scope))
        .count();
    let seen = expected.iter().filter(|x| x.is_some()).count();
    // Packaged links (RPM records them) are listed apart from the digests: a deleted
    // one is missing as much as a deleted file is.
    let links_listed = !refs.package_links.is_empty();
    let present: HashSet<&Path> = if seen != listed || links_listed {
        entries.iter().map(|e| e.rel.as_path()).collect()
    } else {
        HashSet::new()
    };
    let mut missing = Vec::new();
    if seen != listed {
        for (rel, exp) in &refs.entries {
            if in_scope(rel, scope) && !present.contains(rel.as_path()) {
                let mut r = FileResult::new(rel.clone(), FileStatus::Missing);
                r.reference = Some(exp.kind);
                r.expected = Some(exp.digest.clone());
                missing.push(r);
            }
        }
    }
    for (rel, target) in &refs.package_links {
        if in_scope(rel, scope) && !present.contains(rel.as_path()) {
            let mut r = FileResult::new(rel.clone(), FileStatus::Missing);
            r.reference = Some(crate::reference::ReferenceKind::Rpmdb);
            r.detail = Some(format!(
                "a symbolic link to {} in the package",
                target.display()
            ));
            missing.push(r);
        }
    }
    drop(present);
    let pending: Vec<usize> = entries
        .iter()
        .zip(&expected)
        .enumerate()
        .filter(|(_, (e, x))| matches!(e.kind, EntryKind::File) && x.is_some())
        .map(|(i, _)| i)
        .collect();
    let mut files: Vec<FileResult> = entries
        .into_par_iter()
        .zip(expected)
        .map(|(e, x)| judge(tree, &refs, e, x))
        .collect();
    // Hashed in parallel, each result put in its file's place: output is deterministic.
    hash_files(tree, &mut files, &pending, opts.max_file_size(), counters);
    drop(pending);
    files.extend(missing);
    sort_files(&mut files);
    // Backups are listed under the file they back up, not as added files. Hashes
    // decide verified-clean and same-as-current here; `rules::apply` later marks the
    // remaining ones that carry an unsafe change.
    backups::attach(tree, &refs, &mut files, &backups::no_rule_engine);
    let clean = if opts.clean_content || opts.diff {
        clean::annotate(root, tree, &refs, &mut files, opts.diff)
    } else {
        clean::Annotated::default()
    };
    TreeScan {
        tree: tree.clone(),
        refs,
        files,
        problems: clean.problems,
        content_checked: opts.clean_content || opts.diff,
        clean_copies: clean.copies,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_shorthands() {
        assert_eq!(scope_prefix("amdkfd"), PathBuf::from("amd/amdkfd"));
        assert_eq!(scope_prefix("./amd/display/"), PathBuf::from("amd/display"));
    }

    #[test]
    fn sorting_files_moves_each_to_its_place() {
        let names = [
            "b",
            "amd/amdkfd/z.c",
            "a",
            "amd/amdgpu/x.c",
            "amd/amdkfd/a.c",
            "c",
        ];
        let mut files: Vec<FileResult> = names
            .iter()
            .map(|n| FileResult::new(PathBuf::from(n), FileStatus::Ok))
            .collect();
        sort_files(&mut files);
        let got: Vec<&str> = files.iter().map(|f| f.path.to_str().unwrap()).collect();
        assert_eq!(
            got,
            [
                "amd/amdkfd/a.c",
                "amd/amdkfd/z.c",
                "a",
                "amd/amdgpu/x.c",
                "b",
                "c"
            ]
        );
        // Against the reference order on many shuffles.
        let mut paths: Vec<PathBuf> = (0..200)
            .map(|i| {
                PathBuf::from(format!(
                    "amd/amd{}/f{}",
                    ["kfd", "gpu"][i % 2],
                    i * 7919 % 200
                ))
            })
            .collect();
        let mut files: Vec<FileResult> = paths
            .iter()
            .map(|p| FileResult::new(p.clone(), FileStatus::Ok))
            .collect();
        sort_files(&mut files);
        paths.sort_by_cached_key(|p| order_key(p));
        let got: Vec<PathBuf> = files.into_iter().map(|f| f.path).collect();
        assert_eq!(got, paths);
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
