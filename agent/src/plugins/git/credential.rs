//! git's credential helpers, asked the way git asks them: `git credential fill` with
//! `protocol`, `host[:port]`, `path` and `username` on its stdin. git itself then reads the
//! agent user's configuration and picks the helpers (`credential.helper`,
//! `credential.<url>.helper`), drops the path unless `credential.useHttpPath` is set, and
//! matches stored credentials by host, exactly as for a `git fetch` by that user.
//!
//! It never prompts: `GIT_TERMINAL_PROMPT=0`, and an empty `GIT_ASKPASS` (which also keeps
//! `core.askPass` and `SSH_ASKPASS` from running). It runs in `/` (no repository's config), in
//! a process group of its own, and is stopped with its helpers after [`TIMEOUT`]. The
//! agent's environment is passed on, so helpers that read a token from it work.
//!
//! Credentials are only asked for a URL with a host. They are never stored or erased: no
//! `git credential approve` or `reject`, since an unattended agent should not rewrite the
//! operator's credential store (nor drop a stored token after one 401).

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use reqwest::Url;
use tracing::debug;

use super::group::Group;

/// How long `git credential fill` and its helpers may take.
pub(super) const TIMEOUT: Duration = Duration::from_secs(20);
/// Most bytes read of its answer, and of its stderr.
const CAP: u64 = 64 * 1024;

/// A user name and password from the helpers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Filled {
    pub(super) username: String,
    pub(super) password: String,
}

/// What git's credential helpers have for the repository at `repo` (its URL without
/// `/info/refs`), for `username` when the address named one. `env` is added to the agent's
/// environment (tests point `HOME` elsewhere).
pub(super) fn fill(
    repo: &Url,
    username: Option<&str>,
    env: &[(String, String)],
    timeout: Duration,
) -> Option<Filled> {
    let request = request(repo, username)?;
    let mut cmd = Command::new("git");
    cmd.args(["credential", "fill"])
        .current_dir("/")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ASKPASS", "")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut group = match Group::spawn(&mut cmd) {
        Ok(g) => g,
        Err(e) => {
            debug!(error = %e, "Cannot run git credential fill; no credentials from helpers.");
            return None;
        }
    };
    let child = group.child();
    let (Some(mut stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return None;
    };
    // git reads the whole request before it runs a helper; it is far smaller than a pipe.
    let _ = stdin.write_all(request.as_bytes());
    drop(stdin);
    let (tx, rx) = mpsc::channel();
    let reader = |pipe: Box<dyn Read + Send>, tx: mpsc::Sender<(bool, Vec<u8>)>, out: bool| {
        move || {
            let mut buf = Vec::new();
            let _ = pipe.take(CAP).read_to_end(&mut buf);
            let _ = tx.send((out, buf));
        }
    };
    std::thread::spawn(reader(Box::new(stdout), tx.clone(), true));
    std::thread::spawn(reader(Box::new(stderr), tx, false));
    let (mut out, mut err) = (None, Vec::new());
    let deadline = std::time::Instant::now() + timeout;
    for _ in 0..2 {
        match rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now())) {
            Ok((true, b)) => out = Some(b),
            Ok((false, b)) => err = b,
            Err(_) => break,
        }
    }
    // Exited by now when it answered; otherwise stopped here, helpers and all.
    let status = group.end(Duration::from_secs(1));
    let Some(out) = out.filter(|_| status.as_ref().is_ok_and(|s| s.success())) else {
        debug!(
            status = ?status,
            stderr = %String::from_utf8_lossy(&err).trim(),
            "git credential fill gave no credentials."
        );
        return None;
    };
    parse(&String::from_utf8_lossy(&out))
}

/// git's credential request for `repo`, or `None` when it has no host or a value that cannot
/// be written on one line.
fn request(repo: &Url, username: Option<&str>) -> Option<String> {
    let host = repo.host_str().filter(|h| !h.is_empty())?;
    // As git: the host with the port when the URL names one, the path decoded and without
    // its slashes around it.
    let host = match repo.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_owned(),
    };
    let path = repo.path().trim_matches('/');
    let path = super::http::percent_decode(path).unwrap_or_else(|()| path.to_owned());
    let mut fields = vec![("protocol", repo.scheme()), ("host", &host)];
    if !path.is_empty() {
        fields.push(("path", &path));
    }
    if let Some(u) = username.filter(|u| !u.is_empty()) {
        fields.push(("username", u));
    }
    let mut request = String::new();
    for (k, v) in fields {
        if v.contains(['\n', '\0']) {
            return None;
        }
        request.push_str(&format!("{k}={v}\n"));
    }
    request.push('\n');
    Some(request)
}

fn parse(answer: &str) -> Option<Filled> {
    let field = |name: &str| {
        answer
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix('='))
            .map(str::to_owned)
    };
    Some(Filled {
        username: field("username")?,
        password: field("password")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_has_the_host_with_its_port_and_the_decoded_path() {
        let url = |s: &str| Url::parse(s).expect("url");
        assert_eq!(
            request(&url("http://127.0.0.1:8080/ops/my%20x.git/"), Some("bob")).as_deref(),
            Some("protocol=http\nhost=127.0.0.1:8080\npath=ops/my x.git\nusername=bob\n\n")
        );
        assert_eq!(
            request(&url("https://[::1]/x.git"), None).as_deref(),
            Some("protocol=https\nhost=[::1]\npath=x.git\n\n")
        );
        // A newline would end the request early and let the rest be read as other fields.
        assert_eq!(request(&url("https://h/a%0Ahost=evil"), None), None);
    }

    #[test]
    fn the_answer_gives_user_and_password_or_nothing() {
        assert_eq!(
            parse("protocol=https\nhost=h\nusername=bob\npassword=p=w\n"),
            Some(Filled {
                username: "bob".into(),
                password: "p=w".into()
            })
        );
        assert_eq!(parse("protocol=https\nhost=h\nusername=bob\n"), None);
    }
}
