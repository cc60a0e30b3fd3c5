//! The restore engine: plan → review (prompts) → confirm → apply → journal → undo.
//!
//! Nothing is ever lost: every replaced file is first copied into the quarantine
//! and journaled (see DESIGN.md, "Restore safety protocol"); nothing is deleted;
//! a kill at any instant leaves each file either old or new, and the journal says
//! which. `undo` puts back what a run replaced, itself as a journaled run.

pub mod apply;
pub mod command;
pub mod dkms_steps;
pub mod failpoint;
pub mod journal;
pub mod lock;
pub mod plan;
pub mod prompt;
pub mod render;
pub mod undo;

pub use command::{RestoreArgs, UndoArgs};

use crate::error::Result;
use crate::root::Root;
use crate::scan::TreeScan;
use apply::{ApplyResult, Change, Expect};
use plan::{clean_content, display_origin, PlanItem, RestorePlan};
use prompt::{Choice, Prompter, Question};
use std::io::Write;

/// Which planned files to restore: `(tree index, item index)`.
pub type Selection = Vec<(usize, usize)>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Review {
    Selected(Selection),
    /// The user quit or said no at the end: nothing is restored.
    Cancelled,
}

/// Every planned file.
pub fn select_all(plan: &RestorePlan) -> Selection {
    plan.trees
        .iter()
        .enumerate()
        .flat_map(|(t, tp)| (0..tp.items.len()).map(move |i| (t, i)))
        .collect()
}

/// Asks about each planned file, then for a final confirmation.
pub fn review(
    root: &Root,
    plan: &RestorePlan,
    prompter: &mut dyn Prompter,
    out: &mut dyn Write,
) -> Result<Review> {
    let all = select_all(plan);
    let total = all.len();
    let mut selected = Selection::new();
    let mut skipped = 0;
    let mut accept_rest = false;
    for (n, &(t, i)) in all.iter().enumerate() {
        let tp = &plan.trees[t];
        let item = &tp.items[i];
        if accept_rest {
            selected.push((t, i));
            continue;
        }
        let q = Question {
            index: n,
            total,
            path: crate::term::path(&tp.system_path(&item.rel)),
            action: item.action.as_str(),
            origin: display_origin(root, &item.origin),
        };
        loop {
            match prompter.choose(&q)? {
                Choice::Accept => selected.push((t, i)),
                Choice::Skip => skipped += 1,
                Choice::AcceptAll => {
                    selected.push((t, i));
                    accept_rest = true;
                }
                Choice::Quit => return Ok(Review::Cancelled),
                Choice::ShowDiff => {
                    let current = plan::current_bytes(tp, item)?;
                    let diff = render::unified_diff(&item.rel, &current, &item.clean);
                    out.write_all(diff.as_bytes())
                        .and_then(|_| out.flush())
                        .map_err(|e| crate::error::Error::io("<stdout>", e))?;
                    continue;
                }
            }
            break;
        }
    }
    if selected.is_empty() {
        return Ok(Review::Cancelled);
    }
    let summary = format!(
        "Restore {} file(s) now ({} skipped)? Each current version is kept in the quarantine under {}/quarantine and can be put back with 'kfd-audit undo'",
        selected.len(),
        skipped,
        plan::STATE_DIR
    );
    if prompter.confirm(&summary)? {
        Ok(Review::Selected(selected))
    } else {
        Ok(Review::Cancelled)
    }
}

/// Whether bytes hash to the digest.
pub fn verifies(bytes: &[u8], d: &crate::hash::Digest) -> bool {
    crate::hash::Digest::of_bytes(d.algorithm(), bytes) == *d
}

fn change_for(tp: &plan::TreePlan, item: &PlanItem, root: &Root) -> Change {
    Change {
        tree_system: tp.tree.system_path.clone(),
        tree_host: tp.tree.host_path.clone(),
        rel: item.rel.clone(),
        expect: match &item.current {
            Some(d) => Expect::Digest(d.clone()),
            None => Expect::Absent,
        },
        source: item.source.to_string(),
        origin: display_origin(root, &item.origin),
    }
}

/// Applies the selected items of a plan. `scans` are the scans the plan was built
/// from (same order); each source is fetched and verified again right before use.
pub fn apply_plan(
    root: &Root,
    plan: &RestorePlan,
    scans: &[TreeScan],
    selection: &Selection,
) -> ApplyResult {
    let contents: Vec<_> = scans.iter().map(|s| clean_content(root, s)).collect();
    let changes: Vec<(usize, usize, Change)> = selection
        .iter()
        .map(|&(t, i)| {
            (
                t,
                i,
                change_for(&plan.trees[t], &plan.trees[t].items[i], root),
            )
        })
        .collect();
    let only_changes: Vec<Change> = changes.iter().map(|(_, _, c)| c.clone()).collect();
    let mut next = 0usize;
    let mut fetch = |c: &Change| -> std::result::Result<Vec<u8>, String> {
        // Changes are applied in order; find this one's plan item.
        let pos = changes[next..]
            .iter()
            .position(|(_, _, x)| x.rel == c.rel && x.tree_host == c.tree_host)
            .map(|p| p + next)
            .ok_or_else(|| "internal: change not in plan".to_string())?;
        next = pos + 1;
        let (t, i, _) = &changes[pos];
        let item = &plan.trees[*t].items[*i];
        let fresh = contents[*t].get(&item.rel).map_err(|e| e.to_string())?;
        match fresh {
            Some(copy) if copy.verified == item.expected && verifies(&copy.bytes, &item.expected) => {
                Ok(copy.bytes)
            }
            _ => Err(format!(
                "refused: the clean source {} no longer matches {} (verified when planned); not restored",
                display_origin(root, &item.origin),
                item.expected
            )),
        }
    };
    apply::apply(
        root,
        journal::RunKind::Restore,
        None,
        &only_changes,
        &mut fetch,
    )
}
