//! What the dynamic loader would load under a SONAME, as `ldconfig` decides it.
//!
//! A packaged SONAME link (`libhsa-runtime64.so.1 -> libhsa-runtime64.so.1.5.0`) is
//! not fixed: every `ldconfig` run (a trigger of every package install, the
//! `apt-get install --reinstall` kfd-audit suggests included) points it at the regular
//! file of its directory whose ELF `DT_SONAME` is that name and whose file name sorts
//! last in ldconfig's version order. A `libX.so.1.5.0.backup` beside the library sorts
//! after it, so the backup becomes the live library. Checked against glibc 2.36's
//! `ldconfig -n` (Debian 12): it considers only names that start with `lib` or `ld-`
//! and hold `.so`, never a symbolic link as a target, and compares names with numbers
//! read as numbers.

use crate::io::root::Root;
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// Directories the loader reads without configuration (Debian's multiarch ones are
/// matched by shape in [`is_loader_dir`]).
const TRUSTED_DIRS: &[&str] = &["/lib", "/usr/lib", "/lib64", "/usr/lib64", "/usr/local/lib"];

/// The directories `/etc/ld.so.conf` and `/etc/ld.so.conf.d/*.conf` add (one level of
/// `include`, which is what Debian and AMD's packages use).
pub(crate) fn configured_dirs(root: &Root) -> BTreeSet<String> {
    let mut files = vec!["/etc/ld.so.conf".to_string()];
    files.extend(crate::system::list_dir(root, "/etc/ld.so.conf.d", ".conf"));
    let mut out = BTreeSet::new();
    for f in files {
        let Some(text) = crate::system::read_text(root, &f, &mut Vec::new()) else {
            continue;
        };
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or_default().trim();
            if line.starts_with('/') && !line.contains(char::is_whitespace) {
                out.insert(line.trim_end_matches('/').to_string());
            }
        }
    }
    out
}

/// Whether the loader reads `dir` (a system path): a trusted directory, a multiarch
/// one (`/usr/lib/x86_64-linux-gnu`), or one that ld.so.conf names.
pub(crate) fn is_loader_dir(dir: &str, configured: &BTreeSet<String>) -> bool {
    if TRUSTED_DIRS.contains(&dir) || configured.contains(dir) {
        return true;
    }
    match dir.rsplit_once('/') {
        Some((parent, name)) => {
            (parent == "/lib" || parent == "/usr/lib") && name.contains("-linux-gnu")
        }
        None => false,
    }
}

/// Whether ldconfig looks at a file of this name at all.
pub(crate) fn is_candidate_name(name: &str) -> bool {
    (name.starts_with("lib") || name.starts_with("ld-")) && name.contains(".so")
}

/// ldconfig's order of library file names: runs of digits compare as numbers, other
/// characters as bytes, and a name that is a prefix of another sorts first (so
/// `libX.so.1.5.0.backup` comes after `libX.so.1.5.0`).
pub(crate) fn version_order(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < a.len() {
        let Some(&cb) = b.get(j) else {
            return Ordering::Greater;
        };
        let ca = a[i];
        match (ca.is_ascii_digit(), cb.is_ascii_digit()) {
            (true, true) => {
                let (si, sj) = (i, j);
                while i < a.len() && a[i].is_ascii_digit() {
                    i += 1;
                }
                while j < b.len() && b[j].is_ascii_digit() {
                    j += 1;
                }
                let na = number(&a[si..i]);
                let nb = number(&b[sj..j]);
                if na != nb {
                    return na.cmp(&nb);
                }
            }
            (true, false) => return Ordering::Greater,
            (false, true) => return Ordering::Less,
            (false, false) if ca != cb => return ca.cmp(&cb),
            (false, false) => {
                i += 1;
                j += 1;
            }
        }
    }
    if j < b.len() {
        Ordering::Less
    } else {
        Ordering::Equal
    }
}

/// Digits as a number, saturating: names with absurd numbers still get an order.
fn number(digits: &[u8]) -> u128 {
    digits.iter().fold(0u128, |n, d| {
        n.saturating_mul(10).saturating_add(u128::from(d - b'0'))
    })
}

/// The largest part of a library read to find its SONAME: section headers and the
/// dynamic string table are small, but their offsets are the file's to claim.
const MAX_TABLE: u64 = 16 * 1024 * 1024;

/// The `DT_SONAME` of an ELF shared object, read from its section headers (the
/// `SHT_DYNAMIC` section and the string table it links to). `None` for anything else:
/// not ELF, no SONAME, truncated or lying offsets. Never follows a link.
pub(crate) fn elf_soname(path: &Path) -> Option<String> {
    let mut f = crate::io::read::open_nofollow(path).ok()?;
    if !f.metadata().ok()?.is_file() {
        return None;
    }
    let mut ident = [0u8; 64];
    f.read_exact(&mut ident).ok()?;
    if &ident[..4] != b"\x7fELF" {
        return None;
    }
    let wide = match ident[4] {
        1 => false,
        2 => true,
        _ => return None,
    };
    let little = match ident[5] {
        1 => true,
        2 => false,
        _ => return None,
    };
    let word = |b: &[u8], at: usize, n: usize| -> Option<u64> {
        let s = b.get(at..at + n)?;
        let mut v = 0u64;
        for k in 0..n {
            let byte = if little { s[n - 1 - k] } else { s[k] };
            v = (v << 8) | u64::from(byte);
        }
        Some(v)
    };
    let addr = if wide { 8 } else { 4 };
    let (shoff, shentsize, shnum) = if wide {
        (
            word(&ident, 0x28, 8)?,
            word(&ident, 0x3a, 2)?,
            word(&ident, 0x3c, 2)?,
        )
    } else {
        (
            word(&ident, 0x20, 4)?,
            word(&ident, 0x2e, 2)?,
            word(&ident, 0x30, 2)?,
        )
    };
    let min_entry = if wide { 0x40 } else { 0x28 };
    if shentsize < min_entry || shnum == 0 || shentsize * shnum > MAX_TABLE {
        return None;
    }
    let mut read_at = |off: u64, len: u64| -> Option<Vec<u8>> {
        if len > MAX_TABLE {
            return None;
        }
        f.seek(SeekFrom::Start(off)).ok()?;
        let mut buf = vec![0u8; usize::try_from(len).ok()?];
        f.read_exact(&mut buf).ok()?;
        Some(buf)
    };
    let headers = read_at(shoff, shentsize * shnum)?;
    // (type, link, offset, size) of section `i`.
    let section = |i: u64| -> Option<(u64, u64, u64, u64)> {
        let at = usize::try_from(i * shentsize).ok()?;
        let h = headers.get(at..at + usize::try_from(shentsize).ok()?)?;
        Some(if wide {
            (
                word(h, 4, 4)?,
                word(h, 0x28, 4)?,
                word(h, 0x18, 8)?,
                word(h, 0x20, 8)?,
            )
        } else {
            (
                word(h, 4, 4)?,
                word(h, 0x18, 4)?,
                word(h, 0x10, 4)?,
                word(h, 0x14, 4)?,
            )
        })
    };
    const SHT_DYNAMIC: u64 = 6;
    const DT_SONAME: u64 = 14;
    let (_, link, dyn_off, dyn_size) =
        (0..shnum).find_map(|i| section(i).filter(|s| s.0 == SHT_DYNAMIC))?;
    let dynamic = read_at(dyn_off, dyn_size)?;
    let soname_at = dynamic
        .chunks_exact(2 * addr)
        .find_map(|e| (word(e, 0, addr)? == DT_SONAME).then(|| word(e, addr, addr))?)?;
    let (_, _, str_off, str_size) = section(link)?;
    let strings = read_at(str_off, str_size)?;
    let rest = strings.get(usize::try_from(soname_at).ok()?..)?;
    let end = rest.iter().position(|&b| b == 0)?;
    String::from_utf8(rest[..end].to_vec()).ok()
}

/// For one directory (a system path), the file ldconfig makes each SONAME link point
/// at: SONAME -> file name, over the regular files ldconfig considers.
pub(crate) fn choices(root: &Root, dir: &str) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(root.path(dir)) else {
        return out;
    };
    for e in entries.filter_map(|e| e.ok()) {
        if !e.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        let Ok(name) = e.file_name().into_string() else {
            continue;
        };
        if !is_candidate_name(&name) {
            continue;
        }
        let Some(soname) = elf_soname(&e.path()) else {
            continue;
        };
        match out.get(&soname) {
            Some(best) if version_order(best, &name) != Ordering::Less => {}
            _ => {
                out.insert(soname, name);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_is_ldconfigs() {
        use Ordering::*;
        assert_eq!(version_order("libX.so.1.5.0", "libX.so.1.5.0.backup"), Less);
        assert_eq!(version_order("libX.so.1.10.0", "libX.so.1.9.0"), Greater);
        assert_eq!(version_order("libX.so.1.5.0", "libX.so.1.bak"), Greater);
        assert_eq!(version_order("libX.so.1.5.0", "libX.so.1.5.0~"), Less);
        assert_eq!(version_order("libX.so.1", "libX.so.1"), Equal);
    }

    #[test]
    fn candidates_and_dirs() {
        assert!(is_candidate_name("libhsa-runtime64.so.1.5.0.backup"));
        assert!(!is_candidate_name("patched-hsa.so"));
        let none = BTreeSet::new();
        assert!(is_loader_dir("/usr/lib/x86_64-linux-gnu", &none));
        assert!(!is_loader_dir("/opt/rocm/lib", &none));
        assert!(is_loader_dir(
            "/opt/rocm/lib",
            &BTreeSet::from(["/opt/rocm/lib".into()])
        ));
    }

    #[test]
    fn garbage_is_no_soname() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("libx.so");
        std::fs::write(&p, b"\x7fELF\x02\x01\x01\0garbage").unwrap();
        assert_eq!(elf_soname(&p), None);
        let mut h = vec![0u8; 64];
        h[..6].copy_from_slice(b"\x7fELF\x02\x01");
        h[0x28..0x30].copy_from_slice(&u64::MAX.to_le_bytes());
        h[0x3a] = 0x40;
        h[0x3c] = 1;
        std::fs::write(&p, &h).unwrap();
        assert_eq!(elf_soname(&p), None);
    }
}
