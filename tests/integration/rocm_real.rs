//! Debian's real ROCm runtime package (`libhsa-runtime64-1`, fetched by `.ci/run` with
//! `apt-get download` into `$KFD_ROCM_DEBS`) laid out in a temporary root the way dpkg
//! installs it: its files, its md5sums and its file list under /var/lib/dpkg/info. The
//! host's /usr/lib is never touched. The glibc `ldconfig -n` of the machine is run on the
//! temporary library directory to check that what kfd-audit predicts is what ldconfig
//! does. Skipped without the archive unless KFD_REQUIRE_ROCM_DEBS=1.

use crate::fixture::Fixture;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

const PKG: &str = "libhsa-runtime64-1";
const DIR: &str = "/usr/lib/x86_64-linux-gnu";
const LINK: &str = "/usr/lib/x86_64-linux-gnu/libhsa-runtime64.so.1";

fn deb() -> Option<PathBuf> {
    let dir = std::env::var_os("KFD_ROCM_DEBS").unwrap_or_else(|| "/tmp/kfd-rocm-debs".into());
    let found = std::fs::read_dir(&dir).ok().and_then(|entries| {
        entries.flatten().map(|e| e.path()).find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{PKG}_")) && n.ends_with(".deb"))
        })
    });
    if found.is_none() {
        if std::env::var_os("KFD_REQUIRE_ROCM_DEBS").is_some_and(|v| v == "1") {
            panic!(
                "KFD_REQUIRE_ROCM_DEBS=1 but no {PKG}_*.deb in {}",
                Path::new(&dir).display()
            );
        }
        eprintln!("skipped rocm_real: no {PKG}_*.deb (apt-get download {PKG})");
    }
    found
}

fn run(argv: &[&str]) -> String {
    let out = Command::new(argv[0]).args(&argv[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{argv:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The package installed under a fresh root: files, md5sums, and the `.list` dpkg writes
/// (directories and links included, as `/usr/lib/...`).
fn installed() -> Option<(Fixture, String)> {
    let deb = deb()?;
    let fx = Fixture::new();
    let deb = deb.to_str().unwrap();
    run(&["dpkg-deb", "-x", deb, fx.root().to_str().unwrap()]);
    let ctrl = tempfile::tempdir().unwrap();
    run(&["dpkg-deb", "-e", deb, ctrl.path().to_str().unwrap()]);
    let stem = format!("{PKG}:amd64");
    fx.write(
        &format!("/var/lib/dpkg/info/{stem}.md5sums"),
        std::fs::read(ctrl.path().join("md5sums")).unwrap(),
    );
    let mut list = String::new();
    let tar = Command::new("sh")
        .args(["-c", &format!("dpkg-deb --fsys-tarfile {deb} | tar -t")])
        .output()
        .unwrap();
    for name in String::from_utf8_lossy(&tar.stdout).lines() {
        let p = name.trim_start_matches('.').trim_end_matches('/');
        list.push_str(if p.is_empty() { "/." } else { p });
        list.push('\n');
    }
    fx.write(&format!("/var/lib/dpkg/info/{stem}.list"), list);
    let lib = std::fs::read_link(fx.path(LINK)).unwrap();
    Some((fx, format!("{DIR}/{}", lib.display())))
}

/// The packaged library with one byte of its code changed: still an ELF with the
/// same SONAME, as a rebuilt runtime would be.
fn patched(fx: &Fixture, lib: &str) -> Vec<u8> {
    let mut bytes = fx.read(lib);
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    bytes
}

fn rocm(fx: &Fixture) -> (i32, Value) {
    let r = fx.run(&["--format", "json", "scan", "--sections", "rocm"]);
    assert_ne!(r.code(), 2, "{}", r.stderr());
    (r.code(), r.json())
}

fn findings(v: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    fn walk(v: &Value, out: &mut Vec<Value>) {
        match v {
            Value::Object(m) => {
                if m.contains_key("rule") && m.contains_key("fix") {
                    out.push(v.clone());
                }
                m.values().for_each(|x| walk(x, out));
            }
            Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    walk(v, &mut out);
    out
}

fn rule<'a>(all: &'a [Value], id: &str) -> &'a Value {
    all.iter()
        .find(|f| f["rule"] == id)
        .unwrap_or_else(|| panic!("no {id} in {all:#?}"))
}

fn ldconfig(fx: &Fixture) -> String {
    run(&["ldconfig", "-n", fx.path(DIR).to_str().unwrap()]);
    std::fs::read_link(fx.path(LINK))
        .unwrap()
        .display()
        .to_string()
}

#[test]
fn clean_package_is_clean() {
    let Some((fx, _)) = installed() else { return };
    let (code, report) = rocm(&fx);
    assert_eq!(code, 0, "{report:#}");
}

/// Item 1: the SONAME link pointed (ln -sfn) at a patched copy.
#[test]
fn link_retargeted_at_a_patched_copy_is_found() {
    let Some((fx, lib)) = installed() else { return };
    let copy = format!("{lib}.patched");
    fx.write(&copy, patched(&fx, &lib));
    run(&[
        "ln",
        "-sfn",
        copy.rsplit('/').next().unwrap(),
        fx.path(LINK).to_str().unwrap(),
    ]);
    let (code, report) = rocm(&fx);
    assert_eq!(code, 1, "{report:#}");
    let all = findings(&report);
    let f = rule(&all, "ROCM-LINK-001");
    assert_eq!(f["severity"], "high");
    assert!(f["why"].as_str().unwrap().contains(&copy), "{f:#}");
    // ldconfig would keep the link on the copy (its name sorts last): the fix moves it.
    assert!(
        f["fix"]
            .as_str()
            .unwrap()
            .contains(&format!("Move {copy} out of {DIR}")),
        "{f:#}"
    );
    assert_eq!(f["action"]["kind"], "move-aside");
    // A patched copy outside the library directories: dpkg puts the link back.
    let fx2 = installed().unwrap().0;
    fx2.write("/opt/patched/libhsa-runtime64.so.1", patched(&fx2, &lib));
    std::fs::remove_file(fx2.path(LINK)).unwrap();
    std::os::unix::fs::symlink("/opt/patched/libhsa-runtime64.so.1", fx2.path(LINK)).unwrap();
    let (code, report) = rocm(&fx2);
    assert_eq!(code, 1);
    let f = rule(&findings(&report), "ROCM-LINK-001").clone();
    assert!(
        f["fix"]
            .as_str()
            .unwrap()
            .contains("apt-get install --reinstall libhsa-runtime64-1"),
        "{f:#}"
    );
    let said = Value::Array(findings(&report)).to_string();
    assert!(
        !said.contains(fx2.root().to_str().unwrap()),
        "host paths printed: {said}"
    );
}

/// Item 2: a patched *.so.*.backup that ldconfig picks as the SONAME target.
#[test]
fn ldconfig_selected_patched_backup_is_the_live_library() {
    let Some((fx, lib)) = installed() else { return };
    let backup = format!("{lib}.backup");
    fx.write(&backup, patched(&fx, &lib));
    let (code, report) = rocm(&fx);
    assert_eq!(code, 1, "{report:#}");
    let all = findings(&report);
    let f = rule(&all, "ROCM-LDCONFIG-001");
    assert_eq!(f["severity"], "high");
    assert!(
        !report.to_string().contains("Nothing loads it"),
        "{report:#}"
    );
    assert!(f["fix"]
        .as_str()
        .unwrap()
        .contains(&format!("Move {backup} out of {DIR}")));
    // What the real ldconfig does with that directory: exactly what was predicted.
    assert_eq!(ldconfig(&fx), backup.rsplit('/').next().unwrap());
    let (code, report) = rocm(&fx);
    assert_eq!(code, 1);
    let f = rule(&findings(&report), "ROCM-LINK-001").clone();
    assert_eq!(f["action"]["kind"], "move-aside", "{f:#}");
}

/// Item 2: a clean backup: never "delete it" (that leaves the link dangling once
/// ldconfig ran); following the fix gives a clean system.
#[test]
fn ldconfig_selected_clean_backup_is_moved_not_deleted() {
    let Some((fx, lib)) = installed() else { return };
    let backup = format!("{lib}.backup");
    fx.write(&backup, fx.read(&lib));
    let (code, report) = rocm(&fx);
    assert_eq!(code, 1, "{report:#}");
    let all = findings(&report);
    let f = rule(&all, "ROCM-LDCONFIG-002");
    let fix = f["fix"].as_str().unwrap();
    assert!(
        fix.contains(&format!("Move {backup} out of {DIR}")) && fix.contains("ldconfig"),
        "{fix}"
    );
    assert!(!report.to_string().contains("Delete"), "{report:#}");
    // ldconfig ran (an install): the link is on the backup. Still found, same fix.
    ldconfig(&fx);
    let (code, report) = rocm(&fx);
    assert_eq!(code, 1);
    assert_eq!(
        rule(&findings(&report), "ROCM-LINK-003")["action"]["kind"],
        "move-aside"
    );
    // Following the fix: moved out, ldconfig: the packaged library is live again.
    std::fs::rename(fx.path(&backup), fx.root().join("moved-backup")).unwrap();
    assert_eq!(ldconfig(&fx), lib.rsplit('/').next().unwrap());
    let (code, report) = rocm(&fx);
    assert_eq!(code, 0, "{report:#}");
}

/// A replaced library file (the package's own name, other bytes).
#[test]
fn replaced_library_file_is_found() {
    let Some((fx, lib)) = installed() else { return };
    let bytes = patched(&fx, &lib);
    fx.write(&lib, bytes);
    let (code, report) = rocm(&fx);
    assert_eq!(code, 1);
    assert_eq!(
        rule(&findings(&report), "ROCM-FILE-001")["severity"],
        "high"
    );
}

/// The hourly timer does not hash a gigabyte of unchanged libraries every hour: a file
/// whose inode, size, mtime and ctime are as they were is not read again. A write in
/// place with the mtime put back (`touch -r`) still moves the ctime, and is found.
#[test]
fn unchanged_package_files_are_not_read_again_and_a_write_is_still_found() {
    let Some((fx, lib)) = installed() else { return };
    // Only files whose ctime lies two seconds behind are remembered (see io/digest_cache.rs).
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let (code, report) = rocm(&fx);
    assert_eq!(code, 0, "{report:#}");
    assert!(!report.to_string().contains("not read again"), "{report:#}");
    let cache = std::fs::read_to_string(fx.path("/var/lib/kfd-audit/digest-cache")).unwrap();
    assert!(cache.contains(&lib), "{cache}");
    let (code, report) = rocm(&fx);
    assert_eq!(code, 0);
    assert!(report.to_string().contains("not read again"), "{report:#}");

    let mtime = std::fs::metadata(fx.path(&lib))
        .unwrap()
        .modified()
        .unwrap();
    let bytes = patched(&fx, &lib);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(fx.path(&lib))
        .unwrap();
    std::io::Write::write_all(&mut &f, &bytes).unwrap();
    f.set_modified(mtime).unwrap();
    drop(f);
    let (code, report) = rocm(&fx);
    assert_eq!(code, 1, "{report:#}");
    assert_eq!(
        rule(&findings(&report), "ROCM-FILE-001")["severity"],
        "high"
    );

    // Switched off, nothing is taken from it.
    let r = fx.run_env(
        &["--format", "json", "scan", "--sections", "rocm"],
        &[("KFD_AUDIT_DIGEST_CACHE", "off")],
    );
    assert!(!r.stdout().contains("not read again"), "{}", r.stdout());
}
