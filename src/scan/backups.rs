//! Backups in the tree judged and listed under the file they back up (see
//! [`crate::content::backup`] for how they are found and why a name proves nothing).
//! Here, not in `content`, because the verdict is written onto the scan's results.

use super::{Backup, BackupVerdict, FileResult, FileStatus};
use crate::content::backup::{backup_looking, backup_target};
use crate::io::hash::Digest;
use crate::io::read::{read_limited, MAX_SOURCE_FILE};
use crate::reference::{Expected, TreeReferences};
use crate::tree::Tree;
use rayon::prelude::*;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};

/// "Does this content contain an unsafe change?" for a backup of the file at the
/// tree-relative path: the rule engine's answer. [`no_rule_engine`] where no rule set is at hand.
pub(crate) type UnsafeCheck<'a> = &'a (dyn Fn(&Path, &[u8]) -> bool + Sync);

/// The unsafe check to use where no rule engine is available: never says unsafe.
pub(crate) fn no_rule_engine(_rel: &Path, _bytes: &[u8]) -> bool {
    false
}

/// Judges one backup of `original` (both tree-relative) by its bytes.
pub(crate) fn judge_backup(
    tree_dir: &Path,
    backup: &Path,
    original: &Path,
    expected: Option<&Expected>,
    unsafe_change: UnsafeCheck,
) -> Backup {
    let mut b = Backup {
        path: backup.to_path_buf(),
        verdict: BackupVerdict::Unverified,
        reference: expected.map(|e| e.kind),
        size: None,
        detail: None,
    };
    let bytes = match read_limited(&tree_dir.join(backup), MAX_SOURCE_FILE) {
        Ok(bytes) => bytes,
        Err(e) => {
            b.detail = Some(e.to_string());
            return b;
        }
    };
    b.size = Some(bytes.len() as u64);
    if expected.is_some_and(|e| Digest::of_bytes(e.digest.algorithm(), &bytes) == e.digest) {
        b.verdict = BackupVerdict::VerifiedClean;
    } else if read_limited(&tree_dir.join(original), MAX_SOURCE_FILE).is_ok_and(|c| c == bytes) {
        b.verdict = BackupVerdict::SameAsCurrent;
    } else if unsafe_change(original, &bytes) {
        b.verdict = BackupVerdict::Unsafe;
    }
    b
}

/// Moves the backups among the scanned files under the files they back up, with a
/// verdict each. Candidates are regular files no reference lists (status added or
/// unverified) whose name is a backup name of a file that is in the tree or in a
/// reference. Returns how many were attached.
pub(crate) fn attach(
    tree: &Tree,
    refs: &TreeReferences,
    files: &mut Vec<FileResult>,
    unsafe_change: UnsafeCheck,
) -> usize {
    let is_candidate = |f: &FileResult| {
        matches!(f.status, FileStatus::Added | FileStatus::Unverified) && f.detail.is_none()
    };
    let candidates: Vec<usize> = files
        .iter()
        .enumerate()
        .filter(|(_, f)| is_candidate(f) && backup_looking(&f.path))
        .map(|(i, _)| i)
        .collect();
    // Most trees have no backup at all: no index of every path is built for them.
    if candidates.is_empty() {
        return 0;
    }
    let index: HashSet<&Path> = files.iter().map(|f| f.path.as_path()).collect();
    // An original is a file of the package, or a file that does not look like a
    // backup itself (a user's own added file can have backups too).
    let is_original = |p: &Path| index.contains(p) && (refs.get(p).is_some() || !backup_looking(p));
    let pairs: Vec<(usize, PathBuf)> = candidates
        .into_iter()
        .filter_map(|i| backup_target(&files[i].path, &is_original).map(|(t, _)| (i, t)))
        .collect();
    drop(index);
    if pairs.is_empty() {
        return 0;
    }
    let judged: Vec<(usize, PathBuf, Backup)> = pairs
        .par_iter()
        .map(|(i, target)| {
            let b = judge_backup(
                &tree.host_path,
                &files[*i].path,
                target,
                refs.get(target),
                unsafe_change,
            );
            (*i, target.clone(), b)
        })
        .collect();
    let remove: BTreeSet<usize> = judged.iter().map(|(i, _, _)| *i).collect();
    let mut by_target: BTreeMap<PathBuf, Vec<Backup>> = BTreeMap::new();
    for (_, target, b) in judged {
        by_target.entry(target).or_default().push(b);
    }
    let mut kept = Vec::with_capacity(files.len() - remove.len());
    for (i, f) in std::mem::take(files).into_iter().enumerate() {
        if !remove.contains(&i) {
            kept.push(f);
        }
    }
    for f in &mut kept {
        if let Some(mut bs) = by_target.remove(&f.path) {
            f.backups.append(&mut bs);
            f.backups.sort_by(|a, b| a.path.cmp(&b.path));
        }
    }
    *files = kept;
    remove.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::hash::Algorithm;
    use crate::reference::ReferenceKind;

    #[test]
    fn verdicts_by_content_first_clean_then_current_then_rules() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("f.c"), "patched\n").unwrap();
        std::fs::write(d.join("f.c.orig"), "clean\n").unwrap();
        std::fs::write(d.join("f.c.patched"), "patched\n").unwrap();
        std::fs::write(d.join("f.c.bak"), "other unsafe\n").unwrap();
        let expected = Expected {
            digest: Digest::of_bytes(Algorithm::Md5, b"clean\n"),
            kind: ReferenceKind::DpkgMd5sums,
        };
        let rules = |rel: &Path, bytes: &[u8]| {
            assert_eq!(rel, Path::new("f.c"));
            bytes.windows(6).any(|w| w == b"unsafe")
        };
        let v = |name: &str| {
            judge_backup(
                d,
                Path::new(name),
                Path::new("f.c"),
                Some(&expected),
                &rules,
            )
            .verdict
        };
        assert_eq!(v("f.c.orig"), BackupVerdict::VerifiedClean);
        assert_eq!(v("f.c.patched"), BackupVerdict::SameAsCurrent);
        assert_eq!(v("f.c.bak"), BackupVerdict::Unsafe);
        let none = judge_backup(
            d,
            Path::new("f.c.bak"),
            Path::new("f.c"),
            None,
            &no_rule_engine,
        );
        assert_eq!(none.verdict, BackupVerdict::Unverified);
        assert_eq!(none.reference, None);
        let gone = judge_backup(
            d,
            Path::new("nope.bak"),
            Path::new("f.c"),
            None,
            &no_rule_engine,
        );
        assert!(gone.detail.is_some());
    }
}
