//! Starting, stopping and configuring the real agent binary.

use std::process::Stdio;
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
    let pid: i32 = String::from_utf8_lossy(&first.stdout)
        .split("(pid ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .and_then(|p| p.parse().ok())
        .expect("the pid in the start message");
    let second = run(&["start"]);
    assert!(!second.status.success(), "a second start must fail");
    let msg = String::from_utf8_lossy(&second.stderr);
    assert!(msg.contains("already running"), "{msg}");
    // The command that stops it, with the config it was started with.
    let canonical = config.canonicalize().expect("canonical");
    assert!(
        msg.contains(&format!("agent stop -f {}", canonical.display())),
        "{msg}"
    );
    let stop = run(&["stop"]);
    assert!(
        stop.status.success(),
        "{}",
        String::from_utf8_lossy(&stop.stderr)
    );
    // "stopped" means gone: no process (or only a zombie waiting for its parent).
    let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = state
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next().map(str::to_owned));
    assert!(
        matches!(state.as_deref(), None | Some("Z" | "X")),
        "agent stop said stopped while pid {pid} still runs (state {state:?})"
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
    assert!(text.contains("ok (1 namespace, 1 item)"), "{text}");

    let (ok, text) = check(
        "[[namespace]]\nname = \"bad ns\"\n[[namespace]]\nname = \"web.shop\"\nports = [{ name = \"ssh\", port = 0 }]\n",
    );
    assert!(!ok, "problems fail the check: {text}");
    assert!(text.contains("2 problems"), "{text}");
    assert!(text.contains("\"bad ns\""), "{text}");
    assert!(text.contains("port check"), "{text}");

    let (ok, text) =
        check("[[namespace]]\nname = \"a\"\nports = [{ name = \"x\", port = \"22\" }]\n");
    assert!(!ok, "{text}");
    assert!(text.contains("namespace[0].ports[0].port"), "{text}");
}

#[test]
fn check_prints_what_would_run_and_refuses_addresses_the_agent_refuses() {
    let dir = tempfile::tempdir().expect("tmp");
    let config = dir.path().join("agent.toml");
    std::fs::write(&config, "").expect("config");
    std::fs::write(
        dir.path().join("registry.toml"),
        "[[namespace]]\nname = \"web.shop\"\nintervals = { CPU = 10 }\n\
         ports = [{ name = \"ssh\", port = 22 }]\n\
         procs = [{ name = \"sshd\", bin_path = \"/usr/sbin/sshd\" }]\n\
         plugins = [{ git = \"https://git.example/ops/nginx.git\", interval = 60 }]\n",
    )
    .expect("registry");
    let out = agent_check(&config);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    for line in [
        "web.shop",
        "CPU every 10 s",
        "port ssh: 127.0.0.1:22 every 30 s",
        "process sshd: matching \"/usr/sbin/sshd\"",
        "plugin https://git.example/ops/nginx.git: every 60 s",
    ] {
        assert!(text.contains(line), "no {line:?} in:\n{text}");
    }

    // The plugin manager refuses this address; the check must say so instead of "ok".
    std::fs::write(
        dir.path().join("registry.toml"),
        "[[namespace]]\nname = \"web.shop\"\n\
         plugins = [{ git = \"ftp://files.example/x.git\" }]\n",
    )
    .expect("registry");
    let out = agent_check(&config);
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "an ftp:// plugin passed the check");
    assert!(
        text.contains("1 problem") && text.contains("'ftp://' is not supported"),
        "{text}"
    );
}

#[test]
fn an_unreadable_config_is_said_once() {
    let out = agent_check(std::path::Path::new("/nonexistent/agent.toml"));
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(
        text.matches("No such file or directory").count(),
        1,
        "the cause is repeated: {text}"
    );
}

#[test]
fn a_detached_start_with_the_stdout_output_is_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\nlisten = \"127.0.0.1:{}\"\n[output]\nkind = \"stdout\"\n",
            support::free_port()
        ),
    )
    .expect("config");
    std::fs::write(dir.path().join("registry.toml"), ONE_NS).expect("registry");
    let runtime = tempfile::tempdir().expect("runtime dir");
    let out = support::agent_cmd()
        .env("XDG_RUNTIME_DIR", runtime.path())
        .args(["start", "-f"])
        .arg(&config)
        .output()
        .expect("run agent start");
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a background agent writing to stdout writes nowhere: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        text.contains("--foreground") && text.contains("stdout"),
        "{text}"
    );
    assert!(
        !dir.path().join("data/agent.pid").exists(),
        "no agent was left running"
    );
}

#[test]
fn an_output_that_was_never_reachable_is_logged_at_its_first_failure() {
    // A port nothing listens on: the first delivery fails with "connection refused".
    let closed = support::free_port();
    let agent = AgentBuilder::new()
        .config(&format!(
            "[output]\nkind = \"nsq\"\nflush_ms = 100\nnsqd = [\"127.0.0.1:{closed}\"]"
        ))
        .registry(ONE_NS)
        .start();
    let logged = wait_until(Duration::from_secs(20), || {
        agent.stderr().contains("Output is failing")
    });
    assert!(
        logged,
        "nothing says the output is down:\n{}",
        agent.stderr()
    );
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

/// A local user who plants the "last agent started" pointer where root's agent looks for it
/// (the shared temp dir, when root has no `XDG_RUNTIME_DIR`, as under `sudo`) must not make
/// `agent stop` signal a process of their choosing, nor make `agent start` write through a
/// symlink of theirs; an agent's own pointer still works.
#[test]
fn a_pointer_planted_by_another_user_is_not_followed_by_stop_nor_written_through_by_start() {
    use std::os::unix::fs::{lchown, PermissionsExt};
    use std::process::Command;
    const NOBODY: u32 = 65534;
    let root = std::fs::metadata("/proc/self").is_ok_and(|m| {
        use std::os::unix::fs::MetadataExt;
        m.uid() == 0
    });
    if !root {
        eprintln!("skipped: needs root (files of another user are planted)");
        return;
    }
    let work = tempfile::tempdir().expect("tmp");
    let shared_tmp = work.path().join("tmp");
    std::fs::create_dir(&shared_tmp).expect("mkdir");
    std::fs::set_permissions(&shared_tmp, std::fs::Permissions::from_mode(0o1777)).expect("chmod");
    let as_nobody = |p: &std::path::Path| lchown(p, Some(NOBODY), Some(NOBODY)).expect("chown");
    let run_stop = || {
        support::agent_cmd()
            .env_remove("XDG_RUNTIME_DIR")
            .env("TMPDIR", &shared_tmp)
            .arg("stop")
            .output()
            .expect("run agent stop")
    };

    // The attacker's "pid file": the pid of a process they want dead, locked as an agent's is.
    let mut victim = Command::new("sleep").arg("60").spawn().expect("victim");
    let evil = shared_tmp.join("evil.pid");
    std::fs::write(&evil, format!("{}\n", victim.id())).expect("write");
    as_nobody(&evil);
    let mut locker = Command::new("flock")
        .arg(&evil)
        .args(["sleep", "60"])
        .spawn()
        .expect("flock");
    let locked = wait_until(Duration::from_secs(10), || {
        !Command::new("flock")
            .args(["-n", "-s"])
            .arg(&evil)
            .arg("true")
            .status()
            .expect("flock -n")
            .success()
    });
    assert!(locked, "the attacker's pid file is locked");
    let pointer = shared_tmp.join("agent-0.pidfile");
    std::fs::write(&pointer, evil.display().to_string()).expect("write");
    as_nobody(&pointer);
    let private = shared_tmp.join("agent-0");
    std::fs::create_dir(&private).expect("mkdir");
    std::fs::write(private.join("agent-0.pidfile"), evil.display().to_string()).expect("write");
    as_nobody(&private.join("agent-0.pidfile"));
    as_nobody(&private);
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let stop = run_stop();
    std::thread::sleep(Duration::from_millis(300));
    let victim_alive = victim.try_wait().expect("wait").is_none();
    let _ = victim.kill();
    let _ = locker.kill();
    let _ = victim.wait();
    let _ = locker.wait();
    assert!(
        victim_alive,
        "agent stop signalled the process another user's pointer named:\n{}",
        String::from_utf8_lossy(&stop.stderr)
    );
    assert!(!stop.status.success(), "nothing of this user's was stopped");

    // A symlink where the pointer is written, to a root-only file.
    let precious = work.path().join("precious");
    std::fs::write(&precious, "precious\n").expect("write");
    std::fs::set_permissions(&precious, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    for planted in [&pointer, &private.join("agent-0.pidfile")] {
        std::fs::remove_file(planted).expect("rm");
        std::os::unix::fs::symlink(&precious, planted).expect("symlink");
        as_nobody(planted);
    }
    let mut agent = AgentBuilder::new()
        .registry(ONE_NS)
        .env_remove("XDG_RUNTIME_DIR")
        .env("TMPDIR", &shared_tmp.display().to_string())
        .start();
    assert_eq!(
        std::fs::read_to_string(&precious).expect("read"),
        "precious\n",
        "agent start wrote through another user's symlink"
    );
    assert!(agent.stop(), "{}", agent.stderr());

    // Without the planted files, the agent records itself in a folder only it can write, and a
    // bare `agent stop` finds it there.
    std::fs::remove_file(&pointer).expect("rm");
    std::fs::remove_dir_all(&private).expect("rm");
    let mut agent = AgentBuilder::new()
        .registry(ONE_NS)
        .env_remove("XDG_RUNTIME_DIR")
        .env("TMPDIR", &shared_tmp.display().to_string())
        .start();
    let stop = run_stop();
    assert!(
        stop.status.success(),
        "a bare agent stop finds the agent:\n{}\n{}",
        String::from_utf8_lossy(&stop.stderr),
        agent.stderr()
    );
    let meta = std::fs::symlink_metadata(&private).expect("private pointer folder");
    assert!(meta.is_dir(), "a real folder");
    assert_eq!(meta.permissions().mode() & 0o777, 0o700, "only root's");
    let _ = agent.stop();
}

/// Two operators logged in as the same user without `XDG_RUNTIME_DIR` (root over ssh): each
/// login is its own audit session (`pam_loginuid` writes `/proc/self/loginuid`; each "login"
/// here is a shell that does the same, and every command it runs inherits the session), and
/// each has its own "last started" pointer: operator B starting an agent after A does not make
/// A's bare `agent stop` stop B's.
#[test]
fn two_logins_of_one_user_each_stop_the_agent_they_started() {
    let shared_tmp = tempfile::tempdir().expect("tmp");
    let work = tempfile::tempdir().expect("tmp");
    let agents: Vec<(tempfile::TempDir, std::path::PathBuf)> = (0..2)
        .map(|_| {
            let dir = tempfile::tempdir().expect("tmp");
            let config = dir.path().join("agent.toml");
            let port = support::free_port();
            std::fs::write(&config, format!("[agent]\nlisten = \"127.0.0.1:{port}\"\n"))
                .expect("config");
            std::fs::write(dir.path().join("registry.toml"), ONE_NS).expect("registry");
            (dir, config)
        })
        .collect();
    let login = |script: String| {
        let mut c = std::process::Command::new("sh");
        c.arg("-c")
            .arg(format!(
                "echo 0 > /proc/self/loginuid || {{ echo 'cannot open an audit session (root needed)' >&2; exit 97; }}\n{script}"
            ))
            .arg(support::bin("agent"))
            .env_remove("XDG_RUNTIME_DIR")
            .env("TMPDIR", shared_tmp.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    };
    let (started, go) = (work.path().join("a-started"), work.path().join("go"));
    // Operator A: starts an agent, waits (bounded) until told, then a bare `agent stop`.
    let a = login(format!(
        "\"$0\" start -f {} && touch {}\n\
         for i in $(seq 600); do [ -e {} ] && break; sleep 0.1; done\n\
         exec \"$0\" stop",
        agents[0].1.display(),
        started.display(),
        go.display()
    ))
    .spawn()
    .expect("login a");
    assert!(
        wait_until(Duration::from_secs(60), || started.exists()),
        "operator A's agent did not start"
    );
    // Operator B, in a login of their own, starts another agent meanwhile.
    let b = login(format!("exec \"$0\" start -f {}", agents[1].1.display()))
        .output()
        .expect("login b");
    assert!(b.status.success(), "{}", String::from_utf8_lossy(&b.stderr));
    std::fs::write(&go, "").expect("go");
    let a = a.wait_with_output().expect("login a");
    let said = String::from_utf8_lossy(&a.stderr);
    assert!(a.status.success(), "A's stop: {said}");
    let pid_file = |i: usize| agents[i].0.path().join("data/agent.pid");
    assert!(!pid_file(0).exists(), "A's bare stop stopped A's agent");
    assert!(
        pid_file(1).exists(),
        "A's bare stop must not stop B's agent: {}",
        String::from_utf8_lossy(&a.stdout)
    );
    let stop_b = support::agent_cmd()
        .args(["stop", "-f"])
        .arg(&agents[1].1)
        .output()
        .expect("stop b");
    assert!(
        stop_b.status.success(),
        "{}",
        String::from_utf8_lossy(&stop_b.stderr)
    );
}

/// `agent stop` says "stopped" only once the process is gone. The agent lets go of its pid
/// file's lock before the process has finished exiting; here exiting is made slow on purpose
/// (a library preloaded into the agent sleeps 1.5 s in its exit-time destructor), so a stop that
/// trusted the lock would report the agent stopped while it still runs.
#[test]
fn stop_waits_until_the_process_is_gone_even_when_exiting_is_slow() {
    let dir = tempfile::tempdir().expect("tmp");
    let c_file = dir.path().join("slow_exit.c");
    std::fs::write(
        &c_file,
        "#include <unistd.h>\n__attribute__((destructor)) static void slow(void) { usleep(1500000); }\n",
    )
    .expect("c");
    let lib = dir.path().join("slow_exit.so");
    let cc = std::process::Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&lib)
        .arg(&c_file)
        .output()
        .expect("cc (gcc) is needed to build the slow-exit library");
    assert!(
        cc.status.success(),
        "{}",
        String::from_utf8_lossy(&cc.stderr)
    );
    let config = dir.path().join("agent.toml");
    let port = support::free_port();
    std::fs::write(&config, format!("[agent]\nlisten = \"127.0.0.1:{port}\"\n")).expect("config");
    std::fs::write(dir.path().join("registry.toml"), ONE_NS).expect("registry");
    let runtime = tempfile::tempdir().expect("runtime dir");
    // Only the agent started gets the library: `agent stop` itself must exit at once, or its
    // own slow exit would give the agent the time to finish before the check.
    let run = |args: &[&str]| {
        let mut c = support::agent_cmd();
        if args == ["start"] {
            c.env("LD_PRELOAD", &lib);
        }
        c.env("XDG_RUNTIME_DIR", runtime.path())
            .args(args)
            .arg("-f")
            .arg(&config)
            .output()
            .expect("run agent")
    };
    let started = run(&["start"]);
    assert!(
        started.status.success(),
        "{}",
        String::from_utf8_lossy(&started.stderr)
    );
    let pid: i32 = String::from_utf8_lossy(&started.stdout)
        .split("(pid ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .and_then(|p| p.parse().ok())
        .expect("the pid in the start message");
    let stop = run(&["stop"]);
    assert!(
        stop.status.success(),
        "{}",
        String::from_utf8_lossy(&stop.stderr)
    );
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next().map(str::to_owned));
    assert!(
        matches!(state.as_deref(), None | Some("Z" | "X")),
        "agent stop said stopped while pid {pid} still runs (state {state:?})"
    );
}
