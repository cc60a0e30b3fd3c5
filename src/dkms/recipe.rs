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
    let shells = shell_sources(scan, &conf_path, &tree_conf, &overrides);
    patches.extend(inline_patches(&shells));
    let (edit_patches, edit_findings) = build_edits(scan, &shells, check);
    patches.extend(edit_patches);
    findings.extend(patch_findings(scan, &patches, check));
    findings.extend(edit_findings);
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

/// Phase 3, inline patches: here-documents holding a unified diff anywhere in a file dkms
/// sources or runs, inside a MAKE/PRE_BUILD value or at the top level of the file (real
/// overrides write their patch with `cat << 'EOF' > $patches_dir/$patch_file` outside any
/// value, and run it from MAKE).
fn inline_patches(shells: &[ShellText]) -> Vec<BuildPatch> {
    let mut inline = Vec::new();
    for sh in shells {
        for (offset, body) in here_documents(&sh.text) {
            let files = patch::parse(&body);
            if files.is_empty() {
                continue;
            }
            inline.push(BuildPatch {
                path: sh.path.clone(),
                line: offset + 1,
                inline: true,
                targets: files.iter().map(|f| f.path.clone()).collect(),
                kernel_match: None,
                files,
            });
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

/// A file of shell that dkms sources or runs: the tree's dkms.conf, an /etc/dkms override,
/// a PRE_BUILD/POST_BUILD script of the tree, or a script one of those calls.
pub(crate) struct ShellText {
    /// As the audited system names it.
    pub path: String,
    pub text: String,
    /// A file of the tree that matches its package: the package's own build steps, which
    /// are what the package ships (AMD's pre-build rewrites its build copy), not a patch.
    pub packaged: bool,
}

/// How deep scripts calling scripts are followed.
const MAX_SCRIPT_DEPTH: usize = 3;

/// Every shell text of the recipe, in the order dkms reads them.
fn shell_sources(
    scan: &TreeScan,
    conf_path: &str,
    tree_conf: &DkmsConf,
    overrides: &[Override],
) -> Vec<ShellText> {
    let tree = &scan.tree;
    let read_tree = |rel: &Path| -> Option<String> {
        let rel = crate::reference::safe_relative(rel)?;
        // Only a regular file the scan found in the tree: never a link or a FIFO.
        scan.file(&rel).filter(|f| {
            matches!(
                f.status,
                FileStatus::Ok | FileStatus::Modified | FileStatus::Added | FileStatus::Unverified
            )
        })?;
        crate::io::read::read_limited(&tree.host_path.join(&rel), crate::io::read::MAX_SOURCE_FILE)
            .ok()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    };
    let mut out = Vec::new();
    let packaged = |rel: &Path| scan.file(rel).is_some_and(|f| f.status == FileStatus::Ok);
    if let Ok(b) = crate::io::read::read_limited(
        &tree.host_path.join("dkms.conf"),
        crate::io::read::MAX_SOURCE_FILE,
    ) {
        out.push(ShellText {
            path: conf_path.to_string(),
            text: String::from_utf8_lossy(&b).into_owned(),
            packaged: packaged(Path::new("dkms.conf")),
        });
    }
    let confs: Vec<&DkmsConf> = std::iter::once(tree_conf)
        .chain(
            overrides
                .iter()
                .filter(|o| o.kind != OverrideKind::Framework)
                .map(|o| &o.conf),
        )
        .collect();
    for o in overrides
        .iter()
        .filter(|o| o.kind != OverrideKind::Framework)
    {
        out.push(ShellText {
            path: o.path.clone(),
            text: o.text.clone(),
            packaged: false,
        });
    }
    // The scripts named by the recipe, then the scripts they call.
    let mut queue: Vec<(PathBuf, usize)> = Vec::new();
    for conf in confs {
        for key in ["PRE_BUILD", "POST_BUILD"] {
            if let Some(first) = conf.get(key).and_then(|v| v.split_whitespace().next()) {
                queue.push((PathBuf::from(first.trim_start_matches("./")), 0));
            }
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    while let Some((rel, depth)) = queue.pop() {
        if !seen.insert(rel.clone()) {
            continue;
        }
        let Some(text) = read_tree(&rel) else {
            continue;
        };
        if depth < MAX_SCRIPT_DEPTH {
            for word in text.split(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | ';')) {
                if let Some(called) = word.strip_prefix("./").or(Some(word)) {
                    if called.ends_with(".sh") && !called.contains('$') {
                        queue.push((PathBuf::from(called), depth + 1));
                    }
                }
            }
        }
        out.push(ShellText {
            path: format!("{}/{}", tree.system_path.display(), rel.display()),
            text,
            packaged: packaged(&rel),
        });
    }
    out
}

/// One source-editing command found in a shell text.
struct EditCmd {
    /// The file and line it is on, as `path:line`.
    at: String,
    /// The command as written (trimmed).
    text: String,
}

/// What a build step does to one tree file, worked out or not.
enum Edit {
    /// The new text of the file (a `sed s///`, a `cp` from another tree file).
    Text(String),
    /// A patch file of the tree applied by `patch` (judged like a `PATCH[n]`).
    Patch(PathBuf),
    /// Cannot be replayed here; the reason.
    Opaque(String),
}

/// Splits a shell line into words and operators (`&&`, `||`, `;`, `|`, `<`, `>`), removing
/// quotes as the shell does. Expansions (`$x`) are left as written.
fn shell_words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut has = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                has = true;
                for d in chars.by_ref() {
                    if d == '\'' {
                        break;
                    }
                    cur.push(d);
                }
            }
            '"' => {
                has = true;
                while let Some(d) = chars.next() {
                    match d {
                        '"' => break,
                        '\\' if matches!(chars.peek(), Some('"' | '\\' | '$' | '`')) => {
                            cur.push(chars.next().unwrap_or('\\'))
                        }
                        _ => cur.push(d),
                    }
                }
            }
            '\\' => {
                has = true;
                if let Some(d) = chars.next() {
                    cur.push(d);
                }
            }
            '#' if !has && cur.is_empty() => break,
            c if c.is_whitespace() => {
                if has {
                    out.push(std::mem::take(&mut cur));
                    has = false;
                }
            }
            '&' | '|' | ';' | '<' | '>' => {
                if has {
                    out.push(std::mem::take(&mut cur));
                    has = false;
                }
                let mut op = c.to_string();
                if matches!(c, '&' | '|' | '>' | '<') && chars.peek() == Some(&c) {
                    op.push(chars.next().unwrap_or(c));
                }
                out.push(op);
            }
            _ => {
                has = true;
                cur.push(c);
            }
        }
    }
    if has {
        out.push(cur);
    }
    out
}

/// The tree file a path in a build command names: the part from its `amd/` component on
/// (dkms builds in a copy of the tree, so `$dkms_tree/$module/$module_version/build/amd/...`
/// and `amd/...` are the same file), if the scan found it as a regular file.
fn tree_file(scan: &TreeScan, word: &str) -> Option<PathBuf> {
    let at = if word.starts_with("amd/") {
        0
    } else {
        word.find("/amd/")? + 1
    };
    let rel = &word[at..];
    if rel.contains(['$', '*', '?', '[', '`']) {
        return None;
    }
    let rel = crate::reference::safe_relative(Path::new(rel))?;
    scan.file(&rel).filter(|f| {
        matches!(
            f.status,
            FileStatus::Ok | FileStatus::Modified | FileStatus::Added | FileStatus::Unverified
        )
    })?;
    Some(rel)
}

/// [`tree_file`] for a driver source (`.c`, `.h`): a build that edits a Makefile, a Kbuild
/// file or a script changes how the module is built, which the rules do not judge.
fn driver_source(scan: &TreeScan, word: &str) -> Option<PathBuf> {
    tree_file(scan, word).filter(|rel| rel.extension().is_some_and(|e| e == "c" || e == "h"))
}

/// A BRE (or, with `extended`, ERE) of sed as a Rust regex.
fn sed_regex(re: &str, extended: bool, icase: bool) -> Option<regex::Regex> {
    let mut out = String::from(if icase { "(?i)" } else { "" });
    let mut chars = re.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, extended) {
            ('\\', _) => match chars.next()? {
                '<' | '>' => out.push_str(r"\b"),
                d @ ('(' | ')' | '{' | '}' | '+' | '?' | '|') if !extended => out.push(d),
                'n' => out.push_str(r"\n"),
                't' => out.push_str(r"\t"),
                d => {
                    out.push('\\');
                    out.push(d);
                }
            },
            ('(' | ')' | '{' | '}' | '+' | '?' | '|', false) => {
                out.push('\\');
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    regex::Regex::new(&out).ok()
}

/// A sed or perl replacement as a Rust regex replacement.
fn replacement(rep: &str, perl: bool) -> String {
    let mut out = String::new();
    let mut chars = rep.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '&' if !perl => out.push_str("${0}"),
            '$' if perl
                && chars
                    .peek()
                    .is_some_and(|d| d.is_ascii_digit() || *d == '&') =>
            {
                let d = chars.next().unwrap_or('0');
                out.push_str(&format!("${{{}}}", if d == '&' { '0' } else { d }));
            }
            '$' => out.push_str("$$"),
            '\\' => match chars.next() {
                Some(d) if d.is_ascii_digit() => out.push_str(&format!("${{{d}}}")),
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some(d) => out.push(d),
                None => {}
            },
            _ => out.push(c),
        }
    }
    out
}

/// A sed address: which lines a command applies to.
enum Addr {
    All,
    Line(usize),
    Range(usize, usize),
    Last,
    Re(regex::Regex),
}

impl Addr {
    fn takes(&self, n: usize, last: usize, line: &str) -> bool {
        match self {
            Addr::All => true,
            Addr::Line(l) => n == *l,
            Addr::Range(a, b) => (*a..=*b).contains(&n),
            Addr::Last => n == last,
            Addr::Re(r) => r.is_match(line),
        }
    }
}

/// Reads text up to an unescaped delimiter; returns it and the rest.
fn until_delim(s: &str, d: char) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut it = s.char_indices();
    while let Some((i, c)) = it.next() {
        if c == '\\' {
            match it.next() {
                Some((_, n)) if n == d => out.push(n),
                Some((_, n)) => {
                    out.push('\\');
                    out.push(n);
                }
                None => out.push('\\'),
            }
        } else if c == d {
            return Some((out, &s[i + c.len_utf8()..]));
        } else {
            out.push(c);
        }
    }
    None
}

/// Applies a sed script (`s///`, `d`, `a`/`i`/`c` with a line, regex or `$` address, one
/// command or several separated by `;`) to a text; None when the script uses anything else.
fn run_sed(script: &str, text: &str, extended: bool, perl: bool) -> Option<String> {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let mut rest = script.trim();
    while !rest.is_empty() {
        // The address.
        let (addr, after) = if let Some(r) = rest.strip_prefix('/') {
            let (re, after) = until_delim(r, '/')?;
            (Addr::Re(sed_regex(&re, extended || perl, false)?), after)
        } else if let Some(r) = rest.strip_prefix('$') {
            (Addr::Last, r)
        } else if rest.starts_with(|c: char| c.is_ascii_digit()) {
            let n_end = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            let a: usize = rest[..n_end].parse().ok()?;
            if let Some(r) = rest[n_end..].strip_prefix(',') {
                let m_end = r.find(|c: char| !c.is_ascii_digit()).unwrap_or(r.len());
                let b: usize = r[..m_end].parse().ok()?;
                (Addr::Range(a, b), &r[m_end..])
            } else {
                (Addr::Line(a), &rest[n_end..])
            }
        } else {
            (Addr::All, rest)
        };
        let after = after.trim_start();
        let mut cmd = after.chars();
        let op = cmd.next()?;
        let last = lines.len();
        match op {
            's' => {
                let d = cmd.next()?;
                let (pat, r) = until_delim(cmd.as_str(), d)?;
                let (rep, r) = until_delim(r, d)?;
                let flags_end = r.find([';', '}', '\n']).unwrap_or(r.len());
                let flags = r[..flags_end].trim();
                if !flags.chars().all(|c| matches!(c, 'g' | 'I' | 'i' | '1')) {
                    return None;
                }
                let re = sed_regex(&pat, extended || perl, flags.contains(['I', 'i']))?;
                let rep = replacement(&rep, perl);
                for (i, l) in lines.iter_mut().enumerate() {
                    if addr.takes(i + 1, last, l) {
                        *l = if flags.contains('g') {
                            re.replace_all(l, rep.as_str()).into_owned()
                        } else {
                            re.replace(l, rep.as_str()).into_owned()
                        };
                    }
                }
                rest = r[flags_end..].trim_start_matches([';', '\n', ' ']);
            }
            'd' => {
                let mut n = 0;
                lines.retain(|l| {
                    n += 1;
                    !addr.takes(n, last, l)
                });
                rest = cmd.as_str().trim_start_matches([';', ' ']);
            }
            'a' | 'i' | 'c' => {
                // GNU one-line form: `a text`, `a\\text`; the text runs to the end.
                let t = cmd.as_str();
                let t = t.strip_prefix('\\').unwrap_or(t);
                let t = t.strip_prefix('\n').unwrap_or(t).trim_start_matches(' ');
                let add = replacement(t, false)
                    .replace("${0}", "&")
                    .replace("$$", "$");
                let mut out = Vec::with_capacity(lines.len() + 1);
                for (i, l) in lines.iter().enumerate() {
                    let hit = addr.takes(i + 1, last, l);
                    match (op, hit) {
                        ('i', true) => {
                            out.push(add.clone());
                            out.push(l.clone());
                        }
                        ('a', true) => {
                            out.push(l.clone());
                            out.push(add.clone());
                        }
                        ('c', true) => out.push(add.clone()),
                        _ => out.push(l.clone()),
                    }
                }
                lines = out;
                rest = "";
            }
            _ => return None,
        }
    }
    let mut out = lines.join("\n");
    if text.ends_with('\n') {
        out.push('\n');
    }
    Some(out)
}

/// The source-editing commands of one shell line, with what each does to which tree file.
fn line_edits(
    scan: &TreeScan,
    line: &str,
    read: &dyn Fn(&Path) -> Option<String>,
) -> Vec<(PathBuf, Edit)> {
    // A dkms.conf assignment carries its command in the value.
    let value;
    let line = match line.trim_start().split_once('=') {
        Some((k, v))
            if !k.is_empty()
                && k.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '[' | ']')) =>
        {
            // The value's own quotes go; what it runs is what is inside them.
            let v = v.trim();
            let v = v.strip_prefix('"').unwrap_or(v);
            let v = v.strip_suffix('"').unwrap_or(v);
            value = v.replace("\\\"", "\"").replace("\\$", "$");
            value.as_str()
        }
        _ => line,
    };
    let words = shell_words(line);
    let mut out = Vec::new();
    for cmd in words.split(|w| matches!(w.as_str(), "&&" | "||" | ";" | "|")) {
        let mut cmd: Vec<&str> = cmd.iter().map(String::as_str).collect();
        while cmd.first().is_some_and(|w| {
            *w == "sudo" || *w == "then" || *w == "do" || w.contains('=') && !w.starts_with('-')
        }) {
            cmd.remove(0);
        }
        let Some((&prog, args)) = cmd.split_first() else {
            continue;
        };
        let prog = prog.rsplit('/').next().unwrap_or(prog);
        match prog {
            "sed" | "perl" => {
                let perl = prog == "perl";
                let (mut in_place, mut extended, mut print) = (false, false, !perl);
                // A script read from a file (`sed -f x.sed`) is not in the recipe to replay.
                let mut from_file = false;
                let mut scripts: Vec<&str> = Vec::new();
                let mut files: Vec<&str> = Vec::new();
                let mut it = args.iter();
                while let Some(a) = it.next() {
                    if *a == "-e" || *a == "--expression" {
                        scripts.extend(it.next().copied());
                    } else if let Some(opts) = a
                        .strip_prefix('-')
                        .filter(|o| !o.starts_with('-') && !o.is_empty())
                    {
                        // Bundled flags: `-i`, `-i.bak`, `-pi`, `-pie`, `-E`.
                        for c in opts.chars() {
                            match c {
                                'i' => {
                                    in_place = true;
                                    break;
                                }
                                'E' | 'r' => extended = true,
                                'p' => print = true,
                                'f' => {
                                    from_file = true;
                                    it.next();
                                    break;
                                }
                                'e' => {
                                    scripts.extend(it.next().copied());
                                }
                                _ => {}
                            }
                        }
                        if opts.ends_with('e') && opts.contains('i') {
                            scripts.extend(it.next().copied());
                        }
                    } else if a.starts_with("--in-place") {
                        in_place = true;
                    } else if a.starts_with("--") {
                    } else if scripts.is_empty() && !from_file {
                        scripts.push(a);
                    } else {
                        files.push(a);
                    }
                }
                if !in_place || !print {
                    continue;
                }
                for f in files {
                    let Some(rel) = driver_source(scan, f) else {
                        continue;
                    };
                    let edit = match read(&rel) {
                        Some(_) if from_file => {
                            Edit::Opaque(format!("its {prog} script is read from a file"))
                        }
                        Some(text) => scripts
                            .iter()
                            .try_fold(text, |t, s| run_sed(s, &t, extended, perl))
                            .map_or_else(
                                || {
                                    Edit::Opaque(format!(
                                        "its {prog} script cannot be replayed here"
                                    ))
                                },
                                Edit::Text,
                            ),
                        None => Edit::Opaque("the file cannot be read".into()),
                    };
                    out.push((rel, edit));
                }
            }
            "patch" => {
                let mut input = None;
                let mut it = args.iter();
                while let Some(a) = it.next() {
                    if *a == "<" || *a == "-i" {
                        input = it.next().copied();
                    } else if let Some(v) = a.strip_prefix("--input=") {
                        input = Some(v);
                    }
                }
                // A patch file of the tree (a here-document's file is judged as such).
                if let Some(rel) = input.and_then(|i| {
                    crate::reference::safe_relative(Path::new(i.trim_start_matches("./")))
                }) {
                    if read(&rel).is_some() {
                        out.push((rel.clone(), Edit::Patch(rel)));
                    }
                }
            }
            "cp" | "install" | "mv" | "ln" => {
                let plain: Vec<&str> = args
                    .iter()
                    .copied()
                    .filter(|a| !a.starts_with('-'))
                    .collect();
                let [src @ .., dst] = plain.as_slice() else {
                    continue;
                };
                let Some(rel) = driver_source(scan, dst) else {
                    continue;
                };
                let from = (src.len() == 1).then(|| tree_file(scan, src[0])).flatten();
                let edit = match from.as_deref().and_then(read) {
                    Some(text) if prog != "ln" => Edit::Text(text),
                    _ => Edit::Opaque(format!("it is replaced by {}", src.join(" "))),
                };
                out.push((rel, edit));
            }
            _ => {}
        }
    }
    out
}

/// Source edits at build time: `sed -i`, `perl -pi`, `cp` over a source and `patch` in any
/// shell text of the recipe. An edit that can be worked out is applied to a copy of its
/// target and the result judged by the rules like a change made in place; one that cannot
/// is a finding naming the command. Returns the tree patch files `patch` applies (judged as
/// `PATCH[n]` files are) and the findings.
fn build_edits(
    scan: &TreeScan,
    shells: &[ShellText],
    check: &ContentCheck<'_>,
) -> (Vec<BuildPatch>, Vec<RecipeFinding>) {
    let tree = &scan.tree;
    let read = |rel: &Path| -> Option<String> {
        scan.file(rel)?;
        crate::io::read::read_limited(&tree.host_path.join(rel), crate::io::read::MAX_SOURCE_FILE)
            .ok()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    };
    // Per target, in the order dkms runs them: the text before, after, and the commands.
    let mut edited: std::collections::BTreeMap<PathBuf, (String, String, Vec<EditCmd>)> =
        std::collections::BTreeMap::new();
    let mut patches = Vec::new();
    let mut findings = Vec::new();
    for sh in shells.iter().filter(|sh| !sh.packaged) {
        // Here-document bodies are data, not commands.
        let mut skip = std::collections::HashSet::new();
        for (offset, body) in here_documents(&sh.text) {
            skip.extend(offset..offset + body.lines().count() + 1);
        }
        for (i, line) in sh.text.lines().enumerate() {
            if skip.contains(&i) {
                continue;
            }
            for (rel, edit) in line_edits(scan, line, &read) {
                let at = format!("{}:{}", sh.path, i + 1);
                let cmd = EditCmd {
                    at: at.clone(),
                    text: line.trim().to_string(),
                };
                match edit {
                    Edit::Text(new) => {
                        let Some(orig) = read(&rel) else { continue };
                        let e = edited
                            .entry(rel.clone())
                            .or_insert_with(|| (orig.clone(), orig, Vec::new()));
                        // A sed runs on what the earlier steps left.
                        let redo = if e.2.is_empty() { new } else {
                            line_edits(scan, line, &|p: &Path| if p == rel { Some(e.1.clone()) } else { read(p) })
                                .into_iter()
                                .find_map(|(r, ed)| match (r == rel, ed) {
                                    (true, Edit::Text(t)) => Some(t),
                                    _ => None,
                                })
                                .unwrap_or_else(|| e.1.clone())
                        };
                        e.1 = redo;
                        e.2.push(cmd);
                    }
                    Edit::Patch(p) => {
                        let Some(text) = read(&p) else { continue };
                        let files = patch::parse(&text);
                        if files.is_empty() {
                            continue;
                        }
                        patches.push(BuildPatch {
                            path: format!("{}/{}", tree.system_path.display(), p.display()),
                            line: 1,
                            inline: false,
                            targets: files.iter().map(|f| f.path.clone()).collect(),
                            kernel_match: None,
                            files,
                        });
                    }
                    Edit::Opaque(reason) => findings.push(RecipeFinding {
                        path: sh.path.clone(),
                        target: Some(rel.display().to_string()),
                        finding: finding(
                            "DKMS-EDIT-002",
                            Severity::Medium,
                            "a build step changes a driver source in a way kfd-audit cannot replay",
                            i + 1,
                            &cmd.text,
                            &format!(
                                "At build time this command changes {} in the copy dkms compiles ({reason}), \
                                 so the module can differ from the file you audit.",
                                rel.display()
                            ),
                            "Read the command; if you did not put it there, remove it (keep a copy) and rebuild the module.",
                        ),
                    }),
                }
            }
        }
    }
    for (rel, (orig, new, cmds)) in edited {
        if orig == new {
            continue;
        }
        let by = cmds
            .iter()
            .map(|c| format!("`{}` ({})", c.text, c.at))
            .collect::<Vec<_>>()
            .join(", then ");
        let target = rel.display().to_string();
        let judged = check(&target, &new, Some(&orig));
        let first = &cmds[0];
        let path = first
            .at
            .rsplit_once(':')
            .map_or(first.at.clone(), |(p, _)| p.to_string());
        if judged.is_empty() {
            findings.push(RecipeFinding {
                path: path.clone(),
                target: Some(target.clone()),
                finding: finding(
                    "DKMS-EDIT-001",
                    Severity::Low,
                    "a build step edits a source file",
                    first.at.rsplit_once(':').and_then(|(_, l)| l.parse().ok()).unwrap_or(1),
                    &first.text,
                    &format!(
                        "At build time {by} edits {target} in the copy dkms compiles; the rules find nothing dangerous in the edited file."
                    ),
                    "Nothing to do if you meant it; the module is built from the edited copy, not the file in /usr/src.",
                ),
            });
        }
        for mut f in judged {
            f.why = format!(
                "At build time {by} edits {target} in the copy dkms compiles; line {} is in the edited copy. {}",
                f.line, f.why
            );
            findings.push(RecipeFinding {
                path: path.clone(),
                target: Some(target.clone()),
                finding: f,
            });
        }
    }
    (patches, findings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sed_scripts_are_replayed_or_refused() {
        let text = "a = 1;\nflags = 0;\nb = 2;\n";
        assert_eq!(
            run_sed(r"s/flags = \(0\)/flags = 1/", text, false, false).unwrap(),
            "a = 1;\nflags = 1;\nb = 2;\n"
        );
        assert_eq!(
            run_sed("s/(a|b) = ([0-9])/\\1 = 9/g", text, true, false).unwrap(),
            "a = 9;\nflags = 0;\nb = 9;\n"
        );
        assert_eq!(
            run_sed("/flags/a \\tx = 3;", text, false, false).unwrap(),
            "a = 1;\nflags = 0;\n\tx = 3;\nb = 2;\n"
        );
        assert_eq!(
            run_sed("2d", text, false, false).unwrap(),
            "a = 1;\nb = 2;\n"
        );
        assert_eq!(
            run_sed(r"s/(\d);/$1$1;/", "a = 1;\n", false, true).unwrap(),
            "a = 11;\n"
        );
        assert!(run_sed("y/abc/xyz/", text, false, false).is_none());
        assert!(run_sed("/x/,/y/d", text, false, false).is_none());
    }

    #[test]
    fn shell_words_keep_quoted_scripts_whole() {
        assert_eq!(
            shell_words(r#"sed -i 's/a b/c/' "amd/x.c" && make # note"#),
            ["sed", "-i", "s/a b/c/", "amd/x.c", "&&", "make"]
        );
        assert_eq!(
            shell_words("patch -p1 < f.patch"),
            ["patch", "-p1", "<", "f.patch"]
        );
    }

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
