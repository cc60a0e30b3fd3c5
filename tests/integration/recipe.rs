//! What DKMS will really compile: overrides in /etc/dkms, PATCH[n] files, inline
//! here-document patches and build scripts, on fake roots through the real binary.

use crate::fixture::{Fixture, CRAT_C, DKMS_CONF, TREE, VERSION};
use serde_json::Value;
use std::process::Command;

/// The real incident's block, as it was inserted after the upstream flag handling.
pub const INCIDENT: &str =
    "\t\t\t/* RDNA1 FIX: Allow fine-grained memory for Navi 10 (0x731F) when spoofed as gfx1030 */
\t\t\tif (dev->gpu && dev->gpu->adev && dev->gpu->adev->pdev) {
\t\t\t\tuint16_t device_id = dev->gpu->adev->pdev->device;
\t\t\t\tif (device_id == 0x731F && heap_type != HSA_MEM_HEAP_TYPE_SYSTEM) {
\t\t\t\t\tpr_debug(\"KFD: Enabling fine-grained for RDNA1 0x%x\\n\", device_id);
\t\t\t\t\tflags |= HSA_MEM_FLAGS_HOT_PLUGGABLE;
\t\t\t\t}
\t\t\t}
";

/// kfd_crat.c with the incident block after the NON_VOLATILE handling.
pub fn crat_with_incident() -> String {
    let anchor = "\t\t\t\tflags |= HSA_MEM_FLAGS_NON_VOLATILE;\n";
    let at = CRAT_C.find(anchor).unwrap() + anchor.len();
    format!("{}{}{}", &CRAT_C[..at], INCIDENT, &CRAT_C[at..])
}

/// A unified diff (as `diff -u` writes it, -p1 paths) turning `old` into `new`.
pub fn unified_diff(rel: &str, old: &str, new: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("old"), old).unwrap();
    std::fs::write(dir.path().join("new"), new).unwrap();
    let out = Command::new("diff")
        .args([
            "-u",
            "--label",
            &format!("a/{rel}"),
            "--label",
            &format!("b/{rel}"),
            "old",
            "new",
        ])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "diff found no difference");
    String::from_utf8(out.stdout).unwrap()
}

fn build(j: &Value) -> &Value {
    &j["trees"][0]["build"]
}

fn findings(j: &Value) -> Vec<&Value> {
    build(j)["findings"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default()
}

fn worst(j: &Value) -> (u64, u64) {
    (
        j["summary"]["critical"].as_u64().unwrap(),
        j["summary"]["high"].as_u64().unwrap(),
    )
}

#[test]
fn clean_tree_without_overrides_has_no_build_section() {
    let fx = Fixture::new();
    fx.amdgpu_tree();
    let j = fx.run(&["--format", "json", "scan"]).expect_code(0).json();
    assert!(j["trees"][0].get("build").is_none(), "{j}");
}

#[test]
fn harmless_override_is_reported_as_an_override_only() {
    let fx = Fixture::new();
    fx.amdgpu_tree();
    // A build fix of the kind people post for newer kernels: extra make flags.
    fx.write(
        &format!("/etc/dkms/amdgpu-{VERSION}.conf"),
        "# fix the build on 6.8 kernels\nMAKE[0]=\"make -j4 KERNELRELEASE=$kernelver CFLAGS_MODULE=-Wno-error -C $kernel_source_dir M=$dkms_tree/$module/$module_version/build\"\n",
    );
    let run = fx.run(&["--format", "json", "scan"]);
    run.expect_code(1);
    let j = run.json();
    let o = &build(&j)["overrides"][0];
    assert_eq!(o["path"], format!("/etc/dkms/amdgpu-{VERSION}.conf"));
    assert_eq!(o["kind"], "module-version");
    assert_eq!(o["sets"], serde_json::json!(["MAKE[0]"]));
    let f = findings(&j);
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0]["rule"], "DKMS-OVERRIDE-001");
    assert_eq!(f[0]["severity"], "medium");
    assert_eq!(f[0]["line"], 2);
    assert_eq!(worst(&j), (0, 0));
    let text = fx.run(&["scan", "-v"]).stdout();
    assert!(
        text.contains(&format!("what dkms will build for /{TREE}")),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "override /etc/dkms/amdgpu-{VERSION}.conf sets MAKE[0]"
        )),
        "{text}"
    );
}

#[test]
fn patch_named_by_dkms_conf_is_found_with_its_target() {
    let fx = Fixture::new();
    fx.amdgpu_tree();
    let diff = unified_diff("amd/amdkfd/kfd_crat.c", CRAT_C, &crat_with_incident());
    fx.write(&format!("{TREE}/patches/rdna1-fine-grain.patch"), &diff);
    fx.write(
        &format!("{TREE}/dkms.conf"),
        format!("{DKMS_CONF}PATCH[0]=\"rdna1-fine-grain.patch\"\n"),
    );
    let j = fx.run(&["--format", "json", "scan"]).expect_code(1).json();
    let p = &build(&j)["patches"][0];
    assert_eq!(p["path"], format!("/{TREE}/patches/rdna1-fine-grain.patch"));
    assert_eq!(p["inline"], false);
    assert_eq!(p["targets"], serde_json::json!(["amd/amdkfd/kfd_crat.c"]));
    assert!(
        findings(&j).iter().any(|f| f["rule"] == "DKMS-PATCH-001"),
        "{j}"
    );
    // The incident arriving as a build-time patch is judged like an in-place change:
    // critical, on the patch file, naming the file it changes and the line there.
    let crit = findings(&j)
        .into_iter()
        .find(|f| f["severity"] == "critical")
        .unwrap_or_else(|| panic!("no critical finding: {j}"));
    assert_eq!(crit["rule"], "KFD-MEM-001");
    assert_eq!(
        crit["path"],
        format!("/{TREE}/patches/rdna1-fine-grain.patch")
    );
    assert_eq!(crit["target"], "amd/amdkfd/kfd_crat.c");
    let patched = crat_with_incident();
    let line = patched
        .lines()
        .position(|l| l == "\t\t\t\t\tflags |= HSA_MEM_FLAGS_HOT_PLUGGABLE;")
        .unwrap()
        + 1;
    assert_eq!(crit["line"], line as u64);
    // The tree files themselves still match the package (but dkms.conf).
    assert_eq!(j["summary"]["modified"], 1);
    let text = fx.run(&["scan", "-v"]).stdout();
    assert!(
        text.contains(&format!(
            "CRITICAL KFD-MEM-001 /{TREE}/patches/rdna1-fine-grain.patch:{line} (in the patch to amd/amdkfd/kfd_crat.c)"
        )),
        "{text}"
    );
}

#[test]
fn inline_here_document_patch_in_an_override_is_found() {
    let fx = Fixture::new();
    fx.amdgpu_tree();
    let diff = unified_diff("amd/amdkfd/kfd_crat.c", CRAT_C, &crat_with_incident());
    let conf = format!(
        "MAKE[0]=\"cat > rdna1.patch <<'EOF'\n{diff}EOF\npatch -p1 < rdna1.patch && make -j4 KERNELRELEASE=$kernelver -C $kernel_source_dir M=$dkms_tree/$module/$module_version/build\"\n"
    );
    fx.write(&format!("/etc/dkms/amdgpu-{VERSION}.conf"), &conf);
    let j = fx.run(&["--format", "json", "scan"]).expect_code(1).json();
    let p = &build(&j)["patches"][0];
    assert_eq!(p["path"], format!("/etc/dkms/amdgpu-{VERSION}.conf"));
    assert_eq!(p["inline"], true);
    assert_eq!(
        p["line"], 2,
        "the patch text starts on the line after the here-document opener"
    );
    assert_eq!(p["targets"], serde_json::json!(["amd/amdkfd/kfd_crat.c"]));
    // Every file under /usr/src matches the package: only the override tells.
    assert_eq!(j["summary"]["modified"], 0);
    let crit: Vec<&Value> = findings(&j)
        .into_iter()
        .filter(|f| f["severity"] == "critical")
        .collect();
    assert!(!crit.is_empty(), "{j}");
    assert!(
        crit.iter()
            .all(|f| f["path"] == format!("/etc/dkms/amdgpu-{VERSION}.conf")
                && f["target"] == "amd/amdkfd/kfd_crat.c"),
        "{crit:?}"
    );
}

#[test]
fn changed_build_script_missing_patch_and_framework_redirect() {
    let fx = Fixture::new();
    fx.amdgpu_tree();
    // The PRE_BUILD script named by dkms.conf is not in the package: an added script.
    fx.write(
        &format!("{TREE}/amd/dkms/pre-build.sh"),
        "#!/bin/sh\nsed -i 's/x/y/' amd/amdkfd/kfd_crat.c\n",
    );
    fx.write("/etc/dkms/amdgpu.conf", "PATCH[0]=\"gone.patch\"\n");
    fx.write(
        "/etc/dkms/framework.conf",
        "# dkms framework\n#source_tree=/usr/src\nsource_tree=\"/opt/elsewhere\"\n",
    );
    let j = fx.run(&["--format", "json", "scan"]).expect_code(1).json();
    let f = findings(&j);
    let by_rule = |r: &str| {
        f.iter()
            .find(|x| x["rule"] == r)
            .copied()
            .unwrap_or_else(|| panic!("no {r} in {f:?}"))
    };
    let script = by_rule("DKMS-SCRIPT-001");
    assert_eq!(script["severity"], "high");
    assert_eq!(script["path"], format!("/{TREE}/amd/dkms/pre-build.sh"));
    let missing = by_rule("DKMS-PATCH-002");
    assert_eq!(missing["path"], "/etc/dkms/amdgpu.conf");
    assert_eq!(missing["line"], 1);
    let fw = by_rule("DKMS-FRAMEWORK-001");
    assert_eq!(fw["path"], "/etc/dkms/framework.conf");
    assert_eq!(fw["line"], 3);
    assert_eq!(fw["text"], "sets source_tree");
}

#[test]
fn per_kernel_override_and_unrelated_module_override() {
    let fx = Fixture::new();
    fx.amdgpu_tree();
    fx.write(
        &format!("/etc/dkms/amdgpu-{VERSION}-6.8.0-48-generic.conf"),
        "POST_BUILD=\"true\"\n",
    );
    fx.write("/etc/dkms/nvidia.conf", "MAKE[0]=\"make\"\n");
    fx.write("/etc/dkms/amdgpu-9.9.conf", "MAKE[0]=\"make\"\n");
    let j = fx.run(&["--format", "json", "scan"]).expect_code(1).json();
    let paths: Vec<&str> = build(&j)["overrides"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        [format!("/etc/dkms/amdgpu-{VERSION}-6.8.0-48-generic.conf")]
    );
    assert_eq!(build(&j)["overrides"][0]["kind"], "module-version-kernel");
}

#[test]
fn plan_moves_the_override_aside_before_rebuilding() {
    let fx = Fixture::new();
    fx.amdgpu_tree();
    let conf = format!("/etc/dkms/amdgpu-{VERSION}.conf");
    fx.write(&conf, "MAKE[0]=\"make -j4\"\n");
    // A copy disabled earlier is kept: the new name must not overwrite it.
    fx.write(
        &format!("{conf}.disabled-by-kfd-audit"),
        "MAKE[0]=\"older\"\n",
    );
    let j = fx.run(&["--format", "json", "plan"]).expect_code(1).json();
    let steps: Vec<&Value> = j["steps"].as_array().unwrap().iter().collect();
    let mv = steps
        .iter()
        .find(|s| s["kind"] == "move-aside")
        .unwrap_or_else(|| panic!("{j}"));
    assert_eq!(
        mv["argv"],
        // With --root the command runs inside the mounted system.
        serde_json::json!([
            "chroot",
            fx.root(),
            "mv",
            conf,
            format!("{conf}.disabled-by-kfd-audit.1")
        ])
    );
    assert!(
        j["trees"][0]["reasons"].to_string().contains("override"),
        "{j}"
    );
    let mv_at = mv["number"].as_u64().unwrap();
    assert!(steps
        .iter()
        .filter(|s| s["kind"] == "dkms-remove")
        .all(|s| s["number"].as_u64().unwrap() > mv_at));
}
