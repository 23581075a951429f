//! Config reload (SIGHUP, `agent reload`) of the real agent: points posted without pause while
//! the output is switched (file -> another file dir -> the NSQ peer) and the log level changed
//! arrive exactly once; a broken file is refused and the agent runs on; `agent reload` exit codes.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::nsq_peer::NsqPeer;
use support::{quiet_namespaces, wait_until, Agent, AgentBuilder};

const TOKEN: &str = "e2e-reload-token-0123456789";
/// Points per `/post`.
const PER_POST: u64 = 20;
/// Upper bound of points the poster sends (the loop is bounded even if a step hangs).
const MAX_POINTS: u64 = 200_000;

/// The config file the harness writes, with other tables.
fn config(agent: &Agent, tables: &str) -> String {
    format!(
        "[agent]\nlisten = \"{}\"\ndata_dir = \"data\"\ntoken = \"{TOKEN}\"\nalive_secs = 3600\n{tables}\n",
        agent.addr
    )
}

fn rewrite(agent: &Agent, tables: &str) {
    std::fs::write(&agent.config_path, config(agent, tables)).expect("write config");
}

fn start(tables: &str) -> Agent {
    AgentBuilder::new()
        .agent_keys(&format!("token = \"{TOKEN}\"\nalive_secs = 3600"))
        .config(tables)
        .registry(&quiet_namespaces(&["r"]))
        .start()
}

/// `agent reload -f <config>`: exit code, stdout, stderr.
fn reload(config: &Path) -> (i32, String, String) {
    let out = support::agent_cmd()
        .args(["reload", "--timeout", "30", "-f"])
        .arg(config)
        .output()
        .expect("agent reload");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The numbers (the value) of the `reload.seq` lines in `text`, counted.
fn count_seqs(text: &str, counts: &mut BTreeMap<u64, u32>) {
    for line in text.lines().filter(|l| l.starts_with("reload.seq,")) {
        let seq = line
            .split_once(" value=")
            .and_then(|(_, rest)| rest.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|n| n.parse().ok());
        if let Some(seq) = seq {
            *counts.entry(seq).or_default() += 1;
        }
    }
}

fn file_seqs(dir: &Path) -> BTreeMap<u64, u32> {
    let mut counts = BTreeMap::new();
    count_seqs(
        &std::fs::read_to_string(dir.join("r.lp")).unwrap_or_default(),
        &mut counts,
    );
    counts
}

/// POST /post with the token; status and JSON answer.
fn post(agent: &Agent, body: String) -> (u16, serde_json::Value) {
    let r = reqwest::blocking::Client::new()
        .post(format!("http://{}/post?ns=r", agent.addr))
        .bearer_auth(TOKEN)
        .header("content-type", "text/plain")
        .body(body)
        .timeout(Duration::from_secs(30))
        .send()
        .expect("post");
    let st = r.status().as_u16();
    (st, r.json().unwrap_or_default())
}

/// Posts `PER_POST` numbered points per request until `stop`, recording the numbers accepted
/// and the last refusal.
fn poster(
    addr: String,
    stop: Arc<AtomicBool>,
    accepted: Arc<Mutex<Vec<u64>>>,
    refused: Arc<Mutex<String>>,
) {
    let client = reqwest::blocking::Client::new();
    let mut next = 0u64;
    while !stop.load(Ordering::Relaxed) && next < MAX_POINTS {
        let body: String = (next..next + PER_POST)
            .map(|i| format!("reload.seq,src=e2e value={i}i\n"))
            .collect();
        let resp = client
            .post(format!("http://{addr}/post?ns=r"))
            .bearer_auth(TOKEN)
            .header("content-type", "text/plain")
            .body(body)
            .timeout(Duration::from_secs(30))
            .send();
        match resp {
            Ok(r) => {
                let ok = r.status().as_u16() == 200;
                let v: serde_json::Value = r.json().unwrap_or_default();
                if ok && v["accepted"].as_u64() == Some(PER_POST) {
                    accepted.lock().expect("lock").extend(next..next + PER_POST);
                } else {
                    *refused.lock().expect("lock") = v.to_string();
                }
            }
            Err(e) => *refused.lock().expect("lock") = e.to_string(),
        }
        next += PER_POST;
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn status_file(agent: &Agent) -> String {
    std::fs::read_to_string(agent.data_dir().join("reload.status")).unwrap_or_default()
}

#[test]
fn points_posted_while_the_output_and_log_level_switch_arrive_exactly_once() {
    let peer = NsqPeer::start();
    let first = "[output]\nflush_ms = 50\nbatch_size = 20\n";
    let agent = start(first);
    let stop = Arc::new(AtomicBool::new(false));
    let accepted = Arc::new(Mutex::new(Vec::new()));
    let refused = Arc::new(Mutex::new(String::new()));
    let posting = {
        let (addr, stop, accepted, refused) = (
            agent.addr.clone(),
            stop.clone(),
            accepted.clone(),
            refused.clone(),
        );
        std::thread::spawn(move || poster(addr, stop, accepted, refused))
    };
    let out1 = agent.data_dir().join("out");
    let out2 = agent.dir.path().join("out2");
    assert!(
        wait_until(Duration::from_secs(20), || file_seqs(&out1).len() >= 200),
        "points reach the first file output (last refusal: {}):\n{:.2000}\n{}",
        refused.lock().expect("lock"),
        std::fs::read_to_string(out1.join("r.lp")).unwrap_or_default(),
        agent.stderr()
    );
    assert!(
        !agent.stderr().contains("Registry plan unchanged."),
        "debug lines are off at level info"
    );

    // 1: SIGHUP, to another file dir, log level debug (the registry refresh logs at debug).
    rewrite(
        &agent,
        &format!(
            "{first}path = \"out2\"\n[log]\nlevel = \"debug\"\n[registry]\nrefresh_secs = 1\n"
        ),
    );
    let pid = agent.pid().expect("running").to_string();
    let hup = Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .expect("kill");
    assert!(hup.success());
    assert!(
        wait_until(Duration::from_secs(20), || status_file(&agent)
            .starts_with(&format!("{pid} 1 applied"))),
        "reload recorded: {:?}\n{}",
        status_file(&agent),
        agent.stderr()
    );
    let record = status_file(&agent);
    for key in ["output.path", "log.level", "registry.refresh_secs"] {
        assert!(record.contains(key), "{record}");
    }
    assert!(
        wait_until(Duration::from_secs(20), || file_seqs(&out2).len() >= 200),
        "points reach the second file output:\n{}",
        agent.stderr()
    );
    assert!(
        wait_until(Duration::from_secs(10), || agent
            .stderr()
            .contains("Registry plan unchanged.")),
        "debug lines once the level is debug:\n{}",
        agent.stderr()
    );

    // 2: `agent reload`, to the NSQ peer.
    rewrite(
        &agent,
        &format!(
            "{first}kind = \"nsq\"\nnsqd = [\"{}\"]\n[log]\nlevel = \"debug\"\n[registry]\nrefresh_secs = 1\n",
            peer.addr()
        ),
    );
    let (code, stdout, stderr) = reload(&agent.config_path);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("reloaded: applied") && stdout.contains("output.kind"),
        "{stdout}"
    );
    let nsq_seqs = || {
        let mut counts = BTreeMap::new();
        count_seqs(&peer.lines("r").join("\n"), &mut counts);
        counts
    };
    assert!(
        wait_until(Duration::from_secs(20), || nsq_seqs().len() >= 200),
        "points reach nsq:\n{}",
        agent.stderr()
    );
    stop.store(true, Ordering::Relaxed);
    posting.join().expect("poster");

    let accepted = accepted.lock().expect("lock").clone();
    assert!(accepted.len() >= 600, "{} accepted", accepted.len());
    let total = || {
        let mut all = file_seqs(&out1);
        for (seq, n) in file_seqs(&out2).into_iter().chain(nsq_seqs()) {
            *all.entry(seq).or_default() += n;
        }
        all
    };
    let arrived = wait_until(Duration::from_secs(30), || {
        let all = total();
        accepted.iter().all(|s| all.contains_key(s))
    });
    let all = total();
    let missing: Vec<u64> = accepted
        .iter()
        .copied()
        .filter(|s| !all.contains_key(s))
        .take(10)
        .collect();
    assert!(
        arrived,
        "accepted points missing: {missing:?}\n{}",
        agent.stderr()
    );
    let twice: Vec<(&u64, &u32)> = all.iter().filter(|(_, n)| **n > 1).take(10).collect();
    assert!(
        twice.is_empty(),
        "points delivered more than once: {twice:?}"
    );
    // Each output got a share: the switches happened while points were flowing.
    assert!(!file_seqs(&out1).is_empty() && !file_seqs(&out2).is_empty() && !nsq_seqs().is_empty());
}

#[test]
fn a_broken_config_is_refused_whole_and_the_agent_runs_on_the_old_one() {
    let mut agent = start("[output]\nflush_ms = 50\n");
    let out = agent.data_dir().join("out");
    let post = |agent: &Agent, seq: u64| {
        let (st, v) = post(agent, format!("reload.seq,src=e2e value={seq}i\n"));
        assert_eq!(st, 200, "{v}");
    };

    // Not TOML at all: refused, exit 2, the log says so.
    std::fs::write(&agent.config_path, "[output\nkind = ").expect("write");
    let (code, stdout, stderr) = reload(&agent.config_path);
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert!(stderr.contains("refused"), "{stderr}");
    // Valid TOML, one good change and one bad value: nothing of it applies.
    rewrite(
        &agent,
        "[output]\nflush_ms = 50\npath = \"out3\"\n[log]\nlevel = \"loud\"\n",
    );
    let (code, _, stderr) = reload(&agent.config_path);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("log.level"), "{stderr}");
    assert!(
        agent
            .stderr()
            .contains("Config reload refused, the running configuration stays"),
        "{}",
        agent.stderr()
    );
    post(&agent, 1);
    assert!(
        wait_until(Duration::from_secs(10), || file_seqs(&out).contains_key(&1)),
        "the old output still delivers:\n{}",
        agent.stderr()
    );
    assert!(
        !agent.dir.path().join("out3").exists(),
        "the refused output was not used"
    );

    // A key that needs a restart is reported and kept; the rest applies.
    let other = support::free_port();
    std::fs::write(
        &agent.config_path,
        format!(
            "[agent]\nlisten = \"127.0.0.1:{other}\"\ndata_dir = \"data\"\ntoken = \"{TOKEN}\"\nalive_secs = 3600\n[output]\nflush_ms = 50\npath = \"out4\"\n"
        ),
    )
    .expect("write");
    let (code, stdout, stderr) = reload(&agent.config_path);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("needs a restart") && stdout.contains("agent.listen"),
        "{stdout}"
    );
    post(&agent, 2);
    assert!(
        wait_until(Duration::from_secs(10), || file_seqs(
            &agent.dir.path().join("out4")
        )
        .contains_key(&2)),
        "the new output delivers on the old address:\n{}",
        agent.stderr()
    );

    // A new token holds from the next request; the old one is refused.
    let token2 = "e2e-reload-second-token-987654";
    std::fs::write(
        &agent.config_path,
        format!("[agent]\nlisten = \"{}\"\ndata_dir = \"data\"\ntoken = \"{token2}\"\nalive_secs = 3600\n", agent.addr),
    )
    .expect("write");
    let (code, stdout, stderr) = reload(&agent.config_path);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("agent.token"), "{stdout}");
    assert_eq!(agent.get_with("/me/ns", Some(TOKEN)).0, 401);
    assert_eq!(agent.get_with("/me/ns", Some(token2)).0, 200);

    // No agent: exit 1.
    assert!(agent.stop(), "{}", agent.stderr());
    let (code, _, stderr) = reload(&agent.config_path);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("no agent is running"), "{stderr}");
}
