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
    // Issue 15: the follow-up command carries the --root used, and names the tree.
    let again = format!(
        "then run kfd-audit --root {} restore --tree /{TREE} again",
        s.fx.root().display()
    );
    assert!(yes.stdout().contains(&again), "{}", yes.stdout());
    // So does undo's advice when there is nothing to undo.
    let undo = s.run(&["undo"]);
    undo.expect_code(2);
    assert!(
        undo.stderr().contains(&format!(
            "'kfd-audit --root {} undo --list'",
            s.fx.root().display()
        )),
        "{}",
        undo.stderr()
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

/// Issue 15, item 5: `restore --yes --only X` while other files stay modified has
/// left something found: 1. The rest restored: 0.
#[test]
fn restore_only_part_of_the_tree_exits_1() {
    let s = Scenario::new(2);
    s.run(&["restore", "--yes", "--only", FILE]).expect_code(1);
    s.assert_files(&[true, false]);
    s.run(&["restore", "--yes", "--only", "amd/amdkfd/kfd_f1.c"])
        .expect_code(0);
    s.assert_files(&[true, true]);
    // Nothing left under --only, nothing left elsewhere: 0.
    s.run(&["restore", "--yes"]).expect_code(0);
}

/// Issue 15, item 4: added files. `--yes` moves those the build reads and leaves the
/// others (1: they stay); the follow-up command carries the --root and --tree used.
#[test]
fn restore_yes_moves_added_build_files_and_says_what_stays() {
    let s = Scenario::new(1);
    let kbuild =
        s.fx.write(&format!("{TREE}/amd/amdkfd/Kbuild"), "obj-y += x.o\n");
    let evil =
        s.fx.write(&format!("{TREE}/amd/amdkfd/evil.c"), "int evil;\n");
    let notes =
        s.fx.write(&format!("{TREE}/amd/amdkfd/NOTES.txt"), "notes\n");
    let tree = format!("/{TREE}");
    // --help says which added files --yes moves.
    let help = s.run(&["restore", "--help"]).stdout();
    let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        help.contains("moves into the quarantine the added files the build reads")
            && help.contains("Added files the build does not read stay where they are"),
        "{help}"
    );
    let dry = s.run(&["restore", "--dry-run"]);
    dry.expect_code(1);
    assert!(
        dry.stdout().contains("3 added (2 read by the build)"),
        "{}",
        dry.stdout()
    );
    let run = s.run(&["restore", "--yes", "--tree", &tree]);
    run.expect_code(1);
    let out = run.stdout();
    assert!(!kbuild.exists() && !evil.exists(), "{out}");
    assert!(notes.exists());
    s.assert_files(&[true]);
    assert!(out.contains("moved away"), "{out}");
    let root = s.fx.root().display().to_string();
    assert!(
        out.contains(&format!(
            "run kfd-audit --root {root} restore --tree {tree} (without --yes)"
        )),
        "{out}"
    );
    // The next steps are the rebuild, not another restore.
    let next = out
        .split("Next, rebuild")
        .nth(1)
        .unwrap_or_else(|| panic!("{out}"));
    assert!(!next.contains("kfd-audit"), "{next}");
    // Nothing left that --yes would move: it has nothing to do, and says so.
    let again = s.run(&["restore", "--yes"]);
    again.expect_code(1);
    assert!(
        again.stdout().contains("nothing to restore"),
        "{}",
        again.stdout()
    );
    // Undo puts both back, byte for byte.
    s.run(&["undo"]).expect_code(0);
    assert_eq!(std::fs::read(&kbuild).unwrap(), b"obj-y += x.o\n");
    assert_eq!(std::fs::read(&evil).unwrap(), b"int evil;\n");
}

/// An added file with an unsafe finding counts for the DKMS state whatever its name
/// (a `.inc` can be #included): `restore --yes` moves it too, so that `plan --run`
/// is not left refusing.
#[test]
fn restore_yes_moves_an_added_file_with_a_finding_whatever_its_name() {
    let s = Scenario::new(1);
    let inc = s.fx.write(
        &format!("{TREE}/amd/amdkfd/kfd_navi10.inc"),
        "pr_info(\"RDNA1 fix: fine-grained VRAM for 0x731F\\n\");\n",
    );
    let scan = s.run(&["--format", "json", "scan"]);
    let f = crate::fixture::json_file(&scan.json(), "amd/amdkfd/kfd_navi10.inc")
        .cloned()
        .unwrap_or_default();
    assert_eq!(f["status"], "added", "{f}");
    assert!(
        f["findings"].as_array().is_some_and(|a| !a.is_empty()),
        "the case needs a finding on the added file: {f}"
    );
    let run = s.run(&["restore", "--yes"]);
    assert!(
        !inc.exists(),
        "an added file with a finding was left in the tree:\n{}",
        run.stdout()
    );
    s.assert_files(&[true]);
}
