//! `scan --format prometheus`: node_exporter textfile-collector metrics, so a fleet's
//! existing Prometheus alerts fire on a tampered driver tree. Write them atomically
//! into the collector's directory (see the README for a systemd timer example).

use crate::report::Report;
use crate::scan::{FileStatus, TreeScan};
use std::fmt::Write as _;
use std::time::SystemTime;

/// Escapes a label value as the exposition format requires.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

const STATUSES: [FileStatus; 7] = [
    FileStatus::Ok,
    FileStatus::Modified,
    FileStatus::Missing,
    FileStatus::Added,
    FileStatus::Unverified,
    FileStatus::Symlink,
    FileStatus::Unreadable,
];

/// Renders the metrics of one scan.
pub(crate) fn render(report: &Report, scans: &[TreeScan], now: SystemTime) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP kfd_audit_files Files of amdgpu DKMS trees by verification status."
    );
    let _ = writeln!(out, "# TYPE kfd_audit_files gauge");
    for s in scans {
        let tree = label(&s.tree.system_path.display().to_string());
        for st in STATUSES {
            let _ = writeln!(
                out,
                "kfd_audit_files{{tree=\"{tree}\",status=\"{}\"}} {}",
                st.as_str(),
                s.count(st)
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP kfd_audit_findings Findings about dangerous changes, by severity."
    );
    let _ = writeln!(out, "# TYPE kfd_audit_findings gauge");
    let sm = &report.summary;
    for (sev, n) in [
        ("critical", sm.critical),
        ("high", sm.high),
        ("medium", sm.medium),
        ("low", sm.low),
        ("info", sm.info),
    ] {
        let _ = writeln!(out, "kfd_audit_findings{{severity=\"{sev}\"}} {n}");
    }
    let _ = writeln!(
        out,
        "# HELP kfd_audit_trees amdgpu DKMS source trees audited."
    );
    let _ = writeln!(out, "# TYPE kfd_audit_trees gauge");
    let _ = writeln!(out, "kfd_audit_trees {}", scans.len());
    let _ = writeln!(out, "# HELP kfd_audit_rebuild_due 1 when an installed module was probably built from changed sources.");
    let _ = writeln!(out, "# TYPE kfd_audit_rebuild_due gauge");
    let due = report.dkms.as_ref().is_some_and(|d| d.rebuild_due());
    let _ = writeln!(out, "kfd_audit_rebuild_due {}", u8::from(due));
    let _ = writeln!(
        out,
        "# HELP kfd_audit_exit_code Exit code of the scan (0 clean, 1 something found)."
    );
    let _ = writeln!(out, "# TYPE kfd_audit_exit_code gauge");
    let _ = writeln!(out, "kfd_audit_exit_code {}", report.exit_code);
    let _ = writeln!(
        out,
        "# HELP kfd_audit_last_scan_timestamp_seconds When the scan ran (Unix time)."
    );
    let _ = writeln!(out, "# TYPE kfd_audit_last_scan_timestamp_seconds gauge");
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let _ = writeln!(out, "kfd_audit_last_scan_timestamp_seconds {secs}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
