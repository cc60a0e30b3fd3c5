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

/// A severity as the text report writes it: upper case, in its colour.
pub(crate) fn painted_severity(color: bool, s: Severity) -> String {
    paint(color, severity_style(s), &s.as_str().to_uppercase())
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

/// Columns a screen report may use: `COLUMNS` when set (shells export it, and tests
/// set it), else the terminal's width, else 80, the width of a Linux virtual console.
pub(crate) fn columns() -> usize {
    if let Some(n) = std::env::var("COLUMNS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| *n > 0)
    {
        return n;
    }
    terminal_size().map_or(80, |(cols, _)| cols)
}

/// Rows of the terminal on stdout (`LINES` when set, else the terminal's size, else
/// 25, a Linux virtual console), for deciding whether output fits on one screen.
pub(crate) fn rows() -> usize {
    if let Some(n) = std::env::var("LINES")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| *n > 0)
    {
        return n;
    }
    terminal_size().map_or(25, |(_, rows)| rows)
}

/// (columns, rows) of the terminal on stdout, `None` when stdout is not one.
fn terminal_size() -> Option<(usize, usize)> {
    use std::os::fd::AsRawFd;
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes one winsize into the struct we own; a non-terminal
    // fails with ENOTTY and leaves it untouched.
    let rc = unsafe { libc::ioctl(std::io::stdout().as_raw_fd(), libc::TIOCGWINSZ, &mut ws) };
    (rc == 0 && ws.ws_col > 0 && ws.ws_row > 0).then_some((ws.ws_col as usize, ws.ws_row as usize))
}

/// `text` cut to `width` columns, ending in `...` when cut (ASCII: a console font may
/// lack the ellipsis character). One column per character: the texts cut here are
/// titles and paths, escaped before.
pub(crate) fn fit(text: &str, width: usize) -> Cow<'_, str> {
    if text.chars().count() <= width {
        return Cow::Borrowed(text);
    }
    let keep = width.saturating_sub(3);
    let mut out: String = text.chars().take(keep).collect();
    out.truncate(out.trim_end().len());
    out.push_str("...");
    Cow::Owned(out)
}

/// `text` cut from the left to `width` columns (`...` first): for a path whose end
/// (the file name and line) matters more than its start.
pub(crate) fn fit_left(text: &str, width: usize) -> Cow<'_, str> {
    let n = text.chars().count();
    if n <= width {
        return Cow::Borrowed(text);
    }
    let skip = n - width.saturating_sub(3);
    Cow::Owned(format!(
        "...{}",
        text.chars().skip(skip).collect::<String>()
    ))
}

/// `text` broken into lines of at most `width` columns at spaces (a word longer than
/// the width stands on a line of its own), for sentences such as a fix or the next
/// command on a narrow console; the lines after the first are indented by two.
pub(crate) fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        let len = line.chars().count();
        if len > 0 && len + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut line));
            line.push_str("  ");
        }
        if !line.trim().is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.trim().is_empty() {
        lines.push(line);
    }
    lines
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

    #[test]
    fn fitting_to_a_width() {
        assert_eq!(fit("short", 10), "short");
        assert_eq!(fit("a longer title here", 10), "a longe...");
        assert_eq!(fit("abc def ghi", 8), "abc d...");
        assert_eq!(fit("abcd fghi", 8), "abcd...");
        assert_eq!(fit_left("/sys/class/kfd/x:4", 10), "...kfd/x:4");
        assert_eq!(fit_left("ok", 10), "ok");
        assert_eq!(
            wrap("next: kfd-audit restore then plan", 14),
            ["next:", "  kfd-audit", "  restore then", "  plan"]
        );
        assert!(wrap("", 10).is_empty());
    }
}
