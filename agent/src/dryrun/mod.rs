//! `agent test` and `agent plugin test`: run jobs once and print the points the agent would send,
//! sending nothing and changing no state.
//!
//! `agent test` builds the plan as a refresh does, then runs the scheduler's jobs for it through
//! the agent's own [`AgentRunner`], into a [`Pipeline`] whose receiving end is read here instead
//! of by the batcher: the points are normalised, renamed and `host`-tagged by the same code, and
//! printed with the pipeline's line-protocol encoder. The runner's state is made for the run:
//! its data dir and `plugins_dir` are a temporary directory (git plugins are cloned there and
//! removed with it), its spool lives in memory and is never read, and no plugin state, registry
//! cache or log is written.
//!
//! `agent plugin test` ([`plugin`]) runs one plugin folder or repository the same way.

pub mod plugin;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::config::Config;
use crate::output::spool::Spool;
use crate::pipeline::{lineproto, Pipeline, Point, Submission};
use crate::plugins::checkout::{Access, Checkout};
use crate::plugins::git;
use crate::registry::{Plan, Source};
use crate::scheduler::runner::AgentRunner;
use crate::scheduler::{desired, JobKey, JobKind, Work};
use crate::state::AgentState;

/// Time between the two samples of the jobs that compute rates.
pub const RATE_GAP: Duration = Duration::from_secs(1);

/// Submissions the test pipeline holds before the collector takes them (it takes them at once).
const QUEUE_CAPACITY: usize = 1024;

/// What `agent test` runs.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Only this namespace.
    pub ns: Option<String>,
    /// Only the jobs one of these names, each one `--only`: `[FAMILY | PORT | PROC]` or
    /// `[KIND, NAME]` (as docs/operations.md describes them); empty = every job.
    pub only: Vec<Vec<String>>,
}

/// Kinds the two-word form of `--only` takes.
const ONLY_KINDS: &str = "system, port, proc, plugin, builtin";

impl Selection {
    /// Checks the shape of every `--only` before anything runs.
    fn check(&self) -> anyhow::Result<()> {
        for only in &self.only {
            match only.as_slice() {
                [_] => {}
                [kind, _] if only_kind(kind).is_some() => {}
                [kind, _] => bail!("--only {kind:?}: unknown kind; use one of {ONLY_KINDS}"),
                _ => bail!(
                    "--only takes one word (a family, port or process) or two (KIND NAME); give it once per job"
                ),
            }
        }
        Ok(())
    }

    /// Whether the job is selected: no `--only`, or one that names it.
    fn matches(&self, work: &Work) -> bool {
        self.only.is_empty() || self.only.iter().any(|only| names(only, work))
    }

    /// Whether a `--only` could name a plugin.
    fn wants_plugins(&self) -> bool {
        self.only.is_empty()
            || self.only.iter().any(
                |o| matches!(o.as_slice(), [kind, _] if only_kind(kind) == Some(JobKind::Plugin)),
            )
    }

    /// The selection as typed, for messages.
    fn describe(&self) -> String {
        let each: Vec<String> = self
            .only
            .iter()
            .map(|o| format!("--only {}", o.join(" ")))
            .collect();
        each.join(" ")
    }
}

/// Whether one `--only` names the job: one word is a system family (`CPU`, any case), a port
/// check's name or port number, or a process check's name; two words are a kind and a name
/// (`plugin nginx-stats`, `builtin http_check`, `port 8080`).
fn names(only: &[String], work: &Work) -> bool {
    let (kind, name) = match only {
        [name] => (None, name.as_str()),
        [kind, name] => (only_kind(kind), name.as_str()),
        _ => return false,
    };
    let wanted = |k: JobKind| kind.is_none_or(|want| want == k);
    match work {
        Work::System { family, .. } => {
            wanted(JobKind::System) && family.name().eq_ignore_ascii_case(name)
        }
        Work::Port { item, .. } => {
            wanted(JobKind::Port) && (item.name == name || item.port.to_string() == name)
        }
        Work::Proc { item, .. } => wanted(JobKind::Proc) && item.name == name,
        Work::Plugin { project, .. } => {
            kind == Some(JobKind::Plugin)
                && (project == name
                    || crate::registry::project_name(name).is_ok_and(|p| p == *project))
        }
        Work::Builtin { item, .. } => kind == Some(JobKind::Builtin) && item.name == name,
    }
}

fn only_kind(word: &str) -> Option<JobKind> {
    match word.to_ascii_lowercase().as_str() {
        "system" | "family" => Some(JobKind::System),
        "port" => Some(JobKind::Port),
        "proc" | "process" => Some(JobKind::Proc),
        "plugin" => Some(JobKind::Plugin),
        "builtin" | "built-in" => Some(JobKind::Builtin),
        _ => None,
    }
}

/// What `agent test` found: the points per namespace, and the jobs that failed.
#[derive(Debug, Default)]
pub struct Tested {
    /// The line protocol to print: per namespace a `# ns NAME` line, then its points.
    pub output: String,
    /// Points printed.
    pub points: usize,
    /// Jobs selected (each ran, unless its plugin could not be cloned: a failure).
    pub jobs: usize,
    /// The failed jobs, with why.
    pub failures: Vec<(String, String)>,
}

/// Prints a progress note on stderr (stdout carries only the points).
fn note(msg: &str) {
    eprintln!("agent test: {msg}");
}

/// Runs every job of `config`'s plan that `sel` selects once and returns what it would send.
/// Errors are the ones that stop everything (registry unreadable, a selection matching
/// nothing); a failing job is listed in [`Tested::failures`].
pub async fn run(config: Config, sel: &Selection) -> anyhow::Result<Tested> {
    sel.check()?;
    let host = crate::hostname(&config);
    let plan = fetch_plan(&config, &host, sel).await?;
    let mut jobs = select_jobs(&plan, sel)?;
    let namespaces = namespaces_of(&jobs);
    let mut tested = Tested {
        jobs: jobs.len(),
        ..Tested::default()
    };

    let scratch = tempfile::Builder::new()
        .prefix("agent-test-")
        .tempdir()
        .context("cannot make a temporary directory for the run")?;
    let mut run_config = config.clone();
    run_config.agent.data_dir = scratch.path().join("data");
    run_config.agent.plugins_dir = Some(scratch.path().join("plugins"));
    let (pipeline, rx) = Pipeline::with_bound(&host, QUEUE_CAPACITY, config.output.queue_max_bytes);
    let collector = Collector::start(rx);
    let state = AgentState::new(
        run_config,
        host,
        pipeline.clone(),
        Spool::in_memory(config.output.spool_max_bytes),
        Arc::default(),
    );
    clone_plugins(
        &state,
        &plan,
        &mut jobs,
        scratch.path(),
        &config.plugins_dir(),
        &mut tested.failures,
    )
    .await?;
    note_disabled(&config, &jobs);

    let runner = AgentRunner::new(state);
    let rates: Vec<&(JobKey, Work)> = jobs
        .iter()
        .filter(|(k, _)| matches!(k.kind, JobKind::System | JobKind::Proc))
        .collect();
    if !rates.is_empty() {
        note(&format!(
            "system and process rates need two samples: took the first, the second follows in {} s",
            RATE_GAP.as_secs()
        ));
        let first = rates.iter().map(|(k, w)| runner.run_once(k, w));
        futures_util::future::join_all(first).await;
        tokio::time::sleep(RATE_GAP).await;
        collector.take(&pipeline).await;
    }
    let started = Instant::now();
    let runs = jobs.iter().map(|(k, w)| {
        let run = runner.run_once(k, w);
        async move { (k.to_string(), run.await) }
    });
    for (job, result) in futures_util::future::join_all(runs).await {
        if let Err(why) = result {
            tested.failures.push((job, why));
        }
    }
    let (output, points) = encode(namespaces, collector.take(&pipeline).await, pipeline.host());
    tested.output = output;
    tested.points = points;
    tested.failures.sort();
    note(&format!(
        "{} ran in {:.1} s, {} failed; {}, nothing was sent",
        shared::count(jobs.len() as u64, "job"),
        started.elapsed().as_secs_f64(),
        tested.failures.len(),
        shared::count(tested.points as u64, "point"),
    ));
    Ok(tested)
}

/// The plan as a refresh would put it in force (without writing the cache), cut to `--ns`.
async fn fetch_plan(config: &Config, host: &str, sel: &Selection) -> anyhow::Result<Plan> {
    let source = Source::from_config(config, host).context("registry")?;
    note(&format!(
        "reading the registry ({}) as host {host}; its cache is not written",
        source.describe()
    ));
    let checked = source
        .fetch()
        .await?
        .check(&Plan::default(), &config.output.topic);
    for p in &checked.problems {
        note(&format!("registry: skipped: {p}"));
    }
    let mut plan = checked.plan;
    if let Some(ns) = &sel.ns {
        if !plan.namespaces.contains_key(ns) {
            bail!(
                "namespace {ns:?} is not in this host's plan; it has: {}",
                names_or_none(plan.namespaces.keys())
            );
        }
        plan.namespaces.retain(|name, _| name == ns);
    }
    Ok(plan)
}

/// The scheduler's jobs for `plan` that `--only` selects, in key order; none is an error that
/// lists what the plan runs.
fn select_jobs(plan: &Plan, sel: &Selection) -> anyhow::Result<Vec<(JobKey, Work)>> {
    for (ns, nsp) in plan.namespaces.iter().filter(|_| sel.wants_plugins()) {
        for p in nsp.plugins.iter().filter(|p| p.interval == 0) {
            note(&format!(
                "plugin {ns}/{}: on demand only (interval 0), so not run",
                crate::plugins::git::redact_address(&p.git)
            ));
        }
    }
    let mut all: Vec<(JobKey, Work)> = desired(plan)
        .into_iter()
        .map(|(key, spec)| (key, spec.work))
        .collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    let keys: Vec<String> = all.iter().map(|(k, _)| k.to_string()).collect();
    let jobs: Vec<(JobKey, Work)> = all.into_iter().filter(|(_, w)| sel.matches(w)).collect();
    if jobs.is_empty() {
        bail!(
            "nothing to run: {} of this host's plan; it runs: {}",
            if sel.only.is_empty() {
                "no job".to_owned()
            } else {
                let verb = if sel.only.len() == 1 {
                    "matches"
                } else {
                    "match"
                };
                format!("{} {verb} no job", sel.describe())
            },
            names_or_none(keys.iter())
        );
    }
    Ok(jobs)
}

/// The namespaces the jobs send to.
fn namespaces_of(jobs: &[(JobKey, Work)]) -> BTreeSet<String> {
    let mut namespaces = BTreeSet::new();
    for (_, work) in jobs {
        match work {
            Work::System {
                namespaces: all, ..
            } => namespaces.extend(all.iter().cloned()),
            Work::Port { ns, .. }
            | Work::Proc { ns, .. }
            | Work::Plugin { ns, .. }
            | Work::Builtin { ns, .. } => {
                namespaces.insert(ns.clone());
            }
        }
    }
    namespaces
}

/// Clones the selected git plugins into `scratch` as the agent clones them; a plugin that cannot
/// be cloned (or that the manager refuses) is a failure and its job is dropped.
async fn clone_plugins(
    state: &AgentState,
    plan: &Plan,
    jobs: &mut Vec<(JobKey, Work)>,
    scratch: &Path,
    installed_plugins: &Path,
    failures: &mut Vec<(String, String)>,
) -> anyhow::Result<()> {
    let mut clone_plan = Plan::default();
    for (key, _) in jobs.iter().filter(|(k, _)| k.kind == JobKind::Plugin) {
        if let Some(nsp) = plan.namespaces.get(&key.ns) {
            let items = nsp
                .plugins
                .iter()
                .filter(|p| crate::registry::project_name(&p.git).is_ok_and(|p| p == key.id))
                .cloned();
            let into = clone_plan.namespaces.entry(key.ns.clone()).or_default();
            into.plugins.extend(items);
        }
    }
    if clone_plan.namespaces.is_empty() {
        return Ok(());
    }
    if state.plugins().identity().is_ok_and(|id| id.is_some()) {
        // The plugin user must be able to reach its checkouts, as under a data dir.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(scratch, std::fs::Permissions::from_mode(0o711))
            .context("cannot open the temporary directory to the plugin user")?;
    }
    note(&format!(
        "cloning {} into {} (removed afterwards)",
        shared::count(clone_plan.item_count() as u64, "plugin"),
        scratch.display()
    ));
    state.plugins().sync(&clone_plan).await;
    // The list also holds the built-ins (they need no clone).
    let listed: Vec<_> = state
        .plugins()
        .list()
        .plugins
        .into_iter()
        .filter(|p| p.kind == shared::api::PLUGIN_SCRIPT)
        .collect();
    for p in &listed {
        if let Some(tested) = &p.commit {
            note_cached_commit(installed_plugins, &p.ns, &p.project, tested).await;
        }
    }
    let unusable: BTreeMap<(String, String), String> = listed
        .into_iter()
        .filter_map(|p| Some(((p.ns, p.project), p.problem?)))
        .collect();
    jobs.retain(|(key, _)| {
        if key.kind != JobKind::Plugin {
            return true;
        }
        let Some(problem) = unusable.get(&(key.ns.clone(), key.id.clone())) else {
            return true;
        };
        failures.push((key.to_string(), problem.clone()));
        false
    });
    Ok(())
}

/// Says when this host's checkout of a plugin (in `installed_plugins`, read only) is at another
/// commit than the one tested: a running agent runs its checkout until `/plugins/update`.
async fn note_cached_commit(installed_plugins: &Path, ns: &str, project: &str, tested: &str) {
    let Ok(cached) = Checkout::new(installed_plugins, ns, project, Access::default()) else {
        return;
    };
    let dir = cached.dir().to_path_buf();
    let at = {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || dir.is_dir().then(|| git::head_commit(&dir)).flatten())
            .await
            .ok()
            .flatten()
    };
    if let Some(at) = at.filter(|at| at != tested) {
        note(&format!(
            "plugin {ns}/{project}: tested the remote's {}, but this host's checkout {} is at {}, which a running agent runs until /plugins/update",
            short(tested),
            dir.display(),
            short(&at)
        ));
    }
}

fn short(commit: &str) -> &str {
    commit.get(..10).unwrap_or(commit)
}

/// Says which selected plugins an operator disabled (`plugins-state.json` is read, not
/// changed): the test runs them all the same, the agent would not.
fn note_disabled(config: &Config, jobs: &[(JobKey, Work)]) {
    let path = config.agent.data_dir.join(crate::plugins::state::FILE_NAME);
    let states = match crate::plugins::state::PluginStates::load(&path) {
        Ok(states) => states,
        Err(e) => return note(&format!("{e}; taken as no plugin disabled")),
    };
    let now = crate::pipeline::normalize::now_secs();
    for (key, _) in jobs.iter().filter(|(k, _)| k.kind == JobKind::Plugin) {
        if let Some(until) = states.disabled_until(&key.ns, &key.id, now) {
            note(&format!(
                "{key} is disabled for {} s more (plugins-state.json): it runs here all the same, but the agent sends nothing for it until then",
                until - now
            ));
        }
    }
}

/// The points as line protocol with the pipeline's encoder, under a `# ns NAME` line for each
/// namespace (also those that got no point); and how many there are.
fn encode(namespaces: BTreeSet<String>, subs: Vec<Submission>, host: &str) -> (String, usize) {
    let mut by_ns: BTreeMap<String, Vec<Point>> =
        namespaces.into_iter().map(|ns| (ns, Vec::new())).collect();
    for sub in subs {
        let points = by_ns.entry(sub.ns.to_string()).or_default();
        points.extend(sub.points);
        if sub.lines.points > 0 {
            // Only `/post` submits encoded lines today (already normalised, `host` included);
            // read back, they sort with the rest.
            let back = lineproto::parse::parse_points(&sub.lines.bytes, host, 0);
            points.extend(back.items);
        }
    }
    let (mut out, mut n) = (Vec::new(), 0);
    for (ns, mut points) in by_ns {
        out.extend_from_slice(format!("# ns {ns}\n").as_bytes());
        // Jobs ran at the same time: a stable order makes two runs comparable.
        points.sort_by(|a, b| (&a.measurement, &a.tags).cmp(&(&b.measurement, &b.tags)));
        for p in &points {
            lineproto::encode_point(p, &mut out);
        }
        n += points.len();
    }
    (String::from_utf8_lossy(&out).into_owned(), n)
}

fn names_or_none<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let v: Vec<&str> = names.map(String::as_str).collect();
    if v.is_empty() {
        "none".to_owned()
    } else {
        v.join(", ")
    }
}

/// Takes the test pipeline's submissions as they come (in place of the batcher), so no producer
/// ever waits for room.
struct Collector {
    got: Arc<Mutex<Vec<Submission>>>,
    points: Arc<AtomicU64>,
}

impl Collector {
    fn start(mut rx: tokio::sync::mpsc::Receiver<Submission>) -> Collector {
        let got: Arc<Mutex<Vec<Submission>>> = Arc::default();
        let points: Arc<AtomicU64> = Arc::default();
        let (g, p) = (Arc::clone(&got), Arc::clone(&points));
        tokio::spawn(async move {
            while let Some(mut sub) = rx.recv().await {
                // Gives the points' share of the queue bound back at once.
                sub.permit = None;
                // As the pipeline counts them: points, and points already encoded as lines.
                let n = (sub.points.len() + sub.lines.points) as u64;
                g.lock().unwrap_or_else(PoisonError::into_inner).push(sub);
                p.fetch_add(n, Ordering::Release);
            }
        });
        Collector { got, points }
    }

    /// Everything submitted so far: waits until the collector has received every point the
    /// pipeline accepted (the runs that submitted them have finished).
    async fn take(&self, pipeline: &Pipeline) -> Vec<Submission> {
        let accepted = pipeline.stats().accepted.load(Ordering::Acquire);
        while self.points.load(Ordering::Acquire) < accepted {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        std::mem::take(&mut *self.got.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{BuiltinItem, PortItem, ProcItem};

    fn sel(only: &[&str]) -> Selection {
        Selection {
            ns: None,
            only: if only.is_empty() {
                Vec::new()
            } else {
                vec![only.iter().map(|s| (*s).to_owned()).collect()]
            },
        }
    }

    #[test]
    fn only_names_a_job_by_one_word_or_by_kind_and_name() {
        let system = Work::System {
            family: crate::collect::system::Family::Cpu,
            namespaces: vec!["a".to_owned()].into(),
        };
        let port = Work::Port {
            ns: "a".to_owned(),
            item: PortItem {
                name: "web".to_owned(),
                port: 8080,
                connect_timeout: 3,
                host: None,
                interval: 30,
            },
        };
        let proc = Work::Proc {
            ns: "a".to_owned(),
            item: ProcItem {
                name: "web".to_owned(),
                bin_path: "nginx".to_owned(),
                interval: 30,
            },
        };
        let plugin = Work::Plugin {
            ns: "a".to_owned(),
            project: "nginx-stats".to_owned(),
        };
        let builtin = Work::Builtin {
            ns: "a".to_owned(),
            item: BuiltinItem {
                name: "http_check".to_owned(),
                interval: 60,
                params: Default::default(),
            },
        };
        let all = [&system, &port, &proc, &plugin, &builtin];
        let picked = |only: &[&str]| -> Vec<usize> {
            let s = sel(only);
            assert!(s.check().is_ok(), "{only:?}");
            (0..all.len()).filter(|&i| s.matches(all[i])).collect()
        };
        assert_eq!(picked(&[]), [0, 1, 2, 3, 4]);
        assert_eq!(picked(&["cpu"]), [0]);
        assert_eq!(picked(&["web"]), [1, 2], "a port and a process of one name");
        assert_eq!(picked(&["8080"]), [1]);
        assert_eq!(picked(&["proc", "web"]), [2]);
        assert_eq!(picked(&["port", "8080"]), [1]);
        assert_eq!(picked(&["plugin", "nginx-stats"]), [3]);
        assert_eq!(
            picked(&["plugin", "https://git.example.com/ops/nginx-stats.git"]),
            [3]
        );
        assert_eq!(picked(&["builtin", "http_check"]), [4]);
        // One word never picks a plugin or a built-in: their names could be anything.
        assert_eq!(picked(&["nginx-stats"]), Vec::<usize>::new());
        assert!(sel(&["plugins", "x"]).check().is_err());
        // Several `--only`: any of them.
        let two = Selection {
            ns: None,
            only: vec![
                vec!["8080".to_owned()],
                vec!["builtin".to_owned(), "http_check".to_owned()],
            ],
        };
        let picked: Vec<usize> = (0..all.len()).filter(|&i| two.matches(all[i])).collect();
        assert_eq!(picked, [1, 4]);
        assert!(!two.wants_plugins());
        assert_eq!(two.describe(), "--only 8080 --only builtin http_check");
    }

    #[test]
    fn points_print_per_namespace_sorted_with_encoded_lines_read_back() {
        let point = |m: &str, v: f64| Point {
            measurement: m.to_owned(),
            tags: vec![("host".to_owned(), "h".to_owned())],
            value: shared::Value::Float(v),
            timestamp: 1_764_000_000,
        };
        let mut lines = crate::pipeline::Lines::default();
        lines.push_points(&[point("a.posted", 3.0)]);
        let subs = vec![
            Submission {
                ns: "web".into(),
                points: vec![point("z.last", 1.0), point("b.first", 2.0)],
                lines,
                permit: None,
                done: None,
            },
            Submission {
                ns: "db".into(),
                points: vec![point("m", 4.0)],
                lines: Default::default(),
                permit: None,
                done: None,
            },
        ];
        let namespaces = ["db", "idle", "web"].map(String::from).into();
        let (out, n) = encode(namespaces, subs, "h");
        assert_eq!(n, 4);
        assert_eq!(
            out,
            "# ns db\nm,host=h value=4.0 1764000000\n# ns idle\n# ns web\n\
             a.posted,host=h value=3.0 1764000000\nb.first,host=h value=2.0 1764000000\n\
             z.last,host=h value=1.0 1764000000\n"
        );
    }
}
