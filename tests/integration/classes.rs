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
