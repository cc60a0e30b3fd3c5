//! One integration-test binary (faster to link than one per file). Every test runs
//! the real `kfd-audit` binary against a temporary fake system root.

mod beyond;
mod classes;
mod classes_build;
mod console;
mod content;
mod corpus;
mod dkms_real;
mod exit_rule;
mod fixture;
mod hashing;
mod hostile;
mod layers;
mod newcomer;
mod props;
mod recipe;
mod recovery;
mod restore;
mod restore_crash;
mod restore_pty;
mod rocm_real;
mod rpm;
mod rules;
mod scale;
mod scan;
mod versions;
