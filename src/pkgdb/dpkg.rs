//! dpkg's database under the root: `/var/lib/dpkg/info/<pkg>.md5sums`, lines of
//! `<32 hex>  <path without leading slash>`, written by dh_md5sums at build time.

use super::{safe_relative, LoadOptions, Skipped};
use crate::error::{Error, Result};
use crate::io::hash::{Algorithm, Digest};
use crate::io::root::Root;
use crate::tree::Tree;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

pub(crate) const INFO_DIR: &str = "/var/lib/dpkg/info";

/// Packages that usually own an amdgpu DKMS tree, tried before reading every md5sums.
const LIKELY_OWNERS: &[&str] = &["amdgpu-dkms"];

/// One parsed md5sums line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Md5Line {
    pub digest: Digest,
    /// Root-relative path, as dpkg writes it.
    pub path: PathBuf,
}

/// Parses one md5sums line. dpkg writes `hash  path`; `hash *path` (binary mode of
/// md5sum) is accepted too. The path must be relative and must not climb out.
pub fn parse_line(line: &[u8]) -> std::result::Result<Md5Line, String> {
    if line.len() < 34 {
        return Err("too short for '<md5>  <path>'".into());
    }
    let hex = std::str::from_utf8(&line[..32]).map_err(|_| "hash is not hex".to_string())?;
    let digest = Digest::from_hex(Algorithm::Md5, hex)
        .ok_or_else(|| "hash is not 32 hex digits".to_string())?;
    let sep = &line[32..34];
    if sep != b"  " && sep != b" *" {
        return Err("expected two spaces between hash and path".into());
    }
    let raw = &line[34..];
    let path = safe_relative(Path::new(OsStr::from_bytes(raw)))
        .ok_or_else(|| format!("unsafe or empty path '{}'", super::shown_excerpt(raw)))?;
    Ok(Md5Line { digest, path })
}

fn md5sums_path(root: &Root, package: &str) -> PathBuf {
    root.path(INFO_DIR).join(format!("{package}.md5sums"))
}

/// The package whose md5sums list files of this tree, if any.
pub(crate) fn find_owner(root: &Root, tree: &Tree) -> Result<Option<String>> {
    let needle = {
        let mut n = b"  ".to_vec();
        n.extend_from_slice(tree.dpkg_prefix().as_os_str().as_bytes());
        n.push(b'/');
        n
    };
    let lists = |bytes: &[u8]| bytes.windows(needle.len()).any(|w| w == needle.as_slice());
    for pkg in LIKELY_OWNERS {
        if let Ok(Some(bytes)) = crate::io::read::read_reference(&md5sums_path(root, pkg)) {
            if lists(&bytes) {
                return Ok(Some(pkg.to_string()));
            }
        }
    }
    let dir = root.path(INFO_DIR);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(&dir, e)),
    };
    let mut candidates: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension() == Some(OsStr::new("md5sums")))
        .collect();
    candidates.sort();
    for path in candidates {
        if let Ok(Some(bytes)) = crate::io::read::read_reference(&path) {
            if lists(&bytes) {
                let name = path.file_stem().unwrap_or_default().to_string_lossy();
                // Multi-arch packages are named `pkg:arch.md5sums`.
                return Ok(Some(name.split(':').next().unwrap_or(&name).to_string()));
            }
        }
    }
    Ok(None)
}

/// Reads a package's whole md5sums strictly (or leniently): every line parsed.
pub(crate) fn load_package(
    root: &Root,
    package: &str,
    opts: LoadOptions,
    skipped: &mut Vec<Skipped>,
) -> Result<Vec<Md5Line>> {
    let mut out = Vec::new();
    read_md5sums(root, package, opts, skipped, &mut |l| out.push(l))?;
    Ok(out)
}

/// Parses a package's md5sums line by line, handing each line to `each` as soon as
/// it is parsed, so that a caller keeping a part of the list never holds the whole
/// of it (a package can list a hundred thousand files).
fn read_md5sums(
    root: &Root,
    package: &str,
    opts: LoadOptions,
    skipped: &mut Vec<Skipped>,
    each: &mut dyn FnMut(Md5Line),
) -> Result<()> {
    let path = md5sums_path(root, package);
    let bytes = crate::io::read::read_reference(&path)?
        .ok_or_else(|| Error::io(&path, std::io::Error::from(std::io::ErrorKind::NotFound)))?;
    let mut skips = super::SkipList::new(&path);
    for (i, line) in bytes.split(|b| *b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        match parse_line(line) {
            Ok(l) => each(l),
            Err(message) if opts.lenient => skips.push(i + 1, message),
            Err(message) => {
                return Err(Error::malformed(
                    &path,
                    i + 1,
                    format!(
                    "{message}; fix or reinstall the package, or pass --lenient to skip bad lines"
                ),
                ))
            }
        }
    }
    skips.finish(skipped);
    Ok(())
}

/// The owner's md5sums entries that lie inside the tree, keyed by tree-relative path.
/// Each line's root-relative path is dropped as soon as its tree-relative one is
/// made: only the tree's part of the list is ever held.
pub(crate) fn load_tree_md5sums(
    root: &Root,
    package: &str,
    tree: &Tree,
    opts: LoadOptions,
    skipped: &mut Vec<Skipped>,
) -> Result<Vec<(PathBuf, Digest)>> {
    let prefix = tree.dpkg_prefix();
    let mut out = Vec::new();
    read_md5sums(root, package, opts, skipped, &mut |l| {
        if let Ok(rel) = l.path.strip_prefix(&prefix) {
            if !rel.as_os_str().is_empty() {
                out.push((rel.to_path_buf(), l.digest));
            }
        }
    })?;
    out.shrink_to_fit();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects_lines() {
        let l = parse_line(b"900150983cd24fb0d6963f7d28e17f72  usr/src/a/b.c").unwrap();
        assert_eq!(l.path, PathBuf::from("usr/src/a/b.c"));
        assert!(parse_line(b"900150983cd24fb0d6963f7d28e17f72 usr/src/a").is_err());
        assert!(parse_line(b"zz0150983cd24fb0d6963f7d28e17f72  usr/src/a").is_err());
        assert!(parse_line(b"900150983cd24fb0d6963f7d28e17f72  ../etc/shadow").is_err());
        assert!(parse_line(b"900150983cd24fb0d6963f7d28e17f72  /etc/shadow").is_err());
        assert!(parse_line(b"short").is_err());
    }
}
