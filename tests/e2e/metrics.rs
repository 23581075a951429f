//! `GET /metrics` scraped by a real Prometheus (Debian's `prometheus`, started on loopback):
//! the scrape is healthy with the agent's token and refused without it, the counters Prometheus
//! stores are the ones `/me/status` shows after known traffic, and `promtool` finds nothing wrong
//! with the document.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::{free_port, quiet_namespaces, wait_until, Agent, AgentBuilder};

const PROMETHEUS: &str = "/usr/bin/prometheus";
const PROMTOOL: &str = "/usr/bin/promtool";

/// A Prometheus server with its config and storage in a temporary directory, killed on drop.
struct Prometheus {
    child: Child,
    addr: String,
    dir: tempfile::TempDir,
}

impl Prometheus {
    /// Scrapes every second: the agent as job `agent` with the token in `token_file`, and the
    /// same agent as job `no_token` with `wrong_token_file`.
    fn start(target: &str, token_file: &Path, wrong_token_file: &Path) -> Prometheus {
        assert!(
            Path::new(PROMETHEUS).exists(),
            "{PROMETHEUS} is missing: apt-get install prometheus (.ci/run does)"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
             scrape_configs:\n\
             - job_name: agent\n  static_configs:\n  - targets: ['{target}']\n\
             \x20 authorization:\n    type: Bearer\n    credentials_file: {}\n\
             - job_name: wrong_token\n  static_configs:\n  - targets: ['{target}']\n\
             \x20 authorization:\n    type: Bearer\n    credentials_file: {}\n",
            token_file.display(),
            wrong_token_file.display()
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).expect("write prometheus.yml");
        let addr = format!("127.0.0.1:{}", free_port());
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log");
        let child = Command::new(PROMETHEUS)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        Prometheus { child, addr, dir }
    }

    fn api(&self, path_and_query: &str) -> Option<Value> {
        reqwest::blocking::Client::new()
            .get(format!("http://{}{path_and_query}", self.addr))
            .timeout(Duration::from_secs(5))
            .send()
            .ok()?
            .json()
            .ok()
    }

    /// The active target of `job`, as `/api/v1/targets` reports it.
    fn target(&self, job: &str) -> Option<Value> {
        let v = self.api("/api/v1/targets?state=active")?;
        v["data"]["activeTargets"]
            .as_array()?
            .iter()
            .find(|t| t["labels"]["job"] == job)
            .cloned()
    }

    /// The value of the one series of job `agent` named `name` with `labels` (`a="b",...`).
    fn query(&self, name: &str, labels: &str) -> Option<f64> {
        let sep = if labels.is_empty() { "" } else { "," };
        let q = format!("{name}{{job=\"agent\"{sep}{labels}}}");
        let url = reqwest::Url::parse_with_params(
            &format!("http://{}/api/v1/query", self.addr),
            [("query", q.as_str())],
        )
        .ok()?;
        let v = self.api(&format!("{}?{}", url.path(), url.query()?))?;
        let result = v["data"]["result"].as_array()?;
        if result.len() != 1 {
            return None;
        }
        result[0]["value"][1].as_str()?.parse().ok()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `/metrics` with the agent's token.
fn scrape(agent: &Agent) -> String {
    let token = agent.token().expect("generated token");
    let resp = reqwest::blocking::Client::new()
        .get(format!("http://{}/metrics", agent.addr))
        .bearer_auth(token)
        .timeout(Duration::from_secs(10))
        .send()
        .expect("GET /metrics");
    assert_eq!(resp.status().as_u16(), 200);
    resp.text().expect("body")
}

#[test]
fn prometheus_scrapes_with_the_token_and_stores_what_status_shows() {
    // Collectors off and a rare heartbeat: posted points are the only traffic, so the counters
    // hold still once they are in, and Prometheus's latest sample can equal /me/status exactly.
    let agent = AgentBuilder::new()
        .agent_keys("hostname = \"e2e-metrics\"\nalive_secs = 3600")
        .config("[output]\nflush_ms = 100")
        .registry(&quiet_namespaces(&["e2e.metrics"]))
        .start();
    let token_file: PathBuf = agent.data_dir().join("auth_token");
    let wrong = agent.dir.path().join("wrong_token");
    std::fs::write(&wrong, "0".repeat(64)).expect("write wrong token");

    let (st, _) = agent.get_with("/metrics", None);
    assert_eq!(st, 401, "no token, no metrics");

    // The start's own points (the first heartbeat) delivered, so what follows is ours alone.
    let settled = wait_until(Duration::from_secs(20), || {
        let s = agent.status();
        let accepted = s["pipeline"]["accepted"].as_u64();
        accepted > Some(0) && s["output"]["delivered_points"].as_u64() == accepted
    });
    assert!(settled, "{}", agent.status());
    let before = agent.status();
    let count = |pointer: &str| before.pointer(pointer).and_then(Value::as_u64).unwrap_or(0);
    let (accepted, rejected) = (count("/pipeline/accepted"), count("/pipeline/rejected"));

    // Known traffic: 5 good points, 2 bad ones.
    let lp = "a value=1\nb value=2\nc value=3\nd,x=1 value=4\ne v=5i\nbad line\nf value=oops\n";
    let (st, v) = agent.post("/post", "text/plain", lp.as_bytes().to_vec());
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        (v["accepted"].as_u64(), v["rejected"].as_u64()),
        (Some(5), Some(2)),
        "{v}"
    );
    let delivered = wait_until(Duration::from_secs(20), || {
        agent.status()["output"]["delivered_points"].as_u64() >= Some(accepted + 5)
    });
    assert!(delivered, "{}", agent.status());

    let prom = Prometheus::start(&agent.addr, &token_file, &wrong);
    let mut last = None;
    let up = wait_until(Duration::from_secs(90), || {
        last = prom.target("agent");
        last.as_ref().is_some_and(|t| t["health"] == "up")
    });
    assert!(up, "target not up: {last:?}\n{}", prom.log());

    // Without the right token Prometheus's scrape is refused: the target is down with a 401.
    let mut refused = None;
    let down = wait_until(Duration::from_secs(30), || {
        refused = prom.target("wrong_token");
        refused.as_ref().is_some_and(|t| {
            t["health"] == "down" && t["lastError"].as_str().is_some_and(|e| e.contains("401"))
        })
    });
    assert!(down, "wrong token target: {refused:?}");

    // Counters as Prometheus stored them equal /me/status read just before and just after.
    let pairs = [
        ("agent_points_accepted_total", "/pipeline/accepted"),
        ("agent_points_rejected_total", "/pipeline/rejected"),
        ("agent_points_delivered_total", "/output/delivered_points"),
        ("agent_batches_delivered_total", "/output/delivered_batches"),
        ("agent_output_errors_total", "/output/errors"),
        ("agent_registry_namespaces", "/registry/namespaces"),
    ];
    let mut seen = Vec::new();
    let agree = wait_until(Duration::from_secs(30), || {
        let before = agent.status();
        seen = pairs
            .iter()
            .map(|(metric, pointer)| (prom.query(metric, ""), before.pointer(pointer).cloned()))
            .collect();
        let after = agent.status();
        pairs.iter().zip(&seen).all(|((_, pointer), (got, want))| {
            let want = want.as_ref().and_then(Value::as_u64);
            want.is_some()
                && after.pointer(pointer).and_then(Value::as_u64) == want
                && *got == want.map(|w| w as f64)
        })
    });
    assert!(agree, "prometheus vs status: {pairs:?}\n{seen:?}");
    assert_eq!(seen[0].0, Some((accepted + 5) as f64), "the posted points");
    assert_eq!(seen[1].0, Some((rejected + 2) as f64), "the rejected lines");

    // Prometheus's own scrapes are counted under the route, with their status.
    let scrapes = |status: &str| {
        let labels = format!("endpoint=\"/metrics\",status=\"{status}\"");
        prom.query("agent_api_requests_total", &labels)
    };
    let counted = wait_until(Duration::from_secs(10), || {
        scrapes("200").is_some_and(|n| n >= 1.0) && scrapes("401").is_some_and(|n| n >= 1.0)
    });
    assert!(
        counted,
        "200: {:?}, 401: {:?}",
        scrapes("200"),
        scrapes("401")
    );
}

#[test]
fn promtool_finds_no_problem_in_the_document() {
    assert!(
        Path::new(PROMTOOL).exists(),
        "{PROMTOOL} is missing: apt-get install prometheus (.ci/run does)"
    );
    let agent = AgentBuilder::new()
        .registry(&quiet_namespaces(&["e2e.promtool"]))
        .start();
    // Some traffic first, so every family with labels has samples (requests, a 404, a 401).
    let _ = agent.get("/nowhere");
    let _ = agent.get_with("/me/ns", None);
    let _ = agent.post("/post", "text/plain", b"x value=1\n".to_vec());
    let body = scrape(&agent);
    for family in [
        "agent_build_info",
        "agent_points_dropped_total",
        "agent_plugin_runs_total",
        "agent_api_requests_total",
    ] {
        assert!(
            body.contains(&format!("# TYPE {family} ")),
            "{family}:\n{body}"
        );
    }
    let mut child = Command::new(PROMTOOL)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(body.as_bytes()).expect("write body");
    }
    let out = child.wait_with_output().expect("promtool");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool: {said}\n{body}");
    assert_eq!(said.trim(), "", "promtool reports a problem:\n{body}");
}
