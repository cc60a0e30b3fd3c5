//! Module options and the kernel command line: settings that outlive a clean source
//! tree. The incident wrote `options amdgpu mtype_local=1 noretry=0 vm_fragment_size=9`
//! into /etc/modprobe.d, and recoveries leave `modprobe.blacklist=amdgpu` or
//! `nomodeset` on the kernel line.
//!
//! Read, under the root:
//! - modprobe.d (modprobe.d(5), kmod): `*.conf` in /etc/modprobe.d, /run/modprobe.d,
//!   /usr/local/lib/modprobe.d, /lib/modprobe.d, /usr/lib/modprobe.d. A file name in an
//!   earlier directory hides the same name in a later one; all files are then read in
//!   the order of their names. A line ending in `\` continues on the next; a line whose
//!   first word starts with `#` is a comment. `options` lines accumulate, so for the same
//!   parameter the last one read wins.
//! - the running kernel's command line (`/proc/cmdline`), and the boot configuration
//!   that makes the next one: `GRUB_CMDLINE_LINUX` and `GRUB_CMDLINE_LINUX_DEFAULT` in
//!   /etc/default/grub and /etc/default/grub.d/*.cfg (shell fragments, sourced in that
//!   order), and /etc/kernel/cmdline (kernel-install, systemd-boot).
//!
//! Each setting is normalised to one line (`amdgpu.noretry=0`, `blacklist amdgpu`,
//! `nomodeset`) and judged by the rules in `patterns/modprobe.toml`.

use crate::beyond::{self, Action, OptionsSection, SectionStatus, SystemFinding};
use crate::error::{Error, Result};
use crate::finding::{Finding, Severity};
use crate::root::Root;
use regex::Regex;
use serde::Deserialize;
use std::collections::{BTreeMap, HashSet};
use std::os::unix::fs::MetadataExt;

/// modprobe.d directories, highest priority first (kmod's search order).
pub const MODPROBE_DIRS: &[&str] = &[
    "/etc/modprobe.d",
    "/run/modprobe.d",
    "/usr/local/lib/modprobe.d",
    "/lib/modprobe.d",
    "/usr/lib/modprobe.d",
];
pub const PROC_CMDLINE: &str = "/proc/cmdline";
pub const GRUB_DEFAULT: &str = "/etc/default/grub";
pub const GRUB_DEFAULT_D: &str = "/etc/default/grub.d";
pub const KERNEL_CMDLINE: &str = "/etc/kernel/cmdline";
const GRUB_VARS: &[&str] = &["GRUB_CMDLINE_LINUX", "GRUB_CMDLINE_LINUX_DEFAULT"];

/// The modules whose settings are read.
pub const MODULES: &[&str] = &["amdgpu", "amdkfd"];

/// The built-in option rules.
pub const RULES_TOML: &str = include_str!("../patterns/modprobe.toml");
const RULES_NAME: &str = "patterns/modprobe.toml (built in)";

/// Where a setting was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A modprobe.d file.
    Modprobe,
    /// The running kernel's command line.
    RunningKernel,
    /// A GRUB_CMDLINE_LINUX* assignment in /etc/default/grub(.d).
    Grub,
    /// /etc/kernel/cmdline.
    KernelCmdlineFile,
}

/// One setting as read, before the rules judge it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    /// What the rules match: `amdgpu.noretry=0`, `blacklist amdgpu`, `nomodeset`.
    pub normalized: String,
    /// The setting as written: `noretry=0`, `blacklist amdgpu`, `modprobe.blacklist=amdgpu`.
    pub raw: String,
    /// The line it is on (the joined line, for continued modprobe.d lines).
    pub line_text: String,
    /// System path of the file.
    pub file: String,
    /// 1-based physical line where the setting is written.
    pub line: usize,
    pub origin: Origin,
    /// Whether the setting is all its line holds (the fix removes the whole line).
    pub whole_line: bool,
    /// `amdgpu.noretry` for a module parameter: a later setting of the same key wins.
    pub key: Option<String>,
    /// GRUB variable the setting belongs to.
    pub grub_var: Option<&'static str>,
    /// A later setting of the same parameter that takes precedence (file, line).
    pub overridden_by: Option<(String, usize)>,
    /// A later assignment of the GRUB variable that drops this setting (file, line).
    pub replaced_by: Option<(String, usize)>,
}

// ---------------------------------------------------------------- tokenising

/// Splits like the kernel's `next_arg()`: whitespace separates, double quotes group and
/// are removed. Returns each argument with the byte offset where it starts.
pub fn split_args(s: &str) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= bytes.len() {
            break;
        }
        let start = i;
        let mut in_quote = false;
        let mut arg = String::new();
        while i < bytes.len() && (in_quote || !bytes[i].is_ascii_whitespace()) {
            if bytes[i] == b'"' {
                in_quote = !in_quote;
            }
            i += 1;
        }
        arg.push_str(&s[start..i].replace('"', ""));
        out.push((arg, start));
    }
    out
}

/// modprobe.d logical lines as kmod reads them: a trailing `\` joins the next physical
/// line (backslash and newline removed). Each logical line comes with the physical line
/// of every byte, so a setting on a continuation line is reported where it is written.
pub fn modprobe_lines(text: &str) -> Vec<(String, Vec<usize>)> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut lines_of = Vec::new();
    let mut open = false;
    for (i, physical) in text.lines().enumerate() {
        let (content, continued) = match physical.strip_suffix('\\') {
            Some(c) => (c, true),
            None => (physical, false),
        };
        cur.push_str(content);
        lines_of.extend(std::iter::repeat_n(i + 1, content.len()));
        open = continued;
        if !continued {
            out.push((std::mem::take(&mut cur), std::mem::take(&mut lines_of)));
        }
    }
    if open {
        out.push((cur, lines_of));
    }
    out
}

fn underscores(s: &str) -> String {
    s.replace('-', "_")
}

/// Classifies one kernel command-line argument: `Some((normalized, key))` when it is
/// about amdgpu/amdkfd (a parameter, a blacklist entry, `nomodeset`).
pub fn classify_kernel_arg(arg: &str) -> Option<(String, Option<String>)> {
    let (name, value) = match arg.split_once('=') {
        Some((n, v)) => (n, Some(v)),
        None => (arg, None),
    };
    match (name, value) {
        ("nomodeset", None) => return Some(("nomodeset".into(), None)),
        ("modprobe.blacklist" | "module_blacklist" | "rd.driver.blacklist", Some(v)) => {
            let hit = v
                .split(',')
                .any(|m| MODULES.contains(&underscores(m.trim()).as_str()));
            return hit.then(|| (format!("{name}={v}"), None));
        }
        ("initcall_blacklist", Some(v)) => {
            return v
                .split(',')
                .any(|f| f.trim() == "amdgpu_init")
                .then(|| (format!("{name}={v}"), None));
        }
        _ => {}
    }
    let (module, param) = name.split_once('.')?;
    let module = underscores(module);
    if !MODULES.contains(&module.as_str()) || param.is_empty() {
        return None;
    }
    let key = format!("{module}.{}", underscores(param));
    let normalized = match value {
        Some(v) => format!("{key}={v}"),
        None => key.clone(),
    };
    Some((normalized, Some(key)))
}

// ---------------------------------------------------------------- modprobe.d

/// Parses one modprobe.d file into settings about amdgpu/amdkfd.
pub fn parse_modprobe(file: &str, text: &str) -> Vec<Setting> {
    let mut out = Vec::new();
    for (logical, lines_of) in modprobe_lines(text) {
        let line_at = |off: usize| {
            lines_of
                .get(off)
                .copied()
                .unwrap_or(*lines_of.last().unwrap_or(&1))
        };
        let words: Vec<(&str, usize)> = logical
            .split([' ', '\t'])
            .scan(0usize, |pos, w| {
                let start = *pos;
                *pos += w.len() + 1;
                Some((w, start))
            })
            .filter(|(w, _)| !w.is_empty())
            .collect();
        let Some(&(cmd, cmd_off)) = words.first() else {
            continue;
        };
        if cmd.starts_with('#') {
            continue;
        }
        let Some(&(module_word, module_off)) = words.get(1) else {
            continue;
        };
        let module = underscores(module_word);
        if !MODULES.contains(&module.as_str()) {
            continue;
        }
        let line_text = logical.trim().to_string();
        let mk =
            |normalized: String, raw: String, line: usize, whole: bool, key: Option<String>| {
                Setting {
                    normalized,
                    raw,
                    line_text: line_text.clone(),
                    file: file.to_string(),
                    line,
                    origin: Origin::Modprobe,
                    whole_line: whole,
                    key,
                    grub_var: None,
                    overridden_by: None,
                    replaced_by: None,
                }
            };
        match cmd {
            "options" => {
                let rest_off = module_off + module_word.len();
                let params = split_args(&logical[rest_off..]);
                let whole = params.len() == 1;
                for (p, off) in params {
                    let (name, value) = match p.split_once('=') {
                        Some((n, v)) => (n.to_string(), Some(v.to_string())),
                        None => (p.clone(), None),
                    };
                    let key = format!("{module}.{}", underscores(&name));
                    let normalized = match &value {
                        Some(v) => format!("{key}={v}"),
                        None => key.clone(),
                    };
                    out.push(mk(normalized, p, line_at(rest_off + off), whole, Some(key)));
                }
            }
            "blacklist" => out.push(mk(
                format!("blacklist {module}"),
                line_text.clone(),
                line_at(cmd_off),
                true,
                None,
            )),
            "install" => {
                let command = logical[module_off + module_word.len()..].trim();
                out.push(mk(
                    format!("install {module} {command}"),
                    line_text.clone(),
                    line_at(cmd_off),
                    true,
                    None,
                ));
            }
            _ => {}
        }
    }
    out
}

/// The modprobe.d files that apply, in the order kmod reads them, and notes about
/// files hidden by a same-named file in a higher-priority directory.
pub fn modprobe_files(root: &Root) -> (Vec<String>, Vec<String>) {
    let mut by_name: BTreeMap<String, String> = BTreeMap::new();
    let mut seen: HashSet<(u64, u64)> = HashSet::new();
    let mut notes = Vec::new();
    for dir in MODPROBE_DIRS {
        for path in beyond::list_dir(root, dir, ".conf") {
            let host = beyond::resolve_in_root(root, &path);
            // /lib is /usr/lib on merged-/usr systems: the same file seen twice.
            if let Ok(m) = std::fs::metadata(&host) {
                if !seen.insert((m.dev(), m.ino())) {
                    continue;
                }
            }
            let name = path.rsplit('/').next().unwrap_or_default().to_string();
            match by_name.get(&name) {
                Some(winner) => notes.push(format!(
                    "{path} is not read: {winner} has the same name and takes its place"
                )),
                None => {
                    by_name.insert(name, path);
                }
            }
        }
    }
    (by_name.into_values().collect(), notes)
}

// ---------------------------------------------------------------- GRUB

/// One assignment to a GRUB_CMDLINE_LINUX* variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrubAssignment {
    pub var: &'static str,
    pub file: String,
    /// Line of the variable name.
    pub line: usize,
    /// Arguments in the value with the line each starts on; `None` marks where the
    /// value refers to the variable's previous value (`$GRUB_CMDLINE_LINUX`).
    pub parts: Vec<Option<(String, usize)>>,
}

/// Reads one shell word starting at `i`: quotes, backslashes and `\<newline>` handled
/// as sh does. Returns the word's characters with their lines, and the index after it.
fn shell_word(chars: &[(char, usize)], mut i: usize) -> (Vec<(char, usize)>, usize) {
    let mut word = Vec::new();
    while i < chars.len() {
        let (c, l) = chars[i];
        match c {
            ' ' | '\t' | '\n' | ';' | '&' | '|' => break,
            '\'' => {
                i += 1;
                while i < chars.len() && chars[i].0 != '\'' {
                    word.push(chars[i]);
                    i += 1;
                }
                i += 1;
            }
            '"' => {
                i += 1;
                while i < chars.len() && chars[i].0 != '"' {
                    if chars[i].0 == '\\' && i + 1 < chars.len() {
                        let next = chars[i + 1].0;
                        if next == '\n' {
                            i += 2;
                            continue;
                        }
                        if matches!(next, '"' | '\\' | '$' | '`') {
                            word.push(chars[i + 1]);
                            i += 2;
                            continue;
                        }
                    }
                    word.push(chars[i]);
                    i += 1;
                }
                i += 1;
            }
            '\\' => {
                if i + 1 < chars.len() && chars[i + 1].0 != '\n' {
                    word.push(chars[i + 1]);
                }
                i += 2;
            }
            _ => {
                word.push((c, l));
                i += 1;
            }
        }
    }
    (word, i)
}

/// Finds the GRUB_CMDLINE_LINUX* assignments of a /etc/default/grub-style file. Other
/// assignments are read over (so that a quoted value spanning lines is not mistaken for
/// new statements) and ignored; nothing is expanded or run.
pub fn parse_grub(file: &str, text: &str) -> Vec<GrubAssignment> {
    let mut chars = Vec::with_capacity(text.len());
    let mut line = 1;
    for c in text.chars() {
        chars.push((c, line));
        if c == '\n' {
            line += 1;
        }
    }
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        // At the start of a statement.
        while i < chars.len() && matches!(chars[i].0, ' ' | '\t' | '\n' | ';') {
            i += 1;
        }
        if i >= chars.len() {
            break;
        }
        if chars[i].0 == '#' {
            while i < chars.len() && chars[i].0 != '\n' {
                i += 1;
            }
            continue;
        }
        let start_line = chars[i].1;
        let (first, after) = shell_word(&chars, i);
        let mut word: String = first.iter().map(|(c, _)| *c).collect();
        let mut word_chars = first;
        i = after;
        if word == "export" {
            while i < chars.len() && matches!(chars[i].0, ' ' | '\t') {
                i += 1;
            }
            let (w, a) = shell_word(&chars, i);
            word = w.iter().map(|(c, _)| *c).collect();
            word_chars = w;
            i = a;
        }
        if let Some((name, _)) = word.split_once('=') {
            if let Some(&var) = GRUB_VARS.iter().find(|v| **v == name) {
                let value = &word_chars[name.len() + 1..];
                let mut parts = Vec::new();
                let mut cur = String::new();
                let mut cur_line = 0;
                let flush = |cur: &mut String,
                             cur_line: usize,
                             parts: &mut Vec<Option<(String, usize)>>| {
                    if cur.is_empty() {
                        return;
                    }
                    let t = std::mem::take(cur);
                    let bare = t
                        .trim_start_matches('$')
                        .trim_start_matches('{')
                        .trim_end_matches('}');
                    if t.starts_with('$') && bare == var {
                        parts.push(None);
                    } else if !t.starts_with('$') {
                        parts.push(Some((t, cur_line)));
                    }
                };
                for &(c, l) in value {
                    if c.is_whitespace() {
                        flush(&mut cur, cur_line, &mut parts);
                    } else {
                        if cur.is_empty() {
                            cur_line = l;
                        }
                        cur.push(c);
                    }
                }
                flush(&mut cur, cur_line, &mut parts);
                out.push(GrubAssignment {
                    var,
                    file: file.to_string(),
                    line: start_line,
                    parts,
                });
            }
        }
        // Skip the rest of this simple command.
        while i < chars.len() && !matches!(chars[i].0, '\n' | ';') {
            let (_, a) = shell_word(&chars, i);
            i = if a == i { i + 1 } else { a };
        }
    }
    out
}

/// Applies GRUB assignments in order: the final arguments of each variable (each with
/// where it was written) and the arguments that a later assignment dropped.
#[allow(clippy::type_complexity)]
fn apply_grub(
    assignments: &[GrubAssignment],
) -> (
    Vec<(&'static str, String, String, usize)>,
    Vec<(&'static str, String, String, usize, (String, usize))>,
) {
    // var -> [(arg, file, line)]
    let mut current: BTreeMap<&'static str, Vec<(String, String, usize)>> = BTreeMap::new();
    let mut dropped = Vec::new();
    for a in assignments {
        let previous = current.remove(a.var).unwrap_or_default();
        let keeps = a.parts.iter().any(Option::is_none);
        if !keeps {
            for (arg, file, line) in &previous {
                dropped.push((
                    a.var,
                    arg.clone(),
                    file.clone(),
                    *line,
                    (a.file.clone(), a.line),
                ));
            }
        }
        let mut next = Vec::new();
        for p in &a.parts {
            match p {
                None => next.extend(previous.iter().cloned()),
                Some((arg, line)) => next.push((arg.clone(), a.file.clone(), *line)),
            }
        }
        current.insert(a.var, next);
    }
    let mut finals = Vec::new();
    for var in GRUB_VARS {
        for (arg, file, line) in current.remove(var).unwrap_or_default() {
            finals.push((*var, arg, file, line));
        }
    }
    (finals, dropped)
}

// ---------------------------------------------------------------- rules

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    id: String,
    title: String,
    severity: String,
    #[serde(rename = "match")]
    pattern: String,
    unless: Option<String>,
    bits_any: Option<u64>,
    why: String,
    fix: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    rule: Vec<RawRule>,
}

/// One option rule, compiled.
#[derive(Debug, Clone)]
pub struct OptionRule {
    pub id: String,
    pub title: String,
    pub severity: Severity,
    pub pattern: Regex,
    pub unless: Option<Regex>,
    pub bits_any: Option<u64>,
    pub why: String,
    pub fix: String,
}

fn parse_number(s: &str) -> Option<u64> {
    let s = s.trim();
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

impl OptionRule {
    /// Whether the rule fires on a normalised setting.
    pub fn matches(&self, normalized: &str) -> bool {
        let Some(caps) = self.pattern.captures(normalized) else {
            return false;
        };
        if self.unless.as_ref().is_some_and(|u| u.is_match(normalized)) {
            return false;
        }
        match self.bits_any {
            None => true,
            Some(bits) => caps
                .name("value")
                .and_then(|v| parse_number(v.as_str()))
                .is_some_and(|v| v & bits != 0),
        }
    }
}

fn one_paragraph(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Parses and compiles a rule file; errors name the file and the rule.
pub fn load_rules(name: &str, text: &str) -> Result<Vec<OptionRule>> {
    let bad = |msg: String| Error::Refused {
        path: name.into(),
        message: msg,
    };
    let file: RuleFile =
        toml::from_str(text).map_err(|e| bad(format!("not a valid rule file: {e}")))?;
    let mut seen = HashSet::new();
    file.rule
        .into_iter()
        .map(|r| {
            if !seen.insert(r.id.clone()) {
                return Err(bad(format!("rule {} is defined twice", r.id)));
            }
            let severity = Severity::parse(&r.severity)
                .ok_or_else(|| bad(format!("rule {}: unknown severity '{}'", r.id, r.severity)))?;
            let compile = |p: &str| {
                Regex::new(p).map_err(|e| bad(format!("rule {}: bad expression: {e}", r.id)))
            };
            let pattern = compile(&r.pattern)?;
            if r.bits_any.is_some() && !pattern.capture_names().any(|n| n == Some("value")) {
                return Err(bad(format!(
                    "rule {}: bits_any needs a (?P<value>...) group in match",
                    r.id
                )));
            }
            Ok(OptionRule {
                unless: r.unless.as_deref().map(compile).transpose()?,
                id: r.id,
                title: r.title,
                severity,
                pattern,
                bits_any: r.bits_any,
                // Rule texts are wrapped in the file; they are read as one paragraph.
                why: one_paragraph(&r.why),
                fix: one_paragraph(&r.fix),
            })
        })
        .collect()
}

/// The built-in rules.
pub fn builtin_rules() -> Vec<OptionRule> {
    load_rules(RULES_NAME, RULES_TOML).expect("built-in option rules are valid (unit-tested)")
}

// ---------------------------------------------------------------- scan

fn first_existing(root: &Root, candidates: &[(&str, &str)], default: &str) -> String {
    candidates
        .iter()
        .find(|(path, _)| root.path(path).exists())
        .map(|(_, cmd)| cmd.to_string())
        .unwrap_or_else(|| default.to_string())
}

fn initramfs_command(root: &Root) -> String {
    first_existing(
        root,
        &[
            ("/usr/sbin/update-initramfs", "update-initramfs -u -k all"),
            ("/sbin/update-initramfs", "update-initramfs -u -k all"),
            ("/usr/bin/dracut", "dracut -f --regenerate-all"),
            ("/usr/sbin/dracut", "dracut -f --regenerate-all"),
            ("/usr/bin/mkinitcpio", "mkinitcpio -P"),
        ],
        "update-initramfs -u -k all",
    )
}

fn grub_command(root: &Root) -> String {
    first_existing(
        root,
        &[
            ("/usr/sbin/update-grub", "update-grub"),
            (
                "/usr/sbin/grub2-mkconfig",
                "grub2-mkconfig -o /boot/grub2/grub.cfg",
            ),
            (
                "/usr/sbin/grub-mkconfig",
                "grub-mkconfig -o /boot/grub/grub.cfg",
            ),
        ],
        "update-grub",
    )
}

/// Marks every setting of a parameter that a later one overrides.
fn mark_overrides(settings: &mut [Setting]) {
    let mut last: BTreeMap<String, (String, usize)> = BTreeMap::new();
    for s in settings.iter_mut().rev() {
        let Some(key) = &s.key else { continue };
        match last.get(key) {
            Some(later) => s.overridden_by = Some(later.clone()),
            None => {
                last.insert(key.clone(), (s.file.clone(), s.line));
            }
        }
    }
}

/// Everything read, before judging.
#[derive(Debug, Default)]
pub struct Collected {
    pub settings: Vec<Setting>,
    pub files: Vec<String>,
    pub notes: Vec<String>,
}

/// Reads every source of module options and kernel parameters under the root.
pub fn collect(root: &Root) -> Result<Collected> {
    let mut c = Collected::default();

    // modprobe.d
    let (files, notes) = modprobe_files(root);
    c.notes.extend(notes);
    let mut modprobe = Vec::new();
    for f in files {
        if let Some(text) = beyond::read_text(root, &f, &mut c.notes) {
            modprobe.extend(parse_modprobe(&f, &text));
            c.files.push(f);
        }
    }
    mark_overrides(&mut modprobe);
    c.settings.extend(modprobe);

    // GRUB: /etc/default/grub, then /etc/default/grub.d/*.cfg, as update-grub sources them.
    let mut assignments = Vec::new();
    let mut grub_files = vec![GRUB_DEFAULT.to_string()];
    grub_files.extend(beyond::list_dir(root, GRUB_DEFAULT_D, ".cfg"));
    for f in grub_files {
        if let Some(text) = beyond::read_text(root, &f, &mut c.notes) {
            assignments.extend(parse_grub(&f, &text));
            c.files.push(f);
        }
    }
    let (finals, dropped) = apply_grub(&assignments);
    let grub_line_text = |file: &str, line: usize| -> String {
        beyond::read_text(root, file, &mut Vec::new())
            .and_then(|t| {
                t.lines()
                    .nth(line.saturating_sub(1))
                    .map(|l| l.trim().to_string())
            })
            .unwrap_or_default()
    };
    let mut grub = Vec::new();
    for (var, arg, file, line) in &finals {
        if let Some((normalized, key)) = classify_kernel_arg(arg) {
            grub.push(Setting {
                normalized,
                raw: arg.clone(),
                line_text: grub_line_text(file, *line),
                file: file.clone(),
                line: *line,
                origin: Origin::Grub,
                whole_line: false,
                key,
                grub_var: Some(var),
                overridden_by: None,
                replaced_by: None,
            });
        }
    }
    mark_overrides(&mut grub);
    for (var, arg, file, line, by) in dropped {
        if let Some((normalized, key)) = classify_kernel_arg(&arg) {
            grub.push(Setting {
                normalized,
                raw: arg.clone(),
                line_text: grub_line_text(&file, line),
                file,
                line,
                origin: Origin::Grub,
                whole_line: false,
                key,
                grub_var: Some(var),
                overridden_by: None,
                replaced_by: Some(by),
            });
        }
    }
    c.settings.extend(grub);

    // /etc/kernel/cmdline
    if let Some(text) = beyond::read_text(root, KERNEL_CMDLINE, &mut c.notes) {
        let mut kc = Vec::new();
        for (i, l) in text.lines().enumerate() {
            for (arg, _) in split_args(l) {
                if let Some((normalized, key)) = classify_kernel_arg(&arg) {
                    kc.push(Setting {
                        normalized,
                        raw: arg.clone(),
                        line_text: arg.clone(),
                        file: KERNEL_CMDLINE.into(),
                        line: i + 1,
                        origin: Origin::KernelCmdlineFile,
                        whole_line: false,
                        key,
                        grub_var: None,
                        overridden_by: None,
                        replaced_by: None,
                    });
                }
            }
        }
        mark_overrides(&mut kc);
        c.settings.extend(kc);
        c.files.push(KERNEL_CMDLINE.into());
    }

    // The running kernel's command line.
    if let Some(text) = beyond::read_text(root, PROC_CMDLINE, &mut c.notes) {
        let mut running = Vec::new();
        for (arg, _) in split_args(&text) {
            if arg == "--" {
                break;
            }
            if let Some((normalized, key)) = classify_kernel_arg(&arg) {
                running.push(Setting {
                    normalized,
                    raw: arg.clone(),
                    line_text: arg.clone(),
                    file: PROC_CMDLINE.into(),
                    line: 1,
                    origin: Origin::RunningKernel,
                    whole_line: false,
                    key,
                    grub_var: None,
                    overridden_by: None,
                    replaced_by: None,
                });
            }
        }
        mark_overrides(&mut running);
        c.settings.extend(running);
        c.files.push(PROC_CMDLINE.into());
    }
    Ok(c)
}

/// The value of a loaded module's parameter, when sysfs under the root has it.
fn loaded_value(root: &Root, key: &str) -> Option<String> {
    let (module, param) = key.split_once('.')?;
    std::fs::read_to_string(root.path(format!("/sys/module/{module}/parameters/{param}")))
        .ok()
        .map(|s| s.trim().to_string())
}

fn judge(root: &Root, c: &Collected, rules: &[OptionRule]) -> Vec<SystemFinding> {
    let running: HashSet<&str> = c
        .settings
        .iter()
        .filter(|s| s.origin == Origin::RunningKernel && s.overridden_by.is_none())
        .map(|s| s.normalized.as_str())
        .collect();
    let boot_config: HashSet<&str> = c
        .settings
        .iter()
        .filter(|s| matches!(s.origin, Origin::Grub | Origin::KernelCmdlineFile))
        .filter(|s| s.replaced_by.is_none())
        .map(|s| s.normalized.as_str())
        .collect();
    let boot_files: Vec<&str> = c
        .files
        .iter()
        .map(String::as_str)
        .filter(|f| {
            *f != PROC_CMDLINE && (f.starts_with("/etc/default/grub") || *f == KERNEL_CMDLINE)
        })
        .collect();
    let initramfs = initramfs_command(root);
    let update_grub = grub_command(root);
    let mut out = Vec::new();
    for s in &c.settings {
        // A parameter on the running kernel's line that a boot configuration also sets
        // is reported where it can be removed.
        if s.origin == Origin::RunningKernel && boot_config.contains(s.normalized.as_str()) {
            continue;
        }
        for rule in rules.iter().filter(|r| r.matches(&s.normalized)) {
            let mut why = rule.why.clone();
            let mut severity = rule.severity;
            if let Some((f, l)) = &s.overridden_by {
                severity = Severity::Info;
                why.push_str(&format!(
                    " Here it has no effect: {f} line {l} sets the same parameter later, and the last setting wins."
                ));
            }
            if let Some((f, l)) = &s.replaced_by {
                severity = Severity::Info;
                why.push_str(&format!(
                    " Here it has no effect: the assignment at {f} line {l} replaces the variable's value."
                ));
            }
            let (fix, action) = match s.origin {
                Origin::Modprobe => {
                    let edit = if s.whole_line {
                        format!("Delete line {} of {} ('{}')", s.line, s.file, s.line_text)
                    } else {
                        format!("Remove '{}' from line {} of {}", s.raw, s.line, s.file)
                    };
                    if let Some((k, v)) = s
                        .key
                        .as_deref()
                        .and_then(|k| Some((k, loaded_value(root, k)?)))
                    {
                        let (module, param) = k.split_once('.').unwrap_or((k, ""));
                        why.push_str(&format!(
                            " The loaded module has it now: /sys/module/{module}/parameters/{param} is {v}."
                        ));
                    }
                    (
                        format!(
                            "{edit}, then run '{initramfs}' (the initramfs carries its own copy of modprobe.d) and reboot. {}",
                            rule.fix
                        ),
                        Action::RemoveSetting {
                            file: s.file.clone(),
                            line: s.line,
                            setting: if s.whole_line { s.line_text.clone() } else { s.raw.clone() },
                            whole_line: s.whole_line,
                            then: vec![initramfs.clone(), "reboot".into()],
                        },
                    )
                }
                Origin::Grub | Origin::KernelCmdlineFile => {
                    if running.contains(s.normalized.as_str()) {
                        why.push_str(" The running kernel was booted with it (/proc/cmdline).");
                    }
                    let (edit, then) = if s.origin == Origin::Grub {
                        (
                            format!(
                                "Remove '{}' from {} in {} line {}, run '{update_grub}' and reboot.",
                                s.raw,
                                s.grub_var.unwrap_or("the kernel command line"),
                                s.file,
                                s.line
                            ),
                            vec![update_grub.clone(), "reboot".into()],
                        )
                    } else {
                        (
                            format!(
                                "Remove '{}' from {} line {}, regenerate the boot entries (kernel-install) and reboot.",
                                s.raw, s.file, s.line
                            ),
                            vec!["kernel-install add <kernel> /boot/vmlinuz-<kernel>".into(), "reboot".into()],
                        )
                    };
                    (
                        format!("{edit} {}", rule.fix),
                        Action::RemoveSetting {
                            file: s.file.clone(),
                            line: s.line,
                            setting: s.raw.clone(),
                            whole_line: false,
                            then,
                        },
                    )
                }
                Origin::RunningKernel => {
                    let read = if boot_files.is_empty() {
                        "no boot configuration was found under this root".to_string()
                    } else {
                        format!(
                            "it is in no boot configuration kfd-audit read ({})",
                            boot_files.join(", ")
                        )
                    };
                    (
                        format!(
                            "The running kernel was booted with '{}', but {read}: it was probably typed at the boot menu, and a normal reboot drops it. If it is back after a reboot, look for it in /boot/grub/grub.cfg or /boot/loader/entries/*.conf. {}",
                            s.raw, rule.fix
                        ),
                        Action::Reboot,
                    )
                }
            };
            out.push(SystemFinding {
                finding: Finding {
                    rule: rule.id.clone(),
                    severity,
                    title: rule.title.clone(),
                    line: s.line,
                    text: s.line_text.clone(),
                    why,
                    fix,
                },
                source: s.file.clone(),
                package: None,
                backups: Vec::new(),
                action: if severity == Severity::Info {
                    Action::None
                } else {
                    action
                },
            });
        }
    }
    out
}

/// Runs the options section with the built-in rules.
pub fn scan(root: &Root) -> Result<(Vec<SystemFinding>, OptionsSection)> {
    let rules = builtin_rules();
    let c = collect(root)?;
    let findings = judge(root, &c, &rules);
    let status = if c.files.is_empty() {
        SectionStatus::Absent
    } else {
        SectionStatus::Checked
    };
    Ok((
        findings,
        OptionsSection {
            status,
            notes: c.notes,
            files: c.files,
            rules: RULES_NAME.into(),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_rules_load() {
        let rules = builtin_rules();
        assert!(rules.len() >= 15);
        let fires = |id: &str, s: &str| rules.iter().find(|r| r.id == id).unwrap().matches(s);
        assert!(fires("OPT-MTYPE-001", "amdgpu.mtype_local=1"));
        assert!(!fires("OPT-MTYPE-001", "amdgpu.mtype_local=0"));
        assert!(fires(
            "OPT-PPFEATURE-001",
            "amdgpu.ppfeaturemask=0xffffffff"
        ));
        assert!(fires(
            "OPT-PPFEATURE-001",
            "amdgpu.ppfeaturemask=4294967295"
        ));
        assert!(!fires(
            "OPT-PPFEATURE-001",
            "amdgpu.ppfeaturemask=0xfff7bfff"
        ));
        assert!(fires(
            "OPT-CMDLINE-BLACKLIST-001",
            "modprobe.blacklist=nouveau,amdgpu"
        ));
        assert!(!fires(
            "OPT-CMDLINE-BLACKLIST-001",
            "modprobe.blacklist=amdgpu_x"
        ));
        assert!(fires("OPT-INSTALL-001", "install amdgpu /bin/false"));
        assert!(!fires("OPT-INSTALL-002", "install amdgpu /bin/false"));
        assert!(fires(
            "OPT-INSTALL-002",
            "install amdgpu /sbin/modprobe --ignore-install amdgpu"
        ));
        assert!(fires("OPT-GWS-001", "amdgpu.hws_gws_support=Y"));
        assert!(!fires("OPT-GWS-001", "amdgpu.hws_gws_support=0"));
        assert!(fires("OPT-LARGEBAR-001", "amdgpu.debug_mask=0x2"));
        assert!(!fires("OPT-LARGEBAR-001", "amdgpu.debug_mask=1"));
    }

    #[test]
    fn rule_file_errors_name_the_rule() {
        let err = load_rules(
            "x.toml",
            "[[rule]]\nid='A'\ntitle='t'\nseverity='bad'\nmatch='a'\nwhy='w'\nfix='f'\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("x.toml") && err.contains("rule A"), "{err}");
        let err = load_rules("x.toml", "[[rule]]\nid='A'\ntitle='t'\nseverity='low'\nmatch='a'\nbits_any=1\nwhy='w'\nfix='f'\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("bits_any"), "{err}");
    }

    #[test]
    fn continuation_lines_keep_physical_lines() {
        let s = parse_modprobe(
            "/etc/modprobe.d/x.conf",
            "# comment \\\noptions amdgpu noretry=1\noptions amdgpu \\\n  mtype_local=1 \\\n  noretry=0\nblacklist radeon\n",
        );
        // The comment swallows its continuation line, as kmod does.
        let got: Vec<(&str, usize)> = s.iter().map(|s| (s.normalized.as_str(), s.line)).collect();
        assert_eq!(
            got,
            vec![("amdgpu.mtype_local=1", 4), ("amdgpu.noretry=0", 5)]
        );
        assert_eq!(s[0].line_text, "options amdgpu   mtype_local=1   noretry=0");
        assert!(!s[0].whole_line);
    }

    #[test]
    fn kernel_args() {
        assert_eq!(
            classify_kernel_arg("amdgpu.noretry=0"),
            Some(("amdgpu.noretry=0".into(), Some("amdgpu.noretry".into())))
        );
        assert_eq!(classify_kernel_arg("amd-gpu.x=1"), None,);
        assert_eq!(classify_kernel_arg("quiet"), None);
        assert_eq!(
            classify_kernel_arg("nomodeset"),
            Some(("nomodeset".into(), None))
        );
        assert_eq!(classify_kernel_arg("modprobe.blacklist=nouveau"), None);
        assert_eq!(
            split_args(r#"a "b c" d="e f""#)
                .into_iter()
                .map(|a| a.0)
                .collect::<Vec<_>>(),
            vec!["a", "b c", "d=e f"]
        );
    }

    #[test]
    fn grub_assignments() {
        let text = "# GRUB_CMDLINE_LINUX=\"nomodeset\"\nGRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX_DEFAULT=\"quiet splash \\\n  modprobe.blacklist=amdgpu\"\nGRUB_THEME='a\nb'\nexport GRUB_CMDLINE_LINUX=\"$GRUB_CMDLINE_LINUX amdgpu.noretry=0\"\n";
        let a = parse_grub("/etc/default/grub", text);
        assert_eq!(a.len(), 2);
        assert_eq!(a[0].var, "GRUB_CMDLINE_LINUX_DEFAULT");
        assert_eq!(
            a[0].parts.last().unwrap(),
            &Some(("modprobe.blacklist=amdgpu".to_string(), 4))
        );
        assert_eq!(
            a[1].parts,
            vec![None, Some(("amdgpu.noretry=0".to_string(), 7))]
        );
    }
}
