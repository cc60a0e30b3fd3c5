//! Undo: put back what a restore (or an undo) replaced, from the quarantine, checked
//! against the journal's hashes. A file that changed since the run is never
//! overwritten: the whole undo is refused and the file named, because half an undo
//! leaves a driver tree that is neither the patched one nor the clean one.
//! The undo is a journaled run itself, so it can be undone in turn.

use super::apply::{self, ApplyResult, Change, Expect};
use super::journal::{judge, sha256_hex, FileState, Intent, Run, RunKind};
use crate::error::{Error, Result};
use crate::io::atomic::{Ownership, TreeFile};
use crate::io::hash::{Algorithm, Digest};
use crate::io::root::Root;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// The current bytes of a journaled file (`Ok(None)`: absent).
fn current(root: &Root, intent: &Intent) -> Result<Option<Vec<u8>>> {
    let f = TreeFile::open(&root.path(&intent.tree), &intent.rel, None)?;
    f.stat()?;
    f.read()
}

/// What the journal and the disk say about one file of a run.
pub(crate) fn file_state(root: &Root, intent: &Intent) -> FileState {
    match current(root, intent) {
        Ok(bytes) => judge(intent, bytes.as_deref()),
        Err(_) => FileState::NotAFile,
    }
}

/// The finished undo run that keeps run `id` undone now, if one does. An undo that
/// was itself undone no longer counts: the run it undid is in effect again.
pub(crate) fn undone_by<'a>(runs: &'a [Run], id: &str) -> Option<&'a Run> {
    undone_within(runs, id, runs.len())
}

fn undone_within<'a>(runs: &'a [Run], id: &str, depth: usize) -> Option<&'a Run> {
    // Each undo names an earlier run, so the chain is at most as long as the journal.
    if depth == 0 {
        return None;
    }
    runs.iter()
        .filter(|r| r.kind == RunKind::Undo && r.undoes.as_deref() == Some(id) && r.ended)
        .rev()
        .find(|u| undone_within(runs, &u.id, depth - 1).is_none())
}

/// The run to undo: the named one, else the latest restore that changed something
/// and has not been undone.
/// `kfd` is how the user calls kfd-audit on this system (with its `--root`).
pub(crate) fn pick<'a>(runs: &'a [Run], id: Option<&str>, kfd: &str) -> Result<&'a Run> {
    let journal_dir = Path::new(super::plan::STATE_DIR).join(super::journal::DIR);
    match id {
        Some(id) => runs.iter().find(|r| r.id == id).ok_or_else(|| Error::Refused {
            path: journal_dir.join(format!("{id}.jsonl")),
            message: format!("no such run in the journal; '{kfd} undo --list' shows the runs"),
        }),
        None => runs
            .iter()
            .rev()
            .find(|r| r.kind == RunKind::Restore && !r.intents.is_empty() && undone_by(runs, &r.id).is_none())
            .ok_or_else(|| Error::Refused {
                path: journal_dir,
                message: format!("nothing to undo: no restore in the journal is in effect (each was undone, or none changed a file); '{kfd} undo --list' shows the runs"),
            }),
    }
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Problem {
    pub path: String,
    pub reason: String,
}

/// What an undo of one run will do.
#[derive(Debug, Clone, Default)]
pub(crate) struct UndoPlan {
    pub changes: Vec<(Change, Intent)>,
    /// Already as before the run (never replaced, or put back already).
    pub already: Vec<PathBuf>,
    /// Created by the run (it was missing before): kept, since nothing is deleted.
    pub kept: Vec<PathBuf>,
    /// Files that block the undo.
    pub problems: Vec<Problem>,
}

fn show(p: &Path) -> String {
    crate::term::path(p)
}

/// The quarantine copy a run names for a file, when it is there and is exactly the
/// file from before the run; otherwise the problem to report instead of undoing it.
fn verified_copy(root: &Root, q: Option<PathBuf>, intent: &Intent) -> Result<PathBuf, Problem> {
    let Some(q) = q else {
        return Err(Problem {
            path: show(&intent.path),
            reason: "the journal names no quarantine copy for it".into(),
        });
    };
    if !quarantine_matches(root, &q, intent) {
        return Err(Problem {
            path: show(&intent.path),
            reason: format!(
                "its quarantine copy {} is missing or does not match the journal",
                show(&q)
            ),
        });
    }
    Ok(q)
}

/// Whether the quarantine copy is there and is exactly the file from before the run.
fn quarantine_matches(root: &Root, q: &Path, intent: &Intent) -> bool {
    std::fs::read(root.path(q))
        .map(|b| Some(sha256_hex(&b)) == intent.old_sha256)
        .unwrap_or(false)
}

/// Plans the undo of a run, newest change first.
pub(crate) fn plan(root: &Root, run: &Run) -> UndoPlan {
    let mut up = UndoPlan::default();
    for intent in run.intents.iter().rev() {
        let state = match current(root, intent) {
            Ok(bytes) => judge(intent, bytes.as_deref()),
            Err(e) => {
                up.problems.push(Problem {
                    path: show(&intent.path),
                    reason: format!("{e}"),
                });
                continue;
            }
        };
        let q = intent.quarantine.clone();
        let kept_at = q
            .as_ref()
            .map(|q| format!("; its version from before is kept in {}", show(q)))
            .unwrap_or_default();
        match state {
            FileState::Old => up.already.push(intent.path.clone()),
            FileState::New if intent.old_sha256.is_none() => up.kept.push(intent.path.clone()),
            FileState::New => {
                let (expect, create_as) = match intent.new_sha256.as_deref() {
                    // The run moved an added file into the quarantine: it comes back
                    // where nothing is now, as it was (mode and owner from the journal).
                    None => (
                        Expect::Absent,
                        Some(Ownership {
                            mode: intent.mode,
                            owner: Some((intent.uid, intent.gid)),
                        }),
                    ),
                    // The run replaced the file: it must still be what the run wrote.
                    Some(h) => match Digest::from_hex(Algorithm::Sha256, h) {
                        Some(new) => (Expect::Digest(new), None),
                        None => {
                            up.problems.push(Problem {
                                path: show(&intent.path),
                                reason: "the journal's new_sha256 is not a SHA-256".into(),
                            });
                            continue;
                        }
                    },
                };
                let q = match verified_copy(root, q, intent) {
                    Ok(q) => q,
                    Err(p) => {
                        up.problems.push(p);
                        continue;
                    }
                };
                up.changes.push((
                    Change {
                        tree_system: intent.tree.clone(),
                        tree_host: root.path(&intent.tree),
                        rel: intent.rel.clone(),
                        expect,
                        remove: false,
                        create_as,
                        source: "quarantine".into(),
                        origin: q.display().to_string(),
                    },
                    intent.clone(),
                ));
            }
            FileState::Changed => up.problems.push(Problem {
                path: show(&intent.path),
                reason: format!(
                    "changed since run {} replaced it; not undone{kept_at}",
                    run.id
                ),
            }),
            FileState::Missing => up.problems.push(Problem {
                path: show(&intent.path),
                reason: format!("missing since run {}; not undone{kept_at}", run.id),
            }),
            FileState::NotAFile => up.problems.push(Problem {
                path: show(&intent.path),
                reason: format!("no longer a regular file; not undone{kept_at}"),
            }),
        }
    }
    up
}

/// Applies an undo plan as a journaled run.
pub(crate) fn apply(root: &Root, run: &Run, up: &UndoPlan) -> ApplyResult {
    let changes: Vec<Change> = up.changes.iter().map(|(c, _)| c.clone()).collect();
    let intents: Vec<&Intent> = up.changes.iter().map(|(_, i)| i).collect();
    let mut k = 0usize;
    let mut fetch = |c: &Change| -> std::result::Result<Vec<u8>, String> {
        let pos = intents[k..]
            .iter()
            .position(|i| i.rel == c.rel && i.tree == c.tree_system)
            .map(|p| p + k)
            .ok_or("internal: change not in the undo plan")?;
        k = pos + 1;
        let intent = intents[pos];
        let q = intent.quarantine.clone().unwrap_or_default();
        let bytes = std::fs::read(root.path(&q)).map_err(|e| format!("{}: {e}", show(&q)))?;
        if Some(sha256_hex(&bytes)) != intent.old_sha256 {
            return Err(format!(
                "refused: the quarantine copy {} no longer matches the journal",
                show(&q)
            ));
        }
        Ok(bytes)
    };
    apply::apply(
        root,
        RunKind::Undo,
        Some(run.id.clone()),
        &changes,
        &mut fetch,
    )
}
