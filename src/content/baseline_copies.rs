//! Clean copies stored with kfd-audit's baseline, so that diffs and restores work on a
//! system with no package archive and no trustworthy backup.
//!
//! `kfd-audit baseline create` stores a zstd-compressed copy of each watched file
//! under `<baseline dir>/copies/<path in the tree>.zst`: all of `amd/amdkfd` (where
//! capability lies are told) and the files rules name elsewhere ([`WATCHED_FILES`]);
//! `--all` stores the whole tree. One file per copy keeps reads random-access and
//! lets a user inspect one with `zstdcat`. A copy is served only when it matches the
//! baseline manifest's SHA-256, which was computed from the same bytes.

use super::{shown, Candidate, ContentProvider};
use crate::error::{Error, Result};
use crate::io::atomic;
use crate::io::hash::{Algorithm, Digest};
use crate::io::read::MAX_SOURCE_FILE;
use crate::io::root::Root;
use crate::reference::baseline;
use crate::reference::{ReferenceKind, TreeReferences};
use crate::tree::Tree;
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Directories whose every file gets a copy.
pub(crate) const WATCHED_DIRS: &[&str] = &["amd/amdkfd"];

/// Files outside [`WATCHED_DIRS`] that rules look at (driver-wide overrides, module
/// parameters, the build recipe).
pub(crate) const WATCHED_FILES: &[&str] = &[
    "amd/amdgpu/gmc_v10_0.c",
    "amd/amdgpu/amdgpu_drv.c",
    "dkms.conf",
];

/// zstd level for copies: a good ratio on C source at a fraction of level 19's time.
const LEVEL: i32 = 9;

/// Whether a tree-relative file gets a copy without `--all`: amd/amdkfd, the listed
/// files, and every file `rule_watched` names (the caller knows the rules; this
/// layer sits below them).
pub(crate) fn is_watched(rel: &Path, rule_watched: &(dyn Fn(&Path) -> bool + Sync)) -> bool {
    WATCHED_DIRS.iter().any(|d| rel.starts_with(d))
        || WATCHED_FILES.iter().any(|f| rel == Path::new(f))
        || rule_watched(rel)
}

/// Where a tree's copies live on this host.
pub(crate) fn dir(root: &Root, tree: &Tree) -> PathBuf {
    baseline::dir(root, tree).join("copies")
}

/// The copy of a tree-relative file inside a copies directory.
pub(crate) fn copy_path(copies: &Path, rel: &Path) -> PathBuf {
    let mut p = copies.join(rel).into_os_string();
    p.push(".zst");
    PathBuf::from(p)
}

/// Stores compressed copies of the watched files ([`is_watched`]; all files with
/// `all`), given as tree-relative paths with the SHA-256 the manifest records for
/// them. Each file is hashed again as it is read: one that changed since the
/// manifest was computed stops the baseline. The new set replaces the old one in a single rename.
pub(crate) fn store(
    root: &Root,
    tree: &Tree,
    files: &[(PathBuf, Digest)],
    all: bool,
    rule_watched: &(dyn Fn(&Path) -> bool + Sync),
) -> Result<usize> {
    let base = baseline::dir(root, tree);
    let final_dir = base.join("copies");
    let new_dir = base.join(format!("copies.new.{}", std::process::id()));
    if new_dir.exists() {
        std::fs::remove_dir_all(&new_dir).map_err(|e| Error::io(&new_dir, e))?;
    }
    atomic::create_private_dir(&new_dir)?;
    let chosen: Vec<&(PathBuf, Digest)> = files
        .iter()
        .filter(|(rel, _)| all || is_watched(rel, rule_watched))
        .collect();
    chosen.par_iter().try_for_each(|(rel, digest)| {
        let host = tree.host_path.join(rel);
        let bytes = crate::io::read::read_limited(&host, MAX_SOURCE_FILE)?;
        if &Digest::of_bytes(Algorithm::Sha256, &bytes) != digest {
            return Err(Error::Refused {
                path: host,
                message: "changed while the baseline was being taken; run 'kfd-audit baseline create' again".into(),
            });
        }
        let packed = zstd::bulk::compress(&bytes, LEVEL).map_err(|e| Error::io(&host, e))?;
        let target = copy_path(&new_dir, rel);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        atomic::write(&target, &packed, 0o600)
    })?;
    let old_dir = base.join(format!("copies.old.{}", std::process::id()));
    if final_dir.exists() {
        std::fs::rename(&final_dir, &old_dir).map_err(|e| Error::io(&final_dir, e))?;
    }
    std::fs::rename(&new_dir, &final_dir).map_err(|e| Error::io(&new_dir, e))?;
    atomic::sync_dir(&base)?;
    if old_dir.exists() {
        // The previous baseline's copies: derived data of kfd-audit's own, replaced.
        std::fs::remove_dir_all(&old_dir).map_err(|e| Error::io(&old_dir, e))?;
    }
    Ok(chosen.len())
}

/// Decompresses a stored copy, refusing more than a source file may hold.
pub(crate) fn read_copy(path: &Path) -> Result<Vec<u8>> {
    let f = crate::io::read::open_nofollow(path).map_err(|e| Error::io(path, e))?;
    let mut out = Vec::new();
    zstd::stream::read::Decoder::new(f)
        .map_err(|e| Error::io(path, e))?
        .take(MAX_SOURCE_FILE + 1)
        .read_to_end(&mut out)
        .map_err(|e| Error::io(path, e))?;
    if out.len() as u64 > MAX_SOURCE_FILE {
        return Err(Error::Refused {
            path: path.to_path_buf(),
            message: "decompresses to more than a source file may hold; not used".into(),
        });
    }
    Ok(out)
}

/// The baseline's stored copies, as a content provider.
pub(crate) struct BaselineCopies {
    root: Root,
    dir: PathBuf,
    /// The baseline manifest's SHA-256 per tree-relative path.
    manifest: BTreeMap<PathBuf, Digest>,
}

impl BaselineCopies {
    /// The tree's copies, when a baseline with copies exists.
    pub(crate) fn for_tree(
        root: &Root,
        tree: &Tree,
        refs: &TreeReferences,
    ) -> Option<BaselineCopies> {
        let dir = dir(root, tree);
        if !std::fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir()) {
            return None;
        }
        let manifest = refs
            .entries
            .iter()
            .filter(|(_, e)| e.kind == ReferenceKind::Baseline)
            .map(|(p, e)| (p.clone(), e.digest.clone()))
            .collect();
        Some(BaselineCopies {
            root: root.clone(),
            dir,
            manifest,
        })
    }
}

impl ContentProvider for BaselineCopies {
    fn kind(&self) -> ReferenceKind {
        ReferenceKind::Baseline
    }

    fn describe(&self) -> String {
        format!("baseline copies {}", shown(&self.root, &self.dir))
    }

    fn candidates_many(
        &self,
        rels: &[PathBuf],
        visit: &mut dyn FnMut(&Path, Candidate),
    ) -> Result<()> {
        let mut failed = None;
        for rel in rels {
            // A copy without a manifest line is from another baseline: not served.
            if !self.manifest.contains_key(rel) {
                continue;
            }
            let path = copy_path(&self.dir, rel);
            if std::fs::symlink_metadata(&path).is_err() {
                continue;
            }
            let bytes = match read_copy(&path) {
                Ok(b) => b,
                Err(e) => {
                    // One damaged copy does not hide the others; the first error is told.
                    failed.get_or_insert(e);
                    continue;
                }
            };
            visit(
                rel,
                Candidate {
                    bytes,
                    origin: format!("baseline copy {}", shown(&self.root, &path)),
                    source_path: path,
                },
            );
        }
        failed.map_or(Ok(()), Err)
    }
}
