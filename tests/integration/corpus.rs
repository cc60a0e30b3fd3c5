//! Tests on the real corpus (kernel sources laid out as amdgpu DKMS trees) built by
//! `../shared/corpus/make-corpus.sh`. Set KFD_CORPUS to its root; `.ci/run` does,
//! and sets KFD_REQUIRE_CORPUS=1 so that a missing corpus fails instead of skipping.
//!
//! Each test works on its own copy: a hard-link farm of the corpus (cheap), whose
//! files are un-linked before anything modifies them, so the corpus stays clean.
#![allow(dead_code)]

use crate::fixture::Run;
use std::path::{Path, PathBuf};
use std::process::Command;

pub const PRIMARY: &str = "usr/src/amdgpu-6.12.117-debian";
pub const OLDER: &str = "usr/src/amdgpu-6.1.192-debian";

/// The corpus root, or None (test skipped) when it is not built here.
pub fn corpus() -> Option<PathBuf> {
    let dir = std::env::var_os("KFD_CORPUS").map(PathBuf::from);
    match dir {
        Some(d) if d.join(PRIMARY).join("dkms.conf").is_file() => Some(d),
        _ if std::env::var_os("KFD_REQUIRE_CORPUS").is_some() => {
            panic!("KFD_REQUIRE_CORPUS is set but KFD_CORPUS has no corpus; run ../shared/corpus/make-corpus.sh")
        }
        _ => {
            eprintln!("skipped: set KFD_CORPUS to a root made by make-corpus.sh");
            None
        }
    }
}

/// Where the shared mutations are (`../shared/corpus/mutations/<series>`).
pub fn mutations(series: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/corpus/mutations")
        .join(series)
}

/// One row of a mutation manifest.
#[derive(Debug, Clone)]
pub struct Mutation {
    pub id: String,
    pub unsafe_: bool,
    pub category: String,
    pub files: Vec<String>,
    pub patch: PathBuf,
}

pub fn manifest(series: &str) -> Vec<Mutation> {
    let dir = mutations(series);
    let text = std::fs::read_to_string(dir.join("manifest.tsv")).expect("mutation manifest");
    text.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let c: Vec<&str> = l.split('\t').collect();
            Mutation {
                id: c[0].to_string(),
                unsafe_: c[1] == "unsafe",
                category: c[2].to_string(),
                files: c[3].split(',').map(str::to_string).collect(),
                patch: dir.join(c[4]),
            }
        })
        .collect()
}

/// A private copy of the corpus root.
pub struct CorpusRoot {
    pub dir: tempfile::TempDir,
}

impl CorpusRoot {
    /// Copies the corpus (hard links for the trees). `older_owned` also registers the
    /// 6.1 tree in dpkg (from the corpus's own clean md5sums) so it has a reference.
    pub fn new(corpus: &Path, older_owned: bool) -> CorpusRoot {
        let base = corpus.parent().unwrap_or(Path::new("/tmp"));
        let dir = tempfile::Builder::new()
            .prefix("kfd-corpus-copy")
            .tempdir_in(base)
            .unwrap();
        std::fs::create_dir_all(dir.path().join("usr")).unwrap();
        std::fs::create_dir_all(dir.path().join("var/lib")).unwrap();
        let ok = Command::new("cp")
            .arg("-al")
            .arg(corpus.join("usr/src"))
            .arg(dir.path().join("usr/src"))
            .status()
            .unwrap()
            .success();
        assert!(ok, "cp -al of the corpus failed");
        let ok = Command::new("cp")
            .arg("-a")
            .arg(corpus.join("var/lib/dpkg"))
            .arg(dir.path().join("var/lib/dpkg"))
            .status()
            .unwrap()
            .success();
        assert!(ok);
        if older_owned {
            let sums = corpus.join("var/lib/kfd-corpus/md5sums/amdgpu-6.1.192-debian.md5sums");
            std::fs::copy(
                sums,
                dir.path().join("var/lib/dpkg/info/amdgpu-dkms-6.1.md5sums"),
            )
            .unwrap();
        }
        CorpusRoot { dir }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root().join(rel)
    }

    /// Gives a file its own inode so that changing it cannot touch the shared corpus.
    pub fn unshare(&self, rel: &str) {
        let p = self.path(rel);
        let data = std::fs::read(&p).unwrap();
        let tmp = p.with_extension("kfd-unshare");
        std::fs::write(&tmp, data).unwrap();
        std::fs::rename(&tmp, &p).unwrap();
    }

    /// Applies a patch with `patch -p1` from the tree's root.
    pub fn apply(&self, tree: &str, m: &Mutation) {
        for f in &m.files {
            self.unshare(&format!("{tree}/{f}"));
        }
        let out = Command::new("patch")
            .args(["-p1", "--no-backup-if-mismatch", "-s", "-d"])
            .arg(self.path(tree))
            .arg("-i")
            .arg(&m.patch)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "patch {} failed: {}",
            m.id,
            String::from_utf8_lossy(&out.stdout)
        );
    }

    pub fn run(&self, args: &[&str]) -> Run {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kfd-audit"));
        cmd.arg("--root").arg(self.root()).args(args);
        Run::of(cmd)
    }
}

#[test]
fn clean_corpus_scans_clean() {
    let Some(corpus) = corpus() else { return };
    let cr = CorpusRoot::new(&corpus, true);
    let j = cr.run(&["--format", "json", "scan"]).expect_code(0).json();
    assert_eq!(j["summary"]["modified"], 0);
    assert_eq!(j["summary"]["missing"], 0);
    assert_eq!(j["summary"]["added"], 0);
    assert_eq!(j["trees"].as_array().unwrap().len(), 2);
    assert!(j["summary"]["files"].as_u64().unwrap() > 4000);
}

#[test]
fn every_mutated_file_is_reported_modified() {
    let Some(corpus) = corpus() else { return };
    for (series, tree) in [("6.12", PRIMARY), ("6.1", OLDER)] {
        for m in manifest(series) {
            let cr = CorpusRoot::new(&corpus, true);
            cr.apply(tree, &m);
            // The touched files' directory is enough here; whole-tree scans are covered above.
            let scope = Path::new(&m.files[0])
                .parent()
                .unwrap()
                .to_str()
                .unwrap()
                .to_string();
            let tree_arg = cr.path(tree);
            let j = cr
                .run(&[
                    "--format",
                    "json",
                    "scan",
                    "--tree",
                    tree_arg.to_str().unwrap(),
                    "--scope",
                    &scope,
                ])
                .expect_code(1)
                .json();
            for f in &m.files {
                let entry = crate::fixture::json_file(&j, f)
                    .unwrap_or_else(|| panic!("{series} {}: {f} not reported", m.id));
                assert_eq!(entry["status"], "modified", "{series} {}: {f}", m.id);
            }
            assert_eq!(
                j["summary"]["modified"].as_u64().unwrap() as usize,
                m.files.len(),
                "{series} {}",
                m.id
            );
        }
    }
}
