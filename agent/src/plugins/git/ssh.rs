//! `ssh://` and scp-like `[user@]host:path` addresses through the system's OpenSSH client, the
//! way git and libgit2's `ssh_exec` backend do it: `ssh [-o BatchMode=yes] [-p port]
//! [user@]host "git-upload-pack '<path>'"`, speaking the git protocol over its stdin and stdout.
//! Keys, agent, `~/.ssh/config` and `known_hosts` are the operator's OpenSSH setup; `BatchMode`
//! makes ssh fail instead of prompting (a password, an unknown host key), and its stderr ends up
//! in the error.

use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::path::Path;
use std::process::{ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use git2::transport::{Service, SmartSubtransport, SmartSubtransportStream};

use super::group::Group;

/// How much of ssh's stderr is kept for the error message.
const STDERR_TAIL: usize = 4096;
/// How long ssh may take to exit by itself once the fetch is done with it (its stdin closed), or
/// once it closed its stdout, before its process group is stopped.
const EXIT_GRACE: Duration = Duration::from_secs(2);

/// The ssh program, chosen as git chooses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshCommand {
    run: Run,
    /// Takes OpenSSH's `-o` and `-p`; otherwise only `[user@]host command` is passed.
    openssh: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Run {
    /// `GIT_SSH_COMMAND`: a shell command line; the arguments are appended as `"$@"`.
    Shell(String),
    /// `GIT_SSH`, or `ssh` from `PATH`: run directly.
    Program(OsString),
}

impl SshCommand {
    /// git's choice: `GIT_SSH_COMMAND` (run by `sh`), else `GIT_SSH` (a program), else `ssh`.
    /// Whether it takes OpenSSH's options is guessed from the program's name (`ssh`) unless
    /// `GIT_SSH_VARIANT` is `ssh` or `simple`.
    pub fn from_env() -> SshCommand {
        Self::from_vars(|k| std::env::var_os(k))
    }

    fn from_vars(var: impl Fn(&str) -> Option<OsString>) -> SshCommand {
        let set = |k| var(k).filter(|v| !v.is_empty());
        let (run, name) = if let Some(cmd) = set("GIT_SSH_COMMAND") {
            let cmd = cmd.to_string_lossy().into_owned();
            let first = cmd
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .trim_matches(|c| c == '\'' || c == '"')
                .to_owned();
            (Run::Shell(cmd), first)
        } else if let Some(prog) = set("GIT_SSH") {
            let name = prog.to_string_lossy().into_owned();
            (Run::Program(prog), name)
        } else {
            (Run::Program("ssh".into()), "ssh".to_owned())
        };
        let openssh = match set("GIT_SSH_VARIANT").as_deref().and_then(|v| v.to_str()) {
            Some("ssh") => true,
            Some("simple") => false,
            _ => Path::new(&name).file_name().is_some_and(|n| n == "ssh"),
        };
        SshCommand { run, openssh }
    }

    /// A shell command line, as `GIT_SSH_COMMAND` holds one (`ssh -i /etc/agent/key`).
    pub fn shell(cmd: &str) -> SshCommand {
        Self::from_vars(|k| (k == "GIT_SSH_COMMAND").then(|| cmd.into()))
    }

    /// A program run directly, as `GIT_SSH` names one.
    pub fn program(path: impl Into<OsString>) -> SshCommand {
        let path = path.into();
        let openssh = Path::new(&path).file_name().is_some_and(|n| n == "ssh");
        SshCommand {
            run: Run::Program(path),
            openssh,
        }
    }

    fn name(&self) -> String {
        match &self.run {
            Run::Shell(c) => c.clone(),
            Run::Program(p) => p.to_string_lossy().into_owned(),
        }
    }

    fn command(&self, args: &[String]) -> Command {
        match &self.run {
            Run::Shell(cmd) => {
                // git's way: `sh -c '<cmd> "$@"' '<cmd>' args...`, so the command line may hold
                // options and quotes while the arguments stay separate words.
                let mut c = Command::new("sh");
                c.arg("-c").arg(format!("{cmd} \"$@\"")).arg(cmd).args(args);
                c
            }
            Run::Program(p) => {
                let mut c = Command::new(p);
                c.args(args);
                c
            }
        }
    }
}

/// Where an ssh address points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Target {
    user: Option<String>,
    host: String,
    port: Option<String>,
    /// As `git-upload-pack` gets it: relative to the remote home, absolute, or `~[user]/...`.
    path: String,
}

const URL_SCHEMES: [&str; 3] = ["ssh", "ssh+git", "git+ssh"];

/// URL schemes, for telling `http:/h/x` (a URL missing a `/`) from an scp-like address.
const SCHEME_NAMES: [&str; 12] = [
    "http", "https", "ssh", "ssh+git", "git+ssh", "git", "file", "ftp", "ftps", "rsync", "svn",
    "svn+ssh",
];

fn is_ssh_scheme(scheme: &str) -> bool {
    URL_SCHEMES.iter().any(|s| s.eq_ignore_ascii_case(scheme))
}

/// Whether `addr` is an ssh address: an ssh URL, or scp-like `[user@]host:path` (a `:` before
/// any `/`, and no `scheme://`).
pub(super) fn is_ssh(addr: &str) -> bool {
    if let Some(scheme) = super::url_scheme(addr) {
        return is_ssh_scheme(scheme);
    }
    match (addr.find(':'), addr.find('/')) {
        (Some(colon), Some(slash)) => colon < slash,
        (Some(_), None) => true,
        (None, _) => false,
    }
}

/// Parses an ssh address with git's rules, refusing a host, user or path that ssh or
/// upload-pack could read as an option, and addresses of other kinds: libgit2 hands this
/// transport every address with a `:` that it has no other transport for.
pub(super) fn parse_target(addr: &str) -> Result<Target, String> {
    let target = match super::url_scheme(addr) {
        Some(scheme) if is_ssh_scheme(scheme) => parse_url(&addr[scheme.len() + 3..])?,
        Some(scheme) => return Err(format!("'{scheme}://' is not an ssh address")),
        None => parse_scp(addr)?,
    };
    if target.host.is_empty() {
        return Err("no host".to_owned());
    }
    if target.host.starts_with('-') {
        return Err(format!(
            "ssh host {:?} starts with '-', which ssh would read as an option",
            target.host
        ));
    }
    if let Some(u) = target.user.as_deref() {
        if u.starts_with('-') {
            return Err(format!(
                "ssh user {u:?} starts with '-', which ssh would read as an option"
            ));
        }
    }
    if let Some(p) = target.port.as_deref() {
        // Not quoted: in `ssh://bob:pa/ss@h/x` (a password with an unencoded '/'), it is
        // part of the password.
        if !p.bytes().all(|b| b.is_ascii_digit()) {
            return Err("the ssh port is not a number".to_owned());
        }
    }
    if target.path.is_empty() {
        return Err("no repository path".to_owned());
    }
    if target.path.starts_with('-') {
        return Err(format!(
            "repository path {:?} starts with '-', which git-upload-pack would read as an option",
            target.path
        ));
    }
    Ok(target)
}

const NO_PASSWORD: &str = "an ssh address takes no password: ssh authenticates with the agent \
                           user's keys (see docs/plugins.md); remove ':password' from the address";

/// `[user@]host[:port]/path`; `/~/x` and `/~user/x` mean `~/x` and `~user/x`.
fn parse_url(rest: &str) -> Result<Target, String> {
    let Some(slash) = rest.find('/') else {
        return Err("no repository path".to_owned());
    };
    let (authority, path) = rest.split_at(slash);
    let path = if path.starts_with("/~") {
        &path[1..]
    } else {
        path
    };
    let (user, hostport) = match authority.rsplit_once('@') {
        // ssh would take `user:password` for a user name (and OpenSSH never takes a password
        // from its command line): refused rather than passed on in ssh's arguments.
        Some((u, _)) if u.contains(':') => return Err(NO_PASSWORD.to_owned()),
        Some((u, h)) => (Some(u.to_owned()), h),
        None => (None, authority),
    };
    let (host, port) = if let Some(inner) = hostport.strip_prefix('[') {
        let (h, after) = inner
            .split_once(']')
            .ok_or_else(|| "unclosed '[' in the host".to_owned())?;
        match after.strip_prefix(':') {
            Some(p) => (h, Some(p)),
            None if after.is_empty() => (h, None),
            None => return Err(format!("unexpected {after:?} after the host")),
        }
    } else {
        match hostport.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    // As git: `ssh://host:/x` is the default port.
    let port = port.filter(|p| !p.is_empty());
    Ok(Target {
        user,
        host: host.to_owned(),
        port: port.map(str::to_owned),
        path: path.to_owned(),
    })
}

/// `[user@]host:path` or `[user@][host]:path`; the path is used as written (relative paths are
/// relative to the remote user's home, as with git).
fn parse_scp(addr: &str) -> Result<Target, String> {
    let (user, rest) = match addr.split_once('@') {
        Some((u, r)) if !u.contains(':') && !u.contains('/') => (Some(u.to_owned()), r),
        _ => (None, addr),
    };
    let (host, path) =
        if let Some(inner) = rest.strip_prefix('[') {
            let (h, after) = inner
                .split_once(']')
                .ok_or_else(|| "unclosed '[' in the host".to_owned())?;
            let path = after
                .strip_prefix(':')
                .ok_or_else(|| "expected ':' after ']'".to_owned())?;
            (h, path)
        } else {
            match rest.split_once(':') {
                Some((h, p)) if !h.contains('/') => (h, p),
                _ => return Err(
                    "not an ssh address: a local path with ':' in it must be written file://..."
                        .to_owned(),
                ),
            }
        };
    if path.starts_with('/') && SCHEME_NAMES.iter().any(|s| s.eq_ignore_ascii_case(host)) {
        return Err(format!(
            "{host:?} is a URL scheme, not an ssh host: a '/' is missing after '{host}:' \
             (for a host of that name write ssh://{host}/...)"
        ));
    }
    Ok(Target {
        user,
        host: host.to_owned(),
        port: None,
        path: path.to_owned(),
    })
}

impl Target {
    fn destination(&self) -> String {
        match &self.user {
            Some(u) => format!("{u}@{}", self.host),
            None => self.host.clone(),
        }
    }

    /// ssh's arguments for running upload-pack on the far side.
    fn args(&self, cmd: &SshCommand) -> Result<Vec<String>, String> {
        let mut args = Vec::new();
        if cmd.openssh {
            args.extend(["-o".to_owned(), "BatchMode=yes".to_owned()]);
        }
        if let Some(port) = &self.port {
            if !cmd.openssh {
                return Err(format!(
                    "cannot give port {port} to ssh program {:?}, which is not OpenSSH's ssh; \
                     set GIT_SSH_VARIANT=ssh if it takes OpenSSH's options",
                    cmd.name()
                ));
            }
            args.extend(["-p".to_owned(), port.clone()]);
        }
        args.push(self.destination());
        args.push(format!("git-upload-pack {}", sq_quote(&self.path)));
        Ok(args)
    }
}

/// Single-quotes `s` for the remote shell as git does (`'` and `!` closed out, the latter for
/// csh users).
fn sq_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\'' => out.push_str("'\\''"),
            '!' => out.push_str("'\\!'"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// The subtransport: one ssh process per connection.
pub(super) struct SshTransport {
    cmd: SshCommand,
    stall: Duration,
}

impl SshTransport {
    /// Runs `cmd`; a read that waits longer than `stall` for data fails.
    pub(super) fn new(cmd: SshCommand, stall: Duration) -> SshTransport {
        SshTransport { cmd, stall }
    }

    fn open(&self, addr: &str) -> Result<SshStream, String> {
        let target = parse_target(addr)
            .map_err(|e| format!("ssh address {}: {e}", super::redact_address(addr)))?;
        let args = target.args(&self.cmd)?;
        let mut cmd = self.cmd.command(&args);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // A group of its own: ending ssh also ends what it started (wrapper, ProxyCommand).
        let mut group = Group::spawn(&mut cmd).map_err(|e| {
            format!(
                "cannot run ssh program {:?}: {e} (install OpenSSH's client, or name one in \
                 GIT_SSH_COMMAND)",
                self.cmd.name()
            )
        })?;
        let child = group.child();
        let (stdin, stdout, stderr) = match (child.stdin.take(), child.stdout.take()) {
            (Some(i), Some(o)) => (i, o, child.stderr.take()),
            // Dropping the group ends it.
            _ => return Err("ssh started without pipes".to_owned()),
        };
        // ssh's stderr is drained by a thread, so a chatty ssh never blocks on a full pipe;
        // its tail is what the error shows.
        let (tx, rx) = mpsc::channel();
        if let Some(mut err) = stderr {
            std::thread::spawn(move || {
                let mut tail = Vec::new();
                let mut buf = [0u8; 1024];
                loop {
                    match err.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => tail.extend_from_slice(&buf[..n]),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(_) => break,
                    }
                    if tail.len() > STDERR_TAIL {
                        tail.drain(..tail.len() - STDERR_TAIL);
                    }
                }
                let _ = tx.send(tail);
            });
        }
        Ok(SshStream {
            group,
            stdin: Some(stdin),
            stdout,
            stderr: rx,
            who: format!("ssh {}", target.destination()),
            stall: self.stall,
        })
    }
}

impl SmartSubtransport for SshTransport {
    fn action(
        &self,
        url: &str,
        action: Service,
    ) -> Result<Box<dyn SmartSubtransportStream>, git2::Error> {
        match action {
            // libgit2 keeps using this stream for the upload-pack that follows (not stateless).
            Service::UploadPackLs | Service::UploadPack => self
                .open(url)
                .map(|s| Box::new(s) as Box<dyn SmartSubtransportStream>)
                .map_err(|e| super::git2_error(&e)),
            Service::ReceivePackLs | Service::ReceivePack => Err(super::git2_error(
                "pushing over ssh is not supported (the agent only fetches)",
            )),
        }
    }

    fn close(&self) -> Result<(), git2::Error> {
        Ok(())
    }
}

/// The running ssh; when dropped, its stdin is closed and its process group ended.
struct SshStream {
    group: Group,
    stdin: Option<ChildStdin>,
    stdout: ChildStdout,
    stderr: mpsc::Receiver<Vec<u8>>,
    who: String,
    stall: Duration,
}

impl SshStream {
    /// ssh's exit status: it gets `grace` to exit by itself, then its process group is
    /// stopped.
    fn exit(&mut self, grace: Duration) -> io::Result<ExitStatus> {
        self.stdin = None;
        self.group.end(grace)
    }

    /// The error for an ssh that stopped talking or was stopped: `what` happened, then how ssh
    /// ended and the end of its stderr.
    fn failed(&mut self, kind: io::ErrorKind, what: String, grace: Duration) -> io::Error {
        let status = match self.exit(grace) {
            Ok(s) => s.to_string(),
            Err(e) => format!("exit status unknown: {e}"),
        };
        let tail = self
            .stderr
            .recv_timeout(Duration::from_secs(1))
            .unwrap_or_default();
        let tail = String::from_utf8_lossy(&tail);
        let lines: Vec<&str> = tail
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        let mut msg = format!("{what} ({status})");
        if !lines.is_empty() {
            msg.push_str(": ");
            msg.push_str(&lines[lines.len().saturating_sub(5)..].join(" / "));
        }
        if tail.contains("Host key verification failed") {
            msg.push_str(
                " (the host's key is not in the agent user's ~/.ssh/known_hosts; add it, \
                 see docs/plugins.md)",
            );
        }
        io::Error::new(kind, msg)
    }
}

// libgit2 gets every error through `io_for_libgit2`: see there why.
impl Read for SshStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_stdout(buf).map_err(super::io_for_libgit2)
    }
}

impl Write for SshStream {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.write_stdin(data).map_err(super::io_for_libgit2)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.flush_stdin().map_err(super::io_for_libgit2)
    }
}

impl SshStream {
    fn read_stdout(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let ready = loop {
            let mut fds = [nix::poll::PollFd::new(
                self.stdout.as_fd(),
                nix::poll::PollFlags::POLLIN,
            )];
            let timeout =
                nix::poll::PollTimeout::try_from(self.stall).unwrap_or(nix::poll::PollTimeout::MAX);
            match nix::poll::poll(&mut fds, timeout) {
                Ok(n) => break n,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(io::Error::from(e)),
            }
        };
        if ready == 0 {
            let what = format!(
                "{} sent no data for {} s and was stopped",
                self.who,
                self.stall.as_secs_f32()
            );
            return Err(self.failed(io::ErrorKind::TimedOut, what, Duration::ZERO));
        }
        match self.stdout.read(buf) {
            Ok(0) => match self.exit(EXIT_GRACE) {
                Ok(s) if s.success() => Ok(0),
                _ => Err(self.failed(
                    io::ErrorKind::Other,
                    format!("{} failed", self.who),
                    EXIT_GRACE,
                )),
            },
            Ok(n) => Ok(n),
            Err(e) => Err(self.failed(e.kind(), format!("{} failed: {e}", self.who), EXIT_GRACE)),
        }
    }

    fn write_stdin(&mut self, data: &[u8]) -> io::Result<usize> {
        let Some(stdin) = self.stdin.as_mut() else {
            return Err(io::Error::other(format!("{}: already closed", self.who)));
        };
        match stdin.write(data) {
            Ok(n) => Ok(n),
            Err(e) => Err(self.failed(e.kind(), format!("{} failed: {e}", self.who), EXIT_GRACE)),
        }
    }

    fn flush_stdin(&mut self) -> io::Result<()> {
        match self.stdin.as_mut().map(Write::flush) {
            Some(Err(e)) => {
                Err(self.failed(e.kind(), format!("{} failed: {e}", self.who), EXIT_GRACE))
            }
            _ => Ok(()),
        }
    }
}

impl Drop for SshStream {
    fn drop(&mut self) {
        // Done or abandoned, the fetch is over: with its stdin closed ssh normally exits at
        // once (and cleanly); after a short grace it is stopped, with what it started.
        let _ = self.exit(EXIT_GRACE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(user: Option<&str>, host: &str, port: Option<&str>, path: &str) -> Target {
        Target {
            user: user.map(str::to_owned),
            host: host.to_owned(),
            port: port.map(str::to_owned),
            path: path.to_owned(),
        }
    }

    #[test]
    fn addresses_are_parsed_with_gits_rules() {
        let cases = [
            (
                "ssh://git@host:2222/srv/x.git",
                t(Some("git"), "host", Some("2222"), "/srv/x.git"),
            ),
            ("ssh://host/~/x.git", t(None, "host", None, "~/x.git")),
            ("ssh://host/~bob/x.git", t(None, "host", None, "~bob/x.git")),
            (
                "git+ssh://u@[::1]:22/x",
                t(Some("u"), "::1", Some("22"), "/x"),
            ),
            ("SSH+GIT://h/x", t(None, "h", None, "/x")),
            (
                "git@github.com:org/name.git",
                t(Some("git"), "github.com", None, "org/name.git"),
            ),
            ("host:/abs/x.git", t(None, "host", None, "/abs/x.git")),
            ("host:~/x.git", t(None, "host", None, "~/x.git")),
            ("[::1]:x.git", t(None, "::1", None, "x.git")),
            // An empty port is the default one, as for git.
            ("ssh://h:/x.git", t(None, "h", None, "/x.git")),
            ("ssh://[::1]:/x.git", t(None, "::1", None, "/x.git")),
            // Only a word before "://" is a scheme.
            ("h:x://y", t(None, "h", None, "x://y")),
        ];
        for (addr, want) in cases {
            assert!(is_ssh(addr), "{addr} is ssh");
            assert_eq!(parse_target(addr), Ok(want), "{addr}");
        }
    }

    #[test]
    fn option_like_hosts_users_paths_bad_ports_and_other_kinds_are_refused() {
        for (bad, why) in [
            (
                "ssh://-oProxyCommand=touch%20x/repo.git",
                "ssh host \"-oProxyCommand=touch%20x\" starts with '-'",
            ),
            (
                "ssh://git@-oProxyCommand=x/repo.git",
                "ssh host \"-oProxyCommand=x\" starts with '-'",
            ),
            (
                "ssh://-oProxyCommand=x@host/repo.git",
                "ssh user \"-oProxyCommand=x\" starts with '-'",
            ),
            (
                "git@-oProxyCommand=x:repo.git",
                "ssh host \"-oProxyCommand=x\" starts with '-'",
            ),
            (
                "-oProxyCommand=x@host:repo.git",
                "ssh user \"-oProxyCommand=x\" starts with '-'",
            ),
            ("host:-u.git", "repository path \"-u.git\" starts with '-'"),
            ("ssh://host:22x/x", "the ssh port is not a number"),
            ("ssh://host", "no repository path"),
            ("ssh:///x", "no host"),
            ("host:", "no repository path"),
            (
                "/srv/a:b",
                "a local path with ':' in it must be written file://",
            ),
            (
                "ftp://files.example/x.git",
                "'ftp://' is not an ssh address",
            ),
            ("svn+ssh://h/x", "'svn+ssh://' is not an ssh address"),
            ("https://h/x.git", "'https://' is not an ssh address"),
            ("http:/h/x.git", "a '/' is missing after 'http:'"),
            ("FILE:/srv/x.git", "a '/' is missing after 'FILE:'"),
        ] {
            let e = parse_target(bad).expect_err(bad);
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn local_paths_and_other_schemes_are_not_ssh() {
        for addr in [
            "/srv/x",
            "./x",
            "/srv/a:b",
            "file:///x",
            "https://h/x",
            "git://h/x",
            "ftp://h/x",
            "svn+ssh://h/x",
        ] {
            assert!(!is_ssh(addr), "{addr}");
        }
    }

    #[test]
    fn paths_are_quoted_for_the_remote_shell() {
        assert_eq!(sq_quote("a b"), "'a b'");
        assert_eq!(sq_quote("it's!"), "'it'\\''s'\\!''");
        // The shell gives back exactly the path.
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "printf %s {}",
                sq_quote("x'; touch /tmp/y; '$(id)!")
            ))
            .output()
            .expect("sh");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "x'; touch /tmp/y; '$(id)!"
        );
    }

    #[test]
    fn the_program_comes_from_git_ssh_command_then_git_ssh_then_ssh() {
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| OsString::from(v))
            }
        };
        let c = SshCommand::from_vars(vars(&[
            ("GIT_SSH_COMMAND", "ssh -i /k/id"),
            ("GIT_SSH", "/usr/bin/plink"),
        ]));
        assert_eq!(c.run, Run::Shell("ssh -i /k/id".into()));
        assert!(c.openssh);
        let c = SshCommand::from_vars(vars(&[("GIT_SSH", "/opt/wrap")]));
        assert_eq!(c.run, Run::Program("/opt/wrap".into()));
        assert!(!c.openssh);
        let c = SshCommand::from_vars(vars(&[
            ("GIT_SSH", "/opt/wrap"),
            ("GIT_SSH_VARIANT", "ssh"),
        ]));
        assert!(c.openssh);
        let c = SshCommand::from_vars(vars(&[("GIT_SSH_COMMAND", "")]));
        assert_eq!(c, SshCommand::program("ssh"));
        assert!(c.openssh);
    }

    #[test]
    fn openssh_gets_batch_mode_and_the_port_and_a_simple_program_cannot_take_a_port() {
        let target = parse_target("ssh://git@h:2222/~/x.git").expect("parses");
        assert_eq!(
            target.args(&SshCommand::program("/usr/bin/ssh")),
            Ok(vec![
                "-o".to_owned(),
                "BatchMode=yes".to_owned(),
                "-p".to_owned(),
                "2222".to_owned(),
                "git@h".to_owned(),
                "git-upload-pack '~/x.git'".to_owned(),
            ])
        );
        let e = target
            .args(&SshCommand::program("/opt/wrap"))
            .expect_err("no port for a simple program");
        assert!(e.contains("GIT_SSH_VARIANT"), "{e}");
        let plain = parse_target("h:x.git").expect("parses");
        assert_eq!(
            plain.args(&SshCommand::program("/opt/wrap")),
            Ok(vec!["h".to_owned(), "git-upload-pack 'x.git'".to_owned()])
        );
    }

    /// The transport checks the address itself, not only `check_address` before it.
    #[test]
    fn the_transport_refuses_an_option_like_host_without_starting_ssh() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let marker = dir.path().join("ran");
        let program = dir.path().join("ssh");
        std::fs::write(
            &program,
            format!("#!/bin/sh\ntouch '{}'\n", marker.display()),
        )
        .expect("script");
        std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let t = SshTransport::new(SshCommand::program(&program), Duration::from_secs(5));
        for (addr, why) in [
            ("ssh://-oProxyCommand=touch%20x/r.git", "starts with '-'"),
            ("-oProxyCommand=x@h:r.git", "starts with '-'"),
            ("u@-oProxyCommand=x:r.git", "starts with '-'"),
            // libgit2 hands this transport any address with a ':' it has no transport for.
            (
                "ftp://files.example/x.git",
                "'ftp://' is not an ssh address",
            ),
            ("http:/h/x.git", "a '/' is missing"),
        ] {
            let e = t
                .action(addr, Service::UploadPackLs)
                .err()
                .expect("refused");
            assert!(e.message().contains(why), "{addr}: {e}");
        }
        assert!(!marker.exists(), "ssh never started");
        // The same program does run for a sane address (so the check above can fail).
        let Ok(mut stream) = t.action("h:r.git", Service::UploadPackLs) else {
            panic!("the marker program did not start");
        };
        assert_eq!(stream.read(&mut [0u8; 16]).expect("clean exit"), 0);
        assert!(marker.exists(), "the marker program runs");
    }

    #[test]
    fn a_shell_command_gets_the_arguments_as_separate_words() {
        let c = SshCommand {
            run: Run::Shell("printf '<%s>' pre".into()),
            openssh: true,
        };
        let out = c
            .command(&["a b".to_owned(), "git-upload-pack 'x'".to_owned()])
            .output()
            .expect("sh");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "<pre><a b><git-upload-pack 'x'>"
        );
    }
}
