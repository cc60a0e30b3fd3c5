//! One restore (or undo) at a time: `<root>/var/lib/kfd-audit/restore.lock` holds the
//! pid of the run that owns it. `flock(2)` on the file settles races between two
//! runs starting together; the pid settles what a leftover file means: a live
//! process still owns it (refuse), a dead one left it behind when it was killed
//! (take it over, with a warning).

use crate::error::{Error, Result};
use crate::io::atomic::{self, process_alive};
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

pub(crate) const FILE: &str = "restore.lock";

/// The held lock; released (emptied and unlocked) when dropped.
#[derive(Debug)]
pub(crate) struct RestoreLock {
    file: File,
    pub path: PathBuf,
    /// The pid of a dead process whose stale lock was taken over.
    pub took_over: Option<u32>,
}

fn refuse(path: &Path, pid: Option<u32>, how: &str) -> Error {
    let who = pid.map_or_else(|| "another process".to_string(), |p| format!("process {p}"));
    Error::Refused {
        path: path.to_path_buf(),
        message: format!(
            "another kfd-audit restore or undo is running ({who}, {how}); wait for it to finish. \
             If no kfd-audit is running, remove this file and run again"
        ),
    }
}

/// Takes the lock in the state directory (created if needed).
pub(crate) fn acquire(state: &Path) -> Result<RestoreLock> {
    atomic::create_private_dir(state)?;
    let path = state.join(FILE);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    let mut text = String::new();
    // SAFETY: the descriptor is open; LOCK_NB makes this return at once.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    let _ = file.read_to_string(&mut text);
    let recorded: Option<u32> = text.trim().parse().ok();
    if rc != 0 {
        return Err(refuse(&path, recorded, "it holds the lock"));
    }
    let me = std::process::id();
    let took_over = match recorded {
        Some(pid) if pid != me && process_alive(pid) => {
            return Err(refuse(&path, Some(pid), "still alive"));
        }
        Some(pid) if pid != me => Some(pid),
        _ => None,
    };
    let write = |file: &mut File| -> std::io::Result<()> {
        file.set_len(0)?;
        file.rewind()?;
        writeln!(file, "{me}")?;
        file.sync_all()
    };
    write(&mut file).map_err(|e| Error::io(&path, e))?;
    Ok(RestoreLock {
        file,
        path,
        took_over,
    })
}

impl Drop for RestoreLock {
    fn drop(&mut self) {
        // An empty lock file means "free"; the flock goes with the descriptor.
        let _ = self.file.set_len(0);
        let _ = self.file.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_refuses_dead_is_taken_over_and_release_frees() {
        let dir = tempfile::tempdir().unwrap();
        let lock = acquire(dir.path()).unwrap();
        assert_eq!(lock.took_over, None);
        let text = std::fs::read_to_string(dir.path().join(FILE)).unwrap();
        assert_eq!(text.trim(), std::process::id().to_string());
        drop(lock);
        assert_eq!(std::fs::read_to_string(dir.path().join(FILE)).unwrap(), "");

        // A live process named in the file (our parent) is respected.
        let parent = std::os::unix::process::parent_id();
        std::fs::write(dir.path().join(FILE), format!("{parent}\n")).unwrap();
        let err = acquire(dir.path()).unwrap_err().to_string();
        assert!(err.contains(&format!("process {parent}")), "{err}");

        // A dead one is taken over.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        std::fs::write(dir.path().join(FILE), format!("{dead}\n")).unwrap();
        let lock = acquire(dir.path()).unwrap();
        assert_eq!(lock.took_over, Some(dead));
    }
}
