//! `tls_cert_expiry`: days until the certificate a TLS server presents expires.
//!
//! Parameters: `host` (required), `port` (default 443), `server_name` (SNI, default `host`),
//! `timeout` (seconds, default 5). Metrics: `days_left` (fractional; negative once expired) and
//! `expires_at` (unix time). The chain is not verified: the point is to see the date even of a
//! self-signed or already expired certificate; the handshake itself is still checked (the server
//! must prove it holds the certificate's key). TLS 1.2 and 1.3 only, as rustls speaks them.

use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme};
use shared::Metric;
use x509_cert::der::Decode;

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

/// Connects and reads the certificate (off the async workers: blocking sockets).
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
    let name = ServerName::try_from(c.server_name.clone())
        .map_err(|e| format!("server_name {:?}: {e}", c.server_name))?;
    let mut tcp = TcpStream::connect_timeout(&addr, c.timeout)
        .map_err(|e| format!("cannot connect to {target}: {e}"))?;
    tcp.set_read_timeout(Some(c.timeout))
        .and_then(|()| tcp.set_write_timeout(Some(c.timeout)))
        .map_err(|e| e.to_string())?;
    let mut conn = ClientConnection::new(Arc::new(config()?), name)
        .map_err(|e| format!("TLS setup for {target}: {e}"))?;
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp)
            .map_err(|e| format!("TLS handshake with {target} failed: {e}"))?;
    }
    let cert = conn
        .peer_certificates()
        .and_then(|chain| chain.first())
        .ok_or_else(|| format!("{target} presented no certificate"))?;
    let expires_at = not_after(cert).map_err(|e| format!("{target}'s certificate: {e}"))?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    Ok(vec![
        Metric::new("days_left", (expires_at - now) as f64 / 86_400.0),
        Metric::new("expires_at", expires_at as f64),
    ])
}

/// The certificate's `notAfter` as unix seconds.
fn not_after(der: &CertificateDer<'_>) -> Result<i64, String> {
    let cert = x509_cert::Certificate::from_der(der.as_ref())
        .map_err(|e| format!("cannot parse it: {e}"))?;
    let at = cert.tbs_certificate.validity.not_after.to_unix_duration();
    i64::try_from(at.as_secs()).map_err(|_| "notAfter is out of range".to_owned())
}

fn config() -> Result<ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth())
}

/// Takes any certificate (the check wants the date, trusted or not) but still verifies the
/// handshake signatures with the provider's algorithms.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
