//! `kfd-audit restore` and `undo` with `--yes` and `--dry-run`: the safety protocol
//! (quarantine, journal, mode and owner, symlinks, read-only root, lock, write errors).
#![allow(dead_code)]

use crate::fixture::{Fixture, Run, TREE, VERSION};
use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A tree of `n` patched files, each with a verified clean `.orig` backup beside it.
pub struct Scenario {
    pub fx: Fixture,
    /// (path in the tree, patched bytes, clean bytes)
    pub files: Vec<(String, Vec<u8>, Vec<u8>)>,
}

pub fn clean_of(i: usize) -> String {
    format!(
        "// SPDX-License-Identifier: GPL-2.0 OR MIT\nint kfd_f{i}(void)\n{{\n\treturn {i};\n}}\n"
    )
}

impl Scenario {
    pub fn new(n: usize) -> Scenario {
        let fx = Fixture::new();
        let names: Vec<(String, String)> = (0..n)
            .map(|i| (format!("amd/amdkfd/kfd_f{i}.c"), clean_of(i)))
            .collect();
        let refs: Vec<(&str, &str)> = names
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        fx.tree_with(TREE, Some("amdgpu-dkms"), &refs);
        let mut files = Vec::new();
        for (rel, clean) in &names {
            let patched = format!("// patched for 0x731F\n{clean}flags |= 1;\n");
            fx.write(&format!("{TREE}/{rel}.orig"), clean);
            fx.write(&format!("{TREE}/{rel}"), &patched);
            files.push((
                rel.clone(),
                patched.into_bytes(),
                clean.clone().into_bytes(),
            ));
        }
        Scenario { fx, files }
    }

    pub fn host(&self, rel: &str) -> PathBuf {
        self.fx.path(&format!("{TREE}/{rel}"))
    }

    pub fn read(&self, rel: &str) -> Vec<u8> {
        std::fs::read(self.host(rel)).unwrap()
    }

    /// Runs the binary with extra environment.
    pub fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        Run::of(self.command(args, env))
    }

    pub fn command(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kfd-audit"));
        cmd.arg("--root")
            .arg(self.fx.root())
            .args(args)
            .env_remove("KFD_AUDIT_FAILPOINT")
            .stdin(std::process::Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Run {
        self.run_env(args, &[])
    }

    /// Asserts each file is exactly the patched (`false`) or clean (`true`) version.
    pub fn assert_files(&self, clean: &[bool]) {
        for ((rel, patched, cleanb), want_clean) in self.files.iter().zip(clean) {
            let now = self.read(rel);
            let want = if *want_clean { cleanb } else { patched };
            assert!(
                now == *want,
                "{rel}: expected the {} version, found:\n{}",
                if *want_clean { "clean" } else { "patched" },
                String::from_utf8_lossy(&now)
            );
        }
    }

    pub fn state(&self) -> PathBuf {
        self.fx.path("var/lib/kfd-audit")
    }

    /// Every journal line of every run, oldest run first.
    pub fn journals(&self) -> Vec<Vec<serde_json::Value>> {
        let dir = self.state().join("journal");
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map(|d| d.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default();
        files.sort();
        files
            .iter()
            .map(|f| {
                std::fs::read_to_string(f)
                    .unwrap()
                    .lines()
                    .map(|l| serde_json::from_str(l).unwrap())
                    .collect()
            })
            .collect()
    }
}

/// Everything under a directory: type, mode, owner, size, content hash or link
/// target, modification time. Two equal listings mean nothing was touched.
pub fn listing(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    for e in walkdir_all(root) {
        let m = std::fs::symlink_metadata(&e).unwrap();
        let what = if m.file_type().is_symlink() {
            format!("link {}", std::fs::read_link(&e).unwrap().display())
        } else if m.is_file() {
            crate::fixture::md5_hex(&std::fs::read(&e).unwrap())
        } else {
            "dir".to_string()
        };
        out.insert(
            e.strip_prefix(root).unwrap().to_path_buf(),
            format!(
                "{what} mode={:o} uid={} gid={} size={} mtime={}.{}",
                m.mode(),
                m.uid(),
                m.gid(),
                m.len(),
                m.mtime(),
                m.mtime_nsec()
            ),
        );
    }
    out
}

fn walkdir_all(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let ft = std::fs::symlink_metadata(&p).unwrap().file_type();
            if ft.is_dir() {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out
}

/// Temporary files of kfd-audit anywhere under the root.
pub fn temp_files(root: &Path) -> Vec<PathBuf> {
    walkdir_all(root)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(".kfd-audit-tmp."))
        })
        .collect()
}

fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn yes_restores_keeps_mode_and_owner_and_quarantines_the_old_files() {
    let s = Scenario::new(3);
    let f0 = s.host(&s.files[0].0);
    std::fs::set_permissions(&f0, std::fs::Permissions::from_mode(0o640)).unwrap();
    if is_root() {
        std::os::unix::fs::chown(&f0, Some(1234), Some(5678)).unwrap();
    }
    let run = s.run(&["restore", "--yes"]);
    run.expect_code(0);
    s.assert_files(&[true, true, true]);
    let out = run.stdout();
    assert!(out.contains("restored 3 of 3 file(s)"), "{out}");
    assert!(
        out.contains(&format!("dkms remove -m amdgpu -v {VERSION} --all")),
        "{out}"
    );
    assert!(
        out.contains(&format!("dkms build -m amdgpu -v {VERSION} -k")),
        "{out}"
    );
    assert!(
        out.contains(&format!("dkms install -m amdgpu -v {VERSION} -k")),
        "{out}"
    );

    // Mode and owner are kept.
    let m = std::fs::metadata(&f0).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o640);
    if is_root() {
        assert_eq!((m.uid(), m.gid()), (1234, 5678));
    }

    // The journal: begin, then intent/done per file (intent first), then end.
    let runs = s.journals();
    assert_eq!(runs.len(), 1);
    let lines = &runs[0];
    let events: Vec<&str> = lines.iter().map(|l| l["event"].as_str().unwrap()).collect();
    assert_eq!(
        events,
        ["begin", "intent", "done", "intent", "done", "intent", "done", "end"]
    );
    let id = lines[0]["id"].as_str().unwrap();
    for (k, (rel, patched, clean)) in s.files.iter().enumerate() {
        let intent = &lines[1 + 2 * k];
        assert_eq!(intent["path"], format!("/{TREE}/{rel}"));
        assert_eq!(intent["old_sha256"], sha256(patched));
        assert_eq!(intent["new_sha256"], sha256(clean));
        assert_eq!(intent["source"], "backup");
        assert_eq!(intent["origin"], format!("backup /{TREE}/{rel}.orig"));
        // The quarantine holds the exact old bytes.
        let q = intent["quarantine"].as_str().unwrap();
        assert_eq!(
            q,
            format!("/var/lib/kfd-audit/quarantine/{id}/{TREE}/{rel}")
        );
        assert_eq!(&s.fx.read(q), patched);
    }
    // Nothing was deleted: the backups are still there, and no temp file is left.
    for (rel, _, clean) in &s.files {
        assert_eq!(&s.read(&format!("{rel}.orig")), clean);
    }
    assert!(temp_files(s.fx.root()).is_empty());

    let j = s.fx.run(&["--format", "json", "scan"]).json();
    assert_eq!(j["summary"]["modified"], 0);

    // A second run has nothing to do.
    let again = s.run(&["restore", "--yes"]);
    again.expect_code(0);
    assert!(
        again.stdout().contains("nothing to restore"),
        "{}",
        again.stdout()
    );
}

pub fn sha256(data: &[u8]) -> String {
    let out = Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(data)?;
            c.wait_with_output()
        })
        .unwrap();
    String::from_utf8(out.stdout).unwrap()[..64].to_string()
}

#[test]
fn dry_run_leaves_the_root_byte_identical() {
    let s = Scenario::new(3);
    std::fs::remove_file(s.host(&s.files[2].0)).unwrap();
    // A stale lock and a leftover temp file must not be touched either.
    s.fx.write("var/lib/kfd-audit/restore.lock", "999999999\n");
    s.fx.write(
        &format!("{TREE}/amd/amdkfd/.kfd-audit-tmp.999999999.kfd_f0.c"),
        "half",
    );
    let before = listing(s.fx.root());

    let text = s.run(&["restore", "--dry-run"]);
    text.expect_code(1);
    let out = text.stdout();
    assert!(out.contains("3 files to restore"), "{out}");
    assert!(out.contains("  replace  amd/amdkfd/kfd_f0.c"), "{out}");
    assert!(out.contains("  create   amd/amdkfd/kfd_f2.c"), "{out}");
    assert!(
        out.contains(&format!("from backup /{TREE}/amd/amdkfd/kfd_f0.c.orig")),
        "{out}"
    );
    // The backup is shown as a backup of its file, not as an added file to keep.
    assert!(!out.contains("kept     amd/amdkfd/kfd_f0.c.orig"), "{out}");
    assert!(
        out.contains("leftover amd/amdkfd/.kfd-audit-tmp.999999999.kfd_f0.c"),
        "{out}"
    );
    assert!(out.contains("dry run: nothing was changed"), "{out}");

    let j = s.run(&["--format", "json", "restore", "--dry-run"]);
    j.expect_code(1);
    let j = j.json();
    assert_eq!(j["dry_run"], true);
    assert_eq!(j["summary"]["restore"], 3);
    let items = j["trees"][0]["restore"].as_array().unwrap();
    assert_eq!(items[0]["path"], "amd/amdkfd/kfd_f0.c");
    assert_eq!(items[0]["action"], "replace");
    assert_eq!(items[0]["source"], "backup");
    assert_eq!(items[0]["reference"], "dpkg-md5sums");
    assert_eq!(items[0]["verified"], crate::fixture::md5_hex(&s.files[0].2));
    assert_eq!(items[0]["current"], crate::fixture::md5_hex(&s.files[0].1));
    assert_eq!(items[2]["action"], "create");
    assert_eq!(items[2]["current"], serde_json::Value::Null);

    let md = s.run(&["--format", "markdown", "restore", "--dry-run"]);
    md.expect_code(1);
    assert!(
        md.stdout().starts_with("# kfd-audit restore plan"),
        "{}",
        md.stdout()
    );
    assert!(
        md.stdout()
            .contains("| replace | `amd/amdkfd/kfd_f0.c` | backup"),
        "{}",
        md.stdout()
    );

    assert_eq!(before, listing(s.fx.root()));
}

#[test]
fn no_terminal_refuses_and_names_yes_and_dry_run() {
    let s = Scenario::new(1);
    let before = listing(s.fx.root());
    let run = s.run(&["restore"]);
    run.expect_code(2);
    let err = run.stderr();
    assert!(err.contains("--yes") && err.contains("--dry-run"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(before, listing(s.fx.root()));
}

#[test]
fn read_only_root_refuses_and_names_the_remount() {
    let s = Scenario::new(2);
    s.fx.write(
        "proc/self/mounts",
        "/dev/sda2 / ext4 ro,relatime 0 0\nproc /proc proc rw 0 0\n",
    );
    let before = listing(s.fx.root());
    let run = s.run(&["restore", "--yes"]);
    run.expect_code(2);
    assert!(run.stderr().contains("read-only"), "{}", run.stderr());
    // Issue 15, item 7: under --root the audited system's / is the root directory
    // on this host, never the host's own / (a live USB's).
    let r = s.fx.root().display().to_string();
    assert!(
        run.stderr()
            .contains(&format!("Make it writable with: mount -o remount,rw {r} (")),
        "{}",
        run.stderr()
    );
    assert_eq!(before, listing(s.fx.root()));
    // The plan still works.
    let dry = s.run(&["restore", "--dry-run"]);
    dry.expect_code(1);
    assert!(
        dry.stdout().contains("2 files to restore"),
        "{}",
        dry.stdout()
    );
    assert_eq!(before, listing(s.fx.root()));

    // Only the state directory read-only (a separate /var) is refused as well.
    s.fx.write(
        "proc/self/mounts",
        "/dev/sda2 / ext4 rw 0 0\n/dev/sda3 /var ext4 ro 0 0\n",
    );
    let run = s.run(&["restore", "--yes"]);
    run.expect_code(2);
    assert!(
        run.stderr()
            .contains(&format!("mount -o remount,rw {r}/var")),
        "{}",
        run.stderr()
    );
    s.assert_files(&[false, false]);
}

#[test]
fn symlinked_target_and_symlinked_directory_are_refused() {
    let s = Scenario::new(3);
    let outside = s.fx.write("elsewhere/secret.c", "outside\n");
    let f1 = s.host(&s.files[1].0);
    std::fs::remove_file(&f1).unwrap();
    std::os::unix::fs::symlink(&outside, &f1).unwrap();
    let run = s.run(&["restore", "--yes"]);
    run.expect_code(1);
    let out = run.stdout();
    assert!(
        out.contains("refused  amd/amdkfd/kfd_f1.c: a symbolic link"),
        "{out}"
    );
    assert!(out.contains("restored 2 of 2 file(s)"), "{out}");
    assert!(std::fs::symlink_metadata(&f1)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(std::fs::read(&outside).unwrap(), b"outside\n");
    assert_eq!(s.read(&s.files[0].0), s.files[0].2);

    // A directory of the tree swapped for a link to elsewhere: nothing is written there.
    let s = Scenario::new(2);
    let kfd = s.fx.path(&format!("{TREE}/amd/amdkfd"));
    let moved = s.fx.path("elsewhere/amdkfd");
    std::fs::create_dir_all(moved.parent().unwrap()).unwrap();
    std::fs::rename(&kfd, &moved).unwrap();
    for (rel, _, _) in &s.files {
        // Only the clean backups are left over there.
        std::fs::remove_file(
            s.fx.path("elsewhere")
                .join(Path::new(rel).strip_prefix("amd").unwrap()),
        )
        .unwrap();
    }
    std::os::unix::fs::symlink(&moved, &kfd).unwrap();
    let before = listing(&moved);
    let run = s.run(&["restore", "--yes"]);
    let out = run.stdout();
    // The backups over there are not the tree's: not read, not offered as sources.
    assert!(
        out.contains("0 files to restore, 2 without a clean source"),
        "{out}"
    );
    assert!(
        out.contains("kept     amd/amdkfd (in no reference"),
        "{out}"
    );
    assert_eq!(before, listing(&moved));
}

#[test]
fn lock_held_by_a_live_process_refuses_a_dead_one_is_taken_over() {
    let s = Scenario::new(2);
    let mut live = Command::new("sleep").arg("60").spawn().unwrap();
    s.fx.write("var/lib/kfd-audit/restore.lock", format!("{}\n", live.id()));
    let run = s.run(&["restore", "--yes"]);
    run.expect_code(2);
    assert!(
        run.stderr().contains(&format!("process {}", live.id())),
        "{}",
        run.stderr()
    );
    s.assert_files(&[false, false]);
    live.kill().unwrap();
    live.wait().unwrap();

    // The process is gone: its lock is stale and taken over with a warning.
    let run = s.run(&["restore", "--yes"]);
    run.expect_code(0);
    assert!(
        run.stderr().contains("took over the stale lock"),
        "{}",
        run.stderr()
    );
    assert!(run.stderr().contains(&format!("process {}", live.id())));
    s.assert_files(&[true, true]);
    // Released: the lock file is empty after the run.
    assert_eq!(s.fx.read("var/lib/kfd-audit/restore.lock"), b"");
}

#[test]
fn undo_puts_back_and_refuses_a_file_changed_since() {
    let s = Scenario::new(3);
    s.run(&["restore", "--yes"]).expect_code(0);
    s.assert_files(&[true, true, true]);
    let id = s.journals()[0][0]["id"].as_str().unwrap().to_string();

    // Someone edits a restored file again: undo must not overwrite it.
    std::fs::write(s.host(&s.files[1].0), "// edited after the restore\n").unwrap();
    // The lock is taken (and released) before the files are checked; all else stays.
    let unlocked = |mut l: BTreeMap<PathBuf, String>| {
        l.remove(Path::new("var/lib/kfd-audit/restore.lock"));
        l
    };
    let before = unlocked(listing(s.fx.root()));
    let run = s.run(&["undo"]);
    run.expect_code(2);
    let err = run.stderr();
    assert!(
        err.contains(&format!(
            "/{TREE}/amd/amdkfd/kfd_f1.c: changed since run {id}"
        )),
        "{err}"
    );
    assert!(err.contains("undo of") && err.contains("refused"), "{err}");
    assert_eq!(before, unlocked(listing(s.fx.root())));

    // Once the file is back to what the restore wrote, the undo goes through.
    std::fs::write(s.host(&s.files[1].0), &s.files[1].2).unwrap();
    let run = s.run(&["undo"]);
    run.expect_code(0);
    assert!(
        run.stdout().contains("put back 3 of 3 file(s)"),
        "{}",
        run.stdout()
    );
    s.assert_files(&[false, false, false]);

    let list = s.run(&["--format", "json", "undo", "--list"]).json();
    let runs = list["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0]["id"], id.as_str());
    assert_eq!(runs[0]["state"], "complete");
    assert_eq!(runs[0]["undone_by"], runs[1]["id"]);
    assert_eq!(runs[1]["kind"], "undo");
    assert_eq!(runs[1]["undoes"], id.as_str());
    assert!(runs[0]["files"]
        .as_array()
        .unwrap()
        .iter()
        .all(|f| f["journal"] == "replaced" && f["now"] == "old"));

    // Nothing left to undo by default; the undo itself can be undone by its id.
    let none = s.run(&["undo"]);
    none.expect_code(2);
    assert!(
        none.stderr()
            .contains("no restore in the journal is in effect"),
        "{}",
        none.stderr()
    );
    let undo_id = runs[1]["id"].as_str().unwrap();
    s.run(&["undo", undo_id]).expect_code(0);
    s.assert_files(&[true, true, true]);
    s.run(&["undo", "no-such-run"]).expect_code(2);

    // Issue 15: the undo of the undo put the restore back in effect, so a plain
    // `undo` undoes it again (it never says "every restore has been undone" here).
    let list = s.run(&["--format", "json", "undo", "--list"]).json();
    assert_eq!(list["runs"][0]["undone_by"], serde_json::Value::Null);
    let again = s.run(&["undo"]);
    again.expect_code(0);
    assert!(
        again.stdout().contains("put back 3 of 3 file(s)"),
        "{}",
        again.stdout()
    );
    s.assert_files(&[false, false, false]);
    s.run(&["undo"]).expect_code(2);
}

/// Issue 15: a full filesystem. One line says what to do; the quarantine copy of a
/// file that was not replaced is taken back; nothing claims previous versions are
/// kept when none was replaced; `undo --list` calls the run failed, not complete.
#[test]
fn a_full_filesystem_stops_with_advice_and_leaves_no_quarantine_copy() {
    for step in [
        "quarantine-temp-written",
        "quarantined",
        "journaled",
        "replace-temp-written",
    ] {
        let s = Scenario::new(2);
        let spec = format!("{step}:1:error");
        let run = s.run_env(&["restore", "--yes"], &[("KFD_AUDIT_FAILPOINT", &spec)]);
        run.expect_code(2);
        let (out, err) = (run.stdout(), run.stderr());
        assert!(!out.contains("previous versions are kept"), "{spec}: {out}");
        assert!(
            !out.contains("to put the previous versions back"),
            "{spec}: {out}"
        );
        let lines: Vec<&str> = err.lines().filter(|l| l.contains("error")).collect();
        assert_eq!(lines.len(), 1, "{spec}: {err}");
        assert!(
            lines[0].contains("no space left on the filesystem that holds /")
                && lines[0].contains("Free space there (df -h ")
                && lines[0].contains(&format!("kfd-audit --root {}", s.fx.root().display())),
            "{spec}: {err}"
        );
        assert!(!err.contains("(os error 28)"), "{spec}: {err}");
        s.assert_files(&[false, false]);
        let q = s.state().join("quarantine");
        let quarantined: Vec<PathBuf> = if q.exists() {
            walkdir_all(&q)
                .into_iter()
                .filter(|p| p.is_file())
                .collect()
        } else {
            Vec::new()
        };
        assert_eq!(quarantined, Vec::<PathBuf>::new(), "{spec}");
        assert!(temp_files(s.fx.root()).is_empty(), "{spec}");
        let list = s.run(&["--format", "json", "undo", "--list"]).json();
        assert_eq!(list["runs"][0]["state"], "failed", "{spec}");
        // The next run, with space again, does the whole job.
        s.run(&["restore", "--yes"]).expect_code(0);
        s.assert_files(&[true, true]);
    }
}

#[test]
fn write_error_midway_stops_and_reports_each_file() {
    let s = Scenario::new(3);
    // The second file's temp write fails as if the disk were full.
    let run = s.run_env(
        &["restore", "--yes"],
        &[("KFD_AUDIT_FAILPOINT", "replace-temp-written:2:error")],
    );
    run.expect_code(2);
    let out = run.stdout();
    assert!(out.contains("restored 1 of 3 file(s)"), "{out}");
    assert!(
        out.contains(&format!("restored      /{TREE}/amd/amdkfd/kfd_f0.c")),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "not restored  /{TREE}/amd/amdkfd/kfd_f1.c: stopped here"
        )),
        "{out}"
    );
    assert!(out.contains("No space left on device"), "{out}");
    assert!(
        out.contains(&format!(
            "not restored  /{TREE}/amd/amdkfd/kfd_f2.c: not attempted"
        )),
        "{out}"
    );
    assert!(
        run.stderr().contains("the restore stopped"),
        "{}",
        run.stderr()
    );
    assert!(!out.contains("dkms remove"), "{out}");
    s.assert_files(&[true, false, false]);
    assert!(temp_files(s.fx.root()).is_empty());
    let events: Vec<String> = s.journals()[0]
        .iter()
        .map(|l| l["event"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        events,
        ["begin", "intent", "done", "intent", "failed", "end"]
    );

    // The next run finishes the job, and says so in JSON too.
    let j = s.run(&["--format", "json", "restore", "--yes"]);
    j.expect_code(0);
    let j = j.json();
    assert_eq!(j["dry_run"], false);
    assert_eq!(j["summary"]["restore"], 2);
    let restored: Vec<&str> = j["result"]["restored"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        restored,
        [
            format!("/{TREE}/amd/amdkfd/kfd_f1.c"),
            format!("/{TREE}/amd/amdkfd/kfd_f2.c")
        ]
    );
    assert_eq!(j["result"]["not_restored"], serde_json::json!([]));
    assert_eq!(j["result"]["stopped"], serde_json::Value::Null);
    s.assert_files(&[true, true, true]);
}

#[test]
fn only_limits_and_files_without_a_source_get_advice() {
    let s = Scenario::new(3);
    std::fs::remove_file(s.host(&format!("{}.orig", s.files[2].0))).unwrap();
    // Other files stay modified: something found stays (1).
    let run = s.run(&["restore", "--yes", "--only", "amd/amdkfd/kfd_f1.c"]);
    run.expect_code(1);
    s.assert_files(&[false, true, false]);
    let abs = format!("/{TREE}/amd/amdkfd/kfd_f0.c");
    s.run(&["restore", "--yes", "--only", &abs]).expect_code(1);
    s.assert_files(&[true, true, false]);

    let run = s.run(&["restore", "--yes"]);
    run.expect_code(1);
    let out = run.stdout();
    assert!(
        out.contains("stays    amd/amdkfd/kfd_f2.c (modified; no verified clean source)"),
        "{out}"
    );
    assert!(
        out.contains("apt-get install --reinstall amdgpu-dkms"),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "'kfd-audit --root {} baseline create'",
            s.fx.root().display()
        )),
        "{out}"
    );

    let run = s.run(&["restore", "--yes", "--only", "amd/nope.c"]);
    run.expect_code(2);
    assert!(
        run.stderr().contains("amd/nope.c: --only matches no"),
        "{}",
        run.stderr()
    );
}

#[test]
fn corpus_unsafe_patch_is_restored_from_orig_and_undone() {
    use crate::corpus::{corpus, manifest, CorpusRoot, PRIMARY};
    let Some(corpus) = corpus() else { return };
    let cr = CorpusRoot::new(&corpus, false);
    let m = manifest("6.12")
        .into_iter()
        .find(|m| m.id == "U01")
        .unwrap();
    let rel = &m.files[0];
    let file = cr.path(&format!("{PRIMARY}/{rel}"));
    cr.unshare(&format!("{PRIMARY}/{rel}"));
    let clean = std::fs::read(&file).unwrap();
    std::fs::write(file.with_extension("c.orig"), &clean).unwrap();
    cr.apply(PRIMARY, &m);
    let patched = std::fs::read(&file).unwrap();
    assert_ne!(clean, patched);
    // The incident's "backup": a copy of the patched file, which must never be used.
    std::fs::write(file.with_extension("c.patched"), &patched).unwrap();

    let tree = cr.path(PRIMARY);
    let tree = tree.to_str().unwrap();
    let run = cr.run(&["--format", "json", "restore", "--yes", "--tree", tree]);
    run.expect_code(0);
    let j = run.json();
    let restored = j["result"]["restored"].as_array().unwrap();
    assert_eq!(restored.len(), 1);
    assert_eq!(restored[0]["path"], format!("/{PRIMARY}/{rel}"));
    assert_eq!(
        j["trees"][0]["restore"][0]["origin"],
        format!("backup /{PRIMARY}/{rel}.orig")
    );
    assert!(j["result"]["recovery"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c.as_str().unwrap().contains("chroot")));
    assert!(j["result"]["recovery"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c == "dkms remove -m amdgpu -v 6.12.117-debian --all"));
    assert_eq!(std::fs::read(&file).unwrap(), clean);
    let scan = cr
        .run(&[
            "--format", "json", "scan", "--tree", tree, "--scope", "amdkfd",
        ])
        .json();
    assert_eq!(scan["summary"]["modified"], 0);

    cr.run(&["undo"]).expect_code(0);
    assert_eq!(std::fs::read(&file).unwrap(), patched);
    // The shared corpus itself was never written through the hard links.
    assert_eq!(
        std::fs::read(corpus.join(PRIMARY).join(rel)).unwrap(),
        clean
    );
}
