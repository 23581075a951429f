//! `http_check`: one HTTP(S) request; is the endpoint up, what status, how long did it take.
//!
//! Parameters: `url` (required, http:// or https://), `method` (default `GET`),
//! `expect_status` (default `200`), `timeout` (seconds, default 5).
//! Metrics: `up` (1 when the answer came with the expected status, else 0), `status` (the HTTP
//! status, 0 when there was no answer), `latency_ms` (until the answer's headers; absent when
//! there was no answer). Every metric carries a `result` tag saying how the run went (see
//! [`outcome`]). Redirects are not followed, so `status` is the endpoint's own.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use shared::Metric;
use tracing::debug;

use crate::error_chain::{error_chain, sources};

use super::{check_keys, required, timeout, Params};

const KEYS: &[&str] = &["url", "method", "expect_status", "timeout"];
const METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"];

struct Check {
    url: reqwest::Url,
    method: reqwest::Method,
    expect: u16,
    timeout: Duration,
}

fn parse(params: &Params) -> Result<Check, String> {
    check_keys(params, KEYS)?;
    let raw = required(params, "url")?;
    let url = reqwest::Url::parse(raw).map_err(|e| format!("parameter \"url\" = {raw:?}: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "parameter \"url\" = {raw:?}: only http:// and https:// are checked"
        ));
    }
    let m = params
        .get("method")
        .map_or("GET", |s| s.trim())
        .to_ascii_uppercase();
    if !METHODS.contains(&m.as_str()) {
        return Err(format!(
            "parameter \"method\" = {m:?}: expected one of {}",
            METHODS.join(", ")
        ));
    }
    let method = reqwest::Method::from_bytes(m.as_bytes()).map_err(|e| e.to_string())?;
    let expect = match params.get("expect_status") {
        None => 200,
        Some(v) => match v.trim().parse::<u16>() {
            Ok(s) if (100..=599).contains(&s) => s,
            _ => {
                return Err(format!(
                    "parameter \"expect_status\" = {v:?}: expected an HTTP status 100..599"
                ))
            }
        },
    };
    Ok(Check {
        url,
        method,
        expect,
        timeout: timeout(params, "timeout", Duration::from_secs(5))?,
    })
}

/// Checks the parameters.
pub fn validate(params: &Params) -> Result<(), String> {
    parse(params).map(drop)
}

/// One client for every check: building one loads the whole trust store, which is worth doing
/// once, not on every run. Timeouts are per request.
fn client() -> Result<&'static reqwest::Client, String> {
    static CLIENT: OnceLock<Result<reqwest::Client, String>> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .map_err(|e| format!("cannot build an HTTP client: {e}"))
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// Makes the request.
pub async fn run(params: Params) -> Result<Vec<Metric>, String> {
    let check = parse(&params)?;
    let client = client()?;
    let started = Instant::now();
    let answer = client
        .request(check.method, check.url.clone())
        .timeout(check.timeout)
        .send()
        .await;
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    let (metrics, result) = match answer {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let up = status == check.expect;
            let metrics = vec![
                Metric::new("up", f64::from(u8::from(up))),
                Metric::new("status", f64::from(status)),
                Metric::new("latency_ms", latency_ms),
            ];
            (metrics, if up { "ok" } else { "unexpected_status" })
        }
        Err(e) => {
            let result = outcome(&e);
            debug!(url = %check.url, result, error = %error_chain(&e), "http_check got no answer.");
            let metrics = vec![Metric::new("up", 0.0), Metric::new("status", 0.0)];
            (metrics, result)
        }
    };
    Ok(metrics
        .into_iter()
        .map(|m| m.tag("result", result))
        .collect())
}

/// Why there was no answer, as a tag value a dashboard can group by: `timeout`, `tls_error`
/// (handshake or certificate refused), `connection_failed` (refused, unreachable, DNS), or
/// `request_failed` (the connection broke during the exchange).
fn outcome(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        return "timeout";
    }
    if sources(e).any(is_tls) {
        return "tls_error";
    }
    if e.is_connect() {
        "connection_failed"
    } else {
        "request_failed"
    }
}

/// rustls' errors reach here wrapped in `io::Error`s (two deep with hyper-rustls), whose `source`
/// skips the wrapped error itself, so look inside them.
fn is_tls(e: &(dyn std::error::Error + 'static)) -> bool {
    if e.is::<rustls::Error>() {
        return true;
    }
    e.downcast_ref::<std::io::Error>()
        .and_then(std::io::Error::get_ref)
        .is_some_and(|inner| is_tls(inner))
}
