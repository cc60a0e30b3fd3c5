//! What DKMS makes of the trees: its state under the root and where each kernel's
//! module came from ([`state`]), what it will really compile ([`recipe`], with the
//! build-time patches of [`patch`]), and the backup copies of modules left under
//! `/lib/modules` ([`backups`]).
//!
//! Everything is read from files under the root, so that it describes a system
//! mounted with `--root` as well as the running one. Rendering is the report's and the
//! recovery plan's; only a kernel's lines ([`kernel_text`]) are written here, because
//! both print them.

pub(crate) mod backups;
pub mod patch;
pub mod recipe;
pub(crate) mod state;

// The property tests read `dkms status` lines through the library.
pub use state::parse_status;
pub(crate) use state::{
    find_tool, format_time, is_build_input, is_safe_name, kernel_order, kernel_text, package_state,
    DkmsState, KernelState, PackageState, DKMS_TREE, MODULES_DIR,
};
