//! The rule engine: which changes to a driver tree are the kind that crash machines.
//!
//! Rules live in TOML (`patterns/*.toml`, embedded at build time; `--rules DIR` adds
//! a user's). Each names the files it applies to, what to match, the context that
//! makes a match harmless, and explains why the change is dangerous and how to undo
//! it. Matching understands C well enough to know the enclosing function and the
//! conditions above a statement ([`cfile`]); named checks ([`checks`]) cover what a
//! regex cannot (the upstream `gfx_target_version` table). See [`engine`] for the
//! whole-file and diff-aware modes.
//!
//! Public API for other parts of kfd-audit:
//! - [`RuleSet::builtin`], [`RuleSet::load_dir`], [`RuleSet::load_file`];
//! - [`RuleSet::check`]: findings for one file's bytes (optionally against its clean
//!   bytes), e.g. to judge whether a backup contains an unsafe change, or to run
//!   rules on module option files and DKMS build-time patches;
//! - [`apply`]: fills `FileResult::findings` of a scanned tree.

pub(crate) mod cfile;
pub(crate) mod checks;
pub(crate) mod engine;
mod gates;
mod spec;

use crate::error::{Error, Result};
use crate::finding::{Finding, Severity};
use crate::scan::{FileStatus, TreeScan};
use crate::tree::Tree;
use globset::GlobSet;
use rayon::prelude::*;
use regex::Regex;
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

/// Which lines of a changed file a rule looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// What the change added; the whole file when no clean copy is known.
    Added,
    /// What the change added; not run without a clean copy.
    AddedOnly,
    /// What the change removed (with the clean file's context); needs a clean copy.
    Removed,
    /// The whole file, always.
    File,
}

impl Scope {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Scope::Added => "added",
            Scope::AddedOnly => "added-only",
            Scope::Removed => "removed",
            Scope::File => "file",
        }
    }
}

/// For `removed` rules: which kind of removal counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// Any line the change removed or rewrote.
    Any,
    /// Lines removed with nothing put in their place (a deleted check).
    Deleted,
    /// Lines rewritten into something else (a check replaced by other code).
    Replaced,
}

/// Which text a rule's `match` runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum On {
    /// C statements joined across lines, comments and string contents blanked.
    Code,
    /// Raw lines (a `window` of several joined by newlines).
    Line,
    /// Only comments and string literals, line by line.
    Prose,
}

/// Checks written in Rust that a rule can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Check {
    GfxTargetTable,
    Table,
    /// A safety gate made harmless ([`gates`]): on `added` rules, in place (constant
    /// condition, compiled out, early success); on `removed` rules, against the clean
    /// file (refusal taken out, threshold moved, gate deleted).
    Gate,
}

/// A snippet a rule must (or must not) fire on.
#[derive(Debug, Clone)]
pub struct Example {
    pub fires: bool,
    pub code: String,
    /// The clean version, for a diff-aware example.
    pub clean: Option<String>,
    /// Tree-relative path the snippet pretends to be (default: from `files`).
    pub file: Option<String>,
    /// The line the finding must be on.
    pub line: Option<usize>,
    /// Line of the example in its rule file.
    pub source_line: usize,
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub id: String,
    pub title: String,
    pub severity: Severity,
    pub scope: Scope,
    pub removal: Removal,
    pub on: On,
    pub file_globs: Vec<String>,
    files: GlobSet,
    exclude: GlobSet,
    pattern: Option<Regex>,
    /// `pattern` without `^`/`$` anchors: finds candidate lines in a whole file.
    prefilter: Option<Regex>,
    /// Literals one of which any match must contain: skips most files at memchr speed.
    quick: Option<Regex>,
    window: usize,
    unless: Vec<Regex>,
    unless_guard: Vec<Regex>,
    when_guard: Vec<Regex>,
    /// No finding if an enclosing condition, in either branch, depends on a value
    /// matching one of these (a local variable stands for what was last assigned to it).
    unless_depends: Vec<Regex>,
    /// For `require` rules: statements that came into the driver with the required
    /// check. Without a clean reference a missing check is only a note unless the
    /// function shows one of them (the version is known to have had the check).
    evidence: Vec<Regex>,
    /// Driver versions the rule was run against, clean, in whole-file mode.
    pub checked: Vec<String>,
    in_function: Option<Regex>,
    function_prefilter: Option<Regex>,
    not_in_function: Option<Regex>,
    require: Option<Regex>,
    anchor: Option<Regex>,
    check: Option<Check>,
    key_from_case: bool,
    missing: Option<String>,
    table: HashMap<String, Vec<String>>,
    pub why: String,
    pub fix: String,
    pub examples: Vec<Example>,
    /// The file the rule came from (`builtin:memory.toml` for built-ins) and its line.
    pub origin: PathBuf,
    pub line: usize,
}

impl Rule {
    pub(crate) fn applies_to(&self, rel: &Path) -> bool {
        self.files.is_match(rel) && !self.exclude.is_match(rel)
    }

    /// A path the examples pretend to be when they name none: the first glob with
    /// its wildcards filled in.
    fn example_path(&self, e: &Example) -> Option<PathBuf> {
        if let Some(f) = &e.file {
            return Some(PathBuf::from(f));
        }
        self.file_globs.iter().find_map(|g| {
            let p = g
                .replace("**/", "")
                .replace("*.[ch]", "example.c")
                .replace('*', "example")
                .replace('?', "x");
            let p = PathBuf::from(p);
            self.applies_to(&p).then_some(p)
        })
    }
}

/// A glob-free copy of a regex with its `^`/`$` anchors removed: anything the rule
/// can match inside a statement, this finds somewhere in the whole file.
fn prefilter(re: &Regex) -> std::result::Result<Regex, String> {
    use regex_syntax::hir::{Capture, Dot, Hir, HirKind, Look, Repetition};
    fn strip(h: &Hir) -> Hir {
        // A statement's text has its line breaks and whitespace runs collapsed to one
        // space: in the file, `.` must cross lines and a space may be any run.
        if *h == Hir::dot(Dot::AnyCharExceptLF) {
            return Hir::dot(Dot::AnyChar);
        }
        if *h == Hir::dot(Dot::AnyByteExceptLF) {
            return Hir::dot(Dot::AnyByte);
        }
        match h.kind() {
            HirKind::Literal(lit) if lit.0.contains(&b' ') => {
                let ws = Hir::repetition(Repetition {
                    min: 1,
                    max: None,
                    greedy: true,
                    sub: Box::new(Hir::class(regex_syntax::hir::Class::Unicode(
                        regex_syntax::hir::ClassUnicode::new([
                            regex_syntax::hir::ClassUnicodeRange::new('\t', '\r'),
                            regex_syntax::hir::ClassUnicodeRange::new(' ', ' '),
                        ]),
                    ))),
                });
                let mut parts = Vec::new();
                for (i, piece) in lit.0.split(|b| *b == b' ').enumerate() {
                    if i > 0 {
                        parts.push(ws.clone());
                    }
                    if !piece.is_empty() {
                        parts.push(Hir::literal(piece.to_vec()));
                    }
                }
                Hir::concat(parts)
            }
            HirKind::Look(
                Look::Start
                | Look::End
                | Look::StartLF
                | Look::EndLF
                | Look::StartCRLF
                | Look::EndCRLF,
            ) => Hir::empty(),
            HirKind::Repetition(r) => Hir::repetition(Repetition {
                sub: Box::new(strip(&r.sub)),
                ..r.clone()
            }),
            HirKind::Capture(c) => Hir::capture(Capture {
                sub: Box::new(strip(&c.sub)),
                ..c.clone()
            }),
            HirKind::Concat(v) => Hir::concat(v.iter().map(strip).collect()),
            HirKind::Alternation(v) => Hir::alternation(v.iter().map(strip).collect()),
            _ => h.clone(),
        }
    }
    let hir = regex_syntax::parse(re.as_str()).map_err(|e| e.to_string())?;
    Regex::new(&strip(&hir).to_string()).map_err(|e| e.to_string())
}

/// Literals of which every match of the regex contains one, as a case-insensitive
/// regex (None when it cannot tell, or they would be too short to be worth it).
fn required_literals(re: &Regex) -> Option<Regex> {
    use regex_syntax::hir::{Class, Hir, HirKind};
    /// A literal character, or the two cases of one letter (`(?i)` patterns).
    fn char_of(h: &Hir) -> Option<Vec<u8>> {
        match h.kind() {
            HirKind::Literal(l) => Some(l.0.to_ascii_lowercase()),
            HirKind::Class(Class::Unicode(c)) => {
                let chars: Vec<char> = c
                    .ranges()
                    .iter()
                    .flat_map(|r| (r.start()..=r.end()).take(3))
                    .collect();
                let lower: Vec<char> = chars.iter().map(|c| c.to_ascii_lowercase()).collect();
                let ascii = chars.iter().all(|c| c.is_ascii());
                // Unicode case folding adds the Kelvin sign to k and the long s to s.
                let letters: Vec<char> = chars.iter().copied().filter(|c| c.is_ascii()).collect();
                let same = lower
                    .iter()
                    .filter(|c| c.is_ascii())
                    .all(|c| *c == lower[0]);
                if (ascii || letters.len() == 2) && same && !letters.is_empty() && chars.len() <= 3
                {
                    Some(vec![lower[0] as u8])
                } else {
                    None
                }
            }
            _ => None,
        }
    }
    fn req(h: &Hir) -> Option<Vec<Vec<u8>>> {
        match h.kind() {
            HirKind::Capture(c) => req(&c.sub),
            HirKind::Repetition(r) if r.min >= 1 => req(&r.sub),
            HirKind::Concat(v) => {
                let mut best: Option<Vec<Vec<u8>>> = None;
                let consider = |set: Vec<Vec<u8>>, best: &mut Option<Vec<Vec<u8>>>| {
                    let min = set.iter().map(|l| l.len()).min().unwrap_or(0);
                    let cur = best
                        .as_ref()
                        .map(|b| b.iter().map(|l| l.len()).min().unwrap_or(0))
                        .unwrap_or(0);
                    if min >= 3 && min > cur {
                        *best = Some(set);
                    }
                };
                let mut run: Vec<u8> = Vec::new();
                for child in v {
                    if let Some(c) = char_of(child) {
                        run.extend(c);
                        continue;
                    }
                    if !run.is_empty() {
                        consider(vec![std::mem::take(&mut run)], &mut best);
                    }
                    if let Some(set) = req(child) {
                        consider(set, &mut best);
                    }
                }
                if !run.is_empty() {
                    consider(vec![run], &mut best);
                }
                best
            }
            HirKind::Alternation(v) => {
                let mut all = Vec::new();
                for b in v {
                    all.extend(req(b)?);
                }
                Some(all)
            }
            _ => char_of(h).map(|c| vec![c]),
        }
    }
    let hir = regex_syntax::parse(re.as_str()).ok()?;
    let lits = req(&hir)?;
    if lits.is_empty() || lits.iter().any(|l| l.len() < 3) {
        return None;
    }
    let alts: Vec<String> = lits
        .iter()
        .map(|l| regex::escape(&String::from_utf8_lossy(l)))
        .collect();
    Regex::new(&format!("(?i){}", alts.join("|"))).ok()
}

/// The rule files built into the binary.
pub const BUILTIN: &[(&str, &str)] = &[
    ("memory.toml", include_str!("../../patterns/memory.toml")),
    (
        "gfx-target.toml",
        include_str!("../../patterns/gfx-target.toml"),
    ),
    (
        "capabilities.toml",
        include_str!("../../patterns/capabilities.toml"),
    ),
    (
        "device-ids.toml",
        include_str!("../../patterns/device-ids.toml"),
    ),
    (
        "safety-checks.toml",
        include_str!("../../patterns/safety-checks.toml"),
    ),
    ("markers.toml", include_str!("../../patterns/markers.toml")),
    (
        "amdgpu-overrides.toml",
        include_str!("../../patterns/amdgpu-overrides.toml"),
    ),
    // Module options and kernel parameters: run on `<module-options>` (src/system/modopts.rs).
    (
        "modprobe.toml",
        include_str!("../../patterns/modprobe.toml"),
    ),
];

/// A built-in rule file, compiled the first time a path its rules may apply to is
/// checked. Compiling the whole set costs tens of milliseconds of CPU and about a
/// dozen megabytes (regexes and globs), which a clean tree never needs: no file of
/// it is read by a rule.
#[derive(Debug)]
struct Builtin {
    name: &'static str,
    text: &'static str,
    /// Every `files` glob of the file's rules: a path none of them matches needs
    /// none of its rules (a rule's `exclude` is left to the compiled rule).
    files: GlobSet,
    /// The ids of its rules, so that a rule added later is checked against them
    /// without compiling them.
    ids: Vec<String>,
    rules: OnceLock<Vec<Rule>>,
}

/// What [`Builtin`] reads before compiling: ids and globs, every other key ignored.
#[derive(serde::Deserialize)]
struct Outline {
    #[serde(default)]
    rule: Vec<OutlineRule>,
}

#[derive(serde::Deserialize)]
struct OutlineRule {
    id: String,
    files: Vec<String>,
}

impl Builtin {
    fn new(name: &'static str, text: &'static str) -> Builtin {
        let outline = toml::from_str::<Outline>(text).ok().and_then(|o| {
            let mut b = globset::GlobSetBuilder::new();
            for g in o.rule.iter().flat_map(|r| &r.files) {
                // Built as the compiled rules build theirs (spec.rs), so the union
                // matches every path one of them does.
                b.add(
                    globset::GlobBuilder::new(g)
                        .literal_separator(true)
                        .build()
                        .ok()?,
                );
            }
            let ids = o
                .rule
                .into_iter()
                .map(|r| r.id.trim().to_string())
                .collect();
            Some((b.build().ok()?, ids))
        });
        let Some((files, ids)) = outline else {
            // Only a broken built-in file has no outline: compiling it names the error.
            let e = spec::parse(&Builtin::origin_of(name), text)
                .err()
                .map_or_else(
                    || "its outline cannot be read".to_string(),
                    |e| e.to_string(),
                );
            panic!("built-in rule file {name} is invalid: {e}");
        };
        Builtin {
            name,
            text,
            files,
            ids,
            rules: OnceLock::new(),
        }
    }

    fn origin_of(name: &str) -> PathBuf {
        PathBuf::from(format!("builtin:{name}"))
    }

    /// The compiled rules (compiled here on first use, once, whichever thread asks).
    fn rules(&self) -> &[Rule] {
        self.rules.get_or_init(|| {
            spec::parse(&Builtin::origin_of(self.name), self.text)
                .unwrap_or_else(|e| panic!("built-in rule file is invalid: {e}"))
        })
    }

    /// The compiled rules if a path like `rel` may need them; nothing compiled otherwise.
    fn rules_for(&self, rel: &Path) -> &[Rule] {
        if self.files.is_match(rel) {
            self.rules()
        } else {
            &[]
        }
    }
}

/// A set of rules with unique ids: the built-in ones (each file compiled when first
/// needed, shared by every copy of the set) and those added from rule files
/// (compiled when added, so that a broken one is reported at once).
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    builtin: Option<Arc<[Builtin]>>,
    rules: Vec<Rule>,
}

/// The rules of a set in order (built-in files first), as [`RuleSet::rules`] lists them.
pub(crate) struct RuleList<'a>(Vec<&'a Rule>);

impl<'a> RuleList<'a> {
    pub(crate) fn iter(&self) -> impl Iterator<Item = &'a Rule> + '_ {
        self.0.iter().copied()
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }
}

/// A rule example that did not behave as it says.
#[derive(Debug, Clone)]
pub(crate) struct ExampleFailure {
    pub origin: PathBuf,
    pub line: usize,
    pub message: String,
}

impl RuleSet {
    /// The built-in rules. They are part of the program; a broken one is a bug
    /// caught by the test suite. Only their ids and file globs are read here; each
    /// file is compiled when a path its rules may apply to is first checked.
    pub(crate) fn builtin() -> RuleSet {
        let files: Vec<Builtin> = BUILTIN
            .iter()
            .map(|(name, text)| Builtin::new(name, text))
            .collect();
        let mut seen: HashMap<&str, &str> = HashMap::new();
        for f in &files {
            for id in &f.ids {
                if let Some(prev) = seen.insert(id, f.name) {
                    panic!(
                        "built-in rules: duplicate rule id {id} in {prev} and {}",
                        f.name
                    );
                }
            }
        }
        RuleSet {
            builtin: Some(files.into()),
            rules: Vec::new(),
        }
    }

    fn builtin_files(&self) -> &[Builtin] {
        self.builtin.as_deref().unwrap_or(&[])
    }

    /// Adds rules, refusing an id that is already taken.
    pub fn add(&mut self, rules: Vec<Rule>) -> Result<()> {
        for r in rules {
            // A built-in file is compiled only when an added rule takes one of its ids
            // (to name where the first one is).
            let builtin = self
                .builtin_files()
                .iter()
                .find(|f| f.ids.contains(&r.id))
                .and_then(|f| f.rules().iter().find(|x| x.id == r.id));
            if let Some(prev) = builtin.or_else(|| self.rules.iter().find(|x| x.id == r.id)) {
                return Err(Error::malformed(
                    &r.origin,
                    r.line,
                    format!(
                        "duplicate rule id {} (already defined at {}:{}); give this rule another id",
                        r.id,
                        prev.origin.display(),
                        prev.line
                    ),
                ));
            }
            self.rules.push(r);
        }
        Ok(())
    }

    /// Parses one rule file (without adding it).
    pub fn parse_file(path: &Path) -> Result<Vec<Rule>> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        spec::parse(path, &text)
    }

    /// Adds the rules of one TOML file.
    pub(crate) fn load_file(&mut self, path: &Path) -> Result<()> {
        let rules = RuleSet::parse_file(path)?;
        self.add(rules)
    }

    /// Adds every `*.toml` of a directory, in name order.
    pub(crate) fn load_dir(&mut self, dir: &Path) -> Result<()> {
        let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(Error::Refused {
                path: dir.to_path_buf(),
                message: "no *.toml rule files in this directory".into(),
            });
        }
        for f in files {
            self.load_file(&f)?;
        }
        Ok(())
    }

    /// Every rule, in order: compiles the built-in files not compiled yet.
    pub(crate) fn rules(&self) -> RuleList<'_> {
        RuleList(
            self.builtin_files()
                .iter()
                .flat_map(Builtin::rules)
                .chain(&self.rules)
                .collect(),
        )
    }

    pub(crate) fn get(&self, id: &str) -> Option<&Rule> {
        let builtin = self
            .builtin_files()
            .iter()
            .find(|f| f.ids.iter().any(|i| i == id));
        match builtin {
            Some(f) => f.rules().iter().find(|r| r.id == id),
            None => self.rules.iter().find(|r| r.id == id),
        }
    }

    /// The rules whose globs take this tree-relative path (compiling the built-in
    /// files that have some).
    pub(crate) fn applicable(&self, rel: &Path) -> Vec<&Rule> {
        self.builtin_files()
            .iter()
            .flat_map(|f| f.rules_for(rel))
            .chain(&self.rules)
            .filter(|r| r.applies_to(rel))
            .collect()
    }

    /// Findings for one file's bytes, by tree-relative path. With `clean` (verified
    /// clean bytes of the same file) the check is diff-aware; without, whole-file.
    pub fn check(&self, rel: &Path, current: &[u8], clean: Option<&[u8]>) -> Vec<Finding> {
        let rules = self.applicable(rel);
        if rules.is_empty() {
            return Vec::new();
        }
        let cur = String::from_utf8_lossy(current);
        let clean = clean.map(String::from_utf8_lossy);
        engine::evaluate(&rules, rel, &cur, clean.as_deref())
    }

    /// Whether these bytes contain a change this rule set calls high or critical
    /// (e.g. a backup that is itself patched).
    pub(crate) fn is_unsafe(&self, rel: &Path, bytes: &[u8], clean: Option<&[u8]>) -> bool {
        self.check(rel, bytes, clean)
            .iter()
            .any(|f| f.severity >= Severity::High)
    }

    /// Runs every rule's examples; returns those that failed.
    pub(crate) fn run_examples(&self) -> Vec<ExampleFailure> {
        let mut out = Vec::new();
        for r in self.rules().iter() {
            for (i, e) in r.examples.iter().enumerate() {
                let fail = |message: String| ExampleFailure {
                    origin: r.origin.clone(),
                    line: e.source_line,
                    message: format!("rule {} example {}: {message}", r.id, i + 1),
                };
                let Some(path) = r.example_path(e) else {
                    out.push(fail(
                        "cannot tell which file it pretends to be; give it `file = \"...\"` matching the rule's `files`".into(),
                    ));
                    continue;
                };
                if !r.applies_to(&path) {
                    out.push(fail(format!(
                        "its file {} is not matched by the rule's `files`",
                        path.display()
                    )));
                    continue;
                }
                let found = engine::evaluate(&[r], &path, &e.code, e.clean.as_deref());
                let fired = match e.line {
                    Some(l) => found.iter().any(|f| f.line == l),
                    None => !found.is_empty(),
                };
                if fired != e.fires {
                    let lines: Vec<String> = found.iter().map(|f| f.line.to_string()).collect();
                    out.push(fail(if e.fires {
                        match e.line {
                            Some(l) if !found.is_empty() => format!(
                                "should fire on line {l}, fired on line {}",
                                lines.join(", ")
                            ),
                            _ => "should fire but did not".into(),
                        }
                    } else {
                        format!("should not fire but did (line {})", lines.join(", "))
                    }));
                }
            }
        }
        out
    }
}

/// What [`apply`] did, for the curious and for measurements.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ApplyStats {
    pub files_checked: usize,
    pub diff_aware: usize,
    pub bytes_read: u64,
}

/// Files larger than this are not read by rules (generated register headers).
const MAX_RULE_FILE: u64 = 16 << 20;

/// Runs the rules on a scanned tree, filling each file's findings. Files that match
/// their reference are not looked at; modified files are checked against the
/// verified clean content the scan fetched ([`TreeScan::clean_copies`]) where it has
/// some, whole-file otherwise; added and unverified files are checked whole-file.
/// The rules fetch no clean content of their own: a scan without clean content
/// (`ScanOptions::clean_content` off) gets whole-file checks only.
pub(crate) fn apply(rules: &RuleSet, scan: &mut TreeScan) -> ApplyStats {
    let work: Vec<(usize, Vec<&Rule>)> = scan
        .files
        .iter()
        .enumerate()
        .filter(|(_, f)| {
            matches!(
                f.status,
                FileStatus::Modified | FileStatus::Added | FileStatus::Unverified
            )
        })
        .filter(|(_, f)| f.size.is_none_or(|s| s <= MAX_RULE_FILE))
        .filter_map(|(i, f)| {
            let rs = rules.applicable(&f.path);
            (!rs.is_empty()).then_some((i, rs))
        })
        .collect();
    let tree = &scan.tree;
    let files = &scan.files;
    let copies = &scan.clean_copies;
    let results: Vec<(usize, Vec<Finding>, bool, u64)> = work
        .par_iter()
        .filter_map(|(i, rs)| {
            let f = &files[*i];
            let host = tree.host_path.join(&f.path);
            let mut bytes = Vec::new();
            crate::io::read::open_nofollow(&host)
                .and_then(|mut h| h.read_to_end(&mut bytes))
                .ok()?;
            let clean = copies
                .get(&f.path)
                .filter(|_| f.status == FileStatus::Modified)
                .map(|c| &c.bytes);
            let cur = String::from_utf8_lossy(&bytes);
            let clean_text = clean.map(|c| String::from_utf8_lossy(c));
            let found = engine::evaluate(rs, &f.path, &cur, clean_text.as_deref());
            Some((*i, found, clean.is_some(), bytes.len() as u64))
        })
        .collect();
    let mut stats = ApplyStats::default();
    for (i, found, diff, n) in results {
        stats.files_checked += 1;
        stats.bytes_read += n;
        if diff {
            stats.diff_aware += 1;
        }
        scan.files[i].findings = found;
    }
    judge_backups(rules, &scan.tree, &mut scan.files, &scan.clean_copies);
    stats
}

/// Gives the verdict `unsafe` to backups that hash-checking could not place (not
/// clean, not a copy of the current file) when the rules find an unsafe change in
/// them: a `.bak` of an earlier patch attempt must never look like a way back.
fn judge_backups(
    rules: &RuleSet,
    tree: &Tree,
    files: &mut [crate::scan::FileResult],
    copies: &std::collections::BTreeMap<std::path::PathBuf, crate::content::CleanCopy>,
) {
    use crate::scan::BackupVerdict;
    for f in files.iter_mut() {
        if !f
            .backups
            .iter()
            .any(|b| b.verdict == BackupVerdict::Unverified)
        {
            continue;
        }
        if rules.applicable(&f.path).is_empty() {
            continue;
        }
        let clean = copies.get(&f.path).map(|c| c.bytes.as_slice());
        for b in f
            .backups
            .iter_mut()
            .filter(|b| b.verdict == BackupVerdict::Unverified)
        {
            let Ok(bytes) =
                crate::io::read::read_limited(&tree.host_path.join(&b.path), MAX_RULE_FILE)
            else {
                continue;
            };
            if rules.is_unsafe(&f.path, &bytes, clean) {
                b.verdict = BackupVerdict::Unsafe;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_rules_load_and_their_examples_hold() {
        let set = RuleSet::builtin();
        assert!(set.rules().len() >= 20);
        let failures = set.run_examples();
        assert!(
            failures.is_empty(),
            "{}",
            failures
                .iter()
                .map(|f| format!("{}:{}: {}", f.origin.display(), f.line, f.message))
                .collect::<Vec<_>>()
                .join("\n")
        );
        for r in set.rules().iter() {
            assert!(!r.examples.is_empty(), "rule {} has no examples", r.id);
            assert!(
                r.examples.iter().any(|e| e.fires),
                "rule {} never shown firing",
                r.id
            );
            assert!(
                r.examples.iter().any(|e| !e.fires),
                "rule {} never shown quiet",
                r.id
            );
        }
    }

    #[test]
    fn builtin_files_are_compiled_when_a_path_first_needs_them() {
        let set = RuleSet::builtin();
        let compiled = |set: &RuleSet| -> Vec<&str> {
            set.builtin_files()
                .iter()
                .filter(|f| f.rules.get().is_some())
                .map(|f| f.name)
                .collect()
        };
        assert!(compiled(&set).is_empty());
        // No rule reads a Makefile: nothing compiled.
        assert!(set.applicable(Path::new("Makefile")).is_empty());
        assert!(compiled(&set).is_empty());
        // Module options need only their own file; copies share what is compiled.
        let copy = set.clone();
        assert!(!copy.applicable(Path::new("<module-options>")).is_empty());
        assert_eq!(compiled(&set), ["modprobe.toml"]);
        // The incident's file needs the memory rules, not the module-option ones again.
        let crat = set.applicable(Path::new("amd/amdkfd/kfd_crat.c"));
        assert!(crat.iter().any(|r| r.id == "KFD-MEM-001"));
        assert!(compiled(&set).contains(&"memory.toml"));
        // Whatever was compiled when, the set is the one that compiling all at once gives.
        let ids: Vec<&str> = set.rules().iter().map(|r| r.id.as_str()).collect();
        let mut eager = Vec::new();
        for (name, text) in BUILTIN {
            eager.extend(spec::parse(&Builtin::origin_of(name), text).unwrap());
        }
        let eager_ids: Vec<&str> = eager.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, eager_ids);
        assert_eq!(compiled(&set).len(), BUILTIN.len());
        // An added rule cannot take a built-in id, compiled or not.
        let fresh = RuleSet::builtin();
        let mut user = fresh.clone();
        let dup = eager.into_iter().find(|r| r.id == "KFD-MEM-001").unwrap();
        let err = user.add(vec![dup]).unwrap_err().to_string();
        assert!(err.contains("duplicate rule id KFD-MEM-001"), "{err}");
        assert!(err.contains("builtin:memory.toml"), "{err}");
    }

    /// Severity of the findings of one rule on a snippet, whole-file.
    fn severities(id: &str, file: &str, code: &str) -> Vec<Severity> {
        let set = RuleSet::builtin();
        set.check(Path::new(file), code.as_bytes(), None)
            .into_iter()
            .filter(|f| f.rule == id)
            .map(|f| f.severity)
            .collect()
    }

    #[test]
    fn a_later_upstream_check_is_a_note_unless_the_tree_shows_it_had_it() {
        let without = "int kfd_parse_crat_table(void *crat_image, struct list_head *l, uint32_t p)
{
\twhile ((char *)sub_type_hdr + sizeof(struct crat_subtype_generic) <
\t\t\t((char *)crat_image) + image_len) {
\t\tif (sub_type_hdr->flags & CRAT_SUBTYPE_FLAGS_ENABLED)
\t\t\tret = kfd_parse_subtype(sub_type_hdr, device_list);
\t}
}
";
        // 5.10: neither the bounds nor the length check; nothing says it ever had them.
        let f = "amd/amdkfd/kfd_crat.c";
        assert_eq!(severities("KFD-SAFE-010", f, without), vec![Severity::Info]);
        assert_eq!(severities("KFD-SAFE-011", f, without), vec![Severity::Info]);
        // The length check is there, the bounds check that came with it is not: removed.
        let with_length = without.replace(
            "\t\tif (sub_type_hdr->flags",
            "\t\tif (!sub_type_hdr->length) {\n\t\t\tret = -EINVAL;\n\t\t\tbreak;\n\t\t}\n\t\tif (sub_type_hdr->flags",
        );
        assert_eq!(
            severities("KFD-SAFE-010", f, &with_length),
            vec![Severity::High]
        );
        assert!(severities("KFD-SAFE-011", f, &with_length).is_empty());
        // With a clean reference that had the check, its removal is high whatever the tree.
        let set = RuleSet::builtin();
        let found = set.check(
            Path::new(f),
            without.as_bytes(),
            Some(with_length.as_bytes()),
        );
        assert!(found
            .iter()
            .any(|x| x.rule == "KFD-SAFE-011" && x.severity == Severity::High));
    }

    #[test]
    fn a_chip_newer_than_the_table_is_a_note_a_known_target_a_spoof() {
        let arm = |ip: &str, v: &str| {
            format!(
                "static void kfd_x(struct kfd_dev *kfd)\n{{\n\tswitch (gc_version) {{\n\tcase IP_VERSION({ip}):\n\t\tgfx_target_version = {v};\n\t\tbreak;\n\t}}\n}}\n"
            )
        };
        let f = "amd/amdkfd/kfd_device.c";
        assert_eq!(
            severities("KFD-GFX-001", f, &arm("12, 1, 0", "120500")),
            vec![Severity::Info]
        );
        assert!(severities("KFD-GFX-001", f, &arm("12, 0, 1", "120001")).is_empty());
        assert_eq!(
            severities("KFD-GFX-001", f, &arm("10, 1, 77", "100300")),
            vec![Severity::Critical]
        );
        assert_eq!(
            severities("KFD-GFX-001", f, &arm("10, 1, 10", "100300")),
            vec![Severity::Critical]
        );
        assert_eq!(
            severities("KFD-GFX-001", f, &arm("12, 1, 0", "110000")),
            vec![Severity::Critical]
        );
    }

    #[test]
    fn a_claim_made_on_the_probe_answer_is_no_forcing() {
        let f = "amd/amdgpu/amdgpu_device.c";
        let code = |cond: &str, assign: &str| {
            format!(
                "int amdgpu_device_init(struct amdgpu_device *adev)\n{{\n\tr = {assign};\n\tif ({cond})\n\t\tadev->have_atomics_support = false;\n\telse\n\t\tadev->have_atomics_support = true;\n}}\n"
            )
        };
        let probe = "pci_enable_atomic_ops_to_root(adev->pdev, 0)";
        assert!(severities("AMDGPU-ATOMIC-001", f, &code("r", probe)).is_empty());
        // Else of `r || x` runs only when the probe succeeded too.
        assert!(severities("AMDGPU-ATOMIC-001", f, &code("r || !adev->ok", probe)).is_empty());
        // The answer thrown away: `r` is something else.
        assert_eq!(
            severities("AMDGPU-ATOMIC-001", f, &code("r", "0")),
            vec![Severity::Critical]
        );
        // In a then-branch every alternative must test the probe: `1 || r` does not.
        let then = format!(
            "int amdgpu_device_init(struct amdgpu_device *adev)\n{{\n\tr = !{probe};\n\tif (1 || r)\n\t\tadev->have_atomics_support = true;\n}}\n"
        );
        assert_eq!(
            severities("AMDGPU-ATOMIC-001", f, &then),
            vec![Severity::Critical]
        );
    }

    #[test]
    fn prefilter_drops_anchors() {
        let re = Regex::new(r"^return\s+-E\w+;$").unwrap();
        let p = prefilter(&re).unwrap();
        assert!(p.is_match("\t\treturn -EINVAL;\n"));
        let q = required_literals(
            &Regex::new(r"(\|=|=[^=])[^;]*\bHSA_MEM_FLAGS_HOT_PLUGGABLE\b").unwrap(),
        )
        .unwrap();
        assert_eq!(q.as_str(), "(?i)hsa_mem_flags_hot_pluggable");
        let q =
            required_literals(&Regex::new(r"^(return\s+-EINVAL|ret\s*=\s*-ERANGE)\s*;").unwrap())
                .unwrap();
        assert_eq!(q.as_str(), r"(?i)\-einval|\-erange");
        let q = required_literals(&Regex::new(r"(?i)\brdna\s*[0-9]?").unwrap()).unwrap();
        assert_eq!(q.as_str(), "(?i)rdna");
        assert!(q.is_match("[RDNA1 Fix]"));
        assert!(required_literals(&Regex::new(r"(?i)\b(ab|cd)\b").unwrap()).is_none());
        let re = Regex::new(r"^if \(.*&&\s*0\)$").unwrap();
        let p = prefilter(&re).unwrap();
        assert!(p.is_match("\tif (a &&\n\t    b && 0)\n"));
    }
}
