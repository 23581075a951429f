//! `agentctl`: the scriptable CLI (`commands`) and the terminal UI (`tui`) over the agent's API.
//!
//! Both speak to the agent only through [`shared::Client`], so no endpoint is written twice.

pub mod cli;
pub mod commands;
pub mod fleet;
pub mod fmt;
pub mod token;
pub mod tui;

use std::path::Path;

use cli::Cli;

/// Runs the command line (or the TUI when no subcommand is given); returns the process exit code.
pub fn run(cli: Cli) -> i32 {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("agentctl: cannot start the async runtime: {e}");
            return commands::exit::FAILED;
        }
    };
    let command = match cli.command {
        Some(cli::Command::Fleet(cmd)) => {
            let token = match fleet_token(cli.token.as_deref(), cli.token_file.as_deref()) {
                Ok(t) => t,
                Err(code) => return code,
            };
            return runtime.block_on(commands::fleet::run(cmd, token, cli.json));
        }
        other => other,
    };
    let found = match token::find(
        cli.token.as_deref(),
        cli.token_file.as_deref(),
        &cli.addr,
        &token::Places::for_this_user(),
    ) {
        Ok(found) => found,
        Err(e) => {
            eprintln!("agentctl: {e}");
            return commands::exit::USAGE;
        }
    };
    let client = shared::Client::new(&cli.addr, found.token).with_token_note(found.note);
    match command {
        Some(command) => runtime.block_on(commands::run(&client, command, cli.json)),
        None => match tui_fleet(
            cli.hosts.as_deref(),
            cli.token.as_deref(),
            cli.token_file.as_deref(),
        )
        .map(|f| runtime.block_on(tui::run(client, !cli.no_mouse, f)))
        {
            Err(code) => code,
            Ok(Ok(())) => commands::exit::OK,
            Ok(Err(e)) => {
                eprintln!(
                    "agentctl: {}",
                    shared::errors::join(e.chain().map(ToString::to_string))
                );
                commands::exit::FAILED
            }
        },
    }
}

/// The fleet of `--hosts` (or `AGENTCTL_HOSTS`) for the terminal UI, if one is named; an
/// unreadable inventory or token file is the exit code of bad usage.
fn tui_fleet(
    source: Option<&str>,
    token: Option<&str>,
    token_file: Option<&Path>,
) -> Result<Option<tui::Fleet>, i32> {
    let Some(source) = source else {
        return Ok(None);
    };
    let mut hosts =
        fleet::inventory::load(source, fleet::inventory::DEFAULT_PORT).map_err(|e| {
            eprintln!("agentctl: {e}");
            commands::exit::USAGE
        })?;
    let token = fleet_token(token, token_file)?;
    fleet::inventory::apply_default_token(&mut hosts, token.as_deref());
    Ok(Some(tui::Fleet {
        hosts,
        prober: fleet::probe::Prober::new(fleet::probe::Options::default()),
    }))
}

/// The token for the hosts of a fleet that have none of their own: only the one the operator
/// gave (`--token`, else `--token-file`). The local agent's token file, which `token::find`
/// falls back to, is not the other hosts' token. An unreadable file is the exit code of bad
/// usage.
fn fleet_token(token: Option<&str>, token_file: Option<&Path>) -> Result<Option<String>, i32> {
    match (token.map(str::trim), token_file) {
        (Some(t), _) if !t.is_empty() => Ok(Some(t.to_owned())),
        (_, Some(file)) => token::read_token(file).map(Some).map_err(|e| {
            eprintln!("agentctl: --token-file {}: {e}", file.display());
            commands::exit::USAGE
        }),
        _ => Ok(None),
    }
}
