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
    rpmbuild_with(spec, out_dir, &[])
}

/// [`rpmbuild`] with further rpm macros defined (`_binary_filedigest_algorithm`, ...).
pub fn rpmbuild_with(spec: &Spec, out_dir: &Path, defines: &[(&str, &str)]) -> PathBuf {
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
    for (name, value) in defines {
        cmd.arg("--define").arg(format!("{name} {value}"));
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

/// Puts the package file where dnf keeps downloaded packages.
fn cache_in_dnf(fx: &Fixture, rpm: &Path) -> PathBuf {
    let dest = fx.path(&format!(
        "/var/cache/dnf/amdgpu-9f3a1c/packages/{}",
        rpm.file_name().unwrap().to_string_lossy()
    ));
    std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
    std::fs::copy(rpm, &dest).unwrap();
    dest
}

fn restore_from_cached_rpm(payload: Option<&str>) {
    let Some((fx, _out, rpm)) = rpm_system(payload) else {
        return;
    };
    cache_in_dnf(&fx, &rpm);
    let crat = format!("{RPM_TREE}/amd/amdkfd/kfd_crat.c");
    fx.write(&crat, crat_with_incident());
    let dry = fx.run(&["restore", "--dry-run"]);
    assert!(
        dry.stdout()
            .contains("rpm archive /var/cache/dnf/amdgpu-9f3a1c/packages/"),
        "{}",
        dry.stdout()
    );
    let run = fx.run(&["restore", "--yes"]);
    run.expect_code(0);
    assert_eq!(fx.read(&crat), CRAT_C.as_bytes());
    assert!(rpm_verify_changed(fx.root(), "amdgpu-dkms").is_empty());
    fx.run(&["scan", "--sections", "tree"]).expect_code(0);
}

#[test]
fn restores_from_the_cached_rpm_gzip() {
    restore_from_cached_rpm(None);
}

#[test]
fn restores_from_the_cached_rpm_zstd_and_xz() {
    restore_from_cached_rpm(Some("w19.zstdio"));
    restore_from_cached_rpm(Some("w6.xzdio"));
}

#[test]
fn a_cached_rpm_of_another_build_or_truncated_is_refused_and_the_fetch_is_named() {
    let Some((fx, out, rpm)) = rpm_system(None) else {
        return;
    };
    let crat = format!("{RPM_TREE}/amd/amdkfd/kfd_crat.c");
    fx.write(&crat, crat_with_incident());
    // No cached package: the plan names the command that fetches one.
    let dry = fx.run(&["restore", "--dry-run"]);
    let text = format!("{}{}", dry.stdout(), dry.stderr());
    assert!(text.contains("dnf download --destdir"), "{text}");
    assert!(
        text.contains("dnf reinstall amdgpu-dkms-6.8.5-2009582.el9.noarch"),
        "{text}"
    );
    // A package of the same name whose kfd_crat.c differs: the member is refused.
    let mut other = amdgpu_dkms_spec(None);
    for (path, data) in other.files.iter_mut() {
        if path.ends_with("kfd_crat.c") {
            *data = b"/* another build */\n".to_vec();
        }
    }
    let other_dir = out.path().join("other");
    std::fs::create_dir_all(&other_dir).unwrap();
    let other_rpm = rpmbuild(&other, &other_dir);
    let cached = cache_in_dnf(&fx, &other_rpm);
    let run = fx.run(&["--format", "json", "scan", "--sections", "tree"]);
    let problems = run.json()["trees"][0]["problems"].to_string();
    assert!(
        problems.contains("does not match the RPM database"),
        "{problems}"
    );
    // Truncated: one problem naming the file; the scan goes on.
    // Cut inside the headers, and inside the payload.
    let bytes = std::fs::read(&rpm).unwrap();
    let payload = bytes
        .windows(3)
        .rposition(|w| w == [0x1f, 0x8b, 0x08])
        .expect("a gzip payload");
    for cut in [bytes.len() / 2, payload + 20] {
        std::fs::write(&cached, &bytes[..cut]).unwrap();
        let run = fx.run(&["--format", "json", "scan", "--sections", "tree", "--diff"]);
        run.expect_code(1);
        let problems = run.json()["trees"][0]["problems"].to_string();
        assert!(
            problems.contains("corrupt payload") || problems.contains("truncated"),
            "{cut}: {problems}"
        );
        assert!(
            problems.contains("amdgpu-dkms-6.8.5-2009582.el9.noarch.rpm"),
            "{problems}"
        );
    }
    // Not an RPM at all.
    std::fs::write(&cached, b"<html>404</html>").unwrap();
    let run = fx.run(&["--format", "json", "scan", "--sections", "tree", "--diff"]);
    let problems = run.json()["trees"][0]["problems"].to_string();
    assert!(problems.contains("not an RPM package"), "{problems}");
}

const K1: &str = "5.14.0-362.8.1.el9_3.x86_64";
const K2: &str = "5.14.0-427.13.1.el9_4.x86_64";

fn set_mtime(path: &Path, secs: u64) {
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
        .unwrap();
}

#[test]
fn plan_on_rhel_uses_dracut_extra_and_follows_weak_updates() {
    let Some((fx, _out, _)) = rpm_system(None) else {
        return;
    };
    let ver = "6.8.5-2009582.el9";
    // rpm gives the tree the package's times; make them older than the change.
    for rel in tree_files().iter().map(|(r, _)| r) {
        set_mtime(&fx.path(&format!("{RPM_TREE}/{rel}")), 1_700_000_000);
    }
    for t in ["/usr/sbin/dkms", "/usr/bin/dracut", "/usr/bin/dnf"] {
        let p = fx.write(t, "#!/bin/sh\nexit 0\n");
        std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    for k in [K1, K2] {
        fx.write(&format!("/boot/initramfs-{k}.img"), "initrd");
        std::fs::create_dir_all(fx.path(&format!("/usr/src/kernels/{k}/include"))).unwrap();
        let link = fx.path(&format!("/lib/modules/{k}/build"));
        std::fs::create_dir_all(link.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(format!("/usr/src/kernels/{k}"), link).unwrap();
    }
    // dkms built and installed amdgpu for K1 into extra/, after the change...
    let base = format!("/var/lib/dkms/amdgpu/{ver}/{K1}/x86_64");
    let ko = fx.write(&format!("{base}/module/amdgpu.ko.xz"), "module");
    let log = fx.write(&format!("{base}/log/make.log"), "make.log\n");
    let inst = fx.write(&format!("/lib/modules/{K1}/extra/amdgpu.ko.xz"), "module");
    std::os::unix::fs::symlink(
        format!("/{RPM_TREE}"),
        fx.path(&format!("/var/lib/dkms/amdgpu/{ver}/source")),
    )
    .unwrap();
    std::os::unix::fs::symlink(
        format!("{ver}/{K1}/x86_64"),
        fx.path(&format!("/var/lib/dkms/amdgpu/kernel-{K1}-x86_64")),
    )
    .unwrap();
    // ...and weak-modules made K2 load that same build.
    let weak = fx.path(&format!("/lib/modules/{K2}/weak-updates/amdgpu.ko.xz"));
    std::fs::create_dir_all(weak.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(format!("/lib/modules/{K1}/extra/amdgpu.ko.xz"), &weak).unwrap();
    let crat = fx.path(&format!("{RPM_TREE}/amd/amdkfd/kfd_crat.c"));
    fx.write(
        &format!("{RPM_TREE}/amd/amdkfd/kfd_crat.c"),
        crat_with_incident(),
    );
    set_mtime(&crat, 1_700_002_000);
    for p in [&ko, &log, &inst] {
        set_mtime(p, 1_700_003_000);
    }

    let run = fx.run(&["--format", "json", "plan"]);
    run.expect_code(1);
    let plan = run.json();
    let r = fx.root().display().to_string();
    let cmds: Vec<String> = plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["command"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(plan["initramfs_tool"], "dracut");
    for k in [K1, K2] {
        assert!(
            cmds.contains(&format!("chroot {r} dracut -f --kver {k}")),
            "{cmds:?}"
        );
        assert!(
            cmds.contains(&format!("chroot {r} dkms build -m amdgpu -v {ver} -k {k}")),
            "{cmds:?}"
        );
    }
    assert!(
        !cmds.iter().any(|c| c.contains("update-initramfs")),
        "{cmds:?}"
    );
    let kernels = plan["trees"][0]["dkms"]["kernels"].as_array().unwrap();
    let kern = |k: &str| kernels.iter().find(|x| x["kernel"] == k).unwrap().clone();
    assert_eq!(
        kern(K1)["installed"][0]["path"],
        format!("/lib/modules/{K1}/extra/amdgpu.ko.xz")
    );
    // K2's provenance is that of the file its weak-updates link leads to.
    let k2 = kern(K2);
    assert!(
        k2["installed"][0]["path"]
            .as_str()
            .unwrap()
            .starts_with(&format!(
                "/lib/modules/{K2}/weak-updates/amdgpu.ko.xz -> /lib/modules/{K1}/extra/"
            )),
        "{k2}"
    );
    assert!(
        k2["notes"].to_string().contains("weak-updates link"),
        "{k2}"
    );
    assert_eq!(k2["provenance"], kern(K1)["provenance"], "{k2}");
    assert!(
        k2["verdict"].as_str().unwrap().contains("after the change"),
        "{k2}"
    );
    // The text plan shows the same.
    let text = fx.run(&["plan"]).stdout();
    assert!(text.contains(&format!("dracut -f --kver {K2}")), "{text}");
}

/// A shared library whose ELF `DT_SONAME` is `soname` (what ldconfig reads), built
/// with the C compiler dkms depends on; `build` tells two builds apart.
fn elf_library(dir: &Path, soname: &str, build: u32) -> Vec<u8> {
    let src = dir.join(format!("lib{build}.c"));
    let out = dir.join(format!("lib{build}.so"));
    std::fs::write(&src, format!("int kfd_audit_build = {build};\n")).unwrap();
    let o = Command::new("cc")
        .args(["-shared", "-fPIC", &format!("-Wl,-soname,{soname}"), "-o"])
        .arg(&out)
        .arg(&src)
        .output()
        .expect("run cc (installed with dkms)");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::read(out).unwrap()
}

fn rocm_json(fx: &Fixture) -> (i32, serde_json::Value) {
    let r = fx.run(&["--format", "json", "scan", "--sections", "rocm"]);
    assert_ne!(r.code(), 2, "{}", r.stderr());
    (r.code(), r.json())
}

/// Every finding object (rule + fix) anywhere in a report.
fn all_findings(v: &serde_json::Value) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    let mut stack = vec![v];
    while let Some(v) = stack.pop() {
        match v {
            serde_json::Value::Object(m) => {
                if m.contains_key("rule") && m.contains_key("fix") {
                    out.push(v.clone());
                }
                stack.extend(m.values());
            }
            serde_json::Value::Array(a) => stack.extend(a.iter()),
            _ => {}
        }
    }
    out
}

fn finding(report: &serde_json::Value, rule: &str) -> serde_json::Value {
    all_findings(report)
        .into_iter()
        .find(|f| f["rule"] == rule)
        .unwrap_or_else(|| panic!("no {rule} in {report:#}"))
}

/// What `rpm -V` says of a package under the root: the paths it reports changed.
fn rpm_verify(fx: &Fixture, package: &str) -> String {
    String::from_utf8_lossy(&rpm_root(fx.root(), &["-V", "--nodeps", package]).stdout).into_owned()
}

const ROCM_LIB_DIR: &str = "opt/rocm-6.2.0/lib";

#[test]
fn rocm_runtime_from_rpm_is_verified_file_by_file_with_its_sha256() {
    if !have_rpm() {
        return;
    }
    let fx = Fixture::new();
    let out = tempfile::tempdir().unwrap();
    let lib = format!("{ROCM_LIB_DIR}/libhsa-runtime64.so.1.14.0");
    let link = format!("{ROCM_LIB_DIR}/libhsa-runtime64.so.1");
    let clean = elf_library(out.path(), "libhsa-runtime64.so.1", 1);
    let patched = elf_library(out.path(), "libhsa-runtime64.so.1", 2);
    let spec = Spec {
        name: "hsa-rocr",
        version: "1.14.0.60200",
        release: "66.el9",
        files: vec![
            (lib.clone(), clean.clone()),
            (
                "opt/rocm-6.2.0/share/doc/hsa-rocr/README".into(),
                b"ROCr runtime\n".to_vec(),
            ),
        ],
        links: vec![(link.clone(), "libhsa-runtime64.so.1.14.0".into())],
        file_lines: vec!["/opt/rocm-6.2.0".into()],
        payload: None,
    };
    let rpm = rpmbuild(&spec, out.path());
    install(&fx, &[&rpm]);
    // AMD's RPMs make the loader read /opt/rocm*/lib this way.
    fx.write("etc/ld.so.conf.d/rocm.conf", "/opt/rocm-6.2.0/lib\n");
    let reinstall = "dnf reinstall hsa-rocr-1.14.0.60200-66.el9.noarch";

    // Clean: both files verified against the rpm database, as rpm -V says.
    let (code, report) = rocm_json(&fx);
    assert_eq!(code, 0, "{report:#}");
    let text = report.to_string();
    assert!(!text.contains("not verified by this section"), "{text}");
    assert!(all_findings(&report).is_empty(), "{report:#}");
    assert_eq!(rpm_verify(&fx, "hsa-rocr"), "");

    // A rebuilt runtime copied over the library: found by its SHA-256, as rpm -V finds it.
    fx.write(&lib, &patched);
    let (code, report) = rocm_json(&fx);
    assert_eq!(code, 1);
    let f = finding(&report, "ROCM-FILE-001");
    assert_eq!(f["severity"], "high");
    let why = f["why"].as_str().unwrap();
    assert!(
        why.contains("rpm database") && why.contains("sha256"),
        "{why}"
    );
    assert!(f["fix"].as_str().unwrap().contains(reinstall), "{f:#}");
    assert!(rpm_verify(&fx, "hsa-rocr").contains(&format!("/{lib}")));
    fx.write(&lib, &clean);

    // The SONAME link pointed (ln -sfn) at a patched copy outside the package.
    fx.write("root/libhsa-patched.so", &patched);
    std::fs::remove_file(fx.path(&link)).unwrap();
    std::os::unix::fs::symlink("/root/libhsa-patched.so", fx.path(&link)).unwrap();
    let (code, report) = rocm_json(&fx);
    assert_eq!(code, 1);
    let f = finding(&report, "ROCM-LINK-001");
    assert_eq!(f["severity"], "high");
    assert!(f["fix"].as_str().unwrap().contains(reinstall), "{f:#}");
    std::fs::remove_file(fx.path(&link)).unwrap();
    std::os::unix::fs::symlink("libhsa-runtime64.so.1.14.0", fx.path(&link)).unwrap();

    // A patched backup in the library directory: ldconfig would make it the live library.
    let backup = format!("/{lib}.backup");
    fx.write(&backup, &patched);
    let (code, report) = rocm_json(&fx);
    assert_eq!(code, 1);
    let f = finding(&report, "ROCM-LDCONFIG-001");
    assert_eq!(f["severity"], "high");
    let fix = f["fix"].as_str().unwrap();
    assert!(fix.contains(&format!("Move {backup} out of")), "{fix}");

    // A clean backup there is judged clean by its SHA-256, and moved, never deleted.
    fx.write(&backup, &clean);
    let (code, report) = rocm_json(&fx);
    assert_eq!(code, 1);
    let f = finding(&report, "ROCM-LDCONFIG-002");
    assert!(f["fix"].as_str().unwrap().contains("ldconfig"), "{f:#}");
    assert!(!report.to_string().contains("Delete"), "{report:#}");
}

/// A packaged symbolic link deleted, or pointed elsewhere: rpm -V says "missing" or
/// "L"; kfd-audit must not call the tree clean.
#[test]
fn a_deleted_or_retargeted_packaged_link_is_not_clean() {
    let Some((fx, _out, _)) = rpm_system(None) else {
        return;
    };
    let link = format!("{RPM_TREE}/amd/amdkfd/kfd_crat_link.c");
    std::fs::remove_file(fx.path(&link)).unwrap();
    let verify =
        String::from_utf8_lossy(&rpm_root(fx.root(), &["-V", "amdgpu-dkms"]).stdout).into_owned();
    assert!(
        verify.contains("missing") && verify.contains("kfd_crat_link.c"),
        "{verify}"
    );
    let run = fx.run(&["--format", "json", "scan", "--sections", "tree"]);
    run.expect_code(1);
    let f = crate::fixture::json_file(&run.json(), "amd/amdkfd/kfd_crat_link.c")
        .cloned()
        .unwrap_or_default();
    assert_eq!(f["status"], "missing", "{f}");
    // No content to restore a link from: restore says so and names the reinstall.
    let restore = fx.run(&["restore", "--yes"]);
    assert_eq!(restore.code(), 1);
    assert!(
        restore.stdout().contains("reinstall"),
        "{}",
        restore.stdout()
    );
    assert!(!fx.path(&link).exists());

    std::os::unix::fs::symlink("../amdgpu/amdgpu_drv.c", fx.path(&link)).unwrap();
    let run = fx.run(&["--format", "json", "scan", "--sections", "tree"]);
    run.expect_code(1);
    let f = crate::fixture::json_file(&run.json(), "amd/amdkfd/kfd_crat_link.c")
        .cloned()
        .unwrap_or_default();
    assert_ne!(f["status"], "ok", "{f}");
}

/// Packages built with another file digest algorithm than SHA-256 (rpm's
/// `_binary_filedigest_algorithm`: 2 SHA-1, 9 SHA-384, 10 SHA-512, 1 MD5): verified in
/// that algorithm, as rpm -V does, never left unverified.
#[test]
fn file_digests_in_every_algorithm_rpm_writes_are_verified() {
    if !have_rpm() {
        return;
    }
    for (code, name) in [
        ("1", "md5"),
        ("2", "sha1"),
        ("9", "sha384"),
        ("10", "sha512"),
    ] {
        let fx = Fixture::new();
        let out = tempfile::tempdir().unwrap();
        let rpm = rpmbuild_with(
            &amdgpu_dkms_spec(None),
            out.path(),
            &[("_binary_filedigest_algorithm", code)],
        );
        install(&fx, &[&rpm]);
        let run = fx.run(&[
            "--format",
            "json",
            "scan",
            "--all-files",
            "--sections",
            "tree",
        ]);
        run.expect_code(0);
        let crat = crate::fixture::json_file(&run.json(), "amd/amdkfd/kfd_crat.c")
            .cloned()
            .unwrap();
        assert_eq!(crat["status"], "ok", "{name}: {crat}");
        assert_eq!(crat["reference"], "rpmdb", "{name}: {crat}");

        fx.write(
            &format!("{RPM_TREE}/amd/amdkfd/kfd_crat.c"),
            crat_with_incident(),
        );
        let run = fx.run(&["--format", "json", "scan", "--sections", "tree"]);
        run.expect_code(1);
        let report = run.json();
        assert_eq!(
            audit_changed(&report),
            rpm_verify_changed(fx.root(), "amdgpu-dkms"),
            "{name}: kfd-audit and rpm -V disagree"
        );
        let crat = crate::fixture::json_file(&report, "amd/amdkfd/kfd_crat.c").unwrap();
        assert_eq!(crat["status"], "modified", "{name}");
    }
}
