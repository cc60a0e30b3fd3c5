//! Backups people leave next to a file (`kfd_crat.c.orig`, `.bak`, `.bak.1`, `~`,
//! `.backup.20251108_120000`), whole directory copies (`amd/amdkfd.bak/`), and
//! `*.backup` copies of installed modules under `/lib/modules`.
//!
//! A backup is judged by its bytes, never by its name. In the incident the user ran
//! `cp kfd_crat.c kfd_crat.c.patched` *after* patching and later believed it clean.
//! Verdicts, first that applies:
//! - `verified-clean`: its hash matches the file's clean reference (usable to restore);
//! - `same-as-current`: a copy of the file as it is now, so not a backup of anything clean;
//! - `unsafe`: the rule engine finds an unsafe change in it;
//! - `unverified`: none of the above, e.g. an older version or an earlier attempt.
//!
//! In the scan a backup is not a file of the tree: it is listed under the file it
//! backs up (`FileResult::backups`) and counted apart (`summary.backups`), instead of
//! showing up as an unexplained added file. A backup-looking name whose original is
//! neither in the tree nor in a reference stays an added file.

use super::{shown, Candidate, ContentProvider};
use crate::error::Result;
use crate::io::read::{read_limited, MAX_SOURCE_FILE};
use crate::io::root::Root;
use crate::reference::ReferenceKind;
use crate::tree::Tree;
use std::collections::{BTreeSet, HashMap};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// Suffixes people and tools give backups, most deliberate first.
pub(crate) const BACKUP_SUFFIXES: &[&str] = &[
    ".orig",
    ".bak",
    ".backup",
    ".old",
    ".save",
    ".dist",
    ".dpkg-old",
    ".dpkg-dist",
    ".patched",
    "~",
];

/// Whether `rest` (what follows the original name) makes a backup name.
pub(crate) fn is_backup_suffix(rest: &str) -> bool {
    BACKUP_SUFFIXES.iter().any(|s| {
        let Some(tail) = rest.strip_prefix(s) else {
            return false;
        };
        // `.bak`, `.bak.1`, `.backup.20251108_120000`, `.orig-2025-11-08`
        tail.is_empty()
            || (tail.len() > 1
                && tail.starts_with(['.', '-', '_'])
                && tail[1..]
                    .chars()
                    .all(|c| c.is_ascii_digit() || c == '_' || c == '-' || c == '.'))
    })
}

/// The names `name` may be a backup of (`kfd_crat.c.bak.1` → `kfd_crat.c`),
/// longest first. Works on bytes: tree names need not be UTF-8.
pub(crate) fn original_names(name: &OsStr) -> Vec<&OsStr> {
    let bytes = name.as_bytes();
    let mut out = Vec::new();
    for i in (1..bytes.len()).rev() {
        if let Ok(rest) = std::str::from_utf8(&bytes[i..]) {
            if is_backup_suffix(rest) {
                out.push(OsStr::from_bytes(&bytes[..i]));
            }
        }
    }
    out
}

/// Whether a backup is a sibling copy of one file or part of a directory copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BackupKind {
    Sibling,
    DirCopy,
}

/// The file `rel` is a backup of, if it is one: a sibling (`x.c.orig` of `x.c`) or
/// a file in a directory copy (`amd/amdkfd.bak/x.c` of `amd/amdkfd/x.c`).
/// `is_original` says whether a tree-relative path is a file the backup can be of.
pub(crate) fn backup_target(
    rel: &Path,
    is_original: &dyn Fn(&Path) -> bool,
) -> Option<(PathBuf, BackupKind)> {
    if let Some(name) = rel.file_name() {
        for orig in original_names(name) {
            let cand = rel.with_file_name(orig);
            if is_original(&cand) {
                return Some((cand, BackupKind::Sibling));
            }
        }
    }
    let parts: Vec<&OsStr> = rel
        .components()
        .filter_map(|c| match c {
            Component::Normal(p) => Some(p),
            _ => None,
        })
        .collect();
    for (i, part) in parts.iter().enumerate().take(parts.len().saturating_sub(1)) {
        for orig in original_names(part) {
            let cand: PathBuf = parts
                .iter()
                .enumerate()
                .map(|(j, p)| if j == i { orig } else { *p })
                .collect();
            if is_original(&cand) {
                return Some((cand, BackupKind::DirCopy));
            }
        }
    }
    None
}

/// Whether a name looks like a backup at all (by file name or a directory on its path).
pub(crate) fn backup_looking(rel: &Path) -> bool {
    rel.components().any(|c| match c {
        Component::Normal(p) => !original_names(p).is_empty(),
        _ => false,
    })
}

/// Backups next to the file and in directory copies, as a content provider. Which
/// of them is clean is decided by hash in [`super::CleanContent`], never by name.
pub(crate) struct SiblingBackups {
    root: Root,
    tree_dir: PathBuf,
}

fn is_regular(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.is_file())
}

fn is_real_dir(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir())
}

impl SiblingBackups {
    pub(crate) fn new(root: &Root, tree: &Tree) -> SiblingBackups {
        SiblingBackups {
            root: root.clone(),
            tree_dir: tree.host_path.clone(),
        }
    }

    /// Backups of `rel` that exist, as tree-relative paths: `name<suffix>` and
    /// numbered or timestamped variants (`name.bak.1`, `name.backup.20251108_120000`)
    /// in the same directory, then the same file in directory copies of any directory
    /// on its path (`amd/amdkfd.bak/kfd_crat.c`). Symlinks are never taken. Each
    /// directory is read once for all the files asked about (`listings`).
    fn find_listed(&self, rel: &Path, listings: &mut Listings) -> Vec<PathBuf> {
        let mut found = BTreeSet::new();
        // A directory of the tree swapped for a link to elsewhere: what is over there
        // is not a backup in the tree, and is not read.
        if !real_dirs(&self.tree_dir, rel.parent().unwrap_or(Path::new(""))) {
            return Vec::new();
        }
        let host = self.tree_dir.join(rel);
        if let (Some(dir), Some(name)) = (host.parent(), rel.file_name()) {
            for other in listings.of(dir) {
                let Some(rest) = other.as_bytes().strip_prefix(name.as_bytes()) else {
                    continue;
                };
                if std::str::from_utf8(rest).is_ok_and(is_backup_suffix)
                    && is_regular(&dir.join(other))
                {
                    found.insert(rel.with_file_name(other));
                }
            }
        }
        let parts: Vec<&OsStr> = rel.iter().collect();
        for i in 0..parts.len().saturating_sub(1) {
            let parent: PathBuf = parts[..i].iter().collect();
            let rest: PathBuf = parts[i + 1..].iter().collect();
            let dir_name = parts[i].as_bytes();
            for other in listings.of(&self.tree_dir.join(&parent)) {
                let Some(suffix) = other.as_bytes().strip_prefix(dir_name) else {
                    continue;
                };
                if !std::str::from_utf8(suffix).is_ok_and(is_backup_suffix) {
                    continue;
                }
                let copy_dir = self.tree_dir.join(&parent).join(other);
                if is_real_dir(&copy_dir)
                    && real_dirs(&copy_dir, rest.parent().unwrap_or(Path::new("")))
                    && is_regular(&copy_dir.join(&rest))
                {
                    found.insert(parent.join(other).join(&rest));
                }
            }
        }
        found.into_iter().collect()
    }
}

/// Whether every directory from `base` down through `rel` is a real directory, not
/// a symlink to one.
fn real_dirs(base: &Path, rel: &Path) -> bool {
    let mut here = base.to_path_buf();
    rel.components().all(|c| match c {
        Component::Normal(p) => {
            here.push(p);
            is_real_dir(&here)
        }
        Component::CurDir => true,
        _ => false,
    })
}

fn list_dir(dir: &Path) -> Vec<std::ffi::OsString> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok().map(|e| e.file_name()))
        .collect()
}

/// Directory listings read once and kept while backups of many files are looked
/// for: a modified tree may have thousands of modified files in a few directories,
/// and each file's search lists its directory and every directory above it.
#[derive(Default)]
struct Listings(HashMap<PathBuf, Vec<std::ffi::OsString>>);

impl Listings {
    fn of(&mut self, dir: &Path) -> &[std::ffi::OsString] {
        self.0
            .entry(dir.to_path_buf())
            .or_insert_with(|| list_dir(dir))
    }
}

impl ContentProvider for SiblingBackups {
    fn kind(&self) -> ReferenceKind {
        ReferenceKind::Backup
    }

    fn describe(&self) -> String {
        "backups next to each file".to_string()
    }

    fn candidates_many(
        &self,
        rels: &[PathBuf],
        visit: &mut dyn FnMut(&Path, Candidate),
    ) -> Result<()> {
        let mut listings = Listings::default();
        for rel in rels {
            for b in self.find_listed(rel, &mut listings) {
                let host = self.tree_dir.join(&b);
                // An unreadable backup is just not a source; its verdict says why.
                let Ok(bytes) = read_limited(&host, MAX_SOURCE_FILE) else {
                    continue;
                };
                visit(
                    rel,
                    Candidate {
                        bytes,
                        origin: format!("backup {}", shown(&self.root, &host)),
                        source_path: host,
                    },
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_suffixes() {
        for ok in [
            ".orig",
            ".bak",
            ".bak.1",
            ".backup.20251108_120000",
            "~",
            ".patched",
            ".dpkg-old",
        ] {
            assert!(is_backup_suffix(ok), "{ok}");
        }
        for no in ["", ".c", ".bakery", ".o", "_x"] {
            assert!(!is_backup_suffix(no), "{no}");
        }
    }

    #[test]
    fn originals_of_backup_names() {
        let names = |n: &str| -> Vec<String> {
            original_names(OsStr::new(n))
                .into_iter()
                .map(|o| o.to_string_lossy().into_owned())
                .collect()
        };
        assert_eq!(names("kfd_crat.c.bak.1"), ["kfd_crat.c"]);
        assert_eq!(names("kfd_crat.c~"), ["kfd_crat.c"]);
        assert_eq!(names("amdkfd.backup.20251108_120000"), ["amdkfd"]);
        assert_eq!(names("amdgpu.ko.xz.backup"), ["amdgpu.ko.xz"]);
        assert!(names("kfd_crat.c").is_empty());
        assert!(names(".bak").is_empty());
    }

    #[test]
    fn targets_of_siblings_and_dir_copies() {
        let known = [
            PathBuf::from("amd/amdkfd/kfd_crat.c"),
            PathBuf::from("amd/amdkfd/Makefile"),
        ];
        let is_orig = |p: &Path| known.iter().any(|k| k == p);
        assert_eq!(
            backup_target(Path::new("amd/amdkfd/kfd_crat.c.orig"), &is_orig),
            Some((known[0].clone(), BackupKind::Sibling))
        );
        assert_eq!(
            backup_target(Path::new("amd/amdkfd.bak/Makefile"), &is_orig),
            Some((known[1].clone(), BackupKind::DirCopy))
        );
        assert_eq!(
            backup_target(Path::new("amd/amdkfd/other.c.orig"), &is_orig),
            None
        );
        assert_eq!(
            backup_target(Path::new("amd/amdkfd.bak/other.c"), &is_orig),
            None
        );
    }
}
