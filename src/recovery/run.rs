//! `plan --run`: the plan's commands run one at a time, their output streamed as it
//! comes, each outcome classified with what is known about dkms (it can print
//! `Error!` and still exit 0), and the run stopped at the first failure with advice.

use super::plan::{RecoveryPlan, RecoveryStep, StepKind};
use super::render::render_text_for_confirm;
use crate::exit::Outcome;
use crate::restore::prompt::{ask_yes_no, Answer, Interrupted};
use crate::term;
use std::io::{BufRead, Write};
use std::process::{Command, Stdio};

/// How one command ended, judged with what is known about dkms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StepOutcome {
    Done,
    /// Succeeded in a known harmless way; the text says how.
    DoneWithNote(String),
    Failed(String),
}

/// Classifies how a finished command ended, with what is known about dkms (its
/// "Error!" lines with exit 0, "already built", a remove of what is not registered).
/// `rc` is None when it was killed by a signal.
pub(crate) fn classify_step_outcome(
    kind: StepKind,
    rc: Option<i32>,
    stdout: &str,
    stderr: &str,
) -> StepOutcome {
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

/// What to do when a step failed. `again` is `plan --run` as the user calls it on
/// this system (its `--root` and `--tree`s).
fn advice(plan: &RecoveryPlan, st: &RecoveryStep, again: &str) -> Vec<String> {
    let name = st.package.as_deref().unwrap_or("amdgpu");
    let ver = st.version.as_deref().unwrap_or("<version>");
    // The commands run in `chroot R`: the person reads the advice on this host, where
    // the system's /var/lib/dkms is R/var/lib/dkms (the host's own is not the one).
    let at = plan.chroot.as_deref().unwrap_or("").trim_end_matches('/');
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
            "dkms could not remove {name}/{ver}: read its message above and look at {at}/var/lib/dkms/{name}/{ver}; \
             if that directory is damaged, move it away (mv {at}/var/lib/dkms/{name}/{ver} {at}/root/) and run the plan again"
        )],
        StepKind::DkmsBuild => vec![
            format!(
                "the build failed: read {at}/var/lib/dkms/{name}/{ver}/build/make.log (the end says why)"
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
    v.push(format!(
        "Do not reboot yet. The steps already done are safe to repeat: fix the cause and run '{again}' again."
    ));
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
pub(crate) trait Confirm {
    fn confirm(&mut self, prompt: &str) -> anyhow::Result<Answer>;
}

/// A yes/no question on the terminal (stderr), default no.
pub(crate) struct TerminalConfirm;

impl Confirm for TerminalConfirm {
    fn confirm(&mut self, prompt: &str) -> anyhow::Result<Answer> {
        Ok(ask_yes_no(&dialoguer::console::Term::stderr(), prompt)?)
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
pub(crate) fn run_steps(
    plan: &RecoveryPlan,
    again: &str,
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
            // chroot says 127 when the command is not in the chrooted system.
            Ok((Some(127), _, _)) if st.argv.first().is_some_and(|a| a == "chroot") => {
                StepOutcome::Failed(format!(
                    "{} is not installed in the system under {} (chroot exit 127)",
                    st.argv.get(2).map(String::as_str).unwrap_or("the command"),
                    st.argv.get(1).map(String::as_str).unwrap_or("the root")
                ))
            }
            Ok((rc, so, se)) => classify_step_outcome(st.kind, rc, &so, &se),
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
                for a in advice(plan, st, again) {
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

/// How `plan --run` was asked for.
#[derive(Debug, Clone, Default)]
pub(crate) struct RunOptions {
    /// Run without asking.
    pub yes: bool,
    /// Stdin is a terminal to ask on.
    pub tty: bool,
    /// Shorten what comes before the commands.
    pub quiet: bool,
    /// `plan --run` as the user calls it on this system (its `--root` and `--tree`s),
    /// for the advice to run it again.
    pub again: String,
}

/// `plan --run`: refuse what it must not do, ask (when stdin is a terminal), then
/// run. The commands are printed last, right above the question.
pub(crate) fn run_command(
    plan: &RecoveryPlan,
    opts: &RunOptions,
    out: &mut dyn Write,
    confirm: &mut dyn Confirm,
) -> anyhow::Result<Outcome> {
    let (yes, tty, quiet, again) = (opts.yes, opts.tty, opts.quiet, opts.again.as_str());
    out.write_all(render_text_for_confirm(plan, quiet).as_bytes())?;
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
             with its journal and undo): run '{}' first, then '{again}' again. Nothing was run",
            r.tree.as_deref().unwrap_or("a tree"),
            r.command
        );
    }
    // Bind mounts and remounts come before the first dkms step: without dkms they
    // would be done for nothing, and the failure would come as chroot's bare 127.
    if let Some(tool) = plan.missing_tools.first() {
        let (place, install) = match &plan.chroot {
            Some(r) => (
                format!("the system under {r}"),
                format!("install it into that system (for Debian/Ubuntu: mount --bind /dev {r}/dev etc., then chroot {r} apt-get install {tool}), or"),
            ),
            None => ("this system".to_string(), format!("install it (Debian/Ubuntu: apt install {tool}; Fedora: dnf install {tool}), or")),
        };
        anyhow::bail!(
            "{tool} is not installed in {place}, and the plan's {tool} steps need it: {install} run the printed commands by hand \
             where {tool} is, then '{again}' again. Nothing was run"
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
        match confirm.confirm(&format!("Run these {runnable} commands now?"))? {
            Answer::Yes => {}
            Answer::No => {
                writeln!(out, "nothing was run.")?;
                return Ok(Outcome::Found);
            }
            Answer::Interrupted => return Err(Interrupted.into()),
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
    run_steps(plan, again, out, &mut err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recovery::plan::{s, Builder};

    struct Scripted(bool, usize);

    impl Confirm for Scripted {
        fn confirm(&mut self, _prompt: &str) -> anyhow::Result<Answer> {
            self.1 += 1;
            Ok(if self.0 { Answer::Yes } else { Answer::No })
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
            missing_tools: Vec::new(),
        }
    }

    fn opts(yes: bool, tty: bool) -> RunOptions {
        RunOptions {
            yes,
            tty,
            quiet: false,
            again: "kfd-audit plan --run".into(),
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
        let o = run_command(&plan, &opts(false, true), &mut out, &mut no).unwrap();
        assert_eq!((o, no.1), (Outcome::Found, 1));
        assert!(!marker.exists());
        assert!(String::from_utf8_lossy(&out).ends_with("nothing was run.\n"));

        let mut yes = Scripted(true, 0);
        let o = run_command(&plan, &opts(false, true), &mut Vec::new(), &mut yes).unwrap();
        assert_eq!((o, yes.1), (Outcome::Clean, 1));
        assert!(marker.exists());

        // --yes does not ask; no terminal and no --yes refuses without asking.
        let mut never = Scripted(false, 0);
        run_command(&plan, &opts(true, false), &mut Vec::new(), &mut never).unwrap();
        let err = run_command(&plan, &opts(false, false), &mut Vec::new(), &mut never).unwrap_err();
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
        let o = run_steps(&plan, "kfd-audit plan --run", &mut out, &mut err).unwrap();
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
            run_steps(&plan, "kfd-audit plan --run", &mut out, &mut Vec::new()).unwrap(),
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
    fn classifies_known_dkms_outcomes() {
        let not_there =
            "Error! The module/version combo: amdgpu-6.8.5 is not located in the DKMS tree.";
        assert!(matches!(
            classify_step_outcome(StepKind::DkmsRemove, Some(3), "", not_there),
            StepOutcome::DoneWithNote(_)
        ));
        assert!(matches!(
            classify_step_outcome(StepKind::DkmsBuild, Some(3), "", not_there),
            StepOutcome::Failed(_)
        ));
        assert!(matches!(
            classify_step_outcome(StepKind::DkmsRemove, Some(3), "", "something else"),
            StepOutcome::Failed(_)
        ));
        assert!(matches!(
            classify_step_outcome(StepKind::DkmsRemove, Some(0), "", "Error! Could not locate dkms.conf file.\n"),
            StepOutcome::Failed(m) if m.contains("exited 0")
        ));
        assert!(matches!(
            classify_step_outcome(
                StepKind::DkmsBuild,
                Some(0),
                "Module amdgpu/6.8.5 already built for kernel 6.1.0 (x86_64), skip.",
                ""
            ),
            StepOutcome::Failed(_)
        ));
        assert_eq!(
            classify_step_outcome(StepKind::DkmsInstall, Some(0), "depmod...\n", ""),
            StepOutcome::Done
        );
        assert!(matches!(
            classify_step_outcome(StepKind::DkmsBuild, Some(10), "", "Error! Bad return status"),
            StepOutcome::Failed(m) if m == "exit status 10"
        ));
        assert!(matches!(
            classify_step_outcome(StepKind::Initramfs, None, "", ""),
            StepOutcome::Failed(_)
        ));
        // Only dkms's own "Error!" convention counts; other tools may print the word.
        assert_eq!(
            classify_step_outcome(StepKind::Initramfs, Some(0), "", "Error! ignored\n"),
            StepOutcome::Done
        );
    }
}
