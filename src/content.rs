//! Clean *content*: where the bytes of a clean file can be had, for diffs, for
//! diff-aware rules and for restores. A hash reference says *that* a file changed;
//! a content provider supplies what it was.
//!
//! Nothing is trusted for its name: every candidate is hashed and accepted only if it
//! matches the file's expected digest from the strongest hash reference (see
//! [`crate::reference`]). Providers are tried in a fixed order of trust.

use crate::error::{Error, Result};
use crate::hash::{self, Digest};
use crate::reference::{ReferenceKind, TreeReferences};
use crate::scan;
use crate::tree::Tree;
use std::path::{Path, PathBuf};

/// Verified clean bytes of one file and where they came from.
#[derive(Debug, Clone)]
pub struct CleanCopy {
    pub bytes: Vec<u8>,
    /// Which kind of source supplied the bytes.
    pub source: ReferenceKind,
    /// Human-readable origin: a backup's path, an archive and member, a baseline copy.
    pub origin: String,
    /// The digest the bytes were verified against.
    pub verified: Digest,
}

/// A place clean bytes may be found. Implementations return candidates; the
/// [`CleanContent`] checks them against the references before anyone sees them.
pub trait ContentProvider: Send + Sync {
    fn kind(&self) -> ReferenceKind;
    /// Candidate bytes for the tree-relative path, with a description of their origin.
    fn candidates(&self, rel: &Path) -> Result<Vec<(Vec<u8>, String)>>;
}

/// Backups next to the file (`kfd_crat.c.orig`, `.bak`, `~`, ...). Which of them is
/// clean is decided by hash, never by name: `.patched` in the real incident was a copy
/// of the patched file.
pub struct SiblingBackups {
    tree_dir: PathBuf,
}

/// Suffixes people and tools give backups, most deliberate first.
pub const BACKUP_SUFFIXES: &[&str] = &[
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

impl SiblingBackups {
    pub fn new(tree: &Tree) -> SiblingBackups {
        SiblingBackups {
            tree_dir: tree.host_path.clone(),
        }
    }

    /// Backups of `rel` that exist, as tree-relative paths: `name<suffix>` and
    /// numbered or timestamped variants (`name.bak.1`, `name.backup.20251108_120000`).
    pub fn find(&self, rel: &Path) -> Vec<PathBuf> {
        let host = self.tree_dir.join(rel);
        let (Some(dir), Some(name)) = (host.parent(), host.file_name()) else {
            return Vec::new();
        };
        let name = name.to_string_lossy().into_owned();
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        let mut found: Vec<PathBuf> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .filter_map(|e| {
                let other = e.file_name().to_string_lossy().into_owned();
                let rest = other.strip_prefix(&name)?;
                is_backup_suffix(rest).then(|| rel.with_file_name(other))
            })
            .collect();
        found.sort();
        found
    }
}

/// Whether `rest` (what follows the original name) makes a backup name.
pub fn is_backup_suffix(rest: &str) -> bool {
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

impl ContentProvider for SiblingBackups {
    fn kind(&self) -> ReferenceKind {
        ReferenceKind::Backup
    }

    fn candidates(&self, rel: &Path) -> Result<Vec<(Vec<u8>, String)>> {
        let mut out = Vec::new();
        for b in self.find(rel) {
            let host = self.tree_dir.join(&b);
            let mut f = match scan::open_nofollow(&host) {
                Ok(f) => f,
                Err(_) => continue,
            };
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut f, &mut bytes).map_err(|e| Error::io(&host, e))?;
            out.push((bytes, host.display().to_string()));
        }
        Ok(out)
    }
}

/// All content providers of one tree, in order of trust.
pub struct CleanContent<'a> {
    refs: &'a TreeReferences,
    providers: Vec<Box<dyn ContentProvider + 'a>>,
}

impl<'a> CleanContent<'a> {
    /// The providers available for a tree.
    pub fn for_tree(tree: &Tree, refs: &'a TreeReferences) -> CleanContent<'a> {
        CleanContent {
            refs,
            providers: vec![Box::new(SiblingBackups::new(tree))],
        }
    }

    /// Adds a provider (kept in the order added; earlier ones are preferred).
    pub fn push(&mut self, p: Box<dyn ContentProvider + 'a>) {
        self.providers.push(p);
    }

    /// The first candidate from the most trusted provider whose hash matches the
    /// file's expected digest. `None` when no reference lists the file or no source
    /// has verified bytes for it.
    pub fn get(&self, rel: &Path) -> Result<Option<CleanCopy>> {
        let Some(expected) = self.refs.get(rel) else {
            return Ok(None);
        };
        for p in &self.providers {
            for (bytes, origin) in p.candidates(rel)? {
                if Digest::of_bytes(expected.digest.algorithm(), &bytes) == expected.digest {
                    return Ok(Some(CleanCopy {
                        bytes,
                        source: p.kind(),
                        origin,
                        verified: expected.digest.clone(),
                    }));
                }
            }
        }
        Ok(None)
    }

    /// Whether the bytes are the clean content of `rel` by the references.
    pub fn is_clean(&self, rel: &Path, bytes: &[u8]) -> bool {
        self.refs
            .get(rel)
            .is_some_and(|e| Digest::of_bytes(e.digest.algorithm(), bytes) == e.digest)
    }
}

/// Hash helper for callers that verify a file on disk again right before use.
pub fn digest_file(path: &Path, algorithm: hash::Algorithm) -> Result<Digest> {
    let f = scan::open_nofollow(path).map_err(|e| Error::io(path, e))?;
    let (mut d, _) = hash::digest_reader(f, &[algorithm]).map_err(|e| Error::io(path, e))?;
    Ok(d.remove(0))
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
}
