//! `agentctl`: the operator console for the agent's HTTP API (thin: parse, run, exit code).

use clap::Parser;

fn main() {
    let cli = agentctl::cli::Cli::parse();
    let code = agentctl::run(cli);
    std::process::exit(code);
}
