//! The restore engine: plan → review (prompts) → confirm → apply → journal → undo.
//!
//! Nothing is ever lost: every replaced file is first copied into the quarantine
//! and journaled (see DESIGN.md, "Restore safety protocol"); nothing is deleted;
//! a kill at any instant leaves each file either old or new, and the journal says
//! which. `undo` puts back what a run replaced, itself as a journaled run.

pub(crate) mod apply;
pub mod journal;
pub(crate) mod lock;
pub(crate) mod plan;
pub(crate) mod prompt;
pub(crate) mod render;
pub(crate) mod undo;

use crate::error::Result;
use crate::io::root::Root;
use crate::scan::TreeScan;
use apply::{ApplyResult, Change, Expect};
use plan::{clean_content, display_origin, Entry, PlanItem, RestorePlan};
use prompt::{Answer, Ask, Choice, Prompter, Question};
use std::io::Write;

/// Which planned entries to apply: `(tree index, entry index)` (see
/// [`plan::TreePlan::entry`]).
pub(crate) type Selection = Vec<(usize, usize)>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Review {
    Selected(Selection),
    /// The user quit or said no at the end: nothing is restored.
    Cancelled,
    /// Ctrl-C at a prompt: nothing is restored, and the command ends at once.
    Interrupted,
}

/// What `--yes` applies: every file to restore, and the added files the build
/// reads. An added file the build does not read (notes, a patch kept for later)
/// cannot change the module; it stays, listed, until a person chooses.
pub(crate) fn select_yes(plan: &RestorePlan) -> Selection {
    plan.trees
        .iter()
        .enumerate()
        .flat_map(|(t, tp)| {
            (0..tp.entry_count())
                .filter(move |&i| match tp.entry(i) {
                    Entry::Restore(_) => true,
                    Entry::Move(a) => a.builds,
                })
                .map(move |i| (t, i))
        })
        .collect()
}

/// Every entry the review asks about.
fn select_every(plan: &RestorePlan) -> Selection {
    plan.trees
        .iter()
        .enumerate()
        .flat_map(|(t, tp)| (0..tp.entry_count()).map(move |i| (t, i)))
        .collect()
}

/// The one place the review shows a diff (or an added file's content): through the
/// prompter, whose terminal hands long text to the pager (a diff of a created file
/// runs to hundreds of lines on an 80x25 console).
fn show_diff_text(prompter: &mut dyn Prompter, out: &mut dyn Write, text: &str) -> Result<()> {
    prompter
        .show(out, text)
        .map_err(|e| crate::error::Error::io("<stdout>", e))
}

/// How many of the entries the final confirmation lists right above itself: with
/// the question and a line of summary, the list stays on one 80x25 screen.
const LISTED: usize = 18;

/// Asks about each planned entry, then for a final confirmation, with the chosen
/// files listed right above it.
pub(crate) fn review(
    root: &Root,
    plan: &RestorePlan,
    prompter: &mut dyn Prompter,
    out: &mut dyn Write,
) -> Result<Review> {
    let all = select_every(plan);
    let yes = select_yes(plan);
    let total = all.len();
    let mut selected = Selection::new();
    let mut skipped = 0;
    let mut accept_rest = false;
    for (n, &(t, i)) in all.iter().enumerate() {
        let tp = &plan.trees[t];
        let entry = tp.entry(i);
        if accept_rest {
            if yes.contains(&(t, i)) {
                selected.push((t, i));
            } else {
                skipped += 1;
            }
            continue;
        }
        let q = match entry {
            Entry::Restore(item) => Question {
                index: n,
                total,
                path: crate::term::path(&tp.system_path(&item.rel)),
                ask: if item.action == plan::Action::Create {
                    Ask::Create
                } else {
                    Ask::Replace
                },
                origin: display_origin(root, &item.origin),
            },
            Entry::Move(a) => Question {
                index: n,
                total,
                path: crate::term::path(&tp.system_path(&a.rel)),
                ask: Ask::Move,
                origin: if a.builds {
                    "the build reads it".into()
                } else {
                    "the build does not read it".into()
                },
            },
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
                Choice::Interrupted => return Ok(Review::Interrupted),
                Choice::ShowDiff => {
                    let text = match entry {
                        Entry::Restore(item) => {
                            let current = plan::current_bytes(tp, item)?;
                            render::unified_diff(&item.rel, &current, &item.clean)
                        }
                        Entry::Move(a) => {
                            let current = plan::added_bytes(tp, a)?;
                            render::unified_diff(&a.rel, &current, b"")
                        }
                    };
                    show_diff_text(prompter, out, &text)?;
                    continue;
                }
            }
            break;
        }
    }
    if selected.is_empty() {
        return Ok(Review::Cancelled);
    }
    let moves = selected
        .iter()
        .filter(|(t, i)| matches!(plan.trees[*t].entry(*i), Entry::Move(_)))
        .count();
    let restores = selected.len() - moves;
    let list = confirm_list(plan, &selected);
    out.write_all(list.as_bytes())
        .and_then(|_| out.flush())
        .map_err(|e| crate::error::Error::io("<stdout>", e))?;
    let question = match (restores, moves) {
        (r, 0) => format!("Restore {r} file(s) now ({skipped} skipped)?"),
        (0, m) => format!("Move {m} added file(s) into the quarantine now ({skipped} skipped)?"),
        (r, m) => format!(
            "Restore {r} file(s) and move {m} added file(s) into the quarantine now ({skipped} skipped)?"
        ),
    };
    match prompter.confirm(&question)? {
        Answer::Yes => Ok(Review::Selected(selected)),
        Answer::No => Ok(Review::Cancelled),
        Answer::Interrupted => Ok(Review::Interrupted),
    }
}

/// The chosen entries, for the lines right above the final question.
fn confirm_list(plan: &RestorePlan, selected: &Selection) -> String {
    use std::fmt::Write as _;
    let mut s = String::from("\nYou chose:\n");
    for &(t, i) in selected.iter().take(LISTED) {
        let tp = &plan.trees[t];
        let (what, rel) = match tp.entry(i) {
            Entry::Restore(item) => (item.action.as_str(), &item.rel),
            Entry::Move(a) => ("move", &a.rel),
        };
        let _ = writeln!(s, "  {what:<8} {}", crate::term::path(&tp.system_path(rel)));
    }
    if selected.len() > LISTED {
        let _ = writeln!(
            s,
            "  ... and {} more (listed in the plan above)",
            selected.len() - LISTED
        );
    }
    let _ = writeln!(
        s,
        "Kept first in {}/quarantine: 'kfd-audit undo' puts them back.",
        plan::STATE_DIR
    );
    s
}

/// Whether bytes hash to the digest.
pub(crate) fn verifies(bytes: &[u8], d: &crate::io::hash::Digest) -> bool {
    crate::io::hash::Digest::of_bytes(d.algorithm(), bytes) == *d
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
        remove: false,
        create_as: None,
        source: item.source.to_string(),
        origin: display_origin(root, &item.origin),
    }
}

fn move_for(tp: &plan::TreePlan, a: &plan::AddedFile) -> Change {
    Change {
        tree_system: tp.tree.system_path.clone(),
        tree_host: tp.tree.host_path.clone(),
        rel: a.rel.clone(),
        expect: Expect::Digest(a.current.clone()),
        remove: true,
        create_as: None,
        source: "added".into(),
        origin: "in no reference".into(),
    }
}

/// Applies the selected items of a plan. `scans` are the scans the plan was built
/// from (same order). Every selected source is fetched again when the apply starts
/// (after the review; all at once, so a package archive is read through once, not
/// once per file) and each is verified again right before use.
pub(crate) fn apply_plan(
    root: &Root,
    plan: &RestorePlan,
    scans: &[TreeScan],
    selection: &Selection,
) -> ApplyResult {
    let contents: Vec<_> = scans.iter().map(|s| clean_content(root, s)).collect();
    let changes: Vec<(usize, usize, Change)> = selection
        .iter()
        .map(|&(t, i)| {
            let tp = &plan.trees[t];
            let change = match tp.entry(i) {
                Entry::Restore(item) => change_for(tp, item, root),
                Entry::Move(a) => move_for(tp, a),
            };
            (t, i, change)
        })
        .collect();
    let only_changes: Vec<Change> = changes.iter().map(|(_, _, c)| c.clone()).collect();
    let mut fresh: Vec<std::collections::BTreeMap<std::path::PathBuf, crate::content::CleanCopy>> =
        contents.iter().map(|_| Default::default()).collect();
    for (t, content) in contents.iter().enumerate() {
        let rels: Vec<std::path::PathBuf> = changes
            .iter()
            .filter(|(ct, _, c)| *ct == t && !c.remove)
            .map(|(_, _, c)| c.rel.clone())
            .collect();
        if rels.is_empty() {
            continue;
        }
        content.get_many(&rels, &mut |rel, copy| {
            if let Some(c) = copy {
                fresh[t].insert(rel.to_path_buf(), c);
            }
        });
    }
    let mut next = 0usize;
    let mut fetch = |c: &Change| -> std::result::Result<Vec<u8>, String> {
        // Changes are applied in order; find this one's plan item.
        // Moves fetch nothing: only replacements come here, in order.
        let pos = changes[next..]
            .iter()
            .position(|(_, _, x)| x.rel == c.rel && x.tree_host == c.tree_host)
            .map(|p| p + next)
            .ok_or_else(|| "internal: change not in plan".to_string())?;
        next = pos + 1;
        let (t, i, _) = &changes[pos];
        let Entry::Restore(item) = plan.trees[*t].entry(*i) else {
            return Err("internal: a move has no source to fetch".to_string());
        };
        match fresh[*t].remove(&item.rel) {
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

#[cfg(test)]
mod tests {
    use super::prompt::{Choice, Scripted};
    use super::*;
    use crate::scan::ScanOptions;
    use md5::Digest as _;

    const TREE: &str = "usr/src/amdgpu-6.8.5";

    /// A root with one tree of `n` patched files, each with a clean `.orig` beside it.
    fn root_with(n: usize) -> (tempfile::TempDir, Root) {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join(TREE);
        std::fs::create_dir_all(tree.join("amd/amdkfd")).unwrap();
        std::fs::create_dir_all(dir.path().join("var/lib/dpkg/info")).unwrap();
        std::fs::write(
            tree.join("dkms.conf"),
            "PACKAGE_NAME=amdgpu\nPACKAGE_VERSION=6.8.5\n",
        )
        .unwrap();
        let mut sums = String::new();
        for i in 0..n {
            let rel = format!("amd/amdkfd/f{i}.c");
            let clean = format!("int f{i};\n");
            std::fs::write(tree.join(format!("{rel}.orig")), &clean).unwrap();
            std::fs::write(tree.join(&rel), format!("// patched\n{clean}")).unwrap();
            sums.push_str(&format!(
                "{}  {TREE}/{rel}\n",
                hex::encode(md5::Md5::digest(clean.as_bytes()))
            ));
        }
        std::fs::write(
            dir.path().join("var/lib/dpkg/info/amdgpu-dkms.md5sums"),
            sums,
        )
        .unwrap();
        let root = Root::open(dir.path()).unwrap();
        (dir, root)
    }

    fn scans(root: &Root) -> Vec<TreeScan> {
        crate::tree::discover(root)
            .unwrap()
            .iter()
            .map(|t| crate::scan::scan_tree(root, t, &ScanOptions::default()).unwrap())
            .collect()
    }

    #[test]
    fn scripted_review_selects_what_was_chosen() {
        let (_dir, root) = root_with(4);
        let scans = scans(&root);
        let plan = plan::build(&root, &scans, &[]).unwrap();
        assert_eq!(plan.item_count(), 4);

        let mut p = Scripted::new(
            &[
                Choice::ShowDiff,
                Choice::Accept,
                Choice::Skip,
                Choice::AcceptAll,
            ],
            true,
        );
        let mut out = Vec::new();
        let got = review(&root, &plan, &mut p, &mut out).unwrap();
        assert_eq!(got, Review::Selected(vec![(0, 0), (0, 2), (0, 3)]));
        let diff = String::from_utf8(out).unwrap();
        assert!(diff.contains("-// patched\n"), "{diff}");
        // Asked about file 1 twice (diff, then accept), files 2 and 3, then the summary.
        assert_eq!(p.asked.len(), 5);
        assert!(p.asked[0].starts_with("[1/4] Restore /usr/src/amdgpu-6.8.5/amd/amdkfd/f0.c"));
        assert!(p.asked[4].starts_with("Restore 3 file(s) now (1 skipped)?"));

        let mut quit = Scripted::new(&[Choice::Accept, Choice::Quit], true);
        assert_eq!(
            review(&root, &plan, &mut quit, &mut Vec::new()).unwrap(),
            Review::Cancelled
        );
        let mut no = Scripted::new(&[Choice::AcceptAll], false);
        assert_eq!(
            review(&root, &plan, &mut no, &mut Vec::new()).unwrap(),
            Review::Cancelled
        );
    }

    #[test]
    fn a_source_changed_during_the_review_is_refused() {
        let (dir, root) = root_with(2);
        let scans = scans(&root);
        let plan = plan::build(&root, &scans, &[]).unwrap();
        let orig = dir.path().join(TREE).join("amd/amdkfd/f0.c.orig");
        let mut p = Scripted::new(&[Choice::AcceptAll], true);
        p.before_confirm = Some(Box::new(move || {
            std::fs::write(&orig, "tampered\n").unwrap()
        }));
        let Review::Selected(sel) = review(&root, &plan, &mut p, &mut Vec::new()).unwrap() else {
            panic!("cancelled")
        };
        let result = apply_plan(&root, &plan, &scans, &sel);
        assert_eq!(result.applied.len(), 1);
        assert_eq!(result.not_applied.len(), 1);
        assert!(result.not_applied[0].reason.contains("no longer matches"));
        let tree = dir.path().join(TREE);
        assert_eq!(
            std::fs::read(tree.join("amd/amdkfd/f0.c")).unwrap(),
            b"// patched\nint f0;\n"
        );
        assert_eq!(
            std::fs::read(tree.join("amd/amdkfd/f1.c")).unwrap(),
            b"int f1;\n"
        );
    }
}
