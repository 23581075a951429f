//! Which plugins are disabled, and until when; kept in `{data_dir}/plugins-state.json` so it
//! survives restarts.
//!
//! Only disabled plugins are recorded: a plugin is enabled unless it has an entry whose
//! `disabled_until` lies in the future, so an expired entry re-enables it without any timer.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The file name under `data_dir`.
pub const FILE_NAME: &str = "plugins-state.json";

/// Why the state file could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("plugin state file {path}: {message}")]
pub struct StateError {
    /// The file.
    pub path: PathBuf,
    /// What went wrong.
    pub message: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct OnDisk {
    /// `ns` -> project -> unix time the plugin re-enables itself.
    disabled: BTreeMap<String, BTreeMap<String, i64>>,
}

/// Disabled plugins, by (ns, project).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PluginStates {
    disabled: BTreeMap<String, BTreeMap<String, i64>>,
}

impl PluginStates {
    /// Reads the state file; a missing file is an empty state.
    pub fn load(path: &Path) -> Result<PluginStates, StateError> {
        let err = |message: String| StateError {
            path: path.to_owned(),
            message,
        };
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(PluginStates::default())
            }
            Err(e) => return Err(err(format!("cannot read it: {e}"))),
        };
        let disk: OnDisk = serde_json::from_str(&text)
            .map_err(|e| err(format!("not a plugin state document: {e}")))?;
        Ok(PluginStates {
            disabled: disk.disabled,
        })
    }

    /// Writes the state atomically (a temporary file beside it, fsynced, renamed over).
    pub fn save(&self, path: &Path) -> Result<(), StateError> {
        let err = |message: String| StateError {
            path: path.to_owned(),
            message,
        };
        let dir = path
            .parent()
            .ok_or_else(|| err("has no parent directory".to_owned()))?;
        crate::files::create_dir_all(dir, crate::files::PASS_DIR)
            .map_err(|e| err(format!("cannot create its folder: {e}")))?;
        let disk = OnDisk {
            disabled: self.disabled.clone(),
        };
        let body = serde_json::to_vec_pretty(&disk).map_err(|e| err(e.to_string()))?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir)
            .map_err(|e| err(format!("cannot create a temporary file: {e}")))?;
        tmp.write_all(&body)
            .and_then(|()| tmp.as_file().sync_all())
            .map_err(|e| err(format!("cannot write: {e}")))?;
        tmp.persist(path)
            .map_err(|e| err(format!("cannot rename into place: {}", e.error)))?;
        Ok(())
    }

    /// When the plugin re-enables itself, if it is disabled at `now`.
    pub fn disabled_until(&self, ns: &str, project: &str, now: i64) -> Option<i64> {
        self.disabled
            .get(ns)
            .and_then(|m| m.get(project))
            .copied()
            .filter(|&until| until > now)
    }

    /// Whether the plugin is enabled at `now`.
    pub fn is_enabled(&self, ns: &str, project: &str, now: i64) -> bool {
        self.disabled_until(ns, project, now).is_none()
    }

    /// Disables the plugin until `until`.
    pub fn disable(&mut self, ns: &str, project: &str, until: i64) {
        self.disabled
            .entry(ns.to_owned())
            .or_default()
            .insert(project.to_owned(), until);
    }

    /// Enables the plugin; returns whether it was disabled.
    pub fn enable(&mut self, ns: &str, project: &str) -> bool {
        let Some(m) = self.disabled.get_mut(ns) else {
            return false;
        };
        let was = m.remove(project).is_some();
        if m.is_empty() {
            self.disabled.remove(ns);
        }
        was
    }

    /// Drops entries that expired before `now`; returns whether anything changed.
    pub fn prune(&mut self, now: i64) -> bool {
        let before = self.disabled.values().map(BTreeMap::len).sum::<usize>();
        for m in self.disabled.values_mut() {
            m.retain(|_, until| *until > now);
        }
        self.disabled.retain(|_, m| !m.is_empty());
        before != self.disabled.values().map(BTreeMap::len).sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disabled_until_a_time_then_enabled_again_and_saved_across_loads() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join(FILE_NAME);
        let mut s = PluginStates::load(&path).expect("missing file is empty");
        assert!(s.is_enabled("ns", "p", 100));
        s.disable("ns", "p", 200);
        assert!(!s.is_enabled("ns", "p", 150));
        assert_eq!(s.disabled_until("ns", "p", 150), Some(200));
        assert!(
            s.is_enabled("ns", "p", 200),
            "re-enabled when the time is up"
        );
        s.save(&path).expect("save");
        let back = PluginStates::load(&path).expect("load");
        assert_eq!(back, s);
        let mut back = back;
        assert!(back.enable("ns", "p"));
        assert!(!back.enable("ns", "p"));
        assert!(back.is_enabled("ns", "p", 150));
    }

    #[test]
    fn a_corrupt_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join(FILE_NAME);
        std::fs::write(&path, "{not json").expect("write");
        let e = PluginStates::load(&path).expect_err("corrupt");
        assert!(e.to_string().contains(FILE_NAME), "{e}");
    }
}
