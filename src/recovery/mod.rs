//! The recovery plan: the exact sequence that puts a clean amdgpu module back on this
//! system, and `plan --run`, which runs it one command at a time.
//!
//! The facts behind the order (checked with dkms 3.0.10 on Debian 12; section 5 of
//! recovery-guide.md walks through them by hand):
//! - `dkms remove -m <name> -v <ver> --all` comes first: `dkms build` of a module that
//!   is already built is a silent no-op ("already built ... skip", exit 0), so without
//!   the remove the old (patched) module would stay. Removing a module that is not
//!   registered exits 3 with "is not located in the DKMS tree": that is fine.
//! - `dkms build` and `dkms install` take `-k <kernel>` for every kernel that had the
//!   module: the running kernel may not even have headers, and `-k` cannot be combined
//!   with `--all`.
//! - dkms 3.x does not rebuild the initramfs, which may carry a copy of amdgpu.
//! - dkms can print `Error!` and still exit 0, so its error output is read too.
//!
//! Restoring files is the restore command's job (it keeps a journal and can undo);
//! the plan names it, `plan --run` refuses to rebuild sources that still differ.
//!
//! Three files, so that deciding, showing and running a plan can each be read alone:
//! [`plan`] (the model, and `build` cut along its numbered phases), [`render`] (text,
//! Markdown, JSON) and [`run`] (`plan --run`).

pub(crate) mod plan;
pub(crate) mod render;
pub(crate) mod run;

pub(crate) use plan::{build, plan_for, shell_quote, PlanOptions};
pub(crate) use render::{render_json, render_markdown, render_text};
pub(crate) use run::{run_command, RunOptions, TerminalConfirm};
