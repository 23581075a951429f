//! The agent's HTTP API: endpoint paths and the JSON body of every answer.
//!
//! The agent's router and `agentctl`'s client both use these, so a path or a field is written once.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Endpoint paths, shared by the router and the client.
pub mod paths {
    /// `POST /post?ns=`: push metrics.
    pub const POST: &str = "/post";
    /// `GET /update`: refresh from the registry now.
    pub const UPDATE: &str = "/update";
    /// `GET /me/ns`: this host's namespaces.
    pub const ME_NS: &str = "/me/ns";
    /// `GET /me/status`: the agent's health.
    pub const ME_STATUS: &str = "/me/status";
    /// `GET /plugins/list`.
    pub const PLUGINS_LIST: &str = "/plugins/list";
    /// `GET /plugins/update?ns=&repo=`.
    pub const PLUGINS_UPDATE: &str = "/plugins/update";
    /// `GET /plugins/run?ns=&repo=&timeout=&param=`.
    pub const PLUGINS_RUN: &str = "/plugins/run";
    /// `GET /plugins/enable?ns=&repo=`.
    pub const PLUGINS_ENABLE: &str = "/plugins/enable";
    /// `GET /plugins/disable?ns=&repo=`.
    pub const PLUGINS_DISABLE: &str = "/plugins/disable";
    /// `GET /log/offset?fpath=&offset=&num=`.
    pub const LOG_OFFSET: &str = "/log/offset";
    /// `GET /metrics`: the agent's own telemetry in the Prometheus text format.
    pub const METRICS: &str = "/metrics";
    /// `GET /tap?ns=&match=&tag=k=v&rate=`: the points as they leave normalisation, live, one
    /// JSON object per line ([`super::TapLine`]).
    pub const TAP: &str = "/tap";
}

/// How the agent's 404 for a path it does not serve begins (`no endpoint /x; ...`), so clients can
/// tell a missing endpoint from an unknown plugin.
pub const NO_ENDPOINT_PREFIX: &str = "no endpoint ";

/// The body of every failed request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What was wrong, for a person to read.
    pub error: String,
}

/// Answer of `POST /post`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PostResponse {
    /// The namespace the points went to.
    pub ns: String,
    /// Metrics accepted into the pipeline.
    pub accepted: usize,
    /// Metrics refused.
    pub rejected: usize,
    /// The first few reasons for refusals, each naming the metric.
    #[serde(default)]
    pub errors: Vec<String>,
}

/// Answer of `GET /me/ns`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NamespacesResponse {
    /// This host's namespaces, sorted.
    pub namespaces: Vec<String>,
}

/// Answer of `GET /update`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UpdateResponse {
    /// Whether the registry answered and its answer was applied.
    pub ok: bool,
    /// The namespaces after the refresh.
    pub namespaces: Vec<String>,
    /// Jobs started by the reconcile.
    pub started: usize,
    /// Jobs stopped by the reconcile.
    pub stopped: usize,
    /// Jobs left running undisturbed.
    pub unchanged: usize,
    /// Jobs that kept running with a changed setting (an interval, the namespaces served).
    #[serde(default)]
    pub updated: usize,
    /// Problems found in the registry's answer (skipped items), or why it failed.
    #[serde(default)]
    pub problems: Vec<String>,
}

/// Answer of `GET /me/status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// The agent's version (`0.1.0`).
    pub version: String,
    /// Build description (git commit when known, profile).
    pub build: String,
    /// The hostname put in the `host` tag.
    pub hostname: String,
    /// Seconds since the agent started.
    pub uptime_secs: u64,
    /// Unix time the agent started.
    pub started_at: i64,
    /// Registry health.
    pub registry: RegistryStatus,
    /// Pipeline counters.
    pub pipeline: PipelineStatus,
    /// Output health.
    pub output: OutputStatus,
    /// Scheduler job counts.
    pub jobs: JobCounts,
    /// Plugin counts.
    pub plugins: PluginCounts,
    /// The agent's own log directory (what `agentctl` suggests to follow).
    #[serde(default)]
    pub log_dir: Option<String>,
}

/// Registry part of [`Status`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RegistryStatus {
    /// `file` or `http`.
    pub source: String,
    /// The file path or base URL.
    pub location: String,
    /// Unix time of the last successful refresh.
    pub last_success: Option<i64>,
    /// The last failure's reason, cleared by the next success.
    pub last_error: Option<String>,
    /// Unix time of the last failure; cleared, like `last_error`, by the next success.
    pub last_error_at: Option<i64>,
    /// Refreshes that failed since start.
    pub failures: u64,
    /// Whether the plan in force came from the on-disk cache.
    pub from_cache: bool,
    /// Namespaces in the plan in force.
    pub namespaces: usize,
    /// Collect items in the plan in force.
    pub items: usize,
    /// Items skipped from the last answer, each with its reason.
    #[serde(default)]
    pub problems: Vec<String>,
    /// Skipped entries since start, each counted once when it appears (as it is logged), not
    /// on every refresh that still has it.
    #[serde(default)]
    pub skipped_total: u64,
}

/// Pipeline part of [`Status`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PipelineStatus {
    /// Points accepted since start.
    pub accepted: u64,
    /// Metrics rejected since start.
    pub rejected: u64,
    /// Points waiting in memory to be batched.
    pub queued: u64,
}

/// Output part of [`Status`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OutputStatus {
    /// `nsq`, `influxdb`, `file` or `stdout`.
    pub kind: String,
    /// Whether the last delivery attempt succeeded.
    pub connected: bool,
    /// The endpoint in use (nsqd address, URL, directory).
    pub endpoint: Option<String>,
    /// Batches waiting in memory.
    pub queue_batches: u64,
    /// Batches waiting in the on-disk spool.
    pub spool_batches: u64,
    /// Bytes in the on-disk spool.
    pub spool_bytes: u64,
    /// Whether the spool is on disk (false: memory fallback after a disk error).
    pub spool_durable: bool,
    /// Why the spool is not on disk (full disk, unwritable directory), while it is not.
    #[serde(default)]
    pub spool_problem: Option<String>,
    /// Batches delivered since start.
    pub delivered_batches: u64,
    /// Points delivered since start.
    pub delivered_points: u64,
    /// Batches dropped since start (spool bound, refused by the output).
    pub dropped_batches: u64,
    /// Points dropped since start.
    pub dropped_points: u64,
    /// Damaged byte ranges found in the spool's files since start (each logged with its segment
    /// and offset; their lost batches and points are in the dropped figures where countable).
    #[serde(default)]
    pub spool_damaged_ranges: u64,
    /// Bytes of damaged spool records whose framing could not be read: their points (and, at the
    /// end of a segment, their number) are unknown, not in the dropped figures. 0 = those are exact.
    #[serde(default)]
    pub lost_unknown_bytes: u64,
    /// The last delivery error.
    pub last_error: Option<String>,
    /// Failed delivery attempts since start (retried or refused), e.g. nsqd error frames.
    #[serde(default)]
    pub errors: u64,
}

/// Job part of [`Status`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobCounts {
    /// All running jobs.
    pub total: usize,
    /// System collector jobs.
    pub system: usize,
    /// Port checks.
    pub ports: usize,
    /// Process checks.
    pub procs: usize,
    /// Periodic script plugins.
    pub plugins: usize,
    /// Built-in plugins.
    pub builtins: usize,
    /// Ticks skipped because the previous run was still going.
    pub skipped_ticks: u64,
    /// Jobs started since the agent started (a job left running by a reconcile is not
    /// started again).
    #[serde(default)]
    pub started_total: u64,
}

/// Plugin part of [`Status`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PluginCounts {
    /// Plugins known from the registry.
    pub total: usize,
    /// Disabled plugins.
    pub disabled: usize,
    /// Plugins running now.
    pub running: usize,
    /// How plugin runs are contained: `cgroup ...` (one cgroup per run, with its limits) or
    /// `reaper ...` (the subreaper fallback, with why).
    #[serde(default)]
    pub containment: String,
}

/// One plugin in `GET /plugins/list`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PluginInfo {
    /// Namespace.
    pub ns: String,
    /// Project name (the repository's name), or the built-in's name.
    pub project: String,
    /// `script` (a git checkout) or `builtin` (compiled in: no repository, no commit, runs on
    /// its schedule only).
    #[serde(default = "script_kind")]
    pub kind: String,
    /// Repository address; empty for a built-in.
    pub repo: String,
    /// Seconds between runs; 0 = on demand only.
    pub interval: u64,
    /// Arguments from the registry.
    #[serde(default)]
    pub parameters: String,
    /// Whether it is scheduled.
    pub enabled: bool,
    /// When a disabled plugin re-enables itself (unix time).
    pub disabled_until: Option<i64>,
    /// Whether a run is going on now.
    pub running: bool,
    /// The checked-out commit, when cloned.
    pub commit: Option<String>,
    /// Why the plugin cannot run (clone failed, ...).
    pub problem: Option<String>,
    /// The last run.
    pub last_run: Option<RunResult>,
}

fn script_kind() -> String {
    PLUGIN_SCRIPT.to_owned()
}

/// [`PluginInfo::kind`] of a script plugin.
pub const PLUGIN_SCRIPT: &str = "script";
/// [`PluginInfo::kind`] of a built-in plugin.
pub const PLUGIN_BUILTIN: &str = "builtin";

/// Answer of `GET /plugins/list`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PluginList {
    /// Every plugin, sorted by (ns, project).
    pub plugins: Vec<PluginInfo>,
}

/// The result of one plugin run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    /// Unix time the run started.
    pub at: i64,
    /// `regular` (scheduled) or `call` (on demand).
    pub kind: String,
    /// Wall time in milliseconds.
    pub duration_ms: u64,
    /// True when reason is `ok`.
    pub ok: bool,
    /// `ok`, `exit`, `timeout`, `output` or `spawn`.
    pub reason: String,
    /// Exit code, when the process exited.
    pub exit_code: Option<i32>,
    /// Captured stdout, capped.
    pub stdout: String,
    /// Captured stderr, capped.
    pub stderr: String,
    /// Whether stdout or stderr were cut at the cap.
    pub truncated: bool,
    /// A one-line explanation of a failure.
    pub error: Option<String>,
}

/// Answer of `GET /plugins/run`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunResponse {
    /// Namespace.
    pub ns: String,
    /// Project.
    pub project: String,
    /// False when the call was ignored because the plugin was already running.
    pub ran: bool,
    /// What happened, for a person.
    pub message: String,
    /// The run, when it ran.
    pub result: Option<RunResult>,
}

/// Answer of `/plugins/update`, `/plugins/enable` and `/plugins/disable`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ActionResponse {
    /// Namespace.
    pub ns: String,
    /// Project.
    pub project: String,
    /// What happened, for a person.
    pub message: String,
    /// The plugin after the action.
    pub plugin: Option<PluginInfo>,
}

/// Answer of `GET /log/offset`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LogChunk {
    /// The canonical path read.
    pub path: String,
    /// The byte offset the lines start at.
    pub offset: u64,
    /// Whole lines read, without their newline.
    pub lines: Vec<String>,
    /// Where to continue reading.
    pub next_offset: u64,
    /// The file's size now; smaller than `offset` means truncated or rotated.
    pub size: u64,
    /// True when `offset` was past the end of the file (truncated or rotated): no lines are
    /// returned and `next_offset` is 0, so a follower starts over at the new file's beginning.
    #[serde(default)]
    pub truncated: bool,
}

/// One line of the `GET /tap` stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TapLine {
    /// Points the tap lost since the last such line, because its reader was slower than the
    /// points came (`{"dropped": N}`).
    Dropped {
        /// How many.
        dropped: u64,
    },
    /// A point.
    Point(TapPoint),
}

/// A point as a tap shows it: what the agent sends, and where it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TapPoint {
    /// The namespace (the database downstream).
    pub ns: String,
    /// The measurement, after renaming.
    pub measurement: String,
    /// The tags, `host` included.
    pub tags: BTreeMap<String, String>,
    /// The value.
    pub value: TapValue,
    /// Unix time, seconds.
    pub timestamp: i64,
    /// The job or API call that produced it (`system CPU`, `plugin ns/nginx`, `POST /post`).
    pub producer: String,
    /// The point as the agent sends it: one line of line protocol, without its newline.
    pub line: String,
}

/// A tapped value; integers and floats stay apart (a float always has a `.` or an exponent in
/// the JSON, as line protocol's `i` suffix keeps them apart).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TapValue {
    /// An integer field.
    Int(i64),
    /// A float field.
    Float(f64),
    /// A boolean field.
    Bool(bool),
    /// A string field.
    Str(String),
}
