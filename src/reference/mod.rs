//! Clean references: what each file of a tree should be. Strongest first:
//! 1. kfd-audit's own baseline (SHA-256, taken while the tree was known clean);
//! 2. dpkg's md5sums for the package that owns the tree (MD5: says *that* a file
//!    changed, not what it was), or on an RPM system the RPM database's digests
//!    (SHA-256 on any current rpm) for the package that owns it.
//!
//! Per file the strongest reference that lists it judges it, and the report names
//! that reference next to the verdict.

pub mod baseline;

use crate::error::Result;
use crate::io::hash::Digest;
use crate::io::root::Root;
use crate::pkgdb::{dpkg, rpm};
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
    /// The RPM database's file digests for the package that owns the tree.
    Rpmdb,
    /// A cached `.rpm` of the installed version (clean content).
    RpmArchive,
}

impl ReferenceKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ReferenceKind::Baseline => "baseline",
            ReferenceKind::DpkgMd5sums => "dpkg-md5sums",
            ReferenceKind::DebArchive => "deb-archive",
            ReferenceKind::Backup => "backup",
            ReferenceKind::Rpmdb => "rpmdb",
            ReferenceKind::RpmArchive => "rpm-archive",
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
    /// dpkg's md5 of the files the baseline judges (kept so that content sources can
    /// be checked against the package too). The others' is their entry in
    /// [`Self::entries`]: one copy of a hundred thousand paths, not two. Read it
    /// through [`Self::dpkg_md5_map`].
    dpkg_md5_under_baseline: BTreeMap<PathBuf, Digest>,
    /// The RPM package owning the tree, when the RPM database knows it (and dpkg does not).
    pub(crate) rpm_package: Option<crate::pkgdb::rpm::RpmPackage>,
    /// The RPM database's digest for each file, kept beside the baseline's like
    /// dpkg's md5sums, for checking package archive members.
    pub(crate) rpm_digests: BTreeMap<PathBuf, Digest>,
    /// Symbolic links the owning package ships (RPM records their targets): path
    /// relative to the tree → target.
    pub(crate) package_links: BTreeMap<PathBuf, PathBuf>,
    /// On RPM systems: the command that reinstalls the owning package (`dnf
    /// reinstall ...`, `zypper install -f ...`) and the one that fetches its `.rpm`
    /// into the cache kfd-audit reads (`dnf download --destdir ...`, `zypper download`).
    pub(crate) rpm_reinstall: Option<String>,
    pub(crate) rpm_fetch: Option<String>,
    /// Plain sentences about the references (both package databases present, none,
    /// a digest algorithm kfd-audit does not compute): shown as problems of the tree.
    pub(crate) notes: Vec<String>,
    pub skipped: Vec<Skipped>,
}

impl TreeReferences {
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub(crate) fn get(&self, rel: &Path) -> Option<&Expected> {
        self.entries.get(rel)
    }

    /// dpkg's md5 of every file of the tree it lists, as a map of its own.
    pub(crate) fn dpkg_md5_map(&self) -> BTreeMap<PathBuf, Digest> {
        let mut map: BTreeMap<PathBuf, Digest> = self
            .entries
            .iter()
            .filter(|(_, e)| e.kind == ReferenceKind::DpkgMd5sums)
            .map(|(p, e)| (p.clone(), e.digest.clone()))
            .collect();
        map.extend(
            self.dpkg_md5_under_baseline
                .iter()
                .map(|(p, d)| (p.clone(), d.clone())),
        );
        map
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
        refs.entries = sums
            .into_iter()
            .map(|(rel, digest)| {
                let kind = ReferenceKind::DpkgMd5sums;
                (rel, Expected { digest, kind })
            })
            .collect();
        refs.dpkg_package = Some(owner);
    } else {
        load_rpm(root, tree, opts, &mut refs)?;
    }
    database_notes(root, &mut refs);
    let mut kinds = Vec::new();
    if let Some(manifest) = baseline::load_manifest(root, tree, opts, &mut refs.skipped)? {
        for (rel, digest) in manifest {
            use std::collections::btree_map::Entry;
            let new = Expected {
                digest,
                kind: ReferenceKind::Baseline,
            };
            match refs.entries.entry(rel) {
                Entry::Occupied(mut o) => {
                    let old = o.insert(new);
                    if old.kind == ReferenceKind::DpkgMd5sums {
                        let rel = o.key().clone();
                        refs.dpkg_md5_under_baseline.insert(rel, old.digest);
                    }
                }
                Entry::Vacant(v) => {
                    v.insert(new);
                }
            }
        }
        kinds.push(ReferenceKind::Baseline);
    }
    if refs.dpkg_package.is_some() {
        kinds.push(ReferenceKind::DpkgMd5sums);
    }
    if refs.rpm_package.is_some() {
        kinds.push(ReferenceKind::Rpmdb);
    }
    refs.kinds = kinds;
    Ok(refs)
}

/// The RPM database's digests for the tree, when a package there owns it. An
/// unreadable database stops the scan (as malformed md5sums do) unless `--lenient`.
fn load_rpm(root: &Root, tree: &Tree, opts: LoadOptions, refs: &mut TreeReferences) -> Result<()> {
    let db = match rpm::load(root) {
        Ok(Some(db)) => db,
        Ok(None) => return Ok(()),
        Err(e) if opts.lenient => {
            let file = rpm::locate(root).map(|l| l.host_file).unwrap_or_default();
            refs.skipped.push(Skipped {
                file,
                line: 0,
                message: format!("RPM database not read: {e}"),
            });
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    let prefix = tree.dpkg_prefix();
    let Some(pkg) = db.owner_of(&prefix) else {
        return Ok(());
    };
    let config: Vec<String> = pkg
        .files
        .iter()
        .filter(|f| f.is_config() && f.path.starts_with(&prefix))
        .map(|f| crate::term::path(&f.path))
        .collect();
    if !config.is_empty() {
        // rpm -V checks %config files too, and so does the scan; a changed one may be
        // an admin's deliberate edit rather than a patch.
        refs.notes.push(format!(
            "{} marks {} file(s) of this tree as %config (yours to edit, rpm keeps them on upgrade): {}",
            db.describe(),
            config.len(),
            config.join(", ")
        ));
    }
    if let Some(algo) = pkg.unsupported_algo {
        refs.notes.push(format!(
            "{} records its file digests with algorithm {algo} (PGP numbering; kfd-audit computes MD5 and SHA-256):              its files are unverified; check them with rpm -V {}",
            pkg.nevra(),
            pkg.name
        ));
    }
    let digests = rpm::tree_digests(pkg, &prefix);
    refs.entries = digests
        .iter()
        .map(|(rel, d)| {
            let e = Expected {
                digest: d.clone(),
                kind: ReferenceKind::Rpmdb,
            };
            (rel.clone(), e)
        })
        .collect();
    refs.rpm_digests = digests;
    refs.package_links = rpm::tree_links(pkg, &prefix);
    refs.rpm_reinstall = Some(rpm::reinstall_command(root, pkg));
    refs.rpm_fetch = Some(rpm::download_command(root, pkg));
    refs.rpm_package = Some(pkg.clone());
    Ok(())
}

/// Says plainly when the root has both package databases (an odd chroot: which one
/// is right is for a person to judge) or neither (only a baseline can vouch).
fn database_notes(root: &Root, refs: &mut TreeReferences) {
    let dbs = crate::pkgdb::databases(root);
    if dbs.len() > 1 {
        let judged = match (&refs.dpkg_package, &refs.rpm_package) {
            (Some(p), _) => format!("the tree is judged by dpkg ({p})"),
            (None, Some(p)) => format!("the tree is judged by the RPM database ({})", p.nevra()),
            (None, None) => "neither lists this tree".to_string(),
        };
        refs.notes.push(format!(
            "this system has both a dpkg database ({}) and an RPM database ({}): {judged};              an odd chroot or a half-converted system, check which package manager really installed the driver",
            crate::pkgdb::dpkg::INFO_DIR,
            rpm::DB_DIRS.join(" or ")
        ));
    } else if dbs.is_empty() {
        refs.notes.push(format!(
            "no package database under the root (neither dpkg's {} nor an RPM database in {}):              only a kfd-audit baseline or a verified backup can vouch for the files",
            crate::pkgdb::dpkg::INFO_DIR,
            rpm::DB_DIRS.join(" or ")
        ));
    }
}
