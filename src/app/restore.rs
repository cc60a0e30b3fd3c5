//! `kfd-audit restore` and `kfd-audit undo`: arguments, checks before anything is
//! written (terminal, read-only filesystem, lock), and what is printed.

use crate::app::{Cli, Format, TreeArgs};
use crate::exit::Outcome;
use crate::io::atomic;
use crate::io::mounts;
use crate::io::root::Root;
use crate::restore::apply::ApplyResult;
use crate::restore::journal::{self, FileState, Run};
use crate::restore::plan::{self, RestorePlan, STATE_DIR};
use crate::restore::prompt::{Interrupted, TerminalPrompter};
use crate::restore::{self, lock, render, undo, Review};
use crate::scan::TreeScan;
use crate::term;
use clap::Args;
use serde::Serialize;
use std::collections::BTreeSet;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, Args)]
pub(crate) struct RestoreArgs {
    #[command(flatten)]
    pub trees: TreeArgs,

    /// Apply the plan without asking (for scripts); of the added files, only those the build reads are moved
    ///
    /// Restores every file that has a verified clean source, and moves into the
    /// quarantine the added files the build reads (a stray Kbuild or Makefile fragment,
    /// a new .c or .h). Added files the build does not read stay where they are,
    /// listed; the interactive restore asks about each. Everything moved can be put
    /// back with 'kfd-audit undo'
    #[arg(long, short = 'y', conflicts_with = "dry_run")]
    pub yes: bool,

    /// Print the plan and change nothing (no lock, no journal)
    #[arg(long)]
    pub dry_run: bool,

    /// Only this file or directory: relative to the tree, or an absolute path (repeatable)
    #[arg(long, value_name = "PATH")]
    pub only: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct UndoArgs {
    /// List the restore and undo runs in the journal and what each file is now
    #[arg(long)]
    pub list: bool,

    /// The run to undo (default: the last restore not yet undone)
    #[arg(value_name = "ID")]
    pub id: Option<String>,
}

fn warn(msg: &str) {
    eprintln!("kfd-audit: warning: {}", term::escape(msg));
}

/// Refuses when a path to be written is on a read-only mount, naming the remount.
fn check_writable(root: &Root, system_paths: &[PathBuf]) -> anyhow::Result<()> {
    let mut paths: Vec<PathBuf> = system_paths.to_vec();
    paths.push(PathBuf::from(STATE_DIR));
    let mut commands = BTreeSet::new();
    let mut first = None;
    for p in &paths {
        if let mounts::Writability::ReadOnly { mount_point } = mounts::writability(root, p) {
            // Under --root the audited system is mounted at R on this host: its "/" is
            // R here, and remounting the host's own / (a live USB's) would not help.
            let target = if root.is_host_root() {
                mount_point
            } else {
                root.path(&mount_point)
            };
            commands.insert(format!("mount -o remount,rw {}", target.display()));
            first.get_or_insert_with(|| p.clone());
        }
    }
    if let Some(p) = first {
        let shown = if root.is_host_root() {
            p
        } else {
            root.path(&p)
        };
        anyhow::bail!(
            "{} is on a read-only filesystem; nothing was changed. Make it writable with: {} (or see the plan with --dry-run)",
            term::path(&shown),
            commands.into_iter().collect::<Vec<_>>().join(" && ")
        );
    }
    Ok(())
}

/// Takes the lock, warns about a stale one, and removes temp files of killed runs.
fn lock_and_clean(root: &Root, tree_dirs: &[PathBuf]) -> anyhow::Result<lock::RestoreLock> {
    let state = root.path(STATE_DIR);
    let held = lock::acquire(&state)?;
    if let Some(pid) = held.took_over {
        warn(&format!(
            "took over the stale lock {} left by process {pid}, which is no longer running (a restore was interrupted; '{} undo --list' shows what it did)",
            held.path.display(),
            again(root)
        ));
    }
    let mut removed = 0;
    for dir in tree_dirs.iter().chain(std::iter::once(&state)) {
        removed += atomic::remove_stale_temps(dir)?.len();
    }
    if removed > 0 {
        warn(&format!(
            "removed {removed} temporary file(s) left by an interrupted run (never a file of the tree)"
        ));
    }
    Ok(held)
}

fn text(p: &Path) -> String {
    term::path(p)
}

#[derive(Serialize)]
struct ResultJson {
    run: Option<String>,
    journal: Option<String>,
    restored: Vec<RestoredJson>,
    not_restored: Vec<NotRestoredJson>,
    stopped: Option<String>,
    recovery: Vec<String>,
}

#[derive(Serialize)]
struct RestoredJson {
    path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    path_bytes: Option<Vec<u8>>,
    quarantine: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    warning: Option<String>,
}

#[derive(Serialize)]
struct NotRestoredJson {
    path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    path_bytes: Option<Vec<u8>>,
    reason: String,
}

fn result_json(r: &ApplyResult, recovery: &[String]) -> serde_json::Value {
    let j = ResultJson {
        run: r.run.clone(),
        journal: r.journal.as_ref().map(|p| p.display().to_string()),
        restored: r
            .applied
            .iter()
            .map(|a| RestoredJson {
                path: a.system_path.display().to_string(),
                path_bytes: crate::term::path_bytes(&a.system_path),
                quarantine: a.quarantine.as_ref().map(|q| q.display().to_string()),
                warning: a.warning.clone(),
            })
            .collect(),
        not_restored: r
            .not_applied
            .iter()
            .map(|n| NotRestoredJson {
                path: n.system_path.display().to_string(),
                path_bytes: crate::term::path_bytes(&n.system_path),
                reason: n.reason.clone(),
            })
            .collect(),
        stopped: r.stopped.clone(),
        recovery: recovery.to_vec(),
    };
    serde_json::to_value(j).expect("result serializes")
}

/// How to call kfd-audit again on the same system: a follow-up command without the
/// `--root` that was used would act on another system (and `undo <id>` would find no
/// such run there).
fn again(root: &Root) -> String {
    plan::kfd_audit(root)
}

/// `restore` again on the same system and the same trees: the `--tree`s the user
/// named, as they named them.
fn restore_again(root: &Root, trees: &[PathBuf]) -> String {
    let mut s = format!("{} restore", again(root));
    for t in trees {
        s.push_str(" --tree ");
        s.push_str(&crate::recovery::shell_quote(&t.display().to_string()));
    }
    s
}

fn result_text(root: &Root, r: &ApplyResult, verb: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    // Only when a previous version really went there: a run that stopped before
    // replacing anything has nothing in the quarantine.
    let kept = r.applied.iter().any(|a| a.quarantine.is_some());
    let _ = writeln!(
        out,
        "\n{verb} {} of {} file(s){}",
        r.applied.len(),
        r.applied.len() + r.not_applied.len(),
        r.run
            .as_ref()
            .filter(|_| kept)
            .map(|id| format!(
                "; previous versions are kept in {}/quarantine/{id}/",
                STATE_DIR
            ))
            .unwrap_or_default()
    );
    for a in &r.applied {
        let what = if a.moved { "moved away" } else { verb };
        let _ = writeln!(out, "  {what:<13} {}", text(&a.system_path));
        if a.moved {
            if let Some(q) = &a.quarantine {
                let _ = writeln!(out, "                now in {}", text(q));
            }
        }
        if let Some(w) = &a.warning {
            let _ = writeln!(out, "                warning: {}", term::escape(w));
        }
    }
    for n in &r.not_applied {
        let _ = writeln!(
            out,
            "  {:<13} {}: {}",
            format!("not {verb}"),
            text(&n.system_path),
            term::escape(&n.reason)
        );
    }
    if let (Some(id), Some(j), false) = (&r.run, &r.journal, r.applied.is_empty()) {
        let _ = writeln!(
            out,
            "journal: {}; to put the previous versions back: {} undo {id}",
            text(j),
            again(root)
        );
    }
    out
}

/// When no module of the tree is built or installed under the root, the planner has
/// nothing to rebuild; the user still gets the sequence to use when they build it.
fn generic_rebuild(root: &Root, tree: &crate::tree::Tree) -> Vec<String> {
    // From dkms.conf or the directory name: quoted, since a person pastes these lines.
    let (m, v) = (
        crate::recovery::shell_quote(&tree.package()),
        crate::recovery::shell_quote(&tree.version()),
    );
    let mut cmds = vec![format!(
        "# no built or installed {m} {v} module was found under this root; when you build it:"
    )];
    if !root.is_host_root() {
        cmds.push(format!(
            "# inside the system: mount --bind /dev, /proc and /sys under {0}, then chroot {0}",
            root.dir().display()
        ));
    }
    cmds.extend([
        format!("dkms remove -m {m} -v {v} --all"),
        format!("dkms build -m {m} -v {v} -k \"$(uname -r)\""),
        format!("dkms install -m {m} -v {v} -k \"$(uname -r)\""),
    ]);
    cmds
}

fn recovery_text(cmds: &[(String, Vec<String>)]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for (title, lines) in cmds {
        let _ = writeln!(
            out,
            "\nNext, rebuild {title} from the clean sources (DKMS recovery sequence):"
        );
        for l in lines {
            let _ = writeln!(out, "  {}", term::escape(l));
        }
    }
    out
}

fn print_plan(
    root: &Root,
    plan: &RestorePlan,
    format: Format,
    dry_run: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    match format {
        Format::Json => {
            let j = plan.to_json(root, dry_run);
            out.write_all(serde_json::to_string_pretty(&j)?.as_bytes())?;
            out.write_all(b"\n")?;
        }
        Format::Markdown => out.write_all(render::plan_markdown(root, plan).as_bytes())?,
        Format::Text | Format::Prometheus => {
            out.write_all(render::plan_text(root, plan, "<run>").as_bytes())?
        }
    }
    Ok(())
}

fn plan_outcome(plan: &RestorePlan) -> Outcome {
    if plan.item_count() + plan.no_source_count() + plan.refused_count() + plan.added_count() > 0 {
        Outcome::Found
    } else {
        Outcome::Clean
    }
}

/// `kfd-audit restore`.
pub(crate) fn restore(
    cli: &Cli,
    args: &RestoreArgs,
    out: &mut dyn Write,
) -> anyhow::Result<Outcome> {
    let root = Root::open(&cli.root)?;
    let interactive = !args.yes && !args.dry_run;
    if interactive && !(std::io::stdin().is_terminal() && std::io::stderr().is_terminal()) {
        let cmd = restore_again(&root, &args.trees.trees);
        anyhow::bail!(
            "restore asks before it changes anything, and there is no terminal to ask on. \
             Run '{cmd} --yes' to apply the plan without asking, or \
             '{cmd} --dry-run' to only print it"
        );
    }
    let mut opts = args.trees.audit_options(cli);
    // The rules decide which added files count for the build (a finding on one counts
    // whatever its name, as for the DKMS state), so the plan knows them as plan does.
    opts.run_rules = true;
    let audit = crate::app::audit::run(&root, &opts)?;
    if audit.scans.is_empty() {
        anyhow::bail!(
            "no amdgpu DKMS tree under {}; name one with --tree PATH",
            term::path(&root.path("/usr/src"))
        );
    }
    let scans = audit.scans;
    let plan = plan::build(&root, &scans, &args.only)?;

    if args.dry_run {
        print_plan(&root, &plan, cli.format, true, out)?;
        if cli.format == Format::Text {
            writeln!(out, "\ndry run: nothing was changed")?;
        }
        return Ok(plan_outcome(&plan));
    }
    // What this run may apply: --yes applies its selection; the review may also
    // offer added files the build does not read.
    let offered = if interactive {
        plan.item_count() + plan.added_count()
    } else {
        restore::select_yes(&plan).len()
    };
    // Trees to write in: those with entries to apply or temp files of a killed run.
    let write_trees: Vec<&plan::TreePlan> = plan
        .trees
        .iter()
        .filter(|t| t.entry_count() > 0 || !t.leftover_temps.is_empty())
        .collect();
    let state_temps = !atomic::find_stale_temps(&root.path(STATE_DIR)).is_empty();
    let _lock = if !write_trees.is_empty() || state_temps {
        let sys: Vec<PathBuf> = write_trees
            .iter()
            .map(|t| t.tree.system_path.clone())
            .collect();
        check_writable(&root, &sys)?;
        let hosts: Vec<PathBuf> = write_trees
            .iter()
            .map(|t| t.tree.host_path.clone())
            .collect();
        Some(lock_and_clean(&root, &hosts)?)
    } else {
        None
    };
    // Files outside --only that still differ: the run leaves them as they are.
    let outside_only = if args.only.is_empty() {
        0
    } else {
        let whole = plan::build(&root, &scans, &[])?;
        let count = |p: &RestorePlan| {
            p.item_count() + p.no_source_count() + p.refused_count() + p.added_count()
        };
        count(&whole).saturating_sub(count(&plan))
    };
    if offered == 0 {
        print_plan(&root, &plan, cli.format, false, out)?;
        if cli.format == Format::Text {
            writeln!(out, "\nnothing to restore")?;
        }
        return Ok(if outside_only > 0 {
            Outcome::Found
        } else {
            plan_outcome(&plan)
        });
    }

    // The plan a person reads goes to stdout in text; with another format it goes
    // to stderr beside the prompts, so stdout stays parseable.
    let selection = if interactive {
        let mut shown = Vec::new();
        shown.extend_from_slice(render::plan_text(&root, &plan, "<run>").as_bytes());
        shown.push(b'\n');
        if cli.format == Format::Text {
            out.write_all(&shown)?;
            out.flush()?;
        } else {
            std::io::stderr().write_all(&shown)?;
        }
        let mut prompter = TerminalPrompter::with_pager(cli.pager_enabled());
        let review = if cli.format == Format::Text {
            restore::review(&root, &plan, &mut prompter, out)?
        } else {
            restore::review(&root, &plan, &mut prompter, &mut std::io::stderr())?
        };
        match review {
            Review::Selected(s) => s,
            Review::Interrupted => return Err(Interrupted.into()),
            Review::Cancelled => {
                if cli.format == Format::Text {
                    writeln!(out, "nothing was restored")?;
                } else {
                    print_plan(&root, &plan, cli.format, false, out)?;
                }
                return Ok(Outcome::Found);
            }
        }
    } else {
        if cli.format == Format::Text {
            out.write_all(render::plan_text(&root, &plan, "<run>").as_bytes())?;
        }
        restore::select_yes(&plan)
    };

    let result = restore::apply_plan(&root, &plan, &scans, &selection);
    let restored_trees: BTreeSet<PathBuf> = result
        .applied
        .iter()
        .filter_map(|a| {
            plan.trees
                .iter()
                .find(|t| a.system_path.starts_with(&t.tree.system_path))
                .map(|t| t.tree.system_path.clone())
        })
        .collect();
    // The DKMS sequence comes from the recovery planner, run on the trees as they are
    // now: the sources are clean again, so the plan is the rebuild that makes the
    // module match them.
    let recovery: Vec<(String, Vec<String>)> = if result.stopped.is_none() {
        // The same audit, of the restored trees only; their clean content is not
        // needed again.
        let again = crate::app::audit::AuditOptions {
            trees: plan
                .trees
                .iter()
                .filter(|t| restored_trees.contains(&t.tree.system_path))
                .map(|t| t.tree.host_path.clone())
                .collect(),
            scan: crate::scan::ScanOptions {
                clean_content: false,
                ..opts.scan.clone()
            },
            ..opts.clone()
        };
        let rescans: Vec<TreeScan> = if again.trees.is_empty() {
            Vec::new()
        } else {
            crate::app::audit::run(&root, &again)?.scans
        };
        let recovery_plan = crate::recovery::plan_for(&root, &rescans, Default::default());
        rescans
            .iter()
            .map(|s| {
                let path = s.tree.system_path.display().to_string();
                // The restore just ran: what is left to restore is said above, and
                // the next steps are the rebuild.
                let steps = recovery_plan
                    .steps
                    .iter()
                    .filter(|st| st.tree.as_deref().is_none_or(|t| t == path))
                    .filter(|st| st.kind != crate::recovery::plan::StepKind::Restore)
                    .map(|st| st.command.clone())
                    .collect::<Vec<_>>();
                let steps = if steps.is_empty() {
                    generic_rebuild(&root, &s.tree)
                } else {
                    steps
                };
                (format!("{} {}", s.tree.package(), s.tree.version()), steps)
            })
            .collect()
    } else {
        Vec::new()
    };
    // Files the person chose to skip were never handed to apply: they stay changed.
    let skipped = (plan.item_count() + plan.added_count())
        .saturating_sub(result.applied.len() + result.not_applied.len());
    match cli.format {
        Format::Json => {
            let mut j = plan.to_json(&root, false);
            let flat: Vec<String> = recovery.iter().flat_map(|(_, l)| l.clone()).collect();
            let mut r = result_json(&result, &flat);
            r["skipped"] = skipped.into();
            j.result = Some(r);
            out.write_all(serde_json::to_string_pretty(&j)?.as_bytes())?;
            out.write_all(b"\n")?;
        }
        Format::Text | Format::Markdown | Format::Prometheus => {
            out.write_all(result_text(&root, &result, "restored").as_bytes())?;
            if skipped > 0 && args.yes {
                // --yes leaves exactly the added files the build does not read.
                writeln!(
                    out,
                    "{skipped} added file(s) that the build does not read stay where they are; \
                     to move them into the quarantine, run {} (without --yes) and choose them",
                    restore_again(&root, &args.trees.trees)
                )?;
            } else if skipped > 0 {
                writeln!(
                    out,
                    "skipped {skipped} file(s): they stay as they are (run {} again to restore them)",
                    restore_again(&root, &args.trees.trees)
                )?;
            }
            out.write_all(recovery_text(&recovery).as_bytes())?;
        }
    }
    out.flush()?;
    if let Some(err) = &result.stopped {
        eprintln!(
            "kfd-audit: error: the restore stopped: {}",
            stopped_text(
                &root,
                &result,
                err,
                "restored",
                &restore_again(&root, &args.trees.trees)
            )
        );
        return Ok(Outcome::Failed);
    }
    let left = result.not_applied.len()
        + skipped
        + plan.no_source_count()
        + plan.refused_count()
        + outside_only;
    Ok(if left > 0 {
        Outcome::Found
    } else {
        Outcome::Clean
    })
}

/// The one line that says why a run stopped and what to do. A full filesystem gets
/// its own advice: the error text alone ("No space left on device") names no way out.
fn stopped_text(root: &Root, r: &ApplyResult, err: &str, verb: &str, retry: &str) -> String {
    let whole = format!(
        "every file is whole: {} {verb}, {} not (listed above)",
        r.applied.len(),
        r.not_applied.len()
    );
    match &r.no_space {
        Some(host) => {
            let shown = root.system_path(host).unwrap_or_else(|| host.clone());
            let dir = host.parent().unwrap_or(host);
            format!(
                "no space left on the filesystem that holds {}; {whole}, and no quarantine copy of a file that was not replaced is left behind. \
                 Free space there (df -h {} shows how much), then run '{retry}' again",
                text(&shown),
                term::path(dir)
            )
        }
        None => format!("{}. {}", term::escape(err), {
            let mut w = whole;
            w[..1].make_ascii_uppercase();
            w
        }),
    }
}

#[derive(Serialize)]
struct RunJson {
    id: String,
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    undoes: Option<String>,
    time: String,
    pid: u32,
    /// `complete`, `partial` (some files refused), `failed` (stopped by a write
    /// error), or `interrupted` (killed mid-way).
    state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    undone_by: Option<String>,
    files: Vec<RunFileJson>,
}

#[derive(Serialize)]
struct RunFileJson {
    path: String,
    /// What the journal says: `replaced`, `moved` (an added file, into the
    /// quarantine), `failed`, or `interrupted` (intent only).
    journal: &'static str,
    /// What the file is now, by its hash: `old`, `new`, `changed`, `missing`, `not-a-file`.
    now: FileState,
    #[serde(skip_serializing_if = "Option::is_none")]
    quarantine: Option<String>,
}

fn run_json(root: &Root, runs: &[Run], r: &Run) -> RunJson {
    RunJson {
        id: r.id.clone(),
        kind: r.kind.as_str(),
        undoes: r.undoes.clone(),
        time: r.time.clone(),
        pid: r.pid,
        state: r.state(),
        undone_by: undo::undone_by(runs, &r.id).map(|u| u.id.clone()),
        files: r
            .intents
            .iter()
            .map(|i| RunFileJson {
                path: i.path.display().to_string(),
                journal: if r.is_done(i.seq) && i.new_sha256.is_none() {
                    "moved"
                } else if r.is_done(i.seq) {
                    "replaced"
                } else if r.failed.contains_key(&i.seq) {
                    "failed"
                } else {
                    "interrupted"
                },
                now: undo::file_state(root, i),
                quarantine: i.quarantine.as_ref().map(|q| term::path(q)),
            })
            .collect(),
    }
}

/// `kfd-audit undo`.
pub(crate) fn undo(cli: &Cli, args: &UndoArgs, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    let root = Root::open(&cli.root)?;
    let state = root.path(STATE_DIR);
    if let Some(id) = &args.id {
        if !journal::valid_run_id(id) {
            anyhow::bail!(
                "{}: not a run id; '{} undo --list' shows the runs",
                term::escape(id),
                again(&root)
            );
        }
    }
    let runs = journal::load_runs(&state)?;
    if args.list {
        let list: Vec<RunJson> = runs
            .iter()
            .filter(|r| args.id.as_ref().is_none_or(|id| &r.id == id))
            .map(|r| run_json(&root, &runs, r))
            .collect();
        match cli.format {
            Format::Json => {
                let j = serde_json::json!({ "version": 1, "root": root.dir().display().to_string(), "runs": list });
                out.write_all(serde_json::to_string_pretty(&j)?.as_bytes())?;
                out.write_all(b"\n")?;
            }
            Format::Text | Format::Markdown | Format::Prometheus => {
                if list.is_empty() {
                    writeln!(out, "no restore has been journaled under {}", text(&state))?;
                }
                for r in &list {
                    let of = r
                        .undoes
                        .as_ref()
                        .map(|u| format!(" of {u}"))
                        .unwrap_or_default();
                    let by = r
                        .undone_by
                        .as_ref()
                        .map(|u| format!(", undone by {u}"))
                        .unwrap_or_default();
                    writeln!(
                        out,
                        "{}  {}{of}  {}  {} file(s)  {}{by}",
                        r.id,
                        r.kind,
                        r.time,
                        r.files.len(),
                        r.state
                    )?;
                    for f in &r.files {
                        writeln!(
                            out,
                            "    {:<11} now {:<10} {}",
                            f.journal,
                            f.now.as_str(),
                            term::escape(&f.path)
                        )?;
                    }
                }
            }
        }
        return Ok(Outcome::Clean);
    }

    let run = undo::pick(&runs, args.id.as_deref(), &again(&root))?;
    // Lock first, so that the files cannot change between the check and the write.
    let trees: BTreeSet<PathBuf> = run.intents.iter().map(|i| i.tree.clone()).collect();
    let sys: Vec<PathBuf> = trees.iter().cloned().collect();
    check_writable(&root, &sys)?;
    let hosts: Vec<PathBuf> = trees.iter().map(|t| root.path(t)).collect();
    let _lock = lock_and_clean(&root, &hosts)?;
    let up = undo::plan(&root, run);
    if !up.problems.is_empty() {
        for p in &up.problems {
            eprintln!(
                "kfd-audit: {}: {}",
                term::escape(&p.path),
                term::escape(&p.reason)
            );
        }
        anyhow::bail!(
            "undo of {} refused: {} file(s) changed since the run ({}); nothing was changed. \
             Put them back by hand from the quarantine, or restore them first",
            run.id,
            up.problems.len(),
            up.problems
                .iter()
                .map(|p| p.path.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    for p in &up.already {
        writeln!(out, "  already as before {}: {}", run.id, text(p))?;
    }
    for p in &up.kept {
        writeln!(
            out,
            "  kept {} (it did not exist before {}; nothing is deleted, remove it by hand if you want it gone)",
            text(p),
            run.id
        )?;
    }
    if up.changes.is_empty() {
        writeln!(out, "nothing to put back for {}", run.id)?;
        return Ok(Outcome::Clean);
    }
    let result = undo::apply(&root, run, &up);
    match cli.format {
        Format::Json => {
            let j = serde_json::json!({ "version": 1, "undoes": run.id, "result": result_json(&result, &[]) });
            out.write_all(serde_json::to_string_pretty(&j)?.as_bytes())?;
            out.write_all(b"\n")?;
        }
        _ => out.write_all(result_text(&root, &result, "put back").as_bytes())?,
    }
    if let Some(err) = &result.stopped {
        eprintln!(
            "kfd-audit: error: the undo stopped: {}",
            stopped_text(
                &root,
                &result,
                err,
                "put back",
                &format!("{} undo {}", again(&root), run.id)
            )
        );
        return Ok(Outcome::Failed);
    }
    Ok(if result.not_applied.is_empty() {
        Outcome::Clean
    } else {
        Outcome::Found
    })
}
