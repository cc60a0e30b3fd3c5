//! The rule set on driver versions it was not written against (issue 20): trees of kernel
//! series older than 6.1 and newer than 6.12, built by `tests/version-corpus.sh` from
//! Debian's linux-source packages and scanned with no reference (whole-file mode, every
//! file judged whole). Set KFD_VERSION_CORPUS to its root; `.ci/run` does, and sets
//! KFD_REQUIRE_VERSION_CORPUS=1 so that a missing corpus fails instead of skipping.
//!
//! Two guarantees: a clean tree of any version raises nothing of medium or above, and the
//! dangerous changes of the incident's classes are still high or critical on the oldest and
//! the newest tree.

use crate::fixture::Run;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

/// One tree of the version corpus.
struct Tree {
    name: String,
    series: (u32, u32),
}

fn version_corpus() -> Option<(PathBuf, Vec<Tree>)> {
    let dir = std::env::var_os("KFD_VERSION_CORPUS").map(PathBuf::from);
    let tsv = dir
        .as_ref()
        .map(|d| d.join("var/lib/kfd-corpus/versions.tsv"));
    let text = tsv.as_ref().and_then(|t| std::fs::read_to_string(t).ok());
    let Some(text) = text else {
        if std::env::var_os("KFD_REQUIRE_VERSION_CORPUS").is_some() {
            panic!("KFD_REQUIRE_VERSION_CORPUS is set but KFD_VERSION_CORPUS has no version corpus; run tests/version-corpus.sh");
        }
        eprintln!("skipped: set KFD_VERSION_CORPUS to a root made by tests/version-corpus.sh");
        return None;
    };
    let trees: Vec<Tree> = text
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let c: Vec<&str> = l.split('\t').collect();
            let (ma, mi) = c[1].split_once('.').expect("series like 5.10");
            Tree {
                name: c[0].to_string(),
                series: (ma.parse().unwrap(), mi.parse().unwrap()),
            }
        })
        .collect();
    Some((dir.unwrap(), trees))
}

fn scan(root: &Path, extra: &[&str]) -> Value {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kfd-audit"));
    cmd.arg("--root")
        .arg(root)
        .args(["--format", "json", "scan", "--sections", "tree"])
        .args(extra);
    Run::of(cmd).json()
}

/// `(tree, file, rule, severity, line)` of every finding.
fn findings(j: &Value) -> Vec<(String, String, String, String, u64)> {
    let mut out = Vec::new();
    for t in j["trees"].as_array().unwrap() {
        let tree = t["path"].as_str().unwrap().to_string();
        for f in t["files"].as_array().unwrap() {
            for x in f["findings"].as_array().into_iter().flatten() {
                out.push((
                    tree.clone(),
                    f["path"].as_str().unwrap().to_string(),
                    x["rule"].as_str().unwrap().to_string(),
                    x["severity"].as_str().unwrap().to_string(),
                    x["line"].as_u64().unwrap_or(0),
                ));
            }
        }
    }
    out
}

fn serious(sev: &str) -> bool {
    matches!(sev, "medium" | "high" | "critical")
}

#[test]
fn the_version_corpus_spans_older_and_newer_series() {
    let Some((_, trees)) = version_corpus() else {
        return;
    };
    assert!(
        trees.iter().any(|t| t.series < (6, 1)),
        "no tree older than 6.1"
    );
    assert!(
        trees.iter().any(|t| t.series > (6, 12)),
        "no tree newer than 6.12"
    );
}

#[test]
fn clean_trees_of_every_version_raise_nothing_serious_whole_file() {
    let Some((root, trees)) = version_corpus() else {
        return;
    };
    let j = scan(&root, &[]);
    // No reference at all: every file is judged whole.
    assert_eq!(j["summary"]["ok"], 0, "{}", j["summary"]);
    assert_eq!(j["trees"].as_array().unwrap().len(), trees.len());
    for t in j["trees"].as_array().unwrap() {
        assert!(
            t["references"].as_array().unwrap().is_empty(),
            "{}",
            t["path"]
        );
    }
    let all = findings(&j);
    for t in &trees {
        let n = all.iter().filter(|f| f.0.ends_with(&t.name)).count();
        eprintln!("{}: {n} finding(s), all below medium", t.name);
    }
    let bad: Vec<_> = all.iter().filter(|f| serious(&f.3)).collect();
    assert!(bad.is_empty(), "medium+ findings on clean trees: {bad:#?}");
}

/// A dangerous change written against what every version has (an anchor line), so that
/// it applies to trees whose line numbers differ.
struct Change {
    name: &'static str,
    file: &'static str,
    /// The first occurrence of the first of these the file has is the anchor (versions
    /// spell the same code differently).
    anchors: &'static [&'static str],
    /// Replaces the anchor (`{}` is the anchor's whole line, to insert lines after it).
    with: &'static str,
    /// A finding of this rule at high or critical on `file` is expected.
    rule: &'static str,
}

const CHANGES: &[Change] = &[
    // The incident: VRAM reported fine-grained.
    Change {
        name: "hot-pluggable forced in kfd_parse_subtype_mem",
        file: "amd/amdkfd/kfd_crat.c",
        anchors: &["flags |= HSA_MEM_FLAGS_NON_VOLATILE;"],
        with: "{}\n\t\t\t/* RDNA1 fix: VRAM is fine-grained */\n\t\t\tflags |= HSA_MEM_FLAGS_HOT_PLUGGABLE;",
        rule: "KFD-MEM-001",
    },
    // Navi10 given Sienna Cichlid's ISA (trees that have the per-IP table, 5.12 on).
    Change {
        name: "Navi10 given gfx1030",
        file: "amd/amdkfd/kfd_device.c",
        anchors: &["gfx_target_version = 100100;"],
        with: "gfx_target_version = 100300;",
        rule: "KFD-GFX-001",
    },
    // The refusal of a chip with no kfd2kgd backend removed (5.10's combined form too).
    Change {
        name: "kfd2kgd refusal removed",
        file: "amd/amdkfd/kfd_device.c",
        anchors: &["if (!device_info || !f2g) {", "if (!f2g) {"],
        with: "if (!kfd_device) {",
        rule: "KFD-SAFE-012",
    },
    // A capability bit set for the RX 5700's PCI id.
    Change {
        name: "capability forced for 0x731F",
        file: "amd/amdkfd/kfd_topology.c",
        anchors: &["dev->node_props.capability &= ~HSA_CAP_ATS_PRESENT;"],
        with: "{}\n\tif (dev->gpu->pdev->device == 0x731F)\n\t\tdev->node_props.capability |= HSA_CAP_FLAGS_COHERENTHOSTACCESS;",
        rule: "KFD-CAP-003",
    },
    // GPUs that need PCIe atomics no longer skipped (kgd2kfd_probe in 5.10, _device_init since).
    Change {
        name: "PCIe atomics requirement dropped",
        file: "amd/amdkfd/kfd_device.c",
        anchors: &[
            "device_info->needs_pci_atomics &&",
            "device_info.needs_pci_atomics &&",
        ],
        with: "kfd->unused_flag &&",
        rule: "KFD-SAFE-013",
    },
    // The CRAT bounds check weakened to a fixed size (trees that have the check: the length
    // check beside it says this version had it, so it is high without a reference).
    Change {
        name: "CRAT bounds check weakened",
        file: "amd/amdkfd/kfd_crat.c",
        anchors: &["(char *)crat_image + image_len) {"],
        with: "(char *)crat_image + 0x100000) {",
        rule: "KFD-SAFE-010",
    },
    // Classes beyond the incident. The PCIe-atomics requirement switched off (trees that set
    // it at run time, 5.13 on).
    Change {
        name: "PCIe atomics requirement switched off",
        file: "amd/amdkfd/kfd_device.c",
        anchors: &["kfd->device_info.needs_pci_atomics = true;"],
        with: "kfd->device_info.needs_pci_atomics = false;",
        rule: "CAP-INFO-001",
    },
    // The device-cgroup helper answers "allowed" before it asks.
    Change {
        name: "device-cgroup helper answers 0",
        file: "amd/amdkfd/kfd_priv.h",
        anchors: &[
            "\tstruct drm_device *ddev = kfd->ddev;",
            "\tstruct drm_device *ddev;",
        ],
        with: "{}\n\n\treturn 0;",
        rule: "SAFE-GATE-001",
    },
    // Processes get apertures on GPUs their cgroup denies them.
    Change {
        name: "permission check dropped from kfd_init_apertures",
        file: "amd/amdkfd/kfd_flat_memory.c",
        anchors: &["if (!dev || kfd_devcgroup_check_permission(dev)) {"],
        with: "if (!dev) {",
        rule: "KFD-PERM-001",
    },
    // A link without PCIe atomics described as having them.
    Change {
        name: "CRAT no-atomics link flag zeroed",
        file: "amd/amdkfd/kfd_crat.h",
        anchors: &["#define CRAT_IOLINK_FLAGS_NO_ATOMICS_64_BIT\t(1 << 3)"],
        with: "#define CRAT_IOLINK_FLAGS_NO_ATOMICS_64_BIT\t0",
        rule: "SAFE-CONST-003",
    },
];

/// Copies one tree (hard links, the changed file un-linked) and applies a change;
/// None when the tree has no anchor for it.
fn changed_copy(corpus: &Path, tree: &str, c: &Change) -> Option<tempfile::TempDir> {
    let src = corpus.join("usr/src").join(tree);
    let text = std::fs::read_to_string(src.join(c.file)).ok()?;
    let anchor = c.anchors.iter().find(|a| text.contains(**a))?;
    // The whole anchor line, indentation kept.
    let at = text.find(anchor).unwrap();
    let start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let end = text[at..].find('\n').map_or(text.len(), |i| at + i);
    let line = &text[start..end];
    let new_line = if c.with.contains("{}") {
        c.with.replace("{}", line)
    } else {
        line.replacen(anchor, c.with, 1)
    };
    let changed = format!("{}{}{}", &text[..start], new_line, &text[end..]);

    let base = corpus.parent().unwrap_or(Path::new("/tmp"));
    let dir = tempfile::Builder::new()
        .prefix("kfd-version-copy")
        .tempdir_in(base)
        .unwrap();
    std::fs::create_dir_all(dir.path().join("usr/src")).unwrap();
    let ok = Command::new("cp")
        .arg("-al")
        .arg(&src)
        .arg(dir.path().join("usr/src"))
        .status()
        .unwrap()
        .success();
    assert!(ok, "cp -al of {tree} failed");
    let dst = dir.path().join("usr/src").join(tree).join(c.file);
    std::fs::remove_file(&dst).unwrap();
    std::fs::write(&dst, changed).unwrap();
    Some(dir)
}

#[test]
fn dangerous_changes_are_caught_on_the_oldest_and_the_newest_tree() {
    let Some((corpus, trees)) = version_corpus() else {
        return;
    };
    let oldest = trees.iter().min_by_key(|t| t.series).unwrap();
    let newest = trees.iter().max_by_key(|t| t.series).unwrap();
    for tree in [oldest, newest] {
        let mut applied = 0;
        for c in CHANGES {
            let Some(copy) = changed_copy(&corpus, &tree.name, c) else {
                eprintln!("{}: no anchor for '{}'", tree.name, c.name);
                continue;
            };
            applied += 1;
            let j = scan(copy.path(), &["--scope", "amd/amdkfd"]);
            let all = findings(&j);
            let hit = all.iter().any(|f| {
                f.1 == c.file && f.2 == c.rule && matches!(f.3.as_str(), "high" | "critical")
            });
            assert!(
                hit,
                "{}: '{}' not reported as {} high/critical; findings: {all:#?}",
                tree.name, c.name, c.rule
            );
            // Nothing else of medium or above: the change is the only one in the tree.
            let others: Vec<_> = all
                .iter()
                .filter(|f| serious(&f.3) && f.1 != c.file)
                .collect();
            assert!(others.is_empty(), "{}: {others:#?}", tree.name);
        }
        assert!(
            applied >= 3,
            "{}: only {applied} change(s) applied; the tree lacks their anchors",
            tree.name
        );
    }
}

/// A hard-link copy of one tree with a shared-corpus mutation applied (its files
/// un-linked first); None when the patch does not apply to this version.
fn mutated_copy(
    corpus: &Path,
    tree: &str,
    m: &crate::corpus::Mutation,
) -> Option<tempfile::TempDir> {
    let src = corpus.join("usr/src").join(tree);
    let dry = Command::new("patch")
        .args(["-p1", "--dry-run", "-s", "-f", "-d"])
        .arg(&src)
        .arg("-i")
        .arg(&m.patch)
        .output()
        .unwrap();
    if !dry.status.success() {
        return None;
    }
    let base = corpus.parent().unwrap_or(Path::new("/tmp"));
    let dir = tempfile::Builder::new()
        .prefix("kfd-version-copy")
        .tempdir_in(base)
        .unwrap();
    std::fs::create_dir_all(dir.path().join("usr/src")).unwrap();
    assert!(Command::new("cp")
        .arg("-al")
        .arg(&src)
        .arg(dir.path().join("usr/src"))
        .status()
        .unwrap()
        .success());
    let copy = dir.path().join("usr/src").join(tree);
    for f in &m.files {
        let p = copy.join(f);
        let data = std::fs::read(&p).unwrap();
        std::fs::remove_file(&p).unwrap();
        std::fs::write(&p, data).unwrap();
    }
    let out = Command::new("patch")
        .args(["-p1", "--no-backup-if-mismatch", "-s", "-f", "-d"])
        .arg(&copy)
        .arg("-i")
        .arg(&m.patch)
        .output()
        .unwrap();
    assert!(out.status.success(), "patch {} on {tree} failed", m.id);
    Some(dir)
}

/// The shared corpus's mutations (written for 6.12 and 6.1) wherever they apply to an older
/// or a newer tree: unsafe ones are still high or critical on a file they touch, benign ones
/// raise nothing high, all in whole-file mode.
#[test]
fn shared_mutations_hold_on_the_oldest_and_the_newest_tree() {
    let Some((corpus, trees)) = version_corpus() else {
        return;
    };
    let oldest = trees.iter().min_by_key(|t| t.series).unwrap();
    let newest = trees.iter().max_by_key(|t| t.series).unwrap();
    for tree in [oldest, newest] {
        let mut unsafe_applied = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for series in ["6.12", "6.1"] {
            for m in crate::corpus::manifest(series) {
                if !seen.insert(m.id.clone()) {
                    continue;
                }
                let Some(copy) = mutated_copy(&corpus, &tree.name, &m) else {
                    seen.remove(&m.id);
                    continue;
                };
                let j = scan(copy.path(), &["--scope", "amd"]);
                let all = findings(&j);
                let high: Vec<_> = all
                    .iter()
                    .filter(|f| matches!(f.3.as_str(), "high" | "critical"))
                    .collect();
                if m.unsafe_ {
                    unsafe_applied.push(m.id.clone());
                    assert!(
                        high.iter().any(|f| m.files.contains(&f.1)),
                        "{} {series}/{}: unsafe change not high/critical: {all:#?}",
                        tree.name,
                        m.id
                    );
                } else {
                    assert!(
                        high.is_empty(),
                        "{} {series}/{}: benign change raised {high:#?}",
                        tree.name,
                        m.id
                    );
                }
            }
        }
        eprintln!(
            "{}: unsafe mutations applied: {unsafe_applied:?}",
            tree.name
        );
        assert!(
            unsafe_applied.len() >= 3,
            "{}: only {unsafe_applied:?} applied",
            tree.name
        );
    }
}
