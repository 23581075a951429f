//! Plugin checkouts through the real agent: registry names that are not folder names touch
//! nothing, a folder the agent did not make is never replaced, and a checkout is readable by the
//! plugin user only, whatever the source repository's modes.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use support::gitrepo::{git, BareRepo};
use support::{wait_until, Agent, AgentBuilder};

/// What a tree holds: relative path -> (inode, kind). The contents of folders the agent
/// rewrites as it works (`skip`) are left out, the folders themselves kept.
fn snapshot(root: &Path, skip: &[&Path]) -> BTreeMap<PathBuf, (u64, char)> {
    let mut out = BTreeMap::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("read_dir") {
            let path = entry.expect("entry").path();
            let meta = std::fs::symlink_metadata(&path).expect("lstat");
            let kind = if meta.file_type().is_symlink() {
                'l'
            } else if meta.is_dir() {
                'd'
            } else {
                'f'
            };
            let rel = path.strip_prefix(root).expect("under root").to_path_buf();
            out.insert(rel, (meta.ino(), kind));
            if kind == 'd' && !skip.iter().any(|s| *s == path) {
                pending.push(path);
            }
        }
    }
    out
}

fn problems(agent: &Agent) -> String {
    agent.status()["registry"]["problems"].to_string()
}

fn commit_of(agent: &Agent, ns: &str, project: &str) -> Option<String> {
    let (_, list) = agent.get("/plugins/list");
    list["plugins"].as_array().and_then(|l| {
        l.iter()
            .find(|p| p["ns"] == ns && p["project"] == project)
            .and_then(|p| p["commit"].as_str().map(str::to_owned))
    })
}

/// Namespaces `.` and `..` and a project `...` in the registry: each is refused with a message
/// saying why, and neither the start, nor `/plugins/update`, nor `/update` creates, renames or
/// deletes anything: not the data dir's `log/` and `spool/` (which `..` under `data/checkouts`
/// names), not a sibling folder of the custom `plugins_dir`, not another namespace's folder
/// (which `.` names).
#[test]
fn registry_names_that_are_not_folder_names_touch_nothing() {
    let remotes = tempfile::tempdir().expect("tmp");
    let good = BareRepo::new(remotes.path(), "p", "echo good\n");
    let names = ["log", "spool", "sibling", "web"];
    let bad: Vec<BareRepo> = names
        .iter()
        .map(|n| BareRepo::new(remotes.path(), n, "echo bad\n"))
        .collect();
    let dots = BareRepo::new(remotes.path(), "...", "echo dots\n");

    let dir = tempfile::tempdir().expect("tmp");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let data = dir.path().join("data");
    let sibling = data.join("sibling");
    std::fs::create_dir_all(sibling.join("sub")).expect("mkdir");
    std::fs::write(sibling.join("keep.txt"), "mine\n").expect("write");
    std::fs::write(sibling.join("sub/x"), "mine too\n").expect("write");
    let before_start = snapshot(dir.path(), &[]);

    let item = |r: &BareRepo| format!("{{ git = \"{}\", interval = 0 }}", r.url());
    let registry = format!(
        "[[namespace]]\nname = \"web\"\nplugins = [{}]\n\
         [[namespace]]\nname = \"..\"\nplugins = [{}, {}, {}]\n\
         [[namespace]]\nname = \".\"\nplugins = [{}]\n\
         [[namespace]]\nname = \"edge\"\nplugins = [{}]\n",
        item(&good),
        item(&bad[0]),
        item(&bad[1]),
        item(&bad[2]),
        item(&bad[3]),
        item(&dots),
    );
    let agent = AgentBuilder::new()
        .agent_keys("plugins_dir = \"data/checkouts\"")
        .registry(&registry)
        .start_in(dir);
    let cloned = wait_until(Duration::from_secs(30), || {
        commit_of(&agent, "web", "p").is_some()
    });
    assert!(
        cloned,
        "{}\n{}",
        agent.get("/plugins/list").1,
        agent.stderr()
    );

    let root = agent.dir.path().to_path_buf();
    let skip = [data.join("log"), data.join("out"), data.join("spool")];
    let skip: Vec<&Path> = skip.iter().map(PathBuf::as_path).collect();
    // The files directly in the data dir (cache, state, pid) are rewritten by rename.
    let settled = |s: BTreeMap<PathBuf, (u64, char)>| -> BTreeMap<PathBuf, (u64, char)> {
        s.into_iter()
            .filter(|(p, (_, kind))| !(p.parent() == Some(Path::new("data")) && *kind == 'f'))
            .collect()
    };
    let started = settled(snapshot(&root, &skip));
    // What was there before the agent started is still there, the same files.
    for (path, was) in &before_start {
        assert_eq!(started.get(path), Some(was), "{path:?} changed at start");
    }
    // The plugin root holds the one good checkout and nothing else: no `web` clone where the
    // namespace folder `web` is, nothing beside the namespaces.
    let tree: Vec<String> = std::fs::read_dir(data.join("checkouts"))
        .expect("plugins_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(tree, ["web"], "{tree:?}");
    assert!(!data.join("checkouts/web/.git").exists());
    assert!(data.join("checkouts/web/p/plugin.sh").is_file());

    for (ns, repo) in [
        ("..", "log"),
        ("..", "spool"),
        ("..", "sibling"),
        (".", "web"),
        ("edge", "..."),
    ] {
        let (code, body) = agent.get(&format!("/plugins/update?ns={ns}&repo={repo}"));
        assert!((400..500).contains(&code), "{ns}/{repo}: {code} {body}");
    }
    let (code, body) = agent.get("/update");
    assert_eq!(code, 200, "{body}");
    let after = settled(snapshot(&root, &skip));
    assert_eq!(started, after, "the tree changed");
    assert_eq!(
        std::fs::read_to_string(sibling.join("keep.txt")).expect("kept"),
        "mine\n"
    );
    // Each refused name is reported, saying why.
    let problems = problems(&agent);
    for expected in [
        r#"namespace \"..\" is refused: a name made only of dots"#,
        r#"namespace \".\" is refused: a name made only of dots"#,
        r#"project name \"...\" is refused: a name made only of dots"#,
        "outside the plugin root",
    ] {
        assert!(problems.contains(expected), "{expected} not in {problems}");
    }

    // The good plugin still runs.
    let (code, body) = agent.get("/plugins/run?ns=web&repo=p");
    assert_eq!(
        (code, &body["result"]["stdout"]),
        (200, &serde_json::json!("good\n")),
        "{body}"
    );
}

/// A folder in the place of a checkout that the agent did not make (no mark) is never replaced:
/// the plugin shows why, and `/plugins/update` refuses with 409 and leaves every file. A
/// checkout an earlier version made (a clone of the same origin, no mark) is adopted.
#[test]
fn an_unmarked_folder_in_the_place_of_a_checkout_is_not_deleted_by_update() {
    let remotes = tempfile::tempdir().expect("tmp");
    let mine = BareRepo::new(remotes.path(), "mine", "echo mine\n");
    let old = BareRepo::new(remotes.path(), "old", "echo old\n");
    let other = BareRepo::new(remotes.path(), "other", "echo other\n");
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let ns_dir = dir.path().join("data/plugins/ns");
    // An operator's folder, and a clone of another repository, where checkouts would go.
    std::fs::create_dir_all(ns_dir.join("mine")).expect("mkdir");
    std::fs::write(ns_dir.join("mine/precious.txt"), "keep me\n").expect("write");
    git(&ns_dir, &["clone", "-q", &mine.url(), "other"]);
    // What an earlier version left: a clone of the plugin's own address.
    git(&ns_dir, &["clone", "-q", &old.url(), "old"]);
    let item = |addr: &str| format!("{{ git = \"{addr}\", interval = 0 }}");
    let registry = format!(
        "[[namespace]]\nname = \"ns\"\nplugins = [{}, {}, {}]\n",
        item(&mine.url()),
        item(&old.url()),
        item(&other.url())
    );
    let precious = std::fs::metadata(ns_dir.join("mine/precious.txt")).expect("stat");
    let agent = AgentBuilder::new().registry(&registry).start_in(dir);

    let problem = |project: &str| {
        let (_, list) = agent.get("/plugins/list");
        list["plugins"]
            .as_array()
            .and_then(|l| l.iter().find(|p| p["project"] == project).cloned())
            .map(|p| p["problem"].as_str().unwrap_or_default().to_owned())
            .unwrap_or_default()
    };
    let seen = wait_until(Duration::from_secs(30), || {
        !problem("mine").is_empty() && commit_of(&agent, "ns", "old").is_some()
    });
    assert!(seen, "{}\n{}", agent.get("/plugins/list").1, agent.stderr());

    let mut answers = Vec::new();
    for project in ["mine", "other"] {
        answers.push(agent.get(&format!("/plugins/update?ns=ns&repo={project}")));
    }
    let kept = std::fs::metadata(ns_dir.join("mine/precious.txt"));
    assert_eq!(
        kept.map(|m| m.ino()).ok(),
        Some(precious.ino()),
        "the operator's folder was replaced: {answers:?}"
    );
    assert_eq!(
        std::fs::read_to_string(ns_dir.join("mine/precious.txt")).expect("read"),
        "keep me\n"
    );
    let origin = Command::new("git")
        .args(["-C", ns_dir.join("other").to_str().expect("utf8")])
        .args(["remote", "get-url", "origin"])
        .output()
        .expect("git");
    assert_eq!(String::from_utf8_lossy(&origin.stdout).trim(), mine.url());
    for ((code, body), project) in answers.iter().zip(["mine", "other"]) {
        assert_eq!(*code, 409, "{project}: {body}");
        assert!(
            body["error"].as_str().is_some_and(|e| {
                e.contains("was not made by the agent") && e.contains("left as it is")
            }),
            "{body}"
        );
    }
    assert!(problem("mine").contains("no mark"), "{}", problem("mine"));
    assert!(
        problem("other").contains("not the plugin's repository"),
        "{}",
        problem("other")
    );

    // The adopted checkout is marked now and updates like one the agent made.
    assert!(ns_dir.join("old/.git/agent-checkout").is_file());
    old.push("echo old v2\n");
    let (code, body) = agent.get("/plugins/update?ns=ns&repo=old");
    assert_eq!(code, 200, "{body}");
    let (_, body) = agent.get("/plugins/run?ns=ns&repo=old");
    assert_eq!(body["result"]["stdout"], "old v2\n", "{body}");

    // Once the operator moves the folder away, the agent clones there.
    std::fs::rename(ns_dir.join("mine"), agent.dir.path().join("moved")).expect("mv");
    let (code, body) = agent.get("/plugins/update?ns=ns&repo=mine");
    assert_eq!(code, 200, "{body}");
    assert!(ns_dir.join("mine/.git/agent-checkout").is_file());
}

/// `id -u` / `id -g` of a user.
fn id_of(user: &str, flag: &str) -> u32 {
    let out = Command::new("id").args([flag, user]).output().expect("id");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("numeric id")
}

/// Runs `args` as uid:gid (no supplementary groups); whether it succeeded.
fn as_user(uid: u32, gid: u32, args: &[&str]) -> bool {
    Command::new("setpriv")
        .arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"))
        .arg("--clear-groups")
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("setpriv")
        .success()
}

/// A repository only root can read (`chmod -R go-rwx`) is checked out root-owned with the
/// plugin user's group, folders 0750 and files 0640 (0750 where git has them executable), the
/// plugin folders too: a third user cannot read a byte of it, the plugin user cannot write it,
/// and the plugin user runs `plugin.sh`.
#[test]
fn a_root_only_repository_is_readable_by_the_plugin_user_only() {
    assert!(
        nix_is_root(),
        "this test needs root (the e2e tests run as root)"
    );
    let remotes = tempfile::tempdir().expect("tmp");
    let repo = BareRepo::new(remotes.path(), "secret", "echo \"ran as $(id -un)\"\n");
    std::fs::create_dir_all(repo.work.join("bin")).expect("mkdir");
    std::fs::write(repo.work.join("bin/tool"), "#!/bin/sh\necho tool\n").expect("write");
    std::fs::set_permissions(
        repo.work.join("bin/tool"),
        std::fs::Permissions::from_mode(0o755),
    )
    .expect("chmod");
    std::fs::write(repo.work.join("token.txt"), "s3cret\n").expect("write");
    git(&repo.work, &["add", "bin/tool", "token.txt"]);
    git(&repo.work, &["commit", "-q", "-m", "more"]);
    git(&repo.work, &["push", "-q", "origin", "HEAD:main"]);
    let chmod = Command::new("chmod")
        .args(["-R", "go-rwx"])
        .arg(remotes.path())
        .status()
        .expect("chmod");
    assert!(chmod.success());

    let agent = AgentBuilder::new()
        .registry(&format!(
            "[[namespace]]\nname = \"sec\"\nplugins = [{{ git = \"{}\", interval = 0 }}]\n",
            repo.url()
        ))
        .start();
    // The harness's folder and the data dir are open, so only the checkout's own modes count.
    for d in [agent.dir.path().to_path_buf(), agent.data_dir()] {
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let cloned = wait_until(Duration::from_secs(30), || {
        commit_of(&agent, "sec", "secret").is_some()
    });
    assert!(
        cloned,
        "{}\n{}",
        agent.get("/plugins/list").1,
        agent.stderr()
    );

    let (nobody_uid, nobody_gid) = (id_of("nobody", "-u"), id_of("nobody", "-g"));
    let plugins = agent.data_dir().join("plugins");
    let checkout = plugins.join("sec/secret");
    let mut seen = 0;
    let mut pending = vec![plugins.clone(), plugins.join("sec")];
    let mut tree = vec![checkout.clone()];
    while let Some(p) = tree.pop() {
        pending.push(p.clone());
        if std::fs::symlink_metadata(&p).expect("lstat").is_dir() {
            for e in std::fs::read_dir(&p).expect("read_dir") {
                tree.push(e.expect("entry").path());
            }
        }
    }
    for p in &pending {
        let meta = std::fs::symlink_metadata(p).expect("lstat");
        if meta.file_type().is_symlink() {
            continue;
        }
        seen += 1;
        let mode = meta.mode() & 0o7777;
        assert_eq!((meta.uid(), meta.gid()), (0, nobody_gid), "{p:?}");
        // Folders, and files git has as executable (`bin/tool`, `.git/hooks/*.sample`).
        let executable = meta.is_dir() || p.ends_with("bin/tool") || meta.mode() & 0o100 != 0;
        let expected = if executable { 0o750 } else { 0o640 };
        assert_eq!(mode, expected, "{p:?}: {mode:o}");
    }
    assert!(seen > 20, "{seen} entries checked");
    let tool = std::fs::metadata(checkout.join("bin/tool")).expect("tool");
    assert_eq!(tool.mode() & 0o777, 0o750);
    assert_eq!(
        std::fs::metadata(checkout.join("plugin.sh"))
            .expect("plugin.sh")
            .mode()
            & 0o777,
        0o640
    );

    // A third user (neither root nor the plugin user) reads nothing of it.
    let (third_uid, third_gid) = (4242, 4242);
    for file in ["plugin.sh", "token.txt", ".git/config", "bin/tool"] {
        let path = checkout.join(file);
        let path = path.to_str().expect("utf8");
        assert!(
            !as_user(third_uid, third_gid, &["cat", path]),
            "{file} readable"
        );
    }
    let listing = checkout.to_str().expect("utf8");
    assert!(!as_user(third_uid, third_gid, &["ls", listing]));
    // The plugin user reads it but cannot write it, nor the plugin folders.
    let token = checkout.join("token.txt");
    assert!(as_user(
        nobody_uid,
        nobody_gid,
        &["cat", token.to_str().expect("utf8")]
    ));
    for d in [plugins.clone(), plugins.join("sec"), checkout.clone()] {
        let probe = d.join("probe");
        assert!(
            !as_user(
                nobody_uid,
                nobody_gid,
                &["touch", probe.to_str().expect("utf8")]
            ),
            "{d:?} writable by the plugin user"
        );
    }
    // And the plugin user runs the plugin.
    let (code, body) = agent.get("/plugins/run?ns=sec&repo=secret");
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["result"]["stdout"], "ran as nobody\n", "{body}");
}

fn nix_is_root() -> bool {
    let out = Command::new("id").arg("-u").output().expect("id");
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}
