//! `kfd-audit baseline create`: record kfd-audit's own manifest of a clean tree and
//! clean copies of the files that matter. Here, above the scan and the rules, since
//! it checks the tree with both before trusting it; the manifest's format and reader
//! stay in [`crate::reference::baseline`].

use crate::app::{select_trees, Cli, TreeArgs};
use crate::content::baseline_copies;
use crate::error::{Error, Result};
use crate::exit::Outcome;
use crate::io::atomic;
use crate::io::hash::{self, Algorithm, Digest};
use crate::io::root::Root;
use crate::reference::baseline;
use crate::rules::RuleSet;
use crate::scan::{self, FileStatus, ScanOptions};
use crate::term;
use crate::tree::Tree;
use clap::Subcommand;
use rayon::prelude::*;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, Subcommand)]
pub(crate) enum BaselineCommand {
    /// Record a SHA-256 manifest of each tree while it is clean
    Create {
        #[command(flatten)]
        trees: TreeArgs,
        /// Trust the tree even if dpkg's md5sums say it was changed
        #[arg(long)]
        force: bool,
        /// Store clean copies of every file, not only amd/amdkfd and the watched files
        #[arg(long)]
        all: bool,
    },
}

pub(crate) fn cmd_baseline(
    cli: &Cli,
    cmd: &BaselineCommand,
    out: &mut dyn Write,
) -> anyhow::Result<Outcome> {
    match cmd {
        BaselineCommand::Create { trees, force, all } => {
            let root = Root::open(&cli.root)?;
            let trees = select_trees(&root, trees)?;
            if trees.is_empty() {
                anyhow::bail!(
                    "no amdgpu DKMS tree under {}; name one with --tree PATH",
                    root.path("/usr/src").display()
                );
            }
            for t in &trees {
                let created = create(
                    &root,
                    t,
                    CreateOptions {
                        force: *force,
                        all_copies: *all,
                    },
                )?;
                writeln!(
                    out,
                    "baseline of {}: {} files, {} clean copies -> {}{}",
                    term::path(&t.system_path),
                    created.files,
                    created.copies,
                    term::path(&created.manifest),
                    if created.skipped_symlinks > 0 {
                        format!(" ({} symlinks not recorded)", created.skipped_symlinks)
                    } else {
                        String::new()
                    }
                )?;
            }
            Ok(Outcome::Clean)
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct CreateOptions {
    /// Trust the tree even though references say it is not clean.
    pub force: bool,
    /// Store clean copies of every file, not only the watched ones.
    pub all_copies: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct Created {
    pub manifest: PathBuf,
    pub files: usize,
    pub skipped_symlinks: usize,
    /// Compressed clean copies stored (see [`baseline_copies`]).
    pub copies: usize,
}

/// Records a baseline of the tree. Refuses when the tree's existing references say
/// it is not clean (a baseline of a patched tree would bless the patch), unless forced.
pub(crate) fn create(root: &Root, tree: &Tree, opts: CreateOptions) -> Result<Created> {
    let check = scan::scan_tree(root, tree, &ScanOptions::default())?;
    // Every file a built-in rule looks at gets a copy, so that a later diff-aware
    // scan and a restore have the clean bytes the rules need.
    let rules = RuleSet::builtin();
    let rule_watched = |rel: &Path| !rules.applicable(rel).is_empty();
    let dirty: Vec<String> = check
        .files
        .iter()
        .filter(|f| matches!(f.status, FileStatus::Modified | FileStatus::Missing))
        .map(|f| f.path.display().to_string())
        .collect();
    if !dirty.is_empty() && !opts.force {
        let shown: Vec<_> = dirty.iter().take(3).cloned().collect();
        return Err(Error::Refused {
            path: tree.host_path.clone(),
            message: format!(
                "not clean ({} file(s) differ from {}: {}{}); restore it first, or pass --force to trust it as it is",
                dirty.len(),
                check.refs.kinds.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(", "),
                shown.join(", "),
                if dirty.len() > 3 { ", ..." } else { "" }
            ),
        });
    }
    let files: Vec<&PathBuf> = check
        .files
        .iter()
        .filter(|f| f.status != FileStatus::Missing && f.status != FileStatus::Symlink)
        .map(|f| &f.path)
        .collect();
    let skipped_symlinks = check.count(FileStatus::Symlink);
    let prefix = tree.dpkg_prefix();
    let mut lines: Vec<(PathBuf, Digest, Vec<u8>)> = files
        .par_iter()
        .map(|rel| {
            let host = tree.host_path.join(rel);
            let f = crate::io::read::open_nofollow(&host).map_err(|e| Error::io(&host, e))?;
            let (mut d, _) =
                hash::digest_reader(f, &[Algorithm::Sha256]).map_err(|e| Error::io(&host, e))?;
            let sys = prefix.join(rel);
            let digest = d.remove(0);
            let line = baseline::format_line(&digest, &sys);
            Ok(((*rel).clone(), digest, line))
        })
        .collect::<Result<_>>()?;
    lines.sort_by(|a, b| a.0.cmp(&b.0));
    let digests: Vec<(PathBuf, Digest)> = lines
        .iter()
        .map(|(rel, d, _)| (rel.clone(), d.clone()))
        .collect();
    let manifest: Vec<u8> = lines.into_iter().flat_map(|(_, _, l)| l).collect();

    let dir = baseline::dir(root, tree);
    atomic::create_private_dir(&dir)?;
    // Copies first: a copy is served only where the manifest vouches for it.
    let copies = baseline_copies::store(root, tree, &digests, opts.all_copies, &rule_watched)?;
    let path = baseline::manifest_path(root, tree);
    atomic::write(&path, &manifest, 0o644)?;
    let meta = baseline::Meta {
        tree: tree.system_path.display().to_string(),
        package: tree.package(),
        version: tree.version(),
        created: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        files: files.len(),
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        verified_against: check.refs.kinds.iter().map(|k| k.to_string()).collect(),
    };
    let json = serde_json::to_vec_pretty(&meta).expect("baseline metadata serializes");
    atomic::write(&dir.join("meta.json"), &json, 0o644)?;
    Ok(Created {
        manifest: path,
        files: files.len(),
        skipped_symlinks,
        copies,
    })
}
