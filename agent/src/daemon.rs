//! Process lifecycle: the pid file (an exclusive lock, so a second agent on the same data dir
//! refuses to start), detaching, and `agent stop`.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Holds the pid file locked while the agent runs; removes it on drop.
pub struct PidFile {
    path: PathBuf,
    _lock: Flock<File>,
    /// The pid file's absolute path as recorded in the last-started pointer, if it was.
    recorded: Option<PathBuf>,
    /// Why this agent could not be recorded as the last one started, to be logged once the log
    /// is open.
    pub pointer_warning: Option<String>,
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
        if let Some(recorded) = &self.recorded {
            pointer().forget(recorded);
        }
    }
}

fn open_pid_file(path: &Path) -> anyhow::Result<File> {
    if let Some(dir) = path.parent() {
        crate::files::create_dir_all(dir, crate::files::PASS_DIR)
            .with_context(|| format!("cannot create data dir {}", dir.display()))?;
    }
    crate::files::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .with_context(|| format!("cannot open pid file {}", path.display()))
}

/// The pid recorded in a pid file, if any.
pub fn read_pid(path: &Path) -> Option<i32> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Fails with a clear message when an agent already holds `path`; `config` is the file it
/// was started with, for the command that stops it.
pub fn ensure_not_running(path: &Path, config: Option<&Path>) -> anyhow::Result<()> {
    let file = open_pid_file(path)?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(_released_on_drop) => Ok(()),
        Err((_, _)) => bail!(
            "an agent is already running on this data dir (pid {}, pid file {}); stop it first: agent stop -f {}",
            read_pid(path).map_or_else(|| "?".to_owned(), |p| p.to_string()),
            path.display(),
            config.map_or_else(|| "<config>".to_owned(), |c| c.display().to_string())
        ),
    }
}

/// Locks and writes the pid file; the lock lasts as long as the returned guard.
pub fn acquire(path: &Path, config: Option<&Path>) -> anyhow::Result<PidFile> {
    let file = open_pid_file(path)?;
    let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(l) => l,
        Err((_, _)) => {
            ensure_not_running(path, config)?;
            bail!("pid file {} is locked", path.display());
        }
    };
    lock.set_len(0)?;
    lock.rewind()?;
    writeln!(lock, "{}", std::process::id())?;
    lock.flush()?;
    // Lets `agent stop` without arguments (and agentctl) find this agent; without it they need
    // `-f`, so a pointer that cannot be recorded safely is only a warning.
    let recorded = std::path::absolute(path)
        .map_err(|e| e.to_string())
        .and_then(|abs| match pointer().record(&abs) {
            Ok(()) => Ok(abs),
            Err(e) => Err(e.to_string()),
        });
    let (recorded, pointer_warning) = match recorded {
        Ok(abs) => (Some(abs), None),
        Err(e) => (
            None,
            Some(format!("cannot record this agent as the last one started ({e}); `agent stop` needs -f <config> for it")),
        ),
    };
    Ok(PidFile {
        path: path.to_owned(),
        _lock: lock,
        recorded,
        pointer_warning,
    })
}

/// Where the pid file of the last agent started by this user is recorded, so `agent stop`
/// works without arguments, as the original agent's did, and
/// agentctl follows it to the token file beside the pid file.
fn pointer() -> shared::pointer::Pointer {
    shared::pointer::Pointer::for_user(nix::unistd::getuid().as_raw())
}

/// Starts this binary again in the background (new session, no terminal) and waits until it
/// holds its pid file, or reports why it died.
pub fn spawn_detached(config: &Path, pid_file: &Path, data_dir: &Path) -> anyhow::Result<i32> {
    let exe = std::env::current_exe().context("cannot find the agent's own executable")?;
    crate::files::create_dir_all(data_dir, crate::files::PASS_DIR)
        .with_context(|| format!("cannot create data dir {}", data_dir.display()))?;
    let start_log = data_dir.join("agent.start.log");
    let stderr = crate::files::create(&start_log)
        .with_context(|| format!("cannot create {}", start_log.display()))?;
    let mut cmd = Command::new(exe);
    cmd.arg("start")
        .arg("-f")
        .arg(config)
        .arg("--daemon-child")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr);
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
        #[allow(unsafe_code)]
        unsafe {
            cmd.pre_exec(|| {
                nix::unistd::setsid()
                    .map(|_| ())
                    .map_err(std::io::Error::from)
            });
        }
    }
    let mut child = cmd
        .spawn()
        .context("cannot start the agent in the background")?;
    let child_pid = child.id() as i32;
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait()? {
            let mut why = String::new();
            let _ = File::open(&start_log).and_then(|mut f| f.read_to_string(&mut why));
            bail!(
                "the agent exited during start-up ({status}):\n{}",
                why.trim_end()
            );
        }
        if read_pid(pid_file) == Some(child_pid) && is_locked(pid_file) {
            return Ok(child_pid);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!(
        "the agent (pid {child_pid}) did not finish starting within 20 s; see {}",
        start_log.display()
    )
}

fn is_locked(path: &Path) -> bool {
    OpenOptions::new()
        .read(true)
        .open(path)
        .map(|f| Flock::lock(f, FlockArg::LockSharedNonblock).is_err())
        .unwrap_or(false)
}

/// The pid of the agent holding `pid_file` locked.
pub fn running_pid(pid_file: &Path) -> anyhow::Result<i32> {
    match read_pid(pid_file).filter(|_| is_locked(pid_file)) {
        Some(pid) => Ok(pid),
        None => bail!(
            "no agent is running (no locked pid file at {})",
            pid_file.display()
        ),
    }
}

/// Asks the agent recorded in `pid_file` to stop, and waits for it to exit.
pub fn stop(pid_file: &Path, timeout: Duration) -> anyhow::Result<i32> {
    let pid = running_pid(pid_file)?;
    let target = Pid::from_raw(pid);
    kill(target, Signal::SIGTERM).with_context(|| format!("cannot signal pid {pid}"))?;
    let deadline = Instant::now() + timeout;
    // Done when the process is gone, not when it lets go of its pid file: that happens while it
    // still exits (the lock goes first), and a caller that starts the next agent or removes the
    // data dir on "stopped" must not race the old one.
    while Instant::now() < deadline {
        if is_gone(target) {
            return Ok(pid);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!(
        "the agent (pid {pid}) is still draining after {} s; it keeps going, check its log, or wait and run `agent stop` again",
        timeout.as_secs()
    )
}

/// The process no longer runs: no such pid, or a zombie that only waits to be reaped by its
/// parent (it has closed everything and runs no code).
fn is_gone(pid: Pid) -> bool {
    if kill(pid, None).is_err() {
        return true;
    }
    // The state is the first field after the command, which is in parentheses and may hold
    // anything, spaces and parentheses included.
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state == "Z" || state == "X")
    })
}

/// Finds the pid file `agent stop` without arguments should use.
pub fn find_running_pid_file() -> anyhow::Result<PathBuf> {
    use shared::pointer::PointerError;
    match pointer().read() {
        Ok(pid_file) => Ok(pid_file),
        // The pointer goes when its agent stops; an agent started before it may still run.
        Err(PointerError::NotRecorded(_)) => anyhow::bail!(
            "the last agent this user started is not running (or none was started), and only that one is recorded; to stop another, name its config: agent stop -f <config>"
        ),
        Err(e) => anyhow::bail!(
            "cannot use the record of the last agent this user started ({e}); name its config: agent stop -f <config>"
        ),
    }
}
