//! Clean content looked up for the files of a scan that differ from their reference,
//! once per run: the verified bytes stay on the scan ([`super::TreeScan::clean_copies`])
//! for the diff, the rules and the restore plan that follow. A package archive is the
//! costliest source (a `.deb` is decompressed to reach a member), and each extra look-up
//! read it through again.

use super::{BackupVerdict, CleanSource, FileResult, FileStatus};
use crate::content::{CleanContent, CleanCopy};
use crate::io::read::{read_limited, MAX_SOURCE_FILE};
use crate::io::root::Root;
use crate::reference::TreeReferences;
use crate::tree::Tree;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// What [`annotate`] found.
#[derive(Debug, Default)]
pub(crate) struct Annotated {
    /// The verified clean bytes, by tree-relative path.
    pub copies: BTreeMap<PathBuf, CleanCopy>,
    /// Problems met (a corrupt archive, a refused member), for the report.
    pub problems: Vec<String>,
}

/// Whether a file's clean content is fetched: a modified or missing file (the report
/// names where its content is, a diff and a restore use it), or a file with a backup
/// no hash could place (the rules compare that backup with the clean content).
fn wanted(f: &FileResult) -> bool {
    matches!(f.status, FileStatus::Modified | FileStatus::Missing)
        || f.backups
            .iter()
            .any(|b| b.verdict == BackupVerdict::Unverified)
}

/// Looks up clean content for the files that need it (one pass per provider),
/// records where it is on each modified or missing file and, with `diff`, the diff
/// against it, and keeps the verified bytes.
pub(crate) fn annotate(
    root: &Root,
    tree: &Tree,
    refs: &TreeReferences,
    files: &mut [FileResult],
    diff: bool,
) -> Annotated {
    let index: BTreeMap<PathBuf, usize> = files
        .iter()
        .enumerate()
        .filter(|(_, f)| wanted(f))
        .map(|(i, f)| (f.path.clone(), i))
        .collect();
    let mut out = Annotated::default();
    if index.is_empty() {
        return out;
    }
    let wanted: Vec<PathBuf> = index.keys().cloned().collect();
    let content = CleanContent::for_tree(root, tree, refs);
    content.get_many(&wanted, &mut |rel, copy| {
        let (Some(copy), Some(i)) = (copy, index.get(rel)) else {
            return;
        };
        let f = &mut files[*i];
        if matches!(f.status, FileStatus::Modified | FileStatus::Missing) {
            if diff {
                let current = match f.status {
                    FileStatus::Missing => None,
                    _ => read_limited(&tree.host_path.join(rel), MAX_SOURCE_FILE).ok(),
                };
                f.diff = Some(Box::new(crate::diff::FileDiff::compute(
                    rel,
                    &copy.bytes,
                    &copy.origin,
                    &tree.system_path,
                    current.as_deref(),
                    crate::diff::CONTEXT,
                )));
            }
            f.clean = Some(CleanSource {
                kind: copy.source,
                origin: copy.origin.clone(),
            });
        }
        out.copies.insert(rel.to_path_buf(), copy);
    });
    out.problems = content.problems();
    out
}
