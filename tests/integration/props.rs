//! Property tests: every parser of input kfd-audit does not control (a tree's
//! dkms.conf, dpkg's md5sums and status, the baseline manifest, `dkms status`
//! output, the mount table, `.deb` archives, the restore journal) never panics on
//! arbitrary or mutated input, and what it accepts is safe to use. Case counts are
//! bounded so that the whole suite stays quick.

use crate::fixture::{md5_hex, Fixture};
use kfd_audit::content::archive;
use kfd_audit::dkms;
use kfd_audit::io::hash::{Algorithm, Digest};
use kfd_audit::io::mounts;
use kfd_audit::pkgdb::dpkg;
use kfd_audit::reference::baseline;
use kfd_audit::reference::safe_relative;
use kfd_audit::restore::journal;
use kfd_audit::tree::DkmsConf;
use proptest::prelude::*;
use proptest::test_runner::Config;
use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::OnceLock;

fn config(cases: u32) -> Config {
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

/// Whether a path accepted from a reference or an archive is safe to join to a
/// directory: relative, no `..`, no NUL, not empty.
fn is_safe(p: &Path) -> bool {
    !p.as_os_str().is_empty()
        && !p.as_os_str().as_bytes().contains(&0)
        && p.components().all(|c| matches!(c, Component::Normal(_)))
}

/// Text that looks like the input (so that the parser gets past its first check),
/// mixed with arbitrary characters.
fn shellish() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            Just("PACKAGE_NAME=".to_string()),
            Just("BUILT_MODULE_NAME[".to_string()),
            Just("]=".to_string()),
            Just("\"".to_string()),
            Just("'".to_string()),
            Just("\\".to_string()),
            Just("\n".to_string()),
            Just("#".to_string()),
            Just(" ".to_string()),
            Just("$(".to_string()),
            any::<char>().prop_map(String::from),
            "[a-zA-Z0-9_]{1,8}",
        ],
        0..64,
    )
    .prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn dkms_conf_never_panics(text in prop_oneof![any::<String>(), shellish()]) {
        let conf = DkmsConf::parse(&text);
        let lines = text.lines().count().max(1);
        for (key, line) in &conf.lines {
            prop_assert!(*line >= 1 && *line <= lines, "{key} at line {line} of {lines}");
            prop_assert!(conf.values.contains_key(key));
        }
        let _ = conf.built_modules();
        let _ = conf.indexed("PATCH");
        let _ = conf.autoinstall();
    }

    #[test]
    fn md5sums_lines_accept_only_safe_paths(line in prop_oneof![
        prop::collection::vec(any::<u8>(), 0..200),
        (prop::collection::vec(any::<u8>(), 0..80), any::<bool>()).prop_map(|(p, star)| {
            let mut l = md5_hex(&p).into_bytes();
            l.extend_from_slice(if star { b" *" } else { b"  " });
            l.extend_from_slice(&p);
            l
        }),
    ]) {
        match dpkg::parse_line(&line) {
            Ok(l) => {
                prop_assert!(is_safe(&l.path), "{:?}", l.path);
                prop_assert_eq!(l.digest.algorithm(), Algorithm::Md5);
            }
            Err(message) => prop_assert!(message.len() < 400, "{}", message),
        }
    }

    #[test]
    fn manifest_lines_round_trip_and_accept_only_safe_paths(
        name in prop::collection::vec(any::<u8>(), 1..80),
        garbage in prop::collection::vec(any::<u8>(), 0..200),
    ) {
        let digest = Digest::of_bytes(Algorithm::Sha256, &name);
        let path = PathBuf::from(OsStr::from_bytes(&name));
        let line = baseline::format_line(&digest, &path);
        match (baseline::parse_line(&line[..line.len() - 1]), safe_relative(&path)) {
            (Ok((d, p)), Some(safe)) => {
                prop_assert_eq!(d, digest);
                prop_assert_eq!(p, safe);
            }
            (Err(_), None) => {}
            (got, want) => prop_assert!(false, "{:?} parsed as {:?}, safe form {:?}", path, got, want),
        }
        if let Ok((_, p)) = baseline::parse_line(&garbage) {
            prop_assert!(is_safe(&p), "{:?}", p);
        }
    }

    #[test]
    fn safe_relative_never_lets_a_path_out(bytes in prop::collection::vec(
        prop_oneof![Just(b'/'), Just(b'.'), Just(0u8), any::<u8>()], 0..40)) {
        if let Some(p) = safe_relative(Path::new(OsStr::from_bytes(&bytes))) {
            prop_assert!(is_safe(&p), "{:?}", p);
        }
    }

    #[test]
    fn dkms_status_never_panics(text in prop_oneof![
        any::<String>(),
        prop::collection::vec(prop_oneof![
            Just("amdgpu/6.8.5, 6.1.0-56-amd64, x86_64: installed".to_string()),
            Just(" (WARNING! Diff between built and installed module!)".to_string()),
            Just("amdgpu, 1.9, k, x86_64: installed-weak from 6.1".to_string()),
            Just("(".to_string()), Just(")".to_string()), Just(": ".to_string()),
            Just(", ".to_string()), Just("\n".to_string()), Just("/".to_string()),
            any::<char>().prop_map(String::from),
        ], 0..40).prop_map(|v| v.concat()),
    ]) {
        for l in dkms::parse_status(&text) {
            prop_assert!(!l.name.is_empty() && !l.version.is_empty());
            let _ = l.explanations();
        }
    }

    #[test]
    fn mount_table_never_panics(text in prop_oneof![
        any::<String>(),
        prop::collection::vec(prop_oneof![
            Just("/dev/sda1 / ext4 ro,relatime 0 0\n".to_string()),
            Just("\\040".to_string()), Just("\\".to_string()), Just("\\777".to_string()),
            Just(" ".to_string()), Just("\n".to_string()), Just("rw".to_string()),
            any::<char>().prop_map(String::from),
        ], 0..40).prop_map(|v| v.concat()),
    ], path in "(/[a-z\\\\ ]{0,6}){0,4}") {
        let table = mounts::parse_table(&text);
        let _ = mounts::mount_for(&table, Path::new(&path));
    }

    #[test]
    fn sizes_and_digests_never_panic(text in any::<String>()) {
        let _ = kfd_audit::scan::parse_size(&text);
        let _ = Digest::from_hex(Algorithm::Md5, &text);
        let _ = Digest::from_hex(Algorithm::Sha256, &text);
        let escaped = kfd_audit::term::escape(&text);
        prop_assert!(!escaped.chars().any(|c| c.is_control()), "{:?}", escaped);
    }

    #[test]
    fn terminal_paths_never_carry_control_characters(bytes in prop::collection::vec(any::<u8>(), 0..60)) {
        let shown = kfd_audit::term::path(Path::new(OsStr::from_bytes(&bytes)));
        prop_assert!(!shown.chars().any(|c| c.is_control()), "{:?}", shown);
    }
}

/// Real packages built with `dpkg-deb --build`, one per compression.
fn real_debs() -> &'static [(String, Vec<u8>)] {
    static DEBS: OnceLock<Vec<(String, Vec<u8>)>> = OnceLock::new();
    DEBS.get_or_init(|| {
        let fx = Fixture::new();
        let files: Vec<(String, Vec<u8>)> = vec![
            (
                "usr/src/amdgpu-1.0/amd/amdkfd/kfd_crat.c".into(),
                crate::fixture::CRAT_C.as_bytes().to_vec(),
            ),
            (
                "usr/src/amdgpu-1.0/dkms.conf".into(),
                b"PACKAGE_NAME=amdgpu\n".to_vec(),
            ),
            (
                "usr/src/amdgpu-1.0/Makefile".into(),
                b"obj-m += amd/\n".to_vec(),
            ),
        ];
        ["xz", "zstd", "gzip", "none"]
            .iter()
            .map(|c| {
                let out = fx.root().join(format!("p-{c}.deb"));
                fx.build_deb("amdgpu-dkms", "1.0", c, &files, &out);
                (c.to_string(), std::fs::read(&out).unwrap())
            })
            .collect()
    })
}

/// Members read from an archive: path and (the first MiB of) their bytes.
type Members = Vec<(PathBuf, Vec<u8>)>;

/// Reads every member of a `.deb` the way the content provider does.
fn read_all(bytes: &[u8]) -> (Members, Result<(), String>) {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    std::io::Write::write_all(&mut f, bytes).unwrap();
    let mut members = Vec::new();
    let result = archive::for_each_member(f.path(), &mut |path, _size, r| {
        let mut v = Vec::new();
        r.take(1 << 20).read_to_end(&mut v)?;
        members.push((path.to_path_buf(), v));
        Ok(true)
    });
    (members, result)
}

/// An error about an archive says where: a byte offset, or what is missing.
fn names_where(message: &str) -> bool {
    message.contains("byte")
        || message.contains("no ar signature")
        || message.contains("too short for an ar archive")
        || message.contains("has no data.tar member")
        || message.contains("not supported")
}

#[test]
fn real_archives_read_back_their_members() {
    for (c, deb) in real_debs() {
        let (members, result) = read_all(deb);
        assert_eq!(result, Ok(()), "{c}");
        let names: Vec<String> = members
            .iter()
            .map(|(p, _)| p.display().to_string())
            .collect();
        assert_eq!(
            names,
            [
                "usr/src/amdgpu-1.0/Makefile",
                "usr/src/amdgpu-1.0/amd/amdkfd/kfd_crat.c",
                "usr/src/amdgpu-1.0/dkms.conf"
            ],
            "{c}"
        );
    }
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn truncated_archives_are_errors_that_say_where(which in 0usize..4, cut in any::<prop::sample::Index>()) {
        let (c, deb) = &real_debs()[which];
        let len = cut.index(deb.len());
        let (members, result) = read_all(&deb[..len]);
        for (p, _) in &members {
            prop_assert!(is_safe(p), "{}: {:?}", c, p);
        }
        if let Err(message) = result {
            prop_assert!(names_where(&message), "{}: cut at {}: {}", c, len, message);
        }
    }

    #[test]
    fn mutated_archives_never_panic_and_hand_out_only_safe_members(
        which in 0usize..4,
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        let (c, deb) = &real_debs()[which];
        let mut bytes = deb.clone();
        for (at, v) in &flips {
            let i = at.index(bytes.len());
            bytes[i] = *v;
        }
        let (members, result) = read_all(&bytes);
        for (p, _) in &members {
            prop_assert!(is_safe(p), "{}: {:?}", c, p);
        }
        if let Err(message) = result {
            prop_assert!(names_where(&message), "{}: {}", c, message);
        }
    }

    #[test]
    fn arbitrary_bytes_are_not_an_archive(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let (members, result) = read_all(&bytes);
        prop_assert!(members.is_empty());
        let message = result.unwrap_err();
        prop_assert!(names_where(&message), "{}", message);
    }

    #[test]
    fn journal_lines_never_panic_and_errors_name_file_and_line(
        lines in prop::collection::vec(prop_oneof![
            Just(r#"{"event":"begin","id":"x","kind":"restore","time":"t","pid":1,"tool_version":"0"}"#.to_string()),
            Just(r#"{"event":"intent","seq":0,"path":[47,255],"tree":"/t","rel":"a","old_sha256":null,"new_sha256":"00","source":"backup","origin":"o","quarantine":[1,2],"mode":420,"uid":0,"gid":0}"#.to_string()),
            Just(r#"{"event":"done","seq":0}"#.to_string()),
            Just(r#"{"event":"end","restored":1,"not_restored":0}"#.to_string()),
            any::<String>(),
            "[{}\\[\\]\":,a-z0-9]{0,30}",
        ], 0..6),
        torn in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.jsonl");
        let mut text = lines.join("\n");
        if !torn {
            text.push('\n');
        }
        std::fs::write(&path, &text).unwrap();
        match journal::read_run(&path) {
            Ok(run) => prop_assert_eq!(run.file, path.clone()),
            Err(e) => {
                let m = e.to_string();
                prop_assert!(m.starts_with(&format!("{}:", path.display())), "{}", m);
            }
        }
    }

    #[test]
    fn dpkg_status_never_panics(text in prop_oneof![
        any::<String>(),
        prop::collection::vec(prop_oneof![
            Just("Package: amdgpu-dkms\n".to_string()),
            Just("Status: install ok installed\n".to_string()),
            Just("Version:".to_string()), Just("\n\n".to_string()), Just(":".to_string()),
            any::<char>().prop_map(String::from),
        ], 0..30).prop_map(|v| v.concat()),
    ]) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("var/lib/dpkg")).unwrap();
        std::fs::write(dir.path().join("var/lib/dpkg/status"), &text).unwrap();
        let root = kfd_audit::io::root::Root::open(dir.path()).unwrap();
        let _ = archive::installed_version(&root, "amdgpu-dkms");
    }
}

/// Text made of a few distinct lines, so that diffs between two of them have hunks.
fn lines_text() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            Just("a"),
            Just("b"),
            Just("flags |= 1;"),
            Just(""),
            Just("\t}"),
            Just("@@ x"),
            Just("--- y")
        ],
        0..40,
    )
    .prop_map(|v| v.iter().map(|l| format!("{l}\n")).collect())
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn unified_diffs_never_panic(text in prop_oneof![
        any::<String>(),
        prop::collection::vec(prop_oneof![
            Just("--- a/x.c\n".to_string()), Just("+++ b/x.c\n".to_string()),
            Just("@@ -1,2 +1,3 @@\n".to_string()), Just("@@ -99999999999999999999 +1 @@\n".to_string()),
            Just("+added\n".to_string()), Just("-removed\n".to_string()), Just(" ctx\n".to_string()),
            Just("\\ No newline at end of file\n".to_string()), Just("\n".to_string()),
            any::<char>().prop_map(String::from),
        ], 0..40).prop_map(|v| v.concat()),
    ], original in any::<String>()) {
        let lines = text.lines().count();
        for fp in kfd_audit::dkms::patch::parse(&text) {
            for h in &fp.hunks {
                prop_assert!(h.header_line >= 1 && h.header_line <= lines);
            }
            let _ = fp.added_lines();
            let _ = kfd_audit::dkms::patch::apply(&original, &fp);
        }
        let _ = kfd_audit::dkms::recipe::here_documents(&text);
    }

    #[test]
    fn a_unified_diff_applies_back_to_what_it_was_made_from(a in lines_text(), b in lines_text()) {
        let diff = similar::TextDiff::from_lines(&a, &b)
            .unified_diff()
            .header("a/f.c", "b/f.c")
            .to_string();
        let patches = kfd_audit::dkms::patch::parse(&diff);
        if a == b {
            prop_assert!(patches.is_empty());
        } else {
            prop_assert_eq!(patches.len(), 1, "{}", diff);
            prop_assert_eq!(&patches[0].path, "f.c");
            let got = kfd_audit::dkms::patch::apply(&a, &patches[0]).unwrap();
            prop_assert_eq!(got.lines().collect::<Vec<_>>(), b.lines().collect::<Vec<_>>(), "{}", diff);
        }
    }
}

/// The built-in rule files, as text to mutate.
const RULE_FILES: &[&str] = &[
    include_str!("../../patterns/memory.toml"),
    include_str!("../../patterns/gfx-target.toml"),
    include_str!("../../patterns/safety-checks.toml"),
    include_str!("../../patterns/markers.toml"),
];

proptest! {
    #![proptest_config(config(128))]

    #[test]
    fn mutated_rule_files_are_errors_with_file_and_line_or_rules_that_run(
        which in 0usize..4,
        cuts in prop::collection::vec((any::<prop::sample::Index>(), 0usize..64, "[\\[\\]\"'= a-z_0-9\\n{}()|\\\\*]{0,8}"), 1..4),
    ) {
        let mut text = RULE_FILES[which].to_string();
        for (at, len, insert) in &cuts {
            let mut i = at.index(text.len() + 1);
            while !text.is_char_boundary(i) {
                i -= 1;
            }
            let mut e = (i + len).min(text.len());
            while !text.is_char_boundary(e) {
                e -= 1;
            }
            text.replace_range(i..e, insert);
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rules.toml");
        std::fs::write(&path, &text).unwrap();
        match kfd_audit::rules::RuleSet::parse_file(&path) {
            Ok(rules) => {
                let mut set = kfd_audit::rules::RuleSet::default();
                if set.add(rules).is_ok() {
                    let crat = crate::fixture::CRAT_C.as_bytes();
                    let patched = format!("{}\nflags |= HSA_MEM_FLAGS_HOT_PLUGGABLE;\n", crate::fixture::CRAT_C);
                    let rel = Path::new("amd/amdkfd/kfd_crat.c");
                    let _ = set.check(rel, patched.as_bytes(), Some(crat));
                    let _ = set.check(rel, patched.as_bytes(), None);
                }
            }
            Err(e) => {
                let m = e.to_string();
                let prefix = format!("{}:", path.display());
                prop_assert!(m.starts_with(&prefix), "{}", m);
                let line: Option<usize> = m[prefix.len()..].split(':').next().and_then(|n| n.parse().ok());
                prop_assert!(line.is_some_and(|l| l >= 1 && l <= text.lines().count().max(1)), "{}", m);
            }
        }
    }
}

/// Text built from the pieces of module options, kernel command lines, env files and
/// sysfs properties, mixed with arbitrary characters.
fn config_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        prop::collection::vec(
            prop_oneof![
                Just("options amdgpu noretry=0 mtype_local=1\n".to_string()),
                Just("install amdgpu /bin/false\n".to_string()),
                Just(
                    "GRUB_CMDLINE_LINUX_DEFAULT=\"quiet amdgpu.ppfeaturemask=0xffffffff\"\n"
                        .to_string()
                ),
                Just("export HSA_OVERRIDE_GFX_VERSION=10.3.0\n".to_string()),
                Just("Environment=\"HSA_OVERRIDE_GFX_VERSION=11.0.0\" X=1\n".to_string()),
                Just("gfx_target_version 100100\n".to_string()),
                Just("flags 18446744073709551615\n".to_string()),
                Just("\\\n".to_string()),
                Just("\"".to_string()),
                Just("'".to_string()),
                Just("=".to_string()),
                Just(" ".to_string()),
                Just("\n".to_string()),
                Just("#".to_string()),
                Just(".".to_string()),
                Just("-".to_string()),
                any::<char>().prop_map(String::from),
                "[a-z0-9_]{1,6}",
            ],
            0..40,
        )
        .prop_map(|v| v.concat()),
    ]
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn module_options_command_lines_and_env_files_never_panic(text in config_text()) {
        use kfd_audit::system::{modopts, rocm};
        let _ = modopts::parse_modprobe("/etc/modprobe.d/x.conf", &text);
        let _ = modopts::parse_grub("/etc/default/grub", &text);
        let _ = modopts::modprobe_lines(&text);
        for (arg, _) in modopts::split_args(&text) {
            let _ = modopts::classify_kernel_arg(&arg);
            let _ = modopts::canonical_value(&arg);
        }
        let _ = rocm::parse_env_file("/etc/environment", &text, rocm::EnvSyntax::Assignment);
        let _ = rocm::parse_env_file("/etc/systemd/system/x.service", &text, rocm::EnvSyntax::SystemdUnit);
        let _ = rocm::glob_match(&text, "rocm-core");
        let _ = kfd_audit::gpu_table::parse_override(&text);
    }

    #[test]
    fn sysfs_properties_are_values_or_an_error_with_its_line(text in config_text()) {
        match kfd_audit::system::live::parse_properties(&text) {
            Ok(props) => prop_assert!(props.len() <= text.lines().count()),
            Err((line, message)) => {
                prop_assert!(line >= 1 && line <= text.lines().count(), "line {} of {:?}", line, text);
                prop_assert!(!message.is_empty());
            }
        }
    }
}
