//! `kfd-audit diff [PATH...]`: each file against its best clean content.

use crate::app::audit;
use crate::app::{Cli, Format, TreeArgs};
use crate::content::{CleanContent, CleanCopy};
use crate::diff::{FileDiff, Render};
use crate::error::Error;
use crate::exit::Outcome;
use crate::io::root::Root;
use crate::reference::{safe_relative, TreeReferences};
use crate::scan::{self, FileStatus};
use crate::term;
use crate::tree::Tree;
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// One file to diff: which tree, which file, what the scan said about it.
#[derive(Debug, Clone)]
struct Target {
    rel: PathBuf,
    status: FileStatus,
}

/// Resolves a user's path to (tree index, tree-relative path) pairs: an absolute path
/// inside a tree (as on this host, or as the audited system names it), a path
/// relative to the current directory inside a tree, or a path relative to a tree's
/// root (then every tree that has or expects that file).
fn resolve(
    root: &Root,
    trees: &[Tree],
    refs: &[TreeReferences],
    arg: &Path,
) -> Result<Vec<(usize, PathBuf)>, Error> {
    let not_found = || {
        Error::Refused {
        path: arg.to_path_buf(),
        message: format!(
            "not a file of any amdgpu tree under {}; give a path inside a tree (absolute, or relative to the tree like amd/amdkfd/kfd_crat.c)",
            root.path("/usr/src").display()
        ),
    }
    };
    let known = |i: usize, rel: &Path| {
        refs[i].get(rel).is_some()
            || std::fs::symlink_metadata(trees[i].host_path.join(rel)).is_ok()
    };
    let inside = |abs: &Path| -> Vec<(usize, PathBuf)> {
        trees
            .iter()
            .enumerate()
            .filter_map(|(i, t)| {
                let rel = abs
                    .strip_prefix(&t.host_path)
                    .ok()
                    .or_else(|| abs.strip_prefix(&t.system_path).ok())?;
                safe_relative(rel).filter(|r| known(i, r)).map(|r| (i, r))
            })
            .collect()
    };
    if arg.is_absolute() {
        let found = inside(arg);
        return if found.is_empty() {
            Err(not_found())
        } else {
            Ok(found)
        };
    }
    if let Ok(abs) = std::path::absolute(arg) {
        let found = inside(&abs);
        if !found.is_empty() {
            return Ok(found);
        }
    }
    let Some(rel) = safe_relative(arg) else {
        return Err(not_found());
    };
    let found: Vec<(usize, PathBuf)> = (0..trees.len())
        .filter(|i| known(*i, &rel))
        .map(|i| (i, rel.clone()))
        .collect();
    if found.is_empty() {
        Err(not_found())
    } else {
        Ok(found)
    }
}

/// What happened to one file in `kfd-audit diff`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct DiffEntry {
    pub tree: String,
    pub path: String,
    /// The path as bytes when it is not valid UTF-8 (`path` is then escaped).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path_bytes: Option<Vec<u8>>,
    pub status: FileStatus,
    /// The reference kind of the clean content used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clean_source: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clean_origin: Option<String>,
    /// The unified diff.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<FileDiff>,
    /// Why there is no diff, and what to do.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
struct DiffReport {
    files: Vec<DiffEntry>,
    problems: Vec<String>,
}

/// What to tell a user whose modified file has no clean content anywhere.
pub(crate) fn no_clean_copy_hint(tree: &Tree, refs: &TreeReferences) -> String {
    if let (Some(pkg), Some(fetch), Some(reinstall)) =
        (&refs.rpm_package, &refs.rpm_fetch, &refs.rpm_reinstall)
    {
        return format!(
            "no clean copy to compare with (no baseline copy, no cached {} in the dnf/yum/zypper caches, no backup that matches the reference). \
             To get one: '{fetch}' puts the package file where kfd-audit reads it; '{reinstall}' puts clean files back; \
             next time, take a baseline while the tree is clean ('kfd-audit baseline create')",
            pkg.file_name()
        );
    }
    let pkg = refs
        .dpkg_package
        .clone()
        .unwrap_or_else(|| format!("{}-dkms", tree.package()));
    format!(
        "no clean copy to compare with (no baseline copy, no {pkg} archive of the installed version in /var/cache/apt/archives, no backup that matches the reference). \
         To get one: 'apt-get install --download-only --reinstall {pkg}' puts the package archive back in apt's cache; \
         'apt-get install --reinstall {pkg}' puts clean files back; \
         next time, take a baseline while the tree is clean ('kfd-audit baseline create') and keep the .deb"
    )
}

/// Reads the file as it is now, for a diff (`None` when absent or not a regular file).
fn current_bytes(host: &Path) -> Option<Vec<u8>> {
    crate::io::read::read_limited(host, crate::io::read::MAX_SOURCE_FILE).ok()
}

/// Clean copies of a tree's files and the problems met fetching them.
type Fetched = (BTreeMap<PathBuf, CleanCopy>, Vec<String>);

/// `kfd-audit diff [PATH...]`: each file against its best clean content.
pub(crate) fn cmd(
    cli: &Cli,
    tree_args: &TreeArgs,
    paths: &[PathBuf],
    context: usize,
    out: &mut dyn Write,
) -> anyhow::Result<Outcome> {
    let root = Root::open(&cli.root)?;
    let opts = tree_args.audit_options(cli);
    // Which files of which tree: every modified or missing file by the audit (whose
    // scan fetched their clean content), or the paths named, judged against the
    // trees' references (their clean content is fetched below).
    let mut targets: BTreeMap<usize, Vec<Target>> = BTreeMap::new();
    let mut fetched: Vec<Option<Fetched>> = Vec::new();
    let (trees, refs): (Vec<Tree>, Vec<TreeReferences>) = if paths.is_empty() {
        let mut audit = audit::run(&root, &opts)?;
        for s in &mut audit.scans {
            fetched.push(Some((
                std::mem::take(&mut s.clean_copies),
                std::mem::take(&mut s.problems),
            )));
        }
        for (i, s) in audit.scans.iter().enumerate() {
            let list: Vec<Target> = s
                .files
                .iter()
                .filter(|f| matches!(f.status, FileStatus::Modified | FileStatus::Missing))
                .map(|f| Target {
                    rel: f.path.clone(),
                    status: f.status,
                })
                .collect();
            if !list.is_empty() {
                targets.insert(i, list);
            }
        }
        audit.scans.into_iter().map(|s| (s.tree, s.refs)).unzip()
    } else {
        let trees = audit::discover(&root, &opts.trees)?;
        let refs = audit::references(&root, &trees, &opts.scan)?;
        for p in paths {
            for (i, rel) in resolve(&root, &trees, &refs, p)? {
                let max = opts.scan.max_file_size();
                let status = status_of(&trees[i], &refs[i], &rel, max);
                let list = targets.entry(i).or_default();
                if !list.iter().any(|t| t.rel == rel) {
                    list.push(Target { rel, status });
                }
            }
        }
        (trees, refs)
    };

    let mut entries = Vec::new();
    let mut problems = Vec::new();
    for (i, list) in &targets {
        let tree = &trees[*i];
        let tree_refs = &refs[*i];
        let want: Vec<PathBuf> = list
            .iter()
            .filter(|t| matches!(t.status, FileStatus::Modified | FileStatus::Missing))
            .map(|t| t.rel.clone())
            .collect();
        let (mut copies, tree_problems) = match fetched.get_mut(*i).and_then(Option::take) {
            Some(f) => f,
            None => {
                let content = CleanContent::for_tree(&root, tree, tree_refs);
                let mut copies = BTreeMap::new();
                content.get_many(&want, &mut |rel, copy| {
                    if let Some(c) = copy {
                        copies.insert(rel.to_path_buf(), c);
                    }
                });
                (copies, content.problems())
            }
        };
        let mut diffs: BTreeMap<PathBuf, (Option<CleanCopy>, Option<FileDiff>)> = BTreeMap::new();
        for rel in &want {
            let copy = copies.remove(rel);
            let diff = copy.as_ref().map(|c| {
                let current = current_bytes(&tree.host_path.join(rel));
                FileDiff::compute(
                    rel,
                    &c.bytes,
                    &c.origin,
                    &tree.system_path,
                    current.as_deref(),
                    context,
                )
            });
            let copy = copy.map(|mut c| {
                c.bytes = Vec::new();
                c
            });
            diffs.insert(rel.to_path_buf(), (copy, diff));
        }
        problems.extend(tree_problems);
        let mut sorted = list.clone();
        sorted.sort_by_cached_key(|t| scan::order_key(&t.rel));
        for t in sorted {
            let mut e = DiffEntry {
                tree: term::path(&tree.system_path),
                path: term::path(&t.rel),
                path_bytes: crate::term::path_bytes(&t.rel),
                status: t.status,
                clean_source: None,
                clean_origin: None,
                diff: None,
                note: None,
            };
            match t.status {
                FileStatus::Modified | FileStatus::Missing => match diffs.remove(&t.rel) {
                    Some((Some(copy), diff)) => {
                        e.clean_source = Some(copy.source.to_string());
                        e.clean_origin = Some(copy.origin);
                        e.diff = diff;
                    }
                    _ => e.note = Some(no_clean_copy_hint(tree, tree_refs)),
                },
                FileStatus::Ok => {}
                FileStatus::Added | FileStatus::Unverified => {
                    e.note = Some(
                        "no clean reference lists this file: nothing to compare it with".into(),
                    )
                }
                FileStatus::Symlink => {
                    e.note = Some("a symbolic link: not followed, not diffed".into())
                }
                FileStatus::Unreadable => e.note = Some("unreadable: not diffed".into()),
            }
            entries.push(e);
        }
    }

    let found = entries
        .iter()
        .any(|e| matches!(e.status, FileStatus::Modified | FileStatus::Missing));
    match cli.format {
        Format::Json => {
            let report = DiffReport {
                files: entries,
                problems,
            };
            out.write_all(serde_json::to_string_pretty(&report)?.as_bytes())?;
            out.write_all(b"\n")?;
        }
        Format::Markdown => {
            for e in &entries {
                writeln!(out, "## `{}` ({})\n", e.path, e.tree)?;
                if let Some(d) = &e.diff {
                    writeln!(out, "```diff")?;
                    out.write_all(&d.unified())?;
                    writeln!(out, "```\n")?;
                }
                if let Some(n) = &e.note {
                    writeln!(out, "> {n}\n")?;
                }
            }
            for p in &problems {
                writeln!(out, "> note: {p}\n")?;
            }
        }
        Format::Text | Format::Prometheus => {
            let color = term::use_color(cli.color.into());
            let several = targets.len() > 1;
            let mut last_tree = String::new();
            // The whole patch first: on a terminal it goes through the pager.
            let mut text: Vec<u8> = Vec::new();
            for e in &entries {
                if several && e.tree != last_tree {
                    writeln!(text, "# {}", e.tree)?;
                    last_tree = e.tree.clone();
                }
                if let Some(d) = &e.diff {
                    text.extend_from_slice(&d.render(&Render {
                        color,
                        escape: color,
                        ..Render::plain()
                    }));
                }
                if let Some(n) = &e.note {
                    // Notes go to stderr so that stdout stays a patch.
                    eprintln!("kfd-audit: {}: {}", e.path, term::escape(n));
                }
            }
            for p in &problems {
                eprintln!("kfd-audit: note: {}", term::escape(p));
            }
            crate::pager::page(&text, cli.pager_enabled(), out)?;
        }
    }
    Ok(if found {
        Outcome::Found
    } else {
        Outcome::Clean
    })
}

/// The status of one file, judged like the scan does (without walking the tree).
fn status_of(tree: &Tree, refs: &TreeReferences, rel: &Path, max_size: u64) -> FileStatus {
    let host = tree.host_path.join(rel);
    let meta = std::fs::symlink_metadata(&host);
    match (refs.get(rel), meta) {
        (_, Err(_)) => FileStatus::Missing,
        (_, Ok(m)) if m.file_type().is_symlink() => FileStatus::Symlink,
        (_, Ok(m)) if !m.is_file() => FileStatus::Unreadable,
        (None, Ok(_)) if refs.is_empty() => FileStatus::Unverified,
        (None, Ok(_)) => FileStatus::Added,
        (Some(_), Ok(m)) if m.len() > max_size => FileStatus::Unreadable,
        (Some(exp), Ok(_)) => match crate::io::read::digest_file(&host, exp.digest.algorithm()) {
            Ok(d) if d == exp.digest => FileStatus::Ok,
            Ok(_) => FileStatus::Modified,
            Err(_) => FileStatus::Unreadable,
        },
    }
}
