//! Clean references: what each file of a tree should be. Strongest first:
//! 1. kfd-audit's own baseline (SHA-256, taken while the tree was known clean);
//! 2. dpkg's md5sums for the package that owns the tree (MD5: says *that* a file
//!    changed, not what it was).
//!
//! Per file the strongest reference that lists it judges it, and the report names
//! that reference next to the verdict.

pub mod baseline;

use crate::error::Result;
use crate::io::hash::Digest;
use crate::io::root::Root;
use crate::pkgdb::dpkg;
use crate::tree::Tree;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReferenceKind {
    Baseline,
    DpkgMd5sums,
    DebArchive,
    Backup,
}

impl ReferenceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ReferenceKind::Baseline => "baseline",
            ReferenceKind::DpkgMd5sums => "dpkg-md5sums",
            ReferenceKind::DebArchive => "deb-archive",
            ReferenceKind::Backup => "backup",
        }
    }
}

impl std::fmt::Display for ReferenceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The clean digest of one file and which reference vouches for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    pub digest: Digest,
    pub kind: ReferenceKind,
}

/// A problem met while reading references that did not stop the scan
/// (only with `--lenient`): shown in the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub file: PathBuf,
    pub line: usize,
    pub message: String,
}

/// How many malformed lines of one reference file are listed one by one with
/// `--lenient`; the rest are counted in one more entry (a file of garbage must not
/// turn into a report of a million lines).
pub const MAX_SKIPPED_LISTED: usize = 20;

/// Collects the malformed lines of one reference file, up to [`MAX_SKIPPED_LISTED`].
pub struct SkipList {
    file: PathBuf,
    listed: Vec<Skipped>,
    more: usize,
    first_more: usize,
}

impl SkipList {
    pub fn new(file: &Path) -> SkipList {
        SkipList {
            file: file.to_path_buf(),
            listed: Vec::new(),
            more: 0,
            first_more: 0,
        }
    }

    pub fn push(&mut self, line: usize, message: String) {
        if self.listed.len() < MAX_SKIPPED_LISTED {
            self.listed.push(Skipped {
                file: self.file.clone(),
                line,
                message,
            });
        } else {
            if self.more == 0 {
                self.first_more = line;
            }
            self.more += 1;
        }
    }

    pub fn finish(self, out: &mut Vec<Skipped>) {
        out.extend(self.listed);
        if self.more > 0 {
            out.push(Skipped {
                file: self.file,
                line: self.first_more,
                message: format!(
                    "and {} more malformed line(s) from here on, not listed one by one",
                    self.more
                ),
            });
        }
    }
}

/// Everything known about the clean state of one tree.
#[derive(Debug, Clone, Default)]
pub struct TreeReferences {
    /// Path relative to the tree → its clean digest.
    pub entries: BTreeMap<PathBuf, Expected>,
    /// The reference kinds that contributed, strongest first.
    pub kinds: Vec<ReferenceKind>,
    /// The dpkg package owning the tree, when dpkg knows it.
    pub dpkg_package: Option<String>,
    /// dpkg's md5 for each file, kept even when the baseline judges the file, so that
    /// content sources can be checked against the package too.
    pub dpkg_md5: BTreeMap<PathBuf, Digest>,
    pub skipped: Vec<Skipped>,
}

impl TreeReferences {
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn get(&self, rel: &Path) -> Option<&Expected> {
        self.entries.get(rel)
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct LoadOptions {
    /// Report and skip malformed reference lines instead of failing.
    pub lenient: bool,
}

/// Loads every hash reference for a tree; the baseline overrides dpkg per file.
pub fn load(root: &Root, tree: &Tree, opts: LoadOptions) -> Result<TreeReferences> {
    let mut refs = TreeReferences::default();
    if let Some(owner) = dpkg::find_owner(root, tree)? {
        let sums = dpkg::load_tree_md5sums(root, &owner, tree, opts, &mut refs.skipped)?;
        // Built from the whole list at once (a later line for the same path wins, as
        // with inserts): md5sums are nearly sorted, so this costs about one path
        // comparison per line instead of one per tree level, and packs the nodes full.
        refs.dpkg_md5 = sums.iter().cloned().collect();
        refs.entries = sums
            .into_iter()
            .map(|(rel, digest)| {
                let kind = ReferenceKind::DpkgMd5sums;
                (rel, Expected { digest, kind })
            })
            .collect();
        refs.dpkg_package = Some(owner);
    }
    let mut kinds = Vec::new();
    if let Some(manifest) = baseline::load_manifest(root, tree, opts, &mut refs.skipped)? {
        for (rel, digest) in manifest {
            refs.entries.insert(
                rel,
                Expected {
                    digest,
                    kind: ReferenceKind::Baseline,
                },
            );
        }
        kinds.push(ReferenceKind::Baseline);
    }
    if refs.dpkg_package.is_some() {
        kinds.push(ReferenceKind::DpkgMd5sums);
    }
    refs.kinds = kinds;
    Ok(refs)
}

/// At most this much of a malformed line is quoted in a message.
const EXCERPT: usize = 120;

/// A piece of a reference file quoted in a message: lossy UTF-8, cut after
/// [`EXCERPT`] characters (a line of garbage can be megabytes long).
pub fn shown_excerpt(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    match text.char_indices().nth(EXCERPT) {
        Some((i, _)) => format!("{}... ({} bytes)", &text[..i], raw.len()),
        None => text.into_owned(),
    }
}

/// Accepts a path from a reference file only if it is relative and stays inside the
/// directory it is relative to: no `..`, no absolute path, no NUL, not empty.
/// Reference files come from the audited system and may have been tampered with.
pub fn safe_relative(path: &Path) -> Option<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    if path.as_os_str().is_empty() || path.as_os_str().as_bytes().contains(&0) {
        return None;
    }
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_relative_rejects_escapes() {
        assert_eq!(safe_relative(Path::new("a/b")), Some(PathBuf::from("a/b")));
        assert_eq!(safe_relative(Path::new("./a")), Some(PathBuf::from("a")));
        assert_eq!(safe_relative(Path::new("../a")), None);
        assert_eq!(safe_relative(Path::new("a/../../b")), None);
        assert_eq!(safe_relative(Path::new("/etc/passwd")), None);
        assert_eq!(safe_relative(Path::new("")), None);
    }
}
