//! Test failpoints: `KFD_AUDIT_FAILPOINT=<step>:<n>` kills the process with SIGKILL
//! at the n-th time it reaches `<step>`; `<step>:<n>:error` makes that step fail
//! with "No space left on device" instead; `<step>:<n>:stop` stops the process
//! (SIGSTOP) there until it is sent SIGCONT, so that a test can change the tree at
//! that exact moment (a directory swapped for a symlink mid-restore). Unset (always, outside tests) it costs
//! one environment lookup per process and does nothing.
//!
//! The steps of one restored file, in order: `source-verified`, `quarantine-temp-written`,
//! `quarantine-renamed`, `quarantined`, `journaled`, `replace-temp-written`,
//! `replace-renamed`, `done`. A kill at any of them must leave every file whole.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

#[derive(Debug, Clone, PartialEq, Eq)]
struct Failpoint {
    step: String,
    nth: usize,
    error: bool,
    stop: bool,
}

fn parse(spec: &str) -> Option<Failpoint> {
    let mut parts = spec.split(':');
    let step = parts.next()?.trim().to_string();
    let nth = parts.next().map_or(Some(1), |n| n.trim().parse().ok())?;
    let (error, stop) = match parts.next() {
        None => (false, false),
        Some("error") => (true, false),
        Some("stop") => (false, true),
        Some(_) => return None,
    };
    (!step.is_empty() && nth > 0).then_some(Failpoint {
        step,
        nth,
        error,
        stop,
    })
}

fn configured() -> Option<&'static Failpoint> {
    static FP: OnceLock<Option<Failpoint>> = OnceLock::new();
    FP.get_or_init(|| {
        std::env::var("KFD_AUDIT_FAILPOINT")
            .ok()
            .and_then(|s| parse(&s))
    })
    .as_ref()
}

/// Marks that `step` was reached. Kills the process, or returns an error, when the
/// configured failpoint says so.
pub(crate) fn hit(step: &str) -> std::io::Result<()> {
    let Some(fp) = configured() else {
        return Ok(());
    };
    if fp.step != step {
        return Ok(());
    }
    static COUNTS: OnceLock<Mutex<HashMap<String, usize>>> = OnceLock::new();
    let mut counts = COUNTS
        .get_or_init(|| Mutex::new(HashMap::new()))
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let n = counts.entry(step.to_string()).or_insert(0);
    *n += 1;
    if *n != fp.nth {
        return Ok(());
    }
    if fp.error {
        return Err(std::io::Error::from_raw_os_error(libc::ENOSPC));
    }
    if fp.stop {
        drop(counts);
        // SAFETY: stopping ourselves; a SIGCONT from the test resumes right here.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGSTOP);
        }
        return Ok(());
    }
    // SAFETY: raising a signal on ourselves; SIGKILL cannot be caught, like a crash.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
    unreachable!("SIGKILL delivered")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs() {
        assert_eq!(
            parse("journaled:3"),
            Some(Failpoint {
                step: "journaled".into(),
                nth: 3,
                error: false,
                stop: false
            })
        );
        assert!(parse("replace-renamed:2:error").unwrap().error);
        assert!(parse("source-verified:2:stop").unwrap().stop);
        assert_eq!(parse("done").unwrap().nth, 1);
        assert_eq!(parse("done:0"), None);
        assert_eq!(parse("done:x"), None);
        assert_eq!(parse(":1"), None);
    }
}
