//! Plugin runs counted by plugin and outcome, for `/metrics`.
//!
//! Namespaces and plugin names come from the registry, so the number of distinct counters is
//! capped: past [`MAX_SERIES`] a new plugin's runs are counted under [`OTHER`] for both names.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// Distinct (namespace, plugin, kind, reason) counters kept; far above a real host's plugins.
pub const MAX_SERIES: usize = 4096;

/// The namespace and plugin name of the runs counted past the cap.
pub const OTHER: &str = "_other";

/// What a run is counted under.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RunKey {
    /// Namespace.
    pub ns: String,
    /// Project (script plugin) or name (built-in).
    pub plugin: String,
    /// `regular` (scheduled) or `call` (on demand).
    pub kind: String,
    /// `ok`, `exit`, `timeout`, `output` or `spawn`.
    pub reason: String,
}

/// The counters.
#[derive(Debug, Default)]
pub struct RunCounts {
    counts: Mutex<BTreeMap<RunKey, u64>>,
}

impl RunCounts {
    /// Counts one run.
    pub fn record(&self, ns: &str, plugin: &str, kind: &str, reason: &str) {
        let Ok(mut counts) = self.counts.lock() else {
            return;
        };
        let mut key = RunKey {
            ns: ns.to_owned(),
            plugin: plugin.to_owned(),
            kind: kind.to_owned(),
            reason: reason.to_owned(),
        };
        if counts.len() >= MAX_SERIES && !counts.contains_key(&key) {
            OTHER.clone_into(&mut key.ns);
            OTHER.clone_into(&mut key.plugin);
        }
        *counts.entry(key).or_insert(0) += 1;
    }

    /// Every counter, in key order.
    pub fn snapshot(&self) -> Vec<(RunKey, u64)> {
        self.counts
            .lock()
            .map(|c| c.iter().map(|(k, v)| (k.clone(), *v)).collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_are_counted_per_plugin_and_outcome() {
        let runs = RunCounts::default();
        runs.record("a", "p", "regular", "ok");
        runs.record("a", "p", "regular", "ok");
        runs.record("a", "p", "call", "timeout");
        runs.record("b", "p", "regular", "ok");
        let got: Vec<_> = runs
            .snapshot()
            .into_iter()
            .map(|(k, v)| (k.ns, k.plugin, k.kind, k.reason, v))
            .collect();
        let row = |ns: &str, kind: &str, reason: &str, v| {
            (ns.into(), "p".into(), kind.into(), reason.into(), v)
        };
        assert_eq!(
            got,
            [
                row("a", "call", "timeout", 1),
                row("a", "regular", "ok", 2),
                row("b", "regular", "ok", 1)
            ]
        );
    }

    #[test]
    fn past_the_cap_new_plugins_share_one_counter_and_known_ones_keep_theirs() {
        let runs = RunCounts::default();
        for i in 0..MAX_SERIES {
            runs.record("ns", &format!("p{i}"), "regular", "ok");
        }
        for i in 0..10 {
            runs.record("ns", &format!("new{i}"), "regular", "ok");
        }
        runs.record("ns", "p0", "regular", "ok");
        let snap = runs.snapshot();
        assert_eq!(snap.len(), MAX_SERIES + 1, "bounded");
        let other = snap
            .iter()
            .find(|(k, _)| k.ns == OTHER && k.plugin == OTHER)
            .map(|(_, v)| *v);
        assert_eq!(other, Some(10));
        let p0 = snap.iter().find(|(k, _)| k.plugin == "p0").map(|(_, v)| *v);
        assert_eq!(p0, Some(2));
    }
}
