//! The package database seam: which package owns a path, the digests it recorded,
//! the installed version and the cached archive: dpkg, and the RPM database
//! ([`rpm`]) on RHEL, Rocky, Alma, Fedora and SLES.

pub mod dpkg;
pub(crate) mod rpm;
pub(crate) mod rpm_header;

/// The package databases present under the root, by name (`dpkg`, `rpm`), so that a
/// system with both (an odd chroot) or with neither can be said plainly.
pub(crate) fn databases(root: &crate::io::root::Root) -> Vec<&'static str> {
    let mut out = Vec::new();
    if root.path(dpkg::INFO_DIR).is_dir() {
        out.push("dpkg");
    }
    if rpm::locate(root).is_some() {
        out.push("rpm");
    }
    out
}

use std::path::{Component, Path, PathBuf};

/// A problem met while reading references that did not stop the scan
/// (only with `--lenient`): shown in the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub file: PathBuf,
    pub line: usize,
    pub message: String,
}

/// How many malformed lines of one reference file are listed one by one with
/// `--lenient`; the rest are counted in one more entry (a file of garbage must not
/// turn into a report of a million lines).
pub(crate) const MAX_SKIPPED_LISTED: usize = 20;

/// Collects the malformed lines of one reference file, up to [`MAX_SKIPPED_LISTED`].
pub(crate) struct SkipList {
    file: PathBuf,
    listed: Vec<Skipped>,
    more: usize,
    first_more: usize,
}

impl SkipList {
    pub(crate) fn new(file: &Path) -> SkipList {
        SkipList {
            file: file.to_path_buf(),
            listed: Vec::new(),
            more: 0,
            first_more: 0,
        }
    }

    pub(crate) fn push(&mut self, line: usize, message: String) {
        if self.listed.len() < MAX_SKIPPED_LISTED {
            self.listed.push(Skipped {
                file: self.file.clone(),
                line,
                message,
            });
        } else {
            if self.more == 0 {
                self.first_more = line;
            }
            self.more += 1;
        }
    }

    pub(crate) fn finish(self, out: &mut Vec<Skipped>) {
        out.extend(self.listed);
        if self.more > 0 {
            out.push(Skipped {
                file: self.file,
                line: self.first_more,
                message: format!(
                    "and {} more malformed line(s) from here on, not listed one by one",
                    self.more
                ),
            });
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct LoadOptions {
    /// Report and skip malformed reference lines instead of failing.
    pub lenient: bool,
}

/// At most this much of a malformed line is quoted in a message.
const EXCERPT: usize = 120;

/// A piece of a reference file quoted in a message: lossy UTF-8, cut after
/// [`EXCERPT`] characters (a line of garbage can be megabytes long).
pub(crate) fn shown_excerpt(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    match text.char_indices().nth(EXCERPT) {
        Some((i, _)) => format!("{}... ({} bytes)", &text[..i], raw.len()),
        None => text.into_owned(),
    }
}

/// Accepts a path from a reference file only if it is relative and stays inside the
/// directory it is relative to: no `..`, no absolute path, no NUL, not empty.
/// Reference files come from the audited system and may have been tampered with.
pub fn safe_relative(path: &Path) -> Option<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    if path.as_os_str().is_empty() || path.as_os_str().as_bytes().contains(&0) {
        return None;
    }
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_relative_rejects_escapes() {
        assert_eq!(safe_relative(Path::new("a/b")), Some(PathBuf::from("a/b")));
        assert_eq!(safe_relative(Path::new("./a")), Some(PathBuf::from("a")));
        assert_eq!(safe_relative(Path::new("../a")), None);
        assert_eq!(safe_relative(Path::new("a/../../b")), None);
        assert_eq!(safe_relative(Path::new("/etc/passwd")), None);
        assert_eq!(safe_relative(Path::new("")), None);
    }
}
