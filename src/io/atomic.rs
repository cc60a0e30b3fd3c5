//! The one way kfd-audit writes a file: a temporary file in the same directory,
//! written and fsync'd, renamed over the target, then the directory fsync'd. A crash
//! at any instant leaves either the old or the new file, never a torn one.
//!
//! Files inside a DKMS tree are reached through [`TreeFile`]: every directory from
//! the tree down is opened with `O_NOFOLLOW`, so a symlinked parent cannot carry a
//! write outside the tree, and a symlink at the target itself is refused, never
//! followed or replaced. The replacement keeps the target's mode and owner.

use crate::error::{Error, Result};
use crate::io::failpoint;
use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Component, Path, PathBuf};

/// Prefix of temporary files, so that a later run can find and remove leftovers.
/// The full name is `<prefix><pid>.<target name>`.
pub(crate) const TEMP_PREFIX: &str = ".kfd-audit-tmp.";

/// Longest file name most Linux filesystems accept.
const NAME_MAX: usize = 255;

fn cstr(name: &OsStr) -> std::io::Result<CString> {
    CString::new(name.as_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "NUL in file name"))
}

fn cvt(rc: libc::c_int) -> std::io::Result<libc::c_int> {
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// `openat(2)` returning an owned descriptor.
fn openat(
    dir: &OwnedFd,
    name: &OsStr,
    flags: libc::c_int,
    mode: libc::mode_t,
) -> std::io::Result<OwnedFd> {
    let c = cstr(name)?;
    loop {
        // SAFETY: dir is an open descriptor, c a NUL-terminated name.
        let fd = unsafe {
            libc::openat(
                dir.as_raw_fd(),
                c.as_ptr(),
                flags | libc::O_CLOEXEC,
                mode as libc::c_uint,
            )
        };
        if fd >= 0 {
            // SAFETY: fd was just returned by openat and is owned by nobody else.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

fn open_dir_path(path: &Path, nofollow: bool) -> std::io::Result<OwnedFd> {
    let c = cstr(path.as_os_str())?;
    let mut flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC;
    if nofollow {
        flags |= libc::O_NOFOLLOW;
    }
    // SAFETY: c is a NUL-terminated path.
    let fd = cvt(unsafe { libc::open(c.as_ptr(), flags) })?;
    // SAFETY: fd was just returned by open.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn fstatat_nofollow(dir: &OwnedFd, name: &OsStr) -> std::io::Result<libc::stat> {
    let c = cstr(name)?;
    // SAFETY: zeroed stat is a valid out-parameter.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: dir is open, c is NUL-terminated, st is properly sized.
    cvt(unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            c.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    Ok(st)
}

fn unlinkat(dir: &OwnedFd, name: &OsStr) -> std::io::Result<()> {
    let c = cstr(name)?;
    // SAFETY: dir is open, c is NUL-terminated.
    cvt(unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), 0) }).map(|_| ())
}

fn fsync_fd(fd: &OwnedFd) -> std::io::Result<()> {
    // SAFETY: fd is an open descriptor.
    cvt(unsafe { libc::fsync(fd.as_raw_fd()) }).map(|_| ())
}

fn is_symlink_error(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ELOOP) | Some(libc::ENOTDIR))
}

/// Syncs a directory so a rename or create inside it survives a crash.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

/// What an existing regular file looks like, for keeping its mode and owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileMeta {
    /// Permission bits, including setuid/setgid/sticky.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
}

/// Mode and owner for the file a replace leaves behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ownership {
    pub mode: u32,
    /// `None`: whoever runs kfd-audit.
    pub owner: Option<(u32, u32)>,
}

/// A file inside a directory tree, reached without following any symlink from the
/// base directory down. The directory holding it stays open, so every later step
/// (stat, read, temp file, rename, fsync) happens in that same directory even if
/// someone renames things around it.
pub(crate) struct TreeFile {
    dir: OwnedFd,
    name: OsString,
    path: PathBuf,
}

fn refused(path: &Path, message: impl Into<String>) -> Error {
    Error::Refused {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

impl TreeFile {
    /// Opens the directory of `base/rel`. `rel` must be relative and stay inside
    /// `base`; every directory on the way is opened with `O_NOFOLLOW`, and a
    /// symlinked one is refused. With `create_dirs`, missing directories are created
    /// (with `dir_mode`) and their parents fsync'd.
    pub(crate) fn open(base: &Path, rel: &Path, create_dirs: Option<u32>) -> Result<TreeFile> {
        let path = base.join(rel);
        let parts: Vec<&OsStr> = rel
            .components()
            .map(|c| match c {
                Component::Normal(p) => Ok(p),
                _ => Err(refused(
                    &path,
                    "path leaves the tree (absolute or '..'); refused",
                )),
            })
            .collect::<Result<_>>()?;
        let Some((name, dirs)) = parts.split_last() else {
            return Err(refused(&path, "empty path"));
        };
        let mut dir = open_dir_path(base, true).map_err(|e| {
            if is_symlink_error(&e) {
                refused(
                    base,
                    "is a symbolic link or not a directory; kfd-audit never writes through a link",
                )
            } else {
                Error::io(base, e)
            }
        })?;
        let mut here = base.to_path_buf();
        for part in dirs {
            here.push(part);
            let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW;
            let next = match openat(&dir, part, flags, 0) {
                Ok(fd) => fd,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && create_dirs.is_some() => {
                    let c = cstr(part).map_err(|e| Error::io(&here, e))?;
                    let mode = create_dirs.unwrap_or(0o755);
                    // SAFETY: dir is open, c NUL-terminated.
                    let rc = unsafe { libc::mkdirat(dir.as_raw_fd(), c.as_ptr(), mode) };
                    if rc < 0 {
                        let e = std::io::Error::last_os_error();
                        if e.kind() != std::io::ErrorKind::AlreadyExists {
                            return Err(Error::io(&here, e));
                        }
                    }
                    fsync_fd(&dir).map_err(|e| Error::io(&here, e))?;
                    openat(&dir, part, flags, 0).map_err(|e| Error::io(&here, e))?
                }
                Err(e) if is_symlink_error(&e) => return Err(refused(
                    &here,
                    "is a symbolic link or not a directory; kfd-audit never writes through a link",
                )),
                Err(e) => return Err(Error::io(&here, e)),
            };
            dir = next;
        }
        Ok(TreeFile {
            dir,
            name: name.to_os_string(),
            path,
        })
    }

    /// The host path, for messages.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The file's metadata; `None` when it does not exist. A symlink or anything
    /// but a regular file is refused.
    pub(crate) fn stat(&self) -> Result<Option<FileMeta>> {
        match fstatat_nofollow(&self.dir, &self.name) {
            Ok(st) => {
                let kind = st.st_mode & libc::S_IFMT;
                if kind == libc::S_IFLNK {
                    let target = std::fs::read_link(&self.path)
                        .map(|t| format!(" (-> {})", crate::term::path(&t)))
                        .unwrap_or_default();
                    return Err(refused(
                        &self.path,
                        format!("is a symbolic link{target}; kfd-audit never writes through a link: remove the link and run again, or restore the file by hand"),
                    ));
                }
                if kind != libc::S_IFREG {
                    return Err(refused(&self.path, "is not a regular file; refused"));
                }
                Ok(Some(FileMeta {
                    mode: st.st_mode & 0o7777,
                    uid: st.st_uid,
                    gid: st.st_gid,
                    size: st.st_size as u64,
                }))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(&self.path, e)),
        }
    }

    /// Metadata of the directory holding the file (owner for files created in it).
    pub(crate) fn dir_meta(&self) -> Result<FileMeta> {
        let f = File::from(self.dir.try_clone().map_err(|e| Error::io(&self.path, e))?);
        let m = f.metadata().map_err(|e| Error::io(&self.path, e))?;
        use std::os::unix::fs::MetadataExt;
        Ok(FileMeta {
            mode: m.mode() & 0o7777,
            uid: m.uid(),
            gid: m.gid(),
            size: m.size(),
        })
    }

    /// Reads the whole file; `None` when it does not exist. Never follows a symlink.
    pub(crate) fn read(&self) -> Result<Option<Vec<u8>>> {
        let fd = match openat(
            &self.dir,
            &self.name,
            libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK,
            0,
        ) {
            Ok(fd) => fd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                return Err(refused(
                    &self.path,
                    "is a symbolic link; kfd-audit never reads through a link",
                ))
            }
            Err(e) => return Err(Error::io(&self.path, e)),
        };
        let f = File::from(fd);
        let meta = f.metadata().map_err(|e| Error::io(&self.path, e))?;
        if !meta.is_file() {
            return Err(refused(&self.path, "is not a regular file; refused"));
        }
        // Only source files are read whole: a huge (or sparse) file in their place is
        // not copied into memory or into the quarantine.
        let limit = crate::io::read::MAX_SOURCE_FILE;
        let too_large = |size: u64| {
            refused(
                &self.path,
                format!("{size} bytes, more than a source file may have ({limit}); not read, not copied to the quarantine, not replaced: move it away by hand, then run again"),
            )
        };
        if meta.len() > limit {
            return Err(too_large(meta.len()));
        }
        let mut bytes = Vec::with_capacity(meta.len() as usize);
        f.take(limit + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| Error::io(&self.path, e))?;
        if bytes.len() as u64 > limit {
            return Err(too_large(bytes.len() as u64));
        }
        Ok(Some(bytes))
    }

    fn temp_name(&self) -> OsString {
        let mut name = format!("{TEMP_PREFIX}{}.", std::process::id()).into_bytes();
        let room = NAME_MAX.saturating_sub(name.len());
        let own = self.name.as_bytes();
        name.extend_from_slice(&own[..own.len().min(room)]);
        OsString::from(std::ffi::OsStr::from_bytes(&name))
    }

    /// Atomically replaces (or creates) the file with `data`: temp file in the same
    /// directory, fsync, rename, directory fsync. `fp` names this write for the
    /// test failpoints (`<fp>-temp-written`, `<fp>-renamed`).
    pub(crate) fn replace(&self, data: &[u8], own: Ownership, fp: &str) -> Result<()> {
        let tmp = self.temp_name();
        let tmp_path = self.path.with_file_name(&tmp);
        let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW;
        let fd = match openat(&self.dir, &tmp, flags, 0o600) {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                // Our own name (this pid) from a run that died: it is ours to replace.
                let _ = unlinkat(&self.dir, &tmp);
                openat(&self.dir, &tmp, flags, 0o600)
            }
            other => other,
        }
        .map_err(|e| Error::io(&tmp_path, e))?;
        let result = (|| -> std::io::Result<()> {
            let mut f = File::from(fd);
            f.write_all(data)?;
            if let Some((uid, gid)) = own.owner {
                // SAFETY: f is an open descriptor. chown before chmod: chown clears setuid.
                cvt(unsafe { libc::fchown(f.as_raw_fd(), uid, gid) })?;
            }
            // Explicit chmod: the mode given to open() is filtered by the umask.
            // SAFETY: f is an open descriptor.
            cvt(unsafe { libc::fchmod(f.as_raw_fd(), own.mode as libc::mode_t) })?;
            f.sync_all()?;
            failpoint::hit(&format!("{fp}-temp-written"))?;
            let a = cstr(&tmp)?;
            let b = cstr(&self.name)?;
            // SAFETY: both names NUL-terminated, the directory descriptor open.
            cvt(unsafe {
                libc::renameat(
                    self.dir.as_raw_fd(),
                    a.as_ptr(),
                    self.dir.as_raw_fd(),
                    b.as_ptr(),
                )
            })?;
            Ok(())
        })();
        if let Err(e) = result {
            let _ = unlinkat(&self.dir, &tmp);
            return Err(Error::io(&self.path, e));
        }
        failpoint::hit(&format!("{fp}-renamed")).map_err(|e| Error::io(&self.path, e))?;
        fsync_fd(&self.dir).map_err(|e| Error::io(&self.path, e))?;
        Ok(())
    }

    /// Removes the file (never a link's target: unlink removes the name itself) and
    /// fsyncs the directory. Only for a file whose verified copy is already in the
    /// quarantine: kfd-audit never deletes anything it has not kept.
    pub(crate) fn remove(&self) -> Result<()> {
        unlinkat(&self.dir, &self.name).map_err(|e| Error::io(&self.path, e))?;
        failpoint::hit("remove-unlinked").map_err(|e| Error::io(&self.path, e))?;
        fsync_fd(&self.dir).map_err(|e| Error::io(&self.path, e))?;
        Ok(())
    }

    /// Appends to the file (creating it with `mode`) and fsyncs, for journals.
    pub(crate) fn append(&self, data: &[u8], mode: u32) -> Result<bool> {
        let existed = self.stat()?.is_some();
        let fd = openat(
            &self.dir,
            &self.name,
            libc::O_WRONLY | libc::O_CREAT | libc::O_APPEND | libc::O_NOFOLLOW,
            mode as libc::mode_t,
        )
        .map_err(|e| Error::io(&self.path, e))?;
        let mut f = File::from(fd);
        f.write_all(data).map_err(|e| Error::io(&self.path, e))?;
        f.sync_data().map_err(|e| Error::io(&self.path, e))?;
        if !existed {
            fsync_fd(&self.dir).map_err(|e| Error::io(&self.path, e))?;
        }
        Ok(!existed)
    }
}

/// Atomically replaces (or creates) `target` with `data`, with the given mode.
/// The target's final component is never followed if it is a symlink: rename
/// replaces the link itself, and callers refuse symlinked targets before this.
pub(crate) fn write(target: &Path, data: &[u8], mode: u32) -> Result<()> {
    let (Some(dir), Some(name)) = (target.parent(), target.file_name()) else {
        return Err(refused(target, "has no parent directory"));
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let fd = open_dir_path(dir, false).map_err(|e| Error::io(dir, e))?;
    let tf = TreeFile {
        dir: fd,
        name: name.to_os_string(),
        path: target.to_path_buf(),
    };
    tf.replace(data, Ownership { mode, owner: None }, "write")
}

/// Creates a directory and its parents with mode 0700 where they do not exist,
/// for kfd-audit's own state (baselines, quarantine, journal).
/// The parents of the new directories are fsync'd, so that the journal and the
/// quarantine cannot vanish in a crash while the files they protect survive.
pub(crate) fn create_private_dir(dir: &Path) -> Result<()> {
    let mut missing = Vec::new();
    let mut cur = Some(dir);
    while let Some(d) = cur {
        if d.as_os_str().is_empty() || d.exists() {
            break;
        }
        missing.push(d);
        cur = d.parent();
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| Error::io(dir, e))?;
    for d in missing.iter().rev() {
        if let Some(parent) = d.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
    }
    Ok(())
}

/// Whether a file name is a temporary file of kfd-audit, and of which process.
pub(crate) fn temp_owner(name: &OsStr) -> Option<u32> {
    let rest = name.as_bytes().strip_prefix(TEMP_PREFIX.as_bytes())?;
    let end = rest.iter().position(|b| *b == b'.')?;
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
}

/// Whether a process with this pid exists (EPERM means it exists but is not ours).
pub(crate) fn process_alive(pid: u32) -> bool {
    if pid == 0 || pid > i32::MAX as u32 {
        return false;
    }
    // SAFETY: signal 0 only checks for existence.
    let rc = unsafe { libc::kill(pid as libc::pid_t, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Removes temporary files left by kfd-audit runs that were killed, anywhere under
/// `dir` (symlinks not followed). A temp file of a process still alive is left.
/// Only kfd-audit's own half-written files are removed, never anything else.
pub(crate) fn remove_stale_temps(dir: &Path) -> Result<Vec<PathBuf>> {
    let stale = find_stale_temps(dir);
    for p in &stale {
        std::fs::remove_file(p).map_err(|e| Error::io(p, e))?;
        if let Some(parent) = p.parent() {
            sync_dir(parent)?;
        }
    }
    Ok(stale)
}

/// Temporary files under `dir` whose process is gone (symlinks not followed).
pub(crate) fn find_stale_temps(dir: &Path) -> Vec<PathBuf> {
    crate::io::walk::Walk::new(dir)
        .entries()
        .filter(|e| e.file_type().is_file())
        .filter(|e| {
            temp_owner(e.file_name())
                .is_some_and(|pid| pid == std::process::id() || !process_alive(pid))
        })
        .map(|e| e.path().to_path_buf())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    #[test]
    fn replaces_atomically_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path().join("f");
        write(&t, b"one", 0o644).unwrap();
        write(&t, b"two", 0o600).unwrap();
        assert_eq!(std::fs::read(&t).unwrap(), b"two");
        assert_eq!(
            std::fs::metadata(&t).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn tree_file_keeps_mode_and_refuses_links() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("tree");
        std::fs::create_dir_all(base.join("a/b")).unwrap();
        std::fs::write(base.join("a/b/f.c"), "old").unwrap();
        std::fs::set_permissions(base.join("a/b/f.c"), std::fs::Permissions::from_mode(0o640))
            .unwrap();
        let tf = TreeFile::open(&base, Path::new("a/b/f.c"), None).unwrap();
        let meta = tf.stat().unwrap().unwrap();
        assert_eq!(meta.mode, 0o640);
        assert_eq!(tf.read().unwrap().unwrap(), b"old");
        tf.replace(
            b"new",
            Ownership {
                mode: meta.mode,
                owner: Some((meta.uid, meta.gid)),
            },
            "test",
        )
        .unwrap();
        let m = std::fs::metadata(base.join("a/b/f.c")).unwrap();
        assert_eq!(m.mode() & 0o7777, 0o640);
        assert_eq!(std::fs::read(base.join("a/b/f.c")).unwrap(), b"new");

        // A symlinked parent directory pointing outside the tree is refused.
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, base.join("a/link")).unwrap();
        let err = TreeFile::open(&base, Path::new("a/link/x.c"), Some(0o755))
            .err()
            .unwrap();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert!(TreeFile::open(&base, Path::new("../x"), None).is_err());

        // A symlink at the target is refused by stat and read.
        std::os::unix::fs::symlink(outside.join("t"), base.join("a/b/l.c")).unwrap();
        let tf = TreeFile::open(&base, Path::new("a/b/l.c"), None).unwrap();
        assert!(tf.stat().is_err());
        assert!(tf.read().is_err());

        // Missing directories are created on request.
        let tf = TreeFile::open(&base, Path::new("n/m/new.c"), Some(0o755)).unwrap();
        assert_eq!(tf.stat().unwrap(), None);
        tf.replace(
            b"x",
            Ownership {
                mode: 0o644,
                owner: None,
            },
            "test",
        )
        .unwrap();
        assert_eq!(std::fs::read(base.join("n/m/new.c")).unwrap(), b"x");
    }

    #[test]
    fn stale_temps_are_found_by_prefix_and_pid() {
        assert_eq!(
            temp_owner(OsStr::new(".kfd-audit-tmp.123.kfd_crat.c")),
            Some(123)
        );
        assert_eq!(temp_owner(OsStr::new("kfd_crat.c")), None);
        let dir = tempfile::tempdir().unwrap();
        // pid 0 is never a live process here.
        std::fs::write(dir.path().join(".kfd-audit-tmp.0.x"), "half").unwrap();
        std::fs::write(dir.path().join("keep.c"), "keep").unwrap();
        let alive = format!(".kfd-audit-tmp.{}.y", std::os::unix::process::parent_id());
        std::fs::write(dir.path().join(&alive), "busy").unwrap();
        let removed = remove_stale_temps(dir.path()).unwrap();
        assert_eq!(removed, vec![dir.path().join(".kfd-audit-tmp.0.x")]);
        assert!(dir.path().join("keep.c").exists());
        assert!(dir.path().join(alive).exists());
    }
}
