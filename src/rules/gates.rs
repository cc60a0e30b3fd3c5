//! Safety gates: an `if` whose body refuses (an error return, `return false`, a goto
//! to an error label). The `gate` check judges what a change did to one, not the
//! words around it: a bail-out that can no longer run (a constant condition above
//! it, `#if 0` or an `#ifdef` of a name nobody defines), a checking function that
//! returns success before it checks anything, and, against the clean file, a gate
//! whose bail-out went away while its function stayed, or whose threshold was moved.

use super::cfile::{
    always_false, always_true, disjuncts, strip_parens, CFile, CondKind, Kind, Stmt,
};
use crate::finding::Severity;
use regex::Regex;
use std::collections::HashSet;
use std::sync::LazyLock;

/// `#ifdef` names that exist to switch code off: nothing in a kernel build defines them.
static NEVER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(ifdef|if defined) ?\(? ?(NEVER|NEVER_\w+|DISABLED?|DISABLED?_\w+|NOT_?DEFINED|NOTYET|notyet|XXX|UNUSED|REMOVED|SKIP_\w+|NO_CHECKS?)\b")
        .expect("never regex")
});

/// A success return: what a checking function says when it has found nothing wrong.
static SUCCESS: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^return \(?(0|true)\)?;$").expect("success regex"));

/// A refusal: the statements that make an `if` a gate.
static BAIL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(return -?\(?-E[A-Z0-9]+\)?|return (false|NULL)|(ret|r|err|error|retval|status|rc) = -E[A-Z0-9]+|goto \w*(err|fail|bail|invalid|unsupported|reject|abort)\w*) ?;$")
        .expect("bail regex")
});

/// Names of functions whose job is to check: a success return at their top skips it.
static CHECKER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)(check([^p]|$)|valid|verify|support|allow|permi|capab|sanity|^is_|_is_|^can_|_can_|compat|_ok$)")
        .expect("checker regex")
});

/// What a file must contain for [`neutralised`] to find anything: a constant in a
/// condition, `#if 0` or an `#ifdef` of a never-defined name, or a success return among
/// the first lines of a function body. Checked on the code view (comments blanked)
/// before the file is parsed.
pub(crate) fn trigger() -> &'static Regex {
    static T: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(concat!(
            r"\(\s*(0|false|!1|!true)\s*\)?\s*&&|\|\|\s*\(?\s*(1|true|!0)\s*\)",
            r"|\(\s*(1|true|!0)\s*\)?\s*\|\||&&\s*\(?\s*(0|false)\s*\)",
            r"|\bif\s*\(\s*\(?\s*(0|1|false|true|!0|!1)\s*\)?\s*\)",
            r"|#\s*if\s+0\b|#\s*if(def|\s+defined)\s*\(?\s*(NEVER|DISABLED?|NOT_?DEFINED|NOTYET|notyet|XXX|UNUSED|REMOVED|SKIP_|NO_CHECK)",
            r"|(?i:check(_\w*|s|er|ed)?|valid\w*|verify\w*|support\w*|allow\w*|permi\w*|capab\w*|sanity\w*|\bis_\w*|_is_\w*|\bcan_\w*|_can_\w*|compat\w*|_ok)",
            r"\s*\([^{};]*\)\s*\n\{[ \t]*\n([^\n{}]*\n){0,12}?\s*return\s+\(?(0|true)\)?\s*;",
        ))
        .expect("gate trigger")
    });
    &T
}

/// Whether a statement is a refusal ([`BAIL`]).
pub(crate) fn is_bail(text: &str) -> bool {
    BAIL.is_match(text)
}

/// Whole-file forms: the bail-out (or success return) at `si` shows a gate made
/// harmless in place. Returns what was seen.
pub(crate) fn neutralised(stmts: &[Stmt], si: usize) -> Option<String> {
    let s = &stmts[si];
    s.ctx.function.as_ref()?;
    if SUCCESS.is_match(&s.text) {
        return early_success(stmts, si);
    }
    if !is_bail(&s.text) {
        return None;
    }
    // Only the innermost `if` is the gate: a constant further out switches off a
    // whole block of work with its own checks inside (upstream keeps a table parse
    // behind `if (0 && offset)`), which is not a check neutralised.
    let innermost = s.ctx.conds.iter().rposition(|c| c.kind == CondKind::If);
    for (i, c) in s.ctx.conds.iter().enumerate() {
        match c.kind {
            CondKind::If if Some(i) == innermost => {
                let dead = if c.negated {
                    always_true(&c.text)
                } else {
                    always_false(&c.text)
                };
                if dead {
                    return Some(format!(
                        "`{}` can never run: the condition above it, `if ({})`, is constant{}.",
                        s.text,
                        c.text,
                        if c.negated {
                            " true and it is in the else branch"
                        } else {
                            " false"
                        }
                    ));
                }
                // One of several reasons to refuse made constant false (`... || (0 &&
                // vram_used > vram_size)`): the gate still runs, that limit no longer does.
                if !c.negated {
                    let alts = disjuncts(strip_parens(&c.text));
                    if alts.len() > 1 {
                        if let Some(off) = alts.iter().find(|d| always_false(d)) {
                            return Some(format!(
                                "`{}` no longer refuses for `{off}`: that part of `if ({})` is constant false.",
                                s.text, c.text
                            ));
                        }
                    }
                }
            }
            CondKind::Preproc
                if !c.negated
                    && (c.text == "if 0" || NEVER.is_match(&c.text))
                    && inside_live_function(stmts, si) =>
            {
                return Some(format!("`{}` is compiled out by `#{}`.", s.text, c.text));
            }
            _ => {}
        }
    }
    None
}

/// Whether the refusal at `si` is a gate (under an `if`) cut out of a function that is
/// itself compiled: upstream keeps whole unused functions under `#if 0`, a patch cuts
/// the check out of one that runs.
fn inside_live_function(stmts: &[Stmt], si: usize) -> bool {
    let s = &stmts[si];
    if !s.ctx.conds.iter().any(|c| c.kind == CondKind::If) {
        return false;
    }
    let func = s.ctx.function.as_deref();
    stmts
        .iter()
        .find(|t| t.ctx.function.as_deref() == func)
        .is_some_and(|t| !t.ctx.dead)
}

/// `return 0;` / `return true;` as the first thing a checking function does, with
/// refusals after it that can then never run.
fn early_success(stmts: &[Stmt], si: usize) -> Option<String> {
    let s = &stmts[si];
    let func = s.ctx.function.as_deref()?;
    if !CHECKER.is_match(func) || s.ctx.dead {
        return None;
    }
    if s.ctx.conds.iter().any(|c| c.kind != CondKind::Preproc) {
        return None;
    }
    let same = |t: &&Stmt| t.ctx.function.as_deref() == Some(func) && !t.ctx.dead;
    // Only declarations (statements without conditions, none a return) before it.
    let before_ok = stmts[..si]
        .iter()
        .rev()
        .take_while(|t| t.ctx.function.as_deref() == Some(func))
        .filter(same)
        .all(|t| {
            t.kind == Kind::Preproc
                || (t.kind == Kind::Statement
                    && !t.text.starts_with("return")
                    && t.ctx.conds.iter().all(|c| c.kind == CondKind::Preproc))
                || (t.kind == Kind::Control && t.ctx.conds.is_empty() && t.text.contains('('))
                    && !t.text.starts_with("if ")
                    && !t.text.starts_with("for ")
                    && !t.text.starts_with("while ")
                    && !t.text.starts_with("switch ")
        });
    if !before_ok {
        return None;
    }
    // What it skips: a refusal later in the same function, or the answer of the check
    // it wraps (`return devcgroup_check_permission(...)` of a permission helper).
    let skipped = stmts[si + 1..]
        .iter()
        .take_while(|t| t.ctx.function.as_deref() == Some(func))
        .filter(same)
        .find(|t| is_bail(&t.text) || returns_check(&t.text))?;
    Some(format!(
        "`{}` is the first thing {func}() does: the check that follows (up to `{}` on line {}) never runs.",
        s.text, skipped.text, skipped.line
    ))
}

/// `return <checking call>(...);`: a function whose answer is another check's.
fn returns_check(text: &str) -> bool {
    static RET: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"^return !?\(?(\w+) ?\(").expect("return-call regex"));
    RET.captures(text)
        .is_some_and(|c| CHECKER.is_match(&c[1]) && !SUCCESS.is_match(text))
}

fn squash(s: &str) -> String {
    s.chars().filter(|c| !c.is_whitespace()).collect()
}

/// The innermost `if` above a statement: (condition, negated, line).
fn gate_of(s: &Stmt) -> Option<(&str, bool, usize)> {
    s.ctx
        .conds
        .iter()
        .rev()
        .find(|c| c.kind == CondKind::If)
        .map(|c| (c.text.as_str(), c.negated, c.line))
}

/// A condition with every identifier but the constant-looking ones (`true`, `NULL`)
/// replaced by `I`: a renamed variable leaves it the same, a changed test does not.
fn names(cond: &str) -> String {
    static ID: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\b[A-Za-z_]\w*\b").expect("id"));
    squash(&ID.replace_all(cond, |c: &regex::Captures| match &c[0] {
        "true" | "false" | "NULL" | "sizeof" => c[0].to_string(),
        _ => "I".to_string(),
    }))
}

/// Numbers in a condition, and the condition with each replaced by `#`.
fn numbers(cond: &str) -> (String, Vec<i128>) {
    static NUM: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"\b(0[xX][0-9a-fA-F]+|[0-9]+)[uUlL]*\b").expect("num"));
    let mut vals = Vec::new();
    let shape = NUM.replace_all(cond, |c: &regex::Captures| {
        let t = &c[1];
        let v = if let Some(h) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
            i128::from_str_radix(h, 16).unwrap_or(0)
        } else {
            t.parse().unwrap_or(0)
        };
        vals.push(v);
        "#"
    });
    (squash(&shape), vals)
}

/// Diff-aware: the clean file's refusal at `si` has no counterpart in the changed file
/// (the engine established that). Whether that is a gate neutralised, and how; None
/// when the code around it went too (a function rewritten, a feature removed), which
/// is upstream evolution, not a check cut out.
pub(crate) fn lost(old: &CFile, new: &CFile, si: usize) -> Option<(String, Option<Severity>)> {
    let s = &old.stmts[si];
    let func = s.ctx.function.as_deref()?;
    let (cond, negated, cline) = gate_of(s)?;
    let live = |t: &&Stmt| t.ctx.function.as_deref() == Some(func) && !t.ctx.dead;
    let new_fn: Vec<&Stmt> = new.stmts.iter().filter(live).collect();
    if new_fn.is_empty() {
        return None;
    }
    let old_fn: Vec<&Stmt> = old.stmts.iter().filter(live).collect();
    // The rest of the function must have survived nearly whole: a patch that cuts a
    // check out leaves everything else alone; a rewrite does not.
    let in_gate = |t: &Stmt| {
        t.line == cline
            || t.ctx
                .conds
                .iter()
                .any(|c| c.kind == CondKind::If && c.line == cline)
    };
    let new_set: HashSet<String> = new_fn.iter().map(|t| squash(&t.text)).collect();
    let old_set: HashSet<String> = old_fn.iter().map(|t| squash(&t.text)).collect();
    let outside: Vec<&&Stmt> = old_fn.iter().filter(|t| !in_gate(t)).collect();
    let kept = outside
        .iter()
        .filter(|t| new_set.contains(&squash(&t.text)))
        .count();
    let added = new_fn
        .iter()
        .filter(|t| !old_set.contains(&squash(&t.text)))
        .count();
    if outside.len() > kept + 1 || added > 6 {
        return None;
    }
    let sc = squash(cond);
    let bail = squash(&s.text);
    let same_cond: Vec<&&Stmt> = new_fn
        .iter()
        .filter(|t| gate_of(t).is_some_and(|(c, n, _)| squash(c) == sc && n == negated))
        .collect();
    if !same_cond.is_empty() {
        // Still refusing, maybe with another error code: not neutralised.
        if same_cond.iter().any(|t| is_bail(&t.text)) {
            return None;
        }
        // The condition is still tested, its refusal is not: a warning that goes on.
        return Some((
            format!(
                "The check `if ({cond})` in {func}() no longer refuses: `{}` was taken out of it and what is left goes on.",
                s.text
            ),
            None,
        ));
    }
    // The same refusal under the same condition with other numbers: a threshold moved.
    // With other names and the same numbers and operators: a rename, which keeps it.
    let (shape, vals) = numbers(cond);
    let words = names(cond);
    for t in &new_fn {
        let Some((c, n, _)) = gate_of(t) else {
            continue;
        };
        if n != negated || squash(&t.text) != bail {
            continue;
        }
        if names(c) == words {
            return None;
        }
        let (nshape, nvals) = numbers(c);
        if nshape == shape && nvals != vals {
            return Some((
                format!(
                    "The check in {func}() now reads `if ({c})` where the clean driver has `if ({cond})`: the value it compares against was changed, so `{}` no longer refuses what it did.",
                    s.text
                ),
                None,
            ));
        }
    }
    // The whole gate is gone while the code around it stayed. Left behind in a
    // comment or under `#if 0`, it was switched off on purpose. Plainly deleted, it may
    // be either: upstream drops checks that no longer apply in just this way (the
    // 6.1 -> 6.12 history has several), so that is worth a look, not an alarm.
    let prose = squash(&new.views.prose);
    let dead = new.stmts.iter().any(|t| {
        t.ctx.dead
            && t.ctx.function.as_deref() == Some(func)
            && squash(&t.text) == bail
            && gate_of(t).is_some_and(|(c, _, _)| squash(c) == sc)
    });
    if dead || (prose.contains(&sc) && prose.contains(&bail)) {
        return Some((
            format!(
                "The check `if ({cond})` with `{}` in {func}() was {}; the rest of the function is unchanged.",
                s.text,
                if dead { "compiled out" } else { "commented out" }
            ),
            None,
        ));
    }
    Some((
        format!(
            "The check `if ({cond})` with `{}` was deleted from {func}(); the rest of the function is unchanged. Upstream also drops checks that no longer apply, so this is for a human to judge.",
            s.text
        ),
        Some(Severity::Medium),
    ))
}

/// Whether the clean file's statement at `si` is still in the changed file, in the same
/// function, under an `if` that differs only in the names it uses: a renamed variable
/// or helper keeps the check, so its refusal was not removed.
pub(crate) fn renamed(old: &CFile, new: &CFile, si: usize) -> bool {
    let s = &old.stmts[si];
    let Some(func) = s.ctx.function.as_deref() else {
        return false;
    };
    let Some((cond, negated, _)) = gate_of(s) else {
        return false;
    };
    // An identical condition does not count: that is another copy of the same check,
    // and this one is gone.
    let (text, shape, exact) = (squash(&s.text), names(cond), squash(cond));
    new.stmts.iter().any(|t| {
        !t.ctx.dead
            && t.ctx.function.as_deref() == Some(func)
            && squash(&t.text) == text
            && gate_of(t)
                .is_some_and(|(c, n, _)| n == negated && names(c) == shape && squash(c) != exact)
    })
}
