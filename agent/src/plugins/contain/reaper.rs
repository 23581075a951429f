//! The fallback where cgroups are not usable: the agent is a child subreaper, so whatever a
//! plugin daemonizes (`setsid`, double fork) is reparented to the agent instead of init, and
//! after each run it kills and reaps every process of that run it can find in `/proc`.
//!
//! A process belongs to the run led by `leader` when any of these holds:
//! - its session or process group is the leader's (what `bash plugin.sh` and its jobs share);
//! - its chain of parents leads to the leader (also after a `setsid`);
//! - it was reparented to the agent, runs as the plugin user (a user other than the agent's),
//!   is not a run's leader, and no other run is going on (with runs overlapping, such an orphan
//!   cannot be told apart from another run's, and waits for the end of the last one).

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::Pid;

/// How long the sweep after a run may keep finding processes before it gives up.
pub const SWEEP_WAIT: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(10);
/// Longest chain of parents followed (a cycle is impossible, but a bound costs nothing).
const MAX_DEPTH: usize = 256;

/// Makes the agent a child subreaper (`PR_SET_CHILD_SUBREAPER`).
#[allow(unsafe_code)]
pub fn become_subreaper() -> std::io::Result<()> {
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes one integer argument and touches no memory.
    let r = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// One line of `/proc/<pid>/stat` that matters here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcInfo {
    /// Process id.
    pub pid: i32,
    /// Parent.
    pub ppid: i32,
    /// Process group.
    pub pgrp: i32,
    /// Session.
    pub session: i32,
    /// A zombie, waiting to be reaped.
    pub zombie: bool,
    /// Owner of `/proc/<pid>` (the effective uid).
    pub uid: u32,
}

/// Parses `/proc/<pid>/stat` (`pid (comm) state ppid pgrp session ...`; comm may hold spaces
/// and parentheses, so the fields are read after the last `)`).
pub fn parse_stat(text: &str, uid: u32) -> Option<ProcInfo> {
    let (head, rest) = text.rsplit_once(')')?;
    let pid = head.split_whitespace().next()?.parse().ok()?;
    let mut f = rest.split_whitespace();
    let state = f.next()?;
    Some(ProcInfo {
        pid,
        ppid: f.next()?.parse().ok()?,
        pgrp: f.next()?.parse().ok()?,
        session: f.next()?.parse().ok()?,
        zombie: state == "Z",
        uid,
    })
}

/// Every process in `proc` (normally `/proc`).
pub fn scan(proc: &Path) -> Vec<ProcInfo> {
    let Ok(entries) = std::fs::read_dir(proc) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|e| {
            let uid = e.metadata().ok()?.uid();
            let text = std::fs::read_to_string(e.path().join("stat")).ok()?;
            parse_stat(&text, uid)
        })
        .collect()
}

/// Which of `procs` belong to the run led by `leader` (see the module comment). `orphans_of`
/// is `Some((agent pid, plugin uid))` when reparented orphans of that uid may be taken.
pub fn belonging(
    procs: &[ProcInfo],
    leader: i32,
    agent: i32,
    orphans_of: Option<(i32, u32)>,
    leaders: &HashSet<i32>,
) -> Vec<ProcInfo> {
    let parent: HashMap<i32, i32> = procs.iter().map(|p| (p.pid, p.ppid)).collect();
    let descends = |mut pid: i32| {
        for _ in 0..MAX_DEPTH {
            match parent.get(&pid) {
                Some(&pp) if pp == leader => return true,
                Some(&pp) if pp > 1 => pid = pp,
                _ => return false,
            }
        }
        false
    };
    procs
        .iter()
        .filter(|p| p.pid != agent && p.pid > 1 && !leaders.contains(&p.pid))
        .filter(|p| {
            p.session == leader
                || p.pgrp == leader
                || descends(p.pid)
                || orphans_of.is_some_and(|(a, uid)| p.ppid == a && p.uid == uid)
        })
        .copied()
        .collect()
}

/// The reaper: the agent's pid, the plugin user, and the runs going on.
#[derive(Debug)]
pub struct Reaper {
    agent: i32,
    /// The plugin user's uid when it differs from the agent's (only then are orphans theirs).
    plugin_uid: Option<u32>,
    /// Leaders of the runs going on; held while a run is spawned and while a sweep decides.
    leaders: Mutex<HashSet<i32>>,
}

/// What a sweep found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Swept {
    /// Processes of the run found after its leader was reaped.
    pub left_behind: usize,
}

impl Reaper {
    /// A reaper for the agent `agent` whose plugins run as `plugin_uid`.
    pub fn new(agent: i32, plugin_uid: Option<u32>) -> Self {
        let own = nix::unistd::geteuid().as_raw();
        Reaper {
            agent,
            plugin_uid: plugin_uid.filter(|u| *u != own),
            leaders: Mutex::default(),
        }
    }

    /// The runs going on; hold it while spawning a run so no sweep takes the new leader for an
    /// orphan.
    pub fn leaders(&self) -> MutexGuard<'_, HashSet<i32>> {
        self.leaders
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// After the run led by `leader` is over (its leader reaped): kills every process of it,
    /// reaps those that became the agent's children, and repeats until none is found or
    /// [`SWEEP_WAIT`] passes. Blocking: call it from a blocking thread.
    pub fn sweep(&self, leader: i32) -> Result<Swept, String> {
        let deadline = Instant::now() + SWEEP_WAIT;
        let mut left_behind = 0;
        let mut seen = HashSet::new();
        loop {
            let found = {
                let mut leaders = self.leaders();
                leaders.remove(&leader);
                let orphans = self
                    .plugin_uid
                    .filter(|_| leaders.is_empty())
                    .map(|u| (self.agent, u));
                let found = belonging(
                    &scan(Path::new("/proc")),
                    leader,
                    self.agent,
                    orphans,
                    &leaders,
                );
                for p in &found {
                    if !p.zombie {
                        let _ = kill(Pid::from_raw(p.pid), Signal::SIGKILL);
                    }
                }
                found
            };
            for p in &found {
                if seen.insert(p.pid) {
                    left_behind += 1;
                }
                if p.ppid == self.agent {
                    // Only this pid: a wait for any child would steal the exit status of a
                    // child the runtime waits for.
                    let _ = waitpid(Pid::from_raw(p.pid), Some(WaitPidFlag::WNOHANG));
                }
            }
            if found.is_empty() {
                return Ok(Swept { left_behind });
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{} processes of the run (leader {leader}) still found {} s after the kill",
                    found.len(),
                    SWEEP_WAIT.as_secs()
                ));
            }
            std::thread::sleep(POLL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pid: i32, ppid: i32, pgrp: i32, session: i32, uid: u32) -> ProcInfo {
        ProcInfo {
            pid,
            ppid,
            pgrp,
            session,
            zombie: false,
            uid,
        }
    }

    #[test]
    fn stat_lines_with_odd_command_names_parse() {
        let line = "4242 (we(ir) d) S 100 4242 4242 0 -1 4194560 0 0";
        assert_eq!(
            parse_stat(line, 65534),
            Some(p(4242, 100, 4242, 4242, 65534))
        );
        let z = parse_stat("7 (sh) Z 1 7 7 0", 0).expect("parses");
        assert!(z.zombie);
        assert_eq!(parse_stat("garbage", 0), None);
    }

    #[test]
    fn a_run_owns_its_session_its_descendants_and_lone_orphans_of_the_plugin_user() {
        let agent = 100;
        let leader = 200;
        let procs = vec![
            p(agent, 1, agent, agent, 0),
            p(201, leader, leader, leader, 65534), // a job of plugin.sh
            p(300, 201, 300, 300, 65534),          // setsid below the run: by ancestry
            p(400, agent, 400, 400, 65534),        // double-forked, reparented to the agent
            p(500, agent, 500, 500, 0),            // the agent's own child (root)
            p(600, 1, 600, 600, 65534),            // some other nobody process under init
            p(700, agent, 700, 700, 65534),        // another run's leader
            p(701, 700, 700, 700, 65534),          // its job
        ];
        let others: HashSet<i32> = [700].into();
        let pids = |v: Vec<ProcInfo>| v.iter().map(|p| p.pid).collect::<Vec<_>>();
        // Another run is going on: orphans are not taken.
        assert_eq!(
            pids(belonging(&procs, leader, agent, None, &others)),
            vec![201, 300]
        );
        // The last run: lone orphans of the plugin user go too; other runs' leaders never.
        assert_eq!(
            pids(belonging(
                &procs,
                leader,
                agent,
                Some((agent, 65534)),
                &others
            )),
            vec![201, 300, 400]
        );
    }
}
