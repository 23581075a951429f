//! `agent test` and `agent plugin test` through the real binary: what they print is what a
//! running agent sends for the same registry, they write nothing under `data_dir`, and a failure
//! is reported exactly.

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use support::gitrepo::BareRepo;
use support::{agent_cmd, free_port, wait_until, AgentBuilder};

const NS: &str = "e2e.dryrun";
const HOST: &str = "e2e-dryrun-host";

/// One parsed line of line protocol: measurement, tags, and the field value's type.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Line {
    measurement: String,
    tags: Vec<(String, String)>,
    kind: &'static str,
}

/// Splits at `sep` where it is not escaped with a backslash (escapes are kept).
fn split_unescaped(s: &str, sep: char) -> Vec<String> {
    let (mut parts, mut cur, mut escaped) = (Vec::new(), String::new(), false);
    for c in s.chars() {
        if escaped {
            cur.push(c);
            escaped = false;
        } else if c == '\\' {
            cur.push(c);
            escaped = true;
        } else if c == sep {
            parts.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    parts.push(cur);
    parts
}

/// Parses `measurement,k=v,... value=V TIMESTAMP` strictly: anything else fails the test.
fn parse_line(line: &str) -> Line {
    // A string value may hold spaces; none of this test's do.
    let parts = split_unescaped(line, ' ');
    assert_eq!(parts.len(), 3, "not `series field timestamp`: {line:?}");
    let mut series = split_unescaped(&parts[0], ',').into_iter();
    let measurement = series.next().expect("measurement");
    assert!(!measurement.is_empty(), "empty measurement: {line:?}");
    let tags: Vec<(String, String)> = series
        .map(|t| {
            let kv = split_unescaped(&t, '=');
            assert_eq!(kv.len(), 2, "tag {t:?} in {line:?}");
            (kv[0].clone(), kv[1].clone())
        })
        .collect();
    let mut sorted = tags.clone();
    sorted.sort();
    assert_eq!(tags, sorted, "tags not sorted by key: {line:?}");
    let value = parts[1]
        .strip_prefix("value=")
        .unwrap_or_else(|| panic!("the field is not `value`: {line:?}"));
    let kind = if value.starts_with('"') && value.ends_with('"') {
        "string"
    } else if value == "true" || value == "false" {
        "bool"
    } else if let Some(i) = value.strip_suffix('i') {
        i.parse::<i64>()
            .unwrap_or_else(|_| panic!("bad int {line:?}"));
        "int"
    } else {
        value
            .parse::<f64>()
            .unwrap_or_else(|_| panic!("bad float {line:?}"));
        "float"
    };
    let ts: i64 = parts[2].parse().expect("timestamp in seconds");
    assert!((1_000_000_000..10_000_000_000).contains(&ts), "{line:?}");
    Line {
        measurement,
        tags,
        kind,
    }
}

/// `agent test` output: every line of each `# ns NAME` section, parsed.
fn sections(stdout: &str) -> BTreeMap<String, BTreeSet<Line>> {
    let mut out: BTreeMap<String, BTreeSet<Line>> = BTreeMap::new();
    let mut ns = None;
    for line in stdout.lines() {
        if let Some(name) = line.strip_prefix("# ns ") {
            ns = Some(name.to_owned());
            out.entry(name.to_owned()).or_default();
            continue;
        }
        let ns = ns
            .as_ref()
            .unwrap_or_else(|| panic!("a point before any `# ns` line: {line:?}"));
        out.get_mut(ns).expect("section").insert(parse_line(line));
    }
    out
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The registry with every kind of item: two system families, a port that answers, a process,
/// a git plugin that works and one that fails, and a built-in. Fast intervals so the running
/// agent sends everything within seconds.
fn registry(port: u16, good: &str, broken: &str, file: &Path) -> String {
    const OFF: &str = "DISK = 0, NET = 0, FS = 0, KERNEL = 0, TIME = 0, NETSTAT = 0, SOCKET = 0, \
        PRESSURE = 0, VMSTAT = 0, CONNTRACK = 0, SOFTNET = 0, HWMON = 0, RAID = 0, COREDUMP = 0";
    format!(
        "[[namespace]]\nname = \"{NS}\"\n\
         intervals = {{ CPU = 1, MEM = 1, {OFF} }}\n\
         ports = [{{ name = \"listener\", port = {port}, interval = 1 }}]\n\
         procs = [{{ name = \"sleeper\", bin_path = \"sleep\", interval = 1 }}]\n\
         plugins = [{{ git = \"{good}\", interval = 5, parameters = \"7\" }}, {{ git = \"{broken}\", interval = 5 }}]\n\
         builtins = [{{ name = \"file_age\", interval = 1, params = {{ path = \"{}\" }} }}]\n",
        file.display()
    )
}

const GOOD: &str = "echo \"[{\\\"name\\\":\\\"conn\\\",\\\"tags\\\":{\\\"port\\\":\\\"80\\\"},\\\"value\\\":$1},{\\\"name\\\":\\\"state\\\",\\\"value\\\":\\\"up\\\"},{\\\"name\\\":\\\"ready\\\",\\\"value\\\":true}]\"\n";
const BROKEN: &str = "echo 'cannot reach the thing' >&2\nexit 3\n";

/// Opens a test's directory to the plugin user (the agent as root runs plugins as `nobody`).
fn open_dir(dir: &Path) {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

#[test]
fn agent_test_prints_what_the_running_agent_sends_and_writes_nothing() {
    let remotes = tempfile::tempdir().expect("tmp");
    let good = BareRepo::new(remotes.path(), "good", GOOD);
    let broken = BareRepo::new(remotes.path(), "broken", BROKEN);
    let listener = TcpListener::bind("127.0.0.1:0").expect("listener");
    let port = listener.local_addr().expect("addr").port();
    let mut sleeper = Command::new("sleep").arg("300").spawn().expect("sleep");

    let dir = tempfile::tempdir().expect("tmp");
    open_dir(dir.path());
    let registry_path = dir.path().join("registry.toml");
    let registry = registry(port, &good.url(), &broken.url(), &registry_path);
    std::fs::write(&registry_path, &registry).expect("registry");
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\nlisten = \"127.0.0.1:{}\"\ndata_dir = \"data\"\nhostname = \"{HOST}\"\n",
            free_port()
        ),
    )
    .expect("config");

    let out = agent_cmd()
        .args(["test", "-f"])
        .arg(&config)
        .stdin(Stdio::null())
        .output()
        .expect("agent test");
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}\n{stdout}");
    assert!(
        stderr.contains(&format!(
            "agent: 1 of 7 jobs failed:\n  - plugin {NS}/broken: exit: exited with 3; stderr ends with: \"cannot reach the thing\"\n"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "system and process rates need two samples: took the first, the second follows in 1 s"
        ),
        "{stderr}"
    );
    // Nothing under data_dir, not even the folder; the clones' scratch directory is gone.
    assert!(!dir.path().join("data").exists(), "{stderr}");
    let scratch = stderr
        .lines()
        .find_map(|l| l.strip_prefix("agent test: cloning 2 plugins into "))
        .and_then(|l| l.split(' ').next())
        .unwrap_or_else(|| panic!("no clone note: {stderr}"));
    assert!(!Path::new(scratch).exists(), "{scratch} left behind");

    let tested = sections(&stdout);
    assert_eq!(tested.keys().collect::<Vec<_>>(), [NS], "{stdout}");
    let tested = &tested[NS];
    for line in tested {
        assert!(
            line.tags.contains(&("host".to_owned(), HOST.to_owned())),
            "{line:?}"
        );
    }
    let find = |m: &str| tested.iter().find(|l| l.measurement == m);
    // The plugin's metrics, renamed, with its parameter and value types; the result points.
    let conn = find("PLUGIN.good.conn").unwrap_or_else(|| panic!("{stdout}"));
    assert_eq!(conn.kind, "float");
    assert!(conn.tags.contains(&("port".to_owned(), "80".to_owned())));
    assert!(stdout.contains(&format!("PLUGIN.good.conn,host={HOST},port=80 value=7.0 ")));
    assert_eq!(find("PLUGIN.good.state").map(|l| l.kind), Some("string"));
    assert_eq!(find("PLUGIN.good.ready").map(|l| l.kind), Some("bool"));
    assert!(
        stdout.contains(&format!(
            "plugin.broken,host={HOST},reason=exit,type=regular value=1.0 "
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("PORT.listener.{port},host={HOST} value=1.0 ")),
        "{stdout}"
    );
    for m in [
        "plugin.good",
        "PLUGIN.file_age.exists",
        "PROC.sleeper.procnum",
        "PROC.sleeper.cpu",
        "cpu.usage",
        "mem.total",
    ] {
        assert!(find(m).is_some(), "{m} missing:\n{stdout}");
    }

    // A real agent with the same registry: the same series with the same value types.
    // Its directory is open to the plugin user before it starts: a first run that could not
    // reach the checkout would send a series `agent test` rightly never printed.
    let agent_dir = tempfile::tempdir().expect("tmp");
    open_dir(agent_dir.path());
    let agent = AgentBuilder::new()
        .agent_keys(&format!("hostname = \"{HOST}\""))
        .config("[output]\nflush_ms = 100")
        .registry(&registry)
        .start_in(agent_dir);
    let sent = || -> BTreeSet<Line> {
        agent
            .output_file(NS)
            .lines()
            .map(parse_line)
            .filter(|l| !l.measurement.starts_with("agent."))
            .collect()
    };
    let all_seen = wait_until(Duration::from_secs(60), || tested.is_subset(&sent()));
    let sent = sent();
    assert!(
        all_seen,
        "not sent by the agent: {:#?}\nagent log:\n{}",
        tested.difference(&sent).collect::<Vec<_>>(),
        agent.stderr()
    );
    assert!(
        sent.is_subset(tested),
        "sent by the agent but not printed by agent test: {:#?}",
        sent.difference(tested).collect::<Vec<_>>()
    );
    // The agent's own line-protocol parser takes the output as it is (the `# ns` line is a
    // comment), and writes every point back out byte for byte.
    let (code, body) = agent.post(
        &format!("/post?ns={NS}"),
        "text/plain",
        stdout.clone().into_bytes(),
    );
    let points: Vec<&str> = stdout.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["accepted"], points.len(), "{body}");
    assert_eq!(body["rejected"], 0, "{body}");
    let echoed = wait_until(Duration::from_secs(30), || {
        let out = agent.output_file(NS);
        points.iter().all(|p| out.lines().any(|l| l == *p))
    });
    assert!(echoed, "the posted lines did not come out as they went in");
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    drop(listener);
}

#[test]
fn agent_test_selects_by_namespace_and_job() {
    let remotes = tempfile::tempdir().expect("tmp");
    let good = BareRepo::new(remotes.path(), "good", GOOD);
    let broken = BareRepo::new(remotes.path(), "broken", BROKEN);
    let dir = tempfile::tempdir().expect("tmp");
    open_dir(dir.path());
    let registry_path = dir.path().join("registry.toml");
    let mut registry = registry(free_port(), &good.url(), &broken.url(), &registry_path);
    registry.push_str("[[namespace]]\nname = \"e2e.other\"\n");
    let gone = remotes.path().join("gone.git");
    registry.push_str(&format!(
        "[[namespace]]\nname = \"e2e.gone\"\nintervals = {{ CPU = 0, MEM = 0 }}\nplugins = [{{ git = \"file://{}\", interval = 5 }}]\n",
        gone.display()
    ));
    std::fs::write(&registry_path, &registry).expect("registry");
    let config = dir.path().join("agent.toml");
    std::fs::write(&config, format!("[agent]\nhostname = \"{HOST}\"\n")).expect("config");
    let run = |args: &[&str]| {
        let out = agent_cmd()
            .args(["test", "-f"])
            .arg(&config)
            .args(args)
            .output()
            .expect("agent test");
        (out.status.code(), text(&out))
    };

    let (code, (stdout, stderr)) = run(&["--ns", NS, "--only", "plugin", "good"]);
    assert_eq!(code, Some(0), "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 5, "{stdout}");
    assert_eq!(lines[0], format!("# ns {NS}"));
    assert!(lines[1].starts_with(&format!("PLUGIN.good.conn,host={HOST},port=80 value=7.0 ")));
    assert!(lines[2].starts_with(&format!("PLUGIN.good.ready,host={HOST} value=true ")));
    assert!(lines[3].starts_with(&format!("PLUGIN.good.state,host={HOST} value=\"up\" ")));
    assert!(lines[4].starts_with(&format!(
        "plugin.good,host={HOST},reason=ok,type=regular value=0.0 "
    )));
    assert!(
        stderr.contains("agent test: 1 job ran in ")
            && stderr.contains(", 0 failed; 4 points, nothing was sent"),
        "{stderr}"
    );

    // A family goes to every namespace that wants it, each under its own header; `--only`
    // may be given once per job.
    let (code, (stdout, stderr)) = run(&["--only", "mem", "--only", "port", "listener"]);
    assert_eq!(code, Some(0), "{stderr}");
    let mut by_ns = sections(&stdout);
    let port_lines: Vec<Line> = by_ns
        .get_mut(NS)
        .map(|lines| {
            let ports: Vec<Line> = lines
                .iter()
                .filter(|l| l.measurement.starts_with("PORT.listener."))
                .cloned()
                .collect();
            lines.retain(|l| !l.measurement.starts_with("PORT."));
            ports
        })
        .unwrap_or_default();
    assert_eq!(port_lines.len(), 1, "{stdout}");
    assert_eq!(
        by_ns.keys().collect::<Vec<_>>(),
        ["e2e.dryrun", "e2e.other"],
        "e2e.gone turns MEM off"
    );
    assert_eq!(by_ns["e2e.dryrun"], by_ns["e2e.other"]);
    assert!(by_ns[NS].iter().all(|l| l.measurement.starts_with("mem.")));

    let (code, (_, stderr)) = run(&["--only", "nothing-like-this"]);
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("agent: nothing to run: --only nothing-like-this matches no job of this host's plan; it runs: "),
        "{stderr}"
    );
    let (code, (_, stderr)) = run(&["--only", "plugins", "good"]);
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains(
            "agent: --only \"plugins\": unknown kind; use one of system, port, proc, plugin, builtin\n"
        ),
        "{stderr}"
    );
    let (code, (_, stderr)) = run(&["--ns", "e2e.nowhere"]);
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains(
            "agent: namespace \"e2e.nowhere\" is not in this host's plan; it has: e2e.dryrun, e2e.gone, e2e.other"
        ),
        "{stderr}"
    );
    // A plugin that cannot be cloned is a failed job, with git's reason.
    let (code, (stdout, stderr)) = run(&["--ns", "e2e.gone", "--only", "plugin", "gone"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(stdout, "# ns e2e.gone\n");
    assert!(
        stderr.contains(&format!(
            "agent: 1 of 1 job failed:\n  - plugin e2e.gone/gone: git clone of file://{}: ",
            gone.display()
        )),
        "{stderr}"
    );
    assert!(!dir.path().join("data").exists());

    // An existing data dir is read (an operator's disable), never written.
    let data = dir.path().join("data");
    std::fs::create_dir(&data).expect("mkdir");
    let until = 4_000_000_000i64;
    std::fs::write(
        data.join("plugins-state.json"),
        format!("{{\"disabled\": {{\"{NS}\": {{\"good\": {until}}}}}}}"),
    )
    .expect("state");
    let snapshot = || -> Vec<(String, Vec<u8>)> {
        let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&data)
            .expect("read data")
            .map(|e| {
                let e = e.expect("entry");
                let bytes = std::fs::read(e.path()).unwrap_or_default();
                (e.file_name().to_string_lossy().into_owned(), bytes)
            })
            .collect();
        files.sort();
        files
    };
    // This host's checkout of `good` (as a running agent left it), behind the remote.
    let checkout = data.join("plugins").join(NS).join("good");
    std::fs::create_dir_all(checkout.parent().expect("parent")).expect("mkdir");
    support::gitrepo::git(
        dir.path(),
        &["clone", "-q", &good.url(), checkout.to_str().expect("utf8")],
    );
    let old = rev_parse(&checkout);
    good.push(&format!("{GOOD}# v2\n"));
    let new = rev_parse(&good.bare);
    let before = snapshot();
    let (code, (stdout, stderr)) = run(&["--only", "plugin", "good"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "agent test: plugin {NS}/good: tested the remote's {}, but this host's checkout {} is at {}, which a running agent runs until /plugins/update\n",
            &new[..10],
            checkout.display(),
            &old[..10]
        )),
        "{stderr}"
    );
    assert_eq!(rev_parse(&checkout), old, "the checkout was left as it was");
    assert!(
        stderr.contains(&format!("agent test: plugin {NS}/good is disabled for ")) && stderr.contains(
            " s more (plugins-state.json): it runs here all the same, but the agent sends nothing for it until then"
        ),
        "{stderr}"
    );
    assert!(stdout.contains("PLUGIN.good.conn,"), "{stdout}");
    assert_eq!(snapshot(), before, "the data dir changed");
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn rev_parse(repo: &Path) -> String {
    let out = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(repo)
        .output()
        .expect("git rev-parse");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A plugin folder `<root>/<name>/plugin.sh`, readable by the plugin user.
fn plugin_dir(root: &Path, name: &str, script: &str) -> String {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("plugin.sh"), script).expect("plugin.sh");
    open_dir(&dir);
    dir.display().to_string()
}

fn plugin_test(args: &[&str]) -> (Option<i32>, String, String) {
    let out = agent_cmd()
        .args(["plugin", "test"])
        .args(args)
        .output()
        .expect("agent plugin test");
    let (stdout, stderr) = text(&out);
    (out.status.code(), stdout, stderr)
}

#[test]
fn agent_plugin_test_prints_the_points_or_the_exact_failure() {
    let root = tempfile::tempdir().expect("tmp");
    open_dir(root.path());
    let host = std::process::Command::new("hostname")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .expect("hostname");

    // Good, from a folder, with parameters and the clean environment.
    let good = plugin_dir(
        root.path(),
        "good",
        "echo \"[{\\\"name\\\":\\\"args\\\",\\\"tags\\\":{\\\"ns\\\":\\\"$AGENT_NS\\\",\\\"path\\\":\\\"$PATH\\\"},\\\"value\\\":$#}]\"\necho working >&2\n",
    );
    let (code, stdout, stderr) = plugin_test(&[&good, "--param", "-a b  c", "--ns", "web.shop"]);
    assert_eq!(code, Some(0), "{stderr}");
    let line = format!(
        "PLUGIN.good.args,host={host},ns=web.shop,path=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin value=3.0 "
    );
    assert!(
        stdout.starts_with(&line) && stdout.lines().count() == 1,
        "{stdout}"
    );
    assert!(
        stderr.contains(&format!(
            "agent plugin test: running `bash plugin.sh -a b c` in {good} as "
        )),
        "{stderr}"
    );
    assert!(
        stderr
            .contains("agent plugin test: its stderr (kept with the run, not sent):\n  working\n"),
        "{stderr}"
    );

    // The same plugin from a git repository, cloned into a temporary checkout.
    let remotes = tempfile::tempdir().expect("tmp");
    let repo = BareRepo::new(
        remotes.path(),
        "from-git",
        "echo '[{\"name\":\"n\",\"value\":1}]'\n",
    );
    let (code, stdout, stderr) = plugin_test(&[&repo.url()]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.starts_with(&format!("PLUGIN.from-git.n,host={host} value=1.0 ")),
        "{stdout}"
    );
    assert!(
        stderr.contains(&format!("agent plugin test: cloned {} at ", repo.url())),
        "{stderr}"
    );

    let failing = plugin_dir(
        root.path(),
        "failing",
        "echo 'first line' >&2\necho 'config file /etc/x not found' >&2\nexit 3\n",
    );
    let (code, stdout, stderr) = plugin_test(&[&failing]);
    assert_eq!((code, stdout.as_str()), (Some(1), ""), "{stderr}");
    assert!(
        stderr.ends_with(
            "agent: plugin failing failed (exit): exited with 3\n  exit status: 3\n  stderr (last lines):\n    first line\n    config file /etc/x not found\n"
        ),
        "{stderr}"
    );

    let slow = plugin_dir(root.path(), "slow", "sleep 30\n");
    let started = std::time::Instant::now();
    let (code, _, stderr) = plugin_test(&[&slow, "--timeout", "0.5"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        stderr.ends_with(
            "agent: plugin slow failed (timeout): timed out after 0.5 s; its process group was killed\n  stderr: (empty)\n"
        ),
        "{stderr}"
    );

    let noisy = plugin_dir(
        root.path(),
        "noisy",
        "head -c 5000000 /dev/zero | tr '\\0' x\n",
    );
    let (code, _, stderr) = plugin_test(&[&noisy]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.ends_with(
            "agent: plugin noisy failed (output): output over the cap of 4194304 bytes; the run was stopped and its output cut\n  stderr: (empty)\n"
        ),
        "{stderr}"
    );

    // Malformed JSON: the error, its position and the text there.
    let malformed = plugin_dir(
        root.path(),
        "malformed",
        "echo '[{\"name\": \"a\", \"value\": 1}, {\"name\": x}]'\n",
    );
    let (code, _, stderr) = plugin_test(&[&malformed]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.ends_with(
            "agent: plugin malformed failed (output): stdout is not a JSON list of metrics (expected value at line 1 column 38); it starts with: \"[{\\\"name\\\": \\\"a\\\", \\\"value\\\": 1}, {\\\"name\\\": x}]\\n\"\n  exit status: 0\n  stderr: (empty)\n"
        ),
        "{stderr}"
    );
    // Past the quoted start, the text around the position is quoted too.
    let far = plugin_dir(
        root.path(),
        "far",
        "printf '[\\n'\nfor i in 1 2 3 4 5 6 7 8 9; do printf '{\"name\": \"m%s\", \"value\": %s},\\n' $i $i; done\nprintf '{\"name\": \"m10\", \"value\": 1O}\\n]\\n'\n",
    );
    let (code, _, stderr) = plugin_test(&[&far]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "(expected `,` or `}` at line 11 column 27); it starts with: \"[\\n{\\\"name\\\": \\\"m1\\\", "
        ) && stderr.contains(
            "; at line 11 column 27: \" \\\"value\\\": 9},\\n{\\\"name\\\": \\\"m10\\\", \\\"value\\\": 1<here>O}\\n]\\n\"\n"
        ),
        "{stderr}"
    );

    // A metric the pipeline refuses: the points that pass are printed, the rest named.
    let refused = plugin_dir(
        root.path(),
        "refused",
        "echo '[{\"name\":\"ok\",\"value\":1},{\"name\":\"bad\",\"tags\":{\"time\":\"x\"},\"value\":2}]'\n",
    );
    let (code, stdout, stderr) = plugin_test(&[&refused]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stdout.starts_with(&format!("PLUGIN.refused.ok,host={host} value=1.0 ")),
        "{stdout}"
    );
    assert!(
        stderr.ends_with(
            "agent: the agent would drop 1 metric of this run:\n  - metric \"bad\": tag key \"time\" is reserved by InfluxDB\n"
        ),
        "{stderr}"
    );

    let none = root.path().join("none").display().to_string();
    // As root the run is the plugin user's: a folder only root can read is named with why.
    let root_only = plugin_dir(root.path(), "private", "echo '[]'\n");
    std::fs::set_permissions(&root_only, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let (code, _, stderr) = plugin_test(&[&root_only]);
    if is_root() {
        assert_eq!(code, Some(1), "{stderr}");
        assert!(
            stderr.contains("agent: plugin private failed (exit): exited with 126\n  exit status: 126\n")
                && stderr.ends_with(&format!(
                    "\n  the plugin runs as nobody (agent.plugins_user), who must be able to read {root_only} and search every folder above it (the agent's own checkouts are readable by that user's group)\n"
                )),
            "{stderr}"
        );
    } else {
        assert_eq!(code, Some(0), "the agent's own user runs it: {stderr}");
    }

    let (code, _, stderr) = plugin_test(&[&none]);
    assert_eq!(code, Some(1));
    assert_eq!(
        stderr,
        format!(
            "agent: {none}: no such folder; give a folder holding plugin.sh, or a git address\n"
        )
    );
    let empty = plugin_dir(root.path(), "empty", "");
    std::fs::remove_file(Path::new(&empty).join("plugin.sh")).expect("rm");
    let (code, _, stderr) = plugin_test(&[&empty]);
    assert_eq!(code, Some(1));
    assert!(
        stderr.starts_with(&format!(
            "agent: {empty} has no plugin.sh, so it was taken for a git repository: git clone of {empty}: "
        )),
        "{stderr}"
    );
}

#[test]
fn agent_test_reads_an_http_registry_without_writing_its_cache() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("listener");
    let port = listener.local_addr().expect("addr").port();
    let server = support::registry_server::RegistryServer::start();
    server.set_namespace(
        "e2e.dryrun.http",
        serde_json::json!([
            {"measurement_type": "PORT", "name": "web", "port": port.to_string(),
             "connect_timeout": "1", "interval": "30"},
            {"measurement_type": "SNMP", "interval": "10"},
        ]),
    );
    let dir = tempfile::tempdir().expect("tmp");
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\nhostname = \"{HOST}\"\n[registry]\nsource = \"http\"\nurl = \"{}\"\ntimeout_secs = 5\n",
            server.url()
        ),
    )
    .expect("config");
    let out = agent_cmd()
        .args(["test", "-f"])
        .arg(&config)
        .args(["--only", "web"])
        .output()
        .expect("agent test");
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "agent test: reading the registry (http {}) as host {HOST}; its cache is not written",
            server.url()
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("agent test: registry: skipped: ") && stderr.contains("SNMP"),
        "the item the agent would skip is named: {stderr}"
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert_eq!(lines[0], "# ns e2e.dryrun.http");
    assert!(
        lines[1].starts_with(&format!("PORT.web.{port},host={HOST} value=1.0 ")),
        "{stdout}"
    );
    assert!(
        !dir.path().join("data").exists(),
        "no registry cache, no data dir"
    );
    assert!(!server.requests().is_empty());
}

#[test]
fn an_interrupted_plugin_test_kills_the_run_and_says_nothing_was_sent() {
    use std::io::{BufRead, BufReader};
    let root = tempfile::tempdir().expect("tmp");
    open_dir(root.path());
    // Where the plugin (perhaps `nobody`) leaves the pid of what it started.
    let pids = root.path().join("pids");
    std::fs::create_dir(&pids).expect("mkdir");
    std::fs::set_permissions(&pids, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let slow = plugin_dir(
        root.path(),
        "slow",
        &format!("sleep 300 &\necho $! > {}/child\nwait\n", pids.display()),
    );
    let mut child = agent_cmd()
        .args(["plugin", "test", &slow, "--timeout", "120"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("agent plugin test");
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
    let mut first = String::new();
    stderr.read_line(&mut first).expect("read");
    assert!(first.starts_with("agent plugin test: running "), "{first}");
    let child_file = pids.join("child");
    assert!(wait_until(Duration::from_secs(10), || child_file.exists()));
    let started: u32 = wait_for_pid(&child_file);
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let stopped = wait_until(Duration::from_secs(10), || {
        child.try_wait().ok().flatten().is_some()
    });
    assert!(stopped, "agent plugin test did not stop on SIGINT");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).expect("read");
    assert_eq!(rest, "agent: interrupted; nothing was sent\n");
    assert_eq!(child.wait().expect("status").code(), Some(1));
    // What the plugin started went with it (a zombie waits for init to reap it, runs nothing).
    let gone = wait_until(Duration::from_secs(10), || {
        std::fs::read_to_string(format!("/proc/{started}/stat"))
            .map_or(true, |s| s.contains(") Z "))
    });
    assert!(gone, "the plugin's sleep {started} still runs");
}

fn wait_for_pid(file: &Path) -> u32 {
    let mut pid = None;
    wait_until(Duration::from_secs(10), || {
        pid = std::fs::read_to_string(file)
            .ok()
            .and_then(|t| t.trim().parse().ok());
        pid.is_some()
    });
    pid.unwrap_or_else(|| panic!("no pid in {}", file.display()))
}
