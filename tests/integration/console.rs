//! Issue 17, the recovery console: the scan's answer on one 80x25 screen, the full
//! texts behind `-v` and `kfd-audit explain`, a pager only on a terminal; and the
//! headline verdicts of issue 15 ("nothing verified", "rebuild due").

use crate::fixture::{Fixture, Run, TREE, VERSION};
use rexpect::reader::Options;
use rexpect::session::spawn_with_options;
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

const TIMEOUT_MS: u64 = 30_000;

/// The real binary with `args`, stdout a pipe (never a terminal), 80 columns.
fn kfd(args: &[&str]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kfd-audit"));
    cmd.args(args)
        .env("COLUMNS", "80")
        .env_remove("NO_COLOR")
        .env_remove("LINES");
    Run::of(cmd)
}

/// A kept demo sandbox: the incident, ready to scan.
fn demo() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let sandbox = dir.path().join("demo");
    let s = sandbox.to_str().unwrap().to_string();
    kfd(&["demo", "--keep", &s, "--color", "never"]).expect_code(0);
    (dir, s)
}

/// The worst finding of a list (the first of the highest severity).
fn worst(findings: &[Value]) -> Option<&Value> {
    let rank = |f: &Value| match f["severity"].as_str().unwrap() {
        "critical" => 4,
        "high" => 3,
        "medium" => 2,
        "low" => 1,
        _ => 0,
    };
    let mut best: Option<&Value> = None;
    for f in findings {
        if best.is_none_or(|b| rank(f) > rank(b)) {
            best = Some(f);
        }
    }
    best
}

#[test]
fn demo_scan_answers_on_one_80x25_screen() {
    let (_dir, root) = demo();
    let run = kfd(&["--root", &root, "scan"]);
    run.expect_code(1);
    let out = run.stdout();
    let screen: Vec<&str> = out.lines().take(25).collect();
    println!("{}", screen.join("\n"));
    for line in &screen {
        assert!(
            line.chars().count() <= 80,
            "wider than 80 columns: {line:?}"
        );
    }
    assert!(
        out.lines().count() <= 25,
        "the whole answer fits on the screen:\n{out}"
    );
    // The verdict and its reason, first.
    assert!(
        screen[0].starts_with("kfd-audit scan UNSAFE: ")
            && screen[0].contains("unsafe finding")
            && screen[0].contains("1 file changed")
            && screen[0].contains("rebuild due"),
        "{out}"
    );
    // Each changed file and its worst finding (rule id and line), each backup verdict.
    let j = kfd(&["--root", &root, "--format", "json", "scan"]).json();
    let mut files = 0;
    for f in j["trees"][0]["files"].as_array().unwrap() {
        files += 1;
        let path = f["path"].as_str().unwrap();
        assert!(
            screen.iter().any(
                |l| l.trim_start().starts_with(f["status"].as_str().unwrap()) && l.ends_with(path)
            ),
            "{path} is not on the screen:\n{out}"
        );
        if let Some(w) = worst(f["findings"].as_array().unwrap()) {
            let want = format!(
                "{} {} line {}: ",
                w["severity"].as_str().unwrap().to_uppercase(),
                w["rule"].as_str().unwrap(),
                w["line"]
            );
            assert!(
                screen.iter().any(|l| l.trim_start().starts_with(&want)),
                "worst finding {want:?} of {path} is not on the screen:\n{out}"
            );
            // The rest of its findings are folded into it, by name.
            let folded = screen
                .iter()
                .find(|l| l.trim_start().starts_with('+'))
                .unwrap_or_else(|| panic!("nothing folded:\n{out}"));
            assert!(folded.contains("KFD-MARK-"), "{folded}");
        }
        for b in f["backups"].as_array().unwrap() {
            let name = b["path"].as_str().unwrap().rsplit('/').next().unwrap();
            let want = format!("backup {name}: {}", b["verdict"].as_str().unwrap());
            assert!(
                screen.iter().any(|l| l.trim_start().starts_with(&want)),
                "{want:?} is not on the screen:\n{out}"
            );
        }
    }
    assert_eq!(files, 1, "{j:#}");
    // The next command, with the root it needs.
    assert!(
        screen
            .iter()
            .any(|l| l.starts_with(&format!("next: kfd-audit --root {root} restore"))),
        "{out}"
    );
    // The DKMS verdict, and the sections beyond the tree one line each plus findings.
    assert!(
        screen
            .iter()
            .any(|l| l.starts_with("DKMS amdgpu/") && l.ends_with("rebuild due")),
        "{out}"
    );
    // The ROCm section lists no package pattern it did not find; -v does.
    assert!(!out.contains("rocm-core*"), "{out}");
    let full = kfd(&["--root", &root, "scan", "-v"]).stdout();
    assert!(full.contains("rocm-core*"), "{full}");
    // The why and fix only with -v.
    assert!(
        !out.lines()
            .any(|l| l.trim_start().starts_with("why:") || l.trim_start().starts_with("fix:")),
        "{out}"
    );
    assert!(
        full.contains("why: amdkfd sets HSA_MEM_FLAGS_HOT_PLUGGABLE"),
        "{full}"
    );
    assert!(full.contains("fix: Restore the clean file"), "{full}");
    // -q: one line, the verdict.
    let quiet = kfd(&["--root", &root, "-q", "scan"]).stdout();
    assert_eq!(quiet, format!("{}\n", screen[0]));
}

#[test]
fn explain_prints_every_builtin_rule() {
    let list = kfd(&["--format", "json", "rules", "list"]).json();
    let rules = list.as_array().unwrap();
    assert!(rules.len() > 30, "{list}");
    for r in rules {
        let id = r["id"].as_str().unwrap();
        let run = kfd(&["explain", id]);
        run.expect_code(0);
        let out = run.stdout();
        let title = r["title"].as_str().unwrap();
        assert!(
            out.starts_with(&format!(
                "{id} ({}): {title}\n",
                r["severity"].as_str().unwrap()
            )),
            "{id}: {out}"
        );
        assert!(out.contains("\nWhy it matters:\n  "), "{id}: {out}");
        assert!(out.contains("\nHow to undo it:\n  "), "{id}: {out}");
        // Every example the rule carries is shown.
        let j = kfd(&["--format", "json", "explain", id]).json();
        assert_eq!(j["id"], id);
        assert_eq!(
            j["examples"].as_array().unwrap().len() as u64,
            r["examples"].as_u64().unwrap(),
            "{id}"
        );
        if r["examples"].as_u64().unwrap() > 0 {
            assert!(out.contains("\nIt fires on:\n"), "{id}: {out}");
        }
        let why = j["why"].as_str().unwrap();
        let first = why.lines().next().unwrap().trim();
        assert!(out.contains(first), "{id}: the why is printed:\n{out}");
    }
    // Lower case finds the rule too; the list points at explain.
    kfd(&["explain", "kfd-mem-001"]).expect_code(0);
    let text = kfd(&["rules", "list"]).stdout();
    assert!(text.contains("'kfd-audit explain RULE-ID'"), "{text}");
}

#[test]
fn explain_reads_rules_from_rules_dir_and_refuses_an_unknown_id() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("local.toml"),
        r#"
[[rule]]
id = "LOCAL-001"
title = "A marker this site adds to its own patches"
severity = "low"
files = ["amd/amdkfd/*.c"]
match = 'LOCAL_MARKER'
why = "Our own patches carry this marker."
fix = "Remove the patch."

[[rule.example]]
fires = true
code = "int LOCAL_MARKER;"
"#,
    )
    .unwrap();
    let rules = dir.path().to_str().unwrap();
    let run = kfd(&["--rules", rules, "explain", "LOCAL-001"]);
    run.expect_code(0);
    let out = run.stdout();
    assert!(
        out.starts_with("LOCAL-001 (low): A marker this site adds to its own patches\n"),
        "{out}"
    );
    assert!(out.contains("Our own patches carry this marker."), "{out}");
    assert!(out.contains("    int LOCAL_MARKER;"), "{out}");

    let run = kfd(&["explain", "KFD-NOPE-999"]);
    run.expect_code(2);
    let err = run.stderr();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("KFD-NOPE-999"), "{err}");
    assert!(err.contains("kfd-audit rules list"), "{err}");
    assert!(run.stdout().is_empty());
}

#[test]
fn headline_says_nothing_verified_with_the_fix() {
    // No tree at all.
    let fx = Fixture::new();
    let run = fx.run(&["scan"]);
    run.expect_code(1);
    let out = run.stdout();
    assert!(
        out.starts_with(&format!(
            "kfd-audit scan NOT VERIFIED: no amdgpu DKMS tree found under {}/usr/src\n",
            fx.root().display()
        )),
        "{out}"
    );
    assert!(out.contains("fix: name the driver's source tree"), "{out}");
    assert_eq!(fx.run(&["--format", "json", "scan"]).json()["exit_code"], 1);

    // A tree no reference lists: every file unverified.
    let fx = Fixture::new();
    fx.tree_with(TREE, None, &[("amd/amdkfd/kfd_crat.c", "int x;\n")]);
    let run = fx.run(&["scan"]);
    run.expect_code(1);
    let out = run.stdout();
    assert!(
        out.starts_with(
            "kfd-audit scan NOT VERIFIED: no file could be compared with a clean reference (2 unverified)\n"
        ),
        "{out}"
    );
    assert!(
        out.contains("fix: get a clean reference: reinstall the package"),
        "{out}"
    );
    assert!(out.contains("apt-get install --reinstall"), "{out}");
    assert!(!out.contains("clean:"), "{out}");
    // Without the tree section nothing was to be verified: the sections decide.
    fx.run(&["scan", "--sections", "live"]).expect_code(0);
}

fn set_mtime(path: &Path, secs: u64) {
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
        .unwrap();
}

#[test]
fn headline_names_a_rebuild_when_it_is_the_only_reason() {
    // A clean tree whose kfd_crat.c was written after the module was built: a
    // restore without a rebuild.
    let fx = Fixture::new();
    fx.amdgpu_tree();
    for rel in [
        "dkms.conf",
        "amd/amdkfd/kfd_crat.c",
        "amd/amdkfd/Makefile",
        "amd/amdgpu/amdgpu_drv.c",
        "Makefile",
    ] {
        set_mtime(&fx.path(&format!("{TREE}/{rel}")), 1_700_000_000);
    }
    let dkms = fx.write("/usr/sbin/dkms", "#!/bin/sh\nexit 0\n");
    std::fs::set_permissions(dkms, std::fs::Permissions::from_mode(0o755)).unwrap();
    let kernel = "6.1.0-9-amd64";
    fx.write("/proc/sys/kernel/osrelease", format!("{kernel}\n"));
    let base = format!("/var/lib/dkms/amdgpu/{VERSION}/{kernel}/x86_64");
    let ko = fx.write(&format!("{base}/module/amdgpu.ko.zst"), "module");
    set_mtime(&ko, 1_700_003_000);
    std::os::unix::fs::symlink(
        format!("/{TREE}"),
        fx.path(&format!("/var/lib/dkms/amdgpu/{VERSION}/source")),
    )
    .unwrap();
    let installed = fx.path(&format!("/lib/modules/{kernel}/updates/dkms/amdgpu.ko.zst"));
    std::fs::create_dir_all(installed.parent().unwrap()).unwrap();
    std::fs::copy(&ko, &installed).unwrap();
    set_mtime(&installed, 1_700_003_005);
    std::os::unix::fs::symlink(
        format!("{VERSION}/{kernel}/x86_64"),
        fx.path(&format!("/var/lib/dkms/amdgpu/kernel-{kernel}-x86_64")),
    )
    .unwrap();
    set_mtime(
        &fx.path(&format!("{TREE}/amd/amdkfd/kfd_crat.c")),
        1_700_004_000,
    );

    let run = fx.run(&["scan", "--sections", "tree"]);
    run.expect_code(1);
    let out = run.stdout();
    assert!(
        out.starts_with(&format!(
            "kfd-audit scan REBUILD DUE: the amdgpu module of {kernel} was built before the sources were restored\n"
        )),
        "{out}"
    );
    assert!(!out.contains("CHANGED"), "{out}");
    assert!(
        out.contains("next: kfd-audit --root ") && out.contains(" plan --run\n"),
        "{out}"
    );
}

/// A pager that records that it ran and what it was given, then shows it.
fn marker_pager(dir: &Path) -> (String, std::path::PathBuf) {
    let marker = dir.join("paged");
    let script = dir.join("pager.sh");
    std::fs::write(
        &script,
        format!("#!/bin/sh\ncat > '{}'\necho PAGER-RAN\n", marker.display()),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    (script.display().to_string(), marker)
}

/// Runs kfd-audit in a pseudo-terminal with `env` and waits for it; its exit code and
/// what the terminal showed.
fn in_pty(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kfd-audit"));
    cmd.args(args)
        .env("TERM", "linux")
        .env("COLUMNS", "80")
        .env("NO_COLOR", "1")
        .env_remove("LESS");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut p = spawn_with_options(
        cmd,
        Options::new()
            .timeout_ms(Some(TIMEOUT_MS))
            .strip_ansi_escape_codes(true),
    )
    .expect("spawn kfd-audit in a pty");
    let shown = p.exp_eof().unwrap_or_default();
    let code = match p.process().wait().expect("wait") {
        rexpect::process::WaitStatus::Exited(_, code) => code,
        other => panic!("kfd-audit did not exit normally: {other:?}"),
    };
    (code, shown)
}

#[test]
fn pager_on_a_terminal_only_and_never_with_no_pager() {
    let (dir, root) = demo();
    let (pager, marker) = marker_pager(dir.path());
    let env = [("PAGER", pager.as_str()), ("LINES", "25")];

    // scan -v on a terminal: longer than the screen, so it goes through $PAGER.
    let (code, shown) = in_pty(&["--root", &root, "scan", "-v"], &env);
    assert_eq!(code, 1, "{shown}");
    assert!(shown.contains("PAGER-RAN"), "{shown}");
    let paged = std::fs::read_to_string(&marker).unwrap();
    assert!(paged.starts_with("kfd-audit scan UNSAFE: "), "{paged}");
    assert!(paged.contains("why: amdkfd sets"), "{paged}");
    assert!(!shown.contains("why: amdkfd sets"), "{shown}");
    std::fs::remove_file(&marker).unwrap();

    // The same on a pipe: no pager, the text on stdout.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kfd-audit"));
    cmd.args(["--root", &root, "scan", "-v"])
        .env("PAGER", &pager)
        .env("LINES", "25");
    let run = Run::of(cmd);
    run.expect_code(1);
    assert!(run.stdout().contains("why: amdkfd sets"));
    assert!(!marker.exists(), "a pager on a pipe");

    // --no-pager on a terminal: printed directly.
    let (code, shown) = in_pty(&["--root", &root, "--no-pager", "scan", "-v"], &env);
    assert_eq!(code, 1, "{shown}");
    assert!(shown.contains("why: amdkfd sets"), "{shown}");
    assert!(!marker.exists(), "--no-pager used a pager");

    // The default report fits on the screen: no pager.
    let (_, shown) = in_pty(&["--root", &root, "scan"], &env);
    assert!(shown.contains("next: kfd-audit"), "{shown}");
    assert!(!marker.exists(), "a pager for a report that fits");

    // diff and explain page when longer than the screen (here a 5-line one).
    let small = [("PAGER", pager.as_str()), ("LINES", "5")];
    let (code, shown) = in_pty(&["--root", &root, "diff"], &small);
    assert_eq!(code, 1, "{shown}");
    assert!(shown.contains("PAGER-RAN"), "{shown}");
    assert!(std::fs::read_to_string(&marker)
        .unwrap()
        .contains("+\t\t\t\t\tflags |= HSA_MEM_FLAGS_HOT_PLUGGABLE;"));
    std::fs::remove_file(&marker).unwrap();
    let (code, shown) = in_pty(&["explain", "KFD-MEM-001"], &small);
    assert_eq!(code, 0, "{shown}");
    assert!(shown.contains("PAGER-RAN"), "{shown}");
    std::fs::remove_file(&marker).unwrap();

    // A pager that cannot start: the text is printed directly.
    let missing = [("PAGER", "/nonexistent/pager"), ("LINES", "5")];
    let (code, shown) = in_pty(&["explain", "KFD-MEM-001"], &missing);
    assert_eq!(code, 0, "{shown}");
    assert!(shown.contains("How to undo it:"), "{shown}");
}
