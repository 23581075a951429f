//! Plugin checkouts with git2: address checks, the first clone, and the explicit update.
//!
//! Everything here blocks (network, disk); callers run it through `spawn_blocking`. A checkout is
//! only ever replaced whole: a new clone is made in a temporary directory beside the old one and
//! the two are swapped with one `renameat2(RENAME_EXCHANGE)`, so a failed update leaves the old
//! checkout untouched and a run never sees a half-written one.
//!
//! libgit2 is built without TLS and ssh (no OpenSSL in the agent); `http://` and `https://` go
//! through `git/http.rs` (smart HTTP over reqwest with rustls) and ssh addresses through
//! `git/ssh.rs` (the system's OpenSSH client). `git://`, `file://` and local paths are
//! libgit2's own. The HTTP transport waits on the caller's tokio runtime, so these functions
//! must not run on an async worker thread (`spawn_blocking` or a plain thread is right).

mod credential;
mod group;
mod http;
mod ssh;

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use git2::build::RepoBuilder;
use git2::{FetchOptions, Repository};

use super::checkout::{Checkout, Existing};

pub use ssh::SshCommand;

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
    /// The checkout's path is refused (a name, or a symlink leading out of `plugins_dir`).
    #[error("{0}")]
    Path(#[from] crate::paths::PathError),
    /// Something the agent did not make is in the place of a checkout: it is left alone.
    #[error(
        "{path} was not made by the agent ({reason}); it is left as it is: move it away (or \
         delete it) and the agent clones the plugin there"
    )]
    NotOurs {
        /// The folder.
        path: PathBuf,
        /// Why it is not taken for the agent's checkout.
        reason: String,
    },
    /// A folder of the plugin tree the plugin user could write.
    #[error(
        "plugin folder {path} is refused: {reason}, so a plugin could replace checkouts; make \
         it owned by root and not writable by the plugin user (chmod go-w)"
    )]
    Unsafe {
        /// The folder.
        path: PathBuf,
        /// Why the plugin user could write it.
        reason: String,
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

impl GitError {
    /// Whether the agent refused to touch the checkout's place (a folder it did not make, a
    /// path leading out of `plugins_dir`, a folder the plugin user could write), as opposed to
    /// a fetch that failed.
    pub fn is_local_refusal(&self) -> bool {
        matches!(
            self,
            GitError::Path(_) | GitError::NotOurs { .. } | GitError::Unsafe { .. }
        )
    }
}

/// `addr` as every message, log line and API answer shows it: the credentials of
/// `scheme://user:password@host/...` are hidden. The password becomes `***`
/// (`https://bob:***@h/x.git`), and so does a user name given alone, which is often a token
/// (`https://<token>@github.com/...` shows as `https://***@github.com/...`); only ssh URLs keep
/// a lone user, the remote account (they take no password).
///
/// Where the credentials end is read generously: at the address's last `@`. git and curl end
/// the host at the first `/`, `?` or `#` and only look for an `@` before it, so for them
/// `https://bob:pa/ss@h/x.git` (a password with an unencoded `/`) is host `bob` with a bad
/// port; the fetch fails, and its message must not show the password either. The price is
/// that an `@` in a repository path (`https://h/@team/x.git`) hides what comes before it; it
/// can be written `%40`.
pub fn redact_address(addr: &str) -> String {
    let Some(start) = addr.find("://").map(|i| i + 3) else {
        return addr.to_owned();
    };
    let Some(at) = addr[start..].rfind('@').map(|i| start + i) else {
        return addr.to_owned();
    };
    let shown = match addr[start..at].split_once(':') {
        Some((user, _password)) => format!("{user}:***"),
        None if ssh::is_ssh(addr) => addr[start..at].to_owned(),
        None => "***".to_owned(),
    };
    format!("{}{shown}{}", &addr[..start], &addr[at..])
}

/// The URL schemes the agent fetches from (as libgit2, case-insensitive).
const SCHEMES: [&str; 7] = ["https", "http", "ssh", "ssh+git", "git+ssh", "git", "file"];
/// What the agent takes, for messages.
const SUPPORTED: &str =
    "use https://, http://, ssh://, git://, file://, scp-like [user@]host:path, \
                         or a local path";

/// The scheme of `scheme://...`, as written; `None` when `addr` does not start with one (an
/// scp-like address or a local path).
pub(super) fn url_scheme(addr: &str) -> Option<&str> {
    let (scheme, _) = addr.split_once("://")?;
    let mut chars = scheme.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    valid.then_some(scheme)
}

/// Whether `scheme` names one of the URL schemes the agent fetches from.
fn supported_scheme(scheme: &str) -> bool {
    SCHEMES.iter().any(|s| s.eq_ignore_ascii_case(scheme))
}

/// Refuses addresses the agent does not fetch from and those that could make git run commands
/// or read options: a leading `-`, transport helpers written `<helper>::<address>`
/// (`ext::sh -c ...`, `fd::`, ...), and schemes other than [`SCHEMES`], which libgit2 would
/// hand to the ssh transport (it takes any address with a `:` it has no transport for for an
/// ssh one: `ftp://h/x` would become `ssh ftp`).
pub fn check_address(addr: &str) -> Result<(), GitError> {
    let refuse = |reason: &str| {
        Err(GitError::Address {
            addr: redact_address(addr),
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
                "'{helper}::' names a git transport helper, which can run commands; {SUPPORTED}"
            ));
        }
    }
    if let Some(scheme) = url_scheme(addr) {
        if !supported_scheme(scheme) {
            return refuse(&format!("'{scheme}://' is not supported; {SUPPORTED}"));
        }
    }
    if ssh::is_ssh(addr) {
        if let Err(reason) = ssh::parse_target(addr) {
            return refuse(&reason);
        }
    } else if url_scheme(addr).is_none() && addr.contains(':') {
        return refuse(
            "a local path with ':' in it would be taken for an ssh address; write it file://...",
        );
    }
    Ok(())
}

/// What our transports hand to libgit2 when a read or write fails, with a message that is safe
/// to hand it: see [`for_libgit2`].
pub(super) fn io_for_libgit2(e: std::io::Error) -> std::io::Error {
    let msg = e.to_string();
    match for_libgit2(&msg) {
        std::borrow::Cow::Borrowed(_) => e,
        std::borrow::Cow::Owned(clean) => std::io::Error::new(e.kind(), clean),
    }
}

/// A `git2::Error` from our transports, with a message that is safe to hand to libgit2.
pub(super) fn git2_error(msg: &str) -> git2::Error {
    git2::Error::from_str(&for_libgit2(msg))
}

/// Every message our transports give libgit2 goes through here. libgit2 keeps messages as C
/// strings, and git2 0.20 makes one out of a transport's I/O error with
/// `CString::new(..).unwrap()` in an `extern "C"` function, outside its panic guard: a NUL byte
/// would abort the whole agent. A remote decides much of what is in these messages (ssh's
/// stderr, names in a server's certificate), so control characters are written as escapes:
/// no NUL, and no terminal escape sequences in logs either.
fn for_libgit2(msg: &str) -> std::borrow::Cow<'_, str> {
    if !msg.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(msg);
    }
    let mut out = String::with_capacity(msg.len() + 8);
    for c in msg.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// How the network transports behave; the agent uses [`Transports::default`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transports {
    /// The ssh program; `None` reads `GIT_SSH_COMMAND` / `GIT_SSH` at each fetch, as git does.
    pub ssh: Option<SshCommand>,
    /// How long an HTTP(S) connect may take.
    pub connect_timeout: Duration,
    /// How long an HTTP(S) or ssh read may wait for data before the fetch fails.
    pub stall_timeout: Duration,
    /// Variables added to the agent's environment for git's credential helpers (`git
    /// credential fill`); tests point `HOME` and `XDG_CONFIG_HOME` at a scratch directory.
    pub credential_env: Vec<(String, String)>,
}

impl Default for Transports {
    fn default() -> Self {
        Transports {
            ssh: None,
            connect_timeout: CONNECT_TIMEOUT,
            stall_timeout: STALL_TIMEOUT,
            credential_env: Vec::new(),
        }
    }
}

/// Connecting to a git server (HTTP(S), and `git://`, whose limit is process-wide).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// No data from the server for this long fails the fetch, so a stalled server cannot hold a
/// plugin's update forever; servers send progress or keep-alives while they compute a pack.
/// `git://` connections always use this value (libgit2 keeps it process-wide).
pub const STALL_TIMEOUT: Duration = Duration::from_secs(60);

thread_local! {
    /// The settings of the fetch running on this thread. libgit2 creates transports through one
    /// process-wide registration, on the thread that fetches; this carries the caller's
    /// settings to it without process-global state.
    static CURRENT: RefCell<Option<Transports>> = const { RefCell::new(None) };
}

/// Runs `f` with `t` as this thread's transport settings.
fn with_transports<R>(t: &Transports, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<Transports>);
    impl Drop for Restore {
        fn drop(&mut self) {
            CURRENT.with(|c| *c.borrow_mut() = self.0.take());
        }
    }
    let _restore = Restore(CURRENT.with(|c| c.borrow_mut().replace(t.clone())));
    f()
}

fn current_transports() -> Transports {
    CURRENT.with(|c| c.borrow().clone()).unwrap_or_default()
}

/// Registers the http(s) and ssh transports with libgit2 and sets the timeouts of libgit2's own
/// sockets, once per process.
fn register_transports() -> Result<(), String> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        // `git://` goes through libgit2's own sockets, which wait forever unless told
        // otherwise, and only process-wide: the same limits as the other transports' defaults.
        let ms = |d: Duration| i32::try_from(d.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: these set two plain C ints that libgit2 reads when it opens a socket. This
        // runs once, inside `OnceLock::get_or_init`, before any fetch of this module (the only
        // code in the agent that makes libgit2 open sockets), so nothing reads them meanwhile.
        #[allow(unsafe_code)]
        let timeouts = unsafe {
            git2::opts::set_server_connect_timeout_in_milliseconds(ms(CONNECT_TIMEOUT))
                .and_then(|()| git2::opts::set_server_timeout_in_milliseconds(ms(STALL_TIMEOUT)))
        };
        timeouts.map_err(|e| format!("cannot set the timeouts of git:// connections: {e}"))?;
        let http = |remote: &git2::Remote<'_>| {
            let t = current_transports();
            let sub = http::SmartHttp::new(t.connect_timeout, t.stall_timeout, t.credential_env)?;
            // Stateless: each request is its own HTTP exchange.
            git2::transport::Transport::smart(remote, true, sub)
        };
        let ssh = |remote: &git2::Remote<'_>| {
            let t = current_transports();
            let cmd = t.ssh.unwrap_or_else(SshCommand::from_env);
            git2::transport::Transport::smart(
                remote,
                false,
                ssh::SshTransport::new(cmd, t.stall_timeout),
            )
        };
        // Schemes; libgit2 adds the "://". It also looks up "ssh" for scp-like `host:path`.
        for (scheme, is_http) in [
            ("http", true),
            ("https", true),
            ("ssh", false),
            ("ssh+git", false),
            ("git+ssh", false),
        ] {
            // SAFETY: git2 requires registration to be synchronised with the creation of
            // transports. This runs once, inside `OnceLock::get_or_init`, which blocks every
            // other caller, and every fetch in this module calls it before creating a remote
            // (nothing else in the agent creates git remotes).
            #[allow(unsafe_code)]
            let done = unsafe {
                if is_http {
                    git2::transport::register(scheme, http)
                } else {
                    git2::transport::register(scheme, ssh)
                }
            };
            done.map_err(|e| format!("cannot register the {scheme}:// transport: {e}"))?;
        }
        Ok(())
    })
    .clone()
}

/// Clones `addr` (its `branch`, or the remote's default branch) into the checkout's folder,
/// which must not exist. Returns the checked-out commit.
pub fn clone_into(addr: &str, branch: Option<&str>, dest: &Checkout) -> Result<String, GitError> {
    clone_into_with(addr, branch, dest, &Transports::default())
}

/// [`clone_into`] with explicit transport settings.
///
/// The clone is made in a temporary folder beside the checkout (0700, the agent's), marked and
/// given its modes there, and moved into place only if nothing has appeared there meanwhile.
pub fn clone_into_with(
    addr: &str,
    branch: Option<&str>,
    dest: &Checkout,
    transports: &Transports,
) -> Result<String, GitError> {
    check_address(addr)?;
    check_branch(branch)?;
    dest.check_under()?;
    dest.make_parents()?;
    let tmp = temp_beside(dest.dir())?;
    let commit = clone_to(addr, branch, tmp.path(), "clone", transports)?;
    dest.seal(tmp.path())?;
    dest.check_under()?;
    // No replacing: whatever appeared in the checkout's place meanwhile is not the agent's.
    // On failure `tmp`, the new clone, is removed when dropped.
    rename_noreplace(tmp.path(), dest.dir()).map_err(|source| GitError::Io {
        what: "cannot move the new clone into place at",
        path: dest.dir().to_owned(),
        source,
    })?;
    let _moved = tmp.keep();
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

/// Fetches `addr` afresh and replaces the checkout with the remote's latest commit of `branch`
/// (or its default branch). On any failure the old checkout is left as it was. Only a checkout
/// the agent made ([`Checkout::claim`]) is replaced: anything else in its place is an error and
/// is left alone.
pub fn update(addr: &str, branch: Option<&str>, dest: &Checkout) -> Result<Updated, GitError> {
    update_with(addr, branch, dest, &Transports::default())
}

/// [`update`] with explicit transport settings.
pub fn update_with(
    addr: &str,
    branch: Option<&str>,
    dest: &Checkout,
    transports: &Transports,
) -> Result<Updated, GitError> {
    check_address(addr)?;
    check_branch(branch)?;
    dest.check_under()?;
    if dest.claim(addr)? == Existing::Missing {
        let new = clone_into_with(addr, branch, dest, transports)?;
        return Ok(Updated { old: None, new });
    }
    let old = head_commit(dest.dir());
    let tmp = temp_beside(dest.dir())?;
    let new = clone_to(addr, branch, tmp.path(), "update", transports)?;
    dest.seal(tmp.path())?;
    // Checked again right before the swap: the fetch may have taken minutes.
    dest.check_under()?;
    if dest.claim(addr)? == Existing::Missing {
        rename_noreplace(tmp.path(), dest.dir()).map_err(|source| GitError::Io {
            what: "cannot move the new clone into place at",
            path: dest.dir().to_owned(),
            source,
        })?;
        let _moved = tmp.keep();
        return Ok(Updated { old: None, new });
    }
    exchange(tmp.path(), dest.dir()).map_err(|source| GitError::Io {
        what: "cannot swap the updated clone into place at",
        path: dest.dir().to_owned(),
        source,
    })?;
    // `tmp` now holds the old checkout, marked as the agent's, and is removed when dropped.
    drop(tmp);
    Ok(Updated { old, new })
}

/// A branch from the registry, checked again where it reaches git.
fn check_branch(branch: Option<&str>) -> Result<(), GitError> {
    match branch {
        Some(b) => crate::paths::check_branch(b).map_err(GitError::from),
        None => Ok(()),
    }
}

/// Moves `from` to `to`, failing if `to` exists (also an empty folder, which a plain rename
/// would replace).
fn rename_noreplace(from: &Path, to: &Path) -> std::io::Result<()> {
    use nix::fcntl::{renameat2, RenameFlags, AT_FDCWD};
    match renameat2(AT_FDCWD, from, AT_FDCWD, to, RenameFlags::RENAME_NOREPLACE) {
        Ok(()) => Ok(()),
        // Filesystems without the flag: check, then rename (the tree is the agent's alone).
        Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOSYS) => {
            if std::fs::symlink_metadata(to).is_ok() {
                return Err(std::io::Error::from(std::io::ErrorKind::AlreadyExists));
            }
            std::fs::rename(from, to)
        }
        Err(e) => Err(std::io::Error::from(e)),
    }
}

/// Rewrites the `origin` of a checkout of `addr` as messages show it, without password or
/// token: the checkout is readable by the plugin user, so its git config must not keep them.
/// Nothing fetches from this remote (an update clones afresh from the registry's address).
pub(super) fn hide_origin_credentials(repo: &Repository, addr: &str) -> Result<(), String> {
    let shown = redact_address(addr);
    if shown == addr {
        return Ok(());
    }
    repo.remote_set_url("origin", &shown).map_err(|e| {
        format!(
            "cannot hide the credentials in the checkout's origin: {}",
            e.message()
        )
    })
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
    transports: &Transports,
) -> Result<String, GitError> {
    let git_err = |message: String| GitError::Git {
        op,
        addr: redact_address(addr),
        message,
    };
    register_transports().map_err(git_err)?;
    let mut builder = RepoBuilder::new();
    // Credentials are the transports' business: OpenSSH's own setup for ssh, the address or
    // git's credential helpers for https.
    builder.fetch_options(FetchOptions::new());
    if let Some(b) = branch {
        builder.branch(b);
    }
    let repo = with_transports(transports, || builder.clone(addr, dir))
        .map_err(|e| git_err(e.message().to_owned()))?;
    hide_origin_credentials(&repo, addr).map_err(git_err)?;
    let commit = repo
        .head()
        .and_then(|h| h.peel_to_commit())
        .map_err(|e| git_err(e.message().to_owned()))?;
    Ok(commit.id().to_string())
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
