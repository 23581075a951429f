//! Asking agents how they are: one host ([`Prober::probe`]) or the whole inventory, many at once
//! ([`Prober::probe_all`], [`Prober::spawn`]).
//!
//! A probe is `GET /me/status`, with `GET /plugins/list` and `GET /me/ns` beside it (for the
//! failing plugins and the namespaces, which the status does not carry), all under one per-host
//! timeout. The answer is classified into a [`State`]: `ok`, `degraded` with its [`Reason`]s,
//! `unreachable` or `unauthorized`. A host that does not answer in time is `unreachable`, never a
//! stall of the whole run.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use shared::api::{PluginList, Status};
use shared::{Client, ClientError};
use tokio::sync::mpsc;

use super::inventory::Host;

/// Hosts asked at the same time unless told otherwise.
pub const DEFAULT_IN_FLIGHT: usize = 64;
/// How long one host may take to answer unless told otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);

/// How a fleet is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Hosts asked at the same time (at least 1).
    pub in_flight: usize,
    /// How long one host may take, connection and all three calls included.
    pub timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            in_flight: DEFAULT_IN_FLIGHT,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// Why an agent that answered is not `ok` (the list of degraded causes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "cause", rename_all = "snake_case")]
pub enum Reason {
    /// The output's last delivery failed (`output.connected` false after an error).
    OutputFailing {
        /// The output's last error.
        error: String,
    },
    /// Batches wait in the spool (the output is behind or down).
    SpoolNotEmpty {
        /// Batches in the on-disk spool.
        batches: u64,
    },
    /// Points were dropped since the agent started.
    DroppedPoints {
        /// Points dropped since start.
        points: u64,
    },
    /// The last registry refresh failed.
    RegistryFailing {
        /// The registry's last error.
        error: String,
    },
    /// Plugins whose last run failed or that cannot run (clone failed, ...).
    PluginsFailing {
        /// `ns/project` of each.
        plugins: Vec<String>,
    },
    /// Scheduler ticks skipped because the previous run was still going.
    SkippedTicks {
        /// Ticks skipped since start.
        ticks: u64,
    },
}

impl Reason {
    /// A short label for a table cell: `output`, `spool`, `dropped`, `registry`, `plugins`,
    /// `skipped`.
    pub fn label(&self) -> &'static str {
        match self {
            Reason::OutputFailing { .. } => "output",
            Reason::SpoolNotEmpty { .. } => "spool",
            Reason::DroppedPoints { .. } => "dropped",
            Reason::RegistryFailing { .. } => "registry",
            Reason::PluginsFailing { .. } => "plugins",
            Reason::SkippedTicks { .. } => "skipped",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::OutputFailing { error } => write!(f, "output failing: {error}"),
            Reason::SpoolNotEmpty { batches } => write!(f, "{batches} batches in the spool"),
            Reason::DroppedPoints { points } => write!(f, "{points} points dropped"),
            Reason::RegistryFailing { error } => write!(f, "registry failing: {error}"),
            Reason::PluginsFailing { plugins } => {
                write!(f, "plugins failing: {}", plugins.join(", "))
            }
            Reason::SkippedTicks { ticks } => write!(f, "{ticks} ticks skipped"),
        }
    }
}

/// A host's state, worst first in [`State::rank`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum State {
    /// Answered, nothing wrong.
    Ok,
    /// Answered, with something wrong.
    Degraded {
        /// Every cause found, in the order of [`Reason`].
        reasons: Vec<Reason>,
    },
    /// Did not answer in time, refused the connection, or answered something that is not the
    /// agent's status (an HTTP error other than 401, a body that is not the status JSON).
    Unreachable {
        /// What happened, for a person.
        error: String,
    },
    /// Answered 401 (to `/plugins/list` or `/me/ns`; `/me/status` is open to all): the token is
    /// missing or wrong for this agent, so no action would work. The row keeps its status.
    Unauthorized {
        /// The agent's message.
        error: String,
    },
}

impl State {
    /// `ok`, `degraded`, `unreachable` or `unauthorized`: the name filters and tables use.
    pub fn name(&self) -> &'static str {
        match self {
            State::Ok => "ok",
            State::Degraded { .. } => "degraded",
            State::Unreachable { .. } => "unreachable",
            State::Unauthorized { .. } => "unauthorized",
        }
    }

    /// Sort key, worst first: unreachable 0, unauthorized 1, degraded 2, ok 3.
    pub fn rank(&self) -> u8 {
        match self {
            State::Unreachable { .. } => 0,
            State::Unauthorized { .. } => 1,
            State::Degraded { .. } => 2,
            State::Ok => 3,
        }
    }

    /// True for `ok`.
    pub fn is_ok(&self) -> bool {
        matches!(self, State::Ok)
    }

    /// The degraded causes (empty for other states).
    pub fn reasons(&self) -> &[Reason] {
        match self {
            State::Degraded { reasons } => reasons,
            _ => &[],
        }
    }

    /// The error of an unreachable or unauthorized host.
    pub fn error(&self) -> Option<&str> {
        match self {
            State::Unreachable { error } | State::Unauthorized { error } => Some(error),
            _ => None,
        }
    }
}

/// The four state names, in [`State::rank`] order (for summaries and filters).
pub const STATE_NAMES: [&str; 4] = ["unreachable", "unauthorized", "degraded", "ok"];

/// One host's answer.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// The host asked.
    #[serde(flatten)]
    pub host: Host,
    /// What it is.
    #[serde(flatten)]
    pub state: State,
    /// Its `/me/status`, when it answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    /// `ns/project` of plugins whose last run failed or that cannot run; `None` when
    /// `/plugins/list` did not answer (an older agent).
    pub failing_plugins: Option<Vec<String>>,
    /// The agent's namespaces (`/me/ns`), or the inventory's when the agent did not say.
    pub namespaces: Vec<String>,
    /// How long the probe took.
    #[serde(serialize_with = "millis")]
    pub elapsed: Duration,
}

fn millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis().min(u128::from(u64::MAX)) as u64)
}

impl Row {
    /// The agent's version, when it answered.
    pub fn version(&self) -> Option<&str> {
        self.status.as_ref().map(|s| s.version.as_str())
    }
}

/// Classifies an agent's answers: the [`Reason`]s it is degraded for, in a fixed order.
pub fn classify(status: &Status, plugins: Option<&PluginList>) -> State {
    let mut reasons = Vec::new();
    let o = &status.output;
    // `connected` is false until the first delivery, so only a failure after an error counts.
    if !o.connected {
        if let Some(error) = &o.last_error {
            reasons.push(Reason::OutputFailing {
                error: error.clone(),
            });
        }
    }
    if o.spool_batches > 0 {
        reasons.push(Reason::SpoolNotEmpty {
            batches: o.spool_batches,
        });
    }
    if o.dropped_points > 0 || o.dropped_batches > 0 {
        reasons.push(Reason::DroppedPoints {
            points: o.dropped_points,
        });
    }
    if let Some(error) = &status.registry.last_error {
        reasons.push(Reason::RegistryFailing {
            error: error.clone(),
        });
    }
    let failing = plugins.map(failing_plugins).unwrap_or_default();
    if !failing.is_empty() {
        reasons.push(Reason::PluginsFailing { plugins: failing });
    }
    if status.jobs.skipped_ticks > 0 {
        reasons.push(Reason::SkippedTicks {
            ticks: status.jobs.skipped_ticks,
        });
    }
    if reasons.is_empty() {
        State::Ok
    } else {
        State::Degraded { reasons }
    }
}

/// `ns/project` of each plugin whose last run failed or that has a problem (cannot run).
pub fn failing_plugins(list: &PluginList) -> Vec<String> {
    list.plugins
        .iter()
        .filter(|p| p.problem.is_some() || p.last_run.as_ref().is_some_and(|r| !r.ok))
        .map(|p| format!("{}/{}", p.ns, p.project))
        .collect()
}

/// Asks hosts, sharing one connection pool.
#[derive(Debug, Clone)]
pub struct Prober {
    pool: Client,
    options: Options,
}

impl Default for Prober {
    fn default() -> Self {
        Prober::new(Options::default())
    }
}

impl Prober {
    /// A prober with its own HTTP client (TLS set-up built once), which keeps no idle
    /// connection: a thousand hosts must not hold thousands of sockets open.
    pub fn new(options: Options) -> Prober {
        Prober {
            pool: Client::without_idle_pool(shared::DEFAULT_ADDR, None),
            options: Options {
                in_flight: options.in_flight.max(1),
                ..options
            },
        }
    }

    /// The options in force.
    pub fn options(&self) -> Options {
        self.options
    }

    /// A client for one host (its address and token), on the shared pool: for actions and for
    /// opening the host in the single-agent screens.
    pub fn client(&self, host: &Host) -> Client {
        self.pool.with_addr(&host.addr, host.token.clone())
    }

    /// Asks one host, within the per-host timeout.
    pub async fn probe(&self, host: &Host) -> Row {
        let started = Instant::now();
        let client = self.client(host);
        let calls = async { tokio::join!(client.status(), client.plugins(), client.namespaces()) };
        let (state, status, failing, namespaces) =
            match tokio::time::timeout(self.options.timeout, calls).await {
                Err(_) => (
                    State::Unreachable {
                        error: format!("no answer within {} ms", self.options.timeout.as_millis()),
                    },
                    None,
                    None,
                    None,
                ),
                Ok((Err(e), _, _)) => (state_of_error(&e), None, None, None),
                Ok((Ok(status), plugins, ns)) => {
                    // `/me/status` is open to everyone; the token is tested by the other two.
                    let refused = [plugins.as_ref().err(), ns.as_ref().err()]
                        .into_iter()
                        .flatten()
                        .find_map(|e| match e {
                            ClientError::Unauthorized { .. } => Some(state_of_error(e)),
                            _ => None,
                        });
                    let plugins = plugins.ok();
                    let state = refused.unwrap_or_else(|| classify(&status, plugins.as_ref()));
                    (
                        state,
                        Some(status),
                        plugins.as_ref().map(failing_plugins),
                        ns.ok().map(|n| n.namespaces),
                    )
                }
            };
        Row {
            namespaces: namespaces.unwrap_or_else(|| host.namespaces.clone()),
            host: host.clone(),
            state,
            status,
            failing_plugins: failing,
            elapsed: started.elapsed(),
        }
    }

    /// Asks every host, at most `in_flight` at once; the rows come back in `hosts`' order.
    pub async fn probe_all(&self, hosts: &[Host]) -> Vec<Row> {
        let hosts: Arc<[Host]> = hosts.into();
        let mut rx = self.spawn(Arc::clone(&hosts));
        let mut rows: Vec<Option<Row>> = vec![None; hosts.len()];
        while let Some((i, row)) = rx.recv().await {
            if let Some(slot) = rows.get_mut(i) {
                *slot = Some(row);
            }
        }
        rows.into_iter().flatten().collect()
    }

    /// Starts asking every host in the background, at most `in_flight` at once; each answer is
    /// sent as `(index in hosts, row)` as soon as it arrives, and the channel closes after the
    /// last. Dropping the receiver stops the probes not yet started. Needs a tokio runtime.
    pub fn spawn(&self, hosts: Arc<[Host]>) -> mpsc::Receiver<(usize, Row)> {
        let workers = self.options.in_flight.min(hosts.len()).max(1);
        let (tx, rx) = mpsc::channel(workers);
        let next = Arc::new(AtomicUsize::new(0));
        for _ in 0..workers {
            let (tx, next, hosts, prober) = (
                tx.clone(),
                Arc::clone(&next),
                Arc::clone(&hosts),
                self.clone(),
            );
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(host) = hosts.get(i) else { break };
                    let row = prober.probe(host).await;
                    if tx.send((i, row)).await.is_err() {
                        break;
                    }
                }
            });
        }
        rx
    }
}

/// Asks every host with `options` on a fresh pool; rows in `hosts`' order.
pub async fn probe_all(hosts: &[Host], options: Options) -> Vec<Row> {
    Prober::new(options).probe_all(hosts).await
}

/// The state of a host whose `/me/status` failed.
fn state_of_error(err: &ClientError) -> State {
    match err {
        ClientError::Unauthorized { message, .. } => State::Unauthorized {
            error: format!("401: {message}"),
        },
        ClientError::Unreachable { reason, .. } => State::Unreachable {
            error: reason.clone(),
        },
        ClientError::Api { status, message } => State::Unreachable {
            error: format!("/me/status answered {status}: {message}"),
        },
        ClientError::Decode { reason, .. } => State::Unreachable {
            error: format!("/me/status is not the agent's status JSON: {reason}"),
        },
    }
}

/// Counts rows per state, in [`STATE_NAMES`] order.
pub fn summary(rows: &[Row]) -> [(&'static str, usize); 4] {
    let mut counts = STATE_NAMES.map(|n| (n, 0));
    for row in rows {
        counts[usize::from(row.state.rank())].1 += 1;
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::api::{PluginInfo, RunResult};

    #[test]
    fn a_quiet_agent_is_ok_even_before_its_first_delivery() {
        let status = Status::default();
        assert_eq!(classify(&status, None), State::Ok);
    }

    #[test]
    fn every_degraded_cause_is_reported() {
        let mut s = Status::default();
        s.output.last_error = Some("nsqd refused".into());
        s.output.spool_batches = 3;
        s.output.dropped_points = 10;
        s.registry.last_error = Some("timed out".into());
        s.jobs.skipped_ticks = 2;
        let plugins = PluginList {
            plugins: vec![
                PluginInfo {
                    ns: "web".into(),
                    project: "good".into(),
                    last_run: Some(RunResult {
                        ok: true,
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                PluginInfo {
                    ns: "web".into(),
                    project: "bad".into(),
                    last_run: Some(RunResult::default()),
                    ..Default::default()
                },
                PluginInfo {
                    ns: "db".into(),
                    project: "unclonable".into(),
                    problem: Some("clone failed".into()),
                    ..Default::default()
                },
            ],
        };
        let state = classify(&s, Some(&plugins));
        let labels: Vec<&str> = state.reasons().iter().map(Reason::label).collect();
        assert_eq!(
            labels,
            ["output", "spool", "dropped", "registry", "plugins", "skipped"]
        );
        assert_eq!(
            state.reasons()[4],
            Reason::PluginsFailing {
                plugins: vec!["web/bad".into(), "db/unclonable".into()]
            }
        );
        assert_eq!(state.name(), "degraded");
    }

    #[test]
    fn a_connected_output_with_an_old_error_is_not_failing() {
        let mut s = Status::default();
        s.output.connected = true;
        s.output.last_error = Some("once".into());
        assert_eq!(classify(&s, None), State::Ok);
    }

    #[test]
    fn errors_map_to_states() {
        let unauthorized = ClientError::Unauthorized {
            addr: "a".into(),
            message: "missing token".into(),
            sent: "no token".into(),
        };
        assert_eq!(state_of_error(&unauthorized).name(), "unauthorized");
        let api = ClientError::Api {
            status: 500,
            message: "boom".into(),
        };
        assert_eq!(state_of_error(&api).name(), "unreachable");
        assert!(state_of_error(&api)
            .error()
            .is_some_and(|e| e.contains("500")));
    }

    #[tokio::test]
    async fn a_closed_port_and_a_silent_listener_are_unreachable_within_the_timeout() {
        // A port nobody listens on (bound then dropped), and a listener that accepts and never
        // answers: both must come back as rows, the silent one after the timeout, not later.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let closed_addr = closed.local_addr().expect("addr").to_string();
        drop(closed);
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let silent_addr = silent.local_addr().expect("addr").to_string();
        let holder = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((sock, _)) = silent.accept().await {
                held.push(sock);
            }
        });
        let hosts = vec![
            Host::new("closed", &closed_addr, 1).expect("addr"),
            Host::new("silent", &silent_addr, 1).expect("addr"),
        ];
        let started = Instant::now();
        let rows = probe_all(
            &hosts,
            Options {
                in_flight: 4,
                timeout: Duration::from_millis(300),
            },
        )
        .await;
        let took = started.elapsed();
        holder.abort();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].host.name, "closed");
        assert_eq!(rows[0].state.name(), "unreachable");
        assert_eq!(rows[1].state.name(), "unreachable");
        assert!(
            rows[1].state.error().is_some_and(|e| e.contains("300 ms")),
            "{:?}",
            rows[1].state
        );
        assert!(took < Duration::from_secs(2), "took {took:?}");
    }

    #[tokio::test]
    async fn no_more_than_in_flight_hosts_are_asked_at_once() {
        use std::sync::atomic::AtomicUsize;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // Ten hosts answering every call after 50 ms; at most 2 hosts (3 calls each) at once.
        let active = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let body = serde_json::to_string(&Status::default()).expect("json");
        let mut hosts = Vec::new();
        let mut servers = Vec::new();
        for i in 0..10 {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let addr = listener.local_addr().expect("addr").to_string();
            hosts.push(Host::new(&format!("h{i}"), &addr, 1).expect("addr"));
            let (active, most, body) = (Arc::clone(&active), Arc::clone(&most), body.clone());
            servers.push(tokio::spawn(async move {
                while let Ok((mut sock, _)) = listener.accept().await {
                    let (active, most, body) =
                        (Arc::clone(&active), Arc::clone(&most), body.clone());
                    tokio::spawn(async move {
                        let now = active.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        let mut buf = [0u8; 4096];
                        let _ = sock.read(&mut buf).await;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        let reply = format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        );
                        let _ = sock.write_all(reply.as_bytes()).await;
                        active.fetch_sub(1, Ordering::SeqCst);
                    });
                }
            }));
        }
        let started = Instant::now();
        let rows = probe_all(
            &hosts,
            Options {
                in_flight: 2,
                timeout: Duration::from_secs(5),
            },
        )
        .await;
        let took = started.elapsed();
        for s in servers {
            s.abort();
        }
        assert_eq!(rows.len(), 10);
        assert!(rows.iter().all(|r| r.version().is_some()), "{rows:?}");
        let most = most.load(Ordering::SeqCst);
        assert!(
            most <= 6,
            "{most} connections at once with 2 hosts in flight"
        );
        // Five rounds of two hosts, 50 ms each: it cannot be faster than 250 ms.
        assert!(took >= Duration::from_millis(250), "took {took:?}");
    }
}
