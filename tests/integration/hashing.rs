//! Hashing a whole tree: the multi-buffer MD5 path (sixteen files per core) must
//! judge every file exactly as one MD5 stream per file does, and the progress line
//! shows on a terminal's stderr only, never in pipes or with `-q`.

use crate::fixture::{json_file, md5_hex, Fixture, Run, TREE};
use rexpect::reader::Options;
use rexpect::session::spawn_with_options;
use std::process::Command;

/// Bytes that differ from file to file (so that no two files share a digest).
fn content(i: usize, len: usize) -> Vec<u8> {
    (0..len)
        .map(|k| (k.wrapping_mul(7) ^ i.wrapping_mul(131) ^ (k >> 9)) as u8)
        .collect()
}

/// A tree of `n` generated files under amd/amdgpu/gen (sizes from 0 to a few
/// hundred kilobytes, around block and chunk boundaries), registered in dpkg's
/// md5sums next to the standard tree.
fn big_tree(fx: &Fixture, n: usize) -> Vec<String> {
    fx.amdgpu_tree();
    let sums = fx.path("/var/lib/dpkg/info/amdgpu-dkms.md5sums");
    let mut text = std::fs::read_to_string(&sums).unwrap();
    let mut rels = Vec::new();
    for i in 0..n {
        let len = match i % 5 {
            0 => i,
            1 => 64 * i + 55,
            2 => 65_536 - 1 + i % 3,
            3 => 1000 * i,
            _ => 300_000 + i,
        };
        let rel = format!("amd/amdgpu/gen/d{}/f{i:03}.h", i % 7);
        let data = content(i, len);
        fx.write(&format!("{TREE}/{rel}"), &data);
        text.push_str(&format!("{}  {TREE}/{rel}\n", md5_hex(&data)));
        rels.push(rel);
    }
    std::fs::write(&sums, text).unwrap();
    rels
}

fn scan(fx: &Fixture, env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kfd-audit"));
    cmd.arg("--root")
        .arg(fx.root())
        .args(["scan", "--format", "json", "--all-files"])
        .env_remove("KFD_AUDIT_MD5_LANES");
    for (k, v) in env {
        cmd.env(k, v);
    }
    Run::of(cmd)
}

#[test]
fn sixteen_at_a_time_judges_like_one_stream_per_file() {
    let fx = Fixture::new();
    let rels = big_tree(&fx, 90);
    // Changed by a byte, truncated, emptied, deleted; plus an unlisted file and a
    // symlink, so that every status the hashing decides is there.
    let at = |rel: &str| fx.path(&format!("{TREE}/{rel}"));
    let mut b = std::fs::read(at(&rels[3])).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 1;
    std::fs::write(at(&rels[3]), b).unwrap();
    let b = std::fs::read(at(&rels[4])).unwrap();
    std::fs::write(at(&rels[4]), &b[..b.len() - 1]).unwrap();
    std::fs::write(at(&rels[8]), b"").unwrap();
    std::fs::remove_file(at(&rels[9])).unwrap();
    fx.write(&format!("{TREE}/amd/amdgpu/gen/extra.c"), "int x;\n");
    std::os::unix::fs::symlink("f000.h", at("amd/amdgpu/gen/d0/link.h")).unwrap();

    let lanes = scan(&fx, &[]);
    let single = scan(&fx, &[("KFD_AUDIT_MD5_LANES", "off")]);
    assert_eq!(lanes.code(), 1, "{}", lanes.stderr());
    let (a, b) = (lanes.json(), single.json());
    assert_eq!(a, b, "the two hashing paths disagree");
    let status = |rel: &str| json_file(&a, rel).unwrap()["status"].clone();
    assert_eq!(status(&rels[3]), "modified");
    assert_eq!(status(&rels[4]), "modified");
    assert_eq!(status(&rels[8]), "modified");
    assert_eq!(status(&rels[9]), "missing");
    assert_eq!(status("amd/amdgpu/gen/extra.c"), "added");
    assert_eq!(status("amd/amdgpu/gen/d0/link.h"), "symlink");
    let ok = a["trees"][0]["files"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["status"] == "ok")
        .count();
    // 90 generated + 5 standard files, 4 changed or gone.
    assert_eq!(ok, 90 + 5 - 4);
    // Any wrong digest shows as modified: check the digests of changed files too.
    for rel in [&rels[3], &rels[4], &rels[8]] {
        let now = std::fs::read(at(rel)).unwrap();
        assert_eq!(
            json_file(&a, rel).unwrap()["actual"],
            md5_hex(&now),
            "{rel}"
        );
    }
}

fn spawn_scan(fx: &Fixture, extra: &[&str]) -> rexpect::session::PtySession {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kfd-audit"));
    cmd.arg("--root")
        .arg(fx.root())
        .args(["--color", "never", "scan"])
        .args(extra)
        .env("TERM", "linux")
        .env("KFD_AUDIT_PROGRESS_AFTER_MS", "0");
    spawn_with_options(cmd, Options::new().timeout_ms(Some(30_000)))
        .expect("spawn kfd-audit in a pty")
}

#[test]
fn progress_line_on_a_terminal() {
    let fx = Fixture::new();
    big_tree(&fx, 40);
    let mut p = spawn_scan(&fx, &[]);
    // The line is redrawn until the end; its last state counts every listed file and
    // every byte of them.
    let (_, line) = p
        .exp_regex(r"kfd-audit: hashing 45/45 files, \d+ MB of \d+ MB, \d+ MB/s")
        .unwrap();
    let mb: Vec<&str> = line
        .split(' ')
        .filter(|w| w.parse::<u64>().is_ok())
        .collect();
    assert_eq!(mb.len(), 3, "{line}");
    assert_eq!(mb[0], mb[1], "{line}");
    assert_eq!(mb[0], "3", "{line}");
    // Erased before the report, which follows on a clean line.
    let rest = p.exp_eof().unwrap();
    assert!(
        rest.contains("kfd-audit scan clean: 45 files checked"),
        "{rest}"
    );
}

#[test]
fn no_progress_with_quiet() {
    let fx = Fixture::new();
    big_tree(&fx, 40);
    let mut p = spawn_scan(&fx, &["-q"]);
    let all = p.exp_eof().unwrap();
    assert!(
        all.contains("kfd-audit scan clean: 45 files checked"),
        "{all}"
    );
    assert!(
        !all.contains("hashing") && !all.contains("listing"),
        "{all}"
    );
}

#[test]
fn no_progress_in_a_pipe() {
    let fx = Fixture::new();
    big_tree(&fx, 40);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kfd-audit"));
    cmd.arg("--root")
        .arg(fx.root())
        .arg("scan")
        .env("KFD_AUDIT_PROGRESS_AFTER_MS", "0");
    let run = Run::of(cmd);
    assert_eq!(run.code(), 0, "{}", run.stderr());
    assert_eq!(run.stderr(), "");
    assert!(run
        .stdout()
        .starts_with("kfd-audit scan clean: 45 files checked"));
}
