//! Everything that touches the file system below the domain: the `Root` that maps system
//! paths under `--root`, bounded no-follow reads, atomic writes, the walk, mounts, hashing.

pub(crate) mod atomic;
pub(crate) mod digest_cache;
pub(crate) mod failpoint;
pub mod hash;
pub(crate) mod md5_lanes;
pub mod mounts;
pub(crate) mod read;
pub mod root;
pub(crate) mod walk;
