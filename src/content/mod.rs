//! Clean *content*: where the bytes of a clean file can be had, for diffs, for
//! diff-aware rules and for restores. A hash reference says *that* a file changed;
//! a content provider supplies what it was.
//!
//! Nothing is trusted for its name: every candidate is hashed and accepted only if it
//! matches the file's expected digest from the strongest hash reference (see
//! [`crate::reference`]). Providers are asked in a fixed order of trust, and the first
//! verified candidate wins:
//!
//! 1. **Baseline copies** ([`baseline_copies`]): compressed copies kfd-audit stored
//!    with its own baseline, each checked against the baseline manifest's SHA-256.
//!    Strongest because the manifest is SHA-256 and was taken on a tree known clean.
//! 2. **The package archive** ([`archive`]): the `.deb` of the installed version in
//!    apt's cache, read member by member without extracting; a member is accepted only
//!    if it matches dpkg's md5sums for the package. It is what the package installed.
//!    On RPM systems the `.rpm` in dnf's, yum's or zypper's cache ([`rpm_archive`]),
//!    checked against the RPM database's digests.
//! 3. **Backups** ([`backup`]): copies next to the file (`.orig`, `.bak`, `~`, ...) or in
//!    a directory copy (`amd/amdkfd.bak/`), accepted only when their hash matches. In
//!    the incident the "backup" was a copy of the patched file: a name proves nothing.
//!
//! A candidate that fails verification from a baseline copy or the archive is a
//! problem worth telling the user (the copy or the archive was tampered with or is
//! of another version); a backup that fails it is just not clean, which the backup
//! verdicts report.

pub mod archive;
pub(crate) mod backup;
pub(crate) mod baseline_copies;
pub(crate) mod rpm_archive;

pub(crate) use backup::{is_backup_suffix, SiblingBackups};

use crate::error::Result;
use crate::io::hash::Digest;
use crate::io::read::MAX_SOURCE_FILE;
use crate::io::root::Root;
use crate::reference::{ReferenceKind, TreeReferences};
use crate::tree::Tree;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Verified clean bytes of one file and where they came from.
#[derive(Debug, Clone)]
pub struct CleanCopy {
    pub bytes: Vec<u8>,
    /// Which kind of source supplied the bytes.
    pub source: ReferenceKind,
    /// Human-readable origin: a backup's path, an archive, a baseline copy, as the
    /// audited system names them (`dpkg archive /var/cache/apt/archives/x.deb`).
    pub origin: String,
    /// The digest the bytes were verified against.
    pub verified: Digest,
    /// Where the source is on this host (the backup, the `.zst` copy, the `.deb`), so
    /// that a restore can check it again right before use.
    pub source_path: PathBuf,
}

/// One candidate a provider offers for a file.
#[derive(Debug, Clone)]
pub(crate) struct Candidate {
    pub bytes: Vec<u8>,
    /// See [`CleanCopy::origin`].
    pub origin: String,
    /// See [`CleanCopy::source_path`].
    pub source_path: PathBuf,
}

/// A place clean bytes may be found. Implementations return candidates; the
/// [`CleanContent`] checks them against the references before anyone sees them.
pub(crate) trait ContentProvider: Send + Sync {
    fn kind(&self) -> ReferenceKind;

    /// Candidates for many files at once, handed to `visit` in any order. A provider
    /// that must read through a container to find members (a `.deb`) serves every
    /// file in one pass and keeps one member in memory at a time.
    fn candidates_many(
        &self,
        rels: &[PathBuf],
        visit: &mut dyn FnMut(&Path, Candidate),
    ) -> Result<()>;

    /// What this provider is, for the report (`dpkg archive /var/cache/...deb`).
    fn describe(&self) -> String {
        self.kind().to_string()
    }

    /// Problems met that did not stop the work (refused members, ...).
    fn problems(&self) -> Vec<String> {
        Vec::new()
    }
}

/// A package archive's walk over its members: each member's path, size and content
/// to `visit`, which says whether to go on. `Err` is a sentence about the archive.
pub(crate) type MemberWalk<'w> = dyn FnMut(
        &mut dyn FnMut(&Path, u64, &mut dyn std::io::Read) -> std::io::Result<bool>,
    ) -> std::result::Result<(), String>
    + 'w;

/// One package archive (`.deb`, `.rpm`) as a source of clean content: which members
/// are wanted, and how a member that does not match the package database is refused.
pub(crate) struct VerifiedMembers<'a> {
    /// The archive file, for [`Candidate::source_path`].
    pub(crate) archive: &'a Path,
    /// What the archive is, for [`Candidate::origin`].
    pub(crate) origin: String,
    /// Where the tree's files are inside the package (`usr/src/amdgpu-6.8.5`).
    pub(crate) prefix: &'a Path,
    /// The digest the package database recorded for each file, by tree path.
    pub(crate) digests: &'a BTreeMap<PathBuf, Digest>,
    pub(crate) problems: &'a Mutex<Vec<String>>,
}

impl VerifiedMembers<'_> {
    /// Serves `rels` from the archive's members in one walk: a member is read (never
    /// past [`MAX_SOURCE_FILE`]) and handed to `visit` only when its digest is the one
    /// the package database recorded; one that does not match is kept in `problems`
    /// with the sentence `refused` makes of its path. Files the database has no digest
    /// for are not asked for: nothing could accept them.
    pub(crate) fn serve(
        &self,
        rels: &[PathBuf],
        walk: &mut MemberWalk<'_>,
        refused: &dyn Fn(&Path) -> String,
        visit: &mut dyn FnMut(&Path, Candidate),
    ) -> std::result::Result<(), String> {
        let mut wanted: BTreeMap<PathBuf, &Path> = rels
            .iter()
            .filter(|r| self.digests.contains_key(*r))
            .map(|r| (self.prefix.join(r), r.as_path()))
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        walk(&mut |member, size, reader| {
            let Some(rel) = wanted.remove(member) else {
                return Ok(true);
            };
            if size > MAX_SOURCE_FILE {
                return Ok(!wanted.is_empty());
            }
            let mut bytes = Vec::with_capacity(size as usize);
            reader.read_to_end(&mut bytes)?;
            let expected = &self.digests[rel];
            if Digest::of_bytes(expected.algorithm(), &bytes) == *expected {
                visit(
                    rel,
                    Candidate {
                        bytes,
                        origin: self.origin.clone(),
                        source_path: self.archive.to_path_buf(),
                    },
                );
            } else {
                self.problems
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(refused(member));
            }
            Ok(!wanted.is_empty())
        })
    }
}

/// How a system path under the root is shown: as the audited system sees it.
pub(crate) fn shown(root: &Root, host: &Path) -> String {
    crate::term::path(&root.system_path(host).unwrap_or_else(|| host.to_path_buf()))
}

/// All content providers of one tree, in order of trust.
pub struct CleanContent<'a> {
    refs: &'a TreeReferences,
    providers: Vec<Box<dyn ContentProvider + 'a>>,
    problems: Mutex<Vec<String>>,
}

impl<'a> CleanContent<'a> {
    /// The providers available for a tree, strongest first: baseline copies, the
    /// package archive of the installed version, backups. Problems found while
    /// looking for them (an unreadable dpkg status) are kept for [`Self::problems`].
    pub fn for_tree(root: &Root, tree: &Tree, refs: &'a TreeReferences) -> CleanContent<'a> {
        let mut c = CleanContent::new(refs);
        if let Some(copies) = baseline_copies::BaselineCopies::for_tree(root, tree, refs) {
            c.push(Box::new(copies));
        }
        match archive::DebArchive::for_tree(root, tree, refs) {
            Ok(archives) => {
                for a in archives {
                    c.push(Box::new(a));
                }
            }
            Err(e) => c.note(e.to_string()),
        }
        // On RPM systems: the cached .rpm of the installed version, same rank.
        for a in rpm_archive::RpmArchive::for_tree(root, tree, refs) {
            c.push(Box::new(a));
        }
        c.push(Box::new(SiblingBackups::new(root, tree)));
        c
    }

    /// No providers yet; add them with [`Self::push`].
    pub(crate) fn new(refs: &'a TreeReferences) -> CleanContent<'a> {
        CleanContent {
            refs,
            providers: Vec::new(),
            problems: Mutex::new(Vec::new()),
        }
    }

    /// Adds a provider (kept in the order added; earlier ones are preferred).
    pub(crate) fn push(&mut self, p: Box<dyn ContentProvider + 'a>) {
        self.providers.push(p);
    }

    fn note(&self, message: String) {
        let mut p = self.problems.lock().unwrap_or_else(|e| e.into_inner());
        if !p.contains(&message) {
            p.push(message);
        }
    }

    /// Problems met so far: unreadable or corrupt archives, refused members and
    /// copies. They did not stop anything; the report shows them.
    pub(crate) fn problems(&self) -> Vec<String> {
        let mut out = self
            .problems
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for p in &self.providers {
            for m in p.problems() {
                if !out.contains(&m) {
                    out.push(m);
                }
            }
        }
        out
    }

    /// The clean content of one file: the first candidate, from the most trusted
    /// provider, whose hash matches the file's expected digest. `None` when no
    /// reference lists the file or no source has verified bytes for it. A provider
    /// that fails (a corrupt archive) is recorded in [`Self::problems`] and skipped.
    pub fn get(&self, rel: &Path) -> Result<Option<CleanCopy>> {
        let mut found = None;
        self.get_many(&[rel.to_path_buf()], &mut |_, copy| found = copy);
        Ok(found)
    }

    /// The clean content of many files, each handed to `visit` once (in no fixed
    /// order) with its verified copy or `None`. Each provider is asked once for all
    /// files it may still serve, so a package archive is read through only once.
    pub(crate) fn get_many(
        &self,
        rels: &[PathBuf],
        visit: &mut dyn FnMut(&Path, Option<CleanCopy>),
    ) {
        let mut pending: BTreeSet<PathBuf> = BTreeSet::new();
        for rel in rels {
            if self.refs.get(rel).is_some() {
                pending.insert(rel.clone());
            } else {
                visit(rel, None);
            }
        }
        for p in &self.providers {
            if pending.is_empty() {
                break;
            }
            let ask: Vec<PathBuf> = pending.iter().cloned().collect();
            let kind = p.kind();
            let result = p.candidates_many(&ask, &mut |rel, cand| {
                if !pending.contains(rel) {
                    return;
                }
                let Some(expected) = self.refs.get(rel) else {
                    return;
                };
                if Digest::of_bytes(expected.digest.algorithm(), &cand.bytes) == expected.digest {
                    pending.remove(rel);
                    visit(
                        rel,
                        Some(CleanCopy {
                            bytes: cand.bytes,
                            source: kind,
                            origin: cand.origin,
                            verified: expected.digest.clone(),
                            source_path: cand.source_path,
                        }),
                    );
                } else if kind != ReferenceKind::Backup {
                    // A backup that does not match is simply not clean; a baseline copy
                    // or package member that does not match is worth telling.
                    self.note(format!(
                        "{}: does not match the {} hash of {}; not used",
                        cand.origin,
                        expected.kind,
                        crate::term::path(rel)
                    ));
                }
            });
            if let Err(e) = result {
                self.note(e.to_string());
            }
        }
        for rel in pending {
            visit(&rel, None);
        }
    }
}
