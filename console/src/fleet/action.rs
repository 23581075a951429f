//! Fan-out: one action on many hosts, rolled out in batches, with results collapsed.
//!
//! [`rollout`] splits the hosts into batches ([`Batch`]), runs each batch's hosts concurrently
//! (at most the prober's `in_flight` at once) and starts the next batch only when the current one
//! has finished; with `stop_on_failure`, a batch with a failed host is the last. [`collapse`]
//! groups hosts whose results read the same, as `dshbak -c` does, and [`fold_names`] writes a
//! group's host list compactly (`web-[01-03,07]`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use shared::ClientError;

use super::inventory::Host;
use super::probe::Prober;

/// What to do on each host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `GET /update`: refresh from the registry now.
    Update,
    /// `GET /plugins/update`: move the plugin to its repository's latest commit.
    PluginUpdate {
        /// Namespace.
        ns: String,
        /// Repository (address or project name).
        repo: String,
    },
    /// `GET /plugins/run`: run the plugin now.
    PluginRun {
        /// Namespace.
        ns: String,
        /// Repository (address or project name).
        repo: String,
        /// Seconds before the run is killed (the agent's default when `None`).
        timeout: Option<u64>,
        /// The argument string.
        param: Option<String>,
    },
    /// `GET /plugins/enable`.
    PluginEnable {
        /// Namespace.
        ns: String,
        /// Repository (address or project name).
        repo: String,
    },
    /// `GET /plugins/disable`.
    PluginDisable {
        /// Namespace.
        ns: String,
        /// Repository (address or project name).
        repo: String,
    },
}

impl Action {
    /// `update`, `plugins update`, ...: for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Action::Update => "update",
            Action::PluginUpdate { .. } => "plugins update",
            Action::PluginRun { .. } => "plugins run",
            Action::PluginEnable { .. } => "plugins enable",
            Action::PluginDisable { .. } => "plugins disable",
        }
    }
}

/// How many hosts a batch holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Batch {
    /// Every host in one batch.
    All,
    /// At most this many hosts (at least 1).
    Hosts(usize),
    /// This percentage of the hosts, rounded up (1 to 100).
    Percent(u8),
}

impl Batch {
    /// Parses `N` or `N%`.
    pub fn parse(text: &str) -> Result<Batch, String> {
        let t = text.trim();
        if let Some(p) = t.strip_suffix('%') {
            match p.trim().parse::<u8>() {
                Ok(n @ 1..=100) => Ok(Batch::Percent(n)),
                _ => Err(format!("--batch {text:?}: a percentage is 1% to 100%")),
            }
        } else {
            match t.parse::<usize>() {
                Ok(n) if n >= 1 => Ok(Batch::Hosts(n)),
                _ => Err(format!(
                    "--batch {text:?}: write a number of hosts (10) or a percentage (25%)"
                )),
            }
        }
    }

    /// The batch size for `total` hosts (at least 1).
    pub fn size(self, total: usize) -> usize {
        match self {
            Batch::All => total.max(1),
            Batch::Hosts(n) => n.max(1),
            Batch::Percent(p) => (total * usize::from(p)).div_ceil(100).max(1),
        }
    }
}

/// How a roll-out goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rollout {
    /// Batch size.
    pub batch: Batch,
    /// Halt after a batch in which a host failed.
    pub stop_on_failure: bool,
    /// How long one host may take for the action.
    pub timeout: Duration,
}

/// What happened on one host.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outcome {
    /// The host's name.
    pub name: String,
    /// The host's address.
    pub addr: String,
    /// 1-based batch number; 0 for a host not attempted.
    pub batch: usize,
    /// `ok`, `failed` (the agent answered that it did not work), `error` (no usable answer) or
    /// `skipped` (not attempted: the roll-out stopped before its batch).
    pub result: &'static str,
    /// What happened, for a person; the same text on two hosts means the same result (no host
    /// address, no timing), so [`collapse`] can group by it.
    pub text: String,
    /// The agent's answer as-is, when it answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answer: Option<Value>,
}

impl Outcome {
    /// True for `ok`.
    pub fn is_ok(&self) -> bool {
        self.result == "ok"
    }
}

/// A finished (or halted) roll-out.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// One per host, in the hosts' order.
    pub outcomes: Vec<Outcome>,
    /// Batches run.
    pub batches_run: usize,
    /// Batches planned.
    pub batches: usize,
    /// True when `stop_on_failure` halted it before the last batch.
    pub halted: bool,
}

/// Runs `action` on one host.
pub async fn run_on(prober: &Prober, host: &Host, action: &Action, timeout: Duration) -> Outcome {
    let client = prober.client(host);
    let call = async {
        match action {
            Action::Update => client.update().await.map(|r| {
                let text = if r.ok {
                    format!(
                        "ok: {} started, {} stopped, {} updated, {} unchanged{}",
                        r.started,
                        r.stopped,
                        r.updated,
                        r.unchanged,
                        problems(&r.problems)
                    )
                } else {
                    format!("refresh failed{}", problems(&r.problems))
                };
                (r.ok, text, serde_json::to_value(&r).ok())
            }),
            Action::PluginUpdate { ns, repo } => client
                .plugin_update(ns, repo)
                .await
                .map(|r| action_text(&r)),
            Action::PluginEnable { ns, repo } => client
                .plugin_enable(ns, repo)
                .await
                .map(|r| action_text(&r)),
            Action::PluginDisable { ns, repo } => client
                .plugin_disable(ns, repo)
                .await
                .map(|r| action_text(&r)),
            Action::PluginRun {
                ns,
                repo,
                timeout,
                param,
            } => client
                .plugin_run(ns, repo, *timeout, param.as_deref())
                .await
                .map(|r| {
                    let ok = r.ran && r.result.as_ref().is_some_and(|x| x.ok);
                    let mut text = match &r.result {
                        Some(res) => {
                            let mut t = match (res.ok, res.exit_code) {
                                (true, _) => "ok".to_owned(),
                                (false, Some(code)) => format!("{} (exit {code})", res.reason),
                                (false, None) => res.reason.clone(),
                            };
                            if let Some(e) = &res.error {
                                t.push_str(&format!(": {e}"));
                            }
                            if !res.stdout.is_empty() {
                                t.push_str(&format!("\n{}", res.stdout.trim_end()));
                            }
                            if !res.stderr.is_empty() {
                                t.push_str(&format!("\nstderr: {}", res.stderr.trim_end()));
                            }
                            t
                        }
                        None => r.message.clone(),
                    };
                    if !r.ran {
                        text = format!("not run: {}", r.message);
                    }
                    (ok, text, serde_json::to_value(&r).ok())
                }),
        }
    };
    let (result, text, answer) = match tokio::time::timeout(timeout, call).await {
        Err(_) => (
            "error",
            format!("no answer within {} s", timeout.as_secs_f64()),
            None,
        ),
        Ok(Err(e)) => ("error", error_text(&e), None),
        Ok(Ok((ok, text, answer))) => (if ok { "ok" } else { "failed" }, text, answer),
    };
    Outcome {
        name: host.name.clone(),
        addr: host.addr.clone(),
        batch: 0,
        result,
        text,
        answer,
    }
}

fn problems(p: &[String]) -> String {
    if p.is_empty() {
        String::new()
    } else {
        format!("; problems: {}", p.join("; "))
    }
}

fn action_text(r: &shared::api::ActionResponse) -> (bool, String, Option<Value>) {
    let mut text = r.message.clone();
    if let Some(commit) = r.plugin.as_ref().and_then(|p| p.commit.as_deref()) {
        text.push_str(&format!(" (commit {})", &commit[..commit.len().min(12)]));
    }
    if let Some(problem) = r.plugin.as_ref().and_then(|p| p.problem.as_deref()) {
        text.push_str(&format!("; problem: {problem}"));
    }
    (true, text, serde_json::to_value(r).ok())
}

/// A client error without the host's address, so the same failure on many hosts reads the same.
pub fn error_text(err: &ClientError) -> String {
    match err {
        ClientError::Unreachable { reason, .. } => format!("unreachable: {reason}"),
        ClientError::Unauthorized { message, .. } => format!("unauthorized (401): {message}"),
        ClientError::Api { status, message } => format!("answered {status}: {message}"),
        ClientError::Decode { reason, .. } => format!("unexpected answer: {reason}"),
    }
}

/// Rolls `action` through `hosts` in batches; `on_batch(number, of, outcomes)` is called as each
/// batch finishes (for progress lines). Outcomes come back in `hosts`' order, with the hosts of
/// batches never started marked `skipped`.
pub async fn rollout(
    prober: &Prober,
    hosts: &[Host],
    action: &Action,
    plan: Rollout,
    mut on_batch: impl FnMut(usize, usize, &[Outcome]),
) -> Report {
    let size = plan.batch.size(hosts.len());
    let batches = hosts.len().div_ceil(size);
    let mut outcomes = Vec::with_capacity(hosts.len());
    let mut halted = false;
    let mut batches_run = 0;
    let action = Arc::new(action.clone());
    for (n, chunk) in hosts.chunks(size).enumerate() {
        let number = n + 1;
        if halted {
            outcomes.extend(chunk.iter().map(|h| Outcome {
                name: h.name.clone(),
                addr: h.addr.clone(),
                batch: 0,
                result: "skipped",
                text: "not attempted: the roll-out stopped after a failure".into(),
                answer: None,
            }));
            continue;
        }
        let done = run_batch(prober, chunk, &action, plan.timeout, number).await;
        batches_run += 1;
        on_batch(number, batches, &done);
        if plan.stop_on_failure && done.iter().any(|o| !o.is_ok()) && number < batches {
            halted = true;
        }
        outcomes.extend(done);
    }
    Report {
        outcomes,
        batches_run,
        batches,
        halted,
    }
}

/// One batch, at most `in_flight` hosts at once; outcomes in `hosts`' order.
async fn run_batch(
    prober: &Prober,
    hosts: &[Host],
    action: &Arc<Action>,
    timeout: Duration,
    number: usize,
) -> Vec<Outcome> {
    let limit = Arc::new(tokio::sync::Semaphore::new(prober.options().in_flight));
    let mut set = tokio::task::JoinSet::new();
    for (i, host) in hosts.iter().enumerate() {
        let (prober, host, action, limit) = (
            prober.clone(),
            host.clone(),
            Arc::clone(action),
            Arc::clone(&limit),
        );
        set.spawn(async move {
            let _permit = limit.acquire_owned().await;
            let mut o = run_on(&prober, &host, &action, timeout).await;
            o.batch = number;
            (i, o)
        });
    }
    let mut slots: Vec<Option<Outcome>> = vec![None; hosts.len()];
    while let Some(joined) = set.join_next().await {
        // A panicked task leaves its slot empty; filled in below, never lost silently.
        if let Ok((i, o)) = joined {
            if let Some(slot) = slots.get_mut(i) {
                *slot = Some(o);
            }
        }
    }
    slots
        .into_iter()
        .zip(hosts)
        .map(|(o, h)| {
            o.unwrap_or_else(|| Outcome {
                name: h.name.clone(),
                addr: h.addr.clone(),
                batch: number,
                result: "error",
                text: "internal error: the task for this host failed".into(),
                answer: None,
            })
        })
        .collect()
}

/// One group of hosts with the same result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// The hosts' names, in the order given.
    pub names: Vec<String>,
    /// `ok`, `failed`, `error` or `skipped`.
    pub result: &'static str,
    /// The shared text.
    pub text: String,
}

/// Groups outcomes whose result and text are the same (`dshbak -c`); groups in the order of their
/// first host, so the output follows the inventory.
pub fn collapse(outcomes: &[Outcome]) -> Vec<Group> {
    let mut index: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    let mut groups: Vec<Group> = Vec::new();
    for o in outcomes {
        match index.get(&(o.result, o.text.as_str())) {
            Some(&g) => groups[g].names.push(o.name.clone()),
            None => {
                index.insert((o.result, o.text.as_str()), groups.len());
                groups.push(Group {
                    names: vec![o.name.clone()],
                    result: o.result,
                    text: o.text.clone(),
                });
            }
        }
    }
    groups
}

/// Writes host names compactly: names that differ only in a trailing number of the same width
/// fold into ranges (`web-01 web-02 web-03 web-07` -> `web-[01-03,07]`); others are listed as
/// they are, comma-separated.
pub fn fold_names(names: &[String]) -> String {
    // prefix -> (digit width, numbers); names without a trailing number stand alone.
    let mut order: Vec<(String, usize)> = Vec::new();
    let mut numbered: BTreeMap<(String, usize), Vec<u64>> = BTreeMap::new();
    for name in names {
        let digits = name.chars().rev().take_while(char::is_ascii_digit).count();
        let split = name.len() - digits;
        match name[split..].parse::<u64>() {
            Ok(n) if digits > 0 && digits <= 18 => {
                let key = (name[..split].to_owned(), digits);
                let entry = numbered.entry(key.clone()).or_default();
                if entry.is_empty() {
                    order.push(key);
                }
                entry.push(n);
            }
            _ => {
                order.push((name.clone(), usize::MAX));
            }
        }
    }
    let mut parts = Vec::new();
    for key in order {
        if key.1 == usize::MAX {
            parts.push(key.0);
            continue;
        }
        let Some(mut nums) = numbered.remove(&key) else {
            continue;
        };
        let (prefix, width) = key;
        if nums.len() == 1 {
            parts.push(format!("{prefix}{:0width$}", nums[0]));
            continue;
        }
        nums.sort_unstable();
        nums.dedup();
        let mut ranges = Vec::new();
        let mut start = nums[0];
        let mut prev = nums[0];
        for &n in &nums[1..] {
            if n == prev + 1 {
                prev = n;
                continue;
            }
            ranges.push(range(start, prev, width));
            start = n;
            prev = n;
        }
        ranges.push(range(start, prev, width));
        parts.push(format!("{prefix}[{}]", ranges.join(",")));
    }
    parts.join(",")
}

fn range(a: u64, b: u64, width: usize) -> String {
    if a == b {
        format!("{a:0width$}")
    } else {
        format!("{a:0width$}-{b:0width$}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn batches_parse_and_size() {
        assert_eq!(Batch::parse("10"), Ok(Batch::Hosts(10)));
        assert_eq!(Batch::parse("25%"), Ok(Batch::Percent(25)));
        for bad in ["0", "0%", "101%", "x", "-1", ""] {
            assert!(Batch::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Batch::Percent(25).size(50), 13);
        assert_eq!(Batch::Percent(1).size(3), 1);
        assert_eq!(Batch::Hosts(10).size(3), 10);
        assert_eq!(Batch::All.size(0), 1);
    }

    #[test]
    fn names_fold_into_ranges() {
        assert_eq!(
            fold_names(&names(&[
                "web-01", "web-02", "web-03", "web-07", "db", "web-9"
            ])),
            "web-[01-03,07],db,web-9"
        );
        assert_eq!(fold_names(&names(&["a1"])), "a1");
        assert_eq!(fold_names(&names(&["h3", "h1", "h2"])), "h[1-3]");
    }

    #[test]
    fn the_same_result_is_one_group() {
        let o = |name: &str, result: &'static str, text: &str| Outcome {
            name: name.into(),
            addr: String::new(),
            batch: 1,
            result,
            text: text.into(),
            answer: None,
        };
        let groups = collapse(&[
            o("a", "ok", "updated"),
            o("b", "error", "unreachable: refused"),
            o("c", "ok", "updated"),
            o("d", "failed", "updated"),
        ]);
        assert_eq!(groups.len(), 3);
        assert_eq!(groups[0].names, ["a", "c"]);
        assert_eq!(groups[1].names, ["b"]);
        assert_eq!(groups[2].result, "failed");
    }
}
