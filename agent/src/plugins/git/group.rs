//! The transports' helper processes (ssh, `git credential fill`) run in a process group of their
//! own, so that ending one ends what it started as well: the ssh behind a `GIT_SSH_COMMAND`
//! wrapper, a `ProxyCommand`, a credential helper's children. The agent's own group is left
//! alone, and every leader is reaped.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// How long a group gets between TERM and KILL.
const TERM_GRACE: Duration = Duration::from_secs(1);

/// A child process leading a process group of its own; the group is ended when this is dropped.
pub(super) struct Group {
    child: Child,
    status: Option<ExitStatus>,
}

impl Group {
    /// Starts `cmd` as the leader of a new process group.
    pub(super) fn spawn(cmd: &mut Command) -> io::Result<Group> {
        let child = cmd.process_group(0).spawn()?;
        Ok(Group {
            child,
            status: None,
        })
    }

    /// The leader, for its pipes.
    pub(super) fn child(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Ends the group and returns how the leader ended. The leader gets `grace` to exit by
    /// itself (close its stdin first), then the group gets TERM and [`TERM_GRACE`], then
    /// whatever is left of the group is killed, and the leader is reaped.
    pub(super) fn end(&mut self, grace: Duration) -> io::Result<ExitStatus> {
        if let Some(status) = self.status {
            return Ok(status);
        }
        if !self.exits_within(grace) {
            self.signal(Signal::SIGTERM);
            self.exits_within(TERM_GRACE);
        }
        // The leader is not reaped yet, so the group id is still its own and names no other
        // processes: what the leader left behind is killed, not a stranger.
        self.signal(Signal::SIGKILL);
        let status = self.child.wait()?;
        self.status = Some(status);
        Ok(status)
    }

    fn signal(&self, sig: Signal) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // ESRCH: the group is already gone.
            let _ = killpg(Pid::from_raw(pid), sig);
        }
    }

    /// Whether the leader exits within `limit`, without reaping it (`WNOWAIT`).
    fn exits_within(&self, limit: Duration) -> bool {
        let Ok(pid) = i32::try_from(self.child.id()) else {
            return true;
        };
        let until = Instant::now() + limit;
        loop {
            let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
            match waitid(Id::Pid(Pid::from_raw(pid)), flags) {
                Ok(WaitStatus::StillAlive) | Err(Errno::EINTR) => {}
                // Exited, or nothing left to wait for.
                _ => return true,
            }
            if Instant::now() >= until {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        let _ = self.end(Duration::ZERO);
    }
}
