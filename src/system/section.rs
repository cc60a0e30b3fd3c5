//! What every section beyond the tree is to [`crate::system::run`]: something that
//! reads the audited system and hands back findings plus the details the report shows
//! beside them. A new section is one file that implements [`SystemSection`], and one
//! entry in [`SECTIONS`].

use crate::error::Result;
use crate::io::root::Root;
use crate::system::live::{self, Topology};
use crate::system::{
    LiveSection, Options, OptionsSection, RocmSection, Section, SystemFinding, SystemReport,
};
use std::cell::OnceCell;

/// The sections beyond the tree, in the order they run and are reported.
pub(crate) const SECTIONS: &[&dyn SystemSection] = &[
    &live::LiveDriver,
    &crate::system::modopts::ModuleOptions,
    &crate::system::rocm::RocmUserSpace,
];

/// One section of the scan beyond the source trees.
pub(crate) trait SystemSection {
    /// The `--sections` value that selects it.
    fn section(&self) -> Section;

    /// Whether it needs the KFD topology from sysfs. The topology is read once, before
    /// any section runs, when one of the selected sections needs it.
    fn reads_topology(&self) -> bool {
        false
    }

    /// Reads what the section is about under the root and judges it.
    fn collect(&self, root: &Root, ctx: &Context) -> Result<Collected>;
}

/// What a section found: its findings and its details for the report.
#[derive(Debug)]
pub(crate) struct Collected {
    pub findings: Vec<SystemFinding>,
    pub details: Details,
}

/// A section's details, as [`crate::system::Sections`] keeps them.
#[derive(Debug)]
pub(crate) enum Details {
    Live(LiveSection),
    Options(OptionsSection),
    Rocm(RocmSection),
}

impl SystemReport {
    /// Files one section's results where the report expects them.
    pub(crate) fn store(&mut self, collected: Collected) {
        let findings = Some(collected.findings);
        match collected.details {
            Details::Live(s) => {
                self.live = findings;
                self.sections.live = Some(s);
            }
            Details::Options(s) => {
                self.module_options = findings;
                self.sections.module_options = Some(s);
            }
            Details::Rocm(s) => {
                self.rocm = findings;
                self.sections.rocm = Some(s);
            }
        }
    }
}

/// What the sections of one run share: the options, and what more than one of them
/// reads (the topology: the live section judges it, the ROCm section compares
/// `HSA_OVERRIDE_GFX_VERSION` with it).
pub(crate) struct Context<'a> {
    root: &'a Root,
    pub opts: &'a Options,
    topology: OnceCell<Topology>,
}

impl<'a> Context<'a> {
    pub(crate) fn new(root: &'a Root, opts: &'a Options) -> Context<'a> {
        Context {
            root,
            opts,
            topology: OnceCell::new(),
        }
    }

    /// The KFD topology under the root, read on first use.
    pub(crate) fn topology(&self) -> Result<&Topology> {
        if let Some(t) = self.topology.get() {
            return Ok(t);
        }
        let read = live::read_topology(self.root, self.opts.lenient)?;
        Ok(self.topology.get_or_init(|| read))
    }
}
