//! The recovery plan: the exact sequence that puts a clean amdgpu module back on this
//! system, and `plan --run`, which runs it one command at a time.
//!
//! The facts behind the order (checked with dkms 3.0.10 on Debian 12, see DESIGN.md):
//! - `dkms remove -m <name> -v <ver> --all` comes first: `dkms build` of a module that
//!   is already built is a silent no-op ("already built ... skip", exit 0), so without
//!   the remove the old (patched) module would stay. Removing a module that is not
//!   registered exits 3 with "is not located in the DKMS tree": that is fine.
//! - `dkms build` and `dkms install` take `-k <kernel>` for every kernel that had the
//!   module: the running kernel may not even have headers, and `-k` cannot be combined
//!   with `--all`.
//! - dkms 3.x does not rebuild the initramfs, which may carry a copy of amdgpu.
//! - dkms can print `Error!` and still exit 0, so its error output is read too.
//!
//! Restoring files is the restore command's job (it keeps a journal and can undo);
//! the plan names it, `plan --run` refuses to rebuild sources that still differ.

use crate::dkms::{self, DkmsState, KernelState, PackageState};
use crate::exit::Outcome;
use crate::io::mounts;
use crate::io::root::Root;
use crate::scan::{FileStatus, TreeScan};
use crate::term;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepKind {
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
pub struct RecoveryStep {
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
pub struct TreePlan {
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
pub struct RecoveryPlan {
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
}

impl RecoveryPlan {
    pub fn needs_recovery(&self) -> bool {
        !self.steps.is_empty()
    }

    fn restore_steps(&self) -> impl Iterator<Item = &RecoveryStep> {
        self.steps.iter().filter(|s| s.kind == StepKind::Restore)
    }
}

/// Choices the caller makes about the plan.
#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    /// Restore commands per tree (keyed by the tree's system path), pre-rendered by
    /// the restore engine. A tree without an entry gets `kfd-audit restore --tree ...`.
    pub restore_steps: BTreeMap<String, Vec<String>>,
    /// Run every command in `chroot <dir>` after bind-mounting /dev, /proc and /sys.
    pub chroot: Option<PathBuf>,
}

impl PlanOptions {
    /// The options for a root: a chroot unless the root is the running system.
    pub fn for_root(root: &Root) -> PlanOptions {
        PlanOptions {
            restore_steps: BTreeMap::new(),
            chroot: (!root.is_host_root()).then(|| root.dir().to_path_buf()),
        }
    }
}

/// Quotes an argument for a POSIX shell, only when it needs it.
pub fn shell_quote(arg: &str) -> String {
    if !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_@%+=:,./-".contains(c))
    {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', "'\\''"))
    }
}

fn render_argv(argv: &[String]) -> String {
    argv.iter()
        .map(|a| shell_quote(a))
        .collect::<Vec<_>>()
        .join(" ")
}

fn s(x: &str) -> String {
    x.to_string()
}

fn host_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

struct Builder {
    chroot: Option<PathBuf>,
    steps: Vec<RecoveryStep>,
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

    fn push(&mut self, kind: StepKind, argv: Vec<String>, why: String) -> &mut RecoveryStep {
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

    fn push_manual(&mut self, kind: StepKind, command: String, why: String) -> &mut RecoveryStep {
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

/// Notes about `modprobe.blacklist=amdgpu` or `blacklist amdgpu` already in place.
fn blacklist_notes(root: &Root) -> Vec<String> {
    let mut notes = Vec::new();
    let has_param = |text: &str| {
        text.split_whitespace().any(|w| {
            w.trim_matches('"')
                .strip_prefix("modprobe.blacklist=")
                .is_some_and(|l| l.split(',').any(|m| m == "amdgpu"))
        })
    };
    // Files of the audited system: regular files only, never a FIFO or a link to
    // /dev/zero that would hang or fill the memory.
    let read = |p: &Path| {
        crate::io::read::read_reference(p)
            .ok()
            .flatten()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    };
    if let Some(cmdline) = read(&root.path("/proc/cmdline")) {
        if has_param(&cmdline) {
            notes.push(
                "this boot has modprobe.blacklist=amdgpu on the kernel line: amdgpu is not loaded now. \
                 Rebuild first; the next normal boot loads amdgpu again (see 'If the machine does not boot')"
                    .to_string(),
            );
        }
    }
    if let Some(grub) = read(&root.path("/etc/default/grub")) {
        if grub
            .lines()
            .any(|l| !l.trim_start().starts_with('#') && has_param(l))
        {
            notes.push(
                "/etc/default/grub puts modprobe.blacklist=amdgpu on every boot: after the rebuild remove it \
                 from GRUB_CMDLINE_LINUX_DEFAULT and run update-grub (Fedora: grub2-mkconfig -o /boot/grub2/grub.cfg)"
                    .to_string(),
            );
        }
    }
    let modprobe_d = root.path("/etc/modprobe.d");
    if let Ok(rd) = std::fs::read_dir(&modprobe_d) {
        let mut files: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
        files.sort();
        for f in files {
            let Some(text) = read(&f) else {
                continue;
            };
            if text.lines().any(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                w.len() >= 2 && w[0] == "blacklist" && w[1] == "amdgpu"
            }) {
                let sys = root.system_path(&f).unwrap_or(f.clone());
                notes.push(format!(
                    "{} blacklists amdgpu: after the rebuild remove that line (and update the initramfs) or amdgpu stays unloaded",
                    term::path(&sys)
                ));
            }
        }
    }
    notes
}

/// The fallback for a machine that does not boot after the rebuild (or before it).
fn fallback_text(root: &Root) -> Vec<String> {
    let mut v = vec![
        "At the boot menu (GRUB: hold Shift or press Esc while the machine starts), select the entry and press 'e'. \
         At the end of the line that starts with 'linux', add: modprobe.blacklist=amdgpu — then boot with Ctrl-X or F10. \
         amdgpu is not loaded: the screen runs on a basic framebuffer, without GPU acceleration."
            .to_string(),
        "Or pick 'Advanced options' → '(recovery mode)' → 'root' for a root shell (add modprobe.blacklist=amdgpu there too if it hangs)."
            .to_string(),
        "In that shell: mount -o remount,rw / ; kfd-audit scan ; kfd-audit restore ; kfd-audit plan --run ; reboot."
            .to_string(),
        "Removing it after: a line edited with 'e' lasts for that one boot, there is nothing to remove. If you added \
         modprobe.blacklist=amdgpu to GRUB_CMDLINE_LINUX_DEFAULT in /etc/default/grub, delete it and run update-grub \
         (Fedora/RHEL: grub2-mkconfig -o /boot/grub2/grub.cfg); if you wrote 'blacklist amdgpu' into /etc/modprobe.d/, \
         delete that line and update the initramfs. After the next boot, 'cat /proc/cmdline' must not show it."
            .to_string(),
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

/// The plan for scanned trees, DKMS state included: what `restore` prints at its end.
/// `restore_steps` holds the restore engine's own commands per tree system path.
pub fn plan_for(
    root: &Root,
    scans: &[TreeScan],
    restore_steps: BTreeMap<String, Vec<String>>,
) -> RecoveryPlan {
    let state = DkmsState::collect(root, scans);
    let mut opts = PlanOptions::for_root(root);
    opts.restore_steps = restore_steps;
    build(root, scans, &state, &opts)
}

/// Builds the recovery plan for the scanned trees.
pub fn build(
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
    let dkms_tool = dkms::find_tool(root, "dkms");
    let initramfs_tool = ["update-initramfs", "dracut", "mkinitcpio"]
        .into_iter()
        .find(|t| dkms::find_tool(root, t).is_some());

    // Decide per tree.
    let mut trees = Vec::new();
    for scan in scans {
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
                 Reinstall the package (apt install --reinstall amdgpu-dkms) or take a baseline while it is known clean (kfd-audit baseline create)"
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
        trees.push(TreePlan {
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
        });
    }
    let active: Vec<usize> = (0..trees.len())
        .filter(|i| trees[*i].needs_recovery)
        .collect();
    if active.is_empty() {
        return RecoveryPlan {
            version: 1,
            root: root.dir().display().to_string(),
            chroot: opts.chroot.as_ref().map(|p| p.display().to_string()),
            running_kernel: state.running_kernel.clone(),
            initramfs_tool: initramfs_tool.map(str::to_string),
            trees,
            steps: Vec::new(),
            notes,
            fallback: fallback_text(root),
        };
    }
    if dkms_tool.is_none() {
        notes.push(
            "dkms is not installed in this system (no dkms in /usr/sbin, /sbin, /usr/bin, /bin): install it first \
             (Debian/Ubuntu: apt install dkms; Fedora: dnf install dkms), or the dkms steps fail"
                .to_string(),
        );
    }

    // Which kernels get a new initramfs.
    let mut initramfs_kernels: Vec<String> = Vec::new();
    for i in &active {
        for k in &trees[*i].rebuild_for {
            if !initramfs_kernels.contains(k) {
                initramfs_kernels.push(k.clone());
            }
        }
    }
    initramfs_kernels.sort_by(|a, c| dkms::kernel_order(a, c));

    // 1. Make writable what the plan writes to.
    let mut writes: Vec<PathBuf> = Vec::new();
    for i in &active {
        if trees[*i].needs_restore {
            writes.push(PathBuf::from(&trees[*i].path));
        }
    }
    if active.iter().any(|i| !trees[*i].overrides.is_empty()) {
        writes.push(PathBuf::from("/etc/dkms"));
    }
    writes.push(PathBuf::from(dkms::DKMS_TREE));
    writes.push(PathBuf::from(dkms::MODULES_DIR));
    if initramfs_tool.is_some() && !initramfs_kernels.is_empty() {
        writes.push(PathBuf::from("/boot"));
    }
    let mut remounted: BTreeSet<PathBuf> = BTreeSet::new();
    for w in &writes {
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

    // 2. Restore the clean files (the restore command's job).
    for i in &active {
        let t = &trees[*i];
        if !t.needs_restore {
            continue;
        }
        let commands = opts
            .restore_steps
            .get(&t.path)
            .filter(|v| !v.is_empty())
            .cloned()
            .unwrap_or_else(|| {
                let tree_arg = if b.chroot.is_some() {
                    host_str(&root.path(&t.path))
                } else {
                    t.path.clone()
                };
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

    // 2b. Move aside overrides that change the build: renamed, never deleted, and a
    // name dkms does not read (it reads exact `<module>...conf` names and `*.conf`).
    for i in &active {
        let t = &trees[*i];
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
            b.push(
                StepKind::MoveAside,
                argv,
                format!(
                    "dkms would apply this override's build changes again; kept as {aside} (rename it back to use it again)"
                ),
            );
            if let Some(step) = b.steps.last_mut() {
                step.tree = Some(t.path.clone());
            }
        }
    }

    // 3. Enter the system mounted at --root.
    let binds = ["/dev", "/proc", "/sys"];
    if let Some(dir) = b.chroot.clone() {
        for m in binds {
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

    // 4. Rebuild with dkms.
    for i in &active {
        let t = &trees[*i];
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

    // 5. The initramfs may carry its own copy of amdgpu.
    match initramfs_tool {
        Some("mkinitcpio") if !initramfs_kernels.is_empty() => {
            let argv = b.in_system(vec![s("mkinitcpio"), s("-P")]);
            b.push(
                StepKind::Initramfs,
                argv,
                "rebuild every initramfs preset: it may carry the old amdgpu module (dkms 3.x does not do this)".into(),
            );
        }
        Some(tool) => {
            for k in &initramfs_kernels {
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
            if !initramfs_kernels.is_empty() {
                notes.push(
                    "no initramfs tool found (update-initramfs, dracut, mkinitcpio): if this system boots with an initramfs, \
                     rebuild it with its own tool for each kernel above before rebooting"
                        .to_string(),
                );
            }
        }
    }

    // 6. Leave the chroot.
    if b.chroot.is_some() {
        for m in binds.iter().rev() {
            let target = host_str(&root.path(m));
            b.push(
                StepKind::Unmount,
                vec![s("umount"), target],
                format!("undo the bind mount of {m}"),
            );
        }
    }

    // 7. Boot the clean module.
    b.push_manual(
        StepKind::Reboot,
        "reboot".into(),
        "boot the rebuilt module; plan --run does not reboot for you".into(),
    );

    notes.extend(blacklist_notes(root));
    RecoveryPlan {
        version: 1,
        root: root.dir().display().to_string(),
        chroot: opts.chroot.as_ref().map(|p| p.display().to_string()),
        running_kernel: state.running_kernel.clone(),
        initramfs_tool: initramfs_tool.map(str::to_string),
        trees,
        steps: b.steps,
        notes,
        fallback: fallback_text(root),
    }
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

// ---------------------------------------------------------------- rendering

fn step_tag(st: &RecoveryStep) -> &'static str {
    match (st.runs, st.kind) {
        (true, _) => "",
        (false, StepKind::Restore) => "  [by hand: not run by plan --run]",
        (false, _) => "  [by hand]",
    }
}

/// The plan for a person at a terminal.
pub fn render_text(plan: &RecoveryPlan) -> String {
    let mut out = String::new();
    let active = plan.trees.iter().filter(|t| t.needs_recovery).count();
    if plan.steps.is_empty() {
        let _ = writeln!(
            out,
            "kfd-audit plan: nothing to do ({} checked)",
            plural(plan.trees.len(), "tree")
        );
    } else {
        let _ = writeln!(
            out,
            "kfd-audit plan: {} for {}{}",
            plural(plan.steps.len(), "step"),
            plural(active, "tree"),
            plan.chroot
                .as_ref()
                .map(|c| format!(
                    " (system mounted at {}; commands run in chroot)",
                    term::escape(c)
                ))
                .unwrap_or_default()
        );
    }
    if plan.trees.is_empty() {
        let _ = writeln!(
            out,
            "no amdgpu DKMS tree under {}/usr/src (name one with --tree PATH)",
            plan.root.trim_end_matches('/')
        );
    }
    if let Some(k) = &plan.running_kernel {
        let _ = writeln!(out, "running kernel: {}", term::escape(k));
    }
    for t in &plan.trees {
        let _ = writeln!(
            out,
            "\n{} ({} {})",
            term::escape(&t.path),
            term::escape(&t.package),
            term::escape(&t.version)
        );
        if t.needs_recovery {
            for r in &t.reasons {
                let _ = writeln!(out, "  needs recovery: {}", term::escape(r));
            }
        } else {
            let _ = writeln!(
                out,
                "  nothing to do: the sources match their references and no module was built from changed sources"
            );
        }
        if let Some(c) = t.dkms.changes.newest_change {
            let _ = writeln!(
                out,
                "  sources last changed {} ({})",
                dkms::format_time(c),
                term::escape(t.dkms.changes.newest_change_file.as_deref().unwrap_or("?"))
            );
        }
        for k in &t.dkms.kernels {
            out.push_str(&dkms::kernel_text(k, "  "));
        }
        for n in t.dkms.notes.iter().chain(&t.notes) {
            let _ = writeln!(out, "  note: {}", term::escape(n));
        }
    }
    if !plan.steps.is_empty() {
        let _ = writeln!(out, "\nSteps (as root, in this order):");
        for st in &plan.steps {
            let _ = writeln!(
                out,
                "  {:>2}. {}{}",
                st.number,
                term::escape(&st.command),
                step_tag(st)
            );
            let _ = writeln!(out, "      {}", term::escape(&st.why));
        }
    }
    for n in &plan.notes {
        let _ = writeln!(out, "note: {}", term::escape(n));
    }
    if !plan.steps.is_empty() {
        let _ = writeln!(out, "\nIf the machine does not boot:");
        for (i, f) in plan.fallback.iter().enumerate() {
            let _ = writeln!(out, "  {}. {}", i + 1, term::escape(f));
        }
    }
    out
}

fn md_code(s: &str) -> String {
    let ticks = if s.contains('`') { "``" } else { "`" };
    format!("{ticks}{}{ticks}", s.replace('\n', " "))
}

/// The plan as Markdown, for a bug report.
pub fn render_markdown(plan: &RecoveryPlan) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# kfd-audit recovery plan\n");
    let _ = writeln!(out, "- Root: {}", md_code(&plan.root));
    if let Some(c) = &plan.chroot {
        let _ = writeln!(
            out,
            "- Commands run in: {}",
            md_code(&format!("chroot {c}"))
        );
    }
    if let Some(k) = &plan.running_kernel {
        let _ = writeln!(out, "- Running kernel: {}", md_code(k));
    }
    if let Some(t) = &plan.initramfs_tool {
        let _ = writeln!(out, "- Initramfs tool: {}", md_code(t));
    }
    for t in &plan.trees {
        let _ = writeln!(
            out,
            "\n## {} ({} {})\n",
            md_code(&t.path),
            t.package,
            t.version
        );
        if t.needs_recovery {
            for r in &t.reasons {
                let _ = writeln!(out, "- Needs recovery: {r}");
            }
        } else {
            let _ = writeln!(out, "- Nothing to do.");
        }
        if !t.dkms.kernels.is_empty() {
            let _ = writeln!(
                out,
                "\n| kernel | module | built | installed | verdict |\n|---|---|---|---|---|"
            );
            for k in &t.dkms.kernels {
                let module = if k.installed.is_empty() {
                    if k.built.is_empty() {
                        "-".to_string()
                    } else {
                        "built, not installed".to_string()
                    }
                } else {
                    k.installed
                        .iter()
                        .map(|m| md_code(&m.path))
                        .collect::<Vec<_>>()
                        .join("<br>")
                };
                let mut name = k.kernel.clone();
                if k.running {
                    name.push_str(" (running)");
                }
                if !k.headers {
                    name.push_str(" (no headers)");
                }
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {} |",
                    md_code(&name),
                    module,
                    k.built_at
                        .map(dkms::format_time)
                        .unwrap_or_else(|| "-".into()),
                    k.installed_at
                        .map(dkms::format_time)
                        .unwrap_or_else(|| "-".into()),
                    k.verdict.replace('|', "\\|")
                );
            }
        }
        for n in t.dkms.notes.iter().chain(&t.notes) {
            let _ = writeln!(out, "\n> {n}");
        }
        for k in &t.dkms.kernels {
            for n in &k.notes {
                let _ = writeln!(out, "\n> {}: {n}", k.kernel);
            }
        }
    }
    if !plan.steps.is_empty() {
        let _ = writeln!(out, "\n## Steps\n");
        for st in &plan.steps {
            let _ = writeln!(
                out,
                "{}. {}{} — {}",
                st.number,
                md_code(&st.command),
                if st.runs { "" } else { " *(by hand)*" },
                st.why
            );
        }
    }
    if !plan.notes.is_empty() {
        let _ = writeln!(out, "\n## Notes\n");
        for n in &plan.notes {
            let _ = writeln!(out, "- {n}");
        }
    }
    if !plan.steps.is_empty() {
        let _ = writeln!(out, "\n## If the machine does not boot\n");
        for (i, f) in plan.fallback.iter().enumerate() {
            let _ = writeln!(out, "{}. {f}", i + 1);
        }
    }
    out
}

pub fn render_json(plan: &RecoveryPlan) -> String {
    serde_json::to_string_pretty(plan).expect("plan serializes") + "\n"
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("{n} {word}")
    } else {
        format!("{n} {word}s")
    }
}

// ---------------------------------------------------------------- running

/// How one command ended, judged with what is known about dkms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepOutcome {
    Done,
    /// Succeeded in a known harmless way; the text says how.
    DoneWithNote(String),
    Failed(String),
}

/// Judges a finished command. `rc` is None when it was killed by a signal.
pub fn judge(kind: StepKind, rc: Option<i32>, stdout: &str, stderr: &str) -> StepOutcome {
    let is_dkms = matches!(
        kind,
        StepKind::DkmsRemove | StepKind::DkmsBuild | StepKind::DkmsInstall
    );
    let both = format!("{stdout}\n{stderr}");
    let Some(rc) = rc else {
        return StepOutcome::Failed("killed by a signal".into());
    };
    if kind == StepKind::DkmsRemove && rc == 3 && both.contains("not located in the DKMS tree") {
        return StepOutcome::DoneWithNote("not registered with dkms: nothing to remove".into());
    }
    if rc != 0 {
        return StepOutcome::Failed(format!("exit status {rc}"));
    }
    if is_dkms {
        if let Some(line) = stderr
            .lines()
            .chain(stdout.lines())
            .find(|l| l.trim_start().starts_with("Error!"))
        {
            return StepOutcome::Failed(format!(
                "dkms printed an error but exited 0: {}",
                line.trim()
            ));
        }
    }
    // After `remove --all` these mean dkms kept the old module instead of building.
    if kind == StepKind::DkmsBuild && both.contains("already built") {
        return StepOutcome::Failed(
            "dkms skipped the build (\"already built\"): the old module was kept".into(),
        );
    }
    if kind == StepKind::DkmsInstall && both.contains("already installed") {
        return StepOutcome::Failed(
            "dkms skipped the install (\"already installed\"): the old module was kept".into(),
        );
    }
    StepOutcome::Done
}

/// What to do when a step failed.
fn advice(plan: &RecoveryPlan, st: &RecoveryStep) -> Vec<String> {
    let name = st.package.as_deref().unwrap_or("amdgpu");
    let ver = st.version.as_deref().unwrap_or("<version>");
    let mut v = match st.kind {
        StepKind::Remount => vec![
            "the filesystem could not be made writable: look at 'dmesg | tail' for filesystem errors; \
             a filesystem with errors must be checked (fsck) from a live USB first"
                .to_string(),
        ],
        StepKind::MoveAside => vec![
            "the override could not be renamed: check that /etc/dkms is writable (mount -o remount,rw /) and rename it by hand"
                .to_string(),
        ],
        StepKind::BindMount | StepKind::Unmount => vec![
            "check that the directory exists under the mounted system and that you are root".to_string(),
        ],
        StepKind::DkmsRemove => vec![format!(
            "dkms could not remove {name}/{ver}: read its message above and look at /var/lib/dkms/{name}/{ver}; \
             if that directory is damaged, move it away (mv /var/lib/dkms/{name}/{ver} /root/) and run the plan again"
        )],
        StepKind::DkmsBuild => vec![
            format!(
                "the build failed: read /var/lib/dkms/{name}/{ver}/build/make.log (the end says why)"
            ),
            format!(
                "check that the headers of {} are installed (/lib/modules/{}/build) and that the sources are clean (kfd-audit scan)",
                st.kernel.as_deref().unwrap_or("the kernel"),
                st.kernel.as_deref().unwrap_or("<kernel>")
            ),
        ],
        StepKind::DkmsInstall => vec![format!(
            "the install failed: read the message above; 'dkms status -m {name}' shows what dkms thinks is installed"
        )],
        StepKind::Initramfs => vec![
            "the module is rebuilt but the initramfs is not: fix the error above and run this step again before rebooting, \
             or the initramfs may still load the old amdgpu module"
                .to_string(),
        ],
        StepKind::Restore | StepKind::Reboot => Vec::new(),
    };
    v.push(
        "Do not reboot yet. The steps already done are safe to repeat: fix the cause and run 'kfd-audit plan --run' again."
            .to_string(),
    );
    let pending_unmounts: Vec<&RecoveryStep> = plan
        .steps
        .iter()
        .filter(|s| s.kind == StepKind::Unmount && s.number > st.number)
        .collect();
    if !pending_unmounts.is_empty() && st.kind != StepKind::BindMount {
        v.push(format!(
            "The bind mounts are still in place; to leave the system as it was: {}",
            pending_unmounts
                .iter()
                .map(|s| s.command.clone())
                .collect::<Vec<_>>()
                .join(" ; ")
        ));
    }
    v.push(
        "If you must reboot before it is fixed, boot with modprobe.blacklist=amdgpu on the kernel line (see 'If the machine does not boot')."
            .to_string(),
    );
    v
}

/// Asks the person at the terminal before anything is run.
pub trait Confirm {
    fn confirm(&mut self, prompt: &str) -> anyhow::Result<bool>;
}

/// A yes/no question on the terminal (dialoguer), default no.
pub struct TerminalConfirm;

impl Confirm for TerminalConfirm {
    fn confirm(&mut self, prompt: &str) -> anyhow::Result<bool> {
        Ok(dialoguer::Confirm::new()
            .with_prompt(prompt)
            .default(false)
            .interact()?)
    }
}

enum Line {
    Out(Vec<u8>),
    Err(Vec<u8>),
}

/// Runs one command, streaming its output (indented) as it comes, and returns its
/// exit code with everything it printed.
fn run_streaming(
    argv: &[String],
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> std::io::Result<(Option<i32>, String, String)> {
    let mut child = Command::new(&argv[0])
        .args(&argv[1..])
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let (tx, rx) = std::sync::mpsc::channel::<Line>();
    let so = child.stdout.take().expect("piped stdout");
    let se = child.stderr.take().expect("piped stderr");
    let tx2 = tx.clone();
    let t1 = std::thread::spawn(move || {
        for line in std::io::BufReader::new(so)
            .split(b'\n')
            .map_while(Result::ok)
        {
            if tx.send(Line::Out(line)).is_err() {
                break;
            }
        }
    });
    let t2 = std::thread::spawn(move || {
        for line in std::io::BufReader::new(se)
            .split(b'\n')
            .map_while(Result::ok)
        {
            if tx2.send(Line::Err(line)).is_err() {
                break;
            }
        }
    });
    let (mut all_out, mut all_err) = (String::new(), String::new());
    for line in rx {
        match line {
            Line::Out(l) => {
                let text = String::from_utf8_lossy(&l).into_owned();
                writeln!(out, "    {}", term::escape(&text))?;
                out.flush()?;
                all_out.push_str(&text);
                all_out.push('\n');
            }
            Line::Err(l) => {
                let text = String::from_utf8_lossy(&l).into_owned();
                writeln!(err, "    {}", term::escape(&text))?;
                err.flush()?;
                all_err.push_str(&text);
                all_err.push('\n');
            }
        }
    }
    let _ = t1.join();
    let _ = t2.join();
    let status = child.wait()?;
    Ok((status.code(), all_out, all_err))
}

/// Runs the plan's commands one by one and stops at the first failure.
/// Returns Clean when every command succeeded, Failed otherwise.
pub fn run_steps(
    plan: &RecoveryPlan,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> anyhow::Result<Outcome> {
    let runnable: Vec<&RecoveryStep> = plan.steps.iter().filter(|s| s.runs).collect();
    let total = runnable.len();
    for (i, st) in runnable.iter().enumerate() {
        writeln!(
            out,
            "==> [{}/{}] step {}: {}",
            i + 1,
            total,
            st.number,
            term::escape(&st.command)
        )?;
        out.flush()?;
        let result = run_streaming(&st.argv, out, err);
        let outcome = match result {
            Ok((rc, so, se)) => judge(st.kind, rc, &so, &se),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => StepOutcome::Failed(format!(
                "{} is not installed (not found in PATH)",
                st.argv[0]
            )),
            Err(e) => StepOutcome::Failed(format!("could not start it: {e}")),
        };
        match outcome {
            StepOutcome::Done => writeln!(out, "    ok")?,
            StepOutcome::DoneWithNote(n) => writeln!(out, "    ok ({n})")?,
            StepOutcome::Failed(why) => {
                writeln!(
                    out,
                    "\nFAILED: step {} ({}): {}",
                    st.number,
                    term::escape(&st.command),
                    term::escape(&why)
                )?;
                writeln!(out, "What to do:")?;
                for a in advice(plan, st) {
                    writeln!(out, "  - {}", term::escape(&a))?;
                }
                return Ok(Outcome::Failed);
            }
        }
    }
    writeln!(out, "\nAll {total} commands succeeded.")?;
    for st in plan
        .steps
        .iter()
        .filter(|s| !s.runs && s.kind == StepKind::Reboot)
    {
        writeln!(
            out,
            "Now reboot ({}). If the machine does not boot: {}",
            st.command,
            plan.fallback.first().map(String::as_str).unwrap_or("")
        )?;
    }
    Ok(Outcome::Clean)
}

/// `plan --run`: refuse what it must not do, ask (when `tty`: stdin is a terminal),
/// then run.
pub fn run_command(
    plan: &RecoveryPlan,
    yes: bool,
    tty: bool,
    out: &mut dyn Write,
    confirm: &mut dyn Confirm,
) -> anyhow::Result<Outcome> {
    out.write_all(render_text(plan).as_bytes())?;
    let runnable = plan.steps.iter().filter(|s| s.runs).count();
    if runnable == 0 {
        writeln!(out, "\nnothing to run.")?;
        return Ok(Outcome::Clean);
    }
    // Rebuilding sources that still differ would compile the change again; files that
    // are not compiled (a backup left in the tree) do not stop the rebuild.
    let compiled_differ = |st: &&RecoveryStep| {
        plan.trees
            .iter()
            .find(|t| Some(&t.path) == st.tree.as_ref())
            .is_none_or(|t| t.dkms.changes.build_inputs > 0)
    };
    if let Some(r) = plan.restore_steps().find(compiled_differ) {
        anyhow::bail!(
            "{} still differs from its references, and plan --run does not restore files (that is the restore command's job, \
             with its journal and undo): run '{}' first, then 'kfd-audit plan --run' again. Nothing was run",
            r.tree.as_deref().unwrap_or("a tree"),
            r.command
        );
    }
    if !yes {
        if !tty {
            anyhow::bail!(
                "plan --run asks before running {runnable} commands as root, and there is no terminal to ask on: \
                 pass --yes to run them without asking, or run the printed commands by hand. Nothing was run"
            );
        }
        out.flush()?;
        if !confirm.confirm(&format!("Run these {runnable} commands now?"))? {
            writeln!(out, "nothing was run.")?;
            return Ok(Outcome::Found);
        }
    }
    for r in plan.restore_steps() {
        writeln!(
            out,
            "note: step {} ({}) is not run by plan --run: only files that are not compiled differ in {}; restore them when you like",
            r.number,
            term::escape(&r.command),
            term::escape(r.tree.as_deref().unwrap_or("the tree"))
        )?;
    }
    writeln!(out)?;
    let stderr = std::io::stderr();
    let mut err = stderr.lock();
    run_steps(plan, out, &mut err)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Scripted(bool, usize);

    impl Confirm for Scripted {
        fn confirm(&mut self, _prompt: &str) -> anyhow::Result<bool> {
            self.1 += 1;
            Ok(self.0)
        }
    }

    fn plan_of(commands: &[(&str, StepKind)]) -> RecoveryPlan {
        let mut b = Builder {
            chroot: None,
            steps: Vec::new(),
        };
        for (c, kind) in commands {
            b.push(*kind, vec![s("sh"), s("-c"), s(c)], "test".into());
        }
        b.push_manual(StepKind::Reboot, "reboot".into(), "by hand".into());
        RecoveryPlan {
            version: 1,
            root: "/".into(),
            chroot: None,
            running_kernel: None,
            initramfs_tool: None,
            trees: Vec::new(),
            steps: b.steps,
            notes: Vec::new(),
            fallback: vec!["boot with modprobe.blacklist=amdgpu".into()],
        }
    }

    #[test]
    fn asks_first_and_runs_nothing_when_declined() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("ran");
        let plan = plan_of(&[(
            &format!("touch '{}'", marker.display()),
            StepKind::DkmsRemove,
        )]);
        let mut out = Vec::new();
        let mut no = Scripted(false, 0);
        let o = run_command(&plan, false, true, &mut out, &mut no).unwrap();
        assert_eq!((o, no.1), (Outcome::Found, 1));
        assert!(!marker.exists());
        assert!(String::from_utf8_lossy(&out).ends_with("nothing was run.\n"));

        let mut yes = Scripted(true, 0);
        let o = run_command(&plan, false, true, &mut Vec::new(), &mut yes).unwrap();
        assert_eq!((o, yes.1), (Outcome::Clean, 1));
        assert!(marker.exists());

        // --yes does not ask; no terminal and no --yes refuses without asking.
        let mut never = Scripted(false, 0);
        run_command(&plan, true, false, &mut Vec::new(), &mut never).unwrap();
        let err = run_command(&plan, false, false, &mut Vec::new(), &mut never).unwrap_err();
        assert!(err.to_string().contains("pass --yes"), "{err}");
        assert_eq!(never.1, 0);
    }

    #[test]
    fn streams_output_and_stops_at_the_first_failure() {
        let plan = plan_of(&[
            ("echo one; echo warn >&2", StepKind::DkmsRemove),
            (
                "echo 'Error! no dkms.conf' >&2; exit 0",
                StepKind::DkmsBuild,
            ),
            ("echo never", StepKind::DkmsInstall),
        ]);
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let o = run_steps(&plan, &mut out, &mut err).unwrap();
        assert_eq!(o, Outcome::Failed);
        let out = String::from_utf8(out).unwrap();
        let err = String::from_utf8(err).unwrap();
        assert!(out.starts_with("==> [1/3] step 1: sh -c 'echo one; echo warn >&2'\n    one\n    ok\n==> [2/3] step 2: "), "{out}");
        assert!(out.contains("FAILED: step 2 (sh -c 'echo '\\''Error! no dkms.conf'\\'' >&2; exit 0'): dkms printed an error but exited 0: Error! no dkms.conf\n"), "{out}");
        assert!(
            out.contains("read /var/lib/dkms/amdgpu/<version>/build/make.log"),
            "{out}"
        );
        assert!(!out.contains("never"), "{out}");
        assert_eq!(err, "    warn\n    Error! no dkms.conf\n");
    }

    #[test]
    fn missing_tool_is_a_failure_with_advice() {
        let mut plan = plan_of(&[]);
        plan.steps.insert(
            0,
            RecoveryStep {
                number: 1,
                kind: StepKind::Initramfs,
                command: "no-such-tool-kfd".into(),
                argv: vec!["no-such-tool-kfd".into()],
                runs: true,
                why: String::new(),
                tree: None,
                package: None,
                version: None,
                kernel: None,
            },
        );
        let mut out = Vec::new();
        assert_eq!(
            run_steps(&plan, &mut out, &mut Vec::new()).unwrap(),
            Outcome::Failed
        );
        let out = String::from_utf8(out).unwrap();
        assert!(
            out.contains("no-such-tool-kfd is not installed (not found in PATH)"),
            "{out}"
        );
        assert!(out.contains("the initramfs is not"), "{out}");
    }

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

    #[test]
    fn judges_known_dkms_outcomes() {
        let not_there =
            "Error! The module/version combo: amdgpu-6.8.5 is not located in the DKMS tree.";
        assert!(matches!(
            judge(StepKind::DkmsRemove, Some(3), "", not_there),
            StepOutcome::DoneWithNote(_)
        ));
        assert!(matches!(
            judge(StepKind::DkmsBuild, Some(3), "", not_there),
            StepOutcome::Failed(_)
        ));
        assert!(matches!(
            judge(StepKind::DkmsRemove, Some(3), "", "something else"),
            StepOutcome::Failed(_)
        ));
        assert!(matches!(
            judge(StepKind::DkmsRemove, Some(0), "", "Error! Could not locate dkms.conf file.\n"),
            StepOutcome::Failed(m) if m.contains("exited 0")
        ));
        assert!(matches!(
            judge(
                StepKind::DkmsBuild,
                Some(0),
                "Module amdgpu/6.8.5 already built for kernel 6.1.0 (x86_64), skip.",
                ""
            ),
            StepOutcome::Failed(_)
        ));
        assert_eq!(
            judge(StepKind::DkmsInstall, Some(0), "depmod...\n", ""),
            StepOutcome::Done
        );
        assert!(matches!(
            judge(StepKind::DkmsBuild, Some(10), "", "Error! Bad return status"),
            StepOutcome::Failed(m) if m == "exit status 10"
        ));
        assert!(matches!(
            judge(StepKind::Initramfs, None, "", ""),
            StepOutcome::Failed(_)
        ));
        // Only dkms's own "Error!" convention counts; other tools may print the word.
        assert_eq!(
            judge(StepKind::Initramfs, Some(0), "", "Error! ignored\n"),
            StepOutcome::Done
        );
    }
}
