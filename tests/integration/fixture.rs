//! A fake system root builder and a wrapper around the real binary.
//!
//! `Fixture::new()` makes an empty root in a temp dir; `amdgpu_tree()` lays out a
//! small DKMS tree with a dkms.conf and registers its files in dpkg's md5sums, the
//! way the amdgpu-dkms package would. Tests then change files and run the binary
//! with `--root`.
#![allow(dead_code)]

use md5::{Digest as _, Md5};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const TREE: &str = "usr/src/amdgpu-6.8.5-2009582.24.04";
pub const VERSION: &str = "6.8.5-2009582.24.04";

/// A small excerpt in the shape of kfd_crat.c's memory parser (written for the tests).
pub const CRAT_C: &str = r#"// SPDX-License-Identifier: GPL-2.0 OR MIT
#include "kfd_crat.h"

static int kfd_parse_subtype_mem(struct crat_subtype_memory *mem,
			struct list_head *device_list)
{
	struct kfd_topology_device *dev;
	uint32_t heap_type;
	uint64_t size_in_bytes;
	uint32_t flags = 0;

	list_for_each_entry(dev, device_list, list) {
		if (mem->proximity_domain == dev->proximity_domain) {
			if (dev->node_props.cpu_cores_count == 0) {
				if (mem->visibility_type == 0)
					heap_type = HSA_MEM_HEAP_TYPE_FB_PRIVATE;
				else
					heap_type = HSA_MEM_HEAP_TYPE_FB_PUBLIC;
			} else
				heap_type = HSA_MEM_HEAP_TYPE_SYSTEM;

			if (mem->flags & CRAT_MEM_FLAGS_HOT_PLUGGABLE)
				flags |= HSA_MEM_FLAGS_HOT_PLUGGABLE;
			if (mem->flags & CRAT_MEM_FLAGS_NON_VOLATILE)
				flags |= HSA_MEM_FLAGS_NON_VOLATILE;

			size_in_bytes =
				((uint64_t)mem->length_high << 32) +
							mem->length_low;
		}
	}
	return 0;
}
"#;

pub const DKMS_CONF: &str = r#"PACKAGE_NAME="amdgpu"
PACKAGE_VERSION="6.8.5-2009582.24.04"
AUTOINSTALL="yes"
PRE_BUILD="amd/dkms/pre-build.sh $kernelver"
BUILT_MODULE_NAME[0]="amdgpu"
BUILT_MODULE_LOCATION[0]="amd/amdgpu"
DEST_MODULE_LOCATION[0]="/kernel/drivers/gpu/drm/amd/amdgpu"
MAKE[0]="make -j4 KERNELRELEASE=$kernelver -C $kernel_source_dir M=$dkms_tree/$module/$module_version/build"
"#;

pub fn md5_hex(data: &[u8]) -> String {
    hex::encode(Md5::digest(data))
}

pub struct Fixture {
    pub dir: tempfile::TempDir,
}

impl Fixture {
    pub fn new() -> Fixture {
        Fixture {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Host path of a system path under the fake root.
    pub fn path(&self, system_path: &str) -> PathBuf {
        self.root().join(system_path.trim_start_matches('/'))
    }

    /// Writes a file (creating parents) under the root.
    pub fn write(&self, system_path: &str, data: impl AsRef<[u8]>) -> PathBuf {
        let p = self.path(system_path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, data).unwrap();
        p
    }

    pub fn read(&self, system_path: &str) -> Vec<u8> {
        std::fs::read(self.path(system_path)).unwrap()
    }

    /// Lays out a DKMS tree at `tree` (root-relative) with the given files plus
    /// dkms.conf, and appends their md5sums to dpkg's `<package>.md5sums`.
    pub fn tree_with(&self, tree: &str, package: Option<&str>, files: &[(&str, &str)]) {
        let mut sums = String::new();
        let mut all: Vec<(&str, &str)> = vec![("dkms.conf", DKMS_CONF)];
        all.extend_from_slice(files);
        for (rel, content) in all {
            let sys = format!("{tree}/{rel}");
            self.write(&sys, content);
            sums.push_str(&format!("{}  {}\n", md5_hex(content.as_bytes()), sys));
        }
        if let Some(pkg) = package {
            let md5 = self.path(&format!("/var/lib/dpkg/info/{pkg}.md5sums"));
            std::fs::create_dir_all(md5.parent().unwrap()).unwrap();
            let mut existing = std::fs::read_to_string(&md5).unwrap_or_default();
            existing.push_str(&sums);
            std::fs::write(md5, existing).unwrap();
        }
    }

    /// The standard small amdgpu tree owned by `amdgpu-dkms`.
    pub fn amdgpu_tree(&self) -> &Fixture {
        self.tree_with(
            TREE,
            Some("amdgpu-dkms"),
            &[
                ("amd/amdkfd/kfd_crat.c", CRAT_C),
                ("amd/amdkfd/Makefile", "amdkfd-y += kfd_crat.o\n"),
                (
                    "amd/amdgpu/amdgpu_drv.c",
                    "// amdgpu driver entry\nint amdgpu_x;\n",
                ),
                ("Makefile", "obj-m += amd/amdgpu/\n"),
            ],
        );
        self
    }

    /// Runs the real binary with `--root <fixture>` followed by `args`.
    pub fn run(&self, args: &[&str]) -> Run {
        self.run_env(args, &[])
    }

    /// [`Self::run`] with environment variables set.
    pub fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kfd-audit"));
        cmd.arg("--root")
            .arg(self.root())
            .args(args)
            .envs(env.iter().copied())
            .env_remove("NO_COLOR");
        Run::of(cmd)
    }
}

/// The outcome of one run of the binary, with helpers for assertions.
pub struct Run {
    pub output: Output,
}

impl Run {
    pub fn of(mut cmd: Command) -> Run {
        Run {
            output: cmd.output().expect("run kfd-audit"),
        }
    }

    pub fn code(&self) -> i32 {
        self.output.status.code().unwrap_or(-1)
    }

    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.output.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\nstderr: {}",
                self.stdout(),
                self.stderr()
            )
        })
    }

    /// Asserts the exit code, showing the output when it is wrong.
    pub fn expect_code(&self, code: i32) -> &Run {
        assert_eq!(
            self.code(),
            code,
            "exit code\nstdout:\n{}\nstderr:\n{}",
            self.stdout(),
            self.stderr()
        );
        self
    }
}

/// The file entry with this path in the first tree of a JSON report.
pub fn json_file<'a>(report: &'a serde_json::Value, path: &str) -> Option<&'a serde_json::Value> {
    report["trees"]
        .as_array()?
        .iter()
        .flat_map(|t| t["files"].as_array().into_iter().flatten())
        .find(|f| f["path"] == path)
}

/// The files of the standard tree as `amdgpu_tree()` writes them (tree-relative).
pub fn amdgpu_tree_files() -> Vec<(&'static str, &'static str)> {
    vec![
        ("dkms.conf", DKMS_CONF),
        ("amd/amdkfd/kfd_crat.c", CRAT_C),
        ("amd/amdkfd/Makefile", "amdkfd-y += kfd_crat.o\n"),
        (
            "amd/amdgpu/amdgpu_drv.c",
            "// amdgpu driver entry\nint amdgpu_x;\n",
        ),
        ("Makefile", "obj-m += amd/amdgpu/\n"),
    ]
}

impl Fixture {
    /// Records `package` at `version` as installed in dpkg's status file.
    pub fn dpkg_status(&self, package: &str, version: &str) {
        let path = self.path("var/lib/dpkg/status");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut text = std::fs::read_to_string(&path).unwrap_or_default();
        text.push_str(&format!(
            "Package: {package}\nStatus: install ok installed\nPriority: optional\nArchitecture: all\nVersion: {version}\nDescription: test package\n\n"
        ));
        std::fs::write(path, text).unwrap();
    }

    /// Builds a real package with `dpkg-deb --build -Z<compression>` holding `files`
    /// (root-relative paths) and returns it; it is written to `out` (a host path).
    pub fn build_deb(
        &self,
        package: &str,
        version: &str,
        compression: &str,
        files: &[(String, Vec<u8>)],
        out: &Path,
    ) {
        let stage = tempfile::tempdir().unwrap();
        let debian = stage.path().join("DEBIAN");
        std::fs::create_dir_all(&debian).unwrap();
        std::fs::write(
            debian.join("control"),
            format!(
                "Package: {package}\nVersion: {version}\nArchitecture: all\nMaintainer: kfd-audit tests <tests@example.invalid>\nDescription: test package\n"
            ),
        )
        .unwrap();
        let mut sums = String::new();
        for (rel, data) in files {
            let p = stage.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, data).unwrap();
            sums.push_str(&format!("{}  {rel}\n", md5_hex(data)));
        }
        std::fs::write(debian.join("md5sums"), sums).unwrap();
        std::fs::create_dir_all(out.parent().unwrap()).unwrap();
        let o = Command::new("dpkg-deb")
            .arg(format!("-Z{compression}"))
            .args(["--root-owner-group", "--build"])
            .arg(stage.path())
            .arg(out)
            .output()
            .expect("run dpkg-deb");
        assert!(
            o.status.success(),
            "dpkg-deb failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}
