//! Edits at build time, on the real 6.12 tree: what a dkms build changes in the copy it
//! compiles (a here-document patch at the top level of an /etc/dkms override, `sed -i` and
//! `perl -pi` in a script or a MAKE value, `cp` over a source, a `PATCH[n]` file) is judged
//! with the same rules as a change made in place, on the source file it edits. Each
//! dangerous case beside harmless look-alikes (`make clean`, warning flags in a Makefile, a
//! here-document writing a header without driver semantics, a build fix for a renamed
//! kernel API). The files under /usr/src stay clean: the tree's file is the text before
//! the edit, so the edit is always judged against it (there is no hashes-only mode here).

use crate::corpus::{corpus, CorpusRoot, PRIMARY};
use crate::recipe::unified_diff;
use serde_json::Value;

const DEVICE: &str = "amd/amdkfd/kfd_device.c";
const TOPOLOGY: &str = "amd/amdkfd/kfd_topology.c";
const VM_H: &str = "amd/amdgpu/amdgpu_vm.h";
const GPUVM: &str = "amd/amdgpu/amdgpu_amdkfd_gpuvm.c";
const CRAT: &str = "amd/amdkfd/kfd_crat.c";
const MAKE: &str = "make -j4 KERNELRELEASE=$kernelver -C $kernel_source_dir M=$dkms_tree/$module/$module_version/build";
const BUILD: &str = "$dkms_tree/$module/$module_version/build";

/// What a case puts on the system: files under the root (`/etc/...`) or in the tree
/// (`tree:...`, written over the tree's own file when it has one).
struct Case {
    name: &'static str,
    files: Vec<(String, String)>,
    /// Dangerous: the source file a high/critical finding must be about, and its rule.
    bad: Option<(&'static str, &'static str)>,
}

fn tree_text(cr: &CorpusRoot, rel: &str) -> String {
    std::fs::read_to_string(cr.path(&format!("{PRIMARY}/{rel}"))).unwrap()
}

/// `(path, target, rule, severity, text)` of the build findings.
fn build_findings(j: &Value) -> Vec<(String, String, String, String, String)> {
    j["trees"][0]["build"]["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| {
            let s = |k: &str| f[k].as_str().unwrap_or("").to_string();
            (s("path"), s("target"), s("rule"), s("severity"), s("text"))
        })
        .collect()
}

fn run(make: impl Fn(&CorpusRoot) -> Vec<Case>) {
    let Some(corpus) = corpus() else { return };
    let probe = CorpusRoot::new(&corpus, false);
    let cases = make(&probe);
    drop(probe);
    let mut failures = Vec::new();
    for c in cases {
        let cr = CorpusRoot::new(&corpus, false);
        for (path, text) in &c.files {
            let p = match path.strip_prefix("tree:") {
                Some(rel) => {
                    let rel = format!("{PRIMARY}/{rel}");
                    if cr.path(&rel).exists() {
                        cr.unshare(&rel);
                    }
                    cr.path(&rel)
                }
                None => cr.root().join(path.trim_start_matches('/')),
            };
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, text).unwrap();
        }
        let tree = cr.path(PRIMARY);
        let j = cr
            .run(&["--format", "json", "scan", "--tree", tree.to_str().unwrap()])
            .json();
        let found = build_findings(&j);
        // The tree's sources themselves are untouched: no finding on any tree file.
        let on_files: Vec<String> = j["trees"][0]["files"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| !f["findings"].as_array().unwrap().is_empty())
            .map(|f| f["path"].to_string())
            .collect();
        if !on_files.is_empty() {
            failures.push(format!("{}: tree files flagged: {on_files:?}", c.name));
        }
        match c.bad {
            Some((target, rule)) => {
                if !found
                    .iter()
                    .any(|f| f.1 == target && f.2 == rule && (f.3 == "high" || f.3 == "critical"))
                {
                    failures.push(format!(
                        "{}: no high/critical {rule} on {target}: {found:#?}",
                        c.name
                    ));
                }
            }
            None => {
                // Quiet: nothing about a source above low, nothing high anywhere (an
                // override that sets MAKE stays the medium notice it always was).
                let loud: Vec<_> = found
                    .iter()
                    .filter(|f| {
                        f.3 == "high" || f.3 == "critical" || (!f.1.is_empty() && f.3 == "medium")
                    })
                    .collect();
                if !loud.is_empty() {
                    failures.push(format!("{}: not quiet: {loud:#?}", c.name));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn conf(name: &str) -> String {
    format!("/etc/dkms/{name}")
}

#[test]
fn build_time_edits_are_judged_on_the_file_they_edit() {
    run(|cr| {
        let device = tree_text(cr, DEVICE);
        // Polaris in a slot without PCIe atomics: the requirement switched off.
        let no_atomics = device.replacen(
            "\t\tif (asic_type != CHIP_HAWAII && !vf)\n\t\t\tkfd->device_info.needs_pci_atomics = true;",
            "\t\tif (asic_type != CHIP_HAWAII && !vf)\n\t\t\tkfd->device_info.needs_pci_atomics = false;",
            1,
        );
        assert_ne!(device, no_atomics);
        let heredoc = format!(
            "# RX 580 on a board without PCIe atomics\npatches_dir={BUILD}\npatch_file=polaris-no-atomics.patch\ncat << 'EOF' > $patches_dir/$patch_file\n{}EOF\nMAKE[0]=\"cd {BUILD} && patch -p1 < $patch_file && {MAKE}\"\n",
            unified_diff(DEVICE, &device, &no_atomics)
        );
        let topology = tree_text(cr, TOPOLOGY);
        let gate_open = topology.replacen(
            "\tif (iolink->gpu && kfd_devcgroup_check_permission(iolink->gpu))",
            "\tif (0 && iolink->gpu && kfd_devcgroup_check_permission(iolink->gpu))",
            1,
        );
        let crat = tree_text(cr, CRAT);
        let anchor = "\t\t\t\tflags |= HSA_MEM_FLAGS_NON_VOLATILE;\n";
        let at = crat.find(anchor).unwrap() + anchor.len();
        let forced = format!(
            "{}\t\t\tflags |= HSA_MEM_FLAGS_HOT_PLUGGABLE;\n{}",
            &crat[..at],
            &crat[at..]
        );
        vec![
            Case {
                name: "top-level here-document patch in an override (needs_pci_atomics off)",
                files: vec![(conf("amdgpu.conf"), heredoc)],
                bad: Some((DEVICE, "CAP-INFO-001")),
            },
            Case {
                name: "sed -i in the PRE_BUILD script (needs_pci_atomics off)",
                files: vec![(
                    "tree:amd/dkms/pre-build.sh".into(),
                    "#!/bin/sh\nKERNELVER=${1:?kernel version}\nsed -i 's/kfd->device_info.needs_pci_atomics = true;/kfd->device_info.needs_pci_atomics = false;/' amd/amdkfd/kfd_device.c\nexit 0\n".into(),
                )],
                bad: Some((DEVICE, "CAP-INFO-001")),
            },
            Case {
                name: "script called by the PRE_BUILD script: sed -E on the no-atomics firmware",
                files: vec![
                    (
                        "tree:amd/dkms/pre-build.sh".into(),
                        "#!/bin/sh\nsh ./amd/dkms/navi-fix.sh \"$1\"\nexit 0\n".into(),
                    ),
                    (
                        "tree:amd/dkms/navi-fix.sh".into(),
                        "#!/bin/sh\n# let Navi1x run without PCIe atomics\nsed -E -i 's/no_atomic_fw_version = (145|92);/no_atomic_fw_version = 1;/' amd/amdkfd/kfd_device.c\n".into(),
                    ),
                ],
                bad: Some((DEVICE, "CAP-INFO-003")),
            },
            Case {
                name: "perl -pi in an override's MAKE (snoop bit zeroed in amdgpu_vm.h)",
                files: vec![(
                    conf(&format!("amdgpu-{}.conf", PRIMARY.trim_start_matches("usr/src/amdgpu-"))),
                    format!("MAKE[0]=\"perl -pi -e 's/^#define AMDGPU_PTE_SNOOPED\\t\\(1ULL << 2\\)/#define AMDGPU_PTE_SNOOPED\\t0/' {BUILD}/amd/amdgpu/amdgpu_vm.h && {MAKE}\"\n"),
                )],
                bad: Some((VM_H, "SAFE-CONST-003")),
            },
            Case {
                name: "sed address-append at the top level of an override (memory limit = all RAM)",
                files: vec![(
                    conf("amdgpu.conf"),
                    format!("sed -i '/max_ttm_mem_limit = ttm_tt_pages_limit/a \\tkfd_mem_limit.max_system_mem_limit = mem;' {BUILD}/amd/amdgpu/amdgpu_amdkfd_gpuvm.c\n"),
                )],
                bad: Some((GPUVM, "AMDGPU-LIMIT-002")),
            },
            Case {
                name: "cp of a patched copy over kfd_crat.c in MAKE",
                files: vec![
                    ("tree:amd/amdkfd/kfd_crat.c.rdna1".into(), forced),
                    (
                        conf("amdgpu.conf"),
                        format!("MAKE[0]=\"cp amd/amdkfd/kfd_crat.c.rdna1 amd/amdkfd/kfd_crat.c && {MAKE}\"\n"),
                    ),
                ],
                bad: Some((CRAT, "KFD-MEM-001")),
            },
            Case {
                name: "PATCH[n] file that short-circuits a permission check",
                files: vec![
                    (
                        "tree:patches/iolink.patch".into(),
                        unified_diff(TOPOLOGY, &topology, &gate_open),
                    ),
                    (conf("amdgpu.conf"), "PATCH[0]=\"iolink.patch\"\n".into()),
                ],
                bad: Some((TOPOLOGY, "SAFE-GATE-001")),
            },
        ]
    });
}

#[test]
fn build_steps_that_only_look_alike_stay_quiet() {
    run(|cr| {
        let topology = tree_text(cr, TOPOLOGY);
        let debug = topology.replacen(
            "\tif (iolink->gpu && kfd_devcgroup_check_permission(iolink->gpu))\n\t\treturn -EPERM;\n",
            "\tif (iolink->gpu && kfd_devcgroup_check_permission(iolink->gpu)) {\n\t\tpr_debug(\"iolink: no access\\n\");\n\t\treturn -EPERM;\n\t}\n",
            1,
        );
        assert_ne!(topology, debug);
        vec![
            Case {
                name: "make clean before the build",
                files: vec![(
                    conf("amdgpu.conf"),
                    format!("MAKE[0]=\"make clean && {MAKE}\"\n"),
                )],
                bad: None,
            },
            Case {
                name: "sed on a Makefile adding a warning flag",
                // In an override: a changed package script is high whatever it does
                // (DKMS-SCRIPT-001), since it can do anything at all.
                files: vec![(
                    conf("amdgpu.conf"),
                    format!("sed -i 's/^subdir-ccflags-y += -Wno-override-init/subdir-ccflags-y += -Wno-override-init -Wno-error=missing-prototypes/' {BUILD}/amd/amdgpu/Makefile\n"),
                )],
                bad: None,
            },
            Case {
                name: "here-document writing a build note header",
                files: vec![(
                    conf("amdgpu.conf"),
                    format!("cat << 'EOF' > {BUILD}/amd/amdkfd/kfd_build_note.h\n#define KFD_BUILD_NOTE \"built locally\"\nEOF\nMAKE[0]=\"{MAKE}\"\n"),
                )],
                bad: None,
            },
            Case {
                name: "sed renaming a kernel API call for a newer kernel",
                files: vec![(
                    conf("amdgpu.conf"),
                    format!("sed -i 's/\\bdrm_gem_object_put(/drm_gem_object_put_locked(/g' {BUILD}/amd/amdgpu/amdgpu_amdkfd_gpuvm.c\n"),
                )],
                bad: None,
            },
            Case {
                name: "PATCH[n] file adding a debug message to a permission check",
                files: vec![
                    (
                        "tree:patches/iolink-debug.patch".into(),
                        unified_diff(TOPOLOGY, &topology, &debug),
                    ),
                    (conf("amdgpu.conf"), "PATCH[0]=\"iolink-debug.patch\"\n".into()),
                ],
                bad: None,
            },
        ]
    });
}

#[test]
fn an_edit_that_cannot_be_replayed_is_named() {
    let Some(corpus) = corpus() else { return };
    let cr = CorpusRoot::new(&corpus, false);
    let p = cr.root().join("etc/dkms/amdgpu.conf");
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(
        &p,
        format!("MAKE[0]=\"sed -i -f /root/navi.sed amd/amdkfd/kfd_crat.c && {MAKE}\"\n"),
    )
    .unwrap();
    let tree = cr.path(PRIMARY);
    let j = cr
        .run(&["--format", "json", "scan", "--tree", tree.to_str().unwrap()])
        .json();
    let found = build_findings(&j);
    let f = found
        .iter()
        .find(|f| f.2 == "DKMS-EDIT-002")
        .unwrap_or_else(|| panic!("{found:#?}"));
    assert_eq!(f.0, "/etc/dkms/amdgpu.conf");
    assert_eq!(f.1, CRAT);
    assert_eq!(f.3, "medium");
    assert!(f.4.contains("sed -i -f /root/navi.sed"), "{f:?}");
}
