//! kfd-audit's own baseline: a SHA-256 manifest of a tree taken while it is known to
//! be clean, stored under `<root>/var/lib/kfd-audit/baseline/<tree>/`.
//!
//! `manifest.sha256` uses `sha256sum` format with root-relative paths, so a user can
//! check it without kfd-audit: `cd / && sha256sum -c /var/lib/kfd-audit/baseline/<tree>/manifest.sha256`.
//! Names containing a backslash or newline are escaped the way coreutils does
//! (line starts with `\`, then `\\` and `\n` in the name).

use crate::error::{Error, Result};
use crate::io::atomic;
use crate::io::hash::{self, Algorithm, Digest};
use crate::io::root::Root;
use crate::reference::{safe_relative, LoadOptions, Skipped};
use crate::scan::{self, FileStatus, ScanOptions};
use crate::tree::Tree;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

pub const STATE_DIR: &str = "/var/lib/kfd-audit";

/// Where a tree's baseline lives on this host.
pub fn dir(root: &Root, tree: &Tree) -> PathBuf {
    root.path(STATE_DIR).join("baseline").join(tree.dir_name())
}

pub fn manifest_path(root: &Root, tree: &Tree) -> PathBuf {
    dir(root, tree).join("manifest.sha256")
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Meta {
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
pub fn load_manifest(
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

#[derive(Debug, Clone, Copy, Default)]
pub struct CreateOptions {
    /// Trust the tree even though references say it is not clean.
    pub force: bool,
    /// Store clean copies of every file, not only the watched ones.
    pub all_copies: bool,
}

#[derive(Debug, Clone)]
pub struct Created {
    pub manifest: PathBuf,
    pub files: usize,
    pub skipped_symlinks: usize,
    /// Compressed clean copies stored (see [`crate::content::baseline_copies`]).
    pub copies: usize,
}

/// Records a baseline of the tree. Refuses when the tree's existing references say
/// it is not clean (a baseline of a patched tree would bless the patch), unless forced.
pub fn create(root: &Root, tree: &Tree, opts: CreateOptions) -> Result<Created> {
    let check = scan::scan_tree(root, tree, &ScanOptions::default())?;
    let dirty: Vec<String> = check
        .files
        .iter()
        .filter(|f| matches!(f.status, FileStatus::Modified | FileStatus::Missing))
        .map(|f| f.path.display().to_string())
        .collect();
    if !dirty.is_empty() && !opts.force {
        let shown: Vec<_> = dirty.iter().take(3).cloned().collect();
        return Err(Error::Refused {
            path: tree.host_path.clone(),
            message: format!(
                "not clean ({} file(s) differ from {}: {}{}); restore it first, or pass --force to trust it as it is",
                dirty.len(),
                check.refs.kinds.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(", "),
                shown.join(", "),
                if dirty.len() > 3 { ", ..." } else { "" }
            ),
        });
    }
    let files: Vec<&PathBuf> = check
        .files
        .iter()
        .filter(|f| f.status != FileStatus::Missing && f.status != FileStatus::Symlink)
        .map(|f| &f.path)
        .collect();
    let skipped_symlinks = check.count(FileStatus::Symlink);
    let prefix = tree.dpkg_prefix();
    let mut lines: Vec<(PathBuf, Digest, Vec<u8>)> = files
        .par_iter()
        .map(|rel| {
            let host = tree.host_path.join(rel);
            let f = crate::io::read::open_nofollow(&host).map_err(|e| Error::io(&host, e))?;
            let (mut d, _) =
                hash::digest_reader(f, &[Algorithm::Sha256]).map_err(|e| Error::io(&host, e))?;
            let sys = prefix.join(rel);
            let digest = d.remove(0);
            let line = format_line(&digest, &sys);
            Ok(((*rel).clone(), digest, line))
        })
        .collect::<Result<_>>()?;
    lines.sort_by(|a, b| a.0.cmp(&b.0));
    let digests: Vec<(PathBuf, Digest)> = lines
        .iter()
        .map(|(rel, d, _)| (rel.clone(), d.clone()))
        .collect();
    let manifest: Vec<u8> = lines.into_iter().flat_map(|(_, _, l)| l).collect();

    let dir = dir(root, tree);
    atomic::create_private_dir(&dir)?;
    // Copies first: a copy is served only where the manifest vouches for it.
    let copies = crate::content::baseline_copies::store(root, tree, &digests, opts.all_copies)?;
    let path = manifest_path(root, tree);
    atomic::write(&path, &manifest, 0o644)?;
    let meta = Meta {
        tree: tree.system_path.display().to_string(),
        package: tree.package(),
        version: tree.version(),
        created: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        files: files.len(),
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        verified_against: check.refs.kinds.iter().map(|k| k.to_string()).collect(),
    };
    let json = serde_json::to_vec_pretty(&meta).expect("baseline metadata serializes");
    atomic::write(&dir.join("meta.json"), &json, 0o644)?;
    Ok(Created {
        manifest: path,
        files: files.len(),
        skipped_symlinks,
        copies,
    })
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
