//! Which `gfx_target_version` the upstream driver gives each AMD GPU, by PCI device id.
//!
//! A running amdkfd reports `gfx_target_version` and `device_id` for every GPU node in
//! `/sys/class/kfd/kfd/topology/nodes/<n>/properties`. Upstream derives the first from
//! the second in two steps, and this table records both, so that a driver that reports
//! another chip's version (the Navi10 card 0x731F claiming gfx1030) can be recognised.
//!
//! Sources (amdgpu 6.12.117 as shipped by Debian; 6.1.192 for the one id 6.12 dropped):
//! 1. device id → ASIC: `pciidlist[]` in `amd/amdgpu/amdgpu_drv.c`
//!    (`{0x1002, 0x731F, PCI_ANY_ID, PCI_ANY_ID, 0, 0, CHIP_NAVI10}`), including the
//!    `AMD_IS_APU` flag that marks integrated GPUs. Newer chips (RDNA3 on) are not listed
//!    there: amdgpu binds them by PCI class and reads their IP versions from the chip
//!    (IP discovery), so no fixed id → version table exists for them upstream either.
//! 2. ASIC → GC (graphics core) IP version: the `case IP_VERSION(10, 1, 10): /* NAVI10 */`
//!    comments in `amd/amdkfd/kfd_device.c`, and for Vega/Raven/Arcturus/Aldebaran the
//!    explicit `ip_versions[GC_HWIP][0] = IP_VERSION(...)` in `amd/amdgpu/amdgpu_discovery.c`.
//! 3. GC IP version (or, for GFX7/GFX8, the ASIC itself) → `gfx_target_version`: the switch
//!    in `kgd2kfd_probe()` in `amd/amdkfd/kfd_device.c` (`case IP_VERSION(10, 1, 10):
//!    gfx_target_version = 100100;`). `kfd_topology.c` copies it unchanged into the node
//!    properties (`dev->node_props.gfx_target_version = gpu->kfd->device_info.gfx_target_version`).
//!
//! ASICs that amdkfd does not drive (SI, Bonaire, Kabini, Mullins, Topaz, Stoney) have no
//! KFD node and are left out. The integration test `beyond::gpu_table_matches_the_corpus`
//! re-reads both source files and checks every row.

/// One ASIC as the upstream driver knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Asic {
    /// Code name as the driver's comments spell it, e.g. `Navi10`.
    pub name: &'static str,
    /// The `enum amd_asic_type` constant, e.g. `CHIP_NAVI10`.
    pub chip: &'static str,
    /// GC IP version(s), e.g. `10.1.10`; empty for GFX7/GFX8 parts keyed by ASIC type.
    pub gc: &'static str,
    /// What amdkfd reports as `gfx_target_version` (major*10000 + minor*100 + stepping).
    pub gfx_target_version: u32,
    /// Marked `AMD_IS_APU` in the PCI id list: an integrated GPU sharing system memory.
    pub apu: bool,
    /// Architecture generation, for people: `GCN 3`, `RDNA 1`, ...
    pub generation: &'static str,
}

impl Asic {
    /// The LLVM processor name of this ASIC's target version, e.g. `gfx1010`.
    pub(crate) fn gfx_name(&self) -> String {
        gfx_name(self.gfx_target_version)
    }
}

const fn asic(
    name: &'static str,
    chip: &'static str,
    gc: &'static str,
    gfx_target_version: u32,
    apu: bool,
    generation: &'static str,
) -> Asic {
    Asic {
        name,
        chip,
        gc,
        gfx_target_version,
        apu,
        generation,
    }
}

pub(crate) static KAVERI: Asic = asic("Kaveri", "CHIP_KAVERI", "", 70000, true, "GCN 2");
pub(crate) static HAWAII: Asic = asic("Hawaii", "CHIP_HAWAII", "", 70001, false, "GCN 2");
pub(crate) static CARRIZO: Asic = asic("Carrizo", "CHIP_CARRIZO", "", 80001, true, "GCN 3");
pub(crate) static TONGA: Asic = asic("Tonga", "CHIP_TONGA", "", 80002, false, "GCN 3");
pub(crate) static FIJI: Asic = asic("Fiji", "CHIP_FIJI", "", 80003, false, "GCN 3");
pub(crate) static POLARIS10: Asic = asic("Polaris10", "CHIP_POLARIS10", "", 80003, false, "GCN 4");
pub(crate) static POLARIS11: Asic = asic("Polaris11", "CHIP_POLARIS11", "", 80003, false, "GCN 4");
pub(crate) static POLARIS12: Asic = asic("Polaris12", "CHIP_POLARIS12", "", 80003, false, "GCN 4");
pub(crate) static VEGAM: Asic = asic("VegaM", "CHIP_VEGAM", "", 80003, false, "GCN 4");
pub(crate) static VEGA10: Asic = asic("Vega10", "CHIP_VEGA10", "9.0.1", 90000, false, "GCN 5");
pub(crate) static RAVEN: Asic = asic("Raven", "CHIP_RAVEN", "9.1.0/9.2.2", 90002, true, "GCN 5");
pub(crate) static VEGA12: Asic = asic("Vega12", "CHIP_VEGA12", "9.2.1", 90004, false, "GCN 5");
pub(crate) static VEGA20: Asic = asic("Vega20", "CHIP_VEGA20", "9.4.0", 90006, false, "GCN 5");
pub(crate) static ARCTURUS: Asic =
    asic("Arcturus", "CHIP_ARCTURUS", "9.4.1", 90008, false, "CDNA 1");
pub(crate) static ALDEBARAN: Asic = asic(
    "Aldebaran",
    "CHIP_ALDEBARAN",
    "9.4.2",
    90010,
    false,
    "CDNA 2",
);
pub(crate) static RENOIR: Asic = asic("Renoir", "CHIP_RENOIR", "9.3.0", 90012, true, "GCN 5");
pub(crate) static NAVI10: Asic = asic("Navi10", "CHIP_NAVI10", "10.1.10", 100100, false, "RDNA 1");
pub(crate) static NAVI12: Asic = asic("Navi12", "CHIP_NAVI12", "10.1.2", 100101, false, "RDNA 1");
pub(crate) static NAVI14: Asic = asic("Navi14", "CHIP_NAVI14", "10.1.1", 100102, false, "RDNA 1");
pub(crate) static CYAN_SKILLFISH: Asic = asic(
    "Cyan Skillfish",
    "CHIP_CYAN_SKILLFISH",
    "10.1.3/10.1.4",
    100103,
    true,
    "RDNA 1",
);
pub(crate) static SIENNA_CICHLID: Asic = asic(
    "Sienna Cichlid",
    "CHIP_SIENNA_CICHLID",
    "10.3.0",
    100300,
    false,
    "RDNA 2",
);
pub(crate) static NAVY_FLOUNDER: Asic = asic(
    "Navy Flounder",
    "CHIP_NAVY_FLOUNDER",
    "10.3.2",
    100301,
    false,
    "RDNA 2",
);
pub(crate) static DIMGREY_CAVEFISH: Asic = asic(
    "Dimgrey Cavefish",
    "CHIP_DIMGREY_CAVEFISH",
    "10.3.4",
    100302,
    false,
    "RDNA 2",
);
pub(crate) static VANGOGH: Asic =
    asic("Van Gogh", "CHIP_VANGOGH", "10.3.1", 100303, true, "RDNA 2");
pub(crate) static BEIGE_GOBY: Asic = asic(
    "Beige Goby",
    "CHIP_BEIGE_GOBY",
    "10.3.5",
    100304,
    false,
    "RDNA 2",
);
pub(crate) static YELLOW_CARP: Asic = asic(
    "Yellow Carp",
    "CHIP_YELLOW_CARP",
    "10.3.3",
    100305,
    true,
    "RDNA 2",
);

/// AMD's PCI vendor id (`vendor_id 4098` in the node properties).
pub(crate) const AMD_VENDOR_ID: u32 = 0x1002;

/// PCI device id → ASIC, sorted by id (binary search). Generated from `pciidlist[]`.
pub static PCI_IDS: &[(u16, &Asic)] = &[
    (0x1304, &KAVERI),
    (0x1305, &KAVERI),
    (0x1306, &KAVERI),
    (0x1307, &KAVERI),
    (0x1309, &KAVERI),
    (0x130a, &KAVERI),
    (0x130b, &KAVERI),
    (0x130c, &KAVERI),
    (0x130d, &KAVERI),
    (0x130e, &KAVERI),
    (0x130f, &KAVERI),
    (0x1310, &KAVERI),
    (0x1311, &KAVERI),
    (0x1312, &KAVERI),
    (0x1313, &KAVERI),
    (0x1315, &KAVERI),
    (0x1316, &KAVERI),
    (0x1317, &KAVERI),
    (0x1318, &KAVERI),
    (0x131b, &KAVERI),
    (0x131c, &KAVERI),
    (0x131d, &KAVERI),
    (0x13db, &CYAN_SKILLFISH),
    (0x13f9, &CYAN_SKILLFISH),
    (0x13fa, &CYAN_SKILLFISH),
    (0x13fb, &CYAN_SKILLFISH),
    (0x13fc, &CYAN_SKILLFISH),
    (0x13fe, &CYAN_SKILLFISH),
    (0x143f, &CYAN_SKILLFISH),
    (0x15d8, &RAVEN),
    (0x15dd, &RAVEN),
    (0x15e7, &RENOIR),
    (0x1636, &RENOIR),
    (0x1638, &RENOIR),
    (0x163f, &VANGOGH),
    (0x164c, &RENOIR),
    (0x164d, &YELLOW_CARP),
    (0x1681, &YELLOW_CARP),
    (0x66a0, &VEGA20),
    (0x66a1, &VEGA20),
    (0x66a2, &VEGA20),
    (0x66a3, &VEGA20),
    (0x66a4, &VEGA20),
    (0x66a7, &VEGA20),
    (0x66af, &VEGA20),
    (0x67a0, &HAWAII),
    (0x67a1, &HAWAII),
    (0x67a2, &HAWAII),
    (0x67a8, &HAWAII),
    (0x67a9, &HAWAII),
    (0x67aa, &HAWAII),
    (0x67b0, &HAWAII),
    (0x67b1, &HAWAII),
    (0x67b8, &HAWAII),
    (0x67b9, &HAWAII),
    (0x67ba, &HAWAII),
    (0x67be, &HAWAII),
    (0x67c0, &POLARIS10),
    (0x67c1, &POLARIS10),
    (0x67c2, &POLARIS10),
    (0x67c4, &POLARIS10),
    (0x67c7, &POLARIS10),
    (0x67c8, &POLARIS10),
    (0x67c9, &POLARIS10),
    (0x67ca, &POLARIS10),
    (0x67cc, &POLARIS10),
    (0x67cf, &POLARIS10),
    (0x67d0, &POLARIS10),
    (0x67d4, &POLARIS10),
    (0x67df, &POLARIS10),
    (0x67e0, &POLARIS11),
    (0x67e1, &POLARIS11),
    (0x67e3, &POLARIS11),
    (0x67e7, &POLARIS11),
    (0x67e8, &POLARIS11),
    (0x67e9, &POLARIS11),
    (0x67eb, &POLARIS11),
    (0x67ef, &POLARIS11),
    (0x67ff, &POLARIS11),
    (0x6860, &VEGA10),
    (0x6861, &VEGA10),
    (0x6862, &VEGA10),
    (0x6863, &VEGA10),
    (0x6864, &VEGA10),
    (0x6867, &VEGA10),
    (0x6868, &VEGA10),
    (0x6869, &VEGA10),
    (0x686a, &VEGA10),
    (0x686b, &VEGA10),
    (0x686c, &VEGA10),
    (0x686d, &VEGA10),
    (0x686e, &VEGA10),
    (0x686f, &VEGA10),
    (0x687f, &VEGA10),
    (0x6920, &TONGA),
    (0x6921, &TONGA),
    (0x6928, &TONGA),
    (0x6929, &TONGA),
    (0x692b, &TONGA),
    (0x692f, &TONGA),
    (0x6930, &TONGA),
    (0x6938, &TONGA),
    (0x6939, &TONGA),
    (0x693b, &TONGA),
    (0x694c, &VEGAM),
    (0x694e, &VEGAM),
    (0x694f, &VEGAM),
    (0x6980, &POLARIS12),
    (0x6981, &POLARIS12),
    (0x6985, &POLARIS12),
    (0x6986, &POLARIS12),
    (0x6987, &POLARIS12),
    (0x698f, &POLARIS12),
    (0x6995, &POLARIS12),
    (0x6997, &POLARIS12),
    (0x699f, &POLARIS12),
    (0x69a0, &VEGA12),
    (0x69a1, &VEGA12),
    (0x69a2, &VEGA12),
    (0x69a3, &VEGA12),
    (0x69af, &VEGA12),
    (0x6fdf, &POLARIS10),
    (0x7300, &FIJI),
    (0x730f, &FIJI),
    (0x7310, &NAVI10),
    (0x7312, &NAVI10),
    (0x7318, &NAVI10),
    (0x7319, &NAVI10),
    (0x731a, &NAVI10),
    (0x731b, &NAVI10),
    (0x731e, &NAVI10),
    (0x731f, &NAVI10),
    (0x7340, &NAVI14),
    (0x7341, &NAVI14),
    (0x7347, &NAVI14),
    (0x734f, &NAVI14),
    (0x7360, &NAVI12),
    (0x7362, &NAVI12),
    (0x7388, &ARCTURUS),
    (0x738c, &ARCTURUS),
    (0x738e, &ARCTURUS),
    (0x7390, &ARCTURUS),
    (0x73a0, &SIENNA_CICHLID),
    (0x73a1, &SIENNA_CICHLID),
    (0x73a2, &SIENNA_CICHLID),
    (0x73a3, &SIENNA_CICHLID),
    (0x73a5, &SIENNA_CICHLID),
    (0x73a8, &SIENNA_CICHLID),
    (0x73a9, &SIENNA_CICHLID),
    (0x73ab, &SIENNA_CICHLID),
    (0x73ac, &SIENNA_CICHLID),
    (0x73ad, &SIENNA_CICHLID),
    (0x73ae, &SIENNA_CICHLID),
    (0x73af, &SIENNA_CICHLID),
    (0x73bf, &SIENNA_CICHLID),
    (0x73c0, &NAVY_FLOUNDER),
    (0x73c1, &NAVY_FLOUNDER),
    (0x73c3, &NAVY_FLOUNDER),
    (0x73da, &NAVY_FLOUNDER),
    (0x73db, &NAVY_FLOUNDER),
    (0x73dc, &NAVY_FLOUNDER),
    (0x73dd, &NAVY_FLOUNDER),
    (0x73de, &NAVY_FLOUNDER),
    (0x73df, &NAVY_FLOUNDER),
    (0x73e0, &DIMGREY_CAVEFISH),
    (0x73e1, &DIMGREY_CAVEFISH),
    (0x73e2, &DIMGREY_CAVEFISH),
    (0x73e3, &DIMGREY_CAVEFISH),
    (0x73e8, &DIMGREY_CAVEFISH),
    (0x73e9, &DIMGREY_CAVEFISH),
    (0x73ea, &DIMGREY_CAVEFISH),
    (0x73eb, &DIMGREY_CAVEFISH),
    (0x73ec, &DIMGREY_CAVEFISH),
    (0x73ed, &DIMGREY_CAVEFISH),
    (0x73ef, &DIMGREY_CAVEFISH),
    (0x73ff, &DIMGREY_CAVEFISH),
    (0x7408, &ALDEBARAN),
    (0x740c, &ALDEBARAN),
    (0x740f, &ALDEBARAN),
    (0x7410, &ALDEBARAN),
    (0x7420, &BEIGE_GOBY),
    (0x7421, &BEIGE_GOBY),
    (0x7422, &BEIGE_GOBY),
    (0x7423, &BEIGE_GOBY),
    (0x7424, &BEIGE_GOBY),
    (0x743f, &BEIGE_GOBY),
    (0x9870, &CARRIZO),
    (0x9874, &CARRIZO),
    (0x9875, &CARRIZO),
    (0x9876, &CARRIZO),
    (0x9877, &CARRIZO),
];

/// The ASIC upstream binds to this AMD device id, when it is in the fixed id list.
pub fn lookup(vendor_id: u32, device_id: u32) -> Option<&'static Asic> {
    if vendor_id != AMD_VENDOR_ID {
        return None;
    }
    let id = u16::try_from(device_id).ok()?;
    PCI_IDS
        .binary_search_by_key(&id, |(d, _)| *d)
        .ok()
        .map(|i| PCI_IDS[i].1)
}

/// Splits a target version (`100100`) into major, minor, stepping (`10, 1, 0`).
pub(crate) fn split_version(v: u32) -> (u32, u32, u32) {
    (v / 10000, (v / 100) % 100, v % 100)
}

/// The LLVM processor name of a target version: `100100` → `gfx1010`, `90010` → `gfx90a`.
/// Minor and stepping are written as one hex digit each, as LLVM does.
pub(crate) fn gfx_name(v: u32) -> String {
    let (major, minor, step) = split_version(v);
    format!("gfx{major}{minor:x}{step:x}")
}

/// Parses `HSA_OVERRIDE_GFX_VERSION` the way libhsakmt does (`%u.%u.%u`, major ≤ 63,
/// minor and stepping ≤ 255) into a target version: `10.3.0` → `100300`.
pub fn parse_override(text: &str) -> Option<u32> {
    let mut parts = text.trim().split('.');
    let mut next = || -> Option<u32> {
        let p = parts.next()?;
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        p.parse().ok()
    };
    let (major, minor, step) = (next()?, next()?, next()?);
    if parts.next().is_some() || major > 63 || minor > 255 || step > 255 {
        return None;
    }
    Some(major * 10000 + minor * 100 + step)
}

/// The LLVM generic-processor family of a target, where one exists: code built for one
/// member may run on another member of the same family, never across families.
/// (LLVM AMDGPUUsage, "Generic processors": gfx9-generic, gfx10-1-generic,
/// gfx10-3-generic, gfx11-generic, gfx12-generic; gfx9-4-generic for gfx940-gfx950.)
pub(crate) fn generic_family(v: u32) -> Option<&'static str> {
    let (major, minor, step) = split_version(v);
    match (major, minor, step) {
        (9, 0, 0 | 2 | 4 | 6 | 9 | 12) => Some("gfx9-generic"),
        (9, 4, _) | (9, 5, 0) => Some("gfx9-4-generic"),
        (10, 1, 0..=3) => Some("gfx10-1-generic"),
        (10, 3, 0..=6) => Some("gfx10-3-generic"),
        (11, 0 | 5, _) => Some("gfx11-generic"),
        (12, 0, _) => Some("gfx12-generic"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_and_unique() {
        assert!(PCI_IDS.windows(2).all(|w| w[0].0 < w[1].0));
    }

    #[test]
    fn navi10_is_gfx1010() {
        let a = lookup(4098, 0x731F).unwrap();
        assert_eq!(a.name, "Navi10");
        assert_eq!(a.gfx_target_version, 100100);
        assert_eq!(a.gfx_name(), "gfx1010");
        assert!(!a.apu);
        assert_eq!(lookup(4098, 0x73BF).unwrap().gfx_target_version, 100300);
        assert_eq!(lookup(0x10de, 0x731F), None);
        assert_eq!(lookup(4098, 0x1_0000), None);
        assert!(lookup(4098, 0x15d8).unwrap().apu);
    }

    #[test]
    fn names_and_overrides() {
        assert_eq!(gfx_name(90010), "gfx90a");
        assert_eq!(gfx_name(90012), "gfx90c");
        assert_eq!(gfx_name(110001), "gfx1101");
        assert_eq!(parse_override("10.3.0"), Some(100300));
        assert_eq!(parse_override(" 9.0.10 "), Some(90010));
        for bad in [
            "10.3", "10.3.0.1", "gfx1030", "10.3.x", "64.0.0", "", "10..0",
        ] {
            assert_eq!(parse_override(bad), None, "{bad}");
        }
        assert_eq!(generic_family(100100), Some("gfx10-1-generic"));
        assert_eq!(generic_family(100301), Some("gfx10-3-generic"));
        assert_eq!(generic_family(90008), None);
    }
}
