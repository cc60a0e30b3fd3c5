//! DKMS source trees: discovery under `<root>/usr/src/amdgpu-*` (or trees named with
//! `--tree`) and the parts of `dkms.conf` kfd-audit needs. dkms.conf is a shell
//! fragment that dkms sources; values may be quoted or not and may reference
//! `$kernelver` and friends, so values are kept as text, never expanded.

use crate::error::{Error, Result};
use crate::io::root::Root;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One built module of a DKMS package (`BUILT_MODULE_NAME[n]` and friends).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BuiltModule {
    pub index: u32,
    pub name: String,
    pub location: Option<String>,
    pub dest: Option<String>,
}

/// The parsed `dkms.conf`: every assignment kept as text, the common keys at hand.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DkmsConf {
    /// `KEY` or `KEY[n]` → value with quotes removed and line continuations joined.
    pub values: BTreeMap<String, String>,
    /// `(key, 1-based line)` of each assignment, for findings that point at it.
    pub lines: BTreeMap<String, usize>,
}

impl DkmsConf {
    pub fn parse(text: &str) -> DkmsConf {
        let mut conf = DkmsConf::default();
        for (line_no, logical) in logical_lines(text) {
            let trimmed = logical.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let Some((key, value)) = split_assignment(trimmed) else {
                // Shell functions, `if` blocks and the like: dkms runs them, we do not.
                continue;
            };
            conf.lines.insert(key.to_string(), line_no);
            conf.values.insert(key.to_string(), unquote(value));
        }
        conf
    }

    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }

    pub(crate) fn package_name(&self) -> Option<&str> {
        self.get("PACKAGE_NAME").filter(|s| !s.is_empty())
    }

    pub(crate) fn package_version(&self) -> Option<&str> {
        self.get("PACKAGE_VERSION").filter(|s| !s.is_empty())
    }

    pub fn autoinstall(&self) -> Option<bool> {
        self.get("AUTOINSTALL")
            .map(|v| matches!(v.to_ascii_lowercase().as_str(), "yes" | "y" | "true" | "1"))
    }

    /// Values of an indexed array such as `PATCH[n]`, ordered by index.
    pub fn indexed(&self, array: &str) -> Vec<(u32, &str)> {
        let prefix = format!("{array}[");
        let mut out: Vec<(u32, &str)> = self
            .values
            .iter()
            .filter_map(|(k, v)| {
                let idx = k.strip_prefix(&prefix)?.strip_suffix(']')?.parse().ok()?;
                Some((idx, v.as_str()))
            })
            .collect();
        out.sort_by_key(|(i, _)| *i);
        out
    }

    pub fn built_modules(&self) -> Vec<BuiltModule> {
        let mut modules: BTreeMap<u32, BuiltModule> = BTreeMap::new();
        for (i, name) in self.indexed("BUILT_MODULE_NAME") {
            modules.entry(i).or_default().name = name.to_string();
        }
        for (i, loc) in self.indexed("BUILT_MODULE_LOCATION") {
            modules.entry(i).or_default().location = Some(loc.to_string());
        }
        for (i, dest) in self.indexed("DEST_MODULE_LOCATION") {
            modules.entry(i).or_default().dest = Some(dest.to_string());
        }
        modules
            .into_iter()
            .map(|(index, mut m)| {
                m.index = index;
                m
            })
            .collect()
    }
}

/// Joins physical lines into logical ones: a trailing backslash or an open quote
/// continues the line, as the shell that sources dkms.conf would read it.
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut start = 0;
    let mut quote: Option<char> = None;
    for (i, line) in text.lines().enumerate() {
        if current.is_empty() && quote.is_none() {
            start = i + 1;
        }
        let mut escaped = false;
        for c in line.chars() {
            match (quote, c) {
                (_, '\\') if quote != Some('\'') && !escaped => {
                    escaped = true;
                    continue;
                }
                (None, '#')
                    if !escaped
                        && current.trim().is_empty()
                        && line.trim_start().starts_with('#') =>
                {
                    break
                }
                (None, '"' | '\'') if !escaped => quote = Some(c),
                (Some(q), c) if c == q && !escaped => quote = None,
                _ => {}
            }
            escaped = false;
        }
        let continued_by_backslash = line.ends_with('\\') && quote != Some('\'');
        if continued_by_backslash {
            current.push_str(&line[..line.len() - 1]);
            current.push(' ');
            continue;
        }
        current.push_str(line);
        if quote.is_some() {
            current.push('\n');
            continue;
        }
        out.push((start, std::mem::take(&mut current)));
    }
    if !current.is_empty() {
        out.push((start, current));
    }
    out
}

fn split_assignment(line: &str) -> Option<(&str, &str)> {
    let eq = line.find('=')?;
    let key = &line[..eq];
    let valid = |k: &str| {
        let base = k.split('[').next().unwrap_or("");
        !base.is_empty()
            && base.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !base.starts_with(|c: char| c.is_ascii_digit())
            && (k == base
                || (k.ends_with(']')
                    && k[base.len() + 1..k.len() - 1]
                        .chars()
                        .all(|c| c.is_ascii_digit())))
    };
    valid(key).then(|| (key, &line[eq + 1..]))
}

fn unquote(value: &str) -> String {
    let v = value.trim();
    // A trailing comment after an unquoted value is shell syntax, not part of the value.
    let v = if !v.starts_with(['"', '\'']) {
        v.split(" #").next().unwrap_or(v).trim()
    } else {
        v
    };
    for q in ['"', '\''] {
        if v.len() >= 2 && v.starts_with(q) && v.ends_with(q) {
            return v[1..v.len() - 1].to_string();
        }
    }
    v.to_string()
}

/// Largest dkms.conf read (real ones are a few kilobytes).
pub(crate) const MAX_DKMS_CONF: u64 = 1024 * 1024;

/// A DKMS source tree on disk.
#[derive(Debug, Clone)]
pub struct Tree {
    /// Where the tree is on this host (under the root).
    pub host_path: PathBuf,
    /// The tree's path as the audited system sees it, e.g. `/usr/src/amdgpu-6.8.5`.
    pub system_path: PathBuf,
    /// `None` when the tree has no readable dkms.conf (reported, not fatal).
    pub conf: Option<DkmsConf>,
    /// Why there is no usable dkms.conf, for the report.
    pub conf_problem: Option<String>,
}

impl Tree {
    pub(crate) fn load(root: &Root, host_path: PathBuf) -> Tree {
        let system_path = root
            .system_path(&host_path)
            .unwrap_or_else(|| host_path.clone());
        let conf_path = host_path.join("dkms.conf");
        // Read as a regular file only, and only so much: a FIFO, a link to /dev/zero
        // or a huge file put in its place must not hang the scan or fill the memory.
        let (conf, conf_problem) = match crate::io::read::read_limited(&conf_path, MAX_DKMS_CONF) {
            Ok(bytes) => (
                Some(DkmsConf::parse(&String::from_utf8_lossy(&bytes))),
                None,
            ),
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => (
                None,
                Some("no dkms.conf: not a DKMS source tree, or it was deleted".into()),
            ),
            Err(e) => (None, Some(format!("dkms.conf not read: {e}"))),
        };
        Tree {
            host_path,
            system_path,
            conf,
            conf_problem,
        }
    }

    /// The directory name, e.g. `amdgpu-6.8.5-2009582.24.04`.
    pub(crate) fn dir_name(&self) -> String {
        self.host_path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// Package name from dkms.conf, else from the directory name (`amdgpu-<ver>`).
    pub(crate) fn package(&self) -> String {
        if let Some(n) = self.conf.as_ref().and_then(DkmsConf::package_name) {
            return n.to_string();
        }
        let dir = self.dir_name();
        match dir.split_once('-') {
            Some((name, _)) => name.to_string(),
            None => dir,
        }
    }

    /// Version from dkms.conf, else from the directory name.
    pub(crate) fn version(&self) -> String {
        if let Some(v) = self.conf.as_ref().and_then(DkmsConf::package_version) {
            return v.to_string();
        }
        let dir = self.dir_name();
        dir.split_once('-')
            .map(|(_, v)| v.to_string())
            .unwrap_or_default()
    }

    /// The tree's path relative to the system root, as dpkg writes it in md5sums
    /// (`usr/src/amdgpu-6.8.5`).
    pub(crate) fn dpkg_prefix(&self) -> PathBuf {
        self.system_path
            .strip_prefix("/")
            .unwrap_or(&self.system_path)
            .to_path_buf()
    }
}

/// Finds every `amdgpu-*` DKMS tree under `<root>/usr/src`, sorted by name so that
/// output is deterministic. A missing `/usr/src` simply means no trees.
pub fn discover(root: &Root) -> Result<Vec<Tree>> {
    let src = root.path("/usr/src");
    let entries = match std::fs::read_dir(&src) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(&src, e)),
    };
    let mut trees = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(&src, e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !name.starts_with("amdgpu-") {
            continue;
        }
        // Never follow a symlinked tree: it is reported by its own path only if real.
        let ft = entry.file_type().map_err(|e| Error::io(entry.path(), e))?;
        if ft.is_dir() {
            trees.push(entry.path());
        }
    }
    trees.sort();
    Ok(trees.into_iter().map(|p| Tree::load(root, p)).collect())
}

/// Loads a tree named on the command line, which must be a directory.
///
/// Under `--root R` the path is a system path of the audited system: `/usr/src/X` is
/// read as `R/usr/src/X`, never the host's `/usr/src/X` (which may be clean while the
/// audited copy is not). A path already inside `R` (`R/usr/src/X`, a relative path
/// from inside it) is taken as it is, since it can only mean that tree.
pub(crate) fn from_arg(root: &Root, path: &Path) -> Result<Tree> {
    let host = if root.is_host_root() {
        std::path::absolute(path).map_err(|e| Error::io(path, e))?
    } else {
        let given = std::path::absolute(path).map_err(|e| Error::io(path, e))?;
        let under_root = root.path(path);
        if path.is_absolute() && std::fs::symlink_metadata(&under_root).is_ok() {
            under_root
        } else if given.starts_with(root.dir()) {
            given
        } else if path.is_absolute() {
            under_root
        } else {
            return Err(Error::Refused {
                path: path.to_path_buf(),
                message: format!(
                    "with --root, --tree takes a path of the audited system such as /usr/src/amdgpu-6.8.5 (read as {}/usr/src/amdgpu-6.8.5)",
                    root.dir().display()
                ),
            });
        }
    };
    let meta = std::fs::symlink_metadata(&host).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::Refused {
            path: host.clone(),
            message: "no such directory; --tree takes a DKMS source directory such as /usr/src/amdgpu-6.8.5 (without --tree, kfd-audit finds every /usr/src/amdgpu-* itself)".into(),
        },
        _ => Error::io(&host, e),
    })?;
    if !meta.is_dir() {
        return Err(Error::Refused {
            path: host,
            message: "not a directory; --tree takes a DKMS source directory such as /usr/src/amdgpu-6.8.5".into(),
        });
    }
    Ok(Tree::load(root, host))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONF: &str = r#"PACKAGE_NAME="amdgpu"
PACKAGE_VERSION=6.8.5-2009582.24.04
AUTOINSTALL='yes'
PRE_BUILD="amd/dkms/pre-build.sh $kernelver"
BUILT_MODULE_NAME[0]="amdgpu"
BUILT_MODULE_LOCATION[0]="amd/amdgpu"
DEST_MODULE_LOCATION[0]="/kernel/drivers/gpu/drm/amd/amdgpu"
BUILT_MODULE_NAME[1]=amdttm
num_cpu_cores()
{
	nproc
}
MAKE[0]="make -j$(num_cpu_cores) KERNELRELEASE=$kernelver \
	-C $kernel_source_dir"
# a comment
PATCH[0]="fix.patch"
"#;

    #[test]
    fn parses_quoted_unquoted_and_continued_values() {
        let c = DkmsConf::parse(CONF);
        assert_eq!(c.package_name(), Some("amdgpu"));
        assert_eq!(c.package_version(), Some("6.8.5-2009582.24.04"));
        assert_eq!(c.autoinstall(), Some(true));
        assert_eq!(c.get("PRE_BUILD"), Some("amd/dkms/pre-build.sh $kernelver"));
        let mods = c.built_modules();
        assert_eq!(mods.len(), 2);
        assert_eq!(mods[0].name, "amdgpu");
        assert_eq!(mods[0].location.as_deref(), Some("amd/amdgpu"));
        assert_eq!(mods[1].name, "amdttm");
        assert!(c.get("MAKE[0]").unwrap().contains("-C $kernel_source_dir"));
        assert_eq!(c.indexed("PATCH"), vec![(0, "fix.patch")]);
        assert_eq!(c.lines.get("PATCH[0]"), Some(&16));
    }

    #[test]
    fn garbage_does_not_panic() {
        for s in ["=", "\"", "A[=1", "A[1=2", "'open", "\\", "X=\"a\\\""] {
            let _ = DkmsConf::parse(s);
        }
    }
}
