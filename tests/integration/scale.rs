//! At the scale of a ROCm machine: package files hashed on the scan's engine under
//! the same `--max-file-size`, on the same progress line; and the benchmark script,
//! whose quick mode must keep working (no time is asserted anywhere).

use crate::fixture::{md5_hex, Fixture, Run};
use rexpect::reader::Options;
use rexpect::session::spawn_with_options;
use std::process::Command;

/// A ROCm package `rocm-core` with `n` files of different sizes under /opt/rocm/lib,
/// registered in dpkg's md5sums and file list. Returns the system paths, largest last.
fn rocm_package(fx: &Fixture, n: usize) -> Vec<String> {
    let mut sums = String::new();
    let mut list = String::from("/.\n/opt\n/opt/rocm\n/opt/rocm/lib\n");
    let mut paths = Vec::new();
    for i in 0..n {
        let path = format!("/opt/rocm/lib/librocm-part{i:02}.so.6");
        let data: Vec<u8> = (0..(1000 * (i + 1) + 7 * i))
            .map(|k| (k * 31 + i) as u8)
            .collect();
        fx.write(&path, &data);
        sums.push_str(&format!("{}  {}\n", md5_hex(&data), &path[1..]));
        list.push_str(&format!("{path}\n"));
        paths.push(path);
    }
    fx.write("/var/lib/dpkg/info/rocm-core.md5sums", sums);
    fx.write("/var/lib/dpkg/info/rocm-core.list", list);
    paths
}

fn rocm_scan(fx: &Fixture, extra: &[&str]) -> Run {
    let mut args = vec!["--format", "json", "scan", "--sections", "rocm"];
    args.extend_from_slice(extra);
    fx.run(&args)
}

#[test]
fn rocm_files_over_max_file_size_are_named_not_hashed() {
    let fx = Fixture::new();
    let paths = rocm_package(&fx, 6);
    // Without the flag every package file is hashed, however large.
    let all = rocm_scan(&fx, &[]);
    assert_eq!(all.code(), 0, "{}", all.stderr());
    let j = all.json();
    assert_eq!(j["sections"]["rocm"]["packages"][0]["ok"], 6, "{j}");

    // The largest file is 6,035 bytes, the next 5,028: a limit between them leaves
    // exactly the largest unhashed, and says why and what to do.
    let limited = rocm_scan(&fx, &["--max-file-size", "5500"]);
    let j = limited.json();
    assert_eq!(j["sections"]["rocm"]["packages"][0]["ok"], 5, "{j}");
    let notes = j["sections"]["rocm"]["notes"].to_string();
    let largest = paths.last().unwrap();
    assert!(notes.contains(largest.as_str()), "{notes}");
    assert!(
        notes.contains("6035 bytes, more than --max-file-size (5500 bytes); not hashed"),
        "{notes}"
    );
    assert!(notes.contains("pass a larger --max-file-size"), "{notes}");
    for p in &paths[..5] {
        assert!(!notes.contains(p.as_str()), "{p} should be hashed: {notes}");
    }
}

#[test]
fn rocm_files_on_the_progress_line() {
    let fx = Fixture::new();
    rocm_package(&fx, 20);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kfd-audit"));
    cmd.arg("--root")
        .arg(fx.root())
        .args(["--color", "never", "scan", "--sections", "rocm"])
        .env("TERM", "linux")
        .env("KFD_AUDIT_PROGRESS_AFTER_MS", "0");
    let mut p = spawn_with_options(cmd, Options::new().timeout_ms(Some(30_000)))
        .expect("spawn kfd-audit in a pty");
    // The last state of the line counts every package file.
    p.exp_regex(r"kfd-audit: hashing 20/20 files, \d+ MB of \d+ MB")
        .unwrap();
    let rest = p.exp_eof().unwrap();
    assert!(rest.contains("kfd-audit scan clean"), "{rest}");
}

/// `bench/run.sh --quick` runs every scene and prints a table for each (the rocm
/// scene may say it is skipped, with why, where debsums is not installed).
/// The rocm scene audits the host's own packages, and kfd-audit remembers their
/// digests in the host's /var/lib/kfd-audit/digest-cache: put back as it was.
struct HostDigestCache {
    dir_existed: bool,
    before: Option<Vec<u8>>,
}

const HOST_STATE: &str = "/var/lib/kfd-audit";
const HOST_CACHE: &str = "/var/lib/kfd-audit/digest-cache";

impl HostDigestCache {
    fn keep() -> HostDigestCache {
        HostDigestCache {
            dir_existed: std::path::Path::new(HOST_STATE).exists(),
            before: std::fs::read(HOST_CACHE).ok(),
        }
    }
}

impl Drop for HostDigestCache {
    fn drop(&mut self) {
        match &self.before {
            Some(bytes) => {
                let _ = std::fs::write(HOST_CACHE, bytes);
            }
            None => {
                let _ = std::fs::remove_file(HOST_CACHE);
            }
        }
        if !self.dir_existed {
            // Only when empty: anything else in it is not this test's.
            let _ = std::fs::remove_dir(HOST_STATE);
        }
    }
}

#[test]
fn the_quick_benchmark_runs() {
    let _turn = crate::dkms_real::REAL_DKMS
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let _cache = HostDigestCache::keep();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/bench/run.sh");
    let mut cmd = Command::new("bash");
    cmd.arg(script)
        .arg("--quick")
        .env("KFD_AUDIT_BIN", env!("CARGO_BIN_EXE_kfd-audit"));
    let run = Run::of(cmd);
    assert_eq!(run.code(), 0, "{}\n{}", run.stdout(), run.stderr());
    let out = run.stdout();
    assert!(out.contains("quick scenes"), "{out}");
    assert!(
        out.contains("\ntree: usr/src/amdgpu-9.9.9-big (301 files"),
        "{out}"
    );
    assert!(
        out.contains("\nbig: a generated tree of 2000 files with dpkg md5sums"),
        "{out}"
    );
    assert!(
        out.contains("\nrocm: dpkg coreutils (") || out.contains("\nrocm: skipped: "),
        "{out}"
    );
    // Every table has kfd-audit's row (its ratio to itself is 1.00) and a peer's.
    let tables: Vec<&str> = out.split("\n\n").skip(1).collect();
    assert!(tables.len() >= 2, "{out}");
    for t in tables.iter().filter(|t| !t.contains("skipped")) {
        let rows: Vec<&str> = t.lines().skip(2).collect();
        assert!(rows.len() >= 2, "{t}");
        assert!(
            rows[0].starts_with("  kfd-audit ") && rows[0].ends_with(" 1.00"),
            "{t}"
        );
        for r in &rows {
            let ratio: f64 = r.split_whitespace().last().unwrap().parse().unwrap();
            assert!(ratio > 0.0, "{t}");
        }
    }
}
