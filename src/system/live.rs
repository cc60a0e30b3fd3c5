//! The running driver, as amdkfd describes it in sysfs: a clean source tree does not
//! mean the module in memory is clean. A driver that still reports another chip's
//! `gfx_target_version`, or VRAM flags the hardware cannot have, is the unsafe code
//! running right now.
//!
//! Format (amd/amdkfd/kfd_topology.c): `nodes/<n>/properties` is printed by
//! `node_show()` and `mem_banks/<m>/properties` by `mem_show()`, one `"%s %u\n"` or
//! `"%s %llu\n"` line per property, e.g. `gfx_target_version 100100`,
//! `vendor_id 4098`, `device_id 29471`, `heap_type 1`, `flags 0`. CPU nodes print
//! `simd_count 0` and `gfx_target_version 0`; only GPU nodes print `capability`.
//!
//! Values (uapi linux/kfd_sysfs.h): `HSA_MEM_HEAP_TYPE_SYSTEM` 0, `_FB_PUBLIC` 1,
//! `_FB_PRIVATE` 2; `HSA_MEM_FLAGS_HOT_PLUGGABLE` 0x1, `HSA_MEM_FLAGS_NON_VOLATILE`
//! 0x2; `HSA_CAP_FLAGS_COHERENTHOSTACCESS` 0x10000000.

use crate::error::{Error, Result};
use crate::finding::{Finding, Severity};
use crate::gpu_table::{self, Asic};
use crate::io::root::Root;
use crate::system::{Action, LiveSection, NodeSummary, Section, SectionStatus, SystemFinding};
use crate::system::{Collected, Context, Details, SystemSection};

/// Where amdkfd publishes its topology.
pub(crate) const NODES_DIR: &str = "/sys/class/kfd/kfd/topology/nodes";

pub(crate) const HEAP_TYPE_SYSTEM: u64 = 0;
pub(crate) const HEAP_TYPE_FB_PUBLIC: u64 = 1;
pub(crate) const HEAP_TYPE_FB_PRIVATE: u64 = 2;
pub(crate) const MEM_FLAGS_HOT_PLUGGABLE: u64 = 0x1;
pub(crate) const MEM_FLAGS_NON_VOLATILE: u64 = 0x2;
pub(crate) const CAP_FLAGS_COHERENTHOSTACCESS: u64 = 0x1000_0000;

/// One parsed property: `(key, value, 1-based line)`.
pub(crate) type Property = (String, u64, usize);

/// One `properties` file: `(key, value, 1-based line)` in the order printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Properties {
    /// System path, e.g. `/sys/class/kfd/kfd/topology/nodes/1/properties`.
    pub file: String,
    pub values: Vec<Property>,
}

impl Properties {
    pub(crate) fn get(&self, key: &str) -> Option<u64> {
        self.entry(key).map(|(v, _)| v)
    }

    /// The value and its line.
    pub(crate) fn entry(&self, key: &str) -> Option<(u64, usize)> {
        self.values
            .iter()
            .find(|(k, _, _)| k == key)
            .map(|(_, v, l)| (*v, *l))
    }

    /// The line as the kernel printed it, for a finding's `text`.
    pub(crate) fn line_text(&self, key: &str) -> String {
        match self.get(key) {
            Some(v) => format!("{key} {v}"),
            None => key.to_string(),
        }
    }
}

/// Parses a properties file: every non-empty line is `<key> <unsigned decimal>`.
/// Err carries the 1-based line and what is wrong with it.
pub fn parse_properties(text: &str) -> std::result::Result<Vec<Property>, (usize, String)> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let mut parts = line.split_whitespace();
        let (Some(key), Some(value), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err((i + 1, format!("expected '<name> <number>', found '{line}'")));
        };
        let value: u64 = value.parse().map_err(|_| {
            (
                i + 1,
                format!("'{value}' is not an unsigned decimal number (the kernel prints %u/%llu)"),
            )
        })?;
        out.push((key.to_string(), value, i + 1));
    }
    Ok(out)
}

/// One memory bank of a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MemBank {
    pub id: u32,
    pub props: Properties,
}

/// One topology node (a CPU, a GPU, or an APU's GPU).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Node {
    pub id: u32,
    pub props: Properties,
    /// The `name` attribute (the ASIC name in lower case), when readable.
    pub name: Option<String>,
    pub mem_banks: Vec<MemBank>,
}

/// What a node is, from its own properties and the device table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NodeKind {
    Cpu,
    /// A GPU with its own VRAM.
    DiscreteGpu,
    /// An integrated GPU: it shares system memory, and firmware (ACPI CRAT) may
    /// describe that memory with flags a discrete card never has.
    IntegratedGpu,
    /// A GPU whose device id kfd-audit's table does not know.
    UnknownGpu,
}

impl Node {
    fn get(&self, key: &str) -> u64 {
        self.props.get(key).unwrap_or(0)
    }

    pub(crate) fn is_gpu(&self) -> bool {
        self.get("simd_count") > 0
    }

    /// The ASIC upstream binds to this node's PCI id.
    pub(crate) fn asic(&self) -> Option<&'static Asic> {
        if !self.is_gpu() {
            return None;
        }
        gpu_table::lookup(self.get("vendor_id") as u32, self.get("device_id") as u32)
    }

    pub(crate) fn kind(&self) -> NodeKind {
        if !self.is_gpu() {
            return NodeKind::Cpu;
        }
        // A node with both CPU cores and SIMDs is an APU described by the BIOS CRAT.
        if self.get("cpu_cores_count") > 0 {
            return NodeKind::IntegratedGpu;
        }
        match self.asic() {
            Some(a) if a.apu => NodeKind::IntegratedGpu,
            Some(_) => NodeKind::DiscreteGpu,
            None => NodeKind::UnknownGpu,
        }
    }

    pub(crate) fn device_id_hex(&self) -> Option<String> {
        self.props.get("device_id").map(|d| format!("0x{d:04x}"))
    }

    fn describe(&self) -> String {
        let dev = self.device_id_hex().unwrap_or_else(|| "?".into());
        match self.asic() {
            Some(a) => format!("PCI device {dev}, {} ({})", a.name, a.generation),
            None => format!("PCI device {dev}"),
        }
    }
}

/// The whole topology as read under the root.
#[derive(Debug, Clone, Default)]
pub(crate) struct Topology {
    pub nodes: Vec<Node>,
    /// Whether `<root>/sys/class/kfd/kfd/topology/nodes` exists at all.
    pub present: bool,
    pub notes: Vec<String>,
}

impl Topology {
    pub(crate) fn gpus(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(|n| n.is_gpu())
    }

    pub(crate) fn node(&self, id: u32) -> Option<&Node> {
        self.nodes.iter().find(|n| n.id == id)
    }
}

fn numbered_dirs(host: &std::path::Path) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir(host) else {
        return Vec::new();
    };
    let mut ids: Vec<u32> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    ids.sort_unstable();
    ids
}

/// Reads one properties file. Unreadable (amdkfd answers EPERM to a process outside
/// the device cgroup) → a note and `None`; malformed → an error naming file and line,
/// or with `lenient` a note.
fn read_props(
    root: &Root,
    system: &str,
    lenient: bool,
    notes: &mut Vec<String>,
) -> Result<Option<Properties>> {
    let host = root.path(system);
    let text = match crate::system::read_small(&host, crate::system::MAX_TEXT_FILE) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(why) => {
            let why = why.unwrap_or_else(|| "No such file or directory".into());
            notes.push(format!("{system}: not read ({why})"));
            return Ok(None);
        }
    };
    match parse_properties(&text) {
        Ok(values) => Ok(Some(Properties {
            file: system.to_string(),
            values,
        })),
        Err((line, msg)) if lenient => {
            notes.push(format!("{system}:{line}: skipped ({msg})"));
            Ok(None)
        }
        Err((line, msg)) => Err(Error::malformed(
            host,
            line,
            format!("{msg}; this is not what amdkfd prints: check the copy of /sys under --root, or pass --lenient to skip the node"),
        )),
    }
}

/// Reads every node and memory bank under `<root>/sys/class/kfd/kfd/topology/nodes`.
pub(crate) fn read_topology(root: &Root, lenient: bool) -> Result<Topology> {
    let dir = root.path(NODES_DIR);
    let mut topo = Topology {
        present: dir.is_dir(),
        ..Topology::default()
    };
    if !topo.present {
        topo.notes.push(format!(
            "no {NODES_DIR} under this root: amdkfd is not loaded, or this is not the running system (sysfs is only there for the running kernel)"
        ));
        return Ok(topo);
    }
    for id in numbered_dirs(&dir) {
        let base = format!("{NODES_DIR}/{id}");
        let Some(props) = read_props(
            root,
            &format!("{base}/properties"),
            lenient,
            &mut topo.notes,
        )?
        else {
            continue;
        };
        let name = crate::system::read_small(
            &root.path(format!("{base}/name")),
            crate::system::MAX_TEXT_FILE,
        )
        .ok()
        .map(|s| String::from_utf8_lossy(&s).trim().to_string())
        .filter(|s| !s.is_empty());
        let mut mem_banks = Vec::new();
        for m in numbered_dirs(&root.path(format!("{base}/mem_banks"))) {
            if let Some(p) = read_props(
                root,
                &format!("{base}/mem_banks/{m}/properties"),
                lenient,
                &mut topo.notes,
            )? {
                mem_banks.push(MemBank { id: m, props: p });
            }
        }
        topo.nodes.push(Node {
            id,
            props,
            name,
            mem_banks,
        });
    }
    Ok(topo)
}

fn restore_driver_action() -> Action {
    Action::RestoreDriver {
        then: vec![
            "kfd-audit restore".into(),
            "dkms remove, build and install the amdgpu module (kfd-audit plan prints the exact commands)".into(),
            "reboot".into(),
        ],
    }
}

const RESTORE_FIX: &str = "Restore the clean driver source ('kfd-audit restore'), rebuild and reinstall the module with DKMS ('kfd-audit plan' prints the exact sequence for this system), then reboot: the loaded module keeps reporting this until it is unloaded.";

fn live_finding(
    rule: &str,
    severity: Severity,
    title: &str,
    props: &Properties,
    key: &str,
    why: String,
) -> SystemFinding {
    let line = props.entry(key).map(|(_, l)| l).unwrap_or(0);
    SystemFinding {
        finding: Finding {
            rule: rule.into(),
            severity,
            title: title.into(),
            line,
            text: props.line_text(key),
            why,
            fix: RESTORE_FIX.into(),
        },
        source: props.file.clone(),
        package: None,
        backups: Vec::new(),
        action: restore_driver_action(),
    }
}

fn flag_names(flags: u64) -> String {
    let mut names = Vec::new();
    if flags & MEM_FLAGS_HOT_PLUGGABLE != 0 {
        names.push("HSA_MEM_FLAGS_HOT_PLUGGABLE");
    }
    if flags & MEM_FLAGS_NON_VOLATILE != 0 {
        names.push("HSA_MEM_FLAGS_NON_VOLATILE");
    }
    names.join(" | ")
}

fn heap_name(heap: u64) -> &'static str {
    match heap {
        HEAP_TYPE_SYSTEM => "HSA_MEM_HEAP_TYPE_SYSTEM",
        HEAP_TYPE_FB_PUBLIC => "HSA_MEM_HEAP_TYPE_FB_PUBLIC",
        HEAP_TYPE_FB_PRIVATE => "HSA_MEM_HEAP_TYPE_FB_PRIVATE",
        _ => "another heap type",
    }
}

const LIVE_NOW: &str = "This is what the loaded module reports right now: the unsafe code is live, whatever the source tree looks like today.";

fn check_gfx(node: &Node, out: &mut Vec<SystemFinding>) {
    let (Some(asic), Some(actual)) = (node.asic(), node.props.get("gfx_target_version")) else {
        return;
    };
    if actual == u64::from(asic.gfx_target_version) {
        return;
    }
    let expected = asic.gfx_target_version;
    let actual32 = actual as u32;
    let gc = if asic.gc.is_empty() {
        String::new()
    } else {
        format!(" (GC IP {})", asic.gc)
    };
    let why = format!(
        "Node {n} is {desc}. Upstream amdkfd binds this device id to {chip} (amdgpu_drv.c), and gives \
         {name}{gc} the gfx_target_version {expected} ({gfx}) in kgd2kfd_probe() (kfd_device.c); \
         kfd_topology.c copies that number into sysfs unchanged. The running driver reports {actual} \
         ({gfx_actual}) instead, so it was built from changed source. ROCm chooses the machine code \
         it runs on this GPU by this number: code built for {gfx_actual} uses an instruction set \
         {gfx} does not implement, which ends in wrong results, GPU page faults or a hung machine. {LIVE_NOW}",
        n = node.id,
        desc = node.describe(),
        chip = asic.chip,
        name = asic.name,
        gfx = asic.gfx_name(),
        gfx_actual = gpu_table::gfx_name(actual32),
    );
    out.push(live_finding(
        "LIVE-GFX-001",
        Severity::Critical,
        "running driver reports another chip's gfx_target_version",
        &node.props,
        "gfx_target_version",
        why,
    ));
}

fn check_banks(node: &Node, out: &mut Vec<SystemFinding>) {
    let kind = node.kind();
    if !matches!(kind, NodeKind::DiscreteGpu | NodeKind::UnknownGpu) {
        return;
    }
    for bank in &node.mem_banks {
        let heap = bank.props.get("heap_type").unwrap_or(u64::MAX);
        let flags = bank.props.get("flags").unwrap_or(0);
        let forced = flags & (MEM_FLAGS_HOT_PLUGGABLE | MEM_FLAGS_NON_VOLATILE);
        if forced == 0 || !matches!(heap, HEAP_TYPE_FB_PUBLIC | HEAP_TYPE_FB_PRIVATE) {
            continue;
        }
        let common = format!(
            "Memory bank {b} of node {n} ({desc}) is GPU-local memory (heap_type {heap} = {heap_name}) \
             and claims flags {flags} ({names}). For a GPU amdkfd builds its memory banks from a virtual \
             CRAT it fills itself (kfd_crat.c: kfd_fill_gpu_memory_affinity() sets no such flag), so only \
             a changed driver reports them. ROCm takes these flags at their word and treats the VRAM as \
             memory the hardware can share at fine grain with the CPU; a discrete card cannot, and the \
             first kernel that relies on it (the incident: the first Conv2d) page-faults and can freeze \
             the machine. {LIVE_NOW}",
            b = bank.id,
            n = node.id,
            desc = node.describe(),
            heap_name = heap_name(heap),
            names = flag_names(forced),
        );
        let (rule, severity, title, why) = if kind == NodeKind::DiscreteGpu {
            (
                "LIVE-MEM-001",
                Severity::Critical,
                "discrete GPU's VRAM claims hot-pluggable / non-volatile flags",
                common,
            )
        } else {
            (
                "LIVE-MEM-002",
                Severity::High,
                "GPU memory bank claims hot-pluggable / non-volatile flags",
                format!(
                    "{common} kfd-audit's device table does not know this device id (newer chips are \
                     identified by IP discovery), so it cannot rule out an integrated GPU whose firmware \
                     describes shared system memory this way; on a discrete GPU this is a forced capability."
                ),
            )
        };
        out.push(live_finding(
            rule,
            severity,
            title,
            &bank.props,
            "flags",
            why,
        ));
    }
}

fn check_capability(node: &Node, out: &mut Vec<SystemFinding>) {
    if node.kind() != NodeKind::DiscreteGpu {
        return;
    }
    let Some(asic) = node.asic() else { return };
    // Aldebaran can be linked to the CPU over xGMI (gmc.xgmi.connected_to_cpu).
    if asic.chip == "CHIP_ALDEBARAN" {
        return;
    }
    let cap = node.props.get("capability").unwrap_or(0);
    if cap & CAP_FLAGS_COHERENTHOSTACCESS == 0 {
        return;
    }
    let why = format!(
        "Node {n} ({desc}) reports HSA_CAP_FLAGS_COHERENTHOSTACCESS (0x10000000) in capability {cap}. \
         kfd_topology.c sets it only for an APU that shares memory with the CPU (gmc.is_app_apu) or a \
         GPU whose xGMI link connects it to the CPU (gmc.xgmi.connected_to_cpu); a {name} on PCIe is \
         neither. ROCm uses the bit to let the CPU and GPU access the same memory coherently, which this \
         card cannot do. {LIVE_NOW}",
        n = node.id,
        desc = node.describe(),
        name = asic.name,
    );
    out.push(live_finding(
        "LIVE-CAP-001",
        Severity::High,
        "running driver claims coherent host access for a discrete GPU",
        &node.props,
        "capability",
        why,
    ));
}

/// The `live` section: the running driver's KFD topology.
pub(crate) struct LiveDriver;

impl SystemSection for LiveDriver {
    fn section(&self) -> Section {
        Section::Live
    }

    fn reads_topology(&self) -> bool {
        true
    }

    fn collect(&self, _root: &Root, ctx: &Context) -> Result<Collected> {
        let (findings, section) = check(ctx.topology()?);
        Ok(Collected {
            findings,
            details: Details::Live(section),
        })
    }
}

/// Judges the running driver's topology.
pub(crate) fn check(topo: &Topology) -> (Vec<SystemFinding>, LiveSection) {
    let mut findings = Vec::new();
    let mut nodes = Vec::new();
    let mut notes = topo.notes.clone();
    for node in &topo.nodes {
        let kind = node.kind();
        if node.is_gpu() {
            check_gfx(node, &mut findings);
            check_banks(node, &mut findings);
            check_capability(node, &mut findings);
            if kind == NodeKind::UnknownGpu {
                notes.push(format!(
                    "node {}: {} is not in kfd-audit's device table (it lists the chips amdgpu_drv.c names by id, up to RDNA 2); its gfx_target_version {} is not judged",
                    node.id,
                    node.describe(),
                    node.props.get("gfx_target_version").unwrap_or(0)
                ));
            }
        }
        let asic = node.asic();
        nodes.push(NodeSummary {
            node: node.id,
            kind: match kind {
                NodeKind::Cpu => "cpu",
                NodeKind::IntegratedGpu => "apu",
                NodeKind::DiscreteGpu | NodeKind::UnknownGpu => "gpu",
            }
            .to_string(),
            source: node.props.file.clone(),
            name: node.name.clone(),
            vendor_id: node
                .is_gpu()
                .then(|| node.props.get("vendor_id").map(|v| format!("0x{v:04x}")))
                .flatten(),
            device_id: node.is_gpu().then(|| node.device_id_hex()).flatten(),
            asic: asic.map(|a| a.name.to_string()),
            gfx_target_version: node
                .is_gpu()
                .then(|| node.props.get("gfx_target_version").map(|v| v as u32))
                .flatten(),
            expected_gfx_target_version: asic.map(|a| a.gfx_target_version),
            mem_banks: node.mem_banks.len(),
        });
    }
    let status = if topo.present && !topo.nodes.is_empty() {
        SectionStatus::Checked
    } else {
        SectionStatus::Absent
    };
    (
        findings,
        LiveSection {
            status,
            notes,
            nodes,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kernel_format() {
        let v = parse_properties("cpu_cores_count 0\nsimd_count 80\nhive_id 0\n").unwrap();
        assert_eq!(v[1], ("simd_count".to_string(), 80, 2));
        assert!(parse_properties("simd_count eighty\n").is_err());
        assert_eq!(parse_properties("a 1\nb\n").unwrap_err().0, 2);
        assert!(parse_properties("a -1\n").is_err());
    }
}
