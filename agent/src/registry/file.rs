//! The `file` registry source: a TOML (or, by extension, JSON) file listing namespaces.
//!
//! ```toml
//! [[namespace]]
//! name = "web.shop"
//! intervals = { CPU = 10 }
//! plugins = [{ git = "https://git.example.com/ops/nginx-stats.git", interval = 30 }]
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::{NamespacePlan, Plan};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegistryFile {
    #[serde(default)]
    namespace: Vec<NamespaceEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NamespaceEntry {
    name: String,
    #[serde(flatten)]
    plan: NamespacePlan,
}

/// The file's plan, and the problems of entries that were skipped.
#[derive(Debug, Default)]
pub struct Loaded {
    /// The usable part.
    pub plan: Plan,
    /// One line per skipped entry.
    pub problems: Vec<String>,
}

/// Reads and parses a registry file. A file that cannot be read or parsed is an error; a
/// namespace listed twice is reported (the later one is used). Names and values are checked by
/// [`super::validate`], as for every source.
pub fn load(path: &Path) -> Result<Loaded, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("registry file {}: cannot read it: {e}", path.display()))?;
    let is_json = path.extension().is_some_and(|e| e == "json");
    let file: RegistryFile = if is_json {
        serde_json::from_str(&text).map_err(|e| format!("registry file {}: {e}", path.display()))?
    } else {
        toml::from_str(&text).map_err(|e| {
            format!(
                "registry file {}: {}",
                path.display(),
                e.to_string().trim_end()
            )
        })?
    };
    let mut loaded = Loaded::default();
    let mut namespaces = BTreeMap::new();
    for entry in file.namespace {
        if namespaces.insert(entry.name.clone(), entry.plan).is_some() {
            loaded.problems.push(format!(
                "registry file {}: namespace {:?} is listed twice; the later one is used",
                path.display(),
                entry.name
            ));
        }
    }
    loaded.plan = Plan { namespaces };
    Ok(loaded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_spec_example() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("registry.toml");
        std::fs::write(
            &path,
            r#"
            [[namespace]]
            name = "web.shop"
            intervals = { CPU = 10, FS = 300 }
            plugins  = [{ git = "https://git.example.com/ops/nginx-stats.git", interval = 30, parameters = "-v" }]
            builtins = [{ name = "http_check", interval = 30, params = { url = "http://127.0.0.1/health" } }]
            ports    = [{ name = "nginx", port = 80, connect_timeout = 3 }]
            procs    = [{ name = "nginx", bin_path = "/usr/sbin/nginx" }]

            [[namespace]]
            name = "dup"

            [[namespace]]
            name = "dup"
            ports    = [{ name = "sshd", port = 22 }]
            "#,
        )
        .expect("write");
        let loaded = load(&path).expect("load");
        assert_eq!(loaded.plan.namespace_names(), ["dup", "web.shop"]);
        assert_eq!(
            loaded.plan.namespaces["dup"].ports[0].port, 22,
            "the later entry wins"
        );
        let ns = &loaded.plan.namespaces["web.shop"];
        assert_eq!(ns.intervals["CPU"], 10);
        assert_eq!(ns.plugins[0].parameters, "-v");
        assert_eq!(ns.builtins[0].params["url"], "http://127.0.0.1/health");
        assert_eq!(ns.ports[0].port, 80);
        assert_eq!(ns.procs[0].bin_path, "/usr/sbin/nginx");
        assert_eq!(loaded.problems.len(), 1);
        assert!(
            loaded.problems[0].contains("\"dup\" is listed twice"),
            "{:?}",
            loaded.problems
        );
    }

    #[test]
    fn unknown_key_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("r.toml");
        std::fs::write(&path, "[[namespace]]\nname = \"a\"\nplugin = []\n").expect("write");
        let err = load(&path).expect_err("unknown key");
        assert!(err.contains("plugin") && err.contains("r.toml"), "{err}");
    }
}
