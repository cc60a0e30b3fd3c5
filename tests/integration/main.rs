//! One integration-test binary (faster to link than one per file). Every test runs
//! the real `kfd-audit` binary against a temporary fake system root.

mod corpus;
mod fixture;
mod rules;
mod scan;
