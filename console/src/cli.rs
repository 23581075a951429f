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
    /// Terminal UI over many agents: a host file (one `name addr[:port] [token]` or
    /// `addr[:port]` per line, see docs/fleet.md), or `-` for stdin; opens on the Fleet screen.
    /// --token (or --token-file) is sent to hosts without a token of their own.
    #[arg(long, env = "AGENTCTL_HOSTS", value_name = "FILE")]
    pub hosts: Option<String>,
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
    /// Watch the points the agent sends, live, as line protocol (or --json), until Ctrl-C or
    /// --count; `# ns NS · PRODUCER` comment lines say where the lines after them come from.
    Tap(TapArgs),
    /// Many agents at once: health of every host, roll-outs in batches (docs/fleet.md).
    #[command(subcommand)]
    Fleet(FleetCommand),
    /// Internal: write the man pages and shell completions into DIR (packaging).
    #[command(hide = true)]
    GenerateDocs {
        /// Where to write `man/` and `completions/`.
        dir: PathBuf,
    },
}

/// `agentctl fleet ...`.
#[derive(Debug, Subcommand)]
pub enum FleetCommand {
    /// One row per host: state, version, uptime, registry, output, spool, dropped, plugins.
    Status(FleetStatusArgs),
    /// Refresh every selected host from the registry (`GET /update`), in batches.
    Update(FleetUpdateArgs),
    /// Update, run, enable or disable a plugin on every selected host, in batches.
    #[command(subcommand)]
    Plugins(FleetPluginsCommand),
}

/// Which hosts: a host file or a registry namespace, and which of them (`--filter`).
#[derive(Debug, Clone, Args)]
pub struct InventoryArgs {
    /// Host file: one host per line, `name addr[:port] [token]` or `addr[:port]`; `-` = stdin.
    #[arg(long, env = "AGENTCTL_HOSTS", value_name = "FILE")]
    pub hosts: Option<String>,
    /// Lodastack registry base URL: the hosts are the machines of --ns (or --registry-ns).
    #[arg(long, value_name = "URL")]
    pub registry: Option<String>,
    /// The registry namespace whose machines to take (a non-leaf namespace takes every leaf
    /// below it).
    #[arg(long, value_name = "NS")]
    pub registry_ns: Option<String>,
    /// The agents' API port, for hosts listed without one and for registry machines.
    #[arg(long, default_value_t = crate::fleet::inventory::DEFAULT_PORT)]
    pub port: u16,
    /// Reach registry machines by their `hostname` or by the first address of their `ip` field.
    #[arg(long, value_enum, default_value_t = ConnectBy::Hostname)]
    pub connect: ConnectBy,
    /// Hosts asked at the same time.
    #[arg(long, default_value_t = crate::fleet::probe::DEFAULT_IN_FLIGHT, value_name = "N")]
    pub in_flight: usize,
    /// Only these hosts: terms joined by commas (AND), e.g. `state!=ok`, `version<0.2.0`,
    /// `ns=web.*`, `name=db-*`, `addr=10.1.*`.
    #[arg(long, value_name = "EXPR")]
    pub filter: Option<String>,
}

/// How registry machines are reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ConnectBy {
    /// The machine's `hostname`.
    Hostname,
    /// The first address in the machine's `ip` field.
    Ip,
}

/// `agentctl fleet status`.
#[derive(Debug, Clone, Args)]
pub struct FleetStatusArgs {
    #[command(flatten)]
    pub inventory: InventoryArgs,
    /// The registry namespace (same as --registry-ns).
    #[arg(long, value_name = "NS")]
    pub ns: Option<String>,
    /// Seconds one host may take to answer (a slower host is `unreachable`).
    #[arg(long, default_value_t = 3.0, value_name = "SECS")]
    pub timeout: f64,
}

/// How a roll-out goes.
#[derive(Debug, Clone, Args)]
pub struct RolloutArgs {
    /// Hosts per batch, `N` or `N%` of the selected hosts; the next batch starts when the current
    /// one has finished. Default: all in one batch.
    #[arg(long, value_name = "N|N%")]
    pub batch: Option<String>,
    /// Start no further batch once a host has failed.
    #[arg(long)]
    pub stop_on_failure: bool,
    /// Seconds one host may take for the action.
    #[arg(long, default_value_t = 120.0, value_name = "SECS")]
    pub host_timeout: f64,
}

/// `agentctl fleet update`.
#[derive(Debug, Clone, Args)]
pub struct FleetUpdateArgs {
    #[command(flatten)]
    pub inventory: InventoryArgs,
    /// The registry namespace (same as --registry-ns).
    #[arg(long, value_name = "NS")]
    pub ns: Option<String>,
    #[command(flatten)]
    pub rollout: RolloutArgs,
}

/// `agentctl fleet plugins ...`: `--ns` names the plugin's namespace, and with --registry also
/// the namespace whose machines are taken (unless --registry-ns says otherwise).
#[derive(Debug, Subcommand)]
pub enum FleetPluginsCommand {
    /// Fetch the plugin's repository and move it to the latest commit, on every host.
    Update(FleetPluginArgs),
    /// Run the plugin now on every host and show the results.
    Run(FleetRunArgs),
    /// Schedule a disabled plugin again, on every host.
    Enable(FleetPluginArgs),
    /// Stop scheduling the plugin, on every host.
    Disable(FleetPluginArgs),
}

/// A plugin action on the fleet.
#[derive(Debug, Clone, Args)]
pub struct FleetPluginArgs {
    #[command(flatten)]
    pub inventory: InventoryArgs,
    #[command(flatten)]
    pub plugin: PluginArgs,
    #[command(flatten)]
    pub rollout: RolloutArgs,
}

/// `agentctl fleet plugins run`.
#[derive(Debug, Clone, Args)]
pub struct FleetRunArgs {
    #[command(flatten)]
    pub inventory: InventoryArgs,
    #[command(flatten)]
    pub plugin: PluginArgs,
    #[command(flatten)]
    pub rollout: RolloutArgs,
    /// Seconds before each run is killed (the agent's default: 10).
    #[arg(long)]
    pub timeout: Option<u64>,
    /// The argument string passed to `plugin.sh`.
    #[arg(long)]
    pub param: Option<String>,
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

/// `agentctl tap`.
#[derive(Debug, Args)]
pub struct TapArgs {
    /// Only this namespace.
    #[arg(long)]
    pub ns: Option<String>,
    /// Only measurements matching this glob (`PLUGIN.nginx.*`; `*` crosses dots).
    #[arg(long = "match", value_name = "GLOB")]
    pub pattern: Option<String>,
    /// Only points with this tag and value (repeatable: all must match).
    #[arg(long = "tag", value_name = "KEY=VALUE")]
    pub tags: Vec<String>,
    /// At most this many points per second, sampled evenly when more match.
    #[arg(long, value_name = "N")]
    pub rate: Option<u32>,
    /// Stop after this many points (exit 0).
    #[arg(long, short = 'n', value_name = "N")]
    pub count: Option<u64>,
}
