//! The registry and the scheduler, end to end: the real agent with a file registry and with the
//! HTTP registry fixture; what runs follows the registry, and a registry that fails never stops
//! what runs.

use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::registry_server::{Behaviour, RegistryServer};
use support::{wait_until, Agent, AgentBuilder};

/// A loopback listener for port checks to connect to.
fn listener() -> (TcpListener, u16) {
    let l = TcpListener::bind("127.0.0.1:0").expect("listener");
    let port = l.local_addr().expect("addr").port();
    (l, port)
}

/// Lines of `PORT.<name>.<port>` in a namespace's output file.
fn port_points(agent: &Agent, ns: &str, name: &str, port: u16) -> usize {
    let prefix = format!("PORT.{name}.{port},");
    agent
        .output_file(ns)
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .count()
}

fn namespaces(agent: &Agent) -> Vec<String> {
    let (code, body) = agent.get("/me/ns");
    assert_eq!(code, 200, "{body}");
    serde_json::from_value(body["namespaces"].clone()).expect("namespace list")
}

fn strings(v: &Value) -> Vec<String> {
    serde_json::from_value(v.clone()).unwrap_or_default()
}

fn port_ns(ns: &str, name: &str, port: u16) -> String {
    format!(
        "[[namespace]]\nname = \"{ns}\"\nports = [{{ name = \"{name}\", port = {port}, connect_timeout = 1, interval = 1 }}]\n"
    )
}

#[test]
fn editing_the_file_registry_and_calling_update_changes_what_runs() {
    let (_l, port) = listener();
    let agent = AgentBuilder::new()
        .config("[output]\nflush_ms = 100")
        .registry(&port_ns("e2e.a", "web", port))
        .start();
    assert!(
        wait_until(Duration::from_secs(15), || port_points(
            &agent, "e2e.a", "web", port
        ) > 0),
        "no port check point:\n{}",
        agent.stderr()
    );
    assert!(
        agent
            .output_file("e2e.a")
            .contains(&format!("PORT.web.{port},host=")),
        "{}",
        agent.output_file("e2e.a")
    );
    assert_eq!(namespaces(&agent), ["e2e.a"]);
    let jobs = agent.status()["jobs"].clone();
    assert_eq!(jobs["ports"], 1, "{jobs}");
    assert_eq!(jobs["system"], 12, "one job per system family: {jobs}");

    // Add a namespace (with a process check on the agent itself, and MEM every second) and a
    // namespace that cannot be a topic.
    let exe = support::bin("agent").canonicalize().expect("agent binary");
    agent.write_registry(&format!(
        "{}{}intervals = {{ MEM = 1 }}\nprocs = [{{ name = \"agent\", bin_path = \"{}\", interval = 1 }}]\n[[namespace]]\nname = \"bad ns\"\n",
        port_ns("e2e.a", "web", port),
        port_ns("e2e.b", "db", port),
        exe.display()
    ));
    let (code, body) = agent.get("/update");
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["ok"], true);
    assert_eq!(strings(&body["namespaces"]), ["e2e.a", "e2e.b"]);
    assert_eq!(
        body["started"], 2,
        "only the new port and process checks start: {body}"
    );
    assert_eq!(body["stopped"], 0, "{body}");
    assert_eq!(body["unchanged"], 1, "the web check is left alone: {body}");
    let problems = strings(&body["problems"]).join("\n");
    assert!(problems.contains("\"bad ns\""), "{problems}");
    assert_eq!(namespaces(&agent), ["e2e.a", "e2e.b"]);
    assert!(
        wait_until(Duration::from_secs(15), || port_points(
            &agent, "e2e.b", "db", port
        ) > 0),
        "the new namespace's check does not run:\n{}",
        agent.stderr()
    );
    // The process check finds the agent; MEM, collected once, goes to every namespace.
    let procnum = |agent: &Agent| -> f64 {
        agent
            .output_file("e2e.b")
            .lines()
            .find_map(|l| l.strip_prefix("PROC.agent.procnum,"))
            .and_then(|rest| rest.split(' ').nth(1))
            .and_then(|v| v.strip_prefix("value="))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    assert!(
        wait_until(Duration::from_secs(15), || procnum(&agent) >= 1.0),
        "no PROC.agent.procnum >= 1:\n{}",
        agent.output_file("e2e.b")
    );
    assert!(
        wait_until(Duration::from_secs(15), || ["e2e.a", "e2e.b"].iter().all(
            |ns| agent
                .output_file(ns)
                .lines()
                .any(|l| l.starts_with("mem.total,"))
        )),
        "MEM did not reach both namespaces"
    );
    let status = agent.status();
    assert!(
        strings(&status["registry"]["problems"])
            .join("\n")
            .contains("\"bad ns\""),
        "{status}"
    );
    assert_eq!(status["jobs"]["ports"], 2);
    assert_eq!(status["jobs"]["procs"], 1);

    // Remove the first namespace: its check stops.
    agent.write_registry(&port_ns("e2e.b", "db", port));
    let (code, body) = agent.get("/update");
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        body["stopped"], 2,
        "web in e2e.a and the process check: {body}"
    );
    assert_eq!(namespaces(&agent), ["e2e.b"]);
    std::thread::sleep(Duration::from_millis(500));
    let settled = port_points(&agent, "e2e.a", "web", port);
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        port_points(&agent, "e2e.a", "web", port),
        settled,
        "a removed check keeps running"
    );
    assert!(port_points(&agent, "e2e.b", "db", port) > 0);
    assert_eq!(agent.status()["registry"]["problems"], json!([]));
}

/// Accepts connections on a loopback port and records when each came, for 90 s at most.
struct Clock {
    port: u16,
    accepts: Arc<Mutex<Vec<Instant>>>,
    stop: Arc<AtomicBool>,
}

impl Clock {
    fn start() -> Clock {
        let (l, port) = listener();
        l.set_nonblocking(true).expect("nonblocking");
        let accepts = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, s) = (Arc::clone(&accepts), Arc::clone(&stop));
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(90);
            while !s.load(Ordering::Relaxed) && Instant::now() < deadline {
                match l.accept() {
                    Ok(_) => a.lock().expect("accepts").push(Instant::now()),
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        Clock {
            port,
            accepts,
            stop,
        }
    }

    fn times(&self) -> Vec<Instant> {
        self.accepts.lock().expect("accepts").clone()
    }
}

impl Drop for Clock {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[test]
fn an_unchanged_job_keeps_its_timing_across_an_unrelated_change() {
    let clock = Clock::start();
    let port = clock.port;
    let job = |ns: &str| {
        format!(
            "[[namespace]]\nname = \"{ns}\"\nports = [{{ name = \"clock\", port = {port}, connect_timeout = 1, interval = 2 }}]\n"
        )
    };
    let agent = AgentBuilder::new()
        .config("[output]\nflush_ms = 100")
        .registry(&job("e2e.t1"))
        .start();
    assert!(
        wait_until(Duration::from_secs(20), || clock.times().len() >= 3),
        "the check does not connect:\n{}",
        agent.stderr()
    );
    let started_before = agent.status()["jobs"]["started_total"]
        .as_u64()
        .expect("started_total");

    // An unrelated change: another namespace with its own check of an unrelated port.
    let (_other, other_port) = listener();
    agent.write_registry(&format!(
        "{}{}",
        job("e2e.t1"),
        port_ns("e2e.t2", "x", other_port)
    ));
    let (code, body) = agent.get("/update");
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["started"], 1, "{body}");
    assert_eq!(body["unchanged"], 1, "{body}");
    let changed_at = Instant::now();
    assert_eq!(
        agent.status()["jobs"]["started_total"],
        started_before + 1,
        "only the new job started; the clock job was not restarted"
    );

    assert!(
        wait_until(Duration::from_secs(20), || {
            clock.times().iter().filter(|t| **t > changed_at).count() >= 3
        }),
        "the check stopped connecting after the change:\n{}",
        agent.stderr()
    );
    // Same phase: every connect, before and after the change, is on the 2 s clock of the first.
    // A restarted job would pick a new random offset within its interval.
    let times = clock.times();
    let first = times[0];
    let off: Vec<i64> = times
        .iter()
        .map(|t| {
            let ms = (*t - first).as_millis() as i64 % 2000;
            if ms > 1000 {
                ms - 2000
            } else {
                ms
            }
        })
        .collect();
    assert!(
        off.iter().all(|ms| ms.abs() < 250),
        "connects drift off the job's clock (ms off phase): {off:?}"
    );
}

fn http_agent(server: &RegistryServer, refresh_secs: u64) -> AgentBuilder {
    AgentBuilder::new()
        .agent_keys("hostname = \"e2e-host\"")
        .config(&format!(
            "[registry]\nsource = \"http\"\nurl = \"{}\"\ntimeout_secs = 1\nrefresh_secs = {refresh_secs}\n[output]\nflush_ms = 100",
            server.url()
        ))
}

fn port_item(name: &str, port: u16) -> Value {
    json!({"measurement_type": "PORT", "name": name, "port": port.to_string(),
           "connect_timeout": "1", "interval": "1"})
}

#[test]
fn http_registry_happy_path_with_periodic_refresh() {
    let (_l, port) = listener();
    let server = RegistryServer::start();
    server.set_namespace(
        "e2e.h1",
        json!([
            port_item("web", port),
            {"measurement_type": "CPU", "interval": "5"},
            {"measurement_type": "PLUGIN", "name": "a", "git": "https://git.example/ops/stats.git", "interval": "0"},
            {"measurement_type": "PLUGIN", "name": "b", "git": "git@other.example:x/stats.git", "interval": "0"},
            {"measurement_type": "SNMP", "interval": "10"},
        ]),
    );
    let agent = http_agent(&server, 1).start();
    assert!(
        wait_until(Duration::from_secs(15), || namespaces(&agent) == ["e2e.h1"]),
        "{}",
        agent.stderr()
    );
    assert!(
        wait_until(Duration::from_secs(15), || port_points(
            &agent, "e2e.h1", "web", port
        ) > 0),
        "{}",
        agent.stderr()
    );
    let reg = agent.status()["registry"].clone();
    assert_eq!(reg["source"], "http");
    assert_eq!(reg["location"], server.url());
    assert!(reg["last_success"].as_i64().is_some(), "{reg}");
    assert_eq!(reg["last_error"], Value::Null, "{reg}");
    assert_eq!(
        reg["items"], 2,
        "the port check and the first plugin: {reg}"
    );
    let problems = strings(&reg["problems"]);
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(
        problems
            .iter()
            .any(|p| p.contains("git@other.example:x/stats.git")
                && p.contains("configuration error")),
        "{problems:?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.contains("unknown measurement_type \"SNMP\"")),
        "{problems:?}"
    );

    // What the agent said about itself.
    let requests = server.requests();
    let ns_call = requests
        .iter()
        .find(|r| r.method == "POST" && r.path == "/api/v1/agent/ns")
        .expect("a namespace call");
    assert_eq!(ns_call.body["hostname"], "e2e-host");
    let ips = ns_call.body["ip"].as_str().expect("ip is a string");
    assert!(
        ips.split(',')
            .all(|ip| !ip.starts_with("127.") && ip != "::1"),
        "loopback sent: {ips}"
    );
    assert!(ns_call.body["sn"].is_string(), "{}", ns_call.body);
    let res_call = requests
        .iter()
        .find(|r| r.method == "GET" && r.path == "/api/v1/agent/resource")
        .expect("a resource call");
    assert_eq!(res_call.query.get("ns").map(String::as_str), Some("e2e.h1"));
    assert_eq!(
        res_call.query.get("type").map(String::as_str),
        Some("collect")
    );

    // The periodic refresh picks up a new namespace without /update.
    server.set_namespace("e2e.h2", json!([port_item("db", port)]));
    assert!(
        wait_until(Duration::from_secs(15), || namespaces(&agent)
            == ["e2e.h1", "e2e.h2"]),
        "{}",
        agent.stderr()
    );
    assert!(
        wait_until(Duration::from_secs(15), || port_points(
            &agent, "e2e.h2", "db", port
        ) > 0),
        "{}",
        agent.stderr()
    );
    // Several refreshes later, each problem was logged once, not once per refresh.
    let posts = |s: &RegistryServer| s.requests().iter().filter(|r| r.method == "POST").count();
    let now = posts(&server);
    assert!(wait_until(Duration::from_secs(15), || posts(&server) >= now + 3));
    let logged = agent.stderr().matches("unknown measurement_type").count();
    assert_eq!(logged, 1, "{}", agent.stderr());
    assert_eq!(
        agent.status()["registry"]["skipped_total"],
        2,
        "counted as logged: once each"
    );
}

#[test]
fn a_failing_registry_keeps_the_plan_running_and_shows_the_error() {
    let (_l, port) = listener();
    let mut server = RegistryServer::start();
    server.set_namespace("e2e.g1", json!([port_item("web", port)]));
    let agent = http_agent(&server, 3600).start();
    assert!(
        wait_until(Duration::from_secs(15), || port_points(
            &agent, "e2e.g1", "web", port
        ) > 0),
        "{}",
        agent.stderr()
    );
    let cases = [
        (Behaviour::HttpError(500), "HTTP 500"),
        (
            Behaviour::StatusError(500),
            "httpstatus 500 fixture: database is down",
        ),
        (Behaviour::BadJson, "not the registry protocol"),
        (Behaviour::BadJson, "not the registry protocol"),
        (Behaviour::WrongTypes, "not the registry protocol"),
        (
            Behaviour::Slow(Duration::from_secs(3)),
            "no answer within registry.timeout_secs",
        ),
    ];
    for (i, (behaviour, expected)) in cases.iter().enumerate() {
        server.set_behaviour(behaviour.clone());
        let before = port_points(&agent, "e2e.g1", "web", port);
        let (code, body) = agent.get("/update");
        assert_eq!(code, 502, "{behaviour:?}: {body}");
        let error = body["error"].as_str().unwrap_or_default();
        assert!(
            error.contains(expected) && error.contains("keeps running"),
            "{behaviour:?}: {error}"
        );
        assert_eq!(namespaces(&agent), ["e2e.g1"], "{behaviour:?}");
        let status = agent.status();
        let reg = &status["registry"];
        assert!(
            reg["last_error"]
                .as_str()
                .unwrap_or_default()
                .contains(expected),
            "{behaviour:?}: {reg}"
        );
        assert_eq!(reg["failures"], i as u64 + 1, "{reg}");
        assert!(reg["last_error_at"].as_i64().is_some(), "{reg}");
        assert_eq!(
            status["jobs"]["ports"], 1,
            "{behaviour:?}: the check still runs"
        );
        assert!(
            wait_until(Duration::from_secs(10), || port_points(
                &agent, "e2e.g1", "web", port
            ) > before),
            "{behaviour:?}: the check stopped sending"
        );
    }
    // Logged once per distinct error: the repeated bad JSON is not logged twice.
    let warned = agent.stderr().matches("Registry refresh failed").count();
    assert_eq!(warned, cases.len() - 1, "{}", agent.stderr());

    // Down: nothing listens.
    let addr = server.addr();
    server.stop();
    let (code, body) = agent.get("/update");
    assert_eq!(code, 502, "{body}");
    assert_eq!(namespaces(&agent), ["e2e.g1"]);

    // Back: the next refresh succeeds and clears the error.
    let server = RegistryServer::start_on(&addr.to_string());
    server.set_namespace("e2e.g1", json!([port_item("web", port)]));
    let (code, body) = agent.get("/update");
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        body["unchanged"].as_u64().map(|n| n > 0),
        Some(true),
        "{body}"
    );
    let reg = agent.status()["registry"].clone();
    assert_eq!(reg["last_error"], Value::Null, "{reg}");
    assert_eq!(reg["from_cache"], false, "{reg}");
}

#[test]
fn a_namespace_whose_call_fails_keeps_running_and_the_others_still_refresh() {
    let (_l, port) = listener();
    let server = RegistryServer::start();
    server.set_namespace("e2e.p1", json!([port_item("web", port)]));
    server.set_namespace("e2e.p2", json!([port_item("db", port)]));
    let agent = http_agent(&server, 3600).start();
    assert!(
        wait_until(Duration::from_secs(15), || port_points(
            &agent, "e2e.p2", "db", port
        ) > 0),
        "{}",
        agent.stderr()
    );

    // p2's own call fails while p1 changes and p3 appears (its call failing too).
    server.set_namespace_behaviour("e2e.p2", Behaviour::HttpError(500));
    server.set_namespace(
        "e2e.p1",
        json!([port_item("web", port), port_item("api", port)]),
    );
    server.set_namespace("e2e.p3", json!([port_item("cache", port)]));
    server.set_namespace_behaviour("e2e.p3", Behaviour::StatusError(500));
    let (code, body) = agent.get("/update");
    assert_eq!(code, 200, "{body}");
    assert_eq!(namespaces(&agent), ["e2e.p1", "e2e.p2"], "p3 waits");
    let problems = strings(&body["problems"]);
    assert!(
        problems.iter().any(|p| p.starts_with("namespace \"e2e.p2\": not refreshed")
            && p.contains("HTTP 500")),
        "{problems:?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("namespace \"e2e.p3\": not started")
                && p.contains("httpstatus 500")),
        "{problems:?}"
    );
    let reg = agent.status()["registry"].clone();
    assert_eq!(strings(&reg["problems"]), problems, "{reg}");
    assert_eq!(
        reg["last_error"],
        Value::Null,
        "the registry answered: {reg}"
    );
    assert_eq!(reg["items"], 3, "p1's two checks and p2's one: {reg}");
    let before = port_points(&agent, "e2e.p2", "db", port);
    assert!(
        wait_until(Duration::from_secs(15), || port_points(
            &agent, "e2e.p1", "api", port
        ) > 0
            && port_points(&agent, "e2e.p2", "db", port) > before),
        "p1's new check runs and p2's keeps running:\n{}",
        agent.stderr()
    );

    // Every namespace failing is the registry failing: the refresh fails, nothing changes.
    server.set_namespace_behaviour("e2e.p1", Behaviour::HttpError(503));
    server.set_namespace_behaviour("e2e.p2", Behaviour::HttpError(503));
    let (code, body) = agent.get("/update");
    assert_eq!(code, 502, "{body}");
    assert_eq!(namespaces(&agent), ["e2e.p1", "e2e.p2"]);

    // Answering again: p3 starts and the problems are gone.
    for ns in ["e2e.p1", "e2e.p2", "e2e.p3"] {
        server.set_namespace_behaviour(ns, Behaviour::Plan);
    }
    let (code, body) = agent.get("/update");
    assert_eq!(code, 200, "{body}");
    assert_eq!(namespaces(&agent), ["e2e.p1", "e2e.p2", "e2e.p3"]);
    assert_eq!(strings(&body["problems"]), Vec::<String>::new(), "{body}");
}

#[test]
fn a_restart_with_the_registry_down_runs_the_cached_plan() {
    let (_l, port) = listener();
    let mut server = RegistryServer::start();
    server.set_namespace("e2e.c1", json!([port_item("web", port)]));
    // With a cache the restarted agent asks at its slot (within a period), not at once.
    let agent = http_agent(&server, 2).start();
    assert!(
        wait_until(Duration::from_secs(15), || namespaces(&agent) == ["e2e.c1"]),
        "{}",
        agent.stderr()
    );
    assert!(agent.data_dir().join("registry-cache.json").exists());
    server.stop();

    let agent = agent.restart(true);
    assert!(
        wait_until(Duration::from_secs(15), || namespaces(&agent) == ["e2e.c1"]),
        "the cached plan is not in force:\n{}",
        agent.stderr()
    );
    let before = port_points(&agent, "e2e.c1", "web", port);
    assert!(
        wait_until(Duration::from_secs(15), || port_points(
            &agent, "e2e.c1", "web", port
        ) > before),
        "the cached plan's check does not run:\n{}",
        agent.stderr()
    );
    let reg = agent.status()["registry"].clone();
    assert!(
        wait_until(Duration::from_secs(10), || agent.status()["registry"]
            ["failures"]
            .as_u64()
            .unwrap_or(0)
            >= 1),
        "{reg}"
    );
    let reg = agent.status()["registry"].clone();
    assert_eq!(reg["from_cache"], true, "{reg}");
    assert!(
        reg["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains(&server_url_of(&reg)),
        "{reg}"
    );
    assert_eq!(reg["last_success"], Value::Null, "{reg}");
}

fn server_url_of(reg: &Value) -> String {
    reg["location"].as_str().unwrap_or_default().to_owned()
}

#[test]
fn a_hanging_registry_does_not_hold_up_shutdown() {
    let server = RegistryServer::start();
    server.set_namespace("e2e.s1", json!([]));
    let mut agent = AgentBuilder::new()
        .config(&format!(
            "[registry]\nsource = \"http\"\nurl = \"{}\"\ntimeout_secs = 50\nrefresh_secs = 1\n",
            server.url()
        ))
        .start();
    assert!(
        wait_until(Duration::from_secs(15), || namespaces(&agent) == ["e2e.s1"]),
        "{}",
        agent.stderr()
    );
    // The next periodic refresh hangs in the registry.
    server.set_behaviour(Behaviour::Slow(Duration::from_secs(60)));
    let asked = server.requests().len();
    assert!(
        wait_until(Duration::from_secs(10), || server.requests().len() > asked),
        "the agent did not refresh"
    );
    assert!(agent.stop(), "clean exit:\n{}", agent.stderr());
    assert!(
        !agent.stderr().contains("did not stop in time"),
        "the refresh in flight held up shutdown:\n{}",
        agent.stderr()
    );
}
