//! The "last agent this user started" pointer: `agent start` records the path of its pid file
//! there, so a bare `agent stop` and agentctl (for the token file beside the pid file) find it.
//!
//! It lives in `$XDG_RUNTIME_DIR` (a folder of this user's own, one per login), or else in a
//! folder `agent-<uid>` of the temp dir that only this user may enter. That folder is shared by
//! every login of the user (root over ssh has no `XDG_RUNTIME_DIR`), so there the pointer is
//! named after the login's audit session (`/proc/self/sessionid`, set by `pam_loginuid` and
//! inherited by everything started from the login): two operators logged in as root each have
//! their own "last started", and one's bare `agent stop` cannot stop the other's agent. Without
//! an audit session (no `pam_loginuid`, some containers) it is one pointer per user. Whatever is in a shared folder
//! may have been planted by another local user, so the pointer is trusted only when its folder
//! belongs to this user (or root) and nobody else may write it, the pointer is a regular file
//! of this user that nobody else may write, and no symlink is followed on the way: every step
//! works on file descriptors (`openat`, `renameat`), so nothing can be swapped between a check
//! and its use. A pointer that fails a check is not followed (reading) and not written through
//! (recording); the error says why.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{open, openat, renameat, OFlag};
use nix::sys::stat::{fstat, Mode, SFlag};
use nix::unistd::{mkdir, unlinkat, UnlinkatFlags};

/// Longest pointer read: a path, so a few KiB at most.
const MAX_POINTER_BYTES: u64 = 4096;

/// Why there is no pointer to follow.
#[derive(Debug, thiserror::Error)]
pub enum PointerError {
    /// No agent is recorded (none was started, or the last one stopped).
    #[error("nothing is recorded in {0}")]
    NotRecorded(PathBuf),
    /// Something is there, but another user could have put it there.
    #[error("{path}: not used: {why}")]
    Untrusted {
        /// What was refused.
        path: PathBuf,
        /// Why, in a few words.
        why: &'static str,
    },
    /// It could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// Where user `uid`'s pointer is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pointer {
    dir: PathBuf,
    /// The folder is the temp-dir fallback: made by us, mode 0700, of this user only.
    private: bool,
    uid: u32,
    /// The login's audit session, naming the pointer in the shared fallback folder.
    session: Option<u32>,
}

/// The audit session of this process (`/proc/self/sessionid`), if it is in one.
pub fn audit_session() -> Option<u32> {
    let text = std::fs::read_to_string("/proc/self/sessionid").ok()?;
    // `(u32)-1`: not in an audit session.
    text.trim().parse().ok().filter(|&id| id != u32::MAX)
}

impl Pointer {
    /// The pointer of user `uid`: in `$XDG_RUNTIME_DIR`, else in `{temp dir}/agent-<uid>/`.
    pub fn for_user(uid: u32) -> Pointer {
        match std::env::var_os("XDG_RUNTIME_DIR")
            .map(PathBuf::from)
            .filter(|d| d.is_absolute())
        {
            Some(dir) => Pointer {
                dir,
                private: false,
                uid,
                session: None,
            },
            None => Pointer {
                dir: std::env::temp_dir().join(format!("agent-{uid}")),
                private: true,
                uid,
                session: audit_session(),
            },
        }
    }

    /// A pointer of user `uid` in a given folder (tests).
    pub fn in_dir(dir: &Path, uid: u32) -> Pointer {
        Pointer {
            dir: dir.to_owned(),
            private: false,
            uid,
            session: None,
        }
    }

    /// The pointer file's path, for messages.
    pub fn path(&self) -> PathBuf {
        self.dir.join(self.file_name())
    }

    fn file_name(&self) -> String {
        match self.session {
            Some(s) => format!("agent-{}-session-{s}.pidfile", self.uid),
            None => format!("agent-{}.pidfile", self.uid),
        }
    }

    fn io(&self, path: PathBuf) -> impl FnOnce(Errno) -> PointerError {
        move |e| PointerError::Io {
            path,
            source: e.into(),
        }
    }

    fn untrusted(&self, path: PathBuf, why: &'static str) -> PointerError {
        PointerError::Untrusted { path, why }
    }

    /// Opens the folder, making the private fallback when `create`; refuses a folder another
    /// user could have made or may write.
    fn open_dir(&self, create: bool) -> Result<OwnedFd, PointerError> {
        if create && self.private {
            match mkdir(&self.dir, Mode::S_IRWXU) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(self.io(self.dir.clone())(e)),
            }
        }
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = match open(&self.dir, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Err(PointerError::NotRecorded(self.dir.clone())),
            Err(Errno::ELOOP | Errno::ENOTDIR) => {
                return Err(self.untrusted(self.dir.clone(), "not a folder (a symlink?)"))
            }
            Err(e) => return Err(self.io(self.dir.clone())(e)),
        };
        let st = fstat(&fd).map_err(self.io(self.dir.clone()))?;
        let owner_ok = st.st_uid == self.uid || st.st_uid == 0;
        if !owner_ok || st.st_mode & 0o022 != 0 {
            return Err(self.untrusted(
                self.dir.clone(),
                "the folder belongs to another user, or others may write it",
            ));
        }
        if self.private && (st.st_uid != self.uid || st.st_mode & 0o077 != 0) {
            return Err(self.untrusted(
                self.dir.clone(),
                "the folder is not this user's alone (mode 0700)",
            ));
        }
        Ok(fd)
    }

    /// The pid file the last agent this user started recorded.
    pub fn read(&self) -> Result<PathBuf, PointerError> {
        let dir = self.open_dir(false)?;
        let path = self.path();
        let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK;
        let fd = match openat(&dir, self.file_name().as_str(), flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Err(PointerError::NotRecorded(path)),
            Err(Errno::ELOOP) => return Err(self.untrusted(path, "a symlink")),
            Err(e) => return Err(self.io(path)(e)),
        };
        let st = fstat(&fd).map_err(self.io(path.clone()))?;
        let regular =
            SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) == SFlag::S_IFREG;
        if !regular || st.st_uid != self.uid || st.st_mode & 0o022 != 0 {
            return Err(self.untrusted(
                path,
                "not a regular file of this user, or others may write it",
            ));
        }
        let mut text = String::new();
        std::fs::File::from(fd)
            .take(MAX_POINTER_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(|source| PointerError::Io {
                path: path.clone(),
                source,
            })?;
        let pid_file = PathBuf::from(text.trim());
        if text.len() as u64 > MAX_POINTER_BYTES || !pid_file.is_absolute() {
            return Err(self.untrusted(path, "it does not name a pid file"));
        }
        Ok(pid_file)
    }

    /// Records `pid_file` (an absolute path) as the last agent this user started: written to a
    /// new file of mode 0600, then renamed over the pointer, inside the checked folder.
    pub fn record(&self, pid_file: &Path) -> Result<(), PointerError> {
        let dir = self.open_dir(true)?;
        let tmp = format!(".{}.{}.tmp", self.file_name(), std::process::id());
        let _ = unlinkat(&dir, tmp.as_str(), UnlinkatFlags::NoRemoveDir);
        let flags =
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = openat(&dir, tmp.as_str(), flags, Mode::S_IRUSR | Mode::S_IWUSR)
            .map_err(self.io(self.dir.join(&tmp)))?;
        let written = std::fs::File::from(fd).write_all(pid_file.display().to_string().as_bytes());
        if let Err(source) = written {
            let _ = unlinkat(&dir, tmp.as_str(), UnlinkatFlags::NoRemoveDir);
            return Err(PointerError::Io {
                path: self.dir.join(&tmp),
                source,
            });
        }
        renameat(&dir, tmp.as_str(), &dir, self.file_name().as_str()).map_err(|e| {
            let _ = unlinkat(&dir, tmp.as_str(), UnlinkatFlags::NoRemoveDir);
            self.io(self.path())(e)
        })
    }

    /// Removes the pointer if it still names `pid_file` (an agent stopping).
    pub fn forget(&self, pid_file: &Path) {
        if self.read().is_ok_and(|p| p == pid_file) {
            if let Ok(dir) = self.open_dir(false) {
                let _ = unlinkat(&dir, self.file_name().as_str(), UnlinkatFlags::NoRemoveDir);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn uid() -> u32 {
        nix::unistd::getuid().as_raw()
    }

    #[test]
    fn a_recorded_pid_file_reads_back_and_is_forgotten_only_by_its_agent() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = Pointer::in_dir(dir.path(), uid());
        assert!(matches!(p.read(), Err(PointerError::NotRecorded(_))));
        p.record(Path::new("/var/lib/agent/agent.pid"))
            .expect("record");
        assert_eq!(
            p.read().expect("read"),
            PathBuf::from("/var/lib/agent/agent.pid")
        );
        let mode = std::fs::metadata(p.path())
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        p.forget(Path::new("/other/agent.pid"));
        assert!(p.read().is_ok(), "another agent's stop leaves it");
        p.forget(Path::new("/var/lib/agent/agent.pid"));
        assert!(matches!(p.read(), Err(PointerError::NotRecorded(_))));
    }

    #[test]
    fn symlinks_files_others_may_write_and_non_paths_are_not_followed() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = Pointer::in_dir(dir.path(), uid());
        let target = dir.path().join("target");
        std::fs::write(&target, "/var/lib/agent/agent.pid").expect("write");
        std::os::unix::fs::symlink(&target, p.path()).expect("symlink");
        let e = p.read().expect_err("symlink");
        assert!(e.to_string().contains("symlink"), "{e}");
        p.record(Path::new("/a/agent.pid"))
            .expect("record replaces the link");
        assert_eq!(
            std::fs::read_to_string(&target).expect("read"),
            "/var/lib/agent/agent.pid",
            "not written through"
        );
        std::fs::set_permissions(p.path(), std::fs::Permissions::from_mode(0o666)).expect("chmod");
        assert!(matches!(p.read(), Err(PointerError::Untrusted { .. })));
        std::fs::remove_file(p.path()).expect("rm");
        std::fs::write(p.path(), "relative/agent.pid").expect("write");
        assert!(matches!(p.read(), Err(PointerError::Untrusted { .. })));
        std::fs::write(p.path(), "/x".repeat(3000)).expect("write");
        assert!(matches!(p.read(), Err(PointerError::Untrusted { .. })));
    }

    #[test]
    fn a_folder_others_may_write_is_not_used() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = Pointer::in_dir(dir.path(), uid());
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))
            .expect("chmod");
        let e = p
            .record(Path::new("/a/agent.pid"))
            .expect_err("open folder");
        assert!(e.to_string().contains("others may write"), "{e}");
        assert!(!p.path().exists());
        let private = Pointer {
            dir: dir.path().join("agent-x"),
            private: true,
            uid: uid(),
            session: None,
        };
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
            .expect("chmod");
        private.record(Path::new("/a/agent.pid")).expect("record");
        let mode = std::fs::metadata(dir.path().join("agent-x"))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        std::fs::set_permissions(
            dir.path().join("agent-x"),
            std::fs::Permissions::from_mode(0o755),
        )
        .expect("chmod");
        assert!(matches!(
            private.read(),
            Err(PointerError::Untrusted { .. })
        ));
    }

    #[test]
    fn each_audit_session_has_its_own_pointer_in_the_shared_fallback() {
        let dir = tempfile::tempdir().expect("tmp");
        let login = |session| Pointer {
            dir: dir.path().join("agent-x"),
            private: true,
            uid: uid(),
            session,
        };
        let (a, b, none) = (login(Some(1)), login(Some(2)), login(None));
        a.record(Path::new("/a/agent.pid")).expect("record a");
        b.record(Path::new("/b/agent.pid")).expect("record b");
        assert_eq!(a.read().expect("a"), Path::new("/a/agent.pid"));
        assert_eq!(b.read().expect("b"), Path::new("/b/agent.pid"));
        assert!(matches!(none.read(), Err(PointerError::NotRecorded(_))));
        assert!(a.path().to_string_lossy().ends_with("-session-1.pidfile"));
    }
}
