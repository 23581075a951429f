//! Plugins run contained (issue 11): nothing a run starts outlives it, `setsid` or not; a fork
//! bomb stops at its pids limit; only fds 0-2 and the documented environment reach a plugin;
//! nothing of the agent's is writable by the plugin user. As root, with plugins as `nobody`.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use support::gitrepo::BareRepo;
use support::{wait_until, Agent, AgentBuilder};

const NS: &str = "e2e.contain";
const NOBODY: u32 = 65534;

fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// A `sleep` whose path carries a marker unique to the test, so its processes can be found in
/// `/proc` (a symlink: argv[0] is the path it was run by).
struct Marker {
    dir: tempfile::TempDir,
    sleep: PathBuf,
}

impl Marker {
    fn new(name: &str) -> Marker {
        let dir = tempfile::Builder::new()
            .prefix(&format!("contain-{name}-"))
            .tempdir()
            .expect("tmp");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let sleep = dir.path().join("marker-sleep");
        std::os::unix::fs::symlink("/bin/sleep", &sleep).expect("symlink");
        Marker { dir, sleep }
    }

    fn tag(&self) -> String {
        self.dir.path().display().to_string()
    }

    /// Processes of the plugin user whose command line carries the marker.
    fn alive(&self) -> Vec<i32> {
        let tag = self.tag();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| {
                let pid: i32 = e.file_name().to_str()?.parse().ok()?;
                if e.metadata().ok()?.uid() != NOBODY {
                    return None;
                }
                let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
                if stat.rsplit_once(')')?.1.trim_start().starts_with('Z') {
                    return None;
                }
                let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
                String::from_utf8_lossy(&cmd).contains(&tag).then_some(pid)
            })
            .collect()
    }
}

impl Drop for Marker {
    /// A failing test must not leave its sleeps behind on the machine.
    fn drop(&mut self) {
        for pid in self.alive() {
            let _ = Command::new("kill")
                .arg("-KILL")
                .arg(pid.to_string())
                .status();
        }
    }
}

fn registry(items: &[(String, u64, String)]) -> String {
    let list: Vec<String> = items
        .iter()
        .map(|(git, interval, params)| {
            format!("{{ git = \"{git}\", interval = {interval}, parameters = \"{params}\" }}")
        })
        .collect();
    format!(
        "{}plugins = [{}]\n",
        support::quiet_namespaces(&[NS]),
        list.join(", ")
    )
}

fn wait_cloned(agent: &Agent, n: usize) {
    std::fs::set_permissions(agent.dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod");
    let ok = wait_until(Duration::from_secs(30), || {
        let (_, list) = agent.get("/plugins/list");
        list["plugins"]
            .as_array()
            .is_some_and(|p| p.len() == n && p.iter().all(|p| p["commit"].is_string()))
    });
    assert!(
        ok,
        "not cloned: {}\n{}",
        agent.get("/plugins/list").1,
        agent.stderr()
    );
}

/// Every way a script leaves processes behind: a `setsid` job, `setsid -f`, a double fork,
/// and a daemon that double-forks after `setsid`.
const ESCAPES: &str = r#"S="$1"
setsid "$S" 1000 &
setsid -f "$S" 1000
( ( "$S" 1000 & ) & )
( setsid bash -c '"$0" 1000 & exit 0' "$S" & )
sleep 0.3
"#;

#[test]
fn processes_a_plugin_leaves_behind_are_killed_after_its_run_and_after_a_timeout() {
    escapes_are_killed("", "cgroup");
}

/// The fallback where cgroups are not usable, forced here where they are.
#[test]
fn the_reaper_fallback_kills_what_a_plugin_leaves_behind_too() {
    escapes_are_killed("plugin_containment = \"reaper\"", "reaper");
}

fn escapes_are_killed(agent_keys: &str, mode: &str) {
    if !is_root() {
        eprintln!("skipped: needs root (plugins run as nobody)");
        return;
    }
    let marker = Marker::new("escape");
    let remotes = tempfile::tempdir().expect("tmp");
    let quick = BareRepo::new(remotes.path(), "escape", &format!("{ESCAPES}echo done\n"));
    let slow = BareRepo::new(
        remotes.path(),
        "escape-slow",
        &format!("{ESCAPES}sleep 30\n"),
    );
    let agent = AgentBuilder::new()
        .agent_keys(agent_keys)
        .registry(&registry(&[
            (quick.url(), 0, String::new()),
            (slow.url(), 0, String::new()),
        ]))
        .start();
    wait_cloned(&agent, 2);
    let status = agent.status();
    assert!(
        status["plugins"]["containment"]
            .as_str()
            .is_some_and(|c| c.starts_with(mode)),
        "{status}"
    );
    let sleep = marker.sleep.display().to_string();

    let (code, body) = agent.get(&format!("/plugins/run?ns={NS}&repo=escape&param={sleep}"));
    assert_eq!(code, 200, "{body}");
    let left = marker.alive();
    assert!(left.is_empty(), "left behind by a run that ended: {left:?}");
    assert_eq!(body["result"]["ok"], true, "{body}");
    // Nothing escaped holds the output pipe open: the output is whole.
    assert_eq!(body["result"]["stdout"], "done\n", "{body}");

    let started = Instant::now();
    let (code, body) = agent.get(&format!(
        "/plugins/run?ns={NS}&repo=escape-slow&timeout=2&param={sleep}"
    ));
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["result"]["reason"], "timeout", "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    let left = marker.alive();
    assert!(
        left.is_empty(),
        "left behind by a run that timed out: {left:?}"
    );
}

#[test]
fn a_periodic_plugin_that_escapes_every_run_leaks_nothing_after_several_runs() {
    if !is_root() {
        eprintln!("skipped: needs root (plugins run as nobody)");
        return;
    }
    let marker = Marker::new("periodic");
    let remotes = tempfile::tempdir().expect("tmp");
    let repo = BareRepo::new(remotes.path(), "leaky", &format!("{ESCAPES}echo '[]'\n"));
    let agent = AgentBuilder::new()
        .config("[output]\nflush_ms = 100")
        .registry(&registry(&[(
            repo.url(),
            2,
            marker.sleep.display().to_string(),
        )]))
        .start();
    wait_cloned(&agent, 1);
    let ran = wait_until(Duration::from_secs(40), || {
        agent.output_file(NS).matches("plugin.leaky,").count() >= 4
    });
    assert!(
        ran,
        "four runs:\n{}\n{}",
        agent.output_file(NS),
        agent.stderr()
    );
    let (code, body) = agent.get(&format!("/plugins/disable?ns={NS}&repo=leaky"));
    assert_eq!(code, 200, "{body}");
    let idle = wait_until(Duration::from_secs(10), || {
        agent.get("/plugins/list").1["plugins"][0]["running"] == false
    });
    assert!(idle);
    assert!(
        agent.output_file(NS).contains("plugin.leaky,host="),
        "{}",
        agent.output_file(NS)
    );
    let left = marker.alive();
    assert!(
        left.is_empty(),
        "left behind after several runs: {} processes",
        left.len()
    );
}

#[test]
fn a_fork_bomb_stops_at_its_pids_limit_and_the_agent_keeps_answering() {
    if !is_root() {
        eprintln!("skipped: needs root (plugins run as nobody)");
        return;
    }
    let marker = Marker::new("bomb");
    let remotes = tempfile::tempdir().expect("tmp");
    // Bounded, so that a missing limit shows as a count over it rather than a dead machine.
    let bomb = BareRepo::new(
        remotes.path(),
        "bomb",
        "for i in $(seq 1 300); do \"$1\" 1000 & done\nwait\n",
    );
    let agent = AgentBuilder::new()
        .agent_keys("plugin_pids_max = 32")
        .registry(&registry(&[(bomb.url(), 0, String::new())]))
        .start();
    wait_cloned(&agent, 1);
    assert!(
        agent.status()["plugins"]["containment"]
            .as_str()
            .is_some_and(|c| c.contains("pids 32")),
        "{}",
        agent.status()
    );

    let url = format!(
        "http://{}/plugins/run?ns={NS}&repo=bomb&timeout=6&param={}",
        agent.addr,
        marker.sleep.display()
    );
    let token = agent.token().unwrap_or_default();
    let run = std::thread::spawn(move || {
        reqwest::blocking::Client::new()
            .get(url)
            .bearer_auth(token)
            .timeout(Duration::from_secs(60))
            .send()
            .and_then(|r| r.json::<serde_json::Value>())
            .expect("run answer")
    });
    let mut most = 0;
    let mut slowest = Duration::ZERO;
    while !run.is_finished() {
        most = most.max(marker.alive().len());
        let asked = Instant::now();
        let status = agent.status();
        slowest = slowest.max(asked.elapsed());
        assert!(status["version"].is_string(), "{status}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let body = run.join().expect("run thread");
    assert!(most > 0, "the bomb ran");
    assert!(
        most <= 32,
        "{most} processes ran, over the pids limit of 32"
    );
    assert!(
        slowest < Duration::from_secs(2),
        "/me/status took {slowest:?}"
    );
    assert_eq!(body["result"]["ok"], false, "{body}");
    let left = marker.alive();
    assert!(left.is_empty(), "left behind: {}", left.len());
}

#[test]
fn only_fds_0_1_2_and_the_documented_environment_reach_a_plugin() {
    if !is_root() {
        eprintln!("skipped: needs root (plugins run as nobody)");
        return;
    }
    let secrets = tempfile::tempdir().expect("tmp");
    let secret = secrets.path().join("secret");
    std::fs::write(&secret, "TOP-SECRET-CONTENT\n").expect("write");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let remotes = tempfile::tempdir().expect("tmp");
    let lister = BareRepo::new(
        remotes.path(),
        "lister",
        // Builtins only around the listing, so that no pipe or directory of bash's own is
        // open while it is read (the glob's directory is closed again before the loop).
        "fds=(/proc/$$/fd/*)\n\
         for f in \"${fds[@]}\"; do [ -e \"$f\" ] || continue; echo -n \"fd ${f##*/} \"; readlink \"$f\"; done\n\
         cat <&7 2>/dev/null\n\
         env\n",
    );
    let agent = AgentBuilder::new()
        .shell(&format!("exec 7<'{}'", secret.display()))
        .registry(&registry(&[(lister.url(), 0, String::new())]))
        .start();
    wait_cloned(&agent, 1);
    // The agent itself holds the inherited fd: the test is meaningful.
    let pid = agent.pid().expect("pid");
    assert!(
        std::fs::read_link(format!("/proc/{pid}/fd/7")).is_ok_and(|l| l == secret),
        "the agent was started with fd 7 on the secret"
    );

    let (code, body) = agent.get(&format!("/plugins/run?ns={NS}&repo=lister"));
    assert_eq!(code, 200, "{body}");
    let out = body["result"]["stdout"]
        .as_str()
        .expect("stdout")
        .to_owned();
    assert!(
        !out.contains("TOP-SECRET"),
        "the plugin read the secret:\n{out}"
    );
    let fds: Vec<&str> = out.lines().filter_map(|l| l.strip_prefix("fd ")).collect();
    for fd in &fds {
        let n = fd.split(' ').next().unwrap_or("");
        // 255: bash's own descriptor of the script it runs.
        assert!(
            ["0", "1", "2", "255"].contains(&n),
            "fd {fd} reached the plugin:\n{out}"
        );
    }
    assert!(
        fds.iter()
            .any(|f| f.starts_with("255 ") && f.ends_with("plugin.sh")),
        "{out}"
    );
    let names: Vec<&str> = out
        .lines()
        .filter(|l| !l.starts_with("fd "))
        .filter_map(|l| l.split_once('=').map(|(k, _)| k))
        .collect();
    // PWD, SHLVL and _ are bash's own.
    let documented = [
        "PATH",
        "HOME",
        "LANG",
        "AGENT_NS",
        "AGENT_PLUGIN",
        "PWD",
        "SHLVL",
        "_",
    ];
    for n in &names {
        assert!(documented.contains(n), "undocumented variable {n}:\n{out}");
    }
    for n in ["PATH", "HOME", "LANG", "AGENT_NS", "AGENT_PLUGIN"] {
        assert!(names.contains(&n), "{n} missing:\n{out}");
    }
    assert!(out.contains(&format!("AGENT_NS={NS}\n")), "{out}");
}

/// Whether `nobody` can write `path`: append to a file, or create a file in a folder.
fn nobody_can_write(path: &Path) -> bool {
    let script = if path.is_dir() {
        format!("touch '{}/planted-by-nobody'", path.display())
    } else {
        format!("echo planted >> '{}'", path.display())
    };
    Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "sh",
            "-c",
        ])
        .arg(script)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("setpriv")
        .success()
}

#[test]
fn under_umask_000_nothing_of_the_agents_is_writable_by_the_plugin_user() {
    if !is_root() {
        eprintln!("skipped: needs root (setpriv to nobody)");
        return;
    }
    let remotes = tempfile::tempdir().expect("tmp");
    let repo = BareRepo::new(remotes.path(), "stateful", "echo '[]'\n");
    let mut agent = AgentBuilder::new()
        .shell("umask 000")
        .config("[output]\nflush_ms = 100")
        .registry(&registry(&[(repo.url(), 0, String::new())]))
        .start();
    wait_cloned(&agent, 1);
    // The plugin state file comes with a disable.
    let (code, body) = agent.get(&format!("/plugins/disable?ns={NS}&repo=stateful"));
    assert_eq!(code, 200, "{body}");
    let data = agent.data_dir();
    let out = data.join("out").join(format!("{NS}.lp"));
    assert!(
        wait_until(Duration::from_secs(30), || out.is_file()),
        "{}",
        agent.stderr()
    );
    let log = std::fs::read_dir(data.join("log"))
        .expect("log dir")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "log"))
        .expect("a log file");
    let spool = data.join("spool");
    let mut targets = vec![
        data.clone(),
        spool.clone(),
        data.join("out"),
        out,
        data.join("log"),
        log,
        data.join("registry-cache.json"),
        data.join("plugins-state.json"),
        data.join("agent.pid"),
    ];
    targets.extend(
        std::fs::read_dir(&spool)
            .expect("spool dir")
            .flatten()
            .map(|e| e.path()),
    );
    for t in &targets {
        assert!(t.exists(), "{} exists", t.display());
        assert!(!nobody_can_write(t), "nobody could write {}", t.display());
    }
    let pid = agent.pid().expect("pid");
    let umask = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Umask:"))
                .map(str::to_owned)
        });
    assert_eq!(
        umask.as_deref(),
        Some("Umask:\t0027"),
        "the agent set its umask"
    );
    assert!(agent.stop(), "{}", agent.stderr());
}
