//! Clean content: backups judged by their bytes, the package archive read in place,
//! baseline copies, and `kfd-audit diff` / `scan --diff`.

use crate::fixture::{amdgpu_tree_files, json_file, md5_hex, Fixture, Run, CRAT_C, TREE};
use kfd_audit::content::CleanContent;
use kfd_audit::io::root::Root;
use kfd_audit::reference::{self, LoadOptions, ReferenceKind};
use kfd_audit::tree;
use std::path::{Path, PathBuf};

const CRAT: &str = "amd/amdkfd/kfd_crat.c";
const PKG: &str = "amdgpu-dkms";
/// With an epoch, as AMD's packages have none but Debian's rules allow: apt writes
/// the colon as `%3a` in the archive's file name.
const PKG_VERSION: &str = "1:6.8.5-2009582.24.04";
const DEB_NAME: &str = "amdgpu-dkms_1%3a6.8.5-2009582.24.04_all.deb";

/// The incident's change: VRAM declared hot-pluggable for device 0x731F.
const INJECTED: &str = "\t\t\tif (dev->gpu && dev->gpu->adev->pdev->device == 0x731F)\n\t\t\t\tflags |= HSA_MEM_FLAGS_HOT_PLUGGABLE;\n";
const ANCHOR: &str = "\t\t\t\tflags |= HSA_MEM_FLAGS_NON_VOLATILE;\n";

fn patched() -> String {
    CRAT_C.replacen(ANCHOR, &format!("{ANCHOR}{INJECTED}"), 1)
}

/// An earlier attempt: a different change to the same function.
fn older_attempt() -> String {
    CRAT_C.replacen(
        "uint32_t flags = 0;",
        "uint32_t flags = HSA_MEM_FLAGS_HOT_PLUGGABLE;",
        1,
    )
}

fn sys(rel: &str) -> String {
    format!("{TREE}/{rel}")
}

/// The standard tree with kfd_crat.c patched as in the incident.
fn patched_tree() -> Fixture {
    let fx = Fixture::new();
    fx.amdgpu_tree();
    fx.write(&sys(CRAT), patched());
    fx
}

/// The clean package's files, as root-relative paths.
fn package_files() -> Vec<(String, Vec<u8>)> {
    amdgpu_tree_files()
        .into_iter()
        .map(|(rel, data)| (sys(rel), data.as_bytes().to_vec()))
        .collect()
}

/// Installs `files` as the package archive of the installed version in apt's cache.
fn cache_deb(fx: &Fixture, compression: &str, files: &[(String, Vec<u8>)]) -> PathBuf {
    fx.dpkg_status(PKG, PKG_VERSION);
    let out = fx.path(&format!("var/cache/apt/archives/{DEB_NAME}"));
    fx.build_deb(PKG, PKG_VERSION, compression, files, &out);
    out
}

fn problems(report: &serde_json::Value) -> String {
    report["trees"][0]["problems"].to_string()
}

#[test]
fn patched_copy_is_same_as_current_and_never_a_restore_source() {
    let fx = patched_tree();
    // The incident: `cp kfd_crat.c kfd_crat.c.patched  # backup`, made after patching.
    fx.write(&sys("amd/amdkfd/kfd_crat.c.patched"), patched());
    let j = fx.run(&["--format", "json", "scan"]).expect_code(1).json();
    let crat = json_file(&j, CRAT).unwrap();
    assert_eq!(crat["status"], "modified");
    assert_eq!(
        crat["backups"],
        serde_json::json!([{
            "path": "amd/amdkfd/kfd_crat.c.patched",
            "verdict": "same-as-current",
            "reference": "dpkg-md5sums",
            "restorable": false,
            "size": patched().len(),
        }])
    );
    // Not a restore source: no clean content for the file anywhere.
    assert!(crat.get("clean").is_none(), "{crat}");
    // The backup is listed under its file, not as an added file, and counted apart.
    assert!(json_file(&j, "amd/amdkfd/kfd_crat.c.patched").is_none());
    assert_eq!(j["summary"]["added"], 0);
    assert_eq!(j["summary"]["files"], 5);
    assert_eq!(j["summary"]["backups"], 1);
    assert_eq!(j["trees"][0]["backups"], 1);

    let text = fx.run(&["scan", "-v"]).expect_code(1).stdout();
    assert!(text.contains(
        "      backup amd/amdkfd/kfd_crat.c.patched: same-as-current (a copy of the file as it is now, not a clean backup; never used to restore)\n      no clean copy: no baseline copy, package archive or verified backup has it (see 'kfd-audit diff')\n"
    ), "{text}");

    let run = fx.run(&["diff"]);
    run.expect_code(1);
    assert_eq!(run.stdout(), "");
    let err = run.stderr();
    assert!(
        err.starts_with("kfd-audit: amd/amdkfd/kfd_crat.c: no clean copy to compare with"),
        "{err}"
    );
    assert!(
        err.contains("apt-get install --download-only --reinstall amdgpu-dkms"),
        "{err}"
    );
    assert!(err.contains("kfd-audit baseline create"), "{err}");

    assert!(LibTree::open(&fx).get(CRAT).is_none());
}

#[test]
fn verified_orig_restores_and_stale_bak_is_unverified() {
    let fx = patched_tree();
    fx.write(&sys("amd/amdkfd/kfd_crat.c.orig"), CRAT_C);
    fx.write(&sys("amd/amdkfd/kfd_crat.c.bak.1"), older_attempt());
    // An older release of the file: different, but with nothing unsafe in it.
    fx.write(
        &sys("amd/amdkfd/kfd_crat.c~"),
        CRAT_C.replacen(
            "#include \"kfd_crat.h\"",
            "#include \"kfd_crat.h\"\n#include \"kfd_priv.h\"",
            1,
        ),
    );
    let j = fx.run(&["--format", "json", "scan"]).expect_code(1).json();
    let crat = json_file(&j, CRAT).unwrap();
    let verdicts: Vec<(&str, &str, bool)> = crat["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["path"].as_str().unwrap(),
                b["verdict"].as_str().unwrap(),
                b["restorable"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        verdicts,
        [
            // An earlier patch attempt: the rules find the forced flag in it.
            ("amd/amdkfd/kfd_crat.c.bak.1", "unsafe", false),
            ("amd/amdkfd/kfd_crat.c.orig", "verified-clean", true),
            ("amd/amdkfd/kfd_crat.c~", "unverified", false),
        ]
    );
    assert_eq!(
        crat["clean"],
        serde_json::json!({
            "reference": "backup",
            "origin": format!("backup /{TREE}/amd/amdkfd/kfd_crat.c.orig"),
        })
    );
    assert_eq!(j["summary"]["backups"], 3);
    let text = fx.run(&["scan", "-v"]).stdout();
    assert!(
        text.contains("      backup amd/amdkfd/kfd_crat.c.orig: verified-clean (matches dpkg-md5sums; usable to restore)\n"),
        "{text}"
    );
    assert!(
        text.contains("      backup amd/amdkfd/kfd_crat.c.bak.1: unsafe (contains a change a rule flags as unsafe; never used to restore)\n"),
        "{text}"
    );
    assert!(
        text.contains("      backup amd/amdkfd/kfd_crat.c~: unverified (matches neither dpkg-md5sums nor the current file: another version; not used to restore)\n"),
        "{text}"
    );

    let md = fx.run(&["--format", "markdown", "scan"]).stdout();
    assert!(
        md.contains(
            "| `amd/amdkfd/kfd_crat.c.orig` | `amd/amdkfd/kfd_crat.c` | verified-clean |\n"
        ),
        "{md}"
    );

    let lib = LibTree::open(&fx);
    let copy = lib.get(CRAT).unwrap();
    assert_eq!(copy.0, CRAT_C.as_bytes());
    assert_eq!(copy.1, ReferenceKind::Backup);
}

#[test]
fn directory_copy_backs_up_each_file() {
    let fx = Fixture::new();
    fx.amdgpu_tree();
    // backups.sh dir-copy: `cp -a amd/amdkfd amd/amdkfd.bak`, then patch.
    fx.write(&sys("amd/amdkfd.bak/kfd_crat.c"), CRAT_C);
    fx.write(&sys("amd/amdkfd.bak/Makefile"), "amdkfd-y += kfd_crat.o\n");
    fx.write(&sys("amd/amdkfd.bak/notes.txt"), "not a file of the tree\n");
    fx.write(&sys(CRAT), patched());
    let j = fx.run(&["--format", "json", "scan"]).expect_code(1).json();
    let crat = json_file(&j, CRAT).unwrap();
    assert_eq!(crat["backups"][0]["path"], "amd/amdkfd.bak/kfd_crat.c");
    assert_eq!(crat["backups"][0]["verdict"], "verified-clean");
    assert_eq!(
        crat["clean"]["origin"],
        format!("backup /{TREE}/amd/amdkfd.bak/kfd_crat.c")
    );
    let mk = json_file(&j, "amd/amdkfd/Makefile").unwrap();
    assert_eq!(mk["status"], "ok");
    assert_eq!(mk["backups"][0]["verdict"], "verified-clean");
    // A file in the copy with no original stays an added file.
    assert_eq!(
        json_file(&j, "amd/amdkfd.bak/notes.txt").unwrap()["status"],
        "added"
    );
    assert_eq!(j["summary"]["backups"], 2);
    assert_eq!(j["summary"]["added"], 1);
}

#[test]
fn package_archive_restores_bytes_with_xz_zstd_and_gzip() {
    for compression in ["xz", "zstd", "gzip"] {
        let fx = patched_tree();
        let deb = cache_deb(&fx, compression, &package_files());
        // Another version's archive in the cache is not used.
        fx.build_deb(
            PKG,
            "6.8.4-1",
            compression,
            &[(sys(CRAT), b"old\n".to_vec())],
            &fx.path("var/cache/apt/archives/amdgpu-dkms_6.8.4-1_all.deb"),
        );
        let lib = LibTree::open(&fx);
        let (bytes, kind, origin, source) = lib.get_full(CRAT).expect(compression);
        assert_eq!(bytes, CRAT_C.as_bytes(), "{compression}");
        assert_eq!(kind, ReferenceKind::DebArchive);
        assert_eq!(
            origin,
            format!("dpkg archive /var/cache/apt/archives/{DEB_NAME}")
        );
        assert_eq!(source, deb);
        // A missing file is served too.
        std::fs::remove_file(fx.path(&sys("Makefile"))).unwrap();
        let j = fx.run(&["--format", "json", "scan"]).expect_code(1).json();
        for rel in [CRAT, "Makefile"] {
            assert_eq!(
                json_file(&j, rel).unwrap()["clean"]["reference"],
                "deb-archive",
                "{compression} {rel}: {j}"
            );
        }
        assert_eq!(problems(&j), "[]");
    }
}

/// Runs the binary on the fixture and says how many times it read a package archive
/// through (the binary's `KFD_AUDIT_STATS` line on stderr).
fn run_counting_archive_reads(fx: &Fixture, args: &[&str]) -> (Run, u64) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_kfd-audit"));
    cmd.arg("--root")
        .arg(fx.root())
        .args(args)
        .env("KFD_AUDIT_STATS", "1");
    let run = Run::of(cmd);
    let err = run.stderr();
    let reads = err
        .lines()
        .find_map(|l| l.strip_prefix("kfd-audit: stats: "))
        .and_then(|l| l.strip_suffix(" package archive read(s)"))
        .unwrap_or_else(|| panic!("no stats line in {err}"))
        .parse()
        .unwrap();
    (run, reads)
}

#[test]
fn clean_content_is_fetched_once_a_cached_deb_is_read_through_once_per_run() {
    let fx = patched_tree();
    cache_deb(&fx, "xz", &package_files());
    // A missing file too: the same pass serves it.
    std::fs::remove_file(fx.path(&sys("Makefile"))).unwrap();
    let runs: [&[&str]; 6] = [
        &["scan"],
        &["--format", "json", "scan"],
        &["scan", "--diff"],
        &["plan"],
        &["diff"],
        &["restore", "--dry-run"],
    ];
    for args in runs {
        let (run, reads) = run_counting_archive_reads(&fx, args);
        run.expect_code(1);
        // The diff, the rules (diff-aware on kfd_crat.c) and the restore plan all
        // had the bytes of that one read.
        assert_eq!(reads, 1, "{args:?} read the archive {reads} times");
    }
    let (run, _) = run_counting_archive_reads(&fx, &["--format", "json", "scan"]);
    let j = run.json();
    for rel in [CRAT, "Makefile"] {
        assert_eq!(
            json_file(&j, rel).unwrap()["clean"]["reference"],
            "deb-archive",
            "{rel}: {j}"
        );
    }
    assert!(
        json_file(&j, CRAT).unwrap()["findings"]
            .as_array()
            .is_some_and(|f| !f.is_empty()),
        "{j}"
    );
    // Without the rules the plan needs no clean bytes at all.
    let (run, reads) = run_counting_archive_reads(&fx, &["plan", "--no-rules"]);
    run.expect_code(1);
    assert_eq!(reads, 0);
    // A restore reads it once more, on purpose: each clean source is fetched and
    // verified again right before it is written.
    let (run, reads) = run_counting_archive_reads(&fx, &["restore", "--yes"]);
    run.expect_code(0);
    assert_eq!(reads, 2);
    assert_eq!(fx.read(&sys(CRAT)), CRAT_C.as_bytes());
}

#[test]
fn archive_member_that_does_not_match_md5sums_is_refused() {
    let fx = patched_tree();
    // The cached archive holds the patched file (another build, or replaced).
    let mut files = package_files();
    for (rel, data) in &mut files {
        if rel.ends_with(CRAT) {
            *data = patched().into_bytes();
        }
    }
    cache_deb(&fx, "xz", &files);
    let j = fx.run(&["--format", "json", "scan"]).expect_code(1).json();
    assert!(json_file(&j, CRAT).unwrap().get("clean").is_none());
    assert_eq!(
        j["trees"][0]["problems"],
        serde_json::json!([format!(
            "/var/cache/apt/archives/{DEB_NAME}: member {TREE}/{CRAT} does not match dpkg's md5sums for amdgpu-dkms; refused"
        )])
    );
    let lib = LibTree::open(&fx);
    assert!(lib.get(CRAT).is_none());
    let run = fx.run(&["diff", CRAT]);
    run.expect_code(1);
    assert_eq!(run.stdout(), "");
    assert!(
        run.stderr().contains("does not match dpkg's md5sums"),
        "{}",
        run.stderr()
    );
}

#[test]
fn truncated_archive_is_a_clear_error_and_the_scan_goes_on() {
    let fx = patched_tree();
    fx.write(&sys("amd/amdkfd/kfd_crat.c.orig"), CRAT_C);
    let deb = cache_deb(&fx, "xz", &package_files());
    let len = std::fs::metadata(&deb).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&deb).unwrap();
    f.set_len(len - 40).unwrap();
    let j = fx.run(&["--format", "json", "scan"]).expect_code(1).json();
    let p = problems(&j);
    assert!(
        p.contains(&format!(
            "/var/cache/apt/archives/{DEB_NAME}: truncated: member 'data.tar.xz' needs"
        )),
        "{p}"
    );
    assert!(
        p.contains("apt-get install --download-only --reinstall amdgpu-dkms=1:6.8.5-2009582.24.04"),
        "{p}"
    );
    // The next source in the order of trust still serves the file.
    assert_eq!(json_file(&j, CRAT).unwrap()["clean"]["reference"], "backup");

    // Corrupt in the middle instead: the decompressor says so.
    let deb = cache_deb(&fx, "xz", &package_files());
    let mut bytes = std::fs::read(&deb).unwrap();
    let member = bytes.windows(11).position(|w| w == b"data.tar.xz").unwrap();
    // Inside the compressed stream, past the xz stream and block headers.
    for b in &mut bytes[member + 60 + 40..member + 60 + 140] {
        *b ^= 0x5a;
    }
    std::fs::write(&deb, bytes).unwrap();
    let j = fx.run(&["--format", "json", "scan"]).expect_code(1).json();
    assert!(
        problems(&j).contains("corrupt data.tar.xz"),
        "{}",
        problems(&j)
    );
}

#[test]
fn baseline_copies_serve_content_and_a_tampered_copy_is_refused() {
    let fx = Fixture::new();
    fx.amdgpu_tree();
    let run = fx.run(&["baseline", "create"]);
    run.expect_code(0);
    // amd/amdkfd (2 files), amdgpu_drv.c and dkms.conf; not the top Makefile.
    assert!(
        run.stdout().contains(": 5 files, 4 clean copies -> "),
        "{}",
        run.stdout()
    );
    let copies = "var/lib/kfd-audit/baseline/amdgpu-6.8.5-2009582.24.04/copies";
    assert!(fx
        .path(&format!("{copies}/amd/amdkfd/kfd_crat.c.zst"))
        .is_file());
    assert!(!fx.path(&format!("{copies}/Makefile.zst")).exists());

    fx.write(&sys(CRAT), patched());
    let lib = LibTree::open(&fx);
    let (bytes, kind, origin, _) = lib.get_full(CRAT).unwrap();
    assert_eq!(bytes, CRAT_C.as_bytes());
    assert_eq!(kind, ReferenceKind::Baseline);
    assert_eq!(
        origin,
        format!("baseline copy /{copies}/amd/amdkfd/kfd_crat.c.zst")
    );
    let out = fx.run(&["diff", CRAT]).expect_code(1).stdout();
    assert!(
        out.starts_with(&format!(
            "--- a/amd/amdkfd/kfd_crat.c\t(clean: baseline copy /{copies}/amd/amdkfd/kfd_crat.c.zst)\n"
        )),
        "{out}"
    );

    // A copy that does not match the manifest is not served, and the user is told.
    let fake = zstd_compress(patched().as_bytes());
    std::fs::write(
        fx.path(&format!("{copies}/amd/amdkfd/kfd_crat.c.zst")),
        fake,
    )
    .unwrap();
    let j = fx.run(&["--format", "json", "scan"]).expect_code(1).json();
    assert!(json_file(&j, CRAT).unwrap().get("clean").is_none());
    assert_eq!(
        j["trees"][0]["problems"],
        serde_json::json!([format!(
            "baseline copy /{copies}/amd/amdkfd/kfd_crat.c.zst: does not match the baseline hash of amd/amdkfd/kfd_crat.c; not used"
        )])
    );

    // --all stores every file.
    fx.write(&sys(CRAT), CRAT_C);
    let run = fx.run(&["baseline", "create", "--all"]);
    run.expect_code(0);
    assert!(
        run.stdout().contains(": 5 files, 5 clean copies -> "),
        "{}",
        run.stdout()
    );
    assert!(fx.path(&format!("{copies}/Makefile.zst")).is_file());
}

fn zstd_compress(data: &[u8]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("f");
    std::fs::write(&p, data).unwrap();
    let o = std::process::Command::new("zstd")
        .args(["-q", "-c"])
        .arg(&p)
        .output()
        .unwrap();
    assert!(o.status.success());
    o.stdout
}

#[test]
fn diff_hunk_shows_exactly_the_injected_lines() {
    let fx = patched_tree();
    cache_deb(&fx, "zstd", &package_files());
    let run = fx.run(&["diff"]);
    run.expect_code(1);
    let expected = format!(
        "--- a/amd/amdkfd/kfd_crat.c\t(clean: dpkg archive /var/cache/apt/archives/{DEB_NAME})\n\
         +++ b/amd/amdkfd/kfd_crat.c\t(in /{TREE})\n\
         @@ -23,6 +23,8 @@\n\
         \x20\t\t\t\tflags |= HSA_MEM_FLAGS_HOT_PLUGGABLE;\n\
         \x20\t\t\tif (mem->flags & CRAT_MEM_FLAGS_NON_VOLATILE)\n\
         \x20\t\t\t\tflags |= HSA_MEM_FLAGS_NON_VOLATILE;\n\
         +\t\t\tif (dev->gpu && dev->gpu->adev->pdev->device == 0x731F)\n\
         +\t\t\t\tflags |= HSA_MEM_FLAGS_HOT_PLUGGABLE;\n\
         \x20\n\
         \x20\t\t\tsize_in_bytes =\n\
         \x20\t\t\t\t((uint64_t)mem->length_high << 32) +\n"
    );
    assert_eq!(run.stdout(), expected);
    assert_eq!(run.stderr(), "");

    // The same file named by its absolute path, on this host or as the system sees it.
    let abs = fx.path(&sys(CRAT));
    assert_eq!(fx.run(&["diff", abs.to_str().unwrap()]).stdout(), expected);
    assert_eq!(
        fx.run(&["diff", &format!("/{TREE}/{CRAT}")]).stdout(),
        expected
    );
    // A clean file: no output, exit 0. A path in no tree: exit 2 naming it.
    let clean = fx.run(&["diff", "amd/amdkfd/Makefile"]);
    clean.expect_code(0);
    assert_eq!(clean.stdout(), "");
    let bad = fx.run(&["diff", "amd/amdkfd/nope.c"]);
    bad.expect_code(2);
    assert!(
        bad.stderr()
            .starts_with("kfd-audit: error: amd/amdkfd/nope.c: not a file of any amdgpu tree"),
        "{}",
        bad.stderr()
    );

    // The diff is a patch: reversed from the tree's directory it restores the file.
    let o = std::process::Command::new("patch")
        .args(["-p1", "-R", "-s"])
        .current_dir(fx.path(TREE))
        .stdin(std::fs::File::open(write_tmp(&fx, &run.output.stdout)).unwrap())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    assert_eq!(fx.read(&sys(CRAT)), CRAT_C.as_bytes());
    fx.run(&["diff"]).expect_code(0);

    // JSON names the source and carries the same text.
    fx.write(&sys(CRAT), patched());
    let j = fx.run(&["--format", "json", "diff"]).expect_code(1).json();
    assert_eq!(j["files"][0]["clean_source"], "deb-archive");
    assert_eq!(j["files"][0]["diff"], expected);
}

fn write_tmp(fx: &Fixture, data: &[u8]) -> PathBuf {
    fx.write("tmp/kfd.diff", data)
}

#[test]
fn missing_file_diff_and_colored_output() {
    let fx = patched_tree();
    cache_deb(&fx, "gzip", &package_files());
    std::fs::remove_file(fx.path(&sys("amd/amdkfd/Makefile"))).unwrap();
    let out = fx
        .run(&["diff", "amd/amdkfd/Makefile"])
        .expect_code(1)
        .stdout();
    assert_eq!(
        out,
        format!(
            "--- a/amd/amdkfd/Makefile\t(clean: dpkg archive /var/cache/apt/archives/{DEB_NAME})\n\
             +++ /dev/null\t(missing from /{TREE})\n\
             @@ -1 +0,0 @@\n\
             -amdkfd-y += kfd_crat.o\n"
        )
    );
    let colored = fx.run(&["--color", "always", "diff", CRAT]).stdout();
    assert!(
        colored.contains("\u{1b}[32m+\t\t\tif (dev->gpu"),
        "{colored:?}"
    );
}

#[test]
fn scan_diff_shows_hunks_under_the_file() {
    let fx = patched_tree();
    cache_deb(&fx, "xz", &package_files());
    let text = fx.run(&["scan", "--diff", "-v"]).expect_code(1).stdout();
    let expected = format!(
        "      clean copy: dpkg archive /var/cache/apt/archives/{DEB_NAME}\n\
         \x20        @@ -23,6 +23,8 @@\n\
         \x20         \t\t\t\tflags |= HSA_MEM_FLAGS_HOT_PLUGGABLE;\n\
         \x20         \t\t\tif (mem->flags & CRAT_MEM_FLAGS_NON_VOLATILE)\n\
         \x20         \t\t\t\tflags |= HSA_MEM_FLAGS_NON_VOLATILE;\n\
         \x20     >> +\t\t\tif (dev->gpu && dev->gpu->adev->pdev->device == 0x731F)\n\
         \x20     >> +\t\t\t\tflags |= HSA_MEM_FLAGS_HOT_PLUGGABLE;\n\
         \x20         \n\
         \x20         \t\t\tsize_in_bytes =\n\
         \x20         \t\t\t\t((uint64_t)mem->length_high << 32) +\n"
    );
    // The file's findings come first, then its clean copy and the hunks (with the
    // flagged lines marked).
    assert!(
        text.contains("  modified   amd/amdkfd/kfd_crat.c  [dpkg-md5sums]\n"),
        "{text}"
    );
    assert!(text.contains(&expected), "{text}");
    let j = fx.run(&["--format", "json", "scan", "--diff"]).json();
    let d = json_file(&j, CRAT).unwrap()["diff"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        d.contains("+\t\t\tif (dev->gpu && dev->gpu->adev->pdev->device == 0x731F)\n"),
        "{d}"
    );
    // Without --diff no hunks are shown, but the clean source is.
    let j = fx.run(&["--format", "json", "scan"]).json();
    assert!(json_file(&j, CRAT).unwrap().get("diff").is_none());
}

#[test]
fn module_backups_under_lib_modules() {
    let fx = Fixture::new();
    fx.amdgpu_tree();
    let k = "lib/modules/6.1.0-56-amd64";
    let intree = format!("{k}/kernel/drivers/gpu/drm/amd/amdgpu/amdgpu.ko.xz");
    fx.write(&intree, b"in-tree module\0");
    fx.write(&format!("{intree}.backup"), b"in-tree module\0");
    fx.write(
        "var/lib/dpkg/info/linux-image-6.1.0-56-amd64.md5sums",
        format!("{}  {intree}\n", md5_hex(b"in-tree module\0")),
    );
    // dkms moved the in-tree module aside and installed its own; a copy of the new one.
    let dkms = format!("{k}/updates/dkms/amdgpu.ko.xz");
    fx.write(&dkms, b"dkms module\0");
    fx.write(&format!("{dkms}.backup"), b"dkms module\0");
    fx.write(&format!("{k}/updates/dkms/amdttm.ko.xz.backup"), b"older\0");
    fx.write(&format!("{k}/kernel/net/other.ko.backup"), b"not amd\0");
    let j = fx.run(&["--format", "json", "scan"]).expect_code(0).json();
    assert_eq!(
        j["module_backups"],
        serde_json::json!([
            {"path": format!("/{intree}.backup"), "original": format!("/{intree}"),
             "verdict": "verified-clean", "reference": "dpkg-md5sums linux-image-6.1.0-56-amd64"},
            {"path": format!("/{dkms}.backup"), "original": format!("/{dkms}"),
             "verdict": "same-as-current"},
            {"path": format!("/{k}/updates/dkms/amdttm.ko.xz.backup"),
             "original": format!("/{k}/updates/dkms/amdttm.ko.xz"), "verdict": "unverified"},
        ])
    );
    assert_eq!(j["summary"]["module_backups"], 3);
    let text = fx.run(&["scan", "-v"]).stdout();
    assert!(text.contains(&format!(
        "module backups under /lib/modules\n  /{intree}.backup: verified-clean (copy of /{intree}; judged by dpkg-md5sums linux-image-6.1.0-56-amd64)\n"
    )), "{text}");
}

/// The library's view of the fixture's single tree, to call `CleanContent::get`.
struct LibTree {
    root: Root,
    tree: tree::Tree,
    refs: reference::TreeReferences,
}

impl LibTree {
    fn open(fx: &Fixture) -> LibTree {
        let root = Root::open(fx.root()).unwrap();
        let tree = tree::discover(&root).unwrap().remove(0);
        let refs = reference::load(&root, &tree, LoadOptions::default()).unwrap();
        LibTree { root, tree, refs }
    }

    fn get_full(&self, rel: &str) -> Option<(Vec<u8>, ReferenceKind, String, PathBuf)> {
        let content = CleanContent::for_tree(&self.root, &self.tree, &self.refs);
        let c = content.get(Path::new(rel)).unwrap()?;
        Some((c.bytes, c.source, c.origin, c.source_path))
    }

    fn get(&self, rel: &str) -> Option<(Vec<u8>, ReferenceKind)> {
        self.get_full(rel).map(|(b, k, _, _)| (b, k))
    }
}

/// The corpus's realistic backup scenarios (`backups.sh`), on the real 6.12 tree with
/// the incident's mutation: every backup gets the verdict its ground truth implies,
/// and only clean ones become the file's clean source.
#[test]
fn corpus_backup_scenarios_get_the_verdicts_of_their_ground_truth() {
    use crate::corpus::{corpus, manifest, mutations, CorpusRoot, PRIMARY};
    let Some(corpus) = corpus() else { return };
    let script = mutations("6.12").join("../../backups.sh");
    let m = manifest("6.12")
        .into_iter()
        .find(|m| m.id == "U01")
        .unwrap();
    let file = &m.files[0];
    for (scenario, earlier) in [
        ("orig", None),
        ("patched", None),
        ("mixed", None),
        ("stale-bak", Some("U03")),
        ("dir-copy", None),
    ] {
        let cr = CorpusRoot::new(&corpus, false);
        // backups.sh stops (set -e) unless the tree lies in a corpus root: mark the
        // private copy as one, with the corpus's clean md5sums it checks against.
        std::fs::write(cr.path(".kfd-corpus-root"), "").unwrap();
        let ok = std::process::Command::new("cp")
            .arg("-a")
            .arg(corpus.join("var/lib/kfd-corpus"))
            .arg(cr.path("var/lib/kfd-corpus"))
            .status()
            .unwrap()
            .success();
        assert!(ok);
        for f in &m.files {
            cr.unshare(&format!("{PRIMARY}/{f}"));
        }
        let tree = cr.path(PRIMARY);
        let mut cmd = std::process::Command::new("bash");
        cmd.arg(&script)
            .args(["setup", tree.to_str().unwrap(), "U01", scenario]);
        if let Some(e) = earlier {
            cmd.arg(e);
        }
        let o = cmd.output().unwrap();
        assert!(
            o.status.success(),
            "{scenario}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        // Ground truth: path, kind, content (clean | patched | stale).
        let truth: Vec<(String, String)> = String::from_utf8_lossy(&o.stdout)
            .lines()
            .skip(1)
            .map(|l| l.split('\t').map(str::to_string).collect::<Vec<_>>())
            .filter(|c| c[1] != "live")
            .map(|c| {
                let rel = c[0]
                    .strip_prefix(&format!("{}/", tree.display()))
                    .unwrap()
                    .to_string();
                (rel, c[2].clone())
            })
            .collect();
        // amd/amdkfd.bak/ lies outside the amd/amdkfd scope: scan amd for it.
        let scope = if scenario == "dir-copy" {
            "amd"
        } else {
            "amdkfd"
        };
        let j = cr
            .run(&[
                "--format",
                "json",
                "scan",
                "--tree",
                tree.to_str().unwrap(),
                "--scope",
                scope,
            ])
            .expect_code(1)
            .json();
        let entry = json_file(&j, file).unwrap();
        assert_eq!(entry["status"], "modified", "{scenario}");
        let mut clean_expected = false;
        for (rel, content) in &truth {
            // A directory copy: the copy of the changed file stands for it.
            let rel = match rel.strip_suffix('/') {
                Some(dir) => format!(
                    "{dir}/{}",
                    Path::new(file).file_name().unwrap().to_str().unwrap()
                ),
                None => rel.clone(),
            };
            let want = match content.as_str() {
                "clean" => "verified-clean",
                "patched" => "same-as-current",
                // The stale copy carries the earlier attempt (U03), itself unsafe.
                "stale" => "unsafe",
                _ => "unverified",
            };
            clean_expected |= want == "verified-clean";
            let got = entry["backups"]
                .as_array()
                .unwrap()
                .iter()
                .find(|b| b["path"] == rel.as_str())
                .unwrap_or_else(|| panic!("{scenario}: {rel} not listed: {entry}"));
            assert_eq!(got["verdict"], want, "{scenario} {rel}");
        }
        assert_eq!(
            entry["clean"]["reference"] == "backup",
            clean_expected,
            "{scenario}: {entry}"
        );
        // No backup shows up as an added file.
        assert_eq!(j["summary"]["added"], 0, "{scenario}");
        // The diff shows the mutation when a clean source exists.
        let d = cr.run(&["diff", "--tree", tree.to_str().unwrap(), file]);
        d.expect_code(1);
        assert_eq!(d.stdout().is_empty(), !clean_expected, "{scenario}");
    }
}
