//! The recovery sequence on the real dkms: a toy DKMS module of its own name in
//! /usr/src is built and installed for the kernel of Debian's linux-headers-amd64,
//! patched and rebuilt (so the installed module carries the patch), restored, and
//! `kfd-audit plan --run --yes` must put back a module built from the clean source.
//! The module is never loaded. Needs root, dkms, kmod and a linux-headers package;
//! skipped otherwise unless KFD_REQUIRE_DKMS=1 (set by `.ci/run` when root).
//!
//! A second test takes a real Debian `-dkms` package (its `.deb` downloaded by `.ci/run`
//! into `KFD_DKMS_DEBS`) through the same round trip: installed with dpkg (its postinst
//! builds it with the real dkms), tampered and rebuilt, restored from the `.deb` in apt's
//! cache, rebuilt by `plan --run`, and purged afterwards.
//!
//! Everything is removed afterwards, even when an assertion fails (see `Cleanup` and
//! `PackageCleanup`). Both tests change the one real dkms state, so they take turns.

use crate::fixture::Run;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

/// The real /usr/src, /var/lib/dkms, /lib/modules and /var/lib/kfd-audit are one state
/// for the tests that change them: they take turns.
pub static REAL_DKMS: Mutex<()> = Mutex::new(());

/// dkms 3 creates a module-signing key on its first build; a test that made it removes it.
const MOK_FILES: [&str; 2] = ["/var/lib/dkms/mok.key", "/var/lib/dkms/mok.pub"];

fn existing(paths: &[&str]) -> Vec<PathBuf> {
    paths
        .iter()
        .map(PathBuf::from)
        .filter(|p| p.exists())
        .collect()
}

/// The entries of `/lib/modules/<kernel>`: depmod, run by dkms, writes `modules.*` there.
fn modules_dir_entries(kernel: &str) -> Vec<PathBuf> {
    std::fs::read_dir(format!("/lib/modules/{kernel}"))
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect()
}

/// Removes the depmod indexes a test made for a kernel that had none before.
fn remove_new_depmod_files(kernel: &str, before: &[PathBuf]) {
    for p in modules_dir_entries(kernel) {
        let depmod_file = p
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("modules."));
        if depmod_file && !before.contains(&p) {
            let _ = std::fs::remove_file(&p);
        }
    }
}

fn remove_new_mok_files(before: &[PathBuf]) {
    for p in MOK_FILES.iter().map(PathBuf::from) {
        if !before.contains(&p) {
            let _ = std::fs::remove_file(&p);
        }
    }
}

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
    // Audits of the real system: nothing remembered in its digest cache.
    cmd.args(args)
        .env_remove("NO_COLOR")
        .env("KFD_AUDIT_DIGEST_CACHE", "off")
        .stdin(Stdio::null());
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
    mok_before: Vec<PathBuf>,
    kernel: String,
    modules_dir_before: Vec<PathBuf>,
}

/// Entries of kfd-audit's state directory on this machine: its own (the journal and
/// quarantine directories, the lock, ...) and those of its journal and quarantine.
fn state_entries() -> Vec<PathBuf> {
    ["", "journal", "quarantine"]
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
        remove_new_state(self.state_dir_existed, &self.state_before);
        remove_new_mok_files(&self.mok_before);
        let _ = std::fs::remove_dir(format!("/lib/modules/{}/updates/dkms", self.kernel));
        let _ = std::fs::remove_dir(format!("/lib/modules/{}/updates", self.kernel));
        remove_new_depmod_files(&self.kernel, &self.modules_dir_before);
    }
}

/// kfd-audit's journal and quarantine entries a test made, or its whole state dir if
/// the test created it.
fn remove_new_state(state_dir_existed: bool, state_before: &[PathBuf]) {
    if !state_dir_existed {
        let _ = std::fs::remove_dir_all("/var/lib/kfd-audit");
    } else {
        for p in state_entries() {
            if !state_before.contains(&p) {
                let _ = std::fs::remove_dir_all(&p).or_else(|_| std::fs::remove_file(&p));
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

/// The module installed for `kernel` carries no patch marker, is built for that kernel,
/// and kfd-audit says it was built from clean sources. Returns the module's path.
fn assert_clean_module_installed(kernel: &str, module: &str, tree: &str) -> PathBuf {
    assert_eq!(marker(kernel, module), "");
    let ko = installed_ko(kernel, module);
    let vermagic = sh(&["modinfo", "-F", "vermagic", ko.to_str().unwrap()]);
    assert_eq!(vermagic.split_whitespace().next(), Some(kernel));
    let scan = kfd(&["--format", "json", "scan", "--tree", tree]);
    scan.expect_code(0);
    assert_eq!(
        kernel_of(&scan.json(), kernel)["provenance"],
        "built-from-clean-sources"
    );
    ko
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
    let _turn = REAL_DKMS.lock().unwrap_or_else(|e| e.into_inner());
    let name = format!("kfdaudittoy{}", std::process::id());
    let src = PathBuf::from(format!("/usr/src/{name}-{VER}"));
    let tree = src.to_str().unwrap().to_string();
    let guard = Cleanup {
        name: name.clone(),
        src: src.clone(),
        state_dir_existed: Path::new("/var/lib/kfd-audit").exists(),
        state_before: state_entries(),
        mok_before: existing(&MOK_FILES),
        kernel: kver.clone(),
        modules_dir_before: modules_dir_entries(&kver),
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
    let text = kfd(&["-v", "scan", "--tree", &tree]).stdout();
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
    let ko = assert_clean_module_installed(&kver, &name, &tree);

    // And the system is as it was.
    guard.run();
    assert!(!src.exists());
    assert!(!Path::new(&format!("/var/lib/dkms/{name}")).exists());
    assert!(!ko.exists(), "{} left behind", ko.display());
    assert!(sh(&["dkms", "status", "-m", &name]).trim().is_empty());
}

/// What a `-dkms` .deb carries: its package name and the DKMS module its dkms.conf names.
struct DkmsDeb {
    deb: PathBuf,
    package: String,
    /// `/usr/src/<module>-<version>`, as the .deb lays it out.
    src: PathBuf,
    module: String,
    version: String,
    built_module: String,
}

fn dkms_conf_value(conf: &str, key: &str) -> Option<String> {
    conf.lines()
        .filter_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))
        .map(|v| v.trim().trim_matches('"').to_string())
        .next()
}

/// The first `-dkms` .deb in `KFD_DKMS_DEBS`, read with dpkg-deb.
fn dkms_deb() -> Option<DkmsDeb> {
    let dir = std::env::var_os("KFD_DKMS_DEBS")?;
    let deb = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.contains("-dkms_") && n.ends_with(".deb"))
        })
        .min()?;
    let d = deb.to_str()?;
    let package = sh(&["dpkg-deb", "-f", d, "Package"]).trim().to_string();
    let listing = sh(&["dpkg-deb", "-c", d]);
    let conf_member = listing
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .find(|m| m.starts_with("./usr/src/") && m.ends_with("/dkms.conf"))?
        .trim_start_matches('.')
        .to_string();
    let src = PathBuf::from(conf_member.trim_end_matches("/dkms.conf"));
    let out = Command::new("sh")
        .args([
            "-c",
            &format!("dpkg-deb --fsys-tarfile '{d}' | tar -xOf - '.{conf_member}'"),
        ])
        .output()
        .ok()?;
    let conf = String::from_utf8_lossy(&out.stdout).into_owned();
    let module = dkms_conf_value(&conf, "PACKAGE_NAME")?;
    let version = dkms_conf_value(&conf, "PACKAGE_VERSION")?;
    // Debian's dkms.conf files often say BUILT_MODULE_NAME[0]="$PACKAGE_NAME".
    let built_module = dkms_conf_value(&conf, "BUILT_MODULE_NAME[0]")
        .map(|m| {
            m.replace("${PACKAGE_NAME}", &module)
                .replace("$PACKAGE_NAME", &module)
        })
        .unwrap_or(module.clone());
    Some(DkmsDeb {
        deb,
        package,
        src,
        module,
        version,
        built_module,
    })
}

fn dpkg_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

/// Purges the package this test installed and everything it left, whatever happened.
struct PackageCleanup {
    pkg: DkmsDeb,
    kernel: String,
    /// The .deb copied into apt's cache by the test (None: it was there already).
    cached_copy: Option<PathBuf>,
    state_dir_existed: bool,
    state_before: Vec<PathBuf>,
    mok_before: Vec<PathBuf>,
    modules_dir_before: Vec<PathBuf>,
}

impl PackageCleanup {
    fn run(&self) {
        let quiet = |argv: &[&str]| {
            let _ = Command::new(argv[0])
                .args(&argv[1..])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        };
        // The package's prerm runs `dkms remove --all`; the rest is for a half-done state.
        quiet(&["dpkg", "--purge", &self.pkg.package]);
        if Path::new(&format!("/var/lib/dkms/{}", self.pkg.module)).exists() {
            let (m, v) = (&self.pkg.module, &self.pkg.version);
            quiet(&["dkms", "remove", "-m", m, "-v", v, "--all"]);
        }
        let _ = std::fs::remove_dir_all(&self.pkg.src);
        let _ = std::fs::remove_dir_all(format!("/var/lib/dkms/{}", self.pkg.module));
        let dir = format!("/lib/modules/{}/updates/dkms", self.kernel);
        for ext in ["", ".xz", ".zst", ".gz"] {
            let ko = Path::new(&dir).join(format!("{}.ko{ext}", self.pkg.built_module));
            if std::fs::remove_file(&ko).is_ok() {
                quiet(&["depmod", "-a", &self.kernel]);
            }
        }
        // dkms leaves the directories it made for the module; only empty ones go.
        let _ = std::fs::remove_dir(&dir);
        let _ = std::fs::remove_dir(format!("/lib/modules/{}/updates", self.kernel));
        if let Some(copy) = &self.cached_copy {
            let _ = std::fs::remove_file(copy);
        }
        remove_new_state(self.state_dir_existed, &self.state_before);
        remove_new_mok_files(&self.mok_before);
        remove_new_depmod_files(&self.kernel, &self.modules_dir_before);
    }
}

impl Drop for PackageCleanup {
    fn drop(&mut self) {
        self.run();
    }
}

fn md5_of(path: &Path) -> String {
    crate::fixture::md5_hex(&std::fs::read(path).unwrap())
}

#[test]
fn a_real_debian_dkms_package_is_restored_from_its_deb_and_rebuilt() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return skip_or_fail("not root");
    }
    for tool in ["dkms", "modinfo", "dpkg", "dpkg-deb", "make"] {
        if !on_path(tool) {
            return skip_or_fail(&format!("{tool} is not installed"));
        }
    }
    let Some(kver) = headers_kernel() else {
        return skip_or_fail("no linux-headers-amd64 with headers in /lib/modules/<kernel>/build");
    };
    let Some(pkg) = dkms_deb() else {
        return skip_or_fail("no -dkms .deb in KFD_DKMS_DEBS (.ci/run downloads one)");
    };
    if dpkg_installed(&pkg.package) || pkg.src.exists() {
        // Never touch a package this test did not install.
        return skip_or_fail(&format!("{} is already installed here", pkg.package));
    }
    let _turn = REAL_DKMS.lock().unwrap_or_else(|e| e.into_inner());
    let cache = Path::new("/var/cache/apt/archives").join(pkg.deb.file_name().unwrap());
    let cached_copy = (!cache.exists()).then(|| cache.clone());
    let guard = PackageCleanup {
        pkg,
        kernel: kver.clone(),
        cached_copy,
        state_dir_existed: Path::new("/var/lib/kfd-audit").exists(),
        state_before: state_entries(),
        mok_before: existing(&MOK_FILES),
        modules_dir_before: modules_dir_entries(&kver),
    };
    let pkg = &guard.pkg;
    let tree = pkg.src.to_str().unwrap().to_string();
    let module = pkg.built_module.as_str();

    // Installed as apt would: dpkg unpacks, the postinst registers and builds with dkms.
    // The .deb also sits in apt's cache, where kfd-audit finds clean content.
    if guard.cached_copy.is_some() {
        std::fs::copy(&pkg.deb, &cache).unwrap();
    }
    sh(&["dpkg", "-i", pkg.deb.to_str().unwrap()]);
    if !Path::new(&format!("/lib/modules/{kver}/updates/dkms")).is_dir() {
        // A postinst that did not build for this kernel: build as its README says.
        sh(&[
            "dkms",
            "install",
            "-m",
            &pkg.module,
            "-v",
            &pkg.version,
            "-k",
            &kver,
        ]);
    }
    let scan = kfd(&["--format", "json", "scan", "--tree", &tree]);
    scan.expect_code(0);
    let j = scan.json();
    assert_eq!(j["summary"]["modified"], 0, "{j}");
    assert_eq!(
        kernel_of(&j, &kver)["provenance"],
        "built-from-clean-sources"
    );

    // The tamper, rebuilt and installed the way people do it.
    let victim = std::fs::read_dir(&pkg.src)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "c"))
        .max_by_key(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .expect("a .c file in the package's tree");
    let clean_md5 = md5_of(&victim);
    let mut patched = std::fs::read(&victim).unwrap();
    patched.extend_from_slice(MARKER.as_bytes());
    std::fs::write(&victim, &patched).unwrap();
    sh(&[
        "dkms",
        "remove",
        "-m",
        &pkg.module,
        "-v",
        &pkg.version,
        "--all",
    ]);
    sh(&[
        "dkms",
        "install",
        "-m",
        &pkg.module,
        "-v",
        &pkg.version,
        "-k",
        &kver,
    ]);
    assert_eq!(marker(&kver, module), "PATCHED");

    let scan = kfd(&["--format", "json", "scan", "--tree", &tree]);
    scan.expect_code(1);
    let j = scan.json();
    assert_eq!(j["summary"]["modified"], 1, "{j}");
    assert_eq!(
        kernel_of(&j, &kver)["provenance"],
        "built-from-changed-sources"
    );
    let text = kfd(&["-v", "scan", "--tree", &tree]).stdout();
    assert!(
        text.contains(&format!("dpkg archive {}", cache.display())),
        "the clean copy comes from the cached .deb:\n{text}"
    );

    // Restored from the .deb, verified against dpkg's md5sums.
    let restored = kfd(&["restore", "--yes", "--tree", &tree]);
    restored.expect_code(0);
    assert!(
        restored
            .stdout()
            .contains(&format!("from dpkg archive {}", cache.display())),
        "{}",
        restored.stdout()
    );
    assert_eq!(md5_of(&victim), clean_md5);

    // The printed plan, run: the module installed afterwards is built from the clean source.
    let run = kfd(&["plan", "--tree", &tree, "--run", "--yes"]);
    run.expect_code(0);
    assert!(
        run.stdout().contains("All 3 commands succeeded."),
        "{}",
        run.stdout()
    );
    let ko = assert_clean_module_installed(&kver, module, &tree);

    // And the system is as it was: the package purged with its module and dkms state.
    guard.run();
    assert!(!dpkg_installed(&guard.pkg.package));
    assert!(!guard.pkg.src.exists());
    assert!(!ko.exists(), "{} left behind", ko.display());
    assert!(!Path::new(&format!("/var/lib/dkms/{}", guard.pkg.module)).exists());
}
