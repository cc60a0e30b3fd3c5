//! Terminal output: when to use color, the colours themselves, escaping of names
//! before printing, and the small wording helpers every renderer shares.
//! File names come from trees anyone may have written; a name with an escape
//! sequence or a bidi override must not be able to rewrite the user's screen.
//!
//! The styles and [`plural`] live here, once, so that the scan report, the system
//! sections, the recovery plan and the restore output colour a severity and count a
//! noun the same way.

use crate::finding::Severity;
use anstyle::{AnsiColor, Style};
use std::borrow::Cow;
use std::io::IsTerminal;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum ColorChoice {
    #[default]
    Auto,
    Always,
    Never,
}

/// Decides whether to color stdout. `auto` colors only a terminal, and not with
/// NO_COLOR set (https://no-color.org) or TERM=dumb; `always`/`never` are obeyed.
pub(crate) fn use_color(choice: ColorChoice) -> bool {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let dumb = std::env::var_os("TERM").is_some_and(|t| t == "dumb");
    decide(choice, std::io::stdout().is_terminal(), no_color, dumb)
}

fn decide(choice: ColorChoice, tty: bool, no_color: bool, dumb: bool) -> bool {
    match choice {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => tty && !no_color && !dumb,
    }
}

/// Headings.
pub(crate) const BOLD: Style = Style::new().bold();
/// What must be fixed: a changed file, a high or critical finding, an unsafe backup.
pub(crate) const RED: Style = AnsiColor::Red.on_default().bold();
/// What deserves a look: notes, medium findings, unverified backups.
pub(crate) const YELLOW: Style = AnsiColor::Yellow.on_default();
/// What is clean.
pub(crate) const GREEN: Style = AnsiColor::Green.on_default();
/// What is quiet: low and informational findings, the reference a file was judged by.
pub(crate) const DIM: Style = Style::new().dimmed();

/// `text` in `style` when `color` is on, else `text` as it is.
pub(crate) fn paint(color: bool, style: Style, text: &str) -> String {
    if color {
        format!("{}{}{}", style.render(), text, style.render_reset())
    } else {
        text.to_string()
    }
}

/// The colour of a finding's severity: critical and high red, medium yellow, the
/// rest dim.
pub(crate) fn severity_style(s: Severity) -> Style {
    match s {
        Severity::Critical | Severity::High => RED,
        Severity::Medium => YELLOW,
        _ => DIM,
    }
}

/// `1 file`, `2 files`: a count and its noun (regular plurals only).
pub(crate) fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("{n} {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// The bytes of a path that is not valid UTF-8 (`None` when it is), for the
/// `path_bytes` fields that carry such names losslessly in JSON.
pub(crate) fn path_bytes(p: &Path) -> Option<Vec<u8>> {
    let bytes = p.as_os_str().as_bytes();
    std::str::from_utf8(bytes).is_err().then(|| bytes.to_vec())
}

fn is_bidi(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Escapes control characters (C0, DEL, C1) and bidi controls as `\u{..}`/`\xNN`.
pub fn escape(s: &str) -> Cow<'_, str> {
    if !s.chars().any(|c| c.is_control() || is_bidi(c)) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x80 && c.is_control() => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if c.is_control() || is_bidi(c) => out.push_str(&format!("\\u{{{:04x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// A path as text that is safe to print: invalid UTF-8 bytes as `\xNN`, then escaped.
pub fn path(p: &Path) -> String {
    let bytes = p.as_os_str().as_bytes();
    let text = match std::str::from_utf8(bytes) {
        Ok(s) => s.to_string(),
        Err(_) => {
            let mut s = String::new();
            for chunk in bytes.utf8_chunks() {
                s.push_str(chunk.valid());
                for b in chunk.invalid() {
                    s.push_str(&format!("\\x{b:02x}"));
                }
            }
            s
        }
    };
    escape(&text).into_owned()
}

/// Quotes an argument for a POSIX shell, only when it needs it (commands printed
/// for a person to paste).
pub(crate) fn shell_quote(arg: &str) -> String {
    if !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_@%+=:,./-".contains(c))
    {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn color_decision() {
        assert!(decide(ColorChoice::Auto, true, false, false));
        assert!(!decide(ColorChoice::Auto, true, true, false));
        assert!(!decide(ColorChoice::Auto, true, false, true));
        assert!(!decide(ColorChoice::Auto, false, false, false));
        assert!(decide(ColorChoice::Always, false, true, false));
        assert!(!decide(ColorChoice::Never, true, false, false));
    }

    #[test]
    fn escapes_hostile_names() {
        assert_eq!(escape("a\x1b[31mb"), "a\\x1b[31mb");
        assert_eq!(escape("x\u{202E}cod.c"), "x\\u{202e}cod.c");
        assert_eq!(escape("plain.c"), "plain.c");
        let p = Path::new(OsStr::from_bytes(b"bad\xffname"));
        assert_eq!(path(p), "bad\\xffname");
        assert_eq!(path_bytes(p), Some(b"bad\xffname".to_vec()));
        assert_eq!(path_bytes(Path::new("ok")), None);
    }

    #[test]
    fn paint_and_plural() {
        assert_eq!(paint(false, RED, "x"), "x");
        assert!(paint(true, RED, "x").contains("x\x1b["));
        assert_eq!(plural(1, "tree"), "1 tree");
        assert_eq!(plural(0, "tree"), "0 trees");
    }
}
