//! Detection beyond the incident, on the real 6.12 tree: each class of dangerous change
//! (safety gates neutralised, constants shadowed, limits bypassed) as small edits modelled
//! on patches people publish to run ROCm on unsupported GPUs, each beside harmless
//! look-alikes (comments, renames, debug messages, defensive checks). Every case is
//! scanned twice: with md5sums only (whole-file) and with the clean file beside it as
//! `.orig` (diff-aware).

use crate::corpus::{corpus, CorpusRoot, PRIMARY};
use crate::fixture::json_file;
use serde_json::Value;
use std::path::Path;

/// Which modes must see a dangerous case. A deleted check leaves nothing in the file to
/// see without the clean copy, unless a rule knows the check must be there.
#[derive(Clone, Copy, PartialEq)]
enum Modes {
    Both,
    DiffOnly,
    /// A plain deletion: upstream deletes checks in the same way (6.1 -> 6.12 has
    /// several), so with the clean copy it is a medium finding for a human, no alarm.
    DiffMedium,
}

struct Case {
    name: &'static str,
    rel: &'static str,
    from: &'static str,
    to: &'static str,
    /// Dangerous: the text on whose line a high/critical finding must be.
    at: Option<&'static str>,
    modes: Modes,
}

const fn bad(
    name: &'static str,
    rel: &'static str,
    from: &'static str,
    to: &'static str,
    at: &'static str,
    modes: Modes,
) -> Case {
    Case {
        name,
        rel,
        from,
        to,
        at: Some(at),
        modes,
    }
}

const fn fine(name: &'static str, rel: &'static str, from: &'static str, to: &'static str) -> Case {
    Case {
        name,
        rel,
        from,
        to,
        at: None,
        modes: Modes::Both,
    }
}

fn line_of(text: &str, needle: &str) -> u64 {
    let at = text.find(needle).unwrap_or_else(|| panic!("{needle}"));
    text[..at].matches('\n').count() as u64 + 1
}

/// `(rule, severity, line)` of the findings on `rel`, and whether any other file of the
/// scanned directory has one.
fn scan(cr: &CorpusRoot, rel: &str) -> (Vec<(String, String, u64)>, Vec<String>) {
    let dir = Path::new(rel).parent().unwrap().to_str().unwrap();
    let tree = cr.path(PRIMARY);
    let j: Value = cr
        .run(&[
            "--format",
            "json",
            "scan",
            "--tree",
            tree.to_str().unwrap(),
            "--scope",
            dir,
        ])
        .json();
    let entry = json_file(&j, rel).unwrap_or_else(|| panic!("{rel} not reported"));
    assert_eq!(entry["status"], "modified", "{rel}");
    let mine = entry["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["rule"].as_str().unwrap().to_string(),
                f["severity"].as_str().unwrap().to_string(),
                f["line"].as_u64().unwrap(),
            )
        })
        .collect();
    let mut others = Vec::new();
    for t in j["trees"].as_array().unwrap() {
        for f in t["files"].as_array().unwrap() {
            if f["path"] != rel && !f["findings"].as_array().unwrap().is_empty() {
                others.push(f["path"].to_string());
            }
        }
    }
    (mine, others)
}

/// Runs each case in both modes and lists every case that does not behave.
fn run(cases: &[Case]) {
    let Some(corpus) = corpus() else { return };
    let mut failures = Vec::new();
    for c in cases {
        for diff in [false, true] {
            let mode = if diff { "diff" } else { "md5sums" };
            let cr = CorpusRoot::new(&corpus, false);
            let rel = format!("{PRIMARY}/{}", c.rel);
            cr.unshare(&rel);
            let p = cr.path(&rel);
            let clean = std::fs::read_to_string(&p).unwrap();
            assert_eq!(clean.matches(c.from).count(), 1, "{}: anchor", c.name);
            let text = clean.replacen(c.from, c.to, 1);
            if diff {
                std::fs::write(
                    p.with_file_name(format!("{}.orig", p.file_name().unwrap().to_str().unwrap())),
                    &clean,
                )
                .unwrap();
            }
            std::fs::write(&p, &text).unwrap();
            let (found, others) = scan(&cr, c.rel);
            if !others.is_empty() {
                failures.push(format!(
                    "{} {mode}: other files flagged: {others:?}",
                    c.name
                ));
            }
            match c.at {
                Some(at) if diff && c.modes == Modes::DiffMedium => {
                    let line = line_of(&text, at);
                    if !found
                        .iter()
                        .any(|(_, s, l)| s == "medium" && *l + 20 >= line && *l <= line + 5)
                    {
                        failures.push(format!(
                            "{} {mode}: no medium finding near line {line}: {found:?}",
                            c.name
                        ));
                    }
                }
                Some(at) if diff || c.modes == Modes::Both => {
                    // On the change: a removed line is reported where it used to be, a
                    // missing check at the statement it must come before (the lock of
                    // the accounting), a few lines above the edit.
                    let line = line_of(&text, at);
                    if !found.iter().any(|(_, s, l)| {
                        (s == "high" || s == "critical") && *l + 20 >= line && *l <= line + 5
                    }) {
                        failures.push(format!(
                            "{} {mode}: no high/critical near line {line}: {found:?}",
                            c.name
                        ));
                    }
                }
                Some(_) => {}
                None => {
                    if found.iter().any(|(_, s, _)| s != "info" && s != "low") {
                        failures.push(format!("{} {mode}: not quiet: {found:?}", c.name));
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

const DEVICE: &str = "amd/amdkfd/kfd_device.c";
const CHARDEV: &str = "amd/amdkfd/kfd_chardev.c";
const GPUVM: &str = "amd/amdgpu/amdgpu_amdkfd_gpuvm.c";
const GMC10: &str = "amd/amdgpu/gmc_v10_0.c";
const VM: &str = "amd/amdgpu/amdgpu_vm.c";
const AMDKFD: &str = "amd/amdgpu/amdgpu_amdkfd.c";

/// The PCIe-atomics refusal of kgd2kfd_device_init: Polaris/Navi in a slot (or a
/// passthrough VM) without atomics is skipped by amdkfd.
const ATOMICS_GATE: &str = "\tif (!kfd->pci_atomic_requested &&\n";
/// The 32-bit refusal of kfd_open.
const COMPAT_GATE: &str =
    "\tif (is_32bit_user_mode) {\n\t\tdev_warn(kfd_device,\n\t\t\t\"Process %d (32-bit) failed to open /dev/kfd\\n\"\n\t\t\t\"32-bit processes are not supported by amdkfd\\n\",\n\t\t\tcurrent->pid);\n\t\treturn -EPERM;\n\t}\n";
/// The refusal of the accounting limits in amdgpu_amdkfd_reserve_mem_limit.
const LIMIT_BAIL: &str =
    "\t\tret = -ENOMEM;\n\t\tgoto release;\n\t}\n\n\t/* Update memory accounting";
/// kfd_mmio_mmap's page-size refusal.
const MMIO_GATE: &str = "\tif (PAGE_SIZE > 4096)\n\t\treturn -EINVAL;\n";

#[test]
fn comment_and_whitespace_only_changes_are_never_above_info() {
    run(&[
        fine(
            "comment with every marker word",
            DEVICE,
            ATOMICS_GATE,
            "\t/* RDNA1 FIX [PATCH]: spoof gfx1030 on Navi10 0x731F, HACK to force fine-grained, unlock ROCm on RX 5700 */\n\tif (!kfd->pci_atomic_requested &&\n",
        ),
        fine(
            "gate commented in words, not out",
            CHARDEV,
            COMPAT_GATE,
            "\t// bypass: we skip this check for passthrough (hack)\n\tif (is_32bit_user_mode) {\n\t\tdev_warn(kfd_device,\n\t\t\t\"Process %d (32-bit) failed to open /dev/kfd\\n\"\n\t\t\t\"32-bit processes are not supported by amdkfd\\n\",\n\t\t\tcurrent->pid);\n\t\treturn -EPERM;\n\t}\n",
        ),
        fine(
            "reindented gate",
            GPUVM,
            LIMIT_BAIL,
            "        ret = -ENOMEM;   /* no system memory left: spoofed limit check */\n        goto release;\n\t}\n\n\t/* Update memory accounting",
        ),
        fine(
            "#undef in a comment",
            GMC10,
            "#include \"amdgpu.h\"\n",
            "#include \"amdgpu.h\"\n/* old: #undef AMDGPU_PTE_SNOOPED / #define AMDGPU_PTE_SNOOPED 0 */\n",
        ),
    ]);
}

#[test]
fn safety_gates_neutralised_in_every_form() {
    run(&[
        bad(
            "short-circuit 0 && on the PCIe atomics refusal",
            DEVICE,
            ATOMICS_GATE,
            "\tif (0 && !kfd->pci_atomic_requested &&\n",
            "return false;\n\t}\n\n",
            Modes::Both,
        ),
        bad(
            "false && on the 32-bit refusal",
            CHARDEV,
            "\tif (is_32bit_user_mode) {\n",
            "\tif (false && is_32bit_user_mode) {\n",
            "return -EPERM;",
            Modes::Both,
        ),
        bad(
            "#if 0 around the 32-bit refusal",
            CHARDEV,
            COMPAT_GATE,
            const_format(),
            "return -EPERM;",
            Modes::Both,
        ),
        bad(
            "#ifdef NEVER around the page-size refusal",
            CHARDEV,
            MMIO_GATE,
            "#ifdef NEVER\n\tif (PAGE_SIZE > 4096)\n\t\treturn -EINVAL;\n#endif\n",
            "return -EINVAL;\n#endif",
            Modes::Both,
        ),
        bad(
            "early success in a validating function",
            CHARDEV,
            "\tsize_t expected = struct_size(args, attrs, args->nattr);\n",
            "\tsize_t expected = struct_size(args, attrs, args->nattr);\n\n\treturn 0;\n",
            "return 0;\n\n\tif (expected",
            Modes::Both,
        ),
        bad(
            "limit refusal turned into a message that goes on",
            GPUVM,
            LIMIT_BAIL,
            "\t\tpr_debug(\"over the KFD memory limit, allowing anyway\\n\");\n\t}\n\n\t/* Update memory accounting",
            "pr_debug(\"over the KFD memory limit",
            Modes::Both,
        ),
        bad(
            "page-size threshold raised out of reach",
            CHARDEV,
            MMIO_GATE,
            "\tif (PAGE_SIZE > 0x7fffffff)\n\t\treturn -EINVAL;\n",
            "if (PAGE_SIZE > 0x7fffffff)",
            Modes::DiffOnly,
        ),
        bad(
            "page-size gate commented out",
            CHARDEV,
            MMIO_GATE,
            "\t/* if (PAGE_SIZE > 4096)\n\t\treturn -EINVAL; */\n",
            "/* if (PAGE_SIZE",
            Modes::DiffOnly,
        ),
        bad(
            "32-bit refusal deleted",
            CHARDEV,
            COMPAT_GATE,
            "",
            "\tprocess = kfd_create_process(current);",
            Modes::DiffMedium,
        ),
        // Look-alikes.
        fine(
            "a defensive bail-out added",
            DEVICE,
            ATOMICS_GATE,
            "\tif (!kfd->adev)\n\t\treturn false;\n\tif (!kfd->pci_atomic_requested &&\n",
        ),
        fine(
            "a debug message added inside the gate",
            CHARDEV,
            MMIO_GATE,
            "\tif (PAGE_SIZE > 4096) {\n\t\tpr_debug(\"mmio remap needs 4K pages\\n\");\n\t\treturn -EINVAL;\n\t}\n",
        ),
        fine(
            "the gate's variable renamed",
            CHARDEV,
            "\tbool is_32bit_user_mode;\n\n\tif (iminor(inode) != 0)\n\t\treturn -ENODEV;\n\n\tis_32bit_user_mode = in_compat_syscall();\n\n\tif (is_32bit_user_mode) {\n",
            "\tbool compat;\n\n\tif (iminor(inode) != 0)\n\t\treturn -ENODEV;\n\n\tcompat = in_compat_syscall();\n\n\tif (compat) {\n",
        ),
        fine(
            "the refusal's error code made more precise",
            CHARDEV,
            MMIO_GATE,
            "\tif (PAGE_SIZE > 4096)\n\t\treturn -EOPNOTSUPP;\n",
        ),
    ]);
}

/// `#if 0` around the 32-bit refusal, built once (the text is long).
fn const_format() -> &'static str {
    Box::leak(format!("#if 0\n{COMPAT_GATE}#endif\n").into_boxed_str())
}

#[test]
fn constants_shadowed() {
    run(&[
        bad(
            "snoop bit undefined and redefined in gmc_v10_0.c",
            GMC10,
            "#include \"amdgpu.h\"\n",
            "#include \"amdgpu.h\"\n#undef AMDGPU_PTE_SNOOPED\n#define AMDGPU_PTE_SNOOPED 0\n",
            "#undef AMDGPU_PTE_SNOOPED",
            Modes::Both,
        ),
        bad(
            "memory type given a local value in amdgpu_vm.c",
            VM,
            "#include \"amdgpu.h\"\n",
            "#include \"amdgpu.h\"\n#define AMDGPU_VM_MTYPE_UC AMDGPU_VM_MTYPE_NC\n",
            "#define AMDGPU_VM_MTYPE_UC",
            Modes::Both,
        ),
        fine(
            "a local helper macro",
            VM,
            "#include \"amdgpu.h\"\n",
            "#include \"amdgpu.h\"\n#define AMDGPU_VM_DBG_NAME \"vm\"\n",
        ),
    ]);
}

#[test]
fn capabilities_a_device_does_not_have() {
    run(&[
        bad(
            "PCIe atomics helper answers yes (Polaris behind a bridge without atomics)",
            AMDKFD,
            "\treturn adev->have_atomics_support;\n",
            "\treturn true;\n",
            "return true;",
            Modes::Both,
        ),
        bad(
            "large-BAR helper answers yes before looking (Navi1x without resizable BAR)",
            CHARDEV,
            "bool kfd_dev_is_large_bar(struct kfd_node *dev)\n{\n",
            "bool kfd_dev_is_large_bar(struct kfd_node *dev)\n{\n\treturn true;\n",
            "\treturn true;\n\tif (dev->kfd->adev->debug_largebar)",
            Modes::Both,
        ),
        fine(
            "the atomics helper logs its answer",
            AMDKFD,
            "\treturn adev->have_atomics_support;\n",
            "\tdev_dbg(adev->dev, \"atomics %d\\n\", adev->have_atomics_support);\n\treturn adev->have_atomics_support;\n",
        ),
        fine(
            "the large-BAR helper refuses one more case",
            CHARDEV,
            "bool kfd_dev_is_large_bar(struct kfd_node *dev)\n{\n",
            "bool kfd_dev_is_large_bar(struct kfd_node *dev)\n{\n\tif (!dev->kfd)\n\t\treturn false;\n",
        ),
    ]);
}

#[test]
fn memory_types_and_coherence() {
    run(&[
        bad(
            "every GPU mapping forced snooped in gmc_v10_0",
            GMC10,
            "\t*flags &= ~AMDGPU_PTE_NOALLOC;\n",
            "\t*flags |= AMDGPU_PTE_SNOOPED;\n\t*flags &= ~AMDGPU_PTE_NOALLOC;\n",
            "*flags |= AMDGPU_PTE_SNOOPED;\n\t*flags &= ~AMDGPU_PTE_NOALLOC",
            Modes::Both,
        ),
        bad(
            "every GPU mapping forced uncached in gmc_v10_0",
            GMC10,
            "\tif (bo && bo->flags & (AMDGPU_GEM_CREATE_COHERENT |\n",
            "\t*flags = AMDGPU_PTE_MTYPE_NV10(*flags, MTYPE_UC);\n\tif (bo && bo->flags & (AMDGPU_GEM_CREATE_COHERENT |\n",
            "*flags = AMDGPU_PTE_MTYPE_NV10(*flags, MTYPE_UC);\n\tif (bo",
            Modes::Both,
        ),
        fine(
            "the PRT branch given braces and a comment",
            GMC10,
            "\t\t*flags &= ~AMDGPU_PTE_VALID;\n\t}\n",
            "\t\t*flags &= ~AMDGPU_PTE_VALID; /* PRT pages are never valid */\n\t}\n",
        ),
    ]);
}

// Classes beyond the incident, part two: device-info requirements and feature macros,
// header constants changed in place, GFX9/TTM memory types, limits and permissions.

#[test]
fn capabilities_in_device_info_and_feature_macros() {
    run(&[
        bad(
            "gfx8 needs_pci_atomics false",
            "amd/amdkfd/kfd_device.c",
            "\t\tif (asic_type != CHIP_HAWAII && !vf)\n\t\t\tkfd->device_info.needs_pci_atomics = true;\n",
            "\t\tif (asic_type != CHIP_HAWAII && !vf)\n\t\t\tkfd->device_info.needs_pci_atomics = false;\n",
            "kfd->device_info.needs_pci_atomics = false;",
            Modes::Both,
        ),
        bad(
            "gfx8 requirement exempts Polaris10",
            "amd/amdkfd/kfd_device.c",
            "\t\tif (asic_type != CHIP_HAWAII && !vf)\n\t\t\tkfd->device_info.needs_pci_atomics = true;\n",
            "\t\tif (asic_type != CHIP_HAWAII && asic_type != CHIP_POLARIS10 && !vf)\n\t\t\tkfd->device_info.needs_pci_atomics = true;\n",
            "if (asic_type != CHIP_HAWAII && asic_type != CHIP_POLARIS10 && !vf)",
            Modes::Both,
        ),
        bad(
            "navi1x requirement threshold moved to 10.3",
            "amd/amdkfd/kfd_device.c",
            "\t\t\tif (gc_version >= IP_VERSION(10, 1, 1))\n\t\t\t\tkfd->device_info.needs_pci_atomics = true;\n",
            "\t\t\tif (gc_version >= IP_VERSION(10, 3, 0))\n\t\t\t\tkfd->device_info.needs_pci_atomics = true;\n",
            "if (gc_version >= IP_VERSION(10, 3, 0))\n\t\t\t\tkfd->device_info.needs_pci_atomics",
            Modes::Both,
        ),
        bad(
            "navi1x requirement dropped by 0 &&",
            "amd/amdkfd/kfd_device.c",
            "\t\t\tif (gc_version >= IP_VERSION(10, 1, 1))\n\t\t\t\tkfd->device_info.needs_pci_atomics = true;\n",
            "\t\t\tif (0 && gc_version >= IP_VERSION(10, 1, 1))\n\t\t\t\tkfd->device_info.needs_pci_atomics = true;\n",
            "if (0 && gc_version >= IP_VERSION(10, 1, 1))",
            Modes::Both,
        ),
        bad(
            "navi1x no_atomic_fw_version lowered",
            "amd/amdkfd/kfd_device.c",
            "\t\t\t\tkfd->device_info.no_atomic_fw_version = 145;\n",
            "\t\t\t\tkfd->device_info.no_atomic_fw_version = 1;\n",
            "kfd->device_info.no_atomic_fw_version = 1;",
            Modes::Both,
        ),
        bad(
            "cwsr forced for Hawaii/Kaveri",
            "amd/amdkfd/kfd_device.c",
            "\t\tif (asic_type != CHIP_KAVERI &&\n\t\t    asic_type != CHIP_HAWAII &&\n\t\t    asic_type != CHIP_TONGA)\n\t\t\tkfd->device_info.supports_cwsr = true;\n",
            "\t\tkfd->device_info.supports_cwsr = true;\n",
            "supports_cwsr = true;\n\n\t\tif (asic_type != CHIP_HAWAII && !vf)",
            Modes::Both,
        ),
        bad(
            "navi10 joins the gfx1030 arm",
            "amd/amdkfd/kfd_device.c",
            "\t\tcase IP_VERSION(10, 3, 0):\n\t\t\tgfx_target_version = 100300;\n",
            "\t\tcase IP_VERSION(10, 3, 0):\n\t\tcase IP_VERSION(10, 1, 10):\n\t\t\tgfx_target_version = 100300;\n",
            "case IP_VERSION(10, 1, 10):\n\t\t\tgfx_target_version = 100300;",
            Modes::Both,
        ),
        bad(
            "XNACK per-process macro made constant",
            "amd/amdkfd/kfd_priv.h",
            "#define KFD_SUPPORT_XNACK_PER_PROCESS(dev)\\\n\t((KFD_GC_VERSION(dev) == IP_VERSION(9, 4, 2)) ||\t\\\n\t (KFD_GC_VERSION(dev) == IP_VERSION(9, 4, 3)) ||\t\\\n\t (KFD_GC_VERSION(dev) == IP_VERSION(9, 4, 4)))\n",
            "#define KFD_SUPPORT_XNACK_PER_PROCESS(dev) (1)\n",
            "#define KFD_SUPPORT_XNACK_PER_PROCESS(dev) (1)",
            Modes::Both,
        ),
        fine(
            "atomics requirement condition reordered",
            "amd/amdkfd/kfd_device.c",
            "\t\tif (asic_type != CHIP_HAWAII && !vf)\n\t\t\tkfd->device_info.needs_pci_atomics = true;\n",
            "\t\tif (!vf && asic_type != CHIP_HAWAII)\n\t\t\tkfd->device_info.needs_pci_atomics = true;\n",
        ),
        fine(
            "debug message on the requirement",
            "amd/amdkfd/kfd_device.c",
            "\t\t\tif (gc_version >= IP_VERSION(10, 1, 1))\n\t\t\t\tkfd->device_info.needs_pci_atomics = true;\n",
            "\t\t\tif (gc_version >= IP_VERSION(10, 1, 1)) {\n\t\t\t\tdev_dbg(kfd->adev->dev, \"needs PCIe atomics\\n\");\n\t\t\t\tkfd->device_info.needs_pci_atomics = true;\n\t\t\t}\n",
        ),
        fine(
            "XNACK macro reformatted on one line",
            "amd/amdkfd/kfd_priv.h",
            "#define KFD_SUPPORT_XNACK_PER_PROCESS(dev)\\\n\t((KFD_GC_VERSION(dev) == IP_VERSION(9, 4, 2)) ||\t\\\n\t (KFD_GC_VERSION(dev) == IP_VERSION(9, 4, 3)) ||\t\\\n\t (KFD_GC_VERSION(dev) == IP_VERSION(9, 4, 4)))\n",
            "#define KFD_SUPPORT_XNACK_PER_PROCESS(dev) ((KFD_GC_VERSION(dev) == IP_VERSION(9, 4, 2)) || (KFD_GC_VERSION(dev) == IP_VERSION(9, 4, 3)) || (KFD_GC_VERSION(dev) == IP_VERSION(9, 4, 4)))\n",
        ),
        fine(
            "a new chip arm with its own target",
            "amd/amdkfd/kfd_device.c",
            "\t\tcase IP_VERSION(10, 3, 0):\n\t\t\tgfx_target_version = 100300;\n",
            "\t\tcase IP_VERSION(10, 3, 0):\n\t\t\tgfx_target_version = 100300;\n\t\t\tf2g = &gfx_v10_3_kfd2kgd;\n\t\t\tbreak;\n\t\tcase IP_VERSION(10, 3, 9):\n\t\t\tgfx_target_version = 100309;\n",
        ),
    ]);
}

#[test]
fn constants_changed_in_place_in_headers() {
    run(&[
        bad(
            "CRAT hot-pluggable value changed in kfd_crat.h",
            "amd/amdkfd/kfd_crat.h",
            "#define CRAT_MEM_FLAGS_HOT_PLUGGABLE\t0x00000002\n",
            "#define CRAT_MEM_FLAGS_HOT_PLUGGABLE\t0x00000001\n",
            "#define CRAT_MEM_FLAGS_HOT_PLUGGABLE\t0x00000001",
            Modes::Both,
        ),
        bad(
            "CRAT no-atomics iolink flag zeroed",
            "amd/amdkfd/kfd_crat.h",
            "#define CRAT_IOLINK_FLAGS_NO_ATOMICS_64_BIT\t(1 << 3)\n",
            "#define CRAT_IOLINK_FLAGS_NO_ATOMICS_64_BIT\t0\n",
            "#define CRAT_IOLINK_FLAGS_NO_ATOMICS_64_BIT\t0",
            Modes::Both,
        ),
        bad(
            "PTE snooped bit changed in amdgpu_vm.h",
            "amd/amdgpu/amdgpu_vm.h",
            "#define AMDGPU_PTE_SNOOPED\t(1ULL << 2)\n",
            "#define AMDGPU_PTE_SNOOPED\t(0ULL << 2)\n",
            "#define AMDGPU_PTE_SNOOPED\t(0ULL << 2)",
            Modes::Both,
        ),
        bad(
            "MTYPE_NC value changed in amdgpu_vm.h",
            "amd/amdgpu/amdgpu_vm.h",
            "#define AMDGPU_MTYPE_NC 0\n",
            "#define AMDGPU_MTYPE_NC 3\n",
            "#define AMDGPU_MTYPE_NC 3",
            Modes::Both,
        ),
        fine(
            "a comment on the snooped bit",
            "amd/amdgpu/amdgpu_vm.h",
            "#define AMDGPU_PTE_SNOOPED\t(1ULL << 2)\n",
            "#define AMDGPU_PTE_SNOOPED\t(1ULL << 2) /* cache-coherent with the CPU */\n",
        ),
        fine(
            "same value spelt in hex",
            "amd/amdkfd/kfd_crat.h",
            "#define CRAT_IOLINK_FLAGS_NO_ATOMICS_64_BIT\t(1 << 3)\n",
            "#define CRAT_IOLINK_FLAGS_NO_ATOMICS_64_BIT\t0x8\n",
        ),
    ]);
}

#[test]
fn memory_types_in_gfx9_and_ttm() {
    run(&[
        bad(
            "gmc_v9 every mapping snooped",
            "amd/amdgpu/gmc_v9_0.c",
            "\t*flags |= snoop ? AMDGPU_PTE_SNOOPED : 0;\n}\n",
            "\t*flags |= AMDGPU_PTE_SNOOPED;\n}\n",
            "*flags |= AMDGPU_PTE_SNOOPED;",
            Modes::Both,
        ),
        bad(
            "gmc_v9 every mapping MTYPE_UC",
            "amd/amdgpu/gmc_v9_0.c",
            "\tif (mtype != MTYPE_NC)\n\t\t*flags = AMDGPU_PTE_MTYPE_VG10(*flags, mtype);\n",
            "\t*flags = AMDGPU_PTE_MTYPE_VG10(*flags, MTYPE_UC);\n",
            "*flags = AMDGPU_PTE_MTYPE_VG10(*flags, MTYPE_UC);",
            Modes::Both,
        ),
        bad(
            "ttm pte flags always snooped",
            "amd/amdgpu/amdgpu_ttm.c",
            "\t\tflags |= AMDGPU_PTE_SNOOPED;\n\t}\n",
            "\t\tflags |= AMDGPU_PTE_SNOOPED;\n\t}\n\tflags |= AMDGPU_PTE_SNOOPED;\n",
            "flags |= AMDGPU_PTE_SNOOPED;",
            Modes::Both,
        ),
        fine(
            "gmc_v9 comment on snooping",
            "amd/amdgpu/gmc_v9_0.c",
            "\t*flags |= snoop ? AMDGPU_PTE_SNOOPED : 0;\n}\n",
            "\t/* snoop only system memory */\n\t*flags |= snoop ? AMDGPU_PTE_SNOOPED : 0;\n}\n",
        ),
        fine(
            "gmc_v9 debug message",
            "amd/amdgpu/gmc_v9_0.c",
            "\tif (mtype != MTYPE_NC)\n\t\t*flags = AMDGPU_PTE_MTYPE_VG10(*flags, mtype);\n",
            "\tdev_dbg(adev->dev, \"mtype %u\\n\", mtype);\n\tif (mtype != MTYPE_NC)\n\t\t*flags = AMDGPU_PTE_MTYPE_VG10(*flags, mtype);\n",
        ),
    ]);
}

#[test]
fn limits_and_permissions() {
    run(&[
        bad(
            "sysfs iolink permission check removed by 0 &&",
            "amd/amdkfd/kfd_topology.c",
            "\tif (iolink->gpu && kfd_devcgroup_check_permission(iolink->gpu))\n",
            "\tif (0 && iolink->gpu && kfd_devcgroup_check_permission(iolink->gpu))\n",
            "if (0 && iolink->gpu && kfd_devcgroup_check_permission(iolink->gpu))",
            Modes::Both,
        ),
        bad(
            "devcgroup check answers 0",
            "amd/amdkfd/kfd_priv.h",
            "\tstruct drm_device *ddev;\n\n\tif (node->xcp)",
            "\tstruct drm_device *ddev;\n\n\treturn 0;\n\tif (node->xcp)",
            "return 0;\n\tif (node->xcp)",
            Modes::Both,
        ),
        bad(
            "apertures skip no device",
            "amd/amdkfd/kfd_flat_memory.c",
            "\t\tif (!dev || kfd_devcgroup_check_permission(dev)) {\n",
            "\t\tif (!dev) {\n",
            "if (!dev) {\n\t\t\t/* Skip non GPU",
            Modes::Both,
        ),
        bad(
            "system memory limit set to all of RAM",
            "amd/amdgpu/amdgpu_amdkfd_gpuvm.c",
            "\tkfd_mem_limit.max_system_mem_limit = mem - (mem >> 6);\n",
            "\tkfd_mem_limit.max_system_mem_limit = mem;\n",
            "kfd_mem_limit.max_system_mem_limit = mem;",
            Modes::Both,
        ),
        bad(
            "vram accounting check short-circuited",
            "amd/amdgpu/amdgpu_amdkfd_gpuvm.c",
            "\t    (adev && xcp_id >= 0 && adev->kfd.vram_used[xcp_id] + vram_needed >\n",
            "\t    (0 && adev && xcp_id >= 0 && adev->kfd.vram_used[xcp_id] + vram_needed >\n",
            "(0 && adev && xcp_id >= 0 && adev->kfd.vram_used[xcp_id] + vram_needed >",
            Modes::Both,
        ),
        bad(
            "ttm limit made unlimited",
            "amd/amdgpu/amdgpu_amdkfd_gpuvm.c",
            "\tkfd_mem_limit.max_ttm_mem_limit = ttm_tt_pages_limit() << PAGE_SHIFT;\n",
            "\tkfd_mem_limit.max_ttm_mem_limit = U64_MAX;\n",
            "kfd_mem_limit.max_ttm_mem_limit = U64_MAX;",
            Modes::Both,
        ),
        fine(
            "permission check with a debug message",
            "amd/amdkfd/kfd_topology.c",
            "\tif (iolink->gpu && kfd_devcgroup_check_permission(iolink->gpu))\n\t\treturn -EPERM;\n",
            "\tif (iolink->gpu && kfd_devcgroup_check_permission(iolink->gpu)) {\n\t\tpr_debug(\"iolink: no access\\n\");\n\t\treturn -EPERM;\n\t}\n",
        ),
        fine(
            "limit debug message reworded",
            "amd/amdgpu/amdgpu_amdkfd_gpuvm.c",
            "\tpr_debug(\"Kernel memory limit %lluM, TTM limit %lluM\\n\",\n",
            "\tpr_debug(\"KFD system memory limit %lluM, TTM limit %lluM\\n\",\n",
        ),
    ]);
}
