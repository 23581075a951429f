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
    match cli.command {
        Some(command) => runtime.block_on(commands::run(&client, command, cli.json)),
        None => match runtime.block_on(tui::run(client, !cli.no_mouse)) {
            Ok(()) => commands::exit::OK,
            Err(e) => {
                eprintln!("agentctl: {e:#}");
                commands::exit::FAILED
            }
        },
    }
}
