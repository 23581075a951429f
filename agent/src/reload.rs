//! Config reload: SIGHUP (or `agent reload`, which sends it) re-reads the file the agent was
//! started with, compares it with the configuration in force, and hands each changed part to its
//! owner:
//!
//! - the output (every `[output]` key but those in [`RESTART_KEYS`]): a new output is built and
//!   sent to the delivery loop, which switches between two deliveries
//!   ([`crate::output::run_delivery_with`]), so no batch is lost or sent twice;
//! - `log.level`: the logger's filter is swapped ([`crate::logging::set_level`]);
//! - everything else that can change (`[registry]`, `[system]`, `agent.token`,
//!   `agent.log_roots`, the `/post` settings): the new configuration is put in force
//!   ([`AgentState::set_config`]); the registry service rebuilds its source and refreshes at once,
//!   the system collector takes the new filters on its next tick, the API reads the rest per
//!   request.
//!
//! Keys read only at start ([`RESTART_KEYS`]) keep their running values and are logged as
//! needing a restart; the rest still applies. A file that does not load and validate, or whose
//! new output or registry source cannot be built, is refused whole: the configuration in force
//! stays, and the log says why.
//!
//! Each reload's outcome is written to `{data_dir}/reload.status` (pid, generation, result,
//! message), which `agent reload` waits for.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::{Config, OutputKind};
use crate::output::Output;
use crate::state::AgentState;

/// File in the data dir holding the outcome of the last reload.
pub const STATUS_FILE: &str = "reload.status";

/// Keys read once at start: a reload that changes them logs that they need a restart and keeps
/// the running values.
pub const RESTART_KEYS: &[&str] = &[
    // The API socket, the identity and the directories everything else lives in.
    "agent.listen",
    "agent.hostname",
    "agent.data_dir",
    "log.dir",
    // The plugin manager resolves its user, directories and containment once.
    "agent.plugins_dir",
    "agent.plugins_user",
    "agent.plugins_allow_root",
    "agent.plugin_disable_secs",
    "agent.plugin_containment",
    "agent.plugin_memory_max_bytes",
    "agent.plugin_pids_max",
    "agent.cgroup_root",
    // The generated token file's mode is set when it is made.
    "agent.token_group",
    // Sizes of things allocated at start.
    "agent.max_inflight_body_bytes",
    "output.queue_max_bytes",
    "output.spool_max_bytes",
    // The batcher's and the heartbeat's settings, fixed when their tasks start.
    "output.format",
    "output.batch_size",
    "output.flush_ms",
    "output.max_message_bytes",
    "output.drain_secs",
    "agent.alive_secs",
    // The agent report (lodastack `/agent/report`) reads `[registry]` once when it starts.
    "registry.report_secs",
];

/// What changed between two configurations, as `section.key` names (never values: the token
/// is one of them).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Diff {
    /// Keys that take effect now.
    pub applied: Vec<String>,
    /// Keys that changed but keep their running value until a restart.
    pub restart: Vec<String>,
}

impl Diff {
    /// Whether any key of `section` takes effect now.
    pub fn touches(&self, section: &str) -> bool {
        self.applied
            .iter()
            .any(|k| k.split_once('.').is_some_and(|(s, _)| s == section))
    }

    /// Whether `key` takes effect now.
    pub fn has(&self, key: &str) -> bool {
        self.applied.iter().any(|k| k == key)
    }
}

fn sections(config: &Config) -> serde_json::Map<String, Value> {
    match serde_json::to_value(config) {
        Ok(Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    }
}

/// Compares `old` (in force) with `new` (just read), key by key.
pub fn diff(old: &Config, new: &Config) -> Diff {
    let (old, new) = (sections(old), sections(new));
    let mut d = Diff::default();
    for (section, new_keys) in &new {
        let (Some(Value::Object(old_keys)), Value::Object(new_keys)) = (old.get(section), new_keys)
        else {
            continue;
        };
        for (key, value) in new_keys {
            if old_keys.get(key) == Some(value) {
                continue;
            }
            let name = format!("{section}.{key}");
            if RESTART_KEYS.contains(&name.as_str()) {
                d.restart.push(name);
            } else {
                d.applied.push(name);
            }
        }
    }
    d
}

/// `new` with every key of `restart` at its value in `old`: the configuration that is really in
/// force after the reload.
pub fn keep_running(old: &Config, new: &Config, restart: &[String]) -> anyhow::Result<Config> {
    let old_sections = sections(old);
    let mut merged = sections(new);
    for name in restart {
        let Some((section, key)) = name.split_once('.') else {
            continue;
        };
        let value = old_sections
            .get(section)
            .and_then(|s| s.get(key))
            .cloned()
            .unwrap_or(Value::Null);
        if let Some(Value::Object(keys)) = merged.get_mut(section) {
            keys.insert(key.to_owned(), value);
        }
    }
    let mut config: Config = serde_json::from_value(Value::Object(merged))
        .context("cannot merge the reloaded configuration")?;
    config.source.clone_from(&new.source);
    config.agent.token_file.clone_from(&new.agent.token_file);
    Ok(config)
}

/// The outcome of one reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// False when the file was refused and the configuration in force stays.
    pub applied: bool,
    /// One line: what changed, what needs a restart, or why the file was refused.
    pub message: String,
}

/// Applies reloads for a running agent; one at a time.
pub struct Reloader {
    state: AgentState,
    outputs: mpsc::Sender<Box<dyn Output>>,
    generation: u64,
}

impl Reloader {
    /// A reloader for `state`, sending new outputs to the delivery loop on `outputs`.
    pub fn new(state: AgentState, outputs: mpsc::Sender<Box<dyn Output>>) -> Self {
        Reloader {
            state,
            outputs,
            generation: 0,
        }
    }

    /// Reloads on every SIGHUP until `shutdown`. `hangups` is made at the very start of the
    /// agent, before anything could send one (SIGHUP's default action ends the process).
    pub async fn run(
        mut self,
        mut hangups: tokio::signal::unix::Signal,
        shutdown: CancellationToken,
    ) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                got = hangups.recv() => if got.is_none() { return },
            }
            info!("SIGHUP received; reloading the config file.");
            self.reload().await;
        }
    }

    /// Reads the config file again and applies what it changes, or refuses it whole; logs and
    /// records the outcome in `{data_dir}/reload.status`.
    pub async fn reload(&mut self) -> Outcome {
        let outcome = match self.try_reload().await {
            Ok(message) => {
                info!("Config reloaded: {message}");
                Outcome {
                    applied: true,
                    message,
                }
            }
            Err(e) => {
                let message = format!(
                    "refused, the running configuration stays: {}",
                    crate::error_chain::anyhow_chain(&e)
                );
                error!("Config reload {message}");
                Outcome {
                    applied: false,
                    message,
                }
            }
        };
        self.generation += 1;
        let path = self.state.config().agent.data_dir.join(STATUS_FILE);
        let record = Status {
            pid: std::process::id(),
            generation: self.generation,
            applied: outcome.applied,
            message: outcome.message.clone(),
        };
        if let Err(e) = tokio::task::spawn_blocking(move || record.write(&path))
            .await
            .map_err(std::io::Error::other)
            .and_then(|r| r)
        {
            warn!(error = %e, "Cannot record the reload's outcome for `agent reload`.");
        }
        outcome
    }

    async fn try_reload(&mut self) -> anyhow::Result<String> {
        let old = self.state.config();
        let path = old
            .source
            .clone()
            .context("the agent was not started from a config file")?;
        let read = path.clone();
        let new = tokio::task::spawn_blocking(move || Config::load(&read))
            .await
            .context("config reader failed")??;
        let restart = diff(&old, &new).restart;
        let mut merged = keep_running(&old, &new, &restart)?;
        // What each owner must accept is built before anything changes, so a refusal leaves
        // everything as it was.
        let mut changes = diff(&old, &merged);
        let output = if changes.touches("output") {
            if merged.output.kind == OutputKind::Stdout && old.output.kind != OutputKind::Stdout {
                anyhow::bail!("output.kind = \"stdout\" needs a restart (with --foreground, which a running agent cannot know it has)");
            }
            Some(crate::output::build(&merged).context("the new [output] cannot be used")?)
        } else {
            None
        };
        if changes.touches("registry") {
            crate::registry::Source::from_config(&merged, self.state.hostname())
                .context("the new [registry] cannot be used")?;
        }
        if changes.has("log.level") {
            crate::logging::filter(&merged.log.level)
                .map_err(|e| anyhow::anyhow!("log.level: {e}"))?;
        }
        // The token as a start resolves it: agent.token, or the generated file's.
        let c = merged.clone();
        let token = tokio::task::spawn_blocking(move || crate::api::auth::ensure_token(&c))
            .await
            .context("token task failed")??;
        let token_was = (old.agent.token.clone(), old.agent.token_file.clone());
        merged.agent.token = token.secret;
        merged.agent.token_file = token.file;
        if (merged.agent.token.clone(), merged.agent.token_file.clone()) != token_was {
            crate::api::auth::warn_if_config_exposes_token(&merged);
        }
        changes = diff(&old, &merged);
        changes.restart = restart;

        // Commit: nothing below can refuse.
        if changes.has("log.level") {
            if let Err(e) = crate::logging::set_level(&merged.log.level) {
                warn!(error = %e, "The log level stays as it was.");
            }
        }
        if let Some(output) = output {
            if self.outputs.send(output).await.is_err() {
                warn!("The delivery loop has stopped (shutting down); the new output is not used.");
            }
        }
        self.state.set_config(merged);
        Ok(describe(&changes))
    }
}

fn describe(changes: &Diff) -> String {
    let applied = if changes.applied.is_empty() {
        "nothing changed".to_owned()
    } else {
        format!("applied {}", changes.applied.join(", "))
    };
    if changes.restart.is_empty() {
        applied
    } else {
        format!(
            "{applied}; needs a restart (running values kept): {}",
            changes.restart.join(", ")
        )
    }
}

/// The record of the last reload in `{data_dir}/reload.status`: `pid generation applied|refused`
/// on the first line, the message on the second.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// The agent that reloaded.
    pub pid: u32,
    /// Its reloads since start, this one included.
    pub generation: u64,
    /// Whether it was applied.
    pub applied: bool,
    /// What the log says about it.
    pub message: String,
}

/// Largest status file read back; the agent writes one line of keys and one message.
const STATUS_MAX_BYTES: u64 = 64 * 1024;

impl Status {
    fn write(&self, path: &Path) -> std::io::Result<()> {
        let tmp = path.with_extension("status.tmp");
        let text = format!(
            "{} {} {}\n{}\n",
            self.pid,
            self.generation,
            if self.applied { "applied" } else { "refused" },
            self.message.replace('\n', " ")
        );
        {
            use std::io::Write;
            let mut f = crate::files::create(&tmp)?;
            f.write_all(text.as_bytes())?;
        }
        std::fs::rename(&tmp, path)
    }

    /// Reads a status file; `None` when it is missing or not one.
    pub fn read(path: &Path) -> Option<Status> {
        use std::io::Read;
        let mut text = String::new();
        std::fs::File::open(path)
            .ok()?
            .take(STATUS_MAX_BYTES)
            .read_to_string(&mut text)
            .ok()?;
        let (head, message) = text.split_once('\n')?;
        let mut words = head.split(' ');
        let pid = words.next()?.parse().ok()?;
        let generation = words.next()?.parse().ok()?;
        let applied = match words.next()? {
            "applied" => true,
            "refused" => false,
            _ => return None,
        };
        Some(Status {
            pid,
            generation,
            applied,
            message: message.trim_end().to_owned(),
        })
    }
}

/// The pid file of the agent a config file names. Only `agent.data_dir` is read, and a file
/// that is not even TOML names the default one: a reload is how the running agent reports what
/// is wrong with the file, so it must still be found.
pub fn pid_file_of(path: &Path) -> anyhow::Result<PathBuf> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("config file {}: cannot read it", path.display()))?;
    let mut config = Config::default();
    if let Some(dir) = toml::from_str::<toml::Table>(&text)
        .ok()
        .and_then(|t| t.get("agent")?.get("data_dir")?.as_str().map(PathBuf::from))
    {
        config.agent.data_dir = dir;
    }
    let base = path
        .canonicalize()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("."));
    config.resolve_paths(&base);
    Ok(config.pid_file())
}

/// The agent refused the reloaded file and runs on the configuration it had (`agent reload`
/// exits 2 on it).
#[derive(Debug, thiserror::Error)]
#[error("agent (pid {pid}) reload {message}")]
pub struct Refused {
    /// The agent.
    pub pid: i32,
    /// Why, as its log says.
    pub message: String,
}

/// `agent reload`: sends SIGHUP to the agent holding `pid_file` and waits up to `timeout` for
/// it to record the outcome: its pid and message when it applied the file, [`Refused`] when it
/// did not.
pub fn request(pid_file: &Path, timeout: Duration) -> anyhow::Result<(i32, String)> {
    let status_path = pid_file
        .parent()
        .unwrap_or_else(|| Path::new("."))
        .join(STATUS_FILE);
    let pid = crate::daemon::running_pid(pid_file)?;
    let before = Status::read(&status_path)
        .filter(|s| i64::from(s.pid) == i64::from(pid))
        .map_or(0, |s| s.generation);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGHUP,
    )
    .with_context(|| format!("cannot signal pid {pid}"))?;
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(s) = Status::read(&status_path) {
            if i64::from(s.pid) == i64::from(pid) && s.generation > before {
                if s.applied {
                    return Ok((pid, s.message));
                }
                return Err(Refused {
                    pid,
                    message: s.message,
                }
                .into());
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    anyhow::bail!(
        "the agent (pid {pid}) did not report the reload within {} s; see its log",
        timeout.as_secs()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::spool::Spool;
    use crate::output::{DeliveryError, EncodedBatch};
    use std::sync::{Arc, Mutex};

    fn load(dir: &Path, text: &str) -> Config {
        let path = dir.join("agent.toml");
        std::fs::write(&path, text).expect("write");
        Config::load(&path).expect("valid")
    }

    #[test]
    fn the_diff_names_changed_keys_and_sorts_out_those_needing_a_restart() {
        let dir = tempfile::tempdir().expect("tmp");
        let old = load(dir.path(), "");
        assert_eq!(diff(&old, &old.clone()), Diff::default());
        let new = load(
            dir.path(),
            "[agent]\nlisten = \"127.0.0.1:1999\"\ntoken = \"0123456789abcdefXYZ\"\nlog_roots = [\"/tmp\"]\n\
             [output]\nkind = \"nsq\"\nnsqd = [\"127.0.0.1:4999\"]\nbatch_size = 7\n\
             [log]\nlevel = \"debug\"\n[system]\nskip_disks = []\n[registry]\nrefresh_secs = 5\n",
        );
        let d = diff(&old, &new);
        let mut applied = d.applied.clone();
        applied.sort();
        assert_eq!(
            applied,
            [
                "agent.log_roots",
                "agent.token",
                "log.level",
                "output.kind",
                "output.nsqd",
                "registry.refresh_secs",
                "system.skip_disks"
            ]
        );
        let mut restart = d.restart.clone();
        restart.sort();
        assert_eq!(restart, ["agent.listen", "output.batch_size"]);
        assert!(d.touches("output") && d.touches("registry") && !d.touches("plugins"));
        assert!(d.has("log.level") && !d.has("agent.listen"));
    }

    #[test]
    fn keys_needing_a_restart_keep_their_running_values_and_the_rest_applies() {
        let dir = tempfile::tempdir().expect("tmp");
        let old = load(dir.path(), "[agent]\nlisten = \"127.0.0.1:1998\"\n");
        let new = load(
            dir.path(),
            "[agent]\nlisten = \"127.0.0.1:1999\"\ndata_dir = \"elsewhere\"\n\
             [output]\nspool_max_bytes = 2097152\nfile_keep = 2\n[log]\nlevel = \"warn\"\n",
        );
        let restart = diff(&old, &new).restart;
        let merged = keep_running(&old, &new, &restart).expect("merge");
        assert_eq!(merged.agent.listen, "127.0.0.1:1998");
        assert_eq!(merged.agent.data_dir, old.agent.data_dir);
        assert_eq!(merged.output.spool_max_bytes, old.output.spool_max_bytes);
        assert_eq!(merged.output.file_keep, 2);
        assert_eq!(merged.log.level, "warn");
        assert_eq!(merged.source, new.source);
        let left = diff(&old, &merged);
        assert!(left.restart.is_empty(), "{left:?}");
        let mut applied = left.applied;
        applied.sort();
        // The output dir defaults under data_dir, which moved in the file: it follows the file.
        assert_eq!(applied, ["log.level", "output.file_keep", "output.path"]);
    }

    #[test]
    fn every_restart_key_is_a_real_key() {
        let all = sections(&Config::default());
        for name in RESTART_KEYS {
            let (section, key) = name.split_once('.').expect("section.key");
            assert!(
                all.get(section).and_then(|s| s.get(key)).is_some(),
                "{name} is not a key of the config file"
            );
        }
    }

    /// Records what it took; fails every batch with Retry while `down`.
    struct Recording {
        name: &'static str,
        down: bool,
        got: Arc<Mutex<Vec<(&'static str, String)>>>,
    }

    impl Output for Recording {
        fn endpoint(&self) -> String {
            self.name.to_owned()
        }
        fn deliver<'a>(
            &'a mut self,
            batch: &'a Arc<EncodedBatch>,
        ) -> crate::output::BoxFuture<'a, Result<(), DeliveryError>> {
            Box::pin(async move {
                if self.down {
                    return Err(DeliveryError::Retry("down".into()));
                }
                let payload = String::from_utf8_lossy(&batch.payload).into_owned();
                self.got.lock().expect("lock").push((self.name, payload));
                Ok(())
            })
        }
    }

    #[tokio::test]
    async fn a_batch_failing_on_the_old_output_is_delivered_once_on_the_new_one() {
        let dir = tempfile::tempdir().expect("tmp");
        let spool = Spool::open(dir.path(), 1 << 20).expect("open");
        let got = Arc::new(Mutex::new(Vec::new()));
        let output = |name, down| -> Box<dyn Output> {
            Box::new(Recording {
                name,
                down,
                got: Arc::clone(&got),
            })
        };
        let (swaps_tx, swaps) = mpsc::channel(4);
        let stats = Arc::new(crate::output::OutputStats::default());
        let drain = CancellationToken::new();
        let delivery = tokio::spawn(crate::output::run_delivery_with(
            spool.clone(),
            output("old", true),
            swaps,
            Arc::clone(&stats),
            drain.clone(),
            Duration::from_secs(5),
        ));
        for n in 0..3 {
            spool.push(EncodedBatch {
                ns: "a".into(),
                points: 1,
                payload: format!("p{n}").into_bytes(),
            });
        }
        // The old output fails the first batch and backs off; the new one takes it at once.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(got.lock().expect("lock").is_empty());
        swaps_tx.send(output("new", false)).await.expect("send");
        drain.cancel();
        tokio::time::timeout(Duration::from_secs(10), delivery)
            .await
            .expect("drains")
            .expect("task");
        assert_eq!(
            *got.lock().expect("lock"),
            [
                ("new", "p0".into()),
                ("new", "p1".into()),
                ("new", "p2".into())
            ]
        );
        assert_eq!(stats.endpoint.lock().expect("lock").as_deref(), Some("new"));
        assert!(spool.is_empty());
    }

    #[test]
    fn the_status_file_round_trips_and_junk_is_no_status() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join(STATUS_FILE);
        assert_eq!(Status::read(&path), None);
        let s = Status {
            pid: 42,
            generation: 3,
            applied: false,
            message: "refused: two\nlines".into(),
        };
        s.write(&path).expect("write");
        let back = Status::read(&path).expect("read");
        assert_eq!((back.pid, back.generation, back.applied), (42, 3, false));
        assert_eq!(back.message, "refused: two lines");
        std::fs::write(&path, "42 x applied\nm\n").expect("write");
        assert_eq!(Status::read(&path), None);
    }
}
