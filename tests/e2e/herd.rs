//! Agents at fleet scale: real agents against the HTTP registry fixture. A fleet restarted
//! together spreads its registry calls, a failing registry is backed off, and the agent report
//! tells the registry about a renamed host.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::registry_server::{Behaviour, RegistryServer};
use support::{wait_until, Agent, AgentBuilder};

const NS_PATH: &str = "/api/v1/agent/ns";

/// Every system family off: the agents stay quiet on a 2-core machine running 40 of them.
fn quiet_items() -> Value {
    let families = [
        "CPU",
        "MEM",
        "DISK",
        "NET",
        "FS",
        "KERNEL",
        "TIME",
        "NETSTAT",
        "PRESSURE",
        "VMSTAT",
        "CONNTRACK",
        "SOFTNET",
    ];
    Value::Array(
        families
            .iter()
            .map(|f| json!({"measurement_type": f, "interval": "0"}))
            .collect(),
    )
}

/// `registry_keys` may set `timeout_secs` (2 s unless it does).
fn http_agent(server: &RegistryServer, hostname: &str, registry_keys: &str) -> AgentBuilder {
    let timeout = if registry_keys.contains("timeout_secs") {
        ""
    } else {
        "timeout_secs = 2\n"
    };
    AgentBuilder::new()
        .agent_keys(&format!("hostname = \"{hostname}\""))
        .config(&format!(
            "[registry]\nsource = \"http\"\nurl = \"{}\"\n{timeout}{registry_keys}\n[output]\nflush_ms = 100",
            server.url()
        ))
}

/// Starts every builder at the same time (one thread each), in the given directories or fresh
/// ones.
fn start_together(builders: Vec<(AgentBuilder, Option<tempfile::TempDir>)>) -> Vec<Agent> {
    std::thread::scope(|s| {
        let started: Vec<_> = builders
            .into_iter()
            .map(|(b, dir)| {
                s.spawn(move || match dir {
                    Some(dir) => b.start_in(dir),
                    None => b.start(),
                })
            })
            .collect();
        started
            .into_iter()
            .map(|h| h.join().expect("agent start thread"))
            .collect()
    })
}

/// Per whole second since `from`, how many of `times` fell in it, over `seconds` seconds.
fn per_second(times: &[Instant], from: Instant, seconds: usize) -> Vec<usize> {
    let mut bins = vec![0; seconds];
    for t in times {
        if let Some(d) = t.checked_duration_since(from) {
            if let Some(bin) = bins.get_mut(d.as_secs() as usize) {
                *bin += 1;
            }
        }
    }
    bins
}

#[test]
fn forty_agents_started_together_spread_their_registry_calls() {
    let _alone = support::machine_wide();
    const AGENTS: usize = 40;
    const PERIOD: u64 = 5;
    const REFRESHES: u64 = 5;
    let server = RegistryServer::start();
    server.set_namespace("e2e.herd", quiet_items());
    // A fresh fleet has nothing cached, so each agent asks at once. On this (slow, shared)
    // machine 40 agents take seconds to come up; the fixture holds their first calls and, once
    // all are up and the machine is quiet again, answers them together, so their clocks start
    // in the same instant as on a fast machine. (Agents that count their period from that
    // answer call in the same second every period: with the agent's clock changed so, this
    // test saw 40 calls in one second of every five, 6.2x the mean, and failed.)
    server.hold_ns_calls();
    let builders: Vec<(AgentBuilder, Option<tempfile::TempDir>)> = (0..AGENTS)
        .map(|i| {
            let keys = format!("refresh_secs = {PERIOD}\nreport_secs = 0\ntimeout_secs = 120");
            (http_agent(&server, &format!("herd-{i:02}"), &keys), None)
        })
        .collect();
    let agents = start_together(builders);
    assert!(
        wait_until(Duration::from_secs(100), || server.held_ns_calls()
            >= AGENTS),
        "not every agent asked the registry: {} calls",
        server.held_ns_calls()
    );
    std::thread::sleep(Duration::from_secs(3));
    let opened = server.answer_held_ns_calls();

    let seconds = (PERIOD * REFRESHES) as usize;
    let end = opened + Duration::from_secs(PERIOD * REFRESHES);
    std::thread::sleep(end.saturating_duration_since(Instant::now()) + Duration::from_secs(1));
    let bins = per_second(&server.arrivals(NS_PATH), opened, seconds);
    let total: usize = bins.iter().sum();
    let mean = total as f64 / seconds as f64;
    let busiest = bins.iter().max().copied().unwrap_or(0);
    eprintln!(
        "herd: {total} namespace calls in the {seconds} s after the first answer, mean {mean:.1}/s, busiest second {busiest}: {bins:?}"
    );
    assert!(
        busiest as f64 <= 2.0 * mean,
        "the busiest second holds {busiest} calls, more than twice the mean {mean:.1}: {bins:?}"
    );

    // Spread, not skipped: every agent refreshed on each period.
    let mut per_host: BTreeMap<String, usize> = BTreeMap::new();
    for r in server.requests() {
        if r.path == NS_PATH && r.at >= opened {
            *per_host
                .entry(r.body["hostname"].as_str().unwrap_or_default().to_owned())
                .or_default() += 1;
        }
    }
    assert_eq!(per_host.len(), AGENTS, "{per_host:?}");
    assert!(
        per_host.values().all(|n| *n as u64 >= REFRESHES - 1),
        "some agent skipped refreshes: {per_host:?}"
    );
    assert!(
        server.reports().is_empty(),
        "report_secs = 0 sends no report"
    );
    for a in &agents {
        let reg = a.status()["registry"].clone();
        assert_eq!(reg["last_error"], Value::Null, "{reg}");
    }
}

/// FNV-1a, 64 bits, as the agent computes a host's phase.
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[test]
fn a_restarted_agent_with_a_cached_plan_asks_at_its_own_slot() {
    const PERIOD_MS: u64 = 20_000;
    let server = RegistryServer::start();
    server.set_namespace("e2e.slot", quiet_items());
    let host = "slot-1";
    let builder = http_agent(&server, host, "refresh_secs = 20\nreport_secs = 0");
    let mut agent = builder.clone().start();
    assert!(
        wait_until(Duration::from_secs(15), || agent
            .data_dir()
            .join("registry-cache.json")
            .exists()),
        "{}",
        agent.stderr()
    );
    assert!(agent.stop(), "{}", agent.stderr());
    let dir = std::mem::replace(&mut agent.dir, tempfile::tempdir().expect("tempdir"));
    let before = server.arrivals(NS_PATH).len();
    let restarted = Instant::now();
    let agent = builder.start_in(dir);
    assert!(
        wait_until(Duration::from_secs(30), || server.arrivals(NS_PATH).len()
            > before),
        "{}",
        agent.stderr()
    );
    let first = server.arrivals(NS_PATH)[before];
    // The same instant on the wall clock, which the slots are on.
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64
        - first.elapsed().as_millis() as u64;
    let phase = fnv1a(host) % PERIOD_MS;
    let past_slot = (wall % PERIOD_MS + PERIOD_MS - phase) % PERIOD_MS;
    // The random part is up to a tenth of the period (2 s); allow for a loaded machine.
    assert!(
        past_slot <= 2_000 + 500,
        "the first call came {past_slot} ms past the host's slot ({phase} ms into each 20 s), {:?} after the restart",
        first - restarted
    );
    assert_eq!(agent.status()["registry"]["last_error"], Value::Null);
}

#[test]
fn a_failing_registry_is_called_less_and_less_until_it_answers() {
    let server = RegistryServer::start();
    server.set_namespace("e2e.backoff", quiet_items());
    let agent = http_agent(&server, "backoff-1", "refresh_secs = 1\nreport_secs = 0").start();
    assert!(
        wait_until(Duration::from_secs(15), || agent
            .data_dir()
            .join("registry-cache.json")
            .exists()),
        "{}",
        agent.stderr()
    );

    server.set_behaviour(Behaviour::HttpError(500));
    let failing = Instant::now();
    std::thread::sleep(Duration::from_secs(14));
    let calls = server
        .arrivals(NS_PATH)
        .iter()
        .filter(|t| **t >= failing)
        .count();
    // Every second would be 14; backed off (1, 1, 2, 4, 8 s apart) it is about 5.
    assert!(
        (3..=7).contains(&calls),
        "{calls} calls to a failing registry in 14 s:\n{}",
        agent.stderr()
    );
    let failures = agent.status()["registry"]["failures"].as_u64().unwrap_or(0);
    assert!(failures as usize >= calls - 1, "{failures} vs {calls}");

    // It answers again: an operator's /update ends the backoff, the clock is back to 1 s
    // (still backed off, the next call would be 16 s away). A loaded machine may miss a slot.
    server.set_behaviour(Behaviour::Plan);
    let (code, body) = agent.get("/update");
    assert_eq!(code, 200, "{body}");
    let back = Instant::now();
    std::thread::sleep(Duration::from_secs(6));
    let calls = server
        .arrivals(NS_PATH)
        .iter()
        .filter(|t| **t > back)
        .count();
    assert!(
        calls >= 3,
        "{calls} refreshes in 6 s after the registry came back:\n{}",
        agent.stderr()
    );
}

/// The reports whose `newhostname` is `host`.
fn reports_from(server: &RegistryServer, host: &str) -> Vec<Value> {
    server
        .reports()
        .into_iter()
        .filter(|r| r["newhostname"] == host)
        .collect()
}

#[test]
fn the_agent_report_tells_the_registry_about_a_renamed_host() {
    let server = RegistryServer::start();
    server.set_namespace("e2e.report", quiet_items());
    let keys = "refresh_secs = 1\nreport_secs = 1";
    let mut agent = http_agent(&server, "rep-old", keys).start();
    // Two reports after the namespace answer: the second has something to compare with.
    assert!(
        wait_until(Duration::from_secs(20), || reports_from(&server, "rep-old")
            .iter()
            .filter(|r| r["ns"] == json!(["e2e.report"]))
            .count()
            >= 2),
        "{:?}\n{}",
        server.reports(),
        agent.stderr()
    );
    let first = &reports_from(&server, "rep-old")[0];
    assert_eq!(first["update"], false, "nothing to compare with: {first}");
    assert_eq!(first["oldiplist"], json!([]), "{first}");
    let last = reports_from(&server, "rep-old")
        .into_iter()
        .rfind(|r| r["ns"] == json!(["e2e.report"]))
        .expect("a report after the namespace answer");
    assert_eq!(last["uuid"], json!(["resource-0"]), "{last}");
    assert_eq!(last["agenttype"], "loda-agent", "{last}");
    assert_eq!(last["version"], env!("CARGO_PKG_VERSION"), "{last}");
    assert_eq!(last["update"], false, "{last}");
    assert_eq!(last["oldhostname"], "", "{last}");
    assert_eq!(last["newiplist"], last["oldiplist"], "{last}");
    let ips = last["newiplist"].as_array().cloned().unwrap_or_default();
    assert!(
        ips.iter().all(|ip| ip
            .as_str()
            .is_some_and(|ip| !ip.starts_with("127.") && ip != "::1")),
        "{last}"
    );
    let state = agent.data_dir().join("registry-report.json");
    assert!(state.exists());

    // The host is renamed in the config and the agent restarted on the same data.
    assert!(agent.stop(), "{}", agent.stderr());
    let dir = std::mem::replace(&mut agent.dir, tempfile::tempdir().expect("tempdir"));
    let agent = http_agent(&server, "rep-new", keys).start_in(dir);
    assert!(
        wait_until(Duration::from_secs(20), || reports_from(&server, "rep-new")
            .len()
            >= 2),
        "{:?}\n{}",
        server.reports(),
        agent.stderr()
    );
    let renamed = reports_from(&server, "rep-new");
    assert_eq!(renamed[0]["update"], true, "{}", renamed[0]);
    assert_eq!(renamed[0]["oldhostname"], "rep-old", "{}", renamed[0]);
    assert_eq!(renamed[0]["oldiplist"], last["newiplist"], "{}", renamed[0]);
    // Taken by the registry, the change is reported once.
    assert_eq!(renamed[1]["update"], false, "{}", renamed[1]);
    assert_eq!(renamed[1]["oldhostname"], "", "{}", renamed[1]);
    assert!(
        agent.stderr().contains("Reported a new hostname"),
        "{}",
        agent.stderr()
    );
    let kept: Value =
        serde_json::from_str(&std::fs::read_to_string(&state).expect("state")).expect("json");
    assert_eq!(kept["hostname"], "rep-new", "{kept}");
}
