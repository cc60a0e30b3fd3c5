//! The system being audited. With `--root /mnt` every system path (`/usr/src`,
//! `/var/lib/dpkg`, `/var/lib/dkms`, `/lib/modules`, `/etc`, `/proc`, `/sys`) is read
//! under `/mnt`, so a machine that does not boot can be audited from a live USB and
//! every test runs against a temporary fake root.

use crate::error::{Error, Result};
use std::path::{Component, Path, PathBuf};

#[derive(Debug, Clone)]
pub struct Root {
    dir: PathBuf,
}

impl Root {
    /// Opens a root directory; it must exist and be a directory.
    pub fn open(dir: &Path) -> Result<Root> {
        let meta = std::fs::metadata(dir).map_err(|e| Error::io(dir, e))?;
        if !meta.is_dir() {
            return Err(Error::BadRoot {
                path: dir.to_path_buf(),
            });
        }
        // Absolute so that paths printed in reports and plans can be pasted anywhere.
        let dir = std::path::absolute(dir).map_err(|e| Error::io(dir, e))?;
        Ok(Root { dir })
    }

    /// The host directory the audited system lives in (`/` for the running system).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn is_host_root(&self) -> bool {
        self.dir == Path::new("/")
    }

    /// Maps a system path such as `/var/lib/dpkg/info` to where it is on this host.
    pub fn path(&self, system_path: impl AsRef<Path>) -> PathBuf {
        let mut out = self.dir.clone();
        for c in system_path.as_ref().components() {
            match c {
                Component::Normal(part) => out.push(part),
                // A system path never climbs out of the root; ".." and "/" are dropped.
                Component::RootDir | Component::CurDir | Component::ParentDir => {}
                Component::Prefix(_) => {}
            }
        }
        out
    }

    /// The system path (as the audited machine sees it) of a host path under this
    /// root, or `None` when the host path lies outside the root.
    pub fn system_path(&self, host_path: &Path) -> Option<PathBuf> {
        let rel = host_path.strip_prefix(&self.dir).ok()?;
        Some(Path::new("/").join(rel))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_system_paths_under_root() {
        let tmp = tempfile::tempdir().unwrap();
        let root = Root::open(tmp.path()).unwrap();
        assert_eq!(
            root.path("/var/lib/dpkg/info"),
            tmp.path().join("var/lib/dpkg/info")
        );
        assert_eq!(root.path("/../../etc"), tmp.path().join("etc"));
        assert_eq!(
            root.system_path(&tmp.path().join("usr/src/x")),
            Some(PathBuf::from("/usr/src/x"))
        );
        assert_eq!(root.system_path(Path::new("/elsewhere")), None);
    }

    #[test]
    fn rejects_a_file_as_root() {
        let tmp = tempfile::NamedTempFile::new().unwrap();
        assert!(matches!(Root::open(tmp.path()), Err(Error::BadRoot { .. })));
    }
}
