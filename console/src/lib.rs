//! `agentctl`: the scriptable CLI (`commands`) and the terminal UI (`tui`) over the agent's API.
//!
//! Both speak to the agent only through [`shared::Client`], so no endpoint is written twice.

pub mod cli;
pub mod commands;
pub mod fleet;
pub mod fmt;
pub mod token;
pub mod tui;

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
            // Only the token the operator gave applies to a fleet: the local agent's token file
            // (what `token::find` falls back to) is not the other hosts' token.
            let token = match (cli.token.as_deref().map(str::trim), &cli.token_file) {
                (Some(t), _) if !t.is_empty() => Some(t.to_owned()),
                (_, Some(file)) => match token::read_token(file) {
                    Ok(t) => Some(t),
                    Err(e) => {
                        eprintln!("agentctl: --token-file {}: {e}", file.display());
                        return commands::exit::USAGE;
                    }
                },
                _ => None,
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
        None => match runtime.block_on(tui::run(client, !cli.no_mouse)) {
            Ok(()) => commands::exit::OK,
            Err(e) => {
                eprintln!(
                    "agentctl: {}",
                    shared::errors::join(e.chain().map(ToString::to_string))
                );
                commands::exit::FAILED
            }
        },
    }
}
