//! Crash safety: a restore of many files is killed with SIGKILL at every step of the
//! protocol (test failpoints, `KFD_AUDIT_FAILPOINT=<step>:<n>`) and at arbitrary
//! moments (a kill after increasing delays). After every kill each file must be
//! byte-identical to its old or its new version, the journal must say which, and the
//! next `undo` or `restore` must complete and leave no temporary file behind.

use crate::restore::{temp_files, Scenario};
use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

/// The failpoint steps of one file, in protocol order.
const STEPS: &[&str] = &[
    "source-verified",
    "quarantine-temp-written",
    "quarantine-renamed",
    "quarantined",
    "journaled",
    "replace-temp-written",
    "replace-renamed",
    "done",
];

const FILES: usize = 6;

/// The journal lines of the last run, with the set of files that have an intent
/// and a done entry.
fn last_run(s: &Scenario) -> (Vec<serde_json::Value>, Vec<String>, Vec<String>) {
    let runs = s.journals();
    let lines = runs.last().cloned().unwrap_or_default();
    let intents: Vec<(u64, String)> = lines
        .iter()
        .filter(|l| l["event"] == "intent")
        .map(|l| {
            (
                l["seq"].as_u64().unwrap(),
                l["rel"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let done: Vec<String> = lines
        .iter()
        .filter(|l| l["event"] == "done")
        .map(|l| {
            let seq = l["seq"].as_u64().unwrap();
            intents.iter().find(|(s, _)| *s == seq).unwrap().1.clone()
        })
        .collect();
    (lines, intents.into_iter().map(|(_, r)| r).collect(), done)
}

/// Every file is exactly old or new, and the journal agrees with the disk: a file
/// with `done` is new, a file without an intent is old.
fn check_whole_and_journal(s: &Scenario) -> Vec<bool> {
    let (_, intents, done) = last_run(s);
    let mut new = Vec::new();
    for (rel, patched, clean) in &s.files {
        let now = s.read(rel);
        assert!(
            now == *patched || now == *clean,
            "{rel} is neither the old nor the new version:\n{}",
            String::from_utf8_lossy(&now)
        );
        let is_new = now == *clean;
        if done.contains(rel) {
            assert!(is_new, "{rel}: journaled done but still old");
        }
        if !intents.contains(rel) {
            assert!(!is_new, "{rel}: replaced without an intent in the journal");
        }
        new.push(is_new);
    }
    new
}

#[test]
fn killed_at_every_step_leaves_every_file_whole() {
    let mut round = 0;
    for step in STEPS {
        for nth in [1, 3, FILES] {
            round += 1;
            let s = Scenario::new(FILES);
            let spec = format!("{step}:{nth}");
            let run = s.run_env(&["restore", "--yes"], &[("KFD_AUDIT_FAILPOINT", &spec)]);
            assert_eq!(
                run.output.status.signal(),
                Some(libc::SIGKILL),
                "{spec}: not killed\n{}{}",
                run.stdout(),
                run.stderr()
            );

            // Exactly where the protocol says the kill happened.
            let k = nth - 1;
            let k_intent = matches!(
                *step,
                "journaled" | "replace-temp-written" | "replace-renamed" | "done"
            );
            let k_new = matches!(*step, "replace-renamed" | "done");
            let new = check_whole_and_journal(&s);
            let expected: Vec<bool> = (0..FILES).map(|i| i < k || (i == k && k_new)).collect();
            assert_eq!(new, expected, "{spec}");
            let (lines, intents, done) = last_run(&s);
            assert_eq!(intents.len(), k + usize::from(k_intent), "{spec}");
            assert_eq!(done.len(), k + usize::from(*step == "done"), "{spec}");
            assert!(!lines.iter().any(|l| l["event"] == "end"), "{spec}");
            // Every journaled quarantine copy is the exact old file.
            for l in lines.iter().filter(|l| l["event"] == "intent") {
                let rel = l["rel"].as_str().unwrap();
                let old = &s.files.iter().find(|f| f.0 == rel).unwrap().1;
                assert_eq!(&s.fx.read(l["quarantine"].as_str().unwrap()), old, "{spec}");
            }

            // undo --list tells the same story.
            let list = s.run(&["--format", "json", "undo", "--list"]).json();
            if let Some(r) = list["runs"].as_array().unwrap().last() {
                assert_eq!(r["state"], "interrupted", "{spec}");
                for f in r["files"].as_array().unwrap() {
                    let rel = f["path"].as_str().unwrap().rsplit_once("/amd/").unwrap().1;
                    let i = s.files.iter().position(|x| x.0.ends_with(rel)).unwrap();
                    assert_eq!(f["now"], if new[i] { "new" } else { "old" }, "{spec}");
                }
            }

            // Recover: alternately undo the interrupted run, or run the restore again.
            let undo_it = round % 2 == 0 && !intents.is_empty();
            let next = if undo_it {
                s.run(&["undo"])
            } else {
                s.run(&["restore", "--yes"])
            };
            next.expect_code(0);
            // A run that writes takes over the lock the killed one left.
            let wrote = undo_it || new.contains(&false);
            assert!(
                !wrote || next.stderr().contains("took over the stale lock"),
                "{spec}: {}",
                next.stderr()
            );
            s.assert_files(&[!undo_it; FILES]);
            assert_eq!(
                temp_files(s.fx.root()),
                Vec::<std::path::PathBuf>::new(),
                "{spec}"
            );
        }
    }
}

#[test]
fn killed_after_increasing_delays_leaves_every_file_whole() {
    // No timing is asserted: whatever moment the kill lands on, the invariants hold.
    // Each file costs a few fsyncs, so the kills spread over the whole run.
    for i in 0..12u64 {
        let s = Scenario::new(20);
        let mut child = s.command(&["restore", "--yes"], &[]).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(i * 45));
        let _ = child.kill();
        let _ = child.wait();
        check_whole_and_journal(&s);
        s.run(&["restore", "--yes"]).expect_code(0);
        s.assert_files(&[true; 20]);
        assert!(temp_files(s.fx.root()).is_empty());
        // Every version that was replaced is in the quarantine, journaled.
        let replaced: usize = s
            .journals()
            .iter()
            .map(|r| r.iter().filter(|l| l["event"] == "intent").count())
            .sum();
        assert!(replaced >= 20);
    }
}
