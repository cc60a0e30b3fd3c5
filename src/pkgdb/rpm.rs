//! The RPM database under the root: which package owns a path, each file's digest,
//! mode, link target and config flag, and the installed version; the second
//! package database beside dpkg (RHEL, Rocky, Alma, Fedora, SLES).
//!
//! Where it is and how it is read:
//! - `rpmdb.sqlite` (rpm ≥ 4.16: RHEL 9, Fedora 33 and later, Debian's rpm) is read
//!   natively: the file (and its `-wal`, whose commits are not yet in the main file)
//!   is copied with a bounded no-follow read into a private directory and opened
//!   there with SQLite, so the audited root is never written to, not even a `-shm`;
//!   each row of `Packages` is a header blob parsed by [`super::rpm_header`].
//! - `Packages` (Berkeley DB: RHEL 8) and `Packages.db` (NDB: SLES 15) go through
//!   rpm itself: the host's `rpm --root`, else `chroot <root> rpm` when the audited
//!   system has one. Their on-disk formats are not read here.
//!
//! `/usr/lib/sysimage/rpm` (Fedora 36+, SLES 15.x) is looked at before `/var/lib/rpm`
//! (which is then often a link to it).

use super::rpm_header::{self as hdr, Header};
use super::safe_relative;
use crate::error::{Error, Result};
use crate::io::hash::{Algorithm, Digest};
use crate::io::root::Root;
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where rpm keeps its database, newest layout first.
pub(crate) const DB_DIRS: &[&str] = &["/usr/lib/sysimage/rpm", "/var/lib/rpm"];

/// `RPMFILE_CONFIG`: a `%config` file, which an admin may change on purpose.
pub(crate) const FILE_CONFIG: u32 = 1;
/// `RPMFILE_GHOST`: listed but not shipped (no content, no digest to check).
pub(crate) const FILE_GHOST: u32 = 1 << 6;

/// How long the rpm program may take to dump a database before it is stopped.
const RPM_TIMEOUT: Duration = Duration::from_secs(300);
/// The most output the rpm program may produce (a large system's dump is tens of MB).
const MAX_RPM_OUTPUT: u64 = crate::io::read::MAX_REFERENCE_FILE;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DbFormat {
    Sqlite,
    BerkeleyDb,
    Ndb,
}

impl DbFormat {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            DbFormat::Sqlite => "sqlite",
            DbFormat::BerkeleyDb => "bdb",
            DbFormat::Ndb => "ndb",
        }
    }

    pub(crate) fn file(self) -> &'static str {
        match self {
            DbFormat::Sqlite => "rpmdb.sqlite",
            DbFormat::BerkeleyDb => "Packages",
            DbFormat::Ndb => "Packages.db",
        }
    }
}

/// An RPM database found under the root.
#[derive(Debug, Clone)]
pub(crate) struct DbLocation {
    /// The database directory as the audited system names it (`/var/lib/rpm`).
    pub(crate) dir: PathBuf,
    /// The database file on this host.
    pub(crate) host_file: PathBuf,
    pub(crate) format: DbFormat,
}

/// The RPM database of the root, if there is one.
pub(crate) fn locate(root: &Root) -> Option<DbLocation> {
    for dir in DB_DIRS {
        // The directory may be a link (`/var/lib/rpm -> ../../usr/lib/sysimage/rpm`):
        // followed as the audited system would, never out of the root.
        let Ok(host_dir) = root.resolve_in_root(dir) else {
            continue;
        };
        for format in [DbFormat::Sqlite, DbFormat::Ndb, DbFormat::BerkeleyDb] {
            let host_file = host_dir.join(format.file());
            if std::fs::symlink_metadata(&host_file).is_ok() {
                return Some(DbLocation {
                    dir: PathBuf::from(dir),
                    host_file,
                    format,
                });
            }
        }
    }
    None
}

/// One file of an installed package, as the database records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RpmFile {
    /// Root-relative path (`usr/src/amdgpu-6.16.6/dkms.conf`).
    pub(crate) path: PathBuf,
    /// The content digest; `None` for directories, links, ghosts, and digests in an
    /// algorithm kfd-audit does not compute (see [`RpmPackage::unsupported_algo`]).
    pub(crate) digest: Option<Digest>,
    pub(crate) mode: u32,
    /// The target of a symbolic link (empty for other files).
    pub(crate) link_to: Vec<u8>,
    pub(crate) flags: u32,
}

impl RpmFile {
    pub(crate) fn is_config(&self) -> bool {
        self.flags & FILE_CONFIG != 0
    }

    pub(crate) fn is_ghost(&self) -> bool {
        self.flags & FILE_GHOST != 0
    }

    pub(crate) fn is_regular(&self) -> bool {
        self.mode & 0o170000 == 0o100000
    }

    pub(crate) fn is_symlink(&self) -> bool {
        self.mode & 0o170000 == 0o120000
    }
}

/// One installed package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RpmPackage {
    pub(crate) name: String,
    pub(crate) epoch: Option<u32>,
    pub(crate) version: String,
    pub(crate) release: String,
    pub(crate) arch: String,
    pub(crate) files: Vec<RpmFile>,
    /// The header's digest algorithm (`FILEDIGESTALGO`, PGP numbering) when it is one
    /// kfd-audit does not compute (none of MD5, SHA-1, SHA-256, SHA-384, SHA-512): its
    /// files are unverified.
    pub(crate) unsupported_algo: Option<u32>,
}

impl RpmPackage {
    /// `version-release`, with `epoch:` in front when there is one, as dnf prints it.
    pub(crate) fn evr(&self) -> String {
        match self.epoch {
            Some(e) => format!("{e}:{}-{}", self.version, self.release),
            None => format!("{}-{}", self.version, self.release),
        }
    }

    /// The name of its package file: `name-version-release.arch.rpm` (no epoch).
    pub(crate) fn file_name(&self) -> String {
        format!(
            "{}-{}-{}.{}.rpm",
            self.name, self.version, self.release, self.arch
        )
    }

    /// `name-version-release.arch`, what rpm -q prints.
    pub(crate) fn nevra(&self) -> String {
        format!(
            "{}-{}-{}.{}",
            self.name, self.version, self.release, self.arch
        )
    }
}

/// The digest algorithm of a header (`FILEDIGESTALGO`, PGP hash numbering; absent
/// means MD5, as rpm before 4.6 wrote).
fn algorithm(code: Option<u32>) -> std::result::Result<Algorithm, u32> {
    match code {
        None | Some(1) => Ok(Algorithm::Md5),
        Some(2) => Ok(Algorithm::Sha1),
        Some(8) => Ok(Algorithm::Sha256),
        Some(9) => Ok(Algorithm::Sha384),
        Some(10) => Ok(Algorithm::Sha512),
        Some(other) => Err(other),
    }
}

/// The package a header describes, with every file's attributes.
pub(crate) fn package_from_header(h: &Header) -> std::result::Result<RpmPackage, String> {
    let name = h
        .string(hdr::TAG_NAME)?
        .ok_or("header without a package name")?;
    let version = h.string(hdr::TAG_VERSION)?.unwrap_or_default();
    let release = h.string(hdr::TAG_RELEASE)?.unwrap_or_default();
    let arch = h.string(hdr::TAG_ARCH)?.unwrap_or_else(|| "noarch".into());
    let epoch = h.int32s(hdr::TAG_EPOCH)?.and_then(|v| v.first().copied());
    let algo = algorithm(
        h.int32s(hdr::TAG_FILEDIGESTALGO)?
            .and_then(|v| v.first().copied()),
    );
    let basenames = h.byte_strings(hdr::TAG_BASENAMES)?.unwrap_or_default();
    let n = basenames.len();
    let dirnames = h.byte_strings(hdr::TAG_DIRNAMES)?.unwrap_or_default();
    let dirindexes = h.int32s(hdr::TAG_DIRINDEXES)?.unwrap_or_default();
    let digests = h.byte_strings(hdr::TAG_FILEDIGESTS)?.unwrap_or_default();
    let modes = h.int16s(hdr::TAG_FILEMODES)?.unwrap_or_default();
    let flags = h.int32s(hdr::TAG_FILEFLAGS)?.unwrap_or_default();
    let links = h.byte_strings(hdr::TAG_FILELINKTOS)?.unwrap_or_default();
    // Every per-file array has one value per file name, or the header is broken.
    for (what, len) in [
        ("directory indexes", dirindexes.len()),
        ("digests", digests.len()),
        ("modes", modes.len()),
        ("flags", flags.len()),
        ("link targets", links.len()),
    ] {
        if n > 0 && len != n {
            return Err(format!("{name}: {n} file names but {len} {what}"));
        }
    }
    let mut files = Vec::with_capacity(n);
    for i in 0..n {
        let dir = dirnames.get(dirindexes[i] as usize).ok_or_else(|| {
            format!(
                "{name}: file {i} names directory {} of {}",
                dirindexes[i],
                dirnames.len()
            )
        })?;
        let mut full = dir.clone();
        full.extend_from_slice(&basenames[i]);
        // A name that climbs out or is not absolute is never a path of the system.
        let Some(path) = safe_relative(Path::new(OsStr::from_bytes(
            full.strip_prefix(b"/").unwrap_or(b""),
        ))) else {
            continue;
        };
        let digest = match (&algo, std::str::from_utf8(&digests[i])) {
            (Ok(a), Ok(text)) if !text.is_empty() => Digest::from_hex(*a, text),
            _ => None,
        };
        files.push(RpmFile {
            path,
            digest,
            mode: modes[i],
            link_to: links[i].clone(),
            flags: flags[i],
        });
    }
    Ok(RpmPackage {
        name,
        epoch,
        version,
        release,
        arch,
        files,
        unsupported_algo: algo.err(),
    })
}

/// Everything read from one RPM database.
#[derive(Debug, Clone)]
pub(crate) struct RpmDatabase {
    pub(crate) location: DbLocation,
    /// How it was read: `native` (SQLite read here) or the rpm command used.
    pub(crate) read_by: String,
    pub(crate) packages: Vec<RpmPackage>,
}

impl RpmDatabase {
    /// The package that lists files under `prefix` (root-relative), if any; the one
    /// with the most such files when several do.
    pub(crate) fn owner_of(&self, prefix: &Path) -> Option<&RpmPackage> {
        self.packages
            .iter()
            .map(|p| {
                let n = p
                    .files
                    .iter()
                    .filter(|f| f.path.starts_with(prefix) && f.path != prefix)
                    .count();
                (n, p)
            })
            .filter(|(n, _)| *n > 0)
            .max_by_key(|(n, p)| (*n, std::cmp::Reverse(p.name.clone())))
            .map(|(_, p)| p)
    }

    /// The database as a report names it: `/var/lib/rpm (sqlite, read natively)`.
    pub(crate) fn describe(&self) -> String {
        format!(
            "{} ({}, read {})",
            crate::term::path(&self.location.dir),
            self.location.format.as_str(),
            self.read_by
        )
    }
}

/// Reads the root's RPM database; `Ok(None)` when it has none. A database that
/// cannot be read is an error naming its file.
pub(crate) fn load(root: &Root) -> Result<Option<RpmDatabase>> {
    let Some(location) = locate(root) else {
        return Ok(None);
    };
    // KFD_AUDIT_RPMDB_VIA_RPM sends a SQLite database through rpm too: the path BDB
    // and NDB databases take, so that it is tested against the real rpm here (whose
    // rpm can create only SQLite databases) and can be compared on a real system.
    let (packages, read_by) = match location.format {
        DbFormat::Sqlite if std::env::var_os("KFD_AUDIT_RPMDB_VIA_RPM").is_none() => {
            (read_sqlite(&location.host_file)?, "natively".to_string())
        }
        _ => read_via_rpm(root, &location)?,
    };
    Ok(Some(RpmDatabase {
        location,
        read_by,
        packages,
    }))
}

fn refused(path: &Path, message: impl Into<String>) -> Error {
    Error::Refused {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Reads `rpmdb.sqlite` natively: a private copy is opened, every header parsed.
pub(crate) fn read_sqlite(file: &Path) -> Result<Vec<RpmPackage>> {
    let bytes = crate::io::read::read_reference(file)?
        .ok_or_else(|| refused(file, "disappeared while it was read"))?;
    let tmp = tempfile::tempdir().map_err(|e| Error::io(Path::new("/tmp"), e))?;
    let copy = tmp.path().join("rpmdb.sqlite");
    std::fs::write(&copy, &bytes).map_err(|e| Error::io(&copy, e))?;
    // The write-ahead log holds transactions not yet copied into the main file.
    let wal = PathBuf::from(format!("{}-wal", file.display()));
    if let Some(w) = crate::io::read::read_reference(&wal)? {
        let to = tmp.path().join("rpmdb.sqlite-wal");
        std::fs::write(&to, &w).map_err(|e| Error::io(&to, e))?;
    }
    let bad = |e: rusqlite::Error| {
        refused(
            file,
            format!("not a readable RPM database ({e}); rpm --rebuilddb may repair it"),
        )
    };
    let conn = rusqlite::Connection::open_with_flags(
        &copy,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(bad)?;
    // No row can be larger than the copy, itself bounded by read_reference; SQLite
    // answers a corrupt page with SQLITE_CORRUPT rather than reading out of bounds.
    let mut stmt = conn
        .prepare("SELECT hnum, blob FROM Packages ORDER BY hnum")
        .map_err(bad)?;
    let mut rows = stmt.query([]).map_err(bad)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(bad)? {
        let hnum: i64 = row.get(0).map_err(bad)?;
        let blob: Vec<u8> = row.get(1).map_err(bad)?;
        let pkg = Header::parse(&blob)
            .and_then(|h| package_from_header(&h))
            .map_err(|m| refused(file, format!("package header {hnum}: {m}")))?;
        out.push(pkg);
    }
    Ok(out)
}

/// The query that makes rpm print what [`parse_dump`] reads: a line per package, a
/// line per file, fields separated by tabs.
const QUERY_FORMAT: &str = "@@PKG\t%{NAME}\t%{EPOCH}\t%{VERSION}\t%{RELEASE}\t%{ARCH}\t%{FILEDIGESTALGO}\n[%{FILENAMES}\t%{FILEDIGESTS}\t%{FILEMODES}\t%{FILEFLAGS}\t%{FILELINKTOS}\n]";

/// Reads a database through rpm: the host's rpm with `--root`, else the audited
/// system's own rpm in a chroot (only as root, and only for another root).
fn read_via_rpm(root: &Root, loc: &DbLocation) -> Result<(Vec<RpmPackage>, String)> {
    let dbpath = loc.dir.display().to_string();
    let host_rpm = ["/usr/bin/rpm", "/bin/rpm"]
        .into_iter()
        .find(|p| Path::new(p).is_file());
    let own_rpm = ["/usr/bin/rpm", "/bin/rpm"]
        .into_iter()
        .find(|p| root.path(p).is_file());
    let mut argv: Vec<String> = match (host_rpm, own_rpm) {
        (Some(rpm), _) => vec![
            rpm.into(),
            "--root".into(),
            root.dir().display().to_string(),
        ],
        // SAFETY: geteuid has no preconditions and cannot fail.
        (None, Some(rpm)) if !root.is_host_root() && unsafe { libc::geteuid() } == 0 => vec![
            "chroot".into(),
            root.dir().display().to_string(),
            rpm.into(),
        ],
        _ => {
            return Err(refused(
                &loc.host_file,
                format!(
                    "an RPM database in {} format, which kfd-audit reads only through rpm, and no rpm is installed here \
                     (nor, as root, in the audited system for a chroot); install rpm, or run kfd-audit inside that system",
                    loc.format.as_str()
                ),
            ))
        }
    };
    argv.extend(
        ["--dbpath", &dbpath, "-qa", "--queryformat", QUERY_FORMAT]
            .iter()
            .map(|s| s.to_string()),
    );
    let shown = format!("by {}", argv[..argv.len() - 2].join(" "));
    let out = run_bounded(&argv).map_err(|m| refused(&loc.host_file, format!("{shown}: {m}")))?;
    let pkgs = parse_dump(&out).map_err(|m| refused(&loc.host_file, format!("{shown}: {m}")))?;
    Ok((pkgs, shown))
}

/// Runs a command with its output capped and a deadline, so that a damaged database
/// that sends rpm into a loop cannot hang the audit.
fn run_bounded(argv: &[String]) -> std::result::Result<Vec<u8>, String> {
    use std::io::Read;
    use std::process::{Command, Stdio};
    let mut child = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run: {e}"))?;
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let r = stdout.take(MAX_RPM_OUTPUT + 1).read_to_end(&mut v);
        r.map(|_| v)
    });
    let err_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stderr.take(64 * 1024).read_to_end(&mut v);
        v
    });
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().map_err(|e| e.to_string())? {
            break s;
        }
        if start.elapsed() > RPM_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "still running after {}s; stopped",
                RPM_TIMEOUT.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = reader
        .join()
        .map_err(|_| "output reader failed".to_string())?
        .map_err(|e| e.to_string())?;
    let err = err_reader.join().unwrap_or_default();
    if out.len() as u64 > MAX_RPM_OUTPUT {
        return Err(format!(
            "more than {MAX_RPM_OUTPUT} bytes of output; not read"
        ));
    }
    if !status.success() {
        let first = String::from_utf8_lossy(&err);
        let first = first.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        return Err(format!("failed ({status}): {first}"));
    }
    Ok(out)
}

/// Parses the output of [`QUERY_FORMAT`].
pub(crate) fn parse_dump(out: &[u8]) -> std::result::Result<Vec<RpmPackage>, String> {
    let mut pkgs: Vec<RpmPackage> = Vec::new();
    let mut algo = Ok(Algorithm::Md5);
    for (i, line) in out.split(|b| *b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&[u8]> = line.split(|b| *b == b'\t').collect();
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        if fields[0] == b"@@PKG" {
            if fields.len() != 7 {
                return Err(format!(
                    "line {}: a package line of {} fields",
                    i + 1,
                    fields.len()
                ));
            }
            algo = algorithm(
                std::str::from_utf8(fields[6])
                    .ok()
                    .and_then(|s| s.parse().ok()),
            );
            pkgs.push(RpmPackage {
                name: text(fields[1]),
                epoch: std::str::from_utf8(fields[2])
                    .ok()
                    .and_then(|s| s.parse().ok()),
                version: text(fields[3]),
                release: text(fields[4]),
                arch: text(fields[5]),
                files: Vec::new(),
                unsupported_algo: algo.err(),
            });
            continue;
        }
        let Some(pkg) = pkgs.last_mut() else {
            return Err(format!("line {}: a file before any package", i + 1));
        };
        if fields.len() != 5 {
            // A file name with a tab or a newline in it: not one of the driver's.
            continue;
        }
        let Some(path) = safe_relative(Path::new(OsStr::from_bytes(
            fields[0].strip_prefix(b"/").unwrap_or(b""),
        ))) else {
            continue;
        };
        let num = |b: &[u8]| {
            std::str::from_utf8(b)
                .ok()
                .and_then(|s| s.parse::<u32>().ok())
        };
        let digest = match (&algo, std::str::from_utf8(fields[1])) {
            (Ok(a), Ok(t)) if !t.is_empty() => Digest::from_hex(*a, t),
            _ => None,
        };
        pkg.files.push(RpmFile {
            path,
            digest,
            mode: num(fields[2]).unwrap_or(0) & 0xffff,
            link_to: fields[4].to_vec(),
            flags: num(fields[3]).unwrap_or(0),
        });
    }
    Ok(pkgs)
}

/// Which tool installs packages on this RPM system, for advice and commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Installer {
    Dnf,
    Yum,
    Zypper,
}

/// zypper on SUSE, dnf on RHEL 8+/Fedora, yum on older RHEL; dnf when none is seen.
pub(crate) fn installer(root: &Root) -> Installer {
    let has = |tool: &str| {
        ["/usr/bin", "/bin", "/usr/sbin"]
            .iter()
            .any(|d| root.path(format!("{d}/{tool}")).exists())
    };
    if has("zypper") {
        Installer::Zypper
    } else if has("dnf") || has("dnf5") {
        Installer::Dnf
    } else if has("yum") {
        Installer::Yum
    } else {
        Installer::Dnf
    }
}

/// The command that puts every file of a package back as shipped.
pub(crate) fn reinstall_command(root: &Root, pkg: &RpmPackage) -> String {
    match installer(root) {
        Installer::Zypper => format!("zypper install -f {}-{}", pkg.name, pkg.evr()),
        Installer::Dnf => format!("dnf reinstall {}", pkg.nevra()),
        Installer::Yum => format!("yum reinstall {}", pkg.nevra()),
    }
}

/// The command that fetches the package file of the installed version into the
/// cache kfd-audit reads clean content from.
pub(crate) fn download_command(root: &Root, pkg: &RpmPackage) -> String {
    match installer(root) {
        Installer::Zypper => format!("zypper download {}-{}", pkg.name, pkg.evr()),
        Installer::Dnf | Installer::Yum => format!(
            "dnf download --destdir /var/cache/dnf/kfd-audit/packages {}",
            pkg.nevra()
        ),
    }
}

/// The clean digest of each regular file of `pkg` under `prefix`, keyed by the path
/// relative to `prefix`. Ghosts (never shipped) are left out.
pub(crate) fn tree_digests(pkg: &RpmPackage, prefix: &Path) -> BTreeMap<PathBuf, Digest> {
    pkg.files
        .iter()
        .filter(|f| f.is_regular() && !f.is_ghost())
        .filter_map(|f| {
            let rel = f.path.strip_prefix(prefix).ok()?;
            let d = f.digest.clone()?;
            (!rel.as_os_str().is_empty()).then(|| (rel.to_path_buf(), d))
        })
        .collect()
}

/// The symbolic links of `pkg` under `prefix` and their recorded targets, keyed by
/// the path relative to `prefix`.
pub(crate) fn tree_links(pkg: &RpmPackage, prefix: &Path) -> BTreeMap<PathBuf, PathBuf> {
    pkg.files
        .iter()
        .filter(|f| f.is_symlink() && !f.link_to.is_empty())
        .filter_map(|f| {
            let rel = f.path.strip_prefix(prefix).ok()?;
            Some((
                rel.to_path_buf(),
                PathBuf::from(OsStr::from_bytes(&f.link_to)),
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rpm_dump_lines() {
        let out = b"@@PKG\tamdgpu-dkms\t(none)\t6.16.6\t1.el9\tnoarch\t8\n\
/usr/src/amdgpu-6.16.6/dkms.conf\t7c725f30854a46033dd94f728ac6b08caf10845993cd3ed48e40079cdb0a76a6\t33188\t0\t\n\
/usr/src/amdgpu-6.16.6/l\t\t41471\t0\tdkms.conf\n\
../escape\t\t33188\t0\t\n";
        let p = parse_dump(out).unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].epoch, None);
        assert_eq!(p[0].evr(), "6.16.6-1.el9");
        assert_eq!(p[0].files.len(), 2);
        assert!(p[0].files[0].is_regular());
        assert_eq!(
            p[0].files[0].digest.as_ref().unwrap().algorithm(),
            Algorithm::Sha256
        );
        assert!(p[0].files[1].is_symlink());
        assert!(parse_dump(b"/x\t\t0\t0\t\n").is_err());
    }
}
