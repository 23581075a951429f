//! Starting, stopping and configuring the real agent binary.

use std::time::Duration;

use support::{wait_until, AgentBuilder};

const ONE_NS: &str = "[[namespace]]\nname = \"e2e.life\"\n";

#[test]
fn foreground_agent_writes_alive_points_to_the_file_output_and_drains_on_sigterm() {
    let mut agent = AgentBuilder::new()
        .agent_keys("hostname = \"e2e-host\"")
        .config("[output]\nflush_ms = 100")
        .registry(ONE_NS)
        .start();
    let arrived = wait_until(Duration::from_secs(10), || {
        agent
            .output_file("e2e.life")
            .contains("agent.alive,host=e2e-host value=1.0 ")
    });
    assert!(
        arrived,
        "no agent.alive point in the file output:\n{}",
        agent.stderr()
    );
    let line = agent
        .output_file("e2e.life")
        .lines()
        .find(|l| l.starts_with("agent.alive,"))
        .map(str::to_owned)
        .unwrap_or_default();
    let ts: i64 = line
        .rsplit(' ')
        .next()
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    assert!(
        (1_000_000_000..10_000_000_000).contains(&ts),
        "timestamp in seconds: {line}"
    );
    // Part of the idle-memory budget (docs/benchmarks.md, "Idle agent"): each of these costs
    // 0.2-1.5 MiB of resident memory just by being mapped, and none of them is needed.
    let pid = agent.pid().expect("running");
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("maps");
    for lib in ["/libm.so", "/libssl.so", "/libcrypto.so"] {
        assert!(!maps.contains(lib), "the agent maps {lib}:\n{maps}");
    }
    assert!(agent.stop(), "clean exit on SIGTERM:\n{}", agent.stderr());
    assert!(
        !agent.data_dir().join("agent.pid").exists(),
        "pid file removed at exit"
    );
}

#[test]
fn detached_start_refuses_a_second_start_and_stop_stops_it() {
    let dir = tempfile::tempdir().expect("tmp");
    let port = support::free_port();
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!("[agent]\nlisten = \"127.0.0.1:{port}\"\n[output]\nflush_ms = 50\n"),
    )
    .expect("config");
    std::fs::write(dir.path().join("registry.toml"), ONE_NS).expect("registry");
    // A runtime dir of its own: the "last started" pointer is this test's alone.
    let runtime = tempfile::tempdir().expect("runtime dir");
    let cmd = || {
        let mut c = support::agent_cmd();
        c.env("XDG_RUNTIME_DIR", runtime.path());
        c
    };
    let run = |args: &[&str]| {
        cmd()
            .args(args)
            .arg("-f")
            .arg(&config)
            .output()
            .expect("run agent")
    };
    let first = run(&["start"]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(String::from_utf8_lossy(&first.stdout).contains("agent started (pid "));
    let second = run(&["start"]);
    assert!(!second.status.success(), "a second start must fail");
    let msg = String::from_utf8_lossy(&second.stderr);
    assert!(msg.contains("already running"), "{msg}");
    let stop = run(&["stop"]);
    assert!(
        stop.status.success(),
        "{}",
        String::from_utf8_lossy(&stop.stderr)
    );
    assert!(!dir.path().join("data/agent.pid").exists());
    let again = run(&["stop"]);
    assert!(!again.status.success(), "stopping a stopped agent fails");
    assert!(String::from_utf8_lossy(&again.stderr).contains("no agent is running"));

    // Without -f, `stop` finds the agent this user started last, as the original agent did.
    let restarted = run(&["start"]);
    assert!(
        restarted.status.success(),
        "{}",
        String::from_utf8_lossy(&restarted.stderr)
    );
    let bare_stop = cmd().arg("stop").output().expect("run agent stop");
    assert!(
        bare_stop.status.success(),
        "{}",
        String::from_utf8_lossy(&bare_stop.stderr)
    );
    assert!(!dir.path().join("data/agent.pid").exists());
    let nothing = cmd().arg("stop").output().expect("run agent stop");
    assert!(!nothing.status.success());
    let said = String::from_utf8_lossy(&nothing.stderr);
    assert!(
        said.contains("the last agent this user started is not running") && said.contains("-f"),
        "the message says how to name the agent: {said}"
    );
    assert!(!said.contains("os error"), "no raw errno: {said}");
}

/// `agent check -f config`.
fn agent_check(config: &std::path::Path) -> std::process::Output {
    support::agent_cmd()
        .arg("check")
        .arg("-f")
        .arg(config)
        .output()
        .expect("run agent check")
}

#[test]
fn check_reads_the_registry_file_too() {
    let dir = tempfile::tempdir().expect("tmp");
    let config = dir.path().join("agent.toml");
    std::fs::write(&config, "").expect("config");
    let registry = dir.path().join("registry.toml");
    // `agent check` on the config with this registry file: whether it passed, and what it said.
    let check = |registry_text: &str| {
        std::fs::write(&registry, registry_text).expect("registry");
        let out = agent_check(&config);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    };
    let (ok, text) =
        check("[[namespace]]\nname = \"web.shop\"\nports = [{ name = \"ssh\", port = 22 }]\n");
    assert!(ok, "{text}");
    assert!(text.contains("ok (1 namespaces, 1 items)"), "{text}");

    let (ok, text) = check(
        "[[namespace]]\nname = \"bad ns\"\n[[namespace]]\nname = \"web.shop\"\nports = [{ name = \"ssh\", port = 0 }]\n",
    );
    assert!(!ok, "problems fail the check: {text}");
    assert!(text.contains("2 problem(s)"), "{text}");
    assert!(text.contains("\"bad ns\""), "{text}");
    assert!(text.contains("port check"), "{text}");

    let (ok, text) =
        check("[[namespace]]\nname = \"a\"\nports = [{ name = \"x\", port = \"22\" }]\n");
    assert!(!ok, "{text}");
    assert!(text.contains("namespace[0].ports[0].port"), "{text}");
}

#[test]
fn malformed_config_is_refused_naming_the_key_and_file() {
    let dir = tempfile::tempdir().expect("tmp");
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "[output]\nkind = \"nsq\"\nbatchsize = 5\n").expect("config");
    for cmd in ["check", "start"] {
        let out = support::agent_cmd()
            .args(
                [cmd, "--foreground", "-f"]
                    .iter()
                    .filter(|a| cmd == "start" || **a != "--foreground"),
            )
            .arg(&config)
            .output()
            .expect("run");
        assert!(!out.status.success(), "{cmd} must fail");
        let msg = String::from_utf8_lossy(&out.stderr);
        assert!(
            msg.contains("batchsize") && msg.contains("bad.toml"),
            "{cmd}: {msg}"
        );
    }
    std::fs::write(&config, "[output]\nbatch_size = 0\nflush_ms = 0\n").expect("config");
    let out = agent_check(&config);
    let msg = String::from_utf8_lossy(&out.stderr);
    assert!(
        msg.contains("output.batch_size") && msg.contains("output.flush_ms"),
        "{msg}"
    );
}
