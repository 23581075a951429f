//! Runs one plugin process: `bash plugin.sh <args>` in the plugin's folder, in a new session
//! and its own containment scope (a cgroup, or the subreaper sweep: `contain/`), with a clean
//! environment, only fds 0-2, stdin closed, output capped, a timeout (TERM to the group, a grace
//! period, then everything in the scope killed), and the child reaped.
//!
//! Modelled on Vector's `exec` source: one timeout per run, `kill_on_drop`, an explicit
//! environment, and a typed outcome the caller logs and counts.

use std::os::fd::RawFd;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::contain::{Containment, PreExec};

/// The `PATH` plugins get.
pub const PLUGIN_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// The `LANG` plugins get.
pub const PLUGIN_LANG: &str = "C.UTF-8";
/// Most bytes kept of stdout, and of stderr, per run.
pub const OUTPUT_CAP: usize = 4 * 1024 * 1024;
/// How long a timed-out group gets between TERM and KILL.
pub const KILL_GRACE: Duration = Duration::from_secs(2);
/// How long to wait for the pipes to close once the process group is gone.
const DRAIN_WAIT: Duration = Duration::from_secs(1);

/// Who the plugin runs as, when the agent drops privileges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The user's name, for messages.
    pub name: String,
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// The user's home, for `HOME`.
    pub home: PathBuf,
}

/// One run to make.
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// The plugin's checkout; `plugin.sh` is run there.
    pub dir: PathBuf,
    /// Arguments after `plugin.sh`.
    pub args: Vec<String>,
    /// `AGENT_NS`.
    pub ns: String,
    /// `AGENT_PLUGIN`.
    pub project: String,
    /// Wall-time limit.
    pub timeout: Duration,
    /// Switch to this user before exec; `None` = run as the agent's user.
    pub identity: Option<Identity>,
    /// `HOME` when no identity is set.
    pub home: PathBuf,
    /// Bytes kept per stream.
    pub output_cap: usize,
    /// The agent's containment, which gives the run its scope.
    pub contain: Arc<Containment>,
}

/// How a run ended; the names are the `reason` tag of the result point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Exited 0 (and its output was usable).
    Ok,
    /// Exited non-zero or was killed by a signal.
    Exit,
    /// Ran past its timeout; its process group was killed.
    Timeout,
    /// Output over the cap, or not a JSON list of metrics.
    Output,
    /// Could not be started.
    Spawn,
}

impl Reason {
    /// The tag value.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Ok => "ok",
            Reason::Exit => "exit",
            Reason::Timeout => "timeout",
            Reason::Output => "output",
            Reason::Spawn => "spawn",
        }
    }
}

/// What one run produced.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// How it ended.
    pub reason: Reason,
    /// The exit code, when it exited by itself.
    pub exit_code: Option<i32>,
    /// Captured stdout, at most the cap.
    pub stdout: Vec<u8>,
    /// Captured stderr, at most the cap.
    pub stderr: Vec<u8>,
    /// Whether either stream was cut.
    pub truncated: bool,
    /// Wall time.
    pub duration: Duration,
    /// A one-line explanation of a failure.
    pub error: Option<String>,
    /// The process id (also its process group and session id), when it started.
    pub pid: Option<u32>,
}

impl Outcome {
    /// A run refused before anything was started (reason `spawn`).
    pub fn not_started(error: String) -> Self {
        Outcome {
            duration: Duration::ZERO,
            ..Self::spawn_failed(error, Instant::now())
        }
    }

    fn spawn_failed(error: String, started: Instant) -> Self {
        Outcome {
            reason: Reason::Spawn,
            exit_code: None,
            stdout: Vec::new(),
            stderr: Vec::new(),
            truncated: false,
            duration: started.elapsed(),
            error: Some(error),
            pid: None,
        }
    }
}

/// Runs the plugin once. Never panics; every failure is an [`Outcome`] with a reason.
pub async fn run(spec: &RunSpec) -> Outcome {
    let started = Instant::now();
    let script = spec.dir.join("plugin.sh");
    // A metadata call on a local checkout is quick; it turns a confusing bash error into a clear one.
    if !script.is_file() {
        return Outcome::spawn_failed(
            format!(
                "no plugin.sh in {} (not cloned yet, or not a plugin repository)",
                spec.dir.display()
            ),
            started,
        );
    }
    let mut scope = match spec.contain.prepare() {
        Ok(s) => s,
        Err(e) => {
            return Outcome::spawn_failed(
                format!("cannot contain the run, so it was not started: {e}"),
                started,
            )
        }
    };
    let mut cmd = Command::new("bash");
    cmd.arg("plugin.sh")
        .args(&spec.args)
        .current_dir(&spec.dir)
        .env_clear()
        .env("PATH", PLUGIN_PATH)
        .env("LANG", PLUGIN_LANG)
        .env("AGENT_NS", &spec.ns)
        .env("AGENT_PLUGIN", &spec.project)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd.env(
        "HOME",
        spec.identity.as_ref().map_or(&spec.home, |id| &id.home),
    );
    let child_setup = ChildSetup {
        contain: scope.pre_exec(spec.identity.is_some()),
        identity: spec.identity.as_ref().map(|id| (id.uid, id.gid)),
        max_fd: max_fd(),
    };
    in_child(&mut cmd, child_setup);

    let mut child = match scope.spawn(|| cmd.spawn(), tokio::process::Child::id) {
        Ok(c) => c,
        Err(e) => return Outcome::spawn_failed(format!("cannot start bash: {e}"), started),
    };
    let pid = child.id();
    // If this future is dropped mid-run (shutdown, a cancelled request), `kill_on_drop` only
    // reaches the leader; the scope's drop takes everything else in the run with it.
    let over_cap = CancellationToken::new();
    let out = child
        .stdout
        .take()
        .map(|s| tokio::spawn(read_capped(s, spec.output_cap, over_cap.clone())));
    let err = child
        .stderr
        .take()
        .map(|s| tokio::spawn(read_capped(s, spec.output_cap, over_cap.clone())));

    let deadline = tokio::time::Instant::now() + spec.timeout;
    enum End {
        Exited(std::io::Result<ExitStatus>),
        Timeout,
        OverCap,
    }
    let end = tokio::select! {
        s = child.wait() => End::Exited(s),
        () = tokio::time::sleep_until(deadline) => End::Timeout,
        () = over_cap.cancelled() => End::OverCap,
    };
    let (status, timed_out) = match end {
        End::Exited(s) => (s.ok(), false),
        End::Timeout => {
            terminate_group(pid, &mut child).await;
            (None, true)
        }
        End::OverCap => {
            terminate_group(pid, &mut child).await;
            (None, false)
        }
    };
    // The leader is reaped: whatever it left behind, in its group or escaped from it, goes now.
    let mut contain_error = None;
    match scope.finish().await {
        Ok(0) => {}
        Ok(n) => info!(
            ns = %spec.ns,
            plugin = %spec.project,
            left_behind = n,
            "Killed the processes a plugin run left behind."
        ),
        Err(e) => {
            warn!(ns = %spec.ns, plugin = %spec.project, error = %e, "Plugin run not fully killed.");
            contain_error = Some(e);
        }
    }

    let (stdout, out_cut) = collect(out).await;
    let (stderr, err_cut) = collect(err).await;
    let truncated = out_cut || err_cut;
    let duration = started.elapsed();
    let (reason, exit_code, error) = if truncated {
        (
            Reason::Output,
            None,
            Some(format!(
                "output over the cap of {} bytes; the run was stopped and its output cut",
                spec.output_cap
            )),
        )
    } else if timed_out {
        (
            Reason::Timeout,
            None,
            Some(format!(
                "timed out after {:.1} s; its process group was killed",
                spec.timeout.as_secs_f64()
            )),
        )
    } else if let Some(e) = contain_error {
        (
            Reason::Exit,
            status.and_then(|s| s.code()),
            Some(format!("the run's processes could not all be killed: {e}")),
        )
    } else {
        match status {
            Some(s) if s.success() => (Reason::Ok, Some(0), None),
            Some(s) => match s.code() {
                Some(code) => (
                    Reason::Exit,
                    Some(code),
                    Some(format!("exited with {code}")),
                ),
                None => {
                    use std::os::unix::process::ExitStatusExt;
                    let sig = s.signal().unwrap_or(0);
                    (Reason::Exit, None, Some(format!("killed by signal {sig}")))
                }
            },
            None => (
                Reason::Exit,
                None,
                Some("could not wait for the process".to_owned()),
            ),
        }
    };
    Outcome {
        reason,
        exit_code,
        stdout,
        stderr,
        truncated,
        duration,
        error,
        pid,
    }
}

/// What the child does between fork and exec, prepared in the parent.
struct ChildSetup {
    contain: PreExec,
    /// (uid, gid) to switch to.
    identity: Option<(u32, u32)>,
    /// Highest fd number that can be open (for the close_range fallback).
    max_fd: RawFd,
}

/// The highest possible fd: `RLIMIT_NOFILE`'s soft limit (read in the parent, since the child
/// may only make async-signal-safe calls).
fn max_fd() -> RawFd {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .ok()
        .and_then(|(soft, _)| RawFd::try_from(soft).ok())
        .unwrap_or(1024)
}

const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;

/// Between fork and exec, in this order: a new session (and so a new process group it leads,
/// and no controlling terminal), the run's cgroups joined (as root, before the switch), the
/// process limit of the reaper mode, the switch to the plugin user (supplementary groups
/// cleared, then setgid, setuid), and every fd above 2 marked close-on-exec, so only stdin,
/// stdout and stderr reach the plugin.
#[allow(unsafe_code)]
fn in_child(cmd: &mut Command, setup: ChildSetup) {
    // SAFETY: the closure runs in the forked child before exec and only makes async-signal-safe
    // system calls (setsid, write, setrlimit, setgroups, setgid, setuid, close_range, fcntl) on
    // values prepared in the parent; it allocates nothing and takes no locks.
    unsafe {
        cmd.pre_exec(move || {
            let check = |r: libc::c_int| {
                if r < 0 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(())
                }
            };
            check(libc::setsid())?;
            for &fd in &setup.contain.join {
                let n = libc::write(fd, b"0".as_ptr().cast(), 1);
                if n != 1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if let Some(n) = setup.contain.nproc {
                let lim = libc::rlimit {
                    rlim_cur: n,
                    rlim_max: n,
                };
                check(libc::setrlimit(libc::RLIMIT_NPROC, &lim))?;
            }
            if let Some((uid, gid)) = setup.identity {
                check(libc::setgroups(0, std::ptr::null()))?;
                check(libc::setgid(gid))?;
                check(libc::setuid(uid))?;
            }
            // Close-on-exec rather than close: std's own error pipe must survive until exec.
            let r = libc::syscall(
                libc::SYS_close_range,
                3 as libc::c_uint,
                libc::c_uint::MAX,
                CLOSE_RANGE_CLOEXEC,
            );
            if r != 0 {
                // Kernels before 5.11: one fcntl per possible fd, bounded by the fd limit.
                for fd in 3..=setup.max_fd {
                    libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
                }
            }
            Ok(())
        });
    }
}

fn signal_group(pid: Option<u32>, sig: Signal) {
    if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
        // ESRCH (nothing left in the group) is the normal case after a clean exit.
        let _ = killpg(Pid::from_raw(pid), sig);
    }
}

/// TERM to the whole group, a grace period for the leader, then KILL to whatever is left.
async fn terminate_group(pid: Option<u32>, child: &mut tokio::process::Child) {
    signal_group(pid, Signal::SIGTERM);
    let _ = tokio::time::timeout(KILL_GRACE, child.wait()).await;
    // Grandchildren may ignore TERM or outlive the leader: KILL the group regardless (the
    // scope then kills whatever left the group).
    signal_group(pid, Signal::SIGKILL);
    let _ = child.kill().await;
}

/// Reads a stream to its end keeping at most `cap` bytes; at the first byte over the cap it
/// cancels `over_cap` and stops.
async fn read_capped<R: AsyncRead + Unpin>(
    mut r: R,
    cap: usize,
    over_cap: CancellationToken,
) -> (Vec<u8>, bool) {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        match r.read(&mut chunk).await {
            Ok(0) | Err(_) => return (buf, false),
            Ok(n) => {
                if buf.len() + n > cap {
                    let room = cap - buf.len();
                    buf.extend_from_slice(&chunk[..room]);
                    over_cap.cancel();
                    return (buf, true);
                }
                buf.extend_from_slice(&chunk[..n]);
            }
        }
    }
}

/// The reader's result, not waited for past [`DRAIN_WAIT`] (the scope has killed every process
/// that could hold the pipe open; this bounds what it could not).
async fn collect(task: Option<tokio::task::JoinHandle<(Vec<u8>, bool)>>) -> (Vec<u8>, bool) {
    let Some(mut task) = task else {
        return (Vec::new(), false);
    };
    match tokio::time::timeout(DRAIN_WAIT, &mut task).await {
        Ok(Ok(r)) => r,
        Ok(Err(_)) => (Vec::new(), false),
        Err(_) => {
            task.abort();
            (Vec::new(), false)
        }
    }
}

/// Splits a parameter string into argv on whitespace (no shell, no quoting).
pub fn split_args(params: &str) -> Vec<String> {
    params.split_whitespace().map(str::to_owned).collect()
}
