//! Walking a directory tree that anyone may have shaped, without following symlinks
//! and without going round a directory loop.
//!
//! `walkdir` with `follow_links(false)` never follows a symlink, and only looks for
//! loops when it follows links. A bind mount is not a link: `mount --bind tree
//! tree/sub` makes `tree/sub` the very same directory as `tree`, and every walk of
//! the tree would list it again under `sub` (recursive binds multiply that). Each
//! directory is therefore compared (device and inode, by `lstat`) with the
//! directories above it; one that is its own ancestor is reported, not entered.
//! `same_file_system(true)` would not catch it: a bind mount of the same filesystem
//! keeps its device number.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// One step of a walk.
#[derive(Debug)]
pub(crate) enum Step {
    /// A file, link, special file or directory (directories before their contents).
    Entry(walkdir::DirEntry),
    /// A directory that is one of its own ancestors (a bind mount loop): not entered.
    Loop {
        entry: walkdir::DirEntry,
        /// The ancestor it is the same directory as.
        ancestor: PathBuf,
    },
    /// A directory that could not be read, or an entry that could not be looked at.
    Error(walkdir::Error),
}

/// A depth-first walk in file-name order, symlinks not followed, loops not entered.
pub(crate) struct Walk {
    inner: walkdir::IntoIter,
    /// `(device, inode, path)` of each directory on the path from the top to the
    /// current entry, indexed by depth. An unknown identity is `None`.
    ancestors: Vec<(Option<(u64, u64)>, PathBuf)>,
}

impl Walk {
    pub(crate) fn new(dir: &Path) -> Walk {
        Walk {
            inner: walkdir::WalkDir::new(dir)
                .follow_links(false)
                .sort_by_file_name()
                .into_iter(),
            ancestors: Vec::new(),
        }
    }

    /// Only the entries (files, links, directories), loops and errors left out.
    pub(crate) fn entries(self) -> impl Iterator<Item = walkdir::DirEntry> {
        self.filter_map(|s| match s {
            Step::Entry(e) => Some(e),
            Step::Loop { .. } | Step::Error(_) => None,
        })
    }
}

impl Iterator for Walk {
    type Item = Step;

    fn next(&mut self) -> Option<Step> {
        let entry = match self.inner.next()? {
            Ok(e) => e,
            Err(e) => return Some(Step::Error(e)),
        };
        if entry.file_type().is_dir() {
            self.ancestors.truncate(entry.depth());
            // The inode readdir gives for a mount point is the one underneath it:
            // only a stat of the directory itself names what is mounted there.
            let id = entry.metadata().ok().map(|m| (m.dev(), m.ino()));
            if let Some(id) = id {
                if let Some((_, ancestor)) = self.ancestors.iter().find(|(a, _)| *a == Some(id)) {
                    let ancestor = ancestor.clone();
                    self.inner.skip_current_dir();
                    return Some(Step::Loop { entry, ancestor });
                }
            }
            self.ancestors.push((id, entry.path().to_path_buf()));
        }
        Some(Step::Entry(entry))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_files_and_directories_in_name_order_without_following_links() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("b/c")).unwrap();
        std::fs::write(d.join("a"), "").unwrap();
        std::fs::write(d.join("b/c/f"), "").unwrap();
        std::os::unix::fs::symlink(d, d.join("b/up")).unwrap();
        let got: Vec<PathBuf> = Walk::new(d)
            .entries()
            .map(|e| e.path().strip_prefix(d).unwrap().to_path_buf())
            .collect();
        let want: Vec<PathBuf> = ["", "a", "b", "b/c", "b/c/f", "b/up"]
            .iter()
            .map(PathBuf::from)
            .collect();
        assert_eq!(got, want);
    }
}
