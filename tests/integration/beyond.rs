//! `kfd-audit scan` beyond the source tree: the running driver (sysfs KFD topology in
//! the exact format amdkfd prints), module options and kernel command line, ROCm
//! packages and HSA_OVERRIDE_GFX_VERSION.

use crate::corpus::corpus;
use crate::fixture::{md5_hex, Fixture};
use serde_json::Value;

const NODES: &str = "/sys/class/kfd/kfd/topology/nodes";

/// Node properties in the order and format of `node_show()` in kfd_topology.c:
/// `"%s %u\n"` / `"%s %llu\n"`; GPU-only lines between `ctl_stack_size` and
/// `max_engine_clk_ccompute`.
fn node_properties(overrides: &[(&str, u64)], gpu: bool) -> String {
    let mut keys: Vec<(&str, u64)> = vec![
        ("cpu_cores_count", if gpu { 0 } else { 16 }),
        ("simd_count", if gpu { 80 } else { 0 }),
        ("mem_banks_count", 1),
        ("caches_count", if gpu { 120 } else { 0 }),
        ("io_links_count", 1),
        ("p2p_links_count", 0),
        ("cpu_core_id_base", 0),
        ("simd_id_base", if gpu { 2147487744 } else { 0 }),
        ("max_waves_per_simd", if gpu { 20 } else { 0 }),
        ("lds_size_in_kb", if gpu { 64 } else { 0 }),
        ("gds_size_in_kb", 0),
        ("num_gws", if gpu { 64 } else { 0 }),
        ("wave_front_size", if gpu { 32 } else { 0 }),
        ("array_count", if gpu { 4 } else { 0 }),
        ("simd_arrays_per_engine", if gpu { 2 } else { 0 }),
        ("cu_per_simd_array", if gpu { 10 } else { 0 }),
        ("simd_per_cu", if gpu { 2 } else { 0 }),
        ("max_slots_scratch_cu", if gpu { 32 } else { 0 }),
        ("gfx_target_version", if gpu { 100100 } else { 0 }),
        ("vendor_id", if gpu { 4098 } else { 0 }),
        ("device_id", if gpu { 29471 } else { 0 }),
        ("location_id", if gpu { 768 } else { 0 }),
        ("domain", 0),
        ("drm_render_minor", if gpu { 128 } else { 0 }),
        ("hive_id", 0),
        ("num_sdma_engines", if gpu { 2 } else { 0 }),
        ("num_sdma_xgmi_engines", 0),
        ("num_sdma_queues_per_engine", if gpu { 8 } else { 0 }),
        ("num_cp_queues", if gpu { 24 } else { 0 }),
        ("cwsr_size", if gpu { 1912832 } else { 0 }),
        ("ctl_stack_size", if gpu { 4096 } else { 0 }),
    ];
    if gpu {
        keys.extend([
            ("max_engine_clk_fcompute", 2100),
            ("local_mem_size", 0),
            ("fw_version", 149),
            ("capability", 134226048),
            ("debug_prop", 1495),
            ("sdma_fw_version", 52),
            ("unique_id", 0),
            ("num_xcc", 1),
        ]);
    }
    keys.push(("max_engine_clk_ccompute", 3600));
    let mut out = String::new();
    for (k, v) in keys {
        let v = overrides
            .iter()
            .find(|(o, _)| *o == k)
            .map(|(_, v)| *v)
            .unwrap_or(v);
        out.push_str(&format!("{k} {v}\n"));
    }
    out
}

/// A memory bank in the format of `mem_show()`.
fn mem_bank(heap_type: u64, size: u64, flags: u64, width: u64, clk: u64) -> String {
    format!(
        "heap_type {heap_type}\nsize_in_bytes {size}\nflags {flags}\nwidth {width}\nmem_clk_max {clk}\n"
    )
}

/// The 1-based line of `key` in a properties text.
fn line_of(text: &str, key: &str) -> u64 {
    text.lines()
        .position(|l| l.split(' ').next() == Some(key))
        .unwrap() as u64
        + 1
}

/// A machine with a CPU node 0 and a Navi10 (0x731F) node 1 whose properties and VRAM
/// bank can be changed; returns the GPU's properties text.
fn navi10(fx: &Fixture, gpu_overrides: &[(&str, u64)], vram_flags: u64) -> String {
    fx.write(
        &format!("{NODES}/0/properties"),
        node_properties(&[], false),
    );
    fx.write(&format!("{NODES}/0/name"), "\n");
    fx.write(
        &format!("{NODES}/0/mem_banks/0/properties"),
        mem_bank(0, 33_554_432_000, 0, 64, 3200),
    );
    let props = node_properties(gpu_overrides, true);
    fx.write(&format!("{NODES}/1/properties"), &props);
    fx.write(&format!("{NODES}/1/name"), "navi10\n");
    fx.write(&format!("{NODES}/1/gpu_id"), "52353\n");
    fx.write(
        &format!("{NODES}/1/mem_banks/0/properties"),
        mem_bank(2, 8_573_157_376, vram_flags, 256, 875),
    );
    props
}

fn scan_json(fx: &Fixture, extra: &[&str], code: i32) -> Value {
    let mut args = vec!["--format", "json", "scan"];
    args.extend_from_slice(extra);
    fx.run(&args).expect_code(code).json()
}

fn rules(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|f| f["rule"].as_str().unwrap().to_string())
        .collect()
}

// ------------------------------------------------------------------ live

#[test]
fn live_clean_navi10_has_no_finding() {
    let fx = Fixture::new();
    navi10(&fx, &[], 0);
    // Only the live section: with the source trees checked, a root without a tree
    // is "nothing verified" (exit 1).
    let j = scan_json(&fx, &["--sections", "live"], 0);
    assert_eq!(j["exit_code"], 0);
    assert_eq!(j["live"], serde_json::json!([]));
    let nodes = &j["sections"]["live"]["nodes"];
    assert_eq!(j["sections"]["live"]["status"], "checked");
    assert_eq!(nodes[0]["kind"], "cpu");
    assert_eq!(nodes[1]["kind"], "gpu");
    assert_eq!(nodes[1]["device_id"], "0x731f");
    assert_eq!(nodes[1]["asic"], "Navi10");
    assert_eq!(nodes[1]["name"], "navi10");
    assert_eq!(nodes[1]["gfx_target_version"], 100100);
    assert_eq!(nodes[1]["expected_gfx_target_version"], 100100);
    assert_eq!(j["summary"]["findings"], 0);

    let run = fx.run(&["scan", "--sections", "live"]);
    run.expect_code(0);
    assert!(
        run.stdout()
            .contains("running driver (node 1 0x731f Navi10 gfx1010): clean"),
        "{}",
        run.stdout()
    );
}

#[test]
fn live_navi10_reporting_gfx1030_is_critical() {
    let fx = Fixture::new();
    let props = navi10(&fx, &[("gfx_target_version", 100300)], 0);
    let j = scan_json(&fx, &[], 1);
    assert_eq!(j["exit_code"], 1);
    let live = j["live"].as_array().unwrap();
    assert_eq!(live.len(), 1, "{live:#?}");
    let f = &live[0];
    assert_eq!(f["rule"], "LIVE-GFX-001");
    assert_eq!(f["severity"], "critical");
    assert_eq!(f["source"], format!("{NODES}/1/properties"));
    assert_eq!(f["line"], line_of(&props, "gfx_target_version"));
    assert_eq!(f["text"], "gfx_target_version 100300");
    let why = f["why"].as_str().unwrap();
    assert!(why.contains("100100 (gfx1010)"), "{why}");
    assert!(why.contains("100300 (gfx1030)"), "{why}");
    assert!(why.contains("live"), "{why}");
    assert_eq!(f["action"]["kind"], "restore-driver");
    assert_eq!(j["summary"]["critical"], 1);

    // The why and fix are in the full report (-v).
    let out = fx.run(&["scan", "-v"]).stdout();
    assert!(
        out.contains(&format!(
            "CRITICAL LIVE-GFX-001 {NODES}/1/properties:19: gfx_target_version 100300"
        )),
        "{out}"
    );
    assert!(
        out.contains("running driver (node 1 0x731f Navi10 gfx1030): 1 to fix"),
        "{out}"
    );
    assert!(out.contains("the unsafe code is live"), "{out}");
    assert!(
        out.contains("fix: Restore the clean driver source"),
        "{out}"
    );
}

#[test]
fn live_dgpu_vram_with_hot_pluggable_flag_is_critical() {
    let fx = Fixture::new();
    navi10(&fx, &[], 1);
    let j = scan_json(&fx, &["--sections", "live"], 1);
    let live = j["live"].as_array().unwrap();
    assert_eq!(rules(&j["live"]), ["LIVE-MEM-001"]);
    let f = &live[0];
    assert_eq!(f["severity"], "critical");
    assert_eq!(f["source"], format!("{NODES}/1/mem_banks/0/properties"));
    assert_eq!(f["line"], 3);
    assert_eq!(f["text"], "flags 1");
    assert!(f["why"]
        .as_str()
        .unwrap()
        .contains("HSA_MEM_FLAGS_HOT_PLUGGABLE"));
    // --sections live: no other section in the report.
    assert!(j.get("module_options").is_none());
    assert!(j.get("rocm").is_none());
    assert_eq!(j["trees"], serde_json::json!([]));

    // Non-volatile (0x2) is the same lie.
    let fx = Fixture::new();
    navi10(&fx, &[], 2);
    let j = scan_json(&fx, &["--sections", "live"], 1);
    assert!(j["live"][0]["why"]
        .as_str()
        .unwrap()
        .contains("HSA_MEM_FLAGS_NON_VOLATILE"));

    // And a discrete card claiming coherent host access.
    let fx = Fixture::new();
    navi10(&fx, &[("capability", 134226048 | 0x1000_0000)], 0);
    let j = scan_json(&fx, &["--sections", "live"], 1);
    assert_eq!(rules(&j["live"]), ["LIVE-CAP-001"]);
    assert_eq!(j["live"][0]["severity"], "high");
}

#[test]
fn live_integrated_gpu_with_differing_system_memory_bank_is_not_a_finding() {
    // Carrizo as the BIOS CRAT describes it: one node with CPU cores and SIMDs, its
    // system memory marked hot-pluggable by the firmware.
    let fx = Fixture::new();
    let props = node_properties(
        &[
            ("cpu_cores_count", 4),
            ("simd_count", 32),
            ("gfx_target_version", 80001),
            ("device_id", 0x9874),
        ],
        true,
    );
    fx.write(&format!("{NODES}/0/properties"), &props);
    fx.write(
        &format!("{NODES}/0/mem_banks/0/properties"),
        mem_bank(0, 16_000_000_000, 1, 64, 2133),
    );
    let j = scan_json(&fx, &["--sections", "live"], 0);
    assert_eq!(j["live"], serde_json::json!([]));
    assert_eq!(j["sections"]["live"]["nodes"][0]["kind"], "apu");
    assert_eq!(j["sections"]["live"]["nodes"][0]["asic"], "Carrizo");

    // Raven (0x15DD, AMD_IS_APU) with a GPU-only node: its memory is system memory too.
    let fx = Fixture::new();
    fx.write(
        &format!("{NODES}/0/properties"),
        node_properties(&[], false),
    );
    fx.write(
        &format!("{NODES}/1/properties"),
        node_properties(
            &[
                ("simd_count", 44),
                ("gfx_target_version", 90002),
                ("device_id", 0x15dd),
            ],
            true,
        ),
    );
    fx.write(
        &format!("{NODES}/1/mem_banks/0/properties"),
        mem_bank(1, 2_147_483_648, 1, 64, 1200),
    );
    let j = scan_json(&fx, &["--sections", "live"], 0);
    assert_eq!(j["live"], serde_json::json!([]));
    assert_eq!(j["sections"]["live"]["nodes"][1]["kind"], "apu");

    // A GPU the table does not know, VRAM flagged: high, not critical, and said why.
    let fx = Fixture::new();
    fx.write(
        &format!("{NODES}/1/properties"),
        node_properties(
            &[("device_id", 0x744c), ("gfx_target_version", 110000)],
            true,
        ),
    );
    fx.write(
        &format!("{NODES}/1/mem_banks/0/properties"),
        mem_bank(1, 25_753_026_560, 1, 384, 1250),
    );
    let j = scan_json(&fx, &["--sections", "live"], 1);
    assert_eq!(rules(&j["live"]), ["LIVE-MEM-002"]);
    assert_eq!(j["live"][0]["severity"], "high");
    let notes = j["sections"]["live"]["notes"].to_string();
    assert!(
        notes.contains("0x744c is not in kfd-audit's device table"),
        "{notes}"
    );
}

#[test]
fn live_malformed_properties_is_an_error_naming_file_and_line() {
    let fx = Fixture::new();
    navi10(&fx, &[], 0);
    fx.write(
        &format!("{NODES}/1/mem_banks/0/properties"),
        "heap_type 2\nsize_in_bytes lots\n",
    );
    let run = fx.run(&["scan", "--sections", "live"]);
    run.expect_code(2);
    let err = run.stderr();
    assert!(
        err.contains(&format!("{NODES}/1/mem_banks/0/properties:2:")),
        "{err}"
    );
    assert!(err.contains("--lenient"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    let j = scan_json(&fx, &["--sections", "live", "--lenient"], 0);
    assert!(j["sections"]["live"]["notes"][0]
        .as_str()
        .unwrap()
        .ends_with("mem_banks/0/properties:2: skipped ('lots' is not an unsigned decimal number (the kernel prints %u/%llu))"));
}

#[test]
fn live_absent_topology_says_so() {
    let fx = Fixture::new();
    let j = scan_json(&fx, &["--sections", "live"], 0);
    assert_eq!(j["sections"]["live"]["status"], "absent");
    let out = fx.run(&["scan", "--sections", "live", "-v"]).stdout();
    assert!(
        out.starts_with("kfd-audit scan clean: source trees not checked (--sections)\n"),
        "{out}"
    );
    assert!(
        out.contains("running driver (no KFD topology): nothing to check"),
        "{out}"
    );
    assert!(
        out.contains("amdkfd is not loaded, or this is not the running system"),
        "{out}"
    );
}

// ------------------------------------------------------------------ options

const HACK_CONF: &str = "\
# written while trying to get ROCm running on an RX 5700 XT
options amdgpu mtype_local=1 noretry=0 vm_fragment_size=9
options amdgpu ppfeaturemask=0xffffffff \\
  exp_hw_support=1 \\
  mcbp=1
options amdgpu sched_policy=2 hws_gws_support=Y force_asic_type=7
options amdgpu discovery=2 debug_mask=0x2
options amdgpu cwsr_enable=0 gpu_recovery=0
blacklist amdgpu
install amdgpu /bin/false
";

#[test]
fn options_each_risky_option_with_continuation_lines() {
    let fx = Fixture::new();
    fx.write("/etc/modprobe.d/amdgpu-hack.conf", HACK_CONF);
    // Harmless settings and other modules raise nothing.
    fx.write(
        "/etc/modprobe.d/other.conf",
        "options amdgpu noretry=-1 dc=1\nblacklist radeon\noptions snd_hda_intel power_save=1\n",
    );
    let j = scan_json(&fx, &["--sections", "options"], 1);
    let found: Vec<(String, u64, String)> = j["module_options"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["rule"].as_str().unwrap().to_string(),
                f["line"].as_u64().unwrap(),
                f["severity"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want: Vec<(&str, u64, &str)> = vec![
        ("OPT-MTYPE-001", 2, "medium"),
        ("OPT-NORETRY-001", 2, "info"),
        ("OPT-FRAG-001", 2, "low"),
        ("OPT-PPFEATURE-001", 3, "medium"),
        ("OPT-EXPHW-001", 4, "medium"),
        ("OPT-MCBP-001", 5, "low"),
        ("OPT-SCHED-001", 6, "medium"),
        ("OPT-GWS-001", 6, "high"),
        ("OPT-ASIC-001", 6, "high"),
        ("OPT-DISCOVERY-001", 7, "high"),
        ("OPT-LARGEBAR-001", 7, "medium"),
        ("OPT-CWSR-001", 8, "low"),
        ("OPT-RECOVERY-001", 8, "low"),
        ("OPT-BLACKLIST-001", 9, "medium"),
        ("OPT-INSTALL-001", 10, "medium"),
    ];
    let want: Vec<(String, u64, String)> = want
        .into_iter()
        .map(|(r, l, s)| (r.to_string(), l, s.to_string()))
        .collect();
    assert_eq!(found, want);
    // noretry=0 is info here: other.conf (read after amdgpu-hack.conf) sets it again.
    let noretry = &j["module_options"][1];
    assert!(noretry["why"]
        .as_str()
        .unwrap()
        .contains("/etc/modprobe.d/other.conf line 1 sets the same parameter later"));
    assert_eq!(noretry["action"]["kind"], "none");

    let mtype = &j["module_options"][0];
    assert_eq!(mtype["source"], "/etc/modprobe.d/amdgpu-hack.conf");
    assert_eq!(
        mtype["text"],
        "options amdgpu mtype_local=1 noretry=0 vm_fragment_size=9"
    );
    assert_eq!(mtype["action"]["kind"], "remove-setting");
    assert_eq!(mtype["action"]["setting"], "mtype_local=1");
    assert_eq!(mtype["action"]["whole_line"], false);
    assert_eq!(
        mtype["action"]["then"],
        serde_json::json!(["update-initramfs -u -k all", "reboot"])
    );
    // The continued line is reported whole, each option at its own physical line.
    let exphw = &j["module_options"][4];
    assert_eq!(
        exphw["text"],
        "options amdgpu ppfeaturemask=0xffffffff   exp_hw_support=1   mcbp=1"
    );
    let bl = &j["module_options"][13];
    assert_eq!(bl["action"]["whole_line"], true);
    assert!(bl["fix"]
        .as_str()
        .unwrap()
        .starts_with("Delete line 9 of /etc/modprobe.d/amdgpu-hack.conf ('blacklist amdgpu'), then run 'update-initramfs -u -k all'"));
    assert_eq!(
        j["sections"]["module_options"]["files"],
        serde_json::json!([
            "/etc/modprobe.d/amdgpu-hack.conf",
            "/etc/modprobe.d/other.conf"
        ])
    );
    assert_eq!(j["summary"]["high"], 3);

    let out = fx.run(&["scan", "--sections", "options", "-v"]).stdout();
    assert!(
        out.contains("module options (2 files read): 14 to fix"),
        "{out}"
    );
    assert!(out.contains(
        "  MEDIUM OPT-MTYPE-001 /etc/modprobe.d/amdgpu-hack.conf:2: options amdgpu mtype_local=1 noretry=0 vm_fragment_size=9\n      mtype_local changes how the GPU caches its own memory\n"
    ), "{out}");
    assert!(out.contains("      fix: Remove 'mtype_local=1' from line 2 of /etc/modprobe.d/amdgpu-hack.conf, then run 'update-initramfs -u -k all' (the initramfs carries its own copy of modprobe.d) and reboot."), "{out}");
}

#[test]
fn options_rules_are_engine_rules_users_can_add_to() {
    let fx = Fixture::new();
    fx.write(
        "/etc/modprobe.d/amdgpu.conf",
        "options amdgpu lockup_timeout=0 ppfeaturemask=4294967295\n",
    );
    fx.write(
        "/srv/my-rules/site.toml",
        r#"[[rule]]
id = "SITE-OPT-001"
title = "lockup timeout changed"
severity = "low"
files = ["<module-options>"]
scope = "file"
on = "line"
match = '^amdgpu\.lockup_timeout='
why = "This site keeps the driver's GPU lockup timeouts."
fix = "Ask the GPU team first."

[[rule.example]]
fires = true
code = "amdgpu.lockup_timeout=0"
"#,
    );
    let rules_dir = fx.path("/srv/my-rules");
    let rules_dir = rules_dir.to_str().unwrap();
    let j = fx
        .run(&[
            "--rules",
            rules_dir,
            "--format",
            "json",
            "scan",
            "--sections",
            "options",
        ])
        .expect_code(1)
        .json();
    // Decimal masks are compared by bit: 4294967295 is 0xffffffff, overdrive included.
    assert_eq!(
        rules(&j["module_options"]),
        ["SITE-OPT-001", "OPT-PPFEATURE-001"]
    );
    let f = &j["module_options"][0];
    assert_eq!(f["line"], 1);
    assert_eq!(f["action"]["setting"], "lockup_timeout=0");
    assert!(f["fix"]
        .as_str()
        .unwrap()
        .ends_with("and reboot. Ask the GPU team first."));
    // `rules list` shows the option rules with the pseudo-file they apply to.
    let list = fx.run(&["rules", "list"]).expect_code(0).stdout();
    assert!(list.contains("OPT-NOMODESET-001"), "{list}");
}

#[test]
fn options_later_directory_and_file_precedence() {
    let fx = Fixture::new();
    // Same name in /lib and /etc: only /etc's is read.
    fx.write("/lib/modprobe.d/amdgpu.conf", "options amdgpu noretry=0\n");
    fx.write("/etc/modprobe.d/amdgpu.conf", "options amdgpu noretry=1\n");
    // dracut present: the fix names it.
    fx.write("/usr/bin/dracut", "");
    fx.write(
        "/usr/lib/modprobe.d/50-amdgpu.conf",
        "options amdgpu mtype_local=2\n",
    );
    // The loaded module's parameter, as sysfs shows it.
    fx.write("/sys/module/amdgpu/parameters/mtype_local", "2\n");
    // A file masked with a link to /dev/null hides the packaged one of the same name.
    fx.write(
        "/lib/modprobe.d/blacklist-amdgpu.conf",
        "blacklist amdgpu\n",
    );
    std::os::unix::fs::symlink(
        "/dev/null",
        fx.path("/etc/modprobe.d/blacklist-amdgpu.conf"),
    )
    .unwrap();
    // An absolute link is followed inside the audited root, never on the host.
    fx.write(
        "/opt/vendor/amdgpu-extra.conf",
        "options amdgpu exp_hw_support=1\n",
    );
    std::os::unix::fs::symlink(
        "/opt/vendor/amdgpu-extra.conf",
        fx.path("/etc/modprobe.d/zz-extra.conf"),
    )
    .unwrap();
    let j = scan_json(&fx, &["--sections", "options"], 1);
    assert_eq!(
        rules(&j["module_options"]),
        ["OPT-MTYPE-001", "OPT-EXPHW-001"]
    );
    assert_eq!(
        j["module_options"][1]["source"],
        "/etc/modprobe.d/zz-extra.conf"
    );
    let f = &j["module_options"][0];
    assert_eq!(f["source"], "/usr/lib/modprobe.d/50-amdgpu.conf");
    assert!(f["why"]
        .as_str()
        .unwrap()
        .contains("/sys/module/amdgpu/parameters/mtype_local is 2"));
    assert_eq!(
        f["action"]["then"],
        serde_json::json!(["dracut -f --regenerate-all", "reboot"])
    );
    let notes = j["sections"]["module_options"]["notes"].to_string();
    assert!(
        notes.contains("/lib/modprobe.d/amdgpu.conf is not read: /etc/modprobe.d/amdgpu.conf has the same name"),
        "{notes}"
    );
}

#[test]
fn options_grub_line_with_a_leftover_blacklist() {
    let fx = Fixture::new();
    fx.write(
        "/etc/default/grub",
        "GRUB_DEFAULT=0\nGRUB_TIMEOUT=5\nGRUB_CMDLINE_LINUX_DEFAULT=\"quiet splash modprobe.blacklist=amdgpu\"\nGRUB_CMDLINE_LINUX=\"\"\n",
    );
    fx.write(
        "/etc/default/grub.d/recovery.cfg",
        "GRUB_CMDLINE_LINUX=\"$GRUB_CMDLINE_LINUX amdgpu.noretry=0\"\n",
    );
    fx.write("/usr/sbin/update-grub", "");
    fx.write(
        "/proc/cmdline",
        "BOOT_IMAGE=/boot/vmlinuz-6.1.0-56-amd64 root=UUID=0b9d ro quiet splash modprobe.blacklist=amdgpu nomodeset\n",
    );
    let j = scan_json(&fx, &["--sections", "options"], 1);
    // GRUB_CMDLINE_LINUX comes first on the kernel line, then GRUB_CMDLINE_LINUX_DEFAULT.
    assert_eq!(
        rules(&j["module_options"]),
        [
            "OPT-NORETRY-001",
            "OPT-CMDLINE-BLACKLIST-001",
            "OPT-NOMODESET-001"
        ]
    );
    let bl = &j["module_options"][1];
    assert_eq!(bl["severity"], "medium");
    assert_eq!(bl["source"], "/etc/default/grub");
    assert_eq!(bl["line"], 3);
    assert_eq!(
        bl["text"],
        "GRUB_CMDLINE_LINUX_DEFAULT=\"quiet splash modprobe.blacklist=amdgpu\""
    );
    assert!(bl["why"]
        .as_str()
        .unwrap()
        .contains("The running kernel was booted with it (/proc/cmdline)."));
    assert!(bl["fix"].as_str().unwrap().starts_with(
        "Remove 'modprobe.blacklist=amdgpu' from GRUB_CMDLINE_LINUX_DEFAULT in /etc/default/grub line 3, run 'update-grub' and reboot."
    ));
    assert_eq!(
        bl["action"],
        serde_json::json!({"kind": "remove-setting", "file": "/etc/default/grub", "line": 3,
            "setting": "modprobe.blacklist=amdgpu", "whole_line": false, "then": ["update-grub", "reboot"]})
    );
    let noretry = &j["module_options"][0];
    assert_eq!(noretry["source"], "/etc/default/grub.d/recovery.cfg");
    assert_eq!(noretry["line"], 1);
    // nomodeset is only on the running kernel's line: a reboot drops it.
    let nm = &j["module_options"][2];
    assert_eq!(nm["source"], "/proc/cmdline");
    assert_eq!(nm["action"]["kind"], "reboot");
    assert!(nm["fix"].as_str().unwrap().contains(
        "it is in no boot configuration kfd-audit read (/etc/default/grub, /etc/default/grub.d/recovery.cfg)"
    ));

    // A later grub.d file that assigns the variable anew drops the earlier value.
    fx.write(
        "/etc/default/grub.d/zz-clean.cfg",
        "GRUB_CMDLINE_LINUX_DEFAULT=\"quiet splash\"\n",
    );
    let j = scan_json(&fx, &["--sections", "options"], 1);
    let dropped = j["module_options"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["source"] == "/etc/default/grub")
        .unwrap();
    assert_eq!(dropped["rule"], "OPT-CMDLINE-BLACKLIST-001");
    assert_eq!(dropped["severity"], "info");
    assert!(dropped["why"].as_str().unwrap().contains(
        "the assignment at /etc/default/grub.d/zz-clean.cfg line 1 replaces the variable's value"
    ));
    // ... and the running kernel's blacklist is then reported from /proc/cmdline.
    let from_proc: Vec<&Value> = j["module_options"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["source"] == "/proc/cmdline")
        .collect();
    assert_eq!(from_proc.len(), 2);
    assert_eq!(from_proc[0]["rule"], "OPT-CMDLINE-BLACKLIST-001");

    let out = fx.run(&["scan", "--sections", "options", "-v"]).stdout();
    assert!(
        out.contains("INFO OPT-CMDLINE-BLACKLIST-001 /etc/default/grub:3:"),
        "{out}"
    );
    assert!(
        out.contains("MEDIUM OPT-CMDLINE-BLACKLIST-001 /proc/cmdline:1: modprobe.blacklist=amdgpu"),
        "{out}"
    );
}

// ------------------------------------------------------------------ rocm

const LIB: &str = "/opt/rocm-6.2.0/lib/libhsa-runtime64.so.1.14.60200";
const LINK: &str = "/opt/rocm-6.2.0/lib/libhsa-runtime64.so.1";

/// Installs a fake `hsa-rocr` package: a library, its soname link and a header, with
/// dpkg's md5sums and file list.
fn hsa_rocr(fx: &Fixture) -> &'static [u8] {
    const CLEAN: &[u8] = b"\x7fELF clean ROCr runtime 1.14.60200";
    fx.write(LIB, CLEAN);
    let header = b"/* hsa.h */\n";
    fx.write("/opt/rocm-6.2.0/include/hsa/hsa.h", header);
    std::os::unix::fs::symlink("libhsa-runtime64.so.1.14.60200", fx.path(LINK)).unwrap();
    fx.write(
        "/var/lib/dpkg/info/hsa-rocr.md5sums",
        format!(
            "{}  {}\n{}  opt/rocm-6.2.0/include/hsa/hsa.h\n",
            md5_hex(CLEAN),
            LIB.trim_start_matches('/'),
            md5_hex(header)
        ),
    );
    fx.write(
        "/var/lib/dpkg/info/hsa-rocr.list",
        format!("/.\n/opt\n/opt/rocm-6.2.0\n/opt/rocm-6.2.0/lib\n{LIB}\n{LINK}\n/opt/rocm-6.2.0/include/hsa/hsa.h\n"),
    );
    // A package the default patterns do not name is not read.
    fx.write(
        "/var/lib/dpkg/info/bash.md5sums",
        "00000000000000000000000000000000  bin/bash\n",
    );
    CLEAN
}

#[test]
fn rocm_clean_package_has_no_finding() {
    let fx = Fixture::new();
    hsa_rocr(&fx);
    let j = scan_json(&fx, &["--sections", "rocm"], 0);
    assert_eq!(j["rocm"], serde_json::json!([]));
    assert_eq!(
        j["sections"]["rocm"]["packages"],
        serde_json::json!([{"package": "hsa-rocr", "files": 2, "ok": 2, "modified": 0, "missing": 0}])
    );
}

#[test]
fn rocm_library_replaced_with_a_backup_beside_it() {
    let fx = Fixture::new();
    let clean = hsa_rocr(&fx);
    // What the incident did: keep the original as .backup, copy a rebuilt one over it.
    fx.write(&format!("{LIB}.backup"), clean);
    fx.write(LIB, b"\x7fELF rebuilt ROCr that accepts gfx1010");
    let j = scan_json(&fx, &["--sections", "rocm"], 1);
    assert_eq!(rules(&j["rocm"]), ["ROCM-FILE-001"]);
    let f = &j["rocm"][0];
    assert_eq!(f["severity"], "high");
    assert_eq!(f["source"], LIB);
    assert_eq!(f["package"], "hsa-rocr");
    assert_eq!(f["line"], 0);
    assert_eq!(
        f["backups"],
        serde_json::json!([{"path": format!("{LIB}.backup"), "verdict": "verified-clean", "matches": LIB}])
    );
    assert_eq!(
        f["action"],
        serde_json::json!({"kind": "reinstall-package", "package": "hsa-rocr",
            "command": "apt-get install --reinstall hsa-rocr"})
    );
    let fix = f["fix"].as_str().unwrap();
    assert!(
        fix.starts_with("Reinstall the package: apt-get install --reinstall hsa-rocr."),
        "{fix}"
    );
    assert!(
        fix.contains(&format!("{LIB}.backup is a verified-clean copy")),
        "{fix}"
    );
    assert_eq!(j["sections"]["rocm"]["packages"][0]["modified"], 1);

    let out = fx.run(&["scan", "--sections", "rocm", "-v"]).stdout();
    assert!(
        out.contains("ROCm user space (1 packages, 2 files): 1 to fix"),
        "{out}"
    );
    assert!(
        out.contains(&format!("  HIGH ROCM-FILE-001 {LIB}: {LIB}\n")),
        "{out}"
    );
    assert!(
        out.contains(&format!("      backup {LIB}.backup: verified-clean\n")),
        "{out}"
    );

    // The soname link replaced by a regular file (cp --remove-destination, mv) is found
    // too, and a patched copy left beside an intact file is reported low.
    let fx = Fixture::new();
    let clean = hsa_rocr(&fx);
    std::fs::remove_file(fx.path(LINK)).unwrap();
    fx.write(LINK, b"\x7fELF rebuilt ROCr");
    fx.write(&format!("{LINK}.orig"), clean);
    fx.write(&format!("{LIB}.patched"), b"\x7fELF another build");
    let j = scan_json(&fx, &["--sections", "rocm"], 1);
    assert_eq!(rules(&j["rocm"]), ["ROCM-FILE-004", "ROCM-BACKUP-001"]);
    assert_eq!(j["rocm"][1]["severity"], "low");
    assert_eq!(j["rocm"][1]["source"], format!("{LIB}.patched"));
    let link = &j["rocm"][0];
    assert_eq!(link["source"], LINK);
    assert_eq!(link["backups"][0]["verdict"], "verified-clean");
    assert_eq!(link["backups"][0]["matches"], LIB);

    // --rocm-packages replaces the default list.
    let j = scan_json(&fx, &["--sections", "rocm", "--rocm-packages", "bash"], 1);
    assert_eq!(
        j["sections"]["rocm"]["patterns"],
        serde_json::json!(["bash"])
    );
    assert_eq!(j["sections"]["rocm"]["packages"][0]["package"], "bash");
    assert_eq!(rules(&j["rocm"]), ["ROCM-FILE-002"]);
}

#[test]
fn hsa_override_10_3_0_on_a_gfx1010_gpu_is_critical() {
    let fx = Fixture::new();
    navi10(&fx, &[], 0);
    fx.write(
        "/etc/profile.d/rocm-hack.sh",
        "# make ROCm accept the RX 5700 XT\nexport PATH=$PATH:/opt/rocm/bin\nexport HSA_OVERRIDE_GFX_VERSION=10.3.0\n",
    );
    fx.write(
        "/etc/environment",
        "PATH=\"/usr/local/bin:/usr/bin:/bin\"\nHSA_OVERRIDE_GFX_VERSION_0=\"10.1.0\"\n",
    );
    fx.write(
        "/etc/systemd/system/ollama.service.d/override.conf",
        "[Service]\nEnvironment=\"HSA_OVERRIDE_GFX_VERSION=10.3.1\" \"OLLAMA_HOST=0.0.0.0\"\n",
    );
    // A start-up file that cannot be read is noted; the scan goes on.
    std::fs::create_dir_all(fx.path("/root/.bashrc")).unwrap();
    let j = scan_json(&fx, &["--sections", "rocm"], 1);
    assert!(
        j["sections"]["rocm"]["notes"]
            .to_string()
            .contains("/root/.bashrc: not read"),
        "{}",
        j["sections"]["rocm"]
    );
    let found: Vec<(String, String, String, u64)> = j["rocm"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["rule"].as_str().unwrap().into(),
                f["severity"].as_str().unwrap().into(),
                f["source"].as_str().unwrap().into(),
                f["line"].as_u64().unwrap(),
            )
        })
        .collect();
    let want: Vec<(String, String, String, u64)> = [
        // Node 0 is the CPU: the per-node form names no GPU.
        ("ROCM-ENV-003", "low", "/etc/environment", 2),
        ("ROCM-ENV-001", "critical", "/etc/profile.d/rocm-hack.sh", 3),
        (
            "ROCM-ENV-001",
            "critical",
            "/etc/systemd/system/ollama.service.d/override.conf",
            2,
        ),
    ]
    .iter()
    .map(|(a, b, c, d)| (a.to_string(), b.to_string(), c.to_string(), *d))
    .collect();
    assert_eq!(found, want);
    let f = &j["rocm"][1];
    assert_eq!(f["text"], "HSA_OVERRIDE_GFX_VERSION=10.3.0");
    let why = f["why"].as_str().unwrap();
    assert!(
        why.contains("node 1 (PCI device 0x731f), a gfx1010 (Navi10, RDNA 1), as gfx1030"),
        "{why}"
    );
    assert!(
        why.contains("gfx1010 is not ISA-compatible with gfx1030"),
        "{why}"
    );
    assert!(why.contains("debugging"), "{why}");
    assert_eq!(
        f["action"],
        serde_json::json!({"kind": "unset-variable", "variable": "HSA_OVERRIDE_GFX_VERSION",
            "file": "/etc/profile.d/rocm-hack.sh", "line": 3})
    );
    assert!(f["fix"].as_str().unwrap().starts_with(
        "Delete line 3 of /etc/profile.d/rocm-hack.sh ('export HSA_OVERRIDE_GFX_VERSION=10.3.0')"
    ));
    assert_eq!(j["summary"]["critical"], 2);
    assert_eq!(j["summary"]["low"], 1);

    let out = fx.run(&["scan", "--sections", "rocm", "-v"]).stdout();
    assert!(out.contains(
        "  CRITICAL ROCM-ENV-001 /etc/profile.d/rocm-hack.sh:3: HSA_OVERRIDE_GFX_VERSION=10.3.0\n      HSA_OVERRIDE_GFX_VERSION names another instruction set\n"
    ), "{out}");

    // A per-node override in the same file comes first for its node (libhsakmt reads
    // HSA_OVERRIDE_GFX_VERSION_<node> before HSA_OVERRIDE_GFX_VERSION).
    let fx2 = Fixture::new();
    navi10(&fx2, &[], 0);
    fx2.write(
        "/etc/profile.d/rocm.sh",
        "export HSA_OVERRIDE_GFX_VERSION=10.3.0\nexport HSA_OVERRIDE_GFX_VERSION_1=10.1.0\n",
    );
    let j = scan_json(&fx2, &["--sections", "rocm"], 0);
    assert_eq!(rules(&j["rocm"]), ["ROCM-ENV-005", "ROCM-ENV-004"]);
    assert_eq!(j["summary"]["info"], 2);

    // Without sysfs (a system mounted from a live USB) the override is still reported.
    let fx = Fixture::new();
    fx.write("/etc/environment", "HSA_OVERRIDE_GFX_VERSION=10.3.0\n");
    let j = scan_json(&fx, &["--sections", "rocm"], 1);
    assert_eq!(rules(&j["rocm"]), ["ROCM-ENV-003"]);
    assert_eq!(j["rocm"][0]["severity"], "medium");
    // A malformed value is one ROCm itself refuses.
    fx.write("/etc/environment", "HSA_OVERRIDE_GFX_VERSION=gfx1030\n");
    let j = scan_json(&fx, &["--sections", "rocm"], 1);
    assert_eq!(rules(&j["rocm"]), ["ROCM-ENV-002"]);
}

// ------------------------------------------------------------------ together

#[test]
fn the_incident_machine_all_sections_text_json_markdown() {
    let fx = Fixture::new();
    fx.amdgpu_tree();
    navi10(&fx, &[("gfx_target_version", 100300)], 1);
    fx.write(
        "/etc/modprobe.d/amdgpu.conf",
        "options amdgpu mtype_local=1 noretry=0 vm_fragment_size=9\n",
    );
    let clean = hsa_rocr(&fx);
    fx.write(&format!("{LIB}.backup"), clean);
    fx.write(LIB, b"rebuilt");
    fx.write("/etc/environment", "HSA_OVERRIDE_GFX_VERSION=10.3.0\n");

    let j = scan_json(&fx, &[], 1);
    assert_eq!(j["trees"][0]["files"], serde_json::json!([]));
    assert_eq!(rules(&j["live"]), ["LIVE-GFX-001", "LIVE-MEM-001"]);
    assert_eq!(
        rules(&j["module_options"]),
        ["OPT-MTYPE-001", "OPT-NORETRY-001", "OPT-FRAG-001"]
    );
    assert_eq!(rules(&j["rocm"]), ["ROCM-FILE-001", "ROCM-ENV-001"]);
    assert_eq!(j["summary"]["findings"], 7);
    assert_eq!(j["summary"]["critical"], 3);
    assert_eq!(j["summary"]["high"], 1);
    assert_eq!(j["summary"]["medium"], 2);
    assert_eq!(j["summary"]["low"], 1);

    let run = fx.run(&["scan"]);
    run.expect_code(1);
    let out = run.stdout();
    // Issue 15/17: the headline names its reason (the findings beyond the tree), not
    // "CHANGED: 0 modified" for a tree that did not change.
    assert!(out.starts_with(
        "kfd-audit scan UNSAFE: 6 unsafe findings\n  5 files checked in 1 tree: 0 modified, 0 missing, 0 added\n  findings: 3 critical, 1 high, 2 medium, 1 low, 0 info\n"
    ), "{out}");
    let live = out.find("running driver (").unwrap();
    let opts = out.find("module options (").unwrap();
    let rocm = out.find("ROCm user space (").unwrap();
    assert!(live < opts && opts < rocm, "{out}");

    let md = fx.run(&["--format", "markdown", "scan"]).stdout();
    assert!(md.contains("## Running driver"), "{md}");
    assert!(
        md.contains(&format!(
            "### CRITICAL LIVE-GFX-001 — `{NODES}/1/properties:19`"
        )),
        "{md}"
    );
    assert!(md.contains("## Module options"), "{md}");
    assert!(
        md.contains(&format!("### HIGH ROCM-FILE-001 — `{LIB}`")),
        "{md}"
    );

    // Only the tree: the machine's other problems are not looked at.
    let j = scan_json(&fx, &["--sections", "tree"], 0);
    assert!(
        j.get("live").is_none() && j.get("rocm").is_none() && j.get("module_options").is_none()
    );
    // Unknown sections are refused by name.
    let run = fx.run(&["scan", "--sections", "tree,gpu"]);
    run.expect_code(2);
    assert!(
        run.stderr().contains("invalid value 'gpu'"),
        "{}",
        run.stderr()
    );
    // The alias from the issue works.
    let j = scan_json(&fx, &["--sections", "modopts"], 1);
    assert!(j.get("module_options").is_some());
}

// ------------------------------------------------------------------ the table

/// Every row of the device table against the corpus: the id's CHIP_ in amdgpu_drv.c's
/// pciidlist, and the target version kfd_device.c gives that chip.
#[test]
fn gpu_table_matches_the_corpus() {
    let Some(corpus) = corpus() else { return };
    let amd = corpus.join("usr/src/amdgpu-6.12.117-debian/amd");
    let drv = std::fs::read_to_string(amd.join("amdgpu/amdgpu_drv.c")).unwrap();
    let kfd = std::fs::read_to_string(amd.join("amdkfd/kfd_device.c")).unwrap();
    let older = std::fs::read_to_string(
        corpus.join("usr/src/amdgpu-6.1.192-debian/amd/amdgpu/amdgpu_drv.c"),
    )
    .unwrap();
    let id_line = regex::Regex::new(
        r"\{0x1002, 0x([0-9A-Fa-f]{4}), PCI_ANY_ID, PCI_ANY_ID, 0, 0, (CHIP_[A-Z0-9_]+)((?:\|AMD_[A-Z_]+)*)\}",
    )
    .unwrap();
    let mut chips = std::collections::HashMap::new();
    for text in [&older, &drv] {
        for c in id_line.captures_iter(text) {
            let id = u16::from_str_radix(&c[1], 16).unwrap();
            chips.insert(id, (c[2].to_string(), c[3].contains("AMD_IS_APU")));
        }
    }
    assert!(chips.len() > 300);
    for (id, asic) in kfd_audit::gpu_table::PCI_IDS {
        let (chip, apu) = chips
            .get(id)
            .unwrap_or_else(|| panic!("0x{id:04x} not in pciidlist"));
        assert_eq!(chip, asic.chip, "0x{id:04x}");
        assert_eq!(*apu, asic.apu, "0x{id:04x} AMD_IS_APU");
        // The version kfd_device.c assigns: by GC IP version, or by CHIP_ for GFX7/8.
        let anchor = match asic.gc.split('/').next().unwrap() {
            "" => format!("case {}:", asic.chip),
            gc => {
                let v: Vec<&str> = gc.split('.').collect();
                format!("case IP_VERSION({}, {}, {}):", v[0], v[1], v[2])
            }
        };
        let probe = &kfd[kfd.find("kgd2kfd_probe").unwrap()..];
        let at = probe
            .find(&anchor)
            .unwrap_or_else(|| panic!("{anchor} in kgd2kfd_probe"));
        let assigned = &probe[at..];
        let v = &assigned[assigned.find("gfx_target_version = ").unwrap() + 21..];
        let v: u32 = v[..v.find(';').unwrap()].trim().parse().unwrap();
        assert_eq!(v, asic.gfx_target_version, "{} ({anchor})", asic.name);
    }
    // Every KFD-capable id of pciidlist is in the table.
    let known: std::collections::HashSet<&str> = kfd_audit::gpu_table::PCI_IDS
        .iter()
        .map(|(_, a)| a.chip)
        .collect();
    for (id, (chip, _)) in &chips {
        if known.contains(chip.as_str()) {
            assert!(
                kfd_audit::gpu_table::lookup(4098, u32::from(*id)).is_some(),
                "0x{id:04x} {chip} missing from the table"
            );
        }
    }
}
