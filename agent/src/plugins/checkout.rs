//! Where a plugin's checkout lives, whose it is, and who may read it.
//!
//! - The folder is `{plugins_dir}/{ns}/{project}`, built by [`crate::paths::join`]: the names
//!   are one plain folder name each, and the path stays under `plugins_dir` after resolving
//!   symlinks.
//! - Every checkout the agent makes carries a mark, `.git/agent-checkout` (inside git's own
//!   metadata, so it is in no work tree and no `git status`), naming the namespace and project it
//!   belongs to. The agent replaces or deletes only folders with its mark: anything else in the
//!   place of a checkout is left alone and the operation fails saying why.
//! - A checkout made by an earlier version (no mark) is adopted when it is plainly the plugin's:
//!   a real folder owned by the agent's user, holding a git repository (not a `.git` file or
//!   symlink pointing elsewhere) whose `origin` is the plugin's address exactly. It is then
//!   marked and its modes are tightened as below.
//! - Modes: when the agent runs as root with a plugin user, every file and folder of a checkout
//!   (`.git` included) is owned by root with the plugin user's primary group, folders `0750`,
//!   files `0640` (`0750` where git made them executable), so the plugin user can read and run
//!   its plugin but not change it, and other users cannot read it, whatever the modes in the
//!   source repository. `{plugins_dir}` and `{plugins_dir}/{ns}` are created the same way
//!   (`0750`, root and the plugin user's group) and refused when the plugin user could write
//!   them. When the agent is not root, ownership stays the agent user's and the same modes
//!   apply (no access for others).
//!
//! Everything here blocks; callers are on a blocking thread.

use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::git::GitError;
use crate::paths::{self, PathError, What};

/// The mark's file name, inside the checkout's `.git` folder.
pub const MARK: &str = "agent-checkout";
/// Marks longer than this are not the agent's.
const MARK_MAX_BYTES: u64 = 4096;
/// Folders of checkouts and the plugin folders.
pub const DIR_MODE: u32 = 0o750;
/// Files of checkouts.
pub const FILE_MODE: u32 = 0o640;
/// Files git made executable.
pub const EXEC_MODE: u32 = 0o750;

/// Who may read checkouts besides the agent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Access {
    /// The plugin user's uid and primary gid, when the agent is root and drops privileges:
    /// checkouts get that group, and folders that user could write are refused. `None`: the
    /// agent's own user runs plugins; ownership is left as it is.
    pub plugin_user: Option<(u32, u32)>,
}

/// The mark's contents.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct Mark {
    version: u32,
    ns: String,
    project: String,
}

/// What is in the place of a checkout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    /// Nothing: the agent may clone there.
    Missing,
    /// A checkout the agent made (or has just adopted).
    Ours,
}

/// One plugin's checkout: its folder, and who may read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkout {
    root: PathBuf,
    ns: String,
    project: String,
    dir: PathBuf,
    access: Access,
}

impl Checkout {
    /// The checkout of (ns, project) under `root` (`plugins_dir`). Refuses names that are not
    /// one folder name ([`paths::check_name`]); the filesystem is not read yet (see
    /// [`Checkout::check_under`]).
    pub fn new(root: &Path, ns: &str, project: &str, access: Access) -> Result<Self, PathError> {
        let dir = paths::join_names(root, &[(What::Namespace, ns), (What::Project, project)])?;
        Ok(Checkout {
            root: root.to_path_buf(),
            ns: ns.to_owned(),
            project: project.to_owned(),
            dir,
            access,
        })
    }

    /// The checkout's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The namespace folder holding it.
    pub fn ns_dir(&self) -> PathBuf {
        self.root.join(&self.ns)
    }

    /// Checks that the folder, resolved as far as it exists, is under `plugins_dir`: a symlink
    /// planted in the tree that leads out is refused.
    pub fn check_under(&self) -> Result<(), PathError> {
        paths::check_under(&self.root, &self.dir)
    }

    /// Creates `plugins_dir` and the namespace folder when missing (mode `0750`, the plugin
    /// user's group), and refuses them when the plugin user could write them.
    pub fn make_parents(&self) -> Result<(), GitError> {
        if let Some(parent) = self.root.parent() {
            if !parent.as_os_str().is_empty() {
                std::fs::create_dir_all(parent).map_err(|source| GitError::Io {
                    what: "cannot create the folder of plugins_dir",
                    path: parent.to_path_buf(),
                    source,
                })?;
            }
        }
        self.make_dir(&self.root)?;
        self.make_dir(&self.ns_dir())
    }

    fn make_dir(&self, path: &Path) -> Result<(), GitError> {
        let io = |what, source| GitError::Io {
            what,
            path: path.to_path_buf(),
            source,
        };
        match std::fs::DirBuilder::new().mode(DIR_MODE).create(path) {
            Ok(()) => {
                // The umask may have taken bits off; the group is the plugin user's.
                self.restrict_one(path, DIR_MODE)
                    .map_err(|e| io("cannot set the owner and mode of", e))?;
                Ok(())
            }
            // Another clone in the same namespace made it meanwhile, or it was there.
            Err(e) if e.kind() == ErrorKind::AlreadyExists => self.check_not_plugin_writable(path),
            Err(e) => Err(io("cannot create plugin folder", e)),
        }
    }

    /// Refuses a folder of the plugin tree the plugin user could write: a plugin could then
    /// replace checkouts, its own or others'.
    fn check_not_plugin_writable(&self, path: &Path) -> Result<(), GitError> {
        let meta = std::fs::metadata(path).map_err(|source| GitError::Io {
            what: "cannot read",
            path: path.to_path_buf(),
            source,
        })?;
        if !meta.is_dir() {
            return Err(GitError::NotOurs {
                path: path.to_path_buf(),
                reason: "it is not a folder".into(),
            });
        }
        let Some((uid, gid)) = self.access.plugin_user else {
            return Ok(());
        };
        let mode = meta.mode();
        let why = if meta.uid() == uid {
            Some(format!("it is owned by the plugin user (uid {uid})"))
        } else if mode & 0o002 != 0 {
            Some("it is writable by every user".to_owned())
        } else if mode & 0o020 != 0 && meta.gid() == gid {
            Some(format!(
                "it is writable by the plugin user's group (gid {gid})"
            ))
        } else {
            None
        };
        match why {
            Some(reason) => Err(GitError::Unsafe {
                path: path.to_path_buf(),
                reason,
            }),
            None => Ok(()),
        }
    }

    /// What is in the checkout's place. An unmarked folder that is plainly a checkout of
    /// `addr` made by an earlier version is adopted (marked, modes tightened); anything else
    /// there is an error, and nothing is changed.
    pub fn claim(&self, addr: &str) -> Result<Existing, GitError> {
        let not_ours = |reason: String| GitError::NotOurs {
            path: self.dir.clone(),
            reason,
        };
        let meta = match std::fs::symlink_metadata(&self.dir) {
            Ok(m) => m,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Existing::Missing),
            Err(source) => {
                return Err(GitError::Io {
                    what: "cannot read",
                    path: self.dir.clone(),
                    source,
                })
            }
        };
        if meta.file_type().is_symlink() {
            return Err(not_ours("it is a symlink".into()));
        }
        if !meta.is_dir() {
            return Err(not_ours("it is not a folder".into()));
        }
        match read_mark(&self.dir) {
            Ok(Some(mark)) if mark.ns == self.ns && mark.project == self.project => {
                Ok(Existing::Ours)
            }
            Ok(Some(mark)) => Err(not_ours(format!(
                "its mark says it is the checkout of {:?} in namespace {:?}",
                mark.project, mark.ns
            ))),
            Err(reason) => Err(not_ours(reason)),
            Ok(None) => match self.adoptable(addr, &meta) {
                Ok(()) => {
                    self.seal(&self.dir)?;
                    tracing::info!(
                        ns = %self.ns,
                        plugin = %self.project,
                        dir = %self.dir.display(),
                        "Checkout of an earlier version adopted: marked, modes tightened."
                    );
                    Ok(Existing::Ours)
                }
                Err(why) => Err(not_ours(format!("it has no mark .git/{MARK}, and {why}"))),
            },
        }
    }

    /// Whether an unmarked folder is a checkout of `addr` an earlier version made.
    fn adoptable(&self, addr: &str, meta: &std::fs::Metadata) -> Result<(), String> {
        let me = nix::unistd::geteuid().as_raw();
        if meta.uid() != me {
            return Err(format!(
                "it is owned by uid {}, not by the agent's user",
                meta.uid()
            ));
        }
        match std::fs::symlink_metadata(self.dir.join(".git")) {
            Ok(m) if m.is_dir() => {}
            _ => return Err("it is not a git checkout with a .git folder of its own".into()),
        }
        let repo = git2::Repository::open_ext(
            &self.dir,
            git2::RepositoryOpenFlags::NO_SEARCH,
            std::iter::empty::<&std::ffi::OsStr>(),
        )
        .map_err(|e| format!("it is not a git repository ({})", e.message()))?;
        let origin = repo
            .find_remote("origin")
            .ok()
            .and_then(|r| r.url().map(str::to_owned));
        if origin.as_deref() != Some(addr) {
            return Err(format!(
                "its origin is {}, not the plugin's repository {}",
                origin.map_or_else(|| "missing".to_owned(), |o| super::git::redact_address(&o)),
                super::git::redact_address(addr)
            ));
        }
        // Earlier versions left the address's credentials there.
        super::git::hide_origin_credentials(&repo, addr)
    }

    /// Marks a fresh clone at `dir` (a temporary folder beside the checkout, or the checkout
    /// being adopted) as this checkout, and gives every file and folder its owner and mode.
    pub fn seal(&self, dir: &Path) -> Result<(), GitError> {
        let mark = Mark {
            version: 1,
            ns: self.ns.clone(),
            project: self.project.clone(),
        };
        let path = dir.join(".git").join(MARK);
        let io = |what, source| GitError::Io {
            what,
            path: path.clone(),
            source,
        };
        let json = serde_json::to_vec(&mark)
            .map_err(|e| io("cannot write the checkout mark", std::io::Error::other(e)))?;
        std::fs::write(&path, json).map_err(|e| io("cannot write the checkout mark", e))?;
        self.restrict_tree(dir)
    }

    /// Owner and modes of every entry under `top` (symlinks are not followed: their own owner
    /// is set, their target is left alone). Iterative, so a deep tree cannot exhaust the stack.
    fn restrict_tree(&self, top: &Path) -> Result<(), GitError> {
        let mut pending = vec![top.to_path_buf()];
        while let Some(dir) = pending.pop() {
            let io = |what, path: &Path, source| GitError::Io {
                what,
                path: path.to_path_buf(),
                source,
            };
            let entries =
                std::fs::read_dir(&dir).map_err(|e| io("cannot list the checkout at", &dir, e))?;
            for entry in entries {
                let entry = entry.map_err(|e| io("cannot list the checkout at", &dir, e))?;
                let path = entry.path();
                let meta = std::fs::symlink_metadata(&path)
                    .map_err(|e| io("cannot read the checkout's", &path, e))?;
                let ft = meta.file_type();
                if ft.is_symlink() {
                    self.chown(&path)
                        .map_err(|e| io("cannot set the owner of", &path, e))?;
                } else if ft.is_dir() {
                    pending.push(path);
                } else {
                    let mode = if meta.mode() & 0o111 != 0 {
                        EXEC_MODE
                    } else {
                        FILE_MODE
                    };
                    self.restrict_one(&path, mode)
                        .map_err(|e| io("cannot set the owner and mode of", &path, e))?;
                }
            }
            self.restrict_one(&dir, DIR_MODE)
                .map_err(|e| io("cannot set the owner and mode of", &dir, e))?;
        }
        Ok(())
    }

    fn chown(&self, path: &Path) -> std::io::Result<()> {
        match self.access.plugin_user {
            Some((_, gid)) => {
                let me = nix::unistd::geteuid().as_raw();
                std::os::unix::fs::lchown(path, Some(me), Some(gid))
            }
            None => Ok(()),
        }
    }

    /// Owner first, then mode: a chown can clear mode bits.
    fn restrict_one(&self, path: &Path, mode: u32) -> std::io::Result<()> {
        self.chown(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
    }
}

/// The mark of the checkout at `dir`: `None` when there is none; an error (as a reason) when
/// something is there that the agent did not write.
fn read_mark(dir: &Path) -> Result<Option<Mark>, String> {
    match std::fs::symlink_metadata(dir.join(".git")) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Ok(None),
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("its .git cannot be read: {e}")),
    }
    let path = dir.join(".git").join(MARK);
    let meta = match std::fs::symlink_metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("its mark cannot be read: {e}")),
    };
    if !meta.is_file() || meta.len() > MARK_MAX_BYTES {
        return Err(format!(
            "its .git/{MARK} is not a mark the agent wrote (not a small regular file)"
        ));
    }
    let text = std::fs::read(&path).map_err(|e| format!("its mark cannot be read: {e}"))?;
    serde_json::from_slice(&text)
        .map(Some)
        .map_err(|e| format!("its .git/{MARK} is not a mark the agent wrote ({e})"))
}
