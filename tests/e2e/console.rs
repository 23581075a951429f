//! `agentctl` against a real agent: the CLI's `--json` shapes, exit codes and messages, and the
//! TUI driven in a real terminal (tmux).

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use shared::api;
use support::{bin, free_port, wait_until, AgentBuilder};

const NS: &str = "e2e.console";
const REGISTRY: &str = "[[namespace]]\nname = \"e2e.console\"\n";

fn agent() -> support::Agent {
    AgentBuilder::new()
        .agent_keys("hostname = \"e2e-console\"")
        .config("[output]\nflush_ms = 100")
        .registry(REGISTRY)
        .start()
}

/// Runs `agentctl --addr <addr> <args>` with `stdin` as input, no AGENTCTL_* from outside, and
/// the agent's token file when `addr` is a harness agent's.
fn ctl(addr: &str, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = support::agentctl(addr)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start agentctl");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin).expect("write stdin");
    drop(input);
    child.wait_with_output().expect("agentctl output")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn status_json_is_the_shared_status_body() {
    let agent = agent();
    let out = ctl(&agent.addr, &["--json", "status"], b"");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let status: api::Status = serde_json::from_slice(&out.stdout).expect("a Status body");
    assert_eq!(status.hostname, "e2e-console");
    assert_eq!(status.registry.namespaces, 1);
    assert!(status.log_dir.is_some_and(|d| d.ends_with("log")));
    assert_eq!(text(&out.stdout).lines().count(), 1, "one JSON line");
}

#[test]
fn status_and_ns_print_tables_for_people() {
    let agent = agent();
    let out = ctl(&agent.addr, &["status"], b"");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    assert!(s.contains("e2e-console 0.1.0"), "{s}");
    assert!(s.contains("registry        file "), "{s}");
    let out = ctl(&agent.addr, &["ns"], b"");
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(text(&out.stdout), "e2e.console\n");
    let out = ctl(&agent.addr, &["--json", "ns"], b"");
    let ns: api::NamespacesResponse = serde_json::from_slice(&out.stdout).expect("ns body");
    assert_eq!(ns.namespaces, vec![NS.to_owned()]);
}

#[test]
fn the_address_can_come_from_the_environment() {
    let agent = agent();
    let token_file = support::token_file_for(&agent.addr).expect("a harness agent");
    let out = Command::new(bin("agentctl"))
        .args(["--json", "ns"])
        .env("AGENTCTL_ADDR", &agent.addr)
        .env("AGENTCTL_TOKEN_FILE", token_file)
        .output()
        .expect("agentctl");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains(NS));
}

#[test]
fn an_unreachable_agent_is_exit_3_with_what_to_do() {
    let addr = format!("127.0.0.1:{}", free_port());
    for args in [&["status"][..], &["--json", "ns"], &["plugins", "list"]] {
        let out = ctl(&addr, args, b"");
        assert_eq!(out.status.code(), Some(3), "{args:?}");
        let err = text(&out.stderr);
        assert!(
            err.contains(&format!("cannot reach the agent at {addr}: "))
                && err.to_lowercase().contains("connection refused")
                && err.contains("is it running? try `agent start`"),
            "{err}"
        );
        assert!(out.stdout.is_empty(), "nothing on stdout");
    }
}

#[test]
fn a_missing_endpoint_is_exit_4_and_said_plainly() {
    let agent = agent();
    // Every path under this prefix is one the agent does not serve.
    let addr = format!("http://{}/no-such-prefix", agent.addr);
    let out = ctl(&addr, &["status"], b"");
    assert_eq!(out.status.code(), Some(4));
    let err = text(&out.stderr);
    assert!(err.contains("the agent answered 404"), "{err}");
    assert!(err.contains("does not offer this endpoint"), "{err}");
}

#[test]
fn bad_usage_is_exit_2() {
    let out = ctl("127.0.0.1:1", &["plugins", "run", "--ns", "x"], b"");
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--repo"));
    let out = ctl("127.0.0.1:1", &["post"], b"  \n");
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("nothing to post"));
}

#[test]
fn post_from_stdin_reaches_the_file_output() {
    let agent = agent();
    let out = ctl(
        &agent.addr,
        &["--json", "post", "--ns", NS],
        br#"[{"name": "e2e.posted", "value": 1.5, "tags": {"via": "stdin"}}]"#,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let resp: api::PostResponse = serde_json::from_slice(&out.stdout).expect("post body");
    assert_eq!((resp.accepted, resp.rejected), (1, 0));
    let arrived = wait_until(Duration::from_secs(10), || {
        agent
            .output_file(NS)
            .contains("e2e.posted,host=e2e-console,via=stdin value=1.5 ")
    });
    assert!(
        arrived,
        "posted point in the file output:\n{}",
        agent.output_file(NS)
    );

    // Line protocol is detected from the content; a rejected metric makes the exit code 1.
    let out = ctl(&agent.addr, &["post"], b"e2e.lp,k=v value=2i 1764000000\n");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = ctl(
        &agent.addr,
        &["post", "--ns", NS],
        br#"[{"name": "", "value": 1}, {"name": "e2e.fine", "value": 1}]"#,
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("1 accepted, 1 rejected"));
}

#[test]
fn update_reports_the_refresh() {
    let agent = agent();
    let out = ctl(&agent.addr, &["--json", "update"], b"");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let u: api::UpdateResponse = serde_json::from_slice(&out.stdout).expect("update body");
    assert!(u.ok);
    assert_eq!(u.namespaces, vec![NS.to_owned()]);
}

#[test]
fn plugins_list_json_is_the_shared_body_and_unknown_plugins_are_exit_4() {
    let agent = agent();
    let out = ctl(&agent.addr, &["--json", "plugins", "list"], b"");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let list: api::PluginList = serde_json::from_slice(&out.stdout).expect("plugin list");
    assert!(list.plugins.is_empty());
    let out = ctl(
        &agent.addr,
        &["plugins", "run", "--ns", NS, "--repo", "nope"],
        b"",
    );
    assert_eq!(out.status.code(), Some(4));
    assert!(text(&out.stderr).contains("404"));
}

/// The agent's own log file (one per day in data_dir/log).
fn agent_log(agent: &support::Agent) -> std::path::PathBuf {
    let dir = agent.data_dir().join("log");
    let mut found = None;
    wait_until(Duration::from_secs(10), || {
        found = std::fs::read_dir(&dir).ok().and_then(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .find(|p| p.extension().is_some_and(|e| e == "log"))
        });
        found.is_some()
    });
    found.expect("the agent's log file")
}

#[test]
fn log_reads_and_follows_the_agents_own_log() {
    let agent = agent();
    let log = agent_log(&agent);
    let path = log.to_str().expect("utf-8 path");
    let out = ctl(&agent.addr, &["--json", "log", path, "--num", "5"], b"");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let chunk: api::LogChunk = serde_json::from_slice(&out.stdout).expect("log chunk");
    assert!(!chunk.lines.is_empty() && chunk.lines.len() <= 5);

    // Follow: a line appended shows up; truncation restarts at 0; Ctrl-C ends it with 0.
    let mut follower = support::agentctl(&agent.addr)
        .args(["log", path, "--follow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("follow");
    std::thread::sleep(Duration::from_millis(1500));
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&log)
        .expect("open log");
    writeln!(f, "e2e-marker-one").expect("append");
    std::thread::sleep(Duration::from_secs(3));
    f.set_len(0).expect("truncate");
    writeln!(f, "e2e-marker-two").expect("append");
    std::thread::sleep(Duration::from_secs(3));
    let _ = Command::new("kill")
        .args(["-INT", &follower.id().to_string()])
        .status();
    let mut out = None;
    wait_until(Duration::from_secs(10), || {
        out = follower.try_wait().ok().flatten();
        out.is_some()
    });
    let Some(status) = out else {
        let _ = follower.kill();
        panic!("log --follow did not end on SIGINT");
    };
    let output = follower.wait_with_output().expect("output");
    assert_eq!(status.code(), Some(0));
    let s = text(&output.stdout);
    assert!(
        s.contains("e2e-marker-one") && s.contains("e2e-marker-two"),
        "{s}"
    );
    assert!(text(&output.stderr).contains("truncated or rotated"));
}

/// A tmux server of our own (its own socket), killed on drop so no session outlives the test.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn available() -> bool {
        Command::new("tmux")
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success())
    }

    fn start(command: &str) -> Tmux {
        let tmux = Tmux {
            socket: format!("agentctl-e2e-{}-{}", std::process::id(), free_port()),
        };
        let ok = tmux
            .cmd(&[
                "new-session",
                "-d",
                "-s",
                "ctl",
                "-x",
                "80",
                "-y",
                "24",
                command,
            ])
            .status
            .success();
        assert!(ok, "tmux new-session failed");
        tmux
    }

    /// `agentctl --addr ADDR ARGS` in a new pane. When it exits the pane stays and shows
    /// `agentctl-exited-<code>`, so the terminal it gave back can be inspected.
    fn agentctl(addr: &str, args: &str) -> Tmux {
        let token = support::token_file_for(addr)
            .map(|f| format!("AGENTCTL_TOKEN_FILE='{}' ", f.display()))
            .unwrap_or_default();
        Tmux::start(&format!(
            "{token}{} --addr {addr} {args}; echo agentctl-exited-$?; sleep 60",
            bin("agentctl").display()
        ))
    }

    fn cmd(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .expect("run tmux")
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "ctl"];
        args.extend_from_slice(keys);
        self.cmd(&args);
    }

    fn screen(&self) -> String {
        text(&self.cmd(&["capture-pane", "-p", "-t", "ctl"]).stdout)
    }

    /// `1` while the pane shows the alternate screen (a full-screen program runs), else `0`.
    fn alternate_screen(&self) -> String {
        let out = self.cmd(&["display-message", "-p", "-t", "ctl", "#{alternate_on}"]);
        text(&out.stdout).trim().to_owned()
    }

    /// `1 1` while the program in the pane has asked for mouse reports (any tracking mode,
    /// and the SGR encoding), else `0 0`.
    fn mouse_reporting(&self) -> String {
        let out = self.cmd(&[
            "display-message",
            "-p",
            "-t",
            "ctl",
            "#{mouse_any_flag} #{mouse_sgr_flag}",
        ]);
        text(&out.stdout).trim().to_owned()
    }

    /// Sends what a terminal sends for a mouse `button` (0 left, 64/65 wheel up/down) at the
    /// 0-based `column`, `row`: an SGR report, as the terminal would once the program asked for
    /// them. (`send-keys -M` only replays tmux's own mouse events, so the bytes go in literally.)
    fn mouse(&self, button: u8, column: usize, row: usize) {
        let (x, y) = (column + 1, row + 1);
        self.keys(&["-l", &format!("\x1b[<{button};{x};{y}M")]);
        if button < 64 {
            self.keys(&["-l", &format!("\x1b[<{button};{x};{y}m")]);
        }
    }

    /// Waits (bounded) until the pane shows `needle` and returns the screen; fails the test
    /// with the last screen when it does not appear.
    fn wait_for(&self, needle: &str) -> String {
        let mut last = String::new();
        let seen = wait_until(Duration::from_secs(15), || {
            last = self.screen();
            last.contains(needle)
        });
        assert!(seen, "{needle:?} did not appear; the screen:\n{last}");
        last
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        self.cmd(&["kill-server"]);
    }
}

#[test]
fn the_tui_in_a_real_terminal_navigates_and_reconnects() {
    assert!(
        Tmux::available(),
        "tmux is not installed; the TUI end-to-end tests need it (apt-get install tmux)"
    );
    let port = free_port();
    let mut agent = AgentBuilder::new()
        .port(port)
        .agent_keys("hostname = \"e2e-console\"")
        .config("[output]\nflush_ms = 100")
        .registry(REGISTRY)
        .start();
    let tmux = Tmux::agentctl(&agent.addr, "");

    let screen = tmux.wait_for("● connected");
    tmux.wait_for("e2e-console · agent 0.1.0");
    assert_eq!(
        tmux.alternate_screen(),
        "1",
        "the UI runs on the alternate screen"
    );
    assert!(screen.contains("1 Overview"), "{screen}");
    tmux.wait_for("Delivered points/s");

    tmux.keys(&["2"]);
    tmux.wait_for("NAMESPACE");
    tmux.wait_for(NS);

    // Plugins: this registry lists none, and the screen says so (running one: the next test).
    tmux.keys(&["3"]);
    tmux.wait_for("No plugins: the registry lists none");

    // Logs: the suggestion is the agent's own log for today.
    tmux.keys(&["4", "o"]);
    let log_dir = agent.data_dir().join("log");
    tmux.wait_for(&format!("file: {}", log_dir.display()));
    tmux.keys(&["Enter"]);
    tmux.wait_for("following");

    tmux.keys(&["?"]);
    tmux.wait_for("Help: keys");
    tmux.keys(&["Escape"]);

    // The agent goes away: a banner, the last data kept; it comes back: connected again.
    tmux.keys(&["1"]);
    agent.kill9();
    let screen = tmux.wait_for("✖ disconnected");
    assert!(screen.contains("cannot reach the agent"), "{screen}");
    assert!(screen.contains("e2e-console"), "last data stays: {screen}");
    let agent = agent.restart(false);
    assert_eq!(agent.addr, format!("127.0.0.1:{port}"));
    tmux.wait_for("● connected");

    tmux.keys(&["q"]);
    tmux.wait_for("agentctl-exited-0");
    assert_eq!(tmux.alternate_screen(), "0", "the terminal is given back");
}

#[test]
fn the_tui_runs_a_plugin_and_shows_its_output() {
    assert!(
        Tmux::available(),
        "tmux is not installed; the TUI end-to-end tests need it (apt-get install tmux)"
    );
    let remotes = tempfile::tempdir().expect("tmp");
    let url = support::gitrepo::BareRepo::new(
        remotes.path(),
        "hello",
        "echo \"hello from $AGENT_PLUGIN\"\necho 'a warning' >&2\n",
    )
    .url();
    let agent = AgentBuilder::new()
        .agent_keys("hostname = \"e2e-console\"")
        .registry(&format!(
            "[[namespace]]\nname = \"{NS}\"\nplugins = [{{ git = \"{url}\", interval = 0 }}]\n"
        ))
        .start();
    // The unprivileged plugin user (when the tests run as root) must reach the checkout.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(agent.dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod");
    let cloned = wait_until(Duration::from_secs(30), || {
        agent.get("/plugins/list").1["plugins"][0]["commit"].is_string()
    });
    assert!(cloned, "plugin not cloned:\n{}", agent.stderr());

    let tmux = Tmux::agentctl(&agent.addr, "");
    tmux.wait_for("● connected");
    tmux.keys(&["3"]);
    tmux.wait_for("hello");
    tmux.wait_for("on demand");

    tmux.keys(&["r"]);
    tmux.wait_for(&format!("{NS}/hello: ran, ok:"));
    tmux.keys(&["Enter"]);
    let screen = tmux.wait_for("hello from hello");
    assert!(screen.contains("a warning"), "stderr shown: {screen}");
    tmux.keys(&["Escape"]);

    // Disable asks first; the table then shows the new state; enable needs no prompt.
    tmux.keys(&["d"]);
    tmux.wait_for("Disable e2e.console/hello?");
    tmux.keys(&["y"]);
    tmux.wait_for("disabled");
    assert_eq!(
        agent.get("/plugins/list").1["plugins"][0]["enabled"],
        serde_json::json!(false)
    );
    tmux.keys(&["e"]);
    let enabled = wait_until(Duration::from_secs(15), || {
        agent.get("/plugins/list").1["plugins"][0]["enabled"] == serde_json::json!(true)
    });
    assert!(enabled, "enable from the TUI:\n{}", tmux.screen());
}

#[test]
fn the_tui_takes_clicks_and_the_wheel_wraps_long_lines_and_gives_the_mouse_back() {
    assert!(
        Tmux::available(),
        "tmux is not installed; the TUI end-to-end tests need it (apt-get install tmux)"
    );
    let agent = agent();
    // A file in the agent's log dir: 60 short lines, then one long line whose end matters.
    let long = format!(
        "{}the-end-of-the-long-line",
        "publish to 127.0.0.1:4150 failed after retries; ".repeat(4)
    );
    let mut body: String = (1..=60).map(|i| format!("short line {i}\n")).collect();
    body.push_str(&long);
    body.push('\n');
    let file = agent.data_dir().join("log").join("e2e-long.log");
    std::fs::write(&file, body).expect("write the log file");

    let tmux = Tmux::agentctl(&agent.addr, "");
    let screen = tmux.wait_for("● connected");
    assert_eq!(
        tmux.mouse_reporting(),
        "1 1",
        "the UI asked for mouse reports"
    );

    // A click on a tab title, at the column the pane shows it.
    let tabs = screen.lines().nth(1).expect("the tab bar").to_owned();
    let column = |title: &str| {
        let byte = tabs
            .find(title)
            .unwrap_or_else(|| panic!("{title} in {tabs:?}"));
        tabs[..byte].chars().count() + 2
    };
    tmux.mouse(0, column("2 Namespaces"), 1);
    tmux.wait_for("NAMESPACE");
    tmux.mouse(0, column("4 Logs"), 1);
    tmux.wait_for("No file. Press");

    // Open the file: the prompt starts with the agent's log, which is erased first.
    tmux.keys(&["o"]);
    tmux.wait_for("file: ");
    tmux.keys(&["-N", "300", "BSpace"]);
    tmux.keys(&["-l", &file.display().to_string()]);
    tmux.keys(&["Enter"]);
    // Following the end: the long line wraps, so its end is on screen.
    let screen = tmux.wait_for("the-end-of-the-long-line");
    assert!(screen.contains("wrapped"), "{screen}");

    // The wheel scrolls the log, three lines a notch.
    tmux.mouse(64, 40, 10);
    tmux.wait_for("↑3");
    tmux.mouse(64, 40, 10);
    tmux.wait_for("↑6");
    tmux.mouse(65, 40, 10);
    tmux.wait_for("↑3");
    tmux.keys(&["G"]);

    // w cuts long lines at the edge: the end is gone, the mode says so.
    tmux.keys(&["w"]);
    let screen = tmux.wait_for("cut (w wraps)");
    assert!(!screen.contains("the-end-of-the-long-line"), "{screen}");

    tmux.keys(&["q"]);
    tmux.wait_for("agentctl-exited-0");
    assert_eq!(tmux.alternate_screen(), "0", "the terminal is given back");
    assert_eq!(tmux.mouse_reporting(), "0 0", "and the mouse too");
    drop(tmux);

    // --no-mouse leaves the mouse to the terminal.
    let tmux = Tmux::agentctl(&agent.addr, "--no-mouse");
    tmux.wait_for("● connected");
    assert_eq!(tmux.mouse_reporting(), "0 0");
}

/// The Fleet screen (`agentctl --hosts FILE`) over real agents: three healthy ones sharing a
/// token and a plugin, one with another token, one stopped.
#[test]
fn the_fleet_screen_shows_states_filters_drills_down_and_acts_on_the_hosts_shown() {
    assert!(
        Tmux::available(),
        "tmux is not installed; the TUI end-to-end tests need it (apt-get install tmux)"
    );
    const FLEET_NS: &str = "e2e.fleet";
    const TOKEN: &str = "e2e-fleet-token-0123456789";
    let remotes = tempfile::tempdir().expect("tmp");
    let url = support::gitrepo::BareRepo::new(remotes.path(), "hello", "echo hello\n").url();
    let registry = format!(
        "[[namespace]]\nname = \"{FLEET_NS}\"\nplugins = [{{ git = \"{url}\", interval = 0 }}]\n"
    );
    let start = |name: &str, token: &str| {
        AgentBuilder::new()
            .agent_keys(&format!("hostname = \"{name}\"\ntoken = \"{token}\""))
            .registry(&registry)
            .start()
    };
    let healthy: Vec<(&str, support::Agent)> = ["web-01", "web-02", "db-01"]
        .into_iter()
        .map(|name| (name, start(name, TOKEN)))
        .collect();
    let other_token = start("auth-01", "another-token-9876543210");
    let mut stopped = start("db-02", TOKEN);
    assert!(stopped.stop(), "db-02 stops");
    use std::os::unix::fs::PermissionsExt;
    for (name, agent) in &healthy {
        // The unprivileged plugin user (when the tests run as root) must reach the checkout.
        std::fs::set_permissions(agent.dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let cloned = wait_until(Duration::from_secs(30), || {
            agent.get_with("/plugins/list", Some(TOKEN)).1["plugins"][0]["commit"].is_string()
        });
        assert!(cloned, "{name}: plugin not cloned:\n{}", agent.stderr());
    }
    let mut inventory = String::from("# the e2e fleet\n");
    for (name, agent) in &healthy {
        inventory.push_str(&format!("{name} {}\n", agent.addr));
    }
    // A host that takes the connection and never answers: its row waits for the probe's
    // timeout while the others are shown.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let silent_addr = silent.local_addr().expect("addr");
    inventory.push_str(&format!(
        "auth-01 {}\n\ndb-02 {}\nmute-01 {silent_addr}\n",
        other_token.addr, stopped.addr
    ));
    let file = remotes.path().join("hosts");
    std::fs::write(&file, inventory).expect("write the inventory");

    let tmux = Tmux::start(&format!(
        "{} --hosts {} --token {TOKEN}; echo agentctl-exited-$?; sleep 60",
        bin("agentctl").display(),
        file.display()
    ));
    let screen = tmux.wait_for("6 hosts: 3 ok, 2 unreachable, 1 unauthorized");
    assert!(screen.contains("no answer within 3000"), "{screen}");
    // Worst first, then by name; an unreachable host is a row like the others.
    let order: Vec<&str> = screen
        .lines()
        .filter_map(|l| l.strip_prefix('│')?.split_whitespace().next())
        .filter(|n| n.contains('-') && *n != "HOST")
        .collect();
    assert_eq!(
        order[..6],
        ["db-02", "mute-01", "auth-01", "db-01", "web-01", "web-02"],
        "{screen}"
    );
    assert!(screen.contains("unreachable"), "{screen}");
    assert!(screen.contains("unauthorized"), "{screen}");

    // The filter, then the selected host in the single-agent screens, and back.
    tmux.keys(&["/"]);
    tmux.keys(&["-l", "web"]);
    tmux.keys(&["Enter"]);
    tmux.wait_for("2 of 6 shown");
    tmux.keys(&["Enter"]);
    tmux.wait_for("web-01 · agent");
    tmux.wait_for("● connected");
    tmux.keys(&["3"]);
    tmux.wait_for("hello");
    tmux.keys(&["Escape"]);
    tmux.wait_for("fleet · 6 hosts");

    // Disable the plugin on every host the filter shows: picked from web-01's list, confirmed.
    tmux.keys(&["a"]);
    tmux.wait_for("target all 2 shown");
    tmux.keys(&["d"]);
    tmux.wait_for("plugin to disable (from web-01)");
    tmux.wait_for(&format!("{FLEET_NS} hello"));
    tmux.keys(&["Enter"]);
    tmux.wait_for("2 hosts (every host shown, filter web)?");
    tmux.keys(&["y"]);
    tmux.wait_for(&format!(
        "2 ok, 0 failed, 0 no answer · plugins disable {FLEET_NS}"
    ));
    let enabled = |agent: &support::Agent| {
        agent.get_with("/plugins/list", Some(TOKEN)).1["plugins"][0]["enabled"].clone()
    };
    for (name, agent) in &healthy {
        let want = serde_json::json!(!name.starts_with("web"));
        assert_eq!(
            enabled(agent),
            want,
            "{name}: only the hosts shown are acted on"
        );
    }

    tmux.keys(&["q"]);
    tmux.wait_for("agentctl-exited-0");
    drop(silent);
}

#[test]
fn a_bad_host_file_is_exit_2_naming_the_line_before_the_fleet_screen_opens() {
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("hosts");
    std::fs::write(
        &file,
        "web-01 127.0.0.1:1232\n# fine\nweb 02 127.0.0.1 x y\n",
    )
    .expect("write");
    let output = Command::new(bin("agentctl"))
        .arg("--hosts")
        .arg(&file)
        .stdin(Stdio::null())
        .output()
        .expect("run agentctl");
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let err = text(&output.stderr);
    assert!(err.contains("line 3"), "{err}");
    assert!(
        text(&output.stdout).is_empty(),
        "no screen was drawn: {output:?}"
    );
}

/// The Points screen in a real terminal: a plugin's points and posted ones appear as series
/// with their producer, the filter narrows them, Enter shows the latest lines as sent, and a
/// pause freezes the table on the selected row while points keep coming.
#[test]
fn the_points_screen_shows_series_live_filters_shows_raw_lines_and_pauses() {
    assert!(
        Tmux::available(),
        "tmux is not installed; the TUI end-to-end tests need it (apt-get install tmux)"
    );
    let remotes = tempfile::tempdir().expect("tmp");
    let url = support::gitrepo::BareRepo::new(
        remotes.path(),
        "gauge",
        "echo '[{\"name\":\"temp\",\"value\":21.5,\"tags\":{\"room\":\"a\"}}]'\n",
    )
    .url();
    let agent = AgentBuilder::new()
        .agent_keys("hostname = \"e2e-points\"")
        .config("[output]\nflush_ms = 100")
        .registry(&format!(
            "[[namespace]]\nname = \"{NS}\"\nplugins = [{{ git = \"{url}\", interval = 1 }}]\n"
        ))
        .start();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(agent.dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod");

    let tmux = Tmux::agentctl(&agent.addr, "");
    tmux.wait_for("● connected");
    tmux.keys(&["5"]);
    let screen = tmux.wait_for("PLUGIN.gauge.temp");
    let row = screen
        .lines()
        .find(|l| l.contains("PLUGIN.gauge.temp"))
        .unwrap_or_default();
    // At 80 columns the producer (`plugin e2e.console/gauge`) is cut; Enter shows all.
    for want in ["room=a", "21.5", "plugin e2"] {
        assert!(row.contains(want), "{want} in the row: {screen}");
    }

    // A posted series, then a filter that keeps only it.
    let posted = "e2e.points.posted,side=left value=7i\n";
    let (st, v) = agent.post(&format!("/post?ns={NS}"), "text/plain", posted.into());
    assert_eq!(st, 200, "{v}");
    tmux.wait_for("e2e.points.posted");
    tmux.keys(&["/"]);
    tmux.keys(&["-l", "posted"]);
    tmux.keys(&["Enter"]);
    let screen = tmux.wait_for("filter: posted");
    assert!(
        !screen.contains("PLUGIN.gauge.temp"),
        "filtered out: {screen}"
    );
    assert!(screen.contains("POST /pos"), "{screen}");
    tmux.keys(&["Enter"]);
    tmux.wait_for("Latest lines as sent");
    tmux.wait_for("e2e.points.posted,host=e2e-points,side=left value=7i");
    // Esc closes the lines, a second one clears the filter (sent apart: two ESC bytes at once
    // read as one key).
    tmux.keys(&["Escape"]);
    assert!(
        wait_until(Duration::from_secs(15), || !tmux
            .screen()
            .contains("Latest lines as sent")),
        "{}",
        tmux.screen()
    );
    tmux.keys(&["Escape"]);
    tmux.wait_for("PLUGIN.gauge.temp");

    // Paused: a new series does not appear until resumed.
    tmux.keys(&["Space"]);
    tmux.wait_for("PAUSED");
    let later = "e2e.points.later value=1\n";
    let (st, v) = agent.post(&format!("/post?ns={NS}"), "text/plain", later.into());
    assert_eq!(st, 200, "{v}");
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !tmux.screen().contains("e2e.points.later"),
        "{}",
        tmux.screen()
    );
    tmux.keys(&["Space"]);
    tmux.wait_for("e2e.points.later");
}
