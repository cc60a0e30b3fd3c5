//! `kfd-audit demo`: a throw-away system root that reproduces the incident this tool
//! was written for, so a newcomer sees what kfd-audit does on a machine without an
//! AMD GPU. The sources are short excerpts written for the demo in the shape of the
//! real driver (the function names, guards and tables are the ones that matter);
//! they are not copies of the kernel files.

use crate::error::{Error, Result};
use md5::{Digest as _, Md5};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

pub(crate) const VERSION: &str = "6.16.6-2238411.24.04";
pub(crate) const KERNEL: &str = "6.8.0-48-generic";
pub(crate) const TREE: &str = "/usr/src/amdgpu-6.16.6-2238411.24.04";

const DKMS_CONF: &str = r#"PACKAGE_NAME="amdgpu"
PACKAGE_VERSION="6.16.6-2238411.24.04"
AUTOINSTALL="yes"
PRE_BUILD="amd/dkms/pre-build.sh $kernelver"
BUILT_MODULE_NAME[0]="amdgpu"
BUILT_MODULE_LOCATION[0]="amd/amdgpu"
DEST_MODULE_LOCATION[0]="/kernel/drivers/gpu/drm/amd/amdgpu"
BUILT_MODULE_NAME[1]="amdttm"
BUILT_MODULE_LOCATION[1]="ttm"
DEST_MODULE_LOCATION[1]="/kernel/drivers/gpu/drm/ttm"
MAKE[0]="make -j$(nproc) KERNELRELEASE=$kernelver -C $kernel_source_dir M=$dkms_tree/$module/$module_version/build"
"#;

const PRE_BUILD: &str =
    "#!/bin/sh\n# Probes the target kernel before the build.\necho \"amdgpu pre-build for $1\"\n";

/// The memory-bank parser of the CRAT table, as upstream has it: the hot-pluggable
/// flag is reported only when the firmware's CRAT says the bank is hot-pluggable.
const KFD_CRAT_CLEAN: &str = r#"// SPDX-License-Identifier: GPL-2.0 OR MIT
/* kfd_crat.c (demo excerpt): parses the firmware's CRAT table into KFD topology. */
#include "kfd_crat.h"
#include "kfd_topology.h"

/* kfd_parse_subtype_mem - parse memory subtypes and attach it to correct
 * topology device present in the device_list
 */
static int kfd_parse_subtype_mem(struct crat_subtype_memory *mem,
				struct list_head *device_list)
{
	struct kfd_mem_properties *props;
	struct kfd_topology_device *dev;
	uint32_t heap_type;
	uint64_t size_in_bytes;
	uint32_t flags = 0;
	uint32_t width;

	list_for_each_entry(dev, device_list, list) {
		if (mem->proximity_domain == dev->proximity_domain) {
			/* We're on GPU node */
			if (dev->node_props.cpu_cores_count == 0) {
				/* APU */
				if (mem->visibility_type == 0)
					heap_type =
						HSA_MEM_HEAP_TYPE_FB_PRIVATE;
				/* dGPU */
				else
					heap_type = mem->visibility_type;
			} else
				heap_type = HSA_MEM_HEAP_TYPE_SYSTEM;

			if (mem->flags & CRAT_MEM_FLAGS_HOT_PLUGGABLE)
				flags |= HSA_MEM_FLAGS_HOT_PLUGGABLE;
			if (mem->flags & CRAT_MEM_FLAGS_NON_VOLATILE)
				flags |= HSA_MEM_FLAGS_NON_VOLATILE;

			size_in_bytes =
				((uint64_t)mem->length_high << 32) +
							mem->length_low;
			width = mem->width;

			props = kfd_alloc_struct(props);
			if (!props)
				return -ENOMEM;

			props->heap_type = heap_type;
			props->flags = flags;
			props->size_in_bytes = size_in_bytes;
			props->width = width;

			dev->node_props.mem_banks_count++;
			list_add_tail(&props->list, &dev->mem_props);

			break;
		}
	}

	return 0;
}
"#;

/// The block the real incident inserted after the upstream flag handling.
pub(crate) const INCIDENT_BLOCK: &str = r#"			/* RDNA1 FIX: Allow fine-grained memory for Navi 10 (0x731F) when spoofed as gfx1030 */
			if (dev->gpu && dev->gpu->adev && dev->gpu->adev->pdev) {
				uint16_t device_id = dev->gpu->adev->pdev->device;
				if (device_id == 0x731F && heap_type != HSA_MEM_HEAP_TYPE_SYSTEM) {
					pr_debug("KFD: Enabling fine-grained for RDNA1 0x%x\n", device_id);
					flags |= HSA_MEM_FLAGS_HOT_PLUGGABLE;
				}
			}
"#;

const KFD_DEVICE: &str = r#"// SPDX-License-Identifier: GPL-2.0 OR MIT
/* kfd_device.c (demo excerpt): which ISA the compute runtime is told a GPU has. */
#include "kfd_priv.h"

static void kfd_device_info_set_gfx_target(struct kfd_dev *kfd, uint32_t gc_version)
{
	uint32_t gfx_target_version = 0;

	switch (gc_version) {
	/* Navi10 */
	case IP_VERSION(10, 1, 10):
		gfx_target_version = 100100;
		break;
	/* Navi12 */
	case IP_VERSION(10, 1, 2):
		gfx_target_version = 100101;
		break;
	/* Navi14 */
	case IP_VERSION(10, 1, 1):
		gfx_target_version = 100102;
		break;
	/* Sienna Cichlid */
	case IP_VERSION(10, 3, 0):
		gfx_target_version = 100300;
		break;
	default:
		break;
	}
	kfd->device_info.gfx_target_version = gfx_target_version;
}
"#;

const AMDGPU_DRV: &str = r#"// SPDX-License-Identifier: MIT
/* amdgpu_drv.c (demo excerpt): module parameters. */
#include "amdgpu.h"

int amdgpu_noretry = -1;
MODULE_PARM_DESC(noretry,
	"Disable retry faults (0 = retry enabled, 1 = retry disabled, -1 auto (default))");
module_param_named(noretry, amdgpu_noretry, int, 0644);
"#;

fn md5_hex(data: &[u8]) -> String {
    hex::encode(Md5::digest(data))
}

fn write(root: &Path, system_path: &str, data: &[u8], mtime: SystemTime) -> Result<PathBuf> {
    let p = root.join(system_path.trim_start_matches('/'));
    if let Some(dir) = p.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    std::fs::write(&p, data).map_err(|e| Error::io(&p, e))?;
    let f = std::fs::File::options()
        .write(true)
        .open(&p)
        .map_err(|e| Error::io(&p, e))?;
    f.set_modified(mtime).map_err(|e| Error::io(&p, e))?;
    Ok(p)
}

/// Lays out the incident in `root` (which must be empty or absent).
pub(crate) fn build(root: &Path) -> Result<()> {
    if root.exists()
        && std::fs::read_dir(root)
            .map_err(|e| Error::io(root, e))?
            .next()
            .is_some()
    {
        return Err(Error::Refused {
            path: root.to_path_buf(),
            message: "is not empty; the demo builds its sandbox in an empty or new directory"
                .into(),
        });
    }
    let now = SystemTime::now();
    let installed = now - Duration::from_secs(30 * 24 * 3600);
    let patched_at = now - Duration::from_secs(2 * 3600);
    let built_at = patched_at + Duration::from_secs(600);

    let clean_files: Vec<(&str, &[u8])> = vec![
        ("dkms.conf", DKMS_CONF.as_bytes()),
        ("amd/dkms/pre-build.sh", PRE_BUILD.as_bytes()),
        ("amd/amdkfd/kfd_crat.c", KFD_CRAT_CLEAN.as_bytes()),
        ("amd/amdkfd/kfd_device.c", KFD_DEVICE.as_bytes()),
        ("amd/amdgpu/amdgpu_drv.c", AMDGPU_DRV.as_bytes()),
    ];
    let mut md5sums = String::new();
    for (rel, data) in &clean_files {
        let sys = format!("{TREE}/{rel}");
        write(root, &sys, data, installed)?;
        md5sums.push_str(&format!(
            "{}  {}\n",
            md5_hex(data),
            sys.trim_start_matches('/')
        ));
    }
    write(
        root,
        "/var/lib/dpkg/info/amdgpu-dkms.md5sums",
        md5sums.as_bytes(),
        installed,
    )?;
    write(
        root,
        "/var/lib/dpkg/status",
        format!(
            "Package: amdgpu-dkms\nStatus: install ok installed\nArchitecture: all\nVersion: 1:{VERSION}\n\
             Description: amdgpu driver in DKMS format (kfd-audit demo)\n\n"
        )
        .as_bytes(),
        installed,
    )?;

    // The incident: the block goes in right after the upstream flag handling.
    let anchor = "\t\t\t\tflags |= HSA_MEM_FLAGS_NON_VOLATILE;\n";
    let at = KFD_CRAT_CLEAN
        .find(anchor)
        .expect("demo excerpt has the anchor")
        + anchor.len();
    let patched = format!(
        "{}\n{}{}",
        &KFD_CRAT_CLEAN[..at],
        INCIDENT_BLOCK,
        &KFD_CRAT_CLEAN[at..]
    );
    let crat = format!("{TREE}/amd/amdkfd/kfd_crat.c");
    write(
        root,
        &format!("{crat}.orig"),
        KFD_CRAT_CLEAN.as_bytes(),
        patched_at,
    )?;
    write(root, &crat, patched.as_bytes(), patched_at)?;
    // The user's "backup", taken after patching: a copy of the patched file.
    write(
        root,
        &format!("{crat}.patched"),
        patched.as_bytes(),
        patched_at,
    )?;

    // DKMS state: registered, built and installed after the change.
    let dkms = format!("/var/lib/dkms/amdgpu/{VERSION}");
    let ko = b"\x7fELF demo module: built from the patched sources\n";
    write(
        root,
        &format!("{dkms}/{KERNEL}/x86_64/module/amdgpu.ko.zst"),
        ko,
        built_at,
    )?;
    write(
        root,
        &format!("{dkms}/{KERNEL}/x86_64/log/make.log"),
        b"DKMS make.log for amdgpu (demo)\n",
        built_at,
    )?;
    // The kernel's headers and the tools the plan names exist on the demo system.
    write(
        root,
        &format!("/lib/modules/{KERNEL}/build/Makefile"),
        b"# kernel headers (demo)\n",
        installed,
    )?;
    write(
        root,
        &format!("/boot/initrd.img-{KERNEL}"),
        b"initramfs (demo)\n",
        built_at,
    )?;

    // The running driver says what the patch made it say: a Navi 10 (device 29471 =
    // 0x731F) reporting gfx1030's target version, its VRAM bank flagged hot-pluggable.
    let nodes = "/sys/class/kfd/kfd/topology/nodes";
    let node = |gpu: bool| -> String {
        let v = |g: u64, c: u64| if gpu { g } else { c };
        [
            ("cpu_cores_count", v(0, 16)),
            ("simd_count", v(80, 0)),
            ("mem_banks_count", 1),
            ("gfx_target_version", v(100300, 0)),
            ("vendor_id", v(4098, 0)),
            ("device_id", v(29471, 0)),
            ("location_id", v(768, 0)),
            ("drm_render_minor", v(128, 0)),
        ]
        .iter()
        .map(|(k, n)| format!("{k} {n}\n"))
        .collect()
    };
    write(
        root,
        &format!("{nodes}/0/properties"),
        node(false).as_bytes(),
        now,
    )?;
    write(
        root,
        &format!("{nodes}/0/mem_banks/0/properties"),
        b"heap_type 0\nsize_in_bytes 33554432000\nflags 0\nwidth 64\nmem_clk_max 3200\n",
        now,
    )?;
    write(
        root,
        &format!("{nodes}/1/properties"),
        node(true).as_bytes(),
        now,
    )?;
    write(root, &format!("{nodes}/1/name"), b"navi10\n", now)?;
    write(
        root,
        &format!("{nodes}/1/mem_banks/0/properties"),
        b"heap_type 2\nsize_in_bytes 8573157376\nflags 1\nwidth 256\nmem_clk_max 875\n",
        now,
    )?;
    // What was tried at the other levels: module options and the runtime override.
    write(
        root,
        "/etc/modprobe.d/amdgpu-rdna1.conf",
        b"# RDNA1 ROCm attempt\noptions amdgpu mtype_local=1 noretry=0 vm_fragment_size=9\n",
        patched_at,
    )?;
    write(
        root,
        "/etc/environment",
        b"HSA_OVERRIDE_GFX_VERSION=10.3.0\n",
        patched_at,
    )?;
    write(
        root,
        "/usr/sbin/dkms",
        b"#!/bin/sh\n# dkms (demo stand-in)\n",
        installed,
    )?;
    write(
        root,
        &format!("/lib/modules/{KERNEL}/updates/dkms/amdgpu.ko.zst"),
        ko,
        built_at,
    )?;
    write(
        root,
        "/proc/sys/kernel/osrelease",
        format!("{KERNEL}\n").as_bytes(),
        now,
    )?;
    let link = |target: &str, at: &str| -> Result<()> {
        let p = root.join(at.trim_start_matches('/'));
        std::os::unix::fs::symlink(target, &p).map_err(|e| Error::io(&p, e))
    };
    link(TREE, &format!("{dkms}/source"))?;
    link(
        &format!("{VERSION}/{KERNEL}/x86_64"),
        &format!("/var/lib/dkms/amdgpu/kernel-{KERNEL}-x86_64"),
    )?;
    // update-initramfs exists on the demo system, so the plan names it.
    write(
        root,
        "/usr/sbin/update-initramfs",
        b"#!/bin/sh\n",
        installed,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sandbox_has_the_incident() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("sandbox");
        build(&root).unwrap();
        let crat =
            std::fs::read_to_string(root.join(&TREE[1..]).join("amd/amdkfd/kfd_crat.c")).unwrap();
        assert!(crat.contains("RDNA1 FIX"));
        let patched =
            std::fs::read_to_string(root.join(&TREE[1..]).join("amd/amdkfd/kfd_crat.c.patched"))
                .unwrap();
        assert_eq!(crat, patched);
        assert!(build(&root).is_err(), "refuses a non-empty directory");
    }
}

/// Arguments of `kfd-audit demo`.
#[derive(Debug, clap::Args)]
pub(crate) struct DemoArgs {
    /// Build the sandbox in DIR (empty or new) and keep it, to try restore and undo in it
    #[arg(long, value_name = "DIR")]
    pub keep: Option<PathBuf>,
}

fn color_word(c: crate::app::ColorArg) -> &'static str {
    match c {
        crate::app::ColorArg::Auto => "auto",
        crate::app::ColorArg::Always => "always",
        crate::app::ColorArg::Never => "never",
    }
}

/// Runs one kfd-audit command line inside the sandbox, echoing it like a shell would.
fn show(
    cli: &crate::app::Cli,
    root: &Path,
    args: &[&str],
    out: &mut dyn std::io::Write,
) -> anyhow::Result<()> {
    use clap::Parser as _;
    let shown_root = root.display().to_string();
    writeln!(
        out,
        "\n$ kfd-audit --root {shown_root} {}\n",
        args.join(" ")
    )?;
    // One pager for each step of a demo would stop it halfway: the demo prints.
    let mut argv = vec![
        "kfd-audit",
        "--root",
        &shown_root,
        "--color",
        color_word(cli.color),
        "--no-pager",
    ];
    argv.extend_from_slice(args);
    let inner = crate::app::Cli::try_parse_from(argv)?;
    crate::app::run(&inner, out)?;
    Ok(())
}

/// `kfd-audit demo`: build the sandbox, run the scan and the plan on it, and say how
/// to try the interactive restore and undo.
pub(crate) fn cmd(
    cli: &crate::app::Cli,
    args: &DemoArgs,
    out: &mut dyn std::io::Write,
) -> anyhow::Result<crate::exit::Outcome> {
    if cli.format != crate::app::Format::Text {
        anyhow::bail!("kfd-audit demo prints text only; drop --format");
    }
    let temp;
    let root = match &args.keep {
        Some(dir) => std::path::absolute(dir)?,
        None => {
            temp = tempfile::Builder::new()
                .prefix("kfd-audit-demo.")
                .tempdir()?;
            temp.path().join("root")
        }
    };
    build(&root)?;
    writeln!(
        out,
        "kfd-audit demo: a sandbox system at {} reproduces the incident kfd-audit was written for.\n\
         Someone with an RDNA1 card (Navi 10, PCI id 0x731F) patched kfd_crat.c in the amdgpu {VERSION} DKMS\n\
         sources so that ROCm would believe the card's VRAM supports fine-grained access, rebuilt the module\n\
         with dkms, and kept a \"backup\" made after patching (kfd_crat.c.patched). The first GPU kernel froze\n\
         the machine. This is what kfd-audit tells them:",
        root.display()
    )?;
    show(cli, &root, &["scan", "--diff"], out)?;
    show(cli, &root, &["restore", "--dry-run"], out)?;
    show(cli, &root, &["plan"], out)?;
    let r = root.display();
    match &args.keep {
        Some(_) => writeln!(
            out,
            "\nThe sandbox is kept at {r}. Try the rest yourself:\n  \
             kfd-audit --root {r} restore   # asks per file: accept, skip, show diff, all, quit\n  \
             kfd-audit --root {r} scan      # the sources are clean again; the module still needs a rebuild\n  \
             kfd-audit --root {r} undo      # puts the patched file back from the quarantine\n\
             Remove it with: rm -r {r}"
        )?,
        None => writeln!(
            out,
            "\nThe sandbox above was temporary. To try the interactive restore and undo yourself:\n  \
             kfd-audit demo --keep /tmp/kfd-demo\n  \
             kfd-audit --root /tmp/kfd-demo restore   # asks per file: accept, skip, show diff, all, quit\n  \
             kfd-audit --root /tmp/kfd-demo scan\n  \
             kfd-audit --root /tmp/kfd-demo undo"
        )?,
    }
    Ok(crate::exit::Outcome::Clean)
}
