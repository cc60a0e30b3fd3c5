//! kfd-audit: audit AMD's amdgpu/amdkfd DKMS driver sources against clean references,
//! explain dangerous changes, restore clean files and print the DKMS recovery sequence.
//!
//! Data flows one way: discover (`tree`) → clean references (`reference`) → `scan` →
//! `report`. Every system path is read through [`root::Root`] so that the whole tool
//! can audit a system mounted elsewhere (`--root`).

pub mod atomic;
pub mod baseline;
pub mod beyond;
pub mod cli;
pub mod content;
pub mod demo;
pub mod diff;
pub mod dkms;
pub mod error;
pub mod exit;
pub mod finding;
pub mod gpu_table;
pub mod hash;
pub mod live;
pub mod md5_lanes;
pub mod metrics;
pub mod modopts;
pub mod mounts;
pub mod patch;
pub mod progress;
pub mod recipe;
pub mod recovery;
pub mod reference;
pub mod report;
pub mod restore;
pub mod rocm;
pub mod root;
pub mod rules;
pub mod rules_cli;
pub mod scan;
pub mod term;
pub mod tree;
pub mod walk;
