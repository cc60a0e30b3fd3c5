//! Applying changes, per the restore safety protocol. For each file, in order:
//!
//! 1. fetch the new bytes and verify their hash again, right before use;
//! 2. open the file's directory from the tree down without following links, refuse
//!    a symlink at the target, and check the file is still what was planned;
//! 3. copy the current file into the quarantine (atomic write, read back, hash checked);
//! 4. journal the intent (fsync'd);
//! 5. replace the file atomically, keeping its mode and owner;
//! 6. journal that it is done.
//!
//! A refusal (the source no longer verifies, a symlink, a file changed since the
//! plan) skips that file and goes on. A write error (disk full, I/O error) stops
//! the run at once: every file is whole, and the result says which were replaced.
//! Restore and undo both go through here, so an undo is journaled like a restore.

use super::journal::{sha256_hex, Entry, Intent, JournalWriter, RunKind};
use super::plan::{quarantine_path, STATE_DIR};
use crate::io::atomic::{Ownership, TreeFile};
use crate::io::failpoint;
use crate::io::hash::Digest;
use crate::io::root::Root;
use std::path::PathBuf;

/// What the file must be right before it is replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Expect {
    /// Its content must have this digest.
    Digest(Digest),
    /// It must not exist.
    Absent,
}

/// One file to write.
#[derive(Debug, Clone)]
pub(crate) struct Change {
    /// The tree (system path and host path) and the file's path inside it.
    pub tree_system: PathBuf,
    pub tree_host: PathBuf,
    pub rel: PathBuf,
    pub expect: Expect,
    /// Move the file into the quarantine instead of replacing it (an added file:
    /// nothing is fetched, and the file is absent after the run).
    pub remove: bool,
    /// Mode and owner for a file that is created: the ones it had when a run moved it
    /// away (undo); `None`: 0644 and its directory's owner.
    pub create_as: Option<Ownership>,
    /// Kind of source (`backup`, `baseline`, `quarantine`, ...) and where it is.
    pub source: String,
    pub origin: String,
}

impl Change {
    pub(crate) fn system_path(&self) -> PathBuf {
        self.tree_system.join(&self.rel)
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Applied {
    pub system_path: PathBuf,
    /// System path of the quarantined previous version.
    pub quarantine: Option<PathBuf>,
    /// Set when the file was replaced but making it durable failed.
    pub warning: Option<String>,
    /// The file was moved into the quarantine (not replaced).
    pub moved: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct NotApplied {
    pub system_path: PathBuf,
    pub reason: String,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct ApplyResult {
    pub run: Option<String>,
    /// System path of the journal.
    pub journal: Option<PathBuf>,
    pub applied: Vec<Applied>,
    pub not_applied: Vec<NotApplied>,
    /// The write error that stopped the run, if one did.
    pub stopped: Option<String>,
    /// When the run stopped because a filesystem was full: the host path it could
    /// not write.
    pub no_space: Option<PathBuf>,
}

/// Why a run stopped: the error's text, and the path of a full filesystem.
struct Stop {
    text: String,
    no_space: Option<PathBuf>,
}

fn stop_of(e: &crate::error::Error) -> Stop {
    let no_space = match e {
        crate::error::Error::Io { path, source } if source.raw_os_error() == Some(libc::ENOSPC) => {
            Some(path.clone())
        }
        _ => None,
    };
    Stop {
        text: e.to_string(),
        no_space,
    }
}

/// The new bytes for a change, verified, or why there are none.
pub(crate) type Fetch<'a> = dyn FnMut(&Change) -> Result<Vec<u8>, String> + 'a;

enum Step {
    Applied(Applied),
    Refused(String),
    Stop(Stop, Option<Applied>),
}

struct Ctx<'a> {
    state_host: PathBuf,
    journal: &'a JournalWriter,
    seq: usize,
}

fn io_stop(e: crate::error::Error) -> Step {
    Step::Stop(stop_of(&e), None)
}

/// A failpoint's error, as the write it stands for would report it.
fn fp_stop(path: &std::path::Path, e: std::io::Error) -> Step {
    io_stop(crate::error::Error::io(path, e))
}

/// Takes back the quarantine copy of a file that was not replaced: on a full
/// filesystem it would only take the space the next run needs, and the file it
/// copies is still in place (checked by its hash before this is called).
fn drop_quarantine_copy(ctx: &Ctx, q: &std::path::Path) {
    let rel = q.strip_prefix(STATE_DIR).unwrap_or(q);
    let host = ctx.state_host.join(rel);
    if std::fs::remove_file(&host).is_ok() {
        // Empty directories up to quarantine/<run> go too; a non-empty one stays.
        let stop = ctx.state_host.join("quarantine");
        let mut dir = host.parent().map(|d| d.to_path_buf());
        while let Some(d) = dir {
            if d == stop || !d.starts_with(&stop) || std::fs::remove_dir(&d).is_err() {
                break;
            }
            dir = d.parent().map(|p| p.to_path_buf());
        }
    }
}

fn apply_one(ctx: &mut Ctx, c: &Change, fetch: &mut Fetch) -> Step {
    let system_path = c.system_path();
    let new = if c.remove {
        Vec::new()
    } else {
        match fetch(c) {
            Ok(b) => b,
            Err(reason) => return Step::Refused(reason),
        }
    };
    if let Err(e) = failpoint::hit("source-verified") {
        return fp_stop(&c.tree_host.join(&c.rel), e);
    }
    let create_dirs = (c.expect == Expect::Absent).then_some(0o755);
    let tf = match TreeFile::open(&c.tree_host, &c.rel, create_dirs) {
        Ok(tf) => tf,
        Err(e) => return Step::Refused(e.to_string()),
    };
    let meta = match tf.stat() {
        Ok(m) => m,
        Err(e) => return Step::Refused(e.to_string()),
    };
    let current = match meta {
        Some(_) => match tf.read() {
            Ok(b) => b,
            Err(e) => return Step::Refused(e.to_string()),
        },
        None => None,
    };
    let as_planned = match (&c.expect, &current) {
        (Expect::Absent, None) => true,
        (Expect::Digest(d), Some(b)) => Digest::of_bytes(d.algorithm(), b) == *d,
        _ => false,
    };
    if !as_planned {
        return Step::Refused(
            "changed since the plan was made; not touched (run again to see the new plan)".into(),
        );
    }

    // The current version goes to the quarantine first, verified.
    let quarantine = current
        .as_ref()
        .map(|_| quarantine_path(ctx.journal.id.as_str(), &system_path));
    if let (Some(bytes), Some(q)) = (&current, &quarantine) {
        let rel = q.strip_prefix(STATE_DIR).unwrap_or(q);
        let qf = match TreeFile::open(&ctx.state_host, rel, Some(0o700)) {
            Ok(f) => f,
            Err(e) => return io_stop(e),
        };
        let qhost = qf.path().to_path_buf();
        let own = Ownership {
            mode: 0o600,
            owner: None,
        };
        if let Err(e) = qf.replace(bytes, own, "quarantine") {
            drop_quarantine_copy(ctx, q);
            return io_stop(e);
        }
        match qf.read() {
            Ok(Some(back)) if sha256_hex(&back) == sha256_hex(bytes) => {}
            Ok(_) => {
                drop_quarantine_copy(ctx, q);
                return Step::Stop(
                    Stop {
                        text: format!(
                            "{}: the quarantine copy does not read back as written",
                            qf.path().display()
                        ),
                        no_space: None,
                    },
                    None,
                );
            }
            Err(e) => {
                drop_quarantine_copy(ctx, q);
                return io_stop(e);
            }
        }
        if let Err(e) = failpoint::hit("quarantined") {
            drop_quarantine_copy(ctx, q);
            return fp_stop(&qhost, e);
        }
    }

    // Keep mode and owner; a created file gets 0644 and its directory's owner.
    let own = match (meta, tf.dir_meta()) {
        (Some(m), _) => Ownership {
            mode: m.mode,
            owner: Some((m.uid, m.gid)),
        },
        (None, _) if c.create_as.is_some() => c.create_as.unwrap_or(Ownership {
            mode: 0o644,
            owner: None,
        }),
        (None, Ok(d)) => Ownership {
            mode: 0o644,
            owner: Some((d.uid, d.gid)),
        },
        (None, Err(e)) => return io_stop(e),
    };
    // The file is still the planned one: a stop before it is replaced takes its
    // quarantine copy back.
    let unchanged = |ctx: &Ctx| {
        if let Some(q) = &quarantine {
            drop_quarantine_copy(ctx, q);
        }
    };
    let seq = ctx.seq;
    ctx.seq += 1;
    let new_sha = (!c.remove).then(|| sha256_hex(&new));
    let intent = Intent {
        seq,
        path: system_path.clone(),
        tree: c.tree_system.clone(),
        rel: c.rel.clone(),
        old_sha256: current.as_deref().map(sha256_hex),
        new_sha256: new_sha.clone(),
        source: c.source.clone(),
        origin: c.origin.clone(),
        quarantine: quarantine.clone(),
        mode: own.mode,
        uid: own.owner.map_or(0, |o| o.0),
        gid: own.owner.map_or(0, |o| o.1),
    };
    if let Err(e) = ctx.journal.append(&Entry::Intent(intent)) {
        unchanged(ctx);
        return io_stop(e);
    }
    if let Err(e) = failpoint::hit("journaled") {
        unchanged(ctx);
        return fp_stop(ctx.journal.path(), e);
    }
    let applied = Applied {
        system_path: system_path.clone(),
        quarantine: quarantine.clone(),
        warning: None,
        moved: c.remove,
    };
    let written = if c.remove {
        tf.remove()
    } else {
        tf.replace(&new, own, "replace")
    };
    if let Err(e) = written {
        let _ = ctx.journal.append(&Entry::Failed {
            seq,
            error: e.to_string(),
        });
        // Say what is really on disk now: the rename (or unlink) may have happened.
        let now = tf.read();
        let now_new = match (&now, &new_sha) {
            (Ok(Some(b)), Some(n)) => sha256_hex(b) == *n,
            (Ok(None), None) => true,
            _ => false,
        };
        let now_old = matches!(&now, Ok(Some(b)) if current.as_deref().map(sha256_hex) == Some(sha256_hex(b)));
        if now_old {
            unchanged(ctx);
        }
        let applied = now_new.then(|| Applied {
            warning: Some(format!("done, but not yet safe on disk: {e}")),
            ..applied
        });
        return Step::Stop(stop_of(&e), applied);
    }
    if let Err(e) = ctx.journal.append(&Entry::Done { seq }) {
        return Step::Stop(
            stop_of(&e),
            Some(Applied {
                warning: Some("replaced; its 'done' line could not be journaled".into()),
                ..applied
            }),
        );
    }
    if let Err(e) = failpoint::hit("done") {
        let e = crate::error::Error::io(ctx.journal.path(), e);
        return Step::Stop(stop_of(&e), Some(applied));
    }
    Step::Applied(applied)
}

/// Applies the changes in order as one journaled run.
pub(crate) fn apply(
    root: &Root,
    kind: RunKind,
    undoes: Option<String>,
    changes: &[Change],
    fetch: &mut Fetch,
) -> ApplyResult {
    let mut result = ApplyResult::default();
    let state_host = root.path(STATE_DIR);
    let journal = match crate::io::atomic::create_private_dir(&state_host).and_then(|_| {
        JournalWriter::create(&state_host, |id| Entry::Begin {
            id: id.to_string(),
            kind,
            undoes: undoes.clone(),
            time: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            pid: std::process::id(),
            tool_version: env!("CARGO_PKG_VERSION").to_string(),
        })
    }) {
        Ok(j) => j,
        Err(e) => {
            let stop = stop_of(&e);
            result.stopped = Some(stop.text);
            result.no_space = stop.no_space;
            result.not_applied = changes
                .iter()
                .map(|c| NotApplied {
                    system_path: c.system_path(),
                    reason: "not attempted: the journal could not be created".into(),
                })
                .collect();
            return result;
        }
    };
    result.run = Some(journal.id.clone());
    result.journal = root.system_path(journal.path());
    let mut ctx = Ctx {
        state_host,
        journal: &journal,
        seq: 0,
    };
    let mut iter = changes.iter();
    for c in iter.by_ref() {
        match apply_one(&mut ctx, c, fetch) {
            Step::Applied(a) => result.applied.push(a),
            Step::Refused(reason) => result.not_applied.push(NotApplied {
                system_path: c.system_path(),
                reason,
            }),
            Step::Stop(stop, applied) => {
                match applied {
                    Some(a) => result.applied.push(a),
                    None => result.not_applied.push(NotApplied {
                        system_path: c.system_path(),
                        reason: format!("stopped here: {}; the file is unchanged", stop.text),
                    }),
                }
                result.stopped = Some(stop.text);
                result.no_space = stop.no_space;
                break;
            }
        }
    }
    for c in iter {
        result.not_applied.push(NotApplied {
            system_path: c.system_path(),
            reason: "not attempted: the run stopped before it".into(),
        });
    }
    let _ = journal.append(&Entry::End {
        restored: result.applied.len(),
        not_restored: result.not_applied.len(),
        stopped: result.stopped.clone(),
    });
    result
}
