//! The journal: one JSON-lines file per restore or undo run under
//! `<root>/var/lib/kfd-audit/journal/<id>.jsonl`, written and fsync'd line by line.
//!
//! For each file an `intent` line (path, old and new SHA-256, source, quarantine copy)
//! is on disk *before* the file is replaced, and a `done` line after the rename and
//! directory fsync. After a crash, a file with `done` is new, a file with no `intent`
//! is untouched, and a file with an `intent` but no `done` is whole but either old
//! or new: its hash says which (see [`FileState`]). `undo` reads the same lines
//! backwards.

use crate::error::{Error, Result};
use crate::io::atomic::TreeFile;
use crate::io::hash::{Algorithm, Digest};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Serde for paths: a string when the path is UTF-8, else its bytes, so that no
/// name is ever lost or changed on the way through the journal.
pub(crate) mod path_repr {
    use super::*;
    use serde::{Deserializer, Serializer};

    #[derive(Serialize, Deserialize)]
    #[serde(untagged)]
    enum Repr {
        Text(String),
        Bytes(Vec<u8>),
    }

    pub(crate) fn serialize<S: Serializer>(p: &Path, s: S) -> std::result::Result<S::Ok, S::Error> {
        match std::str::from_utf8(p.as_os_str().as_bytes()) {
            Ok(t) => Repr::Text(t.to_string()).serialize(s),
            Err(_) => Repr::Bytes(p.as_os_str().as_bytes().to_vec()).serialize(s),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> std::result::Result<PathBuf, D::Error> {
        Ok(match Repr::deserialize(d)? {
            Repr::Text(t) => PathBuf::from(t),
            Repr::Bytes(b) => PathBuf::from(OsStr::from_bytes(&b)),
        })
    }
}

/// [`path_repr`] for an optional path.
pub(crate) mod opt_path_repr {
    use super::*;
    use serde::{Deserializer, Serializer};

    #[derive(Serialize, Deserialize)]
    struct Wrapped(#[serde(with = "path_repr")] PathBuf);

    pub(crate) fn serialize<S: Serializer>(
        p: &Option<PathBuf>,
        s: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        p.as_ref().map(|p| Wrapped(p.clone())).serialize(s)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> std::result::Result<Option<PathBuf>, D::Error> {
        Ok(Option::<Wrapped>::deserialize(d)?.map(|w| w.0))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunKind {
    Restore,
    Undo,
}

impl RunKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            RunKind::Restore => "restore",
            RunKind::Undo => "undo",
        }
    }
}

/// One file the run is about to replace, recorded before it is replaced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Intent {
    pub seq: usize,
    /// The file as the audited system names it.
    #[serde(with = "path_repr")]
    pub path: PathBuf,
    /// The DKMS tree (system path) and the file's path inside it.
    #[serde(with = "path_repr")]
    pub tree: PathBuf,
    #[serde(with = "path_repr")]
    pub rel: PathBuf,
    /// SHA-256 of the file before; `None` when it did not exist.
    pub old_sha256: Option<String>,
    /// SHA-256 of the file after; `None` when the run moved it into the quarantine
    /// (an added file: it is absent after the run).
    #[serde(default)]
    pub new_sha256: Option<String>,
    /// Where the new bytes came from: `backup`, `baseline`, `deb-archive`, `quarantine`.
    pub source: String,
    pub origin: String,
    /// System path of the verified copy of the old file; `None` when there was none.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "opt_path_repr"
    )]
    pub quarantine: Option<PathBuf>,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub(crate) enum Entry {
    Begin {
        id: String,
        kind: RunKind,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        undoes: Option<String>,
        time: String,
        pid: u32,
        tool_version: String,
    },
    Intent(Intent),
    Done {
        seq: usize,
    },
    Failed {
        seq: usize,
        error: String,
    },
    End {
        restored: usize,
        not_restored: usize,
        /// The error that stopped the run, when one did.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stopped: Option<String>,
    },
}

/// The journal directory under the state directory.
pub(crate) const DIR: &str = "journal";

/// A fresh, sortable run id from the clock: `20251108T120000.123456Z`.
pub(crate) fn new_run_id() -> String {
    let t = humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string();
    t.chars().filter(|c| *c != '-' && *c != ':').collect()
}

/// Whether a string can be a run id (used as a file and directory name).
pub(crate) fn valid_run_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_')
        && !id.starts_with('.')
}

/// Appends entries to one run's journal, each fsync'd before `append` returns.
pub(crate) struct JournalWriter {
    file: TreeFile,
    pub id: String,
}

impl JournalWriter {
    /// Creates the journal of a new run (a new id if the clock repeats itself).
    pub(crate) fn create(state: &Path, begin: impl Fn(&str) -> Entry) -> Result<JournalWriter> {
        loop {
            let id = new_run_id();
            let rel = Path::new(DIR).join(format!("{id}.jsonl"));
            let file = TreeFile::open(state, &rel, Some(0o700))?;
            if file.stat()?.is_some() {
                std::thread::sleep(std::time::Duration::from_micros(2));
                continue;
            }
            let w = JournalWriter { file, id };
            w.append(&begin(&w.id))?;
            return Ok(w);
        }
    }

    pub(crate) fn append(&self, entry: &Entry) -> Result<()> {
        let mut line = serde_json::to_vec(entry).expect("journal entry serializes");
        line.push(b'\n');
        self.file.append(&line, 0o600)?;
        Ok(())
    }

    pub(crate) fn path(&self) -> &Path {
        self.file.path()
    }
}

/// One run as read back from its journal.
#[derive(Debug, Clone)]
pub struct Run {
    pub id: String,
    pub file: PathBuf,
    pub kind: RunKind,
    pub undoes: Option<String>,
    pub time: String,
    pub pid: u32,
    pub intents: Vec<Intent>,
    pub done: BTreeSet<usize>,
    pub failed: BTreeMap<usize, String>,
    /// Whether the run reached its end (false: killed or crashed mid-way).
    pub ended: bool,
    /// From the end entry: files not done, and the error that stopped the run.
    pub not_done: usize,
    pub stopped: Option<String>,
}

impl Run {
    pub(crate) fn is_done(&self, seq: usize) -> bool {
        self.done.contains(&seq)
    }

    /// How the run ended: `complete` (every file done), `partial` (some files
    /// refused, e.g. changed since the plan), `failed` (stopped by a write error),
    /// `interrupted` (killed mid-way: no end entry).
    pub(crate) fn state(&self) -> &'static str {
        if !self.ended {
            "interrupted"
        } else if self.stopped.is_some() || !self.failed.is_empty() {
            "failed"
        } else if self.not_done > 0 {
            "partial"
        } else {
            "complete"
        }
    }
}

/// Reads one journal. A last line cut short (the machine lost power mid-write) is
/// ignored; any other unreadable line is an error naming the file and line.
pub fn read_run(path: &Path) -> Result<Run> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let complete = bytes.ends_with(b"\n");
    let lines: Vec<&[u8]> = bytes.split(|b| *b == b'\n').collect();
    let count = lines.len();
    let mut run: Option<Run> = None;
    for (i, line) in lines.into_iter().enumerate() {
        if line.is_empty() {
            continue;
        }
        let last = i + 1 == count;
        let entry: Entry = match serde_json::from_slice(line) {
            Ok(e) => e,
            Err(_) if last && !complete => break,
            Err(e) => {
                return Err(Error::malformed(
                    path,
                    i + 1,
                    format!(
                    "not a journal entry ({e}); the journal is damaged, see it with a text editor"
                ),
                ))
            }
        };
        match (entry, run.as_mut()) {
            (
                Entry::Begin {
                    id,
                    kind,
                    undoes,
                    time,
                    pid,
                    ..
                },
                None,
            ) => {
                run = Some(Run {
                    id,
                    file: path.to_path_buf(),
                    kind,
                    undoes,
                    time,
                    pid,
                    intents: Vec::new(),
                    done: BTreeSet::new(),
                    failed: BTreeMap::new(),
                    ended: false,
                    not_done: 0,
                    stopped: None,
                })
            }
            (_, None) | (Entry::Begin { .. }, Some(_)) => {
                return Err(Error::malformed(
                    path,
                    i + 1,
                    "a journal starts with exactly one 'begin' entry",
                ))
            }
            (Entry::Intent(intent), Some(r)) => r.intents.push(intent),
            (Entry::Done { seq }, Some(r)) => {
                r.done.insert(seq);
            }
            (Entry::Failed { seq, error }, Some(r)) => {
                r.failed.insert(seq, error);
            }
            (
                Entry::End {
                    not_restored,
                    stopped,
                    ..
                },
                Some(r),
            ) => {
                r.ended = true;
                r.not_done = not_restored;
                r.stopped = stopped;
            }
        }
    }
    run.ok_or_else(|| Error::malformed(path, 1, "empty journal"))
}

/// Every run in the state directory, oldest first.
pub(crate) fn load_runs(state: &Path) -> Result<Vec<Run>> {
    let dir = state.join(DIR);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(&dir, e)),
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.path())
        .filter(|p| p.extension() == Some(OsStr::new("jsonl")))
        .collect();
    files.sort();
    files.iter().map(|p| read_run(p)).collect()
}

/// What a journaled file is now, judged by its hash against the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum FileState {
    /// The content from before the run (or absent, if it was absent).
    Old,
    /// The content the run wrote.
    New,
    /// Neither: changed by someone since.
    Changed,
    /// Not there, and it existed before.
    Missing,
    /// A symlink or not a regular file: not looked at.
    NotAFile,
}

impl FileState {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            FileState::Old => "old",
            FileState::New => "new",
            FileState::Changed => "changed",
            FileState::Missing => "missing",
            FileState::NotAFile => "not-a-file",
        }
    }
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    Digest::of_bytes(Algorithm::Sha256, bytes).to_hex()
}

/// Judges current bytes (`None`: absent) against an intent.
pub(crate) fn judge(intent: &Intent, current: Option<&[u8]>) -> FileState {
    match current {
        None if intent.old_sha256.is_none() => FileState::Old,
        None if intent.new_sha256.is_none() => FileState::New,
        None => FileState::Missing,
        Some(b) => {
            let h = sha256_hex(b);
            if intent.new_sha256.as_deref() == Some(h.as_str()) {
                FileState::New
            } else if intent.old_sha256.as_deref() == Some(h.as_str()) {
                FileState::Old
            } else {
                FileState::Changed
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn intent(seq: usize) -> Intent {
        Intent {
            seq,
            path: PathBuf::from("/usr/src/amdgpu-1/a.c"),
            tree: PathBuf::from("/usr/src/amdgpu-1"),
            rel: PathBuf::from(OsStr::from_bytes(b"a\xff.c")),
            old_sha256: Some(sha256_hex(b"old")),
            new_sha256: Some(sha256_hex(b"new")),
            source: "backup".into(),
            origin: "/usr/src/amdgpu-1/a.c.orig".into(),
            quarantine: Some(PathBuf::from(OsStr::from_bytes(
                b"/var/lib/kfd-audit/quarantine/x/usr/src/amdgpu-1/a\xff.c",
            ))),
            mode: 0o644,
            uid: 0,
            gid: 0,
        }
    }

    #[test]
    fn round_trip_and_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let w = JournalWriter::create(dir.path(), |id| Entry::Begin {
            id: id.to_string(),
            kind: RunKind::Restore,
            undoes: None,
            time: "t".into(),
            pid: 1,
            tool_version: "0".into(),
        })
        .unwrap();
        assert!(valid_run_id(&w.id), "{}", w.id);
        w.append(&Entry::Intent(intent(0))).unwrap();
        w.append(&Entry::Done { seq: 0 }).unwrap();
        w.append(&Entry::Intent(intent(1))).unwrap();
        // A line cut short by a power loss is ignored.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(w.path())
            .unwrap();
        std::io::Write::write_all(&mut f, b"{\"event\":\"done\",\"se").unwrap();
        let runs = load_runs(dir.path()).unwrap();
        assert_eq!(runs.len(), 1);
        let r = &runs[0];
        assert_eq!(r.intents, vec![intent(0), intent(1)]);
        assert!(r.is_done(0) && !r.is_done(1) && !r.ended);
        assert_eq!(r.intents[0].rel.as_os_str().as_bytes(), b"a\xff.c");

        assert_eq!(judge(&intent(0), Some(b"new")), FileState::New);
        assert_eq!(judge(&intent(0), Some(b"old")), FileState::Old);
        assert_eq!(judge(&intent(0), Some(b"other")), FileState::Changed);
        assert_eq!(judge(&intent(0), None), FileState::Missing);
        // A file the run moved into the quarantine is new when absent.
        let moved = Intent {
            new_sha256: None,
            ..intent(0)
        };
        assert_eq!(judge(&moved, None), FileState::New);
        assert_eq!(judge(&moved, Some(b"old")), FileState::Old);
    }

    #[test]
    fn damaged_line_names_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(DIR)).unwrap();
        let p = dir.path().join(DIR).join("x.jsonl");
        std::fs::write(&p, "garbage\n{}\n").unwrap();
        let err = load_runs(dir.path()).unwrap_err().to_string();
        assert!(err.contains("x.jsonl:1:"), "{err}");
    }
}
