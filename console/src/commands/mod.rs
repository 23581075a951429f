//! The scriptable subcommands: one file per group, each printing a table or `--json`.
//!
//! Every command returns an exit code from [`exit`]; errors go to stderr and say what to do.

pub mod fleet;
mod log;
pub(crate) mod plugins;
mod post;
mod status;
mod tap;

use serde::Serialize;
use shared::{Client, ClientError};

use crate::cli::Command;

/// Exit codes, stable for scripts (documented in docs/console.md).
pub mod exit {
    /// Success.
    pub const OK: i32 = 0;
    /// The agent answered, but the operation failed: a plugin run that failed, a refresh that
    /// did not apply, metrics rejected by `post`.
    pub const FAILED: i32 = 1;
    /// Bad command line or unreadable input (clap uses 2 for usage errors too).
    pub const USAGE: i32 = 2;
    /// Nothing answered at `--addr`.
    pub const UNREACHABLE: i32 = 3;
    /// The agent answered with an error status (bad request, unknown plugin, missing endpoint,
    /// missing token).
    pub const API: i32 = 4;
    /// The agent's answer was not the expected JSON.
    pub const DECODE: i32 = 5;
    /// A plugin run was ignored because that plugin was already running (EX_TEMPFAIL: retry later).
    pub const BUSY: i32 = 75;
    /// `fleet status`: every selected host answered, some are degraded (none worse).
    pub const FLEET_DEGRADED: i32 = 10;
    /// `fleet status`: some selected host refused the token (401), none unreachable.
    pub const FLEET_UNAUTHORIZED: i32 = 11;
    /// `fleet status`: some selected host did not answer usably.
    pub const FLEET_UNREACHABLE: i32 = 12;
    /// `fleet` roll-out: `--stop-on-failure` halted it; some hosts were not attempted.
    pub const FLEET_HALTED: i32 = 13;
}

/// Runs one subcommand against the agent.
pub async fn run(client: &Client, command: Command, json: bool) -> i32 {
    let result = match command {
        Command::Status => status::status(client, json).await,
        Command::Ns => status::namespaces(client, json).await,
        Command::Update => status::update(client, json).await,
        Command::Plugins(cmd) => plugins::run(client, cmd, json).await,
        Command::Post(args) => post::run(client, args, json).await,
        Command::Log(args) => log::run(client, args, json).await,
        Command::Tap(args) => tap::run(client, args, json).await,
        // `agentctl::run` sends these to `fleet::run` with the fleet's token before any client
        // for `--addr` exists; reaching here is a wiring bug, said as such.
        Command::Fleet(_) | Command::GenerateDocs { .. } => Err(CommandError::Input(
            "internal error: fleet and generate-docs are run by agentctl::run".into(),
        )),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("agentctl: {}", err.message(client));
            err.code()
        }
    }
}

/// Why a command could not do its work.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The agent call failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// Local input problem (file not readable, ...).
    #[error("{0}")]
    Input(String),
}

impl CommandError {
    fn code(&self) -> i32 {
        match self {
            CommandError::Client(ClientError::Unreachable { .. }) => exit::UNREACHABLE,
            CommandError::Client(ClientError::Api { .. })
            | CommandError::Client(ClientError::Unauthorized { .. }) => exit::API,
            CommandError::Client(ClientError::Decode { .. }) => exit::DECODE,
            CommandError::Input(_) => exit::USAGE,
        }
    }

    /// The message for stderr, with a hint on what to do where there is one.
    fn message(&self, client: &Client) -> String {
        match self {
            CommandError::Client(e) => describe(e, client.addr()),
            CommandError::Input(m) => m.clone(),
        }
    }
}

/// A person-readable account of a client error with the next step to take; the TUI uses it too.
pub fn describe(err: &ClientError, addr: &str) -> String {
    match err {
        // The agent's own text says where its token is when it generated one: not said twice.
        ClientError::Unauthorized { message, .. } if message.contains("the token is in ") => {
            format!(
                "{err}; pass it with --token-file FILE or --token (or AGENTCTL_TOKEN_FILE / \
                 AGENTCTL_TOKEN)"
            )
        }
        ClientError::Unauthorized { .. } => format!(
            "{err}; pass this agent's token with --token-file FILE or --token (or \
             AGENTCTL_TOKEN_FILE / AGENTCTL_TOKEN): on the agent's host it is \
             {{data_dir}}/{} (default {}), or agent.token when its config sets one",
            shared::TOKEN_FILE_NAME,
            shared::DEFAULT_TOKEN_FILE
        ),
        e if e.is_not_offered() => format!(
            "{err}; the agent at {addr} does not offer this endpoint (an older agent, or the \
             feature is not built yet)"
        ),
        _ => err.to_string(),
    }
}

/// Prints one answer as a single JSON line: the `shared::api` body as-is.
fn print_json<T: Serialize>(value: &T) -> Result<(), CommandError> {
    let text = serde_json::to_string(value)
        .map_err(|e| CommandError::Input(format!("cannot encode the answer as JSON: {e}")))?;
    println!("{text}");
    Ok(())
}

/// Prints rows as left-aligned columns under a header, sized to the widest cell.
fn print_table(header: &[&str], rows: &[Vec<String>]) {
    for line in format_table(header, rows) {
        println!("{line}");
    }
}

/// The lines of [`print_table`]: left-aligned columns under a header, sized to the widest cell.
fn format_table(header: &[&str], rows: &[Vec<String>]) -> Vec<String> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.zip(&widths).enumerate() {
            if i + 1 == widths.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.trim_end().to_owned()
    };
    let mut lines = vec![line(&mut header.iter().copied())];
    for row in rows {
        lines.push(line(&mut row.iter().map(String::as_str)));
    }
    lines
}

/// Prints `key: value` lines with the keys aligned.
fn print_fields(fields: &[(&str, String)]) {
    let width = fields.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in fields {
        println!("{k:<width$}  {v}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(message: &str) -> ClientError {
        ClientError::Unauthorized {
            addr: "127.0.0.1:1232".into(),
            message: message.into(),
            sent: "no token".into(),
        }
    }

    #[test]
    fn a_401_says_where_the_token_is_once() {
        let own = describe(
            &refused(
                "the bearer token is wrong; the token is in /x/auth_token on the agent's host",
            ),
            "a",
        );
        assert_eq!(own.matches("auth_token").count(), 1, "{own}");
        assert!(own.ends_with("pass it with --token-file FILE or --token (or AGENTCTL_TOKEN_FILE / AGENTCTL_TOKEN)"), "{own}");
        let configured = describe(&refused("the bearer token is wrong"), "a");
        assert!(configured.contains("{data_dir}/auth_token"), "{configured}");
    }
}
