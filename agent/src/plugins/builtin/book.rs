//! What `/plugins/list` shows of the built-ins: each item of the plan, whether it is running,
//! and its last result (a failing built-in is otherwise only a log line at every run).

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use shared::api::{PluginInfo, RunResult, PLUGIN_BUILTIN};

use crate::registry::{BuiltinItem, Plan};

#[derive(Debug)]
struct Row {
    item: BuiltinItem,
    running: bool,
    last_run: Option<RunResult>,
}

/// The built-in items of the plan, by (namespace, item id).
#[derive(Debug, Default)]
pub struct Book {
    rows: Mutex<BTreeMap<(String, String), Row>>,
}

impl Book {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<(String, String), Row>> {
        self.rows.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Follows a new plan: items gone are forgotten, new ones start with no run, kept ones
    /// keep their last result.
    pub fn sync(&self, plan: &Plan) {
        let mut rows = self.lock();
        let mut old = std::mem::take(&mut *rows);
        for (ns, nsp) in &plan.namespaces {
            for item in &nsp.builtins {
                let key = (ns.clone(), item.id());
                let row = match old.remove(&key) {
                    Some(mut r) => {
                        r.item = item.clone();
                        r
                    }
                    None => Row {
                        item: item.clone(),
                        running: false,
                        last_run: None,
                    },
                };
                rows.insert(key, row);
            }
        }
    }

    /// Whether `ns` has an item of the built-in `name`.
    pub fn has(&self, ns: &str, name: &str) -> bool {
        self.lock()
            .iter()
            .any(|((n, _), r)| n == ns && r.item.name == name)
    }

    /// A run of `item` in `ns` started.
    pub fn started(&self, ns: &str, item: &BuiltinItem) {
        if let Some(r) = self.lock().get_mut(&(ns.to_owned(), item.id())) {
            r.running = true;
        }
    }

    /// A run of `item` in `ns` ended with `result`.
    pub fn finished(&self, ns: &str, item: &BuiltinItem, result: RunResult) {
        if let Some(r) = self.lock().get_mut(&(ns.to_owned(), item.id())) {
            r.running = false;
            r.last_run = Some(result);
        }
    }

    /// Every built-in item, as `/plugins/list` rows.
    pub fn list(&self) -> Vec<PluginInfo> {
        self.lock()
            .iter()
            .map(|((ns, _), r)| PluginInfo {
                ns: ns.clone(),
                project: r.item.name.clone(),
                kind: PLUGIN_BUILTIN.to_owned(),
                repo: String::new(),
                interval: r.item.interval,
                parameters: r.item.params_line(),
                enabled: true,
                disabled_until: None,
                running: r.running,
                commit: None,
                problem: None,
                last_run: r.last_run.clone(),
            })
            .collect()
    }
}
