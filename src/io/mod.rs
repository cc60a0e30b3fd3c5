//! Everything that touches the file system below the domain: the `Root` that maps system
//! paths under `--root`, bounded no-follow reads, atomic writes, the walk, mounts, hashing.

pub mod atomic;
pub mod failpoint;
pub mod hash;
pub mod md5_lanes;
pub mod mounts;
pub mod read;
pub mod root;
pub mod walk;
