//! The `http` registry source: the lodastack registry protocol.
//!
//! ```text
//! POST {base}/api/v1/agent/ns   {"hostname": "...", "ip": "a,b", "sn": "..."}
//!   -> {"httpstatus": 200, "data": {"<ns>": "<resource id>", ...}}
//! GET  {base}/api/v1/agent/resource?ns=<ns>&type=collect
//!   -> {"httpstatus": 200, "data": [{"measurement_type": "PORT", "name": "...", ...}, ...]}
//! ```
//!
//! Any call that fails (unreachable, timeout, HTTP error, `httpstatus` other than 200, an answer
//! of the wrong shape) fails the whole refresh, so a flaky registry never makes a namespace
//! vanish; an item that cannot be read is skipped and reported, the rest of its namespace applies.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use futures_util::StreamExt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::collect::system::Family;
use crate::error_chain::error_chain;

use super::{BuiltinItem, Fetched, NamespacePlan, PluginItem, PortItem, ProcItem, RegistryError};

/// Path of the namespace call.
pub const NS_PATH: &str = "/api/v1/agent/ns";
/// Path of the per-namespace resource call.
pub const RESOURCE_PATH: &str = "/api/v1/agent/resource";
/// Path of the agent report.
pub const REPORT_PATH: &str = "/api/v1/agent/report";

/// Where the serial number is read from, when readable (often root only).
const SERIAL_FILE: &str = "/sys/class/dmi/id/product_serial";

/// How much of a bad answer is quoted in an error.
const SNIPPET: usize = 200;

/// The largest answer read from the registry (tens of thousands of items fit).
const MAX_ANSWER_BYTES: usize = 16 << 20;

/// This host, as the registry knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The agent's hostname.
    pub hostname: String,
    /// Non-loopback addresses, comma separated.
    pub ip: String,
    /// The machine's serial number, or empty.
    pub sn: String,
}

impl Identity {
    /// Reads this host's addresses and serial number (blocking: interface list and sysfs).
    pub fn of_this_host(hostname: &str) -> Identity {
        let sn = std::fs::read_to_string(SERIAL_FILE)
            .map(|s| s.trim().to_owned())
            .unwrap_or_default();
        Identity {
            hostname: hostname.to_owned(),
            ip: this_host_ips().join(","),
            sn,
        }
    }
}

/// This host's addresses, sorted, without loopback and IPv6 link-local ones (blocking: reads
/// the interface list).
pub fn this_host_ips() -> Vec<String> {
    let networks = sysinfo::Networks::new_with_refreshed_list();
    let mut ips: Vec<IpAddr> = networks
        .values()
        .flat_map(|data| data.ip_networks().iter().map(|n| n.addr))
        .filter(|ip| usable_ip(*ip))
        .collect();
    ips.sort();
    ips.dedup();
    ips.iter().map(IpAddr::to_string).collect()
}

/// Loopback and IPv6 link-local addresses say nothing about which host this is.
fn usable_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !v4.is_loopback() && !v4.is_unspecified(),
        IpAddr::V6(v6) => {
            !v6.is_loopback() && !v6.is_unspecified() && (v6.segments()[0] & 0xffc0) != 0xfe80
        }
    }
}

/// A lodastack registry server.
pub struct HttpSource {
    client: reqwest::Client,
    base: String,
    hostname: String,
}

/// The protocol's envelope around every answer.
#[derive(Deserialize)]
struct Envelope<T> {
    httpstatus: i64,
    #[serde(default = "Option::default")]
    data: Option<T>,
    #[serde(default)]
    msg: Option<Json>,
}

/// Namespaces whose items are fetched at the same time.
const NAMESPACES_AT_ONCE: usize = 4;

impl HttpSource {
    /// A source for the registry at `base`; each call may take at most `timeout`.
    pub fn new(base: &str, hostname: &str, timeout: Duration) -> Result<Self, RegistryError> {
        let base = base.trim_end_matches('/').to_owned();
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(|e| RegistryError::Unreachable {
                url: base.clone(),
                reason: format!("cannot build an HTTP client: {e}"),
            })?;
        Ok(HttpSource {
            client,
            base,
            hostname: hostname.to_owned(),
        })
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Asks for this host's namespaces, then each namespace's collect items.
    pub async fn fetch(&self) -> Result<Fetched, RegistryError> {
        let hostname = self.hostname.clone();
        let identity = tokio::task::spawn_blocking(move || Identity::of_this_host(&hostname))
            .await
            .map_err(|e| RegistryError::Unreachable {
                url: self.base.clone(),
                reason: format!("cannot read this host's addresses: {e}"),
            })?;
        let url = format!("{}{NS_PATH}", self.base);
        let namespaces: BTreeMap<String, Json> = self
            .call(self.client.post(&url).json(&identity), &url)
            .await?;
        // The resource id of this host in each namespace, for the agent report's `uuid`.
        let registered: BTreeMap<String, String> = namespaces
            .iter()
            .map(|(ns, id)| {
                let id = match id {
                    Json::String(s) => s.clone(),
                    Json::Null => String::new(),
                    other => other.to_string(),
                };
                (ns.clone(), id)
            })
            .collect();
        // A few namespaces at a time: a host in many namespaces behind a slow registry would
        // otherwise wait for each in turn, while a burst of one request per namespace could
        // flood the registry when a whole fleet refreshes. `buffered` keeps the registry's order.
        let url = format!("{}{RESOURCE_PATH}", self.base);
        let mut answers = futures_util::stream::iter(namespaces.into_keys())
            .map(|ns: String| {
                let request = self
                    .client
                    .get(&url)
                    .query(&[("ns", ns.as_str()), ("type", "collect")]);
                let shown = format!("{url}?ns={ns}");
                async move {
                    let items: Result<Vec<Json>, _> = self.call(request, &shown).await;
                    (ns, items)
                }
            })
            .buffered(NAMESPACES_AT_ONCE);
        let mut fetched = Fetched {
            registered,
            ..Fetched::default()
        };
        let mut first_error = None;
        while let Some((ns, answer)) = answers.next().await {
            match answer {
                Ok(items) => {
                    let (plan, problems) = convert_items(&ns, &items);
                    fetched.problems.extend(problems);
                    fetched.plan.namespaces.insert(ns, plan);
                }
                Err(e) => {
                    fetched.unavailable.insert(ns, e.to_string());
                    first_error.get_or_insert(e);
                }
            }
        }
        // One namespace that fails is that namespace's problem; all of them failing is the
        // registry's, and fails the refresh like a failed namespace call.
        match first_error {
            Some(e) if fetched.plan.namespaces.is_empty() => Err(e),
            _ => Ok(fetched),
        }
    }

    /// Sends the agent report (`POST {base}/api/v1/agent/report`); any answer but HTTP 2xx
    /// with `httpstatus` 200 is an error.
    pub async fn report(&self, report: &super::report::Report) -> Result<(), RegistryError> {
        let url = format!("{}{REPORT_PATH}", self.base);
        let _: Json = self.call(self.client.post(&url).json(report), &url).await?;
        Ok(())
    }

    /// Sends a request and unwraps the envelope; `shown` names the call in errors.
    async fn call<T: DeserializeOwned + Default>(
        &self,
        request: reqwest::RequestBuilder,
        shown: &str,
    ) -> Result<T, RegistryError> {
        let unreachable = |e: reqwest::Error| RegistryError::Unreachable {
            url: shown.to_owned(),
            reason: if e.is_timeout() {
                "no answer within registry.timeout_secs".to_owned()
            } else {
                error_chain(&e)
            },
        };
        let bad = |reason: String| RegistryError::BadAnswer {
            url: shown.to_owned(),
            reason,
        };
        let mut resp = request.send().await.map_err(unreachable)?;
        let status = resp.status();
        // Bounded: a registry that streams without end must not take the agent's memory.
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(unreachable)? {
            if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(bad(format!(
                    "the answer is larger than {} MiB; not read",
                    MAX_ANSWER_BYTES >> 20
                )));
            }
            body.extend_from_slice(&chunk);
        }
        if !status.is_success() {
            return Err(bad(format!(
                "answered HTTP {status}: {}",
                snippet(&String::from_utf8_lossy(&body))
            )));
        }
        let envelope: Envelope<T> = serde_json::from_slice(&body).map_err(|e| {
            bad(format!(
                "the answer is not the registry protocol ({e}): {}",
                snippet(&String::from_utf8_lossy(&body))
            ))
        })?;
        if envelope.httpstatus != 200 {
            let msg = envelope
                .msg
                .map(|m| match m {
                    Json::String(s) => s,
                    other => other.to_string(),
                })
                .unwrap_or_default();
            return Err(bad(format!(
                "answered httpstatus {} {}",
                envelope.httpstatus,
                snippet(&msg)
            )));
        }
        Ok(envelope.data.unwrap_or_default())
    }
}

fn snippet(text: &str) -> String {
    let text = text.trim();
    match text.char_indices().nth(SNIPPET) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text.to_owned(),
    }
}

/// Converts one namespace's items; an item that cannot be read is skipped with a reason.
pub fn convert_items(ns: &str, items: &[Json]) -> (NamespacePlan, Vec<String>) {
    let mut plan = NamespacePlan::default();
    let mut problems = Vec::new();
    for (i, item) in items.iter().enumerate() {
        if let Err(e) = convert_item(item, &mut plan) {
            problems.push(format!(
                "namespace {ns:?}: item {i} {} skipped: {e}",
                snippet(&item.to_string())
            ));
        }
    }
    (plan, problems)
}

/// An item's fields as strings; the protocol sends strings, numbers and booleans are taken too.
fn fields(item: &Json) -> Result<BTreeMap<String, String>, String> {
    let Json::Object(map) = item else {
        return Err("an item must be an object of strings".into());
    };
    let mut out = BTreeMap::new();
    for (k, v) in map {
        let s = match v {
            Json::String(s) => s.clone(),
            Json::Number(n) => n.to_string(),
            Json::Bool(b) => b.to_string(),
            Json::Null => continue,
            Json::Array(_) | Json::Object(_) => {
                return Err(format!("{k:?} must be a string, not {v}"));
            }
        };
        out.insert(k.clone(), s);
    }
    Ok(out)
}

fn convert_item(item: &Json, plan: &mut NamespacePlan) -> Result<(), String> {
    let mut f = fields(item)?;
    let kind = f
        .remove("measurement_type")
        .ok_or("it has no measurement_type")?;
    let required = |f: &mut BTreeMap<String, String>, key: &str| -> Result<String, String> {
        match f.remove(key) {
            Some(v) if !v.trim().is_empty() => Ok(v.trim().to_owned()),
            _ => Err(format!("{kind} item needs {key:?}")),
        }
    };
    let number = |f: &mut BTreeMap<String, String>, key: &str| -> Result<Option<u64>, String> {
        match f.remove(key) {
            None => Ok(None),
            Some(v) if v.trim().is_empty() => Ok(None),
            Some(v) => v
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| format!("{key} {v:?} is not a whole number of seconds")),
        }
    };
    match kind.as_str() {
        "PLUGIN" => {
            let git = required(&mut f, "git")?;
            let interval = number(&mut f, "interval")?.ok_or("PLUGIN item needs \"interval\"")?;
            plan.plugins.push(PluginItem {
                git,
                interval,
                parameters: f.remove("parameters").unwrap_or_default(),
                branch: f.remove("branch").filter(|b| !b.trim().is_empty()),
            });
        }
        "GOPLUGIN" => {
            let name = required(&mut f, "name")?;
            let interval = number(&mut f, "interval")?.ok_or("GOPLUGIN item needs \"interval\"")?;
            plan.builtins.push(BuiltinItem {
                name,
                interval,
                params: f,
            });
        }
        "PORT" => {
            let name = required(&mut f, "name")?;
            let port = required(&mut f, "port")?;
            let port: u16 = port
                .parse()
                .map_err(|_| format!("port {port:?} is not a port number (1-65535)"))?;
            // What the item leaves out defaults as in the registry file, so both sources agree.
            plan.ports.push(PortItem {
                name,
                port,
                connect_timeout: number(&mut f, "connect_timeout")?
                    .unwrap_or_else(super::default_connect_timeout),
                interval: number(&mut f, "interval")?.unwrap_or_else(super::default_check_interval),
                host: f.remove("host").filter(|h| !h.trim().is_empty()),
            });
        }
        "PROC" => {
            let name = required(&mut f, "name")?;
            let bin_path = required(&mut f, "bin_path")?;
            plan.procs.push(ProcItem {
                name,
                bin_path,
                interval: number(&mut f, "interval")?.unwrap_or_else(super::default_check_interval),
            });
        }
        family if Family::from_name(family).is_some() => {
            let interval =
                number(&mut f, "interval")?.ok_or(format!("{family} item needs \"interval\""))?;
            plan.intervals.insert(family.to_owned(), interval);
        }
        other => return Err(format!("unknown measurement_type {other:?}")),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn convert(items: Json) -> (NamespacePlan, Vec<String>) {
        let Json::Array(items) = items else {
            panic!("test items must be a list");
        };
        convert_items("web.shop", &items)
    }

    #[tokio::test]
    async fn namespaces_are_fetched_a_few_at_a_time_and_all_arrive() {
        use support::registry_server::{Behaviour, RegistryServer};
        let server = RegistryServer::start();
        let names: Vec<String> = (0..10).map(|i| format!("fleet.ns{i:02}")).collect();
        for ns in &names {
            server.set_namespace(ns, json!([]));
        }
        // Slow enough that requests sent together are answered together.
        server.set_behaviour(Behaviour::Slow(Duration::from_millis(300)));
        let source =
            HttpSource::new(&server.url(), "host", Duration::from_secs(10)).expect("source");
        let fetched = source.fetch().await.expect("fetch");
        let got: Vec<&String> = fetched.plan.namespaces.keys().collect();
        assert_eq!(got, names.iter().collect::<Vec<_>>());
        let most = server.most_concurrent_resource_requests();
        assert!(
            (2..=NAMESPACES_AT_ONCE).contains(&most),
            "{most} namespace requests at once"
        );
    }

    #[tokio::test]
    async fn a_namespace_whose_call_fails_is_unavailable_and_all_failing_is_an_error() {
        use support::registry_server::{Behaviour, RegistryServer};
        let server = RegistryServer::start();
        server.set_namespace(
            "ok.ns",
            json!([{"measurement_type": "CPU", "interval": "5"}]),
        );
        server.set_namespace("bad.ns", json!([]));
        server.set_namespace_behaviour("bad.ns", Behaviour::BadJson);
        let source =
            HttpSource::new(&server.url(), "host", Duration::from_secs(5)).expect("source");
        let fetched = source.fetch().await.expect("one namespace answered");
        assert_eq!(fetched.plan.namespace_names(), ["ok.ns"]);
        assert_eq!(
            fetched.unavailable.keys().collect::<Vec<_>>(),
            ["bad.ns"],
            "{fetched:?}"
        );
        assert!(
            fetched.unavailable["bad.ns"].contains("ns=bad.ns")
                && fetched.unavailable["bad.ns"].contains("not the registry protocol"),
            "{fetched:?}"
        );

        server.set_namespace_behaviour("ok.ns", Behaviour::HttpError(503));
        let e = source.fetch().await.expect_err("no namespace answered");
        assert!(
            e.to_string().contains("HTTP 503")
                || e.to_string().contains("not the registry protocol"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn an_answer_past_the_bound_is_refused_not_read_whole() {
        use support::registry_server::{Behaviour, RegistryServer};
        let server = RegistryServer::start();
        server.set_behaviour(Behaviour::Oversized(MAX_ANSWER_BYTES + 1));
        let source =
            HttpSource::new(&server.url(), "host", Duration::from_secs(20)).expect("source");
        let e = source.fetch().await.expect_err("too large");
        assert!(e.to_string().contains("larger than 16 MiB"), "{e}");
    }

    #[test]
    fn every_item_kind_maps_to_the_plan() {
        let (plan, problems) = convert(json!([
            {"measurement_type": "PLUGIN", "name": "nginx", "git": "https://g/ops/nginx-stats.git",
             "interval": "30", "parameters": "-v -x", "branch": "stable"},
            {"measurement_type": "GOPLUGIN", "name": "http_check", "interval": "15",
             "url": "http://127.0.0.1/health", "expect": "200"},
            {"measurement_type": "PORT", "name": "nginx", "port": "80", "connect_timeout": "2"},
            {"measurement_type": "PORT", "name": "db", "port": "5432", "host": "10.0.0.2",
             "interval": "5", "connect_timeout": "1"},
            {"measurement_type": "PROC", "name": "nginx", "bin_path": "/usr/sbin/nginx"},
            {"measurement_type": "CPU", "interval": "5"},
            {"measurement_type": "FS", "interval": 600},
        ]));
        assert_eq!(problems, Vec::<String>::new());
        assert_eq!(
            plan.plugins,
            [PluginItem {
                git: "https://g/ops/nginx-stats.git".into(),
                interval: 30,
                parameters: "-v -x".into(),
                branch: Some("stable".into()),
            }]
        );
        assert_eq!(plan.builtins[0].name, "http_check");
        assert_eq!(plan.builtins[0].interval, 15);
        assert_eq!(
            plan.builtins[0].params,
            BTreeMap::from([
                ("expect".to_owned(), "200".to_owned()),
                ("url".to_owned(), "http://127.0.0.1/health".to_owned())
            ]),
            "other keys are the parameters"
        );
        assert_eq!(
            plan.ports[0],
            PortItem {
                name: "nginx".into(),
                port: 80,
                connect_timeout: 2,
                host: None,
                interval: 30
            }
        );
        assert_eq!(plan.ports[1].host.as_deref(), Some("10.0.0.2"));
        assert_eq!(plan.ports[1].interval, 5);
        assert_eq!(plan.procs[0].bin_path, "/usr/sbin/nginx");
        assert_eq!(plan.procs[0].interval, 30);
        assert_eq!(
            plan.intervals,
            BTreeMap::from([("CPU".to_owned(), 5), ("FS".to_owned(), 600)])
        );
    }

    #[test]
    fn bad_items_are_skipped_with_a_reason_and_the_rest_applies() {
        let (plan, problems) = convert(json!([
            {"measurement_type": "PORT", "name": "a", "port": "http"},
            {"measurement_type": "PORT", "name": "b", "port": "70000"},
            {"measurement_type": "PLUGIN", "git": "https://g/x.git", "interval": "often"},
            {"measurement_type": "SNMP", "interval": "10"},
            {"name": "no type"},
            "not an object",
            {"measurement_type": "PROC", "name": "p", "bin_path": ["a"]},
            {"measurement_type": "PROC", "name": "p"},
            {"measurement_type": "PORT", "name": "ok", "port": "22"},
        ]));
        assert_eq!(plan.ports.len(), 1);
        assert_eq!(plan.ports[0].name, "ok");
        assert!(plan.plugins.is_empty() && plan.procs.is_empty());
        let expected = [
            "port \"http\" is not a port number",
            "port \"70000\" is not a port number",
            "interval \"often\" is not a whole number",
            "unknown measurement_type \"SNMP\"",
            "it has no measurement_type",
            "an item must be an object",
            "\"bin_path\" must be a string",
            "PROC item needs \"bin_path\"",
        ];
        assert_eq!(problems.len(), expected.len(), "{problems:#?}");
        for (p, e) in problems.iter().zip(expected) {
            assert!(
                p.contains(e) && p.starts_with("namespace \"web.shop\": item "),
                "{p:?} should say {e:?}"
            );
        }
    }

    #[test]
    fn identity_lists_no_loopback_address() {
        let id = Identity::of_this_host("h1");
        assert_eq!(id.hostname, "h1");
        for ip in id.ip.split(',').filter(|s| !s.is_empty()) {
            let ip: IpAddr = ip.parse().expect("an address");
            assert!(!ip.is_loopback(), "{ip} is loopback");
        }
    }

    #[test]
    fn link_local_and_loopback_are_not_usable() {
        assert!(!usable_ip("127.0.0.1".parse().expect("ip")));
        assert!(!usable_ip("::1".parse().expect("ip")));
        assert!(!usable_ip("fe80::1".parse().expect("ip")));
        assert!(usable_ip("10.1.2.3".parse().expect("ip")));
        assert!(usable_ip("2001:db8::1".parse().expect("ip")));
    }
}
