//! Hosts from the lodastack registry: the machines of a namespace.
//!
//! ```text
//! GET {url}/api/v1/resource?ns=<ns>&type=machine
//!   -> {"httpstatus": 200, "data": [{"hostname": "web-1", "ip": "10.0.0.1", ...}, ...]}
//! ```
//!
//! The registry answers a non-leaf namespace with the machines of every leaf below it. Each
//! machine becomes a [`Host`] named by its `hostname`, reached at `hostname:port` (or, with
//! [`Connect::Ip`], at the first address of its `ip` field). A machine without a usable name is
//! skipped and reported; an answer that is not the protocol fails the whole call.

use std::time::Duration;

use serde_json::Value;

use super::inventory::{normalize_addr, Host};

/// Path of the machine list.
pub const RESOURCE_PATH: &str = "/api/v1/resource";

/// The largest answer read (a machine is a few hundred bytes; 64 MiB is ~100,000 of them).
pub const MAX_ANSWER_BYTES: usize = 64 * 1024 * 1024;

/// How long the registry may take to answer.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// Which field of a machine gives the address to connect to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Connect {
    /// `hostname` (resolved by the jump box's DNS).
    #[default]
    Hostname,
    /// The first address in `ip` (comma- or space-separated), for fleets whose hostnames do not
    /// resolve where agentctl runs.
    Ip,
}

/// The machines of `ns`, with the registry's skipped entries (each with why).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machines {
    /// One per distinct hostname, in the registry's order.
    pub hosts: Vec<Host>,
    /// Entries that could not be used.
    pub skipped: Vec<String>,
}

/// Why the machine list could not be had.
#[derive(Debug, thiserror::Error)]
#[error("registry {url}: {reason}")]
pub struct RegistryError {
    /// The URL asked.
    pub url: String,
    /// What went wrong.
    pub reason: String,
}

/// Asks the registry at `base` for the machines of `ns`; each reached on `port`.
pub async fn machines(
    base: &str,
    ns: &str,
    port: u16,
    connect: Connect,
) -> Result<Machines, RegistryError> {
    let base = base.trim_end_matches('/');
    let url = format!("{base}{RESOURCE_PATH}");
    let err = |reason: String| RegistryError {
        url: format!("{url}?ns={ns}&type=machine"),
        reason,
    };
    if !base.starts_with("http://") && !base.starts_with("https://") {
        return Err(err(
            "the registry URL must start with http:// or https://".into()
        ));
    }
    let http = reqwest::Client::builder()
        .timeout(TIMEOUT)
        .build()
        .map_err(|e| err(format!("cannot build an HTTP client: {e}")))?;
    let mut resp = http
        .get(&url)
        .query(&[("ns", ns), ("type", "machine")])
        .send()
        .await
        .map_err(|e| err(format!("cannot reach it: {}", chain(&e))))?;
    let status = resp.status();
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| err(format!("the answer broke off: {}", chain(&e))))?
    {
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(err(format!(
                "the answer is larger than {} MiB",
                MAX_ANSWER_BYTES / 1024 / 1024
            )));
        }
        body.extend_from_slice(&chunk);
    }
    if !status.is_success() {
        return Err(err(format!(
            "answered HTTP {status}: {}",
            snippet(&String::from_utf8_lossy(&body))
        )));
    }
    parse(&body, ns, port, connect).map_err(err)
}

/// Reads the registry's answer (the envelope and its machine list).
pub fn parse(body: &[u8], ns: &str, port: u16, connect: Connect) -> Result<Machines, String> {
    let answer: Value = serde_json::from_slice(body).map_err(|e| {
        format!(
            "the answer is not JSON ({e}): {}",
            snippet(&String::from_utf8_lossy(body))
        )
    })?;
    let code = answer.get("httpstatus").and_then(Value::as_i64);
    if code != Some(200) {
        let msg = answer
            .get("msg")
            .map(|m| {
                m.as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| m.to_string())
            })
            .unwrap_or_default();
        return Err(match code {
            Some(c) => format!("httpstatus {c}: {}", snippet(&msg)),
            None => "the answer has no httpstatus; is this a lodastack registry?".into(),
        });
    }
    let items = match answer.get("data") {
        Some(Value::Array(items)) => items.as_slice(),
        Some(Value::Null) | None => &[],
        Some(other) => {
            return Err(format!(
                "data is not a list of machines: {}",
                snippet(&other.to_string())
            ))
        }
    };
    let mut hosts: Vec<Host> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut skipped = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let name = item
            .get("hostname")
            .and_then(Value::as_str)
            .map(str::trim)
            .unwrap_or("");
        if name.is_empty() {
            skipped.push(format!("machine #{}: no hostname", i + 1));
            continue;
        }
        let target = match connect {
            Connect::Hostname => name.to_owned(),
            Connect::Ip => match item
                .get("ip")
                .and_then(Value::as_str)
                .and_then(|ips| ips.split([',', ' ']).map(str::trim).find(|s| !s.is_empty()))
            {
                Some(ip) if ip.contains(':') && !ip.starts_with('[') => format!("[{ip}]"),
                Some(ip) => ip.to_owned(),
                None => {
                    skipped.push(format!("machine {name:?}: no ip"));
                    continue;
                }
            },
        };
        // The registry gives a host, never a port: --port applies to all.
        if !target.starts_with('[') && target.contains(':') {
            skipped.push(format!("machine {name:?}: {target:?} holds a port"));
            continue;
        }
        let addr = match normalize_addr(&target, port) {
            Ok(a) => a,
            Err(e) => {
                skipped.push(format!("machine {name:?}: {e}"));
                continue;
            }
        };
        if name.chars().any(char::is_control) || name.chars().count() > 255 {
            skipped.push(format!("machine #{}: the hostname is not a name", i + 1));
            continue;
        }
        if !seen.insert(name.to_owned()) {
            continue;
        }
        hosts.push(Host {
            name: name.to_owned(),
            addr,
            token: None,
            namespaces: vec![ns.to_owned()],
        });
    }
    Ok(Machines { hosts, skipped })
}

fn snippet(text: &str) -> String {
    let t: String = text.trim().chars().take(200).collect();
    if t.len() < text.trim().len() {
        format!("{t}...")
    } else {
        t
    }
}

fn chain(err: &reqwest::Error) -> String {
    use std::error::Error as _;
    let mut reason = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        reason = s.to_string();
        source = s.source();
    }
    reason
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_machines_dedups_and_skips_bad_entries() {
        let body = br#"{"httpstatus": 200, "data": [
            {"hostname": "web-1", "ip": "10.0.0.1,10.0.0.9"},
            {"hostname": "web-2", "ip": "10.0.0.2"},
            {"hostname": "web-1", "ip": "10.0.0.1"},
            {"ip": "10.0.0.3"},
            {"hostname": "bad host", "ip": "10.0.0.4"},
            {"hostname": "web-5"}
        ]}"#;
        let m = parse(body, "web.prod", 1300, Connect::Hostname).expect("valid");
        let got: Vec<(&str, &str)> = m
            .hosts
            .iter()
            .map(|h| (h.name.as_str(), h.addr.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("web-1", "web-1:1300"),
                ("web-2", "web-2:1300"),
                ("web-5", "web-5:1300")
            ]
        );
        assert_eq!(m.skipped.len(), 2, "{:?}", m.skipped);
        assert_eq!(m.hosts[0].namespaces, ["web.prod"]);

        let m = parse(body, "web.prod", 1300, Connect::Ip).expect("valid");
        let got: Vec<&str> = m.hosts.iter().map(|h| h.addr.as_str()).collect();
        assert_eq!(got, ["10.0.0.1:1300", "10.0.0.2:1300", "10.0.0.4:1300"]);
        assert!(
            m.skipped.iter().any(|s| s.contains("web-5")),
            "{:?}",
            m.skipped
        );
    }

    #[test]
    fn protocol_errors_fail_the_call() {
        for (body, needle) in [
            (
                &br#"{"httpstatus": 404, "msg": "no such ns", "data": null}"#[..],
                "no such ns",
            ),
            (br#"{"data": []}"#, "no httpstatus"),
            (br#"{"httpstatus": 200, "data": "x"}"#, "not a list"),
            (b"<html>", "not JSON"),
        ] {
            let err = parse(body, "n", 1, Connect::Hostname).expect_err("bad answer");
            assert!(err.contains(needle), "{err}");
        }
        let empty = parse(
            br#"{"httpstatus": 200, "data": null}"#,
            "n",
            1,
            Connect::Hostname,
        )
        .expect("an empty namespace is an answer");
        assert!(empty.hosts.is_empty());
    }
}
