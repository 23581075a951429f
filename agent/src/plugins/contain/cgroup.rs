//! The cgroup side of containment: which hierarchies the host has, the agent's own subtree, and
//! one cgroup per plugin run that is killed, checked empty and removed when the run ends.
//!
//! Layout under the agent's own cgroup `<own>` (the `0::` line of `/proc/self/cgroup`):
//!
//! ```text
//! <own>/agent             the agent itself, only when it enables controllers in <own>
//! <own>/plugins/run-P-N   one per run (P = the agent's pid, N = a counter)
//! ```
//!
//! On a hybrid host the v2 hierarchy (`/sys/fs/cgroup/unified`) carries membership and the kill;
//! the v1 `pids` and `memory` hierarchies carry the limits, in the same `plugins/run-P-N` shape
//! under the agent's own cgroup of each.

use std::fs;
use std::io::Write;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// How long a run's cgroup gets to empty after the kill.
pub const KILL_WAIT: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(10);

/// The cgroup hierarchies of this host, as seen from the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Where the v2 hierarchy is mounted (`root` or `root/unified`).
    pub v2_mount: PathBuf,
    /// Whether v1 controllers are mounted beside it (`unified`).
    pub hybrid: bool,
    /// The agent's own v2 cgroup (absolute path in the mount).
    pub own: PathBuf,
    /// The agent's own cgroup in the v1 `pids` hierarchy, on hybrid hosts.
    pub v1_pids: Option<PathBuf>,
    /// The agent's own cgroup in the v1 `memory` hierarchy, on hybrid hosts.
    pub v1_memory: Option<PathBuf>,
}

/// Joins a cgroup path from `/proc/self/cgroup` (`/a/b`) under a mount, refusing `..`.
fn under(mount: &Path, cgroup: &str) -> Option<PathBuf> {
    let rel = Path::new(cgroup.trim_start_matches('/'));
    if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return None;
    }
    Some(mount.join(rel))
}

/// Reads which hierarchies exist under `root` (normally `/sys/fs/cgroup`) and where the agent
/// is in them, from the text of `/proc/self/cgroup`.
pub fn detect(root: &Path, self_cgroup: &str) -> Result<Layout, String> {
    let mut v2 = None;
    let mut v1 = Vec::new();
    for line in self_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(ctrls), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        if id == "0" && ctrls.is_empty() {
            v2 = Some(path.to_owned());
        } else {
            v1.push((ctrls.to_owned(), path.to_owned()));
        }
    }
    let Some(v2) = v2 else {
        return Err("no cgroup v2 membership (no `0::` line in /proc/self/cgroup)".to_owned());
    };
    let (v2_mount, hybrid) = if root.join("cgroup.controllers").is_file() {
        (root.to_path_buf(), false)
    } else if root.join("unified/cgroup.controllers").is_file() {
        (root.join("unified"), true)
    } else {
        return Err(format!(
            "no cgroup v2 hierarchy at {} or {}/unified",
            root.display(),
            root.display()
        ));
    };
    let own = under(&v2_mount, &v2)
        .filter(|p| p.join("cgroup.procs").is_file())
        .ok_or_else(|| {
            format!(
                "the agent's own cgroup {v2:?} is not in {}",
                v2_mount.display()
            )
        })?;
    let v1_own = |ctrl: &str| {
        if !hybrid {
            return None;
        }
        let (_, path) = v1
            .iter()
            .find(|(ctrls, _)| ctrls.split(',').any(|c| c == ctrl))?;
        under(&root.join(ctrl), path).filter(|p| p.join("cgroup.procs").is_file())
    };
    Ok(Layout {
        v1_pids: v1_own("pids"),
        v1_memory: v1_own("memory"),
        v2_mount,
        hybrid,
        own,
    })
}

/// Limits of one run; 0 = none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Limits {
    /// `memory.max` (v2) / `memory.limit_in_bytes` (v1).
    pub memory_bytes: u64,
    /// `pids.max`.
    pub pids: u64,
}

/// The agent's prepared subtree: where runs go and which limits they get.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroups {
    /// `<own>/plugins` in the v2 hierarchy.
    pub parent: PathBuf,
    /// Controllers enabled for runs in v2 (`pids`, `memory`).
    pub v2_controllers: Vec<&'static str>,
    /// `<own>/plugins` in the v1 pids hierarchy, when the limit is set there.
    pub v1_pids: Option<PathBuf>,
    /// `<own>/plugins` in the v1 memory hierarchy, when the limit is set there.
    pub v1_memory: Option<PathBuf>,
    /// The limits asked for.
    pub limits: Limits,
    /// Why an asked-for limit is not applied, for the start-up log.
    pub notes: Vec<String>,
}

fn write_file(path: &Path, text: &str) -> std::io::Result<()> {
    // One write(2): cgroup files take one value per write.
    fs::OpenOptions::new()
        .write(true)
        .open(path)?
        .write_all(text.as_bytes())
}

fn mkdir(path: &Path) -> Result<(), String> {
    match fs::create_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && path.is_dir() => Ok(()),
        Err(e) => Err(format!("cannot create cgroup {}: {e}", path.display())),
    }
}

/// Prepares the agent's subtree in `layout`: `<own>/plugins` (an error when it cannot be made:
/// cgroups are then not usable), the controllers the limits need (moving the agent, `self_pid`,
/// into `<own>/agent` first, as v2 allows no processes in a cgroup that hands controllers down),
/// and the v1 `plugins` folders of a hybrid host. A limit that cannot be had is a note, not an
/// error: membership and the kill still work without it.
pub fn setup(layout: &Layout, limits: Limits, self_pid: u32) -> Result<Cgroups, String> {
    let parent = layout.own.join("plugins");
    mkdir(&parent)?;
    let mut notes = Vec::new();
    let wanted: Vec<&'static str> = [("pids", limits.pids), ("memory", limits.memory_bytes)]
        .into_iter()
        .filter(|(_, l)| *l > 0)
        .map(|(c, _)| c)
        .collect();
    let available = fs::read_to_string(layout.own.join("cgroup.controllers")).unwrap_or_default();
    let v2_wanted: Vec<&'static str> = wanted
        .iter()
        .copied()
        .filter(|c| available.split_whitespace().any(|a| a == *c))
        .collect();
    let mut v2_controllers = Vec::new();
    if !v2_wanted.is_empty() {
        match enable_controllers(layout, &parent, &v2_wanted, self_pid) {
            Ok(()) => v2_controllers = v2_wanted,
            Err(e) => notes.push(e),
        }
    }
    let v1 = |ctrl: &'static str, own: &Option<PathBuf>, notes: &mut Vec<String>| {
        if !wanted.contains(&ctrl) || v2_controllers.contains(&ctrl) {
            return None;
        }
        let Some(own) = own else {
            notes.push(format!(
                "no {ctrl} controller for the agent's cgroup: {ctrl} limit not applied"
            ));
            return None;
        };
        let dir = own.join("plugins");
        match mkdir(&dir) {
            Ok(()) => Some(dir),
            Err(e) => {
                notes.push(format!("{e}: {ctrl} limit not applied"));
                None
            }
        }
    };
    let v1_pids = v1("pids", &layout.v1_pids, &mut notes);
    let v1_memory = v1("memory", &layout.v1_memory, &mut notes);
    Ok(Cgroups {
        parent,
        v2_controllers,
        v1_pids,
        v1_memory,
        limits,
        notes,
    })
}

fn enable_controllers(
    layout: &Layout,
    parent: &Path,
    controllers: &[&str],
    self_pid: u32,
) -> Result<(), String> {
    let own = &layout.own;
    // The root cgroup is exempt from "no internal processes"; any other must hold none.
    if own != &layout.v2_mount {
        let leaf = own.join("agent");
        mkdir(&leaf)?;
        write_file(&leaf.join("cgroup.procs"), &self_pid.to_string()).map_err(|e| {
            format!(
                "cannot move the agent into {}: {e}; limits not applied",
                leaf.display()
            )
        })?;
    }
    let plus: Vec<String> = controllers.iter().map(|c| format!("+{c}")).collect();
    let plus = plus.join(" ");
    for dir in [own.as_path(), parent] {
        write_file(&dir.join("cgroup.subtree_control"), &plus).map_err(|e| {
            format!(
                "cannot enable {plus} in {}: {e} (other processes in the agent's cgroup? run it in a unit of its own with Delegate=yes); limits not applied",
                dir.display()
            )
        })?;
    }
    Ok(())
}

impl Cgroups {
    /// One line for the log and `/me/status`.
    pub fn describe(&self, hybrid: bool) -> String {
        let mut limits = Vec::new();
        let l = self.limits;
        for c in &self.v2_controllers {
            limits.push(match *c {
                "pids" => format!("pids {}", l.pids),
                _ => format!("memory {}", l.memory_bytes),
            });
        }
        if self.v1_pids.is_some() {
            limits.push(format!("pids {} (v1)", l.pids));
        }
        if self.v1_memory.is_some() {
            limits.push(format!("memory {} (v1)", l.memory_bytes));
        }
        let limits = if limits.is_empty() {
            "no limits".to_owned()
        } else {
            limits.join(", ")
        };
        format!(
            "cgroup{} {}; {limits}",
            if hybrid { " (hybrid)" } else { "" },
            self.parent.display()
        )
    }

    /// Creates the cgroup(s) of one run, with its limits, and opens their `cgroup.procs` for
    /// the child to join before exec. On failure nothing is left behind. A name already taken
    /// is `Ok(None)`: a run never shares a cgroup.
    pub fn create_run(&self, name: &str) -> Result<Option<RunCgroup>, String> {
        let mut run = RunCgroup {
            v2: self.parent.join(name),
            v1: Vec::new(),
            procs: Vec::new(),
        };
        match fs::create_dir(&run.v2) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(None),
            Err(e) => return Err(format!("cannot create cgroup {}: {e}", run.v2.display())),
        }
        let made = (|| {
            let l = self.limits;
            for c in &self.v2_controllers {
                let (file, value) = match *c {
                    "pids" => ("pids.max", l.pids),
                    _ => ("memory.max", l.memory_bytes),
                };
                set(&run.v2.join(file), value)?;
            }
            if self.v2_controllers.contains(&"memory") {
                // An OOM kill takes the whole run, not one random process of it.
                let _ = write_file(&run.v2.join("memory.oom.group"), "1");
            }
            for (parent, file, value) in [
                (&self.v1_pids, "pids.max", l.pids),
                (&self.v1_memory, "memory.limit_in_bytes", l.memory_bytes),
            ] {
                if let Some(parent) = parent {
                    let dir = parent.join(name);
                    mkdir(&dir)?;
                    run.v1.push(dir.clone());
                    set(&dir.join(file), value)?;
                }
            }
            for dir in std::iter::once(&run.v2).chain(&run.v1) {
                let path = dir.join("cgroup.procs");
                let f = fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
                run.procs.push(f);
            }
            Ok::<(), String>(())
        })();
        match made {
            Ok(()) => Ok(Some(run)),
            Err(e) => {
                let _ = run.kill_and_remove();
                Err(e)
            }
        }
    }

    /// Kills and removes the runs a previous agent left (it was killed before it could): every
    /// `run-P-*` whose agent P is no longer running.
    pub fn remove_stale(&self, self_pid: u32) -> usize {
        let Ok(entries) = fs::read_dir(&self.parent) else {
            return 0;
        };
        let mut removed = 0;
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(pid) = name
                .strip_prefix("run-")
                .and_then(|r| r.split('-').next())
                .and_then(|p| p.parse::<u32>().ok())
            else {
                continue;
            };
            if pid == self_pid || Path::new(&format!("/proc/{pid}")).exists() {
                continue;
            }
            let v1 = [&self.v1_pids, &self.v1_memory]
                .into_iter()
                .flatten()
                .map(|p| p.join(&name))
                .filter(|p| p.is_dir())
                .collect();
            let run = RunCgroup {
                v2: e.path(),
                v1,
                procs: Vec::new(),
            };
            if run.kill_and_remove().is_ok() {
                removed += 1;
            }
        }
        removed
    }
}

fn set(path: &Path, value: u64) -> Result<(), String> {
    write_file(path, &value.to_string())
        .map_err(|e| format!("cannot set {} to {value}: {e}", path.display()))
}

/// One run's cgroups.
#[derive(Debug)]
pub struct RunCgroup {
    /// The v2 cgroup: membership and the kill.
    pub v2: PathBuf,
    /// The v1 cgroups holding limits (hybrid hosts).
    pub v1: Vec<PathBuf>,
    procs: Vec<fs::File>,
}

/// What the end of a run found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Killed {
    /// Processes still in the run's cgroup after its leader was reaped.
    pub left_behind: usize,
}

fn pids_in(dir: &Path) -> Vec<i32> {
    fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

fn populated(dir: &Path) -> bool {
    match fs::read_to_string(dir.join("cgroup.events")) {
        Ok(ev) => ev.lines().any(|l| l.trim() == "populated 1"),
        Err(_) => !pids_in(dir).is_empty(),
    }
}

impl RunCgroup {
    /// The `cgroup.procs` descriptors the child writes `0` to, between fork and exec.
    pub fn join_fds(&self) -> Vec<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        self.procs.iter().map(AsRawFd::as_raw_fd).collect()
    }

    /// Sends the kill to everything in the run's cgroup without waiting (for a run dropped
    /// mid-way; [`RunCgroup::kill_and_remove`] still has to follow).
    pub fn kill_now(&self) {
        if write_file(&self.v2.join("cgroup.kill"), "1").is_err() {
            for pid in pids_in(&self.v2) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }

    /// Kills everything in the run's cgroup (`cgroup.kill`, or SIGKILL to each member until
    /// none is left where the kernel has no `cgroup.kill`), checks that it is empty within
    /// [`KILL_WAIT`], and removes the cgroup(s). Blocking (short sleeps): call it from a
    /// blocking thread.
    pub fn kill_and_remove(mut self) -> Result<Killed, String> {
        self.procs.clear();
        let left_behind = pids_in(&self.v2).len();
        let has_kill = self.v2.join("cgroup.kill").is_file();
        let deadline = Instant::now() + KILL_WAIT;
        let mut first = true;
        while populated(&self.v2) {
            if first || !has_kill {
                // Without cgroup.kill a forking process can add members between the read and
                // the kills: repeat until the cgroup is empty.
                self.kill_now();
                first = false;
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{} processes still in {} {} s after the kill",
                    pids_in(&self.v2).len(),
                    self.v2.display(),
                    KILL_WAIT.as_secs()
                ));
            }
            std::thread::sleep(POLL);
        }
        for dir in std::iter::once(&self.v2).chain(&self.v1) {
            remove(dir)?;
        }
        Ok(Killed { left_behind })
    }
}

/// rmdir, retried briefly: a v1 cgroup can stay busy for a moment after its last task exits.
fn remove(dir: &Path) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if Instant::now() >= deadline => {
                return Err(format!("cannot remove cgroup {}: {e}", dir.display()))
            }
            Err(_) => std::thread::sleep(POLL),
        }
    }
}
