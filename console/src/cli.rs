//! The command line: global options and subcommands.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Operator console for the host-monitoring agent. Without a subcommand: the terminal UI.
#[derive(Debug, Parser)]
#[command(name = "agentctl", version, about)]
pub struct Cli {
    /// The agent's API address (`host:port` or `http://host:port`).
    #[arg(long, global = true, env = "AGENTCTL_ADDR", default_value = shared::DEFAULT_ADDR)]
    pub addr: String,
    /// Bearer token for the agent's API. Without it (or --token-file), agentctl reads the token
    /// file of the agent this user started last, then /var/lib/agent/auth_token, when the
    /// agent is on a loopback address.
    #[arg(long, global = true, env = "AGENTCTL_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A file holding the bearer token (its first line), e.g. the agent's
    /// `{data_dir}/auth_token`.
    #[arg(long, global = true, env = "AGENTCTL_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Print the agent's answer as JSON (one object per line) instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// Terminal UI: leave the mouse to the terminal (its own text selection) instead of
    /// clicks and wheel scrolling; with capture on, shift-drag selects text in most terminals.
    #[arg(long)]
    pub no_mouse: bool,
    /// What to do; none opens the terminal UI.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// The agent's health: version, uptime, registry, output, jobs.
    Status,
    /// This host's namespaces.
    Ns,
    /// Refresh from the registry now.
    Update,
    /// List, run, update, enable or disable plugins.
    #[command(subcommand)]
    Plugins(PluginsCommand),
    /// Push metrics: a JSON list of metrics or line protocol, from a file or stdin.
    Post(PostArgs),
    /// Read lines of a file the agent may read (its own log, /var/log), optionally following it.
    Log(LogArgs),
}

/// `agentctl plugins ...`.
#[derive(Debug, Subcommand)]
pub enum PluginsCommand {
    /// Every plugin with its state and last run.
    List,
    /// Run a plugin now and print its output.
    Run(RunArgs),
    /// Fetch the plugin's repository and move it to the latest commit.
    Update(PluginArgs),
    /// Schedule a disabled plugin again.
    Enable(PluginArgs),
    /// Stop scheduling a plugin (it re-enables itself after the agent's configured delay).
    Disable(PluginArgs),
}

/// Names one plugin.
#[derive(Debug, Clone, Args)]
pub struct PluginArgs {
    /// The plugin's namespace.
    #[arg(long)]
    pub ns: String,
    /// The plugin's repository (its address or project name).
    #[arg(long)]
    pub repo: String,
}

/// `agentctl plugins run`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub plugin: PluginArgs,
    /// Seconds before the run is killed (the agent's default: 10).
    #[arg(long)]
    pub timeout: Option<u64>,
    /// The argument string passed to `plugin.sh`.
    #[arg(long)]
    pub param: Option<String>,
}

/// `agentctl post`.
#[derive(Debug, Clone, Args)]
pub struct PostArgs {
    /// The file to send; `-` or none reads stdin.
    pub file: Option<PathBuf>,
    /// The namespace (may be omitted when the host has exactly one).
    #[arg(long)]
    pub ns: Option<String>,
    /// Send as line protocol (default: detected from the extension `.lp`/`.line`/`.txt`, or from
    /// the content: JSON starts with `[` or `{`).
    #[arg(long)]
    pub line: bool,
}

/// `agentctl log`.
#[derive(Debug, Clone, Args)]
pub struct LogArgs {
    /// The file to read (absolute, under the agent's log dir or a configured log root).
    pub path: String,
    /// Byte offset to start at.
    #[arg(long, default_value_t = 0)]
    pub offset: u64,
    /// Lines to read per request.
    #[arg(long, default_value_t = 100)]
    pub num: u64,
    /// Keep polling for new lines until Ctrl-C (restarts at 0 when the file is truncated or rotated).
    #[arg(long, short)]
    pub follow: bool,
}
