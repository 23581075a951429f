//! Plugins against real git repositories (bare repos made here, one served by `git daemon` on
//! loopback), real processes, and real local HTTP and TLS servers.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use shared::Value;
use tokio::sync::mpsc;

use super::*;
use crate::pipeline::{Point, Submission};
use crate::registry::NamespacePlan;
use support::gitrepo::{git, BareRepo};

const NS: &str = "test.plugins";

/// The checkout `name` of namespace `t` under `root`, for tests of the git layer.
fn co(root: &Path, name: &str) -> checkout::Checkout {
    checkout::Checkout::new(root, "t", name, checkout::Access::default()).expect("checkout")
}

/// A temporary directory the unprivileged plugin user can traverse (tests run as root here).
fn open_tempdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    dir
}

struct Fixture {
    dir: tempfile::TempDir,
    manager: PluginManager,
    rx: mpsc::Receiver<Submission>,
}

fn config(dir: &Path, disable_secs: u64) -> Config {
    let mut c = Config::default();
    c.agent.data_dir = dir.join("data");
    c.agent.plugins_dir = Some(dir.join("data").join("plugins"));
    c.agent.plugin_disable_secs = disable_secs;
    c
}

fn fixture(disable_secs: u64) -> Fixture {
    let dir = open_tempdir();
    let (pipeline, rx) = Pipeline::new("testhost", 4096);
    let manager = PluginManager::new(&config(dir.path(), disable_secs), pipeline);
    Fixture { dir, manager, rx }
}

impl Fixture {
    fn repo(&self, name: &str, script: &str) -> BareRepo {
        BareRepo::new(&self.dir.path().join("remotes"), name, script)
    }

    /// A world-writable folder for plugins to leave evidence in (they run as `nobody`).
    fn drop_box(&self) -> PathBuf {
        let p = self.dir.path().join("dropbox");
        std::fs::create_dir_all(&p).expect("dropbox");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        p
    }

    async fn plan(&self, items: Vec<PluginItem>) {
        let mut plan = Plan::default();
        plan.namespaces.insert(
            NS.to_owned(),
            NamespacePlan {
                plugins: items,
                ..NamespacePlan::default()
            },
        );
        self.manager.sync(&plan).await;
    }

    fn points(&mut self) -> Vec<Point> {
        let mut out = Vec::new();
        while let Ok(s) = self.rx.try_recv() {
            assert_eq!(&*s.ns, NS);
            out.extend(s.points);
        }
        out
    }

    async fn call(&self, project: &str, timeout_secs: u64, param: Option<&str>) -> RunResult {
        let resp = self
            .manager
            .run(
                NS,
                project,
                RunKind::Call {
                    timeout: Duration::from_secs(timeout_secs),
                    param: param.map(str::to_owned),
                },
            )
            .await
            .expect("known plugin");
        assert!(resp.ran, "{resp:?}");
        resp.result.expect("a result")
    }
}

fn item(git: String, interval: u64) -> PluginItem {
    PluginItem {
        git,
        interval,
        parameters: String::new(),
        branch: None,
    }
}

fn tag<'a>(p: &'a Point, key: &str) -> Option<&'a str> {
    p.tags
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn result_point<'a>(points: &'a [Point], project: &str) -> &'a Point {
    points
        .iter()
        .find(|p| p.measurement == format!("plugin.{project}"))
        .unwrap_or_else(|| panic!("no result point plugin.{project} in {points:?}"))
}

const ECHO_V1: &str = "echo '[{\"name\":\"version\",\"value\":1}]'\n";
const ECHO_V2: &str = "echo '[{\"name\":\"version\",\"value\":2}]'\n";

#[tokio::test]
async fn clones_keeps_the_cache_until_an_explicit_update_and_a_failed_update_keeps_the_old_one() {
    let mut f = fixture(60);
    let repo = f.repo("plugin-example", ECHO_V1);
    f.plan(vec![item(repo.url(), 30)]).await;
    let dir = f.manager.checkout_dir(NS, "plugin-example").expect("dir");
    assert!(dir.join("plugin.sh").is_file(), "cloned into {dir:?}");
    let listed = f.manager.list();
    assert_eq!(listed.plugins.len(), 1);
    assert_eq!(listed.plugins[0].project, "plugin-example");
    assert!(listed.plugins[0].commit.is_some(), "{listed:?}");

    let r = f.call("plugin-example", 10, None).await;
    assert!(r.ok, "{r:?}");
    let pts = f.points();
    let v = pts
        .iter()
        .find(|p| p.measurement == "PLUGIN.plugin-example.version")
        .expect("renamed metric");
    assert_eq!(v.value, Value::Float(1.0));

    // A new commit upstream, and a re-sync of the same plan: the cache does not move by itself.
    repo.push(ECHO_V2);
    f.plan(vec![item(repo.url(), 30)]).await;
    assert!(f
        .call("plugin-example", 10, None)
        .await
        .stdout
        .contains(":1}"));

    // The explicit update moves it.
    let a = f
        .manager
        .update(NS, &repo.url())
        .await
        .expect("update works");
    assert!(a.message.contains("updated from"), "{a:?}");
    assert!(f
        .call("plugin-example", 10, None)
        .await
        .stdout
        .contains(":2}"));

    // The remote is gone: the update fails, says so, and the old checkout still runs.
    std::fs::rename(&repo.bare, repo.bare.with_extension("moved")).expect("hide remote");
    let e = f
        .manager
        .update(NS, "plugin-example")
        .await
        .expect_err("remote gone");
    assert!(e.to_string().contains("previous checkout is kept"), "{e}");
    let r = f.call("plugin-example", 10, None).await;
    assert!(r.ok && r.stdout.contains(":2}"), "{r:?}");
    let leftovers: Vec<_> = std::fs::read_dir(dir.parent().expect("ns dir"))
        .expect("ns dir")
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .collect();
    assert_eq!(leftovers.len(), 1, "no temporary clone left: {leftovers:?}");
}

#[tokio::test]
async fn a_plain_local_path_and_a_named_branch_are_cloned() {
    let f = fixture(60);
    let repo = f.repo("by-path", ECHO_V1);
    git(&repo.work, &["checkout", "-q", "-b", "stable"]);
    repo.push(ECHO_V2);
    git(&repo.work, &["push", "-q", "origin", "HEAD:stable"]);
    let mut it = item(repo.bare.display().to_string(), 0);
    it.branch = Some("stable".to_owned());
    f.plan(vec![it]).await;
    let r = f.call("by-path", 10, None).await;
    assert!(r.ok && r.stdout.contains(":2}"), "{r:?}");
}

/// `git daemon` on loopback, killed on drop.
struct GitDaemon(std::process::Child);

impl Drop for GitDaemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

#[tokio::test]
async fn clones_over_git_protocol_from_git_daemon() {
    let f = fixture(60);
    let repo = f.repo("daemon-plugin", ECHO_V1);
    let base = repo.bare.parent().expect("remotes").to_owned();
    let port = free_port();
    // git-daemon itself, not the `git daemon` wrapper: killing the wrapper would orphan it.
    let exec_path = Command::new("git")
        .arg("--exec-path")
        .output()
        .expect("git --exec-path");
    let exec_path = String::from_utf8_lossy(&exec_path.stdout).trim().to_owned();
    let child = Command::new(Path::new(&exec_path).join("git-daemon"))
        .arg(format!("--base-path={}", base.display()))
        .args(["--export-all", "--reuseaddr", "--listen=127.0.0.1"])
        .arg(format!("--port={port}"))
        .arg(&base)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("git daemon");
    let _daemon = GitDaemon(child);
    let mut up = false;
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up, "git daemon listening on {port}");
    let url = format!("git://127.0.0.1:{port}/daemon-plugin.git");
    f.plan(vec![item(url.clone(), 0)]).await;
    let r = f.call(&url, 10, None).await;
    assert!(r.ok && r.stdout.contains(":1}"), "{r:?}");
    repo.push(ECHO_V2);
    f.manager
        .update(NS, &url)
        .await
        .expect("update over git://");
    assert!(f.call(&url, 10, None).await.stdout.contains(":2}"));
}

#[test]
fn credentials_are_left_out_of_addresses_in_messages() {
    for (addr, shown) in [
        (
            "https://bob:s3cret@h:8443/x.git",
            "https://bob:***@h:8443/x.git",
        ),
        // A user name alone is often a token.
        (
            "https://ghp_T0KEN@github.com/o/r.git",
            "https://***@github.com/o/r.git",
        ),
        // Unencoded '/', '#', '?', '@' in the password: hidden up to the last '@'.
        ("https://bob:pa/ss@h/x.git", "https://bob:***@h/x.git"),
        ("https://bob:pa#s@s@h/x.git", "https://bob:***@h/x.git"),
        ("https://bob:pa?ss@h/x.git", "https://bob:***@h/x.git"),
        // ssh URLs keep the account; ssh takes no password, but none is shown either.
        ("ssh://git@h/x.git", "ssh://git@h/x.git"),
        ("ssh://git:s3cret@h/x.git", "ssh://git:***@h/x.git"),
        // An '@' in the path hides what is before it (it may as well be a password's).
        ("https://h/team@x.git", "https://***@x.git"),
    ] {
        assert_eq!(git::redact_address(addr), shown, "{addr}");
    }
    for same in ["https://h/x.git", "git@h:x.git", "/srv/x@y"] {
        assert_eq!(git::redact_address(same), same);
    }
}

/// The messages users and logs get, not just the redaction function: each failure path of an
/// address with credentials in it.
#[test]
fn clone_errors_never_show_credentials() {
    let dir = open_tempdir();
    let (ssh, t) = {
        std::fs::create_dir_all(dir.path().join("remotes")).expect("remotes");
        let ssh = FakeSsh::new(dir.path(), &dir.path().join("remotes"));
        let t = git::Transports {
            ssh: Some(git::SshCommand::program(&ssh.program)),
            ..git::Transports::default()
        };
        (ssh, t)
    };
    let port = free_port();
    for addr in [
        // Unencoded characters in the password: the URL does not parse.
        "https://bob:S3#cret@h.invalid/x.git".to_owned(),
        "https://bob:S3?cret@h.invalid/x.git".to_owned(),
        "https://bob:S3/cret@h.invalid/x.git".to_owned(),
        // A bad port, and a good address where nothing listens.
        "http://bob:S3cret@127.0.0.1:99999/x.git".to_owned(),
        format!("http://bob:S3cret@127.0.0.1:{port}/x.git"),
        // A token as the user name.
        format!("http://S3cretToken@127.0.0.1:{port}/x.git"),
        // ssh takes no password: refused, never passed to ssh.
        "ssh://bob:S3cret@h.invalid/x.git".to_owned(),
        "ssh://bob:S3/cret@h.invalid/x.git".to_owned(),
    ] {
        let e = git::clone_into_with(&addr, None, &co(dir.path(), "c"), &t)
            .expect_err(&addr)
            .to_string();
        assert!(!e.contains("S3") && !e.contains("cret"), "{addr}: {e}");
        assert!(e.contains("***@"), "{addr}: {e}");
        if addr.starts_with("ssh://bob:S3cret") {
            assert!(e.contains("takes no password"), "{e}");
        }
    }
    assert!(ssh.runs().is_empty(), "ssh never ran: {:?}", ssh.runs());
}

#[tokio::test]
async fn the_plugin_list_never_shows_a_password_and_every_form_of_the_address_finds_the_plugin() {
    let f = fixture(60);
    let port = free_port();
    let addr = format!("http://bob:s3cret@127.0.0.1:{port}/secret-plugin.git");
    // Nothing listens there: the clone fails, the plugin is listed with its problem.
    f.plan(vec![item(addr.clone(), 30)]).await;
    let listed = f.manager.list();
    assert_eq!(listed.plugins.len(), 1, "{listed:?}");
    let shown = listed.plugins[0].repo.clone();
    assert_eq!(
        shown,
        format!("http://bob:***@127.0.0.1:{port}/secret-plugin.git")
    );
    assert!(!format!("{listed:?}").contains("s3cret"), "{listed:?}");
    for form in [addr.as_str(), shown.as_str(), "secret-plugin"] {
        assert_eq!(f.manager.resolve(NS, form).expect(form), "secret-plugin");
    }

    // Refused items: a token as the user, a second item of the same name (whose problem names
    // the first), an address without a repository name. None shows a credential.
    f.plan(vec![
        item(addr.clone(), 30),
        item(
            format!("http://T0KEN@127.0.0.1:{port}/secret-plugin.git"),
            30,
        ),
        item("https://ann:An0ther@h.invalid/".to_owned(), 30),
        item("ftp://ann:An0ther@h.invalid/x.git".to_owned(), 30),
    ])
    .await;
    let listed = f.manager.list();
    let text = format!("{listed:?}");
    assert_eq!(listed.plugins.len(), 4, "{text}");
    for secret in ["s3cret", "T0KEN", "An0ther"] {
        assert!(!text.contains(secret), "{secret}: {text}");
    }
    assert!(
        text.contains(&format!("http://***@127.0.0.1:{port}/secret-plugin.git"))
            && text.contains("already used")
            && text.contains("does not end in a repository name")
            && text.contains("'ftp://' is not supported"),
        "{text}"
    );
}

#[test]
fn addresses_that_could_run_commands_are_refused_and_project_names_are_derived() {
    for bad in [
        "-uhelp",
        "--upload-pack=touch /tmp/x",
        "ext::sh -c touch% /tmp/pwned",
        "fd::3",
        "transport+x::foo",
        "ssh://-oProxyCommand=x/repo.git",
        "git@-oProxyCommand=x:repo.git",
        "ssh://host:22x/repo.git",
        "",
    ] {
        let e = git::check_address(bad).expect_err(bad);
        assert!(e.to_string().contains("refused"), "{e}");
    }
    for good in [
        "https://git.example.com/ops/nginx-stats.git",
        "ssh://git@git.example.com:2222/ops/x.git",
        "git@github.com:org/name.git",
        "git://127.0.0.1:9418/x.git",
        "file:///srv/git/x.git",
        "/srv/git/x",
    ] {
        git::check_address(good).expect(good);
    }
    let name = |a: &str| crate::registry::project_name(a);
    assert_eq!(
        name("https://h/ops/plugin-example.git").as_deref(),
        Ok("plugin-example")
    );
    assert_eq!(name("git@host:org/name.git").as_deref(), Ok("name"));
    assert_eq!(name("git@host:name.git").as_deref(), Ok("name"));
    assert_eq!(name("/srv/git/x/").as_deref(), Ok("x"));
    assert!(name("https://h/ops/.git").is_err());
    assert!(name("https://h/..").is_err());
}

#[tokio::test]
async fn a_duplicate_project_name_and_a_refused_address_are_reported_not_run() {
    let f = fixture(60);
    let a = f.repo("same", ECHO_V1);
    let other_root = f.dir.path().join("elsewhere");
    let b = BareRepo::new(&other_root, "same", ECHO_V2);
    f.plan(vec![
        item(a.url(), 0),
        item(b.url(), 0),
        item("ext::sh -c id".to_owned(), 0),
    ])
    .await;
    let list = f.manager.list();
    assert_eq!(list.plugins.len(), 3, "{list:?}");
    let dup = list
        .plugins
        .iter()
        .find(|p| p.repo == b.url())
        .expect("the second is listed");
    assert!(
        dup.problem
            .as_deref()
            .is_some_and(|p| p.contains("already used")),
        "{dup:?}"
    );
    let e = f
        .manager
        .run(NS, &b.url(), RunKind::Regular)
        .await
        .expect_err("refused");
    assert!(matches!(e, PluginError::Refused { .. }), "{e}");
    // The first keeps working.
    assert!(f.call("same", 10, None).await.stdout.contains(":1}"));
    let e = f
        .manager
        .run(NS, "nope", RunKind::Regular)
        .await
        .expect_err("unknown");
    assert!(e.to_string().contains("refreshed"), "{e}");
}

#[tokio::test]
async fn a_run_has_a_clean_environment_argv_no_stdin_a_new_session_and_drops_root() {
    let mut f = fixture(60);
    let script = r#"
echo "args=$#"
for a in "$@"; do echo "arg=$a"; done
echo "ns=$AGENT_NS plugin=$AGENT_PLUGIN path=$PATH lang=$LANG home=$HOME"
echo "leak=${CARGO_PKG_NAME:-none}"
echo "uid=$(id -u)"
echo "stdin=$(cat)"
echo "sid=$(cut -d' ' -f6 /proc/$$/stat) pid=$$"
"#;
    let repo = f.repo("envcheck", script);
    f.plan(vec![item(repo.url(), 0)]).await;
    let r = f
        .call("envcheck", 10, Some("a;b  $(touch /tmp/x) 'q"))
        .await;
    assert!(r.ok, "{r:?}");
    let out = &r.stdout;
    assert!(out.contains("args=4\n"), "{out}");
    assert!(
        out.contains("arg=a;b\narg=$(touch\narg=/tmp/x)\narg='q\n"),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "ns={NS} plugin=envcheck path={} lang=C.UTF-8",
            runner::PLUGIN_PATH
        )),
        "{out}"
    );
    assert!(out.contains("leak=none"), "{out}");
    assert!(out.contains("stdin=\n"), "{out}");
    let sid_line = out.lines().find(|l| l.starts_with("sid=")).expect("sid");
    let (sid, pid) = sid_line
        .trim_start_matches("sid=")
        .split_once(" pid=")
        .expect("sid and pid");
    assert_eq!(sid, pid, "the plugin leads its own session");
    if nix::unistd::geteuid().is_root() {
        let nobody = nix::unistd::User::from_name("nobody")
            .expect("lookup")
            .expect("nobody exists");
        assert!(out.contains(&format!("uid={}\n", nobody.uid)), "{out}");
    }
    // An interval-0 plugin's output is for the caller; only the result point is shipped.
    let pts = f.points();
    assert_eq!(pts.len(), 1, "{pts:?}");
    assert_eq!(tag(&pts[0], "type"), Some("call"));
    assert_eq!(tag(&pts[0], "reason"), Some("ok"));
    assert_eq!(pts[0].value, Value::Float(0.0));
}

fn pid_alive(pid: i32) -> bool {
    // A zombie (waiting for a reaper such as a container's PID 1) is dead for our purpose.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X')),
        Err(_) => false,
    }
}

#[tokio::test]
async fn failures_exit_timeout_garbage_and_oversized_output_each_have_their_reason() {
    let mut f = fixture(60);
    let drop_box = f.drop_box();
    let exit = f.repo("exits", "echo oops >&2\nexit 3\n");
    let hang = f.repo(
        "hangs",
        "trap '' TERM\n(trap '' TERM; sleep 300) &\necho $! > \"$1/grandchild\"\nsleep 300\n",
    );
    let garbage = f.repo("garbage", "echo 'this is not json'\n");
    let big = f.repo(
        "big",
        "head -c 10485760 /dev/zero | tr '\\0' 'a'\necho '[]'\n",
    );
    f.plan(vec![
        item(exit.url(), 60),
        item(hang.url(), 60),
        item(garbage.url(), 60),
        item(big.url(), 60),
    ])
    .await;

    let r = f.call("exits", 10, None).await;
    assert_eq!(
        (r.ok, r.reason.as_str(), r.exit_code),
        (false, "exit", Some(3))
    );
    assert!(r.stderr.contains("oops"), "{r:?}");

    let r = f
        .call("hangs", 1, Some(drop_box.to_str().expect("utf8")))
        .await;
    assert_eq!((r.ok, r.reason.as_str()), (false, "timeout"), "{r:?}");
    assert!(
        r.duration_ms < 1000 + runner::KILL_GRACE.as_millis() as u64 + 2000,
        "{r:?}"
    );
    let gc: i32 = std::fs::read_to_string(drop_box.join("grandchild"))
        .expect("the plugin wrote its grandchild's pid")
        .trim()
        .parse()
        .expect("pid");
    let mut gone = false;
    for _ in 0..50 {
        if !pid_alive(gc) {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(gone, "grandchild {gc} survived the timeout");

    let r = f.call("garbage", 10, None).await;
    assert_eq!((r.ok, r.reason.as_str()), (false, "output"), "{r:?}");
    let err = r.error.as_deref().unwrap_or_default();
    assert!(
        err.contains("this is not json"),
        "snippet in the error: {err}"
    );
    let listed = f.manager.list();
    let g = listed
        .plugins
        .iter()
        .find(|p| p.project == "garbage")
        .expect("listed");
    assert!(
        g.last_run
            .as_ref()
            .and_then(|l| l.error.as_deref())
            .is_some_and(|e| e.contains("this is not json")),
        "{g:?}"
    );

    let r = f.call("big", 30, None).await;
    assert_eq!(
        (r.ok, r.reason.as_str(), r.truncated),
        (false, "output", true)
    );
    assert_eq!(r.stdout.len(), runner::OUTPUT_CAP);
    let kept = f.manager.list();
    let b = kept
        .plugins
        .iter()
        .find(|p| p.project == "big")
        .expect("big");
    assert!(b
        .last_run
        .as_ref()
        .is_some_and(|l| l.stdout.len() <= LIST_OUTPUT_CAP));

    let pts = f.points();
    for (project, reason) in [
        ("exits", "exit"),
        ("hangs", "timeout"),
        ("garbage", "output"),
        ("big", "output"),
    ] {
        let p = result_point(&pts, project);
        assert_eq!(p.value, Value::Float(1.0));
        assert_eq!(tag(p, "reason"), Some(reason));
        assert_eq!(tag(p, "type"), Some("call"));
    }
}

#[tokio::test]
async fn a_call_while_running_is_ignored_and_says_so() {
    let f = fixture(60);
    let repo = f.repo("slow", "sleep 2\necho '[]'\n");
    f.plan(vec![item(repo.url(), 0)]).await;
    let m = f.manager.clone();
    let first = tokio::spawn(async move {
        m.run(
            NS,
            "slow",
            RunKind::Call {
                timeout: Duration::from_secs(10),
                param: None,
            },
        )
        .await
    });
    let mut running = false;
    for _ in 0..100 {
        if f.manager.counts().running == 1 {
            running = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(running, "first run started");
    let second = f
        .manager
        .run(
            NS,
            "slow",
            RunKind::Call {
                timeout: Duration::from_secs(10),
                param: None,
            },
        )
        .await
        .expect("known");
    assert!(
        !second.ran && second.message.contains("already running"),
        "{second:?}"
    );
    assert_eq!(f.manager.run_scheduled(NS, "slow").await, Scheduled::Busy);
    let first = first.await.expect("join").expect("ran");
    assert!(
        first.ran && first.result.as_ref().is_some_and(|r| r.ok),
        "{first:?}"
    );
}

#[tokio::test]
async fn scheduled_runs_ship_renamed_metrics_and_a_regular_result_point() {
    let mut f = fixture(60);
    let repo = f.repo(
        "metrics",
        "echo '[{\"name\":\"conn.active\",\"tags\":{\"pool\":\"a\"},\"value\":12.5}]'\n",
    );
    f.plan(vec![item(repo.url(), 30)]).await;
    let Scheduled::Ran(r) = f.manager.run_scheduled(NS, "metrics").await else {
        panic!("should run");
    };
    assert!(r.ok, "{r:?}");
    let pts = f.points();
    let m = pts
        .iter()
        .find(|p| p.measurement == "PLUGIN.metrics.conn.active")
        .expect("renamed metric");
    assert_eq!(tag(m, "pool"), Some("a"));
    assert_eq!(tag(m, "host"), Some("testhost"));
    let p = result_point(&pts, "metrics");
    assert_eq!(
        (tag(p, "type"), tag(p, "reason")),
        (Some("regular"), Some("ok"))
    );
    assert_eq!(
        f.manager.run_scheduled(NS, "gone").await,
        Scheduled::Unknown
    );
}

#[tokio::test]
async fn disable_enable_auto_re_enable_and_state_kept_across_a_restart() {
    let f = fixture(1);
    let repo = f.repo("toggle", "echo '[]'\n");
    f.plan(vec![item(repo.url(), 30)]).await;
    let a = f.manager.disable(NS, "toggle").await.expect("disable");
    assert!(a
        .plugin
        .as_ref()
        .is_some_and(|p| !p.enabled && p.disabled_until.is_some()));
    assert_eq!(
        f.manager.run_scheduled(NS, "toggle").await,
        Scheduled::Disabled
    );
    assert_eq!(f.manager.counts().disabled, 1);
    let a = f.manager.enable(NS, "toggle").await.expect("enable");
    assert!(a.plugin.as_ref().is_some_and(|p| p.enabled), "{a:?}");
    assert!(matches!(
        f.manager.run_scheduled(NS, "toggle").await,
        Scheduled::Ran(_)
    ));

    // Auto re-enable after plugin_disable_secs (1 s here).
    f.manager.disable(NS, "toggle").await.expect("disable");
    assert_eq!(
        f.manager.run_scheduled(NS, "toggle").await,
        Scheduled::Disabled
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert!(matches!(
        f.manager.run_scheduled(NS, "toggle").await,
        Scheduled::Ran(_)
    ));

    // A restart: a new manager on the same data dir sees the saved state.
    let long = fixture(3600);
    drop(long);
    let cfg = config(f.dir.path(), 3600);
    let (p1, _rx1) = Pipeline::new("h", 16);
    let first = PluginManager::new(&cfg, p1);
    first.load_state().await;
    let mut plan = Plan::default();
    plan.namespaces.insert(
        NS.to_owned(),
        NamespacePlan {
            plugins: vec![item(repo.url(), 30)],
            ..NamespacePlan::default()
        },
    );
    first.sync(&plan).await;
    first.disable(NS, "toggle").await.expect("disable");
    drop(first);
    let (p2, _rx2) = Pipeline::new("h", 16);
    let second = PluginManager::new(&cfg, p2);
    second.load_state().await;
    second.sync(&plan).await;
    assert_eq!(
        second.run_scheduled(NS, "toggle").await,
        Scheduled::Disabled
    );
    let info = second.list().plugins.into_iter().next().expect("listed");
    assert!(!info.enabled && info.disabled_until.is_some(), "{info:?}");
}

#[test]
fn periodic_timeout_leaves_a_margin_before_the_next_tick() {
    assert_eq!(periodic_timeout(60), Duration::from_secs(55));
    assert_eq!(periodic_timeout(10), Duration::from_secs(9));
    assert_eq!(periodic_timeout(1), Duration::from_millis(900));
}

// ---- built-ins ----

async fn http_server() -> (String, tokio_util::sync::CancellationToken) {
    use axum::http::StatusCode;
    use axum::routing::get;
    let app = axum::Router::new()
        .route("/ok", get(|| async { "fine" }))
        .route(
            "/down",
            get(|| async { (StatusCode::SERVICE_UNAVAILABLE, "no") }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "late"
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let stop = tokio_util::sync::CancellationToken::new();
    let s = stop.clone();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { s.cancelled().await })
            .await;
    });
    (format!("http://{addr}"), stop)
}

fn metric(ms: &[Metric], name: &str) -> Option<f64> {
    ms.iter()
        .find(|m| m.name == name)
        .and_then(|m| match m.value {
            Value::Float(v) => Some(v),
            _ => None,
        })
}

fn params(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
    kv.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[tokio::test]
async fn http_check_reports_up_status_and_latency() {
    let (base, stop) = http_server().await;
    let ok = builtin::run("http_check", &params(&[("url", &format!("{base}/ok"))]))
        .await
        .expect("runs");
    assert_eq!(metric(&ok, "up"), Some(1.0));
    assert_eq!(metric(&ok, "status"), Some(200.0));
    assert!(metric(&ok, "latency_ms").is_some_and(|l| l >= 0.0));
    assert_eq!(result_tag(&ok), "ok");
    let down = builtin::run("http_check", &params(&[("url", &format!("{base}/down"))]))
        .await
        .expect("runs");
    assert_eq!(
        (metric(&down, "up"), metric(&down, "status")),
        (Some(0.0), Some(503.0))
    );
    assert_eq!(result_tag(&down), "unexpected_status");
    let expected = builtin::run(
        "http_check",
        &params(&[("url", &format!("{base}/down")), ("expect_status", "503")]),
    )
    .await
    .expect("runs");
    assert_eq!(metric(&expected, "up"), Some(1.0));
    let slow = builtin::run(
        "http_check",
        &params(&[("url", &format!("{base}/slow")), ("timeout", "0.3")]),
    )
    .await
    .expect("runs");
    assert_eq!(
        (metric(&slow, "up"), metric(&slow, "status")),
        (Some(0.0), Some(0.0))
    );
    assert_eq!(result_tag(&slow), "timeout");
    stop.cancel();
    let refused = builtin::run(
        "http_check",
        &params(&[("url", &format!("http://127.0.0.1:{}/", free_port()))]),
    )
    .await
    .expect("runs");
    assert_eq!(metric(&refused, "up"), Some(0.0));
    assert_eq!(result_tag(&refused), "connection_failed");
    // A self-signed certificate is not in the trust store.
    let untrusted = builtin::run(
        "http_check",
        &params(&[("url", &format!("https://localhost:{}/", tls_server(30)))]),
    )
    .await
    .expect("runs");
    assert_eq!(
        (metric(&untrusted, "up"), metric(&untrusted, "status")),
        (Some(0.0), Some(0.0))
    );
    assert_eq!(result_tag(&untrusted), "tls_error");
}

/// The `result` tag every http_check metric carries; the same on all of them.
fn result_tag(ms: &[shared::Metric]) -> String {
    let tags: Vec<&str> = ms
        .iter()
        .map(|m| m.tags.get("result").map_or("", String::as_str))
        .collect();
    assert!(tags.windows(2).all(|w| w[0] == w[1]), "{ms:?}");
    tags.first().copied().unwrap_or_default().to_owned()
}

/// A TLS server on loopback with a fresh self-signed certificate that expires `days` from now
/// (negative: already expired), serving a few handshakes.
fn tls_server(days: i64) -> u16 {
    use rustls::pki_types::PrivateKeyDer;

    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    let now = now_secs();
    let secs = |t: i64| Duration::from_secs(u64::try_from(t).expect("after 1970"));
    params.not_before = epoch + secs(now - 40 * 86_400);
    params.not_after = epoch + secs(now + days * 86_400);
    let cert = params.self_signed(&key).expect("self-signed");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .expect("server config");
    let config = Arc::new(config);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        // Bounded: a test makes a handful of connections, each given a few seconds.
        for mut stream in listener.incoming().take(4).flatten() {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let Ok(mut conn) = rustls::ServerConnection::new(config.clone()) else {
                continue;
            };
            while conn.is_handshaking() {
                if conn.complete_io(&mut stream).is_err() {
                    break;
                }
            }
            let _ = conn.complete_io(&mut stream);
        }
    });
    port
}

async fn tls_check(port: u16) -> Result<Vec<shared::Metric>, String> {
    builtin::run(
        "tls_cert_expiry",
        &params(&[
            ("host", "127.0.0.1"),
            ("port", &port.to_string()),
            ("server_name", "localhost"),
            ("timeout", "5"),
        ]),
    )
    .await
}

#[tokio::test]
async fn tls_cert_expiry_reports_an_expired_certificate_as_negative_days() {
    let ms = tls_check(tls_server(-3)).await.expect("runs");
    let days = metric(&ms, "days_left").expect("days_left");
    assert!((-3.01..=-2.99).contains(&days), "days_left = {days}");
}

#[tokio::test]
async fn tls_cert_expiry_fails_clearly_on_a_server_that_does_not_speak_tls() {
    use std::io::Write;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        if let Some(Ok(mut s)) = listener.incoming().next() {
            let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n");
        }
    });
    let e = tls_check(port).await.expect_err("not TLS");
    assert!(e.contains("TLS handshake with 127.0.0.1:"), "{e}");
}

#[tokio::test]
async fn tls_cert_expiry_reports_days_left_of_a_known_certificate() {
    let ms = tls_check(tls_server(30)).await.expect("runs");
    let days = metric(&ms, "days_left").expect("days_left");
    assert!((29.9..=30.01).contains(&days), "days_left = {days}");
    let at = metric(&ms, "expires_at").expect("expires_at");
    let expected = (now_secs() + 30 * 86_400) as f64;
    assert!(
        (at - expected).abs() < 120.0,
        "expires_at = {at}, expected ~{expected}"
    );
    let e = builtin::run(
        "tls_cert_expiry",
        &params(&[("host", "127.0.0.1"), ("port", &free_port().to_string())]),
    )
    .await
    .expect_err("nothing listens");
    assert!(e.contains("cannot connect"), "{e}");
}

#[tokio::test]
async fn file_age_reports_existence_age_and_size() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("heartbeat");
    std::fs::write(&path, b"12345").expect("write");
    let ms = builtin::run(
        "file_age",
        &params(&[("path", path.to_str().expect("utf8"))]),
    )
    .await
    .expect("runs");
    assert_eq!(metric(&ms, "exists"), Some(1.0));
    assert_eq!(metric(&ms, "size_bytes"), Some(5.0));
    assert!(metric(&ms, "age_secs").is_some_and(|a| a < 60.0));
    let missing = dir.path().join("nope");
    let ms = builtin::run(
        "file_age",
        &params(&[("path", missing.to_str().expect("utf8"))]),
    )
    .await
    .expect("runs");
    assert_eq!(metric(&ms, "exists"), Some(0.0));
    assert_eq!(ms.len(), 1);
}

#[tokio::test]
async fn a_scheduled_builtin_ships_renamed_metrics_and_its_result_point() {
    let mut f = fixture(60);
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("f");
    std::fs::write(&path, b"x").expect("write");
    let ok = BuiltinItem {
        name: "file_age".to_owned(),
        interval: 30,
        params: params(&[("path", path.to_str().expect("utf8"))]),
    };
    let r = f.manager.run_builtin_scheduled(NS, &ok).await;
    assert!(r.ok, "{r:?}");
    let bad = BuiltinItem {
        name: "file_age".to_owned(),
        interval: 30,
        params: params(&[("path", "relative")]),
    };
    let r = f.manager.run_builtin_scheduled(NS, &bad).await;
    assert_eq!((r.ok, r.reason.as_str()), (false, "exit"));
    let pts = f.points();
    assert!(
        pts.iter()
            .any(|p| p.measurement == "PLUGIN.file_age.exists"),
        "{pts:?}"
    );
    let results: Vec<_> = pts
        .iter()
        .filter(|p| p.measurement == "plugin.file_age")
        .map(|p| (p.value.clone(), tag(p, "reason").map(str::to_owned)))
        .collect();
    assert_eq!(
        results,
        [
            (Value::Float(0.0), Some("ok".to_owned())),
            (Value::Float(1.0), Some("exit".to_owned()))
        ]
    );
}

#[tokio::test]
async fn plugins_are_not_run_as_root_unless_the_config_says_so() {
    if !nix::unistd::geteuid().is_root() {
        // As a normal user the agent runs plugins as itself; nothing to refuse.
        return;
    }
    let dir = open_tempdir();
    let repo = BareRepo::new(&dir.path().join("remotes"), "whoami", "id -u\n");
    let mut plan = Plan::default();
    plan.namespaces.insert(
        NS.to_owned(),
        NamespacePlan {
            plugins: vec![item(repo.url(), 0)],
            ..NamespacePlan::default()
        },
    );
    let call = RunKind::Call {
        timeout: Duration::from_secs(10),
        param: None,
    };
    let mut cfg = config(dir.path(), 60);
    cfg.agent.plugins_user = "root".to_owned();
    let (p, _rx) = Pipeline::new("h", 16);
    let refused = PluginManager::new(&cfg, p);
    refused.sync(&plan).await;
    let r = refused
        .run(NS, "whoami", call.clone())
        .await
        .expect("known")
        .result
        .expect("ran");
    assert_eq!(r.reason, "spawn", "{r:?}");
    assert!(
        r.error
            .as_deref()
            .is_some_and(|e| e.contains("plugins_allow_root")),
        "{r:?}"
    );
    cfg.agent.plugins_allow_root = true;
    let (p, _rx) = Pipeline::new("h", 16);
    let allowed = PluginManager::new(&cfg, p);
    allowed.sync(&plan).await;
    let r = allowed
        .run(NS, "whoami", call)
        .await
        .expect("known")
        .result
        .expect("ran");
    assert_eq!((r.ok, r.stdout.as_str()), (true, "0\n"), "{r:?}");
}

#[tokio::test]
async fn a_tick_before_the_first_clone_finishes_is_not_a_failure() {
    let mut f = fixture(60);
    let repo = f.repo("late", ECHO_V1);
    let mut plan = Plan::default();
    plan.namespaces.insert(
        NS.to_owned(),
        NamespacePlan {
            plugins: vec![item(repo.url(), 30)],
            ..NamespacePlan::default()
        },
    );
    {
        // One poll records the plugin and queues its clone (this test runtime is single-threaded,
        // so the clone task has not started); dropping the sync leaves it uncloned.
        let sync = f.manager.sync(&plan);
        tokio::pin!(sync);
        assert!(futures_util::poll!(sync.as_mut()).is_pending());
    }
    assert_eq!(
        f.manager.run_scheduled(NS, "late").await,
        Scheduled::NotReady
    );
    assert!(
        f.points().is_empty(),
        "a tick with nothing to run ships no failure point"
    );
    f.manager.sync(&plan).await;
    assert!(matches!(
        f.manager.run_scheduled(NS, "late").await,
        Scheduled::Ran(r) if r.ok
    ));
}

// ---- Transports without OpenSSL: smart HTTP over reqwest, ssh through an ssh program ----

use support::githttp::GitHttpServer;
use support::gitrepo::FakeSsh;

fn remotes(f: &Fixture) -> PathBuf {
    f.dir.path().join("remotes")
}

/// The commit of `main` in a bare repository.
fn remote_head(repo: &BareRepo) -> String {
    let out = Command::new("git")
        .args(["rev-parse", "main"])
        .current_dir(&repo.bare)
        .output()
        .expect("git rev-parse");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[tokio::test]
async fn clones_and_updates_over_smart_http_and_a_failed_update_keeps_the_old_checkout() {
    let mut f = fixture(60);
    let repo = f.repo("http-plugin", ECHO_V1);
    let server = GitHttpServer::start(&remotes(&f));
    let url = format!("{}/http-plugin.git", server.url());
    f.plan(vec![item(url.clone(), 0)]).await;
    let r = f.call("http-plugin", 10, None).await;
    assert!(r.ok && r.stdout.contains(":1}"), "{r:?}");
    let seen: Vec<(String, String)> = server
        .requests()
        .into_iter()
        .map(|r| (r.method, r.path))
        .collect();
    assert!(
        seen.contains(&("GET".into(), "/http-plugin.git/info/refs".into()))
            && seen.contains(&("POST".into(), "/http-plugin.git/git-upload-pack".into())),
        "smart protocol requests: {seen:?}"
    );

    repo.push(ECHO_V2);
    let a = f.manager.update(NS, &url).await.expect("update over http");
    assert!(a.message.contains("updated from"), "{a:?}");
    let r = f.call("http-plugin", 10, None).await;
    assert!(r.ok && r.stdout.contains(":2}"), "{r:?}");

    // The repository disappears from the server: a clear 404, and the old checkout still runs.
    std::fs::rename(&repo.bare, repo.bare.with_extension("moved")).expect("hide remote");
    let e = f
        .manager
        .update(NS, "http-plugin")
        .await
        .expect_err("repository gone")
        .to_string();
    assert!(
        e.contains("HTTP 404") && e.contains("/http-plugin.git/info/refs"),
        "{e}"
    );
    assert!(e.contains("previous checkout is kept"), "{e}");
    let r = f.call("http-plugin", 10, None).await;
    assert!(r.ok && r.stdout.contains(":2}"), "{r:?}");
    f.points();
}

#[test]
fn http_credentials_in_the_address_are_sent_and_a_refusal_is_explained() {
    let dir = open_tempdir();
    let repo = BareRepo::new(&dir.path().join("remotes"), "private", ECHO_V1);
    let server = GitHttpServer::start(&dir.path().join("remotes"));
    server.require_auth("bob", "s3cr:t");
    let port = server.url().trim_start_matches("http://").to_owned();

    // Percent-encoded in the address, sent as basic auth.
    let good = format!("http://bob:s3cr%3At@{port}/private.git");
    let checkout = co(dir.path(), "ok");
    let commit = git::clone_into(&good, None, &checkout).expect("clone with auth");
    assert_eq!(commit, remote_head(&repo));
    // The checkout is readable by the plugin user: its git config keeps no password.
    let config = std::fs::read_to_string(checkout.dir().join(".git/config")).expect("config");
    assert!(!config.contains("s3cr"), "{config}");
    assert!(
        config.contains(&format!("http://bob:***@{port}/private.git")),
        "{config}"
    );
    assert!(server
        .requests()
        .iter()
        .all(|r| r.authorization.as_deref() == Some("Basic Ym9iOnMzY3I6dA==")));

    // No helper configured: the developer's own git config must not count.
    let e = git::clone_into_with(
        &format!("http://{port}/private.git"),
        None,
        &co(dir.path(), "anon"),
        &git_home(dir.path(), ""),
    )
    .expect_err("no credentials")
    .to_string();
    assert!(
        e.contains("HTTP 401") && e.contains("wants credentials"),
        "{e}"
    );
    let e = git::clone_into_with(
        &format!("http://bob:wrong@{port}/private.git"),
        None,
        &co(dir.path(), "wrong"),
        &git_home(dir.path(), ""),
    )
    .expect_err("wrong password")
    .to_string();
    assert!(e.contains("HTTP 401") && e.contains("refused"), "{e}");
    assert!(!e.contains("wrong"), "no password in messages: {e}");
    assert!(!dir.path().join("anon").exists() && !dir.path().join("wrong").exists());
}

/// Transports whose credential helpers see `gitconfig` as the user's only git configuration
/// (in `<dir>/home`), never the developer's.
fn git_home(dir: &Path, gitconfig: &str) -> git::Transports {
    let home = dir.join("home");
    std::fs::create_dir_all(&home).expect("home");
    std::fs::write(home.join(".gitconfig"), gitconfig).expect("gitconfig");
    let home = home.display().to_string();
    git::Transports {
        credential_env: vec![
            ("HOME".to_owned(), home.clone()),
            ("XDG_CONFIG_HOME".to_owned(), home),
            ("GIT_CONFIG_NOSYSTEM".to_owned(), "1".to_owned()),
        ],
        ..git::Transports::default()
    }
}

/// git's credential helpers are asked as git asks them: for this host and port (an IP address
/// too), with the repository's path when `credential.useHttpPath` is set. A credential stored
/// for another host is never sent.
#[test]
fn credential_helpers_are_asked_for_this_host_and_a_credential_for_another_is_not_sent() {
    let dir = open_tempdir();
    let repo = BareRepo::new(&dir.path().join("remotes").join("ops"), "x", ECHO_V1);
    let server = GitHttpServer::start(&dir.path().join("remotes"));
    server.require_auth("bob", "tok3n");
    let hostport = server.url().trim_start_matches("http://").to_owned();
    let url = format!("{}/ops/x.git", server.url());

    // credential-store holds a credential for another host only.
    let store = dir.path().join("store");
    std::fs::write(
        &store,
        "http://alice:OTHER_HOST_SECRET@git.internal.example
",
    )
    .expect("store");
    let t = git_home(
        dir.path(),
        &format!(
            "[credential]\n\thelper = store --file={}\n",
            store.display()
        ),
    );
    let e = git::clone_into_with(&url, None, &co(dir.path(), "a"), &t)
        .expect_err("no credential for this host")
        .to_string();
    assert!(
        e.contains("HTTP 401") && e.contains("wants credentials"),
        "{e}"
    );
    let sent: Vec<_> = server
        .requests()
        .into_iter()
        .filter_map(|r| r.authorization)
        .collect();
    assert!(sent.is_empty(), "no credential was sent: {sent:?}");

    // A helper that writes down what it is asked: host with port, and the repository's path
    // (not .../info/refs) with useHttpPath.
    let asked = dir.path().join("asked");
    let t = git_home(
        dir.path(),
        &format!(
            "[credential]\n\tuseHttpPath = true\n\thelper = \"!f() {{ cat >> '{}'; \
             echo username=bob; echo password=tok3n; }}; f\"\n",
            asked.display()
        ),
    );
    let got = git::clone_into_with(&url, None, &co(dir.path(), "b"), &t).expect("clone");
    assert_eq!(got, remote_head(&repo));
    let asked = std::fs::read_to_string(&asked).expect("the helper was asked");
    assert!(
        asked.starts_with(&format!("protocol=http\nhost={hostport}\npath=ops/x.git\n")),
        "{asked}"
    );
}

#[test]
fn a_redirected_repository_is_fetched_from_where_the_redirect_ends() {
    let dir = open_tempdir();
    let repo = BareRepo::new(&dir.path().join("remotes"), "moved", ECHO_V1);
    let server = GitHttpServer::start(&dir.path().join("remotes"));
    let url = format!("{}/moved/moved.git", server.url());
    let commit = git::clone_into(&url, None, &co(dir.path(), "c")).expect("clone via redirect");
    assert_eq!(commit, remote_head(&repo));
    let seen: Vec<(String, String)> = server
        .requests()
        .into_iter()
        .map(|r| (r.method, r.path))
        .collect();
    assert_eq!(
        seen,
        vec![
            ("GET".into(), "/moved/moved.git/info/refs".into()),
            ("GET".into(), "/moved.git/info/refs".into()),
            // git's rule: the POST goes where the GET ended up.
            ("POST".into(), "/moved.git/git-upload-pack".into()),
        ]
    );

    // A redirect loop ends after a bounded number of hops, with an error.
    let url = format!("{}/loop/moved.git", server.url());
    let e = git::clone_into(&url, None, &co(dir.path(), "d"))
        .expect_err("redirect loop")
        .to_string();
    assert!(e.contains("too many redirects"), "{e}");
    let hops = server
        .requests()
        .iter()
        .filter(|r| r.path.starts_with("/loop/"))
        .count();
    assert!((2..=21).contains(&hops), "{hops} requests");
}

#[test]
fn a_server_that_is_not_git_and_a_stalled_server_give_clear_errors() {
    let dir = open_tempdir();
    std::fs::create_dir_all(dir.path().join("remotes")).expect("remotes");
    let server = GitHttpServer::start(&dir.path().join("remotes"));
    let url = format!("{}/plain/site.git", server.url());
    let e = git::clone_into(&url, None, &co(dir.path(), "a"))
        .expect_err("not git")
        .to_string();
    assert!(
        e.contains("not a git smart HTTP server")
            && e.contains("text/html")
            && e.contains("/plain/site.git/info/refs"),
        "{e}"
    );

    let quick = git::Transports {
        stall_timeout: Duration::from_secs(1),
        ..git::Transports::default()
    };
    let url = format!("{}/stall/x.git", server.url());
    let started = std::time::Instant::now();
    let e = git::clone_into_with(&url, None, &co(dir.path(), "b"), &quick)
        .expect_err("stalled")
        .to_string();
    assert!(e.contains("timed out") && e.contains("/stall/x.git"), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "gave up in time"
    );

    // https:// goes through the same transport, with rustls: a plain-HTTP port fails the TLS
    // handshake (and is not an "unsupported URL protocol", as libgit2 without TLS would say).
    let https = server.url().replace("http://", "https://");
    let e = git::clone_into(&format!("{https}/x.git"), None, &co(dir.path(), "tls"))
        .expect_err("no TLS there")
        .to_string();
    assert!(
        e.contains(&format!("{https}/x.git/info/refs")) && !e.contains("unsupported"),
        "{e}"
    );

    // Nothing listens: the connection error names the address.
    let port = free_port();
    let e = git::clone_into(
        &format!("http://127.0.0.1:{port}/x.git"),
        None,
        &co(dir.path(), "c"),
    )
    .expect_err("refused")
    .to_string();
    assert!(e.contains(&format!("127.0.0.1:{port}")), "{e}");
}

/// The HTTP client decodes no compressed bodies, so it asks for none (and, as git, for no
/// cached ref advertisement); a server or proxy that compresses anyway gets a clear error,
/// not a protocol error from libgit2.
#[test]
fn http_requests_ask_for_no_compression_and_a_compressed_answer_is_explained() {
    let dir = open_tempdir();
    BareRepo::new(&dir.path().join("remotes"), "plain", ECHO_V1);
    let server = GitHttpServer::start(&dir.path().join("remotes"));
    git::clone_into(
        &format!("{}/plain.git", server.url()),
        None,
        &co(dir.path(), "a"),
    )
    .expect("clone");
    let requests = server.requests();
    assert!(requests.len() >= 2, "{requests:?}");
    for r in &requests {
        let h = |k: &str| r.headers.get(k).map(String::as_str);
        assert_eq!(h("accept-encoding"), Some("identity"), "{r:?}");
        if r.method == "GET" {
            assert_eq!(h("pragma"), Some("no-cache"), "{r:?}");
        }
    }

    let e = git::clone_into(
        &format!("{}/gzip/x.git", server.url()),
        None,
        &co(dir.path(), "b"),
    )
    .expect_err("compressed")
    .to_string();
    assert!(
        e.contains("Content-Encoding \"gzip\"") && e.contains("/gzip/x.git/info/refs"),
        "{e}"
    );
}

/// libgit2 calls the HTTP transport on the thread that clones: it blocks on the caller's
/// runtime inside `spawn_blocking` (both flavours), and brings its own on a plain thread.
#[test]
fn the_http_transport_works_in_spawn_blocking_on_both_runtimes_and_on_a_plain_thread() {
    let dir = open_tempdir();
    let repo = BareRepo::new(&dir.path().join("remotes"), "rt", ECHO_V1);
    let server = GitHttpServer::start(&dir.path().join("remotes"));
    let url = format!("{}/rt.git", server.url());
    let want = remote_head(&repo);
    let clone = |name: &str| {
        let (url, dest) = (url.clone(), co(dir.path(), name));
        move || git::clone_into(&url, None, &dest).expect("clone")
    };

    let current = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let got = current
        .block_on(current.spawn_blocking(clone("current")))
        .expect("join");
    assert_eq!(got, want);

    let multi = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let got = multi
        .block_on(multi.spawn_blocking(clone("multi")))
        .expect("join");
    assert_eq!(got, want);

    let got = std::thread::spawn(clone("plain")).join().expect("join");
    assert_eq!(got, want);
}

fn fake_ssh(f: &Fixture) -> (FakeSsh, git::Transports) {
    let ssh = FakeSsh::new(f.dir.path(), &remotes(f));
    let t = git::Transports {
        ssh: Some(git::SshCommand::program(&ssh.program)),
        ..git::Transports::default()
    };
    (ssh, t)
}

fn reaped(pid: u32) -> bool {
    !Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn ssh_addresses_run_upload_pack_through_ssh_with_gits_arguments() {
    let f = fixture(60);
    let repo = f.repo("over-ssh", ECHO_V1);
    let want = remote_head(&repo);
    let (ssh, t) = fake_ssh(&f);
    let abs = repo.bare.display().to_string();
    let cases = [
        (
            format!("ssh://git@git.example.test:2222{abs}"),
            vec!["-o", "BatchMode=yes", "-p", "2222", "git@git.example.test"],
            format!("git-upload-pack '{abs}'"),
        ),
        // scp-like, relative to the remote home.
        (
            "git.example.test:over-ssh.git".to_owned(),
            vec!["-o", "BatchMode=yes", "git.example.test"],
            "git-upload-pack 'over-ssh.git'".to_owned(),
        ),
        (
            format!("deploy@git.example.test:{abs}"),
            vec!["-o", "BatchMode=yes", "deploy@git.example.test"],
            format!("git-upload-pack '{abs}'"),
        ),
        // `~` is the remote home; upload-pack expands it.
        (
            "ssh://git.example.test/~/over-ssh.git".to_owned(),
            vec!["-o", "BatchMode=yes", "git.example.test"],
            "git-upload-pack '~/over-ssh.git'".to_owned(),
        ),
    ];
    for (i, (addr, opts, remote)) in cases.iter().enumerate() {
        let dest = co(f.dir.path(), &format!("c{i}"));
        let got = git::clone_into_with(addr, None, &dest, &t).expect(addr);
        assert_eq!(got, want, "{addr}");
        assert!(dest.dir().join("plugin.sh").is_file(), "{addr}");
        let runs = ssh.runs();
        assert_eq!(runs.len(), i + 1, "one ssh per clone: {runs:?}");
        let (pid, args) = &runs[i];
        let mut expected: Vec<String> = opts.iter().map(|s| (*s).to_owned()).collect();
        expected.push(remote.clone());
        assert_eq!(args, &expected, "{addr}");
        assert!(reaped(*pid), "ssh {pid} reaped after {addr}");
    }
}

#[test]
fn option_like_ssh_hosts_are_refused_and_ssh_never_runs() {
    let f = fixture(60);
    let (ssh, t) = fake_ssh(&f);
    let pwned = f.dir.path().join("pwned");
    for addr in [
        format!("ssh://-oProxyCommand=touch%20{}/x.git", pwned.display()),
        format!("ssh://-oProxyCommand=touch {}@host/x.git", pwned.display()),
        "git@-oProxyCommand=touch%20pwned:x.git".to_owned(),
    ] {
        let e = git::clone_into_with(&addr, None, &co(f.dir.path(), "c"), &t)
            .expect_err(&addr)
            .to_string();
        assert!(e.contains("starts with '-'"), "{e}");
    }
    assert!(ssh.runs().is_empty(), "ssh never started");
    assert!(!pwned.exists());
}

#[test]
fn a_failing_ssh_reports_its_exit_status_and_stderr_and_is_reaped() {
    let f = fixture(60);
    f.repo("x", ECHO_V1);
    let (ssh, t) = fake_ssh(&f);
    let e = git::clone_into_with(
        "git@unreachable.test:x.git",
        None,
        &co(f.dir.path(), "a"),
        &t,
    )
    .expect_err("connection refused")
    .to_string();
    assert!(
        e.contains("ssh git@unreachable.test failed")
            && e.contains("255")
            && e.contains("Connection refused"),
        "{e}"
    );
    let e = git::clone_into_with("ssh://newhost.test/x.git", None, &co(f.dir.path(), "b"), &t)
        .expect_err("unknown host key")
        .to_string();
    assert!(
        e.contains("Host key verification failed") && e.contains("known_hosts"),
        "{e}"
    );
    // upload-pack itself fails on the far side: its message comes through ssh's stderr.
    let e = git::clone_into_with(
        "host.test:no-such-repo.git",
        None,
        &co(f.dir.path(), "c"),
        &t,
    )
    .expect_err("no such repository")
    .to_string();
    assert!(e.contains("no-such-repo.git"), "{e}");
    let runs = ssh.runs();
    assert_eq!(runs.len(), 3, "{runs:?}");
    for (pid, _) in runs {
        assert!(reaped(pid), "ssh {pid} reaped");
    }
    // ssh that cannot be started at all.
    let missing = git::Transports {
        ssh: Some(git::SshCommand::program(f.dir.path().join("no-ssh-here"))),
        ..git::Transports::default()
    };
    let e = git::clone_into_with("host.test:x.git", None, &co(f.dir.path(), "d"), &missing)
        .expect_err("no ssh program")
        .to_string();
    assert!(e.contains("cannot run ssh program"), "{e}");
}

#[test]
fn an_update_through_ssh_moves_the_checkout_and_a_failed_one_keeps_it() {
    let f = fixture(60);
    let repo = f.repo("ssh-update", ECHO_V1);
    let (_ssh, t) = fake_ssh(&f);
    let addr = "git@git.example.test:ssh-update.git";
    let dest = co(f.dir.path(), "checkout");
    let first = git::clone_into_with(addr, None, &dest, &t).expect("clone");
    repo.push(ECHO_V2);
    let u = git::update_with(addr, None, &dest, &t).expect("update");
    assert_eq!(u.old.as_deref(), Some(first.as_str()));
    assert_eq!(u.new, remote_head(&repo));
    assert_eq!(
        std::fs::read_to_string(dest.dir().join("plugin.sh")).expect("plugin.sh"),
        ECHO_V2
    );
    std::fs::rename(&repo.bare, repo.bare.with_extension("moved")).expect("hide remote");
    git::update_with(addr, None, &dest, &t).expect_err("remote gone");
    assert_eq!(
        git::head_commit(dest.dir()).as_deref(),
        Some(u.new.as_str())
    );
}

/// OpenSSH's sshd on loopback with a throwaway host key and one authorized client key, killed
/// on drop.
struct Sshd {
    child: std::process::Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn keygen(path: &Path) {
    let ok = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .status()
        .expect("ssh-keygen (Debian: openssh-client)");
    assert!(ok.success(), "ssh-keygen");
}

fn start_sshd() -> Sshd {
    let sshd = Path::new("/usr/sbin/sshd");
    assert!(
        sshd.exists(),
        "/usr/sbin/sshd is missing: install Debian's openssh-server for this test"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    keygen(&d.join("host_key"));
    keygen(&d.join("client_key"));
    std::fs::copy(d.join("client_key.pub"), d.join("authorized_keys")).expect("authorized");
    // sshd insists on its privilege separation directory when run as root.
    if nix::unistd::geteuid().is_root() {
        std::fs::create_dir_all("/run/sshd").expect("/run/sshd");
    }
    let port = free_port();
    let config = format!(
        "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nPidFile {d}/sshd.pid\n\
         AuthorizedKeysFile {d}/authorized_keys\nStrictModes no\nUsePAM no\n\
         PasswordAuthentication no\nKbdInteractiveAuthentication no\n\
         PermitRootLogin prohibit-password\n",
        d = d.display()
    );
    std::fs::write(d.join("sshd_config"), config).expect("sshd_config");
    let child = Command::new(sshd)
        .args(["-D", "-e", "-f"])
        .arg(d.join("sshd_config"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(d.join("sshd.log")).expect("log"))
        .spawn()
        .expect("start sshd");
    let mut server = Sshd { child, port, dir };
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return server;
        }
        if let Ok(Some(status)) = server.child.try_wait() {
            panic!(
                "sshd exited ({status}): {}",
                std::fs::read_to_string(server.dir.path().join("sshd.log")).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("sshd not listening on {port}");
}

#[test]
fn clones_and_updates_through_a_real_sshd_and_an_unknown_host_key_is_explained() {
    let f = fixture(60);
    let repo = f.repo("real-ssh", ECHO_V1);
    let sshd = start_sshd();
    let d = sshd.dir.path();
    let host_key = std::fs::read_to_string(d.join("host_key.pub")).expect("host key");
    let known = d.join("known_hosts");
    std::fs::write(&known, format!("[127.0.0.1]:{} {host_key}", sshd.port)).expect("known");
    let user = nix::unistd::User::from_uid(nix::unistd::geteuid())
        .expect("user")
        .expect("user exists")
        .name;
    // The operator's setup, as it would be written in GIT_SSH_COMMAND.
    let ssh = |known_hosts: &Path| git::Transports {
        ssh: Some(git::SshCommand::shell(&format!(
            "ssh -F /dev/null -i {}/client_key -o IdentitiesOnly=yes \
             -o UserKnownHostsFile={} -o StrictHostKeyChecking=yes",
            d.display(),
            known_hosts.display()
        ))),
        ..git::Transports::default()
    };
    let addr = format!(
        "ssh://{user}@127.0.0.1:{}{}",
        sshd.port,
        repo.bare.display()
    );
    let dest = co(f.dir.path(), "checkout");
    let first = git::clone_into_with(&addr, None, &dest, &ssh(&known)).expect("clone over ssh");
    assert_eq!(first, remote_head(&repo));
    repo.push(ECHO_V2);
    let u = git::update_with(&addr, None, &dest, &ssh(&known)).expect("update over ssh");
    assert_eq!(u.new, remote_head(&repo));
    assert_ne!(u.new, first);

    let unknown = d.join("empty_known_hosts");
    std::fs::write(&unknown, "").expect("empty");
    let e = git::clone_into_with(&addr, None, &co(f.dir.path(), "x"), &ssh(&unknown))
        .expect_err("unknown host key")
        .to_string();
    assert!(
        e.contains("Host key verification failed") && e.contains("known_hosts"),
        "{e}"
    );
}

/// An executable shell script `<dir>/bin/<name>`.
fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).expect("bin dir");
    let path = bin.join(name);
    std::fs::write(&path, body).expect("write script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

/// The remote decides what ssh prints on stderr, NUL bytes and terminal escapes included. git2
/// turns a transport's error into a C string with `unwrap()` where a panic aborts the process:
/// the clone must fail with the message, escaped, and the agent live on.
#[test]
fn a_nul_byte_in_sshs_stderr_fails_the_clone_with_an_escaped_message() {
    let dir = open_tempdir();
    let ssh = script(
        dir.path(),
        "ssh",
        "#!/bin/sh\nprintf 'bad\\000news \\033[2J\\n' >&2\nexit 1\n",
    );
    let t = git::Transports {
        ssh: Some(git::SshCommand::program(&ssh)),
        ..git::Transports::default()
    };
    let e = git::clone_into_with("h:x.git", None, &co(dir.path(), "c"), &t)
        .expect_err("ssh failed")
        .to_string();
    assert!(e.contains("bad\\u{0}news \\u{1b}[2J"), "{e}");
    assert!(!e.contains('\0') && !e.contains('\x1b'), "{e:?}");
}

/// Whether `pid` is a live process (a zombie waiting for its reaper is not).
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().next())
            != Some("Z")
    })
}

fn pid_in(file: &Path) -> i32 {
    std::fs::read_to_string(file)
        .expect("pid file")
        .trim()
        .parse()
        .expect("pid")
}

/// ssh runs in a process group of its own: a stalled one is stopped together with what it
/// started (here a `sleep`, as a wrapper's or a ProxyCommand's child would be), and the error
/// says how it ended and what it said on stderr.
#[test]
fn a_stalled_ssh_is_stopped_with_what_it_started_and_the_error_shows_its_stderr() {
    let dir = open_tempdir();
    let sleeper = dir.path().join("sleeper.pid");
    let ssh = script(
        dir.path(),
        "ssh",
        &format!(
            "#!/bin/sh\necho 'debug1: via the jump host' >&2\nsleep 30 &\necho $! > '{}'\nwait\n",
            sleeper.display()
        ),
    );
    let t = git::Transports {
        ssh: Some(git::SshCommand::program(&ssh)),
        stall_timeout: Duration::from_secs(1),
        ..git::Transports::default()
    };
    let started = std::time::Instant::now();
    let e = git::clone_into_with("h:x.git", None, &co(dir.path(), "c"), &t)
        .expect_err("stalled")
        .to_string();
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "gave up in time"
    );
    assert!(
        e.contains("ssh h sent no data for 1 s and was stopped")
            && e.contains("SIGTERM")
            && e.contains("debug1: via the jump host"),
        "{e}"
    );
    assert!(!alive(pid_in(&sleeper)), "ssh's child was stopped with it");
}

/// After a fetch, ssh gets its stdin closed and a moment to exit by itself (no kill in the
/// middle of its goodbye to the server); what it leaves running in its group is then ended.
#[test]
fn ssh_exits_by_itself_after_a_fetch_and_what_its_wrapper_left_running_is_ended() {
    let f = fixture(60);
    let repo = f.repo("wrapped", ECHO_V1);
    let (ssh, _) = fake_ssh(&f);
    let log = f.dir.path().join("wrapper.log");
    let sleeper = f.dir.path().join("sleeper.pid");
    // A GIT_SSH_COMMAND wrapper: starts a helper in the background, runs ssh, then takes its
    // time to finish.
    let wrapper = format!(
        "w() {{ sleep 30 & echo $! > '{pid}'; '{ssh}' \"$@\"; rc=$?; sleep 0.3; \
         echo clean-exit-$rc >> '{log}'; exit $rc; }}; w",
        pid = sleeper.display(),
        ssh = ssh.program.display(),
        log = log.display(),
    );
    let t = git::Transports {
        ssh: Some(git::SshCommand::shell(&wrapper)),
        ..git::Transports::default()
    };
    let got = git::clone_into_with("h:wrapped.git", None, &co(f.dir.path(), "c"), &t)
        .expect("clone through the wrapper");
    assert_eq!(got, remote_head(&repo));
    assert_eq!(
        std::fs::read_to_string(&log).unwrap_or_default(),
        "clean-exit-0\n",
        "the wrapper finished by itself"
    );
    assert!(!alive(pid_in(&sleeper)), "its background child was ended");
}

/// libgit2 hands every address with a ':' it has no transport for to the ssh transport:
/// `ftp://files.example/x.git` would have run `ssh ftp "git-upload-pack '//files.example/x.git'"`.
/// Such addresses are refused, saying what is supported, and ssh never runs.
#[test]
fn addresses_of_other_kinds_are_refused_saying_what_is_supported_and_ssh_never_runs() {
    let f = fixture(60);
    let (ssh, t) = fake_ssh(&f);
    for (addr, why) in [
        ("ftp://files.example/x.git", "'ftp://' is not supported"),
        ("svn+ssh://h/x", "'svn+ssh://' is not supported"),
        ("http:/h/x.git", "a '/' is missing after 'http:'"),
        ("/srv/a:b/x.git", "write it file://"),
    ] {
        let e = git::clone_into_with(addr, None, &co(f.dir.path(), "c"), &t)
            .expect_err(addr)
            .to_string();
        assert!(e.contains("refused") && e.contains(why), "{addr}: {e}");
        if why.contains("not supported") {
            assert!(
                e.contains("use https://, http://, ssh://, git://, file://, scp-like"),
                "{e}"
            );
        }
    }
    assert!(ssh.runs().is_empty(), "ssh never started: {:?}", ssh.runs());
    for good in [
        "HTTPS://h/x.git",
        "ssh://h:/x.git",
        "git+ssh://h/x.git",
        "h:x://y.git",
    ] {
        git::check_address(good).expect(good);
    }
}

/// `git://` goes through libgit2's own sockets, which wait forever unless given a timeout: a
/// server that accepts and never answers fails the clone after the stall timeout. (That
/// timeout is process-wide in libgit2, so this test waits the real one.)
#[test]
fn a_git_protocol_server_that_never_answers_fails_the_clone_after_the_stall_timeout() {
    let dir = open_tempdir();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    // Accepts, keeps every connection open, says nothing.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming() {
            held.push(conn);
        }
    });
    let dest = co(dir.path(), "c");
    let (tx, rx) = std::sync::mpsc::channel();
    let started = std::time::Instant::now();
    std::thread::spawn(move || {
        let _ = tx.send(git::clone_into(
            &format!("git://127.0.0.1:{port}/x.git"),
            None,
            &dest,
        ));
    });
    let bound = git::STALL_TIMEOUT + Duration::from_secs(30);
    let result = rx.recv_timeout(bound).unwrap_or_else(|_| {
        panic!("the clone from a silent git:// server was still waiting after {bound:?}")
    });
    let e = result.expect_err("nothing was served").to_string();
    assert!(e.contains("timed out"), "{e}");
    // It was that timeout, not another one.
    let waited = started.elapsed();
    assert!(
        waited + Duration::from_secs(1) >= git::STALL_TIMEOUT,
        "{waited:?}"
    );
}

/// Everything under `root` but `skip`: relative path -> (inode, kind, size).
fn tree_outside(root: &Path, skip: &Path) -> BTreeMap<PathBuf, (u64, char, u64)> {
    use std::os::unix::fs::MetadataExt;
    let mut out = BTreeMap::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("read_dir") {
            let path = entry.expect("entry").path();
            if path == skip {
                continue;
            }
            let meta = std::fs::symlink_metadata(&path).expect("lstat");
            let kind = match meta.file_type() {
                t if t.is_symlink() => 'l',
                t if t.is_dir() => 'd',
                _ => 'f',
            };
            out.insert(
                path.strip_prefix(root).expect("under").to_path_buf(),
                (meta.ino(), kind, meta.len()),
            );
            if kind == 'd' {
                pending.push(path);
            }
        }
    }
    out
}

/// A registry fuzz of names: namespaces, repository addresses (whose last part is the project
/// name) and branches, drawn from a corpus of path tricks (`.`, `..`, `...`, `a/..`, `/abs`,
/// `%2e%2e`, `-x`, unicode, NUL, long names) and from random strings of the characters paths
/// are made of. Every address whose name can be a file name points at a real repository (a
/// symlink to one), so clones and updates really happen; folders named like the likely targets
/// wait beside the plugin root, and symlinks planted in the root lead out. Through the real code
/// path (registry validation, the manager's clones at sync, `/plugins/update`'s replacements),
/// and again with the unvalidated plan, nothing outside the plugin root is created, renamed or
/// deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_fuzz_of_names_touches_nothing_outside_the_plugin_root() {
    use rand::{Rng, SeedableRng};
    let top = open_tempdir();
    let remotes = top.path().join("remotes");
    let good = BareRepo::new(&remotes, "good", ECHO_V1);
    let plugins = top.path().join("data").join("plugins");
    std::fs::create_dir_all(&plugins).expect("plugins");
    // What `..` and `../..` would name.
    for dir in [top.path().join("data"), top.path().to_path_buf()] {
        for name in ["good", "x", "log", "spool", "a..b", "-x", "plugins2"] {
            let d = dir.join(name);
            std::fs::create_dir_all(&d).expect("mkdir");
            std::fs::write(d.join("keep"), name).expect("write");
        }
    }
    let outside = top.path().join("outside");
    std::fs::create_dir_all(&outside).expect("mkdir");
    std::fs::write(outside.join("keep"), "x").expect("write");
    std::os::unix::fs::symlink(&outside, plugins.join("evil")).expect("ln");
    std::fs::create_dir_all(plugins.join("okns")).expect("mkdir");
    std::os::unix::fs::symlink(&outside, plugins.join("okns").join("good")).expect("ln");

    let corpus = [
        ".", "..", "...", "", "a/..", "../x", "/abs", "%2e%2e", "-x", "é", "a\0b", "a b", "..a",
        "a..", ".hidden", "a..b", "x", "good", "log", "evil", "okns", "a\\b", "\n", "~", "@{1}",
        "a.lock",
    ];
    let long = "y".repeat(300);
    let alphabet = [
        '.', '.', '/', '\\', '\0', 'a', 'b', '-', '_', '%', 'é', ' ', 'x',
    ];
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed_0011);
    let name = |rng: &mut rand::rngs::StdRng| -> String {
        match rng.random_range(0..4) {
            0 => corpus[rng.random_range(0..corpus.len())].to_owned(),
            1 if rng.random_range(0..20) == 0 => long.clone(),
            _ => (0..rng.random_range(0..7))
                .map(|_| alphabet[rng.random_range(0..alphabet.len())])
                .collect(),
        }
    };
    let mut plan = Plan::default();
    let mut pairs = Vec::new();
    // Half the draws aim at what is known to be there: the folders beside the root, the
    // planted symlinks, the namespace folders.
    let targets = [
        "good", "x", "log", "spool", "a..b", "-x", "plugins2", "okns",
    ];
    let aimed = ["..", ".", "...", "evil", "okns", "", "x"];
    let mut hits = 0;
    for _ in 0..300 {
        let ns = if rng.random_range(0..2) == 0 {
            aimed[rng.random_range(0..aimed.len())].to_owned()
        } else {
            name(&mut rng)
        };
        let project = if rng.random_range(0..2) == 0 {
            targets[rng.random_range(0..targets.len())].to_owned()
        } else {
            name(&mut rng)
        };
        if ["..", ".", "evil", "okns"].contains(&ns.as_str()) && targets.contains(&project.as_str())
        {
            hits += 1;
        }
        let git = match rng.random_range(0..3) {
            0 => format!("file://{}/{project}.git", remotes.display()),
            1 => format!("{}/{project}", remotes.display()),
            _ => format!("file://{}/{project}", remotes.display()),
        };
        // A real repository where the name can be a file name.
        for link in [format!("{project}.git"), project.clone()] {
            let at = remotes.join(&link);
            let plain = !link.is_empty()
                && !link.contains(['/', '\0'])
                && link != "."
                && link != ".."
                && link.len() < 250;
            if plain && std::fs::symlink_metadata(&at).is_err() {
                std::os::unix::fs::symlink(&good.bare, &at).expect("ln repo");
            }
        }
        let branch = match rng.random_range(0..4) {
            0 => Some("main".to_owned()),
            1 => Some(name(&mut rng)),
            _ => None,
        };
        pairs.push((ns.clone(), git.clone()));
        plan.namespaces
            .entry(ns)
            .or_default()
            .plugins
            .push(PluginItem {
                git,
                interval: 0,
                parameters: String::new(),
                branch,
            });
    }
    assert!(hits >= 20, "the draw aimed at too few targets: {hits}");
    let before = tree_outside(top.path(), &plugins);

    let (pipeline, _rx) = Pipeline::new("testhost", 4096);
    let manager = PluginManager::new(&config(top.path(), 60), pipeline);
    let checked = crate::registry::validate(plan.clone(), "{ns}");
    for p in [checked.plan, plan] {
        manager.sync(&p).await;
        for (ns, git) in &pairs {
            let _ = manager.update(ns, git).await;
        }
        for info in manager.list().plugins {
            let _ = manager.update(&info.ns, &info.repo).await;
        }
        let after = tree_outside(top.path(), &plugins);
        let changed: Vec<_> = before
            .iter()
            .filter(|(p, v)| after.get(*p) != Some(v))
            .map(|(p, _)| p)
            .chain(after.keys().filter(|p| !before.contains_key(*p)))
            .collect();
        assert!(
            changed.is_empty(),
            "changed outside the plugin root: {changed:?}"
        );
    }
    // The fuzz did reach git: some plugins were cloned inside the root.
    let cloned = manager
        .list()
        .plugins
        .iter()
        .filter(|p| p.commit.is_some())
        .count();
    assert!(cloned >= 5, "only {cloned} clones: {:?}", manager.list());
}

#[test]
fn malformed_output_is_quoted_at_its_start_and_around_the_error() {
    // Early error: the start shows it; no second quote.
    let e = parse_metrics(b"[{\"name\": x}]").expect_err("malformed");
    assert_eq!(
        e,
        "stdout is not a JSON list of metrics (expected value at line 1 column 11); it starts with: \"[{\\\"name\\\": x}]\""
    );
    // Late error, on a later line: the text around it, the offending character after `<here>`.
    let mut body = String::from("[\n");
    for i in 0..20 {
        body.push_str(&format!("{{\"name\": \"m{i}\", \"value\": {i}}},\n"));
    }
    body.push_str("{\"name\": \"last\", \"value\": tru}\n]");
    let e = parse_metrics(body.as_bytes()).expect_err("malformed");
    assert!(e.contains("(expected ident at line 22 column 30)"), "{e}");
    assert!(
        e.ends_with(
            "; at line 22 column 30: \"lue\\\": 19},\\n{\\\"name\\\": \\\"last\\\", \\\"value\\\": tru<here>}\\n]\""
        ),
        "{e}"
    );
    // Multi-byte text before the position does not break the cut.
    let wide = format!("[{{\"name\": \"{}\", \"value\": x}}]", "é".repeat(300));
    let e = parse_metrics(wide.as_bytes()).expect_err("malformed");
    assert!(e.ends_with("\", \\\"value\\\": <here>x}]\""), "{e}");
}

#[test]
fn stderr_tail_keeps_the_last_lines_within_the_byte_bound() {
    assert_eq!(stderr_tail("a\nb\nc\n\n", 2, 100), "b\nc");
    assert_eq!(stderr_tail("only", 5, 100), "only");
    assert_eq!(stderr_tail("", 5, 100), "");
    assert_eq!(stderr_tail("abcdef", 5, 3), "def");
    // Never cuts inside a character.
    assert_eq!(stderr_tail("ééé", 5, 3), "é");
    let r = RunResult {
        reason: "exit".to_owned(),
        error: Some("exited with 3".to_owned()),
        stderr: "noise\nboom\n".to_owned(),
        ..RunResult::default()
    };
    assert_eq!(
        describe_failure(&r),
        "exit: exited with 3; stderr ends with: \"noise\\nboom\""
    );
}
