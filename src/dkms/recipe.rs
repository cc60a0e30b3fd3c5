//! What DKMS will really compile. A clean `/usr/src/amdgpu-<ver>` does not mean a
//! clean module: dkms also applies `PATCH[n]` files from the tree's `patches/`
//! directory (filtered by `PATCH_MATCH[n]`), runs `PRE_BUILD`/`POST_BUILD` scripts and
//! the `MAKE[n]` command, and sources overrides after the tree's dkms.conf.
//!
//! Facts from dkms 3.0.10 (`read_conf` in /usr/sbin/dkms): after the tree's dkms.conf
//! it sources, in order, `/etc/dkms/<module>.conf`, `/etc/dkms/<module>-<version>.conf`,
//! `/etc/dkms/<module>-<version>-<kernel>.conf` and `/etc/dkms/<module>-<version>-<kernel>-<arch>.conf`;
//! `/etc/dkms/framework.conf` and `framework.conf.d/*.conf` set where dkms keeps its
//! trees. A patch named by `PATCH[n]` is applied as `patch -p1 < ./patches/<name>` in
//! the build copy, for kernels matching the `PATCH_MATCH[n]` regex (all when unset).

use crate::dkms::patch::{self, FilePatch};
use crate::finding::{Finding, Severity};
use crate::io::root::Root;
use crate::scan::{FileStatus, TreeScan};
use crate::tree::DkmsConf;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Keys whose change makes dkms compile or run something else than the package says.
const BUILD_KEYS: &[&str] = &[
    "MAKE",
    "MAKE_MATCH",
    "PATCH",
    "PATCH_MATCH",
    "PRE_BUILD",
    "POST_BUILD",
    "PRE_INSTALL",
    "POST_INSTALL",
    "POST_ADD",
    "POST_REMOVE",
    "CLEAN",
    "BUILT_MODULE_NAME",
    "BUILT_MODULE_LOCATION",
    "DEST_MODULE_LOCATION",
    "DEST_MODULE_NAME",
    "STRIP",
    "BUILD_EXCLUSIVE_KERNEL",
    "BUILD_EXCLUSIVE_ARCH",
];

/// Keys naming a script dkms runs from the tree.
const SCRIPT_KEYS: &[&str] = &[
    "PRE_BUILD",
    "POST_BUILD",
    "PRE_INSTALL",
    "POST_INSTALL",
    "POST_ADD",
    "POST_REMOVE",
];

/// framework.conf settings that redirect where dkms reads sources or puts modules,
/// or run a command of their own.
const FRAMEWORK_KEYS: &[&str] = &[
    "source_tree",
    "dkms_tree",
    "install_tree",
    "post_transaction",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum OverrideKind {
    Module,
    ModuleVersion,
    ModuleVersionKernel,
    Framework,
}

/// A configuration file dkms sources besides the tree's own dkms.conf.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Override {
    /// As the audited system names it, e.g. `/etc/dkms/amdgpu-6.8.5.conf`.
    pub path: String,
    pub kind: OverrideKind,
    /// The keys it sets (`MAKE[0]`, `PATCH[0]`, ...).
    pub sets: Vec<String>,
    #[serde(skip)]
    pub conf: DkmsConf,
    #[serde(skip)]
    pub text: String,
}

/// A patch dkms applies at build time.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct BuildPatch {
    /// The file holding the patch text (a `patches/` file or an override with a here-document).
    pub path: String,
    /// 1-based line where the patch text starts in that file (1 for a patch file).
    pub line: usize,
    /// Inline here-document in a MAKE/PRE_BUILD command, rather than a `patches/` file.
    pub inline: bool,
    /// Files of the tree it changes.
    pub targets: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel_match: Option<String>,
    #[serde(skip)]
    pub files: Vec<FilePatch>,
}

/// A finding about the build recipe, located in the file that causes it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct RecipeFinding {
    /// The file the finding is in (an override, a patch file, dkms.conf, a script).
    pub path: String,
    /// For a finding inside a build-time patch: the tree file the patch changes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(flatten)]
    pub finding: Finding,
}

/// The effective build recipe of a tree and what is wrong with it.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct BuildAudit {
    pub overrides: Vec<Override>,
    pub patches: Vec<BuildPatch>,
    pub findings: Vec<RecipeFinding>,
}

/// Judges the text of one tree file as changed by a build-time patch: given the
/// target's tree-relative path, the patched text and the text before the patch,
/// returns the rule engine's findings (line numbers in the patched text).
pub(crate) type ContentCheck<'a> = dyn Fn(&str, &str, Option<&str>) -> Vec<Finding> + 'a;

fn finding(
    rule: &str,
    severity: Severity,
    title: &str,
    line: usize,
    text: &str,
    why: &str,
    fix: &str,
) -> Finding {
    Finding {
        rule: rule.to_string(),
        severity,
        title: title.to_string(),
        line,
        text: text.trim().to_string(),
        why: why.to_string(),
        fix: fix.to_string(),
    }
}

fn key_base(key: &str) -> &str {
    key.split('[').next().unwrap_or(key)
}

/// Whether setting this dkms.conf key changes what is compiled or run at build time.
pub(crate) fn changes_build(key: &str) -> bool {
    BUILD_KEYS.contains(&key_base(key))
}

/// The per-module override files (not framework.conf) that change the build of a
/// module version, as system paths: what the recovery plan moves aside.
pub(crate) fn build_overrides(root: &Root, module: &str, version: &str) -> Vec<String> {
    find_overrides(root, module, version)
        .into_iter()
        .filter(|o| o.kind != OverrideKind::Framework && o.sets.iter().any(|k| changes_build(k)))
        .map(|o| o.path)
        .collect()
}

/// The override files dkms would read for this module and version, under the root.
pub(crate) fn find_overrides(root: &Root, module: &str, version: &str) -> Vec<Override> {
    let etc = root.path("/etc/dkms");
    let mut found: Vec<(OverrideKind, PathBuf)> = Vec::new();
    let exact = [
        (OverrideKind::Module, format!("{module}.conf")),
        (
            OverrideKind::ModuleVersion,
            format!("{module}-{version}.conf"),
        ),
    ];
    for (kind, name) in exact {
        let p = etc.join(name);
        if p.is_file() {
            found.push((kind, p));
        }
    }
    // Per-kernel and per-kernel-arch overrides: `<module>-<version>-<kernel>[-<arch>].conf`.
    let kernel_prefix = format!("{module}-{version}-");
    let mut framework = vec![etc.join("framework.conf")];
    if let Ok(entries) = std::fs::read_dir(&etc) {
        let mut names: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        names.sort();
        for p in names {
            let name = p
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            if name.starts_with(&kernel_prefix) && name.ends_with(".conf") && p.is_file() {
                found.push((OverrideKind::ModuleVersionKernel, p));
            }
        }
    }
    if let Ok(entries) = std::fs::read_dir(etc.join("framework.conf.d")) {
        let mut names: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "conf"))
            .collect();
        names.sort();
        framework.extend(names);
    }
    for p in framework {
        if p.is_file() {
            found.push((OverrideKind::Framework, p));
        }
    }
    found
        .into_iter()
        .filter_map(|(kind, host)| {
            let bytes = crate::io::read::read_reference(&host).ok()??;
            let text = String::from_utf8_lossy(&bytes).into_owned();
            let conf = DkmsConf::parse(&text);
            let sets = conf
                .values
                .keys()
                .filter(|k| kind != OverrideKind::Framework || FRAMEWORK_KEYS.contains(&k.as_str()))
                .cloned()
                .collect();
            Some(Override {
                path: root
                    .system_path(&host)
                    .unwrap_or(host)
                    .display()
                    .to_string(),
                kind,
                sets,
                conf,
                text,
            })
        })
        .collect()
}

/// Here-documents in a shell command (`cat > x <<'EOF' ... EOF`), with the 0-based
/// line offset of each body within the command text.
pub fn here_documents(command: &str) -> Vec<(usize, String)> {
    let lines: Vec<&str> = command.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let Some(pos) = line.find("<<") else {
            i += 1;
            continue;
        };
        let after = &line[pos + 2..];
        let (strip_tabs, after) = match after.strip_prefix('-') {
            Some(a) => (true, a),
            None => (false, after),
        };
        let word: String = after
            .trim_start()
            .trim_start_matches(['\'', '"', '\\'])
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if word.is_empty() {
            i += 1;
            continue;
        }
        let start = i + 1;
        let mut end = start;
        while end < lines.len() {
            let l = if strip_tabs {
                lines[end].trim_start_matches('\t')
            } else {
                lines[end]
            };
            // The terminator may be followed by the rest of the command on the same line.
            if l.trim_end() == word
                || l.starts_with(&format!("{word} "))
                || l.starts_with(&format!("{word};"))
            {
                break;
            }
            end += 1;
        }
        let body: Vec<&str> = lines[start..end.min(lines.len())]
            .iter()
            .map(|l| {
                if strip_tabs {
                    l.trim_start_matches('\t')
                } else {
                    l
                }
            })
            .collect();
        out.push((start, body.join("\n") + "\n"));
        i = end + 1;
    }
    out
}

/// The line within `text` where `needle` starts (1-based), or 1.
fn line_of(text: &str, needle: &str) -> usize {
    let first = needle.lines().next().unwrap_or("");
    if first.is_empty() {
        return 1;
    }
    text.lines()
        .position(|l| l.contains(first))
        .map(|i| i + 1)
        .unwrap_or(1)
}

/// Builds the effective recipe of a scanned tree and judges it, in the order dkms reads
/// it: the overrides, the `PATCH[n]` files, the here-documents of its commands, what
/// those patches change, and the scripts it runs. Findings come in that order too.
pub(crate) fn audit(root: &Root, scan: &TreeScan, check: &ContentCheck<'_>) -> BuildAudit {
    let tree = &scan.tree;
    let module = tree.package();
    let version = tree.version();
    let overrides = find_overrides(root, &module, &version);
    let tree_conf = tree.conf.clone().unwrap_or_default();
    let conf_path = format!("{}/dkms.conf", tree.system_path.display());

    let mut findings = override_findings(&overrides, &module, &version);
    let (mut patches, missing) = named_patches(scan, &conf_path, &tree_conf, &overrides);
    findings.extend(missing);
    patches.extend(inline_patches(&conf_path, &tree_conf, &overrides));
    findings.extend(patch_findings(scan, &patches, check));
    findings.extend(script_findings(scan, &tree_conf));
    BuildAudit {
        overrides,
        patches,
        findings,
    }
}

/// Phase 1, overrides: each one that changes the build is reported.
fn override_findings(overrides: &[Override], module: &str, version: &str) -> Vec<RecipeFinding> {
    let mut findings = Vec::new();
    for o in overrides {
        let build_keys: Vec<&String> = o
            .sets
            .iter()
            .filter(|k| o.kind == OverrideKind::Framework || BUILD_KEYS.contains(&key_base(k)))
            .collect();
        if build_keys.is_empty() {
            continue;
        }
        let first_line = build_keys
            .iter()
            .filter_map(|k| o.conf.lines.get(k.as_str()))
            .min()
            .copied()
            .unwrap_or(1);
        let keys = build_keys
            .iter()
            .map(|k| k.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let (rule, title, why) = if o.kind == OverrideKind::Framework {
            (
                "DKMS-FRAMEWORK-001",
                "dkms framework configuration redirects its trees or runs a command",
                "framework.conf decides where dkms reads module sources and where it installs modules; \
                 pointing it elsewhere builds and installs code that no audit of /usr/src sees.",
            )
        } else {
            (
                "DKMS-OVERRIDE-001",
                "an /etc/dkms override changes how the module is built",
                "dkms sources this file after the package's dkms.conf, so what it sets replaces the package's \
                 build recipe: the module that gets built is not the one the package's sources describe, \
                 even when every file in /usr/src matches the package.",
            )
        };
        findings.push(RecipeFinding {
            path: o.path.clone(),
            target: None,
            finding: finding(
                rule,
                Severity::Medium,
                title,
                first_line,
                &format!("sets {keys}"),
                why,
                &format!(
                    "Move the override aside (e.g. `mv {p} /root/{n}.disabled`), then rebuild the module: \
                     `dkms remove -m {module} -v {version} --all`, `dkms build`/`dkms install` for each kernel.",
                    p = o.path,
                    n = Path::new(&o.path).file_name().unwrap_or_default().to_string_lossy()
                ),
            ),
        });
    }
    findings
}

/// Phase 2, the effective `PATCH[n]` list: the tree's dkms.conf, then each override in order
/// (a later one replaces an index). Returns the patches read, and a finding for each
/// named patch that is not in the tree.
fn named_patches(
    scan: &TreeScan,
    conf_path: &str,
    tree_conf: &DkmsConf,
    overrides: &[Override],
) -> (Vec<BuildPatch>, Vec<RecipeFinding>) {
    let tree = &scan.tree;
    let mut patches = Vec::new();
    let mut missing = Vec::new();
    let mut patch_names: std::collections::BTreeMap<u32, (String, Option<String>, String, usize)> =
        std::collections::BTreeMap::new();
    let sources = std::iter::once((conf_path.to_string(), tree_conf)).chain(
        overrides
            .iter()
            .filter(|o| o.kind != OverrideKind::Framework)
            .map(|o| (o.path.clone(), &o.conf)),
    );
    for (path, conf) in sources {
        for (i, name) in conf.indexed("PATCH") {
            let line = conf.lines.get(&format!("PATCH[{i}]")).copied().unwrap_or(1);
            patch_names.insert(i, (name.to_string(), None, path.clone(), line));
        }
        for (i, m) in conf.indexed("PATCH_MATCH") {
            if let Some(e) = patch_names.get_mut(&i) {
                e.1 = Some(m.to_string());
            }
        }
    }
    for (name, kernel_match, named_in, line) in patch_names.into_values() {
        let rel = Path::new("patches").join(&name);
        let host = tree.host_path.join(&rel);
        let sys = format!("{}/{}", tree.system_path.display(), rel.display());
        // The name comes from a file of the tree: a patch is read only from inside
        // patches/, as a regular file of a source file's size, never through a link.
        let read = crate::reference::safe_relative(Path::new(&name))
            .ok_or(())
            .and_then(|_| {
                crate::io::read::read_limited(&host, crate::io::read::MAX_SOURCE_FILE)
                    .map_err(|_| ())
            });
        let text = match read {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(()) => {
                missing.push(RecipeFinding {
                    path: named_in.clone(),
                    target: None,
                    finding: finding(
                        "DKMS-PATCH-002",
                        Severity::Low,
                        "a PATCH[n] entry names a patch that is not in the tree",
                        line,
                        &format!("PATCH names {name}"),
                        "dkms stops the build when a named patch is missing from patches/; the module will not rebuild.",
                        "Remove the PATCH line (or restore the package's dkms.conf), then rebuild.",
                    ),
                });
                continue;
            }
        };
        let files = patch::parse(&text);
        patches.push(BuildPatch {
            path: sys,
            line: 1,
            inline: false,
            targets: files.iter().map(|f| f.path.clone()).collect(),
            kernel_match,
            files,
        });
    }
    (patches, missing)
}

/// Phase 3, inline patches: here-documents in MAKE/PRE_BUILD/POST_BUILD/CLEAN of any recipe
/// file that hold a unified diff.
fn inline_patches(
    conf_path: &str,
    tree_conf: &DkmsConf,
    overrides: &[Override],
) -> Vec<BuildPatch> {
    let recipe_files = std::iter::once((conf_path.to_string(), tree_conf, String::new())).chain(
        overrides
            .iter()
            .filter(|o| o.kind != OverrideKind::Framework)
            .map(|o| (o.path.clone(), &o.conf, o.text.clone())),
    );
    let mut inline = Vec::new();
    for (path, conf, text) in recipe_files {
        for (key, value) in &conf.values {
            if !matches!(key_base(key), "MAKE" | "PRE_BUILD" | "POST_BUILD" | "CLEAN") {
                continue;
            }
            for (_, body) in here_documents(value) {
                let files = patch::parse(&body);
                if files.is_empty() {
                    continue;
                }
                let line = if text.is_empty() {
                    conf.lines.get(key).copied().unwrap_or(1)
                } else {
                    line_of(&text, &body)
                };
                inline.push(BuildPatch {
                    path: path.clone(),
                    line,
                    inline: true,
                    targets: files.iter().map(|f| f.path.clone()).collect(),
                    kernel_match: None,
                    files,
                });
            }
        }
    }
    inline
}

/// Phase 4, each patch is reported, and its changes are judged with the rule engine against
/// the file it targets (or, when it does not apply, its added lines alone).
fn patch_findings(
    scan: &TreeScan,
    patches: &[BuildPatch],
    check: &ContentCheck<'_>,
) -> Vec<RecipeFinding> {
    let tree = &scan.tree;
    let mut patch_findings = Vec::new();
    for p in patches {
        patch_findings.push(RecipeFinding {
            path: p.path.clone(),
            target: None,
            finding: finding(
                "DKMS-PATCH-001",
                Severity::Medium,
                "dkms applies a patch at build time",
                p.line,
                &format!("patches {}", p.targets.join(", ")),
                "The module dkms builds includes these changes although the files in /usr/src do not: \
                 a scan of the sources alone cannot see them.",
                "Remove the PATCH[n] line or the override that applies it (keep a copy), then rebuild the module.",
            ),
        });
        for fp in &p.files {
            // The target named in the patch is read only if the scan found it as a
            // regular file of the tree: never a FIFO, a link, or a path outside.
            let current = crate::reference::safe_relative(Path::new(&fp.path))
                .filter(|rel| {
                    scan.file(rel).is_some_and(|f| {
                        matches!(
                            f.status,
                            FileStatus::Ok
                                | FileStatus::Modified
                                | FileStatus::Added
                                | FileStatus::Unverified
                        )
                    })
                })
                .and_then(|rel| {
                    crate::io::read::read_limited(
                        &tree.host_path.join(rel),
                        crate::io::read::MAX_SOURCE_FILE,
                    )
                    .ok()
                })
                .map(|b| String::from_utf8_lossy(&b).into_owned());
            let findings = match current.as_deref().map(|c| (c, patch::apply(c, fp))) {
                Some((old, Ok(new))) => check(&fp.path, &new, Some(old)),
                // The patch does not apply to the file as it is: judge its added lines alone.
                _ => {
                    let added: String = fp
                        .added_lines()
                        .iter()
                        .map(|(_, l)| format!("{l}\n"))
                        .collect();
                    check(&fp.path, &added, None)
                }
            };
            for f in findings {
                patch_findings.push(RecipeFinding {
                    path: p.path.clone(),
                    target: Some(fp.path.clone()),
                    finding: f,
                });
            }
        }
    }
    patch_findings
}

/// Phase 5, scripts: those the recipe runs from the tree are verified like any
/// file, and a changed one is a finding.
fn script_findings(scan: &TreeScan, tree_conf: &DkmsConf) -> Vec<RecipeFinding> {
    let tree = &scan.tree;
    let mut findings = Vec::new();
    for (key, value) in &tree_conf.values {
        if !SCRIPT_KEYS.contains(&key.as_str()) {
            continue;
        }
        let Some(script) = value.split_whitespace().next() else {
            continue;
        };
        let rel = Path::new(script.trim_start_matches("./"));
        if rel.is_absolute() {
            continue;
        }
        let Some(file) = scan.file(rel) else { continue };
        if matches!(file.status, FileStatus::Modified | FileStatus::Added) {
            findings.push(RecipeFinding {
                path: format!("{}/{}", tree.system_path.display(), rel.display()),
                target: None,
                finding: finding(
                    "DKMS-SCRIPT-001",
                    Severity::High,
                    "a script dkms runs during the build was changed",
                    1,
                    &format!("{key}={value}"),
                    "dkms runs this script as root before or after compiling; a changed script can rewrite the \
                     sources in the build copy, so the module can differ from the sources you audit.",
                    "Restore the script from a clean source (`kfd-audit restore`), then rebuild the module.",
                ),
            });
        }
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn here_documents_are_found() {
        let cmd = "cat > fix.patch <<'EOF'\n--- a/x.c\n+++ b/x.c\n@@ -1 +1 @@\n-a\n+b\nEOF\npatch -p1 < fix.patch && make";
        let docs = here_documents(cmd);
        assert_eq!(docs.len(), 1);
        assert_eq!(docs[0].0, 1);
        assert!(docs[0].1.starts_with("--- a/x.c\n"));
        assert!(!docs[0].1.contains("EOF"));
        let tabbed = "cat <<-END\n\tline\n\tEND\n";
        assert_eq!(here_documents(tabbed)[0].1, "line\n");
        assert!(here_documents("echo no heredoc << \n").is_empty());
    }
}
