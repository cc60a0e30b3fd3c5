//! Issue 15, item 5: one exit-code rule for every command (README, "Exit codes"):
//! 0 when the system is now as it should be, 1 when something found stays, 2 when the
//! command could not complete.

use crate::fixture::{Fixture, TREE};
use crate::restore::Scenario;

const FILE: &str = "amd/amdkfd/kfd_f0.c";

#[test]
fn scan_plan_and_diff() {
    // As it should be: 0.
    let s = Scenario::new(1);
    std::fs::write(s.host(FILE), &s.files[0].2).unwrap();
    for args in [&["scan"][..], &["plan"], &["diff", FILE]] {
        s.run(args).expect_code(0);
    }
    // Something found stays: 1.
    let s = Scenario::new(1);
    for args in [&["scan"][..], &["plan"], &["diff", FILE]] {
        s.run(args).expect_code(1);
    }
    // Could not complete: 2.
    let fx = Fixture::new();
    let missing = fx.root().join("no-such-root");
    for args in [
        &["scan"][..],
        &["plan"],
        &["diff", FILE],
        &["restore", "--yes"],
        &["undo"],
    ] {
        let mut all = vec!["--root", missing.to_str().unwrap()];
        all.extend_from_slice(args);
        let run = crate::fixture::Run::of({
            let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_kfd-audit"));
            c.args(&all);
            c
        });
        assert_eq!(run.code(), 2, "{args:?}: {}", run.stderr());
    }
}

#[test]
fn restore_and_undo() {
    // Everything restored: the tree is as it should be.
    let s = Scenario::new(2);
    s.run(&["restore", "--dry-run"]).expect_code(1);
    s.run(&["restore", "--yes"]).expect_code(0);
    s.run(&["scan"]).expect_code(0);
    // Nothing left to do.
    s.run(&["restore", "--yes"]).expect_code(0);
    s.run(&["restore", "--dry-run"]).expect_code(0);
    // Undo did what was asked: the previous versions are back (the scan says 1).
    s.run(&["undo"]).expect_code(0);
    s.run(&["scan"]).expect_code(1);

    // A modified file with no clean source stays, whether planned, dry-run or --yes.
    let s = Scenario::new(1);
    std::fs::remove_file(s.fx.path(&format!("{TREE}/{FILE}.orig"))).unwrap();
    let dry = s.run(&["restore", "--dry-run"]);
    dry.expect_code(1);
    let yes = s.run(&["restore", "--yes"]);
    yes.expect_code(1);
    // The least invasive way out comes first.
    assert!(
        yes.stdout()
            .contains("apt-get install --download-only --reinstall amdgpu-dkms"),
        "{}",
        yes.stdout()
    );
}

/// Issue 15 (confusing): the printed undo command carries the --root that was used,
/// so running it exactly as printed finds the run.
#[test]
fn printed_undo_command_runs_as_printed() {
    let s = Scenario::new(1);
    let out = s.run(&["restore", "--yes"]).stdout();
    let line = out
        .lines()
        .find_map(|l| l.split("to put the previous versions back: ").nth(1))
        .unwrap_or_else(|| panic!("{out}"));
    let argv: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(argv[0], "kfd-audit");
    assert_eq!(argv[1], "--root", "{line}");
    let run = crate::fixture::Run::of({
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_kfd-audit"));
        c.args(&argv[1..]);
        c
    });
    assert_eq!(run.code(), 0, "{line}: {}", run.stderr());
    s.assert_files(&[false]);
}
