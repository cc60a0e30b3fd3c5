//! Running rules on one file, whole or against its clean copy.
//!
//! Whole-file mode (only a hash says the file changed, or it is new): every rule but
//! the diff-only ones runs on every line, so rules rely on their context guards.
//!
//! Diff-aware mode (verified clean bytes exist): both versions are parsed and every
//! rule is evaluated on both, each in its own file's C context. A finding of an
//! `added` rule is reported only if the changed file has more of it (same rule, same
//! innermost condition, same normalised statement) than the clean one — so code the
//! change did not touch never fires, while a statement whose guard was removed, or
//! that was moved under a device-id test, does. A `removed` rule reports what the
//! clean file had and the changed one lost (a deleted `return -EINVAL`, a check put
//! under `#if 0`), at the line where it used to be. Of equal candidates, those on the
//! lines the line diff marks as changed are preferred.

use super::cfile::{CFile, CondKind, Kind, Stmt, Views};
use super::{checks, Check, On, Removal, Rule, Scope};
use crate::finding::{Finding, Severity};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::OnceLock;

/// A file to match: its views at once, its C structure parsed only when a rule's
/// prefilter says it may match (most files never need it).
pub(crate) struct Parsed {
    pub views: Views,
    pub is_c: bool,
    line_starts: Vec<usize>,
    parsed: OnceLock<CFile>,
    defines: OnceLock<HashMap<String, String>>,
}

pub(crate) fn is_c_source(rel: &Path) -> bool {
    matches!(
        rel.extension().and_then(|e| e.to_str()),
        Some("c" | "h" | "cpp" | "cc")
    ) || rel
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.ends_with(".c.orig") || n.ends_with(".h.orig"))
}

impl Parsed {
    pub(crate) fn new(rel: &Path, text: &str) -> Parsed {
        let is_c = is_c_source(rel);
        let views = if is_c {
            Views::of_c(text)
        } else {
            Views::of_plain(text)
        };
        let mut line_starts = vec![0];
        for (i, b) in text.bytes().enumerate() {
            if b == b'\n' {
                line_starts.push(i + 1);
            }
        }
        Parsed {
            views,
            is_c,
            line_starts,
            parsed: OnceLock::new(),
            defines: OnceLock::new(),
        }
    }

    /// Object-like macros the file defines (`#define NAVI10_GFX 100300`), so a check
    /// sees through a value hidden behind a local name.
    pub(crate) fn defines(&self) -> &HashMap<String, String> {
        self.defines.get_or_init(|| {
            let mut m = HashMap::new();
            if !self.views.code.contains("define") {
                return m;
            }
            for s in &self.file().stmts {
                if s.kind != Kind::Preproc {
                    continue;
                }
                let rest = s.text.trim_start_matches('#').trim_start();
                let Some(rest) = rest.strip_prefix("define ") else {
                    continue;
                };
                let mut it = rest.splitn(2, ' ');
                let (Some(name), Some(value)) = (it.next(), it.next()) else {
                    continue;
                };
                if !name.contains('(') {
                    m.insert(name.to_string(), value.trim().to_string());
                }
            }
            m
        })
    }

    /// Statements and their contexts.
    pub(crate) fn file(&self) -> &CFile {
        self.parsed.get_or_init(|| {
            if self.is_c {
                CFile::from_views(self.views.clone())
            } else {
                CFile::plain_from_views(self.views.clone())
            }
        })
    }

    fn line_of(&self, offset: usize) -> usize {
        self.line_starts.partition_point(|s| *s <= offset)
    }

    fn line_count(&self) -> usize {
        self.line_starts.len()
    }

    /// The text of a 1-based line in a view.
    fn line_text<'a>(&self, view: &'a str, line: usize) -> &'a str {
        let Some(&s) = self.line_starts.get(line.wrapping_sub(1)) else {
            return "";
        };
        let e = self
            .line_starts
            .get(line)
            .map(|e| e - 1)
            .unwrap_or(view.len());
        view.get(s..e.max(s)).unwrap_or("")
    }

    pub(crate) fn raw_line(&self, line: usize) -> &str {
        self.line_text(&self.views.raw, line)
    }
}

/// One place a rule matched, before the diff decides whether to report it.
#[derive(Debug, Clone)]
pub(crate) struct Hit {
    pub line: usize,
    /// Index of the statement it came from (code rules).
    pub stmt: Option<usize>,
    pub key: String,
    pub detail: Option<String>,
    /// Lower than the rule's: a value this rule set does not know (a chip newer than
    /// its table) is worth a note, not an alarm.
    pub severity: Option<Severity>,
}

fn squash(s: &str) -> String {
    s.chars().filter(|c| !c.is_whitespace()).collect()
}

/// Whether one condition establishes a guard: every top-level alternative of it
/// matches one of the guards (so `1 || guard` does not), not under a `!`.
fn cond_guards(text: &str, guards: &[regex::Regex]) -> bool {
    super::cfile::disjuncts(super::cfile::strip_parens(text))
        .iter()
        .all(|d| {
            guards.iter().any(|re| {
                re.find_iter(d).any(|m| {
                    let before = d[..m.start()].trim_end_matches(['(', ' ']);
                    !before.ends_with('!')
                })
            })
        })
}

fn guarded(rule: &Rule, stmt: &Stmt) -> bool {
    if rule.unless_guard.is_empty() {
        return false;
    }
    let labels = stmt.ctx.labels.join(" ");
    stmt.ctx.conds.iter().any(|c| {
        c.kind == CondKind::If
            && !c.negated
            && !c.text.is_empty()
            && cond_guards(&c.text, &rule.unless_guard)
    }) || (!labels.is_empty() && rule.unless_guard.iter().any(|re| re.is_match(&labels)))
}

fn under(rule: &Rule, stmt: &Stmt) -> bool {
    if rule.when_guard.is_empty() {
        return true;
    }
    let conds = rule.when_guard.iter().any(|re| {
        stmt.ctx
            .conds
            .iter()
            .any(|c| c.kind != CondKind::Preproc && re.is_match(&c.text))
    });
    // One label is enough: moving a chip's label into another chip's arm is how a
    // hand-made special case hides in the driver's own switch. What upstream's own
    // per-family arms set legitimately is for the rule to say (`unless`).
    let labels = stmt.ctx.labels.join(" ");
    conds || (!labels.is_empty() && rule.when_guard.iter().any(|re| re.is_match(&labels)))
}

static IDENT: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
    regex::Regex::new(r"(->|\.)?\s*\b([A-Za-z_]\w*)\b\s*(\()?").expect("identifier regex")
});
static ASSIGN: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
    regex::Regex::new(r"^([A-Za-z_]\w*) = (.+);$").expect("assignment regex")
});

/// A condition with each plain local variable in it followed by what the function
/// last assigned to it before the condition: `if (r)` after
/// `r = pci_enable_atomic_ops_to_root(...)` reads as a test of that call, which is how
/// the driver has written its probes in many versions.
fn resolved(cond: &str, line: usize, stmts: &[Stmt], func: Option<&str>) -> String {
    let mut out = cond.to_string();
    for c in IDENT.captures_iter(cond) {
        if c.get(1).is_some() || c.get(3).is_some() {
            continue; // a member or a call, not a local
        }
        let name = &c[2];
        let last = stmts
            .iter()
            .take_while(|t| t.line < line)
            .filter(|t| t.kind == Kind::Statement && t.ctx.function.as_deref() == func)
            .filter_map(|t| ASSIGN.captures(&t.text))
            .filter(|a| &a[1] == name)
            .last();
        if let Some(a) = last {
            out.push_str(" \u{1} ");
            out.push_str(&a[2]);
        }
    }
    out
}

/// Whether a statement's running depends on a value `unless_depends` names: in a
/// then-branch every `||` alternative must test it (so `1 || probe` does not), in an
/// else-branch one alternative is enough (it runs only when all are false).
fn depends(rule: &Rule, stmts: &[Stmt], stmt: &Stmt) -> bool {
    if rule.unless_depends.is_empty() {
        return false;
    }
    let func = stmt.ctx.function.as_deref();
    stmt.ctx.conds.iter().any(|c| {
        if c.kind != CondKind::If || c.text.is_empty() {
            return false;
        }
        let alts = super::cfile::disjuncts(super::cfile::strip_parens(&c.text));
        let hit = |d: &&str| {
            let text = resolved(d, c.line, stmts, func);
            rule.unless_depends.iter().any(|re| re.is_match(&text))
        };
        if c.negated {
            alts.iter().any(hit)
        } else {
            alts.iter().all(hit)
        }
    })
}

fn in_function(rule: &Rule, stmt: &Stmt) -> bool {
    let f = stmt.ctx.function.as_deref();
    if let Some(re) = &rule.in_function {
        if !f.is_some_and(|f| re.is_match(f)) {
            return false;
        }
    }
    if let Some(re) = &rule.not_in_function {
        if f.is_some_and(|f| re.is_match(f)) {
            return false;
        }
    }
    true
}

fn innermost_if(stmt: &Stmt) -> String {
    stmt.ctx
        .conds
        .iter()
        .rev()
        .find(|c| c.kind == CondKind::If)
        .map(|c| format!("{}{}", if c.negated { "!" } else { "" }, squash(&c.text)))
        .unwrap_or_default()
}

/// Line ranges (1-based, inclusive) where the rule's prefilter matches a view.
fn candidate_lines(p: &Parsed, rule: &Rule, view: &str) -> Vec<(usize, usize)> {
    let Some(pre) = &rule.prefilter else {
        return Vec::new();
    };
    if rule.quick.as_ref().is_some_and(|q| !q.is_match(view)) {
        return Vec::new();
    }
    let mut out: Vec<(usize, usize)> = Vec::new();
    for m in pre.find_iter(view) {
        let a = p.line_of(m.start());
        let b = p.line_of(m.end().saturating_sub(1).max(m.start()));
        match out.last_mut() {
            Some(last) if a <= last.1 + 1 => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

fn overlaps(ranges: &[(usize, usize)], a: usize, b: usize) -> bool {
    let i = ranges.partition_point(|r| r.1 < a);
    ranges.get(i).is_some_and(|r| r.0 <= b)
}

const COMMENT_NOTE: &str = "Only in a comment: it compiles to nothing, so it is a note about the file, not a change in what the driver does.";

/// Whether columns `a..b` of a line are inside a comment: blank in the code view
/// (comments and string contents are blanked there) and not inside a string literal
/// (whose quotes the code view keeps).
fn only_comment(p: &Parsed, line: usize, a: usize, b: usize) -> bool {
    let code = p.line_text(&p.views.code, line);
    let Some(span) = code.get(a.min(code.len())..b.min(code.len())) else {
        return false;
    };
    if !span.bytes().all(|c| c.is_ascii_whitespace()) {
        return false;
    }
    let before = code.get(..a.min(code.len())).unwrap_or("");
    before.matches('"').count() % 2 == 0
}

/// The tokens of C source with comments dropped: identifiers and numbers, string and
/// character literals whole, every other character on its own, and the end of each
/// preprocessor line (which ends a directive). Two files with the same tokens compile
/// to the same code; only comments, whitespace or line breaks differ between them.
pub(crate) fn c_tokens(src: &str) -> Vec<&str> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let (mut i, mut line_start, mut preproc) = (0, true, false);
    while i < b.len() {
        let c = b[i];
        if c == b'\n' {
            if preproc && !(i > 0 && b[i - 1] == b'\\') {
                out.push("\n");
                preproc = false;
            }
            line_start = true;
            i += 1;
        } else if c.is_ascii_whitespace() || (c == b'\\' && b.get(i + 1) == Some(&b'\n')) {
            i += 1;
        } else if c == b'/' && b.get(i + 1) == Some(&b'*') {
            let end = src[i + 2..].find("*/").map_or(b.len(), |e| i + 2 + e + 2);
            i = end;
        } else if c == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else {
            if line_start && c == b'#' {
                preproc = true;
            }
            line_start = false;
            let s = i;
            if c == b'"' || c == b'\'' {
                i += 1;
                while i < b.len() && b[i] != c && b[i] != b'\n' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i = (i + 1).min(b.len());
            } else if c.is_ascii_alphanumeric() || c == b'_' {
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'.')
                {
                    i += 1;
                }
            } else {
                i += 1;
                while i < b.len() && !src.is_char_boundary(i) {
                    i += 1;
                }
            }
            i = i.min(b.len());
            while !src.is_char_boundary(i) {
                i += 1;
            }
            out.push(&src[s..i]);
        }
    }
    out
}

/// Every hit of a `match` rule in a parsed file.
pub(crate) fn match_hits(rule: &Rule, p: &Parsed) -> Vec<Hit> {
    let Some(re) = &rule.pattern else {
        return Vec::new();
    };
    let views = &p.views;
    let mut out: Vec<Hit> = Vec::new();
    // Lines already hit: a set, since a hostile file can have a hit on every line.
    let mut seen: std::collections::HashSet<usize> = std::collections::HashSet::new();
    match rule.on {
        On::Code => {
            let ranges = candidate_lines(p, rule, &views.code);
            if ranges.is_empty() {
                return out;
            }
            for (si, stmt) in p.file().stmts.iter().enumerate() {
                if !overlaps(&ranges, stmt.line, stmt.last_line) {
                    continue;
                }
                // Code compiled out never matches, except for the check that asks
                // whether a refusal was compiled out.
                let gate_here = rule.check == Some(Check::Gate) && rule.scope != Scope::Removed;
                if stmt.ctx.dead && !gate_here {
                    continue;
                }
                if !in_function(rule, stmt) || !under(rule, stmt) || guarded(rule, stmt) {
                    continue;
                }
                if depends(rule, &p.file().stmts, stmt) {
                    continue;
                }
                if rule.unless.iter().any(|u| u.is_match(&stmt.text)) {
                    continue;
                }
                let cond = format!("{}\u{1}{}", innermost_if(stmt), stmt.ctx.labels.join(","));
                let whole = if stmt.text.len() <= 400 {
                    squash(&stmt.text)
                } else {
                    String::new()
                };
                for caps in re.captures_iter(&stmt.text) {
                    let m = caps.get(0).expect("match");
                    let verdict = match rule.check {
                        Some(Check::GfxTargetTable) => {
                            checks::gfx_target(rule, stmt, &caps, p.defines())
                        }
                        Some(Check::Table) => checks::table(rule, stmt, &caps, p.defines()),
                        Some(Check::Gate) if gate_here => {
                            let seen = super::gates::neutralised(&p.file().stmts, si);
                            checks::Verdict {
                                fire: seen.is_some(),
                                detail: seen,
                                severity: None,
                            }
                        }
                        Some(Check::Gate) => checks::Verdict {
                            fire: super::gates::is_bail(&stmt.text),
                            detail: None,
                            severity: None,
                        },
                        None => checks::Verdict {
                            fire: true,
                            detail: None,
                            severity: None,
                        },
                    };
                    if !verdict.fire {
                        continue;
                    }
                    let line = stmt.line_at(m.start());
                    if !seen.insert(line) {
                        continue;
                    }
                    out.push(Hit {
                        line,
                        stmt: Some(si),
                        key: format!("{cond}\u{1}{whole}\u{1}{}", squash(m.as_str())),
                        detail: verdict.detail,
                        severity: verdict.severity,
                    });
                }
            }
        }
        On::Line | On::Prose => {
            let view = if rule.on == On::Line {
                &views.raw
            } else {
                &views.prose
            };
            let ranges = candidate_lines(p, rule, view);
            let total = p.line_count();
            for (a, b) in ranges {
                let first = a.saturating_sub(rule.window - 1).max(1);
                for line in first..=b {
                    let last = (line + rule.window - 1).min(total);
                    let text: Vec<&str> = (line..=last).map(|l| p.line_text(view, l)).collect();
                    let text = text.join("\n");
                    let Some(m) = re.find(&text) else { continue };
                    let at = line + text[..m.start()].matches('\n').count();
                    if seen.contains(&at) {
                        continue;
                    }
                    let col = m.start() - text[..m.start()].rfind('\n').map_or(0, |i| i + 1);
                    let len = text[m.start()..].find('\n').unwrap_or(m.len()).min(m.len());
                    let comment = p.is_c && only_comment(p, at, col, col + len);
                    if let Some(ctx) = p.file().ctx_of_line(at) {
                        if ctx.dead {
                            continue;
                        }
                    }
                    if rule.unless.iter().any(|u| u.is_match(&text)) {
                        continue;
                    }
                    if let Some(stmt) = p.file().stmt_of_line(at) {
                        if !in_function(rule, stmt) || !under(rule, stmt) || guarded(rule, stmt) {
                            continue;
                        }
                    } else if rule.in_function.is_some() || !rule.when_guard.is_empty() {
                        continue;
                    }
                    seen.insert(at);
                    // Words in a comment compile to nothing: whatever they say, they
                    // are a note about the file, never an alarm on their own. The same
                    // words in a string literal are printed by the driver and stay.
                    let (detail, severity) = if comment {
                        (Some(COMMENT_NOTE.to_string()), Some(Severity::Info))
                    } else {
                        (None, None)
                    };
                    out.push(Hit {
                        line: at,
                        stmt: None,
                        key: squash(p.line_text(view, at)),
                        detail,
                        severity,
                    });
                }
            }
        }
    }
    out
}

/// A `require` rule on one file: for each function named by `in_function` that has
/// a statement matching `anchor` (if any), whether a statement matches `require`.
/// Returns each function, the line to report, whether it has the check and whether
/// it shows the rule's `evidence` (always true for a rule without any).
fn presence(rule: &Rule, p: &Parsed) -> Vec<(String, usize, bool, bool)> {
    let (Some(req), Some(func)) = (&rule.require, &rule.in_function) else {
        return Vec::new();
    };
    if let Some(pre) = &rule.function_prefilter {
        if !pre.is_match(&p.views.code) {
            return Vec::new();
        }
    }
    let mut by_fn: BTreeMap<&str, (usize, Option<usize>, bool, bool)> = BTreeMap::new();
    for (name, header) in p.file().functions() {
        if func.is_match(name) && !header.ctx.dead {
            by_fn.insert(name, (header.line, None, false, rule.evidence.is_empty()));
        }
    }
    if by_fn.is_empty() {
        return Vec::new();
    }
    for stmt in &p.file().stmts {
        if stmt.ctx.dead {
            continue;
        }
        let Some(f) = stmt.ctx.function.as_deref() else {
            continue;
        };
        let Some(entry) = by_fn.get_mut(f) else {
            continue;
        };
        if req.is_match(&stmt.text) {
            entry.2 = true;
        }
        if rule.evidence.iter().any(|e| e.is_match(&stmt.text)) {
            entry.3 = true;
        }
        if let Some(a) = &rule.anchor {
            if entry.1.is_none() && stmt.kind != Kind::Label && a.is_match(&stmt.text) {
                entry.1 = Some(stmt.line);
            }
        }
    }
    by_fn
        .into_iter()
        .filter_map(|(name, (header, anchor, has, evidence))| {
            let line = match (&rule.anchor, anchor) {
                (Some(_), Some(l)) => l,
                (Some(_), None) => return None,
                (None, _) => header,
            };
            Some((name.to_string(), line, has, evidence))
        })
        .collect()
}

/// Whether a removed statement was cut out of code that otherwise survived: its
/// function still exists in the changed file, and so do the statements just before
/// and just after the `if` block that held it. A check deleted on its own is a removed
/// safety check; a check that went away with the code it protected (a feature removed,
/// a function rewritten) is not.
fn targeted(old: &Parsed, new: &Parsed, stmt: Option<usize>) -> bool {
    let Some(i) = stmt else { return true };
    let stmts = &old.file().stmts;
    let s = &stmts[i];
    let Some(func) = s.ctx.function.as_deref() else {
        return true;
    };
    let in_new: std::collections::HashSet<String> = new
        .file()
        .stmts
        .iter()
        .filter(|t| t.ctx.function.as_deref() == Some(func) && !t.ctx.dead)
        .map(|t| squash(&t.text))
        .collect();
    if in_new.is_empty() {
        return false;
    }
    // The block: from the innermost `if` header (the statement itself when it is
    // one, as in `if (WARN_ON(x))`) to the first statement outside it.
    let own = (s.kind == Kind::Control && s.text.starts_with("if ")).then_some(s.line);
    let cond_line = own.or_else(|| {
        s.ctx
            .conds
            .iter()
            .rev()
            .find(|c| c.kind == CondKind::If)
            .map(|c| c.line)
    });
    let (mut first, mut last) = (i, i);
    if let Some(line) = cond_line {
        let inside = |t: &Stmt| {
            t.ctx
                .conds
                .iter()
                .any(|x| x.kind == CondKind::If && x.line == line)
        };
        while first > 0 && inside(&stmts[first - 1]) {
            first -= 1;
        }
        if first > 0 && stmts[first - 1].kind == Kind::Control && stmts[first - 1].line == line {
            first -= 1;
        }
        while last + 1 < stmts.len() && inside(&stmts[last + 1]) {
            last += 1;
        }
    }
    let same_fn = |t: &Stmt| t.ctx.function.as_deref() == Some(func) && t.kind != Kind::Preproc;
    let before = stmts[..first].iter().rev().find(|t| same_fn(t));
    let after = stmts[last + 1..].iter().find(|t| same_fn(t));
    before.is_none_or(|t| in_new.contains(&squash(&t.text)))
        && after.is_none_or(|t| in_new.contains(&squash(&t.text)))
}

/// The line diff of clean → current: which current lines were inserted or
/// replaced, which clean lines were deleted, and where each clean line is now.
struct LineDiff {
    changed_new: Vec<bool>,
    deleted_old: Vec<bool>,
    /// Deleted with nothing put in their place (not part of a replaced block).
    only_deleted_old: Vec<bool>,
    old_to_new: Vec<usize>,
}

fn line_diff(old: &str, new: &str, old_lines: usize, new_lines: usize) -> LineDiff {
    use similar::{DiffOp, TextDiff};
    let diff = TextDiff::configure()
        .timeout(std::time::Duration::from_secs(2))
        .diff_lines(old, new);
    let mut d = LineDiff {
        changed_new: vec![false; new_lines + 2],
        deleted_old: vec![false; old_lines + 2],
        only_deleted_old: vec![false; old_lines + 2],
        old_to_new: vec![0; old_lines + 2],
    };
    for op in diff.ops() {
        match *op {
            DiffOp::Equal {
                old_index,
                new_index,
                len,
            } => {
                for i in 0..len {
                    if let Some(x) = d.old_to_new.get_mut(old_index + i + 1) {
                        *x = new_index + i + 1;
                    }
                }
            }
            DiffOp::Delete {
                old_index,
                old_len,
                new_index,
            } => {
                for i in 0..old_len {
                    if let Some(x) = d.old_to_new.get_mut(old_index + i + 1) {
                        *x = new_index + 1;
                    }
                    if let Some(x) = d.deleted_old.get_mut(old_index + i + 1) {
                        *x = true;
                    }
                    if let Some(x) = d.only_deleted_old.get_mut(old_index + i + 1) {
                        *x = true;
                    }
                }
            }
            DiffOp::Insert {
                new_index, new_len, ..
            } => {
                for i in 0..new_len {
                    if let Some(x) = d.changed_new.get_mut(new_index + i + 1) {
                        *x = true;
                    }
                }
            }
            DiffOp::Replace {
                old_index,
                old_len,
                new_index,
                new_len,
            } => {
                for i in 0..old_len {
                    if let Some(x) = d.old_to_new.get_mut(old_index + i + 1) {
                        *x = new_index + i.min(new_len.saturating_sub(1)) + 1;
                    }
                    if let Some(x) = d.deleted_old.get_mut(old_index + i + 1) {
                        *x = true;
                    }
                }
                for i in 0..new_len {
                    if let Some(x) = d.changed_new.get_mut(new_index + i + 1) {
                        *x = true;
                    }
                }
            }
        }
    }
    d
}

/// Hits of `a` that `b` does not account for (multiset difference by key), preferring
/// those on lines `prefer` marks.
fn surplus(a: Vec<Hit>, b: &[Hit], prefer: &[bool]) -> Vec<Hit> {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for h in b {
        *counts.entry(h.key.as_str()).or_default() += 1;
    }
    let mut groups: BTreeMap<String, Vec<Hit>> = BTreeMap::new();
    for h in a {
        groups.entry(h.key.clone()).or_default().push(h);
    }
    let mut out = Vec::new();
    for (key, mut hits) in groups {
        let have = counts.get(key.as_str()).copied().unwrap_or(0);
        if hits.len() <= have {
            continue;
        }
        hits.sort_by_key(|h| (!prefer.get(h.line).copied().unwrap_or(false), h.line));
        let n = hits.len() - have;
        out.extend(hits.into_iter().take(n));
    }
    out
}

fn finding(
    rule: &Rule,
    line: usize,
    text: &str,
    detail: Option<String>,
    severity: Option<Severity>,
) -> Finding {
    let mut text = text.trim().to_string();
    if text.len() > 240 {
        let mut cut = 240;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    Finding {
        rule: rule.id.clone(),
        severity: severity.map_or(rule.severity, |s| s.min(rule.severity)),
        title: rule.title.clone(),
        line,
        text,
        why: match detail {
            Some(d) => format!("{d} {}", rule.why),
            None => rule.why.clone(),
        },
        fix: rule.fix.clone(),
    }
}

/// Runs `rules` on the current text of `rel`, diff-aware when `clean` is given.
pub(crate) fn evaluate(
    rules: &[&Rule],
    rel: &Path,
    current: &str,
    clean: Option<&str>,
) -> Vec<Finding> {
    if rules.is_empty() {
        return Vec::new();
    }
    let new = Parsed::new(rel, current);
    let old = clean.map(|c| Parsed::new(rel, c));
    let diff = old.as_ref().map(|o| {
        line_diff(
            clean.unwrap_or(""),
            current,
            o.line_count(),
            new.line_count(),
        )
    });
    let mut out = Vec::new();
    for rule in rules {
        let mut cap = Cap::default();
        evaluate_rule(rule, &new, old.as_ref(), diff.as_ref(), &mut out, &mut cap);
        cap.finish(&mut out, rule);
    }
    // A change of comments and whitespace only compiles to the same code: nothing it
    // brought in is more than a note, whatever the comments say.
    if new.is_c && !out.is_empty() {
        if let Some(clean) = clean {
            if c_tokens(clean) == c_tokens(current) {
                for f in &mut out {
                    if f.severity > Severity::Info {
                        f.severity = Severity::Info;
                        f.why = format!("The change alters only comments or whitespace: the code compiles the same. {}", f.why);
                    }
                }
            }
        }
    }
    out.sort_by(|a, b| {
        a.line
            .cmp(&b.line)
            .then(b.severity.cmp(&a.severity))
            .then(a.rule.cmp(&b.rule))
    });
    out
}

/// At most this many findings of one rule in one file are listed; the rest are
/// counted in one more finding. A hostile file can match a rule on every one of a
/// million lines, and a report of a million identical findings helps no one.
pub(crate) const MAX_FINDINGS_PER_RULE: usize = 100;

#[derive(Default)]
struct Cap {
    listed: usize,
    more: usize,
    first_more: usize,
}

impl Cap {
    fn push(&mut self, out: &mut Vec<Finding>, line: usize, make: impl FnOnce() -> Finding) {
        if self.listed < MAX_FINDINGS_PER_RULE {
            self.listed += 1;
            out.push(make());
        } else {
            if self.more == 0 || line < self.first_more {
                self.first_more = line;
            }
            self.more += 1;
        }
    }

    fn finish(self, out: &mut Vec<Finding>, rule: &Rule) {
        if self.more > 0 {
            let text = format!(
                "... and {} more line(s) of this file match this rule (not listed one by one)",
                self.more
            );
            out.push(finding(rule, self.first_more, &text, None, None));
        }
    }
}

fn evaluate_rule(
    rule: &Rule,
    new: &Parsed,
    old: Option<&Parsed>,
    diff: Option<&LineDiff>,
    out: &mut Vec<Finding>,
    cap: &mut Cap,
) {
    {
        if rule.require.is_some() {
            let now = presence(rule, new);
            let before: Option<Vec<(String, usize, bool, bool)>> =
                old.as_ref().map(|o| presence(rule, o));
            for (name, line, has, evidence) in now {
                if has {
                    continue;
                }
                let mut note = None;
                if let Some(before) = &before {
                    // Diff-aware: only if the clean file had it.
                    if !before.iter().any(|(n, _, h, _)| *n == name && *h) {
                        continue;
                    }
                } else if !evidence {
                    // Whole-file, and nothing in the function shows that this version
                    // ever had the check (it is a later upstream fix): a note.
                    note = Some((
                        "This version of the driver may predate the check: nothing else in the function that came with it is here, and there is no clean reference to tell.".to_string(),
                        Severity::Info,
                    ));
                }
                let (detail, sev) = match note {
                    Some((d, s)) => (Some(d), Some(s)),
                    None => (None, None),
                };
                cap.push(out, line, || {
                    finding(rule, line, new.raw_line(line), detail, sev)
                });
            }
            return;
        }
        match (&old, &diff, rule.scope) {
            (None, _, Scope::Removed | Scope::AddedOnly) => {}
            (None, _, _) | (Some(_), _, Scope::File) => {
                for h in match_hits(rule, new) {
                    cap.push(out, h.line, || {
                        finding(rule, h.line, new.raw_line(h.line), h.detail, h.severity)
                    });
                }
            }
            (Some(o), Some(d), Scope::Added | Scope::AddedOnly) => {
                let a = match_hits(rule, new);
                if a.is_empty() {
                    return;
                }
                let b = match_hits(rule, o);
                for h in surplus(a, &b, &d.changed_new) {
                    cap.push(out, h.line, || {
                        finding(rule, h.line, new.raw_line(h.line), h.detail, h.severity)
                    });
                }
            }
            (Some(o), Some(d), Scope::Removed) => {
                let b = match_hits(rule, o);
                if b.is_empty() {
                    return;
                }
                let a = match_hits(rule, new);
                for h in surplus(b, &a, &d.deleted_old) {
                    if h.stmt
                        .is_some_and(|si| super::gates::renamed(o.file(), new.file(), si))
                    {
                        continue;
                    }
                    if rule.check == Some(Check::Gate) {
                        // The gate check judges the loss itself, against the new file.
                        let Some(si) = h.stmt else { continue };
                        let Some((why, sev)) = super::gates::lost(o.file(), new.file(), si) else {
                            continue;
                        };
                        let at = d.old_to_new.get(h.line).copied().unwrap_or(0).max(1);
                        cap.push(out, at, || {
                            finding(rule, at, o.raw_line(h.line), Some(why), sev)
                        });
                        continue;
                    }
                    let mapped = d.old_to_new.get(h.line).copied().unwrap_or(0);
                    // Put under `#if 0` counts as deleted: the line is there, dead.
                    let only = d.only_deleted_old.get(h.line).copied().unwrap_or(false)
                        || (!d.deleted_old.get(h.line).copied().unwrap_or(true)
                            && new.file().ctx_of_line(mapped).is_some_and(|c| c.dead));
                    match rule.removal {
                        Removal::Any => {}
                        Removal::Deleted if !only || !targeted(o, new, h.stmt) => continue,
                        Removal::Replaced if only => continue,
                        _ => {}
                    }
                    let at = d.old_to_new.get(h.line).copied().unwrap_or(0).max(1);
                    cap.push(out, at, || {
                        finding(rule, at, o.raw_line(h.line), h.detail, h.severity)
                    });
                }
            }
            (Some(_), None, _) => {}
        }
    }
}
