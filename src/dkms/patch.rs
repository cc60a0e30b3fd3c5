//! Unified diffs as DKMS applies them (`patch -p1` from the tree's root): parsing,
//! and applying to a file's current text so that the rule engine can judge a
//! build-time patch exactly as it judges an in-place change.

use std::fmt;

/// One line of a hunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HunkLine {
    Context(String),
    Added(String),
    Removed(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hunk {
    /// 1-based start line in the old file.
    pub old_start: usize,
    /// 1-based start line in the new file.
    pub new_start: usize,
    pub lines: Vec<HunkLine>,
    /// 1-based line of the `@@` header in the patch text.
    pub header_line: usize,
}

/// The changes a diff makes to one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilePatch {
    /// Target path with one leading component stripped (`-p1`).
    pub path: String,
    pub hunks: Vec<Hunk>,
}

impl FilePatch {
    /// Added lines with their 1-based line numbers in the new file.
    pub fn added_lines(&self) -> Vec<(usize, &str)> {
        let mut out = Vec::new();
        for h in &self.hunks {
            let mut new_line = h.new_start;
            for l in &h.lines {
                match l {
                    HunkLine::Context(_) => new_line += 1,
                    HunkLine::Added(t) => {
                        out.push((new_line, t.as_str()));
                        new_line += 1;
                    }
                    HunkLine::Removed(_) => {}
                }
            }
        }
        out
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyError {
    pub hunk: usize,
    pub reason: String,
}

impl fmt::Display for ApplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "hunk {} does not apply: {}", self.hunk + 1, self.reason)
    }
}

/// Strips `n` leading components, as `patch -pN` does.
fn strip_components(path: &str, n: usize) -> String {
    let path = path.split('\t').next().unwrap_or(path).trim();
    let mut rest = path;
    for _ in 0..n {
        match rest.find('/') {
            Some(i) => rest = &rest[i + 1..],
            None => break,
        }
    }
    rest.to_string()
}

fn parse_range(s: &str) -> Option<usize> {
    let start = s.split(',').next()?;
    start.parse().ok()
}

/// Parses every file section of a unified diff; text that is not part of a diff
/// (a mail header, a shell script around a here-document) is skipped.
pub fn parse(text: &str) -> Vec<FilePatch> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out: Vec<FilePatch> = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let l = lines[i];
        if l.starts_with("--- ") && i + 1 < lines.len() && lines[i + 1].starts_with("+++ ") {
            let target = &lines[i + 1][4..];
            let path = if target.trim() == "/dev/null" {
                strip_components(&l[4..], 1)
            } else {
                strip_components(target, 1)
            };
            out.push(FilePatch {
                path,
                hunks: Vec::new(),
            });
            i += 2;
            continue;
        }
        if let (Some(rest), Some(fp)) = (l.strip_prefix("@@ -"), out.last_mut()) {
            let mut parts = rest.split_whitespace();
            let old = parts.next().and_then(parse_range);
            let new = parts
                .next()
                .and_then(|p| p.strip_prefix('+'))
                .and_then(parse_range);
            let (Some(old_start), Some(new_start)) = (old, new) else {
                i += 1;
                continue;
            };
            let mut hunk = Hunk {
                old_start,
                new_start,
                lines: Vec::new(),
                header_line: i + 1,
            };
            i += 1;
            while i < lines.len() {
                let h = lines[i];
                if h.starts_with("@@ ")
                    || (h.starts_with("--- ")
                        && lines.get(i + 1).is_some_and(|n| n.starts_with("+++ ")))
                {
                    break;
                }
                match h.as_bytes().first() {
                    Some(b'+') => hunk.lines.push(HunkLine::Added(h[1..].to_string())),
                    Some(b'-') => hunk.lines.push(HunkLine::Removed(h[1..].to_string())),
                    Some(b' ') => hunk.lines.push(HunkLine::Context(h[1..].to_string())),
                    // An empty line inside a hunk is an empty context line (some
                    // editors strip the trailing space).
                    None => hunk.lines.push(HunkLine::Context(String::new())),
                    Some(b'\\') => {}
                    _ => break,
                }
                i += 1;
            }
            fp.hunks.push(hunk);
            continue;
        }
        i += 1;
    }
    out.retain(|f| !f.hunks.is_empty());
    out
}

/// How many line comparisons placing the hunks of one patch may take. Placing a
/// hunk searches outward from its stated line, so a patch from a hostile tree with
/// many hunks that each match far from where they say could take hours; real
/// patches need a tiny fraction of this.
pub(crate) const MAX_COMPARISONS: usize = 1 << 25;

/// Applies a file's hunks to its current text. Each hunk is looked for at its
/// stated line first, then at the nearest offset where its old lines match exactly
/// (as `patch` does without fuzz).
pub fn apply(original: &str, fp: &FilePatch) -> Result<String, ApplyError> {
    let src: Vec<&str> = original.lines().collect();
    let mut out: Vec<String> = Vec::with_capacity(src.len() + 16);
    let mut pos = 0usize; // next unconsumed source line (0-based)
    let budget = std::cell::Cell::new(MAX_COMPARISONS);
    for (n, h) in fp.hunks.iter().enumerate() {
        let old: Vec<&str> = h
            .lines
            .iter()
            .filter_map(|l| match l {
                HunkLine::Context(t) | HunkLine::Removed(t) => Some(t.as_str()),
                HunkLine::Added(_) => None,
            })
            .collect();
        let wanted = h.old_start.saturating_sub(1).max(pos);
        let matches_at = |at: usize| {
            if at + old.len() > src.len() {
                return false;
            }
            budget.set(budget.get().saturating_sub(old.len().max(1)));
            src[at..at + old.len()]
                .iter()
                .zip(&old)
                .all(|(a, b)| a == b)
        };
        let found = (0..=src.len()).find_map(|delta| {
            if budget.get() == 0 {
                return None;
            }
            let fwd = wanted + delta;
            if fwd <= src.len() && matches_at(fwd) {
                return Some(fwd);
            }
            let back = wanted.checked_sub(delta)?;
            (back >= pos && matches_at(back)).then_some(back)
        });
        if budget.get() == 0 {
            return Err(ApplyError {
                hunk: n,
                reason: format!(
                    "placing the hunks takes more than {MAX_COMPARISONS} line comparisons; not applied"
                ),
            });
        }
        let Some(at) = found else {
            return Err(ApplyError {
                hunk: n,
                reason: format!("its context (old line {}) is not in the file", h.old_start),
            });
        };
        out.extend(src[pos..at].iter().map(|s| s.to_string()));
        for l in &h.lines {
            match l {
                HunkLine::Context(t) | HunkLine::Added(t) => out.push(t.clone()),
                HunkLine::Removed(_) => {}
            }
        }
        pos = at + old.len();
    }
    out.extend(src[pos..].iter().map(|s| s.to_string()));
    let mut text = out.join("\n");
    // A patch that removes every line leaves an empty file, not one empty line.
    if !out.is_empty() && (original.ends_with('\n') || original.is_empty()) {
        text.push('\n');
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIFF: &str = "\
Some mail header
--- a/amd/amdkfd/kfd_crat.c
+++ b/amd/amdkfd/kfd_crat.c
@@ -2,3 +2,4 @@
 two
-three
+THREE
+three-and-a-half
 four
";

    #[test]
    fn a_patch_too_costly_to_place_is_refused() {
        // Distinct lines; each hunk names the end of the file but matches one line
        // further on from the previous one, so each search walks the whole file.
        let n = 20_000;
        let original: String = (0..n).map(|i| format!("l{i}\n")).collect();
        let hunks = (0..n)
            .map(|i| Hunk {
                old_start: n,
                new_start: n,
                lines: vec![HunkLine::Context(format!("l{i}"))],
                header_line: 1,
            })
            .collect();
        let fp = FilePatch {
            path: "f".into(),
            hunks,
        };
        let err = apply(&original, &fp).unwrap_err();
        assert!(err.reason.contains("line comparisons"), "{err}");
    }

    #[test]
    fn parses_and_applies_with_offset() {
        let fps = parse(DIFF);
        assert_eq!(fps.len(), 1);
        assert_eq!(fps[0].path, "amd/amdkfd/kfd_crat.c");
        assert_eq!(
            fps[0].added_lines(),
            vec![(3, "THREE"), (4, "three-and-a-half")]
        );
        let out = apply("one\ntwo\nthree\nfour\nfive\n", &fps[0]).unwrap();
        assert_eq!(out, "one\ntwo\nTHREE\nthree-and-a-half\nfour\nfive\n");
        // Two lines inserted above: the hunk is found at an offset.
        let out = apply("x\ny\none\ntwo\nthree\nfour\n", &fps[0]).unwrap();
        assert_eq!(out, "x\ny\none\ntwo\nTHREE\nthree-and-a-half\nfour\n");
        assert!(apply("nothing here\n", &fps[0]).is_err());
    }

    #[test]
    fn garbage_does_not_panic() {
        for s in [
            "@@ -1 +1 @@\n+x",
            "--- a\n+++ b\n@@ -x +y @@\n",
            "--- a\n+++ b\n@@ -0,0 +1 @@\n+x\n",
        ] {
            for fp in parse(s) {
                let _ = apply("", &fp);
                let _ = fp.added_lines();
            }
        }
    }
}
