//! Bounded reads that never follow a link: every file kfd-audit reads from an audited
//! system goes through here, so that a FIFO, a link to /dev/zero or a 10 GB file put in
//! a file's place cannot hang the tool or fill the memory.

use crate::error::{Error, Result};
use crate::io::hash::{self, Digest};
use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Opens a file for reading without following a symlink at its last component and
/// without blocking on a FIFO swapped in since the walk.
pub(crate) fn open_nofollow(path: &Path) -> std::io::Result<File> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    Ok(file)
}

/// Hash helper for callers that verify a file on disk again right before use.
pub(crate) fn digest_file(path: &Path, algorithm: hash::Algorithm) -> Result<Digest> {
    let f = open_nofollow(path).map_err(|e| Error::io(path, e))?;
    let (mut d, _) = hash::digest_reader(f, &[algorithm]).map_err(|e| Error::io(path, e))?;
    Ok(d.remove(0))
}

/// Reads a regular file without following a symlink, refusing files larger than
/// `limit` bytes (source files are small; a huge "backup" is not read into memory).
pub(crate) fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>> {
    use std::io::Read;
    let f = open_nofollow(path).map_err(|e| {
        if e.raw_os_error() == Some(libc::ELOOP) {
            Error::Refused {
                path: path.to_path_buf(),
                message: "is a symbolic link; not followed".into(),
            }
        } else {
            Error::io(path, e)
        }
    })?;
    let len = f.metadata().map_err(|e| Error::io(path, e))?.len();
    if len > limit {
        return Err(Error::Refused {
            path: path.to_path_buf(),
            message: format!("{len} bytes, more than the {limit} a source file may have; not read"),
        });
    }
    let mut bytes = Vec::with_capacity(len as usize);
    f.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, e))?;
    if bytes.len() as u64 > limit {
        // It grew while it was read (or is a /proc-like file with no size).
        return Err(Error::Refused {
            path: path.to_path_buf(),
            message: format!("more than {limit} bytes; not read"),
        });
    }
    Ok(bytes)
}

/// Largest reference or database file kfd-audit reads (dpkg's md5sums and status,
/// a baseline manifest, a mount table): the largest real ones are tens of megabytes.
pub(crate) const MAX_REFERENCE_FILE: u64 = 256 * 1024 * 1024;

/// Reads a reference or database file of the audited system: a regular file, never
/// through a symlink at its last component, at most [`MAX_REFERENCE_FILE`] bytes.
/// `Ok(None)` when it does not exist. A FIFO or `/dev/zero` put in its place cannot
/// hang the scan or fill the memory.
pub(crate) fn read_reference(path: &Path) -> Result<Option<Vec<u8>>> {
    match read_limited(path, MAX_REFERENCE_FILE) {
        Ok(b) => Ok(Some(b)),
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Largest file kfd-audit reads whole into memory (the biggest amdgpu source files,
/// register headers, are a few megabytes).
pub(crate) const MAX_SOURCE_FILE: u64 = 64 * 1024 * 1024;
