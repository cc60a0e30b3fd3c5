//! Is the filesystem that holds a path mounted read-only? In a recovery-mode shell
//! `/` usually is, and kfd-audit must say `mount -o remount,rw /` instead of failing
//! half-way through a restore.
//!
//! The mount table is read from `<root>/proc/self/mounts` (for the running system
//! that is the kernel's own table; tests lay out a simulated one). Where the root
//! has no mount table (a disk mounted from a live USB), `statvfs(2)` on the host
//! path answers instead.

use crate::io::root::Root;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub device: String,
    pub mount_point: PathBuf,
    pub fs_type: String,
    pub read_only: bool,
}

/// Decodes the octal escapes the kernel uses in /proc/mounts (`\040` for a space).
fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            out.push(v as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses a mount table in /proc/mounts format; malformed lines are skipped.
pub fn parse_table(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 4 {
                return None;
            }
            Some(Mount {
                device: unescape(f[0]),
                mount_point: PathBuf::from(unescape(f[1])),
                fs_type: f[2].to_string(),
                read_only: f[3].split(',').any(|o| o == "ro"),
            })
        })
        .collect()
}

/// The mount that holds `system_path` (longest matching mount point; later entries
/// win on ties, as the kernel stacks them).
pub fn mount_for<'a>(table: &'a [Mount], system_path: &Path) -> Option<&'a Mount> {
    table
        .iter()
        .enumerate()
        .filter(|(_, m)| system_path.starts_with(&m.mount_point))
        .max_by_key(|(i, m)| (m.mount_point.components().count(), *i))
        .map(|(_, m)| m)
}

/// What kfd-audit knows about whether a system path can be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Writability {
    Writable,
    /// Read-only; the mount point to remount (as the audited system names it).
    ReadOnly {
        mount_point: PathBuf,
    },
}

impl Writability {}

/// Whether a system path under the root can be written, from the mount table under
/// the root when there is one, else from statvfs on the host path.
pub(crate) fn writability(root: &Root, system_path: &Path) -> Writability {
    let table_path = root.path("/proc/self/mounts");
    if let Ok(Some(bytes)) = crate::io::read::read_reference(&table_path) {
        let table = parse_table(&String::from_utf8_lossy(&bytes));
        if let Some(m) = mount_for(&table, system_path) {
            return if m.read_only {
                Writability::ReadOnly {
                    mount_point: m.mount_point.clone(),
                }
            } else {
                Writability::Writable
            };
        }
    }
    let host = nearest_existing(&root.path(system_path));
    if statvfs_read_only(&host) {
        // Without a table the mount point is not known; name the root's view of the path.
        let mp = mount_point_of(&host)
            .and_then(|h| root.system_path(&h))
            .unwrap_or_else(|| PathBuf::from("/"));
        Writability::ReadOnly { mount_point: mp }
    } else {
        Writability::Writable
    }
}

fn nearest_existing(p: &Path) -> PathBuf {
    let mut cur = p.to_path_buf();
    while !cur.exists() {
        if !cur.pop() {
            return PathBuf::from("/");
        }
    }
    cur
}

fn statvfs_read_only(path: &Path) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is a valid NUL-terminated path and st a properly sized out-parameter.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    rc == 0 && (st.f_flag & libc::ST_RDONLY) != 0
}

/// The host's mount point holding `path`, from the host's own mount table.
fn mount_point_of(path: &Path) -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mounts").ok()?;
    let table = parse_table(&text);
    mount_for(&table, path).map(|m| m.mount_point.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "/dev/sda2 / ext4 ro,relatime 0 0\n\
        proc /proc proc rw,nosuid 0 0\n\
        /dev/sda3 /usr/src ext4 rw,relatime 0 0\n\
        /dev/sdb1 /media/my\\040disk vfat rw 0 0\n\
        garbage\n";

    #[test]
    fn finds_the_holding_mount() {
        let t = parse_table(TABLE);
        assert_eq!(t.len(), 4);
        assert!(
            mount_for(&t, Path::new("/var/lib/kfd-audit"))
                .unwrap()
                .read_only
        );
        assert_eq!(
            mount_for(&t, Path::new("/usr/src/amdgpu-1/x.c"))
                .unwrap()
                .mount_point,
            PathBuf::from("/usr/src")
        );
        assert_eq!(t[3].mount_point, PathBuf::from("/media/my disk"));
    }

    #[test]
    fn simulated_table_under_root() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("proc/self")).unwrap();
        std::fs::write(dir.path().join("proc/self/mounts"), TABLE).unwrap();
        let root = Root::open(dir.path()).unwrap();
        let w = writability(&root, Path::new("/var/lib/kfd-audit"));
        assert_eq!(
            w,
            Writability::ReadOnly {
                mount_point: "/".into()
            }
        );
        assert_eq!(
            writability(&root, Path::new("/usr/src/amdgpu-1")),
            Writability::Writable
        );
    }
}
