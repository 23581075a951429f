//! The lodastack agent report: `POST {registry}/api/v1/agent/report` every
//! `registry.report_secs` (10 minutes by default), so the registry knows every agent's version
//! and notices renamed or re-addressed hosts.
//!
//! The body is lodastack's `models.Report` with its JSON names (`uuid`, `newiplist`,
//! `oldiplist`, `ns`, `version`, `newhostname`, `oldhostname`, `agenttype`, `update`).
//! `update` is true when the hostname or the address list differs from what the last report
//! the registry took said; that is kept in `{data_dir}/registry-report.json`, so a rename across
//! a restart is noticed. Only with the HTTP registry; spread per host and backed off like the
//! refresh ([`Spread`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::http::{this_host_ips, HttpSource};
use super::spread::Spread;
use crate::config::RegistrySource;
use crate::state::AgentState;

/// The `agenttype` lodastack's own agent sends; the registry groups agents by it.
pub const AGENT_TYPE: &str = "loda-agent";

/// Where what the last accepted report said is kept, under `data_dir`.
pub const STATE_FILE: &str = "registry-report.json";

/// The state file is a few hundred bytes; anything much larger is not ours.
const MAX_STATE_BYTES: u64 = 1 << 20;

/// lodastack's `models.Report`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// This host's resource id in each of its namespaces.
    pub uuid: Vec<String>,
    /// This host's addresses now.
    pub newiplist: Vec<String>,
    /// The addresses the last accepted report sent (empty before the first).
    pub oldiplist: Vec<String>,
    /// This host's namespaces.
    pub ns: Vec<String>,
    /// The agent's version.
    pub version: String,
    /// The hostname now.
    pub newhostname: String,
    /// The hostname the last accepted report sent, when it was another; else empty.
    pub oldhostname: String,
    /// [`AGENT_TYPE`].
    pub agenttype: String,
    /// Whether the hostname or the addresses changed since the last accepted report.
    pub update: bool,
}

/// What the last report the registry accepted said.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reported {
    /// `newhostname`.
    pub hostname: String,
    /// `newiplist`.
    pub ips: Vec<String>,
}

impl Report {
    /// The report for `hostname` with addresses `ips`, in the namespaces `registered`
    /// (namespace -> resource id), after `last` (`None`: never reported).
    pub fn new(
        hostname: &str,
        ips: &[String],
        registered: &BTreeMap<String, String>,
        last: Option<&Reported>,
    ) -> Report {
        let mut ips = ips.to_vec();
        ips.sort();
        ips.dedup();
        let renamed = last.is_some_and(|l| l.hostname != hostname);
        let readdressed = last.is_some_and(|l| {
            let mut old = l.ips.clone();
            old.sort();
            old.dedup();
            old != ips
        });
        Report {
            uuid: registered
                .values()
                .filter(|id| !id.is_empty())
                .cloned()
                .collect(),
            ns: registered.keys().cloned().collect(),
            oldiplist: last.map(|l| l.ips.clone()).unwrap_or_default(),
            newiplist: ips,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            newhostname: hostname.to_owned(),
            oldhostname: match last {
                Some(l) if renamed => l.hostname.clone(),
                _ => String::new(),
            },
            agenttype: AGENT_TYPE.to_owned(),
            update: renamed || readdressed,
        }
    }

    /// What to keep once the registry accepted this report.
    pub fn reported(&self) -> Reported {
        Reported {
            hostname: self.newhostname.clone(),
            ips: self.newiplist.clone(),
        }
    }
}

/// The state file under a data directory.
pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(STATE_FILE)
}

/// What the last accepted report said; `Ok(None)` when nothing was reported yet.
pub fn load(path: &Path) -> Result<Option<Reported>, String> {
    let shown = || path.display().to_string();
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("agent report state {}: {e}", shown())),
    };
    if meta.len() > MAX_STATE_BYTES {
        return Err(format!(
            "agent report state {}: {} bytes is not a state file; ignoring it",
            shown(),
            meta.len()
        ));
    }
    let text = std::fs::read(path).map_err(|e| format!("agent report state {}: {e}", shown()))?;
    serde_json::from_slice(&text)
        .map(Some)
        .map_err(|e| format!("agent report state {}: unreadable ({e})", shown()))
}

/// Keeps what an accepted report said (atomically).
pub fn store(path: &Path, reported: &Reported) -> Result<(), String> {
    let json = serde_json::to_vec_pretty(reported)
        .map_err(|e| format!("agent report state {}: {e}", path.display()))?;
    super::cache::write_atomic(path, &json)
        .map_err(|e| format!("agent report state {}: {e}", path.display()))
}

/// Reports every `registry.report_secs` at this host's slot until `shutdown`; returns at once
/// unless the registry is HTTP and the report is on.
pub async fn run(state: AgentState, shutdown: CancellationToken) {
    let config = state.config().registry.clone();
    if config.source != RegistrySource::Http || config.report_secs == 0 {
        return;
    }
    let source = match HttpSource::new(
        &config.url,
        state.hostname(),
        Duration::from_secs(config.timeout_secs),
    ) {
        Ok(s) => s,
        Err(e) => {
            warn!(error = %e, "Agent report off: no HTTP client.");
            return;
        }
    };
    let file = path(&state.config().agent.data_dir);
    // Its own phase: a host's report and refresh do not land together.
    let mut spread = Spread::new(
        &format!("{} report", state.hostname()),
        Duration::from_secs(config.report_secs),
        Duration::from_secs(config.splay_secs),
    );
    let mut reported_error: Option<String> = None;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(spread.delay()) => {}
        }
        let outcome = tokio::select! {
            () = shutdown.cancelled() => return,
            outcome = report_once(&state, &source, &file) => outcome,
        };
        spread.record(outcome.is_ok());
        match outcome {
            Ok(report) => {
                if reported_error.take().is_some() {
                    info!("The registry takes the agent report again.");
                }
                if report.update {
                    info!(
                        hostname = %report.newhostname,
                        old_hostname = %report.oldhostname,
                        ips = %report.newiplist.join(","),
                        old_ips = %report.oldiplist.join(","),
                        "Reported a new hostname or address list to the registry."
                    );
                } else {
                    debug!(namespaces = report.ns.len(), "Agent report sent.");
                }
            }
            Err(e) => {
                let failures = spread.failures();
                if reported_error.as_deref() == Some(e.as_str()) {
                    debug!(error = %e, failures, "Agent report failed again.");
                } else {
                    warn!(error = %e, failures, "Agent report failed; it is sent again later.");
                    reported_error = Some(e);
                }
            }
        }
    }
}

/// Builds the report from the host's state now, sends it, and keeps what it said once taken.
async fn report_once(
    state: &AgentState,
    source: &HttpSource,
    file: &Path,
) -> Result<Report, String> {
    let read = file.to_owned();
    let (ips, last) = tokio::task::spawn_blocking(move || (this_host_ips(), load(&read)))
        .await
        .map_err(|e| format!("cannot read this host's addresses: {e}"))?;
    let last = last.unwrap_or_else(|e| {
        warn!(error = %e, "Agent report state unusable; reporting as if for the first time.");
        None
    });
    // Before the registry's first answer since start: the namespaces of the plan in force
    // (the cache), their resource ids not known yet.
    let registered = state.registry().registered().unwrap_or_else(|| {
        state
            .plan()
            .namespace_names()
            .into_iter()
            .map(|ns| (ns, String::new()))
            .collect()
    });
    let report = Report::new(state.hostname(), &ips, &registered, last.as_ref());
    source.report(&report).await.map_err(|e| e.to_string())?;
    let now = report.reported();
    if last.as_ref() != Some(&now) {
        let write = file.to_owned();
        let stored = tokio::task::spawn_blocking(move || store(&write, &now))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r);
        // The registry has the report; the next one says `update` again, which is harmless.
        if let Err(e) = stored {
            warn!(error = %e, "Cannot keep what the agent report said.");
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ips(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    fn registered() -> BTreeMap<String, String> {
        [("web.shop", "r-1"), ("db.shop", "r-2")]
            .into_iter()
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
            .collect()
    }

    #[test]
    fn the_body_has_lodastacks_field_names() {
        let r = Report::new("web-1", &ips(&["10.0.0.2"]), &registered(), None);
        let body = serde_json::to_value(&r).expect("json");
        assert_eq!(
            body,
            json!({
                "uuid": ["r-2", "r-1"],
                "newiplist": ["10.0.0.2"],
                "oldiplist": [],
                "ns": ["db.shop", "web.shop"],
                "version": env!("CARGO_PKG_VERSION"),
                "newhostname": "web-1",
                "oldhostname": "",
                "agenttype": "loda-agent",
                "update": false,
            })
        );
    }

    #[test]
    fn update_says_whether_the_hostname_or_the_addresses_changed() {
        let first = Report::new(
            "web-1",
            &ips(&["10.0.0.2", "10.0.0.1"]),
            &registered(),
            None,
        );
        assert!(!first.update, "nothing to compare with");
        let last = first.reported();
        assert_eq!(last.ips, ips(&["10.0.0.1", "10.0.0.2"]), "sorted");

        let same = Report::new(
            "web-1",
            &ips(&["10.0.0.1", "10.0.0.2"]),
            &registered(),
            Some(&last),
        );
        assert!(!same.update);
        assert_eq!(same.oldhostname, "");
        assert_eq!(same.oldiplist, last.ips);

        let renamed = Report::new("web-9", &last.ips, &registered(), Some(&last));
        assert!(renamed.update);
        assert_eq!(renamed.oldhostname, "web-1");
        assert_eq!(renamed.newhostname, "web-9");

        let moved = Report::new("web-1", &ips(&["10.0.0.3"]), &registered(), Some(&last));
        assert!(moved.update);
        assert_eq!(moved.oldhostname, "", "the name did not change");
        assert_eq!(moved.oldiplist, ips(&["10.0.0.1", "10.0.0.2"]));
        assert_eq!(moved.newiplist, ips(&["10.0.0.3"]));
    }

    #[test]
    fn the_state_file_round_trips_and_a_bad_one_is_an_error() {
        let dir = tempfile::tempdir().expect("tmp");
        let file = path(dir.path());
        assert_eq!(load(&file), Ok(None));
        let r = Reported {
            hostname: "h".into(),
            ips: ips(&["10.1.1.1"]),
        };
        store(&file, &r).expect("store");
        assert_eq!(load(&file), Ok(Some(r)));
        std::fs::write(&file, "{not json").expect("write");
        let e = load(&file).expect_err("unreadable");
        assert!(e.contains(STATE_FILE) && e.contains("unreadable"), "{e}");
    }

    #[tokio::test]
    async fn the_registry_fixture_receives_the_report_and_a_refusal_is_an_error() {
        use support::registry_server::{Behaviour, RegistryServer};
        let server = RegistryServer::start();
        let source =
            HttpSource::new(&server.url(), "web-1", Duration::from_secs(5)).expect("source");
        let report = Report::new("web-1", &ips(&["10.0.0.2"]), &registered(), None);
        source.report(&report).await.expect("accepted");
        let got = server.reports();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0], serde_json::to_value(&report).expect("json"));

        server.set_behaviour(Behaviour::StatusError(500));
        let e = source.report(&report).await.expect_err("refused");
        assert!(
            e.to_string().contains("/api/v1/agent/report") && e.to_string().contains("500"),
            "{e}"
        );
    }
}
