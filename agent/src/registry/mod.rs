//! The registry: which namespaces this host belongs to and what to collect for each.
//!
//! Sources ([`Source`]: a file or a lodastack registry server) produce one desired [`Plan`];
//! [`validate`] keeps its usable part and lists the rest as problems; the [`service`] refreshes it
//! on a clock and on `/update`, caches the last good one, and hands it to the scheduler.

pub mod cache;
pub mod file;
pub mod http;
pub mod report;
pub mod service;
pub mod spread;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::collect::system::Family;
use crate::config::{Config, RegistrySource};
use crate::plugins::git::redact_address;

/// Why a registry refresh produced nothing usable; the previous plan stays in force.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// The registry file could not be read or parsed.
    #[error("{0}")]
    File(String),
    /// The registry server could not be reached or did not answer in time.
    #[error("registry {url}: {reason}")]
    Unreachable {
        /// The URL called.
        url: String,
        /// The transport error.
        reason: String,
    },
    /// The registry server answered something that is not the protocol.
    #[error("registry {url}: {reason}")]
    BadAnswer {
        /// The URL called.
        url: String,
        /// What was wrong with the answer.
        reason: String,
    },
}

/// A source's answer: the plan as the source describes it, and the entries it could not read.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Fetched {
    /// The plan, before [`validate`].
    pub plan: Plan,
    /// One line per entry the source skipped while reading.
    pub problems: Vec<String>,
    /// Namespaces the source named but could not describe (their own call failed), with the
    /// reason. They keep what they ran before: see [`Fetched::keep_unavailable`].
    pub unavailable: BTreeMap<String, String>,
    /// The HTTP registry's namespaces for this host with the host's resource id in each (empty
    /// for a file).
    pub registered: BTreeMap<String, String>,
}

impl Fetched {
    /// Puts each unavailable namespace's items from `in_force` into `checked` (the validated
    /// answer), so one namespace whose call fails neither stops nor blocks the others, and
    /// reports each in `problems`.
    pub fn keep_unavailable(
        unavailable: &BTreeMap<String, String>,
        in_force: &Plan,
        checked: &mut Checked,
    ) {
        for (ns, reason) in unavailable {
            match in_force.namespaces.get(ns) {
                Some(items) => {
                    checked.plan.namespaces.insert(ns.clone(), items.clone());
                    checked.problems.push(format!(
                        "namespace {ns:?}: not refreshed, its items in force keep running: {reason}"
                    ));
                }
                None => checked.problems.push(format!(
                    "namespace {ns:?}: not started until the registry describes it: {reason}"
                )),
            }
        }
    }
}

/// Where the plan comes from: one interface over the file and the lodastack protocol.
pub enum Source {
    /// A TOML or JSON file, re-read on every refresh.
    File(PathBuf),
    /// A lodastack registry server.
    Http(http::HttpSource),
}

impl Source {
    /// The source the configuration names; `hostname` identifies this host to an HTTP registry.
    pub fn from_config(config: &Config, hostname: &str) -> Result<Source, RegistryError> {
        Ok(match config.registry.source {
            RegistrySource::File => Source::File(config.registry.path.clone()),
            RegistrySource::Http => Source::Http(http::HttpSource::new(
                &config.registry.url,
                hostname,
                Duration::from_secs(config.registry.timeout_secs),
            )?),
        })
    }

    /// `file <path>` or `http <url>`: tells apart caches written by different sources.
    pub fn describe(&self) -> String {
        match self {
            Source::File(path) => format!("file {}", path.display()),
            Source::Http(h) => format!("http {}", h.base()),
        }
    }

    /// Asks the source for the plan now.
    pub async fn fetch(&self) -> Result<Fetched, RegistryError> {
        match self {
            Source::File(path) => {
                let path = path.clone();
                let loaded = tokio::task::spawn_blocking(move || file::load(&path))
                    .await
                    .map_err(|e| RegistryError::File(format!("registry file reader failed: {e}")))?
                    .map_err(RegistryError::File)?;
                Ok(Fetched {
                    plan: loaded.plan,
                    problems: loaded.problems,
                    ..Fetched::default()
                })
            }
            Source::Http(h) => h.fetch().await,
        }
    }
}

/// What should run on this host: per namespace, its collect items.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// Namespaces by name.
    pub namespaces: BTreeMap<String, NamespacePlan>,
}

impl Plan {
    /// The namespace names, sorted.
    pub fn namespace_names(&self) -> Vec<String> {
        self.namespaces.keys().cloned().collect()
    }

    /// Number of collect items over all namespaces.
    pub fn item_count(&self) -> usize {
        self.namespaces
            .values()
            .map(|n| n.plugins.len() + n.builtins.len() + n.ports.len() + n.procs.len())
            .sum()
    }
}

/// One namespace's collect items.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamespacePlan {
    /// System family interval overrides in seconds (`CPU = 10`).
    #[serde(default)]
    pub intervals: BTreeMap<String, u64>,
    /// Script plugins.
    #[serde(default)]
    pub plugins: Vec<PluginItem>,
    /// Built-in plugins.
    #[serde(default)]
    pub builtins: Vec<BuiltinItem>,
    /// Port checks.
    #[serde(default)]
    pub ports: Vec<PortItem>,
    /// Process checks.
    #[serde(default)]
    pub procs: Vec<ProcItem>,
}

/// A script plugin item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginItem {
    /// Repository address.
    pub git: String,
    /// Seconds between runs; 0 = on demand only.
    #[serde(default)]
    pub interval: u64,
    /// Space-separated arguments.
    #[serde(default)]
    pub parameters: String,
    /// Branch to follow; default: the remote's default branch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
}

/// A built-in plugin item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuiltinItem {
    /// The built-in's name (`http_check`).
    pub name: String,
    /// Seconds between runs.
    #[serde(default = "default_builtin_interval")]
    pub interval: u64,
    /// Its parameters.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
}

impl BuiltinItem {
    /// The item's identity in its namespace: the name and its parameters
    /// (`http_check(url=https://a/)`), so two items of one built-in stay apart.
    pub fn id(&self) -> String {
        let params: Vec<String> = self
            .params
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        format!("{}({})", self.name, params.join(","))
    }

    /// The parameters as one line (`url=https://a/ timeout=5`).
    pub fn params_line(&self) -> String {
        let params: Vec<String> = self
            .params
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        params.join(" ")
    }
}

fn default_builtin_interval() -> u64 {
    60
}

/// A port check item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortItem {
    /// Name used in the measurement (`PORT.<name>.<port>`).
    pub name: String,
    /// TCP port.
    pub port: u16,
    /// Seconds the connect may take.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: u64,
    /// Host to connect to; default 127.0.0.1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Seconds between checks.
    #[serde(default = "default_check_interval")]
    pub interval: u64,
}

fn default_connect_timeout() -> u64 {
    3
}

fn default_check_interval() -> u64 {
    30
}

/// A process check item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcItem {
    /// Name used in the measurement (`PROC.<name>.<metric>`).
    pub name: String,
    /// Matched against each process's executable and command line.
    pub bin_path: String,
    /// Seconds between checks.
    #[serde(default = "default_check_interval")]
    pub interval: u64,
}

/// The project name of a plugin repository: its last path component without `.git`
/// (`https://host/ops/plugin-example.git` and `git@host:ops/plugin-example.git` give
/// `plugin-example`). It names the plugin's directory and measurement, so it is refused unless
/// it is a plain `[A-Za-z0-9._-]` name; addresses git could read as options or commands
/// (leading `-`, `ext::`) are refused too.
pub fn project_name(git: &str) -> Result<String, String> {
    let addr = git.trim();
    if addr.is_empty() {
        return Err("the plugin has no git address".into());
    }
    // Messages show the address without its credentials.
    let shown = redact_address(addr);
    if addr.starts_with('-') {
        return Err(format!(
            "git address {shown:?} starts with '-', which git would read as an option"
        ));
    }
    if addr.contains("::") {
        return Err(format!(
            "git address {shown:?} uses a transport helper (`<helper>::`), which can run commands"
        ));
    }
    // A URL's host is not a repository name: only its path counts. Credentials are skipped
    // up to the last '@', as `redact_address` reads them, so no part of a password (one with
    // an unencoded '/') is taken for the name and quoted below.
    let path = match addr.split_once("://") {
        Some((_, rest)) => {
            let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
            rest.split_once('/').map_or("", |(_, p)| p)
        }
        None => addr,
    };
    let path = path.trim_end_matches('/');
    let last = path
        .rsplit(['/', ':'])
        .next()
        .unwrap_or(path)
        .trim_end_matches(".git");
    // The project name becomes the folder `{plugins_dir}/{ns}/{project}`.
    if let Err(e) = crate::paths::check_name(crate::paths::What::Project, last) {
        return Err(format!(
            "git address {shown:?} does not end in a repository name: {e}"
        ));
    }
    if last.starts_with('.') {
        return Err(format!(
            "git address {shown:?} does not end in a repository name: {last:?} starts with '.', \
             which would make a hidden folder beside the agent's temporary ones"
        ));
    }
    if let Some(c) = last
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "git address {shown:?}: repository name {last:?} has {c:?}; only [A-Za-z0-9._-] are allowed"
        ));
    }
    Ok(last.to_owned())
}

/// Reads the configured registry file and validates it as a refresh would, for `agent check`:
/// what would run, with every problem a refresh would report. `None` for the http source,
/// which is only asked by a running agent.
pub fn check_file(config: &Config) -> Option<Result<Checked, RegistryError>> {
    if config.registry.source != RegistrySource::File {
        return None;
    }
    Some(
        file::load(&config.registry.path)
            .map(|loaded| {
                let mut checked = validate(loaded.plan, &config.output.topic);
                checked.problems.splice(0..0, loaded.problems);
                checked
            })
            .map_err(RegistryError::File),
    )
}

/// The usable part of a plan, and why the rest was skipped.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Checked {
    /// What may run.
    pub plan: Plan,
    /// One line per skipped namespace or item, naming it and the reason.
    pub problems: Vec<String>,
}

/// Keeps what can run and reports the rest, for every source alike.
///
/// A namespace must make a valid NSQ topic through `topic_template` (`{ns}` replaced); a second
/// plugin with a project name already used in its namespace is a configuration error; items with
/// unusable values (port 0, interval 0 for a check, unknown family) are skipped. Nothing here
/// fails the whole plan.
pub fn validate(plan: Plan, topic_template: &str) -> Checked {
    let mut problems = Vec::new();
    let mut namespaces = BTreeMap::new();
    for (name, ns) in plan.namespaces {
        // Namespaces become folder names (`{plugins_dir}/{ns}`), whatever the topic template.
        if let Err(e) = crate::paths::check_name(crate::paths::What::Namespace, &name) {
            problems.push(format!("{e}; the namespace is skipped"));
            continue;
        }
        let topic = topic_template.replace("{ns}", &name);
        if let Err(e) = check_namespace(&topic) {
            problems.push(if topic == name {
                format!("{e}; the namespace is skipped")
            } else {
                format!(
                    "namespace {name:?} skipped: its NSQ topic through output.topic {topic_template:?} is not valid: {e}"
                )
            });
            continue;
        }
        let mut bad = |what: String, why: String| {
            problems.push(format!("namespace {name:?}: {what} skipped: {why}"));
        };
        let mut kept = NamespacePlan::default();
        for (family, secs) in ns.intervals {
            match Family::from_name(&family) {
                None => {
                    let known: Vec<&str> = Family::ALL.iter().map(|f| f.name()).collect();
                    bad(
                        format!("interval for {family:?}"),
                        format!("not a system family (known: {})", known.join(", ")),
                    );
                }
                // The scheduler looks families up by their canonical name.
                Some(f) => {
                    kept.intervals.insert(f.name().to_owned(), secs);
                }
            }
        }
        let mut projects: BTreeMap<String, String> = BTreeMap::new();
        for p in ns.plugins {
            let what = format!("plugin {:?}", redact_address(&p.git));
            // The same refusal the plugin manager applies, so `agent check` reports it too.
            if let Err(e) = crate::plugins::git::check_address(&p.git) {
                let why = match e {
                    crate::plugins::git::GitError::Address { reason, .. } => reason,
                    other => other.to_string(),
                };
                bad(what, format!("the address is refused: {why}"));
                continue;
            }
            let project = match project_name(&p.git) {
                Ok(project) => project,
                Err(e) => {
                    bad(what, e);
                    continue;
                }
            };
            // Branches reach git, which keeps them as files under `refs/heads/`.
            if let Some(Err(e)) = p.branch.as_deref().map(crate::paths::check_branch) {
                bad(what, e.to_string());
                continue;
            }
            if let Some(first) = projects.get(&project) {
                bad(
                    what,
                    format!(
                        "configuration error: project {project:?} is already used by {first:?} in this namespace"
                    ),
                );
            } else {
                projects.insert(project, redact_address(&p.git));
                kept.plugins.push(p);
            }
        }
        let mut builtins = BTreeSet::new();
        for b in ns.builtins {
            if b.name.trim().is_empty() {
                bad("built-in plugin".into(), "it has no name".into());
            } else if let Err(e) = crate::plugins::builtin::validate(&b.name, &b.params) {
                bad(format!("built-in plugin {:?}", b.name), e);
            } else if b.interval == 0 {
                bad(
                    format!("built-in plugin {:?}", b.name),
                    "interval must be at least 1 second".into(),
                );
            } else if !builtins.insert((b.name.clone(), b.params.clone())) {
                bad(
                    format!("built-in plugin {:?}", b.name),
                    "the same built-in with the same parameters is listed twice".into(),
                );
            } else {
                kept.builtins.push(b);
            }
        }
        let mut ports = BTreeSet::new();
        for p in ns.ports {
            let what = format!("port check {:?} ({})", p.name, p.port);
            if p.name.trim().is_empty() {
                bad(what, "it has no name".into());
            } else if p.port == 0 {
                bad(what, "port 0 cannot be connected to".into());
            } else if p.interval == 0 {
                bad(what, "interval must be at least 1 second".into());
            } else if p.connect_timeout == 0 {
                bad(what, "connect_timeout must be at least 1 second".into());
            } else if !ports.insert((p.name.clone(), p.port, p.host.clone())) {
                bad(what, "listed twice".into());
            } else {
                kept.ports.push(p);
            }
        }
        let mut procs = BTreeSet::new();
        for p in ns.procs {
            let what = format!("process check {:?}", p.name);
            if p.name.trim().is_empty() {
                bad(what, "it has no name".into());
            } else if p.bin_path.trim().is_empty() {
                bad(what, "bin_path is empty".into());
            } else if p.interval == 0 {
                bad(what, "interval must be at least 1 second".into());
            } else if !procs.insert(p.name.clone()) {
                bad(
                    what,
                    "a process check of that name is already listed".into(),
                );
            } else {
                kept.procs.push(p);
            }
        }
        namespaces.insert(name, kept);
    }
    Checked {
        plan: Plan { namespaces },
        problems,
    }
}

/// Checks that a namespace can be an NSQ topic and an InfluxDB database name.
pub fn check_namespace(ns: &str) -> Result<(), String> {
    if ns.is_empty() {
        return Err("namespace name is empty".into());
    }
    if ns.len() > 64 {
        return Err(format!(
            "namespace {ns:?} is {} characters, at most 64 are allowed (NSQ topic limit)",
            ns.len()
        ));
    }
    if let Some(c) = ns
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "namespace {ns:?}: {c:?} is not allowed; use only [.a-zA-Z0-9_-] (NSQ topic rules)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_name_is_the_repository_name() {
        for (git, name) in [
            (
                "https://git.example.com/ops/plugin-example.git",
                "plugin-example",
            ),
            (
                "https://git.example.com/ops/plugin-example",
                "plugin-example",
            ),
            (
                "https://git.example.com/ops/plugin-example.git/",
                "plugin-example",
            ),
            ("git@git.example.com:ops/nginx_stats.git", "nginx_stats"),
            ("git@git.example.com:nginx.git", "nginx"),
            ("ssh://git@host:2222/ops/a.b.git", "a.b"),
            ("git://127.0.0.1:9418/p1.git", "p1"),
            ("file:///srv/git/p2.git", "p2"),
            ("/srv/git/p3", "p3"),
        ] {
            assert_eq!(project_name(git).as_deref(), Ok(name), "{git}");
        }
    }

    #[test]
    fn project_name_refuses_what_git_or_a_path_would_misread() {
        for (git, why) in [
            ("", "no git address"),
            ("-uhttps://x/y.git", "option"),
            ("ext::sh -c touch% /tmp/pwned", "transport helper"),
            ("https://host/", "repository name"),
            ("https://host/ops/..", "repository name"),
            ("https://host/ops/a b.git", "only [A-Za-z0-9._-]"),
        ] {
            let err = project_name(git).expect_err(git);
            assert!(err.contains(why), "{git}: {err}");
        }
        // Messages never quote credentials, not even a piece of a password with an
        // unencoded '/' that could pass for a path.
        for git in [
            "https://bob:S3cret@host/",
            "https://bob:S3/cret@host/",
            "https://T0KEN@host/ops/a b.git",
        ] {
            let err = project_name(git).expect_err(git);
            assert!(
                !err.contains("S3") && !err.contains("cret") && !err.contains("T0KEN"),
                "{err}"
            );
        }
        assert_eq!(project_name("https://h/@team/x.git").as_deref(), Ok("x"));
    }

    fn ns_with(f: impl FnOnce(&mut NamespacePlan)) -> NamespacePlan {
        let mut ns = NamespacePlan::default();
        f(&mut ns);
        ns
    }

    fn plugin(git: &str) -> PluginItem {
        PluginItem {
            git: git.into(),
            interval: 30,
            parameters: String::new(),
            branch: None,
        }
    }

    fn port(name: &str, port: u16) -> PortItem {
        PortItem {
            name: name.into(),
            port,
            connect_timeout: 3,
            host: None,
            interval: 30,
        }
    }

    #[test]
    fn the_second_plugin_with_a_project_name_is_a_configuration_error() {
        let plan = Plan {
            namespaces: [(
                "web".to_owned(),
                ns_with(|ns| {
                    ns.plugins = vec![
                        plugin("https://a.example/ops/stats.git"),
                        plugin("git@b.example:other/stats.git"),
                        plugin("https://a.example/ops/other.git"),
                    ];
                }),
            )]
            .into(),
        };
        let checked = validate(plan, "{ns}");
        let kept: Vec<&str> = checked.plan.namespaces["web"]
            .plugins
            .iter()
            .map(|p| p.git.as_str())
            .collect();
        assert_eq!(
            kept,
            [
                "https://a.example/ops/stats.git",
                "https://a.example/ops/other.git"
            ]
        );
        assert_eq!(checked.problems.len(), 1, "{:?}", checked.problems);
        let p = &checked.problems[0];
        assert!(
            p.contains("git@b.example:other/stats.git")
                && p.contains("configuration error")
                && p.contains("https://a.example/ops/stats.git"),
            "{p}"
        );
    }

    #[test]
    fn namespaces_must_be_topics_after_templating() {
        let plan = Plan {
            namespaces: [
                ("ok.ns".to_owned(), NamespacePlan::default()),
                ("bad ns".to_owned(), NamespacePlan::default()),
                ("a".repeat(60), NamespacePlan::default()),
            ]
            .into(),
        };
        let checked = validate(plan.clone(), "{ns}");
        assert_eq!(checked.plan.namespaces.len(), 2);
        assert_eq!(checked.problems.len(), 1);
        assert!(checked.problems[0].contains("\"bad ns\""));

        // 60 characters plus the template's 8 is past NSQ's 64.
        let checked = validate(plan, "metrics.{ns}");
        assert_eq!(checked.plan.namespace_names(), ["ok.ns"]);
        assert!(
            checked
                .problems
                .iter()
                .any(|p| p.contains("output.topic") && p.contains("at most 64")),
            "{:?}",
            checked.problems
        );
    }

    #[test]
    fn bad_values_skip_the_item_and_the_rest_applies() {
        let plan = Plan {
            namespaces: [(
                "web".to_owned(),
                ns_with(|ns| {
                    ns.intervals = [
                        ("CPU".to_owned(), 5),
                        ("GPU".to_owned(), 5),
                        ("MEM".to_owned(), 0),
                    ]
                    .into();
                    ns.ports = vec![port("zero", 0), port("ssh", 22), port("ssh", 22)];
                    ns.procs = vec![ProcItem {
                        name: "p".into(),
                        bin_path: " ".into(),
                        interval: 30,
                    }];
                }),
            )]
            .into(),
        };
        let checked = validate(plan, "{ns}");
        let ns = &checked.plan.namespaces["web"];
        // 0 turns a family off for the namespace: kept, not a problem.
        assert_eq!(
            ns.intervals,
            BTreeMap::from([("CPU".to_owned(), 5), ("MEM".to_owned(), 0)])
        );
        assert_eq!(ns.ports, [port("ssh", 22)]);
        assert!(ns.procs.is_empty());
        let all = checked.problems.join("\n");
        for expected in [
            "\"GPU\" skipped: not a system family",
            "\"zero\" (0) skipped: port 0",
            "\"ssh\" (22) skipped: listed twice",
            "bin_path is empty",
        ] {
            assert!(all.contains(expected), "{expected:?} not in:\n{all}");
        }
        assert_eq!(checked.problems.len(), 4, "{all}");
    }
}
