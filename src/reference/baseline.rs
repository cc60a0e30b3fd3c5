//! kfd-audit's own baseline: a SHA-256 manifest of a tree taken while it is known to
//! be clean, stored under `<root>/var/lib/kfd-audit/baseline/<tree>/`.
//!
//! `manifest.sha256` uses `sha256sum` format with root-relative paths, so a user can
//! check it without kfd-audit: `cd / && sha256sum -c /var/lib/kfd-audit/baseline/<tree>/manifest.sha256`.
//! Names containing a backslash or newline are escaped the way coreutils does
//! (line starts with `\`, then `\\` and `\n` in the name).

use crate::error::{Error, Result};
use crate::io::hash::{Algorithm, Digest};
use crate::io::root::Root;
use crate::reference::{safe_relative, LoadOptions, Skipped};
use crate::tree::Tree;
use serde::{Deserialize, Serialize};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// kfd-audit's state directory as the audited system names it: the baseline, the
/// restore journal, the quarantine and the lock. Here, low, because the baseline
/// reader is its lowest user.
pub(crate) const STATE_DIR: &str = "/var/lib/kfd-audit";

/// Where a tree's baseline lives on this host.
pub(crate) fn dir(root: &Root, tree: &Tree) -> PathBuf {
    root.path(STATE_DIR).join("baseline").join(tree.dir_name())
}

pub(crate) fn manifest_path(root: &Root, tree: &Tree) -> PathBuf {
    dir(root, tree).join("manifest.sha256")
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Meta {
    pub tree: String,
    pub package: String,
    pub version: String,
    pub created: String,
    pub files: usize,
    pub tool_version: String,
    /// What the tree was checked against before it was trusted.
    pub verified_against: Vec<String>,
}

/// Formats one manifest line, escaping as `sha256sum` does.
pub fn format_line(digest: &Digest, path: &Path) -> Vec<u8> {
    let name = path.as_os_str().as_bytes();
    let needs_escape = name.iter().any(|b| *b == b'\\' || *b == b'\n');
    let mut line = Vec::with_capacity(name.len() + 70);
    if needs_escape {
        line.push(b'\\');
    }
    line.extend_from_slice(digest.to_hex().as_bytes());
    line.extend_from_slice(b"  ");
    for b in name {
        match (needs_escape, b) {
            (true, b'\\') => line.extend_from_slice(b"\\\\"),
            (true, b'\n') => line.extend_from_slice(b"\\n"),
            _ => line.push(*b),
        }
    }
    line.push(b'\n');
    line
}

/// Parses one manifest line (without its newline).
pub fn parse_line(line: &[u8]) -> std::result::Result<(Digest, PathBuf), String> {
    let (escaped, line) = match line.strip_prefix(b"\\") {
        Some(rest) => (true, rest),
        None => (false, line),
    };
    if line.len() < 66 {
        return Err("too short for '<sha256>  <path>'".into());
    }
    let hex = std::str::from_utf8(&line[..64]).map_err(|_| "hash is not hex".to_string())?;
    let digest = Digest::from_hex(Algorithm::Sha256, hex)
        .ok_or_else(|| "hash is not 64 hex digits".to_string())?;
    if &line[64..66] != b"  " && &line[64..66] != b" *" {
        return Err("expected two spaces between hash and path".into());
    }
    let raw = &line[66..];
    let name = if escaped {
        let mut out = Vec::with_capacity(raw.len());
        let mut it = raw.iter();
        while let Some(b) = it.next() {
            if *b == b'\\' {
                match it.next() {
                    Some(b'\\') => out.push(b'\\'),
                    Some(b'n') => out.push(b'\n'),
                    _ => return Err("bad escape in path".into()),
                }
            } else {
                out.push(*b);
            }
        }
        out
    } else {
        raw.to_vec()
    };
    let path = safe_relative(Path::new(OsStr::from_bytes(&name))).ok_or_else(|| {
        format!(
            "unsafe or empty path '{}'",
            crate::reference::shown_excerpt(&name)
        )
    })?;
    Ok((digest, path))
}

/// Reads the tree's baseline manifest, if there is one, as tree-relative entries.
pub(crate) fn load_manifest(
    root: &Root,
    tree: &Tree,
    opts: LoadOptions,
    skipped: &mut Vec<Skipped>,
) -> Result<Option<Vec<(PathBuf, Digest)>>> {
    let path = manifest_path(root, tree);
    let Some(bytes) = crate::io::read::read_reference(&path)? else {
        return Ok(None);
    };
    let prefix = tree.dpkg_prefix();
    let mut out = Vec::new();
    let mut skips = crate::reference::SkipList::new(&path);
    for (i, line) in bytes.split(|b| *b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        match parse_line(line) {
            Ok((digest, p)) => {
                if let Ok(rel) = p.strip_prefix(&prefix) {
                    out.push((rel.to_path_buf(), digest));
                }
            }
            Err(message) if opts.lenient => skips.push(i + 1, message),
            Err(message) => {
                return Err(Error::malformed(
                    &path,
                    i + 1,
                    format!("{message}; recreate it with 'kfd-audit baseline create --force' on a clean tree, or pass --lenient"),
                ))
            }
        }
    }
    skips.finish(skipped);
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_lines_round_trip_with_escapes() {
        let d = Digest::of_bytes(Algorithm::Sha256, b"x");
        for name in [
            "usr/src/a/b.c",
            "usr/src/a/back\\slash",
            "usr/src/a/new\nline",
        ] {
            let line = format_line(&d, Path::new(name));
            let (d2, p) = parse_line(&line[..line.len() - 1]).unwrap();
            assert_eq!(d2, d);
            assert_eq!(p, PathBuf::from(name));
        }
        assert!(parse_line(b"abc").is_err());
    }
}
