//! The rule file format (`patterns/*.toml`, documented in `patterns/README.md`) and
//! its compilation into [`Rule`]s. Every problem names the file and line: a TOML
//! syntax error, an unknown key, a bad regex or glob, an unknown severity, scope or
//! check, a duplicate id.

use super::{Check, Example, On, Removal, Rule, Scope};
use crate::error::Error;
use crate::finding::Severity;
use globset::{GlobSet, GlobSetBuilder};
use regex::Regex;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSpec {
    /// Driver versions every rule of the file was run against (clean, whole-file).
    #[serde(default)]
    checked: Vec<String>,
    #[serde(default)]
    rule: Vec<RuleSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum TableValue {
    Int(i64),
    Str(String),
}

impl TableValue {
    fn text(&self) -> String {
        match self {
            TableValue::Int(i) => i.to_string(),
            TableValue::Str(s) => s.clone(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSpec {
    id: Spanned<String>,
    title: String,
    severity: Spanned<String>,
    files: Vec<Spanned<String>>,
    #[serde(default)]
    exclude: Vec<Spanned<String>>,
    #[serde(default)]
    scope: Option<Spanned<String>>,
    #[serde(default)]
    removal: Option<Spanned<String>>,
    #[serde(default)]
    on: Option<Spanned<String>>,
    #[serde(default, rename = "match")]
    pattern: Option<Spanned<String>>,
    #[serde(default)]
    window: Option<Spanned<usize>>,
    #[serde(default)]
    unless: Vec<Spanned<String>>,
    #[serde(default)]
    unless_guard: Vec<Spanned<String>>,
    #[serde(default)]
    when_guard: Vec<Spanned<String>>,
    #[serde(default)]
    unless_depends: Vec<Spanned<String>>,
    #[serde(default)]
    evidence: Vec<Spanned<String>>,
    #[serde(default)]
    checked: Vec<String>,
    #[serde(default)]
    in_function: Option<Spanned<String>>,
    #[serde(default)]
    not_in_function: Option<Spanned<String>>,
    #[serde(default)]
    require: Option<Spanned<String>>,
    #[serde(default)]
    anchor: Option<Spanned<String>>,
    #[serde(default)]
    check: Option<Spanned<String>>,
    #[serde(default)]
    key: Option<Spanned<String>>,
    #[serde(default)]
    missing: Option<String>,
    #[serde(default)]
    table: BTreeMap<String, Vec<TableValue>>,
    why: String,
    fix: String,
    #[serde(default)]
    example: Vec<Spanned<ExampleSpec>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExampleSpec {
    fires: bool,
    code: String,
    #[serde(default)]
    clean: Option<String>,
    #[serde(default)]
    file: Option<String>,
    #[serde(default)]
    line: Option<usize>,
}

/// 1-based line of a byte offset. An error at the very end of a file that ends with a
/// newline (an unterminated string, say) names the last line, one the user can open.
fn line_of(text: &str, offset: usize) -> usize {
    let line = text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1;
    line.min(text.lines().count().max(1))
}

struct Ctx<'a> {
    origin: &'a Path,
    text: &'a str,
}

impl Ctx<'_> {
    fn err<T>(&self, span: std::ops::Range<usize>, msg: impl Into<String>) -> Result<T, Error> {
        Err(Error::malformed(
            self.origin,
            line_of(self.text, span.start),
            msg.into(),
        ))
    }

    fn regex(&self, s: &Spanned<String>, what: &str) -> Result<Regex, Error> {
        Regex::new(s.get_ref()).or_else(|e| {
            let first = e.to_string();
            let short = first.lines().last().unwrap_or(&first).trim().to_string();
            self.err(s.span(), format!("bad regex in `{what}`: {short}"))
        })
    }

    fn regexes(&self, v: &[Spanned<String>], what: &str) -> Result<Vec<Regex>, Error> {
        v.iter().map(|s| self.regex(s, what)).collect()
    }

    fn globs(&self, v: &[Spanned<String>], what: &str) -> Result<GlobSet, Error> {
        let mut b = GlobSetBuilder::new();
        for g in v {
            let glob = globset::GlobBuilder::new(g.get_ref())
                .literal_separator(true)
                .build()
                .or_else(|e| self.err(g.span(), format!("bad glob in `{what}`: {e}")))?;
            b.add(glob);
        }
        b.build()
            .or_else(|e| self.err(0..0, format!("bad globs in `{what}`: {e}")))
    }
}

/// Parses one rule file. `origin` names it in errors (a path, or `builtin:NAME`).
pub(crate) fn parse(origin: &Path, text: &str) -> Result<Vec<Rule>, Error> {
    let cx = Ctx { origin, text };
    let spec: FileSpec = toml::from_str(text).or_else(|e: toml::de::Error| {
        let span = e.span().unwrap_or(0..0);
        cx.err(span, e.message().trim().to_string())
    })?;
    let mut out = Vec::new();
    for r in spec.rule {
        let mut rule = compile(&cx, r)?;
        // A rule's own list adds to its file's (a rule added later may be checked on less).
        if rule.checked.is_empty() {
            rule.checked = spec.checked.clone();
        }
        out.push(rule);
    }
    Ok(out)
}

fn compile(cx: &Ctx, r: RuleSpec) -> Result<Rule, Error> {
    let id = r.id.get_ref().trim().to_string();
    let line = line_of(cx.text, r.id.span().start);
    if id.is_empty()
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return cx.err(
            r.id.span(),
            format!("rule id `{id}`: use letters, digits, '-' and '_' (e.g. KFD-MEM-001)"),
        );
    }
    let severity = Severity::parse(r.severity.get_ref()).map_or_else(
        || {
            cx.err(
                r.severity.span(),
                format!(
                    "rule {id}: unknown severity `{}` (critical, high, medium, low, info)",
                    r.severity.get_ref()
                ),
            )
        },
        Ok,
    )?;
    let scope = match r.scope.as_ref().map(|s| s.get_ref().as_str()) {
        None | Some("added") => Scope::Added,
        Some("added-only") => Scope::AddedOnly,
        Some("removed") => Scope::Removed,
        Some("file") => Scope::File,
        Some(other) => {
            return cx.err(
                r.scope.as_ref().unwrap().span(),
                format!("rule {id}: unknown scope `{other}` (added, added-only, removed, file)"),
            )
        }
    };
    let removal = match r.removal.as_ref().map(|s| s.get_ref().as_str()) {
        None | Some("any") => Removal::Any,
        Some("deleted") => Removal::Deleted,
        Some("replaced") => Removal::Replaced,
        Some(other) => {
            return cx.err(
                r.removal.as_ref().unwrap().span(),
                format!("rule {id}: unknown `removal` value `{other}` (any, deleted, replaced)"),
            )
        }
    };
    if let (Some(rm), false) = (&r.removal, scope == Scope::Removed) {
        return cx.err(
            rm.span(),
            format!("rule {id}: `removal` only applies to scope = \"removed\""),
        );
    }
    let on = match r.on.as_ref().map(|s| s.get_ref().as_str()) {
        None | Some("code") => On::Code,
        Some("line") => On::Line,
        Some("prose") => On::Prose,
        Some(other) => {
            return cx.err(
                r.on.as_ref().unwrap().span(),
                format!("rule {id}: unknown `on` value `{other}` (code, line, prose)"),
            )
        }
    };
    let check = match r.check.as_ref().map(|s| s.get_ref().as_str()) {
        None => None,
        Some("gfx-target-table") => Some(Check::GfxTargetTable),
        Some("table") => Some(Check::Table),
        Some("gate") => Some(Check::Gate),
        Some(other) => {
            return cx.err(
                r.check.as_ref().unwrap().span(),
                format!("rule {id}: unknown check `{other}` (gfx-target-table, table, gate)"),
            )
        }
    };
    let key_from_case = match r.key.as_ref().map(|s| s.get_ref().as_str()) {
        None | Some("capture") => false,
        Some("case") => true,
        Some(other) => {
            return cx.err(
                r.key.as_ref().unwrap().span(),
                format!("rule {id}: unknown `key` value `{other}` (capture, case)"),
            )
        }
    };
    if r.files.is_empty() {
        return cx.err(
            r.id.span(),
            format!("rule {id}: `files` is empty; name the files it applies to"),
        );
    }
    let pattern = r
        .pattern
        .as_ref()
        .map(|p| cx.regex(p, "match"))
        .transpose()?;
    let require = r
        .require
        .as_ref()
        .map(|p| cx.regex(p, "require"))
        .transpose()?;
    if pattern.is_none() && require.is_none() {
        return cx.err(
            r.id.span(),
            format!("rule {id}: needs `match` (what to find) or `require` (what must be present)"),
        );
    }
    if pattern.is_some() && require.is_some() {
        return cx.err(
            r.id.span(),
            format!("rule {id}: `match` and `require` cannot be combined; split it in two rules"),
        );
    }
    if require.is_some() && r.in_function.is_none() {
        return cx.err(
            r.id.span(),
            format!("rule {id}: `require` needs `in_function` (where it must be present)"),
        );
    }
    if !r.evidence.is_empty() && require.is_none() {
        return cx.err(
            r.evidence[0].span(),
            format!("rule {id}: `evidence` only applies to `require` rules"),
        );
    }
    if check.is_some() && pattern.is_none() {
        return cx.err(r.id.span(), format!("rule {id}: `check` needs `match`"));
    }
    if check == Some(Check::Table) && r.table.is_empty() {
        return cx.err(
            r.id.span(),
            format!("rule {id}: check `table` needs a `table`"),
        );
    }
    if let (Some(Check::Table), Some(p), false) = (check, pattern.as_ref(), key_from_case) {
        if !p.capture_names().any(|n| n == Some("key")) {
            return cx.err(
                r.pattern.as_ref().unwrap().span(),
                format!("rule {id}: check `table` needs a `(?P<key>...)` group in `match` (or key = \"case\")"),
            );
        }
    }
    if let (Some(Check::Table), Some(p)) = (check, pattern.as_ref()) {
        if !p.capture_names().any(|n| n == Some("value")) {
            return cx.err(
                r.pattern.as_ref().unwrap().span(),
                format!("rule {id}: check `table` needs a `(?P<value>...)` group in `match`"),
            );
        }
    }
    let window = match &r.window {
        Some(w) if *w.get_ref() == 0 || *w.get_ref() > 50 => {
            return cx.err(
                w.span(),
                format!("rule {id}: `window` must be 1 to 50 lines"),
            )
        }
        Some(w) => *w.get_ref(),
        None => 1,
    };
    if r.why.trim().is_empty() || r.fix.trim().is_empty() || r.title.trim().is_empty() {
        return cx.err(
            r.id.span(),
            format!("rule {id}: `title`, `why` and `fix` must say something"),
        );
    }
    let files = cx.globs(&r.files, "files")?;
    let exclude = cx.globs(&r.exclude, "exclude")?;
    let mut examples = Vec::new();
    for e in &r.example {
        examples.push(Example {
            fires: e.get_ref().fires,
            code: e.get_ref().code.clone(),
            clean: e.get_ref().clean.clone(),
            file: e.get_ref().file.clone(),
            line: e.get_ref().line,
            source_line: line_of(cx.text, e.span().start),
        });
    }
    let table = r
        .table
        .iter()
        .map(|(k, v)| {
            (
                super::checks::norm_key(k),
                v.iter()
                    .map(|x| super::checks::norm_value(&x.text()))
                    .collect(),
            )
        })
        .collect();
    let prefilter = pattern
        .as_ref()
        .map(super::prefilter)
        .transpose()
        .or_else(|e| {
            cx.err(
                r.pattern.as_ref().unwrap().span(),
                format!("rule {id}: {e}"),
            )
        })?;
    let function_prefilter = r
        .in_function
        .as_ref()
        .map(|p| {
            cx.regex(p, "in_function").and_then(|re| {
                super::prefilter(&re).or_else(|e| cx.err(p.span(), format!("rule {id}: {e}")))
            })
        })
        .transpose()?;
    // A gate check in place runs on refusals, which every file has: its quick filter is
    // what makes a neutralised one possible at all, so most files are never parsed.
    let quick = if check == Some(Check::Gate) && scope != Scope::Removed {
        Some(super::gates::trigger().clone())
    } else {
        pattern.as_ref().and_then(super::required_literals)
    };
    Ok(Rule {
        id,
        quick,
        title: r.title.trim().to_string(),
        severity,
        scope,
        removal,
        on,
        file_globs: r.files.iter().map(|g| g.get_ref().clone()).collect(),
        files,
        exclude,
        pattern,
        prefilter,
        window,
        unless: cx.regexes(&r.unless, "unless")?,
        unless_guard: cx.regexes(&r.unless_guard, "unless_guard")?,
        when_guard: cx.regexes(&r.when_guard, "when_guard")?,
        unless_depends: cx.regexes(&r.unless_depends, "unless_depends")?,
        evidence: cx.regexes(&r.evidence, "evidence")?,
        checked: r.checked.clone(),
        in_function: r
            .in_function
            .as_ref()
            .map(|p| cx.regex(p, "in_function"))
            .transpose()?,
        function_prefilter,
        not_in_function: r
            .not_in_function
            .as_ref()
            .map(|p| cx.regex(p, "not_in_function"))
            .transpose()?,
        require,
        anchor: r
            .anchor
            .as_ref()
            .map(|p| cx.regex(p, "anchor"))
            .transpose()?,
        check,
        key_from_case,
        missing: r.missing.map(|m| super::checks::norm_value(&m)),
        table,
        why: r.why.trim().to_string(),
        fix: r.fix.trim().to_string(),
        examples,
        origin: cx.origin.to_path_buf(),
        line,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_error_at_the_end_names_the_last_line() {
        assert_eq!(super::line_of("a\nb\n", 4), 2);
        assert_eq!(super::line_of("a\nb\n", 2), 2);
        assert_eq!(super::line_of("a\nb", 0), 1);
        assert_eq!(super::line_of("", 0), 1);
    }
}
