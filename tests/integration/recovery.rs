//! `kfd-audit plan` and the DKMS section of `scan`, on fake roots: DKMS state, module
//! provenance from file times, the plan's steps for every branch, and `plan --run`
//! driven through fake `dkms`/`chroot`/`mount` tools on PATH.

use crate::fixture::{Fixture, Run, TREE, VERSION};
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

const K1: &str = "6.1.0-9-amd64";
const K2: &str = "6.1.0-10-amd64";
const KRUN: &str = "6.5.0-1-amd64";

/// Fixed times: the package's files, two builds around a change, a later write.
fn t(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}
const PACKAGED: u64 = 1_700_000_000;
const BUILD_EARLY: u64 = 1_700_001_000;
const CHANGED: u64 = 1_700_002_000;
const BUILD_LATE: u64 = 1_700_003_000;
const RESTORED: u64 = 1_700_004_000;

fn set_mtime(path: &Path, when: SystemTime) {
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .set_modified(when)
        .unwrap();
}

/// Gives every file of the tree the package's time, as dpkg leaves them.
fn age_tree(fx: &Fixture) {
    for e in walk(&fx.path(TREE)) {
        set_mtime(&e, t(PACKAGED));
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// A module dkms built for `kernel` at `when` (make.log and module), optionally
/// installed (copied to updates/dkms and the kernel-<k>-<arch> link made).
fn dkms_module(fx: &Fixture, kernel: &str, file: &str, when: u64, installed: bool) {
    let base = format!("/var/lib/dkms/amdgpu/{VERSION}/{kernel}/x86_64");
    let ko = fx.write(
        &format!("{base}/module/{file}"),
        format!("module for {kernel} built {when}"),
    );
    let log = fx.write(&format!("{base}/log/make.log"), "DKMS make.log\n");
    set_mtime(&ko, t(when));
    set_mtime(&log, t(when));
    let source = fx.path(&format!("/var/lib/dkms/amdgpu/{VERSION}/source"));
    if std::fs::symlink_metadata(&source).is_err() {
        std::os::unix::fs::symlink(format!("/{TREE}"), source).unwrap();
    }
    if installed {
        let dest = fx.path(&format!("/lib/modules/{kernel}/updates/dkms/{file}"));
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(&ko, &dest).unwrap();
        set_mtime(&dest, t(when + 5));
        std::os::unix::fs::symlink(
            format!("{VERSION}/{kernel}/x86_64"),
            fx.path(&format!("/var/lib/dkms/amdgpu/kernel-{kernel}-x86_64")),
        )
        .unwrap();
    }
}

/// Headers for a kernel, the Debian way: /lib/modules/<k>/build -> /usr/src/linux-headers-<k>.
fn headers(fx: &Fixture, kernel: &str) {
    let src = fx.path(&format!("/usr/src/linux-headers-{kernel}/include"));
    std::fs::create_dir_all(src).unwrap();
    let link = fx.path(&format!("/lib/modules/{kernel}/build"));
    std::fs::create_dir_all(link.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(format!("/usr/src/linux-headers-{kernel}"), link).unwrap();
}

fn tool(fx: &Fixture, system_path: &str) {
    let p = fx.write(system_path, "#!/bin/sh\nexit 0\n");
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn running(fx: &Fixture, kernel: &str) {
    fx.write("/proc/sys/kernel/osrelease", format!("{kernel}\n"));
    std::fs::create_dir_all(fx.path(&format!("/lib/modules/{kernel}"))).unwrap();
}

/// The usual system: amdgpu built and installed for two kernels (.ko.zst), dkms and
/// update-initramfs installed, initrds in /boot, the running kernel without headers.
fn system(fx: &Fixture) {
    fx.amdgpu_tree();
    age_tree(fx);
    tool(fx, "/usr/sbin/dkms");
    tool(fx, "/usr/sbin/update-initramfs");
    for k in [K1, K2] {
        headers(fx, k);
        fx.write(&format!("/boot/initrd.img-{k}"), "initrd");
    }
    running(fx, KRUN);
}

fn patch_crat(fx: &Fixture, when: u64) {
    let p = fx.write(
        &format!("{TREE}/amd/amdkfd/kfd_crat.c"),
        "// patched\nflags |= HSA_MEM_FLAGS_HOT_PLUGGABLE;\n",
    );
    set_mtime(&p, t(when));
}

fn plan_json(fx: &Fixture) -> Value {
    fx.run(&["--format", "json", "plan"]).json()
}

fn commands(plan: &Value) -> Vec<String> {
    plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["command"].as_str().unwrap().to_string())
        .collect()
}

fn kernel<'a>(plan_or_pkg: &'a Value, k: &str) -> &'a Value {
    let kernels = if plan_or_pkg["kernels"].is_array() {
        &plan_or_pkg["kernels"]
    } else {
        &plan_or_pkg["trees"][0]["dkms"]["kernels"]
    };
    kernels
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["kernel"] == k)
        .unwrap_or_else(|| panic!("kernel {k} not in {kernels}"))
}

#[test]
fn several_kernels_with_zst_modules_get_the_full_sequence() {
    let fx = Fixture::new();
    system(&fx);
    // K1 was built before the patch, K2 after it.
    dkms_module(&fx, K1, "amdgpu.ko.zst", BUILD_EARLY, true);
    dkms_module(&fx, K2, "amdgpu.ko.zst", BUILD_LATE, true);
    patch_crat(&fx, CHANGED);

    let run = fx.run(&["--format", "json", "plan"]);
    run.expect_code(1);
    let plan = run.json();
    let r = fx.root().display().to_string();
    let v = VERSION;
    assert_eq!(plan["chroot"], r.as_str());
    assert_eq!(plan["running_kernel"], KRUN);
    assert_eq!(plan["initramfs_tool"], "update-initramfs");
    assert_eq!(
        commands(&plan),
        vec![
            format!("kfd-audit --root {r} restore --tree /{TREE}"),
            format!("mount --bind /dev {r}/dev"),
            format!("mount --bind /proc {r}/proc"),
            format!("mount --bind /sys {r}/sys"),
            format!("chroot {r} dkms remove -m amdgpu -v {v} --all"),
            format!("chroot {r} dkms build -m amdgpu -v {v} -k {K1}"),
            format!("chroot {r} dkms install -m amdgpu -v {v} -k {K1}"),
            format!("chroot {r} dkms build -m amdgpu -v {v} -k {K2}"),
            format!("chroot {r} dkms install -m amdgpu -v {v} -k {K2}"),
            format!("chroot {r} update-initramfs -u -k {K1}"),
            format!("chroot {r} update-initramfs -u -k {K2}"),
            format!("umount {r}/sys"),
            format!("umount {r}/proc"),
            format!("umount {r}/dev"),
            "reboot".to_string(),
        ]
    );
    let steps = plan["steps"].as_array().unwrap();
    assert_eq!(steps[0]["kind"], "restore");
    assert_eq!(steps[0]["runs"], false);
    assert_eq!(steps[4]["argv"][0], "chroot");
    assert_eq!(steps[4]["argv"][2], "dkms");
    assert_eq!(steps[14]["runs"], false);

    let k1 = kernel(&plan, K1);
    assert_eq!(k1["provenance"], "built-before-change");
    assert_eq!(
        k1["installed"][0]["path"],
        format!("/lib/modules/{K1}/updates/dkms/amdgpu.ko.zst")
    );
    assert_eq!(k1["installed_matches_built"], true);
    assert_eq!(k1["built_at"], "2023-11-14T22:30:00Z");
    let k2 = kernel(&plan, K2);
    assert_eq!(k2["provenance"], "built-from-changed-sources");
    assert_eq!(
        k2["verdict"],
        "built after the change: the unsafe code is probably live"
    );
    assert_eq!(
        k2["build_log"],
        format!("/var/lib/dkms/amdgpu/{v}/{K2}/x86_64/log/make.log")
    );
    let krun = kernel(&plan, KRUN);
    assert_eq!(krun["running"], true);
    assert_eq!(krun["headers"], false);
    assert_eq!(krun["provenance"], "not-built");
    let tree = &plan["trees"][0];
    assert_eq!(tree["rebuild_for"], serde_json::json!([K1, K2]));
    assert!(
        tree["notes"][0].as_str().unwrap().starts_with(&format!(
            "kernel {KRUN} (the running kernel): no headers at /lib/modules/{KRUN}/build"
        )),
        "{}",
        tree["notes"]
    );

    // The text says it plainly, per kernel.
    let text = fx.run(&["plan"]).expect_code(1).stdout();
    assert!(
        text.starts_with(&format!(
            "kfd-audit plan: 15 steps for 1 tree (system mounted at {r}; commands run in chroot)\n"
        )),
        "{text}"
    );
    assert!(text.contains(&format!(
        "  kernel {K2} (x86_64): installed /lib/modules/{K2}/updates/dkms/amdgpu.ko.zst\n    built 2023-11-14T23:03:20Z (make.log /var/lib/dkms/amdgpu/{v}/{K2}/x86_64/log/make.log), installed 2023-11-14T23:03:25Z\n    built after the change: the unsafe code is probably live\n"
    )), "{text}");
    assert!(
        text.contains(&format!(
            "   6. chroot {r} dkms build -m amdgpu -v {v} -k {K1}\n"
        )),
        "{text}"
    );
    assert!(text.contains(" 1. kfd-audit --root"), "{text}");
    assert!(text.contains("[by hand: not run by plan --run]"), "{text}");
    assert!(
        text.contains("If the machine does not boot:\n  1. At the boot menu"),
        "{text}"
    );
    assert!(text.contains("modprobe.blacklist=amdgpu"), "{text}");
}

#[test]
fn running_kernel_with_headers_is_built_too() {
    let fx = Fixture::new();
    system(&fx);
    headers(&fx, KRUN);
    dkms_module(&fx, K1, "amdgpu.ko.xz", BUILD_LATE, true);
    patch_crat(&fx, CHANGED);
    let plan = plan_json(&fx);
    assert_eq!(
        plan["trees"][0]["rebuild_for"],
        serde_json::json!([K1, KRUN])
    );
    let cmds = commands(&plan);
    assert!(cmds
        .iter()
        .any(|c| c.ends_with(&format!("dkms build -m amdgpu -v {VERSION} -k {KRUN}"))));
    // No initrd for the running kernel: that initramfs step is skipped, and said so.
    assert!(!cmds
        .iter()
        .any(|c| c.ends_with(&format!("update-initramfs -u -k {KRUN}"))));
    let notes = plan["notes"].to_string();
    assert!(
        notes.contains(&format!("no initramfs for {KRUN} in /boot")),
        "{notes}"
    );
    assert_eq!(
        kernel(&plan, K1)["installed"][0]["path"],
        format!("/lib/modules/{K1}/updates/dkms/amdgpu.ko.xz")
    );
}

#[test]
fn restored_but_not_rebuilt_module_is_reported_and_rebuilt() {
    let fx = Fixture::new();
    system(&fx);
    dkms_module(&fx, K1, "amdgpu.ko.zst", BUILD_LATE, true);
    // The tree is clean again, but kfd_crat.c was written after the build.
    set_mtime(
        &fx.path(&format!("{TREE}/amd/amdkfd/kfd_crat.c")),
        t(RESTORED),
    );

    let scan = fx.run(&["--format", "json", "scan"]);
    scan.expect_code(1);
    let j = scan.json();
    assert_eq!(j["summary"]["modified"], 0);
    assert_eq!(j["exit_code"], 1);
    let pkg = &j["dkms"]["packages"][0];
    assert_eq!(pkg["name"], "amdgpu");
    assert_eq!(pkg["registered"], true);
    assert_eq!(pkg["source_link"], format!("/{TREE}"));
    assert_eq!(kernel(pkg, K1)["provenance"], "sources-changed-since-build");

    let plan = plan_json(&fx);
    let r = fx.root().display().to_string();
    let cmds = commands(&plan);
    assert!(!cmds.iter().any(|c| c.contains("restore")), "{cmds:?}");
    assert_eq!(
        cmds[3],
        format!("chroot {r} dkms remove -m amdgpu -v {VERSION} --all")
    );
    assert_eq!(plan["trees"][0]["needs_restore"], false);
    assert!(plan["trees"][0]["reasons"][0]
        .as_str()
        .unwrap()
        .contains("(a restore without a rebuild?)"));
}

#[test]
fn clean_tree_and_clean_module_need_nothing() {
    let fx = Fixture::new();
    system(&fx);
    dkms_module(&fx, K1, "amdgpu.ko.zst", BUILD_LATE, true);
    let run = fx.run(&["plan"]);
    run.expect_code(0);
    assert!(
        run.stdout()
            .starts_with("kfd-audit plan: nothing to do (1 tree checked)\n"),
        "{}",
        run.stdout()
    );
    assert!(run.stdout().contains(
        "built after the sources' last change, and the sources match their references: clean"
    ));
    let j = fx.run(&["--format", "json", "scan"]).expect_code(0).json();
    assert_eq!(
        kernel(&j["dkms"]["packages"][0], K1)["provenance"],
        "built-from-clean-sources"
    );
    assert_eq!(plan_json(&fx)["steps"], serde_json::json!([]));
}

#[test]
fn scan_shows_dkms_state_and_stray_module_copies() {
    let fx = Fixture::new();
    system(&fx);
    dkms_module(&fx, K1, "amdgpu.ko.zst", BUILD_EARLY, true);
    dkms_module(&fx, K2, "amdgpu.ko.zst", BUILD_LATE, false);
    fx.write(
        &format!("/lib/modules/{K1}/updates/dkms/amdgpu.ko.zst.backup"),
        "old",
    );
    fx.write(
        &format!("/lib/modules/{K1}/kernel/drivers/gpu/drm/amd/amdgpu/amdgpu.ko.xz.orig"),
        "old",
    );
    // A failed build leaves its log in build/.
    fx.write(
        &format!("/var/lib/dkms/amdgpu/{VERSION}/build/make.log"),
        "error\n",
    );
    patch_crat(&fx, CHANGED);

    let run = fx.run(&["scan", "-v"]);
    run.expect_code(1);
    let out = run.stdout();
    assert!(out.contains(&format!("DKMS state (/usr/sbin/dkms):\n  running kernel: {KRUN}\n  amdgpu/{VERSION} (registered with dkms; source /{TREE})\n")), "{out}");
    assert!(
        out.contains(&format!("    kernel {K2} (x86_64): built, not installed\n")),
        "{out}"
    );
    assert!(
        out.contains(
            // The rules find the forced flag: the wording says unsafe, not just changed.
            "built after the change: the unsafe code is in this module (built, not installed"
        ),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "    /lib/modules/{K1}/updates/dkms/amdgpu.ko.zst.backup\n"
        )),
        "{out}"
    );
    assert!(out.contains(&format!("a dkms build of amdgpu/{VERSION} failed or was interrupted: its log is /var/lib/dkms/amdgpu/{VERSION}/build/make.log")), "{out}");

    let j = fx.run(&["--format", "json", "scan"]).json();
    let d = &j["dkms"];
    assert_eq!(d["tool"], "/usr/sbin/dkms");
    // dkms status is never run for another root.
    assert_eq!(d["status_read"], false);
    let strays: Vec<&str> = d["stray_modules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        strays,
        vec![
            format!("/lib/modules/{K1}/updates/dkms/amdgpu.ko.zst.backup"),
            format!("/lib/modules/{K1}/kernel/drivers/gpu/drm/amd/amdgpu/amdgpu.ko.xz.orig"),
        ]
    );
    let k2 = kernel(&d["packages"][0], K2);
    assert_eq!(k2["installed"], serde_json::json!([]));
    assert_eq!(k2["built"].as_array().unwrap().len(), 1);

    let md = fx.run(&["--format", "markdown", "scan"]).stdout();
    assert!(md.contains("## DKMS state\n\n```text\nDKMS state"), "{md}");
}

#[test]
fn hand_replaced_module_is_judged_by_its_own_time() {
    let fx = Fixture::new();
    system(&fx);
    // Built before the change, but the installed file was swapped after it.
    dkms_module(&fx, K1, "amdgpu.ko.zst", BUILD_EARLY, true);
    let installed = fx.write(
        &format!("/lib/modules/{K1}/updates/dkms/amdgpu.ko.zst"),
        "hand-built",
    );
    set_mtime(&installed, t(BUILD_LATE));
    patch_crat(&fx, CHANGED);
    let k1 = kernel(&plan_json(&fx), K1).clone();
    assert_eq!(k1["installed_matches_built"], false);
    assert_eq!(k1["provenance"], "built-from-changed-sources");
    assert!(k1["notes"][0]
        .as_str()
        .unwrap()
        .contains("replaced or changed by hand"));
}

#[test]
fn no_dkms_binary_is_said_up_front() {
    let fx = Fixture::new();
    fx.amdgpu_tree();
    patch_crat(&fx, CHANGED);
    let plan = plan_json(&fx);
    let notes = plan["notes"].to_string();
    assert!(
        notes.contains("dkms is not installed in this system"),
        "{notes}"
    );
    assert!(
        notes.contains("no kernel to rebuild")
            || plan["trees"][0]["notes"]
                .to_string()
                .contains("no kernel to rebuild")
    );
    // Still the remove: it takes the changed module away from every kernel.
    assert!(commands(&plan)
        .iter()
        .any(|c| c.ends_with(&format!("dkms remove -m amdgpu -v {VERSION} --all"))));
    let scan = fx.run(&["--format", "json", "scan"]).json();
    assert_eq!(scan["dkms"]["tool"], Value::Null);
    assert!(scan["dkms"]["notes"][0]
        .as_str()
        .unwrap()
        .starts_with("dkms is not installed under "));
    let pkg = &scan["dkms"]["packages"][0];
    assert_eq!(pkg["registered"], false);
    assert_eq!(pkg["kernels"], serde_json::json!([]));
}

#[test]
fn read_only_root_is_remounted_first() {
    let fx = Fixture::new();
    system(&fx);
    dkms_module(&fx, K1, "amdgpu.ko.zst", BUILD_LATE, true);
    patch_crat(&fx, CHANGED);
    fx.write(
        "/proc/self/mounts",
        "/dev/nvme0n1p2 / ext4 ro,relatime 0 0\nproc /proc proc rw 0 0\n/dev/nvme0n1p1 /boot ext4 rw 0 0\n",
    );
    let plan = plan_json(&fx);
    let r = fx.root().display().to_string();
    let steps = plan["steps"].as_array().unwrap();
    assert_eq!(steps[0]["kind"], "remount");
    assert_eq!(steps[0]["command"], format!("mount -o remount,rw {r}"));
    assert_eq!(steps[1]["kind"], "restore");
    // One remount for /, none for the writable /boot.
    assert_eq!(steps.iter().filter(|s| s["kind"] == "remount").count(), 1);
}

#[test]
fn dracut_replaces_update_initramfs() {
    let fx = Fixture::new();
    fx.amdgpu_tree();
    age_tree(&fx);
    tool(&fx, "/usr/sbin/dkms");
    tool(&fx, "/usr/bin/dracut");
    headers(&fx, K1);
    fx.write(&format!("/boot/initramfs-{K1}.img"), "initrd");
    dkms_module(&fx, K1, "amdgpu.ko.xz", BUILD_LATE, true);
    patch_crat(&fx, CHANGED);
    let plan = plan_json(&fx);
    let r = fx.root().display().to_string();
    assert_eq!(plan["initramfs_tool"], "dracut");
    let cmds = commands(&plan);
    assert!(
        cmds.contains(&format!("chroot {r} dracut -f --kver {K1}")),
        "{cmds:?}"
    );
    assert!(!cmds.iter().any(|c| c.contains("update-initramfs")));

    // mkinitcpio rebuilds every preset once.
    std::fs::remove_file(fx.path("/usr/bin/dracut")).unwrap();
    tool(&fx, "/usr/bin/mkinitcpio");
    let cmds = commands(&plan_json(&fx));
    assert_eq!(
        cmds.iter().filter(|c| c.ends_with("mkinitcpio -P")).count(),
        1,
        "{cmds:?}"
    );

    // None at all: said so.
    std::fs::remove_file(fx.path("/usr/bin/mkinitcpio")).unwrap();
    let plan = plan_json(&fx);
    assert!(!commands(&plan)
        .iter()
        .any(|c| c.contains("initramfs") || c.contains("dracut")));
    assert!(plan["notes"]
        .to_string()
        .contains("no initramfs tool found"));
}

#[test]
fn markdown_plan_for_a_bug_report() {
    let fx = Fixture::new();
    system(&fx);
    dkms_module(&fx, K1, "amdgpu.ko.zst", BUILD_LATE, true);
    patch_crat(&fx, CHANGED);
    let md = fx
        .run(&["--format", "markdown", "plan"])
        .expect_code(1)
        .stdout();
    let r = fx.root().display().to_string();
    assert!(md.starts_with("# kfd-audit recovery plan\n\n"), "{md}");
    assert!(
        md.contains(&format!("## `/{TREE}` (amdgpu {VERSION})")),
        "{md}"
    );
    assert!(
        md.contains("| kernel | module | built | installed | verdict |"),
        "{md}"
    );
    assert!(md.contains(&format!("| `{K1}` | `/lib/modules/{K1}/updates/dkms/amdgpu.ko.zst` | 2023-11-14T23:03:20Z | 2023-11-14T23:03:25Z | built after the change: the unsafe code is probably live |")), "{md}");
    assert!(
        md.contains(&format!(
            "5. `chroot {r} dkms remove -m amdgpu -v {VERSION} --all` — "
        )),
        "{md}"
    );
    assert!(md.contains("## If the machine does not boot\n"), "{md}");
}

#[test]
fn unverified_tree_cannot_be_judged() {
    let fx = Fixture::new();
    fx.tree_with(TREE, None, &[("amd/amdkfd/kfd_crat.c", "int x;\n")]);
    tool(&fx, "/usr/sbin/dkms");
    headers(&fx, K1);
    dkms_module(&fx, K1, "amdgpu.ko", BUILD_LATE, true);
    let plan = plan_json(&fx);
    assert_eq!(kernel(&plan, K1)["provenance"], "unknown");
    assert_eq!(plan["steps"], serde_json::json!([]));
    assert!(plan["trees"][0]["notes"][0]
        .as_str()
        .unwrap()
        .starts_with("no clean reference covers this tree"));
}

#[test]
fn existing_blacklist_is_pointed_out() {
    let fx = Fixture::new();
    system(&fx);
    dkms_module(&fx, K1, "amdgpu.ko.zst", BUILD_LATE, true);
    patch_crat(&fx, CHANGED);
    fx.write(
        "/proc/cmdline",
        "BOOT_IMAGE=/vmlinuz root=/dev/sda2 ro modprobe.blacklist=nouveau,amdgpu\n",
    );
    fx.write(
        "/etc/default/grub",
        "GRUB_CMDLINE_LINUX_DEFAULT=\"quiet modprobe.blacklist=amdgpu\"\n",
    );
    fx.write(
        "/etc/modprobe.d/no-amd.conf",
        "# recovery\nblacklist amdgpu\n",
    );
    let notes = plan_json(&fx)["notes"].to_string();
    assert!(
        notes.contains("this boot has modprobe.blacklist=amdgpu"),
        "{notes}"
    );
    assert!(
        notes.contains("/etc/default/grub puts modprobe.blacklist=amdgpu on every boot"),
        "{notes}"
    );
    assert!(
        notes.contains("/etc/modprobe.d/no-amd.conf blacklists amdgpu"),
        "{notes}"
    );
}

// ---------------------------------------------------------------- plan --run

/// Fake `chroot`, `mount`, `umount` and `dkms` that log their arguments; the fake
/// dkms behaves as FAKE_DKMS says for one verb (e.g. `remove:unregistered`).
fn fake_tools(fx: &Fixture) -> (std::path::PathBuf, std::path::PathBuf) {
    let bin = fx.dir.path().join("fakebin");
    std::fs::create_dir_all(&bin).unwrap();
    let log = fx.dir.path().join("calls.log");
    let scripts = [
        (
            "chroot",
            "echo \"chroot $*\" >> \"$CALLS\"\nshift\nexec \"$@\"\n",
        ),
        ("mount", "echo \"mount $*\" >> \"$CALLS\"\n"),
        ("umount", "echo \"umount $*\" >> \"$CALLS\"\n"),
        (
            "update-initramfs",
            "echo \"update-initramfs $*\" >> \"$CALLS\"\n",
        ),
        (
            "dkms",
            r#"echo "dkms $*" >> "$CALLS"
case "$1:$FAKE_DKMS" in
  remove:*remove:unregistered*) echo "Error! The module/version combo: $3-$5 is not located in the DKMS tree." >&2; exit 3 ;;
  build:*build:silent-error*) echo "Building module:"; echo "Error! Bad conf" >&2; exit 0 ;;
  build:*build:fail*) echo "make: *** error" ; echo "Error! Bad return status for module build on kernel" >&2; exit 10 ;;
esac
echo "$1 done for $*"
"#,
        ),
    ];
    for (name, body) in scripts {
        let p = bin.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    (bin, log)
}

fn run_with_fakes(fx: &Fixture, fake_dkms: &str, args: &[&str]) -> (Run, String) {
    let (bin, log) = fake_tools(fx);
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kfd-audit"));
    cmd.arg("--root")
        .arg(fx.root())
        .args(args)
        .env("PATH", path)
        .env("CALLS", &log)
        .env("FAKE_DKMS", fake_dkms)
        .stdin(Stdio::null());
    let run = Run::of(cmd);
    let calls = std::fs::read_to_string(&log).unwrap_or_default();
    (run, calls)
}

/// A system whose sources are clean again but whose module was built from the
/// changed ones: the plan is a rebuild without a restore, which --run can do.
fn restored_system(fx: &Fixture) {
    system(fx);
    dkms_module(fx, K1, "amdgpu.ko.zst", BUILD_LATE, true);
    dkms_module(fx, K2, "amdgpu.ko.zst", BUILD_LATE, true);
    set_mtime(
        &fx.path(&format!("{TREE}/amd/amdkfd/kfd_crat.c")),
        t(RESTORED),
    );
}

#[test]
fn run_executes_every_step_in_the_chroot() {
    let fx = Fixture::new();
    restored_system(&fx);
    let (run, calls) = run_with_fakes(&fx, "remove:unregistered", &["plan", "--run", "--yes"]);
    run.expect_code(0);
    let r = fx.root().display().to_string();
    let v = VERSION;
    let expected = [
        format!("mount --bind /dev {r}/dev"),
        format!("mount --bind /proc {r}/proc"),
        format!("mount --bind /sys {r}/sys"),
        format!("chroot {r} dkms remove -m amdgpu -v {v} --all"),
        format!("dkms remove -m amdgpu -v {v} --all"),
        format!("chroot {r} dkms build -m amdgpu -v {v} -k {K1}"),
        format!("dkms build -m amdgpu -v {v} -k {K1}"),
        format!("chroot {r} dkms install -m amdgpu -v {v} -k {K1}"),
        format!("dkms install -m amdgpu -v {v} -k {K1}"),
        format!("chroot {r} dkms build -m amdgpu -v {v} -k {K2}"),
        format!("dkms build -m amdgpu -v {v} -k {K2}"),
        format!("chroot {r} dkms install -m amdgpu -v {v} -k {K2}"),
        format!("dkms install -m amdgpu -v {v} -k {K2}"),
        format!("chroot {r} update-initramfs -u -k {K1}"),
        format!("update-initramfs -u -k {K1}"),
        format!("chroot {r} update-initramfs -u -k {K2}"),
        format!("update-initramfs -u -k {K2}"),
        format!("umount {r}/sys"),
        format!("umount {r}/proc"),
        format!("umount {r}/dev"),
    ];
    assert_eq!(
        calls.lines().collect::<Vec<_>>(),
        expected,
        "{}",
        run.stdout()
    );
    let out = run.stdout();
    assert!(
        out.contains(&format!(
            "==> [1/13] step 1: mount --bind /dev {r}/dev\n    ok\n"
        )),
        "{out}"
    );
    // rc 3 + "not located in the DKMS tree" is fine.
    assert!(
        out.contains("    ok (not registered with dkms: nothing to remove)\n"),
        "{out}"
    );
    assert!(
        run.stderr().contains("is not located in the DKMS tree"),
        "{}",
        run.stderr()
    );
    // Output is streamed, indented.
    assert!(
        out.contains(&format!(
            "    build done for build -m amdgpu -v {v} -k {K1}\n"
        )),
        "{out}"
    );
    assert!(
        out.contains("All 13 commands succeeded.\nNow reboot (reboot)."),
        "{out}"
    );
}

#[test]
fn run_stops_at_a_silent_dkms_error() {
    let fx = Fixture::new();
    restored_system(&fx);
    let (run, calls) = run_with_fakes(&fx, "build:silent-error", &["plan", "--run", "--yes"]);
    run.expect_code(2);
    let out = run.stdout();
    let r = fx.root().display().to_string();
    assert!(out.contains(&format!("FAILED: step 5 (chroot {r} dkms build -m amdgpu -v {VERSION} -k {K1}): dkms printed an error but exited 0: Error! Bad conf\n")), "{out}");
    assert!(
        out.contains(&format!(
            "read {r}/var/lib/dkms/amdgpu/{VERSION}/build/make.log"
        )),
        "{out}"
    );
    assert!(out.contains(&format!("The bind mounts are still in place; to leave the system as it was: umount {r}/sys ; umount {r}/proc ; umount {r}/dev")), "{out}");
    assert!(out.contains("Do not reboot yet."), "{out}");
    // Nothing after the failed step ran.
    assert!(!calls.contains("dkms install"), "{calls}");
    assert!(!calls.contains("umount"), "{calls}");
}

#[test]
fn run_stops_at_a_failed_build() {
    let fx = Fixture::new();
    restored_system(&fx);
    let (run, calls) = run_with_fakes(&fx, "build:fail", &["plan", "--run", "--yes"]);
    run.expect_code(2);
    assert!(
        run.stdout().contains("): exit status 10\n"),
        "{}",
        run.stdout()
    );
    assert_eq!(calls.matches("dkms build").count(), 2, "{calls}"); // chroot line + dkms line
}

#[test]
fn run_without_terminal_or_yes_refuses() {
    let fx = Fixture::new();
    restored_system(&fx);
    let (run, calls) = run_with_fakes(&fx, "", &["plan", "--run"]);
    run.expect_code(2);
    assert!(
        run.stderr()
            .contains("there is no terminal to ask on: pass --yes"),
        "{}",
        run.stderr()
    );
    assert_eq!(calls, "");
    // --yes alone is refused by the argument parser.
    fx.run(&["plan", "--yes"]).expect_code(2);
    // --run prints text only.
    let (run, _) = run_with_fakes(&fx, "", &["--format", "json", "plan", "--run", "--yes"]);
    run.expect_code(2);
}

#[test]
fn run_does_not_rebuild_changed_sources() {
    let fx = Fixture::new();
    system(&fx);
    dkms_module(&fx, K1, "amdgpu.ko.zst", BUILD_LATE, true);
    patch_crat(&fx, CHANGED);
    let (run, calls) = run_with_fakes(&fx, "", &["plan", "--run", "--yes"]);
    run.expect_code(2);
    let err = run.stderr();
    assert!(
        err.contains(&format!(
            "/{TREE} still differs from its references, and plan --run does not restore files"
        )),
        "{err}"
    );
    assert!(err.contains("run 'kfd-audit --root"), "{err}");
    assert_eq!(calls, "", "nothing may run");
}

#[test]
fn another_version_installed_for_a_kernel_is_left_alone() {
    let fx = Fixture::new();
    system(&fx);
    dkms_module(&fx, K1, "amdgpu.ko.zst", BUILD_LATE, true);
    // amdgpu/6.7.0 is registered and installed for K2.
    let other = "/var/lib/dkms/amdgpu/6.7.0";
    fx.write(&format!("{other}/{K2}/x86_64/module/amdgpu.ko.zst"), "6.7");
    std::os::unix::fs::symlink(
        format!("6.7.0/{K2}/x86_64"),
        fx.path(&format!("/var/lib/dkms/amdgpu/kernel-{K2}-x86_64")),
    )
    .unwrap();
    fx.write(
        &format!("/lib/modules/{K2}/updates/dkms/amdgpu.ko.zst"),
        "6.7",
    );
    patch_crat(&fx, CHANGED);
    let plan = plan_json(&fx);
    let pkg = &plan["trees"][0]["dkms"];
    assert_eq!(pkg["other_versions"], serde_json::json!(["6.7.0"]));
    assert!(pkg["kernels"]
        .as_array()
        .unwrap()
        .iter()
        .all(|k| k["kernel"] != K2));
    assert!(pkg["notes"].to_string().contains(&format!(
        "amdgpu/6.7.0 (not this tree's version) is installed for kernel {K2}"
    )));
    assert_eq!(plan["trees"][0]["rebuild_for"], serde_json::json!([K1]));
}

#[test]
fn tree_without_dkms_conf_is_restored_but_not_rebuilt() {
    let fx = Fixture::new();
    system(&fx);
    dkms_module(&fx, K1, "amdgpu.ko.zst", BUILD_LATE, true);
    patch_crat(&fx, CHANGED);
    std::fs::remove_file(fx.path(&format!("{TREE}/dkms.conf"))).unwrap();
    let plan = plan_json(&fx);
    let cmds = commands(&plan);
    assert!(cmds[0].contains(" restore --tree "), "{cmds:?}");
    assert!(!cmds.iter().any(|c| c.contains("dkms ")), "{cmds:?}");
    assert!(plan["notes"]
        .to_string()
        .contains("no usable dkms.conf, so dkms cannot rebuild it"));
}

#[test]
fn run_rebuilds_when_only_a_backup_file_was_added() {
    let fx = Fixture::new();
    restored_system(&fx);
    // A copy left in the tree: not compiled, so it does not block the rebuild.
    fx.write(
        &format!("{TREE}/amd/amdkfd/kfd_crat.c.patched"),
        "// patched copy\n",
    );
    let (run, calls) = run_with_fakes(&fx, "", &["plan", "--run", "--yes"]);
    run.expect_code(0);
    let out = run.stdout();
    // The copy is reported as a backup of kfd_crat.c, not as a changed tree file:
    // there is nothing to restore, only the rebuild.
    assert!(!out.contains("restore --tree"), "{out}");
    assert!(calls.contains("dkms build"), "{calls}");
}

/// The lines `kernel_text` writes for one kernel, without their indent: the same
/// words wherever the module is described.
fn kernel_block(text: &str, k: &str) -> Vec<String> {
    let mut lines = text
        .lines()
        .skip_while(|l| !l.trim_start().starts_with(&format!("kernel {k} (")));
    let first = lines
        .next()
        .unwrap_or_else(|| panic!("kernel {k} not in {text}"));
    let indent = first.len() - first.trim_start().len();
    std::iter::once(first.trim_start().to_string())
        .chain(
            lines
                .take_while(|l| l.len() - l.trim_start().len() > indent)
                .map(|l| l.trim_start().to_string()),
        )
        .collect()
}

#[test]
fn plan_and_scan_say_the_same_about_the_module() {
    let fx = Fixture::new();
    system(&fx);
    dkms_module(&fx, K1, "amdgpu.ko.zst", BUILD_EARLY, true);
    dkms_module(&fx, K2, "amdgpu.ko.zst", BUILD_LATE, true);
    patch_crat(&fx, CHANGED);

    // The full report (-v) carries the DKMS state in the plan's words.
    let scan = fx.run(&["scan", "-v"]).expect_code(1).stdout();
    let plan = fx.run(&["plan"]).expect_code(1).stdout();
    for k in [K1, K2, KRUN] {
        assert_eq!(
            kernel_block(&plan, k),
            kernel_block(&scan, k),
            "{k}:\n{scan}\n{plan}"
        );
    }
    // The rules ran in both: the forced flag makes the code unsafe, not just changed.
    assert!(
        kernel_block(&plan, K2)
            .contains(&"built after the change: the unsafe code is probably live".to_string()),
        "{plan}"
    );

    let scan = fx.run(&["--format", "json", "scan"]).json();
    let plan = plan_json(&fx);
    for k in [K1, K2, KRUN] {
        let s = kernel(&scan["dkms"]["packages"][0], k);
        let p = kernel(&plan, k);
        assert_eq!(s["verdict"], p["verdict"], "{k}");
        assert_eq!(s["provenance"], p["provenance"], "{k}");
    }
}

#[test]
fn plan_reasons_name_the_rule_findings() {
    let fx = Fixture::new();
    system(&fx);
    dkms_module(&fx, K2, "amdgpu.ko.zst", BUILD_LATE, true);
    patch_crat(&fx, CHANGED);

    // The scan's words for the finding (the full report names the offending line).
    let scan = fx.run(&["scan", "-v"]).expect_code(1).stdout();
    let finding = scan
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("CRITICAL ") && l.contains("HSA_MEM_FLAGS_HOT_PLUGGABLE"))
        .unwrap_or_else(|| panic!("no critical finding in {scan}"))
        .to_string();
    let reason = format!("amd/amdkfd/kfd_crat.c: {finding}");

    let plan = plan_json(&fx);
    let tree = &plan["trees"][0];
    let reasons: Vec<&str> = tree["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert!(
        reasons.contains(&reason.as_str()),
        "{reason} not in {reasons:?}"
    );
    assert!(tree["findings"].as_u64().unwrap() >= 1, "{tree}");
    assert!(
        reasons[0].ends_with(&format!("; {} finding(s)", tree["findings"])),
        "{reasons:?}"
    );
    let text = fx.run(&["plan"]).expect_code(1).stdout();
    assert!(
        text.contains(&format!("  needs recovery: {reason}\n")),
        "{text}"
    );
}

#[test]
fn plan_no_rules_runs_no_rule() {
    let fx = Fixture::new();
    system(&fx);
    dkms_module(&fx, K2, "amdgpu.ko.zst", BUILD_LATE, true);
    patch_crat(&fx, CHANGED);

    let plan = fx
        .run(&["--format", "json", "plan", "--no-rules"])
        .expect_code(1)
        .json();
    let tree = &plan["trees"][0];
    assert_eq!(tree["findings"], 0, "{tree}");
    assert!(
        !tree["reasons"].to_string().contains("CRITICAL"),
        "{}",
        tree["reasons"]
    );
    // Without the rules the change is only known to be a change, in both commands.
    let verdict = "built after the change: the changed code is probably live";
    assert_eq!(kernel(&plan, K2)["verdict"], verdict);
    let scan = fx.run(&["--format", "json", "scan", "--no-rules"]).json();
    assert_eq!(kernel(&scan["dkms"]["packages"][0], K2)["verdict"], verdict);
    // The same steps: the rules change the words, not what has to be done.
    assert_eq!(commands(&plan), commands(&plan_json(&fx)));
}

/// Issue 15, item 3: clean sources and a .ko copied in by hand after dkms built it.
/// The scan must not say clean, and the plan must rebuild and reinstall.
#[test]
fn hand_replaced_module_with_clean_sources_is_found_and_planned() {
    let fx = Fixture::new();
    system(&fx);
    dkms_module(&fx, K1, "amdgpu.ko.zst", BUILD_LATE, true);
    let installed = fx.write(
        &format!("/lib/modules/{K1}/updates/dkms/amdgpu.ko.zst"),
        "hand-built",
    );
    set_mtime(&installed, t(BUILD_LATE + 10));
    let scan = fx.run(&["--format", "json", "scan", "--sections", "tree"]);
    scan.expect_code(1);
    let k1 = kernel(&scan.json()["dkms"]["packages"][0], K1).clone();
    assert_eq!(k1["provenance"], "installed-not-built", "{k1}");
    assert!(k1["verdict"]
        .as_str()
        .unwrap()
        .contains("rebuild and reinstall"));
    let text = fx.run(&["scan", "--sections", "tree"]).stdout();
    assert!(text.contains("not the one dkms built"), "{text}");
    let plan = plan_json(&fx);
    let cmds = commands(&plan).join("\n");
    assert!(cmds.contains("dkms remove -m amdgpu"), "{cmds}");
    assert!(
        cmds.contains(&format!("dkms install -m amdgpu -v {VERSION} -k {K1}")),
        "{cmds}"
    );
}

/// Issue 15, item 8: plan --run under --root when the mounted system has no dkms:
/// refused before anything runs (no bind mount), naming the system under the root.
#[test]
fn run_without_dkms_in_the_root_is_refused_before_any_mount() {
    let fx = Fixture::new();
    fx.amdgpu_tree();
    age_tree(&fx);
    headers(&fx, K1);
    running(&fx, KRUN);
    dkms_module(&fx, K1, "amdgpu.ko.zst", BUILD_LATE, true);
    fx.write(
        &format!("/lib/modules/{K1}/updates/dkms/amdgpu.ko.zst"),
        "by hand",
    );
    let before = std::fs::read_dir(fx.root()).unwrap().count();
    let run = fx.run(&["plan", "--run", "--yes"]);
    run.expect_code(2);
    let r = fx.root().display().to_string();
    assert!(
        run.stderr()
            .contains(&format!("dkms is not installed in the system under {r}")),
        "{}",
        run.stderr()
    );
    assert!(!run.stdout().contains("==> [1/"), "{}", run.stdout());
    assert!(
        !run.stderr().contains("/var/lib/dkms/amdgpu"),
        "{}",
        run.stderr()
    );
    // Nothing was mounted or created under the root.
    assert!(!fx.path("/proc/self").exists() || before > 0);
    assert_eq!(before, std::fs::read_dir(fx.root()).unwrap().count());
}

/// Issue 15 (confusing): the fallback for a tree that is not amdgpu names its own
/// module, not amdgpu.
#[test]
fn fallback_names_the_trees_own_module() {
    let fx = Fixture::new();
    let conf = "PACKAGE_NAME=\"kfdtoy\"\nPACKAGE_VERSION=\"1.0\"\nBUILT_MODULE_NAME[0]=\"kfdtoy\"\nDEST_MODULE_LOCATION[0]=\"/updates/dkms\"\n";
    let src = "int kfdtoy;\n";
    fx.write("/usr/src/kfdtoy-1.0/dkms.conf", conf);
    fx.write("/usr/src/kfdtoy-1.0/kfdtoy.c", "int kfdtoy = 1;\n");
    fx.write(
        "/var/lib/dpkg/info/kfdtoy-dkms.md5sums",
        format!(
            "{}  usr/src/kfdtoy-1.0/dkms.conf\n{}  usr/src/kfdtoy-1.0/kfdtoy.c\n",
            crate::fixture::md5_hex(conf.as_bytes()),
            crate::fixture::md5_hex(src.as_bytes())
        ),
    );
    let plan = fx
        .run(&["--format", "json", "plan", "--tree", "/usr/src/kfdtoy-1.0"])
        .json();
    let fallback = plan["fallback"].to_string();
    assert!(fallback.contains("modprobe.blacklist=kfdtoy"), "{fallback}");
    assert!(!fallback.contains("amdgpu"), "{fallback}");
}

/// Issue 15, item 4: an added file the build reads blocked `plan --run`, and
/// `restore` had nothing to offer. Now `restore --yes` moves it into the quarantine,
/// its next steps are the rebuild, and `plan --run` goes through.
#[test]
fn an_added_build_file_is_no_dead_end() {
    let fx = Fixture::new();
    restored_system(&fx);
    fx.write(&format!("{TREE}/amd/amdkfd/Kbuild"), "obj-y += extra.o\n");
    let (run, calls) = run_with_fakes(&fx, "", &["plan", "--run", "--yes"]);
    run.expect_code(2);
    assert!(run.stderr().contains("still differs"), "{}", run.stderr());
    // Issue 15: the advice to run it again keeps the --root that was used.
    assert!(
        run.stderr().contains(&format!(
            "then 'kfd-audit --root {} plan --run' again",
            fx.root().display()
        )),
        "{}",
        run.stderr()
    );
    assert_eq!(calls, "");

    let restore = fx.run(&["restore", "--yes"]);
    restore.expect_code(0);
    let out = restore.stdout();
    assert!(out.contains("moved away"), "{out}");
    let next = out
        .split("Next, rebuild")
        .nth(1)
        .unwrap_or_else(|| panic!("{out}"));
    assert!(next.trim_start().contains("dkms remove"), "{next}");
    assert!(!next.contains("kfd-audit"), "{next}");

    let (run, calls) = run_with_fakes(&fx, "", &["plan", "--run", "--yes"]);
    run.expect_code(0);
    assert!(calls.contains("dkms build"), "{calls}");
}

/// Issue 17: `plan --run` on an 80x25 console: every command it will run stands on
/// the screen with "Run these N commands now?"; what to do if the machine does not
/// boot comes before them. Ctrl-C there shows the cursor and exits 130.
#[test]
fn plan_run_question_and_its_commands_share_one_screen() {
    use crate::restore_pty::{exit_code, keys, screen_before, spawn_console};
    let fx = Fixture::new();
    restored_system(&fx);
    let plan = plan_json(&fx);
    let runnable: Vec<String> = plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["runs"] == true)
        .map(|s| s["command"].as_str().unwrap().to_string())
        .collect();
    assert!(runnable.len() >= 8, "{runnable:?}");
    let (bin, log) = fake_tools(&fx);
    let command = || {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kfd-audit"));
        cmd.arg("--root")
            .arg(fx.root())
            .args(["--color", "never", "plan", "--run"])
            .env(
                "PATH",
                format!(
                    "{}:{}",
                    bin.display(),
                    std::env::var("PATH").unwrap_or_default()
                ),
            )
            .env("CALLS", &log);
        cmd
    };
    let question = format!("Run these {} commands now?", runnable.len());
    for quiet in [false, true] {
        let mut cmd = command();
        if quiet {
            cmd.arg("-q");
        }
        let mut p = spawn_console(cmd, true);
        let before = p.exp_string(&question).unwrap();
        let screen = screen_before(&before);
        for c in &runnable {
            assert!(
                screen.iter().any(|l| l.contains(c.as_str())),
                "{c} is not on the screen with the question:\n{}",
                screen.join("\n")
            );
        }
        assert!(before.contains("If the machine does not boot"), "{before}");
        let text = before.split("If the machine does not boot").nth(1).unwrap();
        assert!(
            text.contains("Steps (as root"),
            "the fallback comes first:\n{before}"
        );
        if quiet {
            assert!(before.lines().count() < ROWS_QUIET, "{before}");
        }
        keys(&mut p, "n");
        p.exp_string("nothing was run.").unwrap();
        assert_eq!(exit_code(&mut p), 1);
    }
    assert_eq!(std::fs::read_to_string(&log).unwrap_or_default(), "");

    let mut p = spawn_console(command(), false);
    p.exp_string("[y/N]").unwrap();
    p.send_control('c').unwrap();
    p.flush().unwrap();
    let after = p.exp_eof().unwrap();
    assert!(after.contains("\x1b[?25h"), "{after:?}");
    match p.process().wait().expect("wait") {
        rexpect::process::WaitStatus::Exited(_, code) => assert_eq!(code, 130),
        other => panic!("not a normal exit: {other:?}"),
    }
    assert_eq!(std::fs::read_to_string(&log).unwrap_or_default(), "");
}

/// `plan --run -q` fits the whole question on one screen.
const ROWS_QUIET: usize = crate::restore_pty::ROWS;
