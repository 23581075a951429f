//! The agent's configuration file: its shape, defaults, path resolution and validation.
//!
//! Every key has a default, so an empty file is a working configuration (file registry, file
//! output). Unknown keys are errors that name the key; [`Config::validate`] reports every problem
//! in one pass.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::collect::system;

/// Why a configuration file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("config file {path}: cannot read it: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML of the expected shape (unknown key, wrong type, ...).
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// toml's description, which names the key, line and column.
        message: String,
    },
    /// The file parsed but some values are unusable.
    #[error("config file {path}: {n}:\n  - {list}", n = shared::count(problems.len() as u64, "problem"), list = problems.join("\n  - "))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// One line per problem, each naming the key.
        problems: Vec<String>,
    },
}

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[agent]`: identity, directories, the API.
    pub agent: AgentConfig,
    /// `[registry]`: where the plan comes from.
    pub registry: RegistryConfig,
    /// `[output]`: where points go.
    pub output: OutputConfig,
    /// `[log]`: the agent's own log.
    pub log: LogConfig,
    /// `[system]`: what the system collectors leave out.
    pub system: SystemConfig,
    /// The file this was read from (absent for the embedded defaults).
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

/// `[agent]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// Address of the HTTP API.
    pub listen: String,
    /// The `host` tag; empty = the system's hostname.
    pub hostname: String,
    /// Spool, registry cache, plugin state and pid file live here.
    pub data_dir: PathBuf,
    /// Where plugins are cloned; default `{data_dir}/plugins`.
    pub plugins_dir: Option<PathBuf>,
    /// The user plugins run as when the agent is root.
    pub plugins_user: String,
    /// Allow plugins to run as root when `plugins_user` is root (refused otherwise).
    pub plugins_allow_root: bool,
    /// Seconds after which a disabled plugin re-enables itself.
    pub plugin_disable_secs: u64,
    /// Bearer token for the API (at least 16 visible ASCII bytes, not all the same); empty =
    /// the agent generates one into `{data_dir}/auth_token` (required for a non-loopback listen
    /// address).
    pub token: String,
    /// Group that may read the generated token file (mode 0640 then, e.g. Debian's `adm`);
    /// empty = only the agent's user (0600).
    pub token_group: String,
    /// Set at start, not read from the file: the file the token in force was generated into
    /// (`None` when it is `agent.token`).
    #[serde(skip)]
    pub token_file: Option<PathBuf>,
    /// Roots `/log/offset` may read, besides the agent's own log dir.
    pub log_roots: Vec<PathBuf>,
    /// Largest request body the API accepts, in bytes.
    pub max_body_bytes: usize,
    /// Seconds between the agent's own heartbeat points (`agent.alive` and its counters).
    pub alive_secs: u64,
    /// How plugin runs are contained: `auto` (a cgroup per run where the host allows, else the
    /// subreaper fallback), `cgroup` (refuse to start without usable cgroups) or `reaper`.
    pub plugin_containment: PluginContainment,
    /// Memory limit of one plugin run, in bytes, where the cgroup allows it; 0 = no limit.
    pub plugin_memory_max_bytes: u64,
    /// Most processes (and threads) of one plugin run, where the cgroup allows it; 0 = no limit.
    pub plugin_pids_max: u64,
    /// Where the cgroup filesystems are mounted (tests point it at a fake tree).
    pub cgroup_root: PathBuf,
    /// When `/post` answers: `durable` (its points are in the spool file) or `queued` (they
    /// are in the pipeline's memory; faster, but a crash loses up to `flush_ms` of them).
    pub post_ack: PostAck,
    /// Most bytes of `/post` bodies being read and parsed at once (each counts its
    /// `Content-Length`, or `max_body_bytes` when it declares none).
    pub max_inflight_body_bytes: usize,
    /// How long a `/post` waits for room (body bytes, queue bytes) before it answers 503.
    pub post_wait_ms: u64,
    /// Most `GET /tap` streams open at once (each holds at most a few MiB of queued points);
    /// 0 turns the tap off.
    pub max_taps: usize,
}

/// `agent.plugin_containment`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PluginContainment {
    /// A cgroup per run where the host allows it, else the subreaper fallback.
    #[default]
    Auto,
    /// A cgroup per run; the agent refuses to start without usable cgroups.
    Cgroup,
    /// The subreaper fallback, even where cgroups are usable.
    Reaper,
}

/// When `POST /post` answers (`agent.post_ack`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PostAck {
    /// Once the points are written to the spool file: they survive the agent being killed.
    #[default]
    Durable,
    /// Once the points are queued in the agent's memory: faster, not durable.
    Queued,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            listen: shared::DEFAULT_ADDR.to_owned(),
            hostname: String::new(),
            data_dir: PathBuf::from("data"),
            plugins_dir: None,
            plugins_user: "nobody".to_owned(),
            plugins_allow_root: false,
            plugin_disable_secs: 24 * 3600,
            token: String::new(),
            token_group: String::new(),
            token_file: None,
            log_roots: vec![PathBuf::from("/var/log")],
            max_body_bytes: 16 * 1024 * 1024,
            alive_secs: 10,
            plugin_containment: PluginContainment::Auto,
            plugin_memory_max_bytes: 512 * 1024 * 1024,
            plugin_pids_max: 256,
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
            post_ack: PostAck::Durable,
            max_inflight_body_bytes: 32 * 1024 * 1024,
            post_wait_ms: 2000,
            max_taps: 4,
        }
    }
}

/// Where the registry answer comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RegistrySource {
    /// A TOML or JSON file (the embedded default).
    #[default]
    File,
    /// A lodastack registry server.
    Http,
}

impl fmt::Display for RegistrySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RegistrySource::File => "file",
            RegistrySource::Http => "http",
        })
    }
}

/// `[registry]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistryConfig {
    /// `file` or `http`.
    pub source: RegistrySource,
    /// The registry file, for `source = "file"`.
    pub path: PathBuf,
    /// The registry's base URL, for `source = "http"`.
    pub url: String,
    /// Seconds between refreshes.
    pub refresh_secs: u64,
    /// Seconds an HTTP registry call may take.
    pub timeout_secs: u64,
    /// The window over which a fleet's periodic HTTP registry calls are spread, in seconds:
    /// each host calls at its own point of it (from its hostname) plus a random part; 0 = the
    /// whole period of the call.
    pub splay_secs: u64,
    /// Seconds between agent reports to the HTTP registry (`POST /api/v1/agent/report`);
    /// 0 = no report.
    pub report_secs: u64,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            source: RegistrySource::File,
            path: PathBuf::from("registry.toml"),
            url: String::new(),
            refresh_secs: 60,
            timeout_secs: 10,
            splay_secs: 0,
            report_secs: 600,
        }
    }
}

/// Which output points are shipped to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OutputKind {
    /// NSQ over TCP.
    Nsq,
    /// InfluxDB 1.x HTTP `/write`.
    Influxdb,
    /// Line-protocol files, one per namespace (the embedded default).
    #[default]
    File,
    /// Standard output, for debugging.
    Stdout,
}

impl fmt::Display for OutputKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OutputKind::Nsq => "nsq",
            OutputKind::Influxdb => "influxdb",
            OutputKind::File => "file",
            OutputKind::Stdout => "stdout",
        })
    }
}

/// How a batch is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// InfluxDB line protocol, precision seconds.
    #[default]
    Line,
    /// The older JSON shape (`{"database", "points": [...]}`).
    Json,
}

/// `[output]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutputConfig {
    /// `nsq`, `influxdb`, `file` or `stdout`.
    pub kind: OutputKind,
    /// nsqd TCP addresses, tried in order.
    pub nsqd: Vec<String>,
    /// NSQ topic template; `{ns}` is replaced by the namespace.
    pub topic: String,
    /// `line` or `json`.
    pub format: Format,
    /// InfluxDB base URL, for `kind = "influxdb"`.
    pub url: String,
    /// Directory of the file output.
    pub path: Option<PathBuf>,
    /// Size at which a file-output file is rotated, in bytes.
    pub file_max_bytes: u64,
    /// Rotated files kept per namespace.
    pub file_keep: usize,
    /// Points per batch.
    pub batch_size: usize,
    /// Milliseconds after which a partial batch is flushed.
    pub flush_ms: u64,
    /// Bound of the on-disk spool, in bytes.
    pub spool_max_bytes: u64,
    /// Largest message handed to the output, in bytes (nsqd's default `--max-msg-size` is 1 MiB).
    pub max_message_bytes: usize,
    /// Seconds to wait for delivery at shutdown before leaving the rest in the spool.
    pub drain_secs: u64,
    /// Bound of the queue between producers and the batcher, in bytes of points in memory.
    pub queue_max_bytes: usize,
    /// Heartbeat interval asked of nsqd in IDENTIFY, in milliseconds (nsqd allows 1000..=60000).
    pub nsq_heartbeat_ms: u64,
    /// Timeout of each nsqd connect, write and answer, in milliseconds.
    pub nsq_timeout_ms: u64,
    /// While publishing to a fallback nsqd, seconds between attempts to return to the first.
    pub nsq_primary_retry_secs: u64,
    /// Ask nsqd for TLS (`tls_v1` in IDENTIFY); a connection nsqd does not upgrade is refused.
    pub nsq_tls: bool,
    /// PEM file of the CAs trusted for nsqd's certificate; default: the system's roots.
    pub nsq_tls_ca: Option<PathBuf>,
    /// PEM client certificate (chain) offered to nsqd, with `nsq_tls_key`.
    pub nsq_tls_cert: Option<PathBuf>,
    /// PEM private key of `nsq_tls_cert`.
    pub nsq_tls_key: Option<PathBuf>,
    /// Name nsqd's certificate must carry; empty: the host of each `nsqd` address.
    pub nsq_tls_server_name: String,
    /// Secret sent with `AUTH` when nsqd answers IDENTIFY with `auth_required`.
    pub nsq_auth_secret: String,
    /// Compression asked of nsqd: `none`, `snappy` or `deflate`.
    pub nsq_compression: NsqCompression,
    /// Deflate level asked of nsqd, 1 to 9 (nsqd caps it at its `--max-deflate-level`).
    pub nsq_deflate_level: u32,
}

/// Compression of the NSQ connection, negotiated in IDENTIFY.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum NsqCompression {
    /// Bytes go as they are.
    #[default]
    None,
    /// The snappy framed stream format.
    Snappy,
    /// Raw deflate.
    Deflate,
}

impl Default for OutputConfig {
    fn default() -> Self {
        OutputConfig {
            kind: OutputKind::File,
            nsqd: vec!["127.0.0.1:4150".to_owned()],
            topic: "{ns}".to_owned(),
            format: Format::Line,
            url: String::new(),
            path: None,
            file_max_bytes: 64 * 1024 * 1024,
            file_keep: 5,
            batch_size: 1000,
            flush_ms: 1000,
            spool_max_bytes: 1 << 30,
            max_message_bytes: 1024 * 1024,
            drain_secs: 10,
            queue_max_bytes: crate::pipeline::DEFAULT_QUEUE_BYTES,
            nsq_heartbeat_ms: 30_000,
            nsq_timeout_ms: 5_000,
            nsq_primary_retry_secs: 60,
            nsq_tls: false,
            nsq_tls_ca: None,
            nsq_tls_cert: None,
            nsq_tls_key: None,
            nsq_tls_server_name: String::new(),
            nsq_auth_secret: String::new(),
            nsq_compression: NsqCompression::None,
            nsq_deflate_level: 6,
        }
    }
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Directory of the agent's log file; default `{data_dir}/log`.
    pub dir: Option<PathBuf>,
    /// `error`, `warn`, `info`, `debug`, `trace`, or `target=level` directives (`agent=debug,info`).
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            dir: None,
            level: "info".to_owned(),
        }
    }
}

/// `[system]`: devices the system collectors leave out. Each entry is a name or a prefix ending
/// in `*`; an empty list leaves nothing out.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SystemConfig {
    /// Network interfaces left out (NET).
    pub skip_interfaces: Vec<String>,
    /// Block devices left out (DISK).
    pub skip_disks: Vec<String>,
    /// Filesystem types left out (FS).
    pub skip_fstypes: Vec<String>,
}

impl Default for SystemConfig {
    fn default() -> Self {
        SystemConfig {
            skip_interfaces: system::DEFAULT_SKIP_INTERFACES.map(String::from).to_vec(),
            skip_disks: system::DEFAULT_SKIP_DISKS.map(String::from).to_vec(),
            skip_fstypes: system::DEFAULT_SKIP_FSTYPES.map(String::from).to_vec(),
        }
    }
}

impl SystemConfig {
    /// The collectors' options for these lists.
    pub fn options(&self) -> system::SystemOptions {
        system::SystemOptions::with_skips(
            &self.skip_interfaces,
            &self.skip_disks,
            &self.skip_fstypes,
        )
    }
}

impl Config {
    /// Reads, parses, resolves and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config = Config::parse(&text, path)?;
        let base = path
            .canonicalize()
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .unwrap_or_else(|| PathBuf::from("."));
        config.resolve_paths(&base);
        config.source = Some(path.to_owned());
        config.validate()?;
        Ok(config)
    }

    /// Parses TOML text; `path` only names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })
    }

    /// Makes every relative path absolute against `base` (the config file's folder) and fills
    /// the defaults that derive from `data_dir`.
    pub fn resolve_paths(&mut self, base: &Path) {
        let abs = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };
        self.agent.data_dir = abs(&self.agent.data_dir);
        let data = self.agent.data_dir.clone();
        self.agent.plugins_dir = Some(
            self.agent
                .plugins_dir
                .as_deref()
                .map_or_else(|| data.join("plugins"), abs),
        );
        self.agent.log_roots = self.agent.log_roots.iter().map(|p| abs(p)).collect();
        self.registry.path = abs(&self.registry.path);
        self.output.path = Some(
            self.output
                .path
                .as_deref()
                .map_or_else(|| data.join("out"), abs),
        );
        self.log.dir = Some(
            self.log
                .dir
                .as_deref()
                .map_or_else(|| data.join("log"), abs),
        );
        for p in [
            &mut self.output.nsq_tls_ca,
            &mut self.output.nsq_tls_cert,
            &mut self.output.nsq_tls_key,
        ] {
            *p = p.as_deref().map(abs);
        }
    }

    /// Checks every value and reports all problems at once, each naming its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        let mut bad = |key: &str, msg: String| problems.push(format!("{key}: {msg}"));

        match self.agent.listen.parse::<SocketAddr>() {
            Ok(addr) => {
                if !addr.ip().is_loopback() && self.agent.token.is_empty() {
                    bad(
                        "agent.listen",
                        format!(
                            "{addr} is not a loopback address; set agent.token so the API is not open to the network"
                        ),
                    );
                }
            }
            Err(_) => bad(
                "agent.listen",
                format!(
                    "{:?} is not an address like \"127.0.0.1:1232\"",
                    self.agent.listen
                ),
            ),
        }
        if !self.agent.token.is_empty() {
            if let Err(e) = check_token(&self.agent.token) {
                bad("agent.token", e);
            }
        }
        if !self.agent.token_group.is_empty()
            && !matches!(
                nix::unistd::Group::from_name(&self.agent.token_group),
                Ok(Some(_))
            )
        {
            bad(
                "agent.token_group",
                format!("no group named {:?} on this host", self.agent.token_group),
            );
        }
        if self.agent.hostname.chars().any(|c| c.is_control()) {
            bad(
                "agent.hostname",
                "must not contain control characters".into(),
            );
        }
        if self.agent.plugins_user.trim().is_empty() {
            bad("agent.plugins_user", "must name a user".into());
        }
        if self.agent.plugin_disable_secs == 0 {
            bad("agent.plugin_disable_secs", "must be at least 1".into());
        }
        if self.agent.max_body_bytes < 1024 {
            bad("agent.max_body_bytes", "must be at least 1024".into());
        }
        if self.agent.max_inflight_body_bytes < self.agent.max_body_bytes {
            bad(
                "agent.max_inflight_body_bytes",
                format!(
                    "must be at least agent.max_body_bytes ({}), or a largest body could never be read",
                    self.agent.max_body_bytes
                ),
            );
        }
        if self.agent.max_inflight_body_bytes > u32::MAX as usize {
            bad(
                "agent.max_inflight_body_bytes",
                format!("must be at most {}", u32::MAX),
            );
        }
        if self.agent.max_taps > 64 {
            bad(
                "agent.max_taps",
                "must be at most 64 (each open tap may hold a few MiB)".into(),
            );
        }
        if self.agent.post_wait_ms > 60_000 {
            bad("agent.post_wait_ms", "must be at most 60000".into());
        }
        if !(1..=3600).contains(&self.agent.alive_secs) {
            bad("agent.alive_secs", "must be between 1 and 3600".into());
        }
        let memory = self.agent.plugin_memory_max_bytes;
        if memory != 0 && memory < 4 * 1024 * 1024 {
            bad(
                "agent.plugin_memory_max_bytes",
                format!("{memory} is too small for bash to start; use 0 (no limit) or at least 4194304 (4 MiB)"),
            );
        }
        if !self.agent.cgroup_root.is_absolute() {
            bad(
                "agent.cgroup_root",
                format!(
                    "{} is not an absolute path",
                    self.agent.cgroup_root.display()
                ),
            );
        }
        let pids = self.agent.plugin_pids_max;
        if pids != 0 && pids < 8 {
            bad(
                "agent.plugin_pids_max",
                format!(
                    "{pids} leaves no room for a shell pipeline; use 0 (no limit) or at least 8"
                ),
            );
        }

        match self.registry.source {
            RegistrySource::Http => {
                if !(self.registry.url.starts_with("http://")
                    || self.registry.url.starts_with("https://"))
                {
                    bad(
                        "registry.url",
                        format!(
                            "{:?} is not an http:// or https:// URL (needed by source = \"http\")",
                            self.registry.url
                        ),
                    );
                }
            }
            RegistrySource::File => {}
        }
        if self.registry.refresh_secs == 0 {
            bad("registry.refresh_secs", "must be at least 1".into());
        }
        if self.registry.timeout_secs == 0 {
            bad("registry.timeout_secs", "must be at least 1".into());
        }

        for (key, patterns) in [
            ("system.skip_interfaces", &self.system.skip_interfaces),
            ("system.skip_disks", &self.system.skip_disks),
            ("system.skip_fstypes", &self.system.skip_fstypes),
        ] {
            for p in patterns {
                if let Err(e) = system::check_pattern(p) {
                    bad(key, e);
                }
            }
        }

        let out = &self.output;
        if out.kind == OutputKind::Nsq {
            if out.nsqd.is_empty() {
                bad(
                    "output.nsqd",
                    "needs at least one nsqd address when kind = \"nsq\"".into(),
                );
            }
            for a in &out.nsqd {
                if split_host_port(a).is_none() {
                    bad("output.nsqd", format!("{a:?} is not a host:port address"));
                }
            }
        }
        if let Err(e) = check_topic_template(&out.topic) {
            bad("output.topic", e);
        }
        if !(1000..=60_000).contains(&out.nsq_heartbeat_ms) {
            bad(
                "output.nsq_heartbeat_ms",
                "must be between 1000 and 60000 (nsqd's --max-heartbeat-interval)".into(),
            );
        }
        if !(100..=600_000).contains(&out.nsq_timeout_ms) {
            bad(
                "output.nsq_timeout_ms",
                "must be between 100 and 600000".into(),
            );
        }
        if out.nsq_primary_retry_secs == 0 {
            bad("output.nsq_primary_retry_secs", "must be at least 1".into());
        }
        if !out.nsq_tls {
            for (key, set) in [
                ("output.nsq_tls_ca", out.nsq_tls_ca.is_some()),
                ("output.nsq_tls_cert", out.nsq_tls_cert.is_some()),
                ("output.nsq_tls_key", out.nsq_tls_key.is_some()),
                (
                    "output.nsq_tls_server_name",
                    !out.nsq_tls_server_name.is_empty(),
                ),
            ] {
                if set {
                    bad(
                        key,
                        "is set but output.nsq_tls is false; set nsq_tls = true to use TLS".into(),
                    );
                }
            }
        }
        if out.nsq_tls_cert.is_some() != out.nsq_tls_key.is_some() {
            bad(
                "output.nsq_tls_cert",
                "output.nsq_tls_cert and output.nsq_tls_key must be set together".into(),
            );
        }
        if !(1..=9).contains(&out.nsq_deflate_level) {
            bad("output.nsq_deflate_level", "must be between 1 and 9".into());
        }
        if out.kind == OutputKind::Influxdb
            && !(out.url.starts_with("http://") || out.url.starts_with("https://"))
        {
            bad(
                "output.url",
                format!(
                    "{:?} is not an http:// or https:// URL (needed by kind = \"influxdb\")",
                    out.url
                ),
            );
        }
        if out.kind == OutputKind::Influxdb && out.format == Format::Json {
            bad(
                "output.format",
                "\"json\" cannot be used with kind = \"influxdb\": InfluxDB's /write takes line protocol; use format = \"line\"".into(),
            );
        }
        if !(1..=1_000_000).contains(&out.batch_size) {
            bad("output.batch_size", "must be between 1 and 1000000".into());
        }
        if !((1 << 20)..=(1 << 30)).contains(&out.queue_max_bytes) {
            bad(
                "output.queue_max_bytes",
                "must be between 1048576 (1 MiB) and 1073741824 (1 GiB)".into(),
            );
        }
        if !(1..=3_600_000).contains(&out.flush_ms) {
            bad("output.flush_ms", "must be between 1 and 3600000".into());
        }
        if out.spool_max_bytes < 1024 * 1024 {
            bad(
                "output.spool_max_bytes",
                "must be at least 1048576 (1 MiB)".into(),
            );
        }
        if out.file_max_bytes < 4096 {
            bad("output.file_max_bytes", "must be at least 4096".into());
        }
        if !(4096..=5 * 1024 * 1024).contains(&out.max_message_bytes) {
            bad(
                "output.max_message_bytes",
                "must be between 4096 and 5242880".into(),
            );
        }

        if crate::logging::filter(&self.log.level).is_err() {
            bad(
                "log.level",
                format!(
                    "{:?} is not a level (error, warn, info, debug, trace) or target=level directives",
                    self.log.level
                ),
            );
        }

        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid {
                path: self.source.clone().unwrap_or_else(|| "<defaults>".into()),
                problems,
            })
        }
    }

    /// The directory plugins are cloned into.
    pub fn plugins_dir(&self) -> PathBuf {
        self.agent
            .plugins_dir
            .clone()
            .unwrap_or_else(|| self.agent.data_dir.join("plugins"))
    }

    /// The directory of the agent's own log.
    pub fn log_dir(&self) -> PathBuf {
        self.log
            .dir
            .clone()
            .unwrap_or_else(|| self.agent.data_dir.join("log"))
    }

    /// The directory of the file output.
    pub fn output_dir(&self) -> PathBuf {
        self.output
            .path
            .clone()
            .unwrap_or_else(|| self.agent.data_dir.join("out"))
    }

    /// The pid file of an agent running with this configuration.
    pub fn pid_file(&self) -> PathBuf {
        self.agent.data_dir.join("agent.pid")
    }
}

/// Splits `host:port`, accepting `[v6]:port`.
pub fn split_host_port(addr: &str) -> Option<(&str, u16)> {
    let (host, port) = addr.rsplit_once(':')?;
    let port = port.parse().ok()?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (!host.is_empty()).then_some((host, port))
}

/// Shortest `agent.token` accepted, in bytes.
pub const MIN_TOKEN_BYTES: usize = 16;
/// Longest `agent.token` accepted, in bytes.
pub const MAX_TOKEN_BYTES: usize = 4096;

/// A configured token must be hard to guess and sendable as it is in an `Authorization`
/// header: 16 to 4096 visible ASCII bytes (no spaces), not all the same byte.
fn check_token(token: &str) -> Result<(), String> {
    let n = token.len();
    if n < MIN_TOKEN_BYTES {
        return Err(format!(
            "is {n} byte(s) long; a token must be at least {MIN_TOKEN_BYTES} bytes (e.g. `openssl rand -hex 32`)"
        ));
    }
    if n > MAX_TOKEN_BYTES {
        return Err(format!(
            "is {n} bytes long; a token may be at most {MAX_TOKEN_BYTES} bytes"
        ));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(
            "must be visible ASCII characters only (no spaces or control characters), so it can be sent as it is in an Authorization header".into(),
        );
    }
    if token.bytes().all(|b| b == token.as_bytes()[0]) {
        return Err(format!(
            "all its {n} bytes are the same; use a random token (e.g. `openssl rand -hex 32`)"
        ));
    }
    Ok(())
}

/// A topic template may hold `{ns}` and NSQ topic characters only.
fn check_topic_template(template: &str) -> Result<(), String> {
    let literal = template.replace("{ns}", "");
    if let Some(c) = literal
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "{template:?} has {c:?}; a topic may only hold [.a-zA-Z0-9_-] besides {{ns}}"
        ));
    }
    if !template.contains("{ns}") {
        return Err(format!(
            "{template:?} does not contain {{ns}}; every namespace would share one topic"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        let mut c = Config::parse(text, Path::new("/etc/agent.toml"))?;
        c.resolve_paths(Path::new("/etc/agent"));
        c.source = Some("/etc/agent.toml".into());
        c.validate()?;
        Ok(c)
    }

    #[test]
    fn empty_file_is_the_embedded_default() {
        let c = parse("").expect("defaults are valid");
        assert_eq!(c.agent.listen, "127.0.0.1:1232");
        assert_eq!(c.output.kind, OutputKind::File);
        assert_eq!(c.registry.source, RegistrySource::File);
        assert_eq!(c.agent.data_dir, Path::new("/etc/agent/data"));
        assert_eq!(c.plugins_dir(), Path::new("/etc/agent/data/plugins"));
        assert_eq!(c.registry.path, Path::new("/etc/agent/registry.toml"));
        assert_eq!(c.output_dir(), Path::new("/etc/agent/data/out"));
    }

    #[test]
    fn plugin_limits_default_to_stopping_a_fork_bomb_and_are_checked() {
        let c = parse("").expect("defaults");
        assert_eq!(c.agent.plugin_pids_max, 256);
        assert_eq!(c.agent.plugin_memory_max_bytes, 512 * 1024 * 1024);
        assert_eq!(c.agent.plugin_containment, PluginContainment::Auto);
        let c = parse(
            "[agent]\nplugin_pids_max = 0\nplugin_memory_max_bytes = 0\nplugin_containment = \"reaper\"\n",
        )
        .expect("0 = no limit");
        assert_eq!(c.agent.plugin_containment, PluginContainment::Reaper);
        let err = parse(
            "[agent]\nplugin_pids_max = 3\nplugin_memory_max_bytes = 1000\ncgroup_root = \"sys\"\n",
        )
        .expect_err("too small")
        .to_string();
        for key in [
            "agent.plugin_pids_max",
            "agent.plugin_memory_max_bytes",
            "agent.cgroup_root",
        ] {
            assert!(err.contains(key), "{err}");
        }
        let err = parse("[agent]\nplugin_containment = \"jail\"\n")
            .expect_err("unknown mode")
            .to_string();
        assert!(err.contains("plugin_containment"), "{err}");
    }

    #[test]
    fn unknown_key_names_the_key_and_the_file() {
        let err = parse("[output]\nkindd = \"nsq\"\n").expect_err("unknown key");
        let msg = err.to_string();
        assert!(msg.contains("/etc/agent.toml"), "{msg}");
        assert!(msg.contains("kindd"), "{msg}");
    }

    #[test]
    fn system_skip_lists_default_replace_and_are_checked() {
        let c = parse("").expect("defaults");
        let o = c.system.options();
        assert!(system::name_matches(&o.skip_interfaces, "lo"));
        assert!(system::name_matches(&o.skip_interfaces, "veth1a2b"));
        assert!(!system::name_matches(&o.skip_interfaces, "eth0"));
        assert!(system::name_matches(&o.skip_disks, "loop3"));
        assert!(system::name_matches(&o.skip_fstypes, "tmpfs"));

        let c = parse("[system]\nskip_interfaces = [\"cali*\", \"tun0\"]\nskip_fstypes = []\n")
            .expect("valid lists");
        let o = c.system.options();
        assert!(
            !system::name_matches(&o.skip_interfaces, "lo"),
            "replaced, not added"
        );
        assert!(system::name_matches(&o.skip_interfaces, "cali12"));
        assert!(system::name_matches(&o.skip_interfaces, "tun0"));
        assert!(
            !system::name_matches(&o.skip_interfaces, "tun01"),
            "a name is whole"
        );
        assert!(!system::name_matches(&o.skip_fstypes, "tmpfs"));
        assert!(
            system::name_matches(&o.skip_disks, "ram0"),
            "untouched list keeps its default"
        );

        let ConfigError::Invalid { problems, .. } =
            parse("[system]\nskip_interfaces = [\"\", \"*eth\"]\nskip_disks = [\"sd a\"]\n")
                .expect_err("bad patterns")
        else {
            panic!("expected Invalid");
        };
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].starts_with("system.skip_interfaces: an empty pattern"));
        assert!(
            problems[1].contains("'*' may only end a pattern"),
            "{problems:?}"
        );
        assert!(
            problems[2].starts_with("system.skip_disks: \"sd a\""),
            "{problems:?}"
        );
    }

    #[test]
    fn bad_enum_value_is_named() {
        let msg = parse("[output]\nkind = \"kafka\"\n")
            .expect_err("bad kind")
            .to_string();
        assert!(msg.contains("kafka") && msg.contains("nsq"), "{msg}");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let text = r#"
            [agent]
            listen = "0.0.0.0:1232"
            [registry]
            source = "http"
            [output]
            kind = "nsq"
            nsqd = ["nohost"]
            batch_size = 0
            topic = "metrics"
        "#;
        let ConfigError::Invalid { problems, path } = parse(text).expect_err("invalid") else {
            panic!("expected Invalid");
        };
        assert_eq!(path, Path::new("/etc/agent.toml"));
        let keys: Vec<&str> = problems
            .iter()
            .map(|p| p.split(':').next().unwrap_or(""))
            .collect();
        assert_eq!(
            keys,
            [
                "agent.listen",
                "registry.url",
                "output.nsqd",
                "output.topic",
                "output.batch_size"
            ]
        );
    }

    #[test]
    fn nsq_keys_are_bounded_by_what_nsqd_allows() {
        let text =
            "[output]\nnsq_heartbeat_ms = 500\nnsq_timeout_ms = 0\nnsq_primary_retry_secs = 0\n";
        let ConfigError::Invalid { problems, .. } = parse(text).expect_err("invalid") else {
            panic!("expected Invalid");
        };
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(
            problems[0].starts_with("output.nsq_heartbeat_ms: "),
            "{problems:?}"
        );
        assert!(
            problems[1].starts_with("output.nsq_timeout_ms: "),
            "{problems:?}"
        );
        assert!(
            problems[2].starts_with("output.nsq_primary_retry_secs: "),
            "{problems:?}"
        );
        let c = parse("[output]\nkind = \"nsq\"\n").expect("defaults are valid");
        assert_eq!(c.output.nsq_heartbeat_ms, 30_000);
    }

    #[test]
    fn nsq_tls_keys_need_nsq_tls_and_come_in_pairs() {
        let text =
            "[output]\nnsq_tls_ca = \"ca.pem\"\nnsq_tls_cert = \"a.pem\"\nnsq_deflate_level = 0\n";
        let ConfigError::Invalid { problems, .. } = parse(text).expect_err("invalid") else {
            panic!("expected Invalid");
        };
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(problems[0].starts_with("output.nsq_tls_ca: is set but output.nsq_tls is false"));
        assert!(problems[1].starts_with("output.nsq_tls_cert: is set but"));
        assert!(problems[2].contains("must be set together"), "{problems:?}");
        assert!(problems[3].starts_with("output.nsq_deflate_level: "));
        let c = parse(
            "[output]\nkind = \"nsq\"\nnsq_tls = true\nnsq_tls_ca = \"ca.pem\"\nnsq_compression = \"snappy\"\n",
        )
        .expect("valid");
        assert_eq!(
            c.output.nsq_tls_ca.as_deref(),
            Some(Path::new("/etc/agent/ca.pem"))
        );
        assert_eq!(c.output.nsq_compression, NsqCompression::Snappy);
        let err = parse("[output]\nnsq_compression = \"lz4\"\n").expect_err("unknown");
        assert!(err.to_string().contains("lz4"), "{err}");
    }

    #[test]
    fn json_is_refused_for_the_influxdb_output() {
        let msg = parse(
            "[output]\nkind = \"influxdb\"\nurl = \"http://127.0.0.1:8086\"\nformat = \"json\"\n",
        )
        .expect_err("json + influxdb")
        .to_string();
        assert!(
            msg.contains("output.format") && msg.contains("line protocol"),
            "{msg}"
        );
        parse("[output]\nkind = \"influxdb\"\nurl = \"http://127.0.0.1:8086\"\n")
            .expect("line is fine");
    }

    #[test]
    fn non_loopback_listen_is_fine_with_a_token() {
        parse("[agent]\nlisten = \"0.0.0.0:1232\"\ntoken = \"s3cret-0123456789ab\"\n")
            .expect("valid");
    }

    #[test]
    fn weak_tokens_are_refused_naming_the_key() {
        let fifteen = "0123456789abcde";
        let same = "z".repeat(16);
        for (token, why) in [
            (" ", "at least 16"),
            ("a", "at least 16"),
            (fifteen, "at least 16"),
            (same.as_str(), "are the same"),
            ("0123456789 abcdef", "visible ASCII"),
            ("0123456789\tabcdef", "visible ASCII"),
        ] {
            let text = format!("[agent]\nlisten = \"0.0.0.0:1232\"\ntoken = {token:?}\n");
            let msg = parse(&text).expect_err(token).to_string();
            assert!(
                msg.contains("agent.token: ") && msg.contains(why),
                "{token:?}: {msg}"
            );
        }
        parse("[agent]\ntoken = \"0123456789abcdef\"\n").expect("16 mixed bytes are fine");
    }

    #[test]
    fn an_unknown_token_group_is_refused() {
        let msg = parse("[agent]\ntoken_group = \"no-such-group-e2e\"\n")
            .expect_err("unknown group")
            .to_string();
        assert!(msg.contains("agent.token_group"), "{msg}");
        parse("[agent]\ntoken_group = \"root\"\n").expect("root exists");
    }

    #[test]
    fn host_port_split() {
        assert_eq!(split_host_port("127.0.0.1:4150"), Some(("127.0.0.1", 4150)));
        assert_eq!(split_host_port("[::1]:4150"), Some(("::1", 4150)));
        assert_eq!(split_host_port("nohost"), None);
        assert_eq!(split_host_port(":4150"), None);
    }
}
