//! THE audit pipeline: discover the trees → load their references → scan → rules →
//! DKMS state → build recipe → the sections beyond the tree. `scan`, `plan`,
//! `restore` and `diff` all call [`run`] (or its first steps) with a plain
//! [`AuditOptions`] and take the parts of the [`Audit`] they need, so that two
//! commands cannot say different things about the same tree because they wired the
//! steps differently.
//!
//! Clean content is fetched once per file, by the scan ([`ScanOptions::clean_content`]),
//! and kept on the scan for the rules, diffs and restores that follow.

use crate::dkms::backups::{module_backups, ModuleBackup};
use crate::dkms::recipe::BuildAudit;
use crate::dkms::DkmsState;
use crate::error::Result;
use crate::io::root::Root;
use crate::progress::Counters;
use crate::reference::{self, TreeReferences};
use crate::rules::RuleSet;
use crate::scan::{self, ScanOptions, TreeScan};
use crate::system::{self, Section, SystemReport};
use crate::tree::{self, Tree};
use std::path::{Path, PathBuf};

/// What to audit and how far to go. Every field is a plain value: no command-line
/// type reaches the domain code.
#[derive(Debug, Clone, Default)]
pub(crate) struct AuditOptions {
    /// The trees to audit; empty: every `<root>/usr/src/amdgpu-*`.
    pub trees: Vec<PathBuf>,
    /// The parts to run, as `scan --sections` names them; empty: the trees only.
    pub sections: Vec<Section>,
    /// How each tree is scanned (scope, references, clean content, diffs, size limit).
    pub scan: ScanOptions,
    /// Directories of extra rules (`--rules`), added to the built-in ones.
    pub rule_dirs: Vec<PathBuf>,
    /// Run the rules on the scanned files and on the build recipe (`--no-rules` off).
    pub run_rules: bool,
    /// Collect the DKMS state, the module backups and the build recipe of the trees.
    pub dkms: bool,
    /// Run the system engine on [`Self::sections`] (the sections beyond the tree).
    pub system: bool,
    /// Package-name patterns for the rocm section (empty: the default ones).
    pub rocm_packages: Vec<String>,
    /// A progress line on a terminal's stderr while the trees are hashed.
    pub progress: bool,
}

/// What the audit found. Parts not asked for are empty or `None`.
#[derive(Debug)]
pub(crate) struct Audit {
    /// One scan per tree, in the order of the trees; rule findings filled in when the
    /// rules ran; the verified clean bytes of modified and missing files kept.
    pub scans: Vec<TreeScan>,
    /// The rules in effect (built-in and `--rules`) when they ran or a section beyond
    /// the tree needed them; none otherwise.
    pub rules: RuleSet,
    /// Whether the trees were audited (the `tree` section).
    pub trees_checked: bool,
    pub dkms: Option<DkmsState>,
    pub module_backups: Vec<ModuleBackup>,
    /// The build-recipe audit of each scan (same order), with `dkms`.
    pub build: Vec<BuildAudit>,
    pub system: Option<SystemReport>,
}

/// Step 1: the trees named, or every one discovered under the root.
pub(crate) fn discover(root: &Root, named: &[PathBuf]) -> Result<Vec<Tree>> {
    if named.is_empty() {
        tree::discover(root)
    } else {
        named.iter().map(|p| tree::from_arg(root, p)).collect()
    }
}

/// Step 2: the clean references of each tree (what each file should be).
pub(crate) fn references(
    root: &Root,
    trees: &[Tree],
    opts: &ScanOptions,
) -> Result<Vec<TreeReferences>> {
    trees
        .iter()
        .map(|t| reference::load(root, t, opts.refs))
        .collect()
}

impl AuditOptions {
    /// Whether the trees are audited: the `tree` section, the default.
    pub(crate) fn trees_checked(&self) -> bool {
        self.sections.is_empty() || self.sections.contains(&Section::Tree)
    }
}

/// The whole pipeline.
pub(crate) fn run(root: &Root, opts: &AuditOptions) -> anyhow::Result<Audit> {
    let trees_checked = opts.trees_checked();
    let trees = if trees_checked {
        discover(root, &opts.trees)?
    } else {
        Vec::new()
    };
    let refs = references(root, &trees, &opts.scan)?;
    // A progress line on a terminal's stderr while the trees are hashed, and the
    // rules compiled meanwhile (tens of milliseconds of regex building that would
    // otherwise come first, with a core idle while the trees are listed).
    let counters = std::sync::Arc::new(Counters::default());
    let display = crate::progress::Display::start(counters.clone(), !opts.progress);
    let (rules, scans) = std::thread::scope(|s| {
        // Commands that need no rule leave them out, and a broken `--rules` directory
        // does not stop them. Beyond the tree only the options section runs rules (on
        // `<module-options>`): `scan --no-rules --sections tree` compiles none.
        let options_section =
            opts.system && (opts.sections.is_empty() || opts.sections.contains(&Section::Options));
        let rules = s.spawn(move || {
            if opts.run_rules || options_section {
                crate::app::rules::load(&opts.rule_dirs)
            } else {
                Ok(RuleSet::default())
            }
        });
        let scans: Vec<TreeScan> = trees
            .iter()
            .zip(refs)
            .map(|(t, r)| scan::scan_with_references(root, t, r, &opts.scan, Some(&counters)))
            .collect();
        (rules.join(), scans)
    });
    let rules = rules.unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
    let mut audit = Audit {
        scans,
        rules,
        trees_checked,
        dkms: None,
        module_backups: Vec::new(),
        build: Vec::new(),
        system: None,
    };
    if opts.run_rules {
        for s in &mut audit.scans {
            crate::rules::apply(&audit.rules, s);
        }
    }
    // The DKMS state, module backups and build recipe are about the trees' modules:
    // part of `tree`.
    if opts.dkms && trees_checked {
        audit.module_backups = module_backups(root);
        audit.dkms = Some(DkmsState::collect(root, &audit.scans));
        // Build-time patches are judged by the same rules as in-place changes.
        let rules = &audit.rules;
        let judge = |target: &str, new: &str, old: Option<&str>| {
            if !opts.run_rules {
                return Vec::new();
            }
            rules.check(Path::new(target), new.as_bytes(), old.map(str::as_bytes))
        };
        audit.build = audit
            .scans
            .iter()
            .map(|s| crate::dkms::recipe::audit(root, s, &judge))
            .collect();
    }
    if opts.system {
        audit.system = Some(system::run(
            root,
            &system::Options {
                sections: if opts.sections.is_empty() {
                    vec![Section::Tree]
                } else {
                    opts.sections.clone()
                },
                lenient: opts.scan.refs.lenient,
                rules: audit.rules.clone(),
                rocm_packages: if opts.rocm_packages.is_empty() {
                    crate::system::rocm::default_patterns()
                } else {
                    opts.rocm_packages.clone()
                },
                max_file_size: opts.scan.max_file_size,
                counters: Some(counters.clone()),
            },
        )?);
    }
    // The progress line stays up while ROCm's package files are hashed too, and is
    // erased before anything is reported.
    drop(display);
    Ok(audit)
}
