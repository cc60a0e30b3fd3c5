//! The package archive: the `.deb` of the installed version that apt may have left in
//! `/var/cache/apt/archives/<pkg>_<version>_<arch>.deb` (an epoch `1:` is written
//! `1%3a` in the file name). It holds the clean content of every file the package
//! installed, so diffs and restores work even without a baseline or a backup.
//!
//! A `.deb` is an `ar` archive (`debian-binary`, `control.tar.*`, `data.tar.*`; see
//! deb(5)); `data.tar` is compressed with xz, zstd or gzip, or not at all. Members are
//! read by streaming: the ar container is walked with seeks, `data.tar` is decompressed
//! and untarred on the fly, and only the wanted members are kept in memory, one file's
//! worth at a time. Nothing is extracted to disk. A member is accepted only when it
//! matches dpkg's md5sums for the package (the archive in the cache could be of
//! another build with the same version, or could have been replaced).
//!
//! The ar container is read by this module rather than by a crate: a `.deb` uses only
//! the plain common format (60-byte headers, short names), and reading it here lets
//! every size be checked against the file length first, so a truncated download is
//! reported as such, naming the member, before any decompression starts.

use super::{shown, Candidate, ContentProvider, VerifiedMembers};
use crate::error::{Error, Result};
use crate::io::hash::Digest;
use crate::io::root::Root;
use crate::reference::{safe_relative, ReferenceKind, TreeReferences};
use crate::tree::Tree;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub(crate) const ARCHIVES_DIR: &str = "/var/cache/apt/archives";
pub(crate) const STATUS_FILE: &str = "/var/lib/dpkg/status";

/// The most memory an xz stream may ask for (its dictionary); `xz -9` needs 65 MiB.
const XZ_MEMLIMIT: u64 = 256 * 1024 * 1024;
/// zstd's window limit as a power of two (128 MiB, zstd's own default cap).
const ZSTD_WINDOW_LOG_MAX: u32 = 27;

/// The version of an installed package according to dpkg's status file.
pub fn installed_version(root: &Root, package: &str) -> Result<Option<String>> {
    let path = root.path(STATUS_FILE);
    let text = match crate::io::read::read_reference(&path)? {
        Some(b) => String::from_utf8_lossy(&b).into_owned(),
        None => return Ok(None),
    };
    let mut fallback = None;
    for stanza in text.split("\n\n") {
        let field = |name: &str| {
            stanza.lines().find_map(|l| {
                l.strip_prefix(name)
                    .and_then(|r| r.strip_prefix(':'))
                    .map(|v| v.trim().to_string())
            })
        };
        if field("Package").as_deref() != Some(package) {
            continue;
        }
        let Some(version) = field("Version") else {
            continue;
        };
        if field("Status").is_some_and(|s| s.ends_with(" installed")) {
            return Ok(Some(version));
        }
        fallback.get_or_insert(version);
    }
    Ok(fallback)
}

/// How apt writes a version in an archive's file name (`1:2.0` → `1%3a2.0`).
pub(crate) fn file_name_version(version: &str) -> String {
    version.replace(':', "%3a")
}

/// The cached archives of exactly this package version, sorted by name.
pub(crate) fn find_archives(root: &Root, package: &str, version: &str) -> Result<Vec<PathBuf>> {
    let dir = root.path(ARCHIVES_DIR);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(&dir, e)),
    };
    let prefix = format!("{package}_{}_", file_name_version(version));
    let mut out: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.starts_with(&prefix) && name.ends_with(".deb")
        })
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.path())
        .collect();
    out.sort();
    Ok(out)
}

/// How `data.tar` is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compression {
    None,
    Xz,
    Zstd,
    Gzip,
}

/// Where `data.tar` lies in a `.deb`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DataMember {
    pub name: String,
    pub offset: u64,
    pub size: u64,
    pub compression: Compression,
}

const AR_MAGIC: &[u8; 8] = b"!<arch>\n";
const AR_HEADER: u64 = 60;

/// Walks the ar container and finds `data.tar.*`, checking every member's size
/// against the file's length. Errors are plain sentences about the archive.
pub(crate) fn locate_data(file: &mut File) -> std::result::Result<DataMember, String> {
    let len = file
        .metadata()
        .map_err(|e| format!("cannot read: {e}"))?
        .len();
    let mut magic = [0u8; 8];
    file.seek(SeekFrom::Start(0))
        .and_then(|_| file.read_exact(&mut magic))
        .map_err(|_| "not a Debian package: too short for an ar archive".to_string())?;
    if &magic != AR_MAGIC {
        return Err("not a Debian package (no ar signature)".into());
    }
    let mut offset = 8u64;
    loop {
        if offset >= len {
            return Err("has no data.tar member".into());
        }
        if offset + AR_HEADER > len {
            return Err(format!(
                "truncated: the file ends inside a member header at byte {len}"
            ));
        }
        let mut header = [0u8; AR_HEADER as usize];
        file.seek(SeekFrom::Start(offset))
            .and_then(|_| file.read_exact(&mut header))
            .map_err(|e| format!("cannot read member header at byte {offset}: {e}"))?;
        if &header[58..60] != b"`\n" {
            return Err(format!("corrupt: bad ar member header at byte {offset}"));
        }
        let name = String::from_utf8_lossy(&header[..16])
            .trim_end()
            .trim_end_matches('/')
            .to_string();
        let size: u64 = std::str::from_utf8(&header[48..58])
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| {
                format!("corrupt: bad size in the header of member '{name}' at byte {offset}")
            })?;
        let data = offset + AR_HEADER;
        if data + size > len {
            return Err(format!(
                "truncated: member '{name}' needs {size} bytes from byte {data}, the file ends at byte {len}"
            ));
        }
        if let Some(ext) = name.strip_prefix("data.tar") {
            let compression = match ext {
                "" => Compression::None,
                ".xz" => Compression::Xz,
                ".zst" => Compression::Zstd,
                ".gz" => Compression::Gzip,
                other => {
                    return Err(format!(
                        "data.tar{other}: compression not supported (xz, zstd and gzip are)"
                    ))
                }
            };
            return Ok(DataMember {
                name,
                offset: data,
                size,
                compression,
            });
        }
        // Members are padded to an even length.
        offset = data + size + (size & 1);
    }
}

/// The least data.tar may always expand to; see [`expansion_limit`].
const MIN_EXPANSION: u64 = 1 << 30;
/// How many times its compressed size data.tar may expand to beyond that. Source
/// code compresses about ten times; zeros, the stuff of decompression bombs,
/// thousands of times.
const MAX_RATIO: u64 = 64;

/// The most bytes a data.tar of `compressed` bytes is allowed to expand to, so that
/// a decompression bomb is stopped after a bounded time.
pub(crate) fn expansion_limit(compressed: u64) -> u64 {
    compressed.saturating_mul(MAX_RATIO).max(MIN_EXPANSION)
}

/// Counts the bytes read through it, and fails once more than `limit` were read.
struct Counted<R> {
    inner: R,
    count: std::rc::Rc<std::cell::Cell<u64>>,
    limit: u64,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let total = self.count.get() + n as u64;
        self.count.set(total);
        if total > self.limit {
            return Err(std::io::Error::other("expansion limit reached"));
        }
        Ok(n)
    }
}

/// How many times this process set out to read through a package archive.
static READS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many times this process has opened a package archive to decompress it
/// ([`for_each_member`]). Reading a `.deb` through is the costliest way to clean
/// bytes, and a run fetches each file's clean content once: the binary prints this
/// under `KFD_AUDIT_STATS` so that a test can hold it to that.
pub(crate) fn reads() -> u64 {
    READS.load(std::sync::atomic::Ordering::Relaxed)
}

/// Streams the regular files of a `.deb`'s data.tar: `visit` gets each member's
/// root-relative path and a reader over its bytes, and returns `false` to stop early.
/// Members that are not regular files (links, devices) or whose path is absolute or
/// climbs with `..` are never handed out. Errors name the byte offset where the
/// archive went wrong.
pub fn for_each_member(
    path: &Path,
    visit: &mut dyn FnMut(&Path, u64, &mut dyn Read) -> std::io::Result<bool>,
) -> std::result::Result<(), String> {
    READS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut file = File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let data = locate_data(&mut file)?;
    file.seek(SeekFrom::Start(data.offset))
        .map_err(|e| format!("cannot read: {e}"))?;
    let consumed = std::rc::Rc::new(std::cell::Cell::new(0u64));
    let raw = Counted {
        inner: file.take(data.size),
        count: consumed.clone(),
        limit: u64::MAX,
    };
    let reader: Box<dyn Read> = match data.compression {
        Compression::None => Box::new(std::io::BufReader::new(raw)),
        Compression::Xz => {
            let stream = liblzma::stream::Stream::new_stream_decoder(
                XZ_MEMLIMIT,
                liblzma::stream::CONCATENATED,
            )
            .map_err(|e| format!("cannot start the xz decoder: {e}"))?;
            Box::new(liblzma::read::XzDecoder::new_stream(raw, stream))
        }
        Compression::Zstd => {
            let mut d = zstd::stream::read::Decoder::new(raw)
                .map_err(|e| format!("cannot start the zstd decoder: {e}"))?;
            d.window_log_max(ZSTD_WINDOW_LOG_MAX)
                .map_err(|e| format!("cannot start the zstd decoder: {e}"))?;
            Box::new(d)
        }
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(raw)),
    };
    let limit = if data.compression == Compression::None {
        data.size
    } else {
        expansion_limit(data.size)
    };
    let expanded = std::rc::Rc::new(std::cell::Cell::new(0u64));
    let reader = Counted {
        inner: reader,
        count: expanded.clone(),
        limit,
    };
    let corrupt = |e: std::io::Error| {
        if expanded.get() > limit {
            format!(
                "{} expands to more than {limit} bytes from {} compressed ({MAX_RATIO} times, and at least {MIN_EXPANSION} bytes, is the most a package archive is allowed): a decompression bomb or not a package archive; stopped reading it",
                data.name, data.size
            )
        } else {
            format!(
                "corrupt {} at byte {} of the uncompressed tar (byte {} of the file): {e}",
                data.name,
                expanded.get(),
                data.offset + consumed.get()
            )
        }
    };
    let mut tar = tar::Archive::new(reader);
    for entry in tar.entries().map_err(corrupt)? {
        let mut entry = entry.map_err(corrupt)?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let Some(rel) = entry.path().ok().and_then(|p| safe_relative(&p)) else {
            continue;
        };
        let size = entry.size();
        if !visit(&rel, size, &mut entry).map_err(corrupt)? {
            return Ok(());
        }
    }
    Ok(())
}

/// The package archive of a tree's owning package, as a content provider.
pub(crate) struct DebArchive {
    root: Root,
    path: PathBuf,
    package: String,
    version: String,
    /// The tree as dpkg names it (`usr/src/amdgpu-6.8.5`).
    prefix: PathBuf,
    /// dpkg's md5 per tree-relative path: a member must match it.
    md5: BTreeMap<PathBuf, Digest>,
    problems: Mutex<Vec<String>>,
}

impl DebArchive {
    /// The cached archives of the installed version of the package owning the tree
    /// (none when dpkg does not own it or apt's cache was cleaned).
    pub(crate) fn for_tree(
        root: &Root,
        tree: &Tree,
        refs: &TreeReferences,
    ) -> Result<Vec<DebArchive>> {
        let Some(package) = refs.dpkg_package.as_deref() else {
            return Ok(Vec::new());
        };
        let Some(version) = installed_version(root, package)? else {
            return Ok(Vec::new());
        };
        Ok(find_archives(root, package, &version)?
            .into_iter()
            .map(|path| DebArchive::new(root, path, package, &version, tree, refs))
            .collect())
    }

    pub(crate) fn new(
        root: &Root,
        path: PathBuf,
        package: &str,
        version: &str,
        tree: &Tree,
        refs: &TreeReferences,
    ) -> DebArchive {
        DebArchive {
            root: root.clone(),
            path,
            package: package.to_string(),
            version: version.to_string(),
            prefix: tree.dpkg_prefix(),
            md5: refs.dpkg_md5_map(),
            problems: Mutex::new(Vec::new()),
        }
    }

    fn shown(&self) -> String {
        shown(&self.root, &self.path)
    }
}

impl ContentProvider for DebArchive {
    fn kind(&self) -> ReferenceKind {
        ReferenceKind::DebArchive
    }

    fn describe(&self) -> String {
        format!("dpkg archive {}", self.shown())
    }

    fn problems(&self) -> Vec<String> {
        self.problems
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn candidates_many(
        &self,
        rels: &[PathBuf],
        visit: &mut dyn FnMut(&Path, Candidate),
    ) -> Result<()> {
        let members = VerifiedMembers {
            archive: &self.path,
            origin: self.describe(),
            prefix: &self.prefix,
            digests: &self.md5,
            problems: &self.problems,
        };
        let refused = |member: &Path| {
            format!(
                "{}: member {} does not match dpkg's md5sums for {}; refused",
                self.shown(),
                crate::term::path(member),
                self.package
            )
        };
        let result = members.serve(
            rels,
            &mut |visit_member| for_each_member(&self.path, visit_member),
            &refused,
            visit,
        );
        result.map_err(|message| Error::Refused {
            path: PathBuf::from(self.shown()),
            message: format!(
                "{message}; the package archive was not used (fetch it again: apt-get install --download-only --reinstall {}={})",
                self.package, self.version
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_is_escaped_in_archive_names() {
        assert_eq!(file_name_version("1:6.8.5-1"), "1%3a6.8.5-1");
        assert_eq!(file_name_version("6.8.5-1"), "6.8.5-1");
    }

    #[test]
    fn installed_version_prefers_the_installed_stanza() {
        let tmp = tempfile::tempdir().unwrap();
        let root = Root::open(tmp.path()).unwrap();
        assert_eq!(installed_version(&root, "amdgpu-dkms").unwrap(), None);
        std::fs::create_dir_all(tmp.path().join("var/lib/dpkg")).unwrap();
        std::fs::write(
            tmp.path().join("var/lib/dpkg/status"),
            "Package: amdgpu-dkms\nStatus: deinstall ok config-files\nVersion: 1.0\n\n\
             Package: other\nStatus: install ok installed\nVersion: 9\n\n\
             Package: amdgpu-dkms\nStatus: install ok installed\nVersion: 1:6.8.5\n",
        )
        .unwrap();
        assert_eq!(
            installed_version(&root, "amdgpu-dkms").unwrap().as_deref(),
            Some("1:6.8.5")
        );
    }

    fn ar(members: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = AR_MAGIC.to_vec();
        for (name, data) in members {
            out.extend_from_slice(
                format!(
                    "{:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
                    name,
                    0,
                    0,
                    0,
                    100644,
                    data.len()
                )
                .as_bytes(),
            );
            out.extend_from_slice(data);
            if data.len() % 2 == 1 {
                out.push(b'\n');
            }
        }
        out
    }

    fn locate(bytes: &[u8]) -> std::result::Result<DataMember, String> {
        let mut f = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut f, bytes).unwrap();
        locate_data(&mut f)
    }

    #[test]
    fn finds_data_member_and_names_what_is_wrong() {
        let deb = ar(&[
            ("debian-binary", b"2.0\n"),
            ("control.tar.xz", b"c"),
            ("data.tar.zst", b"0123"),
        ]);
        let d = locate(&deb).unwrap();
        assert_eq!(d.compression, Compression::Zstd);
        assert_eq!(d.size, 4);
        assert_eq!(&deb[d.offset as usize..][..4], b"0123");
        assert_eq!(
            locate(&deb[..deb.len() - 1]).unwrap_err(),
            format!(
                "truncated: member 'data.tar.zst' needs 4 bytes from byte {}, the file ends at byte {}",
                d.offset,
                deb.len() - 1
            )
        );
        assert_eq!(
            locate(b"PK\x03\x04 a zip file").unwrap_err(),
            "not a Debian package (no ar signature)"
        );
        let bz = ar(&[("debian-binary", b"2.0\n"), ("data.tar.bz2", b"x")]);
        assert!(locate(&bz).unwrap_err().contains("not supported"));
        let none = ar(&[("debian-binary", b"2.0\n")]);
        assert_eq!(locate(&none).unwrap_err(), "has no data.tar member");
    }
}
