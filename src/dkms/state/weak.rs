//! `weak-updates/`: on RHEL and SLES, `weak-modules` lets one module build serve
//! several kernels of the same kABI by linking
//! `/lib/modules/<kernel>/weak-updates/<...>/amdgpu.ko.xz` to the module installed for
//! another kernel (`/lib/modules/<built-for>/extra/amdgpu.ko.xz`). A kernel that has
//! no module of its own but such a link loads that other build: its provenance is the
//! provenance of the file the link leads to, so the link is followed (inside the root,
//! as the audited system would) and the target judged.

use super::{module_name_of, read_dir_names, ModuleFile, MODULES_DIR};
use crate::io::root::Root;
use crate::term;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

pub(crate) const WEAK_DIR: &str = "weak-updates";
/// weak-modules mirrors the install directory's layout; it is shallow.
const MAX_DEPTH: usize = 4;

/// The package's modules that `kernel` loads through weak-updates links: each as the
/// module file the link leads to (its time is the build's evidence), and a note
/// naming the link and the kernel the module was built for.
pub(super) fn through_links(
    root: &Root,
    kernel: &str,
    modules: &BTreeSet<String>,
) -> (Vec<ModuleFile>, Vec<String>) {
    let system_dir = Path::new(MODULES_DIR).join(kernel).join(WEAK_DIR);
    let mut links = Vec::new();
    collect_links(root, &system_dir, 0, modules, &mut links);
    let mut found = Vec::new();
    let mut notes = Vec::new();
    for link in links {
        let shown_link = term::path(&link);
        let Ok(target) = root.resolve_in_root(&link) else {
            notes.push(format!(
                "{shown_link}: a weak-updates link that leads nowhere (its module was removed): this kernel loads its own driver"
            ));
            continue;
        };
        let Some(mut m) = ModuleFile::at(root, target) else {
            continue;
        };
        let from = root
            .system_path(&m.host)
            .and_then(|p| {
                let rest = p.strip_prefix(MODULES_DIR).ok()?.to_path_buf();
                rest.components()
                    .next()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
            })
            .unwrap_or_else(|| "?".into());
        notes.push(format!(
            "{shown_link} is a weak-updates link to {} (the module installed for kernel {from}): this kernel loads that build, \
             so it is judged by that file",
            m.path
        ));
        m.path = format!("{shown_link} -> {}", m.path);
        found.push(m);
    }
    (found, notes)
}

/// The symbolic links under a weak-updates directory named like one of the package's
/// modules, as system paths.
fn collect_links(
    root: &Root,
    system_dir: &Path,
    depth: usize,
    modules: &BTreeSet<String>,
    out: &mut Vec<PathBuf>,
) {
    if depth > MAX_DEPTH {
        return;
    }
    let host = root.path(system_dir);
    for name in read_dir_names(&host) {
        let Ok(meta) = std::fs::symlink_metadata(host.join(&name)) else {
            continue;
        };
        let system = system_dir.join(&name);
        if meta.file_type().is_symlink() {
            if module_name_of(&name).is_some_and(|m| modules.contains(&m)) {
                out.push(system);
            }
        } else if meta.is_dir() {
            collect_links(root, &system, depth + 1, modules, out);
        }
    }
}
