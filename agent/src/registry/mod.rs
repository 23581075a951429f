//! The registry: which namespaces this host belongs to and what to collect for each.
//!
//! Sources produce one desired [`Plan`]; the scheduler reconciles running jobs to it.

pub mod file;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

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
