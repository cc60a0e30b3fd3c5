//! The package archive on RPM systems: the `.rpm` of the installed version that dnf,
//! yum or zypper left in its cache (`/var/cache/dnf/<repo>/packages/`,
//! `/var/cache/yum/<arch>/<ver>/<repo>/packages/`, `/var/cache/zypp/packages/<repo>/<arch>/`,
//! `/var/cache/libdnf5/<repo>/packages/`), or one fetched with `dnf download`.
//!
//! A `.rpm` is a 96-byte lead, a signature header padded to 8 bytes, the package
//! header, then the payload: a cpio archive (the "newc" format) compressed as the
//! header's `PAYLOADCOMPRESSOR` says (gzip, xz/lzma, zstd). It is read in place,
//! streaming, one wanted member in memory at a time; nothing is extracted. A member is
//! accepted only if it matches the RPM database's digest for the file (the cached
//! file could be of another build with the same name). The headers are read with
//! [`crate::pkgdb::rpm_header`], the cpio stream here: both are small fixed formats,
//! and reading them here bounds every length before it is used.

use super::{shown, Candidate, ContentProvider, VerifiedMembers};
use crate::error::{Error, Result};
use crate::io::hash::Digest;
use crate::io::root::Root;
use crate::pkgdb::rpm::{self, RpmPackage};
use crate::pkgdb::rpm_header::{self as hdr, Header};
use crate::reference::{safe_relative, ReferenceKind, TreeReferences};
use crate::tree::Tree;
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Where the package managers keep downloaded packages.
pub(crate) const CACHE_DIRS: &[&str] = &[
    "/var/cache/dnf",
    "/var/cache/yum",
    "/var/cache/libdnf5",
    "/var/cache/zypp/packages",
];
/// How deep below a cache directory a package file may lie (yum's is 5 levels).
const CACHE_DEPTH: usize = 6;

const LEAD_MAGIC: [u8; 4] = [0xed, 0xab, 0xee, 0xdb];
const LEAD_LEN: usize = 96;
/// The most bytes a cpio member name may have (PATH_MAX).
const MAX_NAME: u64 = 4096;
const XZ_MEMLIMIT: u64 = 256 * 1024 * 1024;
const ZSTD_WINDOW_LOG_MAX: u32 = 27;

/// The cached package files of exactly this installed package, sorted.
pub(crate) fn find_cached(root: &Root, pkg: &RpmPackage) -> Vec<PathBuf> {
    let name = pkg.file_name();
    let mut out = Vec::new();
    for dir in CACHE_DIRS {
        let host = root.path(dir);
        for e in walkdir::WalkDir::new(&host)
            .max_depth(CACHE_DEPTH)
            .follow_links(false)
            .into_iter()
            .filter_map(|e| e.ok())
        {
            if e.file_type().is_file() && e.file_name() == OsStr::new(&name) {
                out.push(e.into_path());
            }
        }
    }
    out.sort();
    out
}

/// Stops a stream once more than `limit` bytes came through it (decompression bomb).
struct Limited<R> {
    inner: R,
    count: u64,
    limit: u64,
}

impl<R: Read> Read for Limited<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        if self.count > self.limit {
            return Err(std::io::Error::other(format!(
                "the payload expands to more than {} bytes: a decompression bomb or not a package; stopped reading it",
                self.limit
            )));
        }
        Ok(n)
    }
}

/// Reads the lead and both headers; returns the package header and the stream
/// positioned at the payload, with the payload's compressed size.
fn open_package(path: &Path) -> std::result::Result<(Header, File, u64), String> {
    let mut f = File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let len = f.metadata().map_err(|e| format!("cannot read: {e}"))?.len();
    let mut lead = [0u8; LEAD_LEN];
    f.read_exact(&mut lead)
        .map_err(|_| "not an RPM package: shorter than its 96-byte lead".to_string())?;
    if lead[..4] != LEAD_MAGIC {
        return Err("not an RPM package (no lead magic ed ab ee db)".into());
    }
    let (_, sig_len) = Header::read_from(&mut f).map_err(|m| format!("signature header: {m}"))?;
    // The signature header is padded to a multiple of 8 bytes.
    let pad = (8 - sig_len % 8) % 8;
    let mut skip = [0u8; 8];
    f.read_exact(&mut skip[..pad])
        .map_err(|_| "truncated after the signature header".to_string())?;
    let (header, main_len) =
        Header::read_from(&mut f).map_err(|m| format!("package header: {m}"))?;
    let used = (LEAD_LEN + sig_len + pad + main_len) as u64;
    Ok((header, f, len.saturating_sub(used)))
}

/// Streams the regular files of a `.rpm`'s payload: `visit` gets each member's
/// root-relative path, its size and a reader over its bytes, and returns `false` to
/// stop. Names that climb out are never handed out. Errors are sentences about the
/// archive.
pub(crate) fn for_each_member(
    path: &Path,
    expect: Option<&RpmPackage>,
    visit: &mut dyn FnMut(&Path, u64, &mut dyn Read) -> std::io::Result<bool>,
) -> std::result::Result<(), String> {
    let (header, file, compressed) = open_package(path)?;
    if let Some(pkg) = expect {
        let get = |tag| header.string(tag).ok().flatten().unwrap_or_default();
        let (n, v, r) = (
            get(hdr::TAG_NAME),
            get(hdr::TAG_VERSION),
            get(hdr::TAG_RELEASE),
        );
        if (n.as_str(), v.as_str(), r.as_str())
            != (
                pkg.name.as_str(),
                pkg.version.as_str(),
                pkg.release.as_str(),
            )
        {
            return Err(format!(
                "holds {n}-{v}-{r}, not the installed {}-{}-{}",
                pkg.name, pkg.version, pkg.release
            ));
        }
    }
    let format = header
        .string(hdr::TAG_PAYLOADFORMAT)?
        .unwrap_or_else(|| "cpio".into());
    if format != "cpio" {
        return Err(format!("payload format {format}: not supported (cpio is)"));
    }
    let compressor = header
        .string(hdr::TAG_PAYLOADCOMPRESSOR)?
        .unwrap_or_else(|| "gzip".into());
    let raw = std::io::BufReader::new(file);
    let stream: Box<dyn Read> = match compressor.as_str() {
        "gzip" => Box::new(flate2::read::MultiGzDecoder::new(raw)),
        "xz" | "lzma" => {
            let s = if compressor == "xz" {
                liblzma::stream::Stream::new_stream_decoder(
                    XZ_MEMLIMIT,
                    liblzma::stream::CONCATENATED,
                )
            } else {
                liblzma::stream::Stream::new_lzma_decoder(XZ_MEMLIMIT)
            }
            .map_err(|e| format!("cannot start the {compressor} decoder: {e}"))?;
            Box::new(liblzma::read::XzDecoder::new_stream(raw, s))
        }
        "zstd" => {
            let mut d = zstd::stream::read::Decoder::new(raw)
                .map_err(|e| format!("cannot start the zstd decoder: {e}"))?;
            d.window_log_max(ZSTD_WINDOW_LOG_MAX)
                .map_err(|e| format!("cannot start the zstd decoder: {e}"))?;
            Box::new(d)
        }
        other => {
            return Err(format!(
                "payload compressed with {other}: not supported (gzip, xz, lzma and zstd are)"
            ))
        }
    };
    let mut r = Limited {
        inner: stream,
        count: 0,
        limit: crate::content::archive::expansion_limit(compressed),
    };
    let corrupt = |e: std::io::Error, at: u64| {
        format!("corrupt payload at byte {at} of the cpio archive: {e}")
    };
    loop {
        let at = r.count;
        let mut h = [0u8; 110];
        r.read_exact(&mut h).map_err(|e| corrupt(e, at))?;
        match &h[..6] {
            b"070701" | b"070702" => {}
            b"07070X" => {
                return Err("payload in rpm's large-file cpio format: not supported".into())
            }
            _ => return Err(format!("corrupt payload: no cpio header at byte {at}")),
        }
        let field = |i: usize| {
            std::str::from_utf8(&h[6 + i * 8..14 + i * 8])
                .ok()
                .and_then(|s| u32::from_str_radix(s, 16).ok())
                .ok_or_else(|| format!("corrupt payload: bad cpio header field at byte {at}"))
        };
        let mode = field(1)?;
        let size = field(6)? as u64;
        let namesize = field(11)? as u64;
        if namesize == 0 || namesize > MAX_NAME {
            return Err(format!(
                "corrupt payload: member name of {namesize} bytes at byte {at}"
            ));
        }
        let mut name = vec![0u8; namesize as usize];
        r.read_exact(&mut name).map_err(|e| corrupt(e, at))?;
        let name_pad = (4 - (110 + namesize) % 4) % 4;
        std::io::copy(&mut (&mut r).take(name_pad), &mut std::io::sink())
            .map_err(|e| corrupt(e, at))?;
        let name = name.strip_suffix(&[0]).unwrap_or(&name);
        if name == b"TRAILER!!!" {
            return Ok(());
        }
        let data_pad = (4 - size % 4) % 4;
        let rel = safe_relative(Path::new(OsStr::from_bytes(name)));
        let mut member = (&mut r).take(size);
        let go_on = match rel {
            Some(rel) if mode & 0o170000 == 0o100000 => {
                visit(&rel, size, &mut member).map_err(|e| corrupt(e, at))?
            }
            _ => true,
        };
        if !go_on {
            return Ok(());
        }
        // Whatever visit left unread, and the padding, is skipped.
        std::io::copy(&mut member, &mut std::io::sink()).map_err(|e| corrupt(e, at))?;
        std::io::copy(&mut (&mut r).take(data_pad), &mut std::io::sink())
            .map_err(|e| corrupt(e, at))?;
    }
}

/// The cached `.rpm` of the tree's owning package, as a content provider.
pub(crate) struct RpmArchive {
    root: Root,
    path: PathBuf,
    package: RpmPackage,
    prefix: PathBuf,
    digests: BTreeMap<PathBuf, Digest>,
    download: String,
    problems: Mutex<Vec<String>>,
}

impl RpmArchive {
    /// The cached package files of the package the RPM database says owns the tree.
    pub(crate) fn for_tree(root: &Root, tree: &Tree, refs: &TreeReferences) -> Vec<RpmArchive> {
        let Some(pkg) = refs.rpm_package.as_ref() else {
            return Vec::new();
        };
        find_cached(root, pkg)
            .into_iter()
            .map(|path| RpmArchive {
                root: root.clone(),
                path,
                package: pkg.clone(),
                prefix: tree.dpkg_prefix(),
                digests: refs.rpm_digests.clone(),
                download: rpm::download_command(root, pkg),
                problems: Mutex::new(Vec::new()),
            })
            .collect()
    }
}

impl ContentProvider for RpmArchive {
    fn kind(&self) -> ReferenceKind {
        ReferenceKind::RpmArchive
    }

    fn describe(&self) -> String {
        format!("rpm archive {}", shown(&self.root, &self.path))
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
            digests: &self.digests,
            problems: &self.problems,
        };
        let refused = |member: &Path| {
            format!(
                "{}: member {} does not match the RPM database's digest for {}; refused",
                shown(&self.root, &self.path),
                crate::term::path(member),
                self.package.nevra()
            )
        };
        let result = members.serve(
            rels,
            &mut |visit_member| for_each_member(&self.path, Some(&self.package), visit_member),
            &refused,
            visit,
        );
        result.map_err(|message| Error::Refused {
            path: PathBuf::from(shown(&self.root, &self.path)),
            message: format!(
                "{message}; the package archive was not used (fetch it again: {})",
                self.download
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(bytes: &[u8]) -> std::result::Result<usize, String> {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut f, bytes).unwrap();
        let mut n = 0;
        for_each_member(f.path(), None, &mut |_, _, _| {
            n += 1;
            Ok(true)
        })
        .map(|_| n)
    }

    #[test]
    fn garbage_is_a_sentence_not_a_panic() {
        assert!(members(b"").unwrap_err().contains("not an RPM package"));
        assert!(members(&[0u8; 200])
            .unwrap_err()
            .contains("not an RPM package"));
        // A lead, then a header whose index claims four billion entries.
        let mut lie = LEAD_MAGIC.to_vec();
        lie.resize(LEAD_LEN, 0);
        lie.extend_from_slice(&hdr::HEADER_MAGIC);
        lie.extend_from_slice(&[0; 4]);
        lie.extend_from_slice(&u32::MAX.to_be_bytes());
        lie.extend_from_slice(&16u32.to_be_bytes());
        assert!(members(&lie).unwrap_err().contains("index entries"));
        // A plausible header size with nothing behind it.
        let n = lie.len();
        lie[n - 8..n - 4].copy_from_slice(&1000u32.to_be_bytes());
        assert!(members(&lie).unwrap_err().contains("truncated"));
    }
}
