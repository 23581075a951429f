//! `tls_cert_expiry`: days until the certificate a TLS server presents expires.
//!
//! Parameters: `host` (required), `port` (default 443), `server_name` (SNI, default `host`),
//! `timeout` (seconds, default 5). Metrics: `days_left` (fractional; negative once expired) and
//! `expires_at` (unix time). The chain is not verified: the point is to see the date even of a
//! self-signed or already expired certificate.

use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use openssl::asn1::Asn1Time;
use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
use shared::Metric;

use super::{check_keys, port, required, timeout, Params};

const KEYS: &[&str] = &["host", "port", "server_name", "timeout"];

struct Check {
    host: String,
    port: u16,
    server_name: String,
    timeout: Duration,
}

fn parse(params: &Params) -> Result<Check, String> {
    check_keys(params, KEYS)?;
    let host = required(params, "host")?.to_owned();
    let server_name = params
        .get("server_name")
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| host.clone());
    Ok(Check {
        port: port(params, "port", 443)?,
        timeout: timeout(params, "timeout", Duration::from_secs(5))?,
        host,
        server_name,
    })
}

/// Checks the parameters.
pub fn validate(params: &Params) -> Result<(), String> {
    parse(params).map(drop)
}

/// Connects and reads the certificate (off the async workers: blocking sockets and openssl).
pub async fn run(params: Params) -> Result<Vec<Metric>, String> {
    let check = parse(&params)?;
    tokio::task::spawn_blocking(move || probe(&check))
        .await
        .map_err(|e| format!("tls_cert_expiry task failed: {e}"))?
}

fn probe(c: &Check) -> Result<Vec<Metric>, String> {
    let target = format!("{}:{}", c.host, c.port);
    let addr = (c.host.as_str(), c.port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {target}: {e}"))?
        .next()
        .ok_or_else(|| format!("{target} resolves to no address"))?;
    let tcp = TcpStream::connect_timeout(&addr, c.timeout)
        .map_err(|e| format!("cannot connect to {target}: {e}"))?;
    tcp.set_read_timeout(Some(c.timeout))
        .and_then(|()| tcp.set_write_timeout(Some(c.timeout)))
        .map_err(|e| e.to_string())?;
    let mut builder =
        SslConnector::builder(SslMethod::tls_client()).map_err(|e| format!("openssl: {e}"))?;
    builder.set_verify(SslVerifyMode::NONE);
    let connector = builder.build();
    let mut config = connector.configure().map_err(|e| format!("openssl: {e}"))?;
    config.set_verify_hostname(false);
    let stream = config
        .connect(&c.server_name, tcp)
        .map_err(|e| format!("TLS handshake with {target} failed: {e}"))?;
    let cert = stream
        .ssl()
        .peer_certificate()
        .ok_or_else(|| format!("{target} presented no certificate"))?;
    let not_after = cert.not_after();
    let now = Asn1Time::days_from_now(0).map_err(|e| format!("openssl: {e}"))?;
    let left = now.diff(not_after).map_err(|e| format!("openssl: {e}"))?;
    let secs_left = i64::from(left.days) * 86_400 + i64::from(left.secs);
    let epoch = Asn1Time::from_unix(0).map_err(|e| format!("openssl: {e}"))?;
    let at = epoch.diff(not_after).map_err(|e| format!("openssl: {e}"))?;
    let expires_at = i64::from(at.days) * 86_400 + i64::from(at.secs);
    Ok(vec![
        Metric::new("days_left", secs_left as f64 / 86_400.0),
        Metric::new("expires_at", expires_at as f64),
    ])
}
