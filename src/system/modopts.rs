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
//! `nomodeset`) and the list is judged by the rule engine ([`crate::rules`]) as the
//! pseudo-file `<module-options>`: the built-in rules are `patterns/modprobe.toml`.

use crate::error::Result;
use crate::finding::{Finding, Severity};
use crate::io::root::Root;
use crate::rules::RuleSet;
use crate::system::{self, Action, OptionsSection, SectionStatus, SystemFinding};
use crate::system::{Collected, Context, Details, SystemSection};
use std::collections::{BTreeMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// modprobe.d directories, highest priority first (kmod's search order).
pub(crate) const MODPROBE_DIRS: &[&str] = &[
    "/etc/modprobe.d",
    "/run/modprobe.d",
    "/usr/local/lib/modprobe.d",
    "/lib/modprobe.d",
    "/usr/lib/modprobe.d",
];
pub(crate) const PROC_CMDLINE: &str = "/proc/cmdline";
pub(crate) const GRUB_DEFAULT: &str = "/etc/default/grub";
pub(crate) const GRUB_DEFAULT_D: &str = "/etc/default/grub.d";
pub(crate) const KERNEL_CMDLINE: &str = "/etc/kernel/cmdline";
const GRUB_VARS: &[&str] = &["GRUB_CMDLINE_LINUX", "GRUB_CMDLINE_LINUX_DEFAULT"];

/// The modules whose settings are read.
pub(crate) const MODULES: &[&str] = &["amdgpu", "amdkfd"];

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

impl Setting {
    /// A kernel command-line argument written in `file` at `line`, when it is one the
    /// rules judge (an amdgpu/amdkfd parameter, a blacklist, `nomodeset`, ...).
    fn kernel_arg(
        arg: &str,
        (file, line, line_text): (&str, usize, String),
        origin: Origin,
    ) -> Option<Setting> {
        let (normalized, key) = classify_kernel_arg(arg)?;
        Some(Setting {
            normalized,
            raw: arg.to_string(),
            line_text,
            file: file.to_string(),
            line,
            origin,
            whole_line: false,
            key,
            grub_var: None,
            overridden_by: None,
            replaced_by: None,
        })
    }
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
    let normalized = normal_setting(&key, value);
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
                    let normalized = normal_setting(&key, value.as_deref());
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
pub(crate) fn modprobe_files(root: &Root) -> (Vec<String>, Vec<String>) {
    let mut by_name: BTreeMap<String, String> = BTreeMap::new();
    let mut seen: HashSet<(u64, u64)> = HashSet::new();
    let mut notes = Vec::new();
    for dir in MODPROBE_DIRS {
        for path in system::list_dir(root, dir, ".conf") {
            // /lib is /usr/lib on merged-/usr systems: the same file seen twice.
            if let Ok(m) = root.resolve_in_root(&path).and_then(std::fs::metadata) {
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

/// The pseudo-file the option rules apply to (`files = ["<module-options>"]`): the
/// normalised settings, one per line. No file of a driver tree has this name.
pub(crate) const OPTIONS_PSEUDO_FILE: &str = "<module-options>";

/// Where the built-in option rules come from, for the report.
pub(crate) const RULES_NAME: &str = "patterns/modprobe.toml (built in), and --rules";

fn one_paragraph(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A whole number as the rules see it: below 10 in decimal, from 10 on in lower-case
/// hex (`4294967295` and `0xFFFFFFFF` → `0xffffffff`), so that a regex can test a bit.
/// Accepts what the kernel's `kstrto*(s, 0)` accepts: decimal, `0x` hex, `0` octal.
/// Anything else (negative numbers, `Y`, text) is kept as written.
pub fn canonical_value(v: &str) -> String {
    let n = if let Some(h) = v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        u64::from_str_radix(h, 16).ok()
    } else if v.len() > 1 && v.starts_with('0') && v.bytes().all(|b| b.is_ascii_digit()) {
        u64::from_str_radix(&v[1..], 8).ok()
    } else if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        v.parse().ok()
    } else {
        None
    };
    match n {
        Some(n) if n < 10 => n.to_string(),
        Some(n) => format!("0x{n:x}"),
        None => v.to_string(),
    }
}

/// `key=value` with the value made canonical; `key` alone when there is no value.
fn normal_setting(key: &str, value: Option<&str>) -> String {
    match value {
        Some(v) => format!("{key}={}", canonical_value(v)),
        None => key.to_string(),
    }
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
pub(crate) struct SettingsRead {
    pub settings: Vec<Setting>,
    pub files: Vec<String>,
    pub notes: Vec<String>,
}

/// Reads every source of module options and kernel parameters under the root.
pub(crate) fn read_settings(root: &Root) -> Result<SettingsRead> {
    let mut c = SettingsRead::default();

    // modprobe.d
    let (files, notes) = modprobe_files(root);
    c.notes.extend(notes);
    let mut modprobe = Vec::new();
    for f in files {
        if let Some(text) = system::read_text(root, &f, &mut c.notes) {
            modprobe.extend(parse_modprobe(&f, &text));
            c.files.push(f);
        }
    }
    mark_overrides(&mut modprobe);
    c.settings.extend(modprobe);

    // GRUB: /etc/default/grub, then /etc/default/grub.d/*.cfg, as update-grub sources them.
    let mut assignments = Vec::new();
    let mut grub_files = vec![GRUB_DEFAULT.to_string()];
    grub_files.extend(system::list_dir(root, GRUB_DEFAULT_D, ".cfg"));
    for f in grub_files {
        if let Some(text) = system::read_text(root, &f, &mut c.notes) {
            assignments.extend(parse_grub(&f, &text));
            c.files.push(f);
        }
    }
    let (finals, dropped) = apply_grub(&assignments);
    let grub_line_text = |file: &str, line: usize| -> String {
        system::read_text(root, file, &mut Vec::new())
            .and_then(|t| {
                t.lines()
                    .nth(line.saturating_sub(1))
                    .map(|l| l.trim().to_string())
            })
            .unwrap_or_default()
    };
    let mut grub = Vec::new();
    for (var, arg, file, line) in &finals {
        let at = (file.as_str(), *line, grub_line_text(file, *line));
        if let Some(s) = Setting::kernel_arg(arg, at, Origin::Grub) {
            grub.push(Setting {
                grub_var: Some(var),
                ..s
            });
        }
    }
    mark_overrides(&mut grub);
    for (var, arg, file, line, by) in dropped {
        let at = (file.as_str(), line, grub_line_text(&file, line));
        if let Some(s) = Setting::kernel_arg(&arg, at, Origin::Grub) {
            grub.push(Setting {
                grub_var: Some(var),
                replaced_by: Some(by),
                ..s
            });
        }
    }
    c.settings.extend(grub);

    // /etc/kernel/cmdline
    if let Some(text) = system::read_text(root, KERNEL_CMDLINE, &mut c.notes) {
        let mut kc = Vec::new();
        for (i, l) in text.lines().enumerate() {
            for (arg, _) in split_args(l) {
                let at = (KERNEL_CMDLINE, i + 1, arg.clone());
                kc.extend(Setting::kernel_arg(&arg, at, Origin::KernelCmdlineFile));
            }
        }
        mark_overrides(&mut kc);
        c.settings.extend(kc);
        c.files.push(KERNEL_CMDLINE.into());
    }

    // The running kernel's command line.
    if let Some(text) = system::read_text(root, PROC_CMDLINE, &mut c.notes) {
        let mut running = Vec::new();
        for (arg, _) in split_args(&text) {
            if arg == "--" {
                break;
            }
            let at = (PROC_CMDLINE, 1, arg.clone());
            running.extend(Setting::kernel_arg(&arg, at, Origin::RunningKernel));
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
    system::read_small(
        &root.path(format!("/sys/module/{module}/parameters/{param}")),
        system::MAX_TEXT_FILE,
    )
    .ok()
    .map(|s| String::from_utf8_lossy(&s).trim().to_string())
}

fn findings_for_settings(root: &Root, c: &SettingsRead, rules: &RuleSet) -> Vec<SystemFinding> {
    // The rule engine judges the normalised settings as one pseudo-file, a line each.
    let listing: String = c
        .settings
        .iter()
        .map(|s| format!("{}\n", s.normalized.replace('\n', " ")))
        .collect();
    let mut by_setting: Vec<Vec<Finding>> = vec![Vec::new(); c.settings.len()];
    for f in rules.check(Path::new(OPTIONS_PSEUDO_FILE), listing.as_bytes(), None) {
        if let Some(slot) = f.line.checked_sub(1).and_then(|i| by_setting.get_mut(i)) {
            slot.push(f);
        }
    }
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
    for (s, hits) in c.settings.iter().zip(by_setting) {
        // A parameter on the running kernel's line that a boot configuration also sets
        // is reported where it can be removed.
        if s.origin == Origin::RunningKernel && boot_config.contains(s.normalized.as_str()) {
            continue;
        }
        for rule in hits {
            let rule_fix = one_paragraph(&rule.fix);
            let mut why = one_paragraph(&rule.why);
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
                            rule_fix
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
                        format!("{edit} {rule_fix}"),
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
                            s.raw, rule_fix
                        ),
                        Action::Reboot,
                    )
                }
            };
            out.push(SystemFinding {
                finding: Finding {
                    rule: rule.rule.clone(),
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

/// The `options` section: module options and the kernel command line.
pub(crate) struct ModuleOptions;

impl SystemSection for ModuleOptions {
    fn section(&self) -> crate::system::Section {
        crate::system::Section::Options
    }

    fn collect(&self, root: &Root, ctx: &Context) -> Result<Collected> {
        let (findings, section) = scan(root, &ctx.opts.rules)?;
        Ok(Collected {
            findings,
            details: Details::Options(section),
        })
    }
}

/// Runs the options section with the rules in effect (those whose `files` name
/// `<module-options>`: the built-in `patterns/modprobe.toml` and any `--rules DIR`).
pub(crate) fn scan(root: &Root, rules: &RuleSet) -> Result<(Vec<SystemFinding>, OptionsSection)> {
    let c = read_settings(root)?;
    let findings = findings_for_settings(root, &c, rules);
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

// ---------------------------------------------------------------- blacklists

/// How a setting keeps amdgpu from running, as the recovery plan words it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Disables {
    /// A blacklist (`blacklist amdgpu`, `modprobe.blacklist=amdgpu`, ...): not loaded.
    NotLoaded,
    /// `install amdgpu /bin/false`: modprobe runs the command instead of loading it.
    Replaced,
    /// `nomodeset`, `amdgpu.modeset=0`, `initcall_blacklist=amdgpu_init`: loaded or
    /// built in, but it does not start.
    NotStarted,
}

/// Whether a setting in effect keeps amdgpu from running, and the part of it that
/// does (`modprobe.blacklist=amdgpu` out of `modprobe.blacklist=nouveau,amdgpu`).
pub(crate) fn disables_amdgpu(s: &Setting) -> Option<(Disables, String)> {
    if s.overridden_by.is_some() || s.replaced_by.is_some() {
        return None;
    }
    let n = s.normalized.as_str();
    if n == "blacklist amdgpu" {
        return Some((Disables::NotLoaded, n.to_string()));
    }
    if let Some(command) = n.strip_prefix("install amdgpu ") {
        // An install command that loads amdgpu after all (`modprobe --ignore-install
        // amdgpu`) does not keep it out; one that only succeeds or fails does.
        let program = command.split_whitespace().next().unwrap_or_default();
        let program = program.rsplit('/').next().unwrap_or_default();
        return matches!(program, "false" | "true")
            .then(|| (Disables::Replaced, format!("install amdgpu {command}")));
    }
    if n == "nomodeset" || n == "amdgpu.modeset=0" {
        return Some((Disables::NotStarted, n.to_string()));
    }
    let (name, list) = n.split_once('=')?;
    match name {
        "modprobe.blacklist" | "module_blacklist" | "rd.driver.blacklist" => list
            .split(',')
            .any(|m| underscores(m.trim()) == "amdgpu")
            .then(|| (Disables::NotLoaded, format!("{name}=amdgpu"))),
        "initcall_blacklist" => list.split(',').any(|f| f.trim() == "amdgpu_init").then(|| {
            (
                Disables::NotStarted,
                "initcall_blacklist=amdgpu_init".to_string(),
            )
        }),
        _ => None,
    }
}

/// Notes for the recovery plan about settings left in place that keep amdgpu from
/// running after the rebuild: on the running kernel's line, in the boot configuration
/// (GRUB, /etc/kernel/cmdline) and in modprobe.d. Read by the same parsers as the
/// options section (every modprobe.d directory, continuation lines, GRUB's shell
/// quoting and later assignments), so that `scan` and `plan` agree on what is there.
pub(crate) fn blacklist_notes(root: &Root) -> Vec<String> {
    let read = match read_settings(root) {
        Ok(read) => read,
        Err(e) => {
            return vec![format!(
                "module options and kernel command line not read: {e}"
            )]
        }
    };
    let mut notes: Vec<String> = Vec::new();
    for s in &read.settings {
        let Some((how, setting)) = disables_amdgpu(s) else {
            continue;
        };
        let file = crate::term::escape(&s.file);
        let setting = crate::term::escape(&setting);
        let state = match how {
            Disables::NotStarted => "amdgpu does not start",
            Disables::NotLoaded | Disables::Replaced => "amdgpu is not loaded",
        };
        let note = match s.origin {
            Origin::RunningKernel => format!(
                "this boot has {setting} on the kernel line: {state} now. \
                 Rebuild first; the next normal boot loads amdgpu again unless the boot configuration \
                 puts it back (see 'If the machine does not boot')"
            ),
            Origin::Grub => format!(
                "{file} puts {setting} on every boot: after the rebuild remove it from {} (line {}) \
                 and run update-grub (Fedora: grub2-mkconfig -o /boot/grub2/grub.cfg)",
                s.grub_var.unwrap_or("the kernel command line"),
                s.line
            ),
            Origin::KernelCmdlineFile => format!(
                "{file} puts {setting} on every boot: after the rebuild remove it (line {}) \
                 and regenerate the boot entries (kernel-install)",
                s.line
            ),
            Origin::Modprobe if how == Disables::Replaced => format!(
                "{file} makes modprobe run '{}' instead of loading amdgpu (line {}): after the rebuild \
                 remove that line (and update the initramfs) or amdgpu stays unloaded",
                crate::term::escape(&s.line_text),
                s.line
            ),
            Origin::Modprobe => format!(
                "{file} blacklists amdgpu (line {}): after the rebuild remove that line \
                 (and update the initramfs) or amdgpu stays unloaded",
                s.line
            ),
        };
        if !notes.contains(&note) {
            notes.push(note);
        }
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_option_rules_run_on_normalised_lines() {
        let rules = RuleSet::builtin();
        let fired = |line: &str| -> Vec<String> {
            rules
                .check(
                    Path::new(OPTIONS_PSEUDO_FILE),
                    format!("{line}\n").as_bytes(),
                    None,
                )
                .into_iter()
                .map(|f| f.rule)
                .collect()
        };
        let norm = |arg: &str| classify_kernel_arg(arg).unwrap().0;
        assert_eq!(
            fired(&norm("amdgpu.ppfeaturemask=4294967295")),
            ["OPT-PPFEATURE-001"]
        );
        assert_eq!(
            fired(&norm("amdgpu.ppfeaturemask=0xFFFFFFFF")),
            ["OPT-PPFEATURE-001"]
        );
        assert!(fired(&norm("amdgpu.ppfeaturemask=0xfff7bfff")).is_empty());
        assert_eq!(fired(&norm("amdgpu.debug_mask=2")), ["OPT-LARGEBAR-001"]);
        assert_eq!(fired(&norm("amdgpu.debug_mask=012")), ["OPT-LARGEBAR-001"]);
        assert!(fired(&norm("amdgpu.debug_mask=1")).is_empty());
        assert!(fired(&norm("amdgpu.debug_mask=010")).is_empty()); // octal 8
        assert_eq!(fired(&norm("amdgpu.force_asic_type=12")), ["OPT-ASIC-001"]);
        assert!(fired(&norm("amdgpu.force_asic_type=-1")).is_empty());
        // The tree's rules never look at the option list, nor these at tree files.
        assert!(rules
            .check(
                Path::new("amd/amdgpu/amdgpu_drv.c"),
                b"blacklist amdgpu\n",
                None
            )
            .is_empty());
    }

    #[test]
    fn canonical_values() {
        assert_eq!(canonical_value("0"), "0");
        assert_eq!(canonical_value("9"), "9");
        assert_eq!(canonical_value("10"), "0xa");
        assert_eq!(canonical_value("0x4000"), "0x4000");
        assert_eq!(canonical_value("0X0000FFFF"), "0xffff");
        assert_eq!(canonical_value("010"), "8");
        assert_eq!(canonical_value("-1"), "-1");
        assert_eq!(canonical_value("Y"), "Y");
        assert_eq!(canonical_value(""), "");
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

    /// The recovery plan's own reader saw only `/etc/default/grub`, whole words on a
    /// physical line, and every file in `/etc/modprobe.d`. These are what it missed
    /// (or reported wrongly) and the options section's parsers get right.
    #[test]
    fn blacklists_the_old_recovery_reader_missed() {
        let tmp = tempfile::tempdir().unwrap();
        let root = Root::open(tmp.path()).unwrap();
        let write = |p: &str, text: &str| {
            let host = root.path(p);
            std::fs::create_dir_all(host.parent().unwrap()).unwrap();
            std::fs::write(host, text).unwrap();
        };
        // What it found, worded as it was (the plan's tests look for these words).
        write(
            "/proc/cmdline",
            "BOOT_IMAGE=/vmlinuz ro modprobe.blacklist=nouveau,amdgpu\n",
        );
        write(
            "/etc/modprobe.d/no-amd.conf",
            "# recovery\nblacklist amdgpu\n",
        );
        // A later assignment replaces the blacklist: not on the next boot (the old
        // reader reported it), while a drop-in adds one (the old reader never read it).
        write(
            "/etc/default/grub",
            "GRUB_CMDLINE_LINUX_DEFAULT=\"quiet modprobe.blacklist=amdgpu\"\nGRUB_CMDLINE_LINUX_DEFAULT=\"quiet\"\n",
        );
        write(
            "/etc/default/grub.d/rescue.cfg",
            "GRUB_CMDLINE_LINUX=\"$GRUB_CMDLINE_LINUX \\\n  module_blacklist=amdgpu\"\n",
        );
        // An install command that fails instead of loading, a blacklist split over a
        // continuation line in a lower-priority directory, and a file kmod ignores
        // (not *.conf).
        write("/etc/modprobe.d/off.conf", "install amdgpu /bin/false\n");
        write("/usr/lib/modprobe.d/vendor.conf", "blacklist \\\namdgpu\n");
        write("/etc/modprobe.d/old.conf.disabled", "blacklist amdgpu\n");

        let notes = blacklist_notes(&root);
        let has = |text: &str| notes.iter().any(|n| n.contains(text));
        assert!(has("this boot has modprobe.blacklist=amdgpu"), "{notes:#?}");
        assert!(
            has("/etc/modprobe.d/no-amd.conf blacklists amdgpu"),
            "{notes:#?}"
        );
        assert!(
            has("/etc/default/grub.d/rescue.cfg puts module_blacklist=amdgpu on every boot"),
            "{notes:#?}"
        );
        assert!(
            has("/etc/modprobe.d/off.conf makes modprobe run 'install amdgpu /bin/false'"),
            "{notes:#?}"
        );
        assert!(
            has("/usr/lib/modprobe.d/vendor.conf blacklists amdgpu (line 1)"),
            "{notes:#?}"
        );
        assert!(!has("/etc/default/grub puts"), "{notes:#?}");
        assert!(!has("old.conf.disabled"), "{notes:#?}");
        assert_eq!(notes.len(), 5, "{notes:#?}");
    }

    #[test]
    fn what_keeps_amdgpu_out() {
        let arg = |a: &str| {
            let (normalized, key) = classify_kernel_arg(a).unwrap();
            Setting {
                normalized,
                raw: a.into(),
                line_text: a.into(),
                file: PROC_CMDLINE.into(),
                line: 1,
                origin: Origin::RunningKernel,
                whole_line: false,
                key,
                grub_var: None,
                overridden_by: None,
                replaced_by: None,
            }
        };
        let how = |a: &str| disables_amdgpu(&arg(a)).map(|d| d.0);
        assert_eq!(how("modprobe.blacklist=amdkfd"), None);
        assert_eq!(how("rd.driver.blacklist=amdgpu"), Some(Disables::NotLoaded));
        assert_eq!(how("nomodeset"), Some(Disables::NotStarted));
        assert_eq!(how("amdgpu.modeset=0"), Some(Disables::NotStarted));
        assert_eq!(how("amdgpu.modeset=1"), None);
        assert_eq!(
            how("initcall_blacklist=amdgpu_init"),
            Some(Disables::NotStarted)
        );
        let mut later = arg("amdgpu.modeset=0");
        later.overridden_by = Some((PROC_CMDLINE.into(), 1));
        assert_eq!(disables_amdgpu(&later), None);
        let install = |cmd: &str| {
            parse_modprobe("/etc/modprobe.d/x.conf", &format!("install amdgpu {cmd}\n"))
                .first()
                .and_then(disables_amdgpu)
                .map(|d| d.0)
        };
        assert_eq!(install("/bin/false"), Some(Disables::Replaced));
        assert_eq!(
            install("/sbin/modprobe --ignore-install amdgpu $CMDLINE_OPTS"),
            None
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
