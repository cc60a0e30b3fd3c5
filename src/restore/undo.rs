//! Undo: put back what a restore (or an undo) replaced, from the quarantine, checked
//! against the journal's hashes. A file that changed since the run is never
//! overwritten: the whole undo is refused and the file named, because half an undo
//! leaves a driver tree that is neither the patched one nor the clean one.
//! The undo is a journaled run itself, so it can be undone in turn.

use super::apply::{self, ApplyResult, Change, Expect};
use super::journal::{judge, sha256_hex, FileState, Intent, Run, RunKind};
use crate::error::{Error, Result};
use crate::io::atomic::TreeFile;
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

/// The undo runs that target `id`, and whether one of them finished.
pub(crate) fn undone_by<'a>(runs: &'a [Run], id: &str) -> Option<&'a Run> {
    runs.iter()
        .filter(|r| r.kind == RunKind::Undo && r.undoes.as_deref() == Some(id))
        .find(|r| r.ended)
}

/// The run to undo: the named one, else the latest restore that changed something
/// and has not been undone.
pub(crate) fn pick<'a>(runs: &'a [Run], id: Option<&str>) -> Result<&'a Run> {
    let journal_dir = Path::new(super::plan::STATE_DIR).join(super::journal::DIR);
    match id {
        Some(id) => runs.iter().find(|r| r.id == id).ok_or_else(|| Error::Refused {
            path: journal_dir.join(format!("{id}.jsonl")),
            message: "no such run in the journal; 'kfd-audit undo --list' shows the runs".into(),
        }),
        None => runs
            .iter()
            .rev()
            .find(|r| r.kind == RunKind::Restore && !r.intents.is_empty() && undone_by(runs, &r.id).is_none())
            .ok_or_else(|| Error::Refused {
                path: journal_dir,
                message: "nothing to undo: every restore in the journal has been undone (or none changed a file); 'kfd-audit undo --list' shows the runs".into(),
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
                let Some(q) = q else {
                    up.problems.push(Problem {
                        path: show(&intent.path),
                        reason: "the journal names no quarantine copy for it".into(),
                    });
                    continue;
                };
                let Some(new) = Digest::from_hex(Algorithm::Sha256, &intent.new_sha256) else {
                    up.problems.push(Problem {
                        path: show(&intent.path),
                        reason: "the journal's new_sha256 is not a SHA-256".into(),
                    });
                    continue;
                };
                // The quarantine copy must be there and be exactly the old file.
                let qhost = root.path(&q);
                let ok = std::fs::read(&qhost)
                    .map(|b| Some(sha256_hex(&b)) == intent.old_sha256)
                    .unwrap_or(false);
                if !ok {
                    up.problems.push(Problem {
                        path: show(&intent.path),
                        reason: format!(
                            "its quarantine copy {} is missing or does not match the journal",
                            show(&q)
                        ),
                    });
                    continue;
                }
                up.changes.push((
                    Change {
                        tree_system: intent.tree.clone(),
                        tree_host: root.path(&intent.tree),
                        rel: intent.rel.clone(),
                        expect: Expect::Digest(new),
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
