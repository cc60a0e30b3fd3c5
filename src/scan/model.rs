//! What a scan finds: the verdict on each file, the backups found beside it, and
//! where its clean content is. Kept apart from the walk and the hashing so that the
//! layers above (rules, dkms, restore, report) read one small file to know the model.

use crate::content::CleanCopy;
use crate::finding::Finding;
use crate::io::hash::Digest;
use crate::reference::{ReferenceKind, TreeReferences};
use crate::tree::Tree;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum FileStatus {
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
    pub(crate) fn as_str(self) -> &'static str {
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
    pub(crate) fn is_notable(self) -> bool {
        !matches!(self, FileStatus::Ok | FileStatus::Unverified)
    }
}

/// What kfd-audit concluded about a backup found next to a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum BackupVerdict {
    VerifiedClean,
    SameAsCurrent,
    Unsafe,
    Unverified,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Backup {
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
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            BackupVerdict::VerifiedClean => "verified-clean",
            BackupVerdict::SameAsCurrent => "same-as-current",
            BackupVerdict::Unsafe => "unsafe",
            BackupVerdict::Unverified => "unverified",
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct FileResult {
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
    pub clean: Option<CleanSource>,
    /// The file against its clean content (`scan --diff`). Boxed: few files have
    /// one, and every file of a large tree pays for the space of an unboxed one.
    pub diff: Option<Box<crate::diff::FileDiff>>,
}

impl FileResult {
    pub(crate) fn new(path: PathBuf, status: FileStatus) -> FileResult {
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
}

#[derive(Debug, Clone)]
pub(crate) struct TreeScan {
    pub tree: Tree,
    pub refs: TreeReferences,
    /// Every file of the tree (and every missing one), amd/amdkfd first, then by path.
    pub files: Vec<FileResult>,
    /// Problems met looking for clean content (a corrupt package archive, a refused
    /// member) that did not stop the scan.
    pub problems: Vec<String>,
    /// Whether clean content was looked for (`ScanOptions::clean_content`).
    pub content_checked: bool,
    /// The verified clean bytes found when clean content was looked for: of every
    /// modified or missing file that has some, and of files with a backup no hash
    /// could place. Fetched once, here, and used by the diff, the rules and the
    /// restore plan (a restore still fetches and verifies each source again right
    /// before it writes).
    pub clean_copies: BTreeMap<PathBuf, CleanCopy>,
}

impl TreeScan {
    pub(crate) fn count(&self, status: FileStatus) -> usize {
        self.files.iter().filter(|f| f.status == status).count()
    }

    pub(crate) fn file(&self, rel: &Path) -> Option<&FileResult> {
        self.files.iter().find(|f| f.path == rel)
    }
}

/// Where a file's verified clean content is, for the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CleanSource {
    pub kind: ReferenceKind,
    /// See [`crate::content::CleanCopy::origin`].
    pub origin: String,
}
