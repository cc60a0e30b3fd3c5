//! A newcomer's first ten minutes: the demo, completions, the man page, Prometheus
//! metrics, colors, and every command the README shows.

use crate::fixture::{Fixture, Run, TREE};
use clap::Parser as _;
use kfd_audit::app::Cli;
use std::process::Command;

fn kfd(args: &[&str]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kfd-audit"));
    cmd.args(args).env_remove("NO_COLOR");
    Run::of(cmd)
}

const DEMO_TREE: &str = "usr/src/amdgpu-6.16.6-2238411.24.04";

#[test]
fn demo_shows_the_incident_and_the_patched_trap() {
    let run = kfd(&["demo", "--color", "never"]);
    run.expect_code(0);
    let out = run.stdout();
    // The scan's default report: the worst finding per file, the backup verdicts.
    assert!(out.contains("  modified amd/amdkfd/kfd_crat.c"), "{out}");
    assert!(
        out.contains("CRITICAL KFD-MEM-001 line 43: Memory bank forced hot-pluggable"),
        "{out}"
    );
    assert!(
        out.contains("backup kfd_crat.c.patched: same-as-current"),
        "{out}"
    );
    assert!(
        out.contains("backup kfd_crat.c.orig: verified-clean"),
        "{out}"
    );
    assert!(
        out.contains("+\t\t\t\t\tflags |= HSA_MEM_FLAGS_HOT_PLUGGABLE;"),
        "{out}"
    );
    assert!(
        out.contains("built after the change: the unsafe code is probably live"),
        "{out}"
    );
    assert!(
        out.contains("dkms remove -m amdgpu -v 6.16.6-2238411.24.04 --all"),
        "{out}"
    );
    assert!(out.contains("kfd-audit demo --keep /tmp/kfd-demo"), "{out}");
    assert!(out.contains("CRITICAL LIVE-GFX-001"), "{out}");
    assert!(
        out.contains("CRITICAL ROCM-ENV-001 HSA_OVERRIDE_GFX_VERSION names another"),
        "{out}"
    );
    assert!(!out.contains('\x1b'), "no escape codes with --color never");
}

#[test]
fn demo_sandbox_restores_scans_clean_and_undoes() {
    let dir = tempfile::tempdir().unwrap();
    let sandbox = dir.path().join("demo");
    let s = sandbox.to_str().unwrap();
    let run = kfd(&["demo", "--keep", s, "--color", "never"]);
    run.expect_code(0);
    assert!(
        run.stdout()
            .contains(&format!("The sandbox is kept at {s}")),
        "{}",
        run.stdout()
    );
    let crat = sandbox.join(DEMO_TREE).join("amd/amdkfd/kfd_crat.c");
    let patched = std::fs::read(&crat).unwrap();
    kfd(&["--root", s, "restore", "--yes"]).expect_code(0);
    // The source tree is clean again; the running driver (sysfs) and the module
    // options still tell their own story until a rebuild, a reboot and a clean-up.
    let j = kfd(&[
        "--root",
        s,
        "--format",
        "json",
        "scan",
        "--sections",
        "tree",
    ])
    .json();
    assert_eq!(j["summary"]["modified"], 0, "{j}");
    assert_eq!(j["summary"]["critical"], 0, "{j}");
    let crat_entry = crate::fixture::json_file(&j, "amd/amdkfd/kfd_crat.c").unwrap();
    // Once the file is clean, the misnamed copy of the patched file is what it is: unsafe.
    assert!(crat_entry["backups"]
        .as_array()
        .unwrap()
        .iter()
        .any(|b| b["path"] == "amd/amdkfd/kfd_crat.c.patched" && b["verdict"] == "unsafe"));
    let all = kfd(&["--root", s, "--format", "json", "scan"]).json();
    assert_eq!(all["live"][0]["rule"], "LIVE-GFX-001", "{all}");
    assert_ne!(std::fs::read(&crat).unwrap(), patched);
    kfd(&["--root", s, "undo"]).expect_code(0);
    assert_eq!(
        std::fs::read(&crat).unwrap(),
        patched,
        "undo puts the patched file back"
    );
    // A second demo into the same (now non-empty) directory is refused.
    let again = kfd(&["demo", "--keep", s]);
    again.expect_code(2);
    assert!(
        again.stderr().contains("is not empty"),
        "{}",
        again.stderr()
    );
}

#[test]
fn completions_and_man_page_generate() {
    for shell in ["bash", "zsh", "fish"] {
        let run = kfd(&["completions", shell]);
        run.expect_code(0);
        assert!(run.stdout().contains("kfd-audit"), "{shell}");
        assert!(
            run.stdout().contains("restore"),
            "{shell}: subcommands are completed"
        );
    }
    let man = kfd(&["man"]);
    man.expect_code(0);
    assert!(
        man.stdout().starts_with(".ie \\n(.g .ds Aq"),
        "{}",
        &man.stdout()[..80]
    );
    assert!(man.stdout().contains(".TH kfd-audit 1"), "roff title line");
}

#[test]
fn prometheus_metrics_for_a_changed_tree() {
    let fx = Fixture::new();
    fx.amdgpu_tree();
    fx.write(&format!("{TREE}/amd/amdkfd/kfd_crat.c"), "// patched\n");
    let run = fx.run(&["--format", "prometheus", "scan"]);
    run.expect_code(1);
    let out = run.stdout();
    assert!(out.contains("# TYPE kfd_audit_files gauge"), "{out}");
    assert!(
        out.contains(&format!(
            "kfd_audit_files{{tree=\"/{TREE}\",status=\"modified\"}} 1"
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "kfd_audit_files{{tree=\"/{TREE}\",status=\"ok\"}} 4"
        )),
        "{out}"
    );
    assert!(out.contains("kfd_audit_exit_code 1"), "{out}");
    assert!(
        out.contains("kfd_audit_last_scan_timestamp_seconds "),
        "{out}"
    );
    let bad = fx.run(&["--format", "prometheus", "plan"]);
    bad.expect_code(2);
    assert!(bad
        .stderr()
        .contains("--format prometheus is for 'kfd-audit scan' only"));
}

#[test]
fn no_color_and_hostile_names_are_safe_on_a_terminal_stream() {
    let fx = Fixture::new();
    fx.amdgpu_tree();
    fx.write(
        &format!("{TREE}/amd/amdkfd/evil\x1b[2J\u{202e}c.txt"),
        "x\n",
    );
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kfd-audit"));
    cmd.arg("--root")
        .arg(fx.root())
        .args(["--color", "always", "scan"])
        .env("NO_COLOR", "1");
    let colored = Run::of(cmd);
    // --color always wins over NO_COLOR, but a name can never inject its own sequence.
    assert!(
        colored.stdout().contains("evil\\x1b[2J\\u{202e}c.txt"),
        "{}",
        colored.stdout()
    );
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kfd-audit"));
    cmd.arg("--root")
        .arg(fx.root())
        .arg("scan")
        .env("NO_COLOR", "1");
    let plain = Run::of(cmd);
    assert!(!plain.stdout().contains('\x1b'), "{}", plain.stdout());
}

/// Every `kfd-audit ...` line in the README's code blocks parses with the real CLI.
#[test]
fn readme_commands_parse() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let mut in_block = false;
    let mut in_fence = false;
    let mut checked = 0;
    for line in readme.lines() {
        // Only shell blocks hold commands; ```text blocks show output, ```ini unit files.
        if let Some(lang) = line.trim_start().strip_prefix("```") {
            in_fence = !in_fence;
            in_block = in_fence && matches!(lang.trim(), "sh" | "bash" | "console" | "");
            continue;
        }
        if !in_block {
            continue;
        }
        let cmd = line.split(" #").next().unwrap().trim();
        // Commands may follow a prompt, a `sudo`, or a pipe from another tool.
        let Some(start) = cmd.find("kfd-audit ") else {
            continue;
        };
        if cmd[..start].contains("cargo")
            || cmd[..start].ends_with('/') && !cmd[..start].ends_with("release/")
        {
            continue;
        }
        let cmd = &cmd[start..];
        let cmd = cmd.split(['|', '>', ';', '&']).next().unwrap().trim();
        let words: Vec<String> = cmd
            .split_whitespace()
            .map(|w| w.trim_matches('\'').trim_matches('"').to_string())
            .collect();
        if let Err(e) = Cli::try_parse_from(&words) {
            panic!("README command does not parse: {cmd}\n{e}");
        }
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} README commands found");
}
