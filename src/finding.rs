//! What a rule says about a line of a file. Shared by the rule engine, the scanner
//! and the report renderers; the JSON field names follow the contract in the README ("The JSON report").

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Severity> {
        Some(match s {
            "info" => Severity::Info,
            "low" => Severity::Low,
            "medium" => Severity::Medium,
            "high" => Severity::High,
            "critical" => Severity::Critical,
            _ => return None,
        })
    }
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// Rule id, e.g. `KFD-MEM-001`.
    pub rule: String,
    pub severity: Severity,
    /// Short title of the rule.
    #[serde(default)]
    pub title: String,
    /// 1-based line in the file as it is now (for a removed line: where it used to be).
    pub line: usize,
    /// The offending line, trimmed.
    pub text: String,
    /// Why this is dangerous, in the user's terms.
    pub why: String,
    /// How to undo it.
    pub fix: String,
}

impl Finding {
    /// The finding in one line, in the words of the scan's report
    /// (`CRITICAL KFD-MEM-001 line 43: flags |= ...`), for places that name it
    /// beside other reasons (the recovery plan). Not escaped: the caller escapes.
    pub(crate) fn headline(&self) -> String {
        format!(
            "{} {} line {}: {}",
            self.severity.as_str().to_uppercase(),
            self.rule,
            self.line,
            self.text
        )
    }
}
