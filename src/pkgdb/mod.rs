//! The package database seam: which package owns a path, the digests it recorded,
//! the installed version and the cached archive. dpkg today.

pub mod dpkg;
