//! The DKMS sequence printed after a successful restore, from the tree's dkms.conf
//! and the kernels that had the module built. Kept in one function so that a fuller
//! recovery planner can replace its output.

use crate::root::Root;
use crate::tree::Tree;
use std::path::Path;

fn dir_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Kernels the module was built or installed for: `/var/lib/dkms/<name>/<ver>/<kernel>/`
/// and `/lib/modules/<kernel>/updates/dkms/`; if none, every kernel in /lib/modules.
pub fn kernels(root: &Root, name: &str, version: &str) -> Vec<String> {
    let mut k: Vec<String> = dir_names(&root.path(format!("/var/lib/dkms/{name}/{version}")))
        .into_iter()
        .filter(|d| !matches!(d.as_str(), "build" | "source" | "log"))
        .collect();
    let modules = root.path("/lib/modules");
    for kernel in dir_names(&modules) {
        if modules.join(&kernel).join("updates/dkms").is_dir() && !k.contains(&kernel) {
            k.push(kernel);
        }
    }
    if k.is_empty() {
        k = dir_names(&modules);
    }
    k.sort();
    k
}

fn has_tool(root: &Root, tool: &str) -> bool {
    ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
        .iter()
        .any(|d| root.path(d).join(tool).exists())
}

/// The commands that put a module built from the restored sources in place.
pub fn recovery_commands(root: &Root, tree: &Tree) -> Vec<String> {
    let name = tree.package();
    let version = tree.version();
    let mut kernels = kernels(root, &name, &version);
    if kernels.is_empty() {
        kernels.push("$(uname -r)".to_string());
    }
    let mut cmds = Vec::new();
    if !root.is_host_root() {
        cmds.push(format!(
            "# inside the system: mount --bind /dev, /proc and /sys under {0}, then chroot {0}",
            root.dir().display()
        ));
    }
    // A plain build of an already built module is a silent no-op: remove first.
    cmds.push(format!("dkms remove -m {name} -v {version} --all"));
    for k in &kernels {
        cmds.push(format!("dkms build -m {name} -v {version} -k {k}"));
        cmds.push(format!("dkms install -m {name} -v {version} -k {k}"));
    }
    for k in &kernels {
        if has_tool(root, "update-initramfs") {
            cmds.push(format!("update-initramfs -u -k {k}"));
        } else if has_tool(root, "dracut") {
            cmds.push(format!("dracut -f --kver {k}"));
        }
    }
    if !has_tool(root, "update-initramfs")
        && !has_tool(root, "dracut")
        && has_tool(root, "mkinitcpio")
    {
        cmds.push("mkinitcpio -P".to_string());
    }
    cmds
}
