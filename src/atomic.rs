//! The one way kfd-audit writes a file: a temporary file in the same directory,
//! written and fsync'd, renamed over the target, then the directory fsync'd. A crash
//! at any instant leaves either the old or the new file, never a torn one.

use crate::error::{Error, Result};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Prefix of temporary files, so that a later run can find and remove leftovers.
pub const TEMP_PREFIX: &str = ".kfd-audit-tmp.";

fn temp_path(target: &Path) -> Result<PathBuf> {
    let dir = target.parent().ok_or_else(|| Error::Refused {
        path: target.to_path_buf(),
        message: "has no parent directory".into(),
    })?;
    let name = target.file_name().unwrap_or_default().to_string_lossy();
    Ok(dir.join(format!("{TEMP_PREFIX}{}.{}", std::process::id(), name)))
}

/// Syncs a directory so a rename or create inside it survives a crash.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

/// Atomically replaces (or creates) `target` with `data`, with the given mode.
/// The target's final component is never followed if it is a symlink: rename
/// replaces the link itself, and callers refuse symlinked targets before this.
pub fn write(target: &Path, data: &[u8], mode: u32) -> Result<()> {
    let tmp = temp_path(target)?;
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)
            .map_err(|e| Error::io(&tmp, e))?;
        f.write_all(data).map_err(|e| Error::io(&tmp, e))?;
        f.sync_all().map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, target).map_err(|e| Error::io(target, e))?;
        if let Some(dir) = target.parent() {
            sync_dir(dir)?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Creates a directory and its parents with mode 0700 where they do not exist,
/// for kfd-audit's own state (baselines, quarantine, journal).
pub fn create_private_dir(dir: &Path) -> Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| Error::io(dir, e))
}

use std::os::unix::fs::DirBuilderExt;

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

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
}
