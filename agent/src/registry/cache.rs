//! The on-disk copy of the last good plan, so an agent that starts while its registry is down
//! runs what it ran before.
//!
//! One JSON file, `{data_dir}/registry-cache.json`, replaced atomically (write, fsync, rename).
//! It records which source wrote it: a cache from another source is not used.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::Plan;

/// Bumped when the file's shape changes; other versions are ignored.
const VERSION: u32 = 1;

/// The cache file under a data directory.
pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join("registry-cache.json")
}

#[derive(Serialize, Deserialize)]
struct CacheFile {
    version: u32,
    /// `Source::describe()` of the source that answered.
    source: String,
    /// Unix time it was written.
    saved_at: i64,
    plan: Plan,
}

/// A plan read back from the cache.
#[derive(Debug, Clone, PartialEq)]
pub struct Cached {
    /// The plan.
    pub plan: Plan,
    /// Unix time it was saved.
    pub saved_at: i64,
}

/// Reads the cache written by `source`. `Ok(None)` when there is none (or it is another
/// source's); an error when the file exists but cannot be used.
pub fn load(path: &Path, source: &str) -> Result<Option<Cached>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("registry cache {}: {e}", path.display())),
    };
    let file: CacheFile = serde_json::from_str(&text)
        .map_err(|e| format!("registry cache {}: unreadable ({e})", path.display()))?;
    if file.version != VERSION || file.source != source {
        return Ok(None);
    }
    Ok(Some(Cached {
        plan: file.plan,
        saved_at: file.saved_at,
    }))
}

/// Replaces the cache with `plan`; a crash leaves either the old or the new file, never half.
pub fn store(path: &Path, source: &str, plan: &Plan) -> Result<(), String> {
    let file = CacheFile {
        version: VERSION,
        source: source.to_owned(),
        saved_at: crate::pipeline::normalize::now_secs(),
        plan: plan.clone(),
    };
    let err = |e: std::io::Error| format!("registry cache {}: {e}", path.display());
    let json = serde_json::to_vec_pretty(&file)
        .map_err(|e| format!("registry cache {}: {e}", path.display()))?;
    write_atomic(path, &json).map_err(err)
}

/// Replaces the file at `path` with `bytes` (temporary file beside it, fsync, rename): a crash
/// leaves the old or the new file, never half of one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        crate::files::create_dir_all(dir, crate::files::PASS_DIR)?;
    }
    let mut name = path.as_os_str().to_owned();
    name.push(".tmp");
    let tmp = PathBuf::from(name);
    let mut f = crate::files::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{NamespacePlan, PortItem};

    fn plan() -> Plan {
        let mut ns = NamespacePlan::default();
        ns.ports.push(PortItem {
            name: "ssh".into(),
            port: 22,
            connect_timeout: 3,
            host: None,
            interval: 30,
        });
        Plan {
            namespaces: [("a.b".to_owned(), ns)].into(),
        }
    }

    #[test]
    fn round_trip_and_other_sources_are_ignored() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = path(dir.path());
        assert_eq!(load(&p, "file x").expect("no file"), None);
        store(&p, "http http://r", &plan()).expect("store");
        let back = load(&p, "http http://r").expect("load").expect("cached");
        assert_eq!(back.plan, plan());
        assert_eq!(load(&p, "file x").expect("other source"), None);
    }

    #[test]
    fn a_corrupt_cache_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = path(dir.path());
        std::fs::write(&p, "{not json").expect("write");
        let err = load(&p, "file x").expect_err("corrupt");
        assert!(err.contains("registry-cache.json"), "{err}");
    }
}
