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

use super::{BuiltinItem, NamespacePlan, Plan, PluginItem, PortItem, ProcItem};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegistryFile {
    #[serde(default)]
    namespace: Vec<NamespaceEntry>,
}

/// A `[[namespace]]`: its name and [`NamespacePlan`]'s keys, spelled out rather than
/// `#[serde(flatten)]`ed, so an error can name the key it is about (serde loses the path inside a
/// flattened struct).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NamespaceEntry {
    name: String,
    #[serde(default)]
    intervals: BTreeMap<String, u64>,
    #[serde(default)]
    plugins: Vec<PluginItem>,
    #[serde(default)]
    builtins: Vec<BuiltinItem>,
    #[serde(default)]
    ports: Vec<PortItem>,
    #[serde(default)]
    procs: Vec<ProcItem>,
}

impl NamespaceEntry {
    fn into_parts(self) -> (String, NamespacePlan) {
        let plan = NamespacePlan {
            intervals: self.intervals,
            plugins: self.plugins,
            builtins: self.builtins,
            ports: self.ports,
            procs: self.procs,
        };
        (self.name, plan)
    }
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
    let file = if is_json {
        parse_json(&text)
    } else {
        parse_toml(&text)
    }
    .map_err(|e| format!("registry file {}: {e}", path.display()))?;
    let mut loaded = Loaded::default();
    let mut namespaces = BTreeMap::new();
    for entry in file.namespace {
        let (name, plan) = entry.into_parts();
        if namespaces.insert(name.clone(), plan).is_some() {
            loaded.problems.push(format!(
                "registry file {}: namespace {name:?} is listed twice; the later one is used",
                path.display(),
            ));
        }
    }
    loaded.plan = Plan { namespaces };
    Ok(loaded)
}

/// Parses TOML; an error is one line (it goes to the log) naming the key and where it is.
fn parse_toml(text: &str) -> Result<RegistryFile, String> {
    serde_path_to_error::deserialize(toml::Deserializer::new(text)).map_err(|e| {
        let key = key_prefix(e.path());
        let e = e.into_inner();
        let mut msg = format!("{key}{}", e.message().trim_end());
        if let Some(span) = e.span() {
            let (line, column) = line_column(text, span.start);
            msg.push_str(&format!(" (line {line}, column {column})"));
        }
        // toml's messages are one line, but a stray newline must not split a log line.
        msg.replace('\n', " ")
    })
}

/// Parses JSON; an error names the key, and serde_json says the line and column.
fn parse_json(text: &str) -> Result<RegistryFile, String> {
    let mut de = serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        // A syntax error has no key to name (the path would end in `?`).
        let key = match e.inner().classify() {
            serde_json::error::Category::Data => key_prefix(e.path()),
            _ => String::new(),
        };
        format!("{key}{}", e.inner())
    })
}

/// `namespace[1].ports[0].port: `, or nothing for an error not inside any key.
fn key_prefix(path: &serde_path_to_error::Path) -> String {
    match path.to_string() {
        p if p == "." || p.is_empty() => String::new(),
        p => format!("{p}: "),
    }
}

/// 1-based line and column of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.chars().rev().take_while(|c| *c != '\n').count() + 1;
    (line, column)
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

    fn error_of(name: &str, text: &str) -> String {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        load(&path).expect_err("a bad file")
    }

    #[test]
    fn errors_are_one_line_naming_the_key_and_where() {
        let text = "[[namespace]]\nname = \"a\"\n\n[[namespace]]\nname = \"b\"\nports = [{ name = \"ssh\", port = \"22\" }]\n";
        let err = error_of("r.toml", text);
        assert!(
            err.contains("namespace[1].ports[0].port: invalid type: string \"22\""),
            "{err}"
        );
        assert!(err.contains("(line "), "{err}");
        assert!(!err.contains('\n'), "one line for the log: {err}");

        let err = error_of(
            "r.toml",
            "[[namespace]]\nname = \"a\"\nthis is = = not toml [\n",
        );
        assert!(
            err.contains(": expected `.`, `=` (line 3, column 6)"),
            "{err}"
        );
        assert!(!err.contains('\n'), "one line for the log: {err}");

        let err = error_of(
            "r.json",
            r#"{"namespace": [{"name": "a", "ports": [{"name": "x", "port": -1}]}]}"#,
        );
        assert!(err.contains("namespace[0].ports[0].port"), "{err}");
        assert!(err.contains("line 1 column"), "{err}");
        let err = error_of("r.json", r#"{"namespace": [{"name": "x""#);
        assert!(
            err.ends_with("r.json: EOF while parsing an object at line 1 column 27"),
            "a syntax error names no key: {err}"
        );
    }

    #[test]
    fn a_json_registry_reads_like_the_toml_one() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("registry.json");
        std::fs::write(
            &path,
            r#"{"namespace": [{"name": "web.shop", "intervals": {"CPU": 5},
                "plugins": [{"git": "https://g.example/ops/stats.git", "interval": 30}],
                "builtins": [{"name": "file_age", "params": {"path": "/var/backup"}}],
                "ports": [{"name": "nginx", "port": 80}],
                "procs": [{"name": "nginx", "bin_path": "/usr/sbin/nginx", "interval": 15}]}]}"#,
        )
        .expect("write");
        let loaded = load(&path).expect("load");
        let ns = &loaded.plan.namespaces["web.shop"];
        assert_eq!(ns.intervals["CPU"], 5);
        assert_eq!(ns.plugins[0].interval, 30);
        assert_eq!(ns.builtins[0].interval, 60, "the default, as in TOML");
        assert_eq!(ns.ports[0].connect_timeout, 3);
        assert_eq!(ns.procs[0].interval, 15);
        assert!(loaded.problems.is_empty());
    }
}
