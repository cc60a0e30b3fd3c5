//! The rule engine through the real binary: `rules list`, `rules check`, `--rules DIR`,
//! findings in `scan` (whole-file with md5sums only, diff-aware with a clean backup),
//! and on the real corpus: clean trees, every shared mutation, the incident block, and
//! the 6.1 <-> 6.12 swap.

use crate::corpus::{corpus, manifest, CorpusRoot, Mutation, OLDER, PRIMARY};
use crate::fixture::{json_file, Fixture, TREE};
use serde_json::Value;
use std::path::Path;

/// `(rule, severity, line)` of every finding on a file of the first tree.
fn findings(j: &Value, path: &str) -> Vec<(String, String, u64)> {
    json_file(j, path)
        .and_then(|f| f["findings"].as_array())
        .map(|a| {
            a.iter()
                .map(|f| {
                    (
                        f["rule"].as_str().unwrap().to_string(),
                        f["severity"].as_str().unwrap().to_string(),
                        f["line"].as_u64().unwrap(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn serious(f: &[(String, String, u64)]) -> Vec<&(String, String, u64)> {
    f.iter()
        .filter(|(_, s, _)| s == "critical" || s == "high")
        .collect()
}

fn has(f: &[(String, String, u64)], rule: &str, line: u64) -> bool {
    f.iter().any(|(r, _, l)| r == rule && *l == line)
}

// ---------------------------------------------------------------- rules list / check

#[test]
fn rules_list_shows_the_builtin_set() {
    let fx = Fixture::new();
    let j = fx
        .run(&["--format", "json", "rules", "list"])
        .expect_code(0)
        .json();
    let rules = j.as_array().unwrap();
    assert!(rules.len() >= 25, "{}", rules.len());
    let mem = rules.iter().find(|r| r["id"] == "KFD-MEM-001").unwrap();
    assert_eq!(mem["severity"], "critical");
    assert_eq!(mem["scope"], "added");
    assert_eq!(mem["origin"], "builtin:memory.toml:15");
    assert!(
        mem["checked"].as_array().is_some_and(|v| v.len() >= 3),
        "{mem}"
    );
    for prefix in [
        "KFD-MEM-",
        "KFD-GFX-",
        "KFD-CAP-",
        "KFD-DEVID-",
        "KFD-SAFE-",
        "KFD-MARK-",
        "AMDGPU-GMC-",
        "AMDGPU-PARAM-",
        "SAFE-GATE-",
        "SAFE-CONST-",
        "AMDGPU-LIMIT-",
    ] {
        assert!(
            rules
                .iter()
                .any(|r| r["id"].as_str().unwrap().starts_with(prefix)),
            "no {prefix} rule"
        );
    }
    let text = fx.run(&["rules", "list"]).expect_code(0).stdout();
    assert!(text.contains("KFD-GFX-001        critical added"), "{text}");
    assert!(
        text.ends_with(&format!(
            "{} rules; 'kfd-audit explain RULE-ID' prints one in full\n",
            rules.len()
        )),
        "{text}"
    );
}

#[test]
fn rules_check_validates_the_builtin_set_and_good_files() {
    let fx = Fixture::new();
    let out = fx.run(&["rules", "check"]).expect_code(0).stdout();
    assert!(out.contains("examples: OK"), "{out}");
    let good = fx.write(
        "/rules/mine.toml",
        r#"
[[rule]]
id = "MY-001"
title = "Doorbell size forced"
severity = "medium"
files = ["amd/amdkfd/*.c"]
match = 'doorbell_size\s*=\s*[0-9]+'
why = "The doorbell size comes from the ASIC."
fix = "Restore the file."

[[rule.example]]
fires = true
code = "int f(void) { kfd->doorbell_size = 8; }"

[[rule.example]]
fires = false
code = "int f(void) { kfd->doorbell_size = size; }"
"#,
    );
    let out = fx
        .run(&["rules", "check", good.to_str().unwrap()])
        .expect_code(0)
        .stdout();
    assert_eq!(
        out,
        format!("{}: OK (1 rules, 2 examples)\n", good.display())
    );
}

#[test]
fn rules_check_names_file_and_line_of_each_problem() {
    let fx = Fixture::new();
    let cases: &[(&str, &str, &str)] = &[
        (
            "syntax.toml",
            "[[rule]]\nid = \"A-1\"\ntitle = \"t\nseverity = \"high\"\n",
            ":3: ",
        ),
        (
            "unknown.toml",
            "[[rule]]\nid = \"A-2\"\ntitle = \"t\"\nseverity = \"high\"\nfiles = [\"*.c\"]\nmatch = 'x'\nwhy = \"w\"\nfix = \"f\"\ncolour = \"red\"\n",
            "unknown field `colour`",
        ),
        (
            "regex.toml",
            "[[rule]]\nid = \"A-3\"\ntitle = \"t\"\nseverity = \"high\"\nfiles = [\"*.c\"]\nmatch = 'flags |= ('\nwhy = \"w\"\nfix = \"f\"\n",
            ":6: bad regex in `match`",
        ),
        (
            "dup.toml",
            "[[rule]]\nid = \"KFD-MEM-001\"\ntitle = \"t\"\nseverity = \"high\"\nfiles = [\"*.c\"]\nmatch = 'x'\nwhy = \"w\"\nfix = \"f\"\n",
            ":2: duplicate rule id KFD-MEM-001 (already defined at builtin:memory.toml:15)",
        ),
        (
            "severity.toml",
            "[[rule]]\nid = \"A-5\"\ntitle = \"t\"\nseverity = \"urgent\"\nfiles = [\"*.c\"]\nmatch = 'x'\nwhy = \"w\"\nfix = \"f\"\n",
            ":4: rule A-5: unknown severity `urgent`",
        ),
        (
            "example.toml",
            "[[rule]]\nid = \"A-6\"\ntitle = \"t\"\nseverity = \"high\"\nfiles = [\"x/*.c\"]\nmatch = 'forced'\nwhy = \"w\"\nfix = \"f\"\n\n[[rule.example]]\nfires = true\ncode = \"int ok;\"\n",
            ":10: rule A-6 example 1: should fire but did not",
        ),
    ];
    for (name, text, expect) in cases {
        let p = fx.write(&format!("/rules/{name}"), text);
        let run = fx.run(&["rules", "check", p.to_str().unwrap()]);
        run.expect_code(2);
        let out = run.stdout();
        let first = out.lines().next().unwrap_or_default();
        assert!(
            first.starts_with(&p.display().to_string()) && first.contains(expect),
            "{name}: {out}"
        );
        assert!(out.ends_with("1 problem in rule files\n"), "{name}: {out}");
    }
    // Two files with the same id: the second is the duplicate.
    let a = fx.write(
        "/rules2/a.toml",
        "[[rule]]\nid = \"B-1\"\ntitle = \"t\"\nseverity = \"low\"\nfiles = [\"*.c\"]\nmatch = 'x'\nwhy = \"w\"\nfix = \"f\"\n",
    );
    let b = fx.write("/rules2/b.toml", std::fs::read_to_string(&a).unwrap());
    let out = fx
        .run(&["rules", "check", a.to_str().unwrap(), b.to_str().unwrap()])
        .expect_code(2)
        .stdout();
    assert!(
        out.contains(&format!("{}:2: duplicate rule id B-1", b.display())),
        "{out}"
    );
    // A broken --rules directory stops a scan with the same message.
    fx.amdgpu_tree();
    let run = fx.run(&["--rules", fx.path("/rules").to_str().unwrap(), "scan"]);
    run.expect_code(2);
    assert!(
        run.stderr().starts_with("kfd-audit: error: "),
        "{}",
        run.stderr()
    );
    assert!(run.stderr().contains(".toml:"), "{}", run.stderr());
}

#[test]
fn user_rules_directory_adds_rules_to_the_scan() {
    let fx = Fixture::new();
    fx.amdgpu_tree();
    fx.write(
        "/etc/kfd-rules/doorbell.toml",
        r#"
[[rule]]
id = "SITE-001"
title = "Site policy: no doorbell changes"
severity = "high"
files = ["amd/amdkfd/*.c"]
match = 'doorbell_size\s*='
why = "Our fleet runs the vendor's doorbell layout."
fix = "Restore the file."
"#,
    );
    fx.write(
        &format!("{TREE}/amd/amdkfd/kfd_crat.c"),
        "int f(void)\n{\n\tkfd->doorbell_size = 8;\n}\n",
    );
    let dir = fx.path("/etc/kfd-rules");
    let j = fx
        .run(&["--rules", dir.to_str().unwrap(), "--format", "json", "scan"])
        .expect_code(1)
        .json();
    let f = findings(&j, "amd/amdkfd/kfd_crat.c");
    assert_eq!(f, vec![("SITE-001".into(), "high".into(), 3)]);
    let list = fx
        .run(&["--rules", dir.to_str().unwrap(), "rules", "list"])
        .expect_code(0)
        .stdout();
    assert!(list.contains("SITE-001"), "{list}");
}

// ---------------------------------------------------------------- fixture scans

const DEVICE_C: &str = r#"// SPDX-License-Identifier: GPL-2.0 OR MIT
#include "kfd_priv.h"

struct kfd_dev *kgd2kfd_probe(struct amdgpu_device *adev, bool vf)
{
	struct kfd_dev *kfd = NULL;
	const struct kfd2kgd_calls *f2g = NULL;
	uint32_t gfx_target_version = 0;

	switch (adev->asic_type) {
	case CHIP_KAVERI:
		gfx_target_version = 70000;
		if (!vf)
			f2g = &gfx_v7_kfd2kgd;
		break;
	default:
		switch (amdgpu_ip_version(adev, GC_HWIP, 0)) {
		/* Navi10 */
		case IP_VERSION(10, 1, 10):
			gfx_target_version = 100100;
			if (!vf)
				f2g = &gfx_v10_kfd2kgd;
			break;
		/* Sienna Cichlid */
		case IP_VERSION(10, 3, 0):
			gfx_target_version = 100300;
			f2g = &gfx_v10_3_kfd2kgd;
			break;
		case IP_VERSION(11, 0, 0):
			gfx_target_version = 110000;
			f2g = &gfx_v11_kfd2kgd;
			break;
		default:
			break;
		}
		break;
	}

	if (!f2g) {
		dev_info(kfd_device, "GC IP %06x %s not supported in kfd\n",
			 amdgpu_ip_version(adev, GC_HWIP, 0), vf ? "VF" : "");
		return NULL;
	}

	kfd = kzalloc(sizeof(*kfd), GFP_KERNEL);
	if (!kfd)
		return NULL;

	kfd->adev = adev;
	kfd_device_info_init(kfd, vf, gfx_target_version);
	return kfd;
}

int kfd_gtt_sa_init(struct kfd_dev *kfd, unsigned int buf_size,
		    unsigned int chunk_size)
{
	if (WARN_ON(buf_size < chunk_size))
		return -EINVAL;
	if (WARN_ON(buf_size == 0))
		return -EINVAL;

	kfd->gtt_sa_chunk_size = chunk_size;
	/*
	 * This hack is wrong, but nobody is likely to notice.
	 */
	kfd->gtt_sa_num_of_chunks = buf_size / chunk_size;
	return 0;
}
"#;

const TOPOLOGY_C: &str = r#"// SPDX-License-Identifier: GPL-2.0 OR MIT
int kfd_topology_add_device(struct kfd_node *gpu)
{
	dev->node_props.gfx_target_version =
				gpu->kfd->device_info.gfx_target_version;
	dev->node_props.device_id = gpu->adev->pdev->device;

	if (KFD_IS_SVM_API_SUPPORTED(dev->gpu->adev))
		dev->node_props.capability |= HSA_CAP_SVMAPI_SUPPORTED;

	if (dev->gpu->adev->gmc.is_app_apu ||
		dev->gpu->adev->gmc.xgmi.connected_to_cpu)
		dev->node_props.capability |= HSA_CAP_FLAGS_COHERENTHOSTACCESS;

	return 0;
}
"#;

const GMC_C: &str = r#"// SPDX-License-Identifier: MIT
static int gmc_v10_0_sw_init(void *handle)
{
	struct amdgpu_device *adev = (struct amdgpu_device *)handle;

	switch (amdgpu_ip_version(adev, GC_HWIP, 0)) {
	case IP_VERSION(10, 1, 10):
	case IP_VERSION(10, 3, 0):
		/*
		 * vm size is 256TB (48bit), maximum size of Navi10/Navi14/Navi12,
		 */
		amdgpu_vm_adjust_size(adev, 256 * 1024, 9, 3, 48);
		break;
	default:
		break;
	}
	return 0;
}
"#;

const DRV_C: &str = r#"// SPDX-License-Identifier: MIT
int amdgpu_vm_fragment_size = -1;
int amdgpu_exp_hw_support;
int amdgpu_noretry = -1;
int amdgpu_mtype_local;
bool hws_gws_support;

static const struct pci_device_id pciidlist[] = {
	{0x1002, 0x7310, PCI_ANY_ID, PCI_ANY_ID, 0, 0, CHIP_NAVI10},
	{0x1002, 0x731F, PCI_ANY_ID, PCI_ANY_ID, 0, 0, CHIP_NAVI10},
	{0x1002, 0x73BF, PCI_ANY_ID, PCI_ANY_ID, 0, 0, CHIP_SIENNA_CICHLID},
	{0, 0, 0}
};
"#;

/// A small tree of upstream-shaped excerpts, owned by amdgpu-dkms.
fn driver_tree() -> Fixture {
    let fx = Fixture::new();
    fx.tree_with(
        TREE,
        Some("amdgpu-dkms"),
        &[
            ("amd/amdkfd/kfd_crat.c", crate::fixture::CRAT_C),
            ("amd/amdkfd/kfd_device.c", DEVICE_C),
            ("amd/amdkfd/kfd_topology.c", TOPOLOGY_C),
            ("amd/amdgpu/gmc_v10_0.c", GMC_C),
            ("amd/amdgpu/amdgpu_drv.c", DRV_C),
        ],
    );
    fx
}

/// The clean text of a file of [`driver_tree`].
fn clean_of(rel: &str) -> &'static str {
    match rel {
        "amd/amdkfd/kfd_crat.c" => crate::fixture::CRAT_C,
        "amd/amdkfd/kfd_device.c" => DEVICE_C,
        "amd/amdkfd/kfd_topology.c" => TOPOLOGY_C,
        "amd/amdgpu/gmc_v10_0.c" => GMC_C,
        "amd/amdgpu/amdgpu_drv.c" => DRV_C,
        _ => panic!("{rel}"),
    }
}

/// Replaces `from` (which must occur once) in a clean file.
fn edit(rel: &str, from: &str, to: &str) -> String {
    let clean = clean_of(rel);
    assert_eq!(clean.matches(from).count(), 1, "{from}");
    clean.replace(from, to)
}

/// Line (1-based) where `needle` (which may span lines) first starts.
fn line_of(text: &str, needle: &str) -> u64 {
    let at = text.find(needle).unwrap_or_else(|| panic!("{needle}"));
    text[..at].matches('\n').count() as u64 + 1
}

/// Scans a tree where `rel` holds `text`: with md5sums only, and with a clean `.orig`
/// beside it (diff-aware). Returns the findings of both runs.
fn scan_both(rel: &str, text: &str) -> [Vec<(String, String, u64)>; 2] {
    let mut out = [Vec::new(), Vec::new()];
    for (i, with_orig) in [false, true].into_iter().enumerate() {
        let fx = driver_tree();
        fx.write(&format!("{TREE}/{rel}"), text);
        if with_orig {
            fx.write(&format!("{TREE}/{rel}.orig"), clean_of(rel));
        }
        let j = fx.run(&["--format", "json", "scan"]).json();
        let entry = json_file(&j, rel).unwrap_or_else(|| panic!("{rel} not reported"));
        assert_eq!(entry["status"], "modified", "{rel}");
        if with_orig {
            // The clean copy is listed as a verified backup of the file, without findings.
            let backups = entry["backups"].as_array().unwrap();
            assert!(
                backups.iter().any(|b| b["path"] == format!("{rel}.orig") && b["verdict"] == "verified-clean"),
                "{entry}"
            );
        }
        out[i] = findings(&j, rel);
    }
    out
}

#[track_caller]
fn expect_rule(rel: &str, text: &str, rule: &str, severity: &str, needle: &str) {
    let line = line_of(text, needle);
    for (mode, f) in ["md5sums", "diff"].iter().zip(scan_both(rel, text)) {
        assert!(
            f.iter()
                .any(|(r, s, l)| r == rule && s == severity && *l == line),
            "{mode}: expected {rule} {severity} at line {line}, got {f:?}"
        );
    }
}

#[track_caller]
fn expect_quiet(rel: &str, text: &str) {
    for (mode, f) in ["md5sums", "diff"].iter().zip(scan_both(rel, text)) {
        assert!(
            f.iter().all(|(_, s, _)| s == "low" || s == "info"),
            "{mode}: expected no finding above low, got {f:?}"
        );
    }
}

const CRAT: &str = "amd/amdkfd/kfd_crat.c";
const DEVICE: &str = "amd/amdkfd/kfd_device.c";
const TOPO: &str = "amd/amdkfd/kfd_topology.c";

#[test]
fn memory_flags_forced_in_every_shape() {
    let guard = "\t\t\tif (mem->flags & CRAT_MEM_FLAGS_HOT_PLUGGABLE)\n\t\t\t\tflags |= HSA_MEM_FLAGS_HOT_PLUGGABLE;\n";
    // Unconditional, split across lines.
    let t = edit(
        CRAT,
        guard,
        "\t\t\tflags |=\n\t\t\t\tHSA_MEM_FLAGS_HOT_PLUGGABLE;\n",
    );
    expect_rule(CRAT, &t, "KFD-MEM-001", "critical", "flags |=");
    // Under a condition that is always true.
    let t = edit(
        CRAT,
        "if (mem->flags & CRAT_MEM_FLAGS_HOT_PLUGGABLE)",
        "if (1 || mem->flags & CRAT_MEM_FLAGS_HOT_PLUGGABLE)",
    );
    expect_rule(
        CRAT,
        &t,
        "KFD-MEM-001",
        "critical",
        "flags |= HSA_MEM_FLAGS_HOT_PLUGGABLE",
    );
    expect_rule(CRAT, &t, "KFD-SAFE-020", "high", "if (1 ||");
    // Raw constant for both bits.
    let t = edit(
        CRAT,
        "\t\t\tsize_in_bytes =",
        "\t\t\tflags |= 0x3;\n\t\t\tsize_in_bytes =",
    );
    expect_rule(CRAT, &t, "KFD-MEM-003", "critical", "flags |= 0x3");
    // Moved into the declaration.
    let t = edit(
        CRAT,
        "uint32_t flags = 0;",
        "uint32_t flags = HSA_MEM_FLAGS_HOT_PLUGGABLE;",
    );
    expect_rule(CRAT, &t, "KFD-MEM-001", "critical", "uint32_t flags =");
    // A misleading indentation puts the statement outside the guard.
    let t = edit(
        CRAT,
        guard,
        "\t\t\tif (mem->flags & CRAT_MEM_FLAGS_HOT_PLUGGABLE)\n\t\t\t\tpr_debug(\"hot\\n\");\n\t\t\t\tflags |= HSA_MEM_FLAGS_HOT_PLUGGABLE;\n",
    );
    expect_rule(
        CRAT,
        &t,
        "KFD-MEM-001",
        "critical",
        "flags |= HSA_MEM_FLAGS_HOT_PLUGGABLE",
    );
    // The CRAT input forged so that the upstream guard passes.
    let t = edit(
        CRAT,
        "\t\t\tif (mem->flags & CRAT_MEM_FLAGS_HOT_PLUGGABLE)",
        "\t\t\tmem->flags |= CRAT_MEM_FLAGS_HOT_PLUGGABLE;\n\t\t\tif (mem->flags & CRAT_MEM_FLAGS_HOT_PLUGGABLE)",
    );
    expect_rule(CRAT, &t, "KFD-MEM-006", "critical", "mem->flags |= CRAT");
    // The guard's constant redefined in a .c file.
    let t = edit(
        CRAT,
        "#include \"kfd_crat.h\"\n",
        "#include \"kfd_crat.h\"\n#undef CRAT_MEM_FLAGS_HOT_PLUGGABLE\n#define CRAT_MEM_FLAGS_HOT_PLUGGABLE 0x1\n",
    );
    expect_rule(
        CRAT,
        &t,
        "KFD-CONST-001",
        "critical",
        "#define CRAT_MEM_FLAGS_HOT_PLUGGABLE",
    );
}

#[test]
fn the_incident_block_is_critical() {
    let block = "\t\t\t/* RDNA1 FIX: Allow fine-grained memory for Navi 10 (0x731F) when spoofed as gfx1030 */\n\t\t\tif (dev->gpu && dev->gpu->adev && dev->gpu->adev->pdev) {\n\t\t\t\tuint16_t device_id = dev->gpu->adev->pdev->device;\n\t\t\t\tif (device_id == 0x731F && heap_type != HSA_MEM_HEAP_TYPE_SYSTEM) {\n\t\t\t\t\tpr_debug(\"KFD: Enabling fine-grained for RDNA1 0x%x\\n\", device_id);\n\t\t\t\t\tflags |= HSA_MEM_FLAGS_HOT_PLUGGABLE;\n\t\t\t\t}\n\t\t\t}\n";
    let t = edit(
        CRAT,
        "\t\t\tsize_in_bytes =",
        &format!("{block}\t\t\tsize_in_bytes ="),
    );
    let forced = line_of(&t, "\t\t\t\t\tflags |= HSA_MEM_FLAGS_HOT_PLUGGABLE");
    for f in scan_both(CRAT, &t) {
        assert!(has(&f, "KFD-MEM-001", forced), "{f:?}");
        assert!(
            has(&f, "KFD-DEVID-001", line_of(&t, "device_id == 0x731F")),
            "{f:?}"
        );
        assert!(has(&f, "KFD-MARK-001", line_of(&t, "RDNA1 FIX")), "{f:?}");
        // The upstream, guarded statement above it is not a finding.
        let upstream = line_of(&t, "\t\t\t\tflags |= HSA_MEM_FLAGS_HOT_PLUGGABLE");
        assert!(!f.iter().any(|(_, _, l)| *l == upstream), "{f:?}");
    }
    // Text output: the finding explains itself in the full report (-v).
    let fx = driver_tree();
    fx.write(&format!("{TREE}/{CRAT}"), &t);
    let out = fx.run(&["scan", "-v"]).expect_code(1).stdout();
    assert!(
        out.contains(&format!(
            "CRITICAL KFD-MEM-001 line {forced}: flags |= HSA_MEM_FLAGS_HOT_PLUGGABLE;"
        )),
        "{out}"
    );
    assert!(
        out.contains("why: amdkfd sets HSA_MEM_FLAGS_HOT_PLUGGABLE"),
        "{out}"
    );
    assert!(out.contains("fix: Restore the clean file"), "{out}");
}

#[test]
fn benign_changes_are_modified_without_findings() {
    // A debug message, a reindent, and a comment mentioning HACK as upstream writes it.
    let t = edit(
        CRAT,
        "\t\t\tsize_in_bytes =",
        "\t\t\tpr_debug(\"CRAT mem flags 0x%x -> HSA mem flags 0x%x\\n\",\n\t\t\t\t mem->flags, flags);\n\t\t\tsize_in_bytes =",
    );
    expect_quiet(CRAT, &t);
    let t = edit(
        CRAT,
        "\t\t\t\t\t\t\tmem->length_low;",
        "\t\t\t\tmem->length_low;",
    );
    expect_quiet(CRAT, &t);
    let t = edit(
        DEVICE,
        "\tkfd->gtt_sa_chunk_size = chunk_size;",
        "\tkfd->gtt_sa_chunk_size = chunk_size; /* in bytes */",
    );
    expect_quiet(DEVICE, &t);
    // A new chip's case arm that follows upstream numbering is evolution, not spoofing.
    let t = edit(
        DEVICE,
        "\t\tdefault:\n\t\t\tbreak;\n\t\t}",
        "\t\tcase IP_VERSION(11, 0, 5):\n\t\t\tgfx_target_version = 110005;\n\t\t\tf2g = &gfx_v11_kfd2kgd;\n\t\t\tbreak;\n\t\tdefault:\n\t\t\tbreak;\n\t\t}",
    );
    expect_quiet(DEVICE, &t);
}

#[test]
fn gfx_target_spoofing_and_device_special_cases() {
    // Navi10 given gfx1030.
    let t = edit(
        DEVICE,
        "gfx_target_version = 100100;",
        "gfx_target_version = 100300; /* gfx1030 */",
    );
    expect_rule(DEVICE, &t, "KFD-GFX-001", "critical", "100300; /* gfx1030");
    // A new arm that claims another generation's ISA.
    let t = edit(
        DEVICE,
        "\t\tdefault:\n\t\t\tbreak;\n\t\t}",
        "\t\tcase IP_VERSION(10, 1, 11):\n\t\t\tgfx_target_version = 100300;\n\t\t\tf2g = &gfx_v10_kfd2kgd;\n\t\t\tbreak;\n\t\tdefault:\n\t\t\tbreak;\n\t\t}",
    );
    expect_rule(
        DEVICE,
        &t,
        "KFD-GFX-001",
        "critical",
        "gfx_target_version = 100300;\n\t\t\tf2g = &gfx_v10_kfd2kgd",
    );
    // The Navi10 arm given the RDNA2 backend.
    let t = edit(
        DEVICE,
        "\t\t\tif (!vf)\n\t\t\t\tf2g = &gfx_v10_kfd2kgd;",
        "\t\t\tf2g = &gfx_v10_3_kfd2kgd;",
    );
    expect_rule(
        DEVICE,
        &t,
        "KFD-GFX-002",
        "critical",
        "f2g = &gfx_v10_3_kfd2kgd;\n\t\t\tbreak;\n\t\t/* Sienna",
    );
    // The spoofed value hidden behind a local macro.
    let t = edit(
        DEVICE,
        "#include \"kfd_priv.h\"\n",
        "#include \"kfd_priv.h\"\n#define GFX1030 100300\n",
    )
    .replace(
        "gfx_target_version = 100100;",
        "gfx_target_version = GFX1030;",
    );
    expect_rule(
        DEVICE,
        &t,
        "KFD-GFX-001",
        "critical",
        "gfx_target_version = GFX1030",
    );
    // A log message announcing the hack.
    let t = edit(
        DEVICE,
        "\tkfd->adev = adev;\n",
        "\tkfd->adev = adev;\n\tpr_info(\"kfd: hack: spoofing gfx1030 for navi10\\n\");\n",
    );
    expect_rule(DEVICE, &t, "KFD-MARK-006", "high", "pr_info(\"kfd: hack");
    // A device id in a switch, after the table.
    let t = edit(
        DEVICE,
        "\tkfd->adev = adev;\n",
        "\tkfd->adev = adev;\n\tswitch (adev->pdev->device) {\n\tcase 0x731F:\n\t\tgfx_target_version = 100300;\n\t\tbreak;\n\t}\n",
    );
    expect_rule(DEVICE, &t, "KFD-DEVID-001", "high", "case 0x731F:");
    expect_rule(
        DEVICE,
        &t,
        "KFD-GFX-001",
        "critical",
        "\t\tgfx_target_version = 100300;\n\t\tbreak;\n\t}",
    );
    // The unsupported-device check deleted.
    let t = edit(
        DEVICE,
        "\tif (!f2g) {\n\t\tdev_info(kfd_device, \"GC IP %06x %s not supported in kfd\\n\",\n\t\t\t amdgpu_ip_version(adev, GC_HWIP, 0), vf ? \"VF\" : \"\");\n\t\treturn NULL;\n\t}\n\n",
        "",
    );
    expect_rule(DEVICE, &t, "KFD-SAFE-012", "high", "kfd = kzalloc(");
}

#[test]
fn capabilities_forced() {
    let t = edit(
        TOPO,
        "\tif (dev->gpu->adev->gmc.is_app_apu ||\n\t\tdev->gpu->adev->gmc.xgmi.connected_to_cpu)\n\t\tdev->node_props.capability |= HSA_CAP_FLAGS_COHERENTHOSTACCESS;",
        "\tdev->node_props.capability |= HSA_CAP_FLAGS_COHERENTHOSTACCESS;",
    );
    expect_rule(
        TOPO,
        &t,
        "KFD-CAP-001",
        "critical",
        "HSA_CAP_FLAGS_COHERENTHOSTACCESS",
    );
    let t = edit(
        TOPO,
        "\tif (KFD_IS_SVM_API_SUPPORTED(dev->gpu->adev))\n",
        "\tif (dev->gpu->adev->pdev->device == 0x731F || KFD_IS_SVM_API_SUPPORTED(dev->gpu->adev))\n",
    );
    expect_rule(
        TOPO,
        &t,
        "KFD-CAP-003",
        "critical",
        "|= HSA_CAP_SVMAPI_SUPPORTED",
    );
    let t = edit(
        TOPO,
        "\treturn 0;",
        "\tdev->node_props.capability |= 0x18000000;\n\treturn 0;",
    );
    expect_rule(TOPO, &t, "KFD-CAP-004", "critical", "0x18000000");
    let t = edit(
        TOPO,
        "\t\t\t\tgpu->kfd->device_info.gfx_target_version;",
        "\t\t\t\t100300;",
    );
    expect_rule(
        TOPO,
        &t,
        "KFD-GFX-001",
        "critical",
        "dev->node_props.gfx_target_version =",
    );
}

#[test]
fn removed_safety_checks_need_the_clean_copy() {
    let t = edit(
        DEVICE,
        "\tif (WARN_ON(buf_size == 0))\n\t\treturn -EINVAL;\n",
        "",
    );
    let [whole, diff] = scan_both(DEVICE, &t);
    assert!(serious(&whole).is_empty(), "{whole:?}");
    // Reported where the check used to be: the lines above it did not move.
    let at = line_of(DEVICE_C, "\tif (WARN_ON(buf_size == 0))");
    assert!(has(&diff, "KFD-SAFE-002", at), "{diff:?}");
    assert!(has(&diff, "KFD-SAFE-001", at), "{diff:?}");
    // Logging added next to a check is not a finding.
    let t = edit(
        DEVICE,
        "\tif (WARN_ON(buf_size == 0))\n\t\treturn -EINVAL;\n",
        "\tif (WARN_ON(buf_size == 0)) {\n\t\tpr_err(\"empty GTT sub-allocator\\n\");\n\t\treturn -EINVAL;\n\t}\n",
    );
    expect_quiet(DEVICE, &t);
    // Switched off with #if 0: gone from the build, still in the text.
    let t = edit(
        DEVICE,
        "\tif (WARN_ON(buf_size == 0))\n\t\treturn -EINVAL;\n",
        "#if 0\n\tif (WARN_ON(buf_size == 0))\n\t\treturn -EINVAL;\n#endif\n",
    );
    let [_, diff] = scan_both(DEVICE, &t);
    assert!(
        diff.iter()
            .any(|(r, s, _)| r == "KFD-SAFE-002" && s == "high"),
        "{diff:?}"
    );
    assert!(diff.iter().any(|(r, _, _)| r == "KFD-SAFE-021"), "{diff:?}");
    // A HACK note added is a note (info) in diff mode only; upstream's is never one.
    let t = edit(
        DEVICE,
        "\tkfd->gtt_sa_chunk_size = chunk_size;",
        "\tkfd->gtt_sa_chunk_size = chunk_size; /* HACK */",
    );
    let [whole, diff] = scan_both(DEVICE, &t);
    assert!(whole.is_empty(), "{whole:?}");
    assert_eq!(
        diff,
        vec![(
            "KFD-MARK-005".to_string(),
            // A comment compiles to nothing: a note, never more.
            "info".to_string(),
            line_of(&t, "/* HACK */")
        )]
    );
}

#[test]
fn driver_wide_overrides_in_amdgpu() {
    let gmc = "amd/amdgpu/gmc_v10_0.c";
    let drv = "amd/amdgpu/amdgpu_drv.c";
    let t = edit(
        gmc,
        "\treturn 0;\n}",
        "\tadev->gmc.noretry = 0;\n\treturn 0;\n}",
    );
    expect_rule(gmc, &t, "AMDGPU-GMC-001", "high", "noretry = 0");
    let t = edit(gmc, "256 * 1024, 9, 3, 48", "256 * 1024, 4, 3, 48");
    expect_rule(gmc, &t, "AMDGPU-GMC-002", "high", "amdgpu_vm_adjust_size");
    let t = edit(gmc, "\treturn 0;\n}", "\tif (adev->pdev->device == 0x731F)\n\t\tadev->gmc.xgmi.connected_to_cpu = true;\n\treturn 0;\n}");
    expect_rule(
        gmc,
        &t,
        "AMDGPU-GMC-003",
        "critical",
        "connected_to_cpu = true",
    );
    expect_rule(gmc, &t, "AMDGPU-DEVID-001", "high", "0x731F");
    let t = edit(drv, "int amdgpu_noretry = -1;", "int amdgpu_noretry = 0;");
    expect_rule(drv, &t, "AMDGPU-PARAM-001", "high", "amdgpu_noretry = 0");
    let t = edit(
        drv,
        "int amdgpu_exp_hw_support;",
        "int amdgpu_exp_hw_support = 1;",
    );
    expect_rule(drv, &t, "AMDGPU-PARAM-001", "high", "amdgpu_exp_hw_support");
    let t = edit(
        drv,
        "0x731F, PCI_ANY_ID, PCI_ANY_ID, 0, 0, CHIP_NAVI10",
        "0x731F, PCI_ANY_ID, PCI_ANY_ID, 0, 0, CHIP_SIENNA_CICHLID",
    );
    expect_rule(drv, &t, "AMDGPU-DEVID-003", "critical", "0x731F");
    // A comment naming Navi10 in upstream words is not a marker.
    let t = edit(
        gmc,
        "\treturn 0;\n}",
        "\t/* Navi10 and Navi14 share this path */\n\treturn 0;\n}",
    );
    expect_quiet(gmc, &t);
}

// ---------------------------------------------------------------- corpus

/// The new-file line ranges of a patch's hunks.
fn hunk_ranges(patch: &Path) -> Vec<(u64, u64)> {
    std::fs::read_to_string(patch)
        .unwrap()
        .lines()
        .filter_map(|l| {
            let plus = l
                .strip_prefix("@@ ")?
                .split(' ')
                .nth(1)?
                .strip_prefix('+')?;
            let mut it = plus.split(',');
            let start: u64 = it.next()?.parse().ok()?;
            let len: u64 = it.next().map_or(Some(1), |n| n.parse().ok())?;
            Some((start, start + len.max(1) - 1))
        })
        .collect()
}

fn scan_scoped(cr: &CorpusRoot, tree: &str, scope: &str) -> Value {
    let tree_arg = cr.path(tree);
    cr.run(&[
        "--format",
        "json",
        "scan",
        "--tree",
        tree_arg.to_str().unwrap(),
        "--scope",
        scope,
    ])
    .json()
}

fn check_mutation(corpus: &Path, series: &str, tree: &str, m: &Mutation, with_orig: bool) {
    let cr = CorpusRoot::new(corpus, true);
    if with_orig {
        for f in &m.files {
            let p = cr.path(&format!("{tree}/{f}"));
            std::fs::copy(
                &p,
                p.with_file_name(format!("{}.orig", p.file_name().unwrap().to_str().unwrap())),
            )
            .unwrap();
        }
    }
    cr.apply(tree, m);
    let scope = Path::new(&m.files[0])
        .parent()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let j = scan_scoped(&cr, tree, &scope);
    let mode = if with_orig { "diff" } else { "md5sums" };
    let ranges = hunk_ranges(&m.patch);
    for f in &m.files {
        let entry = json_file(&j, f)
            .unwrap_or_else(|| panic!("{series} {} {mode}: {f} not reported", m.id));
        assert_eq!(entry["status"], "modified");
        let found = findings(&j, f);
        if m.unsafe_ {
            assert!(
                found
                    .iter()
                    .any(|(_, s, l)| (s == "critical" || s == "high")
                        && ranges.iter().any(|(a, b)| l >= a && l <= b)),
                "{series} {} {mode}: no high/critical finding in {ranges:?}: {found:?}",
                m.id
            );
        } else {
            assert!(
                serious(&found).is_empty(),
                "{series} {} {mode}: {found:?}",
                m.id
            );
        }
    }
    // Nothing else in the directory is flagged.
    for t in j["trees"].as_array().unwrap() {
        for file in t["files"].as_array().unwrap() {
            let p = file["path"].as_str().unwrap();
            if !m.files.iter().any(|f| f == p) {
                assert!(
                    file["findings"].as_array().unwrap().is_empty(),
                    "{series} {} {mode}: {file}",
                    m.id
                );
            }
        }
    }
}

#[test]
fn corpus_mutations_in_both_modes() {
    let Some(corpus) = corpus() else { return };
    for (series, tree) in [("6.12", PRIMARY), ("6.1", OLDER)] {
        for m in manifest(series) {
            for with_orig in [false, true] {
                check_mutation(&corpus, series, tree, &m, with_orig);
            }
        }
    }
}

#[test]
fn corpus_incident_block_in_both_series_and_modes() {
    let Some(corpus) = corpus() else { return };
    let block = "\t\t\t/* RDNA1 FIX: Allow fine-grained memory for Navi 10 (0x731F) when spoofed as gfx1030 */\n\t\t\tif (dev->gpu && dev->gpu->adev && dev->gpu->adev->pdev) {\n\t\t\t\tuint16_t device_id = dev->gpu->adev->pdev->device;\n\t\t\t\tif (device_id == 0x731F && heap_type != HSA_MEM_HEAP_TYPE_SYSTEM) {\n\t\t\t\t\tpr_debug(\"KFD: Enabling fine-grained for RDNA1 0x%x\\n\", device_id);\n\t\t\t\t\tflags |= HSA_MEM_FLAGS_HOT_PLUGGABLE;\n\t\t\t\t}\n\t\t\t}\n";
    for tree in [PRIMARY, OLDER] {
        for with_orig in [false, true] {
            let cr = CorpusRoot::new(&corpus, true);
            let rel = format!("{tree}/amd/amdkfd/kfd_crat.c");
            cr.unshare(&rel);
            let p = cr.path(&rel);
            let clean = std::fs::read_to_string(&p).unwrap();
            if with_orig {
                std::fs::write(p.with_file_name("kfd_crat.c.orig"), &clean).unwrap();
            }
            let anchor = "\t\t\t\tflags |= HSA_MEM_FLAGS_NON_VOLATILE;\n";
            assert_eq!(clean.matches(anchor).count(), 1);
            let text = clean.replace(anchor, &format!("{anchor}{block}"));
            std::fs::write(&p, &text).unwrap();
            let line = line_of(&text, "\t\t\t\t\tflags |= HSA_MEM_FLAGS_HOT_PLUGGABLE");
            let j = scan_scoped(&cr, tree, "amd/amdkfd");
            let f = findings(&j, "amd/amdkfd/kfd_crat.c");
            assert!(
                f.iter()
                    .any(|(r, s, l)| r == "KFD-MEM-001" && s == "critical" && *l == line),
                "{tree} orig={with_orig}: {f:?}"
            );
            assert_eq!(j["exit_code"], 1);
        }
    }
}

/// Every file of the directory made "modified" by a trailing newline, with the clean
/// file beside it as `.orig`: the whole directory is checked diff-aware.
fn touch_all_with_orig(cr: &CorpusRoot, tree: &str, dir: &str) -> usize {
    let base = cr.path(&format!("{tree}/{dir}"));
    let mut n = 0;
    for e in std::fs::read_dir(&base).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_str().unwrap().to_string();
        if !name.ends_with(".c") {
            continue;
        }
        let clean = std::fs::read(&p).unwrap();
        std::fs::write(p.with_file_name(format!("{name}.orig")), &clean).unwrap();
        let mut changed = clean.clone();
        changed.extend_from_slice(b"\n");
        std::fs::remove_file(&p).unwrap();
        std::fs::write(&p, changed).unwrap();
        n += 1;
    }
    n
}

fn assert_no_medium(j: &Value, what: &str) {
    for t in j["trees"].as_array().unwrap() {
        for f in t["files"].as_array().unwrap() {
            for x in f["findings"].as_array().unwrap() {
                let s = x["severity"].as_str().unwrap();
                assert!(s == "low" || s == "info", "{what}: {} {x}", f["path"]);
            }
        }
    }
}

#[test]
fn corpus_clean_trees_raise_nothing_in_either_mode() {
    let Some(corpus) = corpus() else { return };
    // md5sums only: the 6.1 tree has no reference, so every file is checked whole.
    let cr = CorpusRoot::new(&corpus, false);
    let j = cr.run(&["--format", "json", "scan"]).json();
    assert!(j["summary"]["unverified"].as_u64().unwrap() > 2000);
    assert_eq!(j["summary"]["findings"], 0, "{}", j["summary"]);
    // The 6.12 tree checked whole: every hash in its md5sums made wrong.
    let cr = CorpusRoot::new(&corpus, false);
    let sums = cr.path("var/lib/dpkg/info/amdgpu-dkms.md5sums");
    let text = std::fs::read_to_string(&sums).unwrap();
    let wrong: String = text
        .lines()
        .map(|l| format!("{}{}\n", "0".repeat(32), &l[32..]))
        .collect();
    std::fs::write(&sums, wrong).unwrap();
    let tree_arg = cr.path(PRIMARY);
    let j = cr
        .run(&[
            "--format",
            "json",
            "scan",
            "--tree",
            tree_arg.to_str().unwrap(),
        ])
        .json();
    assert!(j["summary"]["modified"].as_u64().unwrap() > 2000);
    let in_files: usize = j["trees"][0]["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["findings"].as_array().unwrap().len())
        .sum();
    assert_eq!(in_files, 0, "{}", j["summary"]);
    // With every hash wrong, the build scripts dkms runs also count as changed: that
    // (and only that) is reported, about the build recipe, not the C sources.
    let build: Vec<&str> = j["trees"][0]["build"]["findings"]
        .as_array()
        .map(|a| a.iter().map(|f| f["rule"].as_str().unwrap()).collect())
        .unwrap_or_default();
    assert!(build.iter().all(|r| *r == "DKMS-SCRIPT-001"), "{build:?}");
    // Diff-aware: every amdkfd and amdgpu source touched, clean copy beside it.
    for tree in [PRIMARY, OLDER] {
        let cr = CorpusRoot::new(&corpus, true);
        let n = touch_all_with_orig(&cr, tree, "amd/amdkfd")
            + touch_all_with_orig(&cr, tree, "amd/amdgpu");
        let tree_arg = cr.path(tree);
        let j = cr
            .run(&[
                "--format",
                "json",
                "scan",
                "--tree",
                tree_arg.to_str().unwrap(),
                "--scope",
                "amd",
            ])
            .json();
        assert_eq!(j["summary"]["modified"].as_u64().unwrap() as usize, n);
        assert_no_medium(&j, tree);
        assert_eq!(j["summary"]["findings"], 0, "{}", j["summary"]);
    }
}

/// Whether a file of `dir` takes part in the swap: all of amdkfd, and the amdgpu files
/// the memory, VM, limit and device-gate rules reach.
fn swapped(dir: &str, name: &str) -> bool {
    dir == "amd/amdkfd"
        || name.starts_with("gmc_v")
        || name.starts_with("amdgpu_vm")
        || name.starts_with("amdgpu_amdkfd")
        || name == "amdgpu_ttm.c"
        || name == "amdgpu_device.c"
}

#[test]
fn corpus_swap_between_kernel_series_is_not_dangerous() {
    let Some(corpus) = corpus() else { return };
    for (from, onto) in [(PRIMARY, OLDER), (OLDER, PRIMARY)] {
        for with_orig in [false, true] {
            let cr = CorpusRoot::new(&corpus, true);
            let mut replaced = [0, 0];
            for (i, dir) in ["amd/amdkfd", "amd/amdgpu"].into_iter().enumerate() {
                let src = cr.path(&format!("{from}/{dir}"));
                let dst = cr.path(&format!("{onto}/{dir}"));
                for e in std::fs::read_dir(&src).unwrap() {
                    let p = e.unwrap().path();
                    let name = p.file_name().unwrap().to_owned();
                    if !swapped(dir, name.to_str().unwrap()) {
                        continue;
                    }
                    let target = dst.join(&name);
                    let new = std::fs::read(&p).unwrap();
                    if target.exists() {
                        let old = std::fs::read(&target).unwrap();
                        if old == new {
                            continue;
                        }
                        if with_orig {
                            let mut orig = name.clone();
                            orig.push(".orig");
                            std::fs::write(dst.join(orig), &old).unwrap();
                        }
                        std::fs::remove_file(&target).unwrap();
                        replaced[i] += 1;
                    }
                    std::fs::write(&target, new).unwrap();
                }
            }
            assert!(replaced[0] > 40, "{replaced:?}");
            assert!(replaced[1] > 15, "{replaced:?}");
            let j = scan_scoped(&cr, onto, "amd");
            assert!(j["summary"]["modified"].as_u64().unwrap() >= replaced[0] + replaced[1]);
            for t in j["trees"].as_array().unwrap() {
                for f in t["files"].as_array().unwrap() {
                    let found: Vec<_> = f["findings"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .filter(|x| x["severity"] == "critical" || x["severity"] == "high")
                        .collect();
                    assert!(
                        found.is_empty(),
                        "{from} onto {onto} orig={with_orig}: {} {found:?}",
                        f["path"]
                    );
                }
            }
        }
    }
}

/// Every rule file in `patterns/` is built into the binary: a file added there and not to
/// the built-in list would be silently ignored, and its rules would never run.
#[test]
fn every_rule_file_in_patterns_is_built_in() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("patterns");
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".toml"))
        .collect();
    on_disk.sort();
    let mut built_in: Vec<String> = kfd_audit::rules::BUILTIN
        .iter()
        .map(|(name, _)| name.to_string())
        .collect();
    built_in.sort();
    assert_eq!(
        on_disk, built_in,
        "patterns/*.toml and rules::BUILTIN differ: add the file to BUILTIN in src/rules/mod.rs"
    );
    // And what is built in is what is on disk now, byte for byte.
    for (name, text) in kfd_audit::rules::BUILTIN {
        assert_eq!(
            std::fs::read_to_string(dir.join(name)).unwrap(),
            *text,
            "{name}"
        );
    }
}
