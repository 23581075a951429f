//! Finding the agent's token, so `agentctl` on the agent's host needs no `--token`.
//!
//! In order: `--token` / `AGENTCTL_TOKEN`; `--token-file` / `AGENTCTL_TOKEN_FILE`; then, only
//! for an agent on a loopback address, the token file of the agent this user started last
//! (the pointer `agent start` leaves names its pid file, which is in its data dir), then
//! [`shared::DEFAULT_TOKEN_FILE`]. A file that cannot be read (not root, not in
//! `agent.token_group`) is passed over, and the 401 that follows says so.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// The token to send and, for the 401 message, where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The token, if one was found.
    pub token: Option<String>,
    /// What was sent, or what was looked at and why nothing was: "the token from ...".
    pub note: String,
}

/// Where to look besides the command line: the pointer of the last agent this user started and
/// the system-wide token file (parameters so tests can point them elsewhere).
#[derive(Debug, Clone)]
pub struct Places {
    /// `$XDG_RUNTIME_DIR/agent-<uid>.pidfile` (or in `{temp dir}/agent-<uid>/`).
    pub pointer: shared::pointer::Pointer,
    /// [`shared::DEFAULT_TOKEN_FILE`].
    pub default_file: PathBuf,
}

impl Places {
    /// The real places for the user running agentctl.
    pub fn for_this_user() -> Places {
        Places {
            pointer: shared::pointer::Pointer::for_user(nix::unistd::getuid().as_raw()),
            default_file: PathBuf::from(shared::DEFAULT_TOKEN_FILE),
        }
    }
}

/// Picks the token to send to `addr` (see the module's doc for the order). Only a file named
/// on the command line that cannot be read is an error: the user asked for it.
pub fn find(
    token: Option<&str>,
    token_file: Option<&Path>,
    addr: &str,
    places: &Places,
) -> Result<Found, String> {
    if let Some(t) = token.map(str::trim).filter(|t| !t.is_empty()) {
        return Ok(Found {
            token: Some(t.to_owned()),
            note: "the token given by --token / AGENTCTL_TOKEN".to_owned(),
        });
    }
    if let Some(file) = token_file {
        return match read_token(file) {
            Ok(t) => Ok(Found {
                token: Some(t),
                note: format!(
                    "the token in {} (--token-file / AGENTCTL_TOKEN_FILE)",
                    file.display()
                ),
            }),
            Err(e) => Err(format!(
                "cannot use the token file {} (--token-file / AGENTCTL_TOKEN_FILE): {e}",
                file.display()
            )),
        };
    }
    if !is_loopback(addr) {
        return Ok(Found {
            token: None,
            note: format!(
                "no token: {addr} is not a loopback address, so agentctl reads no local token file"
            ),
        });
    }
    let mut passed = Vec::new();
    let candidates = [
        last_started(places).map(|f| (f, "the agent this user started last")),
        Ok((places.default_file.clone(), "the default")),
    ];
    for candidate in candidates {
        match candidate {
            Ok((file, what)) => match read_token(&file) {
                Ok(t) => {
                    return Ok(Found {
                        token: Some(t),
                        note: format!("the token in {} ({what})", file.display()),
                    })
                }
                Err(e) => passed.push(format!("{}: {e}", file.display())),
            },
            Err(why) => passed.push(why),
        }
    }
    Ok(Found {
        token: None,
        note: format!("no token (looked at: {})", passed.join("; ")),
    })
}

/// The token file beside the pid file the last-started pointer names, if the pointer can be
/// trusted (see [`shared::pointer`]: one another user could have planted is not followed).
fn last_started(places: &Places) -> Result<PathBuf, String> {
    let pid_file = places.pointer.read().map_err(|e| e.to_string())?;
    match pid_file.parent() {
        Some(dir) => Ok(dir.join(shared::TOKEN_FILE_NAME)),
        None => Err(format!(
            "{}: does not name a pid file",
            places.pointer.path().display()
        )),
    }
}

/// Reads a token file: its first line, trimmed; an empty one is an error.
pub fn read_token(file: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(file).map_err(|e| match e.kind() {
        std::io::ErrorKind::PermissionDenied => {
            "permission denied (root, or a member of the agent's agent.token_group, can read it)"
                .to_owned()
        }
        _ => reason(&e),
    })?;
    let token = text.lines().next().unwrap_or_default().trim();
    if token.is_empty() {
        return Err("the file is empty".to_owned());
    }
    Ok(token.to_owned())
}

/// An I/O error in a few words, without the OS error number.
fn reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".to_owned(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
        _ => e.to_string(),
    }
}

/// Whether `addr` (`host:port` or an `http://` URL) names this host's loopback.
pub fn is_loopback(addr: &str) -> bool {
    let rest = addr
        .strip_prefix("http://")
        .or_else(|| addr.strip_prefix("https://"))
        .unwrap_or(addr);
    let authority = rest.split('/').next().unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    struct Setup {
        _dir: tempfile::TempDir,
        places: Places,
        started: PathBuf,
    }

    /// A pointer naming `data/agent.pid` with a token beside it, and a default token file.
    fn setup() -> Setup {
        let dir = tempfile::tempdir().expect("tmp");
        let data = dir.path().join("data");
        std::fs::create_dir(&data).expect("mkdir");
        let started = data.join(shared::TOKEN_FILE_NAME);
        std::fs::write(&started, "from-last-started\n").expect("write");
        let pointer = shared::pointer::Pointer::in_dir(dir.path(), nix::unistd::getuid().as_raw());
        pointer.record(&data.join("agent.pid")).expect("record");
        let default_file = dir.path().join("default_token");
        std::fs::write(&default_file, "from-default\n").expect("write");
        Setup {
            places: Places {
                pointer,
                default_file,
            },
            started,
            _dir: dir,
        }
    }

    fn token(found: &Found) -> &str {
        found.token.as_deref().unwrap_or("<none>")
    }

    #[test]
    fn the_order_is_flag_then_file_then_last_started_then_default() {
        let s = setup();
        let addr = "127.0.0.1:1232";
        let other = s.places.default_file.with_file_name("other");
        std::fs::write(&other, "from-file\n").expect("write");
        let f = find(Some("from-flag"), Some(&other), addr, &s.places).expect("flag");
        assert_eq!(token(&f), "from-flag");
        assert!(f.note.contains("--token"), "{}", f.note);
        let f = find(None, Some(&other), addr, &s.places).expect("file");
        assert_eq!(token(&f), "from-file");
        assert!(f.note.contains(&other.display().to_string()), "{}", f.note);
        let f = find(Some("  "), None, addr, &s.places).expect("blank flag is none");
        assert_eq!(token(&f), "from-last-started");
        assert!(f.note.contains("started last"), "{}", f.note);
        std::fs::remove_file(&s.started).expect("rm");
        let f = find(None, None, addr, &s.places).expect("default");
        assert_eq!(token(&f), "from-default");
        assert!(f.note.contains("the default"), "{}", f.note);
        std::fs::remove_file(&s.places.default_file).expect("rm");
        let f = find(None, None, addr, &s.places).expect("none");
        assert_eq!(f.token, None);
        assert!(
            f.note.contains("no token") && f.note.contains("no such file"),
            "{}",
            f.note
        );
    }

    #[test]
    fn local_files_are_read_only_for_a_loopback_agent() {
        let s = setup();
        for addr in [
            "localhost:1232",
            "http://127.0.0.2:1232/",
            "[::1]:1232",
            "http://[::1]:9",
        ] {
            assert!(is_loopback(addr), "{addr}");
            let f = find(None, None, addr, &s.places).expect("find");
            assert_eq!(token(&f), "from-last-started", "{addr}");
        }
        for addr in [
            "10.0.0.1:1232",
            "http://agent.example.com:1232",
            "[2001:db8::1]:1",
        ] {
            assert!(!is_loopback(addr), "{addr}");
            let f = find(None, None, addr, &s.places).expect("find");
            assert_eq!(f.token, None, "{addr}");
            assert!(f.note.contains("not a loopback"), "{}", f.note);
        }
    }

    #[test]
    fn a_pointer_others_may_write_is_not_followed_and_a_named_file_must_be_readable() {
        let s = setup();
        let pointer = s.places.pointer.path();
        std::fs::set_permissions(&pointer, std::fs::Permissions::from_mode(0o666)).expect("chmod");
        let f = find(None, None, "127.0.0.1:1", &s.places).expect("find");
        assert_eq!(token(&f), "from-default");
        std::fs::set_permissions(&pointer, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let mut other_user = s.places.clone();
        let uid = nix::unistd::getuid().as_raw() + 1;
        std::fs::rename(
            &pointer,
            pointer.with_file_name(format!("agent-{uid}.pidfile")),
        )
        .expect("rename");
        other_user.pointer = shared::pointer::Pointer::in_dir(pointer.parent().expect("dir"), uid);
        let f = find(None, None, "127.0.0.1:1", &other_user).expect("find");
        assert_eq!(
            token(&f),
            "from-default",
            "a pointer of another user is not followed"
        );
        let e = find(
            None,
            Some(Path::new("/nonexistent/tok")),
            "127.0.0.1:1",
            &s.places,
        )
        .expect_err("named file missing");
        assert!(
            e.contains("/nonexistent/tok") && e.contains("no such file"),
            "{e}"
        );
        let empty = s.places.default_file.with_file_name("empty");
        std::fs::write(&empty, "\n").expect("write");
        let e = find(None, Some(&empty), "127.0.0.1:1", &s.places).expect_err("empty");
        assert!(e.contains("empty"), "{e}");
    }
}
