//! Support for the end-to-end tests: starting the real binaries and the peers they talk to.

pub mod githttp;
pub mod gitrepo;
pub mod influxdb;
pub mod nsq_peer;
pub mod registry_server;

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// The path of a workspace binary (`agent`, `agentctl`), built once per test run so the tests
/// never exercise a stale binary.
pub fn bin(name: &str) -> PathBuf {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-p", "agent", "-p", "agentctl", "--bins"]);
        if !cfg!(debug_assertions) {
            cmd.arg("--release");
        }
        match cmd.status() {
            Ok(s) if s.success() => Ok(()),
            Ok(s) => Err(format!("cargo build of the binaries failed: {s}")),
            Err(e) => Err(format!("cannot run cargo to build the binaries: {e}")),
        }
    });
    if let Err(e) = built {
        panic!("{e}");
    }
    let mut dir = std::env::current_exe().expect("test executable path");
    dir.pop(); // the test binary
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir.join(name)
}

use std::collections::HashMap;
use std::io::Read;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The token file of every agent the harness started, by API address (`127.0.0.1:port`), so
/// [`agentctl`] can hand an agent's token to the console without each test passing it.
fn token_files() -> &'static Mutex<HashMap<String, PathBuf>> {
    static FILES: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    FILES.get_or_init(Mutex::default)
}

/// The token file of the harness agent listening at `addr` (`host:port` or an `http://` URL),
/// when it made one (an agent whose config sets `agent.token` has none).
pub fn token_file_for(addr: &str) -> Option<PathBuf> {
    let host_port = addr
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap_or_default();
    let file = token_files().lock().ok()?.get(host_port).cloned()?;
    file.exists().then_some(file)
}

/// The bearer token an agent generated into `data_dir` (`auth_token`), if it did.
pub fn read_token(data_dir: &Path) -> Option<String> {
    std::fs::read_to_string(data_dir.join("auth_token"))
        .ok()
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
}

/// `agentctl --addr ADDR` with none of the caller's `AGENTCTL_*` variables, and, when `addr` is
/// a harness agent's, its token file in `AGENTCTL_TOKEN_FILE` (as an operator would pass it).
pub fn agentctl(addr: &str) -> Command {
    let mut cmd = Command::new(bin("agentctl"));
    cmd.arg("--addr").arg(addr);
    for key in AGENTCTL_VARS {
        cmd.env_remove(key);
    }
    if let Some(file) = token_file_for(addr) {
        cmd.env("AGENTCTL_TOKEN_FILE", file);
    }
    cmd
}

/// The environment variables agentctl reads.
pub const AGENTCTL_VARS: [&str; 3] = ["AGENTCTL_ADDR", "AGENTCTL_TOKEN", "AGENTCTL_TOKEN_FILE"];

/// A command running the `agent` binary with its own runtime directory, so the "last agent this
/// user started" pointer the tests' agents write never replaces an operator's (which `agent stop`
/// without `-f` reads).
pub fn agent_cmd() -> Command {
    static RUNTIME: OnceLock<PathBuf> = OnceLock::new();
    let dir = RUNTIME.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("agent-e2e-runtime-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("test runtime dir");
        d
    });
    let mut cmd = Command::new(bin("agent"));
    cmd.env("XDG_RUNTIME_DIR", dir);
    cmd
}

/// A file registry with the given namespaces and the system families turned off (interval 0),
/// so the agent's heartbeat is their only data: tests can then count points and check order.
pub fn quiet_namespaces(names: &[&str]) -> String {
    const QUIET: &str = "intervals = { CPU = 0, MEM = 0, DISK = 0, NET = 0, FS = 0, KERNEL = 0, \
        TIME = 0, NETSTAT = 0, SOCKET = 0, PRESSURE = 0, VMSTAT = 0, CONNTRACK = 0, SOFTNET = 0, \
        HWMON = 0, RAID = 0, COREDUMP = 0 }";
    names
        .iter()
        .map(|n| format!("[[namespace]]\nname = \"{n}\"\n{QUIET}\n"))
        .collect()
}

/// A free TCP port on 127.0.0.1 (bound then released; good enough for tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Polls `check` every 20 ms until it is true or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// How to start an agent for a test.
#[derive(Debug, Clone, Default)]
pub struct AgentBuilder {
    port: Option<u16>,
    agent_keys: String,
    sections: String,
    registry: String,
    env: Vec<(String, String)>,
    env_removed: Vec<String>,
    shell: String,
}

impl AgentBuilder {
    /// An agent with file registry and file output in a fresh temporary directory.
    pub fn new() -> Self {
        Self::default()
    }

    /// Listen on this port instead of a fresh free one (to restart an agent where a client
    /// expects it).
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Extra keys for the `[agent]` table (`listen` and `data_dir` are set by the harness).
    pub fn agent_keys(mut self, keys: &str) -> Self {
        self.agent_keys.push_str(keys);
        self.agent_keys.push('\n');
        self
    }

    /// Other tables of the config file (`[output]`, `[registry]`, `[log]`), verbatim.
    pub fn config(mut self, toml: &str) -> Self {
        self.sections.push_str(toml);
        self.sections.push('\n');
        self
    }

    /// An environment variable for the agent process (on top of the test's own environment).
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// A variable of the test's own environment the agent must not inherit.
    pub fn env_remove(mut self, key: &str) -> Self {
        self.env_removed.push(key.to_owned());
        self
    }

    /// Shell commands run in the agent's process before it execs the agent (`umask 000`,
    /// `exec 7<file`): what the agent inherits from the shell that starts it.
    pub fn shell(mut self, commands: &str) -> Self {
        self.shell.push_str(commands);
        self.shell.push('\n');
        self
    }

    /// The registry file (`registry.toml` beside the config) contents.
    pub fn registry(mut self, toml: &str) -> Self {
        self.registry = toml.to_owned();
        self
    }

    /// Writes the files into a new temporary directory and starts the agent in the foreground.
    pub fn start(self) -> Agent {
        let dir = tempfile::tempdir().expect("tempdir");
        self.start_in(dir)
    }

    /// Like [`AgentBuilder::start`], in a given directory (to restart an agent on the same data).
    pub fn start_in(self, dir: tempfile::TempDir) -> Agent {
        let port = self.port.unwrap_or_else(free_port);
        let listen = format!("127.0.0.1:{port}");
        let config = format!(
            "[agent]\nlisten = \"{listen}\"\ndata_dir = \"data\"\n{}\n{}",
            self.agent_keys, self.sections
        );
        let config_path = dir.path().join("agent.toml");
        std::fs::write(&config_path, config).expect("write config");
        let registry_path = dir.path().join("registry.toml");
        if !registry_path.exists() || !self.registry.is_empty() {
            std::fs::write(&registry_path, &self.registry).expect("write registry");
        }
        let mut agent = Agent {
            dir,
            config_path,
            addr: listen,
            child: None,
            builder: self,
        };
        agent.spawn();
        agent
    }
}

/// A running agent process, killed on drop.
pub struct Agent {
    /// The temporary directory holding the config, registry and data dir.
    pub dir: tempfile::TempDir,
    /// The config file.
    pub config_path: std::path::PathBuf,
    /// The API address (`127.0.0.1:port`).
    pub addr: String,
    child: Option<Child>,
    builder: AgentBuilder,
}

impl Agent {
    fn spawn(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("stderr.log")).expect("stderr log");
        let mut cmd = agent_cmd();
        if !self.builder.shell.is_empty() {
            // The same process: sh runs the commands, then execs the agent in its place.
            let mut sh = Command::new("sh");
            sh.arg("-c")
                .arg(format!("{}exec \"$0\" \"$@\"", self.builder.shell))
                .arg(cmd.get_program())
                .envs(cmd.get_envs().filter_map(|(k, v)| Some((k, v?))));
            cmd = sh;
        }
        for key in &self.builder.env_removed {
            cmd.env_remove(key);
        }
        let child = cmd
            .args(["start", "--foreground", "-f"])
            .arg(&self.config_path)
            .envs(self.builder.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start agent");
        self.child = Some(child);
        if let Ok(mut files) = token_files().lock() {
            files.insert(self.addr.clone(), self.data_dir().join("auth_token"));
        }
        let url = format!("http://{}/me/status", self.addr);
        let up = wait_until(Duration::from_secs(30), || {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    panic!(
                        "agent exited during start-up ({status}):\n{}",
                        self.stderr()
                    );
                }
            }
            reqwest::blocking::get(&url).is_ok_and(|r| r.status().is_success())
        });
        assert!(up, "agent did not answer within 30 s:\n{}", self.stderr());
    }

    /// The agent's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The data directory.
    pub fn data_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("data")
    }

    /// What the agent wrote to stderr so far.
    pub fn stderr(&self) -> String {
        let mut s = String::new();
        let _ = std::fs::File::open(self.dir.path().join("stderr.log"))
            .and_then(|mut f| f.read_to_string(&mut s));
        s
    }

    /// Rewrites the registry file.
    pub fn write_registry(&self, toml: &str) {
        std::fs::write(self.dir.path().join("registry.toml"), toml).expect("write registry");
    }

    /// The bearer token this agent generated (`data/auth_token`); `None` when its config sets
    /// `agent.token` (then the agent leaves no token file).
    pub fn token(&self) -> Option<String> {
        read_token(&self.data_dir())
    }

    /// GET `path` (with query) with the agent's token, returning status and JSON body.
    pub fn get(&self, path_and_query: &str) -> (u16, serde_json::Value) {
        self.get_with(path_and_query, self.token().as_deref())
    }

    /// GET `path` (with query) with the given bearer token, or none.
    pub fn get_with(&self, path_and_query: &str, token: Option<&str>) -> (u16, serde_json::Value) {
        let mut req = reqwest::blocking::Client::new()
            .get(format!("http://{}{path_and_query}", self.addr))
            .timeout(Duration::from_secs(60));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        let resp = req.send().expect("request");
        let status = resp.status().as_u16();
        let body = resp.json().unwrap_or(serde_json::Value::Null);
        (status, body)
    }

    /// POST a body with a content type and the agent's token, returning status and JSON body.
    pub fn post(
        &self,
        path_and_query: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> (u16, serde_json::Value) {
        let mut req = reqwest::blocking::Client::new()
            .post(format!("http://{}{path_and_query}", self.addr))
            .header("content-type", content_type)
            .body(body)
            .timeout(Duration::from_secs(60));
        if let Some(token) = self.token() {
            req = req.bearer_auth(token);
        }
        let resp = req.send().expect("request");
        let status = resp.status().as_u16();
        let body = resp.json().unwrap_or(serde_json::Value::Null);
        (status, body)
    }

    /// `/me/status` as JSON.
    pub fn status(&self) -> serde_json::Value {
        self.get("/me/status").1
    }

    /// SIGTERM, then waits for a clean exit; returns whether it exited successfully.
    pub fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: the agent gets no chance to drain.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops (or kills) this agent and starts a new one on the same directory and config.
    pub fn restart(mut self, graceful: bool) -> Agent {
        if graceful {
            assert!(
                self.stop(),
                "agent did not stop cleanly:\n{}",
                self.stderr()
            );
        } else {
            self.kill9();
        }
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tempdir"));
        let mut builder = self.builder.clone();
        builder.registry.clear();
        builder.start_in(dir)
    }

    /// Files of the file output, by namespace: `data/out/<ns>.lp`.
    pub fn output_file(&self, ns: &str) -> String {
        std::fs::read_to_string(self.data_dir().join("out").join(format!("{ns}.lp")))
            .unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Whether a path exists (a small readability helper for assertions).
pub fn exists(p: &Path) -> bool {
    p.exists()
}

/// A `kB` field of `/proc/<pid>/status` (`"VmHWM"`: peak resident memory, `"VmRSS"`: resident
/// memory now), in KiB; 0 when the process or the field is gone.
pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

/// Held by the tests that load the whole machine (tens of agents at once) or measure it (host
/// gauges against node_exporter), so they never run at the same time as each other: on a
/// 2-core machine two of them together starve their agents past any honest timeout. Other
/// tests still run beside them.
pub fn machine_wide() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    // A test that panicked while holding it leaves nothing to repair.
    LOCK.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
