//! The DKMS state as text (for the scan report, and as a code block in its Markdown):
//! the tool, the running kernel, each package with its kernels, the stray module copies.
//! The state is read and judged in [`crate::dkms`]; a kernel's own lines come from
//! [`dkms::kernel_text`], which the recovery plan prints too.

use crate::dkms::{self, DkmsState};
use crate::term;
use std::fmt::Write as _;

/// Renders the DKMS state as text lines (for the scan report), indented by two.
pub(crate) fn render_text(state: &DkmsState) -> String {
    let mut out = String::new();
    let tool = match (&state.tool, state.status_read) {
        (Some(t), true) => format!("{t}; 'dkms status' read"),
        (Some(t), false) => t.to_string(),
        (None, _) => "dkms not installed".to_string(),
    };
    let _ = writeln!(out, "DKMS state ({}):", term::escape(&tool));
    if let Some(r) = &state.running_kernel {
        let _ = writeln!(out, "  running kernel: {}", term::escape(r));
    }
    for n in &state.notes {
        let _ = writeln!(out, "  note: {}", term::escape(n));
    }
    for p in &state.packages {
        let reg = if p.registered {
            "registered with dkms"
        } else {
            "not registered with dkms"
        };
        let _ = writeln!(
            out,
            "  {}/{} ({}; source {})",
            term::escape(&p.name),
            term::escape(&p.version),
            reg,
            term::escape(&p.tree)
        );
        for n in &p.notes {
            let _ = writeln!(out, "    note: {}", term::escape(n));
        }
        if let Some(t) = p.changes.newest_change {
            let _ = writeln!(
                out,
                "    sources last changed {} ({})",
                dkms::format_time(t),
                term::escape(p.changes.newest_change_file.as_deref().unwrap_or("?"))
            );
        }
        for k in &p.kernels {
            out.push_str(&dkms::kernel_text(k, "    "));
        }
        if p.kernels.is_empty() {
            let _ = writeln!(out, "    no kernel has a module of this package");
        }
    }
    if !state.stray_modules.is_empty() {
        let _ = writeln!(
            out,
            "  stray module copies (not loaded: modprobe ignores these names; do not copy one back unless you know it was built from clean sources):"
        );
        for s in &state.stray_modules {
            let _ = writeln!(out, "    {}", term::escape(&s.path));
        }
    }
    out
}
