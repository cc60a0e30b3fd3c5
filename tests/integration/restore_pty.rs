//! The interactive restore, driven through a real pseudo-terminal (`rexpect` spawns
//! the real binary; the prompts refuse anything that is not a terminal). TERM=linux
//! and 80x25 are what a recovery-mode console has.

use crate::fixture::TREE;
use crate::restore::Scenario;
use rexpect::reader::Options;
use rexpect::session::{spawn_with_options, PtySession};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

const TIMEOUT_MS: u64 = 30_000;

/// The console's size.
pub const ROWS: usize = 25;
pub const COLS: usize = 80;

/// Spawns a command in a pty of 80x25 (COLUMNS and LINES say so too). `strip`
/// removes escape sequences from what the tests read.
pub fn spawn_console(mut cmd: std::process::Command, strip: bool) -> PtySession {
    // A test may say LINES itself (a shorter screen makes a short text "long").
    if !cmd.get_envs().any(|(k, _)| k == "LINES") {
        cmd.env("LINES", ROWS.to_string());
    }
    cmd.env("TERM", "linux")
        .env("COLUMNS", COLS.to_string())
        .env_remove("KFD_AUDIT_FAILPOINT")
        .env_remove("NO_COLOR");
    let p = spawn_with_options(
        cmd,
        Options::new()
            .timeout_ms(Some(TIMEOUT_MS))
            .strip_ansi_escape_codes(strip),
    )
    .expect("spawn kfd-audit in a pty");
    let master = p.process().get_file_handle().expect("pty master");
    let size = libc::winsize {
        ws_row: ROWS as u16,
        ws_col: COLS as u16,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: a valid descriptor and a properly sized winsize.
    let rc = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &size) };
    assert_eq!(rc, 0, "TIOCSWINSZ: {}", std::io::Error::last_os_error());
    p
}

fn restore_cmd(s: &Scenario, extra: &[&str]) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_kfd-audit"));
    cmd.arg("--root")
        .arg(s.fx.root())
        .args(["--color", "never", "restore"])
        .args(extra);
    cmd
}

fn spawn(s: &Scenario, extra: &[&str]) -> PtySession {
    spawn_console(restore_cmd(s, extra), true)
}

/// The last screen of text before a question: the `ROWS - 1` lines above it (what
/// was written before, cleared menu lines included, so at least as much as the
/// screen shows).
pub fn screen_before(text: &str) -> Vec<String> {
    let lines: Vec<String> = text
        .split('\n')
        .map(|l| l.trim_end_matches('\r').to_string())
        .collect();
    let from = lines.len().saturating_sub(ROWS - 1);
    lines[from..].to_vec()
}

/// Waits for the process to end and returns its exit code.
pub fn exit_code(p: &mut PtySession) -> i32 {
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
pub fn keys(p: &mut PtySession, k: &str) {
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

/// Issue 17: each choice has a letter key; arrows still work.
#[test]
fn letter_keys_choose_without_moving() {
    let s = Scenario::new(5);
    let mut p = spawn(&s, &[]);
    p.exp_string(&question(1, 5)).unwrap();
    keys(&mut p, "r");
    p.exp_string(&question(2, 5)).unwrap();
    keys(&mut p, "s");
    p.exp_string(&question(3, 5)).unwrap();
    keys(&mut p, "d");
    p.exp_string("-// patched for 0x731F").unwrap();
    p.exp_string(&question(3, 5)).unwrap();
    // An arrow (escape sequence) moves down to "skip".
    keys(&mut p, "\x1b[B");
    keys(&mut p, ENTER);
    p.exp_string(&question(4, 5)).unwrap();
    keys(&mut p, "a");
    p.exp_string("Restore 3 file(s) now (2 skipped)?").unwrap();
    keys(&mut p, "y");
    p.exp_string("restored 3 of 3 file(s)").unwrap();
    assert_eq!(exit_code(&mut p), 1);
    s.assert_files(&[true, false, false, true, true]);
}

/// Issue 17: the files the final question is about stand right above it, on one
/// 80x25 screen, even when the plan above is longer than the screen.
#[test]
fn the_final_question_and_its_files_share_one_screen() {
    let s = Scenario::new(9);
    let mut p = spawn(&s, &[]);
    p.exp_string(&question(1, 9)).unwrap();
    keys(&mut p, "a");
    let before = p.exp_string("Restore 9 file(s) now (0 skipped)?").unwrap();
    let screen = screen_before(&before);
    for (rel, _, _) in &s.files {
        let path = format!("/{TREE}/{rel}");
        assert!(
            screen.iter().any(|l| l.ends_with(&path)),
            "{path} is not on the screen with the question:\n{}",
            screen.join("\n")
        );
    }
    // Each answered question is on the screen once.
    let asked = before.matches(&question(1, 9)).count();
    assert_eq!(asked, 1, "collapsed to one line, once:\n{before}");
    keys(&mut p, "n");
    p.exp_string("nothing was restored").unwrap();
    assert_eq!(exit_code(&mut p), 1);
}

/// Issue 17: Ctrl-C at the menu shows the cursor again, exits 130 and changes
/// nothing; the lock is released (the next run does not find a stale one). Ctrl-C
/// comes as a key in raw mode, or as SIGINT between two keys: both end the same.
#[test]
fn ctrl_c_at_the_menu_shows_the_cursor_and_changes_nothing() {
    let s = Scenario::new(2);
    let mut p = spawn_console(restore_cmd(&s, &[]), false);
    p.exp_string("[1/2] Restore ").unwrap();
    p.exp_string("quit").unwrap();
    p.send_control('c').unwrap();
    p.flush().unwrap();
    let after = p.exp_eof().unwrap();
    assert!(
        after.contains("\x1b[?25h"),
        "the cursor was not shown after Ctrl-C: {after:?}"
    );
    match p.process().wait().expect("wait") {
        rexpect::process::WaitStatus::Exited(_, code) => assert_eq!(code, 130),
        other => panic!("not a normal exit: {other:?}"),
    }
    s.assert_files(&[false, false]);
    assert!(!s.state().join("journal").exists());
    let next = s.run(&["restore", "--yes"]);
    next.expect_code(0);
    assert!(!next.stderr().contains("stale lock"), "{}", next.stderr());
}

/// Ctrl-C at the final yes/no question too.
#[test]
fn ctrl_c_at_the_final_question_changes_nothing() {
    let s = Scenario::new(2);
    let mut p = spawn_console(restore_cmd(&s, &[]), false);
    p.exp_string("[1/2] Restore ").unwrap();
    p.exp_string("quit").unwrap();
    keys(&mut p, "a");
    p.exp_string("[y/N]").unwrap();
    p.send_control('c').unwrap();
    p.flush().unwrap();
    let after = p.exp_eof().unwrap();
    assert!(after.contains("\x1b[?25h"), "{after:?}");
    match p.process().wait().expect("wait") {
        rexpect::process::WaitStatus::Exited(_, code) => assert_eq!(code, 130),
        other => panic!("not a normal exit: {other:?}"),
    }
    s.assert_files(&[false, false]);
}

/// Escape quits the menu: nothing is restored, the cursor comes back.
#[test]
fn escape_quits_and_shows_the_cursor() {
    let s = Scenario::new(2);
    let mut p = spawn_console(restore_cmd(&s, &[]), false);
    p.exp_string("[1/2] Restore ").unwrap();
    p.exp_string("quit").unwrap();
    keys(&mut p, "\x1b");
    let after = p.exp_eof().unwrap();
    assert!(after.contains("\x1b[?25h"), "{after:?}");
    assert!(after.contains("nothing was restored"), "{after:?}");
    s.assert_files(&[false, false]);
}

/// Issue 15, item 4: the review asks about added files with the same keys; a moved
/// file is in the quarantine, journaled, and undo puts it back.
#[test]
fn added_files_are_offered_moved_and_undone() {
    let s = Scenario::new(1);
    let kbuild =
        s.fx.write(&format!("{TREE}/amd/amdkfd/Kbuild"), "obj-y += evil.o\n");
    let notes =
        s.fx.write(&format!("{TREE}/amd/amdkfd/NOTES.txt"), "my notes\n");
    std::fs::set_permissions(&kbuild, std::fs::Permissions::from_mode(0o640)).unwrap();
    let mut p = spawn(&s, &[]);
    p.exp_string(&question(1, 3)).unwrap();
    keys(&mut p, "r");
    p.exp_string("[2/3] Move the added file").unwrap();
    p.exp_string("the build reads it").unwrap();
    keys(&mut p, "d");
    p.exp_string("-obj-y += evil.o").unwrap();
    p.exp_string("[2/3] Move the added file").unwrap();
    keys(&mut p, "r");
    p.exp_string("[3/3] Move the added file").unwrap();
    p.exp_string("the build does not read it").unwrap();
    keys(&mut p, "s");
    p.exp_string("Restore 1 file(s) and move 1 added file(s) into the quarantine now (1 skipped)?")
        .unwrap();
    keys(&mut p, "y");
    p.exp_string("restored 2 of 2 file(s)").unwrap();
    p.exp_string("moved away").unwrap();
    assert_eq!(
        exit_code(&mut p),
        1,
        "the notes stay: something found stays"
    );
    s.assert_files(&[true]);
    assert!(!kbuild.exists());
    assert!(notes.exists());
    let journal = &s.journals()[0];
    let moved = journal
        .iter()
        .find(|l| l["event"] == "intent" && l["rel"] == "amd/amdkfd/Kbuild")
        .expect("the move is journaled");
    assert!(moved["new_sha256"].is_null());
    let q = s.fx.path(moved["quarantine"].as_str().unwrap());
    assert_eq!(std::fs::read(q).unwrap(), b"obj-y += evil.o\n");

    let list = s.run(&["--format", "json", "undo", "--list"]).json();
    let files = list["runs"][0]["files"].as_array().unwrap();
    let kb = files
        .iter()
        .find(|f| f["path"].as_str().unwrap().ends_with("/Kbuild"))
        .unwrap();
    assert_eq!(
        (&kb["journal"], &kb["now"]),
        (&"moved".into(), &"new".into())
    );

    s.run(&["undo"]).expect_code(0);
    assert_eq!(std::fs::read(&kbuild).unwrap(), b"obj-y += evil.o\n");
    // It comes back with the mode it had, not a default one.
    let mode = std::fs::metadata(&kbuild).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o640);
    s.assert_files(&[false]);
}

/// "Show the diff" hands a diff longer than the screen to $PAGER, as git does, and
/// never with --no-pager.
#[test]
fn show_diff_goes_through_the_pager_unless_no_pager() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("paged");
    let pager = dir.path().join("pager.sh");
    std::fs::write(
        &pager,
        format!("#!/bin/sh\ncat > '{}'\necho PAGER-RAN\n", marker.display()),
    )
    .unwrap();
    std::fs::set_permissions(&pager, std::fs::Permissions::from_mode(0o755)).unwrap();
    for no_pager in [false, true] {
        let s = Scenario::new(1);
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_kfd-audit"));
        cmd.arg("--root")
            .arg(s.fx.root())
            .args(["--color", "never"]);
        if no_pager {
            cmd.arg("--no-pager");
        }
        cmd.arg("restore").env("PAGER", &pager).env("LINES", "5");
        let mut p = spawn_console(cmd, true);
        p.exp_string(&question(1, 1)).unwrap();
        keys(&mut p, "d");
        if no_pager {
            p.exp_string("+++ amd/amdkfd/kfd_f0.c (clean)").unwrap();
        } else {
            p.exp_string("PAGER-RAN").unwrap();
        }
        p.exp_string(&question(1, 1)).unwrap();
        keys(&mut p, "q");
        assert_eq!(exit_code(&mut p), 1);
        if no_pager {
            assert!(!marker.exists(), "--no-pager ran the pager");
        } else {
            let paged = std::fs::read_to_string(&marker).unwrap();
            assert!(paged.contains("+++ amd/amdkfd/kfd_f0.c (clean)"), "{paged}");
            std::fs::remove_file(&marker).unwrap();
        }
        s.assert_files(&[false]);
    }
}

/// A SIGTERM while a prompt has the terminal (a shutdown, `kill` from another console)
/// shows the cursor, puts back the terminal's modes (line editing, Ctrl-C, echo) and
/// exits 130 changing nothing.
#[test]
fn sigterm_at_a_prompt_gives_the_terminal_back() {
    let s = Scenario::new(2);
    let mut p = spawn_console(restore_cmd(&s, &[]), false);
    p.exp_string("[1/2] Restore ").unwrap();
    p.exp_string("quit").unwrap();
    let master = p.process().get_file_handle().expect("pty master");
    let modes = || {
        // SAFETY: tcgetattr on the pty master (Linux answers with the terminal's modes).
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            assert_eq!(libc::tcgetattr(master.as_raw_fd(), &mut t), 0);
            t.c_lflag
        }
    };
    // (rexpect's pty has echo off from the start; line editing and signals are the
    // terminal's own modes that the prompt turns off.)
    assert_eq!(
        modes() & libc::ICANON,
        0,
        "the prompt turns line editing off"
    );
    p.process_mut()
        .signal(rexpect::process::Signal::SIGTERM)
        .unwrap();
    let after = p.exp_eof().unwrap();
    assert!(after.contains("\x1b[?25h"), "{after:?}");
    match p.process().wait().expect("wait") {
        rexpect::process::WaitStatus::Exited(_, code) => assert_eq!(code, 130),
        other => panic!("not a normal exit: {other:?}"),
    }
    let lflag = modes();
    assert_ne!(lflag & libc::ICANON, 0, "line editing left off");
    assert_ne!(lflag & libc::ISIG, 0, "Ctrl-C left off");
    s.assert_files(&[false, false]);
}
