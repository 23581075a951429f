//! Who may call the API: every endpoint but `/me/status` needs `Authorization: Bearer <token>`.
//!
//! The token is `agent.token` when the config sets one; otherwise the agent makes one at its
//! first start, 32 random bytes written in hex to `{data_dir}/auth_token`, readable only by the
//! agent's user (mode 0600) or also by `agent.token_group` (0640), and reuses it on later
//! starts. A local user who cannot read that file cannot drive the agent (docs/security.md).

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use shared::api::paths;
use subtle::ConstantTimeEq;
use tracing::{info, warn};

use super::ApiError;
use crate::config::Config;
use crate::state::AgentState;

/// Random bytes in a generated token (written as twice as many hex digits).
pub const GENERATED_TOKEN_BYTES: usize = 32;

/// Middleware: lets the request through when the path is `/me/status` or the request carries
/// the token in force; answers 401 otherwise. A running agent always has a token (see
/// [`ensure_token`]); only the router built in process with an empty one (tests) is open.
pub async fn require_token(State(state): State<AgentState>, req: Request, next: Next) -> Response {
    let cfg = state.config();
    let token = cfg.agent.token.as_bytes();
    if token.is_empty() || req.uri().path() == paths::ME_STATUS {
        return next.run(req).await;
    }
    let header = req.headers().get(AUTHORIZATION).map(HeaderValue::as_bytes);
    let given = header.map(bearer);
    match given {
        Some(Some(given)) if bool::from(given.ct_eq(token)) => next.run(req).await,
        Some(Some(_)) => unauthorized(format!("the bearer token is wrong; {}", where_is(&cfg))),
        Some(None) => unauthorized(format!(
            "the Authorization header is not `Bearer <token>`; {}",
            where_is(&cfg)
        )),
        None => unauthorized(format!(
            "this agent requires a token: send `Authorization: Bearer <token>`; {}",
            where_is(&cfg)
        )),
    }
}

/// Where a caller finds the token in force, for the 401's message (no secret in it).
fn where_is(cfg: &Config) -> String {
    match &cfg.agent.token_file {
        Some(file) => format!(
            "the token is in {} on the agent's host, readable by {} (agentctl on that host reads it by itself)",
            file.display(),
            if cfg.agent.token_group.is_empty() {
                "the agent's user only".to_owned()
            } else {
                format!("the agent's user and group {}", cfg.agent.token_group)
            }
        ),
        None => "the token is agent.token in the agent's config (agentctl: --token)".to_owned(),
    }
}

/// The credentials of an `Authorization: Bearer <token>` value: the scheme matched without
/// regard to case, then one or more spaces (or tabs) before the token, as HTTP allows.
pub fn bearer(value: &[u8]) -> Option<&[u8]> {
    let is_space = |b: &u8| *b == b' ' || *b == b'\t';
    let value = value.trim_ascii();
    let split = value.iter().position(is_space)?;
    let (scheme, rest) = value.split_at(split);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

fn unauthorized(message: String) -> Response {
    let mut resp = ApiError::new(StatusCode::UNAUTHORIZED, message).into_response();
    resp.headers_mut()
        .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    resp
}

/// Why the API's token cannot be had.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The token file is there but is not one the agent can trust; the operator must look.
    #[error(
        "token file {path}: {why}; remove it and start the agent again (it makes a new token), \
         or set agent.token"
    )]
    Untrusted {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// Reading, writing or securing the file failed.
    #[error("token file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// `agent.token_group` names no group.
    #[error("agent.token_group: no group named {0:?}")]
    NoGroup(String),
}

/// The token the API requires, and the file it came from when it was generated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiToken {
    /// The secret.
    pub secret: String,
    /// `{data_dir}/auth_token` for a generated token; `None` for `agent.token`.
    pub file: Option<PathBuf>,
}

/// The token in force: `agent.token` when set (a token file left from an earlier run without
/// one is removed, so no stale secret lies around for agentctl to send); otherwise the token in
/// `{data_dir}/auth_token`, made now if there is none.
///
/// An existing file is used as it is when it is a regular file of the agent's user holding a
/// token the agent made, with the configured mode and group. A file that others could read
/// is replaced by a new token (whoever read it knows the old one); a file whose mode or group
/// is merely not the configured one is fixed in place. Any other file stops the start: a
/// symlink, something else than a regular file, another owner, or contents that are not a
/// generated token mean someone else put it there.
pub fn ensure_token(config: &Config) -> Result<ApiToken, TokenError> {
    let path = config.agent.data_dir.join(shared::TOKEN_FILE_NAME);
    if !config.agent.token.is_empty() {
        match fs::remove_file(&path) {
            Ok(()) => info!(
                path = %path.display(),
                "Removed the generated token file: agent.token is set and is the token now."
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(TokenError::Io { path, source }),
        }
        return Ok(ApiToken {
            secret: config.agent.token.clone(),
            file: None,
        });
    }
    let gid = token_gid(&config.agent.token_group)?;
    let mode = if gid.is_some() { 0o640 } else { 0o600 };
    let io = |source| TokenError::Io {
        path: path.clone(),
        source,
    };
    let untrusted = |why: String| TokenError::Untrusted {
        path: path.clone(),
        why,
    };
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let secret = create(&path, mode, gid).map_err(io)?;
            info!(path = %path.display(), mode = format!("{mode:o}"), "Made the API's token.");
            return Ok(ApiToken {
                secret,
                file: Some(path),
            });
        }
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(untrusted("is a symbolic link".into()))
        }
        Err(e) => return Err(io(e)),
    };
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(untrusted("is not a regular file".into()));
    }
    let euid = nix::unistd::geteuid().as_raw();
    if meta.uid() != euid {
        return Err(untrusted(format!(
            "is owned by uid {}, not by the agent's uid {euid}",
            meta.uid()
        )));
    }
    let mut text = String::new();
    (&file)
        .take(1024)
        .read_to_string(&mut text)
        .map_err(|_| untrusted("does not hold a token the agent made (64 hex digits)".into()))?;
    let secret = text.trim_end_matches('\n');
    if secret.len() != GENERATED_TOKEN_BYTES * 2 || !secret.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(untrusted(
            "does not hold a token the agent made (64 hex digits)".into(),
        ));
    }
    let found = meta.mode() & 0o7777;
    if found & 0o007 != 0 {
        let secret = create(&path, mode, gid).map_err(io)?;
        warn!(
            path = %path.display(),
            mode = format!("{found:o}"),
            "The token file was readable by others; a new token replaces it (callers of the old one get 401)."
        );
        return Ok(ApiToken {
            secret,
            file: Some(path),
        });
    }
    if found != mode || gid.is_some_and(|g| g != meta.gid()) {
        secure(&file, mode, gid).map_err(io)?;
        warn!(
            path = %path.display(),
            was = format!("{found:o}"),
            now = format!("{mode:o}"),
            "The token file's mode or group was not the configured one; fixed."
        );
    }
    Ok(ApiToken {
        secret: secret.to_owned(),
        file: Some(path),
    })
}

/// The gid of `agent.token_group`, `None` when it is empty.
pub fn token_gid(group: &str) -> Result<Option<u32>, TokenError> {
    if group.is_empty() {
        return Ok(None);
    }
    match nix::unistd::Group::from_name(group) {
        Ok(Some(g)) => Ok(Some(g.gid.as_raw())),
        _ => Err(TokenError::NoGroup(group.to_owned())),
    }
}

/// Gives `file` `mode` and group `gid`, never more than 0600 on the way.
fn secure(file: &File, mode: u32, gid: Option<u32>) -> std::io::Result<()> {
    file.set_permissions(fs::Permissions::from_mode(0o600))?;
    if let Some(gid) = gid {
        std::os::unix::fs::fchown(file, None, Some(gid))?;
    }
    file.set_permissions(fs::Permissions::from_mode(mode))
}

/// Writes a new random token to `path` atomically: a temporary file created 0600 (so it is
/// never readable by others, whatever the umask), given its group and mode, written, synced,
/// then renamed over `path`.
fn create(path: &Path, mode: u32, gid: Option<u32>) -> std::io::Result<String> {
    use rand::TryRngCore;
    let mut bytes = [0u8; GENERATED_TOKEN_BYTES];
    rand::rngs::OsRng
        .try_fill_bytes(&mut bytes)
        .map_err(std::io::Error::other)?;
    let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        shared::TOKEN_FILE_NAME,
        std::process::id()
    ));
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let written = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)?;
        secure(&f, mode, gid)?;
        f.write_all(format!("{secret}\n").as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(secret)
}

/// Logs a warning when the config file holding `agent.token` can be read by others.
pub fn warn_if_config_exposes_token(config: &Config) {
    if config.agent.token.is_empty() || config.agent.token_file.is_some() {
        return;
    }
    let Some(path) = &config.source else { return };
    if let Some(who) = crate::files::readers_besides_owner(path) {
        warn!(
            path = %path.display(),
            readers = %who,
            "The config file holds agent.token and can be read by users other than its owner; restrict it (chmod 600)."
        );
    }
}
