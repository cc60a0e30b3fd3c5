//! Long output through a pager, as git does: only when stdout is a terminal (never
//! on a pipe, a file, or without a TTY), only when the text does not fit on the
//! screen, with `$PAGER` if set, else `less -FRX` when `less` is on PATH. A pager that
//! cannot be started is no error: the text is then printed directly. The caller
//! passes `enabled = false` for `--no-pager`.
//!
//! ```ignore
//! crate::pager::page(&diff_text, !cli.no_pager, out)?;
//! ```
//!
//! Facts this follows (git's pager.c and less(1)): `PAGER` is a shell command line
//! (`less -R`, `most`), so it runs through `sh -c`; an empty `PAGER` or `cat` means no
//! pager; `LESS=FRX` (quit if one screen, keep colours, leave the text on the screen)
//! is set when the user has no `LESS` of their own. While the pager runs, Ctrl-C
//! belongs to it: kfd-audit ignores SIGINT until the pager exits, so that the pager is
//! not orphaned on a terminal it has put in raw mode.

use std::io::{self, IsTerminal, Write};
use std::process::{Command, Stdio};

/// Writes `text` (UTF-8 or not: a diff is bytes) to `out`, or through the pager when
/// `enabled`, stdout is a terminal and the text is longer than the screen. Returns
/// once the pager has exited.
pub(crate) fn page(text: impl AsRef<[u8]>, enabled: bool, out: &mut dyn Write) -> io::Result<()> {
    let text = text.as_ref();
    if enabled && io::stdout().is_terminal() && !fits(text) {
        if let Some(pager) = pager_command() {
            out.flush()?;
            match run(&pager, text) {
                Ok(()) => return Ok(()),
                // Not started: print directly.
                Err(e) if e.kind() != io::ErrorKind::BrokenPipe => {}
                // The user quit the pager before the end: nothing more to show.
                Err(_) => return Ok(()),
            }
        }
    }
    out.write_all(text)
}

/// Whether `text` fits on the screen: its lines, long ones counted as the rows they
/// wrap onto, leave the last row for the shell's prompt.
fn fits(text: &[u8]) -> bool {
    let cols = crate::term::columns().max(1);
    let rows: usize = String::from_utf8_lossy(text)
        .lines()
        .map(|l| l.chars().count().div_ceil(cols).max(1))
        .sum();
    rows < crate::term::rows()
}

/// The pager to use: `$PAGER` (none when empty or `cat`), else `less -FRX` when
/// `less` is on PATH, else none.
fn pager_command() -> Option<String> {
    match std::env::var("PAGER") {
        Ok(p) if p.trim().is_empty() || p.trim() == "cat" => None,
        Ok(p) => Some(p),
        Err(_) => on_path("less").then(|| "less -FRX".to_string()),
    }
}

/// Whether an executable named `name` is in one of PATH's directories.
fn on_path(name: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            std::fs::metadata(dir.join(name))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

/// Runs `pager` (a shell command line) with `text` on its stdin and waits for it. An
/// error before the text was handed over means the pager did not start.
fn run(pager: &str, text: &[u8]) -> io::Result<()> {
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(pager).stdin(Stdio::piped());
    if std::env::var_os("LESS").is_none() {
        cmd.env("LESS", "FRX");
    }
    let mut child = cmd.spawn()?;
    let _ignore = IgnoreInterrupt::new();
    let written = child
        .stdin
        .take()
        .map_or(Ok(()), |mut stdin| stdin.write_all(text));
    // Closing stdin (dropped above) tells the pager the text is complete.
    let status = child.wait()?;
    // `sh` exits 127 when the command is not found and 126 when it cannot run it:
    // the pager never showed anything, so the caller prints directly.
    if matches!(status.code(), Some(126 | 127)) {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("pager '{pager}' could not be started"),
        ));
    }
    match written {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Err(e),
        other => other,
    }
}

/// SIGINT ignored for as long as this lives, then put back as it was.
struct IgnoreInterrupt(libc::sighandler_t);

impl IgnoreInterrupt {
    fn new() -> IgnoreInterrupt {
        // SAFETY: signal() swaps the disposition of SIGINT; SIG_IGN needs no handler code.
        IgnoreInterrupt(unsafe { libc::signal(libc::SIGINT, libc::SIG_IGN) })
    }
}

impl Drop for IgnoreInterrupt {
    fn drop(&mut self) {
        if self.0 != libc::SIG_ERR {
            // SAFETY: puts back the disposition signal() returned in new().
            unsafe { libc::signal(libc::SIGINT, self.0) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_pager_without_a_terminal() {
        // The unit tests' stdout is captured, never a terminal: the text goes to `out`.
        let mut out = Vec::new();
        page("a\nb\n", true, &mut out).unwrap();
        assert_eq!(out, b"a\nb\n");
    }
}
