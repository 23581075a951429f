//! `agentctl fleet` against 50 real agents on loopback: each agent on its own address
//! (127.0.0.N, one port for all, as a fleet on one port would be), with its own hostname; some
//! stopped, one with another token, and listeners that accept and never answer in time. A small
//! registry server lists the machines for `--registry`.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::gitrepo::BareRepo;
use support::{agent_cmd, bin, free_port, quiet_namespaces, wait_until, AGENTCTL_VARS};

const AGENTS: usize = 50;
const TOKEN: &str = "fleet-token-0123456789abcdef";
const OTHER_TOKEN: &str = "other-token-0123456789abcdef";
/// The agents that are stopped before the fleet is asked (one in each batch of ten).
const STOPPED: [usize; 5] = [3, 13, 23, 33, 43];
/// The agent whose config has [`OTHER_TOKEN`].
const OTHER: usize = 50;
/// Agents 1..=5 carry a plugin in this namespace.
const PLUGIN_NS: &str = "fleet.plug";
/// Listeners that accept and never answer in time.
const SILENT: usize = 8;

fn name(i: usize) -> String {
    format!("fleet-{i:02}")
}

fn ip(i: usize) -> String {
    format!("127.0.0.{}", 10 + i)
}

/// One agent started by hand (the harness listens on 127.0.0.1 only); killed on drop.
struct FleetAgent {
    dir: tempfile::TempDir,
    child: Option<Child>,
    addr: String,
}

impl FleetAgent {
    fn spawn(i: usize, port: u16, registry: &str) -> FleetAgent {
        let dir = tempfile::tempdir().expect("tempdir");
        // The plugin user must reach the checkouts inside (tempdirs are 0700).
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .expect("chmod");
        let addr = format!("{}:{port}", ip(i));
        let token = if i == OTHER { OTHER_TOKEN } else { TOKEN };
        let config = format!(
            "[agent]\nlisten = \"{addr}\"\ndata_dir = \"data\"\nhostname = \"{}\"\ntoken = \"{token}\"\n",
            name(i)
        );
        let config_path = dir.path().join("agent.toml");
        std::fs::write(&config_path, config).expect("config");
        std::fs::set_permissions(
            &config_path,
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .expect("chmod config");
        std::fs::write(dir.path().join("registry.toml"), registry).expect("registry");
        let log = std::fs::File::create(dir.path().join("stderr.log")).expect("log");
        let child = agent_cmd()
            .args(["start", "--foreground", "-f"])
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start agent");
        FleetAgent {
            dir,
            child: Some(child),
            addr,
        }
    }

    fn up(&mut self) -> bool {
        if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
            panic!("agent {} exited ({status}):\n{}", self.addr, self.stderr());
        }
        reqwest::blocking::get(format!("http://{}/me/status", self.addr))
            .is_ok_and(|r| r.status().is_success())
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for FleetAgent {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A listener that accepts connections and answers none of them before `delay` (then closes).
struct Silent {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Silent {
    fn start(addr: &str, delay: Duration) -> Silent {
        let listener = TcpListener::bind(addr).expect("bind silent listener");
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut held = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((sock, _)) => held.push((sock, Instant::now())),
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
                held.retain(|(_, at)| at.elapsed() < delay);
            }
        });
        Silent {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Silent {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A lodastack registry serving `GET /api/v1/resource?ns=..&type=machine` from a fixed machine
/// list; records each request line.
struct MachineRegistry {
    url: String,
    requests: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MachineRegistry {
    fn start(machines: Value) -> MachineRegistry {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind registry");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        listener.set_nonblocking(true).expect("nonblocking");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen, flag) = (Arc::clone(&requests), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                let Ok((mut sock, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                let _ = sock.set_nonblocking(false);
                let _ = sock.set_read_timeout(Some(Duration::from_secs(5)));
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 65536 {
                    match sock.read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&buf);
                let line = text.lines().next().unwrap_or("").to_owned();
                seen.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(line.clone());
                let body = if line.starts_with("GET /api/v1/resource?") {
                    serde_json::json!({"httpstatus": 200, "data": machines}).to_string()
                } else {
                    serde_json::json!({"httpstatus": 404, "msg": "no route", "data": null})
                        .to_string()
                };
                let _ = write!(
                    sock,
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        MachineRegistry {
            url,
            requests,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for MachineRegistry {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `agentctl fleet ARGS` with none of the caller's agentctl variables.
fn fleet(args: &[&str]) -> (i32, String, String, Duration) {
    let mut cmd = Command::new(bin("agentctl"));
    cmd.arg("fleet").args(args);
    for key in AGENTCTL_VARS.iter().chain(&["AGENTCTL_HOSTS"]) {
        cmd.env_remove(key);
    }
    let started = Instant::now();
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().expect("run agentctl");
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
        started.elapsed(),
    )
}

fn json_lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

fn write_hosts(dir: &Path, file: &str, lines: &[String]) -> String {
    let path: PathBuf = dir.join(file);
    std::fs::write(&path, lines.join("\n") + "\n").expect("host file");
    path.to_str().expect("utf8").to_owned()
}

#[test]
fn fleet_of_fifty_agents_status_filters_registry_and_rollouts() {
    let _alone = support::machine_wide();
    let remotes = tempfile::tempdir().expect("tmp");
    let hello = BareRepo::new(remotes.path(), "hello", "echo \"hello $1\"\n");
    let port = free_port();
    let mut agents: Vec<FleetAgent> = (1..=AGENTS)
        .map(|i| {
            let ns = if i <= 25 { "fleet.web" } else { "fleet.db" };
            let mut registry = quiet_namespaces(&[ns]);
            if i <= 5 {
                // The same quiet namespace as the others (the last table), with the plugin.
                registry.push_str(&quiet_namespaces(&[PLUGIN_NS]));
                registry.push_str(&format!(
                    "plugins = [{{ git = \"{}\", interval = 0 }}]\n",
                    hello.url()
                ));
            }
            FleetAgent::spawn(i, port, &registry)
        })
        .collect();
    for a in agents.iter_mut() {
        let up = wait_until(Duration::from_secs(60), || a.up());
        assert!(up, "agent {} did not answer:\n{}", a.addr, a.stderr());
    }
    for &i in &STOPPED {
        agents[i - 1].kill();
    }
    // Hosts that accept and never answer within the timeout: the run must not wait for them
    // one after another.
    let silent: Vec<Silent> = (1..=SILENT)
        .map(|k| {
            Silent::start(
                &format!("127.0.0.{}:{port}", 200 + k),
                Duration::from_secs(20),
            )
        })
        .collect();

    let work = tempfile::tempdir().expect("tmp");
    let mut lines: Vec<String> = vec!["# the fleet".into(), String::new()];
    lines.extend((1..=AGENTS).map(|i| format!("{} {}:{port}", name(i), ip(i))));
    let agents_only = write_hosts(work.path(), "agents", &lines);
    lines.extend((1..=SILENT).map(|k| format!("slow-{k} 127.0.0.{}:{port}", 200 + k)));
    let all = write_hosts(work.path(), "all", &lines);

    // Status of everything: 44 ok, 5 stopped + 8 silent unreachable, 1 unauthorized.
    let (code, out, err, took) = fleet(&[
        "status",
        "--hosts",
        &all,
        "--token",
        TOKEN,
        "--timeout",
        "1",
    ]);
    assert_eq!(code, 12, "exit code (unreachable present)\n{out}\n{err}");
    assert!(
        out.contains("58 hosts: 44 ok, 0 degraded, 1 unauthorized, 13 unreachable"),
        "{out}\n{err}"
    );
    assert!(
        took < Duration::from_secs(6),
        "{SILENT} silent hosts at 1 s each took {took:?}: not asked concurrently"
    );
    let row_of = |out: &str, host: &str| -> String {
        out.lines()
            .find(|l| l.split_whitespace().next() == Some(host))
            .unwrap_or_else(|| panic!("no row for {host}:\n{out}"))
            .to_owned()
    };
    assert!(row_of(&out, "fleet-03").contains("unreachable"), "{out}");
    assert!(
        row_of(&out, "slow-2").contains("no answer within 1000 ms"),
        "{out}"
    );
    let other = row_of(&out, &name(OTHER));
    assert!(
        other.contains("unauthorized") && other.contains("0.1.0"),
        "{other}"
    );
    assert!(row_of(&out, "fleet-01").contains(" ok "), "{out}");
    // Worst first: the first data row is unreachable, the last ok.
    let data: Vec<&str> = out.lines().skip(1).take(58).collect();
    assert!(
        data[0].contains("unreachable") && data[57].contains(" ok "),
        "{out}"
    );

    // --json: one object per host, with the state, the reasons, the agent's status.
    let (code, out, _, _) = fleet(&[
        "status",
        "--hosts",
        &all,
        "--token",
        TOKEN,
        "--timeout",
        "1",
        "--json",
    ]);
    assert_eq!(code, 12);
    let rows = json_lines(&out);
    assert_eq!(rows.len(), 58, "{out}");
    let by_name = |n: &str| {
        rows.iter()
            .find(|r| r["name"] == n)
            .unwrap_or_else(|| panic!("no {n}"))
            .clone()
    };
    let ok = by_name("fleet-07");
    assert_eq!(ok["state"], "ok");
    assert_eq!(ok["status"]["hostname"], "fleet-07");
    assert_eq!(ok["namespaces"], serde_json::json!(["fleet.web"]));
    assert_eq!(by_name("slow-1")["state"], "unreachable");
    assert_eq!(by_name(&name(OTHER))["state"], "unauthorized");
    assert!(by_name("fleet-07").get("token").is_none());

    // Filters select rows, and the exit code follows only the selected ones.
    let (code, out, _, _) = fleet(&[
        "status",
        "--hosts",
        &agents_only,
        "--token",
        TOKEN,
        "--filter",
        "ns=fleet.db,state=ok",
    ]);
    assert_eq!(code, 0, "{out}");
    // 26..=50 minus 33, 43 stopped (no namespaces known) and 50 unauthorized.
    assert!(out.contains("22 hosts: 22 ok"), "{out}");
    assert!(out.contains("(28 of 50 left out by --filter)"), "{out}");
    let (code, out, _, _) = fleet(&[
        "status",
        "--hosts",
        &agents_only,
        "--token",
        TOKEN,
        "--filter",
        "state!=ok",
    ]);
    assert_eq!(code, 12, "{out}");
    assert!(
        out.contains("6 hosts: 0 ok, 0 degraded, 1 unauthorized, 5 unreachable"),
        "{out}"
    );
    let (code, out, _, _) = fleet(&[
        "status",
        "--hosts",
        &agents_only,
        "--token",
        TOKEN,
        "--filter",
        "name=fleet-0*,version<0.2.0",
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("8 hosts: 8 ok"), "{out}");
    let (code, _, err, _) = fleet(&["status", "--hosts", &agents_only, "--filter", "colour=red"]);
    assert_eq!(code, 2);
    assert!(err.contains("unknown key"), "{err}");

    // A per-host token column overrides --token.
    let mut with_own = lines[..AGENTS + 2].to_vec();
    with_own[AGENTS + 1] = format!("{} {}:{port} {OTHER_TOKEN}", name(OTHER), ip(OTHER));
    let own = write_hosts(work.path(), "own", &with_own);
    let (code, out, _, _) = fleet(&[
        "status",
        "--hosts",
        &own,
        "--token",
        TOKEN,
        "--filter",
        "name=fleet-50",
    ]);
    assert_eq!(code, 0, "{out}");

    // A bad inventory names the line; nothing is asked.
    let bad = write_hosts(
        work.path(),
        "bad",
        &["a 127.0.0.1:1".into(), "b c d e".into()],
    );
    let (code, _, err, _) = fleet(&["status", "--hosts", &bad]);
    assert_eq!(code, 2);
    assert!(err.contains("line 2"), "{err}");

    // The registry's machine list, reached by their ip field on --port.
    let machines: Vec<Value> = (1..=AGENTS)
        .map(|i| serde_json::json!({"hostname": name(i), "ip": ip(i), "status": "online"}))
        .collect();
    let registry = MachineRegistry::start(Value::Array(machines));
    let port_text = port.to_string();
    let (code, out, err, _) = fleet(&[
        "status",
        "--registry",
        &registry.url,
        "--ns",
        "fleet",
        "--connect",
        "ip",
        "--port",
        &port_text,
        "--token",
        TOKEN,
        "--timeout",
        "10",
        "--json",
    ]);
    assert_eq!(code, 12, "{err}");
    let rows = json_lines(&out);
    assert_eq!(rows.len(), AGENTS, "{out}");
    let not_ok: Vec<String> = rows
        .iter()
        .filter(|r| r["state"] != "ok")
        .map(|r| {
            format!(
                "{} {} {} {}",
                r["name"], r["state"], r["error"], r["reasons"]
            )
        })
        .collect();
    assert_eq!(rows.len() - not_ok.len(), 44, "{not_ok:#?}");
    let asked = registry.requests.lock().expect("lock").clone();
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert!(
        asked[0].contains("ns=fleet") && asked[0].contains("type=machine"),
        "{asked:?}"
    );

    // Roll-out in batches of 10: every host is attempted, each result printed once with its
    // hosts (collapsed), every error shown.
    let (code, out, err, _) = fleet(&[
        "update",
        "--hosts",
        &agents_only,
        "--token",
        TOKEN,
        "--batch",
        "10",
    ]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(err.contains("batch 5/5"), "{err}");
    assert!(
        out.contains("fleet-[01-02,04-12,14-22,24-32,34-42,44-49] (44 hosts, ok)"),
        "{out}"
    );
    assert!(
        out.contains("fleet-[03,13,23,33,43] (5 hosts, error)\n"),
        "{out}"
    );
    assert!(out.contains("unreachable: Connection refused"), "{out}");
    assert!(out.contains("fleet-50 (1 host, error)"), "{out}");
    assert!(out.contains("unauthorized (401)"), "{out}");
    assert_eq!(
        out.matches("(44 hosts, ok)").count(),
        1,
        "identical results are printed once:\n{out}"
    );
    assert!(
        out.contains("update on 50 hosts: 44 ok, 0 failed, 6 error, 0 skipped"),
        "{out}"
    );

    // --stop-on-failure: fleet-03 fails in the first batch (20% = 10 hosts); nothing after it.
    let (code, out, err, _) = fleet(&[
        "update",
        "--hosts",
        &agents_only,
        "--token",
        TOKEN,
        "--batch",
        "20%",
        "--stop-on-failure",
        "--json",
    ]);
    assert_eq!(code, 13, "{out}\n{err}");
    let outcomes = json_lines(&out);
    assert_eq!(outcomes.len(), AGENTS);
    let attempted: Vec<&Value> = outcomes.iter().filter(|o| o["batch"] == 1).collect();
    assert_eq!(attempted.len(), 10, "{out}");
    assert_eq!(
        outcomes.iter().filter(|o| o["result"] == "skipped").count(),
        40,
        "{out}"
    );
    assert!(err.contains("stopped after batch 1 of 5"), "{err}");
    assert_eq!(
        outcomes
            .iter()
            .find(|o| o["name"] == "fleet-03")
            .map(|o| o["result"].clone()),
        Some(Value::from("error"))
    );

    // A plugin rolled out where the filter says (the agents with it), then run: one result.
    let cloned = wait_until(Duration::from_secs(60), || {
        [1, 2, 4, 5].iter().all(|&i| {
            reqwest::blocking::Client::new()
                .get(format!("http://{}:{port}/plugins/list", ip(i)))
                .bearer_auth(TOKEN)
                .send()
                .ok()
                .and_then(|r| r.json::<Value>().ok())
                .is_some_and(|v| v["plugins"][0]["commit"].is_string())
        })
    });
    assert!(cloned, "plugin not cloned:\n{}", agents[0].stderr());
    hello.push("echo \"v2 $1\"\n");
    let (code, out, err, _) = fleet(&[
        "plugins",
        "update",
        "--hosts",
        &agents_only,
        "--token",
        TOKEN,
        "--ns",
        PLUGIN_NS,
        "--repo",
        "hello",
        "--filter",
        &format!("ns={PLUGIN_NS}"),
        "--batch",
        "2",
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("fleet-[01-02,04-05] (4 hosts, ok)") && out.contains("hello updated from"),
        "{out}"
    );
    assert!(err.contains("batch 2/2"), "{err}");
    let (code, out, err, _) = fleet(&[
        "plugins",
        "run",
        "--hosts",
        &agents_only,
        "--token",
        TOKEN,
        "--ns",
        PLUGIN_NS,
        "--repo",
        "hello",
        "--param",
        "there",
        "--filter",
        &format!("ns={PLUGIN_NS}"),
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("fleet-[01-02,04-05] (4 hosts, ok)\n") && out.contains("\nv2 there\n"),
        "{out}"
    );
    // Unknown plugin: an error on every host, shown once for all of them.
    let (code, out, _, _) = fleet(&[
        "plugins",
        "disable",
        "--hosts",
        &agents_only,
        "--token",
        TOKEN,
        "--ns",
        PLUGIN_NS,
        "--repo",
        "nope",
        "--filter",
        "name=fleet-0?",
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("fleet-[01-02,04-09] (8 hosts, error)"),
        "{out}"
    );
    assert_eq!(out.matches("answered 404: no plugin").count(), 1, "{out}");
    drop(silent);
}
