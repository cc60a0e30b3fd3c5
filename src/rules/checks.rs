//! Checks a regex cannot express, named by a rule's `check` key. Their data stays in
//! the rule's TOML (`table`), so a new chip is a line in a rule file, not a rebuild.

use super::cfile::Stmt;
use super::Rule;
use crate::finding::Severity;
use regex::{Captures, Regex};
use std::collections::HashMap;
use std::sync::LazyLock;

/// Normalises a table key: whitespace removed; `CHIP_NAVI10`, `navi10_device_info`
/// and `NAVI10` all become `navi10`; `IP_VERSION(10, 1, 10)` becomes `IP_VERSION(10,1,10)`.
pub(crate) fn norm_key(k: &str) -> String {
    let k: String = k.chars().filter(|c| !c.is_whitespace()).collect();
    if k.starts_with("IP_VERSION(") {
        return k;
    }
    let k = k.strip_prefix("CHIP_").unwrap_or(&k);
    let k = k.strip_suffix("_device_info").unwrap_or(k);
    let k = k.strip_suffix("_vf").unwrap_or(k);
    k.to_ascii_lowercase()
}

/// Normalises a value for comparison: numbers (decimal, hex, with C suffixes or in
/// parentheses) become their decimal value, `true`/`false` become 1/0, anything
/// else has its whitespace removed.
pub(crate) fn norm_value(v: &str) -> String {
    let s: String = v.chars().filter(|c| !c.is_whitespace()).collect();
    let mut t = s.as_str();
    while t.starts_with('(') && t.ends_with(')') && t.len() >= 2 {
        t = &t[1..t.len() - 1];
    }
    match t {
        "true" => return "1".into(),
        "false" => return "0".into(),
        _ => {}
    }
    if let Some(n) = parse_int(t).or_else(|| shifted(t)) {
        return n.to_string();
    }
    t.to_string()
}

/// A bit written as a shift (`1ULL<<2`, `(1<<31)`, `BIT(3)`, `BIT_ULL(51)`), as headers
/// spell flag values: the same bit spelt `0x4` must compare equal.
fn shifted(t: &str) -> Option<i128> {
    let inner = |p: &str| {
        t.strip_prefix(p)
            .and_then(|r| r.strip_prefix('('))
            .and_then(|r| r.strip_suffix(')'))
    };
    if let Some(n) = inner("BIT_ULL").or_else(|| inner("BIT")) {
        let n = parse_int(n)?;
        return (0..127).contains(&n).then(|| 1i128 << n);
    }
    let (a, b) = t.split_once("<<")?;
    let trim = |x: &str| x.trim_matches(|c| c == '(' || c == ')').to_string();
    let (a, b) = (parse_int(&trim(a))?, parse_int(&trim(b))?);
    (0..100)
        .contains(&b)
        .then(|| a.checked_shl(b as u32))
        .flatten()
}

/// A C integer literal (`0x10`, `100100`, `-1`, `1U`, `0xffffffffUL`).
pub(crate) fn parse_int(t: &str) -> Option<i128> {
    let (neg, t) = match t.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, t),
    };
    let t = t.trim_end_matches(['u', 'U', 'l', 'L']);
    let v = if let Some(h) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        i128::from_str_radix(h, 16).ok()?
    } else if t.len() > 1 && t.starts_with('0') && t.bytes().all(|b| b.is_ascii_digit()) {
        i128::from_str_radix(&t[1..], 8).ok()?
    } else if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        t.parse().ok()?
    } else {
        return None;
    };
    Some(if neg { -v } else { v })
}

static INT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\b(0[xX][0-9a-fA-F]+|[0-9]+)[uUlL]*\b").expect("integer regex"));
static INIT_NAME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(\w+)\s*(\[[^\]]*\])?\s*=\s*\{").expect("initializer regex"));
static IP: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^IP_VERSION\((\d+),(\d+),(\d+)\)$").expect("ip version regex"));

/// The result of a check on one match: fire or not, with a sentence for the user.
pub(crate) struct Verdict {
    pub fire: bool,
    pub detail: Option<String>,
    /// Set when the finding is worth less than the rule's severity.
    pub severity: Option<Severity>,
}

fn fire(detail: String) -> Verdict {
    Verdict {
        fire: true,
        detail: Some(detail),
        severity: None,
    }
}

/// A value this rule set has never seen: a note that the table ends here, not an alarm.
fn unknown(detail: String) -> Verdict {
    Verdict {
        fire: true,
        detail: Some(detail),
        severity: Some(Severity::Info),
    }
}

const QUIET: Verdict = Verdict {
    fire: false,
    detail: None,
    severity: None,
};

/// The keys that say which chip a statement is about: its `case` labels, or the
/// name of the initializer it is in (`navi10_device_info = { ... }`).
fn chip_keys(stmt: &Stmt, at: usize) -> Vec<String> {
    if !stmt.ctx.labels.is_empty() {
        return stmt.ctx.labels.iter().map(|l| norm_key(l)).collect();
    }
    INIT_NAME
        .captures_iter(&stmt.text[..at])
        .last()
        .map(|c| vec![norm_key(&c[1])])
        .unwrap_or_default()
}

static IDENT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\b[A-Za-z_]\w*\b").expect("identifier regex"));

/// Replaces names the file `#define`s by their values (a few levels deep).
fn expand(text: &str, defines: &HashMap<String, String>) -> String {
    let mut t = text.to_string();
    for _ in 0..4 {
        if defines.is_empty()
            || !IDENT
                .find_iter(&t)
                .any(|m| defines.contains_key(m.as_str()))
        {
            break;
        }
        t = IDENT
            .replace_all(&t, |c: &Captures| {
                defines
                    .get(&c[0])
                    .cloned()
                    .unwrap_or_else(|| c[0].to_string())
            })
            .into_owned();
    }
    t
}

/// The right-hand side of an assignment that starts at `from`: up to the `;`, or
/// the `,`/`}` that ends a designated initializer, at depth 0.
fn rhs(text: &str, from: usize) -> &str {
    let b = text.as_bytes();
    let mut depth = 0i32;
    for (i, &c) in b.iter().enumerate().skip(from) {
        match c {
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' if depth == 0 => return &text[from..i],
            b')' | b']' | b'}' => depth -= 1,
            b';' | b',' if depth == 0 => return &text[from..i],
            _ => {}
        }
    }
    &text[from..]
}

/// `gfx_target_version` must be what upstream gives the chip of its `case` arm.
///
/// The rule's `match` finds the assignment (its end is where the value starts). A
/// known arm must use one of its table values; an arm for a chip the table does not
/// know (a new `case IP_VERSION(11, 0, x)`) must at least keep the IP's major (and,
/// from GFX10 on, minor) version, which is how upstream numbers new targets; an
/// assignment outside any arm, or in `default:`, must not hard-code a target.
pub(crate) fn gfx_target(
    rule: &Rule,
    stmt: &Stmt,
    m: &Captures,
    defines: &HashMap<String, String>,
) -> Verdict {
    let whole = m.get(0).expect("match");
    let value = rhs(&stmt.text, whole.end());
    if value.trim_start().starts_with('=') {
        // `gfx_target_version == 100100` is a comparison.
        return QUIET;
    }
    let value = expand(value, defines);
    let values: Vec<i128> = INT
        .find_iter(&value)
        .filter_map(|n| parse_int(n.as_str()))
        .filter(|n| *n >= 1000)
        .collect();
    if values.is_empty() {
        return QUIET;
    }
    let keys = chip_keys(stmt, whole.start());
    // An arm of a switch that is not over chips (e.g. `case 0x731F:` of a switch on
    // the PCI device id) is no table entry.
    let chip_arm = stmt.ctx.labels.is_empty()
        || stmt
            .ctx
            .labels
            .iter()
            .any(|l| l.starts_with("IP_VERSION(") || l.starts_with("CHIP_") || l == "default");
    if !chip_arm {
        return fire(format!(
            "Here gfx_target_version is hard-coded to {} for case {}, outside the per-chip table.",
            join(&values),
            stmt.ctx.labels.join(", case ")
        ));
    }
    if keys.is_empty() {
        return fire(format!(
            "Here gfx_target_version is hard-coded to {} outside the per-chip table, so every GPU gets it.",
            join(&values)
        ));
    }
    let known: Vec<&Vec<String>> = keys.iter().filter_map(|k| rule.table.get(k)).collect();
    if !known.is_empty() {
        // Every chip of a shared arm gets the value: it must be right for each of
        // them (moving Navi10's label into Sienna Cichlid's arm is spoofing too).
        let allowed = intersect(&known);
        let bad: Vec<i128> = values
            .iter()
            .copied()
            .filter(|v| !allowed.iter().any(|a| **a == v.to_string()))
            .collect();
        if bad.is_empty() {
            return QUIET;
        }
        let upstream: Vec<&str> = known
            .iter()
            .flat_map(|v| v.iter().map(|s| s.as_str()))
            .collect();
        return fire(format!(
            "Here {} is given gfx_target_version {}; upstream gives {}.",
            pretty_keys(stmt),
            join(&bad),
            upstream.join(", ")
        ));
    }
    for k in &keys {
        if k == "default" {
            return fire(format!(
                "Here the `default:` arm hard-codes gfx_target_version {}, so every chip the table does not know gets it.",
                join(&values)
            ));
        }
        let Some(c) = IP.captures(k) else { continue };
        let (major, minor): (i128, i128) = (c[1].parse().unwrap_or(0), c[2].parse().unwrap_or(0));
        for v in &values {
            let vmajor = v / 10000;
            let vminor = (v / 100) % 100;
            if vmajor != major {
                return fire(format!(
                    "Here GC IP {}.{}.x is given gfx_target_version {v}, the ISA of another GPU generation.",
                    major, minor
                ));
            }
            if major >= 10 && vminor != minor {
                // The ISA of a chip the table knows, given to a chip it does not: a spoof.
                let known_target = rule
                    .table
                    .values()
                    .any(|vs| vs.iter().any(|x| *x == v.to_string()));
                if known_target {
                    return fire(format!(
                        "Here GC IP {}.{}.x is given gfx_target_version {v}, the ISA of another chip.",
                        major, minor
                    ));
                }
                // Neither the chip nor its target is in the table: a GPU newer than this
                // rule set (upstream does not always number a target after its IP: GC
                // 12.1.0 is gfx1250). Worth a note, not an alarm.
                return unknown(format!(
                    "Here {} is given gfx_target_version {v}: both are unknown to this rule set (a chip newer than its table?), so it cannot tell whether this is upstream's value.",
                    pretty_keys(stmt)
                ));
            }
        }
    }
    QUIET
}

/// The values every one of the lists allows.
fn intersect<'a>(lists: &[&'a Vec<String>]) -> Vec<&'a String> {
    lists[0]
        .iter()
        .filter(|v| lists[1..].iter().all(|l| l.contains(v)))
        .collect()
}

fn pretty_keys(stmt: &Stmt) -> String {
    if stmt.ctx.labels.is_empty() {
        "this chip".to_string()
    } else {
        format!("case {}", stmt.ctx.labels.join(", case "))
    }
}

fn join(v: &[i128]) -> String {
    v.iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A generic table: the value captured as `value` (or the rule's `missing` when the
/// group did not take part) must be one of the table's values for the key, which is
/// the captured `key` or, with `key = "case"`, the statement's case labels. Keys the
/// table does not know are not judged.
pub(crate) fn table(
    rule: &Rule,
    stmt: &Stmt,
    m: &Captures,
    defines: &HashMap<String, String>,
) -> Verdict {
    let keys: Vec<String> = if rule.key_from_case {
        chip_keys(stmt, m.get(0).map_or(0, |x| x.start()))
    } else {
        m.name("key")
            .map(|k| vec![norm_key(k.as_str())])
            .unwrap_or_default()
    };
    let known: Vec<&Vec<String>> = keys.iter().filter_map(|k| rule.table.get(k)).collect();
    if known.is_empty() {
        return QUIET;
    }
    let allowed = intersect(&known);
    let value = match (m.name("value"), &rule.missing) {
        (Some(v), _) => norm_value(&expand(v.as_str(), defines)),
        (None, Some(d)) => d.clone(),
        (None, None) => return QUIET,
    };
    if allowed.iter().any(|a| **a == value) {
        return QUIET;
    }
    let key = m
        .name("key")
        .map(|k| k.as_str().to_string())
        .unwrap_or_else(|| pretty_keys(stmt));
    fire(format!(
        "Here {key} is {}; upstream has {}.",
        m.name("value")
            .map_or("left at its default", |v| v.as_str().trim()),
        allowed
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(" or ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values() {
        assert_eq!(norm_key("IP_VERSION(10, 1, 10)"), "IP_VERSION(10,1,10)");
        assert_eq!(norm_key("CHIP_NAVI10"), "navi10");
        assert_eq!(norm_key("navi10_vf_device_info"), "navi10");
        assert_eq!(norm_value(" 0x00000001 "), "1");
        assert_eq!(norm_value("(-1)"), "-1");
        assert_eq!(norm_value("false"), "0");
        assert_eq!(norm_value("0xffffffffUL"), "4294967295");
        assert_eq!(norm_value("KFD_SCHED_POLICY_HWS"), "KFD_SCHED_POLICY_HWS");
        assert_eq!(norm_value("(1ULL << 2)"), "4");
        assert_eq!(norm_value("(1 << 31)"), norm_value("0x80000000"));
        assert_eq!(norm_value("BIT_ULL(51)"), (1i128 << 51).to_string());
        assert_eq!(norm_value("(0ULL << 2)"), "0");
        assert_eq!(rhs(" 100300; /* x */", 0), " 100300");
        assert_eq!(rhs(" a ? (1, 2) : 3, .x = 4", 0), " a ? (1, 2) : 3");
    }
}
