//! Asking the user, behind a small trait: [`TerminalPrompter`] uses `dialoguer`
//! (arrow keys or j/k and Enter; works on a plain recovery-mode console), and
//! [`Scripted`] answers from a list so unit tests can drive the review.

use crate::error::{Error, Result};
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
}

/// The menu, in the order shown. Quit is last; Esc and `q` quit too.
pub(crate) const CHOICES: [(Choice, &str); 5] = [
    (Choice::Accept, "restore this file"),
    (Choice::Skip, "skip it (leave it as it is)"),
    (Choice::ShowDiff, "show the diff (current -> clean)"),
    (Choice::AcceptAll, "restore this and all remaining files"),
    (Choice::Quit, "quit (restore nothing)"),
];

/// What the user is asked about one file.
#[derive(Debug, Clone)]
pub(crate) struct Question {
    pub index: usize,
    pub total: usize,
    /// Escaped for printing.
    pub path: String,
    pub action: &'static str,
    pub origin: String,
}

impl Question {
    pub(crate) fn prompt(&self) -> String {
        format!(
            "[{}/{}] {} {} from {}?",
            self.index + 1,
            self.total,
            if self.action == "create" {
                "Create"
            } else {
                "Restore"
            },
            self.path,
            self.origin
        )
    }
}

pub(crate) trait Prompter {
    /// What to do with one file.
    fn choose(&mut self, q: &Question) -> Result<Choice>;
    /// The final yes/no, after a summary of what will happen.
    fn confirm(&mut self, summary: &str) -> Result<bool>;
}

fn prompt_error(e: dialoguer::Error) -> Error {
    Error::Io {
        path: PathBuf::from("<terminal>"),
        source: match e {
            dialoguer::Error::IO(io) => io,
        },
    }
}

/// Prompts on the terminal (stderr) with dialoguer.
pub(crate) struct TerminalPrompter {
    term: dialoguer::console::Term,
}

impl Default for TerminalPrompter {
    fn default() -> Self {
        TerminalPrompter {
            term: dialoguer::console::Term::stderr(),
        }
    }
}

impl Prompter for TerminalPrompter {
    fn choose(&mut self, q: &Question) -> Result<Choice> {
        let labels: Vec<&str> = CHOICES.iter().map(|(_, l)| *l).collect();
        let picked = dialoguer::Select::new()
            .with_prompt(q.prompt())
            .items(&labels)
            .default(0)
            .interact_on_opt(&self.term)
            .map_err(prompt_error)?;
        Ok(picked.map_or(Choice::Quit, |i| CHOICES[i].0))
    }

    fn confirm(&mut self, summary: &str) -> Result<bool> {
        let yes = dialoguer::Confirm::new()
            .with_prompt(summary)
            .default(false)
            .interact_on_opt(&self.term)
            .map_err(prompt_error)?;
        Ok(yes == Some(true))
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

    fn confirm(&mut self, summary: &str) -> Result<bool> {
        self.asked.push(summary.to_string());
        if let Some(f) = self.before_confirm.as_mut() {
            f();
        }
        Ok(self.confirms.pop_front().unwrap_or(false))
    }
}
