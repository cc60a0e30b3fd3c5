//! Clean content looked up for the files of a scan that differ from their reference.

use super::{CleanSource, FileResult, FileStatus};
use crate::content::CleanContent;
use crate::io::read::{read_limited, MAX_SOURCE_FILE};
use crate::io::root::Root;
use crate::reference::TreeReferences;
use crate::tree::Tree;
use std::path::PathBuf;

/// Looks up clean content for every modified or missing file of a scan (one pass
/// per provider), records where it is on each file and, with `diff`, the diff
/// against it. Returns the problems met (a corrupt archive...), for the report.
pub fn annotate(
    root: &Root,
    tree: &Tree,
    refs: &TreeReferences,
    files: &mut [FileResult],
    diff: bool,
) -> Vec<String> {
    let index: std::collections::BTreeMap<PathBuf, usize> = files
        .iter()
        .enumerate()
        .filter(|(_, f)| matches!(f.status, FileStatus::Modified | FileStatus::Missing))
        .map(|(i, f)| (f.path.clone(), i))
        .collect();
    if index.is_empty() {
        return Vec::new();
    }
    let wanted: Vec<PathBuf> = index.keys().cloned().collect();
    let content = CleanContent::for_tree(root, tree, refs);
    content.get_many(&wanted, &mut |rel, copy| {
        let (Some(copy), Some(i)) = (copy, index.get(rel)) else {
            return;
        };
        let f = &mut files[*i];
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
            origin: copy.origin,
        });
    });
    content.problems()
}
