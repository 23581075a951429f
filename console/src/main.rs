//! `agentctl`: the operator console for the agent's HTTP API.

use clap::Parser;

/// Operator console for the host-monitoring agent (the terminal UI and subcommands are being built).
#[derive(Parser)]
#[command(name = "agentctl", version, about)]
struct Cli {}

fn main() {
    let _ = Cli::parse();
    eprintln!("agentctl: the console is not built yet; see README.md");
    std::process::exit(2);
}
