//! `http_check`: one HTTP(S) request; is the endpoint up, what status, how long did it take.
//!
//! Parameters: `url` (required, http:// or https://), `method` (default `GET`),
//! `expect_status` (default `200`), `timeout` (seconds, default 5).
//! Metrics: `up` (1 when the answer came with the expected status, else 0), `status` (the HTTP
//! status, 0 when there was no answer), `latency_ms` (until the answer's headers; absent when
//! there was no answer). Redirects are not followed, so `status` is the endpoint's own.

use std::time::{Duration, Instant};

use shared::Metric;

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

/// Makes the request.
pub async fn run(params: Params) -> Result<Vec<Metric>, String> {
    let check = parse(&params)?;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(check.timeout)
        .build()
        .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
    let started = Instant::now();
    let answer = client.request(check.method, check.url).send().await;
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    Ok(match answer {
        Ok(resp) => {
            let status = resp.status().as_u16();
            vec![
                Metric::new("up", f64::from(u8::from(status == check.expect))),
                Metric::new("status", f64::from(status)),
                Metric::new("latency_ms", latency_ms),
            ]
        }
        Err(_) => vec![Metric::new("up", 0.0), Metric::new("status", 0.0)],
    })
}
