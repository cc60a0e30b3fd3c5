//! The recovery sequence on the real dkms: a toy DKMS module of its own name in
//! /usr/src is built and installed for the kernel of Debian's linux-headers-amd64,
//! patched and rebuilt (so the installed module carries the patch), restored, and
//! `kfd-audit plan --run --yes` must put back a module built from the clean source.
//! The module is never loaded. Needs root, dkms, kmod and a linux-headers package;
//! skipped otherwise unless KFD_REQUIRE_DKMS=1 (set by `.ci/run` when root).
//!
//! Everything is removed afterwards, even when an assertion fails (see `Cleanup`).

use crate::fixture::Run;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const VER: &str = "1.0";
const MARKER: &str = "MODULE_INFO(kfdaudit, \"PATCHED\");\n";

fn skip_or_fail(why: &str) {
    if std::env::var_os("KFD_REQUIRE_DKMS").is_some_and(|v| v == "1") {
        panic!("KFD_REQUIRE_DKMS=1 but {why}");
    }
    eprintln!("skipped dkms_real: {why}");
}

fn on_path(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The kernel linux-headers-amd64 depends on (`linux-headers-<kernel> (= ...)`).
fn headers_kernel() -> Option<String> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Depends}", "linux-headers-amd64"])
        .output()
        .ok()?;
    let deps = String::from_utf8_lossy(&out.stdout);
    let k = deps
        .split(',')
        .filter_map(|d| d.trim().strip_prefix("linux-headers-"))
        .map(|d| d.split_whitespace().next().unwrap_or_default().to_string())
        .next()?;
    Path::new(&format!("/lib/modules/{k}/build/include"))
        .is_dir()
        .then_some(k)
}

fn sh(argv: &[&str]) -> String {
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    assert!(
        out.status.success(),
        "{argv:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn kfd(args: &[&str]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kfd-audit"));
    cmd.args(args).env_remove("NO_COLOR").stdin(Stdio::null());
    Run::of(cmd)
}

/// Removes the toy module, its sources, its DKMS state and its baseline, whatever
/// happened. dkms itself may be in any state here, so every step is best effort.
struct Cleanup {
    name: String,
    src: PathBuf,
    state_dir_existed: bool,
    /// Journal and quarantine entries that were there before: only newer ones are ours.
    state_before: Vec<PathBuf>,
}

/// Entries of kfd-audit's journal and quarantine directories on this machine.
fn state_entries() -> Vec<PathBuf> {
    ["journal", "quarantine"]
        .iter()
        .flat_map(|d| {
            std::fs::read_dir(Path::new("/var/lib/kfd-audit").join(d))
                .into_iter()
                .flatten()
        })
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect()
}

impl Cleanup {
    fn run(&self) {
        if self.src.join("dkms.conf").is_file() {
            let _ = Command::new("dkms")
                .args(["remove", "-m", &self.name, "-v", VER, "--all"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.src);
        let _ = std::fs::remove_dir_all(format!("/var/lib/dkms/{}", self.name));
        let _ = std::fs::remove_dir_all(format!("/var/lib/kfd-audit/baseline/{}-{VER}", self.name));
        if !self.state_dir_existed {
            let _ = std::fs::remove_dir_all("/var/lib/kfd-audit");
        } else {
            // The restore in this test journaled and quarantined under the real state dir.
            for p in state_entries() {
                if !self.state_before.contains(&p) {
                    let _ = std::fs::remove_dir_all(&p).or_else(|_| std::fs::remove_file(&p));
                }
            }
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        self.run();
    }
}

fn package(scan: &Value) -> &Value {
    &scan["dkms"]["packages"][0]
}

fn kernel_of<'a>(scan: &'a Value, k: &str) -> &'a Value {
    package(scan)["kernels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["kernel"] == k)
        .unwrap_or_else(|| panic!("kernel {k} not in {}", package(scan)))
}

fn installed_ko(kernel: &str, name: &str) -> PathBuf {
    let dir = PathBuf::from(format!("/lib/modules/{kernel}/updates/dkms"));
    for ext in ["", ".xz", ".zst", ".gz"] {
        let p = dir.join(format!("{name}.ko{ext}"));
        if p.is_file() {
            return p;
        }
    }
    panic!("no {name}.ko* in {}", dir.display());
}

fn marker(kernel: &str, name: &str) -> String {
    let ko = installed_ko(kernel, name);
    sh(&["modinfo", "-F", "kfdaudit", ko.to_str().unwrap()])
        .trim()
        .to_string()
}

#[test]
fn plan_run_rebuilds_the_clean_module_with_the_real_dkms() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return skip_or_fail("not root");
    }
    for tool in ["dkms", "modinfo", "dpkg-query", "make"] {
        if !on_path(tool) {
            return skip_or_fail(&format!("{tool} is not installed"));
        }
    }
    let Some(kver) = headers_kernel() else {
        return skip_or_fail("no linux-headers-amd64 with headers in /lib/modules/<kernel>/build");
    };
    let name = format!("kfdaudittoy{}", std::process::id());
    let src = PathBuf::from(format!("/usr/src/{name}-{VER}"));
    let tree = src.to_str().unwrap().to_string();
    let guard = Cleanup {
        name: name.clone(),
        src: src.clone(),
        state_dir_existed: Path::new("/var/lib/kfd-audit").exists(),
        state_before: state_entries(),
    };
    guard.run();

    // A toy DKMS package, as the reference round trip builds it.
    let c_file = src.join(format!("{name}.c"));
    let clean_c = format!(
        "// SPDX-License-Identifier: GPL-2.0\n#include <linux/module.h>\n#include <linux/init.h>\n\
         static int __init {name}_init(void) {{ return 0; }}\n\
         static void __exit {name}_exit(void) {{ }}\n\
         module_init({name}_init);\nmodule_exit({name}_exit);\nMODULE_LICENSE(\"GPL\");\n"
    );
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(&c_file, &clean_c).unwrap();
    std::fs::write(
        src.join("Makefile"),
        format!(
            "obj-m := {name}.o\nKVER ?= $(shell uname -r)\nKDIR ?= /lib/modules/$(KVER)/build\n\
             all:\n\t$(MAKE) -C $(KDIR) M=$(CURDIR) modules\nclean:\n\t$(MAKE) -C $(KDIR) M=$(CURDIR) clean\n"
        ),
    )
    .unwrap();
    std::fs::write(
        src.join("dkms.conf"),
        format!(
            "PACKAGE_NAME=\"{name}\"\nPACKAGE_VERSION=\"{VER}\"\nBUILT_MODULE_NAME[0]=\"{name}\"\n\
             DEST_MODULE_LOCATION[0]=\"/updates/dkms\"\n\
             MAKE[0]=\"make KVER=${{kernelver}} KDIR=${{kernel_source_dir}}\"\n\
             CLEAN=\"make KVER=${{kernelver}} KDIR=${{kernel_source_dir}} clean\"\nAUTOINSTALL=\"yes\"\n"
        ),
    )
    .unwrap();

    // A reference while it is clean, then registered, built and installed.
    // --all keeps a clean copy of every file, so the restore below has a source.
    kfd(&["baseline", "create", "--all", "--tree", &tree]).expect_code(0);
    sh(&["dkms", "add", "-m", &name, "-v", VER]);
    sh(&["dkms", "build", "-m", &name, "-v", VER, "-k", &kver]);
    sh(&["dkms", "install", "-m", &name, "-v", VER, "-k", &kver]);
    assert_eq!(marker(&kver, &name), "");

    let scan = kfd(&["--format", "json", "scan", "--tree", &tree]);
    scan.expect_code(0);
    let j = scan.json();
    assert_eq!(package(&j)["registered"], true);
    assert_eq!(
        kernel_of(&j, &kver)["provenance"],
        "built-from-clean-sources"
    );
    // dkms status is read on the running system, 3.x form.
    assert_eq!(j["dkms"]["status_read"], true);
    let st = &kernel_of(&j, &kver)["status"];
    assert_eq!(st["state"], "installed", "{st}");
    assert_eq!(st["version"], VER);

    // The unsafe patch, rebuilt the way people do it.
    let mut patched = clean_c.clone();
    patched.push_str(MARKER);
    std::fs::write(&c_file, &patched).unwrap();
    let j = kfd(&["--format", "json", "scan", "--tree", &tree]).json();
    assert_eq!(kernel_of(&j, &kver)["provenance"], "built-before-change");
    sh(&["dkms", "remove", "-m", &name, "-v", VER, "--all"]);
    sh(&["dkms", "build", "-m", &name, "-v", VER, "-k", &kver]);
    sh(&["dkms", "install", "-m", &name, "-v", VER, "-k", &kver]);
    assert_eq!(marker(&kver, &name), "PATCHED");

    // kfd-audit says the installed module was built from the changed source.
    let scan = kfd(&["--format", "json", "scan", "--tree", &tree]);
    scan.expect_code(1);
    let j = scan.json();
    let k = kernel_of(&j, &kver);
    assert_eq!(k["provenance"], "built-from-changed-sources", "{k}");
    assert_eq!(
        k["verdict"],
        "built after the change: the changed code is probably live"
    );
    let text = kfd(&["scan", "--tree", &tree]).stdout();
    assert!(
        text.contains("built after the change: the changed code is probably live"),
        "{text}"
    );

    // The plan restores first; --run refuses to rebuild the changed source.
    let plan = kfd(&["--format", "json", "plan", "--tree", &tree]);
    plan.expect_code(1);
    let p = plan.json();
    assert_eq!(
        p["steps"][0]["command"],
        format!("kfd-audit restore --tree {tree}")
    );
    let refused = kfd(&["plan", "--tree", &tree, "--run", "--yes"]);
    refused.expect_code(2);
    assert!(refused
        .stderr()
        .contains("plan --run does not restore files"));
    assert_eq!(marker(&kver, &name), "PATCHED", "nothing may have run");

    // The clean file back, by the restore command from the baseline's copy.
    let restored = kfd(&["restore", "--yes", "--tree", &tree]);
    restored.expect_code(0);
    assert!(
        restored.stdout().contains("restored 1 of 1 file(s)"),
        "{}",
        restored.stdout()
    );
    assert_eq!(std::fs::read(&c_file).unwrap(), clean_c.as_bytes());
    let j = kfd(&["--format", "json", "scan", "--tree", &tree]).json();
    assert_eq!(j["summary"]["modified"], 0);
    assert_eq!(
        kernel_of(&j, &kver)["provenance"],
        "sources-changed-since-build"
    );

    // The printed plan, executed.
    let printed = kfd(&["plan", "--tree", &tree]);
    printed.expect_code(1);
    let expected = [
        format!("dkms remove -m {name} -v {VER} --all"),
        format!("dkms build -m {name} -v {VER} -k {kver}"),
        format!("dkms install -m {name} -v {VER} -k {kver}"),
    ];
    for (i, cmd) in expected.iter().enumerate() {
        assert!(
            printed.stdout().contains(&format!("   {}. {cmd}\n", i + 1)),
            "{}",
            printed.stdout()
        );
    }
    let running = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap()
        .trim()
        .to_string();
    if running != kver && !Path::new(&format!("/lib/modules/{running}/build")).exists() {
        assert!(
            printed.stdout().contains(&format!(
                "kernel {running} (the running kernel): no headers at /lib/modules/{running}/build"
            )),
            "{}",
            printed.stdout()
        );
    }
    let run = kfd(&["plan", "--tree", &tree, "--run", "--yes"]);
    run.expect_code(0);
    let out = run.stdout();
    for (i, cmd) in expected.iter().enumerate() {
        assert!(
            out.contains(&format!("==> [{}/3] step {}: {cmd}\n", i + 1, i + 1)),
            "{out}"
        );
    }
    assert!(
        !out.contains(&format!("-k {running}\n")) || running == kver,
        "{out}"
    );
    assert!(out.contains("All 3 commands succeeded."), "{out}");

    // The module that ends up installed is built from the clean source.
    assert_eq!(marker(&kver, &name), "");
    let ko = installed_ko(&kver, &name);
    let vermagic = sh(&["modinfo", "-F", "vermagic", ko.to_str().unwrap()]);
    assert_eq!(vermagic.split_whitespace().next(), Some(kver.as_str()));
    let scan = kfd(&["--format", "json", "scan", "--tree", &tree]);
    scan.expect_code(0);
    assert_eq!(
        kernel_of(&scan.json(), &kver)["provenance"],
        "built-from-clean-sources"
    );

    // And the system is as it was.
    guard.run();
    assert!(!src.exists());
    assert!(!Path::new(&format!("/var/lib/dkms/{name}")).exists());
    assert!(!ko.exists(), "{} left behind", ko.display());
    assert!(sh(&["dkms", "status", "-m", &name]).trim().is_empty());
}
