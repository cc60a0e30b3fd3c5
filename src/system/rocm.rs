//! ROCm user space: the runtime one level above the driver. The incident replaced
//! `/opt/rocm/lib/libhsa-runtime64.so.1` with a rebuilt copy (the original kept as
//! `.backup`) and ran with `HSA_OVERRIDE_GFX_VERSION=10.3.0` on a gfx1010 card.
//!
//! Files: every package whose name matches one of the patterns (`--rocm-packages`) and
//! that dpkg lists in `/var/lib/dpkg/info/<pkg>.md5sums`, or that the rpm database
//! records (`/opt/rocm*` from AMD's RPMs on RHEL, SLES and Fedora), is verified like a
//! driver tree: each listed file hashed against the digest its database recorded
//! (dpkg's md5, rpm's SHA-256; configuration files are the admin's and are left
//! alone), and backups beside the files (`.backup`, `.orig`, ... — the suffixes of
//! [`crate::content::BACKUP_SUFFIXES`]) judged by hash, never by name.
//!
//! Environment: `HSA_OVERRIDE_GFX_VERSION` and `HSA_OVERRIDE_GFX_VERSION_<node>` (the
//! per-node form libhsakmt reads first, `<node>` being the KFD topology node number)
//! in /etc/environment, /etc/environment.d, /etc/profile(.d), bash start-up files of
//! root and /home/*, systemd units and drop-ins in /etc/systemd/system, and — only when
//! auditing the running system (`--root /`) — kfd-audit's own environment. Each is
//! compared with the GPU that sysfs reports.

use crate::content::is_backup_suffix;
use crate::error::Result;
use crate::finding::{Finding, Severity};
use crate::gpu_table;
use crate::io::digest_cache::{DigestCache, Key};
use crate::io::hash::{self, Algorithm, Digest};
use crate::io::root::Root;
use crate::pkgdb::dpkg;
use crate::pkgdb::rpm::{self, RpmPackage};
use crate::progress::Counters;
use crate::reference::{Expected, LoadOptions, ReferenceKind, Skipped};
use crate::scan::backups;
use crate::scan::BackupVerdict;
use crate::system::ldconfig;
use crate::system::live::Topology;
use crate::system::{
    self, Action, PackageSummary, RocmSection, SectionStatus, SystemBackup, SystemFinding,
};
use crate::system::{Collected, Context, Details, SystemSection};
use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};
use rayon::prelude::*;
use regex::Regex;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Mutex;

/// Package-name patterns checked by default: AMD's ROCm packages (`hsa-rocr`,
/// `hsa-rocr6.2.0` for versioned installs, ...) and Debian's own ROCm libraries.
pub(crate) const DEFAULT_PATTERNS: &[&str] = &[
    "rocm-core*",
    "hsa-rocr*",
    "hsa-runtime*",
    "hsakmt-roct*",
    "hip-runtime-amd*",
    "comgr*",
    "miopen-hip*",
    "rocblas*",
    "libhsa-runtime64-*",
    "libhsakmt*",
    "libamdhip64-*",
    "libamd-comgr*",
    "librocblas*",
];

pub(crate) const ENV_VAR: &str = "HSA_OVERRIDE_GFX_VERSION";

/// Where the digests of package files are remembered between runs (see
/// [`crate::io::digest_cache`]), in kfd-audit's state directory of the audited system.
const DIGEST_CACHE: &str = "/var/lib/kfd-audit/digest-cache";

#[derive(Debug, Clone, Default)]
pub(crate) struct RocmOptions {
    pub patterns: Vec<String>,
    pub lenient: bool,
    /// The process environment to judge (empty unless auditing the running system).
    pub process_env: Vec<(String, String)>,
    /// How the package files are hashed: the size limit and the progress counters.
    pub hashing: Hashing,
}

/// How package files are hashed: on the tree scan's engine, under `--max-file-size`
/// when one is given, counted on the progress line when there is one.
#[derive(Debug, Clone, Default)]
pub(crate) struct Hashing {
    /// `--max-file-size`, when given. Without it package files have no limit (see
    /// [`NO_SIZE_LIMIT`]): the scan's default limit is for driver sources, and
    /// Debian's librocsparse0 alone is a 1.3 GB library.
    pub max_file_size: Option<u64>,
    pub counters: Option<std::sync::Arc<Counters>>,
}

impl Hashing {
    fn limit(&self) -> u64 {
        self.max_file_size.unwrap_or(NO_SIZE_LIMIT)
    }
}

/// Package-name patterns (`--rocm-packages`), matched as dpkg-query matches its
/// patterns: shell-style, `*` any run, `?` one character, `[...]` one of a set. All
/// patterns are compiled into one [`GlobSet`], so each installed package is tested once.
#[derive(Debug, Clone)]
pub(crate) struct PackagePatterns {
    set: GlobSet,
}

impl PackagePatterns {
    /// A pattern that is not a valid glob (`rocm[`) is taken literally, as a name:
    /// Debian package names never hold glob characters, so nothing is lost, and a
    /// typo in one pattern does not stop the others from being checked.
    pub(crate) fn new(patterns: &[String]) -> PackagePatterns {
        let mut builder = GlobSetBuilder::new();
        for p in patterns {
            // `escape` wraps each glob character in a class (`*` -> `[*]`) but leaves a
            // backslash alone, so backslashes are taken as plain characters here.
            let glob = Glob::new(p).or_else(|_| {
                GlobBuilder::new(&globset::escape(p))
                    .backslash_escape(false)
                    .build()
            });
            // A literal always builds; were it not to, the pattern would match nothing.
            if let Ok(glob) = glob {
                builder.add(glob);
            }
        }
        PackagePatterns {
            // Only a set that cannot be built from valid globs fails (none of ours): an
            // empty set then matches nothing, as no pattern would.
            set: builder.build().unwrap_or_else(|_| GlobSet::empty()),
        }
    }

    pub(crate) fn matches(&self, name: &str) -> bool {
        self.set.is_match(name)
    }
}

/// Whether one pattern matches a package name (see [`PackagePatterns`]).
pub fn glob_match(pattern: &str, name: &str) -> bool {
    PackagePatterns::new(&[pattern.to_string()]).matches(name)
}

/// Where an installed package's files and their digests are recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PackageDb {
    /// dpkg: `stem` names its files in /var/lib/dpkg/info (`libhsa-runtime64-1:amd64`).
    Dpkg { stem: String },
    /// The rpm database, as read for this package.
    Rpm(Box<RpmPackage>),
}

/// An installed package; `name` is the package's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Package {
    pub name: String,
    pub db: PackageDb,
}

impl Package {
    /// The package manager that installed it, as the texts name it.
    fn manager(&self) -> &'static str {
        match self.db {
            PackageDb::Dpkg { .. } => "dpkg",
            PackageDb::Rpm(_) => "rpm",
        }
    }

    /// Who recorded the package's digests, as the texts name it.
    fn records(&self) -> String {
        match self.db {
            PackageDb::Dpkg { .. } => format!("dpkg's md5sums for {} list", self.name),
            PackageDb::Rpm(_) => format!("the rpm database's entry for {} lists", self.name),
        }
    }
}

/// Installed packages matching the patterns, from dpkg and from the rpm database,
/// sorted by name. An rpm database that cannot be read is said in `notes`.
pub(crate) fn matching_packages(
    root: &Root,
    patterns: &[String],
    notes: &mut Vec<String>,
) -> Vec<Package> {
    let patterns = PackagePatterns::new(patterns);
    let mut out: Vec<Package> = system::list_dir(root, dpkg::INFO_DIR, ".md5sums")
        .into_iter()
        .filter_map(|p| {
            let file = p.rsplit('/').next()?.to_string();
            let stem = file.strip_suffix(".md5sums")?.to_string();
            let name = stem.split(':').next().unwrap_or(&stem).to_string();
            patterns.matches(&name).then_some(Package {
                name,
                db: PackageDb::Dpkg { stem },
            })
        })
        .collect();
    match rpm::load(root) {
        Ok(Some(db)) => out.extend(
            db.packages
                .into_iter()
                .filter(|p| patterns.matches(&p.name))
                .map(|p| Package {
                    name: p.name.clone(),
                    db: PackageDb::Rpm(Box::new(p)),
                }),
        ),
        Ok(None) => {}
        Err(e) => notes.push(format!("ROCm packages installed with rpm not read: {e}")),
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum FileState {
    Ok,
    Modified(Digest),
    Missing,
    Symlink(String),
    Unreadable(String),
}

/// No size limit for package files: they are judged against dpkg's md5 and streamed
/// through the hash, never held in memory, and ROCm's libraries are legitimately far
/// larger than any driver source file (rocBLAS ships hundreds of megabytes).
const NO_SIZE_LIMIT: u64 = u64::MAX;

/// Why a package file is not hashed: it is larger than `--max-file-size`.
fn too_large(size: u64, limit: u64) -> std::io::Error {
    std::io::Error::other(format!(
        "{size} bytes, more than --max-file-size ({limit} bytes); not hashed: pass a larger --max-file-size to hash it"
    ))
}

/// MD5 of files under the root, on the tree scan's multi-buffer engine
/// ([`crate::io::md5_lanes`]): many files per core at once, the largest started first,
/// each opened without following a link at its last component and read once. A file
/// larger than `limit` is not read (its size says so); `counters`, when given, count
/// the files and bytes on the progress line.
fn md5_files(
    root: &Root,
    paths: &[&str],
    limit: u64,
    counters: Option<&Counters>,
) -> Vec<std::io::Result<Digest>> {
    let all_sizes: Vec<u64> = paths
        .par_iter()
        .map(|p| std::fs::symlink_metadata(root.path(p)).map_or(0, |m| m.len()))
        .collect();
    let too_large = |size: u64| too_large(size, limit);
    let mut results: Vec<Option<std::io::Result<Digest>>> = all_sizes
        .iter()
        .map(|&n| (n > limit).then(|| Err(too_large(n))))
        .collect();
    let todo: Vec<usize> = (0..paths.len()).filter(|&i| results[i].is_none()).collect();
    let sizes: Vec<u64> = todo.iter().map(|&i| all_sizes[i]).collect();
    if let Some(c) = counters {
        c.add_total(todo.len() as u64, sizes.iter().sum());
    }
    let slots = Mutex::new(results.as_mut_slice());
    crate::io::md5_lanes::md5_files(
        &|k| root.path(paths[todo[k]]),
        &sizes,
        limit,
        counters,
        &|k, r| {
            let r = match r {
                // It grew past the limit while it was read.
                Ok((_, n)) if n > limit => Err(too_large(n)),
                r => r.map(|(d, _)| Digest::Md5(d)),
            };
            let mut all = slots.lock().unwrap_or_else(|e| e.into_inner());
            all[todo[k]] = Some(r);
        },
    );
    results
        .into_iter()
        // The engine reports every stream it is given; this only keeps the types whole.
        .map(|r| r.unwrap_or_else(|| Err(std::io::Error::other("not hashed"))))
        .collect()
}

/// Digests of files under the root in the algorithm their package's database uses:
/// MD5 (dpkg) on the multi-buffer engine of [`md5_files`], others (rpm's SHA-256) one
/// file per core, each opened without following a link at its last component and
/// never read past `limit` (its size says so).
fn digest_files(
    root: &Root,
    paths: &[&str],
    algorithm: Algorithm,
    limit: u64,
    counters: Option<&Counters>,
) -> Vec<std::io::Result<Digest>> {
    if algorithm == Algorithm::Md5 {
        return md5_files(root, paths, limit, counters);
    }
    if let Some(c) = counters {
        let bytes = paths
            .iter()
            .map(|p| std::fs::symlink_metadata(root.path(p)).map_or(0, |m| m.len()))
            .sum();
        c.add_total(paths.len() as u64, bytes);
    }
    paths
        .par_iter()
        .map(|p| {
            let file = crate::io::read::open_nofollow(&root.path(p))?;
            let size = file.metadata()?.len();
            if size > limit {
                return Err(too_large(size, limit));
            }
            let read = std::io::Read::take(file, limit.saturating_add(1));
            let (mut digests, n) = hash::digest_reader(read, &[algorithm])?;
            if let Some(c) = counters {
                c.add_bytes(n);
                c.file_done();
            }
            if n > limit {
                // It grew past the limit while it was read, as on the MD5 engine.
                return Err(too_large(n, limit));
            }
            Ok(digests.remove(0))
        })
        .collect()
}

/// What is at a package file's place without reading it: `None` when it is a file to
/// hash (anything else than a symlink is opened, and a FIFO or device is refused then).
fn state_before_reading(host: &Path) -> Option<FileState> {
    match std::fs::symlink_metadata(host) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(FileState::Missing),
        Err(e) => Some(FileState::Unreadable(e.to_string())),
        Ok(m) if m.file_type().is_symlink() => {
            let target = std::fs::read_link(host)
                .map(|t| t.display().to_string())
                .unwrap_or_default();
            Some(FileState::Symlink(target))
        }
        Ok(_) => None,
    }
}

/// A shared library or a program: what a replaced file runs as.
fn is_code(system_path: &str, host: &Path) -> bool {
    let name = system_path.rsplit('/').next().unwrap_or_default();
    name.ends_with(".so")
        || name.contains(".so.")
        || system_path.contains("/bin/")
        || system_path.contains("/sbin/")
        || std::fs::metadata(host).is_ok_and(|m| m.permissions().mode() & 0o111 != 0)
}

fn read_lines(root: &Root, system_path: &str) -> Vec<String> {
    system::read_text(root, system_path, &mut Vec::new())
        .map(|t| {
            t.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// The command that puts every file of the package back, with its package manager.
fn reinstall(root: &Root, pkg: &Package) -> (String, Action) {
    let command = match &pkg.db {
        PackageDb::Dpkg { .. } => format!("apt-get install --reinstall {}", pkg.name),
        PackageDb::Rpm(r) => rpm::reinstall_command(root, r),
    };
    (
        command.clone(),
        Action::ReinstallPackage {
            package: pkg.name.clone(),
            command,
        },
    )
}

struct PackageCheck {
    summary: PackageSummary,
    findings: Vec<SystemFinding>,
}

/// Backups next to the package's files: (backup system path, the listed name it copies).
fn find_backups(root: &Root, listed: &BTreeSet<String>) -> Vec<(String, String)> {
    let mut by_dir: BTreeMap<&str, HashSet<&str>> = BTreeMap::new();
    for p in listed {
        if let Some((dir, name)) = p.rsplit_once('/') {
            by_dir.entry(dir).or_default().insert(name);
        }
    }
    let mut out = Vec::new();
    for (dir, names) in by_dir {
        let Ok(entries) = std::fs::read_dir(root.path(if dir.is_empty() { "/" } else { dir }))
        else {
            continue;
        };
        for e in entries.filter_map(|e| e.ok()) {
            if !e.file_type().is_ok_and(|t| t.is_file()) {
                continue;
            }
            let Ok(entry) = e.file_name().into_string() else {
                continue;
            };
            if names.contains(entry.as_str()) {
                continue;
            }
            // The longest listed name that `entry` extends with a backup suffix.
            let best = entry
                .char_indices()
                .filter(|(_, c)| *c == '.' || *c == '~')
                .map(|(i, _)| i)
                .rev()
                .find(|&i| names.contains(&entry[..i]) && is_backup_suffix(&entry[i..]));
            if let Some(i) = best {
                out.push((format!("{dir}/{entry}"), format!("{dir}/{}", &entry[..i])));
            }
        }
    }
    out.sort();
    out
}

/// What the package database says a package installs: the expected digest of each
/// file (configuration files left out: they are the admin's to edit), and the other
/// paths it lists (links and directories have no digest).
struct PackageFiles {
    /// System path -> the digest its database recorded.
    expected: BTreeMap<String, Digest>,
    /// The listed paths that are not configuration files.
    list: Vec<String>,
    /// The algorithm of `expected` (dpkg: MD5; rpm: the header's, SHA-256 today).
    algorithm: Algorithm,
    /// What the database records as it is recorded there, for the report.
    reference: ReferenceKind,
}

impl PackageFiles {
    /// Every path the package installs that is not a conffile.
    fn listed(&self) -> BTreeSet<String> {
        let mut listed: BTreeSet<String> = self.expected.keys().cloned().collect();
        listed.extend(self.list.iter().cloned());
        listed
    }
}

/// Phase 1: reads what the package's database lists.
fn read_package_files(
    root: &Root,
    pkg: &Package,
    opts: &RocmOptions,
    notes: &mut Vec<String>,
) -> Result<PackageFiles> {
    match &pkg.db {
        PackageDb::Dpkg { stem } => read_dpkg_files(root, stem, opts, notes),
        PackageDb::Rpm(r) => Ok(rpm_files(r, notes)),
    }
}

/// The rpm database's files of a package: regular files with their digest, the rest
/// (links, directories) listed; `%config` files and ghosts (never shipped) left out.
fn rpm_files(pkg: &RpmPackage, notes: &mut Vec<String>) -> PackageFiles {
    let mut expected = BTreeMap::new();
    let mut list = Vec::new();
    for f in pkg.files.iter().filter(|f| !f.is_config() && !f.is_ghost()) {
        let path = format!("/{}", f.path.display());
        match &f.digest {
            Some(d) if f.is_regular() => {
                expected.insert(path.clone(), d.clone());
            }
            _ => {}
        }
        list.push(path);
    }
    if let Some(algo) = pkg.unsupported_algo {
        notes.push(format!(
            "{}: the rpm database records its file digests with algorithm {algo}, which kfd-audit \
             does not compute: its files are not verified here; rpm -V {} checks them",
            pkg.nevra(),
            pkg.name
        ));
    }
    let algorithm = expected
        .values()
        .next()
        .map_or(Algorithm::Sha256, Digest::algorithm);
    PackageFiles {
        expected,
        list,
        algorithm,
        reference: ReferenceKind::Rpmdb,
    }
}

/// dpkg's md5sums, conffiles and file list of a package.
fn read_dpkg_files(
    root: &Root,
    stem: &str,
    opts: &RocmOptions,
    notes: &mut Vec<String>,
) -> Result<PackageFiles> {
    let mut skipped: Vec<Skipped> = Vec::new();
    let sums = dpkg::load_package(
        root,
        stem,
        LoadOptions {
            lenient: opts.lenient,
        },
        &mut skipped,
    )?;
    for s in skipped {
        notes.push(format!(
            "{}:{}: skipped ({})",
            s.file.display(),
            s.line,
            s.message
        ));
    }
    let info = dpkg::INFO_DIR;
    let conffiles: HashSet<String> = read_lines(root, &format!("{info}/{stem}.conffiles"))
        .into_iter()
        .collect();
    let expected = sums
        .into_iter()
        .map(|l| (format!("/{}", l.path.display()), l.digest))
        .filter(|(p, _)| !conffiles.contains(p))
        .collect();
    let list = read_lines(root, &format!("{info}/{stem}.list"))
        .into_iter()
        .filter(|p| !conffiles.contains(p))
        .collect();
    Ok(PackageFiles {
        expected,
        list,
        algorithm: Algorithm::Md5,
        reference: ReferenceKind::DpkgMd5sums,
    })
}

/// Phase 2: each file with a digest against it, in the order of `files.expected`, for
/// every package at once: one run of the hashing engine per algorithm over all their
/// files (dpkg's MD5 on the lanes, the largest first, so that a library of a gigabyte
/// starts at once and the other packages' files are hashed beside it rather than
/// after it; rpm's SHA-256 one file per core).
fn verify_files(
    root: &Root,
    packages: &[&PackageFiles],
    hashing: &Hashing,
    cache: &mut DigestCache,
) -> Vec<Vec<(String, FileState)>> {
    let mut states: Vec<Vec<(String, Option<FileState>)>> = packages
        .iter()
        .map(|files| {
            files
                .expected
                .par_iter()
                .map(|(p, _)| (p.clone(), state_before_reading(&root.path(p))))
                .collect()
        })
        .collect();
    let to_hash: Vec<(usize, usize)> = states
        .iter()
        .enumerate()
        .flat_map(|(k, st)| {
            st.iter()
                .enumerate()
                .filter(|(_, (_, s))| s.is_none())
                .map(move |(i, _)| (k, i))
        })
        .collect();
    let algorithms: BTreeSet<Algorithm> = to_hash
        .iter()
        .map(|&(k, _)| packages[k].algorithm)
        .collect();
    for algorithm in algorithms {
        let judge = |expected: &Digest, digest: std::io::Result<Digest>| match digest {
            Ok(actual) if &actual == expected => FileState::Ok,
            Ok(actual) => FileState::Modified(actual),
            Err(e) => FileState::Unreadable(e.to_string()),
        };
        // Files unchanged since a digest was remembered are not read again.
        let mut these: Vec<(usize, usize, Option<Key>)> = Vec::new();
        for &(k, i) in to_hash
            .iter()
            .filter(|&&(k, _)| packages[k].algorithm == algorithm)
        {
            let path = states[k][i].0.clone();
            let meta = std::fs::symlink_metadata(root.path(&path)).ok();
            if let Some(d) = meta.as_ref().and_then(|m| cache.get(&path, m, algorithm)) {
                states[k][i].1 = Some(judge(&packages[k].expected[&path], Ok(d)));
                continue;
            }
            these.push((k, i, meta.as_ref().map(Key::of)));
        }
        let paths: Vec<&str> = these
            .iter()
            .map(|&(k, i, _)| states[k][i].0.as_str())
            .collect();
        let counters = hashing.counters.as_deref();
        let hashed_at = std::time::SystemTime::now();
        let digests = digest_files(root, &paths, algorithm, hashing.limit(), counters);
        for (&(k, i, before), digest) in these.iter().zip(digests) {
            let path = &states[k][i].0;
            if let (Some(before), Ok(d)) = (before, &digest) {
                if let Ok(meta) = std::fs::symlink_metadata(root.path(path)) {
                    cache.put(path, before, Key::of(&meta), hashed_at, d.clone());
                }
            }
            states[k][i].1 = Some(judge(&packages[k].expected[path], digest));
        }
    }
    states
        .into_iter()
        .map(|st| {
            st.into_iter()
                .map(|(p, s)| (p, s.expect("every file judged above")))
                .collect()
        })
        .collect()
}

/// Phase 3: backups beside the package's files, by the file they copy, each judged
/// by the tree scan's own [`crate::scan::backups::judge_backup`]: verified-clean when its
/// md5 is one dpkg recorded for a file of the package (so a copy of the library behind
/// a soname link is a clean copy of that link), same-as-current when it is the file
/// as it is now, else unverified. As in the tree, a backup larger than
/// [`crate::io::read::MAX_SOURCE_FILE`] is not read, and stays unverified.
fn judge_backups(
    root: &Root,
    files: &PackageFiles,
    limit: u64,
) -> BTreeMap<String, Vec<SystemBackup>> {
    let found = find_backups(root, &files.listed());
    let paths: Vec<&str> = found.iter().map(|(b, _)| b.as_str()).collect();
    let digests = digest_files(root, &paths, files.algorithm, limit, None);
    let by_md5: HashMap<&Digest, &str> = files
        .expected
        .iter()
        .map(|(p, d)| (d, p.as_str()))
        .collect();
    let judged: Vec<(String, SystemBackup)> = found
        .par_iter()
        .zip(digests)
        .map(|((backup, of), digest)| {
            let clean = digest
                .ok()
                .and_then(|d| Some((by_md5.get(&d)?.to_string(), d)));
            let expected = clean.as_ref().map(|(_, d)| Expected {
                digest: d.clone(),
                kind: files.reference,
            });
            // Paths under the root, as the tree scan's are under the tree.
            let relative = |p: &str| Path::new(p.trim_start_matches('/')).to_path_buf();
            let verdict = backups::judge_backup(
                root.dir(),
                &relative(backup),
                &relative(of),
                expected.as_ref(),
                &backups::no_rule_engine,
            )
            .verdict;
            let matches = clean
                .filter(|_| verdict == BackupVerdict::VerifiedClean)
                .map(|(p, _)| p);
            (
                of.clone(),
                SystemBackup {
                    path: backup.clone(),
                    verdict,
                    matches,
                },
            )
        })
        .collect();
    let mut backups_of: BTreeMap<String, Vec<SystemBackup>> = BTreeMap::new();
    for (of, b) in judged {
        backups_of.entry(of).or_default().push(b);
    }
    backups_of
}

/// The findings of one package as they are made, and its counts.
struct PackageReport<'a> {
    pkg: &'a Package,
    command: String,
    action: Action,
    summary: PackageSummary,
    findings: Vec<SystemFinding>,
    /// The size limit of the files it hashes (see [`Hashing`]).
    limit: u64,
}

impl<'a> PackageReport<'a> {
    fn new(root: &Root, pkg: &'a Package, files: usize, limit: u64) -> PackageReport<'a> {
        let (command, action) = reinstall(root, pkg);
        PackageReport {
            limit,
            pkg,
            command,
            action,
            summary: PackageSummary {
                package: pkg.name.clone(),
                files,
                ok: 0,
                modified: 0,
                missing: 0,
            },
            findings: Vec::new(),
        }
    }

    /// A finding about a file of the package, undone by reinstalling it.
    fn push(
        &mut self,
        path: &str,
        rule: (&str, Severity, &str),
        why: String,
        fix: String,
        backups: Vec<SystemBackup>,
    ) {
        let action = self.action.clone();
        self.push_with_action(path, rule, why, fix, backups, action);
    }

    /// A finding about a file of the package (or a copy beside it) with its own way
    /// out (moving a file aside, deleting a leftover) instead of the reinstall.
    fn push_with_action(
        &mut self,
        path: &str,
        (rule, severity, title): (&str, Severity, &str),
        why: String,
        fix: String,
        backups: Vec<SystemBackup>,
        action: Action,
    ) {
        self.findings.push(SystemFinding {
            finding: Finding {
                rule: rule.into(),
                severity,
                title: title.into(),
                line: 0,
                text: path.to_string(),
                why,
                fix,
            },
            source: path.to_string(),
            package: Some(self.pkg.name.clone()),
            backups,
            action,
        });
    }

    /// Phase 4: a finding for each file that is not what dpkg installed. Backups of
    /// files that are fine (or could not be read) are left in `backups_of`.
    fn report_files(
        &mut self,
        root: &Root,
        states: &[(String, FileState)],
        expected: &BTreeMap<String, Digest>,
        backups_of: &mut BTreeMap<String, Vec<SystemBackup>>,
        notes: &mut Vec<String>,
    ) {
        let name = self.pkg.name.clone();
        let records = self.pkg.records();
        let manager = self.pkg.manager();
        let command = self.command.clone();
        for (path, state) in states {
            let backups = backups_of.remove(path).unwrap_or_default();
            match state {
                FileState::Ok => {
                    self.summary.ok += 1;
                    backups_of.insert(path.clone(), backups);
                }
                FileState::Modified(actual) => {
                    self.summary.modified += 1;
                    let exp = &expected[path];
                    let code = is_code(path, &root.path(path));
                    let why = format!(
                        "{records} {path} with {algo} {exp}; the file is {actual} now: it was replaced \
                         after the package was installed. {what} A ROCm runtime rebuilt to accept a GPU it does not \
                         support, or to claim capabilities the GPU lacks, takes the same risk as a patched driver, one \
                         level up (the incident copied a rebuilt libhsa-runtime64.so.1 over /opt/rocm/lib/).",
                        algo = exp.algorithm().as_str(),
                        what = if code {
                            "It is code that every ROCm program loads or runs."
                        } else {
                            "ROCm reads it at run time."
                        },
                    );
                    let fix = format!(
                        "Reinstall the package: {command}.{}",
                        clean_backup_hint(&backups)
                    );
                    let rule = if code {
                        (
                            "ROCM-FILE-001",
                            Severity::High,
                            "ROCm library or program differs from its package",
                        )
                    } else {
                        (
                            "ROCM-FILE-001",
                            Severity::Medium,
                            "ROCm file differs from its package",
                        )
                    };
                    self.push(path, rule, why, fix, backups);
                }
                FileState::Missing => {
                    self.summary.missing += 1;
                    self.push(
                        path,
                        ("ROCM-FILE-002", Severity::Medium, "ROCm file is missing"),
                        format!(
                            "{records} {path}, and it is not there: the package is incomplete, \
                             and whatever needs the file fails or falls back to another copy."
                        ),
                        format!(
                            "Reinstall the package: {command}.{}",
                            clean_backup_hint(&backups)
                        ),
                        backups,
                    );
                }
                FileState::Symlink(target) => {
                    self.summary.modified += 1;
                    self.push(
                        path,
                        (
                            "ROCM-FILE-003",
                            Severity::High,
                            "ROCm file replaced by a symbolic link",
                        ),
                        format!(
                            "{name} installs {path} as a regular file; it is now a symbolic link to {target}, so programs \
                             load whatever that points to instead of the packaged file."
                        ),
                        format!(
                            "Remove the link and reinstall the package: {command} ({manager} puts the file back).{}",
                            clean_backup_hint(&backups)
                        ),
                        backups,
                    );
                }
                FileState::Unreadable(err) => {
                    notes.push(format!("{path} ({name}): not read: {err}"));
                    backups_of.insert(path.clone(), backups);
                }
            }
        }
    }

    /// Phase 5: a library name the package installs as a symbolic link (the soname
    /// link `libhsa-runtime64.so.1` → `libhsa-runtime64.so.1.14.0`) that is now a
    /// regular file other than that library.
    fn report_replaced_links(
        &mut self,
        root: &Root,
        files: &PackageFiles,
        backups_of: &mut BTreeMap<String, Vec<SystemBackup>>,
    ) {
        let expected = &files.expected;
        let replaced: Vec<(&str, &str)> = files
            .list
            .iter()
            .filter(|p| !expected.contains_key(*p))
            .filter_map(|p| {
                let name = p.rsplit('/').next().unwrap_or_default();
                if !(name.ends_with(".so") || name.contains(".so.")) {
                    return None;
                }
                let versioned = expected.keys().find(|k| {
                    k.starts_with(&format!("{p}."))
                        && k[p.len() + 1..].starts_with(|c: char| c.is_ascii_digit())
                })?;
                let meta = std::fs::symlink_metadata(root.path(p)).ok()?;
                meta.file_type()
                    .is_file()
                    .then_some((p.as_str(), versioned.as_str()))
            })
            .collect();
        let paths: Vec<&str> = replaced.iter().map(|(p, _)| *p).collect();
        let digests = digest_files(root, &paths, files.algorithm, self.limit, None);
        for ((p, versioned), digest) in replaced.into_iter().zip(digests) {
            if digest.ok().as_ref() == expected.get(versioned) {
                // A plain copy of the packaged library: harmless, but not what dpkg installed.
                continue;
            }
            let name = p.rsplit('/').next().unwrap_or_default();
            let backups = backups_of.remove(p).unwrap_or_default();
            self.summary.modified += 1;
            let why = format!(
                "{} installs {p} as a symbolic link to {versioned}; it is now a regular file that differs \
                 from that library, so every program that loads {name} gets this copy instead.",
                self.pkg.name
            );
            let fix = format!(
                "Reinstall the package: {} ({} restores the link).{}",
                self.command,
                self.pkg.manager(),
                clean_backup_hint(&backups)
            );
            self.push(
                p,
                (
                    "ROCM-FILE-004",
                    Severity::High,
                    "ROCm library link replaced by another library",
                ),
                why,
                fix,
                backups,
            );
        }
    }

    /// Phase 5b: every packaged symbolic link by where it points now, and every SONAME
    /// link in a loader directory by the file ldconfig would point it at (what the
    /// loader then loads is judged as the live library). Backups judged here are taken
    /// out of `backups_of`, so they are reported once.
    fn report_links(
        &mut self,
        root: &Root,
        files: &PackageFiles,
        backups_of: &mut BTreeMap<String, Vec<SystemBackup>>,
        loader: &mut Loader,
    ) {
        let expected = &files.expected;
        let by_md5: HashMap<&Digest, &str> =
            expected.iter().map(|(p, d)| (d, p.as_str())).collect();
        let name = self.pkg.name.clone();
        let manager = self.pkg.manager();
        for p in files.list.iter().filter(|p| !expected.contains_key(*p)) {
            let Ok(meta) = std::fs::symlink_metadata(root.path(p)) else {
                continue;
            };
            if !meta.file_type().is_symlink() {
                continue;
            }
            let (dir, link_name) = p.rsplit_once('/').unwrap_or(("", p));
            let raw = std::fs::read_link(root.path(p))
                .map(|t| t.display().to_string())
                .unwrap_or_default();
            let target = root
                .resolve_in_root(p)
                .ok()
                .and_then(|h| root.system_path(&h))
                .map(|t| t.display().to_string());
            let is_lib = link_name.contains(".so");
            let choice = if is_lib && loader.reads(dir) {
                loader.choice(root, dir, link_name)
            } else {
                None
            };
            let Some(target) = target else {
                self.summary.modified += 1;
                let fix = match &choice {
                    Some(c) => format!(
                        "Run ldconfig (it points {p} at {dir}/{c}), or reinstall the package: {}.",
                        self.command
                    ),
                    None => format!(
                        "Reinstall the package: {} ({manager} restores the link).",
                        self.command
                    ),
                };
                self.push(
                    p,
                    ("ROCM-LINK-002", if is_lib { Severity::High } else { Severity::Medium }, "packaged link points at nothing"),
                    format!(
                        "{name} installs {p} as a symbolic link; it now points at {raw}, which does not exist, so \
                         whatever opens {link_name} fails (for a library: ROCm does not load)."
                    ),
                    fix,
                    Vec::new(),
                );
                continue;
            };
            let mut current = None;
            if !expected.contains_key(&target) {
                current = Some(target.clone());
                let digest =
                    digest_files(root, &[target.as_str()], files.algorithm, self.limit, None)
                        .pop()
                        .and_then(|r| r.ok());
                let copy_of = digest.as_ref().and_then(|d| by_md5.get(d).copied());
                let backups = take_backup(backups_of, &target);
                let (t_dir, t_name) = target.rsplit_once('/').unwrap_or(("", &target));
                // ldconfig keeps pointing the link at a candidate of the same directory
                // that wins its order: relinking by hand would be undone by the next run.
                let kept_by_ldconfig = choice.as_deref() == Some(t_name) && t_dir == dir;
                let (mut fix, action) = if kept_by_ldconfig
                    || (loader.reads(t_dir) && ldconfig::is_candidate_name(t_name) && t_dir == dir)
                {
                    move_aside(&target, t_dir)
                } else {
                    (
                        format!(
                            "Reinstall the package: {} ({manager} points the link back; ldconfig runs after it).",
                            self.command
                        ),
                        self.action.clone(),
                    )
                };
                let (rule, severity, title, why) = match copy_of {
                    Some(orig) => (
                        "ROCM-LINK-003",
                        Severity::Medium,
                        "packaged link points at a copy outside the package",
                        format!(
                            "{name} installs {p} as a symbolic link into the package; it now points at {target}, a copy of \
                             the packaged {orig} that {manager} does not know: the library loaded is clean today, but deleting \
                             {target} breaks {link_name}, and changing it changes what every ROCm program loads."
                        ),
                    ),
                    None => (
                        "ROCM-LINK-001",
                        Severity::High,
                        "packaged link points at a library that is not the package's",
                        format!(
                            "{name} installs {p} as a symbolic link into the package; it now points at {target}, whose {} \
                             {} is no file of {name}: every program that loads {link_name} runs that file (the usual way to \
                             swap in a patched runtime is ln -sfn).",
                            files.algorithm.as_str(),
                            digest.map(|d| d.to_string()).unwrap_or_else(|| "(unreadable)".into())
                        ),
                    ),
                };
                if copy_of.is_none() {
                    fix.push_str(&clean_backup_hint(&backups));
                }
                self.summary.modified += 1;
                self.push_with_action(p, (rule, severity, title), why, fix, backups, action);
            }
            // What ldconfig would make the live library, when it is not what the link
            // points at now.
            let Some(c) = choice else { continue };
            let chosen = format!("{dir}/{c}");
            let now = current.as_deref().unwrap_or(&target);
            if chosen == now || expected.contains_key(&chosen) {
                continue;
            }
            let digest = digest_files(root, &[chosen.as_str()], files.algorithm, self.limit, None)
                .pop()
                .and_then(|r| r.ok());
            let copy_of = digest.as_ref().and_then(|d| by_md5.get(d).copied());
            let backups = take_backup(backups_of, &chosen);
            let (fix, action) = move_aside(&chosen, dir);
            let lead = format!(
                "ldconfig, which every package install runs (a reinstall included), points {p} at the \
                 file of {dir} with SONAME {link_name} whose name sorts last: {chosen}, not {now}."
            );
            let (rule, severity, title, why) = match copy_of {
                Some(orig) => (
                    "ROCM-LDCONFIG-002",
                    Severity::Medium,
                    "ldconfig would make a copy the live ROCm library",
                    format!(
                        "{lead} It is a copy of the packaged {orig} today, but once the link points at it, deleting it \
                         leaves {p} dangling (ROCm no longer loads), and changing it changes the live library."
                    ),
                ),
                None => (
                    "ROCM-LDCONFIG-001",
                    Severity::High,
                    "ldconfig would load a library that is not the package's",
                    format!(
                        "{lead} Its {} {} is no file of {name}: after the next package install every ROCm program \
                         loads it, a patched runtime included.",
                        files.algorithm.as_str(),
                        digest.map(|d| d.to_string()).unwrap_or_else(|| "(unreadable)".into())
                    ),
                ),
            };
            self.summary.modified += 1;
            self.findings.push(SystemFinding {
                finding: Finding {
                    rule: rule.into(),
                    severity,
                    title: title.into(),
                    line: 0,
                    text: chosen.clone(),
                    why,
                    fix,
                },
                source: p.clone(),
                package: Some(name.clone()),
                backups,
                action,
            });
        }
    }

    /// Phase 6: backups left beside files that are fine.
    fn report_leftover_backups(
        &mut self,
        backups_of: BTreeMap<String, Vec<SystemBackup>>,
        loader: &Loader,
    ) {
        for (of, backups) in backups_of {
            for b in backups {
                // In a directory the loader reads, a library-named backup is one ldconfig
                // run away from being the live library, and deleting it once a SONAME
                // link points at it breaks ROCm: it is moved out, never deleted.
                let (dir, name) = b.path.rsplit_once('/').unwrap_or(("", &b.path));
                let in_loader_dir = loader.reads(dir) && ldconfig::is_candidate_name(name);
                if in_loader_dir {
                    let (severity, what) = match b.verdict {
                        BackupVerdict::Unverified | BackupVerdict::Unsafe => (
                            Severity::Medium,
                            format!("its digest matches no file of {}: another build, such as a patched runtime", self.pkg.name),
                        ),
                        BackupVerdict::VerifiedClean | BackupVerdict::SameAsCurrent => (
                            Severity::Low,
                            format!("it is identical to the packaged {}", b.matches.as_deref().unwrap_or(&of)),
                        ),
                    };
                    let (fix, action) = move_aside(&b.path, dir);
                    self.push_with_action(
                        &b.path.clone(),
                        ("ROCM-BACKUP-003", severity, "a backup of a ROCm library lies in a library directory"),
                        format!(
                                "{} lies in {dir}, which the dynamic loader reads; {what}. ldconfig (run by every package \
                                 install) considers every lib*.so* file there and points a SONAME link at the one whose \
                                 name sorts last: this one does not win today, but a file added or renamed beside it can \
                                 change that, and a SONAME link that points at it dangles once it is deleted.",
                                b.path
                            ),
                        fix,
                        vec![b],
                        action,
                    );
                    continue;
                }
                let (rule, severity, title, why) = match b.verdict {
                    BackupVerdict::Unverified | BackupVerdict::Unsafe => (
                        "ROCM-BACKUP-001",
                        Severity::Low,
                        "a different build of a ROCm file lies beside it",
                        format!(
                            "{} is not the packaged {of} (its digest matches no file of {}): a copy of another build, \
                             such as a patched runtime. Nothing loads it under this name, but it is one 'cp' away \
                             from being live again.",
                            b.path, self.pkg.name
                        ),
                    ),
                    BackupVerdict::VerifiedClean | BackupVerdict::SameAsCurrent => (
                        "ROCM-BACKUP-002",
                        Severity::Info,
                        "a clean copy of a ROCm file lies beside it",
                        format!(
                            "{} is identical to the packaged {}; the file itself is intact, so the copy is only a leftover.",
                            b.path,
                            b.matches.as_deref().unwrap_or(&of)
                        ),
                    ),
                };
                self.push_with_action(
                    &b.path.clone(),
                    (rule, severity, title),
                    why,
                    format!("Delete {} once you no longer need it.", b.path),
                    vec![b],
                    Action::None,
                );
            }
        }
    }

    fn finish(mut self) -> PackageCheck {
        self.findings.sort_by(|a, b| {
            a.source
                .cmp(&b.source)
                .then(a.finding.rule.cmp(&b.finding.rule))
        });
        PackageCheck {
            summary: self.summary,
            findings: self.findings,
        }
    }
}

/// The backup at `path` taken out of `backups_of` (to be reported with a finding about it).
fn take_backup(
    backups_of: &mut BTreeMap<String, Vec<SystemBackup>>,
    path: &str,
) -> Vec<SystemBackup> {
    let mut out = Vec::new();
    for list in backups_of.values_mut() {
        if let Some(i) = list.iter().position(|b| b.path == path) {
            out.push(list.remove(i));
        }
    }
    out
}

/// The fix for a file in a loader directory: moved out, never deleted, then ldconfig.
fn move_aside(file: &str, dir: &str) -> (String, Action) {
    (
        format!(
            "Move {file} out of {dir}, to a directory the loader does not read (for example: mv {file} /root/), \
             then run ldconfig; do not just delete it (a SONAME link may point at it)."
        ),
        Action::MoveAside {
            file: file.to_string(),
            dir: dir.to_string(),
            then: vec!["ldconfig".to_string()],
        },
    )
}

/// The loader's view of the audited system: which directories it reads, and, per
/// directory read once, the file ldconfig gives each SONAME.
pub(crate) struct Loader {
    configured: BTreeSet<String>,
    choices: HashMap<String, BTreeMap<String, String>>,
}

impl Loader {
    fn new(root: &Root) -> Loader {
        Loader {
            configured: ldconfig::configured_dirs(root),
            choices: HashMap::new(),
        }
    }

    fn reads(&self, dir: &str) -> bool {
        ldconfig::is_loader_dir(dir, &self.configured)
    }

    fn choice(&mut self, root: &Root, dir: &str, soname: &str) -> Option<String> {
        self.choices
            .entry(dir.to_string())
            .or_insert_with(|| ldconfig::choices(root, dir))
            .get(soname)
            .cloned()
    }
}

/// The fix's pointer to a verified-clean backup, when there is one.
fn clean_backup_hint(backups: &[SystemBackup]) -> String {
    backups
        .iter()
        .find(|b| b.verdict == BackupVerdict::VerifiedClean)
        .map(|b| {
            format!(
                " {} is a verified-clean copy (its digest is the packaged one), but reinstalling puts back every file of the package.",
                b.path
            )
        })
        .unwrap_or_default()
}

/// Judges one package's files (verified against dpkg by [`verify_files`]) and the
/// backups beside them.
fn check_package(
    root: &Root,
    pkg: &Package,
    files: &PackageFiles,
    states: &[(String, FileState)],
    opts: &RocmOptions,
    loader: &mut Loader,
    notes: &mut Vec<String>,
) -> Result<PackageCheck> {
    let mut backups_of = judge_backups(root, files, opts.hashing.limit());
    let mut report = PackageReport::new(root, pkg, files.expected.len(), opts.hashing.limit());
    report.report_files(root, states, &files.expected, &mut backups_of, notes);
    report.report_replaced_links(root, files, &mut backups_of);
    report.report_links(root, files, &mut backups_of, loader);
    report.report_leftover_backups(backups_of, loader);
    Ok(report.finish())
}

// ---------------------------------------------------------------- environment

/// One place HSA_OVERRIDE_GFX_VERSION is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    /// `HSA_OVERRIDE_GFX_VERSION` or `HSA_OVERRIDE_GFX_VERSION_<n>`.
    pub variable: String,
    /// `<n>` of the per-node form.
    pub node: Option<u32>,
    pub value: String,
    /// System path of the file, or `None` for kfd-audit's own environment.
    pub file: Option<String>,
    pub line: usize,
    pub line_text: String,
}

/// How a file sets variables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvSyntax {
    /// `KEY=VALUE` (pam_env's /etc/environment, environment.d) and shell scripts
    /// (`export KEY=VALUE`).
    Assignment,
    /// systemd units: `Environment=KEY=VALUE "KEY2=VALUE 2"`.
    SystemdUnit,
}

fn unquote_value(v: &str) -> String {
    let v = v.trim();
    for q in ['"', '\''] {
        if let Some(rest) = v.strip_prefix(q) {
            return rest.split(q).next().unwrap_or_default().to_string();
        }
    }
    v.split(|c: char| c.is_whitespace() || c == ';')
        .next()
        .unwrap_or_default()
        .to_string()
}

fn variable_node(var: &str) -> Option<Option<u32>> {
    if var == ENV_VAR {
        return Some(None);
    }
    let n = var.strip_prefix(ENV_VAR)?.strip_prefix('_')?;
    n.parse().ok().map(Some)
}

/// Finds the overrides a file sets.
pub fn parse_env_file(file: &str, text: &str, syntax: EnvSyntax) -> Vec<Override> {
    let assign = Regex::new(
        r"^\s*(?:export\s+|declare\s+-x\s+|setenv\s+)?(HSA_OVERRIDE_GFX_VERSION(?:_\d+)?)=(.*)$",
    )
    .expect("valid expression");
    let unit =
        Regex::new(r#"(HSA_OVERRIDE_GFX_VERSION(?:_\d+)?)=([^"\s]*)"#).expect("valid expression");
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.starts_with('#') || t.starts_with(';') {
            continue;
        }
        let found: Vec<(String, String)> = match syntax {
            EnvSyntax::Assignment => assign
                .captures(line)
                .map(|c| vec![(c[1].to_string(), unquote_value(&c[2]))])
                .unwrap_or_default(),
            EnvSyntax::SystemdUnit => {
                if !t.starts_with("Environment=") {
                    continue;
                }
                unit.captures_iter(t)
                    .map(|c| (c[1].to_string(), c[2].trim_matches('\'').to_string()))
                    .collect()
            }
        };
        for (variable, value) in found {
            let Some(node) = variable_node(&variable) else {
                continue;
            };
            out.push(Override {
                variable,
                node,
                value,
                file: Some(file.to_string()),
                line: i + 1,
                line_text: t.to_string(),
            });
        }
    }
    out
}

/// The files read for overrides, with their syntax, in a fixed order.
pub(crate) fn env_files(root: &Root) -> Vec<(String, EnvSyntax)> {
    use EnvSyntax::*;
    let mut out: Vec<(String, EnvSyntax)> = vec![("/etc/environment".into(), Assignment)];
    out.extend(
        system::list_dir(root, "/etc/environment.d", ".conf")
            .into_iter()
            .map(|f| (f, Assignment)),
    );
    out.push(("/etc/profile".into(), Assignment));
    out.extend(
        system::list_dir(root, "/etc/profile.d", ".sh")
            .into_iter()
            .map(|f| (f, Assignment)),
    );
    out.push(("/etc/bash.bashrc".into(), Assignment));
    let mut homes = vec!["/root".to_string()];
    if let Ok(entries) = std::fs::read_dir(root.path("/home")) {
        let mut users: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().into_string().ok())
            .map(|u| format!("/home/{u}"))
            .collect();
        users.sort();
        homes.extend(users);
    }
    for h in homes {
        for f in [".profile", ".bash_profile", ".bashrc", ".zshrc", ".zshenv"] {
            out.push((format!("{h}/{f}"), Assignment));
        }
    }
    let units = "/etc/systemd/system";
    out.extend(
        system::list_dir(root, units, ".service")
            .into_iter()
            .map(|f| (f, SystemdUnit)),
    );
    if let Ok(entries) = std::fs::read_dir(root.path(units)) {
        let mut dropins: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.ends_with(".service.d"))
            .collect();
        dropins.sort();
        for d in dropins {
            out.extend(
                system::list_dir(root, &format!("{units}/{d}"), ".conf")
                    .into_iter()
                    .map(|f| (f, SystemdUnit)),
            );
        }
    }
    out
}

fn override_finding(
    o: &Override,
    rule: &str,
    severity: Severity,
    title: &str,
    why: String,
) -> SystemFinding {
    let (source, fix) = match &o.file {
        Some(f) => (
            f.clone(),
            format!(
                "Delete line {} of {f} ('{}'), then log in again or restart the services that read it; in a shell \
                 that still has it: unset {}.",
                o.line, o.line_text, o.variable
            ),
        ),
        None => (
            "environment of kfd-audit".to_string(),
            format!(
                "unset {} in this shell, and remove it from wherever your session sets it (a shell start-up file \
                 or service definition kfd-audit does not read).",
                o.variable
            ),
        ),
    };
    SystemFinding {
        finding: Finding {
            rule: rule.into(),
            severity,
            title: title.into(),
            line: o.line,
            text: format!("{}={}", o.variable, o.value),
            why,
            fix,
        },
        source,
        package: None,
        backups: Vec::new(),
        action: if severity == Severity::Info {
            Action::None
        } else {
            Action::UnsetVariable {
                variable: o.variable.clone(),
                file: o.file.clone(),
                line: o.file.as_ref().map(|_| o.line),
            }
        },
    }
}

const DEBUG_ONLY: &str = "HSA_OVERRIDE_GFX_VERSION only changes what the ROCm thunk (libhsakmt) reports as the GPU's ISA version, so that code objects built for another GPU are loaded; it is a developer's and debugging switch and changes nothing in the GPU.";

/// Compares one override with the GPUs it applies to. `own_nodes` are the nodes that have their own
/// `HSA_OVERRIDE_GFX_VERSION_<node>` in the same place as `o`: libhsakmt reads that
/// first, so a plain `HSA_OVERRIDE_GFX_VERSION` beside it does not apply to them.
fn compare_override_with_gpus(
    o: &Override,
    topo: &Topology,
    own_nodes: &HashSet<u32>,
) -> Vec<SystemFinding> {
    let Some(wanted) = gpu_table::parse_override(&o.value) else {
        return vec![override_finding(
            o,
            "ROCM-ENV-002",
            Severity::Medium,
            "HSA_OVERRIDE_GFX_VERSION is malformed",
            format!(
                "'{}' is not major.minor.stepping (such as 10.1.0); libhsakmt rejects it ('HSA_OVERRIDE_GFX_VERSION ... is invalid') and ROCm fails to start. {DEBUG_ONLY}",
                o.value
            ),
        )];
    };
    let gfx_wanted = gpu_table::gfx_name(wanted);
    let gpus: Vec<_> = match o.node {
        Some(n) => topo.node(n).filter(|n| n.is_gpu()).into_iter().collect(),
        None => topo.gpus().filter(|g| !own_nodes.contains(&g.id)).collect(),
    };
    if gpus.is_empty() && o.node.is_none() && topo.gpus().next().is_some() {
        return vec![override_finding(
            o,
            "ROCM-ENV-005",
            Severity::Info,
            "HSA_OVERRIDE_GFX_VERSION is overridden per node",
            format!(
                "Every GPU has its own HSA_OVERRIDE_GFX_VERSION_<node> in the same place, which libhsakmt reads \
                 first: {} has no effect here. {DEBUG_ONLY}",
                o.variable
            ),
        )];
    }
    if gpus.is_empty() {
        let (severity, why) = if topo.present && o.node.is_some() {
            (
                Severity::Low,
                format!(
                    "{} names KFD node {}, which is not a GPU in {}: it has no effect here. {DEBUG_ONLY}",
                    o.variable,
                    o.node.unwrap_or_default(),
                    crate::system::live::NODES_DIR
                ),
            )
        } else {
            (
                Severity::Medium,
                format!(
                    "It makes ROCm treat the GPU as {gfx_wanted}. kfd-audit cannot see the GPU under this root \
                     (no {}), so it cannot tell whether that is what the GPU is; unless it is, ROCm runs code \
                     built for another instruction set on it. {DEBUG_ONLY}",
                    crate::system::live::NODES_DIR
                ),
            )
        };
        return vec![override_finding(
            o,
            "ROCM-ENV-003",
            severity,
            "HSA_OVERRIDE_GFX_VERSION set; the GPU could not be compared",
            why,
        )];
    }
    let mut out = Vec::new();
    for node in gpus {
        // Judge against the hardware: the table's version when the device is known
        // (a patched driver may report another chip's), else what sysfs reports.
        let reported = node.props.get("gfx_target_version").unwrap_or(0) as u32;
        let actual = node
            .asic()
            .map(|a| a.gfx_target_version)
            .unwrap_or(reported);
        let gfx_actual = gpu_table::gfx_name(actual);
        let what = match node.asic() {
            Some(a) => format!("{} ({}, {})", gfx_actual, a.name, a.generation),
            None => gfx_actual.clone(),
        };
        let node_ref = format!(
            "node {} (PCI device {})",
            node.id,
            node.device_id_hex().unwrap_or_default()
        );
        if wanted == actual {
            out.push(override_finding(
                o,
                "ROCM-ENV-004",
                Severity::Info,
                "HSA_OVERRIDE_GFX_VERSION matches the GPU",
                format!("{node_ref} is {what}, which is what the override says: it has no effect and can go."),
            ));
            continue;
        }
        let fam_w = gpu_table::generic_family(wanted);
        let fam_a = gpu_table::generic_family(actual);
        if fam_w.is_some() && fam_w == fam_a {
            out.push(override_finding(
                o,
                "ROCM-ENV-001",
                Severity::Medium,
                "HSA_OVERRIDE_GFX_VERSION names another GPU of the same family",
                format!(
                    "It makes ROCm treat {node_ref}, a {what}, as {gfx_wanted}. Both belong to LLVM's generic target \
                     {fam}, so the instruction set is shared, but libraries tuned for {gfx_wanted} assume that chip's \
                     resources (compute units, caches, wave sizes); support for your GPU is then untested. {DEBUG_ONLY}",
                    fam = fam_w.unwrap_or_default()
                ),
            ));
            continue;
        }
        let isa = match (fam_a, fam_w) {
            (Some(a), Some(w)) => format!(
                "LLVM's AMDGPU backend puts {gfx_actual} in generic target {a} and {gfx_wanted} in {w}: different \
                 instruction sets, so code built for {gfx_wanted} can use instructions and encodings {gfx_actual} \
                 does not have"
            ),
            _ => format!(
                "LLVM's AMDGPU backend treats {gfx_actual} and {gfx_wanted} as different processors with no \
                 common generic target, so code built for {gfx_wanted} is not meant to run on {gfx_actual}"
            ),
        };
        let rdna = if actual / 100 == 1001 && wanted / 100 == 1003 {
            " (gfx1010 is RDNA 1 and gfx1030 RDNA 2; the RDNA 2 ISA adds instructions — the gfx10-3-insts and \
             dot5/dot6 feature sets — that RDNA 1 lacks, so gfx1010 is not ISA-compatible with gfx1030)"
        } else {
            ""
        };
        out.push(override_finding(
            o,
            "ROCM-ENV-001",
            Severity::Critical,
            "HSA_OVERRIDE_GFX_VERSION names another instruction set",
            format!(
                "It makes ROCm treat {node_ref}, a {what}, as {gfx_wanted}, and load code built for {gfx_wanted} on it. \
                 {isa}{rdna}. The result is wrong answers, GPU page faults or a hung machine. {DEBUG_ONLY}"
            ),
        ));
    }
    out
}

/// The `rocm` section: ROCm packages' files and `HSA_OVERRIDE_GFX_VERSION`.
pub(crate) struct RocmUserSpace;

impl SystemSection for RocmUserSpace {
    fn section(&self) -> crate::system::Section {
        crate::system::Section::Rocm
    }

    /// It compares `HSA_OVERRIDE_GFX_VERSION` with the GPUs sysfs reports.
    fn reads_topology(&self) -> bool {
        true
    }

    fn collect(&self, root: &Root, ctx: &Context) -> Result<Collected> {
        // kfd-audit's own environment is the audited system's only when it runs on it.
        let process_env: Vec<(String, String)> = if root.is_host_root() {
            std::env::vars_os()
                .filter_map(|(k, v)| {
                    Some((k.into_string().ok()?, v.to_string_lossy().into_owned()))
                })
                .collect()
        } else {
            Vec::new()
        };
        let opts = RocmOptions {
            patterns: ctx.opts.rocm_packages.clone(),
            lenient: ctx.opts.lenient,
            process_env,
            hashing: Hashing {
                max_file_size: ctx.opts.max_file_size,
                counters: ctx.opts.counters.clone(),
            },
        };
        let (findings, section) = scan(root, &opts, ctx.topology()?)?;
        Ok(Collected {
            findings,
            details: Details::Rocm(section),
        })
    }
}

/// Runs the ROCm section.
pub(crate) fn scan(
    root: &Root,
    opts: &RocmOptions,
    topo: &Topology,
) -> Result<(Vec<SystemFinding>, RocmSection)> {
    let mut notes = Vec::new();
    let mut findings = Vec::new();
    let mut packages = Vec::new();
    let matching = matching_packages(root, &opts.patterns, &mut notes);
    let mut loader = Loader::new(root);
    // Every package's lists first (with the notes each gives, kept for its turn),
    // then all their files hashed in one go, then each package judged in order.
    let mut lists = Vec::with_capacity(matching.len());
    for pkg in &matching {
        let mut own_notes = Vec::new();
        let files = read_package_files(root, pkg, opts, &mut own_notes)?;
        lists.push((files, own_notes));
    }
    let all: Vec<&PackageFiles> = lists.iter().map(|(f, _)| f).collect();
    let mut cache = DigestCache::load(&root.path(DIGEST_CACHE));
    let states = verify_files(root, &all, &opts.hashing, &mut cache);
    cache.save();
    if cache.hits() > 0 {
        notes.push(format!(
            "{} package file(s) not read again: unchanged since kfd-audit hashed them (same inode, size, mtime and \
             ctime, which every write sets; {}=off hashes every file)",
            cache.hits(),
            crate::io::digest_cache::ENV_SWITCH
        ));
    }
    for ((pkg, (files, own_notes)), states) in matching.iter().zip(&lists).zip(&states) {
        notes.extend(own_notes.iter().cloned());
        let check = check_package(root, pkg, files, states, opts, &mut loader, &mut notes)?;
        packages.push(check.summary);
        findings.extend(check.findings);
    }
    if matching.is_empty() {
        let rpmdb = rpm::locate(root)
            .map(|l| {
                format!(
                    ", the rpm database {}",
                    l.dir.join(l.format.file()).display()
                )
            })
            .unwrap_or_default();
        notes.push(format!(
            "no installed package matches {} (dpkg md5sums in {}{rpmdb})",
            opts.patterns.join(", "),
            dpkg::INFO_DIR
        ));
    }

    let mut environment_files = Vec::new();
    let mut overrides = Vec::new();
    for (file, syntax) in env_files(root) {
        if let Some(text) = system::read_text(root, &file, &mut notes) {
            overrides.extend(parse_env_file(&file, &text, syntax));
            environment_files.push(file);
        }
    }
    for (k, v) in &opts.process_env {
        if let Some(node) = variable_node(k) {
            overrides.push(Override {
                variable: k.clone(),
                node,
                value: v.clone(),
                file: None,
                line: 0,
                line_text: format!("{k}={v}"),
            });
        }
    }
    for o in &overrides {
        let own_nodes: HashSet<u32> = overrides
            .iter()
            .filter(|p| p.file == o.file)
            .filter_map(|p| p.node)
            .collect();
        findings.extend(compare_override_with_gpus(o, topo, &own_nodes));
    }
    let status = if matching.is_empty() && overrides.is_empty() {
        SectionStatus::Absent
    } else {
        SectionStatus::Checked
    };
    Ok((
        findings,
        RocmSection {
            status,
            notes,
            patterns: opts.patterns.clone(),
            packages,
            environment_files,
        },
    ))
}

/// The default patterns as owned strings.
pub(crate) fn default_patterns() -> Vec<String> {
    DEFAULT_PATTERNS.iter().map(|s| s.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("hsa-rocr*", "hsa-rocr"));
        assert!(glob_match("hsa-rocr*", "hsa-rocr6.2.0"));
        assert!(!glob_match("hsa-rocr", "hsa-rocr-dev"));
        assert!(glob_match("lib?mdhip64-*", "libamdhip64-5"));
        assert!(!glob_match("rocblas*", "librocblas0"));
        assert!(glob_match("*", ""));
        assert!(glob_match("hip-runtime-[an]*", "hip-runtime-amd"));
        // Not a valid glob: taken as a name, and the other patterns still match.
        assert!(glob_match("rocm[", "rocm["));
        assert!(glob_match("rocm\\", "rocm\\"));
        assert!(glob_match("[*\\", "[*\\"));
        let set = PackagePatterns::new(&["rocm[".into(), "rocblas*".into()]);
        assert!(set.matches("rocblas4") && !set.matches("rocm"));
    }

    #[test]
    fn env_lines() {
        let o = parse_env_file(
            "/etc/profile.d/rocm.sh",
            "# export HSA_OVERRIDE_GFX_VERSION=9.0.0\nexport HSA_OVERRIDE_GFX_VERSION=\"10.3.0\"\nHSA_OVERRIDE_GFX_VERSION_1=10.1.0 # per node\n",
            EnvSyntax::Assignment,
        );
        assert_eq!(o.len(), 2);
        assert_eq!(
            (o[0].value.as_str(), o[0].line, o[0].node),
            ("10.3.0", 2, None)
        );
        assert_eq!((o[1].value.as_str(), o[1].node), ("10.1.0", Some(1)));
        let u = parse_env_file(
            "/etc/systemd/system/ollama.service.d/override.conf",
            "[Service]\nEnvironment=\"HSA_OVERRIDE_GFX_VERSION=10.3.0\" \"OLLAMA_HOST=0.0.0.0\"\n",
            EnvSyntax::SystemdUnit,
        );
        assert_eq!(u.len(), 1);
        assert_eq!(u[0].value, "10.3.0");
    }
}
