//! `kfd-audit explain RULE-ID`: one rule's full text, as `rustc --explain` does for
//! an error code. The scan's default report names each finding by its rule id in one
//! line; the why, the fix and the examples the rule carries are here (and under each
//! finding with `scan -v`).

use crate::app::{Cli, Format};
use crate::exit::Outcome;
use crate::rules::Rule;
use crate::term;
use clap::Args;
use serde::Serialize;
use std::fmt::Write as _;
use std::io::Write;

#[derive(Debug, Args)]
pub(crate) struct ExplainArgs {
    /// The rule id a report names (KFD-MEM-001); 'kfd-audit rules list' lists them all
    #[arg(value_name = "RULE-ID")]
    pub id: String,
}

/// Prefixes of the findings that the checks in Rust make (the running driver, ROCm
/// user space, the DKMS build): their why and fix are written for what was found.
const CHECK_PREFIXES: &[&str] = &["LIVE-", "ROCM-", "DKMS-"];

/// An example of the rule, for JSON.
#[derive(Serialize)]
struct ExampleView<'a> {
    fires: bool,
    code: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    clean: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    file: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    line: Option<usize>,
}

/// The rule as JSON: what `rules list --format json` gives, plus the texts.
#[derive(Serialize)]
struct RuleView<'a> {
    id: &'a str,
    severity: &'a str,
    title: &'a str,
    scope: &'a str,
    files: &'a [String],
    origin: String,
    checked: &'a [String],
    why: &'a str,
    fix: &'a str,
    examples: Vec<ExampleView<'a>>,
}

fn view(r: &Rule) -> RuleView<'_> {
    RuleView {
        id: &r.id,
        severity: r.severity.as_str(),
        title: &r.title,
        scope: r.scope.as_str(),
        files: &r.file_globs,
        origin: format!("{}:{}", term::path(&r.origin), r.line),
        checked: &r.checked,
        why: r.why.trim(),
        fix: r.fix.trim(),
        examples: r
            .examples
            .iter()
            .map(|e| ExampleView {
                fires: e.fires,
                code: &e.code,
                clean: e.clean.as_deref(),
                file: e.file.as_deref(),
                line: e.line,
            })
            .collect(),
    }
}

/// What the scope means for a reader.
fn scope_meaning(r: &Rule) -> &'static str {
    match r.scope {
        crate::rules::Scope::Added => {
            "lines a change added (the whole file when no clean copy is known)"
        }
        crate::rules::Scope::AddedOnly => "lines a change added (not run without a clean copy)",
        crate::rules::Scope::Removed => "lines a change removed (needs a clean copy)",
        crate::rules::Scope::File => "the whole file, changed or not",
    }
}

/// Indents every line of a block of text by `indent`, each escaped; tabs become
/// spaces (C examples are indented with tabs, which escaping would show as `\t`).
fn block(out: &mut String, text: &str, indent: &str) {
    for line in text.trim_end().lines() {
        let line = line.trim_end().replace('\t', "    ");
        let _ = writeln!(out, "{indent}{}", term::escape(&line));
    }
}

/// The rule as text: heading, where it applies, why, fix, examples.
fn text(r: &Rule) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} ({}): {}",
        term::escape(&r.id),
        r.severity.as_str(),
        term::escape(&r.title)
    );
    let _ = writeln!(out, "  files:   {}", term::escape(&r.file_globs.join(" ")));
    let _ = writeln!(out, "  looks at {}", scope_meaning(r));
    if !r.checked.is_empty() {
        let _ = writeln!(
            out,
            "  checked clean on: {}",
            term::escape(&r.checked.join(", "))
        );
    }
    let _ = writeln!(out, "  defined in {}:{}", term::path(&r.origin), r.line);
    let _ = writeln!(out, "\nWhy it matters:");
    block(&mut out, r.why.trim(), "  ");
    let _ = writeln!(out, "\nHow to undo it:");
    block(&mut out, r.fix.trim(), "  ");
    for (fires, heading) in [
        (true, "It fires on"),
        (false, "It stays quiet on (harmless or upstream code)"),
    ] {
        let examples: Vec<_> = r.examples.iter().filter(|e| e.fires == fires).collect();
        if examples.is_empty() {
            continue;
        }
        let _ = writeln!(out, "\n{heading}:");
        for (i, e) in examples.iter().enumerate() {
            if i > 0 {
                let _ = writeln!(out, "  --");
            }
            if let Some(f) = &e.file {
                let _ = writeln!(out, "  in {}:", term::escape(f));
            }
            if let Some(clean) = &e.clean {
                let _ = writeln!(out, "  where the clean file has:");
                block(&mut out, clean, "    ");
                let _ = writeln!(out, "  and the changed file has:");
            }
            block(&mut out, &e.code, "    ");
        }
    }
    out
}

/// The rule as Markdown, for a bug report.
fn markdown(r: &Rule) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## {} ({}): {}\n\nFiles: `{}`. Defined in `{}:{}`.\n\n**Why:** {}\n\n**Fix:** {}",
        r.id,
        r.severity.as_str(),
        r.title,
        r.file_globs.join("`, `"),
        term::path(&r.origin),
        r.line,
        r.why.trim(),
        r.fix.trim()
    );
    for e in &r.examples {
        let _ = writeln!(
            out,
            "\n{}:\n\n```c\n{}\n```",
            if e.fires { "Fires on" } else { "Quiet on" },
            e.code.trim_end()
        );
    }
    out
}

/// `kfd-audit explain RULE-ID`.
pub(crate) fn cmd(cli: &Cli, args: &ExplainArgs, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    let set = crate::app::rules::load(&cli.rules)?;
    let id = args.id.trim();
    let rule = set
        .get(id)
        .or_else(|| set.rules().iter().find(|r| r.id.eq_ignore_ascii_case(id)));
    let Some(rule) = rule else {
        let upper = id.to_ascii_uppercase();
        let checks = if CHECK_PREFIXES.iter().any(|p| upper.starts_with(p)) {
            "; findings of the running-driver, ROCm and DKMS checks carry their own why and fix: 'kfd-audit scan -v'"
        } else {
            ""
        };
        anyhow::bail!(
            "no rule '{}': 'kfd-audit rules list' lists every rule id{checks}",
            term::escape(id)
        );
    };
    match cli.format {
        Format::Json => {
            serde_json::to_writer_pretty(&mut *out, &view(rule))?;
            writeln!(out)?;
        }
        Format::Markdown => out.write_all(markdown(rule).as_bytes())?,
        Format::Text | Format::Prometheus => {
            crate::pager::page(text(rule), cli.pager_enabled(), out)?
        }
    }
    Ok(Outcome::Clean)
}
