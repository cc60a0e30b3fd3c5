//! RPM systems: real packages built with rpmbuild, installed with
//! `rpm --root <tmp> --nodeps` into a temporary root, and kfd-audit run on that root.
//! rpm (Debian's `rpm` package: rpm, rpmbuild) is installed by `.ci/run`; without it
//! these tests say so and pass, unless KFD_REQUIRE_RPM is set.

use crate::fixture::{Fixture, CRAT_C, DKMS_CONF};
use crate::recipe::crat_with_incident;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

const RPM_TREE: &str = "usr/src/amdgpu-6.8.5-2009582.el9";
const RPM_VERSION: &str = "6.8.5";
const RPM_RELEASE: &str = "2009582.el9";

fn have_rpm() -> bool {
    let ok = Command::new("rpmbuild").arg("--version").output().is_ok()
        && Command::new("rpm").arg("--version").output().is_ok();
    if !ok {
        assert!(
            std::env::var_os("KFD_REQUIRE_RPM").is_none(),
            "KFD_REQUIRE_RPM is set but rpm/rpmbuild are not installed (apt-get install rpm)"
        );
        eprintln!("rpm or rpmbuild not installed: RPM test skipped (apt-get install rpm)");
    }
    ok
}

/// One package to build: its files (root-relative path → bytes), links, and the
/// `%files` lines; `payload` is rpm's `_binary_payload` (`w19.zstdio`, `w6.xzdio`).
pub struct Spec<'a> {
    pub name: &'a str,
    pub version: &'a str,
    pub release: &'a str,
    pub files: Vec<(String, Vec<u8>)>,
    pub links: Vec<(String, String)>,
    pub file_lines: Vec<String>,
    pub payload: Option<&'a str>,
}

/// Builds the package with rpmbuild and returns the `.rpm`.
pub fn rpmbuild(spec: &Spec, out_dir: &Path) -> PathBuf {
    let top = tempfile::tempdir().unwrap();
    let stage = top.path().join("stage");
    for (rel, data) in &spec.files {
        let p = stage.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    }
    for (rel, target) in &spec.links {
        let p = stage.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(target, p).unwrap();
    }
    std::fs::create_dir_all(&stage).unwrap();
    let text = format!(
        "Name: {}\nVersion: {}\nRelease: {}\nSummary: kfd-audit test package\nLicense: MIT\nBuildArch: noarch\n\
         %global debug_package %{{nil}}\n%define __os_install_post %{{nil}}\n%define _build_id_links none\n\
         %description\ntest package\n%install\nmkdir -p %{{buildroot}}\ncp -a {}/. %{{buildroot}}/\n%files\n{}\n",
        spec.name,
        spec.version,
        spec.release,
        stage.display(),
        spec.file_lines.join("\n")
    );
    let spec_path = top.path().join(format!("{}.spec", spec.name));
    std::fs::write(&spec_path, text).unwrap();
    let mut cmd = Command::new("rpmbuild");
    cmd.arg("--define")
        .arg(format!("_topdir {}", top.path().display()))
        .arg("--define")
        .arg(format!("_rpmdir {}", out_dir.display()))
        .arg("--define")
        .arg("_build_name_fmt %%{NAME}-%%{VERSION}-%%{RELEASE}.%%{ARCH}.rpm");
    if let Some(p) = spec.payload {
        cmd.arg("--define").arg(format!("_binary_payload {p}"));
    }
    let o = cmd
        .arg("-bb")
        .arg(&spec_path)
        .output()
        .expect("run rpmbuild");
    assert!(
        o.status.success(),
        "rpmbuild failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    out_dir.join(format!(
        "{}-{}-{}.noarch.rpm",
        spec.name, spec.version, spec.release
    ))
}

/// `rpm --root <root> --dbpath /var/lib/rpm` and the arguments.
pub fn rpm_root(root: &Path, args: &[&str]) -> std::process::Output {
    Command::new("rpm")
        .arg("--root")
        .arg(root)
        .args(["--dbpath", "/var/lib/rpm"])
        .args(args)
        .output()
        .expect("run rpm")
}

/// Installs packages into the fixture's root as rpm does, database included.
pub fn install(fx: &Fixture, rpms: &[&Path]) {
    if !fx.path("var/lib/rpm/rpmdb.sqlite").exists() {
        let o = rpm_root(fx.root(), &["--initdb"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let mut args = vec!["-i", "--nodeps", "--noscripts"];
    let paths: Vec<String> = rpms.iter().map(|p| p.display().to_string()).collect();
    args.extend(paths.iter().map(String::as_str));
    let o = rpm_root(fx.root(), &args);
    assert!(
        o.status.success(),
        "rpm -i: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn tree_files() -> Vec<(&'static str, String)> {
    vec![
        (
            "dkms.conf",
            DKMS_CONF.replace("6.8.5-2009582.24.04", "6.8.5-2009582.el9"),
        ),
        ("amd/amdkfd/kfd_crat.c", CRAT_C.to_string()),
        ("amd/amdkfd/Makefile", "amdkfd-y += kfd_crat.o\n".into()),
        (
            "amd/amdgpu/amdgpu_drv.c",
            "// amdgpu driver entry\nint amdgpu_x;\n".into(),
        ),
        ("amd/amdgpu/gmc_v10_0.c", "int gmc_v10_0;\n".into()),
        ("Makefile", "obj-m += amd/amdgpu/\n".into()),
    ]
}

/// The amdgpu-dkms-shaped package: the DKMS source tree under /usr/src.
pub fn amdgpu_dkms_spec<'a>(payload: Option<&'a str>) -> Spec<'a> {
    Spec {
        name: "amdgpu-dkms",
        version: RPM_VERSION,
        release: RPM_RELEASE,
        files: tree_files()
            .into_iter()
            .map(|(rel, c)| (format!("{RPM_TREE}/{rel}"), c.into_bytes()))
            .collect(),
        links: vec![(
            format!("{RPM_TREE}/amd/amdkfd/kfd_crat_link.c"),
            "kfd_crat.c".into(),
        )],
        file_lines: vec![format!("/{RPM_TREE}")],
        payload,
    }
}

/// A root with amdgpu-dkms installed from a real package; returns the package file.
fn rpm_system(payload: Option<&str>) -> Option<(Fixture, tempfile::TempDir, PathBuf)> {
    if !have_rpm() {
        return None;
    }
    let fx = Fixture::new();
    let out = tempfile::tempdir().unwrap();
    let rpm = rpmbuild(&amdgpu_dkms_spec(payload), out.path());
    install(&fx, &[&rpm]);
    Some((fx, out, rpm))
}

/// The files `rpm -V` says differ in content, or are missing, as root-relative paths.
fn rpm_verify_changed(root: &Path, package: &str) -> BTreeSet<String> {
    let o = rpm_root(root, &["-V", package]);
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| {
            let path = l.rsplit_once(' ').map(|(_, p)| p)?;
            let attrs = l.get(..9)?;
            (l.starts_with("missing") || attrs.contains('5'))
                .then(|| path.trim_start_matches('/').to_string())
        })
        .collect()
}

/// The files kfd-audit's JSON report calls modified or missing, as root-relative paths.
fn audit_changed(report: &serde_json::Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for t in report["trees"].as_array().unwrap() {
        let tree = t["path"].as_str().unwrap().trim_start_matches('/');
        for f in t["files"].as_array().unwrap() {
            if f["status"] == "modified" || f["status"] == "missing" {
                out.insert(format!("{tree}/{}", f["path"].as_str().unwrap()));
            }
        }
    }
    out
}

#[test]
fn clean_rpm_tree_is_verified_by_the_rpm_database() {
    let Some((fx, _out, _)) = rpm_system(None) else {
        return;
    };
    let run = fx.run(&[
        "--format",
        "json",
        "scan",
        "--all-files",
        "--sections",
        "tree",
    ]);
    run.expect_code(0);
    let report = run.json();
    let tree = &report["trees"][0];
    assert_eq!(tree["path"], format!("/{RPM_TREE}"));
    assert_eq!(tree["references"][0], "rpmdb", "{tree}");
    let files = tree["files"].as_array().unwrap();
    assert!(files.iter().any(|f| f["path"] == "amd/amdkfd/kfd_crat.c"
        && f["status"] == "ok"
        && f["reference"] == "rpmdb"));
    assert!(rpm_verify_changed(fx.root(), "amdgpu-dkms").is_empty());
}

#[test]
fn scan_agrees_with_rpm_verify_file_for_file_and_flags_the_incident() {
    let Some((fx, _out, _)) = rpm_system(None) else {
        return;
    };
    fx.write(
        &format!("{RPM_TREE}/amd/amdkfd/kfd_crat.c"),
        crat_with_incident(),
    );
    fx.write(
        &format!("{RPM_TREE}/amd/amdgpu/gmc_v10_0.c"),
        "int gmc_v10_0 = 1;\n",
    );
    std::fs::remove_file(fx.path(&format!("{RPM_TREE}/amd/amdkfd/Makefile"))).unwrap();
    let run = fx.run(&["--format", "json", "scan", "--sections", "tree"]);
    run.expect_code(1);
    let report = run.json();
    let ours = audit_changed(&report);
    let theirs = rpm_verify_changed(fx.root(), "amdgpu-dkms");
    assert_eq!(ours, theirs, "kfd-audit and rpm -V disagree");
    assert_eq!(ours.len(), 3, "{ours:?}");
    let crat = crate::fixture::json_file(&report, "amd/amdkfd/kfd_crat.c").unwrap();
    assert_eq!(crat["status"], "modified");
    assert_eq!(crat["reference"], "rpmdb");
    assert!(
        crat["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["rule"] == "KFD-MEM-001" && f["severity"] == "critical"),
        "{crat}"
    );
}

#[test]
fn the_rpm_program_reads_the_database_the_same_way() {
    // The path taken for BDB (RHEL 8) and NDB (SLES) databases, forced on a SQLite
    // one so that it runs against the real rpm here.
    let Some((fx, _out, _)) = rpm_system(None) else {
        return;
    };
    fx.write(
        &format!("{RPM_TREE}/amd/amdkfd/kfd_crat.c"),
        crat_with_incident(),
    );
    let native = fx.run(&["--format", "json", "scan", "--sections", "tree"]);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kfd-audit"));
    cmd.arg("--root")
        .arg(fx.root())
        .args(["--format", "json", "scan", "--sections", "tree"])
        .env("KFD_AUDIT_RPMDB_VIA_RPM", "1");
    let via = crate::fixture::Run::of(cmd);
    via.expect_code(1);
    assert_eq!(audit_changed(&native.json()), audit_changed(&via.json()));
    assert_eq!(via.json()["trees"][0]["references"][0], "rpmdb");
}

#[test]
fn a_corrupt_rpm_database_is_one_line_naming_the_file() {
    let Some((fx, _out, _)) = rpm_system(None) else {
        return;
    };
    let db = fx.path("var/lib/rpm/rpmdb.sqlite");
    let _ = std::fs::remove_file(fx.path("var/lib/rpm/rpmdb.sqlite-wal"));
    let _ = std::fs::remove_file(fx.path("var/lib/rpm/rpmdb.sqlite-shm"));
    let mut bytes = std::fs::read(&db).unwrap();
    for b in bytes.iter_mut().skip(100).take(20000) {
        *b = 0xa5;
    }
    std::fs::write(&db, bytes).unwrap();
    let run = fx.run(&["scan", "--sections", "tree"]);
    run.expect_code(2);
    let err = run.stderr();
    assert!(err.contains("rpmdb.sqlite"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    // A file that is not a database at all.
    std::fs::write(&db, b"not sqlite").unwrap();
    let run = fx.run(&["scan", "--sections", "tree"]);
    run.expect_code(2);
    assert!(run.stderr().contains("rpmdb.sqlite"), "{}", run.stderr());
}

#[test]
fn both_databases_and_neither_are_said_plainly() {
    let Some((fx, _out, _)) = rpm_system(None) else {
        return;
    };
    std::fs::create_dir_all(fx.path("var/lib/dpkg/info")).unwrap();
    let run = fx.run(&["--format", "json", "scan", "--sections", "tree"]);
    let problems = run.json()["trees"][0]["problems"].to_string();
    assert!(problems.contains("both a dpkg database"), "{problems}");
    assert!(
        problems.contains("judged by the RPM database"),
        "{problems}"
    );

    let bare = Fixture::new();
    bare.tree_with(
        "usr/src/amdgpu-6.8.5-2009582.24.04",
        None,
        &[("a.c", "int a;\n")],
    );
    let run = bare.run(&["--format", "json", "scan", "--sections", "tree"]);
    let problems = run.json()["trees"][0]["problems"].to_string();
    assert!(problems.contains("no package database"), "{problems}");
}
