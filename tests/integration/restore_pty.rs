//! The interactive restore, driven through a real pseudo-terminal (`rexpect` spawns
//! the real binary; dialoguer refuses anything that is not a terminal). TERM=linux
//! is what a recovery-mode console has.

use crate::restore::Scenario;
use rexpect::reader::Options;
use rexpect::session::{spawn_with_options, PtySession};
use std::path::Path;

const TIMEOUT_MS: u64 = 30_000;

fn spawn(s: &Scenario, extra: &[&str]) -> PtySession {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_kfd-audit"));
    cmd.arg("--root")
        .arg(s.fx.root())
        .args(["--color", "never", "restore"])
        .args(extra)
        .env("TERM", "linux")
        .env_remove("KFD_AUDIT_FAILPOINT")
        .env_remove("NO_COLOR");
    spawn_with_options(
        cmd,
        Options::new()
            .timeout_ms(Some(TIMEOUT_MS))
            .strip_ansi_escape_codes(true),
    )
    .expect("spawn kfd-audit in a pty")
}

/// Waits for the process to end and returns its exit code.
fn exit_code(p: &mut PtySession) -> i32 {
    let _ = p.exp_eof();
    match p.process().wait().expect("wait") {
        rexpect::process::WaitStatus::Exited(_, code) => code,
        other => panic!("kfd-audit did not exit normally: {other:?}"),
    }
}

fn question(i: usize, n: usize) -> String {
    format!("[{i}/{n}] Restore ")
}

const DOWN: &str = "j";
const ENTER: &str = "\r";

/// Sends keys and flushes (rexpect's writer only flushes by itself on a newline).
fn keys(p: &mut PtySession, k: &str) {
    p.send(k).unwrap();
    p.flush().unwrap();
}

#[test]
fn accept_one_skip_one_accept_all_remaining() {
    let s = Scenario::new(4);
    let mut p = spawn(&s, &[]);
    p.exp_string("4 files to restore").unwrap();
    // 1: accept (the default entry).
    p.exp_string(&question(1, 4)).unwrap();
    keys(&mut p, ENTER);
    // 2: skip.
    p.exp_string(&question(2, 4)).unwrap();
    keys(&mut p, DOWN);
    keys(&mut p, ENTER);
    // 3: restore this and all remaining.
    p.exp_string(&question(3, 4)).unwrap();
    keys(&mut p, &DOWN.repeat(3));
    keys(&mut p, ENTER);
    p.exp_string("Restore 3 file(s) now (1 skipped)?").unwrap();
    keys(&mut p, "y");
    p.exp_string("restored 3 of 3 file(s)").unwrap();
    p.exp_string("skipped 1 file(s): they stay as they are")
        .unwrap();
    p.exp_string("dkms remove -m amdgpu").unwrap();
    // Issue 15, item 5: a skipped file stays changed, so the exit code is 1.
    assert_eq!(exit_code(&mut p), 1);
    s.assert_files(&[true, false, true, true]);
    // The journal knows exactly these three.
    let journal = &s.journals()[0];
    let paths: Vec<&str> = journal
        .iter()
        .filter(|l| l["event"] == "intent")
        .map(|l| l["rel"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        [
            "amd/amdkfd/kfd_f0.c",
            "amd/amdkfd/kfd_f2.c",
            "amd/amdkfd/kfd_f3.c"
        ]
    );
}

#[test]
fn show_diff_then_quit_changes_nothing() {
    let s = Scenario::new(2);
    let mut p = spawn(&s, &[]);
    p.exp_string(&question(1, 2)).unwrap();
    keys(&mut p, &DOWN.repeat(2));
    keys(&mut p, ENTER);
    p.exp_string("+++ amd/amdkfd/kfd_f0.c (clean)").unwrap();
    p.exp_string("-// patched for 0x731F").unwrap();
    // Asked again about the same file; quit is the last entry.
    p.exp_string(&question(1, 2)).unwrap();
    keys(&mut p, &DOWN.repeat(4));
    keys(&mut p, ENTER);
    p.exp_string("nothing was restored").unwrap();
    assert_eq!(exit_code(&mut p), 1);
    s.assert_files(&[false, false]);
    assert!(!s.state().join("journal").exists());
    assert!(!s.state().join("quarantine").exists());
}

#[test]
fn saying_no_at_the_end_changes_nothing() {
    let s = Scenario::new(2);
    let mut p = spawn(&s, &[]);
    p.exp_string(&question(1, 2)).unwrap();
    keys(&mut p, &DOWN.repeat(3));
    keys(&mut p, ENTER);
    p.exp_string("Restore 2 file(s) now (0 skipped)?").unwrap();
    keys(&mut p, "n");
    p.exp_string("nothing was restored").unwrap();
    assert_eq!(exit_code(&mut p), 1);
    s.assert_files(&[false, false]);
}

#[test]
fn a_source_changed_after_the_plan_is_refused() {
    let s = Scenario::new(3);
    let mut p = spawn(&s, &[]);
    p.exp_string(&question(1, 3)).unwrap();
    keys(&mut p, &DOWN.repeat(3));
    keys(&mut p, ENTER);
    p.exp_string("Restore 3 file(s) now").unwrap();
    // While the user reads the summary, the chosen clean source changes.
    let orig = s.host("amd/amdkfd/kfd_f1.c.orig");
    std::fs::write(&orig, "// not the clean file any more\n").unwrap();
    keys(&mut p, "y");
    p.exp_string("restored 2 of 3 file(s)").unwrap();
    p.exp_string("no longer matches").unwrap();
    assert_eq!(exit_code(&mut p), 1);
    s.assert_files(&[true, false, true]);
    // Nothing was journaled or quarantined for the refused file.
    let journal = &s.journals()[0];
    assert!(!journal.iter().any(|l| l["rel"] == "amd/amdkfd/kfd_f1.c"));
    let q = Path::new(journal[1]["quarantine"].as_str().unwrap());
    assert!(!s
        .fx
        .path(q.parent().unwrap().join("kfd_f1.c").to_str().unwrap())
        .exists());
}
