//! The scan report as JSON for tools: the report model serialized as it is (serde).
//! The field names are a contract with the scripts that read them: fields are added,
//! never renamed (README, "In CI or across a fleet").

use super::Report;

impl Report {
    pub(crate) fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("report serializes") + "\n"
    }
}
