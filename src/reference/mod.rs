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
// The reading rules of reference files live with the package database, the lowest
// reader of them; named here too so that callers keep one place to import them from.
pub use crate::pkgdb::{safe_relative, LoadOptions};
pub(crate) use crate::pkgdb::{shown_excerpt, SkipList, Skipped};
use crate::tree::Tree;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReferenceKind {
    Baseline,
    DpkgMd5sums,
    DebArchive,
    Backup,
}

impl ReferenceKind {
    pub(crate) fn as_str(self) -> &'static str {
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
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub(crate) fn get(&self, rel: &Path) -> Option<&Expected> {
        self.entries.get(rel)
    }
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
