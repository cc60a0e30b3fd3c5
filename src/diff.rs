//! Unified diffs of a file against its clean content, and the `kfd-audit diff` command.
//!
//! The diff is what a user needs to *see* a change: a hash only says that a file
//! changed. Headers name where the clean side came from, after a tab so that `patch`
//! still reads the file names: `kfd-audit diff | patch -p1 -R` run from the tree's
//! directory undoes the changes. On a terminal, colors are added and control
//! characters in the file's lines are escaped (a tampered file must not be able to
//! drive the terminal); in a pipe the lines are written byte for byte.

use crate::app::{Cli, Format, TreeArgs};
use crate::content::{CleanContent, CleanCopy};
use crate::error::Error;
use crate::exit::Outcome;
use crate::io::root::Root;
use crate::reference::{self, safe_relative, LoadOptions, TreeReferences};
use crate::scan::{self, FileStatus, ScanOptions};
use crate::term;
use crate::tree::Tree;
use anstyle::{AnsiColor, Style};
use serde::Serialize;
use similar::{ChangeTag, TextDiff};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Lines of context around each change, as `diff -u`.
pub const CONTEXT: usize = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LineTag {
    Context,
    Removed,
    Added,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiffLine {
    pub tag: LineTag,
    /// 1-based line number in the clean file (none for an added line).
    pub old_line: Option<usize>,
    /// 1-based line number in the file as it is now (none for a removed line).
    pub new_line: Option<usize>,
    /// The line without its newline.
    pub text: Vec<u8>,
    /// The line is the last of its file and has no newline.
    pub no_newline: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hunk {
    /// `@@ -21,6 +21,9 @@`
    pub header: String,
    pub lines: Vec<DiffLine>,
}

/// The difference between a file's clean content and the file as it is now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileDiff {
    /// `a/amd/amdkfd/kfd_crat.c`
    pub old_label: String,
    /// `b/amd/amdkfd/kfd_crat.c`, or `/dev/null` for a missing file.
    pub new_label: String,
    /// Where the clean side came from (`clean: dpkg archive /var/cache/...`).
    pub old_note: String,
    /// Where the file is (`in /usr/src/amdgpu-6.8.5`).
    pub new_note: String,
    /// One side is binary: no line diff.
    pub binary: bool,
    pub hunks: Vec<Hunk>,
}

fn looks_binary(bytes: &[u8]) -> bool {
    bytes[..bytes.len().min(8000)].contains(&0)
}

impl FileDiff {
    /// Diffs `clean` against `current` (`None`: the file is missing).
    pub fn compute(
        rel: &Path,
        clean: &CleanCopy,
        tree: &Path,
        current: Option<&[u8]>,
        context: usize,
    ) -> FileDiff {
        let rel_text = term::path(rel);
        let new = current.unwrap_or_default();
        let mut d = FileDiff {
            old_label: format!("a/{rel_text}"),
            new_label: if current.is_some() {
                format!("b/{rel_text}")
            } else {
                "/dev/null".to_string()
            },
            old_note: format!("clean: {}", clean.origin),
            new_note: if current.is_some() {
                format!("in {}", term::path(tree))
            } else {
                format!("missing from {}", term::path(tree))
            },
            binary: false,
            hunks: Vec::new(),
        };
        if looks_binary(&clean.bytes) || looks_binary(new) {
            d.binary = clean.bytes != new;
            return d;
        }
        let diff = TextDiff::configure()
            .algorithm(similar::Algorithm::Myers)
            .timeout(Duration::from_secs(10))
            .diff_lines(clean.bytes.as_slice(), new);
        for group in diff.grouped_ops(context) {
            if group.is_empty() {
                continue;
            }
            let header = similar::udiff::UnifiedHunkHeader::new(&group).to_string();
            let mut lines = Vec::new();
            for op in &group {
                for change in diff.iter_changes(op) {
                    let value: &[u8] = change.value();
                    let text = value.strip_suffix(b"\n").unwrap_or(value).to_vec();
                    lines.push(DiffLine {
                        tag: match change.tag() {
                            ChangeTag::Equal => LineTag::Context,
                            ChangeTag::Delete => LineTag::Removed,
                            ChangeTag::Insert => LineTag::Added,
                        },
                        old_line: change.old_index().map(|i| i + 1),
                        new_line: change.new_index().map(|i| i + 1),
                        text,
                        no_newline: change.missing_newline(),
                    });
                }
            }
            d.hunks.push(Hunk { header, lines });
        }
        d
    }

    pub fn is_empty(&self) -> bool {
        !self.binary && self.hunks.is_empty()
    }

    /// Counts of added and removed lines.
    pub fn stats(&self) -> (usize, usize) {
        let lines = self.hunks.iter().flat_map(|h| &h.lines);
        let added = lines.clone().filter(|l| l.tag == LineTag::Added).count();
        let removed = lines.filter(|l| l.tag == LineTag::Removed).count();
        (added, removed)
    }

    /// The diff as plain unified text, byte for byte.
    pub fn unified(&self) -> Vec<u8> {
        self.render(&Render::plain())
    }

    /// Renders the diff. See [`Render`].
    pub fn render(&self, r: &Render) -> Vec<u8> {
        let mut out = Vec::new();
        let paint = |out: &mut Vec<u8>, style: Style, text: &[u8]| {
            if r.color {
                let _ = write!(out, "{}", style.render());
                out.extend_from_slice(text);
                let _ = write!(out, "{}", style.render_reset());
            } else {
                out.extend_from_slice(text);
            }
        };
        if r.headers {
            if self.binary {
                let line = format!(
                    "Binary files {} and {} differ\t({}; {})",
                    self.old_label, self.new_label, self.old_note, self.new_note
                );
                out.extend_from_slice(r.indent.as_bytes());
                paint(&mut out, HEADER, line.as_bytes());
                out.push(b'\n');
                return out;
            }
            for (sign, label, note) in [
                ("---", &self.old_label, &self.old_note),
                ("+++", &self.new_label, &self.new_note),
            ] {
                out.extend_from_slice(r.indent.as_bytes());
                paint(
                    &mut out,
                    HEADER,
                    format!("{sign} {label}\t({note})").as_bytes(),
                );
                out.push(b'\n');
            }
        }
        for h in &self.hunks {
            out.extend_from_slice(r.indent.as_bytes());
            if r.marks.is_some() {
                out.extend_from_slice(b"   ");
            }
            paint(&mut out, HUNK, h.header.as_bytes());
            out.push(b'\n');
            for l in &h.lines {
                out.extend_from_slice(r.indent.as_bytes());
                if let Some(marks) = r.marks {
                    let marked =
                        l.tag != LineTag::Removed && l.new_line.is_some_and(|n| marks.contains(&n));
                    out.extend_from_slice(if marked { b">> " } else { b"   " });
                }
                let (sign, style) = match l.tag {
                    LineTag::Context => (b' ', Style::new()),
                    LineTag::Removed => (b'-', REMOVED),
                    LineTag::Added => (b'+', ADDED),
                };
                let mut line = vec![sign];
                if r.escape {
                    line.extend_from_slice(escape_line(&l.text).as_bytes());
                } else {
                    line.extend_from_slice(&l.text);
                }
                if l.tag == LineTag::Context {
                    out.extend_from_slice(&line);
                } else {
                    paint(&mut out, style, &line);
                }
                out.push(b'\n');
                if l.no_newline {
                    out.extend_from_slice(r.indent.as_bytes());
                    if r.marks.is_some() {
                        out.extend_from_slice(b"   ");
                    }
                    out.extend_from_slice(b"\\ No newline at end of file\n");
                }
            }
        }
        out
    }
}

/// The unified text, for JSON.
impl Serialize for FileDiff {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&String::from_utf8_lossy(&self.unified()))
    }
}

/// How to render a diff.
#[derive(Debug, Clone, Default)]
pub struct Render<'a> {
    /// Add terminal colors.
    pub color: bool,
    /// Escape control characters in lines (for a terminal); tabs are kept.
    pub escape: bool,
    /// Print the `---`/`+++` header lines.
    pub headers: bool,
    /// Put before every line (to show a diff inside a report).
    pub indent: &'a str,
    /// Mark with `>>` the lines whose new-file line number is in the set (the lines
    /// a rule flagged); `None`: no marker column at all.
    pub marks: Option<&'a BTreeSet<usize>>,
}

impl Render<'_> {
    /// Plain unified diff with headers.
    pub fn plain() -> Render<'static> {
        Render {
            headers: true,
            ..Render::default()
        }
    }
}

const HEADER: Style = Style::new().bold();
const HUNK: Style = AnsiColor::Cyan.on_default();
const REMOVED: Style = AnsiColor::Red.on_default();
const ADDED: Style = AnsiColor::Green.on_default();

/// A line of a file made safe for a terminal: invalid UTF-8 and control characters
/// escaped, tabs kept.
pub fn escape_line(text: &[u8]) -> String {
    use std::os::unix::ffi::OsStrExt;
    text.split(|b| *b == b'\t')
        .map(|piece| term::path(Path::new(std::ffi::OsStr::from_bytes(piece))))
        .collect::<Vec<_>>()
        .join("\t")
}

/// One file to diff: which tree, which file, what the scan said about it.
#[derive(Debug, Clone)]
struct Target {
    rel: PathBuf,
    status: FileStatus,
}

/// Resolves a user's path to (tree index, tree-relative path) pairs: an absolute path
/// inside a tree (as on this host, or as the audited system names it), a path
/// relative to the current directory inside a tree, or a path relative to a tree's
/// root (then every tree that has or expects that file).
fn resolve(
    root: &Root,
    trees: &[Tree],
    refs: &[TreeReferences],
    arg: &Path,
) -> Result<Vec<(usize, PathBuf)>, Error> {
    let not_found = || {
        Error::Refused {
        path: arg.to_path_buf(),
        message: format!(
            "not a file of any amdgpu tree under {}; give a path inside a tree (absolute, or relative to the tree like amd/amdkfd/kfd_crat.c)",
            root.path("/usr/src").display()
        ),
    }
    };
    let known = |i: usize, rel: &Path| {
        refs[i].get(rel).is_some()
            || std::fs::symlink_metadata(trees[i].host_path.join(rel)).is_ok()
    };
    let inside = |abs: &Path| -> Vec<(usize, PathBuf)> {
        trees
            .iter()
            .enumerate()
            .filter_map(|(i, t)| {
                let rel = abs
                    .strip_prefix(&t.host_path)
                    .ok()
                    .or_else(|| abs.strip_prefix(&t.system_path).ok())?;
                safe_relative(rel).filter(|r| known(i, r)).map(|r| (i, r))
            })
            .collect()
    };
    if arg.is_absolute() {
        let found = inside(arg);
        return if found.is_empty() {
            Err(not_found())
        } else {
            Ok(found)
        };
    }
    if let Ok(abs) = std::path::absolute(arg) {
        let found = inside(&abs);
        if !found.is_empty() {
            return Ok(found);
        }
    }
    let Some(rel) = safe_relative(arg) else {
        return Err(not_found());
    };
    let found: Vec<(usize, PathBuf)> = (0..trees.len())
        .filter(|i| known(*i, &rel))
        .map(|i| (i, rel.clone()))
        .collect();
    if found.is_empty() {
        Err(not_found())
    } else {
        Ok(found)
    }
}

/// What happened to one file in `kfd-audit diff`.
#[derive(Debug, Clone, Serialize)]
pub struct DiffEntry {
    pub tree: String,
    pub path: String,
    /// The path as bytes when it is not valid UTF-8 (`path` is then escaped).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path_bytes: Option<Vec<u8>>,
    pub status: FileStatus,
    /// The reference kind of the clean content used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clean_source: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clean_origin: Option<String>,
    /// The unified diff.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<FileDiff>,
    /// Why there is no diff, and what to do.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
struct DiffReport {
    files: Vec<DiffEntry>,
    problems: Vec<String>,
}

/// What to tell a user whose modified file has no clean content anywhere.
pub fn no_clean_copy_hint(tree: &Tree, refs: &TreeReferences) -> String {
    let pkg = refs
        .dpkg_package
        .clone()
        .unwrap_or_else(|| format!("{}-dkms", tree.package()));
    format!(
        "no clean copy to compare with (no baseline copy, no {pkg} archive of the installed version in /var/cache/apt/archives, no backup that matches the reference). \
         To get one: 'apt-get install --download-only --reinstall {pkg}' puts the package archive back in apt's cache; \
         'apt-get install --reinstall {pkg}' puts clean files back; \
         next time, take a baseline while the tree is clean ('kfd-audit baseline create') and keep the .deb"
    )
}

/// Reads the file as it is now, for a diff (`None` when absent or not a regular file).
fn current_bytes(host: &Path) -> Option<Vec<u8>> {
    crate::content::read_limited(host, crate::content::MAX_SOURCE_FILE).ok()
}

/// `kfd-audit diff [PATH...]`: each file against its best clean content.
pub fn cmd(
    cli: &Cli,
    tree_args: &TreeArgs,
    paths: &[PathBuf],
    context: usize,
    out: &mut dyn Write,
) -> anyhow::Result<Outcome> {
    let root = Root::open(&cli.root)?;
    let trees = crate::app::select_trees(&root, tree_args)?;
    let opts = LoadOptions {
        lenient: tree_args.lenient,
    };
    let refs: Vec<TreeReferences> = trees
        .iter()
        .map(|t| reference::load(&root, t, opts))
        .collect::<Result<_, _>>()?;

    // Which files of which tree.
    let mut targets: BTreeMap<usize, Vec<Target>> = BTreeMap::new();
    if paths.is_empty() {
        for (i, t) in trees.iter().enumerate() {
            let s = scan::scan_tree(
                &root,
                t,
                &ScanOptions {
                    refs: opts,
                    max_file_size: tree_args.max_file_size,
                    ..ScanOptions::default()
                },
            )?;
            let list: Vec<Target> = s
                .files
                .iter()
                .filter(|f| matches!(f.status, FileStatus::Modified | FileStatus::Missing))
                .map(|f| Target {
                    rel: f.path.clone(),
                    status: f.status,
                })
                .collect();
            if !list.is_empty() {
                targets.insert(i, list);
            }
        }
    } else {
        for p in paths {
            for (i, rel) in resolve(&root, &trees, &refs, p)? {
                let max = tree_args
                    .max_file_size
                    .unwrap_or(scan::DEFAULT_MAX_FILE_SIZE);
                let status = status_of(&trees[i], &refs[i], &rel, max);
                let list = targets.entry(i).or_default();
                if !list.iter().any(|t| t.rel == rel) {
                    list.push(Target { rel, status });
                }
            }
        }
    }

    let mut entries = Vec::new();
    let mut problems = Vec::new();
    for (i, list) in &targets {
        let tree = &trees[*i];
        let tree_refs = &refs[*i];
        let content = CleanContent::for_tree(&root, tree, tree_refs);
        let want: Vec<PathBuf> = list
            .iter()
            .filter(|t| matches!(t.status, FileStatus::Modified | FileStatus::Missing))
            .map(|t| t.rel.clone())
            .collect();
        let mut diffs: BTreeMap<PathBuf, (Option<CleanCopy>, Option<FileDiff>)> = BTreeMap::new();
        content.get_many(&want, &mut |rel, copy| {
            let diff = copy.as_ref().map(|c| {
                let current = current_bytes(&tree.host_path.join(rel));
                FileDiff::compute(rel, c, &tree.system_path, current.as_deref(), context)
            });
            let copy = copy.map(|mut c| {
                c.bytes = Vec::new();
                c
            });
            diffs.insert(rel.to_path_buf(), (copy, diff));
        });
        problems.extend(content.problems());
        let mut sorted = list.clone();
        sorted.sort_by_cached_key(|t| scan::order_key(&t.rel));
        for t in sorted {
            let mut e = DiffEntry {
                tree: term::path(&tree.system_path),
                path: term::path(&t.rel),
                path_bytes: crate::report::path_bytes(&t.rel),
                status: t.status,
                clean_source: None,
                clean_origin: None,
                diff: None,
                note: None,
            };
            match t.status {
                FileStatus::Modified | FileStatus::Missing => match diffs.remove(&t.rel) {
                    Some((Some(copy), diff)) => {
                        e.clean_source = Some(copy.source.to_string());
                        e.clean_origin = Some(copy.origin);
                        e.diff = diff;
                    }
                    _ => e.note = Some(no_clean_copy_hint(tree, tree_refs)),
                },
                FileStatus::Ok => {}
                FileStatus::Added | FileStatus::Unverified => {
                    e.note = Some(
                        "no clean reference lists this file: nothing to compare it with".into(),
                    )
                }
                FileStatus::Symlink => {
                    e.note = Some("a symbolic link: not followed, not diffed".into())
                }
                FileStatus::Unreadable => e.note = Some("unreadable: not diffed".into()),
            }
            entries.push(e);
        }
    }

    let found = entries
        .iter()
        .any(|e| matches!(e.status, FileStatus::Modified | FileStatus::Missing));
    match cli.format {
        Format::Json => {
            let report = DiffReport {
                files: entries,
                problems,
            };
            out.write_all(serde_json::to_string_pretty(&report)?.as_bytes())?;
            out.write_all(b"\n")?;
        }
        Format::Markdown => {
            for e in &entries {
                writeln!(out, "## `{}` ({})\n", e.path, e.tree)?;
                if let Some(d) = &e.diff {
                    writeln!(out, "```diff")?;
                    out.write_all(&d.unified())?;
                    writeln!(out, "```\n")?;
                }
                if let Some(n) = &e.note {
                    writeln!(out, "> {n}\n")?;
                }
            }
            for p in &problems {
                writeln!(out, "> note: {p}\n")?;
            }
        }
        Format::Text | Format::Prometheus => {
            let color = term::use_color(cli.color);
            let several = targets.len() > 1;
            let mut last_tree = String::new();
            for e in &entries {
                if several && e.tree != last_tree {
                    writeln!(out, "# {}", e.tree)?;
                    last_tree = e.tree.clone();
                }
                if let Some(d) = &e.diff {
                    out.write_all(&d.render(&Render {
                        color,
                        escape: color,
                        ..Render::plain()
                    }))?;
                }
                if let Some(n) = &e.note {
                    // Notes go to stderr so that stdout stays a patch.
                    eprintln!("kfd-audit: {}: {}", e.path, term::escape(n));
                }
            }
            for p in &problems {
                eprintln!("kfd-audit: note: {}", term::escape(p));
            }
        }
    }
    Ok(if found {
        Outcome::Found
    } else {
        Outcome::Clean
    })
}

/// The status of one file, judged like the scan does (without walking the tree).
fn status_of(tree: &Tree, refs: &TreeReferences, rel: &Path, max_size: u64) -> FileStatus {
    let host = tree.host_path.join(rel);
    let meta = std::fs::symlink_metadata(&host);
    match (refs.get(rel), meta) {
        (_, Err(_)) => FileStatus::Missing,
        (_, Ok(m)) if m.file_type().is_symlink() => FileStatus::Symlink,
        (_, Ok(m)) if !m.is_file() => FileStatus::Unreadable,
        (None, Ok(_)) if refs.is_empty() => FileStatus::Unverified,
        (None, Ok(_)) => FileStatus::Added,
        (Some(_), Ok(m)) if m.len() > max_size => FileStatus::Unreadable,
        (Some(exp), Ok(_)) => match crate::content::digest_file(&host, exp.digest.algorithm()) {
            Ok(d) if d == exp.digest => FileStatus::Ok,
            Ok(_) => FileStatus::Modified,
            Err(_) => FileStatus::Unreadable,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::hash::{Algorithm, Digest};
    use crate::reference::ReferenceKind;

    fn copy(bytes: &[u8]) -> CleanCopy {
        CleanCopy {
            bytes: bytes.to_vec(),
            source: ReferenceKind::DebArchive,
            origin: "dpkg archive x.deb".into(),
            verified: Digest::of_bytes(Algorithm::Md5, bytes),
            source_path: PathBuf::from("x.deb"),
        }
    }

    #[test]
    fn marks_flagged_lines_of_the_new_file() {
        let old = b"a\nb\nc\nd\n";
        let new = b"a\nb\nX\nc\nd\n";
        let d = FileDiff::compute(Path::new("f.c"), &copy(old), Path::new("/t"), Some(new), 1);
        assert_eq!(d.stats(), (1, 0));
        let marks: BTreeSet<usize> = [3].into();
        let text = d.render(&Render {
            marks: Some(&marks),
            indent: "  ",
            ..Render::default()
        });
        assert_eq!(
            String::from_utf8(text).unwrap(),
            "     @@ -2,2 +2,3 @@\n      b\n  >> +X\n      c\n"
        );
        assert_eq!(
            String::from_utf8(d.unified()).unwrap(),
            "--- a/f.c\t(clean: dpkg archive x.deb)\n+++ b/f.c\t(in /t)\n@@ -2,2 +2,3 @@\n b\n+X\n c\n"
        );
    }

    #[test]
    fn missing_newline_and_binary() {
        let d = FileDiff::compute(
            Path::new("f"),
            &copy(b"a\n"),
            Path::new("/t"),
            Some(b"a"),
            3,
        );
        assert_eq!(
            String::from_utf8(d.render(&Render::default())).unwrap(),
            "@@ -1 +1 @@\n-a\n+a\n\\ No newline at end of file\n"
        );
        let b = FileDiff::compute(
            Path::new("f"),
            &copy(b"\0x"),
            Path::new("/t"),
            Some(b"\0y"),
            3,
        );
        assert!(b.binary);
        assert!(String::from_utf8(b.unified())
            .unwrap()
            .starts_with("Binary files a/f and b/f differ"));
    }

    #[test]
    fn terminal_escaping_keeps_tabs_and_literal_backslashes() {
        assert_eq!(
            escape_line(b"\tx = \"\\t\";\x1b[2J"),
            "\tx = \"\\t\";\\x1b[2J"
        );
    }
}
