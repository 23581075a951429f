//! Built-in plugins: compiled-in checks, a name -> function table. Each takes the registry item's
//! parameters and returns metrics (renamed `PLUGIN.<name>.<metric>` like a script plugin's) or
//! an error.

pub mod book;
pub mod file_age;
pub mod http_check;
pub mod tls_cert_expiry;

use std::collections::BTreeMap;
use std::time::Duration;

use shared::Metric;

/// A built-in's parameters, as the registry item gives them.
pub type Params = BTreeMap<String, String>;

/// A running built-in: its metrics or why it failed.
pub type BoxedFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Vec<Metric>, String>> + Send>>;

/// One entry of the table.
pub struct Builtin {
    /// The name the registry uses.
    pub name: &'static str,
    /// One line for docs and errors.
    pub about: &'static str,
    /// Checks the parameters without running anything.
    pub validate: fn(&Params) -> Result<(), String>,
    /// Runs the check once.
    pub run: fn(Params) -> BoxedFuture,
    /// Parameters that name what is checked; each becomes a tag of every metric, so two items
    /// of the same built-in in one namespace (two URLs, say) make distinct series.
    pub target: &'static [&'static str],
}

/// Every built-in, by name.
pub const TABLE: &[Builtin] = &[
    Builtin {
        name: "http_check",
        about: "an HTTP(S) request: up, status, latency",
        validate: http_check::validate,
        run: |p| Box::pin(http_check::run(p)),
        target: &["url"],
    },
    Builtin {
        name: "tls_cert_expiry",
        about: "days until a TLS server's certificate expires",
        validate: tls_cert_expiry::validate,
        run: |p| Box::pin(tls_cert_expiry::run(p)),
        target: &["host", "port"],
    },
    Builtin {
        name: "file_age",
        about: "whether a file exists, its age and size",
        validate: file_age::validate,
        run: |p| Box::pin(file_age::run(p)),
        target: &["path"],
    },
];

fn lookup(name: &str) -> Result<&'static Builtin, String> {
    TABLE.iter().find(|b| b.name == name).ok_or_else(|| {
        let names: Vec<&str> = TABLE.iter().map(|b| b.name).collect();
        format!(
            "unknown built-in plugin {name:?}; known: {}",
            names.join(", ")
        )
    })
}

/// Checks that `name` is a built-in and `params` suit it; the registry reports the error.
pub fn validate(name: &str, params: &Params) -> Result<(), String> {
    let b = lookup(name)?;
    (b.validate)(params).map_err(|e| format!("built-in plugin {name}: {e}"))
}

/// Runs the built-in once.
pub async fn run(name: &str, params: &Params) -> Result<Vec<Metric>, String> {
    let b = lookup(name)?;
    (b.validate)(params).map_err(|e| format!("built-in plugin {name}: {e}"))?;
    let mut metrics = (b.run)(params.clone()).await?;
    for key in b.target {
        if let Some(v) = params.get(*key).map(|v| v.trim()).filter(|v| !v.is_empty()) {
            for m in &mut metrics {
                m.tags
                    .entry((*key).to_owned())
                    .or_insert_with(|| v.to_owned());
            }
        }
    }
    Ok(metrics)
}

/// Refuses keys a built-in does not know (a typo would otherwise be silently ignored).
pub(crate) fn check_keys(params: &Params, known: &[&str]) -> Result<(), String> {
    if let Some(k) = params.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(format!(
            "unknown parameter {k:?}; known: {}",
            known.join(", ")
        ));
    }
    Ok(())
}

/// A required parameter.
pub(crate) fn required<'a>(params: &'a Params, key: &str) -> Result<&'a str, String> {
    match params.get(key).map(|s| s.trim()) {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(format!("parameter {key:?} is required")),
    }
}

/// A timeout parameter in seconds (fractions allowed), bounded to 0.1..=300.
pub(crate) fn timeout(params: &Params, key: &str, default: Duration) -> Result<Duration, String> {
    let Some(v) = params.get(key) else {
        return Ok(default);
    };
    match v.trim().parse::<f64>() {
        Ok(s) if (0.1..=300.0).contains(&s) => Ok(Duration::from_secs_f64(s)),
        _ => Err(format!(
            "parameter {key:?} = {v:?}: expected seconds between 0.1 and 300"
        )),
    }
}

/// A TCP port parameter.
pub(crate) fn port(params: &Params, key: &str, default: u16) -> Result<u16, String> {
    let Some(v) = params.get(key) else {
        return Ok(default);
    };
    match v.trim().parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(format!(
            "parameter {key:?} = {v:?}: expected a port number 1..65535"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_names_and_bad_parameters_are_errors_with_a_reason() {
        let e = validate("nope", &Params::new()).expect_err("unknown");
        assert!(e.contains("nope") && e.contains("http_check"), "{e}");
        let e = validate("http_check", &Params::new()).expect_err("no url");
        assert!(e.contains("\"url\""), "{e}");
        let p = Params::from([
            ("url".into(), "http://x".into()),
            ("tmeout".into(), "1".into()),
        ]);
        let e = validate("http_check", &p).expect_err("typo");
        assert!(e.contains("tmeout"), "{e}");
        let p = Params::from([("host".into(), "x".into()), ("port".into(), "99999".into())]);
        let e = validate("tls_cert_expiry", &p).expect_err("port");
        assert!(e.contains("port"), "{e}");
        let p = Params::from([("path".into(), "relative".into())]);
        assert!(validate("file_age", &p).is_err());
    }

    #[tokio::test]
    async fn metrics_carry_the_target_so_two_items_make_distinct_series() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("f");
        std::fs::write(&path, "x").expect("write");
        let p = Params::from([("path".into(), path.display().to_string())]);
        let metrics = run("file_age", &p).await.expect("run");
        assert!(!metrics.is_empty());
        for m in metrics {
            assert_eq!(
                m.tags.get("path"),
                Some(&path.display().to_string()),
                "{m:?}"
            );
        }
    }
}
