//! Exit codes shared by every command, as documented in the README:
//! 0 nothing found, 1 something found, 2 could not complete.

use std::process::ExitCode;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Nothing to report: every verified file matches its reference.
    Clean,
    /// The command completed and found something (a changed file, a finding, ...).
    Found,
    /// The command could not complete: bad arguments, unreadable root, malformed reference.
    Failed,
}

impl Outcome {
    pub(crate) fn code(self) -> u8 {
        match self {
            Outcome::Clean => 0,
            Outcome::Found => 1,
            Outcome::Failed => 2,
        }
    }

    /// The worse of two outcomes, so results from several trees combine.
    pub(crate) fn worst(self, other: Outcome) -> Outcome {
        if other.code() > self.code() {
            other
        } else {
            self
        }
    }
}

impl From<Outcome> for ExitCode {
    fn from(o: Outcome) -> ExitCode {
        ExitCode::from(o.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_worst() {
        assert_eq!(Outcome::Clean.code(), 0);
        assert_eq!(Outcome::Found.code(), 1);
        assert_eq!(Outcome::Failed.code(), 2);
        assert_eq!(Outcome::Clean.worst(Outcome::Found), Outcome::Found);
        assert_eq!(Outcome::Failed.worst(Outcome::Found), Outcome::Failed);
    }
}
