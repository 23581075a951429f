//! The durable spool and the `influxdb` output, with the real agent binary and a real InfluxDB.
//!
//! The data is the agent's own heartbeat (`agent.alive_secs`): per namespace, every tick sends
//! `agent.alive` and `agent.points.accepted`, whose value is the number of points the agent had
//! accepted before that tick. With only the heartbeat running, namespace `k` of `n` receives the
//! values `8 * (n * tick + k)`: a gap or a reordering in that sequence is a lost or reordered
//! batch.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use support::influxdb::Influx;
use support::{wait_until, AgentBuilder};

/// Points per heartbeat and namespace (`collect::alive::metrics`).
const PER_TICK: i64 = 8;

fn registry(names: &[&str]) -> String {
    support::quiet_namespaces(names)
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// `agent.points.accepted` values of a line-protocol text, in file order (complete lines only:
/// the agent may be writing the file while it is read).
fn accepted_in_file(text: &str) -> Vec<i64> {
    let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
    complete
        .lines()
        .filter(|l| l.starts_with("agent.points.accepted,"))
        .filter_map(|l| l.split(' ').nth(1))
        .filter_map(|f| f.strip_prefix("value="))
        .filter_map(|v| v.parse::<f64>().ok())
        .map(|v| v as i64)
        .collect()
}

/// `agent.points.accepted` values stored in database `ns` up to `until` (epoch s), by time.
fn accepted_in_influx(influx: &Influx, ns: &str, host: &str, until: i64) -> Vec<i64> {
    influx
        .rows(
            ns,
            &format!(
                "SELECT value FROM \"agent.points.accepted\" WHERE host = '{host}' AND time <= {until}s"
            ),
        )
        .iter()
        .filter_map(|r| r.get(1).and_then(Value::as_f64))
        .map(|v| v as i64)
        .collect()
}

/// Asserts `values` is exactly namespace `k` of `n`'s heartbeat sequence from the first tick on.
fn assert_every_tick_in_order(values: &[i64], k: i64, n: i64, what: &str) {
    let expected: Vec<i64> = (0..values.len() as i64)
        .map(|t| PER_TICK * (n * t + k))
        .collect();
    assert_eq!(
        values, expected,
        "{what}: a batch is missing or out of order"
    );
}

#[test]
fn influxdb_output_writes_points_that_query_back_by_database_measurement_tag_and_value() {
    let influx = Influx::start();
    let agent = AgentBuilder::new()
        .agent_keys("hostname = \"e2e-influx\"")
        .config(&format!(
            "[output]\nkind = \"influxdb\"\nurl = \"{}\"\nflush_ms = 100",
            influx.url()
        ))
        .registry(&registry(&["e2e.influx"]))
        .start();
    let q = "SELECT value FROM \"agent.alive\" WHERE host = 'e2e-influx'";
    let arrived = wait_until(Duration::from_secs(20), || {
        !influx.rows("e2e.influx", q).is_empty()
    });
    assert!(
        arrived,
        "no agent.alive point in InfluxDB:\n{}\n{}",
        agent.stderr(),
        influx.log()
    );
    assert!(
        influx.databases().contains(&"e2e.influx".to_owned()),
        "the agent created the namespace's database"
    );
    let row = &influx.rows("e2e.influx", q)[0];
    let ts = row[0].as_i64().unwrap_or(0);
    assert!(
        (now_secs() - ts).abs() < 60,
        "timestamp in seconds: {row:?}"
    );
    assert_eq!(row[1].as_f64(), Some(1.0), "{row:?}");
    // Tag filter really filters: another host has nothing.
    assert!(influx
        .rows(
            "e2e.influx",
            "SELECT value FROM \"agent.alive\" WHERE host = 'other'"
        )
        .is_empty());
    let out = &agent.status()["output"];
    assert_eq!(out["kind"], "influxdb");
    assert_eq!(out["connected"], true, "{out}");
    assert!(u(&out["delivered_points"]) >= PER_TICK as u64, "{out}");
    assert_eq!(out["endpoint"], influx.url().as_str());
}

#[test]
fn influxdb_refusing_a_batch_is_counted_and_not_retried() {
    let influx = Influx::start();
    // `agent.alive` is a string in this database already: the agent's float is a field type
    // conflict, which InfluxDB answers with 400.
    let http = reqwest::blocking::Client::new();
    let created = http
        .post(format!("{}/query", influx.url()))
        .form(&[("q", "CREATE DATABASE \"e2e.refuse\"")])
        .send()
        .expect("create database");
    assert!(created.status().is_success());
    let seeded = http
        .post(format!("{}/write?db=e2e.refuse&precision=s", influx.url()))
        .body(format!(
            "agent.alive,host=e2e-refuse value=\"text\" {}\n",
            now_secs()
        ))
        .send()
        .expect("write");
    assert_eq!(seeded.status().as_u16(), 204);
    let agent = AgentBuilder::new()
        .agent_keys("hostname = \"e2e-refuse\"\nalive_secs = 1")
        .config(&format!(
            "[output]\nkind = \"influxdb\"\nurl = \"{}\"\nflush_ms = 50",
            influx.url()
        ))
        .registry(&registry(&["e2e.refuse", "e2e.fine"]))
        .start();
    let refused = wait_until(Duration::from_secs(20), || {
        u(&agent.status()["output"]["dropped_batches"]) >= 2
    });
    let out = agent.status()["output"].clone();
    assert!(refused, "refusals are counted: {out}\n{}", agent.stderr());
    assert!(
        u(&out["dropped_points"]) >= 2 * PER_TICK as u64,
        "their points are counted: {out}"
    );
    assert!(
        agent.stderr().contains("field type conflict"),
        "the server's answer is logged:\n{}",
        agent.stderr()
    );
    // Not retried forever: the spool moves on and the other namespace keeps arriving.
    assert!(
        wait_until(Duration::from_secs(20), || accepted_in_influx(
            &influx,
            "e2e.fine",
            "e2e-refuse",
            now_secs()
        )
        .len()
            >= 3),
        "delivery goes on after a refusal"
    );
    assert!(u(&agent.status()["output"]["spool_batches"]) <= 2);
}

#[test]
fn influxdb_down_then_back_gets_every_point() {
    let mut influx = Influx::start();
    influx.stop();
    let names = ["e2e.down.a", "e2e.down.b"];
    let agent = AgentBuilder::new()
        .agent_keys("hostname = \"e2e-down\"\nalive_secs = 2")
        .config(&format!(
            "[output]\nkind = \"influxdb\"\nurl = \"{}\"\nflush_ms = 50",
            influx.url()
        ))
        .registry(&registry(&names))
        .start();
    let spooled = wait_until(Duration::from_secs(30), || {
        u(&agent.status()["output"]["spool_batches"]) >= 6
    });
    let status = agent.status();
    assert!(spooled, "batches wait in the spool: {status}");
    assert_eq!(status["output"]["connected"], false);
    assert_eq!(status["output"]["spool_durable"], true);
    let accepted_while_down = u(&status["pipeline"]["accepted"]) as i64;

    influx.resume();
    let drained = wait_until(Duration::from_secs(60), || {
        u(&agent.status()["output"]["spool_batches"]) == 0
            && accepted_in_influx(&influx, names[1], "e2e-down", now_secs()).len()
                >= (accepted_while_down / PER_TICK / 2) as usize
    });
    assert!(drained, "backlog delivered:\n{}", agent.stderr());
    let until = now_secs();
    for (k, ns) in names.iter().enumerate() {
        let values = accepted_in_influx(&influx, ns, "e2e-down", until);
        assert_every_tick_in_order(&values, k as i64, 2, ns);
        assert!(
            values.len() as i64 >= accepted_while_down / PER_TICK / 2,
            "{ns}: {values:?}, accepted while down {accepted_while_down}"
        );
    }
}

/// Starts an agent whose file output cannot write `ns` (a directory is in the way of
/// `<ns>.lp`), so every batch waits in the spool.
fn blocked_file_agent(names: &[&str], keys: &str, output: &str) -> support::Agent {
    let dir = tempfile::tempdir().expect("tmp");
    for ns in names {
        std::fs::create_dir_all(dir.path().join("data/out").join(format!("{ns}.lp")))
            .expect("block the output file");
    }
    AgentBuilder::new()
        .agent_keys(keys)
        .config(output)
        .registry(&registry(names))
        .start_in(dir)
}

fn unblock(agent: &support::Agent, names: &[&str]) {
    for ns in names {
        std::fs::remove_dir(agent.data_dir().join("out").join(format!("{ns}.lp")))
            .expect("unblock the output file");
    }
}

#[test]
fn file_output_down_then_back_gets_every_batch_in_order_per_namespace() {
    let names = ["e2e.order.a", "e2e.order.b", "e2e.order.c"];
    let agent = blocked_file_agent(
        &names,
        "hostname = \"e2e-order\"\nalive_secs = 1",
        "[output]\nflush_ms = 50",
    );
    assert!(
        wait_until(Duration::from_secs(30), || u(
            &agent.status()["output"]["spool_batches"]
        ) >= 12),
        "batches wait while the output fails: {}",
        agent.status()
    );
    let status = agent.status();
    assert_eq!(status["output"]["connected"], false, "{status}");
    assert!(status["output"]["last_error"]
        .as_str()
        .is_some_and(|e| e.contains("e2e.order")));
    let waiting = u(&status["output"]["spool_batches"]) as usize;
    unblock(&agent, &names);
    assert!(
        wait_until(Duration::from_secs(30), || accepted_in_file(
            &agent.output_file(names[2])
        )
        .len()
            > waiting / 3),
        "backlog delivered:\n{}",
        agent.stderr()
    );
    for (k, ns) in names.iter().enumerate() {
        let values = accepted_in_file(&agent.output_file(ns));
        assert_every_tick_in_order(&values, k as i64, 3, ns);
    }
}

#[test]
fn kill9_while_the_output_is_down_then_restart_delivers_everything_spooled() {
    let mut influx = Influx::start();
    influx.stop();
    let ns = "e2e.kill";
    let mut agent = AgentBuilder::new()
        .agent_keys("hostname = \"e2e-kill\"\nalive_secs = 2")
        .config(&format!(
            "[output]\nkind = \"influxdb\"\nurl = \"{}\"\nflush_ms = 50",
            influx.url()
        ))
        .registry(&registry(&[ns]))
        .start();
    // Kill only once the batcher handed everything accepted to the spool (queued = 0); what
    // sits in the batcher (at most flush_ms of points) is what a SIGKILL can lose.
    let mut accepted = 0;
    let ready = wait_until(Duration::from_secs(30), || {
        let s = agent.status();
        accepted = u(&s["pipeline"]["accepted"]) as i64;
        u(&s["output"]["spool_batches"]) >= 4 && u(&s["pipeline"]["queued"]) == 0
    });
    assert!(ready, "spooled while down: {}", agent.status());
    agent.kill9();
    let killed_at = now_secs();
    // The next run's own heartbeats restart at 0: keep them apart by time.
    std::thread::sleep(Duration::from_millis(1100));
    influx.resume();
    let agent = agent.restart(false);
    let all = wait_until(Duration::from_secs(60), || {
        accepted_in_influx(&influx, ns, "e2e-kill", killed_at).len() as i64 >= accepted / PER_TICK
    });
    let values = accepted_in_influx(&influx, ns, "e2e-kill", killed_at);
    assert!(
        all,
        "after the restart, {} of {} ticks arrived: {values:?}\n{}",
        values.len(),
        accepted / PER_TICK,
        agent.stderr()
    );
    assert_every_tick_in_order(&values, 0, 1, ns);
    assert!(
        agent.stderr().contains("from a previous run"),
        "the restart says it found a backlog:\n{}",
        agent.stderr()
    );
}

/// The values of the `e2e.durable` points in a file output text (complete lines only).
fn durable_values(text: &str) -> std::collections::HashSet<u64> {
    let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
    complete
        .lines()
        .filter(|l| l.starts_with("e2e.durable,"))
        .filter_map(|l| l.split(' ').nth(1))
        .filter_map(|f| f.strip_prefix("value="))
        .filter_map(|v| v.strip_suffix('i'))
        .filter_map(|v| v.parse().ok())
        .collect()
}

/// A line-protocol body of the points with these values.
fn durable_body(values: impl Iterator<Item = u64>) -> Vec<u8> {
    values
        .map(|v| format!("e2e.durable value={v}i 1764000000\n"))
        .collect::<String>()
        .into_bytes()
}

#[test]
fn an_answered_post_survives_a_kill9_right_after_the_answer() {
    let ns = "e2e.durable";
    // Nothing flushes by time: only the answer's own guarantee can have put the points on disk.
    let mut agent = AgentBuilder::new()
        .agent_keys("hostname = \"e2e-durable\"")
        .config("[output]\nflush_ms = 60000")
        .registry(&registry(&[ns]))
        .start();
    let (st, v) = agent.post("/post", "text/plain", durable_body(0..1500));
    assert_eq!((st, v["accepted"].as_u64()), (200, Some(1500)), "{v}");
    agent.kill9();
    let agent = agent.restart(false);
    let all = wait_until(Duration::from_secs(30), || {
        durable_values(&agent.output_file(ns)).len() == 1500
    });
    assert!(
        all,
        "after kill -9 right after the answer, {} of 1500 answered points were delivered:\n{}",
        durable_values(&agent.output_file(ns)).len(),
        agent.stderr()
    );
}

/// A small seeded generator (xorshift64*), so a failing run can be repeated.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

#[test]
fn every_answered_post_survives_kill9_at_random_moments_of_a_concurrent_load() {
    const CLIENTS: u64 = 4;
    const ROUNDS: u64 = 3;
    const PER_POST: u64 = 100;
    let ns = "e2e.durable";
    let mut rng = Rng(0x5eed_1234_abcd_0042);
    let mut agent = AgentBuilder::new()
        .agent_keys("hostname = \"e2e-durable\"")
        .registry(&registry(&[ns]))
        .start();
    let mut answered = std::collections::HashSet::new();
    for round in 0..ROUNDS {
        let kill_after = Duration::from_millis(300 + rng.below(1200));
        let pid = agent.pid().expect("running");
        let addr = agent.addr.clone();
        let token = agent.token().expect("generated token");
        let got: Vec<Vec<u64>> = std::thread::scope(|s| {
            let clients: Vec<_> = (0..CLIENTS)
                .map(|c| {
                    let addr = addr.clone();
                    let token = token.clone();
                    s.spawn(move || {
                        let client = reqwest::blocking::Client::new();
                        let mut mine = Vec::new();
                        // Bounded: the kill ends every client well before this.
                        for k in 0..10_000u64 {
                            let first = ((round * CLIENTS + c) * 10_000 + k) * PER_POST;
                            let r = client
                                .post(format!("http://{addr}/post"))
                                .bearer_auth(&token)
                                .header("content-type", "text/plain")
                                .body(durable_body(first..first + PER_POST))
                                .timeout(Duration::from_secs(20))
                                .send();
                            match r {
                                Ok(r) if r.status().as_u16() == 200 => {
                                    mine.extend(first..first + PER_POST)
                                }
                                Ok(r) => panic!("unexpected answer {}", r.status()),
                                Err(_) => break, // the agent was killed
                            }
                        }
                        mine
                    })
                })
                .collect();
            std::thread::sleep(kill_after);
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            clients
                .into_iter()
                .map(|c| c.join().expect("client"))
                .collect()
        });
        let n: usize = got.iter().map(Vec::len).sum();
        assert!(n > 0, "round {round}: no post was answered before the kill");
        answered.extend(got.into_iter().flatten());
        agent = agent.restart(false);
    }
    let delivered = || durable_values(&agent.output_file(ns));
    let all = wait_until(Duration::from_secs(60), || answered.is_subset(&delivered()));
    let missing = answered.difference(&delivered()).count();
    assert!(
        all,
        "{missing} of {} answered points were not delivered after {ROUNDS} kills:\n{}",
        answered.len(),
        agent.stderr()
    );
}

/// Answered points wait in the spool (output blocked), then the agent is killed again and again
/// at random moments of its restart: during start-up, the recovery scan of the backlog, and its
/// redelivery. Every answered point is delivered in the end.
#[test]
fn every_answered_post_survives_kill9_during_recovery() {
    const POSTS: u64 = 150;
    const PER_POST: u64 = 500;
    let ns = "e2e.durable";
    let mut agent = blocked_file_agent(
        &[ns],
        "hostname = \"e2e-durable\"",
        "[output]\nflush_ms = 50",
    );
    for b in 0..POSTS {
        let (st, v) = agent.post(
            "/post",
            "text/plain",
            durable_body(b * PER_POST..(b + 1) * PER_POST),
        );
        assert_eq!(st, 200, "post {b}: {v}");
    }
    agent.kill9();
    unblock(&agent, &[ns]);
    let answered: std::collections::HashSet<u64> = (0..POSTS * PER_POST).collect();
    let mut rng = Rng(0x0dd_ba11_5eed_0007);
    for round in 0..4 {
        // Started by hand, not through the harness (which waits for the API): the kill may
        // land before the API is up, inside the recovery scan.
        let after = Duration::from_millis(rng.below(400));
        let mut child = support::agent_cmd()
            .args(["start", "--foreground", "-f"])
            .arg(&agent.config_path)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start agent");
        std::thread::sleep(after);
        let _ = child.kill();
        let _ = child.wait();
        eprintln!(
            "round {round}: killed {after:?} after start; {} of {} delivered so far",
            durable_values(&agent.output_file(ns)).len(),
            answered.len()
        );
    }
    let agent = agent.restart(false);
    let delivered = || durable_values(&agent.output_file(ns));
    let all = wait_until(Duration::from_secs(60), || answered.is_subset(&delivered()));
    let missing = answered.difference(&delivered()).count();
    assert!(
        all,
        "{missing} of {} answered points were not delivered after kills during recovery:\n{}",
        answered.len(),
        agent.stderr()
    );
    let damaged = agent.status()["output"].clone();
    assert_eq!(u(&damaged["spool_damaged_ranges"]), 0, "{damaged}");
}

fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

#[test]
fn past_the_size_bound_the_oldest_batches_are_dropped_and_counted() {
    let names: Vec<String> = (0..200).map(|i| format!("e2e.bound.{i:03}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let max = 1024 * 1024;
    let agent = blocked_file_agent(
        &names,
        "hostname = \"e2e-bound\"\nalive_secs = 1",
        &format!("[output]\nflush_ms = 50\nspool_max_bytes = {max}"),
    );
    let dropped = wait_until(Duration::from_secs(90), || {
        u(&agent.status()["output"]["dropped_batches"]) > 0
    });
    let out = agent.status()["output"].clone();
    assert!(dropped, "the bound was reached: {out}");
    assert_eq!(
        u(&out["dropped_points"]),
        u(&out["dropped_batches"]) * PER_TICK as u64,
        "points of dropped batches are counted: {out}"
    );
    assert!(u(&out["spool_bytes"]) <= max, "{out}");
    let on_disk = dir_size(&agent.data_dir().join("spool"));
    assert!(on_disk <= max + 4096, "spool files: {on_disk} bytes");
    assert!(agent.stderr().contains("dropped its oldest segment"));

    unblock(&agent, &names);
    let first = names[0];
    assert!(wait_until(Duration::from_secs(60), || {
        u(&agent.status()["output"]["spool_batches"]) == 0 && !agent.output_file(first).is_empty()
    }));
    let values = accepted_in_file(&agent.output_file(first));
    assert!(
        values.first().is_some_and(|&v| v > 0),
        "the oldest (first tick, value 0) was dropped: {:?}",
        &values[..values.len().min(5)]
    );
    // What is left is contiguous: only the oldest were dropped.
    let step = PER_TICK * names.len() as i64;
    assert!(
        values.windows(2).all(|w| w[1] - w[0] == step),
        "no gaps after the dropped oldest: {values:?}"
    );
}

#[test]
fn an_unusable_spool_directory_runs_on_memory_shows_it_and_recovers() {
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::create_dir_all(dir.path().join("data")).expect("data dir");
    // A file where the spool directory should be: unusable, even for root.
    std::fs::write(dir.path().join("data/spool"), "in the way").expect("file");
    let ns = "e2e.memory";
    let agent = AgentBuilder::new()
        .agent_keys("hostname = \"e2e-memory\"\nalive_secs = 1")
        .config("[output]\nflush_ms = 50")
        .registry(&registry(&[ns]))
        .start_in(dir);
    let out = agent.status()["output"].clone();
    assert_eq!(out["spool_durable"], false, "{out}");
    assert!(
        out["spool_problem"]
            .as_str()
            .is_some_and(|p| p.contains("spool")),
        "the reason is shown: {out}"
    );
    assert!(
        wait_until(Duration::from_secs(20), || accepted_in_file(
            &agent.output_file(ns)
        )
        .len()
            >= 2),
        "points still flow on memory buffering:\n{}",
        agent.stderr()
    );
    assert!(agent.stderr().contains("buffering in memory"));

    std::fs::remove_file(agent.data_dir().join("spool")).expect("make room");
    let recovered = wait_until(Duration::from_secs(20), || {
        agent.status()["output"]["spool_durable"] == true
    });
    assert!(recovered, "back on disk:\n{}", agent.stderr());
    assert_eq!(agent.status()["output"]["spool_problem"], Value::Null);
    assert!(agent.stderr().contains("Spool is on disk again."));
    assert!(agent.data_dir().join("spool").is_dir());
    let values = accepted_in_file(&agent.output_file(ns));
    assert_every_tick_in_order(&values, 0, 1, ns);
}

#[test]
fn stop_while_the_output_is_down_then_restart_delivers_everything_spooled() {
    let ns = "e2e.stop";
    let mut agent = blocked_file_agent(
        &[ns],
        "hostname = \"e2e-stop\"\nalive_secs = 1",
        "[output]\nflush_ms = 50\ndrain_secs = 1",
    );
    assert!(wait_until(Duration::from_secs(30), || u(
        &agent.status()["output"]["spool_batches"]
    ) >= 3));
    let spooled = u(&agent.status()["output"]["spool_batches"]) as usize;
    assert!(agent.stop(), "clean stop:\n{}", agent.stderr());
    assert!(
        agent.stderr().contains("stays in the spool"),
        "the stop says what it left:\n{}",
        agent.stderr()
    );
    std::fs::remove_dir(agent.data_dir().join("out").join(format!("{ns}.lp")))
        .expect("unblock the output file");
    let agent = agent.restart(true);
    assert!(
        wait_until(Duration::from_secs(30), || accepted_in_file(
            &agent.output_file(ns)
        )
        .len()
            > 3),
        "{}",
        agent.stderr()
    );
    let values = accepted_in_file(&agent.output_file(ns));
    // The first run's ticks (0, 8, 16, ...) come first, all of them; then the second run's
    // counter starts again at 0.
    let first_run: Vec<i64> = values
        .iter()
        .copied()
        .take_while({
            let mut last = -1;
            move |&v| {
                let up = v > last;
                last = v;
                up
            }
        })
        .collect();
    assert_every_tick_in_order(&first_run, 0, 1, ns);
    assert!(
        first_run.len() >= spooled,
        "{spooled} batches were spooled at the stop; delivered {first_run:?} from {values:?}"
    );
}

#[test]
fn nsq_down_then_back_gets_every_point_in_order_per_namespace() {
    let names = ["e2e.nsqdown.a", "e2e.nsqdown.b"];
    let mut peer = support::nsq_peer::NsqPeer::stopped_on(
        support::free_port(),
        support::nsq_peer::PeerOptions::default(),
    );
    let agent = AgentBuilder::new()
        .agent_keys("hostname = \"e2e-nsqdown\"\nalive_secs = 1")
        .config(&format!(
            "[output]\nkind = \"nsq\"\nnsqd = [\"{}\"]\nflush_ms = 50",
            peer.addr()
        ))
        .registry(&registry(&names))
        .start();
    assert!(
        wait_until(Duration::from_secs(30), || u(
            &agent.status()["output"]["spool_batches"]
        ) >= 8),
        "batches wait in the spool while nsqd is down: {}",
        agent.status()
    );
    assert_eq!(agent.status()["output"]["connected"], false);
    let waiting = u(&agent.status()["output"]["spool_batches"]) as usize;
    peer.restart();
    let delivered = |ns: &str| accepted_in_file(&(peer.lines(ns).join("\n") + "\n"));
    assert!(
        wait_until(Duration::from_secs(30), || delivered(names[1]).len()
            > waiting / 2),
        "backlog delivered after nsqd came back:\n{}",
        agent.stderr()
    );
    for (k, ns) in names.iter().enumerate() {
        assert_every_tick_in_order(&delivered(ns), k as i64, 2, ns);
    }
}

/// A token for the agents that receive `/post`s here (the API may require one).
const TOKEN: &str = "e2e-spool-damage-token-42";
/// Points per posted batch (`output.batch_size`).
const SEQ_POINTS: u64 = 100;

/// Posts `n` line-protocol bodies of [`SEQ_POINTS`] points `e2e.seq value=<k>` (k counting up
/// from `first`) to `ns`; each becomes one batch of the spool.
fn post_seq(agent: &support::Agent, ns: &str, first: u64, n: u64) {
    let http = reqwest::blocking::Client::new();
    let ts = now_secs();
    for b in 0..n {
        let body: String = (0..SEQ_POINTS)
            .map(|j| format!("e2e.seq value={} {ts}\n", first + b * SEQ_POINTS + j))
            .collect();
        let resp = http
            .post(format!("http://{}/post?ns={ns}", agent.addr))
            .bearer_auth(TOKEN)
            .header("content-type", "text/plain")
            .body(body)
            .timeout(Duration::from_secs(30))
            .send()
            .expect("post");
        assert!(resp.status().is_success(), "post: {}", resp.status());
    }
}

/// The `e2e.seq` values of the file output of `ns`, in file order.
fn seq_in_file(agent: &support::Agent, ns: &str) -> Vec<u64> {
    let text = agent.output_file(ns);
    text.lines()
        .filter(|l| l.starts_with("e2e.seq,"))
        .filter_map(|l| l.split(' ').nth(1))
        .filter_map(|f| f.strip_prefix("value="))
        .filter_map(|v| v.parse::<f64>().ok())
        .map(|v| v as u64)
        .collect()
}

/// `text` without the terminal colours of the agent's stderr.
fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('\u{1b}') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        rest = rest.find('m').map_or("", |m| &rest[m + 1..]);
    }
    out.push_str(rest);
    out
}

/// A record of a spool segment as the test reads it. Format 2: marker, len, id, points, head
/// crc, body crc, body; format 1 (read too, so the tests also run against an older agent):
/// len, crc, id, points, ...
struct RawRecord {
    offset: usize,
    len: usize,
    /// Where its `len` field is.
    len_at: usize,
    points: u32,
}

fn raw_records(data: &[u8]) -> Vec<RawRecord> {
    // (where `len` is in a record, bytes before the body)
    let (len_field, head) = match &data[..8] {
        b"AGSPOOL2" => (4, 28),
        b"AGSPOOL1" => (0, 8),
        other => panic!("not a spool segment: {other:?}"),
    };
    let mut at = 8;
    let mut out = Vec::new();
    while at + head <= data.len() {
        let u32_at =
            |o: usize| u32::from_le_bytes([data[o], data[o + 1], data[o + 2], data[o + 3]]);
        let len = head + u32_at(at + len_field) as usize;
        out.push(RawRecord {
            offset: at,
            len,
            len_at: at + len_field,
            points: u32_at(at + 16),
        });
        at += len;
    }
    assert_eq!(at, data.len(), "the test walked the whole segment");
    out
}

/// An agent that spooled `batches` batches of [`SEQ_POINTS`] points to `ns` (its output
/// blocked) and was stopped cleanly; returns it and the spool's one segment file.
fn spooled_and_stopped(ns: &str, batches: u64) -> (support::Agent, std::path::PathBuf) {
    let mut agent = blocked_file_agent(
        &[ns],
        &format!("hostname = \"e2e-damage\"\nalive_secs = 3600\ntoken = \"{TOKEN}\""),
        &format!("[output]\nflush_ms = 50\nbatch_size = {SEQ_POINTS}\ndrain_secs = 1"),
    );
    // The start's heartbeat first, alone in its batch.
    assert!(wait_until(Duration::from_secs(20), || {
        let s = agent.status();
        u(&s["output"]["spool_batches"]) >= 1 && u(&s["pipeline"]["queued"]) == 0
    }));
    let before = u(&agent.status()["output"]["spool_batches"]);
    post_seq(&agent, ns, 0, batches);
    assert!(
        wait_until(Duration::from_secs(20), || u(
            &agent.status()["output"]["spool_batches"]
        ) == before + batches),
        "one batch per post: {}",
        agent.status()
    );
    assert!(agent.stop(), "clean stop:\n{}", agent.stderr());
    let spool = agent.data_dir().join("spool");
    let segments: Vec<_> = std::fs::read_dir(&spool)
        .expect("spool dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    assert_eq!(segments.len(), 1, "{segments:?}");
    (agent, segments[0].clone())
}

/// Restarts `agent` with its output unblocked and waits until the spool is delivered.
fn restart_and_deliver(agent: support::Agent, ns: &str) -> support::Agent {
    unblock(&agent, &[ns]);
    let agent = agent.restart(true);
    assert!(
        wait_until(Duration::from_secs(30), || u(
            &agent.status()["output"]["spool_batches"]
        ) == 0),
        "spool delivered:\n{}",
        agent.stderr()
    );
    agent
}

/// The exact loss figures of `/me/status`: dropped batches, dropped points, damaged ranges,
/// unknown bytes.
fn loss(agent: &support::Agent) -> (u64, u64, u64, u64) {
    let out = agent.status()["output"].clone();
    (
        u(&out["dropped_batches"]),
        u(&out["dropped_points"]),
        u(&out["spool_damaged_ranges"]),
        u(&out["lost_unknown_bytes"]),
    )
}

/// Every value of `batches` posted batches but those of `lost` (batch indexes).
fn expected_seq(batches: u64, lost: &[u64]) -> Vec<u64> {
    (0..batches)
        .filter(|b| !lost.contains(b))
        .flat_map(|b| b * SEQ_POINTS..(b + 1) * SEQ_POINTS)
        .collect()
}

/// After the damaged spool was delivered: the segment is in quarantine, and the next start
/// neither reports nor counts it again.
fn assert_quarantined_and_not_reported_again(agent: support::Agent) {
    let q = agent.data_dir().join("spool/quarantine");
    let quarantined = std::fs::read_dir(&q).map_or(0, |d| d.count());
    assert_eq!(
        quarantined,
        1,
        "the damaged segment is kept aside in {}",
        q.display()
    );
    let agent = agent.restart(true);
    assert_eq!(loss(&agent), (0, 0, 0, 0), "{}", agent.status());
    assert!(
        !agent.stderr().contains("damaged"),
        "not reported again:\n{}",
        agent.stderr()
    );
}

#[test]
fn an_impossible_length_mid_segment_loses_only_that_record_and_counts_it_exactly() {
    let ns = "e2e.damage.len";
    let (agent, seg) = spooled_and_stopped(ns, 21);
    let mut data = std::fs::read(&seg).expect("read segment");
    let recs = raw_records(&data);
    // The heartbeat, then the 21 posted batches: damage the third of those.
    let seq: Vec<&RawRecord> = recs
        .iter()
        .filter(|r| u64::from(r.points) == SEQ_POINTS)
        .collect();
    assert_eq!(seq.len(), 21);
    let (hit, len_at) = (seq[2].offset, seq[2].len_at);
    data[len_at..len_at + 4].copy_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
    std::fs::write(&seg, &data).expect("damage the segment");

    let agent = restart_and_deliver(agent, ns);
    assert_eq!(
        seq_in_file(&agent, ns),
        expected_seq(21, &[2]),
        "the 18 records after it too"
    );
    assert_eq!(loss(&agent), (1, SEQ_POINTS, 1, 0), "{}", agent.status());
    let log = plain(&agent.stderr());
    assert_eq!(
        log.matches("Spool segment damaged").count(),
        1,
        "once per range:\n{log}"
    );
    assert!(
        log.contains(&format!("offset={hit}")),
        "with the offset:\n{log}"
    );
    assert!(
        log.contains(&format!("1 batch of {SEQ_POINTS} points lost")),
        "{log}"
    );
    assert_quarantined_and_not_reported_again(agent);
}

#[test]
fn a_damaged_segment_header_still_delivers_every_record_of_the_segment() {
    let ns = "e2e.damage.header";
    let (agent, seg) = spooled_and_stopped(ns, 21);
    let mut data = std::fs::read(&seg).expect("read segment");
    data[..8].copy_from_slice(b"\0garbage");
    std::fs::write(&seg, &data).expect("damage the header");

    let agent = restart_and_deliver(agent, ns);
    assert_eq!(
        seq_in_file(&agent, ns),
        expected_seq(21, &[]),
        "all 21 records"
    );
    assert_eq!(loss(&agent), (0, 0, 1, 0), "{}", agent.status());
    assert!(
        agent.stderr().contains("bad segment header"),
        "{}",
        agent.stderr()
    );
    assert_quarantined_and_not_reported_again(agent);
}

#[test]
fn a_truncated_segment_tail_loses_only_the_cut_record_and_counts_it_exactly() {
    let ns = "e2e.damage.tail";
    let (agent, seg) = spooled_and_stopped(ns, 10);
    let data = std::fs::read(&seg).expect("read segment");
    let last = raw_records(&data).pop().expect("records");
    assert_eq!(
        u64::from(last.points),
        SEQ_POINTS,
        "the last record is a posted batch"
    );
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .expect("open");
    f.set_len((last.offset + last.len - 10) as u64)
        .expect("cut the tail");

    let agent = restart_and_deliver(agent, ns);
    assert_eq!(seq_in_file(&agent, ns), expected_seq(10, &[9]));
    assert_eq!(loss(&agent), (1, SEQ_POINTS, 1, 0), "{}", agent.status());
    assert_quarantined_and_not_reported_again(agent);
}

#[test]
fn a_garbage_ack_file_redelivers_everything_and_loses_nothing() {
    let ns = "e2e.damage.ack";
    let (agent, _) = spooled_and_stopped(ns, 5);
    let ack = agent.data_dir().join("spool/acked");
    std::fs::write(&ack, b"this is not an ack position").expect("garbage ack file");

    let agent = restart_and_deliver(agent, ns);
    assert_eq!(seq_in_file(&agent, ns), expected_seq(5, &[]));
    assert_eq!(loss(&agent), (0, 0, 0, 0), "{}", agent.status());
    assert!(
        agent.stderr().contains("ack file unusable"),
        "{}",
        agent.stderr()
    );
    // The position is stored again once delivered: the next start does not complain.
    assert!(wait_until(Duration::from_secs(10), || std::fs::read(&ack)
        .is_ok_and(|a| a.len() == 12)));
    let agent = agent.restart(true);
    assert!(
        !agent.stderr().contains("ack file unusable"),
        "{}",
        agent.stderr()
    );
    assert_eq!(
        seq_in_file(&agent, ns),
        expected_seq(5, &[]),
        "nothing delivered twice"
    );
}

/// A tmpfs mounted for a test, unmounted on drop.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` at `at`; `None` (with the reason) when this is not possible.
    fn mount(at: &Path, size: &str) -> Result<Tmpfs, String> {
        use std::os::unix::fs::MetadataExt;
        if std::fs::metadata("/proc/self").map_or(true, |m| m.uid() != 0) {
            return Err("needs root to mount a tmpfs".into());
        }
        std::fs::create_dir_all(at).map_err(|e| e.to_string())?;
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(Tmpfs(at.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Fills the file system of `path` with the file `path`: every free block taken.
fn fill(path: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).expect("filler");
    let block = vec![0u8; 4096];
    while f.write_all(&block).is_ok() {}
    while f.write_all(&[0]).is_ok() {}
}

/// Whether `l` looks like a line of the agent's log: `2026-11-25T10:00:00.123456Z  INFO
/// target: message`, with no second timestamp glued into it.
fn is_whole_log_line(l: &str) -> bool {
    let b = l.as_bytes();
    let ts = |at: usize| {
        b.len() >= at + 27
            && b[at..at + 27].iter().enumerate().all(|(i, &c)| match i {
                4 | 7 => c == b'-',
                10 => c == b'T',
                13 | 16 => c == b':',
                19 => c == b'.',
                26 => c == b'Z',
                _ => c.is_ascii_digit(),
            })
    };
    let level = l.get(27..).map(str::trim_start).unwrap_or("");
    let known = ["TRACE ", "DEBUG ", "INFO ", "WARN ", "ERROR "]
        .iter()
        .any(|lv| level.starts_with(lv));
    ts(0) && known && !(1..b.len()).any(ts)
}

#[test]
fn a_full_disk_keeps_log_lines_whole_rate_limits_warnings_and_the_spool_is_durable_again_at_once() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    let disk = match Tmpfs::mount(&data, "2m") {
        Ok(d) => d,
        Err(why) => {
            eprintln!("SKIPPED a_full_disk_...: {why}");
            return;
        }
    };
    let ns = "e2e.full";
    let names = |extra: bool| {
        let mut n = vec![ns];
        if extra {
            n.push("e2e.full.flip");
        }
        registry(&n)
    };
    // The output is blocked, so every batch waits in the spool.
    std::fs::create_dir_all(data.join("out").join(format!("{ns}.lp"))).expect("block output");
    let mut agent = AgentBuilder::new()
        .agent_keys(&format!(
            // Queued posts go to the memory fallback while the disk is full (durable ones
            // would be refused with 503): that fallback's bound is what is tested here.
            "hostname = \"e2e-full\"\nalive_secs = 1\ntoken = \"{TOKEN}\"\npost_ack = \"queued\""
        ))
        .config(&format!(
            "[output]\nflush_ms = 50\nbatch_size = {SEQ_POINTS}\nspool_max_bytes = 1048576\ndrain_secs = 1"
        ))
        .registry(&names(false))
        .start_in(dir);
    assert!(wait_until(Duration::from_secs(20), || u(
        &agent.status()["output"]["spool_batches"]
    ) >= 1));

    fill(&data.join("filler"));
    // Log lines that are not rate-limited: each registry change is logged (and its cache,
    // on the full disk, cannot be stored: logged too).
    let http = reqwest::blocking::Client::new();
    for i in 0..30 {
        agent.write_registry(&names(i % 2 == 0));
        let r = http
            .get(format!("http://{}/update", agent.addr))
            .bearer_auth(TOKEN)
            .timeout(Duration::from_secs(30))
            .send()
            .expect("update");
        assert!(r.status().is_success(), "update: {}", r.status());
    }
    // Far more than the memory fallback holds: a drop per batch. (The answers are not checked:
    // what `/post` answers while the spool is not durable is not this test's concern.)
    for b in 0..400u64 {
        let body: String = (0..SEQ_POINTS)
            .map(|j| format!("e2e.seq value={} {}\n", b * SEQ_POINTS + j, now_secs()))
            .collect();
        let _ = http
            .post(format!("http://{}/post?ns={ns}", agent.addr))
            .bearer_auth(TOKEN)
            .header("content-type", "text/plain")
            .body(body)
            .timeout(Duration::from_secs(30))
            .send();
    }
    let full = agent.status()["output"].clone();
    assert_eq!(full["spool_durable"], false, "{full}");
    let dropped = u(&full["dropped_batches"]);
    assert!(dropped >= 50, "the memory fallback dropped batches: {full}");

    std::fs::remove_file(data.join("filler")).expect("free the disk");
    let freed = std::time::Instant::now();
    let durable = wait_until(Duration::from_secs(10), || {
        agent.status()["output"]["spool_durable"] == true
    });
    let took = freed.elapsed();
    assert!(durable, "durable again:\n{}", agent.stderr());
    assert!(
        took <= Duration::from_secs(2),
        "spool_durable came back {took:?} after space returned"
    );
    let dropped_at_stop = u(&agent.status()["output"]["dropped_batches"]);
    assert!(agent.stop(), "clean stop:\n{}", agent.stderr());

    let mut text = String::new();
    for entry in std::fs::read_dir(data.join("log")).expect("log dir") {
        let path = entry.expect("entry").path();
        text.push_str(&std::fs::read_to_string(&path).expect("log file"));
        assert!(
            text.ends_with('\n'),
            "{} ends with a whole line",
            path.display()
        );
    }
    let bad: Vec<&str> = text.lines().filter(|l| !is_whole_log_line(l)).collect();
    assert!(bad.is_empty(), "lines cut or glued:\n{}", bad.join("\n"));
    assert!(
        text.contains("log lines were lost while the disk was full"),
        "the lost lines are counted and reported:\n{text}"
    );
    let drop_lines = text
        .lines()
        .filter(|l| l.contains("Spool memory fallback is full"))
        .count();
    assert!(
        (1..=3).contains(&drop_lines),
        "{dropped} drops, {drop_lines} lines: rate-limited with a count:\n{text}"
    );
    // The first drop is logged at once (on the full disk, that line may be among the lost);
    // the rest are counted in one line.
    let counted = text
        .lines()
        .filter(|l| l.contains("Spool memory fallback is full") && l.contains(" in the last "))
        .filter_map(|l| l.split("batches=").nth(1))
        .filter_map(|v| v.split(' ').next()?.parse::<u64>().ok())
        .sum::<u64>();
    assert!(
        counted + 1 >= dropped_at_stop && counted < dropped_at_stop,
        "{dropped_at_stop} drops, {counted} in the counted lines:\n{text}"
    );
    drop(disk);
}
