//! kfd-audit: audit AMD's amdgpu/amdkfd DKMS driver sources against clean references,
//! explain dangerous changes, restore clean files and print the DKMS recovery sequence.
//!
//! Data flows one way: discover (`tree`) → clean references (`reference`) → `scan` →
//! `report`. Every system path is read through [`root::Root`] so that the whole tool
//! can audit a system mounted elsewhere (`--root`).

pub mod app;
pub mod content;
pub(crate) mod diff;
pub mod dkms;
pub mod error;
pub(crate) mod exit;
pub(crate) mod finding;
pub mod gpu_table;
pub mod io;
pub(crate) mod pager;
pub mod pkgdb;
pub(crate) mod progress;
pub(crate) mod recovery;
pub mod reference;
pub(crate) mod report;
pub mod restore;
pub mod rules;
pub mod scan;
pub mod system;
pub mod term;
pub mod tree;
