//! `kfd-audit scan`: classification, references, exit codes, text and JSON.

use crate::fixture::{json_file, md5_hex, Fixture, TREE};
use std::os::unix::fs::PermissionsExt;

#[test]
fn clean_tree_exits_zero() {
    let fx = Fixture::new();
    fx.amdgpu_tree();
    let run = fx.run(&["scan"]);
    run.expect_code(0);
    assert!(
        run.stdout()
            .contains("clean: 5 files checked in 1 tree: 0 modified, 0 missing, 0 added"),
        "{}",
        run.stdout()
    );
    let j = fx.run(&["--format", "json", "scan"]).expect_code(0).json();
    assert_eq!(j["version"], 1);
    assert_eq!(j["exit_code"], 0);
    assert_eq!(j["trees"][0]["package"], "amdgpu");
    assert_eq!(j["trees"][0]["version"], "6.8.5-2009582.24.04");
    assert_eq!(j["trees"][0]["path"], format!("/{TREE}"));
    assert_eq!(j["trees"][0]["references"][0], "dpkg-md5sums");
    assert_eq!(j["trees"][0]["files"].as_array().unwrap().len(), 0);
    assert_eq!(j["summary"]["files"], 5);
    assert_eq!(j["summary"]["ok"], 5);
}

#[test]
fn changed_removed_and_extra_files_are_classified() {
    let fx = Fixture::new();
    fx.amdgpu_tree();
    fx.write(&format!("{TREE}/amd/amdkfd/kfd_crat.c"), "// patched\n");
    std::fs::remove_file(fx.path(&format!("{TREE}/Makefile"))).unwrap();
    fx.write(&format!("{TREE}/amd/amdkfd/extra.c"), "int x;\n");

    let run = fx.run(&["scan"]);
    run.expect_code(1);
    let out = run.stdout();
    // No rule fires: the files only differ, so the word is "changed", not "unsafe".
    assert!(
        out.starts_with(
            "kfd-audit scan CHANGED: 3 files changed\n  5 files checked in 1 tree: 1 modified, 1 missing, 1 added\n"
        ),
        "{out}"
    );
    assert!(out.contains("\n  modified amd/amdkfd/kfd_crat.c"), "{out}");
    assert!(out.contains("\n  missing  Makefile"), "{out}");
    assert!(out.contains("\n  added    amd/amdkfd/extra.c"), "{out}");
    // The full report names the reference that judged each file.
    let full = fx.run(&["scan", "-v"]).stdout();
    assert!(
        full.contains("modified   amd/amdkfd/kfd_crat.c  [dpkg-md5sums]"),
        "{full}"
    );
    assert!(
        full.contains("missing    Makefile  [dpkg-md5sums]"),
        "{full}"
    );
    assert!(full.contains("added      amd/amdkfd/extra.c"), "{full}");
    // amd/amdkfd is listed before the rest of the tree.
    assert!(out.find("kfd_crat.c").unwrap() < out.find("Makefile").unwrap());

    let j = fx.run(&["--format", "json", "scan"]).expect_code(1).json();
    assert_eq!(j["exit_code"], 1);
    let crat = json_file(&j, "amd/amdkfd/kfd_crat.c").unwrap();
    assert_eq!(crat["status"], "modified");
    assert_eq!(crat["reference"], "dpkg-md5sums");
    assert_eq!(crat["actual"], md5_hex(b"// patched\n"));
    assert_eq!(json_file(&j, "Makefile").unwrap()["status"], "missing");
    assert_eq!(
        json_file(&j, "amd/amdkfd/extra.c").unwrap()["status"],
        "added"
    );
    assert!(json_file(&j, "amd/amdgpu/amdgpu_drv.c").is_none());
    assert_eq!(j["summary"]["modified"], 1);
    assert_eq!(j["summary"]["missing"], 1);
    assert_eq!(j["summary"]["added"], 1);

    // --all-files lists the clean files too.
    let all = fx.run(&["--format", "json", "scan", "--all-files"]).json();
    assert_eq!(
        json_file(&all, "amd/amdgpu/amdgpu_drv.c").unwrap()["status"],
        "ok"
    );

    // --scope narrows the scan to amd/amdkfd.
    let scoped = fx
        .run(&["--format", "json", "scan", "--scope", "amdkfd"])
        .expect_code(1)
        .json();
    assert_eq!(scoped["summary"]["missing"], 0);
    assert_eq!(scoped["summary"]["files"], 3);
}

#[test]
fn two_versions_side_by_side_and_a_tree_without_dkms_conf() {
    let fx = Fixture::new();
    fx.amdgpu_tree();
    fx.tree_with(
        "usr/src/amdgpu-6.10.5-2084815.24.04",
        Some("amdgpu-dkms-old"),
        &[("amd/amdkfd/kfd_device.c", "int d;\n")],
    );
    std::fs::create_dir_all(fx.path("usr/src/amdgpu-9.9")).unwrap();
    fx.write("usr/src/amdgpu-9.9/x.c", "int x;\n");
    fx.write("usr/src/linux-headers-6.1/Makefile", "not an amdgpu tree\n");
    let j = fx.run(&["--format", "json", "scan"]).json();
    let trees = j["trees"].as_array().unwrap();
    let paths: Vec<&str> = trees.iter().map(|t| t["path"].as_str().unwrap()).collect();
    assert_eq!(
        paths,
        [
            "/usr/src/amdgpu-6.10.5-2084815.24.04",
            "/usr/src/amdgpu-6.8.5-2009582.24.04",
            "/usr/src/amdgpu-9.9"
        ]
    );
    // Both packaged trees are judged by their own package's md5sums.
    assert_eq!(trees[0]["dpkg_package"], "amdgpu-dkms-old");
    assert_eq!(trees[1]["dpkg_package"], "amdgpu-dkms");
    // The tree without dkms.conf is reported, not fatal; its version comes from its name.
    assert_eq!(trees[2]["version"], "9.9");
    let problems = trees[2]["problems"].to_string();
    assert!(problems.contains("no dkms.conf"), "{problems}");
    assert!(problems.contains("no clean reference"), "{problems}");
    assert_eq!(j["summary"]["unverified"], 1);
    assert_eq!(j["exit_code"], 0);
}

#[test]
fn malformed_md5sums_is_an_error_with_file_and_line() {
    let fx = Fixture::new();
    fx.amdgpu_tree();
    let sums = fx.path("var/lib/dpkg/info/amdgpu-dkms.md5sums");
    let mut text = std::fs::read_to_string(&sums).unwrap();
    text.push_str("not-a-hash  usr/src/amdgpu-6.8.5-2009582.24.04/x\n");
    std::fs::write(&sums, text).unwrap();
    let run = fx.run(&["scan"]);
    run.expect_code(2);
    let err = run.stderr();
    assert!(err.contains(&format!("{}:6:", sums.display())), "{err}");
    assert!(err.contains("--lenient"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");

    // --lenient reports the line and goes on.
    let j = fx
        .run(&["--format", "json", "scan", "--lenient"])
        .expect_code(0)
        .json();
    assert!(
        j["trees"][0]["problems"]
            .to_string()
            .contains(":6: skipped"),
        "{j}"
    );
}

#[test]
fn symlink_pointing_outside_is_reported_not_followed() {
    let fx = Fixture::new();
    fx.amdgpu_tree();
    let outside = fx.write("secret/target.c", "outside\n");
    let link = fx.path(&format!("{TREE}/amd/amdkfd/kfd_link.c"));
    std::os::unix::fs::symlink(&outside, &link).unwrap();
    // A reference expecting a file where a symlink now stands must not be read through it.
    let crat = fx.path(&format!("{TREE}/amd/amdkfd/kfd_crat.c"));
    std::fs::remove_file(&crat).unwrap();
    std::os::unix::fs::symlink(&outside, &crat).unwrap();
    let j = fx.run(&["--format", "json", "scan"]).expect_code(1).json();
    let l = json_file(&j, "amd/amdkfd/kfd_link.c").unwrap();
    assert_eq!(l["status"], "symlink");
    assert!(l["detail"].as_str().unwrap().contains("secret/target.c"));
    let c = json_file(&j, "amd/amdkfd/kfd_crat.c").unwrap();
    assert_eq!(c["status"], "symlink");
    assert!(
        c.get("actual").is_none(),
        "a symlink was hashed through: {c}"
    );
}

#[test]
fn unreadable_file_is_reported() {
    let fx = Fixture::new();
    fx.amdgpu_tree();
    let crat = fx.path(&format!("{TREE}/amd/amdkfd/kfd_crat.c"));
    std::fs::set_permissions(&crat, std::fs::Permissions::from_mode(0o000)).unwrap();
    let is_root = unsafe { libc::geteuid() } == 0;
    let j = fx.run(&["--format", "json", "scan"]).json();
    if is_root {
        // root reads it anyway: the file is simply verified.
        assert_eq!(j["summary"]["ok"], 5);
    } else {
        assert_eq!(
            json_file(&j, "amd/amdkfd/kfd_crat.c").unwrap()["status"],
            "unreadable"
        );
    }
    // A FIFO is never opened (opening it would block the scan forever).
    let fifo = fx.path(&format!("{TREE}/amd/amdkfd/pipe"));
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    let j = fx.run(&["--format", "json", "scan"]).expect_code(1).json();
    let p = json_file(&j, "amd/amdkfd/pipe").unwrap();
    assert_eq!(p["status"], "unreadable");
    assert!(p["detail"].as_str().unwrap().contains("FIFO"));
}

#[test]
fn bad_root_is_exit_two_with_one_line() {
    let run = crate::fixture::Run::of({
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_kfd-audit"));
        c.args(["--root", "/nonexistent/kfd-audit-root", "scan"]);
        c
    });
    run.expect_code(2);
    assert!(
        run.stderr()
            .starts_with("kfd-audit: error: /nonexistent/kfd-audit-root:"),
        "{}",
        run.stderr()
    );
}

#[test]
fn baseline_judges_files_and_refuses_a_dirty_tree() {
    let fx = Fixture::new();
    fx.amdgpu_tree();
    let run = fx.run(&["baseline", "create"]);
    run.expect_code(0);
    assert!(run.stdout().contains("5 files"), "{}", run.stdout());
    let manifest = fx.path("var/lib/kfd-audit/baseline/amdgpu-6.8.5-2009582.24.04/manifest.sha256");
    // sha256sum -c understands the manifest from the root.
    let check = std::process::Command::new("sha256sum")
        .arg("-c")
        .arg(&manifest)
        .current_dir(fx.root())
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );

    fx.write(&format!("{TREE}/amd/amdkfd/kfd_crat.c"), "// patched\n");
    let j = fx.run(&["--format", "json", "scan"]).expect_code(1).json();
    assert_eq!(
        j["trees"][0]["references"],
        serde_json::json!(["baseline", "dpkg-md5sums"])
    );
    let crat = json_file(&j, "amd/amdkfd/kfd_crat.c").unwrap();
    assert_eq!(crat["reference"], "baseline");
    assert_eq!(crat["expected"].as_str().unwrap().len(), 64);

    // A baseline of a patched tree would bless the patch: refused without --force.
    std::fs::remove_dir_all(fx.path("var/lib/kfd-audit")).unwrap();
    let run = fx.run(&["baseline", "create"]);
    run.expect_code(2);
    assert!(
        run.stderr()
            .contains("not clean (1 file(s) differ from dpkg-md5sums: amd/amdkfd/kfd_crat.c)"),
        "{}",
        run.stderr()
    );
    fx.run(&["baseline", "create", "--force"]).expect_code(0);
}

#[test]
fn tree_outside_usr_src_with_tree_flag() {
    let fx = Fixture::new();
    fx.tree_with("opt/drivers/amdgpu-x", None, &[("a.c", "int a;\n")]);
    let j = fx
        .run(&[
            "--format",
            "json",
            "scan",
            "--tree",
            fx.path("opt/drivers/amdgpu-x").to_str().unwrap(),
        ])
        // Issue 15: no reference lists the tree, so nothing was verified (exit 1).
        .expect_code(1)
        .json();
    assert_eq!(j["trees"][0]["path"], "/opt/drivers/amdgpu-x");
    assert_eq!(j["summary"]["unverified"], 2);
    let run = fx.run(&["scan", "--tree", fx.path("nope").to_str().unwrap()]);
    run.expect_code(2);
}

/// Issue 15, item 6: under --root R, --tree /usr/src/X is R/usr/src/X, never the
/// host's; the report names the system path it read.
#[test]
fn tree_argument_is_a_path_of_the_audited_system() {
    let fx = Fixture::new();
    fx.amdgpu_tree();
    fx.write(&format!("{TREE}/amd/amdkfd/kfd_crat.c"), "// tampered\n");
    let system = format!("/{TREE}");
    let run = fx.run(&["--format", "json", "scan", "--tree", &system]);
    run.expect_code(1);
    let j = run.json();
    assert_eq!(j["trees"][0]["path"], system.as_str(), "{j:#}");
    assert_eq!(j["summary"]["modified"], 1);
    // The same tree named by its host path inside the root is the same tree.
    let host = fx.path(&system);
    let run = fx.run(&["--format", "json", "scan", "--tree", host.to_str().unwrap()]);
    run.expect_code(1);
    assert_eq!(run.json()["trees"][0]["path"], system.as_str());
    // A system path that the audited system lacks is named under the root.
    let run = fx.run(&["scan", "--tree", "/usr/src/amdgpu-0.0"]);
    run.expect_code(2);
    assert!(
        run.stderr()
            .contains(fx.path("/usr/src/amdgpu-0.0").to_str().unwrap()),
        "{}",
        run.stderr()
    );
}
