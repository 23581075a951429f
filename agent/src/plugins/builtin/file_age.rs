//! `file_age`: does a file exist, how old is it, how big (a backup, a heartbeat file, a spool).
//!
//! Parameters: `path` (required, absolute). Metrics: `exists` (1/0); when it exists,
//! `age_secs` (seconds since its last modification) and `size_bytes`.

use std::path::PathBuf;
use std::time::SystemTime;

use shared::Metric;

use super::{check_keys, required, Params};

fn parse(params: &Params) -> Result<PathBuf, String> {
    check_keys(params, &["path"])?;
    let p = PathBuf::from(required(params, "path")?);
    if !p.is_absolute() {
        return Err(format!(
            "parameter \"path\" = {:?}: must be an absolute path",
            p.display()
        ));
    }
    Ok(p)
}

/// Checks the parameters.
pub fn validate(params: &Params) -> Result<(), String> {
    parse(params).map(drop)
}

/// Looks at the file (off the async workers).
pub async fn run(params: Params) -> Result<Vec<Metric>, String> {
    let path = parse(&params)?;
    tokio::task::spawn_blocking(move || match std::fs::metadata(&path) {
        Ok(meta) => {
            let age = meta
                .modified()
                .ok()
                .and_then(|m| SystemTime::now().duration_since(m).ok())
                .map_or(0.0, |d| d.as_secs_f64());
            Ok(vec![
                Metric::new("exists", 1.0),
                Metric::new("age_secs", age.floor()),
                Metric::new("size_bytes", meta.len() as f64),
            ])
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(vec![Metric::new("exists", 0.0)]),
        Err(e) => Err(format!("cannot stat {}: {e}", path.display())),
    })
    .await
    .map_err(|e| format!("file_age task failed: {e}"))?
}
