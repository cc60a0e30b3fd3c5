//! Hostile trees and broken inputs, through the real binary: kfd-audit runs as root
//! over directories anyone may have changed, so no input may make it hang, exhaust
//! memory, read through a link or write outside the tree.
//!
//! Every run here goes through [`bounded`]: a watchdog kills a run that hangs (the
//! test then fails saying so) and the run gets a hard memory limit, so "bounded
//! memory" is checked, not assumed. Times are never asserted.

use crate::fixture::{json_file, md5_hex, Fixture, Run, CRAT_C, DKMS_CONF, TREE, VERSION};
use crate::restore::{listing, Scenario};
use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A run still going after this long is taken to hang.
const WATCHDOG: Duration = Duration::from_secs(300);

/// The memory (`RLIMIT_DATA`: heap and private mappings) every run gets. A run that
/// reads a huge file into memory, or decompresses a bomb into it, fails its
/// allocation and aborts, and its test fails. (Peak RSS cannot be measured from
/// here: Linux carries the spawning test process's own peak over the exec.)
const MEMORY_LIMIT: u64 = 512 << 20;

fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

/// The real binary with `--root`, stdin closed, no failpoint.
fn command(fx: &Fixture, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kfd-audit"));
    cmd.arg("--root")
        .arg(fx.root())
        .args(args)
        .env_remove("KFD_AUDIT_FAILPOINT")
        .env_remove("NO_COLOR");
    cmd
}

/// Runs a command to its end under a watchdog and a memory limit.
fn bounded(cmd: Command) -> Run {
    bounded_with(cmd, |_| {})
}

/// [`bounded`], calling `during` with the process id once it has started.
fn bounded_with(mut cmd: Command, during: impl FnOnce(libc::pid_t)) -> Run {
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: MEMORY_LIMIT,
                rlim_max: MEMORY_LIMIT,
            };
            if libc::setrlimit(libc::RLIMIT_DATA, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("start kfd-audit");
    let pid = child.id() as libc::pid_t;
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let done = Arc::new(AtomicBool::new(false));
    let watch = {
        let done = done.clone();
        std::thread::spawn(move || {
            let step = Duration::from_millis(100);
            let mut waited = Duration::ZERO;
            while waited < WATCHDOG {
                if done.load(Ordering::SeqCst) {
                    return false;
                }
                std::thread::sleep(step);
                waited += step;
            }
            unsafe { libc::kill(pid, libc::SIGKILL) };
            true
        })
    };
    during(pid);
    let status = child.wait().expect("wait for kfd-audit");
    done.store(true, Ordering::SeqCst);
    let hung = watch.join().unwrap();
    let output = std::process::Output {
        status,
        stdout: t_out.join().unwrap(),
        stderr: t_err.join().unwrap(),
    };
    let run = Run { output };
    assert!(
        !hung,
        "kfd-audit was still running after {WATCHDOG:?}: it hangs\nstdout:\n{}\nstderr:\n{}",
        run.stdout(),
        run.stderr()
    );
    assert!(
        !run.stderr().contains("memory allocation of"),
        "kfd-audit ran out of its {MEMORY_LIMIT} bytes of memory: {}",
        run.stderr()
    );
    run
}

fn run_bounded(fx: &Fixture, args: &[&str]) -> Run {
    bounded(command(fx, args))
}

fn tree_path(fx: &Fixture, rel: &str) -> PathBuf {
    fx.path(&format!("{TREE}/{rel}"))
}

fn mkfifo(p: &Path) {
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0, "mkfifo");
}

/// A sparse file of `size` bytes (no data blocks are written).
fn sparse(p: &Path, size: u64) {
    let _ = std::fs::remove_file(p);
    let f = std::fs::File::create(p).unwrap();
    f.set_len(size).unwrap();
}

fn tree_problems(tree: &serde_json::Value) -> String {
    tree["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

fn problems(report: &serde_json::Value) -> String {
    report["trees"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| t["problems"].as_array().unwrap().iter())
        .map(|p| p.as_str().unwrap().to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

fn tree_report<'a>(report: &'a serde_json::Value, path: &str) -> &'a serde_json::Value {
    report["trees"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["path"] == path)
        .unwrap_or_else(|| panic!("no tree {path} in {report:#}"))
}

const GIB: u64 = 1 << 30;

#[test]
fn dkms_conf_that_is_a_fifo_a_link_to_dev_zero_or_huge_is_not_read() {
    let fx = Fixture::new();
    fx.amdgpu_tree();
    let fifo = fx.path("usr/src/amdgpu-1.0-fifo");
    std::fs::create_dir_all(&fifo).unwrap();
    mkfifo(&fifo.join("dkms.conf"));
    let zero = fx.path("usr/src/amdgpu-1.0-zero");
    std::fs::create_dir_all(&zero).unwrap();
    std::os::unix::fs::symlink("/dev/zero", zero.join("dkms.conf")).unwrap();
    let big = fx.path("usr/src/amdgpu-1.0-big");
    std::fs::create_dir_all(&big).unwrap();
    sparse(&big.join("dkms.conf"), 10 * GIB);

    let run = run_bounded(&fx, &["--format", "json", "scan"]);
    run.expect_code(1);
    let r = run.json();
    let p = tree_problems(tree_report(&r, "/usr/src/amdgpu-1.0-fifo"));
    assert!(
        p.contains("dkms.conf not read") && p.contains("not a regular file"),
        "{p}"
    );
    let p = tree_problems(tree_report(&r, "/usr/src/amdgpu-1.0-zero"));
    assert!(
        p.contains("dkms.conf not read") && p.contains("symbolic link; not followed"),
        "{p}"
    );
    let p = tree_problems(tree_report(&r, "/usr/src/amdgpu-1.0-big"));
    assert!(
        p.contains("dkms.conf not read") && p.contains("10737418240 bytes"),
        "{p}"
    );
    // The version then comes from the directory name.
    assert_eq!(
        tree_report(&r, "/usr/src/amdgpu-1.0-big")["version"],
        "1.0-big"
    );
}

/// The standard tree with one more md5sums line.
fn with_md5sums_line(line: &[u8]) -> Fixture {
    let fx = Fixture::new();
    fx.amdgpu_tree();
    let p = fx.path("var/lib/dpkg/info/amdgpu-dkms.md5sums");
    let mut bytes = std::fs::read(&p).unwrap();
    bytes.extend_from_slice(line);
    bytes.push(b'\n');
    std::fs::write(p, bytes).unwrap();
    fx
}

#[test]
fn reference_entries_that_escape_or_hold_nul_are_rejected_with_file_and_line() {
    let md5 = md5_hex(b"root:x:0:0:root:/root:/bin/bash\n");
    let escapes: Vec<Vec<u8>> = vec![
        format!("{md5}  {TREE}/../../../etc/passwd").into_bytes(),
        format!("{md5}  /etc/passwd").into_bytes(),
        format!("{md5}  {TREE}/amd/../../../../etc/passwd").into_bytes(),
        [format!("{md5}  {TREE}/amd/x").as_bytes(), b"\0/etc/passwd"].concat(),
    ];
    for line in &escapes {
        let fx = with_md5sums_line(line);
        let run = run_bounded(&fx, &["scan"]);
        run.expect_code(2);
        let err = run.stderr();
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.contains("var/lib/dpkg/info/amdgpu-dkms.md5sums:6: unsafe or empty path"),
            "{err}"
        );
        assert!(err.contains("--lenient"), "{err}");
        // Leniently, the line is skipped and named; the rest of the tree is judged.
        let run = run_bounded(&fx, &["--format", "json", "scan", "--lenient"]);
        let r = run.json();
        let p = problems(&r);
        assert!(
            p.contains("amdgpu-dkms.md5sums:6: skipped (unsafe or empty path"),
            "{p}"
        );
        assert_eq!(r["summary"]["ok"], 5, "{r:#}");
        assert_eq!(r["summary"]["missing"], 0, "{r:#}");
    }

    // The baseline manifest: same rules, its own file and line in the message.
    for name in ["../../../etc/passwd", "/etc/passwd"] {
        let fx = Fixture::new();
        fx.amdgpu_tree();
        let sha = "0".repeat(64);
        fx.write(
            &format!(
                "var/lib/kfd-audit/baseline/{}/manifest.sha256",
                Path::new(TREE).file_name().unwrap().to_str().unwrap()
            ),
            format!("{sha}  {TREE}/Makefile\n{sha}  {name}\n"),
        );
        let run = run_bounded(&fx, &["scan"]);
        run.expect_code(2);
        let err = run.stderr();
        assert!(
            err.contains("manifest.sha256:2: unsafe or empty path"),
            "{err}"
        );
    }
}

#[test]
fn reference_files_of_100_mb_of_garbage_give_one_line_and_bounded_memory() {
    // Deterministic garbage: bytes of a xorshift generator, with newlines as they fall.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let garbage: Vec<u8> = (0..100 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    let fx = Fixture::new();
    fx.amdgpu_tree();
    let sums = fx.path("var/lib/dpkg/info/amdgpu-dkms.md5sums");
    let mut bytes = std::fs::read(&sums).unwrap();
    bytes.extend_from_slice(&garbage);
    std::fs::write(&sums, &bytes).unwrap();

    let run = run_bounded(&fx, &["scan"]);
    run.expect_code(2);
    let err = run.stderr();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("amdgpu-dkms.md5sums:6: "), "{err}");
    assert!(err.len() < 1024, "an error line of {} bytes", err.len());

    let run = run_bounded(&fx, &["--format", "json", "scan", "--lenient"]);
    let r = run.json();
    let skipped: Vec<_> = r["trees"][0]["problems"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p.as_str().unwrap().contains("skipped"))
        .collect();
    assert_eq!(skipped.len(), 21, "{skipped:#?}");
    assert!(
        skipped[20]
            .as_str()
            .unwrap()
            .contains("more malformed line(s) from here on, not listed one by one"),
        "{skipped:#?}"
    );
    assert!(
        run.stdout().len() < 64 * 1024,
        "{} bytes of report",
        run.stdout().len()
    );
    assert_eq!(r["summary"]["ok"], 5);

    // The same garbage as a baseline manifest.
    let fx = Fixture::new();
    fx.amdgpu_tree();
    let dir = Path::new(TREE)
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    fx.write(
        &format!("var/lib/kfd-audit/baseline/{dir}/manifest.sha256"),
        &garbage,
    );
    let run = run_bounded(&fx, &["scan"]);
    run.expect_code(2);
    let err = run.stderr();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("manifest.sha256:1: "), "{err}");
}

#[test]
fn a_huge_sparse_file_is_not_hashed_past_the_limit_nor_read_into_memory() {
    let fx = Fixture::new();
    fx.amdgpu_tree();
    // Listed by dpkg (with the md5 of the real file), unlisted, and a huge "backup".
    sparse(&tree_path(&fx, "amd/amdkfd/kfd_crat.c"), 10 * GIB);
    sparse(&tree_path(&fx, "amd/amdkfd/huge.bin"), 10 * GIB);
    sparse(&tree_path(&fx, "Makefile.bak"), 10 * GIB);

    let run = run_bounded(&fx, &["--format", "json", "scan"]);
    run.expect_code(1);
    let r = run.json();
    let f = json_file(&r, "amd/amdkfd/kfd_crat.c").unwrap();
    assert_eq!(f["status"], "unreadable", "{f:#}");
    let detail = f["detail"].as_str().unwrap();
    assert!(
        detail.starts_with(
            "10737418240 bytes, more than --max-file-size (1073741824 bytes); not hashed"
        ),
        "{detail}"
    );
    let huge = json_file(&r, "amd/amdkfd/huge.bin").unwrap();
    assert_eq!(huge["status"], "added");
    let mk = json_file(&r, "Makefile").unwrap();
    let bak = &mk["backups"][0];
    assert_eq!(bak["path"], "Makefile.bak");
    assert_eq!(bak["verdict"], "unverified");
    assert!(
        bak["detail"]
            .as_str()
            .unwrap()
            .contains("10737418240 bytes, more than"),
        "{bak:#}"
    );

    // Restore refuses the file it could not judge and touches nothing.
    fx.write(&format!("{TREE}/amd/amdkfd/kfd_crat.c.orig"), CRAT_C);
    let run = run_bounded(&fx, &["restore", "--yes"]);
    run.expect_code(1);
    assert!(
        run.stdout()
            .contains("kfd_crat.c: unreadable (10737418240 bytes"),
        "{}",
        run.stdout()
    );
    let len = std::fs::metadata(tree_path(&fx, "amd/amdkfd/kfd_crat.c"))
        .unwrap()
        .len();
    assert_eq!(len, 10 * GIB);
    assert!(!fx.path("var/lib/kfd-audit/quarantine").exists());

    // With a higher limit a listed file is hashed, in bounded memory, and found
    // modified; restore still refuses to read it whole into memory.
    sparse(&tree_path(&fx, "amd/amdkfd/kfd_crat.c"), 2 * GIB);
    let run = run_bounded(&fx, &["--format", "json", "scan", "--max-file-size", "3G"]);
    run.expect_code(1);
    let r = run.json();
    let f = json_file(&r, "amd/amdkfd/kfd_crat.c").unwrap();
    assert_eq!(f["status"], "modified", "{f:#}");
    assert_eq!(f["actual"].as_str().unwrap().len(), 32, "{f:#}");
    assert_ne!(f["actual"], f["expected"], "{f:#}");
    let run = run_bounded(
        &fx,
        &[
            "--format",
            "json",
            "restore",
            "--yes",
            "--max-file-size",
            "3G",
        ],
    );
    run.expect_code(1);
    let r = run.json();
    let reason = r["result"]["not_restored"][0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("2147483648 bytes, more than a source file may have"),
        "{r:#}"
    );
    assert_eq!(
        std::fs::metadata(tree_path(&fx, "amd/amdkfd/kfd_crat.c"))
            .unwrap()
            .len(),
        2 * GIB
    );
}

#[test]
fn fifos_sockets_and_device_nodes_are_reported_not_read() {
    let fx = Fixture::new();
    fx.amdgpu_tree();
    let mk = tree_path(&fx, "amd/amdkfd/Makefile");
    std::fs::remove_file(&mk).unwrap();
    mkfifo(&mk);
    // A FIFO named like a backup is not a backup: it is not opened.
    mkfifo(&tree_path(&fx, "Makefile.orig"));
    let _sock = std::os::unix::net::UnixListener::bind(tree_path(&fx, "amd/kfd.sock")).unwrap();
    let drv = tree_path(&fx, "amd/amdgpu/amdgpu_drv.c");
    let device = is_root() && {
        std::fs::remove_file(&drv).unwrap();
        let c = std::ffi::CString::new(drv.as_os_str().as_bytes()).unwrap();
        // The same device as /dev/zero: endless if it were ever read.
        let rc = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o644, libc::makedev(1, 5)) };
        if rc != 0 {
            std::fs::write(&drv, "// amdgpu driver entry\nint amdgpu_x;\n").unwrap();
        }
        rc == 0
    };

    let run = run_bounded(&fx, &["--format", "json", "scan"]);
    run.expect_code(1);
    let r = run.json();
    let detail = |p: &str| {
        let f = json_file(&r, p).unwrap_or_else(|| panic!("{p} not in {r:#}"));
        assert_eq!(f["status"], "unreadable", "{f:#}");
        f["detail"].as_str().unwrap().to_string()
    };
    assert_eq!(detail("amd/amdkfd/Makefile"), "a FIFO; not read");
    assert_eq!(detail("Makefile.orig"), "a FIFO; not read");
    assert_eq!(detail("amd/kfd.sock"), "a socket; not read");
    if device {
        assert_eq!(detail("amd/amdgpu/amdgpu_drv.c"), "a device node; not read");
    }

    // Restore refuses them and leaves them as they are.
    let run = run_bounded(&fx, &["restore", "--yes"]);
    run.expect_code(1);
    let out = run.stdout();
    assert!(
        out.contains("amd/amdkfd/Makefile: unreadable (a FIFO; not read)"),
        "{out}"
    );
    use std::os::unix::fs::FileTypeExt;
    assert!(std::fs::symlink_metadata(&mk)
        .unwrap()
        .file_type()
        .is_fifo());
    if device {
        assert!(
            out.contains("amd/amdgpu/amdgpu_drv.c: unreadable (a device node"),
            "{out}"
        );
        assert!(std::fs::symlink_metadata(&drv)
            .unwrap()
            .file_type()
            .is_char_device());
    }
    let run = run_bounded(&fx, &["diff", "amd/amdkfd/Makefile"]);
    assert!(
        run.stderr().contains("unreadable: not diffed"),
        "{}",
        run.stderr()
    );
}

/// Unmounts (lazily) when dropped, also when the test fails.
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_bind_mount_loop_is_reported_once_and_not_walked() {
    if !is_root() {
        eprintln!("skipped: mount --bind needs root");
        return;
    }
    let fx = Fixture::new();
    fx.amdgpu_tree();
    let tree = fx.path(TREE);
    let sub = tree.join("amd/amdkfd/loop");
    std::fs::create_dir_all(&sub).unwrap();
    let mounted = Command::new("mount")
        .arg("--bind")
        .arg(&tree)
        .arg(&sub)
        .output()
        .unwrap();
    if !mounted.status.success() {
        eprintln!(
            "skipped: mount --bind is not permitted here: {}",
            String::from_utf8_lossy(&mounted.stderr)
        );
        return;
    }
    let _unmount = Unmount(sub.clone());
    // The tree is now inside itself: amd/amdkfd/loop/amd/amdkfd/loop/...
    assert!(sub.join("amd/amdkfd/kfd_crat.c").exists());

    let run = run_bounded(&fx, &["--format", "json", "scan", "--all-files"]);
    run.expect_code(1);
    let r = run.json();
    let f = json_file(&r, "amd/amdkfd/loop").unwrap_or_else(|| panic!("{r:#}"));
    assert_eq!(f["status"], "unreadable");
    assert_eq!(
        f["detail"],
        "a directory loop: the same directory as the tree's top (a bind mount?); not walked again"
    );
    let paths: Vec<&str> = r["trees"][0]["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert!(
        paths.iter().all(|p| !p.starts_with("amd/amdkfd/loop/")),
        "{paths:#?}"
    );
    assert_eq!(r["summary"]["files"], 6, "{paths:#?}");
    assert_eq!(r["summary"]["ok"], 5);

    // A restore plan walks the same way: nothing under the loop is planned or kept twice.
    let run = run_bounded(&fx, &["--format", "json", "restore", "--dry-run"]);
    run.expect_code(0);
    assert_eq!(
        run.json()["trees"][0]["kept"],
        serde_json::json!(["amd/amdkfd/loop"])
    );
}

#[test]
fn a_hundred_thousand_small_files_scan_in_bounded_memory() {
    let fx = Fixture::new();
    fx.amdgpu_tree();
    let sums_path = fx.path("var/lib/dpkg/info/amdgpu-dkms.md5sums");
    let mut sums = std::fs::read_to_string(&sums_path).unwrap();
    for d in 0..100 {
        let dir = tree_path(&fx, &format!("amd/gen/d{d}"));
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..1000 {
            let content = format!("int f{d}_{i};\n");
            std::fs::write(dir.join(format!("f{i}.c")), &content).unwrap();
            sums.push_str(&format!(
                "{}  {TREE}/amd/gen/d{d}/f{i}.c\n",
                md5_hex(content.as_bytes())
            ));
        }
    }
    std::fs::write(&sums_path, sums).unwrap();
    std::fs::write(tree_path(&fx, "amd/gen/d7/f7.c"), "int patched;\n").unwrap();
    std::fs::write(tree_path(&fx, "amd/gen/d7/f7.c.orig"), "int f7_7;\n").unwrap();

    let run = run_bounded(&fx, &["--format", "json", "scan"]);
    run.expect_code(1);
    let r = run.json();
    assert_eq!(r["summary"]["files"], 100_005);
    assert_eq!(r["summary"]["ok"], 100_004);
    assert_eq!(r["summary"]["modified"], 1);
    assert_eq!(r["summary"]["backups"], 1);
    assert_eq!(r["trees"][0]["files"].as_array().unwrap().len(), 1);

    let run = run_bounded(&fx, &["--format", "json", "restore", "--yes"]);
    run.expect_code(0);
    let r = run.json();
    assert_eq!(r["summary"]["restore"], 1);
    assert_eq!(
        std::fs::read(tree_path(&fx, "amd/gen/d7/f7.c")).unwrap(),
        b"int f7_7;\n"
    );
}

#[test]
fn a_ten_megabyte_line_is_diffed_and_quoted_in_bounded_memory() {
    let fx = Fixture::new();
    fx.amdgpu_tree();
    let long = "x".repeat(10 << 20);
    fx.write(&format!("{TREE}/amd/amdkfd/kfd_crat.c.orig"), CRAT_C);
    fx.write(
        &format!("{TREE}/amd/amdkfd/kfd_crat.c"),
        format!("{CRAT_C}// {long}\n"),
    );
    let run = run_bounded(&fx, &["--format", "json", "scan", "--diff"]);
    run.expect_code(1);
    let r = run.json();
    let diff = json_file(&r, "amd/amdkfd/kfd_crat.c").unwrap()["diff"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(diff.contains(&format!("\n+// {long}\n")), "no added line");
    let run = run_bounded(&fx, &["diff", "amd/amdkfd/kfd_crat.c"]);
    run.expect_code(1);
    assert!(run.stdout().contains(&format!("\n+// {long}\n")));

    // A 10 MB line in dpkg's md5sums: one error line, not 10 MB of it.
    let sums = fx.path("var/lib/dpkg/info/amdgpu-dkms.md5sums");
    let mut bytes = std::fs::read(&sums).unwrap();
    bytes.extend_from_slice(format!("{}  {TREE}/../{long}\n", md5_hex(b"")).as_bytes());
    std::fs::write(&sums, bytes).unwrap();
    let run = run_bounded(&fx, &["scan"]);
    run.expect_code(2);
    let err = run.stderr();
    assert!(err.len() < 1024, "an error line of {} bytes", err.len());
    assert!(
        err.contains("amdgpu-dkms.md5sums:6: unsafe or empty path"),
        "{err}"
    );
    assert!(
        err.contains(&format!("... ({} bytes)", TREE.len() + 4 + long.len())),
        "{err}"
    );
}

/// A `.deb` (ar archive) holding the given data.tar member.
fn deb(data_name: &str, data: &[u8]) -> Vec<u8> {
    let mut out = b"!<arch>\n".to_vec();
    for (name, bytes) in [
        ("debian-binary", &b"2.0\n"[..]),
        ("control.tar.gz", &b"not read"[..]),
        (data_name, data),
    ] {
        out.extend_from_slice(
            format!(
                "{name:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
                0,
                0,
                0,
                100644,
                bytes.len()
            )
            .as_bytes(),
        );
        out.extend_from_slice(bytes);
        if bytes.len() % 2 == 1 {
            out.push(b'\n');
        }
    }
    out
}

/// A tar header for a regular file, a symlink (`link`) or a hard link, with the
/// name written as given (even `..` or absolute, which tar builders refuse).
fn tar_header(name: &[u8], size: u64, kind: tar::EntryType, link: Option<&str>) -> [u8; 512] {
    let mut h = tar::Header::new_old();
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
    h.set_size(size);
    h.set_mode(0o644);
    h.set_entry_type(kind);
    if let Some(l) = link {
        h.set_link_name(l).unwrap();
    }
    h.set_cksum();
    *h.as_bytes()
}

fn padded(data: &[u8]) -> Vec<u8> {
    let mut v = data.to_vec();
    v.resize(data.len().div_ceil(512) * 512, 0);
    v
}

/// The standard tree with kfd_crat.c patched, dpkg saying the package is installed,
/// and `deb` as its archive in apt's cache.
fn tree_with_archive(deb: &[u8]) -> Fixture {
    let fx = Fixture::new();
    fx.amdgpu_tree();
    fx.dpkg_status("amdgpu-dkms", VERSION);
    fx.write(
        &format!("{TREE}/amd/amdkfd/kfd_crat.c"),
        format!("{CRAT_C}flags |= HSA_MEM_FLAGS_HOT_PLUGGABLE;\n"),
    );
    fx.write(
        &format!("var/cache/apt/archives/amdgpu-dkms_{VERSION}_all.deb"),
        deb,
    );
    fx
}

#[test]
fn decompression_bombs_in_the_package_archive_are_stopped_and_reported() {
    // 127 members' worth of zeros (8128 MiB) before the clean kfd_crat.c: a reader
    // without a bound would decompress all of it, then serve the file.
    const CHUNK: usize = 64 << 20;
    const CHUNKS: u64 = 127;
    let zeros = vec![0u8; CHUNK];
    let head = tar_header(
        format!("./{TREE}/amd/amdkfd/zeros.bin").as_bytes(),
        CHUNK as u64 * CHUNKS,
        tar::EntryType::Regular,
        None,
    );
    let mut tail = tar_header(
        format!("./{TREE}/amd/amdkfd/kfd_crat.c").as_bytes(),
        CRAT_C.len() as u64,
        tar::EntryType::Regular,
        None,
    )
    .to_vec();
    tail.extend_from_slice(&padded(CRAT_C.as_bytes()));
    tail.extend_from_slice(&[0u8; 1024]);

    type Compress = fn(&[u8]) -> Vec<u8>;
    let kinds: [(&str, Compress); 3] = [
        ("data.tar.zst", |d| zstd::bulk::compress(d, 3).unwrap()),
        ("data.tar.xz", |d| {
            use std::io::Write;
            let mut e = liblzma::write::XzEncoder::new(Vec::new(), 1);
            e.write_all(d).unwrap();
            e.finish().unwrap()
        }),
        ("data.tar.gz", |d| {
            use std::io::Write;
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            e.write_all(d).unwrap();
            e.finish().unwrap()
        }),
    ];
    for (name, compress) in kinds {
        // Concatenated frames (streams, members) decode as one stream.
        let mut data = compress(&head);
        let z = compress(&zeros);
        for _ in 0..CHUNKS {
            data.extend_from_slice(&z);
        }
        data.extend_from_slice(&compress(&tail));
        let fx = tree_with_archive(&deb(name, &data));
        let run = run_bounded(&fx, &["--format", "json", "scan"]);
        run.expect_code(1);
        let r = run.json();
        let p = problems(&r);
        assert!(
            p.contains(&format!(
                "{name} expands to more than {} bytes from {} compressed",
                (data.len() as u64 * 64).max(GIB),
                data.len()
            )) && p.contains("a decompression bomb or not a package archive; stopped reading it"),
            "{name}: {p}"
        );
        let f = json_file(&r, "amd/amdkfd/kfd_crat.c").unwrap();
        assert_eq!(f["status"], "modified");
        assert!(f.get("clean").is_none(), "{name}: {f:#}");
    }
}

#[test]
fn archive_members_that_escape_or_are_links_are_never_used() {
    let fx = Fixture::new();
    fx.amdgpu_tree();
    let drv = "// amdgpu driver entry\nint amdgpu_x;\n";
    let top = "obj-m += amd/amdgpu/\n";
    let mut tar = Vec::new();
    // A symlink and a hard link where package files belong, then the clean bytes of
    // two more files under names that climb out of the root or are absolute.
    tar.extend_from_slice(&tar_header(
        format!("./{TREE}/amd/amdkfd/kfd_crat.c").as_bytes(),
        0,
        tar::EntryType::Symlink,
        Some("/etc/passwd"),
    ));
    tar.extend_from_slice(&tar_header(
        format!("./{TREE}/amd/amdkfd/Makefile").as_bytes(),
        0,
        tar::EntryType::Link,
        Some(&format!("./{TREE}/Makefile")),
    ));
    for (name, data) in [
        (format!("../../{TREE}/amd/amdgpu/amdgpu_drv.c"), drv),
        (format!("/{TREE}/Makefile"), top),
    ] {
        tar.extend_from_slice(&tar_header(
            name.as_bytes(),
            data.len() as u64,
            tar::EntryType::Regular,
            None,
        ));
        tar.extend_from_slice(&padded(data.as_bytes()));
    }
    tar.extend_from_slice(&[0u8; 1024]);
    fx.dpkg_status("amdgpu-dkms", VERSION);
    fx.write(
        &format!("var/cache/apt/archives/amdgpu-dkms_{VERSION}_all.deb"),
        deb("data.tar", &tar),
    );
    for rel in [
        "amd/amdkfd/kfd_crat.c",
        "amd/amdkfd/Makefile",
        "amd/amdgpu/amdgpu_drv.c",
        "Makefile",
    ] {
        fx.write(&format!("{TREE}/{rel}"), "// patched\n");
    }
    let before = listing(fx.root());
    let run = run_bounded(&fx, &["--format", "json", "restore", "--yes"]);
    run.expect_code(1);
    let r = run.json();
    assert_eq!(r["summary"]["restore"], 0, "{r:#}");
    assert_eq!(r["summary"]["no_source"], 4, "{r:#}");
    assert_eq!(before, listing(fx.root()), "something was written");
}

#[test]
fn a_directory_swapped_for_a_symlink_after_the_plan_is_refused_and_nothing_is_written_outside() {
    let s = Scenario::new(3);
    let run = s.run(&["--format", "json", "restore", "--dry-run"]);
    run.expect_code(1);
    assert_eq!(run.json()["summary"]["restore"], 3);
    // Between the plan and the restore, amd/amdkfd becomes a link to a copy elsewhere.
    let kfd = s.fx.path(&format!("{TREE}/amd/amdkfd"));
    let outside = s.fx.path("elsewhere/amdkfd");
    std::fs::create_dir_all(outside.parent().unwrap()).unwrap();
    std::fs::rename(&kfd, &outside).unwrap();
    std::os::unix::fs::symlink(&outside, &kfd).unwrap();
    let before = listing(&outside);
    let run = bounded(s.command(&["--format", "json", "restore", "--yes"], &[]));
    run.expect_code(1);
    let r = run.json();
    // Nothing is planned through the link: not even the backups over there are read.
    assert_eq!(r["summary"]["restore"], 0, "{r:#}");
    assert_eq!(r["summary"]["no_source"], 3, "{r:#}");
    assert_eq!(r["trees"][0]["kept"], serde_json::json!(["amd/amdkfd"]));
    assert_eq!(before, listing(&outside));
    assert!(!s.state().join("quarantine").exists());
}

/// Waits until a process is stopped (state `T` in /proc/<pid>/stat).
fn wait_stopped(pid: libc::pid_t) {
    for _ in 0..WATCHDOG.as_millis() / 20 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat.rsplit(") ").next().and_then(|r| r.chars().next());
        if state == Some('T') {
            return;
        }
        assert!(!stat.is_empty(), "process {pid} ended before its failpoint");
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("process {pid} never stopped at its failpoint");
}

#[test]
fn a_directory_swapped_for_a_symlink_during_the_restore_is_refused() {
    let s = Scenario::new(3);
    let kfd = s.fx.path(&format!("{TREE}/amd/amdkfd"));
    let outside = s.fx.path("elsewhere/amdkfd");
    std::fs::create_dir_all(outside.parent().unwrap()).unwrap();
    let mut swapped = None;
    // The run stops right after verifying the second file's source, with the first
    // file restored; the directory is swapped for a link then, and the run resumed.
    let cmd = s.command(
        &["--format", "json", "restore", "--yes"],
        &[("KFD_AUDIT_FAILPOINT", "source-verified:2:stop")],
    );
    let run = bounded_with(cmd, |pid| {
        wait_stopped(pid);
        std::fs::rename(&kfd, &outside).unwrap();
        std::os::unix::fs::symlink(&outside, &kfd).unwrap();
        swapped = Some(listing(&outside));
        unsafe { libc::kill(pid, libc::SIGCONT) };
    });
    run.expect_code(1);
    let r = run.json();
    let result = &r["result"];
    assert_eq!(result["restored"].as_array().unwrap().len(), 1, "{r:#}");
    let not = result["not_restored"].as_array().unwrap();
    assert_eq!(not.len(), 2, "{r:#}");
    // Both sources were fetched and verified before the swap: the directory the files
    // are in is refused when each is opened for writing.
    for n in not {
        assert!(
            n["reason"].as_str().unwrap().contains(
                "is a symbolic link or not a directory; kfd-audit never writes through a link"
            ),
            "{r:#}"
        );
    }
    // Over there: the first file as restored before the swap, the others untouched.
    assert_eq!(swapped.unwrap(), listing(&outside));
    assert_eq!(
        std::fs::read(outside.join("kfd_f0.c")).unwrap(),
        s.files[0].2
    );
    assert_eq!(
        std::fs::read(outside.join("kfd_f1.c")).unwrap(),
        s.files[1].1
    );
    assert_eq!(
        std::fs::read(outside.join("kfd_f2.c")).unwrap(),
        s.files[2].1
    );
}

#[test]
fn non_utf8_names_are_reported_losslessly_and_restored() {
    let fx = Fixture::new();
    fx.amdgpu_tree();
    let rel: &[u8] = b"amd/amdkfd/kfd_\xff\xfe.c";
    let host = fx.path(TREE).join(OsStr::from_bytes(rel));
    let mut orig = host.clone().into_os_string();
    orig.push(".orig");
    std::fs::write(&host, "int patched;\n").unwrap();
    std::fs::write(&orig, "int clean;\n").unwrap();
    let sums = fx.path("var/lib/dpkg/info/amdgpu-dkms.md5sums");
    let mut bytes = std::fs::read(&sums).unwrap();
    bytes.extend_from_slice(format!("{}  {TREE}/", md5_hex(b"int clean;\n")).as_bytes());
    bytes.extend_from_slice(rel);
    bytes.push(b'\n');
    std::fs::write(&sums, bytes).unwrap();
    let as_json = |b: &[u8]| serde_json::json!(b);
    let orig_rel = [rel, b".orig"].concat();

    let run = run_bounded(&fx, &["--format", "json", "scan"]);
    run.expect_code(1);
    let r = run.json();
    let f = r["trees"][0]["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path_bytes"] == as_json(rel))
        .unwrap_or_else(|| panic!("{r:#}"));
    assert_eq!(f["status"], "modified");
    assert_eq!(f["backups"][0]["path_bytes"], as_json(&orig_rel));
    assert_eq!(f["backups"][0]["verdict"], "verified-clean");

    let run = run_bounded(&fx, &["scan"]);
    assert!(
        run.stdout().contains("kfd_\\xff\\xfe.c"),
        "{}",
        run.stdout()
    );

    let run = run_bounded(&fx, &["--format", "json", "diff"]);
    run.expect_code(1);
    assert_eq!(run.json()["files"][0]["path_bytes"], as_json(rel));

    let run = run_bounded(&fx, &["--format", "json", "restore", "--dry-run"]);
    assert_eq!(
        run.json()["trees"][0]["restore"][0]["path_bytes"],
        as_json(rel)
    );

    let run = run_bounded(&fx, &["--format", "json", "restore", "--yes"]);
    run.expect_code(0);
    let r = run.json();
    let sys = [format!("/{TREE}/").as_bytes(), rel].concat();
    assert_eq!(r["result"]["restored"][0]["path_bytes"], as_json(&sys));
    assert_eq!(std::fs::read(&host).unwrap(), b"int clean;\n");
    let run_id = r["result"]["run"].as_str().unwrap();
    let q = fx
        .path(&format!("var/lib/kfd-audit/quarantine/{run_id}/{TREE}"))
        .join(OsStr::from_bytes(rel));
    assert_eq!(std::fs::read(q).unwrap(), b"int patched;\n");

    let run = run_bounded(&fx, &["undo"]);
    run.expect_code(0);
    assert_eq!(std::fs::read(&host).unwrap(), b"int patched;\n");
}

#[test]
fn dkms_conf_values_are_quoted_in_the_commands_printed_after_a_restore() {
    let fx = Fixture::new();
    fx.amdgpu_tree();
    // dkms.conf is not the package's here, so a restore leaves it as it is.
    let sums = fx.path("var/lib/dpkg/info/amdgpu-dkms.md5sums");
    let text = std::fs::read_to_string(&sums).unwrap();
    let kept: String = text
        .lines()
        .filter(|l| !l.ends_with("/dkms.conf"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&sums, kept).unwrap();
    fx.write(
        &format!("{TREE}/dkms.conf"),
        "PACKAGE_NAME=\"amdgpu\"\nPACKAGE_VERSION=\"6.8.5; touch /tmp/kfd-audit-pwned\"\n",
    );
    fx.write(&format!("{TREE}/amd/amdkfd/kfd_crat.c.orig"), CRAT_C);
    fx.write(&format!("{TREE}/amd/amdkfd/kfd_crat.c"), "// patched\n");
    let run = run_bounded(&fx, &["restore", "--yes"]);
    run.expect_code(0);
    let out = run.stdout();
    // Printed commands carry the version quoted, or not at all.
    assert!(!out.contains("-v 6.8.5; touch"), "{out}");
    for l in out.lines().filter(|l| l.trim_start().starts_with("dkms ")) {
        assert!(
            l.contains("-v '6.8.5; touch /tmp/kfd-audit-pwned'"),
            "{out}"
        );
    }
}

#[test]
fn build_time_patches_that_name_fifos_links_or_paths_outside_are_not_read() {
    let fx = Fixture::new();
    fx.amdgpu_tree();
    fx.write(
        &format!("{TREE}/dkms.conf"),
        format!(
            "{DKMS_CONF}PATCH[0]=\"evil.patch\"\nPATCH[1]=\"../../../../../../../../dev/zero\"\nPATCH[2]=\"fifo.patch\"\n"
        ),
    );
    fx.write("outside/secret.c", "secret\n");
    mkfifo(&tree_path(&fx, "amd/amdkfd/fifo.c"));
    // A patch whose targets are a FIFO in the tree and a file outside it.
    fx.write(
        &format!("{TREE}/patches/evil.patch"),
        "--- a/amd/amdkfd/fifo.c\n+++ b/amd/amdkfd/fifo.c\n@@ -1 +1 @@\n-a\n+b\n\
         --- a/../../../outside/secret.c\n+++ b/../../../outside/secret.c\n@@ -1 +1 @@\n-secret\n+flags |= 1;\n",
    );
    mkfifo(&tree_path(&fx, "patches/fifo.patch"));
    let run = run_bounded(&fx, &["--format", "json", "scan"]);
    run.expect_code(1);
    let out = run.stdout();
    assert!(
        out.contains("PATCH names ../../../../../../../../dev/zero"),
        "{out}"
    );
    assert!(out.contains("PATCH names fifo.patch"), "{out}");
    assert!(
        out.contains("patches amd/amdkfd/fifo.c, ../../../outside/secret.c"),
        "{out}"
    );
}

#[test]
fn the_rules_stay_linear_on_hostile_c_files() {
    let fx = Fixture::new();
    fx.amdgpu_tree();
    // A million `if`s nested on one 10 MB line, and a hot-pluggable flag forced on
    // each of 440,000 lines (just under the 16 MiB the rules read).
    fx.write(
        &format!("{TREE}/amd/amdkfd/kfd_crat.c"),
        format!(
            "void g(void) {{ {}flags |= 1; }}\n",
            "if (x) ".repeat((10 << 20) / 7)
        ),
    );
    let line = "flags |= HSA_MEM_FLAGS_HOT_PLUGGABLE;\n";
    fx.write(
        &format!("{TREE}/amd/amdkfd/kfd_topology.c"),
        line.repeat((16 << 20) / line.len() - 1000),
    );
    let run = run_bounded(&fx, &["--format", "json", "scan"]);
    run.expect_code(1);
    let r = run.json();
    assert_eq!(
        json_file(&r, "amd/amdkfd/kfd_crat.c").unwrap()["status"],
        "modified"
    );
    let f = json_file(&r, "amd/amdkfd/kfd_topology.c").unwrap();
    let findings = f["findings"].as_array().unwrap();
    assert_eq!(findings.len(), 101, "{:#}", findings[0]);
    let more = findings
        .iter()
        .find(|x| x["text"].as_str().unwrap().starts_with("... and "))
        .unwrap();
    assert_eq!(
        more["text"],
        format!(
            "... and {} more line(s) of this file match this rule (not listed one by one)",
            (16 << 20) / line.len() - 1000 - 100
        )
    );
    assert_eq!(more["line"], 101);
    assert!(
        run.stdout().len() < 1 << 20,
        "{} bytes of report",
        run.stdout().len()
    );
}

#[test]
fn a_users_dotfiles_and_system_files_cannot_hang_or_flood_a_root_scan() {
    let fx = Fixture::new();
    fx.amdgpu_tree();
    // Any user owns their ~/.bashrc; kfd-audit reads it as root, looking for
    // HSA_OVERRIDE_GFX_VERSION.
    let alice = fx.path("home/alice");
    std::fs::create_dir_all(&alice).unwrap();
    mkfifo(&alice.join(".bashrc"));
    sparse(&alice.join(".profile"), 10 * GIB);
    let bob = fx.path("home/bob");
    std::fs::create_dir_all(&bob).unwrap();
    // An absolute link is taken inside the root: make the root's /dev/zero a real one.
    let zero = is_root() && {
        std::fs::create_dir_all(fx.path("dev")).unwrap();
        let c = std::ffi::CString::new(fx.path("dev/zero").as_os_str().as_bytes()).unwrap();
        unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 5)) == 0 }
    };
    std::os::unix::fs::symlink("/dev/zero", bob.join(".bashrc")).unwrap();
    std::fs::create_dir_all(fx.path("etc/modprobe.d")).unwrap();
    mkfifo(&fx.path("etc/modprobe.d/amdgpu.conf"));
    std::fs::create_dir_all(fx.path("proc")).unwrap();
    mkfifo(&fx.path("proc/cmdline"));

    let run = run_bounded(&fx, &["--format", "json", "scan"]);
    run.expect_code(0);
    let notes = run.json()["sections"]["rocm"]["notes"].to_string();
    assert!(
        notes.contains("/home/alice/.bashrc: not read (not a regular file)"),
        "{notes}"
    );
    assert!(
        notes.contains("/home/alice/.profile: not read (10737418240 bytes, more than"),
        "{notes}"
    );
    if zero {
        assert!(
            notes.contains("/home/bob/.bashrc: not read (not a regular file)"),
            "{notes}"
        );
    }
    let all = run.stdout();
    assert!(
        all.contains("/proc/cmdline: not read (not a regular file)"),
        "{all}"
    );
}

#[test]
fn a_missing_tree_gives_one_line_naming_it_and_what_to_do() {
    let fx = Fixture::new();
    fx.amdgpu_tree();
    let run = fx.run(&["scan", "--tree", "/usr/src/amdgpu-0.0.0"]);
    run.expect_code(2);
    let err = run.stderr();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("/usr/src/amdgpu-0.0.0: no such directory"),
        "{err}"
    );
    assert!(err.contains("without --tree"), "{err}");
    // The cause is said once, not once per layer of the error.
    assert_eq!(err.matches("No such file").count(), 0, "{err}");
}

#[test]
fn an_io_error_names_its_cause_once() {
    let fx = Fixture::new();
    fx.amdgpu_tree();
    let run = fx.run(&["--rules", "/nonexistent-rules-dir", "scan"]);
    run.expect_code(2);
    let err = run.stderr();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("/nonexistent-rules-dir"), "{err}");
    assert_eq!(err.matches("(os error 2)").count(), 1, "{err}");
}
