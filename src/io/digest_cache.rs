//! Digests of large package files remembered between runs, keyed by what the kernel
//! says of the file: device, inode, size, mtime and ctime (nanoseconds).
//!
//! ROCm's libraries are gigabytes (Debian's librocsparse0 alone is one 1.3 GB file: a
//! single MD5 chain no engine can split), and the hourly metrics timer would hash them
//! every hour. A file whose key is unchanged has the content it had when it was hashed:
//! writing to a file, renaming another over it or restoring its mtime with `touch -r`
//! all set its ctime to the current time, and ctime cannot be set back by a program
//! (only by turning the system clock back, or by editing the block device).
//!
//! Two guards keep a stale digest out: a digest is only remembered when the file's
//! ctime is older than [`SETTLED`] before it was hashed (a write in the same clock tick
//! as the hash could leave the key unchanged), and when a second look after the hash
//! finds the same key. The cache is kfd-audit's own state (mode 0600); a cache that
//! cannot be read or written is simply not used.

use std::collections::HashMap;
use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::hash::{Algorithm, Digest};

/// How long a file's ctime must lie behind the moment it is hashed before its digest
/// is remembered.
const SETTLED: Duration = Duration::from_secs(2);

/// Set to `off`, the cache is neither read nor written (for comparisons).
pub(crate) const ENV_SWITCH: &str = "KFD_AUDIT_DIGEST_CACHE";

/// What identifies one version of a file's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Key {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl Key {
    pub(crate) fn of(meta: &Metadata) -> Key {
        let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
        Key {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: ns(meta.mtime(), meta.mtime_nsec()),
            ctime_ns: ns(meta.ctime(), meta.ctime_nsec()),
        }
    }

    /// Whether the file last changed at least [`SETTLED`] before `when`.
    fn settled_before(&self, when: SystemTime) -> bool {
        let Ok(since_epoch) = when.duration_since(SystemTime::UNIX_EPOCH) else {
            return false;
        };
        let limit = since_epoch.saturating_sub(SETTLED).as_nanos() as i128;
        self.ctime_ns < limit
    }
}

/// The remembered digests of one cache file.
pub(crate) struct DigestCache {
    file: Option<PathBuf>,
    known: HashMap<String, (Key, Digest)>,
    /// What this run used or hashed: only these are written back, so that files of
    /// packages removed since drop out.
    kept: HashMap<String, (Key, Digest)>,
    hits: usize,
}

impl DigestCache {
    /// A cache that remembers nothing (auditing another system read-only, or switched off).
    pub(crate) fn disabled() -> DigestCache {
        DigestCache {
            file: None,
            known: HashMap::new(),
            kept: HashMap::new(),
            hits: 0,
        }
    }

    /// The cache kept in `file`; empty when it does not exist or cannot be read, and
    /// disabled when `KFD_AUDIT_DIGEST_CACHE=off`.
    pub(crate) fn load(file: &Path) -> DigestCache {
        if std::env::var_os(ENV_SWITCH).is_some_and(|v| v == "off") {
            return DigestCache::disabled();
        }
        let mut cache = DigestCache {
            file: Some(file.to_path_buf()),
            ..DigestCache::disabled()
        };
        let Ok(text) = std::fs::read_to_string(file) else {
            return cache;
        };
        for line in text.lines() {
            if let Some((path, entry)) = parse_line(line) {
                cache.known.insert(path, entry);
            }
        }
        cache
    }

    /// The remembered digest of `path` in `algorithm`, when the file is as it was.
    pub(crate) fn get(
        &mut self,
        path: &str,
        meta: &Metadata,
        algorithm: Algorithm,
    ) -> Option<Digest> {
        let (key, digest) = self.known.get(path)?;
        if *key != Key::of(meta) || digest.algorithm() != algorithm {
            return None;
        }
        self.hits += 1;
        self.kept.insert(path.to_string(), (*key, digest.clone()));
        Some(digest.clone())
    }

    /// Remembers the digest of `path` hashed at `hashed_at` from a file whose key was
    /// `before` then and is `after` now, when both agree and the file had settled.
    pub(crate) fn put(
        &mut self,
        path: &str,
        before: Key,
        after: Key,
        hashed_at: SystemTime,
        digest: Digest,
    ) {
        if self.file.is_some() && before == after && before.settled_before(hashed_at) {
            self.kept.insert(path.to_string(), (before, digest));
        }
    }

    /// How many digests came from the cache in this run.
    pub(crate) fn hits(&self) -> usize {
        self.hits
    }

    /// Writes what this run used back, atomically; best effort (a read-only root, a
    /// full disk: the next run hashes again).
    pub(crate) fn save(&self) {
        let Some(file) = &self.file else { return };
        if self.kept.is_empty() && self.known.is_empty() {
            return;
        }
        let mut lines: Vec<String> = self
            .kept
            .iter()
            .map(|(path, (k, d))| {
                format!(
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{path}\n",
                    d.algorithm().as_str(),
                    k.dev,
                    k.ino,
                    k.size,
                    k.mtime_ns,
                    k.ctime_ns,
                    d.to_hex()
                )
            })
            .collect();
        lines.sort();
        if let Some(dir) = file.parent() {
            if super::atomic::create_private_dir(dir).is_err() {
                return;
            }
        }
        let _ = super::atomic::write(file, lines.concat().as_bytes(), 0o600);
    }
}

fn parse_line(line: &str) -> Option<(String, (Key, Digest))> {
    let mut f = line.splitn(8, '\t');
    let algorithm = match f.next()? {
        "md5" => Algorithm::Md5,
        "sha1" => Algorithm::Sha1,
        "sha256" => Algorithm::Sha256,
        "sha384" => Algorithm::Sha384,
        "sha512" => Algorithm::Sha512,
        _ => return None,
    };
    let key = Key {
        dev: f.next()?.parse().ok()?,
        ino: f.next()?.parse().ok()?,
        size: f.next()?.parse().ok()?,
        mtime_ns: f.next()?.parse().ok()?,
        ctime_ns: f.next()?.parse().ok()?,
    };
    let digest = Digest::from_hex(algorithm, f.next()?)?;
    let path = f.next()?;
    (!path.is_empty()).then(|| (path.to_string(), (key, digest)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_only_settled_unchanged_files_and_reads_back_what_it_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("lib.so");
        std::fs::write(&data, b"library").unwrap();
        let meta = std::fs::symlink_metadata(&data).unwrap();
        let key = Key::of(&meta);
        let digest = Digest::of_bytes(Algorithm::Md5, b"library");
        let file = dir.path().join("state/digest-cache");
        let mut c = DigestCache::load(&file);
        // Hashed right after it was written: not remembered.
        c.put("/lib.so", key, key, SystemTime::now(), digest.clone());
        assert!(c.kept.is_empty());
        // Hashed long after, but changed while it was read: not remembered.
        let later = SystemTime::now() + Duration::from_secs(10);
        let changed = Key { size: 1, ..key };
        c.put("/lib.so", key, changed, later, digest.clone());
        assert!(c.kept.is_empty());
        c.put("/lib.so", key, key, later, digest.clone());
        c.save();
        let mut again = DigestCache::load(&file);
        assert_eq!(again.get("/lib.so", &meta, Algorithm::Md5), Some(digest));
        assert_eq!(again.get("/lib.so", &meta, Algorithm::Sha256), None);
        assert_eq!(again.hits(), 1);
        // Written to: its ctime moves, the remembered digest no longer applies.
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(&data, b"patched").unwrap();
        let meta = std::fs::symlink_metadata(&data).unwrap();
        assert_eq!(again.get("/lib.so", &meta, Algorithm::Md5), None);
        assert!(parse_line("md5\tx").is_none());
    }
}
