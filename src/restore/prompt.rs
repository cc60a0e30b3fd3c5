//! Asking the user, behind a small trait: [`TerminalPrompter`] draws its own small
//! menu on the terminal (a letter key per choice, or arrows / j / k and Enter; it
//! works on a plain 80x25 recovery console), and [`Scripted`] answers from a list
//! so unit tests can drive the review.
//!
//! After an answer the menu collapses to one line (the question and the answer), so
//! nothing is echoed twice and the next question stays close to what it is about.
//! The cursor is hidden only while a menu is drawn; Ctrl-C, Escape or a signal at
//! any prompt shows it again before the process goes on or ends.

use crate::error::{Error, Result};
use dialoguer::console::{measure_text_width, Key, Term};
#[cfg(test)]
use std::collections::VecDeque;
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Choice {
    Accept,
    Skip,
    ShowDiff,
    AcceptAll,
    Quit,
    /// Ctrl-C: stop at once, nothing is changed.
    Interrupted,
}

/// The answer to a yes/no question.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    Yes,
    No,
    /// Ctrl-C: stop at once, nothing is changed.
    Interrupted,
}

/// The error a command ends with when the person pressed Ctrl-C at a prompt: the
/// binary exits 130, as a shell does for a command ended by SIGINT.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Interrupted;

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("interrupted at the prompt (Ctrl-C): nothing was changed")
    }
}

impl std::error::Error for Interrupted {}

/// What is asked about one file: replace or create it from a clean source, or move
/// an added file into the quarantine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ask {
    Replace,
    Create,
    Move,
}

/// The menu for a question, in the order shown: the choice, its key, its label.
pub(crate) fn menu(ask: Ask) -> [(Choice, char, &'static str); 5] {
    let (this, diff) = match ask {
        Ask::Replace => ("restore this file", "show the diff (current -> clean)"),
        Ask::Create => ("create this file", "show the diff (missing -> clean)"),
        Ask::Move => (
            "move it into the quarantine (undo puts it back)",
            "show its content",
        ),
    };
    [
        (Choice::Accept, 'r', this),
        (Choice::Skip, 's', "skip it (leave it as it is)"),
        (Choice::ShowDiff, 'd', diff),
        (
            Choice::AcceptAll,
            'a',
            "all: do the rest as --yes would, without asking",
        ),
        (Choice::Quit, 'q', "quit (change nothing)"),
    ]
}

/// What the user is asked about one file.
#[derive(Debug, Clone)]
pub(crate) struct Question {
    pub index: usize,
    pub total: usize,
    /// Escaped for printing.
    pub path: String,
    pub ask: Ask,
    /// Where the clean bytes come from; for an added file, what the build does with it.
    pub origin: String,
}

impl Question {
    pub(crate) fn prompt(&self) -> String {
        let n = format!("[{}/{}]", self.index + 1, self.total);
        match self.ask {
            Ask::Replace => format!("{n} Restore {} from {}?", self.path, self.origin),
            Ask::Create => format!("{n} Create {} from {}?", self.path, self.origin),
            Ask::Move => format!(
                "{n} Move the added file {} ({}) into the quarantine?",
                self.path, self.origin
            ),
        }
    }
}

pub(crate) trait Prompter {
    /// What to do with one file.
    fn choose(&mut self, q: &Question) -> Result<Choice>;
    /// The final yes/no, right under what it is about.
    fn confirm(&mut self, question: &str) -> Result<Answer>;
    /// Shows a long text the user asked for (a diff): written out as it is, unless
    /// the prompter has a pager to hand it to.
    fn show(&mut self, out: &mut dyn std::io::Write, text: &str) -> std::io::Result<()> {
        out.write_all(text.as_bytes())?;
        out.flush()
    }
}

fn term_error(e: std::io::Error) -> Error {
    Error::io(PathBuf::from("<terminal>"), e)
}

/// The terminal's modes as they were before the first prompt: what a signal that
/// ends kfd-audit during a prompt puts back (echo, line editing, Ctrl-C).
static ORIGINAL_MODES: std::sync::OnceLock<libc::termios> = std::sync::OnceLock::new();

/// Shows the cursor again and puts back the terminal's modes: from a signal handler,
/// so only `write(2)`, `tcsetattr(3)` (both async-signal-safe) and a lock-free read of
/// the modes saved before the handler was installed.
extern "C" fn show_cursor_and_exit(_sig: libc::c_int) {
    const SHOW: &[u8] = b"\x1b[?25h\r\n";
    // SAFETY: write, tcsetattr and _exit are async-signal-safe; SHOW is a static
    // buffer, and the saved modes are only read.
    unsafe {
        if let Some(t) = ORIGINAL_MODES.get() {
            libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, t);
        }
        libc::write(libc::STDERR_FILENO, SHOW.as_ptr().cast(), SHOW.len());
        libc::_exit(130);
    }
}

/// The terminal while a prompt is up. Its input is kept out of canonical mode and
/// without signals for the whole prompt, so that Ctrl-C always arrives as a key
/// (never as a SIGINT between two keys) and the prompt can end cleanly. A SIGTERM
/// (or a SIGINT sent with kill) shows the cursor and exits 130. Dropping the guard
/// shows the cursor (hidden while a menu is drawn), puts back the terminal's modes
/// and the previous handlers.
struct PromptGuard<'a> {
    term: &'a Term,
    old: [(libc::c_int, libc::sighandler_t); 2],
    termios: Option<libc::termios>,
}

impl<'a> PromptGuard<'a> {
    fn new(term: &'a Term, hide_cursor: bool) -> std::io::Result<PromptGuard<'a>> {
        // The modes are read (and saved for the signal handler) before the handler is
        // installed, so that it never sees them half written.
        let mut termios = None;
        // SAFETY: tcgetattr on stdin with a properly sized termios.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            if libc::isatty(libc::STDIN_FILENO) == 1
                && libc::tcgetattr(libc::STDIN_FILENO, &mut t) == 0
            {
                let _ = ORIGINAL_MODES.set(t);
                termios = Some(t);
            }
        }
        let handler = show_cursor_and_exit as extern "C" fn(libc::c_int) as libc::sighandler_t;
        // SAFETY: installing a handler that only calls async-signal-safe functions.
        let old =
            [libc::SIGINT, libc::SIGTERM].map(|sig| (sig, unsafe { libc::signal(sig, handler) }));
        let guard = PromptGuard { term, old, termios };
        if let Some(t) = termios {
            let mut quiet = t;
            quiet.c_lflag &= !(libc::ISIG | libc::ICANON | libc::ECHO);
            // SAFETY: tcsetattr on stdin with modes derived from the ones just read.
            unsafe {
                libc::tcsetattr(libc::STDIN_FILENO, libc::TCSADRAIN, &quiet);
            }
        }
        if hide_cursor {
            term.hide_cursor()?;
        }
        Ok(guard)
    }
}

impl Drop for PromptGuard<'_> {
    fn drop(&mut self) {
        let _ = self.term.show_cursor();
        let _ = self.term.flush();
        if let Some(t) = &self.termios {
            // SAFETY: putting back the modes read in `new`.
            unsafe {
                libc::tcsetattr(libc::STDIN_FILENO, libc::TCSADRAIN, t);
            }
        }
        for (sig, old) in self.old {
            // SAFETY: putting back the handler that was there before.
            unsafe {
                libc::signal(sig, old);
            }
        }
    }
}

/// Prompts on the terminal (stderr).
pub(crate) struct TerminalPrompter {
    term: Term,
    /// Whether a diff the user asks for may go through the pager (`--no-pager`).
    pager: bool,
}

impl Default for TerminalPrompter {
    fn default() -> Self {
        TerminalPrompter {
            term: Term::stderr(),
            pager: true,
        }
    }
}

/// How many screen rows a line takes at the terminal's width.
fn rows(term: &Term, line: &str) -> usize {
    let width = usize::from(term.size().1).max(1);
    measure_text_width(line).max(1).div_ceil(width)
}

fn draw_items(term: &Term, items: &[(Choice, char, &str)], at: usize) -> std::io::Result<()> {
    for (i, (_, key, label)) in items.iter().enumerate() {
        let mark = if i == at { '>' } else { ' ' };
        term.write_line(&format!(" {mark} {key}  {label}"))?;
    }
    Ok(())
}

impl TerminalPrompter {
    fn menu(&self, q: &Question) -> std::io::Result<Choice> {
        let term = &self.term;
        let items = menu(q.ask);
        let prompt = q.prompt();
        let keys: String = items.iter().map(|(_, k, _)| *k).collect();
        let head = format!("{prompt} [{keys}]");
        let _guard = PromptGuard::new(term, true)?;
        term.write_line(&head)?;
        let mut at = 0usize;
        draw_items(term, &items, at)?;
        let picked = loop {
            let key = term.read_key_raw()?;
            let next = match key {
                Key::Char(c) => match items
                    .iter()
                    .position(|(_, k, _)| *k == c.to_ascii_lowercase())
                {
                    Some(i) => break i,
                    None if c == 'j' => (at + 1) % items.len(),
                    None if c == 'k' => (at + items.len() - 1) % items.len(),
                    None => continue,
                },
                Key::ArrowDown | Key::Tab => (at + 1) % items.len(),
                Key::ArrowUp | Key::BackTab => (at + items.len() - 1) % items.len(),
                Key::Enter => break at,
                Key::Escape => break items.len() - 1,
                Key::CtrlC => {
                    term.write_line("")?;
                    return Ok(Choice::Interrupted);
                }
                _ => continue,
            };
            if next != at {
                at = next;
                term.clear_last_lines(items.len())?;
                draw_items(term, &items, at)?;
            }
        };
        // The menu collapses to the question and its answer, once.
        term.clear_last_lines(items.len() + rows(term, &head))?;
        let (choice, _, label) = items[picked];
        term.write_line(&format!("{prompt} {label}"))?;
        Ok(choice)
    }
}

/// Asks a yes/no question on a terminal, default no: `y` says yes; `n`, Enter and
/// Escape say no; Ctrl-C interrupts. The answer is written after the question, once.
pub(crate) fn ask_yes_no(term: &Term, question: &str) -> std::io::Result<Answer> {
    let _guard = PromptGuard::new(term, false)?;
    term.write_str(&format!("{question} [y/N] "))?;
    term.flush()?;
    loop {
        match term.read_key_raw()? {
            Key::Char('y' | 'Y') => {
                term.write_line("yes")?;
                return Ok(Answer::Yes);
            }
            Key::Char('n' | 'N') | Key::Enter | Key::Escape => {
                term.write_line("no")?;
                return Ok(Answer::No);
            }
            Key::CtrlC => {
                term.write_line("")?;
                return Ok(Answer::Interrupted);
            }
            _ => continue,
        }
    }
}

impl Prompter for TerminalPrompter {
    fn choose(&mut self, q: &Question) -> Result<Choice> {
        self.menu(q).map_err(term_error)
    }

    fn confirm(&mut self, question: &str) -> Result<Answer> {
        ask_yes_no(&self.term, question).map_err(term_error)
    }

    fn show(&mut self, out: &mut dyn std::io::Write, text: &str) -> std::io::Result<()> {
        crate::pager::page(text, self.pager, out)
    }
}

impl TerminalPrompter {
    /// A prompter whose diffs go through the pager only when `pager` is set.
    pub(crate) fn with_pager(pager: bool) -> TerminalPrompter {
        TerminalPrompter {
            pager,
            ..TerminalPrompter::default()
        }
    }
}

/// Answers from a script, and records what it was asked (the unit tests' prompter).
#[cfg(test)]
#[derive(Default)]
pub(crate) struct Scripted {
    pub choices: VecDeque<Choice>,
    pub confirms: VecDeque<bool>,
    pub asked: Vec<String>,
    /// Runs just before the final confirmation is answered (tests change files here).
    pub before_confirm: Option<Box<dyn FnMut()>>,
}

#[cfg(test)]
impl Scripted {
    pub(crate) fn new(choices: &[Choice], confirm: bool) -> Scripted {
        Scripted {
            choices: choices.iter().copied().collect(),
            confirms: VecDeque::from([confirm]),
            ..Scripted::default()
        }
    }
}

#[cfg(test)]
impl Prompter for Scripted {
    fn choose(&mut self, q: &Question) -> Result<Choice> {
        self.asked.push(q.prompt());
        Ok(self.choices.pop_front().unwrap_or(Choice::Quit))
    }

    fn confirm(&mut self, question: &str) -> Result<Answer> {
        self.asked.push(question.to_string());
        if let Some(f) = self.before_confirm.as_mut() {
            f();
        }
        Ok(if self.confirms.pop_front().unwrap_or(false) {
            Answer::Yes
        } else {
            Answer::No
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_menu_has_distinct_letter_keys() {
        for ask in [Ask::Replace, Ask::Create, Ask::Move] {
            let m = menu(ask);
            let keys: Vec<char> = m.iter().map(|(_, k, _)| *k).collect();
            assert_eq!(keys, ['r', 's', 'd', 'a', 'q']);
            // The navigation keys stay free for moving.
            assert!(!keys.contains(&'j') && !keys.contains(&'k'));
            // Each line of the menu fits 80 columns.
            assert!(m.iter().all(|(_, _, l)| l.len() + 6 <= 80));
        }
    }
}
