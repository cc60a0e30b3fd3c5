//! Backup copies of amd modules under `/lib/modules` (`amdgpu.ko.xz.backup`, ...).
//! depmod ignores these names, so they are never loaded, but someone saved them and
//! may copy one back: each is judged by its bytes against the md5sums of the package
//! that ships the module (a kernel image package for the in-tree driver) and against
//! the module in place. The names are the same backup names as in a source tree
//! ([`crate::content::backup::original_names`]).

use crate::content::backup::original_names;
use crate::io::hash::{Algorithm, Digest};
use crate::io::root::Root;
use crate::pkgdb::dpkg;
use crate::scan::BackupVerdict;
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// A `*.backup` (or other backup-named) copy of an amd module under `/lib/modules`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ModuleBackup {
    /// The backup as the audited system names it.
    pub path: PathBuf,
    /// The module it is a copy of.
    pub original: PathBuf,
    pub verdict: BackupVerdict,
    /// What the verdict was judged against (`dpkg-md5sums linux-image-6.1.0-56-amd64`).
    pub reference: Option<String>,
}

fn is_module_name(name: &OsStr) -> bool {
    let n = name.as_bytes();
    n.starts_with(b"amd")
        && [&b".ko"[..], b".ko.xz", b".ko.zst", b".ko.gz"]
            .iter()
            .any(|s| n.ends_with(s))
}

/// Backup copies of amd modules (`amdgpu.ko.xz.backup`, ...) anywhere under
/// `<root>/lib/modules`, judged against the md5sums of the package that ships the
/// module (a kernel image package for the in-tree driver) and the module in place.
pub(crate) fn module_backups(root: &Root) -> Vec<ModuleBackup> {
    let base = root.path("/lib/modules");
    let mut found: Vec<(PathBuf, PathBuf)> = Vec::new();
    for entry in crate::io::walk::Walk::new(&base).entries() {
        if !entry.file_type().is_file() {
            continue;
        }
        let name = entry.file_name();
        if let Some(orig) = original_names(name).into_iter().find(|o| is_module_name(o)) {
            let host = entry.path().to_path_buf();
            found.push((host.clone(), host.with_file_name(orig)));
        }
    }
    if found.is_empty() {
        return Vec::new();
    }
    let sys = |host: &Path| root.system_path(host).unwrap_or_else(|| host.to_path_buf());
    let wanted: Vec<PathBuf> = found.iter().map(|(_, o)| sys(o)).collect();
    let packaged = dpkg_md5_of(root, &wanted);
    found
        .into_iter()
        .map(|(host, orig_host)| {
            let original = sys(&orig_host);
            let listed = packaged.get(&original);
            let mut verdict = BackupVerdict::Unverified;
            let md5 = crate::io::read::digest_file(&host, Algorithm::Md5).ok();
            if let (Some((_, want)), Some(have)) = (listed, &md5) {
                if want == have {
                    verdict = BackupVerdict::VerifiedClean;
                }
            }
            // Compared with the module in place only when that is a regular file,
            // never through a link.
            let orig_is_file = std::fs::symlink_metadata(&orig_host).is_ok_and(|m| m.is_file());
            if verdict == BackupVerdict::Unverified && orig_is_file {
                let a = crate::io::read::digest_file(&host, Algorithm::Sha256).ok();
                let b = crate::io::read::digest_file(&orig_host, Algorithm::Sha256).ok();
                if a.is_some() && a == b {
                    verdict = BackupVerdict::SameAsCurrent;
                }
            }
            ModuleBackup {
                path: sys(&host),
                original,
                verdict,
                reference: listed.map(|(pkg, _)| format!("dpkg-md5sums {pkg}")),
            }
        })
        .collect()
}

/// dpkg's md5 of each wanted system path, from whichever package lists it (under
/// `/lib` or, on merged-/usr systems, `/usr/lib`). Reads every md5sums file, so it is
/// only called when there is something to look up.
fn dpkg_md5_of(root: &Root, wanted: &[PathBuf]) -> BTreeMap<PathBuf, (String, Digest)> {
    let mut keys: BTreeMap<PathBuf, PathBuf> = BTreeMap::new();
    for w in wanted {
        let rel = w.strip_prefix("/").unwrap_or(w).to_path_buf();
        keys.insert(Path::new("usr").join(&rel), w.clone());
        keys.insert(rel, w.clone());
    }
    let mut out = BTreeMap::new();
    let dir = root.path(dpkg::INFO_DIR);
    let mut lists: Vec<PathBuf> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension() == Some(OsStr::new("md5sums")))
        .collect();
    lists.sort();
    for list in lists {
        let Ok(Some(bytes)) = crate::io::read::read_reference(&list) else {
            continue;
        };
        let pkg = list.file_stem().unwrap_or_default().to_string_lossy();
        let pkg = pkg.split(':').next().unwrap_or_default().to_string();
        for line in bytes.split(|b| *b == b'\n') {
            if let Ok(l) = dpkg::parse_line(line) {
                if let Some(w) = keys.get(&l.path) {
                    out.entry(w.clone()).or_insert((pkg.clone(), l.digest));
                }
            }
        }
    }
    out
}
