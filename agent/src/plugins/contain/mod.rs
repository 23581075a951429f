//! Plugins run contained: everything a run starts ends with it, `setsid` or not.
//!
//! At start the agent picks, once, how the host lets it contain runs ([`Containment::init`]):
//! - **cgroup**: each run gets its own cgroup (v2 for membership and the kill; limits in v2, or
//!   in the v1 `pids`/`memory` hierarchies of a hybrid host), joined by the child before exec;
//!   when the run ends everything in it is killed, the cgroup is checked empty and removed
//!   (`cgroup.rs`);
//! - **reaper**: where no cgroup is writable, the agent is a child subreaper and kills every
//!   process of the run it finds in `/proc` (`reaper.rs`).
//!
//! The runner asks for a [`Scope`] per run, spawns through it, and ends it with
//! [`Scope::finish`] once the leader is reaped.

pub mod cgroup;
pub mod reaper;

use std::os::fd::RawFd;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tracing::{info, warn};

use crate::config::{Config, PluginContainment};
use cgroup::{Cgroups, Layout, Limits, RunCgroup};
use reaper::Reaper;

enum Kind {
    Cgroup(Cgroups),
    Reaper(Reaper),
}

/// How this agent contains plugin runs; one per agent, shared by every run.
pub struct Containment {
    kind: Kind,
    limits: Limits,
    describe: String,
    agent_pid: u32,
    seq: AtomicU64,
}

impl std::fmt::Debug for Containment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe)
    }
}

/// Picks the mode: `cgroup` when asked for or when `auto` finds a usable hierarchy; `reaper`
/// when asked for or when `auto` finds none. Forced `cgroup` without a usable hierarchy is an
/// error (the agent then refuses to start).
pub fn choose(
    wanted: PluginContainment,
    root: &Path,
    self_cgroup: &str,
    limits: Limits,
    self_pid: u32,
) -> Result<Result<(Layout, Cgroups), String>, String> {
    if wanted == PluginContainment::Reaper {
        return Ok(Err("agent.plugin_containment = \"reaper\"".to_owned()));
    }
    let found = cgroup::detect(root, self_cgroup)
        .and_then(|layout| cgroup::setup(&layout, limits, self_pid).map(|c| (layout, c)));
    match (found, wanted) {
        (Ok(c), _) => Ok(Ok(c)),
        (Err(e), PluginContainment::Cgroup) => Err(format!(
            "agent.plugin_containment = \"cgroup\" but cgroups are not usable here: {e}"
        )),
        (Err(e), _) => Ok(Err(e)),
    }
}

impl Containment {
    /// Chooses the mode for `config` (logged once), with plugins running as `plugin_uid`.
    pub fn init(config: &Config, plugin_uid: Option<u32>) -> Result<Containment, String> {
        let limits = Limits {
            memory_bytes: config.agent.plugin_memory_max_bytes,
            pids: config.agent.plugin_pids_max,
        };
        let agent_pid = std::process::id();
        let self_cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let chosen = choose(
            config.agent.plugin_containment,
            &config.agent.cgroup_root,
            &self_cgroup,
            limits,
            agent_pid,
        )?;
        let (kind, describe) = match chosen {
            Ok((layout, cgroups)) => {
                for note in &cgroups.notes {
                    warn!(note = %note, "Plugin limit not available.");
                }
                let stale = cgroups.remove_stale(agent_pid);
                if stale > 0 {
                    info!(
                        stale,
                        "Killed and removed plugin cgroups a previous agent left."
                    );
                }
                let d = cgroups.describe(layout.hybrid);
                (Kind::Cgroup(cgroups), d)
            }
            Err(why) => {
                if let Err(e) = reaper::become_subreaper() {
                    return Err(format!("cannot become a child subreaper: {e}"));
                }
                let pids = if limits.pids > 0 && plugin_uid.is_some() {
                    format!("; RLIMIT_NPROC {} for the plugin user", limits.pids)
                } else {
                    String::new()
                };
                let d = format!("reaper (subreaper, /proc sweep{pids}): {why}");
                (Kind::Reaper(Reaper::new(agent_pid as i32, plugin_uid)), d)
            }
        };
        info!(containment = %describe, "Plugin containment chosen.");
        Ok(Containment {
            kind,
            limits,
            describe,
            agent_pid,
            seq: AtomicU64::new(0),
        })
    }

    /// The mode in one line (`/me/status` shows it as `plugins.containment`).
    pub fn describe(&self) -> &str {
        &self.describe
    }

    /// Whether runs get a cgroup each.
    pub fn is_cgroup(&self) -> bool {
        matches!(self.kind, Kind::Cgroup(_))
    }

    /// Prepares one run: its cgroup in cgroup mode. An error means the run must not start.
    pub fn prepare(self: &Arc<Self>) -> Result<Scope, String> {
        let cgroup = match &self.kind {
            Kind::Cgroup(c) => {
                let mut made = None;
                // A name is taken when another manager in this process (tests) or a cgroup
                // left over under this pid holds it: take the next.
                for _ in 0..1000 {
                    let n = self.seq.fetch_add(1, Ordering::Relaxed);
                    made = c.create_run(&format!("run-{}-{n}", self.agent_pid))?;
                    if made.is_some() {
                        break;
                    }
                }
                Some(made.ok_or("no free run cgroup name after 1000 tries")?)
            }
            Kind::Reaper(_) => None,
        };
        Ok(Scope {
            contain: Arc::clone(self),
            cgroup,
            leader: None,
        })
    }
}

/// What the child does between fork and exec, prepared in the parent (nothing here allocates
/// in the child).
#[derive(Debug, Clone, Default)]
pub struct PreExec {
    /// `cgroup.procs` descriptors to write `0` to (join the run's cgroups).
    pub join: Vec<RawFd>,
    /// `RLIMIT_NPROC` to set (reaper mode with a plugin user).
    pub nproc: Option<u64>,
}

/// One run's containment: spawn through it, then [`Scope::finish`].
pub struct Scope {
    contain: Arc<Containment>,
    cgroup: Option<RunCgroup>,
    leader: Option<i32>,
}

impl Scope {
    /// What the child must do before exec.
    pub fn pre_exec(&self, drops_privileges: bool) -> PreExec {
        PreExec {
            join: self
                .cgroup
                .as_ref()
                .map(RunCgroup::join_fds)
                .unwrap_or_default(),
            nproc: match &self.contain.kind {
                Kind::Reaper(_) if drops_privileges && self.contain.limits.pids > 0 => {
                    Some(self.contain.limits.pids)
                }
                _ => None,
            },
        }
    }

    /// Spawns with `spawn` (which forks and execs the child), recording the leader so a sweep
    /// of another run never takes it for an orphan.
    pub fn spawn<T>(
        &mut self,
        spawn: impl FnOnce() -> std::io::Result<T>,
        pid_of: impl Fn(&T) -> Option<u32>,
    ) -> std::io::Result<T> {
        let mut reaper_leaders = match &self.contain.kind {
            Kind::Reaper(r) => Some(r.leaders()),
            Kind::Cgroup(_) => None,
        };
        let child = spawn()?;
        self.leader = pid_of(&child).and_then(|p| i32::try_from(p).ok());
        if let (Some(leaders), Some(pid)) = (reaper_leaders.as_mut(), self.leader) {
            leaders.insert(pid);
        }
        Ok(child)
    }

    /// Once the leader is reaped: kills everything the run left, checks it is gone and cleans
    /// up. Returns how many processes were left behind, or why the kill is not verified.
    pub async fn finish(mut self) -> Result<usize, String> {
        let cgroup = self.cgroup.take();
        let leader = self.leader.take();
        let contain = Arc::clone(&self.contain);
        let job = move || match (cgroup, &contain.kind, leader) {
            (Some(cg), _, _) => cg.kill_and_remove().map(|k| k.left_behind),
            (None, Kind::Reaper(r), Some(leader)) => r.sweep(leader).map(|s| s.left_behind),
            _ => Ok(0),
        };
        tokio::task::spawn_blocking(job)
            .await
            .map_err(|e| format!("containment task failed: {e}"))?
    }
}

impl Drop for Scope {
    /// A run dropped mid-way (shutdown, a cancelled request): kill now, clean up in the
    /// background.
    fn drop(&mut self) {
        let cgroup = self.cgroup.take();
        let leader = self.leader.take();
        if cgroup.is_none() && leader.is_none() {
            return;
        }
        if let Some(cg) = &cgroup {
            cg.kill_now();
        }
        if let Some(pid) = leader {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let contain = Arc::clone(&self.contain);
        let job = move || {
            let done = match (cgroup, &contain.kind, leader) {
                (Some(cg), _, _) => cg.kill_and_remove().map(drop),
                (None, Kind::Reaper(r), Some(leader)) => r.sweep(leader).map(drop),
                _ => Ok(()),
            };
            if let Err(e) = done {
                warn!(error = %e, "Plugin run not fully cleaned up.");
            }
        };
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn_blocking(job);
        } else {
            job();
        }
    }
}

#[cfg(test)]
mod tests;
