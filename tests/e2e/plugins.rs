//! Script plugins through the real agent: cloned from real git repositories named in the file
//! registry, run, updated, disabled and enabled over the HTTP API.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use support::githttp::GitHttpServer;
use support::gitrepo::{BareRepo, FakeSsh};
use support::{wait_until, Agent, AgentBuilder};

const NS: &str = "e2e.plugins";

fn registry(items: &[(String, u64)]) -> String {
    let list: Vec<String> = items
        .iter()
        .map(|(git, interval)| format!("{{ git = \"{git}\", interval = {interval} }}"))
        .collect();
    format!(
        "[[namespace]]\nname = \"{NS}\"\nplugins = [{}]\n",
        list.join(", ")
    )
}

/// Waits until every plugin in the list has a checkout; the agent's directory is opened so the
/// unprivileged plugin user can reach the checkouts (the harness's tempdir is 0700).
fn wait_cloned(agent: &Agent, n: usize) {
    std::fs::set_permissions(agent.dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod");
    let ok = wait_until(Duration::from_secs(30), || {
        let (_, list) = agent.get("/plugins/list");
        let scripts: Vec<&serde_json::Value> = list["plugins"]
            .as_array()
            .map(|p| p.iter().filter(|p| p["kind"] == "script").collect())
            .unwrap_or_default();
        scripts.len() == n && scripts.iter().all(|p| p["commit"].is_string())
    });
    assert!(
        ok,
        "plugins not cloned: {}\n{}",
        agent.get("/plugins/list").1,
        agent.stderr()
    );
}

#[test]
fn plugins_are_listed_run_updated_and_disabled_through_the_api() {
    let remotes = tempfile::tempdir().expect("tmp");
    let ondemand = BareRepo::new(
        remotes.path(),
        "hello",
        "echo \"hello $1 from $AGENT_PLUGIN\"\n",
    );
    let periodic = BareRepo::new(
        remotes.path(),
        "nginx-stats",
        "echo '[{\"name\":\"conn.active\",\"value\":7}]'\n",
    );
    let agent = AgentBuilder::new()
        .agent_keys("hostname = \"e2e-host\"")
        .config("[output]\nflush_ms = 100")
        .registry(&registry(&[(ondemand.url(), 0), (periodic.url(), 60)]))
        .start();
    wait_cloned(&agent, 2);

    let (code, body) = agent.get(&format!(
        "/plugins/run?ns={NS}&repo={}&param=world",
        ondemand.url()
    ));
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["ran"], true, "{body}");
    assert_eq!(body["result"]["ok"], true, "{body}");
    assert_eq!(body["result"]["exit_code"], 0, "{body}");
    assert_eq!(
        body["result"]["stdout"], "hello world from hello\n",
        "{body}"
    );

    // A periodic plugin run on demand also ships its metrics, and every run its result point.
    let (code, body) = agent.get(&format!("/plugins/run?ns={NS}&repo=nginx-stats&timeout=5"));
    assert_eq!(
        (code, &body["ran"]),
        (200, &serde_json::json!(true)),
        "{body}"
    );
    let shipped = wait_until(Duration::from_secs(10), || {
        let out = agent.output_file(NS);
        out.contains("PLUGIN.nginx-stats.conn.active,host=e2e-host value=7")
            && out.contains("plugin.nginx-stats,host=e2e-host,reason=ok,type=call value=0")
            && out.contains("plugin.hello,host=e2e-host,reason=ok,type=call value=0")
    });
    assert!(shipped, "points in the output:\n{}", agent.output_file(NS));

    // Bad and unknown requests.
    let (code, body) = agent.get("/plugins/run?repo=hello");
    assert_eq!(code, 400);
    assert!(
        body["error"].as_str().is_some_and(|e| e.contains("'ns'")),
        "{body}"
    );
    let (code, body) = agent.get(&format!("/plugins/enable?ns={NS}"));
    assert_eq!(code, 400);
    assert!(
        body["error"].as_str().is_some_and(|e| e.contains("'repo'")),
        "{body}"
    );
    let (code, body) = agent.get(&format!("/plugins/run?ns={NS}&repo=nope"));
    assert_eq!(code, 404);
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("/update")),
        "{body}"
    );
    let (code, _) = agent.get(&format!("/plugins/run?ns={NS}&repo=hello&timeout=0"));
    assert_eq!(code, 400);

    // No silent update; the explicit one moves the checkout.
    ondemand.push("echo v2\n");
    let (_, body) = agent.get(&format!("/plugins/run?ns={NS}&repo=hello"));
    assert!(
        body["result"]["stdout"]
            .as_str()
            .is_some_and(|s| s.starts_with("hello")),
        "{body}"
    );
    let (code, body) = agent.get(&format!("/plugins/update?ns={NS}&repo=hello"));
    assert_eq!(code, 200, "{body}");
    let (_, body) = agent.get(&format!("/plugins/run?ns={NS}&repo=hello"));
    assert_eq!(body["result"]["stdout"], "v2\n", "{body}");

    // Disable survives a restart; enable brings it back.
    let (code, body) = agent.get(&format!("/plugins/disable?ns={NS}&repo={}", periodic.url()));
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["plugin"]["enabled"], false, "{body}");
    let status = agent.status();
    assert_eq!(status["plugins"]["total"], 2, "{status}");
    assert_eq!(status["plugins"]["disabled"], 1, "{status}");

    let agent = agent.restart(true);
    wait_cloned(&agent, 2);
    let (_, list) = agent.get("/plugins/list");
    let p = list["plugins"]
        .as_array()
        .and_then(|l| l.iter().find(|p| p["project"] == "nginx-stats").cloned())
        .expect("listed");
    assert_eq!(p["enabled"], false, "{p}");
    assert!(p["disabled_until"].is_i64(), "{p}");
    let (code, body) = agent.get(&format!("/plugins/enable?ns={NS}&repo=nginx-stats"));
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["plugin"]["enabled"], true, "{body}");
    // The cache survived the restart too: still the updated commit.
    let (_, body) = agent.get(&format!("/plugins/run?ns={NS}&repo=hello"));
    assert_eq!(body["result"]["stdout"], "v2\n", "{body}");
}

#[test]
fn periodic_plugins_and_builtins_run_on_the_scheduler_by_themselves() {
    let remotes = tempfile::tempdir().expect("tmp");
    let periodic = BareRepo::new(
        remotes.path(),
        "ticker",
        "echo '[{\"name\":\"tick\",\"value\":1,\"tags\":{\"k\":\"v\"}}]'\n",
    );
    let watched = tempfile::NamedTempFile::new().expect("file");
    let watched_path = watched.path().display().to_string();
    // A built-in that fails at every run: the list must say so (not only the log).
    let registry = format!(
        "[[namespace]]\nname = \"{NS}\"\n\
         plugins = [{{ git = \"{}\", interval = 1 }}]\n\
         builtins = [{{ name = \"file_age\", interval = 1, params = {{ path = \"{watched_path}\" }} }},\
                     {{ name = \"file_age\", interval = 1, params = {{ path = \"{watched_path}/x\" }} }}]\n",
        periodic.url()
    );
    let agent = AgentBuilder::new()
        .agent_keys("hostname = \"e2e-host\"")
        .config("[output]\nflush_ms = 100")
        .registry(&registry)
        .start();
    wait_cloned(&agent, 1);
    let plugin_line = "PLUGIN.ticker.tick,host=e2e-host,k=v value=1.0 ";
    let result_line = "plugin.ticker,host=e2e-host,reason=ok,type=regular value=0.0 ";
    let builtin_line =
        format!("PLUGIN.file_age.exists,host=e2e-host,path={watched_path} value=1.0 ");
    let ran = wait_until(Duration::from_secs(20), || {
        let out = agent.output_file(NS);
        out.contains(plugin_line) && out.contains(result_line) && out.contains(&builtin_line)
    });
    assert!(
        ran,
        "periodic runs missing from the output:\n{}\n{}",
        agent.output_file(NS),
        agent.stderr()
    );
    let jobs = &agent.status()["jobs"];
    assert_eq!(jobs["plugins"], 1, "{jobs}");
    assert_eq!(jobs["builtins"], 2, "{jobs}");

    // The built-ins are listed beside the script, with their last result.
    let listed = wait_until(Duration::from_secs(20), || {
        let list = agent.get("/plugins/list").1;
        let find = |params: String| {
            list["plugins"]
                .as_array()
                .and_then(|p| p.iter().find(|p| p["parameters"] == params).cloned())
                .unwrap_or_default()
        };
        let good = find(format!("path={watched_path}"));
        let bad = find(format!("path={watched_path}/x"));
        good["kind"] == "builtin"
            && good["project"] == "file_age"
            && good["commit"].is_null()
            && good["last_run"]["ok"] == true
            && bad["last_run"]["reason"] == "exit"
            && bad["last_run"]["error"]
                .as_str()
                .is_some_and(|e| e.contains("cannot stat"))
    });
    assert!(listed, "{}", agent.get("/plugins/list").1);
    let table = support::agentctl(&agent.addr)
        .args(["plugins", "list"])
        .output()
        .expect("agentctl");
    let text = String::from_utf8_lossy(&table.stdout);
    let row = text
        .lines()
        .find(|l| l.contains("file_age"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(row.contains("built-in"), "{text}");
    let (code, body) = agent.get(&format!("/plugins/update?ns={NS}&repo=file_age"));
    assert!(
        code >= 400
            && body["error"]
                .as_str()
                .is_some_and(|e| e.contains("built-in plugin")),
        "{code} {body}"
    );
}

/// The transports the agent uses now that libgit2 has no TLS and no ssh of its own, with the
/// operator's setup coming from the environment as for git: an HTTP server that wants
/// credentials gets them from git's credential helper in `$HOME/.gitconfig`, and ssh addresses
/// run the program in `GIT_SSH_COMMAND`.
#[test]
fn plugins_fetch_over_http_with_credential_helpers_and_over_ssh_with_git_ssh_command() {
    let remotes = tempfile::tempdir().expect("tmp");
    let home = tempfile::tempdir().expect("home");
    BareRepo::new(remotes.path(), "private", "echo private\n");
    BareRepo::new(remotes.path(), "viassh", "echo via ssh\n");
    let server = GitHttpServer::start(remotes.path());
    server.require_auth("bob", "tok3n");
    let hostport = server.url().trim_start_matches("http://").to_owned();
    let creds = home.path().join("creds");
    std::fs::write(&creds, format!("http://bob:tok3n@{hostport}\n")).expect("creds");
    std::fs::write(
        home.path().join(".gitconfig"),
        format!(
            "[credential]\n\thelper = store --file={}\n",
            creds.display()
        ),
    )
    .expect("gitconfig");
    let ssh = FakeSsh::new(home.path(), remotes.path());

    let http_url = format!("{}/private.git", server.url());
    let ssh_url = "git@git.example.test:viassh.git".to_owned();
    // The agent's git configuration is the one in `home`, never the developer's.
    let agent = AgentBuilder::new()
        .env("HOME", &home.path().display().to_string())
        .env("XDG_CONFIG_HOME", &home.path().display().to_string())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env(
            "GIT_SSH_COMMAND",
            &format!("'{}' -o LogLevel=ERROR", ssh.program.display()),
        )
        .registry(&registry(&[(http_url.clone(), 0), (ssh_url.clone(), 0)]))
        .start();
    wait_cloned(&agent, 2);

    for (repo, out) in [("private", "private\n"), ("viassh", "via ssh\n")] {
        let (code, body) = agent.get(&format!("/plugins/run?ns={NS}&repo={repo}"));
        assert_eq!(code, 200, "{body}");
        assert_eq!(body["result"]["stdout"], out, "{body}");
    }
    let requests = server.requests();
    assert_eq!(
        requests[0].authorization, None,
        "asked without credentials first"
    );
    assert!(
        requests
            .iter()
            .any(|r| r.method == "POST" && r.authorization.is_some()),
        "the helper's credentials were used: {requests:?}"
    );
    let runs = ssh.runs();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(
        runs[0].1,
        [
            "-o",
            "LogLevel=ERROR",
            "-o",
            "BatchMode=yes",
            "git@git.example.test",
            "git-upload-pack 'viassh.git'"
        ]
    );
}

/// A registry with one periodic plugin at `git` and an `http_check` of `check_url`, both every
/// second.
fn https_registry(git: &str, check_url: &str) -> String {
    format!(
        "[[namespace]]\nname = \"{NS}\"\n\
         plugins = [{{ git = \"{git}\", interval = 1 }}]\n\
         builtins = [{{ name = \"http_check\", interval = 1, params = {{ url = \"{check_url}\" }} }}]\n"
    )
}

/// The agent's trust store is whatever `SSL_CERT_FILE` names when it is set: with the test CA
/// there, the real binary clones, runs and updates a plugin from an `https://localhost` git
/// server and `http_check` sees the server up, both through verified TLS handshakes.
#[test]
fn https_plugins_and_http_check_trust_the_ca_in_ssl_cert_file() {
    let remotes = tempfile::tempdir().expect("tmp");
    let repo = BareRepo::new(
        remotes.path(),
        "secure",
        "echo '[{\"name\":\"gen\",\"value\":1}]'\n",
    );
    let server = GitHttpServer::start_tls(remotes.path());
    let git_url = format!("{}/secure.git", server.url());
    assert!(git_url.starts_with("https://localhost:"), "{git_url}");
    let check_url = format!("{}/plain/health", server.url());
    let agent = AgentBuilder::new()
        .agent_keys("hostname = \"e2e-host\"")
        .config("[output]\nflush_ms = 100")
        .env("SSL_CERT_FILE", &server.ca_file().display().to_string())
        .env_remove("SSL_CERT_DIR")
        .registry(&https_registry(&git_url, &check_url))
        .start();
    wait_cloned(&agent, 1);
    let script = |list: &serde_json::Value| {
        list["plugins"]
            .as_array()
            .and_then(|p| p.iter().find(|p| p["kind"] == "script"))
            .cloned()
            .unwrap_or_default()
    };
    let first = script(&agent.get("/plugins/list").1)["commit"].clone();

    let ran = wait_until(Duration::from_secs(20), || {
        let out = agent.output_file(NS);
        out.contains("PLUGIN.secure.gen,host=e2e-host value=1.0 ")
            && out.contains(&format!(
                "PLUGIN.http_check.up,host=e2e-host,result=ok,url={check_url} value=1.0 "
            ))
            && out.contains(&format!(
                "PLUGIN.http_check.status,host=e2e-host,result=ok,url={check_url} value=200.0 "
            ))
    });
    assert!(
        ran,
        "points missing from the output:\n{}\n{}",
        agent.output_file(NS),
        agent.stderr()
    );

    repo.push("echo '[{\"name\":\"gen\",\"value\":2}]'\n");
    let (code, body) = agent.get(&format!("/plugins/update?ns={NS}&repo=secure"));
    assert_eq!(code, 200, "{body}");
    let (_, list) = agent.get("/plugins/list");
    let now = &script(&list)["commit"];
    assert!(now.is_string() && *now != first, "{first} -> {list}");
    let updated = wait_until(Duration::from_secs(20), || {
        agent
            .output_file(NS)
            .contains("PLUGIN.secure.gen,host=e2e-host value=2.0 ")
    });
    assert!(
        updated,
        "no run of the new commit:\n{}",
        agent.output_file(NS)
    );
    assert_eq!(server.tls_failures(), Vec::<String>::new());
    // A good file draws no warning about the roots.
    assert!(!agent.stderr().contains("TLS roots"), "{}", agent.stderr());
}

/// Without `SSL_CERT_FILE` the agent trusts only the system's roots, which never signed the test
/// CA: the clone and the update fail naming the certificate, and `http_check` reports the server
/// down with no status.
#[test]
fn https_servers_signed_by_an_unknown_ca_are_refused_with_the_system_roots() {
    let remotes = tempfile::tempdir().expect("tmp");
    BareRepo::new(
        remotes.path(),
        "secure",
        "echo '[{\"name\":\"gen\",\"value\":1}]'\n",
    );
    let server = GitHttpServer::start_tls(remotes.path());
    let check_url = format!("{}/plain/health", server.url());
    let agent = AgentBuilder::new()
        .agent_keys("hostname = \"e2e-host\"")
        .config("[output]\nflush_ms = 100")
        .env_remove("SSL_CERT_FILE")
        .env_remove("SSL_CERT_DIR")
        .registry(&https_registry(
            &format!("{}/secure.git", server.url()),
            &check_url,
        ))
        .start();

    // rustls' verdict, at the end of reqwest's chain of causes.
    let refusal = "invalid peer certificate: UnknownIssuer";
    let problem = || {
        let list = agent.get("/plugins/list").1;
        list["plugins"]
            .as_array()
            .and_then(|p| p.iter().find(|p| p["kind"] == "script"))
            .and_then(|p| p["problem"].as_str())
            .unwrap_or_default()
            .to_owned()
    };
    let refused = wait_until(Duration::from_secs(30), || problem().contains(refusal));
    assert!(refused, "problem: {:?}\n{}", problem(), agent.stderr());
    let (code, body) = agent.get(&format!("/plugins/update?ns={NS}&repo=secure"));
    assert_eq!(code, 502, "{body}");
    assert!(
        body["error"].as_str().is_some_and(|e| e.contains(refusal)),
        "{body}"
    );

    let down = wait_until(Duration::from_secs(20), || {
        let out = agent.output_file(NS);
        out.contains(&format!(
            "PLUGIN.http_check.up,host=e2e-host,result=tls_error,url={check_url} value=0.0 "
        )) && out.contains(&format!(
            "PLUGIN.http_check.status,host=e2e-host,result=tls_error,url={check_url} value=0.0 "
        ))
    });
    assert!(down, "http_check points:\n{}", agent.output_file(NS));
    let out = agent.output_file(NS);
    assert!(!out.contains("PLUGIN.http_check.latency_ms"), "{out}");
    assert!(!out.contains("PLUGIN.secure."), "{out}");
    // The handshakes reached the server, and the client is the one that ended them.
    let failures = server.tls_failures();
    assert!(
        failures.iter().any(|f| f.contains("UnknownCA")),
        "{failures:?}"
    );
}

/// `SSL_CERT_DIR` replaces the system's roots too: every file in the directory is read (no
/// `openssl rehash` links needed), here the test CA's PEM alone.
#[test]
fn https_plugins_trust_the_cas_in_ssl_cert_dir() {
    let remotes = tempfile::tempdir().expect("tmp");
    BareRepo::new(remotes.path(), "secure", "echo via dir\n");
    let server = GitHttpServer::start_tls(remotes.path());
    let ca_file = server.ca_file();
    let ca_dir = ca_file.parent().expect("the CA's directory");
    let agent = AgentBuilder::new()
        .env_remove("SSL_CERT_FILE")
        .env("SSL_CERT_DIR", &ca_dir.display().to_string())
        .registry(&registry(&[(format!("{}/secure.git", server.url()), 0)]))
        .start();
    wait_cloned(&agent, 1);
    let (code, body) = agent.get(&format!("/plugins/run?ns={NS}&repo=secure"));
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["result"]["stdout"], "via dir\n", "{body}");
}

/// reqwest builds its clients on whatever of `SSL_CERT_FILE` it could read, so a misspelt path
/// leaves no root at all; the agent names the file in a warning at start-up, since the https
/// failures themselves only say "UnknownIssuer".
#[test]
fn an_unreadable_ssl_cert_file_is_named_in_a_warning_at_start_up() {
    let remotes = tempfile::tempdir().expect("tmp");
    BareRepo::new(remotes.path(), "secure", "echo hi\n");
    let server = GitHttpServer::start_tls(remotes.path());
    let agent = AgentBuilder::new()
        .env("SSL_CERT_FILE", "/nonexistent/ca.pem")
        .env_remove("SSL_CERT_DIR")
        .registry(&registry(&[(format!("{}/secure.git", server.url()), 0)]))
        .start();
    let warned = wait_until(Duration::from_secs(10), || {
        let log = agent.stderr();
        log.contains("TLS roots from SSL_CERT_FILE / SSL_CERT_DIR are not all usable")
            && log.contains("/nonexistent/ca.pem")
            && log.contains("hold no certificate")
    });
    assert!(warned, "{}", agent.stderr());
    let refused = wait_until(Duration::from_secs(30), || {
        agent.get("/plugins/list").1["plugins"][0]["problem"]
            .as_str()
            .is_some_and(|p| p.contains("UnknownIssuer"))
    });
    assert!(refused, "{}", agent.get("/plugins/list").1);
}
