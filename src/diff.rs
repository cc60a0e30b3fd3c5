//! Unified diffs of a file against its clean content: the engine only (the `kfd-audit
//! diff` command is `app::diff`).
//!
//! The diff is what a user needs to *see* a change: a hash only says that a file
//! changed. Headers name where the clean side came from, after a tab so that `patch`
//! still reads the file names: `kfd-audit diff | patch -p1 -R` run from the tree's
//! directory undoes the changes. On a terminal, colors are added and control
//! characters in the file's lines are escaped (a tampered file must not be able to
//! drive the terminal); in a pipe the lines are written byte for byte.

use crate::term;
use anstyle::{AnsiColor, Style};
use serde::Serialize;
use similar::{ChangeTag, TextDiff};
use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

/// Lines of context around each change, as `diff -u`.
pub(crate) const CONTEXT: usize = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LineTag {
    Context,
    Removed,
    Added,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DiffLine {
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
pub(crate) struct Hunk {
    /// `@@ -21,6 +21,9 @@`
    pub header: String,
    pub lines: Vec<DiffLine>,
}

/// The difference between a file's clean content and the file as it is now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileDiff {
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
    pub(crate) fn compute(
        rel: &Path,
        clean: &[u8],
        clean_origin: &str,
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
            old_note: format!("clean: {clean_origin}"),
            new_note: if current.is_some() {
                format!("in {}", term::path(tree))
            } else {
                format!("missing from {}", term::path(tree))
            },
            binary: false,
            hunks: Vec::new(),
        };
        if looks_binary(clean) || looks_binary(new) {
            d.binary = clean != new;
            return d;
        }
        let diff = TextDiff::configure()
            .algorithm(similar::Algorithm::Myers)
            .timeout(Duration::from_secs(10))
            .diff_lines(clean, new);
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

    /// The diff as plain unified text, byte for byte.
    pub(crate) fn unified(&self) -> Vec<u8> {
        self.render(&Render::plain())
    }

    /// Renders the diff. See [`Render`].
    pub(crate) fn render(&self, r: &Render) -> Vec<u8> {
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
pub(crate) struct Render<'a> {
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
    pub(crate) fn plain() -> Render<'static> {
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
pub(crate) fn escape_line(text: &[u8]) -> String {
    use std::os::unix::ffi::OsStrExt;
    text.split(|b| *b == b'\t')
        .map(|piece| term::path(Path::new(std::ffi::OsStr::from_bytes(piece))))
        .collect::<Vec<_>>()
        .join("\t")
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn marks_flagged_lines_of_the_new_file() {
        let old = b"a\nb\nc\nd\n";
        let new = b"a\nb\nX\nc\nd\n";
        let d = FileDiff::compute(
            Path::new("f.c"),
            old,
            "dpkg archive x.deb",
            Path::new("/t"),
            Some(new),
            1,
        );
        let added = d.hunks.iter().flat_map(|h| &h.lines);
        assert_eq!(added.filter(|l| l.tag == LineTag::Added).count(), 1);
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
            b"a\n",
            "dpkg archive x.deb",
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
            b"\0x",
            "dpkg archive x.deb",
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
