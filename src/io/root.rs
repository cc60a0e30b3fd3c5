//! The system being audited. With `--root /mnt` every system path (`/usr/src`,
//! `/var/lib/dpkg`, `/var/lib/dkms`, `/lib/modules`, `/etc`, `/proc`, `/sys`) is read
//! under `/mnt`, so a machine that does not boot can be audited from a live USB and
//! every test runs against a temporary fake root.

use crate::error::{Error, Result};
use std::path::{Component, Path, PathBuf};

/// Links followed while resolving one path before giving up, as Linux does (its
/// `MAXSYMLINKS`): a loop of links ends as an error, not a hang.
pub(crate) const MAX_SYMLINKS: usize = 40;

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
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn is_host_root(&self) -> bool {
        self.dir == Path::new("/")
    }

    /// Maps a system path such as `/var/lib/dpkg/info` to where it is on this host.
    pub(crate) fn path(&self, system_path: impl AsRef<Path>) -> PathBuf {
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

    /// The host path a system path leads to, with every symbolic link on it followed
    /// the way the audited system would follow it, and never out of the root: an
    /// absolute link target starts again at the root (`/etc/modprobe.d/x.conf ->
    /// /usr/share/x.conf` is the audited system's file, not the host's), and `..` stops
    /// at the root. Every component is resolved, not only the last, because the host
    /// kernel would otherwise follow a directory link (`/lib -> /usr/lib`) on the host.
    ///
    /// Like realpath(3) inside the root, the path must exist: the error is the one
    /// opening it would give (`NotFound` for a missing component or a dangling link,
    /// `NotADirectory`, permission errors), or `ELOOP` after more than
    /// [`MAX_SYMLINKS`] links. Callers that treat "absent" apart from "unreadable"
    /// match on the kind.
    pub(crate) fn resolve_in_root(
        &self,
        system_path: impl AsRef<Path>,
    ) -> std::io::Result<PathBuf> {
        // Components still to walk, the next one last; ".." stays a component so that
        // it applies to where a link has led, not to the path as written.
        fn push_rev(pending: &mut Vec<std::ffi::OsString>, path: &Path) {
            for c in path.components().rev() {
                match c {
                    Component::Normal(p) => pending.push(p.to_os_string()),
                    Component::ParentDir => pending.push("..".into()),
                    Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
                }
            }
        }
        let mut pending = Vec::new();
        push_rev(&mut pending, system_path.as_ref());
        let mut current = PathBuf::from("/");
        let mut links = 0;
        while let Some(part) = pending.pop() {
            if part == ".." {
                current.pop();
                continue;
            }
            let next = current.join(&part);
            let host = self.path(&next);
            if !std::fs::symlink_metadata(&host)?.file_type().is_symlink() {
                current = next;
                continue;
            }
            links += 1;
            if links > MAX_SYMLINKS {
                // ELOOP, as open(2) would say: "Too many levels of symbolic links".
                return Err(std::io::Error::from_raw_os_error(libc::ELOOP));
            }
            let target = std::fs::read_link(&host)?;
            if target.is_absolute() {
                current = PathBuf::from("/");
            }
            push_rev(&mut pending, &target);
        }
        Ok(self.path(&current))
    }

    /// The system path (as the audited machine sees it) of a host path under this
    /// root, or `None` when the host path lies outside the root.
    pub(crate) fn system_path(&self, host_path: &Path) -> Option<PathBuf> {
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
    fn resolves_links_inside_the_root() {
        use std::io::ErrorKind;
        use std::os::unix::fs::symlink;
        let tmp = tempfile::tempdir().unwrap();
        let root = Root::open(tmp.path()).unwrap();
        let host = |p: &str| tmp.path().join(p);
        std::fs::create_dir_all(host("usr/lib/modprobe.d")).unwrap();
        std::fs::create_dir_all(host("usr/share")).unwrap();
        std::fs::create_dir_all(host("etc/modprobe.d")).unwrap();
        std::fs::write(host("usr/share/x.conf"), "x").unwrap();
        std::fs::write(host("usr/lib/modprobe.d/y.conf"), "y").unwrap();
        // An absolute target is the audited system's path, not the host's.
        symlink("/usr/share/x.conf", host("etc/modprobe.d/x.conf")).unwrap();
        // A directory link in the middle (merged /usr), relative.
        symlink("usr/lib", host("lib")).unwrap();
        // `..` in a target never climbs above the root.
        symlink("../../../../../usr/share/x.conf", host("etc/up.conf")).unwrap();
        symlink("/nowhere", host("etc/dangling")).unwrap();
        symlink("loop-b", host("etc/loop-a")).unwrap();
        symlink("loop-a", host("etc/loop-b")).unwrap();

        assert_eq!(
            root.resolve_in_root("/etc/modprobe.d/x.conf").unwrap(),
            host("usr/share/x.conf")
        );
        assert_eq!(
            root.resolve_in_root("/lib/modprobe.d/y.conf").unwrap(),
            host("usr/lib/modprobe.d/y.conf")
        );
        assert_eq!(
            root.resolve_in_root("/etc/up.conf").unwrap(),
            host("usr/share/x.conf")
        );
        assert_eq!(
            root.resolve_in_root("/usr/../usr/share").unwrap(),
            host("usr/share")
        );
        assert_eq!(root.resolve_in_root("/").unwrap(), tmp.path());
        let kind = |p: &str| root.resolve_in_root(p).unwrap_err().kind();
        assert_eq!(kind("/etc/missing.conf"), ErrorKind::NotFound);
        assert_eq!(kind("/etc/dangling"), ErrorKind::NotFound);
        assert_eq!(kind("/usr/share/x.conf/z"), ErrorKind::NotADirectory);
        let looped = root.resolve_in_root("/etc/loop-a").unwrap_err();
        assert_eq!(looped.raw_os_error(), Some(libc::ELOOP));
    }

    #[test]
    fn rejects_a_file_as_root() {
        let tmp = tempfile::NamedTempFile::new().unwrap();
        assert!(matches!(Root::open(tmp.path()), Err(Error::BadRoot { .. })));
    }
}
