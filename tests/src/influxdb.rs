//! A real InfluxDB 1.x (`/usr/bin/influxd`, Debian's `influxdb` package) on loopback, in a
//! temporary directory, for tests of the `influxdb` output.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{free_port, wait_until};

/// The server binary (override with `INFLUXD`).
pub fn influxd_bin() -> PathBuf {
    std::env::var_os("INFLUXD").map_or_else(|| PathBuf::from("/usr/bin/influxd"), PathBuf::from)
}

/// A running (or stopped) `influxd` with its data in a temporary directory; killed on drop.
pub struct Influx {
    dir: tempfile::TempDir,
    /// The HTTP port on 127.0.0.1.
    pub port: u16,
    child: Option<Child>,
}

impl Influx {
    /// Starts a fresh server on free loopback ports and waits until `/ping` answers.
    pub fn start() -> Influx {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let rpc = free_port();
        let root = dir.path().display().to_string();
        // Every listener on loopback and on its own port, so parallel tests do not collide
        // (the RPC service's default is 8088); nothing phones home; nothing else listens.
        let config = format!(
            r#"reporting-disabled = true
bind-address = "127.0.0.1:{rpc}"

[meta]
  dir = "{root}/meta"
  logging-enabled = false

[data]
  dir = "{root}/data"
  wal-dir = "{root}/wal"
  query-log-enabled = false

[monitor]
  store-enabled = false

[subscriber]
  enabled = false

[continuous_queries]
  enabled = false

[http]
  enabled = true
  bind-address = "127.0.0.1:{port}"
  log-enabled = false
  pprof-enabled = false

[logging]
  level = "warn"
  suppress-logo = true
"#
        );
        std::fs::write(dir.path().join("influxdb.conf"), config).expect("write influxd config");
        let mut influx = Influx {
            dir,
            port,
            child: None,
        };
        influx.resume();
        influx
    }

    /// The base URL for `output.url`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("influxd.log")).unwrap_or_default()
    }

    /// Starts the server again (after [`Influx::stop`]) on the same port and data.
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "influxd is already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("influxd.log"))
            .expect("influxd log");
        let child = Command::new(influxd_bin())
            .arg("run")
            .arg("-config")
            .arg(self.dir.path().join("influxdb.conf"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} (apt-get install influxdb): {e}",
                    influxd_bin().display()
                )
            });
        self.child = Some(child);
        let ping = format!("{}/ping", self.url());
        let up = wait_until(Duration::from_secs(30), || {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    panic!("influxd exited during start-up ({status}):\n{}", self.log());
                }
            }
            reqwest::blocking::get(&ping).is_ok_and(|r| r.status().as_u16() == 204)
        });
        assert!(
            up,
            "influxd did not answer /ping within 30 s:\n{}",
            self.log()
        );
    }

    /// Stops the server (SIGTERM, then SIGKILL after 10 s); its data stays.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let exited = wait_until(Duration::from_secs(10), || {
            matches!(child.try_wait(), Ok(Some(_)))
        });
        if !exited {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Runs an InfluxQL query against `db`; the answer's JSON.
    pub fn query(&self, db: &str, q: &str) -> serde_json::Value {
        reqwest::blocking::Client::new()
            .get(format!("{}/query", self.url()))
            .query(&[("db", db), ("q", q), ("epoch", "s")])
            .timeout(Duration::from_secs(30))
            .send()
            .and_then(|r| r.json())
            .unwrap_or(serde_json::Value::Null)
    }

    /// The rows of a query's first series as `[time, value...]` arrays (empty when none).
    pub fn rows(&self, db: &str, q: &str) -> Vec<Vec<serde_json::Value>> {
        let answer = self.query(db, q);
        answer["results"][0]["series"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|s| s["values"].as_array().cloned().unwrap_or_default())
            .filter_map(|row| row.as_array().cloned())
            .collect()
    }

    /// Databases on the server.
    pub fn databases(&self) -> Vec<String> {
        self.rows("", "SHOW DATABASES")
            .into_iter()
            .filter_map(|r| r.first().and_then(|v| v.as_str()).map(str::to_owned))
            .collect()
    }
}

impl Drop for Influx {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
