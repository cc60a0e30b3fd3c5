//! The plan's model (steps, trees, the whole plan) and how it is built from the scans
//! and the DKMS state. [`build`] judges each tree, then lays out the steps one phase
//! at a time in the order the module doc of [`crate::recovery`] explains; each phase
//! is a function of its own, named after its number in that order.

use crate::dkms::{self, DkmsState, KernelState, PackageState};
use crate::io::mounts;
use crate::io::root::Root;
use crate::scan::{FileStatus, TreeScan};
use crate::term;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum StepKind {
    Remount,
    BindMount,
    Restore,
    MoveAside,
    DkmsRemove,
    DkmsBuild,
    DkmsInstall,
    Initramfs,
    Unmount,
    Reboot,
}

/// One command of the plan.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct RecoveryStep {
    /// 1-based position in the plan.
    pub number: usize,
    pub kind: StepKind,
    /// The command as a person types it (shell-quoted).
    pub command: String,
    /// The command as `plan --run` executes it (empty for steps it does not run).
    pub argv: Vec<String>,
    /// Whether `plan --run` executes it (restore and reboot are done by hand).
    pub runs: bool,
    pub why: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tree: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub package: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel: Option<String>,
}

/// What the plan knows about one tree, and why it needs recovery (or not).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct TreePlan {
    pub path: String,
    pub package: String,
    pub version: String,
    pub needs_recovery: bool,
    /// Whether the sources differ from their references (restore before rebuilding).
    pub needs_restore: bool,
    pub reasons: Vec<String>,
    pub modified: usize,
    pub missing: usize,
    pub added: usize,
    pub findings: usize,
    /// The kernels the module is rebuilt for.
    pub rebuild_for: Vec<String>,
    /// /etc/dkms override files that change the build; the plan moves them aside.
    pub overrides: Vec<String>,
    pub dkms: PackageState,
    pub notes: Vec<String>,
}

/// The whole plan for the system.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct RecoveryPlan {
    pub version: u32,
    pub root: String,
    /// Set when the commands run in `chroot <root>` (a system mounted with --root).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chroot: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub running_kernel: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initramfs_tool: Option<String>,
    pub trees: Vec<TreePlan>,
    pub steps: Vec<RecoveryStep>,
    pub notes: Vec<String>,
    /// What to do when the machine does not boot.
    pub fallback: Vec<String>,
    /// Tools the plan's commands need that the system lacks (`dkms`): `plan --run`
    /// refuses before it changes anything (a bind mount included).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub missing_tools: Vec<String>,
}

impl RecoveryPlan {
    pub(crate) fn needs_recovery(&self) -> bool {
        !self.steps.is_empty()
    }

    pub(super) fn restore_steps(&self) -> impl Iterator<Item = &RecoveryStep> {
        self.steps.iter().filter(|s| s.kind == StepKind::Restore)
    }
}

/// Choices the caller makes about the plan.
#[derive(Debug, Clone, Default)]
pub(crate) struct PlanOptions {
    /// Restore commands per tree (keyed by the tree's system path), pre-rendered by
    /// the restore engine. A tree without an entry gets `kfd-audit restore --tree ...`.
    pub restore_steps: BTreeMap<String, Vec<String>>,
    /// Run every command in `chroot <dir>` after bind-mounting /dev, /proc and /sys.
    pub chroot: Option<PathBuf>,
}

impl PlanOptions {
    /// The options for a root: a chroot unless the root is the running system.
    pub(crate) fn for_root(root: &Root) -> PlanOptions {
        PlanOptions {
            restore_steps: BTreeMap::new(),
            chroot: (!root.is_host_root()).then(|| root.dir().to_path_buf()),
        }
    }
}

pub(crate) use crate::term::shell_quote;

fn render_argv(argv: &[String]) -> String {
    argv.iter()
        .map(|a| shell_quote(a))
        .collect::<Vec<_>>()
        .join(" ")
}

pub(super) fn s(x: &str) -> String {
    x.to_string()
}

fn host_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// Lays out the steps in order, numbering them as they come.
pub(super) struct Builder {
    pub(super) chroot: Option<PathBuf>,
    pub(super) steps: Vec<RecoveryStep>,
}

impl Builder {
    /// A command of the audited system: run in the chroot when there is one.
    fn in_system(&self, argv: Vec<String>) -> Vec<String> {
        match &self.chroot {
            Some(dir) => {
                let mut v = vec![s("chroot"), host_str(dir)];
                v.extend(argv);
                v
            }
            None => argv,
        }
    }

    pub(super) fn push(
        &mut self,
        kind: StepKind,
        argv: Vec<String>,
        why: String,
    ) -> &mut RecoveryStep {
        let command = render_argv(&argv);
        self.steps.push(RecoveryStep {
            number: self.steps.len() + 1,
            kind,
            command,
            runs: !argv.is_empty(),
            argv,
            why,
            tree: None,
            package: None,
            version: None,
            kernel: None,
        });
        self.steps.last_mut().expect("just pushed")
    }

    pub(super) fn push_manual(
        &mut self,
        kind: StepKind,
        command: String,
        why: String,
    ) -> &mut RecoveryStep {
        let step = self.push(kind, Vec::new(), why);
        step.command = command;
        step
    }
}

fn tree_counts(scan: &TreeScan) -> (usize, usize, usize, usize) {
    (
        scan.count(FileStatus::Modified),
        scan.count(FileStatus::Missing),
        scan.count(FileStatus::Added),
        scan.files.iter().map(|f| f.findings.len()).sum(),
    )
}

/// Whether the tree's files need the restore command: anything that differs from the
/// references, or findings in a file that is not clean.
fn needs_restore(scan: &TreeScan) -> bool {
    scan.files
        .iter()
        .any(|f| f.status.is_notable() || (f.status != FileStatus::Ok && !f.findings.is_empty()))
}

/// How many rule findings the plan names one by one; `scan` lists them all.
const FINDINGS_NAMED: usize = 10;

/// The rule findings in the tree's changed files, worst first, one reason each, in
/// the scan's words (`amd/amdkfd/kfd_crat.c: CRITICAL KFD-MEM-001 line 43: ...`): the plan says
/// what is unsafe, not only that something changed. A finding in a file that matches
/// its reference is the rule's problem, not a change, and is left out.
fn finding_reasons(scan: &TreeScan) -> Vec<String> {
    let mut found: Vec<(&std::path::Path, &crate::finding::Finding)> = scan
        .files
        .iter()
        .filter(|f| f.status != FileStatus::Ok)
        .flat_map(|f| f.findings.iter().map(move |x| (f.path.as_path(), x)))
        .collect();
    // The worst first, so that the few named are the ones that matter; otherwise in
    // the scan's order.
    found.sort_by_key(|(_, x)| std::cmp::Reverse(x.severity));
    let found: Vec<String> = found
        .into_iter()
        .map(|(path, x)| format!("{}: {}", term::path(path), x.headline()))
        .collect();
    let more = found.len().saturating_sub(FINDINGS_NAMED);
    let mut out: Vec<String> = found.into_iter().take(FINDINGS_NAMED).collect();
    if more > 0 {
        out.push(format!(
            "and {more} more finding(s): 'kfd-audit scan' lists them all"
        ));
    }
    out
}

fn initrd_exists(root: &Root, kernel: &str) -> bool {
    [
        format!("/boot/initrd.img-{kernel}"),
        format!("/boot/initramfs-{kernel}.img"),
    ]
    .iter()
    .any(|p| root.path(p).exists())
}

/// The fallback for a machine that does not boot after the rebuild (or before it).
fn fallback_text(root: &Root, modules: &[String]) -> Vec<String> {
    // What to keep from loading is what the audited trees build: amdgpu for AMD's
    // driver (and then the screen falls back to a basic framebuffer), the tree's own
    // modules otherwise; modprobe.blacklist takes a comma-separated list.
    let amdgpu = modules.is_empty() || modules.iter().any(|m| m == "amdgpu");
    let list = if amdgpu {
        "amdgpu".to_string()
    } else {
        modules.join(",")
    };
    let effect = if amdgpu {
        "amdgpu is not loaded: the screen runs on a basic framebuffer, without GPU acceleration."
            .to_string()
    } else {
        format!("{list} is not loaded.")
    };
    let mut v = vec![
        format!(
            "At the boot menu (GRUB: hold Shift or press Esc while the machine starts), select the entry and press 'e'. \
             At the end of the line that starts with 'linux', add: modprobe.blacklist={list} — then boot with Ctrl-X or F10. \
             {effect}"
        ),
        format!(
            "Or pick 'Advanced options' → '(recovery mode)' → 'root' for a root shell (add modprobe.blacklist={list} there too if it hangs)."
        ),
        "In that shell: mount -o remount,rw / ; kfd-audit scan ; kfd-audit restore ; kfd-audit plan --run ; reboot."
            .to_string(),
        format!(
            "Removing it after: a line edited with 'e' lasts for that one boot, there is nothing to remove. If you added \
             modprobe.blacklist={list} to GRUB_CMDLINE_LINUX_DEFAULT in /etc/default/grub, delete it and run update-grub \
             (Fedora/RHEL: grub2-mkconfig -o /boot/grub2/grub.cfg); if you wrote 'blacklist {first}' into /etc/modprobe.d/, \
             delete that line and update the initramfs. After the next boot, 'cat /proc/cmdline' must not show it.",
            first = list.split(',').next().unwrap_or("amdgpu")
        ),
    ];
    if root.is_host_root() {
        v.push(
            "If no entry boots: start a live USB, mount the installed system (e.g. mount /dev/nvme0n1p2 /mnt) and run \
             kfd-audit --root /mnt plan: the commands are then printed for a chroot into /mnt."
                .to_string(),
        );
    } else {
        v.push(format!(
            "This plan is for the system mounted at {}: after the reboot, boot that system's own kernel.",
            root.dir().display()
        ));
    }
    v
}

/// The modules the trees that need recovery build (all trees when none does).
fn fallback_modules(trees: &[TreePlan]) -> Vec<String> {
    let active: Vec<&TreePlan> = trees.iter().filter(|t| t.needs_recovery).collect();
    let chosen: Vec<&TreePlan> = if active.is_empty() {
        trees.iter().collect()
    } else {
        active
    };
    let mut out: Vec<String> = chosen
        .iter()
        .flat_map(|t| t.dkms.modules.iter().cloned())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The plan for scanned trees, DKMS state included: what `restore` prints at its end.
/// `restore_steps` holds the restore engine's own commands per tree system path.
pub(crate) fn plan_for(
    root: &Root,
    scans: &[TreeScan],
    restore_steps: BTreeMap<String, Vec<String>>,
) -> RecoveryPlan {
    let state = DkmsState::collect(root, scans);
    let mut opts = PlanOptions::for_root(root);
    opts.restore_steps = restore_steps;
    build(root, scans, &state, &opts)
}

/// The mounts a chroot into the system at `--root` needs from the host.
const BINDS: [&str; 3] = ["/dev", "/proc", "/sys"];

/// Builds the recovery plan for the scanned trees: each tree is judged, then the
/// steps are laid out in the order dkms needs (see the module doc), one phase each:
///
/// 1. remount read-only filesystems the plan writes to;
/// 2. restore the clean files, then (2b) move build-changing overrides aside;
/// 3. enter the chroot;
/// 4. remove, build and install with dkms;
/// 5. rebuild the initramfs;
/// 6. leave the chroot;
/// 7. reboot.
pub(crate) fn build(
    root: &Root,
    scans: &[TreeScan],
    state: &DkmsState,
    opts: &PlanOptions,
) -> RecoveryPlan {
    let mut notes = Vec::new();
    let mut b = Builder {
        chroot: opts.chroot.clone(),
        steps: Vec::new(),
    };
    let initramfs_tool = ["update-initramfs", "dracut", "mkinitcpio"]
        .into_iter()
        .find(|t| dkms::find_tool(root, t).is_some());
    let trees: Vec<TreePlan> = scans.iter().map(|s| tree_plan(root, s, state)).collect();
    let active: Vec<&TreePlan> = trees.iter().filter(|t| t.needs_recovery).collect();
    let mut missing_tools = Vec::new();
    if !active.is_empty() {
        if dkms::find_tool(root, "dkms").is_none() {
            missing_tools.push("dkms".to_string());
            notes.push(
                "dkms is not installed in this system (no dkms in /usr/sbin, /sbin, /usr/bin, /bin): install it first \
                 (Debian/Ubuntu: apt install dkms; Fedora: dnf install dkms; RHEL/Rocky/Alma: dnf install epel-release, then dnf install dkms; \
                 SLES: zypper install dkms), or the dkms steps fail"
                    .to_string(),
            );
        }
        let kernels = initramfs_kernels(&active);
        let writes = written_paths(&active, initramfs_tool.is_some() && !kernels.is_empty());
        remount_phase(&mut b, root, &writes);
        restore_phase(&mut b, &active, opts);
        move_aside_phase(&mut b, root, &active);
        bind_mount_phase(&mut b, root);
        rebuild_phase(&mut b, &active, &mut notes);
        initramfs_phase(&mut b, root, initramfs_tool, &kernels, &mut notes);
        unmount_phase(&mut b, root);
        reboot_phase(&mut b);
        // The same reading of modprobe.d, GRUB and the command line as the scan's
        // options section, so that plan and scan never disagree about a blacklist.
        notes.extend(crate::system::modopts::blacklist_notes(root));
    }
    let fallback = fallback_text(root, &fallback_modules(&trees));
    RecoveryPlan {
        version: 1,
        root: root.dir().display().to_string(),
        chroot: opts.chroot.as_ref().map(|p| p.display().to_string()),
        running_kernel: state.running_kernel.clone(),
        initramfs_tool: initramfs_tool.map(str::to_string),
        trees,
        steps: b.steps,
        notes,
        fallback,
        missing_tools,
    }
}

/// Decides for one tree whether it needs recovery, and why: sources that differ, a
/// module built from changed sources, overrides that change the build. Also which
/// kernels the module is rebuilt for (those that had it, or run, and have headers).
fn tree_plan(root: &Root, scan: &TreeScan, state: &DkmsState) -> TreePlan {
    let path = term::path(&scan.tree.system_path);
    let pkg = state.package_for(&path).cloned().unwrap_or_else(|| {
        dkms::package_state(root, scan, &state.status, state.running_kernel.as_deref())
    });
    let (modified, missing, added, findings) = tree_counts(scan);
    let restore = needs_restore(scan);
    let mut reasons = Vec::new();
    let mut tnotes = Vec::new();
    if restore {
        let found = if findings > 0 {
            format!("; {findings} finding(s)")
        } else {
            String::new()
        };
        reasons.push(format!(
            "the sources differ from their references: {modified} modified, {missing} missing, {added} added{found}"
        ));
        reasons.extend(finding_reasons(scan));
    }
    for k in &pkg.kernels {
        if k.provenance.rebuild_due() {
            reasons.push(format!("kernel {}: {}", k.kernel, k.verdict));
        }
    }
    let overrides = crate::dkms::recipe::build_overrides(root, &pkg.name, &pkg.version);
    if !overrides.is_empty() {
        reasons.push(format!(
            "dkms reads override(s) that change how the module is built: {}",
            overrides.join(", ")
        ));
    }
    let rebuild_due = pkg.rebuild_due();
    if !restore && !rebuild_due && !pkg.changes.verified {
        tnotes.push(
            "no clean reference covers this tree (no dpkg md5sums, no baseline): kfd-audit cannot tell whether it was changed. \
             Reinstall the package (apt install --reinstall amdgpu-dkms; RHEL/Fedora: dnf reinstall amdgpu-dkms; SLES: zypper install -f amdgpu-dkms) or take a baseline while it is known clean (kfd-audit baseline create)"
                .to_string(),
        );
    }
    let needs = restore || rebuild_due || !overrides.is_empty();
    let mut rebuild_for = Vec::new();
    if needs {
        for k in &pkg.kernels {
            if !(k.has_module() || k.running) {
                continue;
            }
            if k.headers {
                rebuild_for.push(k.kernel.clone());
            } else {
                tnotes.push(no_headers_note(k, &pkg.name));
            }
        }
        if rebuild_for.is_empty() {
            tnotes.push(format!(
                "no kernel to rebuild {} for: after 'dkms remove' no kernel has this DKMS module and each uses the kernel's own \
                 driver. To build it for a kernel: install that kernel's headers, then dkms build/install -m {} -v {} -k <kernel>",
                pkg.name, pkg.name, pkg.version
            ));
        }
    }
    TreePlan {
        path,
        package: pkg.name.clone(),
        version: pkg.version.clone(),
        needs_recovery: needs,
        needs_restore: restore,
        reasons,
        modified,
        missing,
        added,
        findings,
        rebuild_for,
        overrides,
        dkms: pkg,
        notes: tnotes,
    }
}

/// The kernels that get a new initramfs: every kernel a module is rebuilt for, once,
/// oldest first.
fn initramfs_kernels(active: &[&TreePlan]) -> Vec<String> {
    let mut kernels: Vec<String> = Vec::new();
    for t in active {
        for k in &t.rebuild_for {
            if !kernels.contains(k) {
                kernels.push(k.clone());
            }
        }
    }
    kernels.sort_by(|a, c| dkms::kernel_order(a, c));
    kernels
}

/// What the plan writes to: the trees it restores, /etc/dkms when it moves an override
/// aside, the DKMS tree, the modules, and /boot when an initramfs is rebuilt.
fn written_paths(active: &[&TreePlan], writes_boot: bool) -> Vec<PathBuf> {
    let mut writes: Vec<PathBuf> = Vec::new();
    for t in active {
        if t.needs_restore {
            writes.push(PathBuf::from(&t.path));
        }
    }
    if active.iter().any(|t| !t.overrides.is_empty()) {
        writes.push(PathBuf::from("/etc/dkms"));
    }
    writes.push(PathBuf::from(dkms::DKMS_TREE));
    writes.push(PathBuf::from(dkms::MODULES_DIR));
    if writes_boot {
        writes.push(PathBuf::from("/boot"));
    }
    writes
}

/// Phase 1: make writable what the plan writes to (each read-only mount once).
fn remount_phase(b: &mut Builder, root: &Root, writes: &[PathBuf]) {
    let mut remounted: BTreeSet<PathBuf> = BTreeSet::new();
    for w in writes {
        if let mounts::Writability::ReadOnly { mount_point } = mounts::writability(root, w) {
            if !remounted.insert(mount_point.clone()) {
                continue;
            }
            // With --root the remount is the host's: the system is mounted there.
            let target = if b.chroot.is_some() {
                host_str(&root.path(&mount_point))
            } else {
                mount_point.display().to_string()
            };
            b.push(
                StepKind::Remount,
                vec![s("mount"), s("-o"), s("remount,rw"), target.clone()],
                format!(
                    "{target} is mounted read-only (it holds {}): nothing can be restored or rebuilt until it is writable",
                    w.display()
                ),
            );
        }
    }
}

/// Phase 2: restore the clean files. That is the restore command's job (its journal
/// can undo), so these steps are by hand: the restore engine's own commands when the
/// caller has them, else `kfd-audit restore --tree`.
fn restore_phase(b: &mut Builder, active: &[&TreePlan], opts: &PlanOptions) {
    for t in active {
        if !t.needs_restore {
            continue;
        }
        let commands = opts
            .restore_steps
            .get(&t.path)
            .filter(|v| !v.is_empty())
            .cloned()
            .unwrap_or_else(|| {
                // Under --root, --tree takes the audited system's path (read under
                // the root), as everything the plan prints does.
                let tree_arg = t.path.clone();
                let mut argv = vec![s("kfd-audit")];
                if let Some(dir) = &b.chroot {
                    argv.push(s("--root"));
                    argv.push(host_str(dir));
                }
                argv.extend([s("restore"), s("--tree"), tree_arg]);
                vec![render_argv(&argv)]
            });
        for c in commands {
            let step = b.push_manual(
                StepKind::Restore,
                c,
                format!(
                    "put clean files back in {} before rebuilding (a journal keeps what is replaced; 'kfd-audit undo' reverts). \
                     plan --run does not do this step",
                    t.path
                ),
            );
            step.tree = Some(t.path.clone());
        }
    }
}

/// Phase 2b: move aside overrides that change the build: renamed, never deleted, and
/// to a name dkms does not read (it reads exact `<module>...conf` names and `*.conf`).
fn move_aside_phase(b: &mut Builder, root: &Root, active: &[&TreePlan]) {
    for t in active {
        for o in &t.overrides {
            let mut n = 0;
            let aside = loop {
                let candidate = if n == 0 {
                    format!("{o}.disabled-by-kfd-audit")
                } else {
                    format!("{o}.disabled-by-kfd-audit.{n}")
                };
                if !root.path(&candidate).exists() {
                    break candidate;
                }
                n += 1;
            };
            let argv = b.in_system(vec![s("mv"), o.clone(), aside.clone()]);
            let step = b.push(
                StepKind::MoveAside,
                argv,
                format!(
                    "dkms would apply this override's build changes again; kept as {aside} (rename it back to use it again)"
                ),
            );
            step.tree = Some(t.path.clone());
        }
    }
}

/// Phase 3: enter the system mounted at --root (bind-mount what dkms needs).
fn bind_mount_phase(b: &mut Builder, root: &Root) {
    let Some(dir) = b.chroot.clone() else {
        return;
    };
    for m in BINDS {
        let target = host_str(&root.path(m));
        b.push(
            StepKind::BindMount,
            vec![s("mount"), s("--bind"), s(m), target],
            format!(
                "dkms and the initramfs tools inside chroot {} need the host's {m}",
                dir.display()
            ),
        );
    }
}

/// Phase 4: rebuild with dkms: `remove --all` first (a plain build of a built module
/// is a silent no-op), then build and install for each kernel. A tree dkms cannot
/// build gets a note instead of steps.
fn rebuild_phase(b: &mut Builder, active: &[&TreePlan], notes: &mut Vec<String>) {
    for t in active {
        let (name, version) = (t.package.clone(), t.version.clone());
        if t.dkms
            .notes
            .iter()
            .any(|n| n.contains("dkms cannot build this tree"))
        {
            notes.push(format!(
                "{}: no usable dkms.conf, so dkms cannot rebuild it: reinstall the package (apt install --reinstall amdgpu-dkms)",
                t.path
            ));
            continue;
        }
        if !dkms::is_safe_name(&name) || !dkms::is_safe_name(&version) {
            notes.push(format!(
                "{}: PACKAGE_NAME/PACKAGE_VERSION in dkms.conf ({}/{}) cannot be passed to dkms: fix dkms.conf",
                t.path,
                term::escape(&name),
                term::escape(&version)
            ));
            continue;
        }
        let argv = b.in_system(vec![
            s("dkms"),
            s("remove"),
            s("-m"),
            name.clone(),
            s("-v"),
            version.clone(),
            s("--all"),
        ]);
        let step = b.push(
            StepKind::DkmsRemove,
            argv,
            format!(
                "unregister {name}/{version} and its modules for every kernel: a plain 'dkms build' of a built module is a silent no-op"
            ),
        );
        step.tree = Some(t.path.clone());
        step.package = Some(name.clone());
        step.version = Some(version.clone());
        for k in &t.rebuild_for {
            for (kind, verb, why) in [
                (
                    StepKind::DkmsBuild,
                    "build",
                    format!(
                        "compile {name}/{version} from the sources now in {} for {k}",
                        t.path
                    ),
                ),
                (
                    StepKind::DkmsInstall,
                    "install",
                    format!("install the new modules into /lib/modules/{k}/updates/dkms"),
                ),
            ] {
                let argv = b.in_system(vec![
                    s("dkms"),
                    s(verb),
                    s("-m"),
                    name.clone(),
                    s("-v"),
                    version.clone(),
                    s("-k"),
                    k.clone(),
                ]);
                let step = b.push(kind, argv, why);
                step.tree = Some(t.path.clone());
                step.package = Some(name.clone());
                step.version = Some(version.clone());
                step.kernel = Some(k.clone());
            }
        }
    }
}

/// Phase 5: the initramfs may carry its own copy of amdgpu, and dkms 3.x does not
/// rebuild it: one step per kernel (mkinitcpio: one for every preset).
fn initramfs_phase(
    b: &mut Builder,
    root: &Root,
    tool: Option<&str>,
    kernels: &[String],
    notes: &mut Vec<String>,
) {
    match tool {
        Some("mkinitcpio") if !kernels.is_empty() => {
            let argv = b.in_system(vec![s("mkinitcpio"), s("-P")]);
            b.push(
                StepKind::Initramfs,
                argv,
                "rebuild every initramfs preset: it may carry the old amdgpu module (dkms 3.x does not do this)".into(),
            );
        }
        Some(tool) => {
            for k in kernels {
                if !initrd_exists(root, k) {
                    notes.push(format!(
                        "no initramfs for {k} in /boot (initrd.img-{k} / initramfs-{k}.img): {tool} step skipped. \
                         If /boot is a separate partition, mount it (mount /boot) and run kfd-audit plan again"
                    ));
                    continue;
                }
                let argv = if tool == "dracut" {
                    vec![s("dracut"), s("-f"), s("--kver"), k.clone()]
                } else {
                    vec![s("update-initramfs"), s("-u"), s("-k"), k.clone()]
                };
                let argv = b.in_system(argv);
                let step = b.push(
                    StepKind::Initramfs,
                    argv,
                    format!("rebuild the initramfs of {k}: it may carry the old amdgpu module (dkms 3.x does not do this)"),
                );
                step.kernel = Some(k.clone());
            }
        }
        None => {
            if !kernels.is_empty() {
                notes.push(
                    "no initramfs tool found (update-initramfs, dracut, mkinitcpio): if this system boots with an initramfs, \
                     rebuild it with its own tool for each kernel above before rebooting"
                        .to_string(),
                );
            }
        }
    }
}

/// Phase 6: leave the chroot (undo phase 3's bind mounts, last first).
fn unmount_phase(b: &mut Builder, root: &Root) {
    if b.chroot.is_none() {
        return;
    }
    for m in BINDS.iter().rev() {
        let target = host_str(&root.path(m));
        b.push(
            StepKind::Unmount,
            vec![s("umount"), target],
            format!("undo the bind mount of {m}"),
        );
    }
}

/// Phase 7: boot the clean module (by hand: plan --run does not reboot).
fn reboot_phase(b: &mut Builder) {
    b.push_manual(
        StepKind::Reboot,
        "reboot".into(),
        "boot the rebuilt module; plan --run does not reboot for you".into(),
    );
}

fn no_headers_note(k: &KernelState, name: &str) -> String {
    let role = if k.running && !k.has_module() {
        "the running kernel"
    } else if k.running {
        "the running kernel, which had the module"
    } else {
        "had the module"
    };
    format!(
        "kernel {} ({role}): no headers at /lib/modules/{}/build, so dkms cannot build for it and the plan does not try. \
         After 'dkms remove' it has no {name} DKMS module and uses the kernel's own driver. To build for it, install its headers \
         (Debian/Ubuntu: apt install linux-headers-{}) and run kfd-audit plan again",
        k.kernel, k.kernel, k.kernel
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("-m"), "-m");
        assert_eq!(
            shell_quote("/usr/src/amdgpu-6.8.5"),
            "/usr/src/amdgpu-6.8.5"
        );
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("$(rm -rf /)"), "'$(rm -rf /)'");
    }
}
