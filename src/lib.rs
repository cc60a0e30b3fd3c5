//! kfd-audit: audit AMD's amdgpu/amdkfd DKMS driver sources against clean references,
//! explain dangerous changes, restore clean files and print the DKMS recovery sequence.
//!
//! Data flows one way: discover (`tree`) → clean references (`reference`) → `scan` →
//! `report`. Every system path is read through [`root::Root`] so that the whole tool
//! can audit a system mounted elsewhere (`--root`).

pub mod app;
pub mod content;
pub mod diff;
pub mod dkms;
pub mod error;
pub mod exit;
pub mod finding;
pub mod gpu_table;
pub mod io;
pub mod pkgdb;
pub mod progress;
pub mod recovery;
pub mod reference;
pub mod report;
pub mod restore;
pub mod rules;
pub mod scan;
pub mod system;
pub mod term;
pub mod tree;
