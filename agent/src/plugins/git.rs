//! Plugin checkouts with git2: address checks, the first clone, and the explicit update.
//!
//! Everything here blocks (network, disk); callers run it through `spawn_blocking`. A checkout is
//! only ever replaced whole: a new clone is made in a temporary directory beside the old one and
//! the two are swapped with one `renameat2(RENAME_EXCHANGE)`, so a failed update leaves the old
//! checkout untouched and a run never sees a half-written one.

use std::path::{Path, PathBuf};

use git2::build::RepoBuilder;
use git2::{Cred, CredentialType, FetchOptions, RemoteCallbacks, Repository};

/// Why a git operation on a plugin failed.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// The address is refused before git sees it.
    #[error("repository address {addr:?} refused: {reason}")]
    Address {
        /// The address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// libgit2 failed (network, authentication, missing branch, ...).
    #[error("git {op} of {addr}: {message}")]
    Git {
        /// `clone` or `update`.
        op: &'static str,
        /// The address.
        addr: String,
        /// libgit2's message.
        message: String,
    },
    /// A filesystem step around the clone failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Refuses addresses that could make git run commands or read options: a leading `-`, and
/// transport helpers written `<helper>::<address>` (`ext::sh -c ...`, `fd::`, ...).
pub fn check_address(addr: &str) -> Result<(), GitError> {
    let refuse = |reason: &str| {
        Err(GitError::Address {
            addr: addr.to_owned(),
            reason: reason.to_owned(),
        })
    };
    if addr.trim().is_empty() {
        return refuse("it is empty");
    }
    if addr.starts_with('-') {
        return refuse("it starts with '-', which git could read as an option");
    }
    if addr.chars().any(char::is_control) {
        return refuse("it contains control characters");
    }
    if let Some(i) = addr.find("::") {
        let helper = &addr[..i];
        if !helper.is_empty()
            && helper
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.' | '_'))
        {
            return refuse(&format!(
                "'{helper}::' names a git transport helper, which can run commands; use https://, ssh://, git@host:path, git://, file:// or a local path"
            ));
        }
    }
    Ok(())
}

/// Clones `addr` (its `branch`, or the remote's default branch) into `dest`, which must not
/// exist. Returns the checked-out commit.
pub fn clone_into(addr: &str, branch: Option<&str>, dest: &Path) -> Result<String, GitError> {
    check_address(addr)?;
    let parent = parent_of(dest)?;
    std::fs::create_dir_all(&parent).map_err(|source| GitError::Io {
        what: "cannot create plugin directory",
        path: parent.clone(),
        source,
    })?;
    let tmp = temp_beside(dest)?;
    let commit = clone_to(addr, branch, tmp.path(), "clone")?;
    open_up(tmp.path())?;
    let staged = tmp.keep();
    if let Err(source) = std::fs::rename(&staged, dest) {
        let _ = std::fs::remove_dir_all(&staged);
        return Err(GitError::Io {
            what: "cannot move the new clone into place at",
            path: dest.to_owned(),
            source,
        });
    }
    Ok(commit)
}

/// What an update did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Updated {
    /// The commit before, when there was a checkout.
    pub old: Option<String>,
    /// The commit now.
    pub new: String,
}

/// Fetches `addr` afresh and replaces the checkout at `dest` with the remote's latest commit of
/// `branch` (or its default branch). On any failure the old checkout is left as it was.
pub fn update(addr: &str, branch: Option<&str>, dest: &Path) -> Result<Updated, GitError> {
    check_address(addr)?;
    let old = head_commit(dest);
    if !dest.exists() {
        let new = clone_into(addr, branch, dest)?;
        return Ok(Updated { old, new });
    }
    let tmp = temp_beside(dest)?;
    let new = clone_to(addr, branch, tmp.path(), "update")?;
    open_up(tmp.path())?;
    exchange(tmp.path(), dest).map_err(|source| GitError::Io {
        what: "cannot swap the updated clone into place at",
        path: dest.to_owned(),
        source,
    })?;
    // `tmp` now holds the old checkout and is removed when dropped.
    drop(tmp);
    Ok(Updated { old, new })
}

/// The commit checked out at `dir`, if it is a git checkout.
pub fn head_commit(dir: &Path) -> Option<String> {
    let repo = Repository::open(dir).ok()?;
    let commit = repo.head().ok()?.peel_to_commit().ok()?;
    Some(commit.id().to_string())
}

fn clone_to(
    addr: &str,
    branch: Option<&str>,
    dir: &Path,
    op: &'static str,
) -> Result<String, GitError> {
    let git_err = |e: git2::Error| GitError::Git {
        op,
        addr: addr.to_owned(),
        message: e.message().to_owned(),
    };
    let mut fetch = FetchOptions::new();
    fetch.remote_callbacks(callbacks());
    let mut builder = RepoBuilder::new();
    builder.fetch_options(fetch);
    if let Some(b) = branch {
        builder.branch(b);
    }
    let repo = builder.clone(addr, dir).map_err(git_err)?;
    let commit = repo
        .head()
        .and_then(|h| h.peel_to_commit())
        .map_err(git_err)?;
    Ok(commit.id().to_string())
}

/// Credentials for ssh: the ssh agent first, then the agent user's usual key files; for https
/// git's credential helpers. Each method is tried once, so a refused key does not loop.
fn callbacks() -> RemoteCallbacks<'static> {
    let mut tried_agent = false;
    let mut keys: Vec<PathBuf> = std::env::var_os("HOME")
        .map(PathBuf::from)
        .map(|home| {
            ["id_ed25519", "id_ecdsa", "id_rsa"]
                .iter()
                .map(|k| home.join(".ssh").join(k))
                .filter(|p| p.exists())
                .collect()
        })
        .unwrap_or_default();
    let mut tried_helper = false;
    let mut cb = RemoteCallbacks::new();
    cb.credentials(move |url, username, allowed| {
        let user = username.unwrap_or("git");
        if allowed.contains(CredentialType::SSH_KEY) {
            if !tried_agent {
                tried_agent = true;
                if let Ok(c) = Cred::ssh_key_from_agent(user) {
                    return Ok(c);
                }
            }
            if let Some(key) = keys.pop() {
                return Cred::ssh_key(user, None, &key, None);
            }
        }
        if allowed.contains(CredentialType::USER_PASS_PLAINTEXT) && !tried_helper {
            tried_helper = true;
            if let Ok(cfg) = git2::Config::open_default() {
                return Cred::credential_helper(&cfg, url, username);
            }
        }
        if allowed.contains(CredentialType::USERNAME) {
            return Cred::username(user);
        }
        Err(git2::Error::from_str(
            "no usable credentials (tried the ssh agent, ~/.ssh keys and git credential helpers)",
        ))
    });
    cb
}

fn parent_of(dest: &Path) -> Result<PathBuf, GitError> {
    dest.parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| GitError::Io {
            what: "plugin directory has no parent",
            path: dest.to_owned(),
            source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
        })
}

/// A temporary directory beside `dest` (same filesystem, so renames are atomic), hidden by its
/// leading dot.
fn temp_beside(dest: &Path) -> Result<tempfile::TempDir, GitError> {
    let parent = parent_of(dest)?;
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    tempfile::Builder::new()
        .prefix(&format!(".{name}.tmp-"))
        .tempdir_in(&parent)
        .map_err(|source| GitError::Io {
            what: "cannot create a temporary directory in",
            path: parent,
            source,
        })
}

/// Temporary directories are created 0700; the checkout must be readable by the unprivileged
/// user plugins run as.
fn open_up(dir: &Path) -> Result<(), GitError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).map_err(|source| {
        GitError::Io {
            what: "cannot make the checkout readable at",
            path: dir.to_owned(),
            source,
        }
    })
}

/// Swaps two directories atomically; where the filesystem cannot, falls back to two renames.
fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    use nix::fcntl::{renameat2, RenameFlags, AT_FDCWD};
    match renameat2(AT_FDCWD, a, AT_FDCWD, b, RenameFlags::RENAME_EXCHANGE) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOSYS) => {
            let aside = a.with_extension("swap");
            std::fs::rename(b, &aside)?;
            if let Err(e) = std::fs::rename(a, b) {
                let _ = std::fs::rename(&aside, b);
                return Err(e);
            }
            std::fs::rename(&aside, a)
        }
        Err(e) => Err(std::io::Error::from(e)),
    }
}
